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

from pipelines import buckets
from pipelines import decontaminate
from pipelines import fasta_source
from pipelines import manifest
from pipelines import membership
from pipelines import release as release_lib
from pipelines import spill
from pipelines import transforms
from pipelines import uniref_xml
from pipelines import validation

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
# `--shuffle`: how the records reach their buckets (pipelines/spill.py). `files` on the runners
# that run on one machine and hold a shuffle in memory, `beam` on the others (Dataflow's shuffle
# service). The output bytes are the same either way.
SHUFFLE_FILES = "files"
SHUFFLE_BEAM = "beam"
_ONE_MACHINE_RUNNERS = ("fnapi", "direct", "switchingdirect", "bundlebaseddirect", "prism")


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
            help="Release name recorded in the manifest, e.g. 2024_06. With --release_metadata "
                 "or --membership_xml, it must agree with the release they state.")
        parser.add_argument(
            "--release_metadata", default=None,
            help="A UniRef XML (uniref50.xml[.gz], only its root element is read) or a "
                 "RELEASE.metalink to take the release from. A metalink must list every input "
                 "file (--input, --membership_xml) with its size and md5; they are checked "
                 "before anything is written, and the job stops at the first mismatch.")
        parser.add_argument(
            "--allow_unlisted_inputs", action="store_true", default=False,
            help="Accept input files that the metalink does not list (they are still described "
                 "in the manifest, with their md5).")
        parser.add_argument(
            "--membership_xml", default=None,
            help="uniref50.xml[.gz] (or uniref90.xml[.gz]): membership mode. Each --input record "
                 "(UniRef90 FASTA) gets its UniRef50 cluster as cluster_id; records in no "
                 "cluster are rejected as no_cluster. Also writes the cluster table "
                 "clusters.tsv-* and records the XML's version in the manifest.")
        parser.add_argument(
            "--num_cluster_table_shards", type=int, default=DEFAULT_NUM_CLUSTER_TABLE_SHARDS,
            help="Shards of clusters.tsv (membership mode).")
        parser.add_argument(
            "--write_cluster_shards", action="store_true", default=False,
            help="Membership mode: also write train_clusters.tfrecord-*, one Example per "
                 "UniRef50 cluster with its train members, for cluster-weighted sampling.")
        parser.add_argument(
            "--num_cluster_shards", type=int, default=DEFAULT_NUM_CLUSTER_SHARDS,
            help="Shards of train_clusters.tfrecord (with --write_cluster_shards).")
        parser.add_argument(
            "--benchmark_fasta", action="append", default=None,
            help="FASTA file (or glob) of downstream evaluation sequences; repeat for several "
                 "benchmark sets. Kept sequences identical or similar to one of them are "
                 "rejected as benchmark_overlap. Needs mmseqs (MMseqs2) on PATH.")
        parser.add_argument(
            "--decontam_min_identity", type=float, default=decontaminate.DEFAULT_MIN_IDENTITY,
            help="Similar = at least this identity (identical residues / alignment columns)...")
        parser.add_argument(
            "--decontam_min_coverage", type=float, default=decontaminate.DEFAULT_MIN_COVERAGE,
            help="...over at least this fraction of the benchmark (or validation) sequence "
                 "(MMseqs2 --cov-mode 1, the benchmark being the target).")
        parser.add_argument(
            "--decontaminate_validation", action="store_true", default=False,
            help="Also reject train sequences similar to validation sequences "
                 "(validation_overlap).")
        parser.add_argument(
            "--decontam_batch_size", type=int, default=decontaminate.DEFAULT_BATCH_SIZE,
            help="Sequences per mmseqs search call.")
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
            "--shuffle", default=None, choices=(SHUFFLE_FILES, SHUFFLE_BEAM),
            help="How records are grouped into buckets: 'files' spills them to files in "
                 "--output_dir (memory flat with the input; the default on one machine), 'beam' "
                 "uses the runner's shuffle and spreads each compressed input over the workers "
                 "first (the default on Dataflow). Both give the same bytes.")
        parser.add_argument(
            "--overwrite", action="store_true", default=False,
            help="Replace a complete output (one with a manifest.json) in --output_dir.")


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
    if not options.output_dir:
        raise ValueError("--output_dir is required")
    if not 0 <= options.validation_fraction <= 1:
        raise ValueError("--validation_fraction must be in [0, 1]")
    if options.min_length < 1 or options.max_length < options.min_length:
        raise ValueError("need 1 <= --min_length <= --max_length")
    for name in ("num_train_shards", "num_validation_shards", "num_rejected_shards",
                 "max_duplicate_ids", "num_cluster_table_shards", "num_cluster_shards",
                 "decontam_batch_size"):
        if getattr(options, name) < 1:
            raise ValueError("--%s must be at least 1" % name)
    for name in ("decontam_min_identity", "decontam_min_coverage"):
        if not 0 <= getattr(options, name) <= 1:
            raise ValueError("--%s must be in [0, 1]" % name)
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

    def __init__(self, output_dir, pinned, flags, decontamination):
        self._output_dir = output_dir
        self._pinned = pinned
        self._flags = flags
        self._decontamination = decontamination

    def process(self, unused_element, outputs, records_per_file, rejected, duplicates,
                sequence_stats, removal_counts, cluster_counts, unused_spill_deleted):
        value = manifest.build_manifest(
            release=self._pinned.release, inputs=self._pinned.inputs,
            records_per_file=records_per_file, rejected=rejected, duplicates=duplicates,
            sequence_stats=sequence_stats, outputs=outputs, flags=self._flags,
            decontamination=manifest.decontamination_section(
                self._decontamination, self._pinned.benchmarks, removal_counts, rejected),
            membership=manifest.membership_section(
                self._pinned.membership, cluster_counts, rejected))
        path = FileSystems.join(self._output_dir, manifest.MANIFEST_NAME)
        manifest.write_json_atomically(path, value)
        logging.info("wrote %s", path)
        yield path


def _benchmark_targets(options: UnirefOptions, pinned: release_lib.PinnedInputs) -> list:
    rules = decontaminate.benchmark_rules(validation.Rules(options.non_canonical))
    return [target for benchmark in pinned.benchmarks
            for target in decontaminate.read_benchmark_fasta(benchmark["path"], rules)]


def _decontaminate(kept, options: UnirefOptions, benchmark_targets: list):
    """Kept -> (kept, [Rejected PCollections], [Removal PCollections]) after both searches."""
    pipeline = kept.pipeline
    rejected, removed = [], []
    search = dict(min_identity=options.decontam_min_identity,
                  min_coverage=options.decontam_min_coverage,
                  batch_size=options.decontam_batch_size)
    if benchmark_targets:
        targets = pipeline | "BenchmarkTargets" >> beam.Create(benchmark_targets)
        cleaned = kept | "DecontaminateBenchmarks" >> decontaminate.Decontaminate(
            targets, validation.BENCHMARK_OVERLAP, **search)
        kept = cleaned.kept
        rejected.append(cleaned[transforms.REJECTED])
        removed.append(cleaned[decontaminate.REMOVED])
    if options.decontaminate_validation:
        fraction = options.validation_fraction
        by_split = kept | "BySplit" >> beam.Partition(
            lambda k, _: int(transforms.split_of(k.protein.cluster_id, fraction)
                             == transforms.VALIDATION), 2)
        train, held_out = by_split[0], by_split[1]
        targets = held_out | "ValidationTargets" >> beam.Map(
            lambda k: decontaminate.Target(
                decontaminate.VALIDATION_SOURCE, k.protein.id, k.protein.sequence))
        cleaned = train | "DecontaminateValidation" >> decontaminate.Decontaminate(
            targets, validation.VALIDATION_OVERLAP, **search)
        kept = (cleaned.kept, held_out) | "KeptAfterValidation" >> beam.Flatten()
        rejected.append(cleaned[transforms.REJECTED])
        removed.append(cleaned[decontaminate.REMOVED])
    return kept, rejected, removed


def _count(pcoll, label: str, key_fn):
    """{key: count} of a PCollection, as a singleton PCollection."""
    return (pcoll | label + "Key" >> beam.Map(lambda x: (key_fn(x), 1))
            | label + "Sum" >> beam.CombinePerKey(sum) | label + "Dict" >> beam.combiners.ToDict())


def build_pipeline(pipeline: beam.Pipeline, options: UnirefOptions,
                   pinned: release_lib.PinnedInputs, benchmark_targets: list,
                   decontamination: dict) -> None:
    """Adds the job's transforms to `pipeline`."""
    rules = validation.Rules(options.non_canonical, options.min_length, options.max_length)
    out = options.output_dir
    seed, num_buckets = options.shuffle_seed, options.num_train_shards
    spill_files = options.shuffle == SHUFFLE_FILES
    checked = (pipeline
               | "ReadFasta" >> transforms.ReadFasta(options.input, spread_compressed=not spill_files)
               | "Validate" >> buckets.Validate(rules))
    proteins, rejected = checked.proteins, [checked.rejected]
    written = []
    cluster_counts = pipeline | "NoClusterCounts" >> beam.Create([{}])
    if options.membership_xml:
        entries = (pipeline
                   | "ReadMembershipXml" >> beam.io.Read(
                       uniref_xml.UniRefXmlSource(options.membership_xml))
                   | "SpreadEntries" >> beam.Reshuffle())
        joined = (proteins
                  | "Unbatch" >> beam.FlatMap(lambda batch: map(validation.Protein._make, batch))
                  | "JoinClusters" >> membership.JoinClusters(entries))
        proteins = joined.proteins | "Rebatch" >> beam.BatchElements(
            min_batch_size=fasta_source.DEFAULT_BATCH_RECORDS,
            max_batch_size=fasta_source.DEFAULT_BATCH_RECORDS)
        rejected.append(joined[transforms.REJECTED])
        table = entries | "ClusterTable" >> membership.ClusterTable()
        written.append(
            table
            | "ShardClusterTable" >> beam.Map(membership.cluster_table_entry,
                                              options.num_cluster_table_shards)
            | "WriteClusterTable" >> transforms.WriteShards(
                out, transforms.CLUSTER_TABLE, transforms.TSV_SUFFIX,
                options.num_cluster_table_shards))
        cluster_counts = (
            (table | "ClusterCount" >> beam.Map(lambda e: ("clusters", 1)),
             table | "MemberCount" >> beam.Map(lambda e: ("uniref90_ids", len(e.uniref90_ids))))
            | "FlattenClusterCounts" >> beam.Flatten()
            | "SumClusterCounts" >> beam.CombinePerKey(sum)
            | "ClusterCounts" >> beam.combiners.ToDict())
    deduplicated = proteins | "Deduplicate" >> buckets.Deduplicate(
        options.max_duplicate_ids, seed, num_buckets, spill_dir=out if spill_files else None)
    # Resolve, the last stage that reads spill files, outputs one duplicate count per bucket.
    spill_deleted = deduplicated[buckets.DUPLICATES] | "DeleteSpillFiles" >> (
        spill.DeleteSpillFiles(out))
    rejected.append(deduplicated[transforms.REJECTED])
    kept = deduplicated.kept
    removed = []
    if decontamination:
        kept, overlap_rejected, removed = _decontaminate(
            kept | "UnbatchKept" >> beam.FlatMap(
                lambda bucket: map(buckets.unpack_kept, bucket[1])),
            options, benchmark_targets)
        rejected += overlap_rejected
        kept = kept | "Rebucket" >> buckets.GroupByBucket(seed, num_buckets)
    assigned = kept | "WriteBuckets" >> buckets.WriteBuckets(
        out, options.validation_fraction, options.num_train_shards,
        options.num_validation_shards, train_kept=options.write_cluster_shards)
    rejected = rejected | "AllRejected" >> beam.Flatten()
    written += [
        assigned[buckets.TRAIN_SHARDS],
        assigned.validation | "WriteValidation" >> transforms.WriteShards(
            out, transforms.VALIDATION, transforms.TFRECORD_SUFFIX, options.num_validation_shards),
        rejected
        | "ShardRejected" >> beam.Map(transforms.rejected_shard_entry, options.num_rejected_shards)
        | "WriteRejected" >> transforms.WriteShards(
            out, transforms.REJECTED, transforms.JSONL_SUFFIX, options.num_rejected_shards),
        assigned[buckets.VALIDATION_CLUSTER_IDS]
        | "DistinctValidationClusters" >> beam.Distinct()
        | "ValidationClusterLines" >> beam.Map(lambda c: (c.encode(), (c + "\n").encode()))
        | "WriteValidationClusters" >> transforms.WriteList(
            out, transforms.VALIDATION_CLUSTERS_FILE),
    ]
    removed = (removed or [pipeline | "NothingRemoved" >> beam.Create([])]) | (
        "AllRemoved" >> beam.Flatten())
    if decontamination:
        written.append(
            removed
            | "RemovedLines" >> beam.Map(decontaminate.removal_tsv_entry)
            | "WriteRemovedList" >> transforms.WriteList(
                out, transforms.BENCHMARK_REMOVED_FILE, decontaminate.REMOVED_TSV_HEADER.encode()))
    if options.write_cluster_shards:
        written.append(
            assigned[buckets.TRAIN_KEPT]
            | "ClusterShards" >> membership.ClusterShards(
                options.shuffle_seed, options.num_cluster_shards)
            | "WriteClusterShards" >> transforms.WriteShards(
                out, transforms.TRAIN_CLUSTERS, transforms.TFRECORD_SUFFIX,
                options.num_cluster_shards))
    outputs = written | "AllOutputs" >> beam.Flatten() | "ListOutputs" >> beam.combiners.ToList()
    records_per_file = (
        checked[buckets.RECORDS_PER_FILE]
        | "CountPerFile" >> beam.CombinePerKey(sum) | "FileCounts" >> beam.combiners.ToDict())
    rejected_counts = _count(rejected, "Reason", lambda record: record.reason)
    removal_counts = (
        (removed | "RemovedKey" >> beam.Map(lambda r: ((r.match.source, r.match.method), 1)),
         removed | "RemovedDuplicates" >> beam.Map(
             lambda r: ((r.match.source, "duplicates_of_removed"), r.num_duplicates)))
        | "FlattenRemovalCounts" >> beam.Flatten()
        | "SumRemovalCounts" >> beam.CombinePerKey(sum)
        | "RemovalCounts" >> beam.combiners.ToDict())
    duplicates = deduplicated[buckets.DUPLICATES] | "SumDuplicates" >> beam.CombineGlobally(sum)
    sequence_stats = assigned[buckets.SEQUENCE_STATS] | "SequenceStats" >> (
        buckets.MergeSequenceStats())
    side = beam.pvalue.AsSingleton
    _ = (
        pipeline
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest" >> beam.ParDo(
            _WriteManifestFn(out, pinned, job_flags(options), decontamination),
            side(outputs), side(records_per_file), side(rejected_counts), side(duplicates),
            side(sequence_stats), side(removal_counts), side(cluster_counts),
            side(spill_deleted)))


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
        benchmark_targets = _benchmark_targets(options, pinned)
        decontamination["benchmark_records"] = {
            b["path"]: sum(t.source == b["path"] for t in benchmark_targets)
            for b in pinned.benchmarks}
    prepare_output_dir(options.output_dir, options.overwrite)
    logging.info("reading %d files (%d bytes) into %s", len(pinned.inputs),
                 sum(i["size_bytes"] for i in pinned.inputs), options.output_dir)
    with beam.Pipeline(options=pipeline_options) as pipeline:
        build_pipeline(pipeline, options, pinned, benchmark_targets, decontamination)
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
