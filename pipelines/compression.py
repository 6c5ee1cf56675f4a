"""Reading the uncompressed bytes of an input file (plain, `.gz`, `.bz2`, ...; local or gs://).

`.gz` and `.bz2` are read through Python's `gzip` and `bz2` file objects rather than Beam's
`CompressedFile`, because the latter ends a truncated stream silently (Beam 2.77), and a truncated
download must fail the job, naming the file and the last record read. Both read concatenated
members, as `gzip`/`bzip2` write them, and raise EOFError on a stream that ends early.
"""
import bz2
import contextlib
import gzip
import zlib

from apache_beam.io import filesystem
from apache_beam.io import filesystems


class TruncatedInputError(IOError):
    """A compressed input ends before its end-of-stream marker, or is otherwise corrupt."""


# What the decompressing readers raise on a truncated or corrupt stream.
DECOMPRESSION_ERRORS = (EOFError, zlib.error, OSError, ValueError)
_READERS = {
    filesystem.CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    filesystem.CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, "rb"),
}


def is_compressed(path: str) -> bool:
    """Whether `path` is compressed, by its name (as the readers decide)."""
    return (filesystem.CompressionTypes.detect_compression_type(path)
            != filesystem.CompressionTypes.UNCOMPRESSED)


@contextlib.contextmanager
def open_decompressed(path: str):
    """Opens a file for reading its uncompressed bytes, detecting the compression by its name.

    `.gz` and `.bz2` streams raise EOFError when truncated and OSError or zlib.error when corrupt
    (see the module docstring); other compressions go through Beam's `CompressedFile`.
    """
    compression = filesystem.CompressionTypes.detect_compression_type(path)
    if compression not in _READERS:
        with filesystems.FileSystems.open(path, compression_type=compression) as file:
            yield file
        return
    with filesystems.FileSystems.open(
            path, compression_type=filesystem.CompressionTypes.UNCOMPRESSED) as raw:
        with _READERS[compression](raw) as file:
            yield file
