"""UniRef (or UniProtKB, or plain) FASTA -> validated, deduplicated, cluster-split TFRecord shards.

    python -m pipelines.uniref --input=GLOB [--input=GLOB ...] --output_dir=DIR [flags] \\
        [Beam pipeline options, e.g. --runner=DataflowRunner ...]

Writes into DIR: `train.tfrecord-NNNNN-of-MMMMM`, `validation.tfrecord-...`, `rejected.jsonl-...`
and, last, `manifest.json`. See README.md (the job) and BUILD.md (Dataflow).
"""
import argparse
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import manifest
from pipelines import transforms
from pipelines import validation

DEFAULT_VALIDATION_FRACTION = 0.005
DEFAULT_NUM_TRAIN_SHARDS = 64
DEFAULT_NUM_VALIDATION_SHARDS = 4
DEFAULT_NUM_REJECTED_SHARDS = 1
DEFAULT_MAX_DUPLICATE_IDS = 32
# Flags that say where the output goes or how to treat an old one; they do not shape its content
# and are left out of the manifest, so that two runs into two directories give the same bytes.
_FLAGS_NOT_IN_MANIFEST = ("output_dir", "overwrite")
# The runner when --runner is not given: the embedded runner that Beam's DirectRunner delegates to
# (with --direct_num_workers and --direct_running_mode). Beam 2.77's DirectRunner first tries to
# download and start its Prism binary from GitHub; naming the embedded runner keeps a default run
# offline and the same everywhere.
DEFAULT_RUNNER = "FnApiRunner"


class UnirefOptions(PipelineOptions):
    """The job's own flags (Beam's pipeline options are parsed from the same command line)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", action="append", default=None,
            help="FASTA file or glob, plain or compressed (.gz, .bz2), local or gs://; repeat "
                 "the flag for several patterns.")
        parser.add_argument("--output_dir", default=None, help="Directory for shards and manifest.")
        parser.add_argument(
            "--release", default=None,
            help="Release name recorded in the manifest, e.g. 2024_06.")
        parser.add_argument(
            "--release_metadata", default=None,
            help="A UniRef XML (uniref50.xml[.gz], only its root element is read) or a "
                 "RELEASE.metalink to take the release from; a metalink's sizes and md5s are "
                 "checked against the inputs of the same name.")
        parser.add_argument(
            "--non_canonical", default=validation.KEEP, choices=validation.NON_CANONICAL_POLICIES,
            help="What to do with B, Z, U, O (X is always kept): keep them, map them to X, or "
                 "drop (reject) the record. Default: keep.")
        parser.add_argument(
            "--min_length", type=int, default=validation.DEFAULT_MIN_LENGTH,
            help="Shortest sequence kept, in residues (after normalization). Default: 1.")
        parser.add_argument(
            "--max_length", type=int, default=validation.DEFAULT_MAX_LENGTH,
            help="Longest sequence kept, in residues. Default: 40000 (titin has 34,350).")
        parser.add_argument(
            "--validation_fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
            help="Fraction of clusters (by a hash of the cluster id) in the validation split. "
                 "Default: 0.005 (about 300k UniRef50 clusters).")
        parser.add_argument(
            "--shuffle_seed", type=int, default=0,
            help="Seed of the order of records across and inside shards.")
        parser.add_argument("--num_train_shards", type=int, default=DEFAULT_NUM_TRAIN_SHARDS)
        parser.add_argument(
            "--num_validation_shards", type=int, default=DEFAULT_NUM_VALIDATION_SHARDS)
        parser.add_argument("--num_rejected_shards", type=int, default=DEFAULT_NUM_REJECTED_SHARDS)
        parser.add_argument(
            "--max_duplicate_ids", type=int, default=DEFAULT_MAX_DUPLICATE_IDS,
            help="How many ids of a kept record's duplicates it lists (the smallest, sorted).")
        parser.add_argument(
            "--overwrite", action="store_true", default=False,
            help="Replace a complete output (one with a manifest.json) in --output_dir.")


def job_flags(options: UnirefOptions) -> dict:
    """The job's own flags (not Beam's) as recorded in the manifest."""
    parser = argparse.ArgumentParser(add_help=False)
    UnirefOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    names = sorted(vars(parser.parse_args([])))
    return {name: getattr(options, name) for name in names if name not in _FLAGS_NOT_IN_MANIFEST}


def check_flags(options: UnirefOptions) -> None:
    """Raises ValueError with a clear message for a missing or out-of-range flag."""
    if not options.input:
        raise ValueError("--input is required (a FASTA file or glob; repeat for several)")
    if not options.output_dir:
        raise ValueError("--output_dir is required")
    if not 0 <= options.validation_fraction <= 1:
        raise ValueError("--validation_fraction must be in [0, 1]")
    if options.min_length < 1 or options.max_length < options.min_length:
        raise ValueError("need 1 <= --min_length <= --max_length")
    for name in ("num_train_shards", "num_validation_shards", "num_rejected_shards",
                 "max_duplicate_ids"):
        if getattr(options, name) < 1:
            raise ValueError("--%s must be at least 1" % name)
    if options.release and options.release_metadata:
        raise ValueError("give --release or --release_metadata, not both")


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
    patterns = [FileSystems.join(output_dir, p) for p in transforms.OUTPUT_PATTERNS]
    leftovers = sorted(m.path for result in FileSystems.match(patterns)
                       for m in result.metadata_list)
    if leftovers:
        logging.warning("removing %d output files without a manifest (a previous run that did "
                        "not finish, or the output being overwritten) from %s",
                        len(leftovers), output_dir)
        FileSystems.delete(leftovers)


class _WriteManifestFn(beam.DoFn):
    """Writes manifest.json once every shard is written (the shard list is a side input)."""

    def __init__(self, output_dir, release, inputs, flags):
        self._output_dir = output_dir
        self._release = release
        self._inputs = inputs
        self._flags = flags

    def process(self, unused_element, outputs, records_per_file, rejected, duplicates,
                sequence_stats):
        value = manifest.build_manifest(
            release=self._release, inputs=self._inputs, records_per_file=records_per_file,
            rejected=rejected, duplicates=duplicates, sequence_stats=sequence_stats,
            outputs=outputs, flags=self._flags)
        path = FileSystems.join(self._output_dir, manifest.MANIFEST_NAME)
        manifest.write_json_atomically(path, value)
        logging.info("wrote %s", path)
        yield path


def build_pipeline(pipeline: beam.Pipeline, options: UnirefOptions, release: dict,
                   inputs: list[dict]) -> None:
    """Adds the job's transforms to `pipeline`."""
    rules = validation.Rules(options.non_canonical, options.min_length, options.max_length)
    out = options.output_dir
    raw = pipeline | "ReadFasta" >> transforms.ReadFasta(options.input)
    checked = raw | "Validate" >> transforms.Validate(rules)
    deduplicated = checked.proteins | "Deduplicate" >> transforms.Deduplicate(
        options.max_duplicate_ids)
    kept = deduplicated.kept
    assigned = kept | "AssignShards" >> transforms.AssignShards(
        options.validation_fraction, options.shuffle_seed, options.num_train_shards,
        options.num_validation_shards)
    rejected = (checked.rejected, deduplicated.rejected) | "AllRejected" >> beam.Flatten()
    written = (
        assigned.train | "WriteTrain" >> transforms.WriteShards(
            out, transforms.TRAIN, transforms.TFRECORD_SUFFIX, options.num_train_shards),
        assigned.validation | "WriteValidation" >> transforms.WriteShards(
            out, transforms.VALIDATION, transforms.TFRECORD_SUFFIX, options.num_validation_shards),
        rejected
        | "ShardRejected" >> beam.Map(transforms.rejected_shard_entry, options.num_rejected_shards)
        | "WriteRejected" >> transforms.WriteShards(
            out, transforms.REJECTED, transforms.JSONL_SUFFIX, options.num_rejected_shards),
    )
    outputs = written | "AllOutputs" >> beam.Flatten() | "ListOutputs" >> beam.combiners.ToList()
    records_per_file = (
        raw | "RecordPath" >> beam.Map(lambda record: (record.path, 1))
        | "CountPerFile" >> beam.CombinePerKey(sum) | "FileCounts" >> beam.combiners.ToDict())
    rejected_counts = (
        rejected | "Reason" >> beam.Map(lambda record: (record.reason, 1))
        | "CountPerReason" >> beam.CombinePerKey(sum) | "ReasonCounts" >> beam.combiners.ToDict())
    duplicates = (
        kept | "NumDuplicates" >> beam.Map(lambda k: k.num_duplicates)
        | "SumDuplicates" >> beam.CombineGlobally(sum))
    fraction = options.validation_fraction
    sequence_stats = (
        kept | "SplitAndSequence" >> beam.Map(
            lambda k: (transforms.split_of(k.protein.cluster_id, fraction), k.protein.sequence))
        | "SequenceStats" >> beam.CombineGlobally(manifest.SequenceStatsFn()))
    side = beam.pvalue.AsSingleton
    _ = (
        pipeline
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest" >> beam.ParDo(
            _WriteManifestFn(out, release, inputs, job_flags(options)),
            side(outputs), side(records_per_file), side(rejected_counts), side(duplicates),
            side(sequence_stats)))


def run(argv: list[str]) -> dict:
    """Runs the job with these command-line arguments and returns its manifest."""
    pipeline_options = PipelineOptions(argv)
    if pipeline_options.view_as(StandardOptions).runner is None:
        pipeline_options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    options = pipeline_options.view_as(UnirefOptions)
    check_flags(options)
    if options.release_metadata:
        release = manifest.read_release_metadata(options.release_metadata)
    else:
        release = {"release": options.release or "unknown", "source": "--release", "files": {}}
    inputs = manifest.describe_inputs(options.input, release["files"])
    prepare_output_dir(options.output_dir, options.overwrite)
    logging.info("reading %d files (%d bytes) into %s", len(inputs),
                 sum(i["size_bytes"] for i in inputs), options.output_dir)
    with beam.Pipeline(options=pipeline_options) as pipeline:
        build_pipeline(pipeline, options, release, inputs)
    return manifest.read_manifest(options.output_dir)


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
    """Command-line entry point: runs the job and prints the manifest's counts."""
    logging.getLogger().setLevel(logging.INFO)
    value = run(sys.argv[1:] if argv is None else argv)
    print(format_counts(value))


if __name__ == "__main__":
    main()
