"""`encode_bucket` (pipelines/_example_codec.c), the compiled per-record work of writing a bucket,
against the same computation in Python: `transforms.split_of`, `frame(example_bytes(...))` and
residue and length counts."""
import collections
import math

import numpy
import pytest
from hypothesis import example, given, settings, strategies as st

from pipelines import buckets
from pipelines import manifest
from pipelines import tfrecords
from pipelines import transforms
from pipelines import validation
from pipelines.tfrecords import encode_bucket

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
# Ids with any Unicode (UTF-8 of 1 to 4 bytes) but lone surrogates, which have no UTF-8.
ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
optional_int64s = st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX))
proteins = st.tuples(
    ids, ids, st.one_of(st.binary(max_size=600), st.binary(max_size=40).map(lambda b: b * 50)),
    st.binary(min_size=32, max_size=32), optional_int64s, optional_int64s, ids,
    st.integers(0, 2**40))
packed_kepts = st.tuples(
    proteins, st.integers(0, INT64_MAX),
    st.one_of(st.lists(ids, max_size=8).map(tuple), st.lists(ids, max_size=8)),
    st.binary(min_size=32, max_size=32))
# The edges of [0, 1], and fractions the job uses.
fractions = st.one_of(st.sampled_from([0.0, 5e-324, 0.005, 0.5, 1 - 2**-53, 1.0]),
                      st.floats(0, 1))


def _python_encode_bucket(packed, fraction):
    """What `encode_bucket` computes, in Python: (train, validation, train counts, validation
    counts); counts as ([(length, records)] in first-occurrence order, [count per byte])."""
    records = {transforms.TRAIN: [], transforms.VALIDATION: []}
    sequences = {transforms.TRAIN: [], transforms.VALIDATION: []}
    for protein, num_duplicates, duplicate_ids, key in packed:
        record_id, cluster_id, sequence, _, member_count, taxon_id, _, _ = protein
        framed = tfrecords.frame(tfrecords.example_bytes(
            record_id, cluster_id, sequence, num_duplicates, duplicate_ids,
            0 if member_count is None else member_count, 0 if taxon_id is None else taxon_id))
        split = transforms.split_of(cluster_id, fraction)
        records[split].append(
            (key, framed) if split == transforms.TRAIN else (key, framed, cluster_id))
        sequences[split].append(sequence)
    counts = []
    for split in (transforms.TRAIN, transforms.VALIDATION):
        residues = numpy.frombuffer(b"".join(sequences[split]), numpy.uint8)
        counts.append((list(collections.Counter(map(len, sequences[split])).items()),
                       numpy.bincount(residues, minlength=256).tolist()))
    return records[transforms.TRAIN], records[transforms.VALIDATION], *counts


def _comparable(result):
    """`encode_bucket`'s result with each {length: records} as its items, in order."""
    train, validation_records, *counts = result
    return train, validation_records, *[(list(lengths.items()), list(residues))
                                        for lengths, residues in counts]


@settings(max_examples=120, deadline=None)
@given(packed=st.lists(packed_kepts, max_size=12), fraction=fractions)
@example(packed=[], fraction=0.5)
@example(packed=[((
    "UniRef50_\u00e9\u4e2d\U0001f9ec", "UniRef50_\u00e9", b"MKV" * 400, b"h" * 32, None, None,
    "f", 0), 2, ("A\u00e9", "B"), b"k" * 32)], fraction=1.0)
def test_encode_bucket_equals_the_python_computation(packed, fraction):
    assert _comparable(encode_bucket(packed, fraction)) == _python_encode_bucket(packed, fraction)


@settings(max_examples=150, deadline=None)
@given(cluster_id=ids)
def test_split_is_split_of_at_the_edges(cluster_id):
    # A fraction equal to the cluster's hash fraction, and the doubles on either side of it:
    # the split changes exactly where split_of's does, so the C quotient is the same double.
    at = transforms.hash_fraction(cluster_id)
    packed = [((cluster_id, cluster_id, b"MK", b"h", None, None, "f", 0), 0, (), b"key")]
    for fraction in (math.nextafter(at, 0), at, math.nextafter(at, 1), 0.0, 1.0):
        train, validation_records, _, _ = encode_bucket(packed, fraction)
        split = transforms.TRAIN if train else transforms.VALIDATION
        assert len(train) + len(validation_records) == 1
        assert split == transforms.split_of(cluster_id, fraction), fraction


def test_counts_give_the_statistics_of_sequence_stats_fn():
    packed = [(("P%d" % i, "C%d" % (i % 7), bytes(validation.ALPHABET[i % 25:]) * (i % 4), b"h",
                i, None, "f", i), 0, (), b"%032d" % i) for i in range(200)]
    _, _, train_counts, validation_counts = encode_bucket(packed, 0.4)
    stats = buckets.sequence_stats(
        {transforms.TRAIN: train_counts, transforms.VALIDATION: validation_counts})
    fn = manifest.SequenceStatsFn()
    accumulator = fn.create_accumulator()
    for protein, _, _, _ in packed:
        accumulator = fn.add_input(accumulator, (transforms.split_of(protein[1], 0.4), protein[2]))
    expected = fn.extract_output(accumulator)
    assert set(expected) == {transforms.TRAIN, transforms.VALIDATION}
    assert stats == expected


def test_empty_bucket():
    train, validation_records, train_counts, validation_counts = encode_bucket([], 0.5)
    assert train == validation_records == []
    assert train_counts == validation_counts == ({}, (0,) * 256)
    assert buckets.sequence_stats({transforms.TRAIN: train_counts}) == {}


GOOD_PROTEIN = ("P1", "C1", b"MKV", b"h", 1, 2, "f", 0)


@pytest.mark.parametrize("packed, message", [
    ({}, "encode_bucket() argument 'packed' must be a list or tuple, not dict"),
    ([(GOOD_PROTEIN, 0, (), b"k"), None],
     "encode_bucket() packed item 1 must be a tuple (protein, num_duplicates, duplicate_ids, "
     "shuffle_key), not NoneType"),
    ([(GOOD_PROTEIN, 0, ())],
     "encode_bucket() packed item 0 must have 4 items (protein, num_duplicates, duplicate_ids, "
     "shuffle_key), not 3"),
    ([(GOOD_PROTEIN[:7], 0, (), b"k")],
     "encode_bucket() packed item 0 field 'protein' must have 8 items (id, cluster_id, sequence, "
     "sequence_hash, member_count, taxon_id, path, offset), not 7"),
    ([(("P1", b"C1") + GOOD_PROTEIN[2:], 0, (), b"k")],
     "encode_bucket() packed item 0 field 'cluster_id' must be str, not bytes"),
    ([(GOOD_PROTEIN[:2] + ("MKV",) + GOOD_PROTEIN[3:], 0, (), b"k")],
     "encode_bucket() packed item 0 field 'sequence' must be bytes, not str"),
    ([(GOOD_PROTEIN[:4] + ("1",) + GOOD_PROTEIN[5:], 0, (), b"k")],
     "encode_bucket() packed item 0 field 'member_count' must be int, not str"),
    ([(GOOD_PROTEIN, None, (), b"k")],
     "encode_bucket() packed item 0 field 'num_duplicates' must be int, not NoneType"),
    ([(GOOD_PROTEIN, 0, ("A", 1), b"k")],
     "encode_bucket() packed item 0 field 'duplicate_ids' item 1 must be str, not int"),
])
def test_bad_input_names_the_item_and_field(packed, message):
    with pytest.raises(TypeError) as error:
        encode_bucket(packed, 0.5)
    assert str(error.value) == message


def test_bad_values_raise_as_example_bytes_does():
    with pytest.raises(OverflowError, match=r"packed item 0 field 'taxon_id' is outside the int64"):
        encode_bucket([(GOOD_PROTEIN[:5] + (2**63,) + GOOD_PROTEIN[6:], 0, (), b"k")], 0.5)
    # Lone surrogates have no UTF-8: the same error as str.encode() in split_of.
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        encode_bucket([(("P1", "C\ud800") + GOOD_PROTEIN[2:], 0, (), b"k")], 0.5)
