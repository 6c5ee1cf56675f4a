"""Probes: labels and split on a committed sample of the real DSSP file, the linear probes and
their baselines, and the harness end to end on a tiny checkpoint trained with real T5X."""
import concurrent.futures
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from probes import data
from probes import linear

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSSP_SAMPLE = os.path.join(REPO_ROOT, "tests", "data", "dssp_sample.json")
GB1_SAMPLE = os.path.join(REPO_ROOT, "tests", "data", "gb1_sample.csv.gz")
# The sample is small: keep every unique sequence, hold out 30 % of the clusters.
SAMPLE_PARAMS = data.SsParams(pool_size=1000, test_fraction=0.3, validation_fraction=0.1,
                              sizes=(("train", 1000), ("validation", 1000), ("test", 1000)))
SAMPLE_GB1 = data.Gb1Params(sizes=(("train", 100), ("validation", 100), ("test", 100)))
needs_mmseqs = pytest.mark.skipif(shutil.which("mmseqs") is None,
                                  reason="mmseqs not on PATH (apt-get install mmseqs2)")


def test_ss3_reduction_and_ss8_labels():
    dssp = "LHGIEBTSL"
    assert data.ss3_labels(dssp) == "CHHHEECCC"
    assert data.ss8_labels(dssp) == "CHGIEBTSC"


def test_bad_dssp_record_is_an_error_naming_file_and_chain(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"1ABC_1_A": {"Sequence": "MKV", "DSSP": "LLX"}}))
    with pytest.raises(ValueError, match=r"bad.json: record 1ABC_1_A has DSSP states X"):
        data.read_dssp_records(str(path))
    path.write_text(json.dumps({"1ABC_1_A": {"Sequence": "MKV", "DSSP": "LL"}}))
    with pytest.raises(ValueError, match=r"record 1ABC_1_A has 3 residues but 2 DSSP states"):
        data.read_dssp_records(str(path))


def test_unique_records_keep_the_smallest_chain_and_count_what_is_left_out():
    records = data.read_dssp_records(DSSP_SAMPLE)
    unique, left_out = data.unique_records(records, SAMPLE_PARAMS)
    assert len(unique) + sum(left_out.values()) == len(records) == 240
    assert all(left_out[reason] > 0 for reason in ("duplicate", "too_short", "non_canonical"))
    by_sequence = {}
    for record in records:
        by_sequence.setdefault(record.sequence, []).append(record.id)
    for record in unique:
        assert record.id == min(by_sequence[record.sequence])
        assert set(record.sequence) <= data.CANONICAL
        assert len(record.sequence) >= SAMPLE_PARAMS.min_length


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The probe data of the committed samples (`data.prepare`), and a second preparation of the
    same inputs (for the byte-for-byte test), run in a thread next to the first and the tests
    after it (its time is mmseqs, one thread per call): the output dir, manifest and the second
    preparation's (output dir, future)."""
    if shutil.which("mmseqs") is None:
        pytest.skip("mmseqs not on PATH (apt-get install mmseqs2)")
    out, again = tmp_path_factory.mktemp("probe_data"), tmp_path_factory.mktemp("probe_again")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        repeat = pool.submit(data.prepare, str(again), SAMPLE_PARAMS, SAMPLE_GB1, DSSP_SAMPLE,
                             GB1_SAMPLE)
        manifest = data.prepare(str(out), SAMPLE_PARAMS, SAMPLE_GB1, DSSP_SAMPLE, GB1_SAMPLE)
        yield out, manifest, (again, repeat)


def _records(out, split):
    return [data.SsRecord(item["id"], item["sequence"], "") for item in
            data.read_jsonl(os.path.join(out, "ss_%s.jsonl" % split))]


@needs_mmseqs
def test_no_held_out_protein_is_within_the_threshold_of_a_train_protein(prepared, tmp_path):
    out, manifest, _ = prepared
    train, test = _records(out, "train"), _records(out, "test")
    validation = _records(out, "validation")
    counts = manifest["secondary_structure"]["counts"]
    assert len(train) == counts["final"]["train"] > len(test) == counts["final"]["test"] > 20
    assert {r.id for r in train}.isdisjoint(r.id for r in test + validation)
    # An all-against-all alignment (no k-mer prefilter), independent of the split's own search.
    fasta = {name: str(tmp_path / (name + ".fasta")) for name in ("held_out", "train")}
    data.write_fasta(fasta["held_out"], ((r.id, r.sequence) for r in test + validation))
    data.write_fasta(fasta["train"], ((r.id, r.sequence) for r in train))
    hits = tmp_path / "hits.tsv"
    subprocess.run(["mmseqs", "easy-search", fasta["held_out"], fasta["train"], str(hits),
                    str(tmp_path / "tmp"), "--exhaustive-search", "1", "-e", "10",
                    "--format-output", "query,target,fident,qcov", "--threads", "1", "-v", "1"],
                   check=True)
    close = [line for line in hits.read_text().splitlines()
             if float(line.split("\t")[2]) >= SAMPLE_PARAMS.min_identity
             and float(line.split("\t")[3]) >= SAMPLE_PARAMS.min_coverage]
    assert close == []
    # The sample's near-identical families (myoglobin 10*M, T4 lysozyme 10*L) stay on one side.
    for family in ("M_1_A", "L_1_A"):
        sides = {name for name in ("train", "validation", "test")
                 for r in _records(out, name) if r.id.startswith("10") and r.id.endswith(family)}
        assert len(sides) == 1, (family, sides)


@needs_mmseqs
def test_prepared_files_hold_the_labels_and_repeat_byte_for_byte(prepared):
    out, _, (again, repeat) = prepared
    raw = {r.id: r for r in data.read_dssp_records(DSSP_SAMPLE)}
    for item in data.read_jsonl(os.path.join(out, "ss_test.jsonl")):
        assert item["sequence"] == raw[item["id"]].sequence
        assert item["ss3"] == data.ss3_labels(raw[item["id"]].dssp)
        assert item["ss8"] == data.ss8_labels(raw[item["id"]].dssp)
    fasta = (out / "ss_test.fasta").read_text().split()
    assert fasta[0::2] == [">" + item["id"] for item in
                           data.read_jsonl(os.path.join(out, "ss_test.jsonl"))]
    assert (out / "gb1_wildtype.fasta").read_text().split()[1] == (
        "QYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE")
    repeat.result()  # the second preparation of the same inputs
    for name in sorted(os.listdir(out)):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_one_hot_window_marks_neighbours_and_chain_ends():
    features = linear.one_hot_window("ACD", window=1).toarray()
    assert features.shape == (3, 3 * 21)
    assert features.sum(axis=1).tolist() == [3, 3, 3]
    # Residue 0: outside the chain on its left, itself (A), then C on its right.
    assert np.flatnonzero(features[0]).tolist() == [20, 21 + 0, 42 + 1]


def test_bootstrap_interval_brackets_the_accuracy_and_repeats_for_a_seed():
    correct, counts = [5, 9, 1, 7, 3], [10, 10, 10, 10, 10]
    first = linear.bootstrap_accuracy(correct, counts, seed=3)
    assert first == linear.bootstrap_accuracy(correct, counts, seed=3)
    assert first["accuracy"] == 0.5
    assert first["ci_low"] < 0.5 < first["ci_high"]


@needs_mmseqs
def test_one_hot_baseline_reproduces_its_figures_on_the_sample(prepared):
    from probes import run
    out, _, _ = prepared
    sets = run.load_probe_sets(str(out), run.TASKS)
    results = run.run_probes(sets, run.one_hot_features(sets), run.TASKS, seed=0,
                             per_position=True)
    assert results["ss3"]["q3"] == pytest.approx(ONE_HOT_Q3, abs=1e-3)
    assert results["ss8"]["q8"] == pytest.approx(ONE_HOT_Q8, abs=1e-3)
    assert results["gb1"]["spearman"] == pytest.approx(ONE_HOT_GB1, abs=1e-3)


# The one-hot probes' test figures on the committed sample (74 test proteins, 12,814 residues;
# 100 GB1 test variants), seed 0.
ONE_HOT_Q3 = 0.62549
ONE_HOT_Q8 = 0.50788
ONE_HOT_GB1 = 0.61817


# ---------------------------------------------------------------------------------------------
# The harness on the suite's tiny model trained with real T5X (conftest's `continued_run`).

SS_TEST = 25


@needs_mmseqs
def test_harness_end_to_end_on_a_tiny_checkpoint(prepared, continued_run, tmp_path):
    from probes import run
    out, _, _ = prepared
    argv = ["--checkpoint=" + continued_run["checkpoint"], "--gin_file=gin/models/tiny.gin",
            "--tasks=ss3,ss8,gb1", "--data_dir=%s" % out, "--seed=0",
            # Subsets, to keep the test short: the figures are not the point here.
            "--ss_train=40", "--ss_test=%d" % SS_TEST, "--gb1_train=60", "--gb1_test=40"]
    run.main(argv + ["--output_dir=%s" % (tmp_path / "a")])
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(results) == {"ss3", "ss8", "gb1"}
    for task, metric in (("ss3", "q3"), ("ss8", "q8"), ("gb1", "spearman")):
        assert set(results[task]) == {"model", "one_hot", "random_weights"}
        for name, figures in results[task].items():
            low, value, high = figures["ci_low"], figures[metric], figures["ci_high"]
            assert (0.0 if task != "gb1" else -1.0) <= low <= value <= high <= 1.0, (task, name)
        assert isinstance(results[task]["model"]["beats_one_hot"], bool)
    # SS probes on a 4-step model beat chance (1/3, 1/8) on the sample: the labels line up.
    assert results["ss3"]["model"]["q3"] > 0.4
    assert results["ss3"]["model"]["residues"] == sum(
        len(item["sequence"]) for item in data.read_jsonl(os.path.join(out, "ss_test.jsonl"))[
            :SS_TEST])
    assert results["gb1"]["model"]["variants"] == 40
    assert (tmp_path / "a" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_masked_lm_accuracy_counts_only_masked_residues_and_brackets_always_l():
    from probes import masked_lm
    from tasks import vocabulary as vocabulary_lib
    pv = vocabulary_lib.ProteinVocabulary()
    # Two denoising targets: (sentinel, residue) pairs then EOS.
    targets = [np.array(pv.encode("<extra_id_0>L<extra_id_1>K") + [pv.eos_id]),
               np.array(pv.encode("<extra_id_0>A<extra_id_1>L<extra_id_2>L") + [pv.eos_id])]
    examples = [{"inputs": np.array([3]), "targets": t} for t in targets]
    exact = masked_lm.score(examples, [t.copy() for t in targets], seed=0)
    assert (exact["accuracy"], exact["masked_residues"], exact["always_l"]) == (1.0, 5, 0.6)
    # Answering L everywhere (sentinel and EOS positions too) scores exactly the always-L rate.
    always_l = masked_lm.score(examples, [np.full_like(t, pv.encode("L")[0]) for t in targets],
                               seed=0)
    assert always_l["accuracy"] == pytest.approx(0.6)


def test_masked_lm_on_a_tiny_checkpoint_scores_the_held_out_masked_residues(continued_run):
    from probes import masked_lm
    lengths = {"inputs": 32, "targets": 32}
    result = masked_lm.evaluate(continued_run["checkpoint"], "gin/models/tiny.gin",
                                continued_run["data_dir"], num_examples=6,
                                feature_lengths=lengths)
    examples = masked_lm.denoising_examples(continued_run["data_dir"], 0.2, lengths, 6)
    # 20 % of a 30-residue crop, one sentinel and one residue each: the targets' residue count.
    assert result["masked_residues"] == sum((len(e["targets"]) - 1) // 2 for e in examples)
    assert result["examples"] == 6
    assert 0.0 <= result["ci_low"] <= result["accuracy"] <= result["ci_high"] <= 1.0
