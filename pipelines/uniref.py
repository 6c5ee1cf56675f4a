"""UniRef (or UniProtKB, or plain) FASTA -> validated, deduplicated, cluster-split TFRecord shards.

    python -m pipelines.uniref --input=GLOB [--input=GLOB ...] --output_dir=DIR [flags] \\
        [Beam pipeline options, e.g. --runner=DataflowRunner ...]

Writes into DIR: `train.tfrecord-NNNNN-of-MMMMM`, `validation.tfrecord-...`, `rejected.jsonl-...`,
`validation_clusters.txt` and, last, `manifest.json`. `--help` lists the job's flags; see
docs/pipeline.md (the job) and BUILD.md (Dataflow).

The stages, each a composite transform of the module of its concern:

    ReadFasta (fasta) -> Validate (records) -> [Membership (membership)] -> Deduplicate (dedup,
    split, shuffle) -> [Decontaminations (decontaminate)] -> WriteSplits (writers, tfrecords)
    -> [WriteClusterShards (membership)] -> WriteManifest (manifest)
"""
import argparse
import logging
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import decontaminate
from pipelines import dedup
from pipelines import fasta
from pipelines import manifest
from pipelines import membership
from pipelines import records
from pipelines import release as release_lib
from pipelines import shuffle
from pipelines import writers

DEFAULT_VALIDATION_FRACTION = 0.005
DEFAULT_NUM_TRAIN_SHARDS = 64
DEFAULT_NUM_VALIDATION_SHARDS = 4
DEFAULT_NUM_REJECTED_SHARDS = 1
DEFAULT_MAX_DUPLICATE_IDS = 32
DEFAULT_NUM_CLUSTER_TABLE_SHARDS = 16
DEFAULT_NUM_CLUSTER_SHARDS = 64
# Flags that say where the output goes, how to treat an old one, or how to batch work; they do
# not shape its content and are left out of the manifest, so that two runs into two directories
# (or with other batch sizes) give the same bytes.
_FLAGS_NOT_IN_MANIFEST = ("output_dir", "overwrite", "decontam_batch_size", "shuffle")
# The runner when --runner is not given: the embedded runner that Beam's DirectRunner delegates to
# (with --direct_num_workers and --direct_running_mode). Beam 2.77's DirectRunner first tries to
# download and start its Prism binary from GitHub; naming the embedded runner keeps a default run
# offline and the same everywhere.
DEFAULT_RUNNER = "FnApiRunner"
# `--shuffle`: how the records reach their buckets (pipelines/shuffle.py). `files` on the runners
# that run on one machine and hold a shuffle in memory, `beam` on the others (Dataflow's shuffle
# service). The output bytes are the same either way.
SHUFFLE_FILES = "files"
SHUFFLE_BEAM = "beam"
_ONE_MACHINE_RUNNERS = ("fnapi", "direct", "switchingdirect", "bundlebaseddirect", "prism")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a remote runner's workers install (`--setup_file`, `--requirements_file` by default): the
# project's modules, and only the libraries the job runs (no JAX, Flax or T5X).
WORKER_SETUP_FILE = os.path.join(_ROOT, "setup.py")
WORKER_REQUIREMENTS_FILE = os.path.join(_ROOT, "requirements-worker.txt")
BEAM_OPTIONS_DOCS = ("https://beam.apache.org/documentation/programming-guide/"
                     "#configuring-pipeline-options")


def add_job_flags(parser) -> None:
    """Adds the job's own flags (not Beam's) to an argparse parser."""
    flag = parser.add_argument
    flag("--input", action="append", default=None, metavar="GLOB",
         help="FASTA file or glob, plain or compressed (.gz, .bz2), local or gs://; repeat the "
              "flag for several patterns. Required.")
    flag("--output_dir", default=None, metavar="DIR",
         help="Directory (local or gs://) for shards and manifest. Required.")
    flag("--release", default=None,
         help="Release name recorded in the manifest, e.g. 2024_06. With --release_metadata or "
              "--membership_xml, it must agree with the release they state.")
    flag("--release_metadata", default=None, metavar="PATH",
         help="A UniRef XML (only its root element is read) or a RELEASE.metalink to take the "
              "release from. A metalink must list every input file (--input, --membership_xml) "
              "with its size and md5; they are checked before anything is written.")
    flag("--allow_unlisted_inputs", action="store_true", default=False,
         help="Accept input files that the metalink does not list (the manifest still records "
              "their md5).")
    flag("--membership_xml", default=None, metavar="PATH",
         help="uniref50.xml[.gz] (or uniref90.xml[.gz]): membership mode. Each --input record "
              "(UniRef90 FASTA) gets its UniRef50 cluster as cluster_id; records in no cluster "
              "are rejected as no_cluster. Also writes the cluster table clusters.tsv-*.")
    flag("--num_cluster_table_shards", type=int, default=DEFAULT_NUM_CLUSTER_TABLE_SHARDS,
         help="Shards of clusters.tsv (membership mode).")
    flag("--write_cluster_shards", action="store_true", default=False,
         help="Membership mode: also write train_clusters.tfrecord-*, one Example per UniRef50 "
              "cluster with its train members, for cluster-weighted sampling.")
    flag("--num_cluster_shards", type=int, default=DEFAULT_NUM_CLUSTER_SHARDS,
         help="Shards of train_clusters.tfrecord (with --write_cluster_shards).")
    decontaminate.add_flags(parser)
    flag("--decontaminate_validation", action="store_true", default=False,
         help="Also reject train sequences similar to validation sequences (validation_overlap).")
    flag("--non_canonical", default=records.KEEP, choices=records.NON_CANONICAL_POLICIES,
         help="What to do with B, Z, U, O (X is always kept): keep them, map them to X, or drop "
              "(reject) the record.")
    flag("--min_length", type=int, default=records.DEFAULT_MIN_LENGTH,
         help="Shortest sequence kept, in residues (after normalization).")
    flag("--max_length", type=int, default=records.DEFAULT_MAX_LENGTH,
         help="Longest sequence kept, in residues (titin has 34,350).")
    flag("--validation_fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
         help="Fraction of clusters (by a hash of the cluster id) in the validation split.")
    flag("--shuffle_seed", type=int, default=0,
         help="Seed of the order of records across and inside shards.")
    flag("--num_train_shards", type=int, default=DEFAULT_NUM_TRAIN_SHARDS,
         help="Train shards; also the buckets the job deduplicates and writes by, so it bounds a "
              "worker's memory (a bucket is about 1/this of the input).")
    flag("--num_validation_shards", type=int, default=DEFAULT_NUM_VALIDATION_SHARDS,
         help="Validation shards.")
    flag("--num_rejected_shards", type=int, default=DEFAULT_NUM_REJECTED_SHARDS,
         help="Shards of rejected.jsonl (one JSON line per rejected record, with its reason).")
    flag("--max_duplicate_ids", type=int, default=DEFAULT_MAX_DUPLICATE_IDS,
         help="How many ids of a kept record's duplicates it lists (the smallest, sorted).")
    flag("--shuffle", default=None, choices=(SHUFFLE_FILES, SHUFFLE_BEAM),
         help="How records are grouped into buckets: 'files' spills them to files in "
              "--output_dir (memory flat with the input), 'beam' uses the runner's shuffle and "
              "spreads each compressed input over the workers first. Both give the same bytes. "
              "Default: 'files' on the runners of one machine, 'beam' on the others (Dataflow).")
    flag("--overwrite", action="store_true", default=False,
         help="Replace a complete output (one with a manifest.json) in --output_dir.")


class UnirefOptions(PipelineOptions):
    """The job's own flags (Beam's pipeline options are parsed from the same command line)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_job_flags(parser)


def help_parser() -> argparse.ArgumentParser:
    """The parser behind `--help`: the job's flags with their defaults, and where Beam's are."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.uniref",
        description="UniRef/UniProtKB/plain FASTA -> validated, deduplicated, cluster-split "
                    "TFRecord shards with a manifest.",
        epilog="Any other flag is a Beam pipeline option (--runner, --project, --region, "
               "--temp_location, --direct_num_workers, ...): see %s and the classes of "
               "apache_beam/options/pipeline_options.py. Without --runner the job runs on "
               "Beam's embedded runner (%s) on this machine; on a remote runner, --setup_file "
               "and --requirements_file default to setup.py and requirements-worker.txt." % (
                   BEAM_OPTIONS_DOCS, DEFAULT_RUNNER),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_job_flags(parser)
    return parser


def job_flags(options: UnirefOptions) -> dict:
    """The job's own flags (not Beam's) as recorded in the manifest."""
    parser = argparse.ArgumentParser(add_help=False)
    UnirefOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    names = sorted(vars(parser.parse_args([])))
    return {name: getattr(options, name) for name in names if name not in _FLAGS_NOT_IN_MANIFEST}


def default_shuffle(runner) -> str:
    """`--shuffle`'s default for a runner (its name, as --runner takes it, or an instance)."""
    name = runner if isinstance(runner, str) else type(runner).__name__
    name = name.rsplit(".", 1)[-1].lower()
    name = name[:-len("runner")] if name.endswith("runner") else name
    return SHUFFLE_FILES if name in _ONE_MACHINE_RUNNERS else SHUFFLE_BEAM


def check_flags(options: UnirefOptions) -> None:
    """Raises ValueError with a clear message for a missing or out-of-range flag."""
    if not options.input:
        raise ValueError("--input is required (a FASTA file or glob; repeat for several)")
    writers.check_job_flags(options, (
        "num_train_shards", "num_validation_shards", "num_rejected_shards",
        "max_duplicate_ids", "num_cluster_table_shards", "num_cluster_shards"))
    decontaminate.check_flags(options)
    if options.write_cluster_shards and not options.membership_xml:
        raise ValueError("--write_cluster_shards needs --membership_xml (the UniRef50 clusters)")


def decontaminates(options: UnirefOptions) -> bool:
    """Whether the run searches for similar sequences (and so needs mmseqs)."""
    return bool(options.benchmark_fasta) or options.decontaminate_validation


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Makes `output_dir` ready for a run.

    A complete output (manifest present) is refused unless `overwrite`; then the manifest goes
    first, so that an interrupted clean-up never leaves a manifest next to missing shards.
    Files of the job's own name patterns left without a manifest (a killed run) are removed.
    """
    manifest_path = FileSystems.join(output_dir, manifest.MANIFEST_NAME)
    if FileSystems.exists(manifest_path):
        if not overwrite:
            raise FileExistsError(
                "%s already holds a complete output (%s exists); pass --overwrite to replace "
                "it" % (output_dir, manifest.MANIFEST_NAME))
        logging.info("--overwrite: removing the previous output in %s", output_dir)
        FileSystems.delete([manifest_path])
    patterns = [FileSystems.join(output_dir, p) for p in writers.OUTPUT_PATTERNS]
    leftovers = sorted(m.path for result in FileSystems.match(patterns)
                       for m in result.metadata_list)
    if leftovers:
        logging.warning("removing %d output files without a manifest (a previous run that did "
                        "not finish, or the output being overwritten) from %s",
                        len(leftovers), output_dir)
        FileSystems.delete(leftovers)


def stage_worker_package(pipeline_options: PipelineOptions) -> None:
    """On a remote runner, ships the project to the workers: `--setup_file` and
    `--requirements_file` default to the worker package and its requirements."""
    runner = pipeline_options.view_as(StandardOptions).runner
    if default_shuffle(runner) == SHUFFLE_FILES:
        return
    setup = pipeline_options.view_as(SetupOptions)
    if setup.setup_file is None:
        setup.setup_file = WORKER_SETUP_FILE
    if setup.requirements_file is None:
        setup.requirements_file = WORKER_REQUIREMENTS_FILE


def _read_records(pipeline, options: UnirefOptions):
    """The input's valid records (batches), rejections, per-file counts and, in membership mode,
    the cluster table's outputs and merged entries."""
    rules = records.Rules(options.non_canonical, options.min_length, options.max_length)
    read = (pipeline
            | "ReadFasta" >> fasta.ReadFasta(
                options.input, spread_compressed=options.shuffle == SHUFFLE_BEAM)
            | "Validate" >> records.Validate(rules))
    parts = {"records": read[records.RECORDS], "rejected": [read[records.REJECTED]],
             "records_per_file": read[records.RECORDS_PER_FILE], "outputs": [],
             "clusters": pipeline | "NoClusters" >> beam.Create([])}
    if options.membership_xml:
        joined = parts["records"] | "Membership" >> membership.Membership(
            options.membership_xml, options.output_dir, options.num_cluster_table_shards,
            options.num_train_shards)
        parts.update(records=joined["records"], clusters=joined["clusters"])
        parts["rejected"].append(joined["rejected"])
        parts["outputs"].append(joined["outputs"])
    return parts


def build_pipeline(pipeline: beam.Pipeline, options: UnirefOptions,
                   pinned: release_lib.PinnedInputs, benchmark_targets: list,
                   decontamination: dict) -> None:
    """Adds the job's stages to `pipeline` (see the module docstring)."""
    out = options.output_dir
    parts = _read_records(pipeline, options)
    deduplicated = parts["records"] | "Deduplicate" >> dedup.Deduplicate(
        options.max_duplicate_ids, options.shuffle_seed, options.num_train_shards,
        options.validation_fraction, spill_dir=out if options.shuffle == SHUFFLE_FILES else None)
    buckets, removed = deduplicated[dedup.BUCKETS], pipeline | "NothingRemoved" >> beam.Create([])
    parts["rejected"].append(deduplicated[records.REJECTED])
    if decontamination:
        cleaned = buckets | "Decontaminate" >> decontaminate.Decontaminations(
            benchmark_targets, options.decontaminate_validation,
            **decontaminate.search_options(options))
        buckets, removed = cleaned["buckets"], cleaned["removed"]
        parts["rejected"].append(cleaned["rejected"])
        parts["outputs"].append(removed | "WriteRemovedList" >> decontaminate.WriteRemovedList(out))
    written = buckets | "WriteSplits" >> writers.WriteSplits(
        out, options.num_train_shards, options.num_validation_shards,
        train_records=options.write_cluster_shards)
    if options.write_cluster_shards:
        parts["outputs"].append(written[writers.TRAIN_RECORDS] | "WriteClusterShards" >> (
            membership.WriteClusterShards(out, options.shuffle_seed, options.num_cluster_shards)))
    rejected = parts["rejected"] | "AllRejected" >> beam.Flatten()
    parts["outputs"] += [written["outputs"], rejected | "WriteRejected" >> writers.WriteRejected(
        out, options.num_rejected_shards)]
    summaries = {
        "outputs": parts["outputs"] | "AllOutputs" >> beam.Flatten(),
        "records_per_file": parts["records_per_file"], "rejected": rejected,
        "duplicates": deduplicated[dedup.DUPLICATES], "removed": removed,
        "sequence_stats": written[writers.SEQUENCE_STATS], "clusters": parts["clusters"],
        # Resolve, the last stage that reads spill files, outputs one duplicate count per bucket.
        "done": deduplicated[dedup.DUPLICATES] | "DeleteSpillFiles" >> (
            shuffle.DeleteSpillFiles(out))}
    _ = summaries | "WriteManifest" >> manifest.WriteManifest(
        out, pinned, job_flags(options), decontamination)


def run(argv: list[str]) -> dict:
    """Runs the job with these command-line arguments and returns its manifest.

    Every check that can fail on the inputs (release metadata, sizes and md5s, the membership
    XML's version, benchmark files, mmseqs on PATH) runs before the output directory is touched.
    """
    pipeline_options = PipelineOptions(argv)
    if pipeline_options.view_as(StandardOptions).runner is None:
        pipeline_options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    options = pipeline_options.view_as(UnirefOptions)
    if options.shuffle is None:
        options.shuffle = default_shuffle(pipeline_options.view_as(StandardOptions).runner)
    check_flags(options)
    stage_worker_package(pipeline_options)
    pinned = release_lib.pin_inputs(
        input_patterns=options.input, release_flag=options.release,
        release_metadata=options.release_metadata, membership_xml=options.membership_xml,
        benchmark_fastas=options.benchmark_fasta,
        allow_unlisted_inputs=options.allow_unlisted_inputs)
    decontamination, benchmark_targets = {}, []
    if decontaminates(options):
        decontamination = {
            "mmseqs_version": decontaminate.mmseqs_version(),
            "min_identity": options.decontam_min_identity,
            "min_coverage": options.decontam_min_coverage,
            "validation": options.decontaminate_validation,
        }
        benchmark_targets = decontaminate.read_benchmark_targets(
            [b["path"] for b in pinned.benchmarks], options.non_canonical)
        decontamination["benchmark_records"] = {
            b["path"]: sum(t.source == b["path"] for t in benchmark_targets)
            for b in pinned.benchmarks}
    prepare_output_dir(options.output_dir, options.overwrite)
    logging.info("reading %d files (%d bytes) into %s", len(pinned.inputs),
                 sum(i["size_bytes"] for i in pinned.inputs), options.output_dir)
    with beam.Pipeline(options=pipeline_options) as pipeline:
        build_pipeline(pipeline, options, pinned, benchmark_targets, decontamination)
    value = manifest.read_manifest(options.output_dir)
    if all_rejected_warning(value):
        logging.warning(all_rejected_warning(value))
    return value


def all_rejected_warning(value: dict) -> str:
    """The warning for a manifest whose run kept no record ("" when it kept some)."""
    counts = value["counts"]
    if counts["train"] or counts["validation"]:
        return ""
    return ("WARNING: no record was kept: all %d records read were rejected or duplicates "
            "(%d rejected; reasons in the manifest's counts and in rejected.jsonl-*)" % (
                counts["records_read"], counts["rejected_total"]))


def format_counts(value: dict) -> str:
    """The manifest's counts as a short table."""
    counts = value["counts"]
    rows = [("release", value["release"]["release"]),
            ("input files", len(value["inputs"])),
            ("records read", counts["records_read"]),
            ("train", counts["train"]),
            ("validation", counts["validation"]),
            ("duplicates", counts["duplicates"]),
            ("rejected", counts["rejected_total"])]
    rows += [("  " + reason, n) for reason, n in sorted(counts["rejected"].items()) if n]
    rows += [("residues (train + validation)", value["residues"]["total"])]
    width = max(len(name) for name, _ in rows)
    return "\n".join("%-*s  %s" % (width, name, n) for name, n in rows)


def main(argv=None) -> None:
    """Command-line entry point: runs the job and prints the manifest's counts (and, last, a
    warning when no record was kept)."""
    argv = sys.argv[1:] if argv is None else argv
    help_parser().parse_known_args(argv)  # --help: prints the flags and exits
    logging.getLogger().setLevel(logging.INFO)
    value = run(argv)
    print(format_counts(value))
    if all_rejected_warning(value):
        print(all_rejected_warning(value))


if __name__ == "__main__":
    main()
