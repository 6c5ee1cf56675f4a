"""Reading FASTA: a record-aware, splittable Beam source, and a plain reader of one file.

Public API (used outside the job too):
  - `read_fasta(path) -> Iterator[RawRecord]`: every record of one file, plain or compressed,
    local or gs://, without Beam's pipeline machinery.
  - `FastaSource(pattern)`: the Beam source (batches of `RawRecord`s); `ReadFasta(patterns)` the
    transform that reads several patterns.

Positions are byte offsets of the uncompressed stream. A record's position is the offset of the
`>` that starts its header line, and a split `[start, stop)` owns exactly the records whose
header starts inside it: the reader seeks to `start - 1`, skips to the first `>` that follows a
line end, and claims each header offset from the range tracker before emitting the record. A
record may therefore extend past `stop`; the next split skips it. Sequence lines before the first
header of a file belong to the split that starts at 0 and are emitted as a record with no header
(`records.check_record` rejects it as `sequence_before_header`). A file with no header at all is
not FASTA: reading it fails, naming it (`NoFastaRecordError`).

Compressed files (`.gz`, `.bz2`, ...) are not splittable: Beam's `FileBasedSource` gives them an
unsplittable range tracker whose stop is infinity, so one worker reads each such file, claiming
uncompressed offsets, as Beam's own text source does; `ReadFasta` can spread their records over
the workers afterwards. A truncated or corrupt compressed file fails the job, naming the file and
the last record read (`compression.TruncatedInputError`).
"""
import functools
from typing import Iterator, List, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io import filebasedsource
from apache_beam.io import filesystems
from apache_beam.io import iobase
from apache_beam.io import range_trackers

from pipelines import compression
from pipelines import worker

_CHUNK_BYTES = 1 << 20
# A batch of records (one Beam element of `FastaSource`) is closed at this many records or at
# this many bytes of record text, whichever comes first.
DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 4 << 20


class RawRecord(NamedTuple):
    """One FASTA record as read from a file, before any decoding or validation.

    `offset` is the (uncompressed) byte offset of the record's `>` in `path`. `header` is the
    header line without `>` and line end (trailing `\\r`s removed), or None for sequence lines
    that come before any header; `body` holds the raw sequence lines, line ends included.
    """

    path: str
    offset: int
    header: Optional[bytes]
    body: bytes


class RawRecordCoder(worker.FieldsCoder):
    """Encodes a `RawRecord` as the tuple of its fields (primitives only: no pickled class)."""

    record_type = RawRecord

    def estimate_size(self, value):
        # The record's text, and ~60 bytes of path and offset.
        return len(value.body) + len(value.header or b"") + 60


beam.coders.registry.register_coder(RawRecord, RawRecordCoder)
# `RawRecord._make` without its Python frame (the class's constructor is a Python function too).
_raw_record_from_fields = functools.partial(tuple.__new__, RawRecord)


class NoFastaRecordError(ValueError):
    """An input file holds no FASTA record (no line starts with `>`)."""


class _Buffer:
    """A window over a file: `data` holds the bytes starting at absolute offset `start`."""

    def __init__(self, file, start: int, data: bytes):
        # `read1`: what the stream has decompressed so far, so that the records before a
        # truncation are read (and named in its error) before the stream raises.
        self.read = getattr(file, "read1", file.read)
        self.start = start
        self.data = data
        self.at_eof = False

    def fill(self) -> bool:
        """Appends the next chunk of the file; returns False at end of file."""
        chunk = self.read(_CHUNK_BYTES)
        if not chunk:
            self.at_eof = True
            return False
        self.data += chunk
        return True

    def drop_before(self, offset: int):
        """Forgets the bytes before absolute `offset` once they are a chunk's worth.

        Compacting only then keeps the copying linear in the file size.
        """
        if offset - self.start >= _CHUNK_BYTES:
            self.data = self.data[offset - self.start:]
            self.start = offset

    def find_header(self, offset: int) -> Optional[int]:
        """Absolute offset of the first `>` that follows a line end at or after `offset - 1`.

        Reads further into the file as needed; returns None when no header follows.
        """
        search_from = offset - self.start
        while True:
            found = _next_header(self.data, search_from)
            if found >= 0:
                return self.start + found
            search_from = max(search_from, len(self.data))
            if not self.fill():
                return None


def cut_records(data: bytes, begin: int, base: int, path: str, at_eof: bool, max_records: int,
                max_bytes: int) -> tuple[list[RawRecord], int]:
    """Cuts the complete records of `data` whose `>` is at index `begin` or after it.

    `data[begin]` is a header's `>` (or `begin == len(data)`); byte 0 of `data` is at absolute
    offset `base` of the file. A record runs to the next `>` that follows a line end, or to the
    end of `data` when `at_eof`; otherwise the last record of `data` is incomplete and is not
    returned. Stops after `max_records` records, or once their bodies reach `max_bytes` bytes.
    Returns the records and the index at which to go on (the `>` of the first record not
    returned, or `len(data)`).
    """
    records, size, body_bytes, start = [], len(data), 0, begin
    while start < size and len(records) < max_records and body_bytes < max_bytes:
        end = _next_header(data, start + 1)
        if end < 0:
            if not at_eof:
                break
            end = size
        line_end = data.find(b"\n", start, end)
        if line_end < 0:
            header, body = data[start + 1:end], b""
        else:
            header, body = data[start + 1:line_end], data[line_end + 1:end]
        records.append(_raw_record_from_fields((path, base + start, header.rstrip(b"\r"), body)))
        body_bytes += len(body)
        start = end
    return records, start


def _next_header(data: bytes, start: int) -> int:
    """Index of the first `>` at or after `start` (at least 1) that follows a line end, or -1."""
    # A one-byte search (memchr) and a look back: `>` hardly occurs but at a header's start,
    # and searching for the two bytes `\n>` took 4x as long.
    found = data.find(b">", start)
    while found >= 0 and data[found - 1] != 0x0A:
        found = data.find(b">", found + 1)
    return found


def read_batches(path: str, offset_range_tracker, batch_records: int,
                 batch_bytes: int) -> Iterator[list[RawRecord]]:
    """Yields lists of the records whose header starts inside the tracker's range. A list is
    closed at `batch_records` records, or once its sequence lines reach `batch_bytes` bytes.
    Every record is claimed before it joins a list; when a claim fails (the range ends there,
    perhaps moved by a dynamic split), the claimed records are emitted and reading stops.
    """
    start = offset_range_tracker.start_position()
    next_header = [start]

    def split_points_unclaimed(stop_position):
        if stop_position <= next_header[0]:
            return 0
        return iobase.RangeTracker.SPLIT_POINTS_UNKNOWN

    offset_range_tracker.set_split_points_unclaimed_callback(split_points_unclaimed)
    last_read = None
    try:
        with compression.open_decompressed(path) as file:
            if start > 0:
                file.seek(start - 1)
                buffer = _Buffer(file, start - 1, b"")
            else:
                # A virtual line end before the file makes a `>` at offset 0 a header start.
                buffer = _Buffer(file, -1, b"\n")
            header = buffer.find_header(start)
            if start == 0:
                if header is None:
                    raise NoFastaRecordError(
                        "%s holds no FASTA record: no line starts with '>'" % path)
                orphan = buffer.data[1:header - buffer.start]
                if orphan.strip():
                    if not offset_range_tracker.try_claim(0):
                        return
                    yield [RawRecord(path, 0, None, orphan)]
            while header is not None:
                batch, size = [], 0
                while header is not None and len(batch) < batch_records and size < batch_bytes:
                    buffer.drop_before(header)
                    records, stop = cut_records(
                        buffer.data, header - buffer.start, buffer.start, path,
                        buffer.at_eof, batch_records - len(batch), batch_bytes - size)
                    for record in records:
                        next_header[0] = record.offset
                        if not offset_range_tracker.try_claim(record.offset):
                            header = None
                            break
                        batch.append(record)
                        size += len(record.body)
                    else:
                        if records:
                            last_read = records[-1]
                        header = buffer.start + stop
                        if stop == len(buffer.data) and buffer.at_eof:
                            header = None
                        elif not records:
                            # No record ends inside the buffer yet: read on (once the file has
                            # ended, the next cut takes the last record up to its end).
                            buffer.fill()
                if batch:
                    yield batch
    except compression.DECOMPRESSION_ERRORS as error:
        if isinstance(error, NoFastaRecordError):
            raise
        raise compression.TruncatedInputError(
            "%s is truncated or corrupt (%s); last complete record read: %s" % (
                path, error, "none" if last_read is None else "'%s' at offset %d" % (
                    last_read.header[:80].decode("utf-8", "backslashreplace"),
                    last_read.offset))) from error


def read_fasta(path: str) -> Iterator[RawRecord]:
    """Every record of one FASTA file (plain or compressed, local or gs://), in file order.

    Raises NoFastaRecordError when the file holds no record, and
    `compression.TruncatedInputError` when a compressed file is truncated or corrupt.
    """
    tracker = range_trackers.OffsetRangeTracker(0, range_trackers.OffsetRangeTracker.OFFSET_INFINITY)
    for batch in read_batches(path, tracker, DEFAULT_BATCH_RECORDS, DEFAULT_BATCH_BYTES):
        yield from batch


class FastaSource(filebasedsource.FileBasedSource):
    """Reads the records of the files matching one pattern, in lists (batches) of `RawRecord`s.

    The job moves records through Beam a batch at a time: Beam's per-element cost (and the
    shuffle's per-element encoding) is paid once per batch instead of once per record, and the
    range tracker is asked once per batch (see `read_batches`).
    """

    def __init__(self, file_pattern: str, batch_records: int = DEFAULT_BATCH_RECORDS,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, validate: bool = True):
        """Args: `file_pattern` (a path or glob, local or gs://); a batch holds at most
        `batch_records` records and is closed once its record text reaches `batch_bytes`;
        `validate`: fail at construction when the pattern matches no file."""
        super().__init__(file_pattern, validate=validate)
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes

    def read_records(self, file_name: str, offset_range_tracker) -> Iterator[list[RawRecord]]:
        """Yields lists of the records whose header starts inside the range."""
        return read_batches(file_name, offset_range_tracker, self._batch_records,
                            self._batch_bytes)


class ReadFasta(beam.PTransform):
    """Reads batches of `RawRecord`s from one or more file patterns.

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
            read = pbegin | "Read%d" % i >> beam.io.Read(FastaSource(pattern)).with_output_types(
                List[RawRecord])
            matched = filesystems.FileSystems.match([pattern])[0].metadata_list
            if self._spread_compressed and any(compression.is_compressed(m.path)
                                               for m in matched):
                read = read | "Spread%d" % i >> beam.Reshuffle()
            reads.append(read)
        return reads | "Flatten" >> beam.Flatten()

