"""Alignments -> per-residue profile targets, as deduplicated, family-split TFRecord shards.

    python -m pipelines.profiles --input=GLOB [--input=GLOB ...] --output_dir=DIR [flags] \\
        [Beam pipeline options, e.g. --runner=DataflowRunner ...]

Modes (docs/profiles.md says which fits which input):
- built (default): one profile HMM per family, built with HMMER3 (pyhmmer) from the whole family;
- `--hmm=Pfam-A.hmm`: rows are mapped to the states of published HMMs, one row at a time, no
  HMM building and no family in memory (Pfam-A.full);
- `--search_db=FASTA`: every --input FASTA record becomes a family of its own, the MSA of its
  MMseqs2 hits in the target database (`mmseqs search` + `result2msa`), then as built.

Writes into DIR: `train.tfrecord-NNNNN-of-MMMMM`, `records.tfrecord-...`,
`rejected.jsonl-...`, with --benchmark_fasta `benchmark_removed.tsv`, and, last,
`manifest.json`. Splits, shuffle keys and shards (pipelines/split.py), shard files, rejected
records and atomic writes (pipelines/writers.py), Examples and their framing
(pipelines/tfrecords.py) and validation (pipelines/records.py) are the UniRef job's.
"""
import argparse
import hashlib
import logging
import sys
from typing import Any, List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import alignments
from pipelines import decontaminate
from pipelines import manifest
from pipelines import profile_hmm
from pipelines import records
from pipelines import release
from pipelines import split
from pipelines import tfrecords
from pipelines import uniref
from pipelines import writers

MANIFEST_KIND = "profiles"
DEFAULT_VALIDATION_FRACTION = 0.05
DEFAULT_NUM_TRAIN_SHARDS = 16
DEFAULT_NUM_VALIDATION_SHARDS = 2
DEPTH_HISTOGRAM_EDGES = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000,
                         100_000, 500_000)
_FLAGS_NOT_IN_MANIFEST = ("output_dir", "overwrite", "decontam_batch_size")
# Counter names (and keys of the manifest's counts).
ROWS_READ = "rows_read"
FAMILIES_READ = "families_read"
BUILT = "built"
PUBLISHED_HMM = "published_hmm"
SEARCH = "search"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags. Parsed apart from Beam's options (the rest of the command line):
    as a PipelineOptions subclass they would clash with the UniRef job's flags of the same
    names whenever both modules are imported."""
    parser.add_argument(
        "--input", action="append", default=None,
        help="Alignment file or glob (Stockholm, A3M, aligned FASTA; plain or .gz; local "
             "or gs://); repeat for several. With --search_db: FASTA of query sequences. "
             "Required.")
    parser.add_argument("--output_dir", default=None,
                        help="Directory for shards and manifest. Required.")
    parser.add_argument(
        "--format", default=alignments.AUTO, choices=alignments.FORMATS,
        help="Alignment format; auto: Stockholm by its first line, else by the extension "
             "(.a3m: A3M; .fa/.fasta/.afa/.faa/.mfa: aligned FASTA).")
    parser.add_argument(
        "--hmm", action="append", default=None,
        help="HMMER3 file(s) of published HMMs (Pfam-A.hmm[.gz]): map each row to the "
             "states of its family's HMM (by #=GF AC, else ID = the HMM's ACC, else NAME) "
             "instead of building HMMs. Rows must be in state form (Pfam's full "
             "alignments: uppercase match, lowercase insert, '-' delete, '.' insert gap).")
    parser.add_argument(
        "--search_db", default=None,
        help="FASTA (or MMseqs2 database) to search every --input record against with "
             "MMseqs2; each record's MSA of hits becomes its family. Needs mmseqs.")
    parser.add_argument("--search_sensitivity", type=float, default=5.7,
                        help="mmseqs search -s (with --search_db).")
    parser.add_argument("--search_max_hits", type=int, default=300,
                        help="mmseqs search --max-seqs (with --search_db).")
    parser.add_argument("--search_batch_size", type=int, default=1000,
                        help="Queries per mmseqs search call (with --search_db).")
    parser.add_argument(
        "--architecture", default=profile_hmm.ARCHITECTURE_REFERENCE,
        choices=profile_hmm.ARCHITECTURES,
        help="Match columns of a built HMM: 'reference' = the #=GC RF line when present "
             "(hmmbuild --hand), else HMMER's rule (--fast, --symfrac); 'hmmer' = always "
             "HMMER's rule.")
    parser.add_argument("--weighting", default="pb", choices=profile_hmm.WEIGHTINGS,
                        help="Relative sequence weighting (hmmbuild --wpb/--wgsc/...).")
    parser.add_argument("--effective_number", default="entropy",
                        choices=profile_hmm.EFFECTIVE_NUMBERS,
                        help="Effective sequence number (hmmbuild --eent/--eclust/...).")
    parser.add_argument("--prior_scheme", default="alphabet", choices=profile_hmm.PRIOR_SCHEMES,
                        help="Dirichlet priors ('alphabet': HMMER's mixture; 'laplace').")
    parser.add_argument("--symfrac", type=float, default=profile_hmm.DEFAULT_SYMFRAC,
                        help="hmmbuild --symfrac: residue fraction that makes a match column.")
    parser.add_argument("--fragthresh", type=float, default=profile_hmm.DEFAULT_FRAGTHRESH,
                        help="hmmbuild --fragthresh: rows shorter than this fraction of the "
                             "alignment are fragments.")
    parser.add_argument(
        "--insert_targets", default=profile_hmm.INSERT_EMISSION,
        choices=profile_hmm.INSERT_TARGETS,
        help="Targets of insert residues: the insert state's emission, or none (a zero "
             "row: weight 0 in training).")
    parser.add_argument(
        "--min_family_sequences", type=int, default=profile_hmm.DEFAULT_MIN_SEQUENCES,
        help="Families with fewer valid rows are rejected (too_few_sequences).")
    decontaminate.add_flags(parser)
    parser.add_argument("--non_canonical", default=records.KEEP,
                        choices=records.NON_CANONICAL_POLICIES,
                        help="B, Z, U, O residues: keep them, map them to X, or drop the row "
                             "(non_canonical).")
    parser.add_argument("--min_length", type=int, default=records.DEFAULT_MIN_LENGTH,
                        help="Rows with fewer residues are rejected (too_short).")
    parser.add_argument("--max_length", type=int, default=records.DEFAULT_MAX_LENGTH,
                        help="Rows with more residues are rejected (too_long).")
    parser.add_argument(
        "--validation_fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
        help="Fraction of families (by a hash of the family) in the validation split.")
    parser.add_argument("--shuffle_seed", type=int, default=0,
                        help="Seed of the order of records in and across shards.")
    parser.add_argument("--num_train_shards", type=int, default=DEFAULT_NUM_TRAIN_SHARDS,
                        help="Number of train.tfrecord-* shards.")
    parser.add_argument("--num_validation_shards", type=int,
                        default=DEFAULT_NUM_VALIDATION_SHARDS,
                        help="Number of validation.tfrecord-* shards.")
    parser.add_argument("--num_rejected_shards", type=int, default=1,
                        help="Number of rejected.jsonl-* shards.")
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="Replace a complete output (one with a manifest) in --output_dir.")


def flag_parser() -> argparse.ArgumentParser:
    """The parser of the job's flags; its `--help` shows their defaults and where Beam's are."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.profiles",
        description="Alignments -> per-residue profile targets, as deduplicated, family-split "
                    "TFRecord shards with a manifest.",
        epilog="Any other flag is a Beam pipeline option (--runner, --project, "
               "--direct_num_workers, ...): see %s. Without --runner the job runs on Beam's "
               "embedded runner (%s) on this machine." % (uniref.BEAM_OPTIONS_DOCS,
                                                          uniref.DEFAULT_RUNNER),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(parser)
    return parser


def parse_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the job's flags, the rest of the command line for Beam)."""
    return flag_parser().parse_known_args(argv)


def job_flags(options: argparse.Namespace) -> dict:
    """The job's own flags (not Beam's) as recorded in the manifest."""
    return {name: value for name, value in sorted(vars(options).items())
            if name not in _FLAGS_NOT_IN_MANIFEST}


def mode_of(options: argparse.Namespace) -> str:
    return PUBLISHED_HMM if options.hmm else SEARCH if options.search_db else BUILT


def check_flags(options: argparse.Namespace) -> None:
    """Raises ValueError with a clear message for a missing or out-of-range flag."""
    if not options.input:
        raise ValueError("--input is required (an alignment file or glob; repeat for several)")
    if options.hmm and options.search_db:
        raise ValueError("--hmm and --search_db are two modes; pass one")
    writers.check_job_flags(options, (
        "num_train_shards", "num_validation_shards", "num_rejected_shards",
        "min_family_sequences", "search_batch_size", "search_max_hits"))
    decontaminate.check_flags(options)


class ProfileRecord(NamedTuple):
    """A valid row with its targets: `profile` is `profile_hmm.profile_bytes` (L x 20 uint8);
    (path, offset) where the row starts (line number) in its file."""

    id: str
    family: str
    sequence: bytes
    sequence_hash: bytes
    profile: bytes
    path: str
    offset: int


class FamilyStats(NamedTuple):
    """A family as read: its key, its rows (the depth), whether any row got a profile, and how
    many of its rows are input records (all, or the query of a searched MSA)."""

    family: str
    depth: int
    kept: bool
    records: int


def counter(name: str):
    return beam.metrics.Metrics.counter(MANIFEST_KIND, name)


def _rejected(path: str, offset: int, row_id, family: str, reason: str, detail: str,
              excerpt: str) -> records.Rejected:
    return records.Rejected(row_id, path, offset, reason,
                               "family %s: %s" % (family, detail), excerpt)


FAMILY_REJECTED = "family_rejected"
FAMILIES = "families"


class _BuiltProfilesFn(beam.DoFn):
    """Family -> ProfileRecord (main), row Rejected (`rejected`), family Rejected
    (`family_rejected`), FamilyStats (`families`)."""

    def __init__(self, rules, build_options, min_sequences, insert_targets):
        self._rules = rules
        self._build_options = build_options
        self._min_sequences = min_sequences
        self._insert_targets = insert_targets

    def setup(self):
        self._families = counter("families_built")
        self._rows = counter(ROWS_READ)

    def process(self, family: alignments.Family):
        result = profile_hmm.family_profiles(family, self._rules, self._build_options,
                                             self._min_sequences, self._insert_targets)
        key = family.key
        rejected, kept_rows = result.rejected, result.profiles
        family_rejection = result.family_rejection
        if family.query_only:
            rejected = [r for r in rejected if r.index == 0]
            kept_rows = [(i, row) for i, row in kept_rows if i == 0]
            if not kept_rows and family_rejection is None:
                family_rejection = (rejected[0].reason, "the query's row is rejected")
        rows_read = 1 if family.query_only else len(family.rows)
        self._rows.inc(rows_read)
        self._families.inc()
        for rejection in rejected:
            yield beam.pvalue.TaggedOutput(records.REJECTED, _rejected(
                family.path, family.row_lines[rejection.index], family.row_names[rejection.index],
                key, rejection.reason, rejection.detail, rejection.excerpt))
        if family_rejection is not None:
            reason, detail = family_rejection
            yield beam.pvalue.TaggedOutput(FAMILY_REJECTED, _rejected(
                family.path, family.index, None, key, reason, detail, ""))
        yield beam.pvalue.TaggedOutput(FAMILIES, FamilyStats(key, len(family.rows),
                                                             bool(kept_rows), rows_read))
        logging.info("family %s: %d rows, %d profiles, %d rejected", key, len(family.rows),
                     len(kept_rows), len(rejected))
        if kept_rows:
            quantized = profile_hmm.quantize_profile(kept_rows[0][1].table)
        for index, row in kept_rows:
            yield ProfileRecord(family.row_names[index], key, row.sequence,
                                records.sequence_hash(row.sequence),
                                profile_hmm.profile_bytes(row, quantized),
                                family.path, family.row_lines[index])


def published_row_profile(row: alignments.Row, targets, table, quantized, rules):
    """A streamed row in state form + its family's published HMM (its `target_table` and that
    table quantized) -> ProfileRecord or Rejected."""
    if targets is None:
        return _rejected(row.path, row.line, row.name, row.family, profile_hmm.NO_HMM,
                         "no HMM with this accession or name in --hmm",
                         records.excerpt_head(row.aligned))
    checked = profile_hmm.check_row_sequence(row.aligned, rules)
    if isinstance(checked, tuple):
        return _rejected(row.path, row.line, row.name, row.family, *checked)
    try:
        result = profile_hmm.row_profile(row.aligned, targets, table=table)
    except ValueError as error:
        return _rejected(row.path, row.line, row.name, row.family,
                         profile_hmm.HMM_LENGTH_MISMATCH, str(error),
                         records.excerpt_head(row.aligned))
    return ProfileRecord(row.name, row.family, checked, records.sequence_hash(checked),
                         profile_hmm.profile_bytes(result, quantized), row.path, row.line)


class _PublishedProfilesFn(beam.DoFn):
    """(family, {"rows": [Row...], "hmm": [StateTargets]}) -> as _BuiltProfilesFn. The rows
    are iterated once (on Dataflow they stream from the shuffle, never all in memory)."""

    def __init__(self, rules, insert_targets, min_sequences):
        self._rules = rules
        self._insert_targets = insert_targets
        self._min_sequences = min_sequences

    def setup(self):
        self._rows = counter(ROWS_READ)

    def process(self, element):
        key, grouped = element
        hmms = list(grouped["hmm"])
        if len(hmms) > 1:
            raise ValueError("--hmm files hold %d HMMs for family %s" % (len(hmms), key))
        targets = hmms[0] if hmms else None
        table = quantized = None
        if targets is not None:
            table = profile_hmm.target_table(targets, self._insert_targets)
            quantized = profile_hmm.quantize_profile(table)
        depth, kept, pending = 0, 0, []
        for row in grouped["rows"]:
            depth += 1
            result = published_row_profile(row, targets, table, quantized, self._rules)
            if isinstance(result, records.Rejected):
                yield beam.pvalue.TaggedOutput(records.REJECTED, result)
                continue
            kept += 1
            # The first rows wait until the family is known to have min_sequences valid rows.
            if kept < self._min_sequences:
                pending.append(result)
                continue
            yield from pending
            pending = []
            yield result
        self._rows.inc(depth)
        if depth == 0:
            return  # An HMM without rows in the input: not a family read.
        if kept < self._min_sequences:
            reason, detail = (profile_hmm.NO_HMM, "no HMM with this accession or name in --hmm"
                              ) if targets is None else (
                profile_hmm.TOO_FEW_SEQUENCES,
                "%d valid rows, fewer than --min_family_sequences=%d" % (kept, self._min_sequences))
            for record in pending:
                yield beam.pvalue.TaggedOutput(records.REJECTED, _rejected(
                    record.path, record.offset, record.id, key, reason, detail,
                    records.excerpt_head(record.sequence)))
            yield beam.pvalue.TaggedOutput(FAMILY_REJECTED, _rejected(
                "", 0, None, key, reason, detail, ""))
        yield beam.pvalue.TaggedOutput(FAMILIES, FamilyStats(key, depth, kept >= self._min_sequences,
                                                             depth))


def single_family(key: str, stats) -> FamilyStats:
    """The one FamilyStats of a family key; a family read twice (two files, or twice in one
    file, would give two HMMs) is an error."""
    stats = list(stats)
    if len(stats) > 1:
        raise ValueError("family %s occurs %d times in the input (two alignments of one "
                         "family would give two HMMs)" % (key, len(stats)))
    return stats[0]


def resolve_duplicates(same_sequence) -> tuple[ProfileRecord, int]:
    """The records of one (family, sequence): the kept one is the minimum by (id, path,
    offset), never arrival order; returns it and the count of the others."""
    same_sequence = list(same_sequence)
    kept = min(same_sequence, key=lambda r: (r.id, r.path, r.offset))
    return kept, len(same_sequence) - 1


def shard_entry(record: ProfileRecord, depths: dict, seed: int, num_shards: int):
    """(shard, (sort key, framed Example)) of a kept record."""
    key = split.shuffle_key(
        hashlib.sha256(record.family.encode() + b"\0" + record.sequence_hash).digest(), seed)
    return (split.shard_of(key, num_shards),
            (key, tfrecords.frame(tfrecords.profile_example(record, depths[record.family]))))


def benchmark_removal(record: ProfileRecord, reason: str, match: decontaminate.Match):
    """The rejection and Removal of a record that decontamination removes
    (`decontaminate.RemovalFn`): the family stands for the cluster, no duplicates listed."""
    rejected = records.Rejected(
        record.id, record.path, record.offset, reason,
        "family %s: matches %s in %s (%s)" % (record.family, match.id, match.source,
                                              match.method),
        records.excerpt_head(record.sequence), match.to_json_dict())
    return rejected, decontaminate.Removal(record.id, record.family, reason, match, 0)


class _WriteManifestFn(beam.DoFn):
    """Writes manifest.json once every shard is written; checks conservation first."""

    def __init__(self, output_dir, inputs, hmm_inputs, benchmarks, flags, mode):
        self._output_dir = output_dir
        self._inputs = inputs
        self._hmm_inputs = hmm_inputs
        self._benchmarks = benchmarks
        self._flags = flags
        self._mode = mode

    def process(self, unused, outputs, counts, rejected, family_rejected, families):
        value = build_manifest(self._mode, self._inputs, self._hmm_inputs, self._benchmarks,
                               self._flags, outputs, counts, rejected, family_rejected, families,
                               self._flags["validation_fraction"])
        path = FileSystems.join(self._output_dir, manifest.MANIFEST_NAME)
        manifest.write_json_atomically(path, value)
        logging.info("wrote %s", path)
        yield path


def build_manifest(mode, inputs, hmm_inputs, benchmarks, flags, outputs, counts, rejected,
                   family_rejected, families, validation_fraction) -> dict:
    """The manifest (raises manifest.ConservationError when rows or families are not
    conserved)."""
    outputs = sorted(outputs, key=lambda o: o["name"])
    split_counts = {split_name: sum(o["records"] for o in outputs if o["split"] == split_name)
                    for split_name in (split.TRAIN, split.VALIDATION)}
    row_counts = {
        "records_read": counts.get(ROWS_READ, 0),
        "train": split_counts[split.TRAIN],
        "validation": split_counts[split.VALIDATION],
        "duplicates": counts.get("duplicates", 0),
        "rejected": dict(sorted(rejected.items())),
    }
    manifest.check_conservation(row_counts)
    kept_families = sorted(f.family for f in families if f.kept)
    if len(families) != len(kept_families) + sum(family_rejected.values()):
        raise manifest.ConservationError(
            "families are not conserved: read %d but %d have profiles and %d were rejected" % (
                len(families), len(kept_families), sum(family_rejected.values())))
    depth_counts = {}
    for family in families:
        depth_counts[family.depth] = depth_counts.get(family.depth, 0) + 1
    per_split = {split.TRAIN: 0, split.VALIDATION: 0}
    for family in kept_families:
        per_split[split.split_of(family, validation_fraction)] += 1
    return {
        "format_version": manifest.FORMAT_VERSION,
        "kind": MANIFEST_KIND,
        "mode": mode,
        "inputs": inputs,
        "hmm_inputs": hmm_inputs,
        "benchmarks": benchmarks,
        "flags": flags,
        "libraries": dict(manifest.library_versions(), pyhmmer=_version("pyhmmer")),
        "features": {tfrecords.ID: "bytes", tfrecords.FAMILY: "bytes",
                     tfrecords.SEQUENCE: "bytes", tfrecords.LENGTH: "int64",
                     tfrecords.PROFILE: "bytes: length x 20 uint8, row-major, residues in order %s; each "
                              "row sums to 255 (decode q / 255, error < 1/255) or is all zero "
                              "(no target)" % profile_hmm.AMINO_ACIDS.decode(),
                     tfrecords.DEPTH: "int64: rows of the family's alignment as read"},
        "counts": dict(row_counts, rejected_total=sum(rejected.values())),
        "families": {
            "read": len(families),
            "with_profiles": len(kept_families),
            "train": per_split[split.TRAIN],
            "validation": per_split[split.VALIDATION],
            "rejected": dict(sorted(family_rejected.items())),
            "depth_histogram": manifest.binned_histogram(depth_counts, DEPTH_HISTOGRAM_EDGES),
        },
        "residues": {split_name: counts.get("residues_" + split_name, 0)
                     for split_name in (split.TRAIN, split.VALIDATION)},
        "outputs": outputs,
    }


def _version(name: str) -> str:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return metadata.version(name)


def _count(pcoll, label: str, key_fn):
    """{key: count} of a PCollection, as a singleton PCollection."""
    return (pcoll | label + "Key" >> beam.Map(lambda x: (key_fn(x), 1))
            | label + "Sum" >> beam.CombinePerKey(sum) | label + "Dict" >> beam.combiners.ToDict())


def _read_families(pipeline, options, paths):
    if options.search_db:
        from pipelines import msa_search  # pylint: disable=import-outside-toplevel
        return (pipeline | "InputFiles" >> beam.Create(paths)
                | "SearchFamilies" >> msa_search.SearchFamilies(
                    options.search_db, options.search_sensitivity, options.search_max_hits,
                    options.search_batch_size))
    return (pipeline | "InputFiles" >> beam.Create(paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFamilies" >> beam.FlatMap(alignments.read_families, options.format)
            | "SpreadFamilies" >> beam.Reshuffle())


def build_pipeline(pipeline, options: argparse.Namespace, paths: list[str], hmm_paths: list[str],
                   benchmark_targets: list, inputs, hmm_inputs, benchmarks) -> None:
    """Adds the job's transforms to `pipeline`."""
    rules = records.Rules(options.non_canonical, options.min_length, options.max_length)
    out = options.output_dir
    tags = (records.REJECTED, FAMILY_REJECTED, FAMILIES)
    if options.hmm:
        hmms = (pipeline | "HmmFiles" >> beam.Create(hmm_paths)
                | "ReadHmms" >> beam.FlatMap(profile_hmm.read_hmms)
                | "KeyHmms" >> beam.Map(lambda t: (t.key, t)))
        rows = (pipeline | "InputFiles" >> beam.Create(paths)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadRows" >> beam.FlatMap(alignments.read_rows, options.format)
                | "KeyRows" >> beam.Map(lambda r: (r.family, r)))
        profiled = ({"rows": rows, "hmm": hmms} | "JoinHmms" >> beam.CoGroupByKey()
                    | "Profiles" >> beam.ParDo(_PublishedProfilesFn(
                        rules, options.insert_targets, options.min_family_sequences)
                    ).with_outputs(*tags, main="profiles"))
    else:
        build_options = profile_hmm.BuildOptions(
            options.architecture, options.weighting, options.effective_number,
            options.prior_scheme, options.symfrac, options.fragthresh)
        profiled = (_read_families(pipeline, options, paths)
                    | "Profiles" >> beam.ParDo(_BuiltProfilesFn(
                        rules, build_options, options.min_family_sequences,
                        options.insert_targets)).with_outputs(*tags, main="profiles"))
    rejected = [profiled[records.REJECTED]]
    grouped = (profiled.profiles
               | "KeyBySequence" >> beam.Map(lambda r: ((r.family, r.sequence_hash), r))
               | "GroupBySequence" >> beam.GroupByKey()
               | "Deduplicate" >> beam.MapTuple(lambda _, same_sequence: resolve_duplicates(same_sequence)))
    kept = grouped | "Kept" >> beam.Map(lambda pair: pair[0])
    duplicates = grouped | "DuplicateCount" >> beam.Map(lambda pair: ("duplicates", pair[1]))
    written = []
    if benchmark_targets:
        # One record per bucket: the search batches queries across buckets.
        cleaned = (kept
                   | "OneRecordBuckets" >> beam.Map(lambda r: (r.family, [r]))
                   | "Decontaminate" >> decontaminate.Decontaminations(
                       benchmark_targets, validation=False, removal_fn=benchmark_removal,
                       # (family, [ProfileRecord]): Beam's default coder, not RecordBucket's.
                       bucket_type=Tuple[str, List[Any]],
                       **decontaminate.search_options(options)))
        kept = cleaned["buckets"] | "Unbucket" >> beam.FlatMap(lambda bucket: bucket[1])
        rejected.append(cleaned["rejected"])
        written.append(cleaned["removed"]
                       | "WriteRemovedList" >> decontaminate.WriteRemovedList(out))
    families = (profiled[FAMILIES]
                | "KeyFamilies" >> beam.Map(lambda f: (f.family, f))
                | "GroupFamilies" >> beam.GroupByKey()
                | "OneFamilyPerKey" >> beam.MapTuple(single_family))
    depths = beam.pvalue.AsDict(families | "Depths" >> beam.Map(lambda f: (f.family, f.depth)))
    fraction = options.validation_fraction
    by_split = kept | "BySplit" >> beam.Partition(
        lambda r, _: int(split.split_of(r.family, fraction) == split.VALIDATION), 2)
    for index, (split_name, num_shards) in enumerate((
            (split.TRAIN, options.num_train_shards),
            (split.VALIDATION, options.num_validation_shards))):
        name = split_name.capitalize()
        written.append(
            by_split[index]
            | "Shard" + name >> beam.Map(shard_entry, depths, options.shuffle_seed, num_shards)
            | "Write" + name >> writers.WriteShards(
                out, split_name, writers.TFRECORD_SUFFIX, num_shards))
    all_rejected = (rejected + [profiled[FAMILY_REJECTED]]) | "AllRejected" >> beam.Flatten()
    written.append(
        all_rejected
        | "ShardRejected" >> beam.Map(writers.rejected_shard_entry, options.num_rejected_shards)
        | "WriteRejected" >> writers.WriteShards(
            out, records.REJECTED, writers.JSONL_SUFFIX, options.num_rejected_shards))
    residues = [by_split[i] | "Residues" + split_name >> beam.Map(
        lambda r, s=split_name: ("residues_" + s, len(r.sequence)))
        for i, split_name in enumerate((split.TRAIN, split.VALIDATION))]
    rows_read = families | "RowsRead" >> beam.Map(lambda f: (ROWS_READ, f.records))
    counts = ((duplicates, rows_read, *residues) | "FlattenCounts" >> beam.Flatten()
              | "SumCounts" >> beam.CombinePerKey(sum) | "Counts" >> beam.combiners.ToDict())
    outputs = written | "AllOutputs" >> beam.Flatten() | "ListOutputs" >> beam.combiners.ToList()
    side = beam.pvalue.AsSingleton
    _ = (pipeline
         | "ManifestTrigger" >> beam.Create([None])
         | "WriteManifest" >> beam.ParDo(
             _WriteManifestFn(out, inputs, hmm_inputs, benchmarks, job_flags(options),
                              mode_of(options)),
             side(outputs), side(counts),
             side(_count(rejected | "RowRejected" >> beam.Flatten(), "Reason",
                         lambda r: r.reason)),
             side(_count(profiled[FAMILY_REJECTED], "FamilyReason", lambda r: r.reason)),
             beam.pvalue.AsList(families)))


def run(argv: list[str]) -> dict:
    """Runs the job with these command-line arguments and returns its manifest. Flags, inputs,
    HMM files, benchmarks and mmseqs are checked before the output directory is touched."""
    options, beam_argv = parse_flags(argv)
    pipeline_options = PipelineOptions(beam_argv)
    if pipeline_options.view_as(StandardOptions).runner is None:
        pipeline_options.view_as(StandardOptions).runner = uniref.DEFAULT_RUNNER
    check_flags(options)
    inputs = release.describe_inputs(options.input)
    hmm_inputs = release.describe_inputs(options.hmm, flag="--hmm") if options.hmm else []
    benchmarks, benchmark_targets = [], []
    if options.benchmark_fasta:
        decontaminate.mmseqs_version()
        benchmarks = release.describe_inputs(options.benchmark_fasta, flag="--benchmark_fasta")
        benchmark_targets = decontaminate.read_benchmark_targets(
            [b["path"] for b in benchmarks], options.non_canonical)
    if options.search_db:
        decontaminate.mmseqs_version()
    uniref.prepare_output_dir(options.output_dir, options.overwrite)
    with beam.Pipeline(options=pipeline_options) as pipeline:
        build_pipeline(pipeline, options, [i["path"] for i in inputs],
                       [i["path"] for i in hmm_inputs], benchmark_targets, inputs, hmm_inputs,
                       benchmarks)
    return manifest.read_manifest(options.output_dir)


def format_counts(value: dict) -> str:
    """The manifest's counts as a short table."""
    counts, families = value["counts"], value["families"]
    rows = [("mode", value["mode"]), ("families read", families["read"]),
            ("families with profiles", families["with_profiles"]),
            ("rows read", counts["records_read"]), ("train", counts["train"]),
            ("validation", counts["validation"]), ("duplicates", counts["duplicates"]),
            ("rejected rows", counts["rejected_total"])]
    rows += [("  " + reason, n) for reason, n in counts["rejected"].items()]
    rows += [("rejected families", sum(families["rejected"].values()))]
    rows += [("  " + reason, n) for reason, n in families["rejected"].items()]
    rows += [("residues " + split_name, n) for split_name, n in value["residues"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join("%-*s  %s" % (width, name, n) for name, n in rows)


def main(argv=None) -> None:
    """Command-line entry point: runs the job and prints the manifest's counts."""
    logging.getLogger().setLevel(logging.INFO)
    print(format_counts(run(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
