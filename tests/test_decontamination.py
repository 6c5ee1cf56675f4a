"""Decontamination against benchmark sets (and the validation split), on real sequences.

The benchmark fixtures (tests/data/make_derived_fixtures.py) hold, for records of the UniRef50
sample: an identical copy, 3 % and 5 % substituted copies, a 70 % inner fragment, a lowercase
copy with a stop, a chimera whose first half only is the record, a 15 % substituted copy, and
unrelated UniProtKB entries.
"""
import concurrent.futures
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipelines import decontaminate
from pipelines import manifest
from pipelines import records
from pipelines import split
from pipelines import uniref

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join("tests", "data", "uniref50_sample.fasta.gz")
OTHER = os.path.join("tests", "data", "uniprotkb_sample.fasta.gz")
SS = os.path.join("tests", "data", "benchmark_ss.fasta")
FLUOR = os.path.join("tests", "data", "benchmark_fluor.fasta")
needs_mmseqs = pytest.mark.skipif(
    shutil.which("mmseqs") is None,
    reason="mmseqs not on PATH: apt-get install mmseqs2 (Debian package of MMseqs2)")
# removed record -> (benchmark file, benchmark id, method)
EXPECTED_REMOVED = {
    "UniRef50_G1NZ79": (SS, "ss_identical", "exact"),
    "UniRef50_A0A0A2ANZ3": (FLUOR, "fluor_subst3", "mmseqs"),  # beats ss_subst5 on bit score
    "UniRef50_A0A146WZV6": (SS, "ss_fragment70", "mmseqs"),  # all of the benchmark is inside
    "UniRef50_A0A0M2DRK1": (FLUOR, "fluor_lowercase_stop", "exact"),  # normalized first
    # A real near-duplicate (99.6 % identical) of A0A0M2DRK1 in the sample.
    "UniRef50_A0A0K6I9W3": (FLUOR, "fluor_lowercase_stop", "mmseqs"),
}
NOT_REMOVED = ("UniRef50_D7FAG4",  # covers only half of ss_chimera50
               "UniRef50_UPIA12783CD97")  # ~85 % identical to ss_subst15
FRACTION = 0.05


def _sample_records():
    with gzip.open(SAMPLE, "rt") as f:
        entries = ("\n" + f.read()).split("\n>")[1:]
    return {r.split()[0]: "".join(r.split("\n")[1:]).encode() for r in entries}


# --- plain functions ------------------------------------------------------------------------

def test_best_hits_thresholds_and_deterministic_choice():
    targets = [decontaminate.Target("b.fa", "b1", b"M"), decontaminate.Target("a.fa", "a1", b"M"),
               decontaminate.Target("a.fa", "a2", b"M")]
    lines = ["q0\tt0\t0.950\t1.000\t300\n",  # lower bit score
             "q0\tt2\t0.990\t0.900\t310\n",
             "q0\tt1\t0.990\t0.900\t310\n",  # ties t2 on everything: a.fa/a1 < a.fa/a2
             "q1\tt0\t0.890\t1.000\t500\n",  # identity below 0.9
             "q2\tt0\t0.990\t0.790\t500\n",  # coverage below 0.8
             "q3\tt0\t0.900\t0.800\t50\n"]  # exactly at both thresholds: kept
    for order in (lines, lines[::-1]):
        best = decontaminate.best_hits(order, targets, 0.9, 0.8)
        assert best == {0: decontaminate.Match("a.fa", "a1", "mmseqs", 0.99, 0.9),
                        3: decontaminate.Match("b.fa", "b1", "mmseqs", 0.9, 0.8)}


def test_exact_index_prefers_the_smallest_file_and_id():
    index = decontaminate.exact_index([decontaminate.Target("z.fa", "a", b"MKV"),
                                       decontaminate.Target("a.fa", "z", b"MKV")])
    assert index == {records.sequence_hash(b"MKV"): decontaminate.Match(
        "a.fa", "z", "exact", 1.0, 1.0)}


def test_benchmark_files_are_read_normalized_and_bad_ones_fail(tmp_path):
    rules = decontaminate.benchmark_rules(records.Rules(records.MAP_TO_X))
    targets = decontaminate.read_benchmark_fasta(FLUOR, rules)
    assert [t.id for t in targets][:2] == ["fluor_subst3", "fluor_lowercase_stop"]
    assert targets[1].sequence == _sample_records()["UniRef50_A0A0M2DRK1"]
    bad = tmp_path / "bad.fasta"
    bad.write_bytes(b">ok\nMKV\n>broken\nMK1V\n")
    with pytest.raises(ValueError, match=r"bad\.fasta: record broken at offset 8 is invalid "
                                         r"\(invalid_character"):
        decontaminate.read_benchmark_fasta(str(bad), rules)
    empty = tmp_path / "empty.fasta"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.fasta holds no FASTA record"):
        decontaminate.read_benchmark_fasta(str(empty), rules)


@needs_mmseqs
def test_search_finds_the_expected_matches_whatever_the_batching():
    rules = decontaminate.benchmark_rules(records.Rules())
    targets = (decontaminate.read_benchmark_fasta(SS, rules)
               + decontaminate.read_benchmark_fasta(FLUOR, rules))
    sample = _sample_records()
    names = sorted(EXPECTED_REMOVED) + list(NOT_REMOVED) + sorted(sample)[:40]
    queries = [sample[n] for n in names]
    with decontaminate.MmseqsSearch(targets, 0.9, 0.8) as search, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # Independent searches (one mmseqs process of one thread each): two at a time.
        pending = [pool.submit(search.search, batch)
                   for batch in (queries, queries[:7], queries[7:], queries[::-1])]
        whole, first, rest, backwards = (future.result() for future in pending)
    halves = dict(first)
    halves.update((7 + i, m) for i, m in rest.items())
    reversed_order = {len(queries) - 1 - i: m for i, m in backwards.items()}
    assert whole == halves == reversed_order
    found = {names[i]: (m.source, m.id) for i, m in whole.items()}
    # Exact copies are found by the search too (the job finds them by hash first).
    expected = {n: (f, i) for n, (f, i, _) in EXPECTED_REMOVED.items()}
    assert {n: found.get(n) for n in expected} == expected
    assert not set(found) & set(NOT_REMOVED)
    assert set(found) <= set(expected)  # nothing else among the 40 other sample records


def test_missing_mmseqs_is_a_clear_error_before_any_output(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # a real absence, not a mock
    out = tmp_path / "out"
    with pytest.raises(decontaminate.MmseqsNotFoundError,
                       match="`mmseqs` is not on PATH .*apt-get install mmseqs2"):
        uniref.run(["--input=" + SAMPLE, "--output_dir=" + str(out), "--benchmark_fasta=" + SS])
    assert not out.exists()


# --- the job ------------------------------------------------------------------------------

def _validation_pairs(tmp_path):
    """A FASTA of real sequences in validation clusters and 4 %-substituted copies in train ones."""
    with gzip.open(OTHER, "rt") as f:
        sequences = ["".join(r.split("\n")[1:]) for r in ("\n" + f.read()).split("\n>")[1:]]
    # Entries 0-7 are in the benchmark files; these are not.
    sequences = [s for s in sequences[250:] if len(s) >= 150][:3]
    names = iter(range(10_000))
    pick = lambda side: next(n for n in (("%s_%d" % (side[:5], i)) for i in names)
                             if split.split_of(n, FRACTION) == side)
    lines, expected = [], {}
    for sequence in sequences:
        held_out, train = pick(split.VALIDATION), pick(split.TRAIN)
        copy = "".join(("W" if r != "W" else "A") if i % 25 == 3 else r
                       for i, r in enumerate(sequence))
        lines += [">%s\n%s\n" % (held_out, sequence), ">%s\n%s\n" % (train, copy)]
        expected[train] = held_out
    path = tmp_path / "pairs.fasta"
    path.write_text("".join(lines))
    return str(path), expected


def _flags(pairs):
    return ["--input=" + SAMPLE, "--input=" + pairs, "--benchmark_fasta=" + SS,
            "--benchmark_fasta=" + FLUOR, "--decontaminate_validation", "--release=sample",
            "--validation_fraction=%g" % FRACTION, "--num_train_shards=2",
            "--num_validation_shards=1"]


@pytest.fixture(scope="module")
def decontaminated_run(tmp_path_factory):
    """The decontaminating job in this process, and the same job with another
    --decontam_batch_size started before it in a subprocess (`python -m pipelines.uniref`),
    which runs next to it: the first's output dir and manifest, the inputs' pairs, and the
    second's (output dir, process, log)."""
    if shutil.which("mmseqs") is None:
        pytest.skip("mmseqs not on PATH: apt-get install mmseqs2 (Debian package of MMseqs2)")
    directory = tmp_path_factory.mktemp("decontaminated")
    pairs, expected_pairs = _validation_pairs(directory)
    out, again, log = (str(directory / name) for name in ("out", "again", "again.log"))
    with open(log, "w") as log_file:
        other_batches = subprocess.Popen(
            [sys.executable, "-m", "pipelines.uniref"] + _flags(pairs)
            + ["--output_dir=" + again, "--decontam_batch_size=300"],
            cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        value = uniref.run(_flags(pairs) + ["--output_dir=" + out])
        yield out, value, pairs, expected_pairs, (again, other_batches, log)
    finally:
        if other_batches.poll() is None:
            other_batches.kill()
        other_batches.wait()


def test_job_removes_overlaps_with_reasons_lists_and_manifest(decontaminated_run):
    out, value, pairs, expected_pairs, _ = decontaminated_run
    rejected = [json.loads(line) for n in sorted(os.listdir(out)) if n.startswith("rejected.")
                for line in open(os.path.join(out, n))]
    benchmark = {r["id"]: (r["match"]["file"], r["match"]["id"], r["match"]["method"])
                 for r in rejected if r["reason"] == "benchmark_overlap"}
    assert benchmark == EXPECTED_REMOVED
    by_validation = {r["id"]: r["match"]["id"] for r in rejected
                     if r["reason"] == "validation_overlap"}
    # Besides the planted pairs, a real homolog: the sample's UniRef50_Q5L898 is >= 90 %
    # identical over >= 80 % of the first pair's (real, unedited) validation sequence.
    assert by_validation == dict(expected_pairs, UniRef50_Q5L898="valid_2")
    assert all(r["match"]["identity"] >= 0.9 and r["match"]["coverage"] >= 0.8 for r in rejected)
    counts = value["counts"]
    assert counts["records_read"] == 900 + 6
    assert counts["rejected"]["benchmark_overlap"] == 5
    assert counts["rejected"]["validation_overlap"] == 4
    manifest.check_conservation(counts)
    files = {b["path"]: b for b in value["decontamination"]["benchmarks"]}
    assert {p: (f["records"], f["removed_exact"], f["removed_similar"]) for p, f in files.items()} \
        == {SS: (10, 1, 1), FLUOR: (5, 1, 2)}
    assert value["decontamination"]["validation"]["removed"] == 4
    assert (value["decontamination"]["min_identity"],
            value["decontamination"]["min_coverage"]) == (0.9, 0.8)
    lines = open(os.path.join(out, "benchmark_removed.tsv")).read().splitlines()
    assert lines[0].split("\t")[:5] == ["id", "cluster_id", "reason", "benchmark_file",
                                        "benchmark_id"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == sorted(list(EXPECTED_REMOVED) + list(expected_pairs)
                                          + ["UniRef50_Q5L898"])
    assert {r[0]: (r[3], r[4], r[5]) for r in rows if r[2] == "benchmark_overlap"} \
        == EXPECTED_REMOVED
    listed = {o["name"]: o for o in value["outputs"]}
    assert listed["benchmark_removed.tsv"]["records"] == 9
    assert set(os.listdir(out)) == set(listed) | {manifest.MANIFEST_NAME}


def test_removed_sequences_are_in_no_output_shard(decontaminated_run):
    tf = pytest.importorskip("tensorflow")
    out, value, _, expected_pairs, _ = decontaminated_run
    names = sorted(os.path.join(out, n) for n in os.listdir(out) if ".tfrecord-" in n)
    ids = {tf.train.Example.FromString(r.numpy()).features.feature["id"].bytes_list.value[0]
           .decode() for r in tf.data.TFRecordDataset(names)}
    assert len(ids) == value["counts"]["train"] + value["counts"]["validation"]
    assert not ids & (set(EXPECTED_REMOVED) | set(expected_pairs))
    assert set(NOT_REMOVED) <= ids and set(expected_pairs.values()) <= ids
    validation_ids = open(os.path.join(out, "validation_clusters.txt")).read().split()
    assert validation_ids == sorted(validation_ids) and set(expected_pairs.values()) <= set(
        validation_ids)


def test_job_output_does_not_depend_on_batch_size(decontaminated_run):
    out, _, _, _, (again, other_batches, log) = decontaminated_run
    with open(log) as f:
        assert other_batches.wait(timeout=600) == 0, f.read()[-3000:]
    read = lambda d: {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}
    assert read(again) == read(out)
