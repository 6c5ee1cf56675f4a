"""Per-record logic of the UniRef job, tested as plain functions (no Beam pipeline)."""
import collections
import gzip
import hashlib
import random

import pytest
from google.protobuf import descriptor_pb2

from pipelines import dedup
from pipelines import fasta
from pipelines import manifest
from pipelines import records
from pipelines import release
from pipelines import split
from pipelines import tfrecords
from pipelines import writers


# --- header parsing -------------------------------------------------------------------------

def test_uniref_header_with_taxon():
    header = records.parse_header(
        ">UniRef50_Q6GZX4 Putative transcription factor 001R n=2 Tax=Frog virus 3 "
        "(isolate Goorha) TaxID=654924 RepID=001R_FRG3G")
    assert header == records.Header(id="UniRef50_Q6GZX4", cluster_id="UniRef50_Q6GZX4",
                                    member_count=2, taxon_id=654924)


def test_uniref_header_without_taxon_and_with_uniparc_accession():
    header = records.parse_header(
        ">UniRef90_UPI409C001F54 Choline ABC transporter (ATP-binding protein) n=26 "
        "RepID=M4KW32_BACIU")
    assert header == records.Header("UniRef90_UPI409C001F54", "UniRef90_UPI409C001F54", 26, None)


def test_uniref_header_fields_are_found_whatever_the_name_holds():
    header = records.parse_header("UniRef100_P1 n=5 x=y  TaxIDs n=7 TaxID=12 Tax=a TaxID=3")
    assert (header.member_count, header.taxon_id) == (5, 12)
    # A key inside a word, or without digits, is not the field; the first one that is, is.
    header = records.parse_header("UniRef50_P1 Sun=2 xTaxID=1 n=x n=3\tTaxID=4a TaxID=5")
    assert (header.member_count, header.taxon_id) == (3, 5)


def test_uniprotkb_headers():
    swissprot = records.parse_header(
        ">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2")
    assert swissprot == records.Header("P69905", "P69905", None, 9606)
    trembl = records.parse_header(">tr|A0A024R161|A0A024R161_HUMAN Guanine OS=Homo sapiens")
    assert (trembl.id, trembl.taxon_id) == ("A0A024R161", None)


def test_plain_headers():
    assert records.parse_header(">my_protein some description\r") == records.Header(
        "my_protein", "my_protein", None, None)
    with pytest.raises(ValueError, match="no id"):
        records.parse_header(">  ")


# --- normalization and validation ----------------------------------------------------------

def test_normalize_strips_whitespace_crlf_case_and_one_trailing_stop():
    assert records.normalize(b"mkv lA\r\nGG\t\n*\n") == b"MKVLAGG"
    assert records.normalize(b"MK**") == b"MK*"


@pytest.mark.parametrize("sequence, rules, expected", [
    (b"MKVX", records.Rules(), b"MKVX"),
    (b"MKBZUO", records.Rules(), b"MKBZUO"),
    (b"MKBZUOX", records.Rules(non_canonical=records.MAP_TO_X), b"MKXXXXX"),
    (b"MKU", records.Rules(non_canonical=records.DROP), records.NON_CANONICAL_REASON),
    (b"", records.Rules(), records.EMPTY_SEQUENCE),
    (b"MK*VL", records.Rules(), records.INTERNAL_STOP),
    (b"MKJ", records.Rules(), records.INVALID_CHARACTER),
    (b"MK-", records.Rules(), records.INVALID_CHARACTER),
    ("MKÉ".encode(), records.Rules(), records.INVALID_CHARACTER),
    (b"MKV", records.Rules(min_length=4), records.TOO_SHORT),
    (b"A" * 100_000, records.Rules(), records.TOO_LONG),
    (b"A" * 40_000, records.Rules(), b"A" * 40_000),
])
def test_check_sequence(sequence, rules, expected):
    checked = records.check_sequence(sequence, rules)
    assert (checked if isinstance(checked, bytes) else checked[0]) == expected


def test_invalid_character_excerpt_shows_where():
    reason, detail, excerpt = records.check_sequence(b"A" * 30 + b"1" + b"C" * 30,
                                                        records.Rules())
    assert reason == records.INVALID_CHARACTER
    assert "residue 31" in detail
    assert excerpt == "..." + "A" * 20 + "[1]" + "C" * 20 + "..."


def _raw(header, body, path="f.fasta", offset=0):
    return fasta.RawRecord(path, offset, header, body)


def test_check_record_accepts_and_hashes():
    protein = records.check_record(
        _raw(b"UniRef50_P1 name n=3 Tax=Homo sapiens TaxID=9606 RepID=X_HUMAN", b"mkv\r\nla*\n",
             offset=7), records.Rules())
    assert protein == records.Record(
        id="UniRef50_P1", cluster_id="UniRef50_P1", sequence=b"MKVLA",
        sequence_hash=hashlib.sha256(b"MKVLA").digest(), member_count=3, taxon_id=9606,
        path="f.fasta", offset=7)


@pytest.mark.parametrize("header, body, reason", [
    (None, b"MKV\n", records.SEQUENCE_BEFORE_HEADER),
    (b"", b"MKV\n", records.MISSING_ID),
    (b"caf\xe9", b"MKV\n", records.INVALID_ENCODING),
    (b"p1", b"MK\xff\xfeV\n", records.INVALID_ENCODING),
    (b"p1", b"\n\n", records.EMPTY_SEQUENCE),
])
def test_check_record_rejections(header, body, reason):
    rejected = records.check_record(_raw(header, body, offset=11), records.Rules())
    assert isinstance(rejected, records.Rejected)
    assert (rejected.reason, rejected.path, rejected.offset) == (reason, "f.fasta", 11)
    assert set(rejected.to_json_dict()) == {"id", "path", "offset", "reason", "detail", "excerpt"}


@pytest.mark.parametrize("body", [
    b"MKVX\n", b"mkbzuo\r\n", b"MK BZUOX*\n", b"MKU", b"*", b"**", b"MK*VL", b"mk*vl*", b"MKJ",
    b"mkj*", b"MK-", "MKÉ".encode(), b"MK\x00V", b"MKV", b"MKVL\t*\n", b"A" * 41, b"a" * 40 + b"*",
])
@pytest.mark.parametrize("rules", [
    records.Rules(), records.Rules(non_canonical=records.MAP_TO_X, min_length=4, max_length=40),
    records.Rules(non_canonical=records.DROP),
])
def test_check_record_validates_as_normalize_then_check_sequence(body, rules):
    # check_record screens a body in one pass; every outcome must be that of the two steps.
    expected = records.check_sequence(records.normalize(body), rules)
    checked = records.check_record(_raw(b"p1", body), rules)
    if isinstance(expected, bytes):
        assert checked.sequence == expected
    else:
        assert (checked.reason, checked.detail, checked.excerpt) == expected


def test_invalid_encoding_in_sequence_names_the_record_and_shows_the_byte():
    rejected = records.check_record(_raw(b"p1 x", b"MKV\nL\xffA\n"), records.Rules())
    assert rejected.id == "p1"
    assert rejected.excerpt == "MKVL[\\xff]A"


# --- deduplication, split and shard assignment ---------------------------------------------

def _protein(record_id, sequence, path="a.fasta", offset=0):
    return records.Record(record_id, record_id, sequence, records.sequence_hash(sequence),
                              None, None, path, offset)


def test_id_conflict_losers_keeps_first_occurrence_in_input_order():
    occurrences = [(b"h2", "b.fasta", 0), (b"h1", "a.fasta", 50), (b"h1", "a.fasta", 90),
                   (b"h3", "a.fasta", 10)]
    assert dedup.id_conflict_losers(occurrences) == [
        (b"h1", "a.fasta", 50), (b"h1", "a.fasta", 90), (b"h2", "b.fasta", 0)]
    assert dedup.id_conflict_losers([(b"h1", "a", 0), (b"h1", "b", 0)]) == []


def test_resolve_duplicates_is_independent_of_arrival_order():
    group = [_protein("P3", b"MKV", offset=30), _protein("P1", b"MKV", "b.fasta", 5),
             _protein("P2", b"MKV", offset=20), _protein("P1", b"MKV", "a.fasta", 99)]
    results = [dedup.resolve_duplicates(order, set(), 32)
               for order in (group, group[::-1], group[1:] + group[:1])]
    assert results[0] == results[1] == results[2]
    kept, rejected = results[0]
    assert (kept.id, kept.path, kept.offset) == ("P1", "a.fasta", 99)
    assert kept.num_duplicates == 3
    assert kept.duplicate_ids == ("P1", "P2", "P3")
    assert rejected == []


def test_resolve_duplicates_bounds_the_id_list_and_rejects_losers():
    group = [_protein("P%03d" % i, b"MKV", offset=i) for i in range(100)]
    kept, rejected = dedup.resolve_duplicates(group, {("a.fasta", 0), ("a.fasta", 1)}, 5)
    assert kept.id == "P002"
    assert kept.num_duplicates == 97
    assert kept.duplicate_ids == ("P003", "P004", "P005", "P006", "P007")
    assert [(r.id, r.reason) for r in rejected] == [
        ("P000", records.DUPLICATE_ID), ("P001", records.DUPLICATE_ID)]


def test_id_conflicts_sends_losers_to_their_sequence_bucket():
    mss, mtt = records.sequence_hash(b"MSS"), records.sequence_hash(b"MTT")
    occurrences = [("Q1", mss, "a", 30), ("Q1", mtt, "a", 40), ("Q1", mss, "a", 50),
                   ("P1", mss, "a", 60), ("P2", mtt, "b", 0), ("P2", mtt, "a", 70)]
    losers = dedup.id_conflicts(occurrences, shuffle_seed=3, num_buckets=5)
    assert dict(losers) == {split.shard_of(split.shuffle_key(mtt, 3), 5): [("a", 40)]}


def test_resolve_bucket_matches_resolve_duplicates_per_sequence():
    rng = random.Random(1)
    sequences = [b"MK" + bytes(rng.choice(b"ACDE") for _ in range(3)) for _ in range(40)]
    proteins = [_protein("P%03d" % rng.randrange(300), rng.choice(sequences), "f", offset)
                for offset in range(200)]
    losers = {("f", offset) for offset in range(0, 200, 17)}
    kept, rejected = dedup.resolve_bucket(proteins, losers, max_duplicate_ids=3)
    expected_kept, expected_rejected = [], []
    for digest in sorted({p.sequence_hash for p in proteins}):
        one, lost = dedup.resolve_duplicates(
            [p for p in proteins if p.sequence_hash == digest], losers, 3)
        expected_rejected += lost
        if one is not None:
            expected_kept.append(one)
    assert kept == expected_kept
    assert sorted(rejected) == sorted(expected_rejected)
    assert sum(1 + k.num_duplicates for k in kept) + len(rejected) == len(proteins)


def test_split_is_a_stable_hash_of_the_cluster_id():
    ids = ["UniRef50_P%05d" % i for i in range(20_000)]
    validation_ids = [i for i in ids if split.split_of(i, 0.05) == split.VALIDATION]
    assert 800 < len(validation_ids) < 1200
    assert split.split_of("UniRef50_Q6GZX4", 0.0) == split.TRAIN
    assert split.split_of("UniRef50_Q6GZX4", 1.0) == split.VALIDATION
    # A larger fraction only adds clusters to validation.
    assert set(validation_ids) <= {i for i in ids if split.split_of(i, 0.1) == "validation"}
    expected = int.from_bytes(hashlib.sha256(b"UniRef50_Q6GZX4").digest()[:8], "big") / 2**64
    assert split.hash_fraction("UniRef50_Q6GZX4") == expected


def test_split_and_shuffle_key_follow_their_definitions():
    """`split_of` and `Assigner` compare hash prefixes with a precomputed bound: the same
    decision as `hash_fraction(cluster id) < fraction`, at ordinary and extreme fractions."""
    rng = random.Random(3)
    fractions = [0.0, 5e-324, 1e-12, 0.005, 0.1, 0.5, 1 - 2**-53, 1.0] + [
        rng.random() for _ in range(20)]
    ids = ["UniRef50_P%05d" % i for i in range(2000)] + ["\u00e9%d" % i for i in range(50)]
    for fraction in fractions:
        assigner = split.Assigner(7, fraction)
        for cluster_id in ids:
            expected = "validation" if split.hash_fraction(cluster_id) < fraction else "train"
            assert split.split_of(cluster_id, fraction) == expected
        record = records.Record(ids[0], ids[0], b"MKV", records.sequence_hash(b"MKV"), None,
                                None, "a", 0)
        assert assigner.assign(record) == record._replace(
            shuffle_key=split.shuffle_key(record.sequence_hash, 7),
            split=split.split_of(ids[0], fraction))
    with pytest.raises(ValueError, match="not in"):
        split.split_of("P1", 1.5)


def test_shuffle_key_and_shard_depend_on_seed():
    digest = records.sequence_hash(b"MKV")
    assert split.shuffle_key(digest, 0) == hashlib.sha256(digest + b"0").digest()
    assert split.shuffle_key(digest, 0) != split.shuffle_key(digest, 1)
    shards = [split.shard_of(split.shuffle_key(records.sequence_hash(b"%d" % i), 0), 8)
              for i in range(800)]
    assert set(shards) == set(range(8))
    assert writers.shard_name("train", ".tfrecord", 3, 64) == "train.tfrecord-00003-of-00064"


# --- output records ------------------------------------------------------------------------

def test_tfrecord_framing_matches_tensorflow_writer(tmp_path):
    tf = pytest.importorskip("tensorflow")
    record = records.Record("UniRef50_P1", "UniRef50_Q", b"MKV", b"", 5, None, "a", 0, 2,
                            ("A", "B"))
    encoder = tfrecords.RecordEncoder()
    payloads = [encoder.encode(record), b"", b"x" * 1000]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    with open(path, "rb") as f:
        assert f.read() == b"".join(tfrecords.frame(p) for p in payloads)
    assert list(tfrecords.read_tfrecords(path)) == payloads
    feature = tf.train.Example.FromString(payloads[0]).features.feature
    assert {name: (f.bytes_list.value or f.int64_list.value) for name, f in feature.items()} == {
        "id": [b"UniRef50_P1"], "cluster_id": [b"UniRef50_Q"], "sequence": [b"MKV"],
        "length": [3], "num_duplicates": [2], "duplicate_ids": [b"A", b"B"],
        "member_count": [5], "taxon_id": [0]}
    # Written as the tasks parse it: every feature present, even an empty duplicate list.
    empty = tf.train.Example.FromString(tfrecords.RecordEncoder().encode(record._replace(
        duplicate_ids=())))
    assert empty.features.feature["duplicate_ids"].HasField("bytes_list")


def test_example_message_is_tensorflows_and_encodes_the_same_bytes():
    pytest.importorskip("tensorflow")
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
    for name in ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List"):
        ours, theirs = descriptor_pb2.DescriptorProto(), descriptor_pb2.DescriptorProto()
        tfrecords.Example.DESCRIPTOR.file.pool.FindMessageTypeByName(
            "tensorflow." + name).CopyToProto(ours)
        example_pb2.DESCRIPTOR.pool.FindMessageTypeByName("tensorflow." + name).CopyToProto(theirs)
        assert ours == theirs, name
    record = records.Record("UniRef50_P1", "UniRef50_Q", b"MKV", b"", 5, 9606, "a", 0, 2,
                            ("A", "B"))
    # The encoder's reused message keeps no value of the record before, and is replaced every
    # `_RECORDS_PER_MESSAGE` records.
    encoder = tfrecords.RecordEncoder()
    for _ in range(tfrecords._RECORDS_PER_MESSAGE - 1):  # pylint: disable=protected-access
        encoder.encode(record)
    without_duplicates = record._replace(duplicate_ids=(), member_count=None)
    for value in (record, without_duplicates, without_duplicates, record):
        bytes_features = {"id": [value.id.encode()], "cluster_id": [value.cluster_id.encode()],
                          "sequence": [value.sequence],
                          "duplicate_ids": [i.encode() for i in value.duplicate_ids]}
        int64_features = {"length": [len(value.sequence)], "num_duplicates": [value.num_duplicates],
                          "member_count": [value.member_count or 0], "taxon_id": [value.taxon_id]}
        expected = example_pb2.Example()
        for name, values in bytes_features.items():
            expected.features.feature[name].bytes_list.SetInParent()
            expected.features.feature[name].bytes_list.value.extend(values)
        for name, values in int64_features.items():
            expected.features.feature[name].int64_list.value.extend(values)
        assert encoder.encode(value) == expected.SerializeToString(deterministic=True)


# --- manifest pieces -----------------------------------------------------------------------

def test_split_statistics_count_every_residue_and_merge():
    rng = random.Random(0)
    elements = [(rng.choice(["train", "validation"]),
                 bytes(rng.choice(records.ALPHABET) for _ in range(rng.randrange(1, 60))))
                for _ in range(3000)]
    partials = [writers.split_statistics({
        name: [s for n, s in elements[part::3] if n == name] for name in ("train", "validation")})
        for part in range(3)]
    fn = manifest.MergeStatistics()
    stats = fn.extract_output(fn.merge_accumulators(
        [fn.add_input(fn.create_accumulator(), p) for p in partials]))
    for name in ("train", "validation"):
        sequences = [s for n, s in elements if n == name]
        expected = collections.Counter(chr(r) for s in sequences for r in s)
        assert stats[name]["composition"] == expected
        assert stats[name]["records"] == len(sequences)
        assert stats[name]["residues"] == sum(map(len, sequences))
        assert stats[name]["lengths"] == collections.Counter(map(len, sequences))


def test_percentiles_are_exact_nearest_rank():
    lengths = {length: 1 for length in range(1, 101)}
    assert manifest.percentiles(lengths) == {
        "p1": 1, "p5": 5, "p10": 10, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "p95": 95,
        "p99": 99}
    assert manifest.percentiles({7: 3, 1000: 1}, (50, 75, 76)) == {"p50": 7, "p75": 7,
                                                                  "p76": 1000}
    bins = manifest.binned_histogram({1: 2, 49: 1, 50: 4, 25000: 1})
    assert bins[0] == {"min": 1, "max": 49, "records": 3}
    assert bins[1] == {"min": 50, "max": 99, "records": 4}
    assert bins[-1] == {"min": 20000, "max": None, "records": 1}


def test_check_conservation():
    counts = {"records_read": 10, "train": 5, "validation": 1, "duplicates": 2,
              "rejected": {"too_long": 1, "empty_sequence": 1}}
    manifest.check_conservation(counts)
    with pytest.raises(manifest.ConservationError, match="read 11 but"):
        manifest.check_conservation(dict(counts, records_read=11))


def test_release_from_uniref_xml_reads_only_the_root(tmp_path):
    path = tmp_path / "uniref50.xml.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'<?xml version="1.0"?>\n<UniRef50 xmlns="http://uniprot.org/uniref" '
                b'releaseDate="2024-11-27" version="2024_06">\n<entry id="UniRef50_A">'
                b"<unclosed>")  # A broken rest shows that only the root is parsed.
    assert release.read_release_metadata(str(path))["release"] == "2024_06"


def test_release_from_metalink_and_input_checks(tmp_path):
    data = tmp_path / "uniref50.fasta.gz"
    data.write_bytes(gzip.compress(b">UniRef50_A x n=1 RepID=A\nMKV\n", mtime=0))
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    metalink = tmp_path / "RELEASE.metalink"
    metalink.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<metalink xmlns="http://www.metalinker.org/" '
        'version="3.0"><version>2024_06</version><files><file name="uniref50.fasta.gz">'
        '<size>%d</size><verification><hash type="md5">%s</hash></verification></file>'
        "</files></metalink>" % (data.stat().st_size, md5))
    stated = release.read_release_metadata(str(metalink))
    assert stated["release"] == "2024_06"
    inputs = release.describe_inputs([str(data)], stated["files"])
    assert inputs == [{"path": str(data), "size_bytes": data.stat().st_size, "md5": md5}]
    stated["files"]["uniref50.fasta.gz"]["md5"] = "0" * 32
    with pytest.raises(ValueError, match="md5 is .* but the release metadata says"):
        release.describe_inputs([str(data)], stated["files"])
    with pytest.raises(ValueError, match="matches no file"):
        release.describe_inputs([str(tmp_path / "missing*.fasta")])
    with pytest.raises(ValueError, match="more than one --input"):
        release.describe_inputs([str(data), str(tmp_path / "*.gz")])
