"""A record-aware, splittable Beam source for FASTA files (plain or compressed, local or gs://).

Positions are byte offsets of the uncompressed stream. A record's position is the offset of the
`>` that starts its header line, and a split `[start, stop)` owns exactly the records whose
header starts inside it: the reader seeks to `start - 1`, skips to the first `>` that follows a
line end, and claims each header offset from the range tracker before emitting the record. A
record may therefore extend past `stop`; the next split skips it. Sequence lines before the first
header of a file belong to the split that starts at 0 and are emitted as a record with no header
(`validation.check_record` rejects it as `sequence_before_header`). Records are cut from the
read buffer by the compiled `scan_records` (`pipelines/_fasta_scan.c`; in Python the cutting was
a tenth of the job's per-record time); the offsets are still claimed here one record at a time.

Compressed files (`.gz`, `.bz2`, ...) are not splittable: Beam's `FileBasedSource` gives them an
unsplittable range tracker whose stop is infinity, so one worker reads each such file, claiming
uncompressed offsets, as Beam's own text source does. `.gz` and `.bz2` are decompressed here
(`_DecompressedStream`) rather than by Beam's `CompressedFile`, because the latter ends a truncated
stream silently (Beam 2.77), and a truncated download must fail the job, naming the file and the
last record read. The job re-distributes the records of a
large `.gz` with a `Reshuffle` right after reading (see `transforms.ReadFasta`).
"""
import bz2
import contextlib
import sys
import zlib
from typing import Iterator, Optional

from apache_beam.io import filebasedsource
from apache_beam.io import filesystem
from apache_beam.io import filesystems
from apache_beam.io import iobase

from pipelines import fasta

try:
    from pipelines._fasta_scan import scan_records
except ImportError as error:
    raise ImportError(
        "pipelines._fasta_scan (the compiled record scanner, pipelines/_fasta_scan.c) is not "
        "built or does not match this Python: run `make setup`, or "
        "`python3 setup.py build_ext --inplace` in the repository root.") from error

_CHUNK_BYTES = 1 << 20
# A batch of records (one Beam element of `FastaBatchSource`) is closed at this many records or
# at this many bytes of record text, whichever comes first.
DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 4 << 20
_HEADER_START = b"\n>"


class TruncatedInputError(IOError):
    """A compressed input ends before its end-of-stream marker, or is otherwise corrupt."""


class _DecompressedStream:
    """Reads the decompressed bytes of a gzip or bzip2 file, members concatenated.

    Raises EOFError when the file ends inside a member and ValueError when it is corrupt.
    """

    def __init__(self, raw, new_decompressor):
        self._raw = raw
        self._new_decompressor = new_decompressor
        self._decompressor = new_decompressor()
        self._member_started = False

    def read(self, size: int) -> bytes:
        """Returns up to about `size` decompressed bytes; b"" at the end of the file."""
        while True:
            if self._decompressor.eof:
                compressed = self._decompressor.unused_data or self._raw.read(size)
                self._decompressor = self._new_decompressor()
                self._member_started = False
            else:
                compressed = self._raw.read(size)
            if not compressed:
                if self._member_started:
                    raise EOFError("compressed stream ends before its end-of-stream marker")
                return b""
            self._member_started = True
            try:
                data = self._decompressor.decompress(compressed)
            except (zlib.error, OSError) as error:
                raise ValueError("corrupt compressed data: %s" % error) from error
            if data:
                return data


class _Buffer:
    """A window over a file: `data` holds the bytes starting at absolute offset `start`."""

    def __init__(self, file, start: int, data: bytes):
        self.file = file
        self.start = start
        self.data = data
        self.at_eof = False

    def fill(self) -> bool:
        """Appends the next chunk of the file; returns False at end of file."""
        chunk = self.file.read(_CHUNK_BYTES)
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

    def slice(self, begin: int, end: int) -> bytes:
        """The bytes between absolute offsets `begin` and `end`."""
        return self.data[begin - self.start:end - self.start]

    def find_header(self, offset: int) -> Optional[int]:
        """Absolute offset of the first `>` that follows a line end at or after `offset - 1`.

        Reads further into the file as needed; returns None when no header follows.
        """
        search_from = offset - 1 - self.start
        while True:
            found = self.data.find(_HEADER_START, search_from)
            if found >= 0:
                return self.start + found + 1
            search_from = max(search_from, len(self.data) - 1)
            if not self.fill():
                return None


@contextlib.contextmanager
def open_decompressed(file_name: str):
    """Opens a file for reading its uncompressed bytes, detecting the compression by its name.

    `.gz` and `.bz2` streams raise EOFError when truncated and ValueError when corrupt (see the
    module docstring); other compressions go through Beam's `CompressedFile`.
    """
    decompressors = {
        filesystem.CompressionTypes.GZIP: lambda: zlib.decompressobj(wbits=31),
        filesystem.CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    }
    compression = filesystem.CompressionTypes.detect_compression_type(file_name)
    if compression not in decompressors:
        with filesystems.FileSystems.open(file_name, compression_type=compression) as file:
            yield file
        return
    with filesystems.FileSystems.open(
            file_name, compression_type=filesystem.CompressionTypes.UNCOMPRESSED) as raw:
        yield _DecompressedStream(raw, decompressors[compression])


class FastaSource(filebasedsource.FileBasedSource):
    """Reads `fasta.RawRecord`s from the files matching one file pattern."""

    def __init__(self, file_pattern: str, min_bundle_size: int = 0, validate: bool = True):
        """Args: `file_pattern` (a path or glob, local or gs://); `min_bundle_size` in bytes;
        `validate`: fail at construction when the pattern matches no file."""
        super().__init__(file_pattern, min_bundle_size=min_bundle_size, validate=validate)

    def read_records(self, file_name: str, offset_range_tracker) -> Iterator[fasta.RawRecord]:
        """Yields the records whose header starts inside the tracker's range."""
        for batch in read_batches(file_name, offset_range_tracker, 1, sys.maxsize):
            yield fasta.RawRecord._make(batch[0])


def read_batches(file_name: str, offset_range_tracker, batch_records: int,
                 batch_bytes: int) -> Iterator[list[tuple]]:
    """Yields lists of the records (as plain (path, offset, header, body) tuples) whose header
    starts inside the tracker's range. A list is closed at `batch_records` records, or once its
    sequence lines reach `batch_bytes` bytes. Every record is claimed before it joins a list;
    when a claim fails (the range ends there, perhaps moved by a dynamic split), the claimed
    records are emitted and reading stops.
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
        with open_decompressed(file_name) as file:
            if start > 0:
                file.seek(start - 1)
                buffer = _Buffer(file, start - 1, b"")
            else:
                # A virtual line end before the file makes a `>` at offset 0 a header start.
                buffer = _Buffer(file, -1, b"\n")
            header = buffer.find_header(start)
            if start == 0:
                orphan = _orphan_lines(buffer, header)
                if orphan is not None:
                    if not offset_range_tracker.try_claim(0):
                        return
                    yield [(file_name, 0, None, orphan)]
            while header is not None:
                batch, size = [], 0
                while header is not None and len(batch) < batch_records and size < batch_bytes:
                    buffer.drop_before(header)
                    records, stop = scan_records(
                        buffer.data, header - buffer.start, buffer.start, file_name,
                        buffer.at_eof, batch_records - len(batch), batch_bytes - size)
                    for record in records:
                        next_header[0] = record[1]
                        if not offset_range_tracker.try_claim(record[1]):
                            header = None
                            break
                        batch.append(record)
                        size += len(record[3])
                    else:
                        if records:
                            last_read = records[-1]
                        header = buffer.start + stop
                        if stop == len(buffer.data) and buffer.at_eof:
                            header = None
                        elif not records:
                            # No record ends inside the buffer yet: read on (once the file has
                            # ended, the next scan takes the last record up to its end).
                            buffer.fill()
                if batch:
                    yield batch
    except (EOFError, ValueError) as error:
        raise TruncatedInputError(
            "%s is truncated or corrupt (%s); last complete record read: %s" % (
                file_name, error, "none" if last_read is None else "'%s' at offset %d" % (
                    last_read[2][:80].decode("utf-8", "backslashreplace"),
                    last_read[1]))) from error


def _orphan_lines(buffer: _Buffer, first_header: Optional[int]) -> Optional[bytes]:
    """The bytes before the first header of a file, or None when they are only blank lines."""
    end = first_header if first_header is not None else buffer.start + len(buffer.data)
    orphan = buffer.slice(0, end)
    return orphan if orphan.strip() else None


class FastaBatchSource(FastaSource):
    """Reads the records of `FastaSource` in lists (batches) of (path, offset, header, body) tuples.

    The job moves records through Beam a batch at a time: Beam's per-element cost (and the
    shuffle's per-element encoding) is paid once per batch instead of once per record, and the
    range tracker is asked once per batch (see `read_batches`).
    """

    def __init__(self, file_pattern: str, batch_records: int = DEFAULT_BATCH_RECORDS,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, validate: bool = True):
        """Args: `file_pattern` (a path or glob); a batch holds at most `batch_records` records
        and is closed once its record text reaches `batch_bytes`; `validate` as `FastaSource`."""
        super().__init__(file_pattern, validate=validate)
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes

    def read_records(self, file_name: str, offset_range_tracker) -> Iterator[list[tuple]]:
        """Yields lists of the records (as plain tuples) whose header starts inside the range."""
        return read_batches(file_name, offset_range_tracker, self._batch_records,
                            self._batch_bytes)
