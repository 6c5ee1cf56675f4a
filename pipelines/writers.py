"""Writing the job's output files, each atomically (a unique temporary name, then a rename).

Public API: `write_file(output_dir, name, split, payloads) -> manifest entry` (one file,
atomically), `shard_name`, and the transforms `WriteSplits` (buckets of records -> train shards,
validation entries, statistics), `WriteShards` and `WriteList`.
"""
import collections
import hashlib
import json
import logging
import uuid
from typing import Iterable

import apache_beam as beam
import numpy
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import records
from pipelines import shuffle
from pipelines import split
from pipelines import tfrecords
from pipelines import worker

TFRECORD_SUFFIX = ".tfrecord"
JSONL_SUFFIX = ".jsonl"
TSV_SUFFIX = ".tsv"
TEMP_PREFIX = ".tmp-"
TRAIN_CLUSTERS = "train_clusters"
CLUSTER_TABLE = "clusters"
VALIDATION_CLUSTERS_FILE = "validation_clusters.txt"
BENCHMARK_REMOVED_FILE = "benchmark_removed.tsv"
# The files this job writes into its output directory; the start-up clean-up deletes only these.
OUTPUT_PATTERNS = (
    split.TRAIN + TFRECORD_SUFFIX + "-*-of-*",
    split.VALIDATION + TFRECORD_SUFFIX + "-*-of-*",
    records.REJECTED + JSONL_SUFFIX + "-*-of-*",
    TRAIN_CLUSTERS + TFRECORD_SUFFIX + "-*-of-*",
    CLUSTER_TABLE + TSV_SUFFIX + "-*-of-*",
    VALIDATION_CLUSTERS_FILE,
    BENCHMARK_REMOVED_FILE,
    TEMP_PREFIX + "*",
)
# Output tags of `WriteSplits`.
TRAIN_SHARDS = "train_shards"
VALIDATION_ENTRIES = "validation_entries"
VALIDATION_CLUSTER_IDS = "validation_cluster_ids"
SEQUENCE_STATS = "sequence_stats"
TRAIN_RECORDS = "train_records"


def check_job_flags(options, counts) -> None:
    """Raises ValueError with a clear message for an out-of-range flag that every job has:
    --output_dir, --validation_fraction, --min_length/--max_length, and `counts`, the names of
    the job's count flags (shards, batch sizes), each at least 1."""
    if not options.output_dir:
        raise ValueError("--output_dir is required")
    if not 0 <= options.validation_fraction <= 1:
        raise ValueError("--validation_fraction must be in [0, 1]")
    if options.min_length < 1 or options.max_length < options.min_length:
        raise ValueError("need 1 <= --min_length <= --max_length")
    for name in counts:
        if getattr(options, name) < 1:
            raise ValueError("--%s must be at least 1" % name)


def shard_name(name: str, suffix: str, index: int, num_shards: int) -> str:
    """SeqIO-style shard file name, e.g. `train.tfrecord-00003-of-00064`."""
    return "%s%s-%05d-of-%05d" % (name, suffix, index, num_shards)


def write_file(output_dir: str, name: str, split_name: str, payloads: Iterable[bytes]) -> dict:
    """Writes `payloads` to `output_dir/name` through a unique temporary name, then renames.

    The payloads are joined and written at once (a shard is in memory anyway, sorted, when it
    is written). Returns the manifest's entry for the file: name, split, records, bytes, sha256.
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
    return {"name": name, "split": split_name, "records": len(payloads), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def rejected_shard_entry(record: records.Rejected, num_shards: int):
    """(shard, (sort key, JSON line)) of a rejected record; shards are sorted by (path, offset)."""
    sort_key = ("%s\0%020d" % (record.path, record.offset)).encode("utf-8", "surrogateescape")
    line = json.dumps(record.to_json_dict(), sort_keys=True, ensure_ascii=True) + "\n"
    return split.shard_of(hashlib.sha256(sort_key).digest(), num_shards), (sort_key, line.encode())


def residue_counts(text: bytes) -> numpy.ndarray:
    """How many times each byte value occurs in `text` ([256] integers)."""
    # One numpy pass over the residues (bytes.count would take one per letter), counting pairs
    # of bytes (uint16) in 65,536 bins: half the elements of counting bytes, and bincount's cost
    # is per element. A pair's value is first byte + 256 * second byte (little-endian).
    pairs = numpy.bincount(numpy.frombuffer(text, dtype="<u2", count=len(text) // 2),
                           minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if len(text) % 2:
        counts[text[-1]] += 1
    return counts


def split_statistics(sequences_by_split: dict[str, list[bytes]]) -> dict:
    """{split: [sequences]} -> per split that has records: records, residues, {length: count}
    and {residue letter: count} (what `manifest.MergeStatistics` adds up)."""
    stats = {}
    for split_name, sequences in sequences_by_split.items():
        if sequences:
            residues = residue_counts(b"".join(sequences))
            stats[split_name] = {
                "records": len(sequences),
                "residues": int(residues.sum()),
                "lengths": collections.Counter(map(len, sequences)),
                "composition": collections.Counter(
                    {chr(r): int(residues[r]) for r in records.ALPHABET if residues[r]}),
            }
    return stats


class _WriteSplitsFn(beam.DoFn):

    def __init__(self, output_dir: str, num_train_shards: int, num_validation_shards: int,
                 train_records: bool):
        self._output_dir = output_dir
        self._num_train_shards = num_train_shards
        self._num_validation_shards = num_validation_shards
        self._train_records = train_records

    def setup(self):
        self._counters = {name: worker.counter(name) for name in (split.TRAIN, split.VALIDATION)}
        self._encoder = tfrecords.RecordEncoder()

    def process(self, element):
        bucket, bucket_records = element
        train = [record for record in bucket_records if record.split == split.TRAIN]
        validation = [record for record in bucket_records if record.split != split.TRAIN]
        encode, frame = self._encoder.encode, tfrecords.frame
        for record in validation:
            yield beam.pvalue.TaggedOutput(VALIDATION_ENTRIES, (split.shard_of(
                record.shuffle_key, self._num_validation_shards),
                (record.shuffle_key, frame(encode(record)))))
            yield beam.pvalue.TaggedOutput(VALIDATION_CLUSTER_IDS, record.cluster_id)
        if self._train_records:
            for record in train:
                yield beam.pvalue.TaggedOutput(TRAIN_RECORDS, record)
        self._counters[split.TRAIN].inc(len(train))
        self._counters[split.VALIDATION].inc(len(validation))
        yield beam.pvalue.TaggedOutput(SEQUENCE_STATS, split_statistics({
            split.TRAIN: [record.sequence for record in train],
            split.VALIDATION: [record.sequence for record in validation]}))
        shard = sorted([(record.shuffle_key, frame(encode(record))) for record in train])
        yield write_file(self._output_dir, shard_name(
            split.TRAIN, TFRECORD_SUFFIX, bucket, self._num_train_shards),
            split.TRAIN, (framed for _, framed in shard))


class WriteSplits(beam.PTransform):
    """(bucket, [`Record`]) -> the bucket's train shard (its index is the bucket), the validation
    shards and the list of validation clusters.

    Outputs: every shard's manifest entry (main); per bucket, statistics of its records
    (`sequence_stats`); with `train_records`, the train `Record`s (`train_records`, for cluster
    shards). A shard's records are sorted by shuffle key, so its bytes do not depend on arrival
    order.
    """

    def __init__(self, output_dir: str, num_train_shards: int, num_validation_shards: int,
                 train_records: bool = False):
        super().__init__()
        self._output_dir = output_dir
        self._num_validation_shards = num_validation_shards
        self._fn = _WriteSplitsFn(output_dir, num_train_shards, num_validation_shards,
                                  train_records)

    def expand(self, buckets):
        out = self._output_dir
        written = buckets | "WriteTrain" >> beam.ParDo(self._fn).with_outputs(
            VALIDATION_ENTRIES, VALIDATION_CLUSTER_IDS, SEQUENCE_STATS, TRAIN_RECORDS,
            main=TRAIN_SHARDS)
        validation = written[VALIDATION_ENTRIES] | "WriteValidation" >> WriteShards(
            out, split.VALIDATION, TFRECORD_SUFFIX, self._num_validation_shards)
        clusters = (written[VALIDATION_CLUSTER_IDS]
                    | "DistinctValidationClusters" >> beam.Distinct()
                    | "ValidationClusterLines" >> beam.Map(
                        lambda c: (c.encode(), (c + "\n").encode()))
                    | "WriteValidationClusters" >> WriteList(out, VALIDATION_CLUSTERS_FILE))
        return {
            "outputs": (written[TRAIN_SHARDS], validation, clusters) | "Outputs" >> beam.Flatten(),
            SEQUENCE_STATS: written[SEQUENCE_STATS],
            TRAIN_RECORDS: written[TRAIN_RECORDS],
        }


class WriteRejected(beam.PTransform):
    """`Rejected`s -> `rejected.jsonl-*` (sorted by path and offset; their manifest entries)."""

    def __init__(self, output_dir: str, num_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._num_shards = num_shards

    def expand(self, rejected):
        return (rejected
                | "Shard" >> beam.Map(rejected_shard_entry, self._num_shards)
                | "Write" >> WriteShards(self._output_dir, records.REJECTED, JSONL_SUFFIX,
                                         self._num_shards))


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
            | "GroupByShard" >> shuffle.GroupByIndex(self._num_shards)
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
