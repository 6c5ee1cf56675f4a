"""Streaming readers of multiple sequence alignments (plain functions, no Beam).

Formats (see docs/profiles.md):
- Stockholm: many families per file (Pfam-A.seed, Pfam-A.full), each from `# STOCKHOLM 1.0` to
  `//`; `#=GF ID` / `#=GF AC` name the family, `#=GC RF` marks its match columns; rows may be
  split over several blocks (`read_families` joins them).
- A3M (HH-suite, `mmseqs result2msa`): one family per file, lowercase = insert, no `.` padding.
- Aligned FASTA: one family per file, all rows of one length.
Plain or compressed (by the file name, as Beam's FileSystems reads it), local or gs://.

`read_families` yields whole `Family` objects (one family in memory at a time): for building an
HMM, which needs every row. `read_rows` yields one `Row` at a time (a family never in memory):
for `--hmm` mode, where each row is mapped to the states of a published HMM on its own.

Errors of the file's structure (a missing `//`, rows outside a family, a truncated `.gz`)
raise `AlignmentFormatError` naming the file, the family and the line.
"""
import os
from typing import Iterator, NamedTuple, Optional

from pipelines import compression

STOCKHOLM = "stockholm"
A3M = "a3m"
FASTA = "fasta"
AUTO = "auto"
FORMATS = (AUTO, STOCKHOLM, A3M, FASTA)
STOCKHOLM_HEADER = b"# STOCKHOLM"
# Characters of an aligned row that are not residues: `-` a deletion (a gap in a match column),
# `.` a gap in an insert column, `~` HMMER's missing data (a fragment's unaligned flank).
GAPS = b"-.~"
_EXTENSIONS = {".sto": STOCKHOLM, ".sth": STOCKHOLM, ".stk": STOCKHOLM, ".stockholm": STOCKHOLM,
               ".a3m": A3M, ".fa": FASTA, ".fasta": FASTA, ".afa": FASTA, ".faa": FASTA,
               ".mfa": FASTA}
_COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".lzma", ".xz", ".deflate")


class AlignmentFormatError(ValueError):
    """A file whose structure is broken: the message names the file, family and line."""


class Family(NamedTuple):
    """One alignment: its rows in file order (names may repeat in A3M/FASTA files).

    `reference` is the `#=GC RF` line (Stockholm) or None; `index` the family's position in
    its file; `row_lines` the line number where each row starts (its offset in the rejected
    records); `key` (accession, else name) is what the job calls the family. `query_only`:
    only the first row is an input record (an MSA searched for it), the rest only shape the HMM.
    """

    path: str
    index: int
    name: str
    accession: str
    reference: Optional[bytes]
    row_names: list[str]
    rows: list[bytes]
    row_lines: list[int]
    format: str
    query_only: bool = False

    @property
    def key(self) -> str:
        return self.accession or self.name or unnamed_family(self.path, self.index)


class Row(NamedTuple):
    """One aligned row of a family, as `read_rows` streams them."""

    path: str
    family: str
    index: int
    line: int
    name: str
    aligned: bytes


def format_of(path: str, first_line: bytes = b"") -> str:
    """The format of a file, from its first line (Stockholm) or its name's extension."""
    if first_line.startswith(STOCKHOLM_HEADER):
        return STOCKHOLM
    name = path
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    extension = os.path.splitext(name)[1].lower()
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    raise AlignmentFormatError(
        "%s: cannot tell the alignment format (no '# STOCKHOLM' first line, extension %r not "
        "one of %s); pass --format" % (path, extension, ", ".join(sorted(_EXTENSIONS))))


def unnamed_family(path: str, index: int) -> str:
    """The name of a Stockholm family without #=GF ID or AC: the file's, with the index after
    the first (`globins4`, `globins4.1`, ...)."""
    return family_name_of(path) + (".%d" % index if index else "")


def family_name_of(path: str) -> str:
    """A one-family file's family name: its base name without extensions (`PF00041.a3m.gz`
    -> `PF00041`)."""
    return path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]


def iter_lines(path: str, chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its end) of a file, decompressed by its name.

    Decompressed by the UniRef job's reader (`compression.open_decompressed`), which fails on
    a truncated `.gz`/`.bz2` where Beam's own reader ends silently."""
    line_number, pending = 0, b""
    try:
        with compression.open_decompressed(path) as stream:
            while True:
                chunk = stream.read(chunk_bytes)
                if not chunk:
                    break
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    line_number += 1
                    yield line_number, line.rstrip(b"\r")
    except compression.DECOMPRESSION_ERRORS as error:
        raise AlignmentFormatError("%s: unreadable after line %d (%s: %s); a truncated or "
                                   "corrupt compressed file?" % (
                                       path, line_number, type(error).__name__, error)) from error
    if pending:
        yield line_number + 1, pending.rstrip(b"\r")


def _first_line(path: str) -> bytes:
    for _, line in iter_lines(path, chunk_bytes=1 << 12):
        return line
    return b""


class _StockholmParser:
    """Line events of a Stockholm file: calls `on_row` for each sequence line and `on_end` at
    each `//` with the family's header fields."""

    def __init__(self, path: str):
        self.path = path
        self.open = False
        self.index = -1
        self.name = self.accession = ""
        self.reference = None

    def where(self, line_number: int) -> str:
        family = self.accession or self.name or "#%d" % self.index
        return "%s: family %s, line %d" % (self.path, family, line_number)

    def events(self) -> Iterator[tuple]:
        """('row', line number, name, aligned) and ('end', line number) events."""
        for line_number, line in iter_lines(self.path):
            if line.startswith(STOCKHOLM_HEADER):
                if self.open:
                    raise AlignmentFormatError("%s: '# STOCKHOLM' before the '//' that ends the "
                                               "family" % self.where(line_number))
                self.open, self.index = True, self.index + 1
                self.name = self.accession = ""
                self.reference = None
                continue
            stripped = line.strip()
            if not stripped:
                continue
            if not self.open:
                raise AlignmentFormatError("%s: line %d: %r outside a family (no '# STOCKHOLM' "
                                           "header)" % (self.path, line_number, stripped[:40]))
            if stripped == b"//":
                yield "end", line_number
                self.open = False
            elif line.startswith(b"#=GF"):
                parts = line.split(None, 2)
                value = parts[2].strip().decode("utf-8", "replace") if len(parts) > 2 else ""
                if parts[1] == b"ID":
                    self.name = value
                elif parts[1] == b"AC":
                    self.accession = value
            elif line.startswith(b"#=GC"):
                parts = line.split()
                if len(parts) == 3 and parts[1] == b"RF":
                    self.reference = (self.reference or b"") + parts[2]
            elif line.startswith(b"#"):
                continue
            else:
                parts = line.split()
                if len(parts) != 2:
                    raise AlignmentFormatError("%s: a sequence line must be '<name> <aligned "
                                               "row>', got %d fields" % (
                                                   self.where(line_number), len(parts)))
                yield "row", line_number, parts[0].decode("utf-8", "replace"), parts[1]
        if self.open:
            raise AlignmentFormatError("%s: end of file without the '//' that ends the family"
                                       % self.where(line_number if self.index >= 0 else 0))


def fasta_rows(path: str) -> Iterator[tuple[int, str, bytes]]:
    """(line number, name, aligned row) of an aligned FASTA or A3M file."""
    name, parts, start = None, [], 0
    for line_number, line in iter_lines(path):
        if line.startswith(b">"):
            if name is not None:
                yield start, name, b"".join(parts)
            fields = line[1:].split(None, 1)
            name = fields[0].decode("utf-8", "replace") if fields else ""
            parts, start = [], line_number
        elif line.strip():
            if name is None:
                raise AlignmentFormatError("%s: line %d: sequence before the first '>' header"
                                           % (path, line_number))
            # A3M files of HH-suite may start with '#' comment lines.
            parts.append(line.strip())
    if name is not None:
        yield start, name, b"".join(parts)


def read_families(path: str, alignment_format: str = AUTO) -> Iterator[Family]:
    """The families of one file, in file order, each whole (see the module docstring)."""
    alignment_format = (format_of(path, _first_line(path)) if alignment_format == AUTO
                        else alignment_format)
    if alignment_format == STOCKHOLM:
        parser = _StockholmParser(path)
        rows: dict[str, list[bytes]] = {}
        lines: dict[str, int] = {}
        for event in parser.events():
            if event[0] == "row":
                rows.setdefault(event[2], []).append(event[3])
                lines.setdefault(event[2], event[1])
            else:
                yield Family(path, parser.index, parser.name, parser.accession, parser.reference,
                             list(rows), [b"".join(parts) for parts in rows.values()],
                             list(lines.values()), STOCKHOLM)
                rows, lines = {}, {}
        return
    names, rows, lines = [], [], []
    for line_number, name, aligned in fasta_rows(path):
        names.append(name)
        rows.append(aligned)
        lines.append(line_number)
    yield Family(path, 0, family_name_of(path), "", None, names, rows, lines, alignment_format)


def read_rows(path: str, alignment_format: str = AUTO) -> Iterator[Row]:
    """The rows of one file, one at a time (see the module docstring).

    A Stockholm family is named by the `#=GF AC` (else `ID`) lines before its first row (in
    Pfam's files they come first), and must not be split into blocks (Pfam's are not; this
    raises AlignmentFormatError), since a streamed row cannot wait for the rest of the file. Row names are kept per family to detect
    blocks (a few MB for Pfam's largest family).
    """
    alignment_format = (format_of(path, _first_line(path)) if alignment_format == AUTO
                        else alignment_format)
    if alignment_format != STOCKHOLM:
        family = family_name_of(path)
        for index, (line_number, name, aligned) in enumerate(fasta_rows(path)):
            yield Row(path, family, index, line_number, name, aligned)
        return
    parser = _StockholmParser(path)
    seen: set[str] = set()
    index = 0
    for event in parser.events():
        if event[0] == "end":
            seen, index = set(), 0
            continue
        _, line_number, name, aligned = event
        if index == 0:
            family = parser.accession or parser.name or unnamed_family(path, parser.index)
        if name in seen:
            raise AlignmentFormatError("%s: row %s appears twice (an alignment in several "
                                       "blocks cannot be streamed; read it without --hmm)" % (
                                           parser.where(line_number), name))
        seen.add(name)
        yield Row(path, family, index, line_number, name, aligned)
        index += 1


def a3m_to_aligned(rows: list[bytes]) -> tuple[list[bytes], bytes]:
    """A3M rows -> (equal-length rows with `.` padding in insert columns, RF line).

    A3M rows agree on their match columns (uppercase and `-`) but not on their length: each
    row's lowercase inserts are padded to the longest insert at that place. Raises ValueError
    when rows have different numbers of match columns (an inconsistent A3M).
    """
    split_rows = []
    for row in rows:
        segments, current, matches = [], [], []
        for byte in row:
            if 97 <= byte <= 122:  # lowercase: an insert.
                current.append(byte)
            else:
                segments.append(bytes(current))
                current = []
                matches.append(byte)
        segments.append(bytes(current))
        split_rows.append((segments, bytes(matches)))
    match_counts = {len(m) for _, m in split_rows}
    if len(match_counts) > 1:
        raise ValueError("rows have %s match columns (uppercase or '-')" % sorted(match_counts))
    width = [max(len(segments[i]) for segments, _ in split_rows)
             for i in range(len(split_rows[0][0]))] if split_rows else []
    aligned = []
    for segments, matches in split_rows:
        parts = []
        for i, segment in enumerate(segments):
            parts.append(segment + b"." * (width[i] - len(segment)))
            if i < len(matches):
                parts.append(matches[i:i + 1])
        aligned.append(b"".join(parts))
    reference = b"".join(b"." * w + b"x" for w in width[:-1]) + b"." * (width[-1] if width else 0)
    return aligned, reference
