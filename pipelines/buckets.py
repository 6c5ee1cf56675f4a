"""The job's record stages, run on batches of records and on buckets of sequences.

Beam's per-element machinery (and the shuffle's per-element encoding) used to dominate the
job's CPU time. Here a Beam element carries many records, and the per-record work is plain
Python in loops (the plain functions of `validation` and `transforms`, tested without Beam):

- `Validate`: batches of raw records (from `fasta_source.FastaBatchSource`) -> batches of
  `Protein`s, `Rejected`s (one element each: they are few) and (path, records) counts.
- `Deduplicate`: batches of `Protein`s -> one (bucket, [`Kept`]) per bucket (the `Kept`s packed
  as tuples, `pack_kept`). A record's bucket is
  the train shard its sequence would go to (`sequence_bucket`), so records with one
  sequence meet in one bucket, which is deduplicated on its own. Ids that occur with different sequences are
  found by a second, light shuffle of (id, sequence hash, path, offset) keyed by a hash of the
  id; the losers are sent to their sequence's bucket.
- `WriteBuckets`: (bucket, [packed `Kept`]) -> the bucket's train shard, written by the same DoFn
  (sorted by shuffle key, as `transforms.WriteShards` sorts), and the validation records, the
  validation cluster ids and partial statistics for the rest of the job. Its per-record work
  is compiled (`encode_bucket`, pipelines/_example_codec.c).

Decontamination (pipelines/decontaminate.py) works on single `Kept`s between `Deduplicate` and
`WriteBuckets`; `GroupByBucket` makes the buckets again after it.

What crosses the bucket and id shuffles is tuples of primitives (str, bytes, int, None), which
Beam's FastPrimitivesCoder encodes without pickling, or which `spill` marshals into files
(`--shuffle=files`). A bucket is about 1/num_train_shards of the input; the shard count bounds a
worker's memory (see BUILD.md).
"""
import collections
import typing
import zlib

import apache_beam as beam
from apache_beam.transforms import window

from pipelines import manifest
from pipelines import spill
from pipelines import tfrecords
from pipelines import transforms
from pipelines import validation
# After `transforms`: it imports `tfrecords`, whose import error says how to build this
# extension when it is not built.

# Output tags.
PROTEINS = "proteins"
RECORDS_PER_FILE = "records_per_file"
KEPT = "kept"
DUPLICATES = "duplicates"
TRAIN_SHARDS = "train_shards"
VALIDATION_CLUSTER_IDS = "validation_cluster_ids"
SEQUENCE_STATS = "sequence_stats"
TRAIN_KEPT = "train_kept"
_IDS = "ids"
# Positions of `Protein` fields in its plain tuples.
_SEQUENCE_HASH = validation.Protein._fields.index("sequence_hash")
_PATH_AND_OFFSET = slice(validation.Protein._fields.index("path"), None)
# What a value of the bucket shuffle holds (and the kinds of partition `_KeyFn` writes).
_PROTEINS = 0
_LOSERS = 1
_IDS_PARTITION = 2


def sequence_bucket(sequence_hash: bytes, shuffle_seed: int, num_buckets: int) -> int:
    """The bucket of a sequence: the train shard it goes to (shuffle key modulo the shards)."""
    return transforms.shard_of(transforms.shuffle_key(sequence_hash, shuffle_seed), num_buckets)


def id_bucket(record_id: str, num_buckets: int) -> int:
    """The bucket of an id in the id-conflict shuffle: CRC-32 of the id, modulo the buckets.

    Only spreads the ids over buckets (no output depends on it), so a cheap stable hash will do.
    """
    return zlib.crc32(record_id.encode("utf-8", "surrogateescape")) % num_buckets


def pack_kept(kept: transforms.Kept, shuffle_key: bytes) -> tuple:
    """A `Kept` and its shuffle key as nested tuples of primitives, which Beam's coders encode
    without pickling (Beam also encodes a sample of the elements of every stage's outputs to
    estimate their sizes: a namedtuple would be pickled there). The key travels with the record
    from the stage that buckets it to the one that writes it, computed once."""
    return tuple(kept.protein), kept.num_duplicates, kept.duplicate_ids, shuffle_key


def unpack_kept(packed: tuple) -> transforms.Kept:
    """The `Kept` that `pack_kept` packed."""
    protein, num_duplicates, duplicate_ids, _ = packed
    return transforms.Kept(validation.Protein._make(protein), num_duplicates, duplicate_ids)


def sequence_stats(
        counts_by_split: dict[str, tuple[dict[int, int], typing.Sequence[int]]]) -> dict:
    """{split: ({length: records}, residue counts by byte value (256))} -> what
    `manifest.SequenceStatsFn` gives for the same records: per split that has records, records,
    residues, {length: count} and {residue letter: count}.

    The counts are those `encode_bucket` returns (counted in C: in Python, the residue
    histogram was the statistics' costliest part).
    """
    stats = {}
    for split, (length_counts, residue_counts) in counts_by_split.items():
        records = sum(length_counts.values())
        if records:
            stats[split] = {
                "records": records,
                "residues": sum(residue_counts),
                "lengths": collections.Counter(length_counts),
                "composition": collections.Counter(
                    {chr(r): residue_counts[r] for r in validation.ALPHABET if residue_counts[r]}),
            }
    return stats


def validate_batch(batch: list[tuple], rules: validation.Rules) -> tuple[list, list]:
    """Raw records as (path, offset, header, body) -> ([`Protein`], [`Rejected`])."""
    proteins, rejected = [], []
    for raw in batch:
        checked = validation.check_record(raw, rules)
        (rejected if isinstance(checked, validation.Rejected) else proteins).append(checked)
    return proteins, rejected


def id_conflicts(occurrences, shuffle_seed: int, num_buckets: int) -> dict[int, list]:
    """Occurrences (id, sequence hash, path, offset) -> {sequence bucket: [(path, offset)]} of
    the records that lose an id conflict (`transforms.id_conflict_losers`)."""
    by_id = collections.defaultdict(list)
    for record_id, digest, path, offset in occurrences:
        by_id[record_id].append((digest, path, offset))
    losers = collections.defaultdict(list)
    for found in by_id.values():
        if len(found) > 1:
            for digest, path, offset in transforms.id_conflict_losers(found):
                losers[sequence_bucket(digest, shuffle_seed, num_buckets)].append((path, offset))
    return losers


def resolve_bucket(keyed_proteins, losers: set, max_duplicate_ids: int) -> tuple[list, list]:
    """The (shuffle key, `Protein` as a plain tuple) of one bucket -> ([packed `Kept`] in
    sequence-hash order, [`Rejected`]).

    Each sequence's records are resolved by `transforms.resolve_duplicates`.
    """
    by_hash = collections.defaultdict(list)
    for keyed in keyed_proteins:
        by_hash[keyed[1][_SEQUENCE_HASH]].append(keyed)
    kept, rejected = [], []
    for digest in sorted(by_hash):
        group = by_hash[digest]
        key, protein = group[0]
        if len(group) == 1 and protein[_PATH_AND_OFFSET] not in losers:
            # Most sequences occur once: what `resolve_duplicates` gives them, directly.
            kept.append((protein, 0, (), key))
            continue
        # One sequence, so one shuffle key for the whole group.
        one, lost = transforms.resolve_duplicates(
            [validation.Protein._make(p) for _, p in group], losers, max_duplicate_ids)
        rejected += lost
        if one is not None:
            kept.append(pack_kept(one, key))
    return kept, rejected


class _ValidateFn(beam.DoFn):

    def __init__(self, rules: validation.Rules):
        self._rules = rules

    def setup(self):
        transforms.tune_garbage_collection()
        self._read = transforms.counter("records_read")
        self._valid = transforms.counter("records_valid")
        self._rejected = {reason: transforms.counter("rejected_" + reason)
                          for reason in validation.REASONS}

    def process(self, batch):
        proteins, rejected = validate_batch(batch, self._rules)
        self._read.inc(len(batch))
        self._valid.inc(len(proteins))
        for record in rejected:
            self._rejected[record.reason].inc()
            yield beam.pvalue.TaggedOutput(transforms.REJECTED, record)
        for path, count in collections.Counter(raw[0] for raw in batch).items():
            yield beam.pvalue.TaggedOutput(RECORDS_PER_FILE, (path, count))
        if proteins:
            # Plain tuples: see `pack_kept`.
            yield [tuple(protein) for protein in proteins]


class Validate(beam.PTransform):
    """Batches of raw records -> batches of `Protein`s as plain tuples (`proteins`), `Rejected`s
    (`rejected`) and (path, number of records read) per batch (`records_per_file`)."""

    def __init__(self, rules: validation.Rules):
        super().__init__()
        self._rules = rules

    def expand(self, batches):
        return batches | "Check" >> beam.ParDo(_ValidateFn(self._rules)).with_outputs(
            transforms.REJECTED, RECORDS_PER_FILE, main=PROTEINS)


# Beam's inference would see TaggedOutput among the outputs; Any gives every input of the
# bucket shuffle the same coder, so that its Flatten has nothing to transcode.
@beam.typehints.with_output_types(typing.Any)
class _KeyFn(beam.DoFn):
    """Batches of `Protein`s (or their plain tuples) -> per sequence bucket, chunks of its
    proteins as tuples (main
    output), and per id bucket, chunks of the (id, sequence hash, path, offset) of its records
    (output `_IDS`). A chunk is inline or spilled to a file (see pipelines/spill.py)."""

    def __init__(self, shuffle_seed: int, num_buckets: int, spill_dir: typing.Optional[str]):
        self._shuffle_seed = shuffle_seed
        self._num_buckets = num_buckets
        self._spill_dir = spill_dir

    def start_bundle(self):
        self._writer = (spill.SpillWriter(self._spill_dir) if self._spill_dir
                        else spill.InlineWriter())

    def process(self, proteins):
        seed, num_buckets = self._shuffle_seed, self._num_buckets
        by_bucket, by_id, sizes = (collections.defaultdict(list), collections.defaultdict(list),
                                   collections.Counter())
        for protein in map(tuple, proteins):
            record_id, _, sequence, digest, _, _, path, offset = protein
            key = transforms.shuffle_key(digest, seed)
            bucket = transforms.shard_of(key, num_buckets)
            by_bucket[bucket].append((key, protein))
            sizes[bucket] += len(sequence)
            by_id[id_bucket(record_id, num_buckets)].append((record_id, digest, path, offset))
        for bucket, found in by_bucket.items():
            self._writer.add((_PROTEINS, bucket), found, sizes[bucket])
        for bucket, found in by_id.items():
            self._writer.add((_IDS_PARTITION, bucket), found, 0)
        if self._writer.full:
            yield from self._outputs(self._writer.flush())

    def finish_bundle(self):
        for output in self._outputs(self._writer.flush()):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, window.GlobalWindows.windowed_value(output.value))
            else:
                yield window.GlobalWindows.windowed_value(output)

    @staticmethod
    def _outputs(chunks):
        for (kind, bucket), chunk in chunks:
            if kind == _PROTEINS:
                yield bucket, (_PROTEINS, chunk)
            else:
                yield beam.pvalue.TaggedOutput(_IDS, (bucket, chunk))


class _ResolveFn(beam.DoFn):

    def __init__(self, max_duplicate_ids: int):
        self._max_duplicate_ids = max_duplicate_ids

    def setup(self):
        transforms.tune_garbage_collection()
        self._duplicates = transforms.counter("duplicates")
        self._duplicate_id = transforms.counter("rejected_" + validation.DUPLICATE_ID)

    def process(self, element):
        bucket, tagged = element
        proteins, losers = [], set()
        for tag, chunk in tagged:
            if tag == _PROTEINS:
                proteins += spill.items_of([chunk])
            elif tag == _LOSERS:
                losers.update(map(tuple, chunk))
        kept, rejected = resolve_bucket(proteins, losers, self._max_duplicate_ids)
        for record in rejected:
            self._duplicate_id.inc()
            yield beam.pvalue.TaggedOutput(transforms.REJECTED, record)
        duplicates = sum(num_duplicates for _, num_duplicates, _, _ in kept)
        self._duplicates.inc(duplicates)
        yield beam.pvalue.TaggedOutput(DUPLICATES, duplicates)
        yield bucket, kept


class Deduplicate(beam.PTransform):
    """Batches of `Protein`s (or their plain tuples) -> one (bucket, [packed `Kept`]) per bucket,
    every bucket present (`kept`; see `pack_kept`),
    `duplicate_id` rejections (`rejected`) and each bucket's number of duplicates (`duplicates`).

    The kept record of a sequence is the minimum by (id, path, offset); see
    `transforms.resolve_duplicates`.
    """

    def __init__(self, max_duplicate_ids: int, shuffle_seed: int, num_buckets: int,
                 spill_dir: typing.Optional[str] = None):
        """`spill_dir`: where to spill the shuffled records (`--shuffle=files`; the caller deletes
        the spill files afterwards, `spill.DeleteSpillFiles`), or None for Beam's shuffle."""
        super().__init__()
        self._max_duplicate_ids = max_duplicate_ids
        self._shuffle_seed = shuffle_seed
        self._num_buckets = num_buckets
        self._spill_dir = spill_dir

    def expand(self, batches):
        seed, num_buckets = self._shuffle_seed, self._num_buckets
        keyed = batches | "Key" >> beam.ParDo(
            _KeyFn(seed, num_buckets, self._spill_dir)).with_outputs(_IDS, main=PROTEINS)
        losers = (
            keyed[_IDS]
            | "GroupById" >> beam.GroupByKey()
            | "FindIdConflicts" >> beam.FlatMap(lambda element: [
                (bucket, (_LOSERS, found)) for bucket, found in id_conflicts(
                    spill.items_of(element[1]), seed, num_buckets).items()]))
        return (
            (keyed.proteins, losers)
            | "GroupByBucket" >> transforms.GroupByIndex(num_buckets)
            | "Resolve" >> beam.ParDo(_ResolveFn(self._max_duplicate_ids)).with_outputs(
                transforms.REJECTED, DUPLICATES, main=KEPT))


def _bucket_of_kept(kept: transforms.Kept, shuffle_seed: int,
                    num_buckets: int) -> tuple[int, tuple]:
    """(bucket, packed `Kept`) of a record (the train shard its shuffle key picks)."""
    key = transforms.shuffle_key(kept.protein.sequence_hash, shuffle_seed)
    return transforms.shard_of(key, num_buckets), pack_kept(kept, key)


class GroupByBucket(beam.PTransform):
    """`Kept`s -> (bucket, [packed `Kept`]) with every bucket present: the buckets again, after a
    step that works on single records (decontamination)."""

    def __init__(self, shuffle_seed: int, num_buckets: int):
        super().__init__()
        self._shuffle_seed = shuffle_seed
        self._num_buckets = num_buckets

    def expand(self, kept):
        seed, num_buckets = self._shuffle_seed, self._num_buckets
        return (
            kept
            | "ByBucket" >> beam.Map(_bucket_of_kept, seed, num_buckets)
            | "Group" >> transforms.GroupByIndex(num_buckets))


class _WriteBucketFn(beam.DoFn):

    def __init__(self, output_dir, validation_fraction, num_train_shards, num_validation_shards,
                 train_kept):
        self._output_dir = output_dir
        self._validation_fraction = validation_fraction
        self._num_train_shards = num_train_shards
        self._num_validation_shards = num_validation_shards
        self._train_kept = train_kept

    def setup(self):
        self._counters = {split: transforms.counter(split)
                          for split in (transforms.TRAIN, transforms.VALIDATION)}

    def process(self, element):
        bucket, packed = element
        # The per-record work (split, encoding, the statistics' counts) is compiled: see
        # `encode_bucket`'s docstring.
        train, validation_records, train_counts, validation_counts = tfrecords.encode_bucket(
            packed, self._validation_fraction)
        for key, framed, cluster_id in validation_records:
            yield beam.pvalue.TaggedOutput(transforms.VALIDATION, (
                transforms.shard_of(key, self._num_validation_shards), (key, framed)))
            yield beam.pvalue.TaggedOutput(VALIDATION_CLUSTER_IDS, cluster_id)
        if self._train_kept:
            # The split depends on the cluster id alone.
            validation_clusters = {cluster_id for _, _, cluster_id in validation_records}
            for one in packed:
                if one[0][1] not in validation_clusters:
                    yield beam.pvalue.TaggedOutput(TRAIN_KEPT, unpack_kept(one))
        self._counters[transforms.TRAIN].inc(len(train))
        self._counters[transforms.VALIDATION].inc(len(validation_records))
        yield beam.pvalue.TaggedOutput(SEQUENCE_STATS, sequence_stats(
            {transforms.TRAIN: train_counts, transforms.VALIDATION: validation_counts}))
        train.sort()
        yield transforms.write_file(
            self._output_dir, transforms.shard_name(
                transforms.TRAIN, transforms.TFRECORD_SUFFIX, bucket, self._num_train_shards),
            transforms.TRAIN, (framed for _, framed in train))


class WriteBuckets(beam.PTransform):
    """(bucket, [packed `Kept`]) -> the bucket's train shard, whose index is the bucket.

    Outputs: the train shards' manifest entries (main, `train_shards`); validation records as
    (shard, (shuffle key, framed Example)) for `transforms.WriteShards` (`validation`); the
    validation records' cluster ids (`validation_cluster_ids`); per bucket, `SequenceStatsFn`'s
    statistics (`sequence_stats`: merge them with `MergeSequenceStats`); and, with
    `train_kept`, the train `Kept`s (`train_kept`, for cluster shards).
    """

    def __init__(self, output_dir: str, validation_fraction: float, num_train_shards: int,
                 num_validation_shards: int, train_kept: bool = False):
        super().__init__()
        self._fn = _WriteBucketFn(output_dir, validation_fraction, num_train_shards,
                                  num_validation_shards, train_kept)

    def expand(self, buckets):
        return buckets | "Write" >> beam.ParDo(self._fn).with_outputs(
            transforms.VALIDATION, VALIDATION_CLUSTER_IDS, SEQUENCE_STATS, TRAIN_KEPT,
            main=TRAIN_SHARDS)


class _MergeSequenceStatsFn(beam.CombineFn):
    """Partial `manifest.SequenceStatsFn` statistics -> their total."""

    def __init__(self):
        self._stats = manifest.SequenceStatsFn()

    def create_accumulator(self):
        return self._stats.create_accumulator()

    def add_input(self, accumulator, element):
        return self._stats.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators):
        return self._stats.merge_accumulators(accumulators)

    def extract_output(self, accumulator):
        return self._stats.extract_output(accumulator)


class MergeSequenceStats(beam.PTransform):
    """Partial statistics of `WriteBuckets` -> their total, as `manifest.SequenceStatsFn` gives."""

    def expand(self, partials):
        return partials | "Merge" >> beam.CombineGlobally(_MergeSequenceStatsFn())
