"""The profiles job: alignment readers, profile HMM targets, and the Beam job in both modes, on
real Pfam / FAMSA alignments (tests/data/profiles, made by scripts/make_profile_samples.py)."""
import gzip
import io
import json
import os

import numpy as np
import pytest

from pipelines import alignments
from pipelines import profile_hmm
from pipelines import profiles
from pipelines import records
from pipelines import uniref

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "profiles")
SEEDS = os.path.join(DATA, "pfam_seeds.sto.gz")
FULL = os.path.join(DATA, "pfam_full.sto.gz")
PUBLISHED = os.path.join(DATA, "pfam_published.hmm.gz")
HEMOPEXIN = os.path.join(DATA, "hemopexin.afa.gz")
RULES = records.Rules()
OPTIONS = profile_hmm.BuildOptions()


def _families(path):
    return {f.key: f for f in alignments.read_families(path)}


def _write(path, text: bytes):
    with open(path, "wb") as f:
        f.write(text)
    return str(path)


def test_stockholm_reader_splits_families_and_reads_rf():
    families = _families(SEEDS)
    assert {key: len(f.rows) for key, f in families.items()} == {
        "PF00041.20": 98, "PF00069.24": 38, "PF00076.13": 79, "pfam_seeds.3": 4, "PF03773.15": 11}
    assert families["PF00041.20"].name == "fn3"  # pfam_seeds.3: globins4, without ID or AC.
    assert families["PF03773.15"].reference is not None
    assert families["PF00041.20"].reference is None
    for family in families.values():
        assert len({len(row) for row in family.rows}) == 1


def test_streamed_rows_equal_whole_families():
    rows = list(alignments.read_rows(FULL))
    families = _families(FULL)
    assert [(r.family, r.name, r.aligned) for r in rows] == [
        (f.key, n, a) for f in families.values() for n, a in zip(f.row_names, f.rows)]


@pytest.mark.parametrize("text, message", [
    (b"# STOCKHOLM 1.0\n#=GF AC PF1\nA/1-3 ACD\n", "without the '//'"),
    (b"A/1-3 ACD\n", "outside a family"),
    (b"# STOCKHOLM 1.0\n#=GF AC PF1\nA/1-3 ACD extra\n//\n", "must be '<name> <aligned row>'"),
    (b"# STOCKHOLM 1.0\nA ACD\n# STOCKHOLM 1.0\n//\n", "before the '//'"),
])
def test_stockholm_structure_errors_name_file_and_family(tmp_path, text, message):
    path = _write(tmp_path / "bad.sto", text)
    with pytest.raises(alignments.AlignmentFormatError, match=message) as error:
        list(alignments.read_families(path))
    assert path in str(error.value)


def test_truncated_gzip_is_an_error(tmp_path):
    data = open(SEEDS, "rb").read()
    path = _write(tmp_path / "cut.sto.gz", data[:len(data) // 2])
    with pytest.raises(alignments.AlignmentFormatError, match="truncated or corrupt"):
        list(alignments.read_families(path))


def test_streaming_refuses_interleaved_blocks(tmp_path):
    path = _write(tmp_path / "blocks.sto", b"# STOCKHOLM 1.0\n#=GF AC PF1\nA AC\nB AC\n\n"
                                          b"A DE\nB DE\n//\n")
    assert _families(path)["PF1"].rows == [b"ACDE", b"ACDE"]
    with pytest.raises(alignments.AlignmentFormatError, match="appears twice"):
        list(alignments.read_rows(path))


def test_match_columns_are_hmmers_own_without_rf_and_rf_with_it():
    families = _families(SEEDS)
    for key, family in families.items():
        hmm, columns = profile_hmm.build_family_hmm(family.rows, family.reference, key, OPTIONS)
        assert columns.sum() == hmm.M
        if family.reference is not None:
            assert np.array_equal(columns, profile_hmm.reference_match_columns(family.reference))
    # The RF line of hmmalign's output reproduces the published HMM's length when rebuilt.
    full = _families(FULL)["PF00041.13"]
    hmm, _ = profile_hmm.build_family_hmm(full.rows, full.reference, "fn3", OPTIONS)
    assert hmm.M == 86 == next(profile_hmm.read_hmms(PUBLISHED)).length
    # The job's short E-value calibration leaves the emissions those of HMMER's full one.
    from pyhmmer import easel, plan7

    alphabet = easel.Alphabet.amino()
    msa = easel.TextMSA(name=b"fn3", sequences=[easel.TextSequence(
        name=b"%d" % i, sequence=row.decode()) for i, row in enumerate(full.rows)])
    msa.reference = full.reference.decode()
    calibrated, _, _ = plan7.Builder(alphabet, architecture="hand", seed=42).build_msa(
        msa.digitize(alphabet), plan7.Background(alphabet))
    for emissions in ("match_emissions", "insert_emissions"):
        np.testing.assert_array_equal(np.asarray(getattr(hmm, emissions)),
                                      np.asarray(getattr(calibrated, emissions)))
    # Built profiles (states by column) equal the state-form walk of the same rows.
    result = profile_hmm.family_profiles(full, RULES, OPTIONS)
    for index, row in result.profiles:
        walked = profile_hmm.row_profile(full.rows[index], result.targets)
        assert walked.sequence == row.sequence
        np.testing.assert_array_equal(walked.states, row.states)


def test_targets_are_match_emissions_at_match_residues_insert_emissions_at_inserts():
    targets = next(t for t in profile_hmm.read_hmms(PUBLISHED) if t.key == "PF00041.13")
    row = next(r for r in alignments.read_rows(FULL) if r.name == "KALM_CHICK/544-641")
    result = profile_hmm.row_profile(row.aligned, targets)
    residues = [c for c in row.aligned.decode() if c.isalpha()]
    assert result.sequence.decode() == "".join(residues).upper()
    node, checked_insert, position = 0, False, 0
    for character in row.aligned.decode():
        if character == "-" or character.isupper():
            node += 1
        if character.isupper():
            np.testing.assert_array_equal(result.profile[position], targets.match[node])
        if character.islower():
            np.testing.assert_array_equal(result.profile[position], targets.insert[node])
            assert not np.allclose(targets.insert[node], targets.match[node])
            checked_insert = True
        position += character.isalpha()
    assert checked_insert and position == len(result.sequence)
    none = profile_hmm.row_profile(row.aligned, targets, profile_hmm.INSERT_NONE).profile
    inserts = np.array([c.islower() for c in row.aligned.decode() if c.isalpha()])
    assert not none[inserts].any() and np.array_equal(none[~inserts], result.profile[~inserts])
    with pytest.raises(ValueError, match="86 nodes"):
        profile_hmm.row_profile(row.aligned + b"A", targets)


def test_quantization_error_below_1_over_255_and_rows_sum_to_one():
    family = _families(HEMOPEXIN)["hemopexin"]
    result = profile_hmm.family_profiles(family, RULES, OPTIONS)
    exact = np.concatenate([p.profile for _, p in result.profiles])
    decoded = profile_hmm.dequantize_profile(profile_hmm.quantize_profile(exact).tobytes())
    assert np.abs(decoded - exact).max() < 1 / 255
    np.testing.assert_allclose(decoded.sum(axis=1), 1.0, atol=1e-6)
    zero = profile_hmm.quantize_profile(np.zeros((2, 20), np.float32))
    assert zero.tobytes() == bytes(40)


def test_family_rejections(tmp_path):
    ragged = alignments.Family("f.sto", 0, "fam", "", None, ["a", "b", "c", "d"],
                               [b"AC-DE", b"ACKD", b"AC1DE", b"ACKDE"], [1, 2, 3, 4],
                               alignments.STOCKHOLM)
    result = profile_hmm.family_profiles(ragged, RULES, OPTIONS, min_sequences=2)
    assert [(r.index, r.reason) for r in result.rejected] == [
        (1, profile_hmm.RAGGED_ROW), (2, records.INVALID_CHARACTER)]
    assert len(result.profiles) == 2 and result.family_rejection is None
    few = profile_hmm.family_profiles(ragged, RULES, OPTIONS, min_sequences=3)
    assert few.family_rejection[0] == profile_hmm.TOO_FEW_SEQUENCES and not few.profiles
    assert [r.reason for r in few.rejected].count(profile_hmm.TOO_FEW_SEQUENCES) == 2
    empty = ragged._replace(row_names=[], rows=[], row_lines=[])
    assert profile_hmm.family_profiles(empty, RULES, OPTIONS).family_rejection[0] == (
        profile_hmm.EMPTY_ALIGNMENT)
    a3m = ragged._replace(rows=[b"ACdDE", b"AC-E", b"ACkkDE", b"ACD"], format=alignments.A3M)
    result = profile_hmm.family_profiles(a3m, RULES, OPTIONS)
    assert [(r.index, r.reason) for r in result.rejected] == [(3, profile_hmm.INCONSISTENT_A3M)]
    lengths = {i: len(p.sequence) for i, p in result.profiles}
    assert lengths == {0: 5, 1: 3, 2: 6}


def test_help_lists_every_flag_with_its_default_and_points_to_beam_options():
    parser = profiles.flag_parser()
    shown = "".join(parser.format_help().split())  # argparse wraps lines anywhere
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == 29
    for action in flags:
        assert action.help and action.option_strings[0] in shown
    assert "(default:0.05)" in shown and "(default:16)" in shown
    assert "".join(uniref.BEAM_OPTIONS_DOCS.split()) in shown


def test_a3m_expansion():
    aligned, reference = alignments.a3m_to_aligned([b"AcD", b"A-", b"ggAkkD"])
    assert aligned == [b"..Ac.D", b"..A..-", b"ggAkkD"]
    assert reference == b"..x..x"


def _read_examples(directory, split):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    names = sorted(n for n in os.listdir(directory) if n.startswith(split + ".tfrecord-"))
    dataset = tf.data.TFRecordDataset([os.path.join(directory, n) for n in names])
    return [tf.train.Example.FromString(r.numpy()).features.feature for r in dataset]


def _rejected(directory):
    return [json.loads(line) for name in sorted(os.listdir(directory))
            if name.startswith("rejected.jsonl-") for line in open(os.path.join(directory, name))]


BAD_STOCKHOLM = (b"# STOCKHOLM 1.0\n#=GF ID broken\nA/1-5 ACKDE\nB/1-3 AC-D\nC/1-5 ACXD*\n"
                 b"D/1-5 ACKDE\nE/1-4 AC-DE\n//\n"
                 b"# STOCKHOLM 1.0\n#=GF ID lonely\nA/1-5 ACDEF\n//\n"
                 b"# STOCKHOLM 1.0\n#=GF ID empty\n//\n")


@pytest.fixture(scope="module")
def built_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("built")
    bad = _write(directory / "bad.sto", BAD_STOCKHOLM)
    # bench1 is A/1-5 of 'broken' (exact), HBB_HUMAN a row of globins4 (found by MMseqs2).
    globins4 = _families(SEEDS)["pfam_seeds.3"]
    hbb_human = globins4.rows[globins4.row_names.index("HBB_HUMAN")].translate(None, b".-")
    benchmark = _write(directory / "benchmark.fasta",
                       b">bench1\nACKDE\n>HBB_HUMAN\n" + hbb_human + b"\n")
    out = str(directory / "out")
    value = profiles.run(["--input=" + SEEDS, "--input=" + bad, "--output_dir=" + out,
                          "--benchmark_fasta=" + benchmark,
                          "--validation_fraction=0.4", "--num_train_shards=2",
                          "--num_validation_shards=1"])
    return out, value


def test_built_mode_counts_rejections_and_conserves(built_run):
    out, value = built_run
    counts, families = value["counts"], value["families"]
    assert counts["records_read"] == 98 + 38 + 79 + 4 + 11 + 5 + 1
    assert counts["rejected"] == {profile_hmm.RAGGED_ROW: 1, records.INTERNAL_STOP: 1,
                                  profile_hmm.TOO_FEW_SEQUENCES: 1,
                                  records.BENCHMARK_OVERLAP: 2}
    assert counts["duplicates"] == 1  # D/1-5 of 'broken' has A/1-5's sequence.
    removed = open(os.path.join(out, "benchmark_removed.tsv")).read()
    assert removed.count("bench1") == 1 and removed.count("HBB_HUMAN") == 2
    assert families["rejected"] == {profile_hmm.EMPTY_ALIGNMENT: 1,
                                    profile_hmm.TOO_FEW_SEQUENCES: 1}
    assert families["read"] == 8 and families["with_profiles"] == 6
    assert sum(b["records"] for b in families["depth_histogram"]) == 8
    examples = _read_examples(out, "train") + _read_examples(out, "validation")
    assert len(examples) == counts["train"] + counts["validation"]
    assert counts["train"] > 0 and counts["validation"] > 0
    splits = {}
    for feature in examples:
        length = feature["length"].int64_list.value[0]
        profile = np.frombuffer(feature["profile"].bytes_list.value[0], np.uint8)
        assert len(feature["sequence"].bytes_list.value[0]) == length
        assert profile.reshape(length, 20).sum(axis=1).tolist() == [255] * length
        family = feature["family"].bytes_list.value[0].decode()
        splits.setdefault(family, set()).add(feature["depth"].int64_list.value[0])
    assert splits["PF00041.20"] == {98} and splits["broken"] == {5}
    assert sum(1 for f in examples if f["family"].bytes_list.value[0] == b"broken") == 1
    reasons = {}
    for record in _rejected(out):
        reasons[record["reason"]] = reasons.get(record["reason"], 0) + 1
    assert reasons == {records.INTERNAL_STOP: 1, profile_hmm.RAGGED_ROW: 1,
                       records.BENCHMARK_OVERLAP: 2,
                       profile_hmm.TOO_FEW_SEQUENCES: 2, profile_hmm.EMPTY_ALIGNMENT: 1}


def test_published_mode_matches_built_targets_and_is_deterministic(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        runs.append(profiles.run(["--input=" + FULL, "--hmm=" + PUBLISHED, "--output_dir=" + out,
                                  "--num_train_shards=2", "--num_validation_shards=1"]))
    assert runs[0]["outputs"] == runs[1]["outputs"]
    assert runs[0]["counts"]["train"] + runs[0]["counts"]["validation"] == 98 + 79
    targets = {t.key: t for t in profile_hmm.read_hmms(PUBLISHED)}
    rows = {(r.family, r.name): r for r in alignments.read_rows(FULL)}
    examples = _read_examples(str(tmp_path / "a"), "train") + _read_examples(
        str(tmp_path / "a"), "validation")
    for feature in examples[:20]:
        key = (feature["family"].bytes_list.value[0].decode(),
               feature["id"].bytes_list.value[0].decode())
        exact = profile_hmm.row_profile(rows[key].aligned, targets[key[0]]).profile
        decoded = profile_hmm.dequantize_profile(feature["profile"].bytes_list.value[0])
        assert np.abs(decoded - exact).max() < 1 / 255


@pytest.mark.skipif(not __import__("shutil").which("mmseqs"), reason="mmseqs (MMseqs2) not on PATH")
def test_search_mode_profiles_queries_from_their_mmseqs_msa(tmp_path):
    db = "/usr/share/doc/mmseqs2/example-data/DB.fasta.gz"
    if not os.path.exists(db):
        pytest.skip("Debian's mmseqs2-examples (DB.fasta.gz) not installed")
    entries = gzip.open(db, "rb").read().split(b">")[1:501]
    target = _write(tmp_path / "target.fasta", b"".join(b">" + e for e in entries))
    queries = _write(tmp_path / "queries.fasta", b"".join(b">" + e for e in entries[:4]))
    out = str(tmp_path / "out")
    value = profiles.run(["--input=" + queries, "--search_db=" + target, "--output_dir=" + out,
                          "--validation_fraction=0", "--num_train_shards=1"])
    assert value["mode"] == profiles.SEARCH
    assert value["counts"]["records_read"] == 4 == value["families"]["read"]
    examples = _read_examples(out, "train")
    assert len(examples) + sum(value["counts"]["rejected"].values()) == 4
    ids = [e.split(b"\n", 1)[0].split()[0].decode() for e in entries[:4]]
    for feature in examples:
        assert feature["id"].bytes_list.value[0].decode() in ids
        assert feature["family"].bytes_list.value[0] == feature["id"].bytes_list.value[0]
        assert feature["depth"].int64_list.value[0] >= 2  # the query and its hit on itself
