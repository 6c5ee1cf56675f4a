"""The UniRef job end to end on DirectRunner: real data, bad input, determinism, atomicity, Dataflow."""
import argparse
import gzip
import json
import os
import re
import resource
import subprocess
import sys
import tarfile

import pytest

from pipelines import fasta
from pipelines import manifest
from pipelines import records
from pipelines import uniref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIREF_SAMPLE = os.path.join("tests", "data", "uniref50_sample.fasta.gz")
UNIPROTKB_SAMPLE = os.path.join("tests", "data", "uniprotkb_sample.fasta.gz")
SAMPLE_FLAGS = ["--release=sample", "--num_train_shards=8", "--num_validation_shards=2",
                "--num_rejected_shards=2", "--validation_fraction=0.05"]


def _read_files(directory):
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


def _read_examples(directory, split):
    tf = pytest.importorskip("tensorflow")
    names = sorted(n for n in os.listdir(directory) if n.startswith(split + ".tfrecord-"))
    dataset = tf.data.TFRecordDataset([os.path.join(directory, n) for n in names])
    return [tf.train.Example.FromString(r.numpy()).features.feature for r in dataset]


def _read_rejected(directory):
    lines = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("rejected.jsonl-"):
            with open(os.path.join(directory, name)) as f:
                lines += [json.loads(line) for line in f]
    return lines


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """One in-memory run over both bundled samples, shared by the tests that read its output."""
    output_dir = str(tmp_path_factory.mktemp("sample") / "out")
    value = uniref.run(["--input=" + UNIREF_SAMPLE, "--input=" + UNIPROTKB_SAMPLE,
                        "--output_dir=" + output_dir] + SAMPLE_FLAGS)
    return output_dir, value


def test_sample_end_to_end_figures(sample_run):
    output_dir, value = sample_run
    counts = value["counts"]
    # 900 UniRef50 + 299 UniProtKB records; seqkit rmdup -s finds 3 duplicated sequences in
    # the UniRef50 sample and none in the UniProtKB sample.
    assert counts["records_read"] == 1199
    assert [(i["path"], i["records"]) for i in value["inputs"]] == [
        (UNIREF_SAMPLE, 900), (UNIPROTKB_SAMPLE, 299)]
    assert counts["rejected_total"] == 0
    assert counts["duplicates"] >= 3
    assert counts["train"] + counts["validation"] == 1199 - counts["duplicates"]
    assert 20 <= counts["validation"] <= 100
    assert value["release"]["release"] == "sample"
    assert value["inputs"][0]["size_bytes"] == os.path.getsize(UNIREF_SAMPLE)
    train, validation_ = _read_examples(output_dir, "train"), _read_examples(output_dir, "validation")
    assert (len(train), len(validation_)) == (counts["train"], counts["validation"])
    records = train + validation_
    sequences = [f["sequence"].bytes_list.value[0] for f in records]
    assert len(set(sequences)) == len(sequences)
    assert all(f["length"].int64_list.value[0] == len(s) for f, s in zip(records, sequences))
    assert sum(map(len, sequences)) == value["residues"]["total"]
    assert all(re.fullmatch(rb"[ACDEFGHIKLMNPQRSTVWYXBZUO]+", s) for s in sequences)
    assert sum(f["num_duplicates"].int64_list.value[0] for f in records) == counts["duplicates"]
    ids = {f["id"].bytes_list.value[0] for f in records}
    assert b"UniRef50_UPI409C001F54" in ids  # UniParc accession, header without Tax=
    assert any(i.startswith(b"UniRef50_") for i in ids) and b"W0FSK4" in ids
    # Members of a cluster never straddle the split: the id sets are disjoint.
    assert not ({f["cluster_id"].bytes_list.value[0] for f in train}
                & {f["cluster_id"].bytes_list.value[0] for f in validation_})
    lengths = value["lengths"]["all"]
    assert lengths["records"] == counts["train"] + counts["validation"]
    assert lengths["min"] == min(map(len, sequences)) and lengths["max"] == max(map(len, sequences))
    assert lengths["percentiles"]["p50"] == sorted(map(len, sequences))[
        (len(sequences) + 1) // 2 - 1]
    assert sum(b["records"] for b in lengths["histogram"]) == lengths["records"]
    composition = value["composition"]
    assert sum(c["residues"] for c in composition.values()) == value["residues"]["total"]
    assert composition["L"]["residues"] == sum(s.count(b"L") for s in sequences)
    assert value["flags"]["num_train_shards"] == 8 and "output_dir" not in value["flags"]
    assert "apache-beam" in value["versions"]


def test_conservation_and_outputs_in_manifest(sample_run):
    output_dir, value = sample_run
    counts = value["counts"]
    assert counts["records_read"] == (counts["train"] + counts["validation"] + counts["duplicates"]
                                      + sum(counts["rejected"].values()))
    files = _read_files(output_dir)
    listed = {o["name"]: o for o in value["outputs"]}
    assert set(files) == set(listed) | {manifest.MANIFEST_NAME}
    assert len(listed) == 8 + 2 + 2 + 1  # shards + validation_clusters.txt
    assert all(len(files[name]) == o["bytes"] for name, o in listed.items())
    assert json.loads(files[manifest.MANIFEST_NAME]) == value


def test_rerun_is_byte_identical_also_with_multiprocess_direct_runner(sample_run, tmp_path):
    output_dir, _ = sample_run
    uniref.run(["--input=" + UNIREF_SAMPLE, "--input=" + UNIPROTKB_SAMPLE,
                "--output_dir=" + str(tmp_path), "--direct_num_workers=2",
                "--direct_running_mode=multi_processing"] + SAMPLE_FLAGS)
    assert _read_files(str(tmp_path)) == _read_files(output_dir)


def test_default_shuffle_spills_to_files_on_one_machine_only():
    assert uniref.default_shuffle(uniref.DEFAULT_RUNNER) == uniref.SHUFFLE_FILES
    assert uniref.default_shuffle("DirectRunner") == uniref.SHUFFLE_FILES
    assert uniref.default_shuffle("apache_beam.runners.direct.DirectRunner") == uniref.SHUFFLE_FILES
    assert uniref.default_shuffle("DataflowRunner") == uniref.SHUFFLE_BEAM
    assert uniref.default_shuffle("dataflow") == uniref.SHUFFLE_BEAM


def test_multi_file_and_split_input_equal_one_file(sample_run, tmp_path):
    output_dir, _ = sample_run
    with gzip.open(UNIREF_SAMPLE, "rb") as f:
        records = [b">" + r for r in f.read().split(b"\n>")]
    records[0] = records[0][1:]
    # Long header descriptions make the first part big enough for DirectRunner to split it.
    padded = [r.replace(b"\n", b" " + b"padding" * 1000 + b"\n", 1) for r in records[:450]]
    parts = {"part1.fasta": b"\n".join(padded) + b"\n",
             "part2.fasta.gz": gzip.compress(b"\n".join(records[450:700]) + b"\n"),
             "part3.fasta": b"\n".join(records[700:]) + b"\n"}
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
    # The chunk size DirectRunner asks for, from the size of all the files of the pattern.
    desired = fasta.iobase.Read.get_desired_chunk_size(sum(map(len, parts.values())))
    assert len(list(fasta.FastaSource(str(tmp_path / "part1.fasta")).split(desired))) >= 2
    out = str(tmp_path / "out")
    # Beam's shuffle here (the sample run spills to files): the output bytes are the same.
    value = uniref.run(["--input=" + str(tmp_path / "part*"), "--input=" + UNIPROTKB_SAMPLE,
                        "--output_dir=" + out, "--shuffle=beam"] + SAMPLE_FLAGS)
    assert [i["records"] for i in value["inputs"]] == [450, 250, 200, 299]
    one_file = {n: b for n, b in _read_files(output_dir).items() if ".tfrecord-" in n}
    assert {n: b for n, b in _read_files(out).items() if ".tfrecord-" in n} == one_file


BAD_INPUTS = {
    "orphan.fasta": b"MKV\nLLA\n>after_orphan x\nMSTNPQ\n",
    "no_sequence.fasta": b">empty1\n>has_seq\nMKKL\n>empty_at_end\n",
    "crlf.fasta": b">crlf1 x\r\nMKVL\r\nAAGG\r\n",
    "lower.fasta": b">lower1\nmkwwyy*\n",
    "invalid.fasta": b">badchar1\nMKV1LL\n>stop1\nMKV*LL\n>jchar\nMKJL\n",
    "latin1.fasta": b">enc1 caf\xe9\nMKVL\n>enc2\nMK\xff\xfeVL\n",
    "dupid.fasta": b">dup1\nMKVLA\n>dup1\nMKVLAW\n>dup1\nMKVLA\n",
    "long.fasta": b">long1\n" + b"A" * 100_000 + b"\n",
    "noncanonical.fasta": b">nc1\nMKBZUOX\n",
    "noid.fasta": b">\nMKV\n",
}


def test_bad_input_corpus(tmp_path):
    for name, data in BAD_INPUTS.items():
        (tmp_path / name).write_bytes(data)
    out = str(tmp_path / "out")
    value = uniref.run(["--input=" + str(tmp_path / "*.fasta"), "--output_dir=" + out,
                        "--release=bad", "--validation_fraction=0"])
    rejected = {(os.path.basename(r["path"]), r["id"], r["reason"]): r
                for r in _read_rejected(out)}
    assert set(rejected) == {
        ("orphan.fasta", None, "sequence_before_header"),
        ("no_sequence.fasta", "empty1", "empty_sequence"),
        ("no_sequence.fasta", "empty_at_end", "empty_sequence"),
        ("invalid.fasta", "badchar1", "invalid_character"),
        ("invalid.fasta", "stop1", "internal_stop"),
        ("invalid.fasta", "jchar", "invalid_character"),
        ("latin1.fasta", None, "invalid_encoding"),
        ("latin1.fasta", "enc2", "invalid_encoding"),
        ("dupid.fasta", "dup1", "duplicate_id"),
        ("long.fasta", "long1", "too_long"),
        ("noid.fasta", None, "missing_id"),
    }
    assert rejected[("invalid.fasta", "badchar1", "invalid_character")]["excerpt"] == "MKV[1]LL"
    assert rejected[("dupid.fasta", "dup1", "duplicate_id")]["offset"] == len(b">dup1\nMKVLA\n")
    assert "100000 > max_length 40000" in rejected[("long.fasta", "long1", "too_long")]["detail"]
    kept = {f["id"].bytes_list.value[0]: f for f in _read_examples(out, "train")}
    assert {i: f["sequence"].bytes_list.value[0] for i, f in kept.items()} == {
        b"after_orphan": b"MSTNPQ", b"has_seq": b"MKKL", b"crlf1": b"MKVLAAGG",
        b"lower1": b"MKWWYY", b"dup1": b"MKVLA", b"nc1": b"MKBZUOX"}
    assert kept[b"dup1"]["num_duplicates"].int64_list.value == [1]
    counts = value["counts"]
    assert (counts["records_read"], counts["rejected_total"], counts["duplicates"],
            counts["train"], counts["validation"]) == (18, 11, 1, 6, 0)
    assert counts["rejected"]["invalid_character"] == 2


@pytest.mark.parametrize("name, data, message", [
    ("table.tsv", b"id\tsequence\nP1\tMKVL\n", "holds no FASTA record"),
    ("empty.fasta", b"", "is empty"),
])
def test_an_input_without_any_fasta_record_fails_the_job_naming_it(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(Exception, match=re.escape(str(tmp_path / name)) + ".*" + message):
        uniref.run(["--input=" + str(tmp_path / name), "--output_dir=" + str(out)])
    assert not (out / manifest.MANIFEST_NAME).exists()


def test_a_run_that_keeps_nothing_ends_with_a_warning(tmp_path, capsys):
    (tmp_path / "bad.fasta").write_bytes(b">a\nMK1\n>b\nMK*V\n")
    uniref.main(["--input=" + str(tmp_path / "bad.fasta"), "--output_dir=" + str(tmp_path / "o"),
                 "--num_train_shards=1", "--num_validation_shards=1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("WARNING: no record was kept: all 2 records read were rejected")


def test_help_lists_every_job_flag_with_its_default_and_points_to_beam_options():
    shown = subprocess.run([sys.executable, "-m", "pipelines.uniref", "--help"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    parser = argparse.ArgumentParser()
    uniref.add_job_flags(parser)
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == 25
    for action in flags:
        assert action.option_strings[0] in shown
        assert action.help
    assert "(default: 64)" in shown and "(default: 0.005)" in shown
    assert uniref.BEAM_OPTIONS_DOCS in "".join(shown.split())  # argparse may wrap it


def test_truncated_gz_fails_the_job_naming_file_and_record(tmp_path):
    with open(UNIREF_SAMPLE, "rb") as f:
        data = f.read()
    (tmp_path / "cut.fasta.gz").write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"cut\.fasta\.gz is truncated .*last complete record "
                                        r"read: 'UniRef50_\S+ "):
        uniref.run(["--input=" + str(tmp_path / "cut.fasta.gz"), "--output_dir=" + str(out)])
    assert not (out / manifest.MANIFEST_NAME).exists()


def test_refuses_to_overwrite_a_complete_output(sample_run):
    output_dir, _ = sample_run
    before = _read_files(output_dir)
    with pytest.raises(FileExistsError, match="--overwrite"):
        uniref.run(["--input=" + UNIREF_SAMPLE, "--output_dir=" + output_dir])
    assert _read_files(output_dir) == before


def _limit_file_size():
    # Any file write past 30 kB now fails (EFBIG): a real I/O failure in the write stage.
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))


def test_a_run_that_dies_leaves_no_manifest_and_the_next_run_cleans_up(tmp_path, caplog):
    out = str(tmp_path / "out")
    args = ["--input=" + UNIREF_SAMPLE, "--output_dir=" + out, "--validation_fraction=0.5",
            "--num_train_shards=64", "--num_validation_shards=1"]
    died = subprocess.run([sys.executable, "-m", "pipelines.uniref"] + args, cwd=ROOT,
                          preexec_fn=_limit_file_size, capture_output=True, text=True)
    assert died.returncode != 0
    assert "File too large" in died.stderr
    left = os.listdir(out)
    assert manifest.MANIFEST_NAME not in left
    # It died while writing (a spill file, the sample being over 30 kB): a partial temporary
    # file is left behind.
    assert any(name.startswith(".tmp-spill-") for name in left)
    # No manifest: the directory is not complete, so a new run (no --overwrite) replaces it.
    caplog.set_level("WARNING")
    value = uniref.run(args)
    assert "output files without a manifest" in caplog.text
    assert sorted(os.listdir(out)) == sorted(
        [o["name"] for o in value["outputs"]] + [manifest.MANIFEST_NAME])


def test_overwrite_replaces_output_with_other_shard_counts(tmp_path):
    out = str(tmp_path / "out")
    stale = tmp_path / "out" / "train.tfrecord-00000-of-00099"
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    (tmp_path / "out" / manifest.MANIFEST_NAME).write_text("{}")
    (tmp_path / "out" / "notes.txt").write_text("not ours")
    value = uniref.run(["--input=" + UNIPROTKB_SAMPLE, "--output_dir=" + out, "--overwrite",
                        "--num_train_shards=2", "--num_validation_shards=1"])
    assert sorted(os.listdir(out)) == sorted(
        [o["name"] for o in value["outputs"]] + [manifest.MANIFEST_NAME, "notes.txt"])


def test_main_prints_the_counts(capsys, tmp_path):
    uniref.main(["--input=" + UNIPROTKB_SAMPLE, "--output_dir=" + str(tmp_path),
                 "--release_metadata=" + _write_xml(tmp_path), "--num_train_shards=1",
                 "--num_validation_shards=1"])
    printed = capsys.readouterr().out
    assert re.search(r"^records read\s+299$", printed, re.M)
    assert re.search(r"^release\s+2024_06$", printed, re.M)


def _write_xml(tmp_path):
    path = tmp_path / "uniref50.xml"
    path.write_text('<?xml version="1.0"?><UniRef50 version="2024_06"></UniRef50>')
    return str(path)


def test_flag_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="--input is required"):
        uniref.run(["--output_dir=" + str(tmp_path)])
    with pytest.raises(ValueError, match="matches no file"):
        uniref.run(["--input=" + str(tmp_path / "nothing*.fa"), "--output_dir=" + str(tmp_path)])
    with pytest.raises(SystemExit):
        uniref.run(["--input=" + UNIREF_SAMPLE, "--output_dir=x", "--non_canonical=maybe"])


def test_dataflow_options_and_worker_package(tmp_path):
    from apache_beam.options import pipeline_options
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability import stager

    argv = ["--input=gs://my-bucket/uniref/2024_06/uniref50.fasta.gz",
            "--output_dir=gs://my-bucket/ankh3/uniref50/2024_06",
            "--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp", "--staging_location=gs://my-bucket/staging",
            "--worker_machine_type=n2-standard-4", "--max_num_workers=64",
            "--requirements_cache=skip"]
    options = pipeline_options.PipelineOptions(argv)
    job = options.view_as(uniref.UnirefOptions)
    uniref.check_flags(job)
    assert job.input == ["gs://my-bucket/uniref/2024_06/uniref50.fasta.gz"]
    gcp = options.view_as(pipeline_options.GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location, gcp.staging_location) == (
        "my-project", "us-central1", "gs://my-bucket/tmp", "gs://my-bucket/staging")
    assert options.view_as(pipeline_options.WorkerOptions).machine_type == "n2-standard-4"
    assert options.view_as(pipeline_options.StandardOptions).runner == "DataflowRunner"
    # The launcher stages the worker package and its requirements by default on a remote runner.
    uniref.stage_worker_package(options)
    setup = options.view_as(pipeline_options.SetupOptions)
    assert (setup.setup_file, setup.requirements_file) == (
        uniref.WORKER_SETUP_FILE, uniref.WORKER_REQUIREMENTS_FILE)
    staging = tmp_path / "staging"
    staging.mkdir()
    resources = stager.Stager.create_job_resources(options, str(staging))
    staged = {beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
        r.role_payload).staged_name: beam_runner_api_pb2.ArtifactFilePayload.FromString(
            r.type_payload).path for r in resources}
    with open(staged["requirements.txt"]) as f:
        packages = {re.split(r"[=\[<>]", line.strip().lower())[0] for line in f
                    if line.strip() and not line.startswith("#")}
    assert {"apache-beam", "google-crc32c", "protobuf"} <= packages
    assert not packages & {"jax", "jaxlib", "flax", "t5x", "torch", "seqio", "tensorflow",
                           "tensorflow-cpu"}
    sdists = [f for f in os.listdir(staging) if f.endswith(".tar.gz")]
    assert sdists, os.listdir(staging)
    with tarfile.open(staging / sdists[0]) as sdist:
        names = {os.path.relpath(n, n.split("/")[0]) for n in sdist.getnames()}
    modules = {"pipelines/" + name for name in os.listdir(os.path.join(ROOT, "pipelines"))
               if name.endswith(".py")}
    assert len(modules) > 10 and modules <= names
    assert not [n for n in names if n.endswith((".c", ".so"))]


@pytest.mark.parametrize("bad, message", [
    ("--validation_fraction=1.5", "--validation_fraction must be in"),
    ("--min_length=0", "need 1 <= --min_length"),
    ("--num_train_shards=0", "--num_train_shards must be at least 1"),
])
def test_both_jobs_refuse_an_out_of_range_shared_flag(bad, message):
    from apache_beam.options import pipeline_options
    from pipelines import profiles
    job = pipeline_options.PipelineOptions(
        ["--input=x.fa", "--output_dir=out", bad]).view_as(uniref.UnirefOptions)
    with pytest.raises(ValueError, match=message):
        uniref.check_flags(job)
    with pytest.raises(ValueError, match=message):
        profiles.check_flags(profiles.parse_flags(["--input=x.sto", "--output_dir=out", bad])[0])
