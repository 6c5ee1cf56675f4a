"""How records reach their buckets: through Beam's shuffle, or through files (`--shuffle=files`).

`GroupByIndex` groups (index, value) pairs so that every index comes out, empty or not.
`InlineBuffer` and `SpillBuffer` collect a stage's output per partition and hand it on as chunks:
inline (the chunk holds the items; Beam's shuffle carries them) or spilled to a file (the chunk
holds only where they lie), for runners that hold a shuffle in memory.

The embedded DirectRunner (FnApiRunner) keeps the data of every GroupByKey in memory until the
stage that reads it has finished, so a job whose records all cross a GroupByKey needs memory in
proportion to its input (about 3 kB per record here). With a file shuffle, the records that the
job groups by bucket are written to spill files next to the output, and only the address of each
part (file, offset, size) goes through Beam's GroupByKey: a reading worker holds one flush buffer,
a bucket's worker holds one bucket, whatever the size of the input.

Every chunk of a shuffle is a `(kind, payload)` pair, so the stages that read chunks do not care
which shuffle brought them: `INLINE` chunks carry their items, `SPILLED` chunks a `Section`.

On Dataflow the shuffle service already keeps memory flat, and a file shuffle would read
(spill files x buckets) small ranges of GCS objects, so `--shuffle=beam` is the default there.

Spill files are named `.tmp-spill-<uuid>` in the output directory: a killed run's are removed with
its other temporary files by the next run; a finished run deletes them before writing its manifest.
Items are plain tuples of primitives (a `Record` as the tuple of its fields: what its coder
does). Spill files hold `marshal`ed lists of them, written and read by the same job (so the same
Python version).
"""
import collections
import marshal
import uuid
from typing import Hashable, Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# A temporary name (`writers.TEMP_PREFIX`): the start-up clean-up removes a killed run's.
SPILL_PREFIX = ".tmp-spill-"
INLINE = 0
SPILLED = 1
# Buffered bytes (sequences plus a per-item allowance) at which a `SpillBuffer` writes a file: the
# reading worker's memory for the shuffle, about 3x this in Python objects.
DEFAULT_FLUSH_BYTES = 32 << 20
_ITEM_OVERHEAD_BYTES = 200
# Version 2 has no back-references: version 4 looks up every object that is referenced more than
# once (ids, hashes: most fields here) in a table, which made writing twice as slow for 20 % less
# data.
_MARSHAL_VERSION = 2


class Section(NamedTuple):
    """Where one partition's items of one flush lie: `size` bytes at `start` of `path`."""

    path: str
    start: int
    size: int


class InlineBuffer:
    """Buffers items (plain tuples) per partition; `flush` returns them as `INLINE` chunks
    (`--shuffle=beam`).

    `full` as soon as it holds an item: the caller flushes after each input batch.
    """

    def __init__(self):
        self._partitions = collections.defaultdict(list)

    def add(self, partition: Hashable, items: list, unused_size: int) -> None:
        """Buffers `items` for `partition`."""
        self._partitions[partition] += items

    @property
    def full(self) -> bool:
        return bool(self._partitions)

    def flush(self) -> list[tuple[Hashable, tuple]]:
        """Returns (partition, (INLINE, [items])) for each partition, and forgets them."""
        chunks = [(partition, (INLINE, items)) for partition, items in self._partitions.items()]
        self._partitions = collections.defaultdict(list)
        return chunks


class SpillBuffer:
    """Buffers items (plain tuples) per partition; `flush` writes them to one new spill file
    (`--shuffle=files`).

    The file holds one `marshal`ed list of items per partition, partitions in sorted order. The
    same interface as `InlineBuffer`.
    """

    def __init__(self, directory: str, flush_bytes: int = DEFAULT_FLUSH_BYTES):
        self._directory = directory
        self._flush_bytes = flush_bytes
        self._partitions = collections.defaultdict(list)
        self._buffered = 0

    def add(self, partition: Hashable, items: list, size: int) -> None:
        """Buffers `items` for `partition`; `size` is their payloads' bytes (for the flush
        limit)."""
        self._partitions[partition] += items
        self._buffered += size + _ITEM_OVERHEAD_BYTES * len(items)

    @property
    def full(self) -> bool:
        return self._buffered >= self._flush_bytes

    def flush(self) -> list[tuple[Hashable, tuple]]:
        """Writes the buffered items; returns (partition, (SPILLED, `Section`)) for each partition."""
        if not self._partitions:
            return []
        path = FileSystems.join(self._directory, SPILL_PREFIX + uuid.uuid4().hex)
        chunks, offset = [], 0
        with FileSystems.create(path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            for partition in sorted(self._partitions):
                blob = marshal.dumps(self._partitions[partition], _MARSHAL_VERSION)
                out.write(blob)
                chunks.append((partition, (SPILLED, tuple(Section(path, offset, len(blob))))))
                offset += len(blob)
        self._partitions.clear()
        self._buffered = 0
        return chunks


def items_of(chunks: Iterable[tuple], make=None) -> Iterable:
    """The items of these chunks, reading spilled ones from their files; `make` (e.g.
    `records.record_from_fields`) turns an item's tuple back into its type."""
    for kind, payload in chunks:
        if kind == INLINE:
            yield from (map(make, payload) if make else payload)
            continue
        section = Section._make(payload)
        with FileSystems.open(section.path,
                              compression_type=CompressionTypes.UNCOMPRESSED) as spilled:
            spilled.seek(section.start)
            blob = spilled.read(section.size)
        if len(blob) != section.size:
            raise IOError("spill file %s ends at %d, before its section [%d, %d)" % (
                section.path, section.start + len(blob), section.start,
                section.start + section.size))
        items = marshal.loads(blob)
        yield from (map(make, items) if make else items)


def delete_spill_files(directory: str) -> int:
    """Deletes the spill files in `directory`; returns how many there were."""
    found = [m.path for result in FileSystems.match(
        [FileSystems.join(directory, SPILL_PREFIX + "*")]) for m in result.metadata_list]
    if found:
        FileSystems.delete(found)
    return len(found)


class DeleteSpillFiles(beam.PTransform):
    """Deletes the spill files of `directory` once the input PCollection is complete (the
    input is the output of the last stage that reads them) -> the number deleted (one element).
    """

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, done):
        directory = self._directory
        return (done.pipeline
                | "Trigger" >> beam.Create([None])
                | "Delete" >> beam.Map(lambda _, unused_done: delete_spill_files(directory),
                                       beam.pvalue.AsList(done)))


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
