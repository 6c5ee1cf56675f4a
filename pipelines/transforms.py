"""The composite PTransforms of the UniRef job, and the per-record logic they apply.

Data flow (see README.md for the whole job; the batched stages are in pipelines/buckets.py):
  ReadFasta -> buckets.Validate -> buckets.Deduplicate -> buckets.WriteBuckets (train shards)
                                                           \\-> WriteShards (validation)
                  \\-> rejected (+ duplicate_id from Deduplicate) -> WriteShards (rejected)
"""
import functools
import gc
import hashlib
import heapq
import json
import logging
import uuid
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import fasta_source
from pipelines import tfrecords
from pipelines import validation

METRICS_NAMESPACE = "uniref"
TRAIN = "train"
VALIDATION = "validation"
REJECTED = "rejected"
TFRECORD_SUFFIX = ".tfrecord"
JSONL_SUFFIX = ".jsonl"
TEMP_PREFIX = ".tmp-"
TRAIN_CLUSTERS = "train_clusters"
CLUSTER_TABLE = "clusters"
TSV_SUFFIX = ".tsv"
VALIDATION_CLUSTERS_FILE = "validation_clusters.txt"
BENCHMARK_REMOVED_FILE = "benchmark_removed.tsv"
# The files this job writes into its output directory; the start-up clean-up deletes only these.
OUTPUT_PATTERNS = (
    TRAIN + TFRECORD_SUFFIX + "-*-of-*",
    VALIDATION + TFRECORD_SUFFIX + "-*-of-*",
    REJECTED + JSONL_SUFFIX + "-*-of-*",
    TRAIN_CLUSTERS + TFRECORD_SUFFIX + "-*-of-*",
    CLUSTER_TABLE + TSV_SUFFIX + "-*-of-*",
    VALIDATION_CLUSTERS_FILE,
    BENCHMARK_REMOVED_FILE,
    TEMP_PREFIX + "*",
)


# Young-generation collections every this many container allocations (CPython's default: 700).
_GC_YOUNG_THRESHOLD = 10_000


@functools.cache
def tune_garbage_collection() -> None:
    """Once per process, before the per-record work: keeps CPython's cycle collector off what
    never becomes cyclic garbage.

    The job allocates several tuples per record, so the collector runs often, and each of its
    full collections walked every object of the process: ~200k from importing Beam and
    TensorFlow alone. Freezing what exists when the work starts (modules, the runner) takes
    those out of every later collection, and a larger young generation makes collections rarer.
    Measured on 200k records (gc callbacks): 1.7 s of collection -> 0.2 s, ~7 us per record.
    Reference counting still frees everything as usual; only cycles wait longer.
    """
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def counter(name: str):
    """A Beam counter of the job's namespace."""
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


class Kept(NamedTuple):
    """A record kept after deduplication, with the duplicates it stands for."""

    protein: validation.Protein
    num_duplicates: int
    duplicate_ids: tuple[str, ...]


def shard_name(name: str, suffix: str, index: int, num_shards: int) -> str:
    """SeqIO-style shard file name, e.g. `train.tfrecord-00003-of-00064`."""
    return "%s%s-%05d-of-%05d" % (name, suffix, index, num_shards)


def hash_fraction(text: str) -> float:
    """The first 8 bytes of sha256(text) as an integer, divided by 2**64: uniform in [0, 1)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(cluster_id: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of cluster ids, else `train`.

    Depends on nothing but the cluster id, so one cluster never straddles the split, whatever
    the shard counts, workers or reruns.
    """
    return VALIDATION if hash_fraction(cluster_id) < validation_fraction else TRAIN


def shuffle_key(sequence_hash: bytes, seed: int) -> bytes:
    """The key that orders records inside shards and picks their shard: sha256(hash + seed)."""
    return hashlib.sha256(sequence_hash + str(seed).encode()).digest()


def shard_of(key: bytes, num_shards: int) -> int:
    """The shard of a record with this key (first 8 bytes of the key, modulo the shard count)."""
    return int.from_bytes(key[:8], "big") % num_shards


def id_conflict_losers(
    occurrences: Iterable[tuple[bytes, str, int]],
) -> list[tuple[bytes, str, int]]:
    """Occurrences of one id, as (sequence hash, path, offset), whose sequence differs from the kept one.

    The kept occurrence is the first in input order (smallest (path, offset)); occurrences with
    the same sequence as it are ordinary duplicates, left to sequence deduplication.
    """
    occurrences = sorted(occurrences, key=lambda o: (o[1], o[2]))
    kept_hash = occurrences[0][0]
    return [o for o in occurrences if o[0] != kept_hash]


def resolve_duplicates(
    proteins: Iterable[validation.Protein],
    losers: set[tuple[str, int]],
    max_duplicate_ids: int,
) -> tuple[Optional[Kept], list[validation.Rejected]]:
    """Deduplicates the records that share one sequence.

    `proteins` is iterated twice (Beam's grouped values are re-iterable) so that memory stays
    bounded for huge groups. Records at (path, offset) in `losers` are rejected as `duplicate_id`;
    of the others the minimum by (id, path, offset) is kept (never arrival order) and carries the
    count of the rest and the smallest `max_duplicate_ids` of their ids, sorted.
    """
    rejected, kept = [], None
    for protein in proteins:
        if (protein.path, protein.offset) in losers:
            rejected.append(validation.Rejected(
                protein.id, protein.path, protein.offset, validation.DUPLICATE_ID,
                "id occurs earlier in the input with a different sequence",
                validation.excerpt_head(protein.sequence)))
        elif kept is None or (protein.id, protein.path, protein.offset) < (
                kept.id, kept.path, kept.offset):
            kept = protein
    if kept is None:
        return None, rejected
    others = (p for p in proteins
              if (p.path, p.offset) not in losers and (p.path, p.offset) != (kept.path, kept.offset))
    count, smallest = 0, []
    for other in others:
        count += 1
        smallest.append(other.id)
        if len(smallest) > 2 * max_duplicate_ids:
            smallest = heapq.nsmallest(max_duplicate_ids, smallest)
    return Kept(kept, count, tuple(sorted(smallest)[:max_duplicate_ids])), rejected


class ReadFasta(beam.PTransform):
    """Reads batches of raw records (lists of (path, offset, header, body), see
    `fasta_source.FastaBatchSource`) from one or more file patterns.

    Uncompressed files are split by byte range; each compressed file is read whole by one
    worker. With `spread_compressed`, a `Reshuffle` follows the read of a compressed pattern to
    spread a large `.gz` over all workers before the per-record work (on Dataflow; on one machine
    it would only hold the whole input in memory).
    """

    def __init__(self, patterns: list[str], spread_compressed: bool):
        super().__init__()
        self._patterns = list(patterns)
        self._spread_compressed = spread_compressed

    def expand(self, pbegin):
        reads = []
        for i, pattern in enumerate(self._patterns):
            read = pbegin | "Read%d" % i >> beam.io.Read(fasta_source.FastaBatchSource(pattern))
            if self._spread_compressed and _matches_compressed(pattern):
                read = read | "Spread%d" % i >> beam.Reshuffle()
            reads.append(read)
        return reads | "Flatten" >> beam.Flatten()


def _matches_compressed(pattern: str) -> bool:
    """Whether any file that `pattern` matches is compressed (by its name, as the source reads it)."""
    return any(
        CompressionTypes.detect_compression_type(m.path) != CompressionTypes.UNCOMPRESSED
        for m in FileSystems.match([pattern])[0].metadata_list)


def rejected_shard_entry(record: validation.Rejected, num_shards: int):
    """(shard, (sort key, JSON line)) of a rejected record; shards are sorted by (path, offset)."""
    sort_key = ("%s\0%020d" % (record.path, record.offset)).encode("utf-8", "surrogateescape")
    line = json.dumps(record.to_json_dict(), sort_keys=True, ensure_ascii=True) + "\n"
    return shard_of(hashlib.sha256(sort_key).digest(), num_shards), (sort_key, line.encode())


def write_file(output_dir: str, name: str, split: str, payloads: Iterable[bytes]) -> dict:
    """Writes `payloads` to `output_dir/name` through a unique temporary name, then renames.

    The payloads are joined and written at once (a shard is in memory anyway, sorted, when it
    is written; one write and one hash instead of one per record). Returns the manifest's entry
    for the file: name, split, records, bytes, sha256.
    """
    payloads = list(payloads)
    data = b"".join(payloads)
    final_path = FileSystems.join(output_dir, name)
    # A unique temporary name: a retried bundle never collides with an earlier attempt.
    temp_path = FileSystems.join(output_dir, "%s%s-%s" % (TEMP_PREFIX, name, uuid.uuid4().hex))
    with FileSystems.create(temp_path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED) as out:
        out.write(data)
    FileSystems.rename([temp_path], [final_path])
    logging.info("wrote %s (%d records)", final_path, len(payloads))
    return {"name": name, "split": split, "records": len(payloads), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


class _WriteShardFn(beam.DoFn):

    def __init__(self, output_dir, name, suffix, num_shards):
        self._output_dir = output_dir
        self._name = name
        self._suffix = suffix
        self._num_shards = num_shards

    def process(self, element):
        index, entries = element
        entries = sorted(entries)
        yield write_file(self._output_dir,
                         shard_name(self._name, self._suffix, index, self._num_shards),
                         self._name, (payload for _, payload in entries))


class GroupByIndex(beam.PTransform):
    """(index, value) pairs -> one (index, [values]) for every index in range(`num_indices`).

    Takes a PCollection or a tuple of them. An index with no value still comes out, with an
    empty list, so that every shard is written and every bucket resolved, empty or not. Values
    must not be None (None marks the indices that must appear).
    """

    def __init__(self, num_indices: int):
        super().__init__()
        self._num_indices = num_indices

    def expand(self, pairs):
        pcollections = tuple(pairs) if isinstance(pairs, (tuple, list)) else (pairs,)
        every_index = pcollections[0].pipeline | "EveryIndex" >> beam.Create(
            [(index, None) for index in range(self._num_indices)])
        return (
            pcollections + (every_index,)
            | "Flatten" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "DropMarkers" >> beam.MapTuple(
                lambda index, values: (index, [v for v in values if v is not None])))


class WriteShards(beam.PTransform):
    """(shard, (sort key, bytes)) -> the shard files `<name><suffix>-NNNNN-of-MMMMM`.

    Every shard is written, empty or not, by one DoFn call that sorts its entries by key (so
    the bytes do not depend on arrival order), writes to a temporary name, then renames.
    Outputs one dict per shard: name, split, records, bytes, sha256.
    """

    def __init__(self, output_dir: str, name: str, suffix: str, num_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._name = name
        self._suffix = suffix
        self._num_shards = num_shards

    def expand(self, entries):
        return (
            entries
            | "GroupByShard" >> GroupByIndex(self._num_shards)
            | "Write" >> beam.ParDo(
                _WriteShardFn(self._output_dir, self._name, self._suffix, self._num_shards)))


class _WriteListFn(beam.DoFn):

    def __init__(self, output_dir, name, header):
        self._output_dir = output_dir
        self._name = name
        self._header = header

    def process(self, unused_element, entries):
        lines = [line for _, line in sorted(entries)]
        header = [self._header] if self._header else []
        output = write_file(self._output_dir, self._name, self._name, header + lines)
        # The header is not a record.
        yield dict(output, records=len(lines))


class WriteList(beam.PTransform):
    """(sort key, line) -> one text file `name` (header first, then lines sorted by key).

    For the split lists, which are small enough for one worker (300k validation clusters of a
    full UniRef50 are ~6 MB). The file is written even when there is no line.
    """

    def __init__(self, output_dir: str, name: str, header: bytes = b""):
        super().__init__()
        self._output_dir = output_dir
        self._name = name
        self._header = header

    def expand(self, entries):
        return (entries.pipeline
                | "Trigger" >> beam.Create([None])
                | "Write" >> beam.ParDo(_WriteListFn(self._output_dir, self._name, self._header),
                                        beam.pvalue.AsList(entries)))
