"""Per-record logic of the UniRef job, tested as plain functions (no Beam pipeline)."""
import collections
import gzip
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from pipelines import fasta
from pipelines import manifest
from pipelines import tfrecords
from pipelines import transforms
from pipelines import validation


# --- header parsing -------------------------------------------------------------------------

def test_uniref_header_with_taxon():
    header = fasta.parse_header(
        ">UniRef50_Q6GZX4 Putative transcription factor 001R n=2 Tax=Frog virus 3 "
        "(isolate Goorha) TaxID=654924 RepID=001R_FRG3G")
    assert header == fasta.Header(
        id="UniRef50_Q6GZX4", cluster_id="UniRef50_Q6GZX4",
        name="Putative transcription factor 001R", member_count=2,
        taxon="Frog virus 3 (isolate Goorha)", taxon_id=654924, representative="001R_FRG3G",
        source_format=fasta.UNIREF)


def test_uniref_header_without_taxon_and_with_uniparc_accession():
    header = fasta.parse_header(
        ">UniRef90_UPI409C001F54 Choline ABC transporter (ATP-binding protein) n=26 "
        "RepID=M4KW32_BACIU")
    assert header.id == header.cluster_id == "UniRef90_UPI409C001F54"
    assert header.name == "Choline ABC transporter (ATP-binding protein)"
    assert (header.member_count, header.taxon, header.taxon_id) == (26, None, None)
    assert header.representative == "M4KW32_BACIU"


# Header parts for the property below, with the characters that make parsing hard: spaces
# (doubled too), `=`, and `n=`/`Tax=`-like words.
_WORDS = st.lists(st.sampled_from(
    ["Protein", "n", "n=2", "kinase", "Tax", "x=y", "(fragment)", "  ", "TaxID", "RepID", "="]),
    min_size=0, max_size=5).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(level=st.sampled_from(["50", "90", "100"]), name=_WORDS, members=st.integers(0, 10**6),
       taxon=st.one_of(st.none(), _WORDS), taxon_id=st.integers(0, 10**7))
def test_uniref_fast_path_agrees_with_the_field_parser(level, name, members, taxon, taxon_id):
    accession = "UniRef%s_P12345" % level
    text = "%s %s n=%d%s RepID=P12345_HUMAN" % (
        accession, name, members, "" if taxon is None else " Tax=%s TaxID=%d" % (taxon, taxon_id))
    # `_parse_uniref` is the general path: one pattern per field.
    assert fasta.parse_header(text) == fasta._parse_uniref(accession, text.split(None, 1)[1])


def test_uniprotkb_headers():
    swissprot = fasta.parse_header(
        ">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2")
    assert swissprot == fasta.Header(
        id="P69905", cluster_id="P69905", name="Hemoglobin subunit alpha", member_count=None,
        taxon="Homo sapiens", taxon_id=9606, representative=None,
        source_format=fasta.UNIPROTKB)
    trembl = fasta.parse_header(
        ">tr|W0FSK4|W0FSK4_9FLAV Genome polyprotein (Fragment) OS=Dengue virus 3 PE=4 SV=1")
    assert (trembl.id, trembl.name, trembl.taxon, trembl.taxon_id) == (
        "W0FSK4", "Genome polyprotein (Fragment)", "Dengue virus 3", None)


def test_plain_headers():
    assert fasta.parse_header(">my_protein some description\r") == fasta.Header(
        "my_protein", "my_protein", "some description", None, None, None, None, fasta.PLAIN)
    assert fasta.parse_header(">x").name == ""
    with pytest.raises(ValueError, match="no id"):
        fasta.parse_header(">   ")


# --- normalization and validation ----------------------------------------------------------

def test_normalize_strips_whitespace_crlf_case_and_one_trailing_stop():
    assert validation.normalize(b"mkv lA\r\nGG\t\n*\n") == b"MKVLAGG"
    assert validation.normalize(b"MK**") == b"MK*"


@pytest.mark.parametrize("sequence, rules, expected", [
    (b"MKVX", validation.Rules(), b"MKVX"),
    (b"MKBZUO", validation.Rules(), b"MKBZUO"),
    (b"MKBZUOX", validation.Rules(non_canonical=validation.MAP_TO_X), b"MKXXXXX"),
    (b"MKU", validation.Rules(non_canonical=validation.DROP), validation.NON_CANONICAL_REASON),
    (b"", validation.Rules(), validation.EMPTY_SEQUENCE),
    (b"MK*VL", validation.Rules(), validation.INTERNAL_STOP),
    (b"MKJ", validation.Rules(), validation.INVALID_CHARACTER),
    (b"MK-", validation.Rules(), validation.INVALID_CHARACTER),
    ("MKÉ".encode(), validation.Rules(), validation.INVALID_CHARACTER),
    (b"MKV", validation.Rules(min_length=4), validation.TOO_SHORT),
    (b"A" * 100_000, validation.Rules(), validation.TOO_LONG),
    (b"A" * 40_000, validation.Rules(), b"A" * 40_000),
])
def test_check_sequence(sequence, rules, expected):
    checked = validation.check_sequence(sequence, rules)
    assert (checked if isinstance(checked, bytes) else checked[0]) == expected


def test_invalid_character_excerpt_shows_where():
    reason, detail, excerpt = validation.check_sequence(b"A" * 30 + b"1" + b"C" * 30,
                                                        validation.Rules())
    assert reason == validation.INVALID_CHARACTER
    assert "residue 31" in detail
    assert excerpt == "..." + "A" * 20 + "[1]" + "C" * 20 + "..."


def _raw(header, body, path="f.fasta", offset=0):
    return fasta.RawRecord(path, offset, header, body)


def test_check_record_accepts_and_hashes():
    protein = validation.check_record(
        _raw(b"UniRef50_P1 name n=3 Tax=Homo sapiens TaxID=9606 RepID=X_HUMAN", b"mkv\r\nla*\n",
             offset=7), validation.Rules())
    assert protein == validation.Protein(
        id="UniRef50_P1", cluster_id="UniRef50_P1", sequence=b"MKVLA",
        sequence_hash=hashlib.sha256(b"MKVLA").digest(), member_count=3, taxon_id=9606,
        path="f.fasta", offset=7)


@pytest.mark.parametrize("header, body, reason", [
    (None, b"MKV\n", validation.SEQUENCE_BEFORE_HEADER),
    (b"", b"MKV\n", validation.MISSING_ID),
    (b"caf\xe9", b"MKV\n", validation.INVALID_ENCODING),
    (b"p1", b"MK\xff\xfeV\n", validation.INVALID_ENCODING),
    (b"p1", b"\n\n", validation.EMPTY_SEQUENCE),
])
def test_check_record_rejections(header, body, reason):
    rejected = validation.check_record(_raw(header, body, offset=11), validation.Rules())
    assert isinstance(rejected, validation.Rejected)
    assert (rejected.reason, rejected.path, rejected.offset) == (reason, "f.fasta", 11)
    assert set(rejected.to_json_dict()) == {"id", "path", "offset", "reason", "detail", "excerpt"}


def test_invalid_encoding_in_sequence_names_the_record_and_shows_the_byte():
    rejected = validation.check_record(_raw(b"p1 x", b"MKV\nL\xffA\n"), validation.Rules())
    assert rejected.id == "p1"
    assert rejected.excerpt == "MKVL[\\xff]A"


# --- deduplication, split and shard assignment ---------------------------------------------

def _protein(record_id, sequence, path="a.fasta", offset=0):
    return validation.Protein(record_id, record_id, sequence, validation.sequence_hash(sequence),
                              None, None, path, offset)


def test_id_conflict_losers_keeps_first_occurrence_in_input_order():
    occurrences = [(b"h2", "b.fasta", 0), (b"h1", "a.fasta", 50), (b"h1", "a.fasta", 90),
                   (b"h3", "a.fasta", 10)]
    assert transforms.id_conflict_losers(occurrences) == [
        (b"h1", "a.fasta", 50), (b"h1", "a.fasta", 90), (b"h2", "b.fasta", 0)]
    assert transforms.id_conflict_losers([(b"h1", "a", 0), (b"h1", "b", 0)]) == []


def test_resolve_duplicates_is_independent_of_arrival_order():
    group = [_protein("P3", b"MKV", offset=30), _protein("P1", b"MKV", "b.fasta", 5),
             _protein("P2", b"MKV", offset=20), _protein("P1", b"MKV", "a.fasta", 99)]
    results = [transforms.resolve_duplicates(order, set(), 32)
               for order in (group, group[::-1], group[1:] + group[:1])]
    assert results[0] == results[1] == results[2]
    kept, rejected = results[0]
    assert (kept.protein.id, kept.protein.path, kept.protein.offset) == ("P1", "a.fasta", 99)
    assert kept.num_duplicates == 3
    assert kept.duplicate_ids == ("P1", "P2", "P3")
    assert rejected == []


def test_resolve_duplicates_bounds_the_id_list_and_rejects_losers():
    group = [_protein("P%03d" % i, b"MKV", offset=i) for i in range(100)]
    kept, rejected = transforms.resolve_duplicates(group, {("a.fasta", 0), ("a.fasta", 1)}, 5)
    assert kept.protein.id == "P002"
    assert kept.num_duplicates == 97
    assert kept.duplicate_ids == ("P003", "P004", "P005", "P006", "P007")
    assert [(r.id, r.reason) for r in rejected] == [
        ("P000", validation.DUPLICATE_ID), ("P001", validation.DUPLICATE_ID)]


def test_split_is_a_stable_hash_of_the_cluster_id():
    ids = ["UniRef50_P%05d" % i for i in range(20_000)]
    validation_ids = [i for i in ids if transforms.split_of(i, 0.05) == transforms.VALIDATION]
    assert 800 < len(validation_ids) < 1200
    assert transforms.split_of("UniRef50_Q6GZX4", 0.0) == transforms.TRAIN
    assert transforms.split_of("UniRef50_Q6GZX4", 1.0) == transforms.VALIDATION
    # A larger fraction only adds clusters to validation.
    assert set(validation_ids) <= {i for i in ids if transforms.split_of(i, 0.1) == "validation"}
    expected = int.from_bytes(hashlib.sha256(b"UniRef50_Q6GZX4").digest()[:8], "big") / 2**64
    assert transforms.hash_fraction("UniRef50_Q6GZX4") == expected


def test_shuffle_key_and_shard_depend_on_seed():
    digest = validation.sequence_hash(b"MKV")
    assert transforms.shuffle_key(digest, 0) == hashlib.sha256(digest + b"0").digest()
    assert transforms.shuffle_key(digest, 0) != transforms.shuffle_key(digest, 1)
    shards = [transforms.shard_of(transforms.shuffle_key(validation.sequence_hash(b"%d" % i), 0), 8)
              for i in range(800)]
    assert set(shards) == set(range(8))
    assert transforms.shard_name("train", ".tfrecord", 3, 64) == "train.tfrecord-00003-of-00064"


# --- output records ------------------------------------------------------------------------

def test_tfrecord_framing_matches_tensorflow_writer(tmp_path):
    tf = pytest.importorskip("tensorflow")
    records = [tfrecords.example_bytes("UniRef50_P1", "UniRef50_P1", b"MKV", 2, ["A", "B"], 5, 9606),
               b"", b"x" * 1000]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with open(path, "rb") as f:
        assert f.read() == b"".join(tfrecords.frame(r) for r in records)
    example = tf.train.Example.FromString(records[0])
    feature = example.features.feature
    assert feature["sequence"].bytes_list.value == [b"MKV"]
    assert feature["length"].int64_list.value == [3]
    assert feature["duplicate_ids"].bytes_list.value == [b"A", b"B"]
    assert feature["num_duplicates"].int64_list.value == [2]


# --- manifest pieces -----------------------------------------------------------------------

def test_sequence_stats_count_every_residue_across_batches_and_merges():
    rng = random.Random(0)
    elements = [(rng.choice(["train", "validation"]),
                 bytes(rng.choice(validation.ALPHABET) for _ in range(rng.randrange(1, 60))))
                for _ in range(5000)]
    fn = manifest.SequenceStatsFn()
    # Two accumulators, each past the composition batch size, merged as a runner would.
    parts = [fn.create_accumulator(), fn.create_accumulator()]
    for i, element in enumerate(elements):
        parts[i % 2] = fn.add_input(parts[i % 2], element)
    stats = fn.extract_output(fn.merge_accumulators(parts))
    for split in ("train", "validation"):
        sequences = [s for name, s in elements if name == split]
        expected = collections.Counter(chr(r) for s in sequences for r in s)
        assert stats[split]["composition"] == expected
        assert stats[split]["records"] == len(sequences)
        assert stats[split]["lengths"] == collections.Counter(map(len, sequences))
        assert set(stats[split]) == {"records", "residues", "lengths", "composition"}


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
    assert manifest.read_release_metadata(str(path))["release"] == "2024_06"


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
    release = manifest.read_release_metadata(str(metalink))
    assert release["release"] == "2024_06"
    inputs = manifest.describe_inputs([str(data)], release["files"])
    assert inputs == [{"path": str(data), "size_bytes": data.stat().st_size, "md5": md5}]
    release["files"]["uniref50.fasta.gz"]["md5"] = "0" * 32
    with pytest.raises(ValueError, match="md5 is .* but the release metadata says"):
        manifest.describe_inputs([str(data)], release["files"])
    with pytest.raises(ValueError, match="matches no file"):
        manifest.describe_inputs([str(tmp_path / "missing*.fasta")])
    with pytest.raises(ValueError, match="more than one --input"):
        manifest.describe_inputs([str(data), str(tmp_path / "*.gz")])
