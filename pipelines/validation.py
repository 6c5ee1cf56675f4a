"""Normalization and validation of FASTA records (plain functions, no Beam).

A raw record becomes either a `Protein` (normalized, valid) or a `Rejected` with a reason code.
Every reason code is listed in `REASONS`; the job counts rejections per reason.
"""
import hashlib
from typing import NamedTuple, Optional, Union

from pipelines import fasta

try:
    from pipelines._fasta_scan import clean_sequence
except ImportError as error:
    raise ImportError(
        "pipelines._fasta_scan (the compiled record scanner and sequence cleaner, "
        "pipelines/_fasta_scan.c) is not built or does not match this Python: run `make setup`, "
        "or `python3 setup.py build_ext --inplace` in the repository root.") from error

CANONICAL = b"ACDEFGHIKLMNPQRSTVWY"
NON_CANONICAL = b"BZUO"
ALPHABET = CANONICAL + b"X" + NON_CANONICAL
WHITESPACE = b" \t\r\n\v\f"

# What to do with B, Z, U, O (X is always kept): keep them, rewrite them to X, or reject the record.
KEEP = "keep"
MAP_TO_X = "map_to_x"
DROP = "drop"
NON_CANONICAL_POLICIES = (KEEP, MAP_TO_X, DROP)
# `clean_sequence` takes the policy as its index in NON_CANONICAL_POLICIES.
_POLICY_CODES = {policy: code for code, policy in enumerate(NON_CANONICAL_POLICIES)}
DEFAULT_MIN_LENGTH = 1
# Titin, the longest characterized protein, has 34,350 residues.
DEFAULT_MAX_LENGTH = 40_000

SEQUENCE_BEFORE_HEADER = "sequence_before_header"
MISSING_ID = "missing_id"
INVALID_ENCODING = "invalid_encoding"
EMPTY_SEQUENCE = "empty_sequence"
INTERNAL_STOP = "internal_stop"
INVALID_CHARACTER = "invalid_character"
NON_CANONICAL_REASON = "non_canonical"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
DUPLICATE_ID = "duplicate_id"
# Set by the membership join (pipelines/membership.py) and decontamination (pipelines/decontaminate.py).
NO_CLUSTER = "no_cluster"
BENCHMARK_OVERLAP = "benchmark_overlap"
VALIDATION_OVERLAP = "validation_overlap"
REASONS = (
    SEQUENCE_BEFORE_HEADER, MISSING_ID, INVALID_ENCODING, EMPTY_SEQUENCE, INTERNAL_STOP,
    INVALID_CHARACTER, NON_CANONICAL_REASON, TOO_SHORT, TOO_LONG, DUPLICATE_ID, NO_CLUSTER,
    BENCHMARK_OVERLAP, VALIDATION_OVERLAP)

_EXCERPT_CONTEXT = 20
_MAP_TO_X = bytes.maketrans(NON_CANONICAL, b"X" * len(NON_CANONICAL))
# Uppercases ASCII letters; with WHITESPACE deleted, `normalize` is one pass over the body.
_UPPERCASE = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Rules(NamedTuple):
    """The validation flags: non-canonical policy and the inclusive length bounds."""

    non_canonical: str = KEEP
    min_length: int = DEFAULT_MIN_LENGTH
    max_length: int = DEFAULT_MAX_LENGTH


class Protein(NamedTuple):
    """A valid, normalized record. `sequence_hash` is sha256(sequence), the dedup key."""

    id: str
    cluster_id: str
    sequence: bytes
    sequence_hash: bytes
    member_count: Optional[int]
    taxon_id: Optional[int]
    path: str
    offset: int


class Rejected(NamedTuple):
    """A record that is not in the output, with the reason and a short excerpt showing why.

    `match` is set for the overlap reasons only: the benchmark (or validation) sequence that the
    record matched, as {"file", "id", "method", "identity", "coverage"}.
    """

    id: Optional[str]
    path: str
    offset: int
    reason: str
    detail: str
    excerpt: str
    match: Optional[dict] = None

    def to_json_dict(self) -> dict:
        """The JSON-lines form written to the rejected shards (`match` only when set)."""
        value = self._asdict()
        if self.match is None:
            del value["match"]
        return value


def normalize(body: bytes) -> bytes:
    """Removes all whitespace (line ends included), uppercases, strips one trailing `*`."""
    sequence = body.translate(_UPPERCASE, WHITESPACE)
    return sequence[:-1] if sequence.endswith(b"*") else sequence


def excerpt_at(text: bytes, position: int) -> str:
    """A short excerpt of `text` with the byte at `position` in brackets, e.g. `...KLM[1]NPQ...`."""
    start = max(0, position - _EXCERPT_CONTEXT)
    end = min(len(text), position + 1 + _EXCERPT_CONTEXT)

    def show(part: bytes) -> str:
        return part.decode("utf-8", "backslashreplace")

    return "%s%s[%s]%s%s" % (
        "..." if start > 0 else "", show(text[start:position]), show(text[position:position + 1]),
        show(text[position + 1:end]), "..." if end < len(text) else "")


def excerpt_head(text: bytes, size: int = 2 * _EXCERPT_CONTEXT) -> str:
    """The first `size` bytes of `text`, decoded leniently, with `...` when cut."""
    head = text[:size].decode("utf-8", "backslashreplace")
    return head + ("..." if len(text) > size else "")


def check_sequence(sequence: bytes, rules: Rules) -> Union[bytes, tuple[str, str, str]]:
    """Validates a normalized sequence.

    Returns the sequence to keep (non-canonical residues mapped if the policy says so), or a
    tuple (reason, detail, excerpt) when the sequence is rejected.
    """
    if not sequence:
        return EMPTY_SEQUENCE, "record has no residues", ""
    unknown = sequence.translate(None, ALPHABET)
    # Most sequences hold alphabet letters only; the rest are diagnosed in order of precedence.
    if unknown:
        if not unknown.isascii():
            position = next(i for i, byte in enumerate(sequence) if byte >= 0x80)
            return (INVALID_CHARACTER, "non-ASCII character at residue %d" % (position + 1),
                    excerpt_at(sequence, position))
        stop = sequence.find(b"*")
        if stop >= 0:
            return (INTERNAL_STOP, "stop '*' at residue %d of %d" % (stop + 1, len(sequence)),
                    excerpt_at(sequence, stop))
        position = sequence.find(unknown[:1])
        return (INVALID_CHARACTER, "character %r at residue %d is not in %s" % (
            chr(unknown[0]), position + 1, ALPHABET.decode()), excerpt_at(sequence, position))
    if rules.non_canonical != KEEP:
        residues = sequence.translate(None, CANONICAL + b"X")
        if residues:
            if rules.non_canonical == DROP:
                position = sequence.find(residues[:1])
                return (NON_CANONICAL_REASON, "non-canonical residue %r at residue %d" % (
                    chr(residues[0]), position + 1), excerpt_at(sequence, position))
            sequence = sequence.translate(_MAP_TO_X)
    if len(sequence) < rules.min_length:
        return (TOO_SHORT, "length %d < min_length %d" % (len(sequence), rules.min_length),
                excerpt_head(sequence))
    if len(sequence) > rules.max_length:
        return (TOO_LONG, "length %d > max_length %d" % (len(sequence), rules.max_length),
                excerpt_head(sequence))
    return sequence


def sequence_hash(sequence: bytes) -> bytes:
    """The deduplication key: sha256 of the normalized sequence."""
    return hashlib.sha256(sequence).digest()


def check_record(record: fasta.RawRecord, rules: Rules) -> Union[Protein, Rejected]:
    """Decodes, parses, normalizes and validates one raw record (a `RawRecord`, or its four
    fields as a plain tuple, as batches carry them).

    The body of a valid record is cleaned and hashed by the compiled `clean_sequence`, which
    gives what `normalize`, `check_sequence` and `sequence_hash` give; a body it does not accept
    goes through those functions, which name the reason for the rejection."""
    path, offset, raw_header, body = record
    if raw_header is None:
        return Rejected(None, path, offset, SEQUENCE_BEFORE_HEADER,
                        "sequence lines before the first header", excerpt_head(body.strip()))
    try:
        header_text = raw_header.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected(None, path, offset, INVALID_ENCODING, "header is not UTF-8: %s" % error,
                        excerpt_at(raw_header, error.start))
    try:
        header = fasta.parse_header(header_text)
    except ValueError as error:
        return Rejected(None, path, offset, MISSING_ID, str(error), excerpt_head(raw_header))
    cleaned = clean_sequence(body, _POLICY_CODES[rules.non_canonical], rules.min_length,
                             rules.max_length)
    if cleaned is not None:
        sequence, digest = cleaned
        return Protein(header.id, header.cluster_id, sequence, digest, header.member_count,
                       header.taxon_id, path, offset)
    try:
        if not body.isascii():
            body.decode("utf-8")
    except UnicodeDecodeError as error:
        position = len(body[:error.start].translate(None, WHITESPACE))
        return Rejected(header.id, path, offset, INVALID_ENCODING,
                        "sequence is not UTF-8: %s" % error,
                        excerpt_at(body.translate(None, WHITESPACE), position))
    checked = check_sequence(normalize(body), rules)
    if isinstance(checked, tuple):
        return Rejected(header.id, path, offset, *checked)
    return Protein(header.id, header.cluster_id, checked, sequence_hash(checked),
                   header.member_count, header.taxon_id, path, offset)
