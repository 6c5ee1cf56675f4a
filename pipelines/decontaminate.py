"""Decontamination: removes pretraining sequences identical or similar to held-out sequences.

The held-out ("target") sequences are the records of `--benchmark_fasta` files (downstream test
sets) or, with `--decontaminate_validation`, the job's own validation split. A kept sequence
(after deduplication) is removed when

- it is identical to a target: same sha256 of the normalized sequence (no search needed); or
- MMseqs2 (`mmseqs easy-search`, the kept sequences as queries, the targets as the database)
  aligns it to a target with identity >= `min_identity` and target coverage >= `min_coverage`.

Identity is MMseqs2's `fident` with `--seq-id-mode 0`: identical residues / alignment columns.
Coverage is of the TARGET (`--cov-mode 1`): the fraction of the benchmark sequence's residues
inside the alignment. That is the question decontamination asks: "is (nearly all of) this test
sequence inside the pretraining data?". A pretraining protein that contains a test domain
(a long query, a short target) is caught; coverage of the query, or of both, would let a
multi-domain protein carrying a test domain through. Both thresholds are re-checked here on the
reported values, so they hold whatever MMseqs2's own pre-filters do.

The best target of a query is the hit with the highest bit score, then identity, then coverage,
then the smallest (file, id): deterministic whatever the order of MMseqs2's output. MMseqs2 runs
with one thread and a fixed target database, and a query's hits do not depend on the other
queries of its batch, so results do not depend on batching (a test checks this).

Limits: MMseqs2 finds no k-mer seed in very short sequences (a few residues), so those are
caught only when identical. Plain functions here; the Beam transforms are `Decontaminate` (one
set of targets) and `Decontaminations` (benchmarks, then validation), which work on (bucket,
[record]) elements: the UniRef job's buckets as they are, the profiles job's records one per
bucket. A record needs `id`, `sequence` and `sequence_hash` (and `split` for the validation
search); each job says how a removed record is described (`removal_fn`). Both jobs take the
same flags (`add_flags`, `check_flags`) and read the benchmark files the same way
(`read_benchmark_targets`).

Public API: `read_benchmark_fasta(path, rules)`, `benchmark_rules(rules)`, `exact_index`,
`MmseqsSearch(targets, min_identity, min_coverage).search(sequences)`, `Decontaminate`,
`Decontaminations`, `WriteRemovedList`, `add_flags`, `check_flags`, `read_benchmark_targets`.
"""
import logging
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms import window

from pipelines import fasta
from pipelines import records
from pipelines import split
from pipelines import worker
from pipelines import writers

MMSEQS = "mmseqs"
DEFAULT_MIN_IDENTITY = 0.9
DEFAULT_MIN_COVERAGE = 0.8
DEFAULT_BATCH_SIZE = 20_000
EXACT = "exact"
SIMILAR = "mmseqs"
VALIDATION_SOURCE = "validation"
# The output tag of the `Removal`s.
REMOVED = "removed"
# The columns asked of `mmseqs easy-search`, in this order.
SEARCH_COLUMNS = "query,target,fident,tcov,bits"
# -e: the identity and coverage thresholds decide, not the E-value (short test sequences have
# large E-values even when identical). --max-seqs: enough prefilter candidates per query for
# benchmark sets of thousands of sequences.
SEARCH_FLAGS = ("--threads", "1", "--cov-mode", "1", "--seq-id-mode", "0", "-e", "100",
                "--max-seqs", "1000", "-v", "1")
# Seed the prefilter with exact k-mer matches only, when min_identity is at least
# EXACT_SEEDS_MIN_IDENTITY. MMseqs2's default seeding generates, for every query position, the
# k-mers similar to the query's (sensitivity -s 5.7), which made the search ~12x slower. A pair >=
# 70 % identical shares exact k-mers anyway: on 20,000 real sequences against 300 benchmark
# sequences, exact seeds found the same best match for every query as the default seeding at
# identity thresholds 0.7 to 0.9, and missed 1 of 2,847 at 0.6 and 261 of 3,926 at 0.3 (so below
# the bound the default seeding is kept). Lowering -s instead loses matches even at 95 % identity:
# its k-mer score threshold drops exact k-mers of low-scoring residues.
EXACT_SEEDS_MIN_IDENTITY = 0.7
EXACT_SEED_FLAGS = ("--exact-kmer-matching", "1")


class MmseqsNotFoundError(RuntimeError):
    """Decontamination by similarity was asked for but `mmseqs` is not on PATH."""


def mmseqs_version() -> str:
    """The version of the `mmseqs` on PATH; MmseqsNotFoundError when there is none."""
    if shutil.which(MMSEQS) is None:
        raise MmseqsNotFoundError(
            "`mmseqs` is not on PATH but --benchmark_fasta or --decontaminate_validation needs "
            "it: install MMseqs2 (Debian/Ubuntu: apt-get install mmseqs2; on Dataflow use the "
            "custom container of BUILD.md)")
    return subprocess.run([MMSEQS, "version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def add_flags(parser) -> None:
    """Adds --benchmark_fasta and the search's flags to an argparse parser (or a Beam
    `PipelineOptions` parser): the flags of every job that decontaminates."""
    flag = parser.add_argument
    flag("--benchmark_fasta", action="append", default=None, metavar="GLOB",
         help="FASTA file (or glob) of downstream evaluation sequences; repeat for several sets. "
              "Kept sequences identical or similar to one of them are rejected as "
              "benchmark_overlap. Needs mmseqs (MMseqs2) on PATH.")
    flag("--decontam_min_identity", type=float, default=DEFAULT_MIN_IDENTITY,
         help="Similar means at least this identity (identical residues / alignment columns)...")
    flag("--decontam_min_coverage", type=float, default=DEFAULT_MIN_COVERAGE,
         help="...over at least this fraction of the benchmark (or validation) sequence.")
    flag("--decontam_batch_size", type=int, default=DEFAULT_BATCH_SIZE,
         help="Sequences per mmseqs search call (at least).")


def check_flags(options) -> None:
    """Raises ValueError with a clear message for an out-of-range flag of `add_flags`."""
    if options.decontam_batch_size < 1:
        raise ValueError("--decontam_batch_size must be at least 1")
    for name in ("decontam_min_identity", "decontam_min_coverage"):
        if not 0 <= getattr(options, name) <= 1:
            raise ValueError("--%s must be in [0, 1]" % name)


def search_options(options) -> dict:
    """The keyword arguments of `Decontaminate` / `Decontaminations` that the flags set."""
    return {"min_identity": options.decontam_min_identity,
            "min_coverage": options.decontam_min_coverage,
            "batch_size": options.decontam_batch_size}


class Target(NamedTuple):
    """A held-out sequence: `source` is its benchmark file (or `validation`), `id` its record id."""

    source: str
    id: str
    sequence: bytes


class Match(NamedTuple):
    """The target a removed sequence matched, how, and how closely."""

    source: str
    id: str
    method: str
    identity: float
    coverage: float

    def to_json_dict(self) -> dict:
        """The `match` field of a rejected record."""
        return {"file": self.source, "id": self.id, "method": self.method,
                "identity": self.identity, "coverage": self.coverage}


class Removal(NamedTuple):
    """A kept record removed by decontamination, and what it stood for."""

    id: str
    cluster_id: str
    reason: str
    match: Match
    num_duplicates: int


def read_benchmark_fasta(path: str, rules: records.Rules) -> list[Target]:
    """The records of one benchmark FASTA, normalized like the pretraining data.

    Raises ValueError naming the file and record when a record is invalid, and when the file
    holds no record: a benchmark set that silently matched nothing would prove nothing.
    """
    targets = []
    try:
        for raw in fasta.read_fasta(path):
            checked = records.check_record(raw, rules)
            if isinstance(checked, records.Rejected):
                raise ValueError("--benchmark_fasta %s: record %s at offset %d is invalid (%s: %s)"
                                 % (path, checked.id, checked.offset, checked.reason,
                                    checked.detail))
            targets.append(Target(path, checked.id, checked.sequence))
    except fasta.NoFastaRecordError as error:
        raise ValueError("--benchmark_fasta %s holds no FASTA record" % path) from error
    return targets


def benchmark_rules(rules: records.Rules) -> records.Rules:
    """The rules benchmark records are normalized with: the job's non-canonical mapping (so that
    exact matches compare like with like) but no length bounds and no dropping."""
    policy = records.KEEP if rules.non_canonical == records.DROP else rules.non_canonical
    return records.Rules(policy, 1, 1 << 40)


def read_benchmark_targets(paths: Iterable[str], non_canonical: str) -> list[Target]:
    """The `Target`s of the benchmark files `paths` (in order), normalized with the job's
    non-canonical policy (`benchmark_rules`)."""
    rules = benchmark_rules(records.Rules(non_canonical))
    return [target for path in paths for target in read_benchmark_fasta(path, rules)]


def _preference(match: Match, bits: float) -> tuple:
    return (-bits, -match.identity, -match.coverage, match.source, match.id)


def exact_index(targets: Iterable[Target]) -> dict[bytes, Match]:
    """sequence hash -> the exact Match, the smallest (source, id) when targets repeat a sequence."""
    index = {}
    for target in sorted(targets):
        index.setdefault(records.sequence_hash(target.sequence),
                         Match(target.source, target.id, EXACT, 1.0, 1.0))
    return index


def best_hits(lines: Iterable[str], targets: list[Target], min_identity: float,
              min_coverage: float) -> dict[int, Match]:
    """query index -> best Match, from `mmseqs easy-search` output with SEARCH_COLUMNS.

    Queries are named `q<index>` and targets `t<index>` (their positions in the batch and in
    `targets`). Hits below either threshold are ignored; the best is chosen as the module
    docstring says.
    """
    best = {}
    for line in lines:
        if not line.strip():
            continue
        query, target, identity, coverage, bits = line.rstrip("\n").split("\t")
        identity, coverage, bits = float(identity), float(coverage), float(bits)
        if identity < min_identity or coverage < min_coverage:
            continue
        held_out = targets[int(target[1:])]
        match = Match(held_out.source, held_out.id, SIMILAR, identity, coverage)
        index = int(query[1:])
        if index not in best or _preference(match, bits) < _preference(*best[index]):
            best[index] = (match, bits)
    return {index: match for index, (match, _) in best.items()}


def _write_fasta(path: str, prefix: str, sequences: Iterable[bytes]) -> None:
    with open(path, "wb") as out:
        for i, sequence in enumerate(sequences):
            out.write(b">%s%d\n%s\n" % (prefix.encode(), i, sequence))


class MmseqsSearch:
    """A MMseqs2 database of targets, searched with batches of query sequences.

    Use as a context manager (or call `close`): the database lives in a temporary directory.
    It has no precomputed index (`mmseqs createindex`): the index is a k-mer table of fixed
    size (~0.9 GB on disk per DoFn instance, even for 300 targets, ~6 s to build) and saves
    only the ~3 s each search spends building that table in memory.
    """

    def __init__(self, targets: list[Target], min_identity: float, min_coverage: float):
        mmseqs_version()
        self._targets = list(targets)
        self._min_identity = min_identity
        self._min_coverage = min_coverage
        self._seed_flags = EXACT_SEED_FLAGS if min_identity >= EXACT_SEEDS_MIN_IDENTITY else ()
        self._workdir = tempfile.mkdtemp(prefix="decontaminate-")
        self._database = os.path.join(self._workdir, "targets")
        fasta_path = os.path.join(self._workdir, "targets.fasta")
        _write_fasta(fasta_path, "t", (t.sequence for t in self._targets))
        self._run("createdb", fasta_path, self._database, "-v", "1")

    def _run(self, *args: str) -> None:
        done = subprocess.run((MMSEQS,) + args, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError("mmseqs %s failed (exit %d): %s" % (
                args[0], done.returncode, (done.stderr or done.stdout)[-2000:]))

    def search(self, queries: list[bytes]) -> dict[int, Match]:
        """query index -> best Match above the thresholds, for the queries that have one."""
        if not queries:
            return {}
        batch_dir = tempfile.mkdtemp(prefix="batch-", dir=self._workdir)
        try:
            query_path = os.path.join(batch_dir, "queries.fasta")
            result_path = os.path.join(batch_dir, "hits.m8")
            _write_fasta(query_path, "q", queries)
            self._run("easy-search", query_path, self._database, result_path,
                      os.path.join(batch_dir, "tmp"), "--min-seq-id", str(self._min_identity),
                      "-c", str(self._min_coverage), "--format-output", SEARCH_COLUMNS,
                      *SEARCH_FLAGS, *self._seed_flags)
            with open(result_path) as hits:
                return best_hits(hits, self._targets, self._min_identity, self._min_coverage)
        finally:
            shutil.rmtree(batch_dir, ignore_errors=True)

    def close(self) -> None:
        """Removes the database."""
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *unused_exc):
        self.close()


# (record, reason, match) -> (the rejected record, its Removal).
RemovalFn = Callable[[object, str, Match], tuple[records.Rejected, Removal]]


def removal_of(record: records.Record, reason: str,
               match: Match) -> tuple[records.Rejected, Removal]:
    """The rejected record (for the rejected shards) and the Removal (for the lists)."""
    how = ("identical to" if match.method == EXACT else "%.1f %% identical over %.1f %% of" % (
        100 * match.identity, 100 * match.coverage))
    detail = "%s %s in %s (stands for %d duplicates)" % (
        how, match.id, match.source, record.num_duplicates)
    rejected = records.rejected_record(record, reason, detail, match.to_json_dict())
    return rejected, Removal(record.id, record.cluster_id, reason, match, record.num_duplicates)


class _DecontaminateFn(beam.DoFn):
    """(bucket, [`Record`]) -> the bucket without the removed records (main), `Rejected` (tag
    rejected), `Removal` (tag removed).

    Buckets wait in the DoFn until `batch_size` queries are pending (each `mmseqs easy-search`
    call has a fixed start-up cost), then are searched together and emitted; the rest at the
    end of the bundle. With `query_split`, only the records of that split are queries; the
    others pass through. `removal_fn(record, reason, match)` gives the (Rejected, Removal) of a
    removed record.
    """

    def __init__(self, reason: str, min_identity: float, min_coverage: float, batch_size: int,
                 query_split: Optional[str], removal_fn: RemovalFn):
        self._reason = reason
        self._removal_fn = removal_fn
        self._min_identity = min_identity
        self._min_coverage = min_coverage
        self._batch_size = batch_size
        self._query_split = query_split

    def setup(self):
        self._exact = None
        self._search = None
        self._removed = worker.counter("rejected_" + self._reason)
        self._searched = worker.counter("decontamination_searched_" + self._reason)

    def start_bundle(self):
        self._buckets, self._matches, self._pending = [], [], []

    def _prepare(self, targets: list[Target]) -> None:
        # Side inputs are not available in setup(): the database is built on the first bucket,
        # once per DoFn instance, which Beam reuses across bundles.
        targets = sorted(targets)
        self._exact = exact_index(targets)
        if targets:
            self._search = MmseqsSearch(targets, self._min_identity, self._min_coverage)

    def process(self, element, targets):
        if self._exact is None:
            self._prepare(targets)
        bucket, bucket_records = element
        index, matches = len(self._buckets), {}
        self._buckets.append((bucket, bucket_records))
        self._matches.append(matches)
        for i, record in enumerate(bucket_records):
            if self._query_split and record.split != self._query_split:
                continue
            exact = self._exact.get(record.sequence_hash)
            if exact is not None:
                matches[i] = exact
            else:
                self._pending.append((index, i))
        if len(self._pending) >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self):
        for output in self._flush():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, window.GlobalWindows.windowed_value(output.value))
            else:
                yield window.GlobalWindows.windowed_value(output)

    def _flush(self):
        started = time.monotonic()
        if self._search is not None and self._pending:
            found = self._search.search(
                [self._buckets[b][1][i].sequence for b, i in self._pending])
            for j, match in found.items():
                b, i = self._pending[j]
                self._matches[b][i] = match
        searched = sum(len(m) for m in self._matches)
        logging.info("decontamination (%s): %d sequences searched, %d removed, %.1f s",
                     self._reason, len(self._pending), searched, time.monotonic() - started)
        self._searched.inc(len(self._pending))
        self._removed.inc(searched)
        for (bucket, bucket_records), matches in zip(self._buckets, self._matches):
            kept = []
            for i, record in enumerate(bucket_records):
                if i in matches:
                    rejected, removal = self._removal_fn(record, self._reason, matches[i])
                    yield beam.pvalue.TaggedOutput(records.REJECTED, rejected)
                    yield beam.pvalue.TaggedOutput(REMOVED, removal)
                else:
                    kept.append(record)
            yield bucket, kept
        self._buckets, self._matches, self._pending = [], [], []

    def teardown(self):
        if self._search is not None:
            self._search.close()


class Decontaminate(beam.PTransform):
    """(bucket, [`Record`]) -> the same buckets without the removed records (main), `Rejected`
    (tag `rejected`) and `Removal` (tag `removed`).

    `targets` is a PCollection of `Target`s (a side input: benchmark records created on the
    launcher, or the validation split computed in the pipeline). Queries are searched in
    batches of at least `batch_size`; with `query_split`, only that split's records are queries.
    `removal_fn` describes a removed record (default `removal_of`, for `records.Record`s), and
    `bucket_type` is the buckets' element type, which picks their coder (default
    `records.RecordBucket`: `records.Record`s under their own coder).
    """

    def __init__(self, targets, reason: str, min_identity: float = DEFAULT_MIN_IDENTITY,
                 min_coverage: float = DEFAULT_MIN_COVERAGE, batch_size: int = DEFAULT_BATCH_SIZE,
                 query_split: Optional[str] = None, removal_fn: Optional[RemovalFn] = None,
                 bucket_type=records.RecordBucket):
        super().__init__()
        self._targets = targets
        self._bucket_type = bucket_type
        self._fn = _DecontaminateFn(reason, min_identity, min_coverage, batch_size, query_split,
                                    removal_fn or removal_of)

    def expand(self, buckets):
        return buckets | "Search" >> beam.ParDo(
            self._fn, beam.pvalue.AsList(self._targets)).with_output_types(
                self._bucket_type).with_outputs(records.REJECTED, REMOVED, main="buckets")


class Decontaminations(beam.PTransform):
    """The job's decontamination: (bucket, [`Record`]) -> {"buckets", "rejected", "removed"}.

    Against `benchmark_targets` (a list of `Target`s) when there are any, then, with
    `validation`, the train records against the validation records that remain. `search`:
    `Decontaminate`'s keyword arguments (`search_options` of the flags, `removal_fn`,
    `bucket_type`).
    """

    def __init__(self, benchmark_targets: list, validation: bool, **search):
        super().__init__()
        self._benchmark_targets = benchmark_targets
        self._validation = validation
        self._search = search

    def expand(self, buckets):
        pipeline, rejected, removed = buckets.pipeline, [], []
        if self._benchmark_targets:
            targets = pipeline | "BenchmarkTargets" >> beam.Create(self._benchmark_targets)
            cleaned = buckets | "Benchmarks" >> Decontaminate(
                targets, records.BENCHMARK_OVERLAP, **self._search)
            buckets = cleaned.buckets
            rejected.append(cleaned[records.REJECTED])
            removed.append(cleaned[REMOVED])
        if self._validation:
            targets = buckets | "ValidationTargets" >> beam.FlatMap(lambda element: [
                Target(VALIDATION_SOURCE, r.id, r.sequence)
                for r in element[1] if r.split == split.VALIDATION])
            cleaned = buckets | "Validation" >> Decontaminate(
                targets, records.VALIDATION_OVERLAP, query_split=split.TRAIN, **self._search)
            buckets = cleaned.buckets
            rejected.append(cleaned[records.REJECTED])
            removed.append(cleaned[REMOVED])
        return {"buckets": buckets,
                "rejected": rejected | "Rejected" >> beam.Flatten(),
                "removed": removed | "Removed" >> beam.Flatten()}


def removal_tsv_entry(removal: Removal) -> tuple[bytes, bytes]:
    """(sort key, line) of `benchmark_removed.tsv`: id, cluster_id, reason, benchmark file,
    benchmark id, method, identity, coverage."""
    match = removal.match
    line = "\t".join((removal.id, removal.cluster_id, removal.reason, match.source, match.id,
                      match.method, "%.3f" % match.identity, "%.3f" % match.coverage)) + "\n"
    return removal.id.encode(), line.encode()


class WriteRemovedList(beam.PTransform):
    """`Removal`s -> `benchmark_removed.tsv` (header, then sorted by id; its manifest entry)."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, removed):
        return (removed
                | "Lines" >> beam.Map(removal_tsv_entry)
                | "Write" >> writers.WriteList(self._output_dir, writers.BENCHMARK_REMOVED_FILE,
                                               REMOVED_TSV_HEADER.encode()))


REMOVED_TSV_HEADER = ("id\tcluster_id\treason\tbenchmark_file\tbenchmark_id\tmethod\tidentity\t"
                      "coverage\n")
