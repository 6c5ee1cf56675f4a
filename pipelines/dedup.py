"""Deduplication: one record per distinct sequence, and one sequence per id.

A record's bucket is the train shard its sequence goes to (`split.shard_of` of its shuffle key),
so the records of one sequence meet in one bucket, which is deduplicated on its own. Ids that
occur with different sequences are found by a second, light shuffle of (id, sequence hash, path,
offset) keyed by a hash of the id; the losers are sent to their sequence's bucket. The output is
one (bucket, [`Record`]) per bucket, every bucket present: later stages (decontamination, the
writers) work on these buckets as they are.

The keying stage is where a record's cluster id is final, so it also decides the record's split
and shuffle key (`split.Assigner`), once.
"""
import collections
import heapq
import operator
import typing
import zlib
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.transforms import window

from pipelines import records
from pipelines import shuffle
from pipelines import split
from pipelines import worker

# Output tags.
BUCKETS = "buckets"
DUPLICATES = "duplicates"
_IDS = "ids"
# What a value of the bucket shuffle holds (and the kinds of partition `_KeyFn` writes).
_RECORDS = 0
_LOSERS = 1
_IDS_PARTITION = 2


def id_bucket(record_id: str, num_buckets: int) -> int:
    """The bucket of an id in the id-conflict shuffle: CRC-32 of the id, modulo the buckets.

    Only spreads the ids over buckets (no output depends on it), so a cheap stable hash will do.
    """
    return zlib.crc32(record_id.encode("utf-8", "surrogateescape")) % num_buckets


def id_conflict_losers(
    occurrences: Iterable[tuple[bytes, str, int]],
) -> list[tuple[bytes, str, int]]:
    """Occurrences of one id, as (sequence hash, path, offset), whose sequence differs from the
    kept one.

    The kept occurrence is the first in input order (smallest (path, offset)); occurrences with
    the same sequence as it are ordinary duplicates, left to sequence deduplication.
    """
    occurrences = sorted(occurrences, key=lambda o: (o[1], o[2]))
    kept_hash = occurrences[0][0]
    return [o for o in occurrences if o[0] != kept_hash]


def id_conflicts(occurrences, shuffle_seed: int, num_buckets: int) -> dict[int, list]:
    """Occurrences (id, sequence hash, path, offset) -> {sequence bucket: [(path, offset)]} of
    the records that lose an id conflict (`id_conflict_losers`)."""
    occurrences = list(occurrences)
    # Nearly every id occurs once: count them all (a loop in C), then gather only the others.
    counts = collections.Counter(map(operator.itemgetter(0), occurrences))
    losers = collections.defaultdict(list)
    if len(counts) == len(occurrences):
        return losers
    by_id = collections.defaultdict(list)
    for record_id, digest, path, offset in occurrences:
        if counts[record_id] > 1:
            by_id[record_id].append((digest, path, offset))
    for found in by_id.values():
        for digest, path, offset in id_conflict_losers(found):
            bucket = split.shard_of(split.shuffle_key(digest, shuffle_seed), num_buckets)
            losers[bucket].append((path, offset))
    return losers


def resolve_duplicates(
    group: list[records.Record],
    losers: set[tuple[str, int]],
    max_duplicate_ids: int,
) -> tuple[Optional[records.Record], list[records.Rejected]]:
    """Deduplicates the records that share one sequence.

    Records at (path, offset) in `losers` are rejected as `duplicate_id`; of the others the
    minimum by (id, path, offset) is kept (never arrival order) and carries the count of the
    rest and the smallest `max_duplicate_ids` of their ids, sorted.
    """
    rejected, kept = [], None
    for record in group:
        if (record.path, record.offset) in losers:
            rejected.append(records.rejected_record(
                record, records.DUPLICATE_ID,
                "id occurs earlier in the input with a different sequence"))
        elif kept is None or (record.id, record.path, record.offset) < (
                kept.id, kept.path, kept.offset):
            kept = record
    if kept is None:
        return None, rejected
    count, smallest = 0, []
    for other in group:
        if (other.path, other.offset) not in losers and other is not kept:
            count += 1
            smallest.append(other.id)
            if len(smallest) > 2 * max_duplicate_ids:
                smallest = heapq.nsmallest(max_duplicate_ids, smallest)
    return kept._replace(num_duplicates=count,
                         duplicate_ids=tuple(sorted(smallest)[:max_duplicate_ids])), rejected


def resolve_bucket(bucket_records: Iterable[records.Record], losers: set,
                   max_duplicate_ids: int) -> tuple[list, list]:
    """The records of one bucket -> ([kept `Record`] in sequence-hash order, [`Rejected`])."""
    by_hash = collections.defaultdict(list)
    for record in bucket_records:
        by_hash[record.sequence_hash].append(record)
    kept, rejected = [], []
    for digest in sorted(by_hash):
        group = by_hash[digest]
        # Most sequences occur once, and most buckets have no id conflict.
        if len(group) == 1 and (not losers or (group[0].path, group[0].offset) not in losers):
            kept.append(group[0])
            continue
        one, lost = resolve_duplicates(group, losers, max_duplicate_ids)
        rejected += lost
        if one is not None:
            kept.append(one)
    return kept, rejected


# (id, sequence hash, path, offset) of a `Record`: what the id-conflict shuffle carries.
_id_occurrence = operator.itemgetter(
    *(records.Record._fields.index(f) for f in ("id", "sequence_hash", "path", "offset")))


# Beam's inference would see TaggedOutput among the outputs; Any gives every input of the
# bucket shuffle the same coder, so that its Flatten has nothing to transcode.
@beam.typehints.with_output_types(typing.Any)
class _KeyFn(beam.DoFn):
    """Batches of `Record`s -> per sequence bucket, chunks of its records with their split and
    shuffle key set (main output), and per id bucket, chunks of the (id, sequence hash, path,
    offset) of its records (output `_IDS`). A chunk is inline or spilled to a file."""

    def __init__(self, shuffle_seed: int, num_buckets: int, validation_fraction: float,
                 spill_dir: Optional[str]):
        self._shuffle_seed = shuffle_seed
        self._num_buckets = num_buckets
        self._validation_fraction = validation_fraction
        self._spill_dir = spill_dir

    def setup(self):
        self._assigner = split.Assigner(self._shuffle_seed, self._validation_fraction)

    def start_bundle(self):
        self._buffer = (shuffle.SpillBuffer(self._spill_dir) if self._spill_dir
                        else shuffle.InlineBuffer())

    def process(self, batch):
        fields, num_buckets = self._assigner.fields, self._num_buckets
        by_bucket, by_id, sizes = (collections.defaultdict(list), collections.defaultdict(list),
                                   collections.Counter())
        for record in batch:
            # The shuffle carries a record as the plain tuple of its fields.
            assigned = fields(record)
            bucket = split.shard_of(assigned[split.KEY_FIELD], num_buckets)
            by_bucket[bucket].append(assigned)
            sizes[bucket] += len(record.sequence)
            by_id[id_bucket(record.id, num_buckets)].append(_id_occurrence(record))
        for bucket, found in by_bucket.items():
            self._buffer.add((_RECORDS, bucket), found, sizes[bucket])
        for bucket, found in by_id.items():
            self._buffer.add((_IDS_PARTITION, bucket), found, 0)
        if self._buffer.full:
            yield from self._outputs(self._buffer.flush())

    def finish_bundle(self):
        for output in self._outputs(self._buffer.flush()):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, window.GlobalWindows.windowed_value(output.value))
            else:
                yield window.GlobalWindows.windowed_value(output)

    @staticmethod
    def _outputs(chunks):
        for (kind, bucket), chunk in chunks:
            if kind == _RECORDS:
                yield bucket, (_RECORDS, chunk)
            else:
                yield beam.pvalue.TaggedOutput(_IDS, (bucket, chunk))


class _ResolveFn(beam.DoFn):

    def __init__(self, max_duplicate_ids: int):
        self._max_duplicate_ids = max_duplicate_ids

    def setup(self):
        worker.tune_garbage_collection()
        self._duplicates = worker.counter("duplicates")
        self._duplicate_id = worker.counter("rejected_" + records.DUPLICATE_ID)

    def process(self, element):
        bucket, tagged = element
        chunks, losers = [], set()
        for tag, chunk in tagged:
            if tag == _RECORDS:
                chunks.append(chunk)
            elif tag == _LOSERS:
                losers.update(map(tuple, chunk))
        kept, rejected = resolve_bucket(
            shuffle.items_of(chunks, records.record_from_fields), losers, self._max_duplicate_ids)
        for record in rejected:
            self._duplicate_id.inc()
            yield beam.pvalue.TaggedOutput(records.REJECTED, record)
        duplicates = sum(record.num_duplicates for record in kept)
        self._duplicates.inc(duplicates)
        yield beam.pvalue.TaggedOutput(DUPLICATES, duplicates)
        yield bucket, kept


class Deduplicate(beam.PTransform):
    """Batches of `Record`s -> one (bucket, [`Record`]) per bucket, every bucket present
    (`buckets`), `duplicate_id` rejections (`rejected`) and each bucket's number of duplicates
    (`duplicates`).

    The kept record of a sequence is the minimum by (id, path, offset); see `resolve_duplicates`.
    `spill_dir`: where to spill the shuffled records (`--shuffle=files`; the caller deletes the
    spill files afterwards, `shuffle.DeleteSpillFiles`), or None for Beam's shuffle.
    """

    def __init__(self, max_duplicate_ids: int, shuffle_seed: int, num_buckets: int,
                 validation_fraction: float, spill_dir: Optional[str] = None):
        super().__init__()
        self._max_duplicate_ids = max_duplicate_ids
        self._key_fn = _KeyFn(shuffle_seed, num_buckets, validation_fraction, spill_dir)
        self._shuffle_seed = shuffle_seed
        self._num_buckets = num_buckets

    def expand(self, batches):
        seed, num_buckets = self._shuffle_seed, self._num_buckets
        keyed = batches | "Key" >> beam.ParDo(self._key_fn).with_outputs(_IDS, main=BUCKETS)
        losers = (
            keyed[_IDS]
            | "GroupById" >> beam.GroupByKey()
            | "FindIdConflicts" >> beam.FlatMap(lambda element: [
                (bucket, (_LOSERS, found)) for bucket, found in id_conflicts(
                    shuffle.items_of(element[1]), seed, num_buckets).items()]))
        return (
            (keyed[BUCKETS], losers)
            | "GroupByBucket" >> shuffle.GroupByIndex(num_buckets)
            | "Resolve" >> beam.ParDo(_ResolveFn(self._max_duplicate_ids)).with_output_types(
                records.RecordBucket).with_outputs(records.REJECTED, DUPLICATES, main=BUCKETS))
