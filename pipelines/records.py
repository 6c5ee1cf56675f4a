"""The job's record: FASTA header parsing, sequence normalization and validation, reason codes.

One typed record, `Record`, goes from the validation stage to the writers; its fields are named
here once. A raw FASTA record (`fasta.RawRecord`) becomes either a `Record` (normalized, valid) or
a `Rejected` with a reason code (`REASONS`). The functions are plain Python, tested without Beam;
`Validate` is the Beam transform that applies them to batches.

Public API (used outside the job too):
  - `parse_header(line) -> Header`: id, cluster id, member count and taxon id of a header.
  - `normalize(body) -> bytes`, `check_sequence(sequence, rules) -> bytes | (reason, detail,
    excerpt)`, `sequence_hash(sequence) -> bytes`: the sequence rules, step by step.
  - `check_record(raw, rules) -> Record | Rejected`: all of it for one raw record.

Header formats recognised, by the first token:

- UniRef: `UniRef50_<acc> <cluster name> n=<members> [Tax=<taxon> TaxID=<id>] RepID=<entry>`
  (`UniRef90_`/`UniRef100_` too; `<acc>` may be a UniParc `UPI...`). The cluster id is the whole
  first token.
- UniProtKB: `sp|<acc>|<entry name> <description> OS=<organism> OX=<taxid> ...` (`tr|` for
  TrEMBL). The id and the cluster id are the accession.
- Plain: anything else. The id and the cluster id are the first token.
"""
import collections
import functools
import hashlib
import operator
import re
from typing import List, NamedTuple, Optional, Tuple, Union

import apache_beam as beam

from pipelines import worker

CANONICAL = b"ACDEFGHIKLMNPQRSTVWY"
NON_CANONICAL = b"BZUO"
ALPHABET = CANONICAL + b"X" + NON_CANONICAL
WHITESPACE = b" \t\r\n\v\f"

# What to do with B, Z, U, O (X is always kept): keep them, rewrite them to X, or reject the record.
KEEP = "keep"
MAP_TO_X = "map_to_x"
DROP = "drop"
NON_CANONICAL_POLICIES = (KEEP, MAP_TO_X, DROP)
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
# Output tags of the transforms that reject records.
REJECTED = "rejected"
RECORDS = "records"
RECORDS_PER_FILE = "records_per_file"

_EXCERPT_CONTEXT = 20
_MAP_TO_X = bytes.maketrans(NON_CANONICAL, b"X" * len(NON_CANONICAL))
# Uppercases ASCII letters; with WHITESPACE deleted, `normalize` is one pass over the body.
_UPPERCASE = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# `_UPPERCASE`, except that a byte which is neither an alphabet letter (in either case) nor `*`
# becomes NUL. A body translated by it (WHITESPACE deleted) without NUL is its normalized
# sequence, already screened for any character but `*`: one pass over the residues, where
# `normalize` and `check_sequence` take two.
_SCREEN = bytes(byte if byte in ALPHABET + b"*" else 0 for byte in _UPPERCASE)
# Byte values, for `in`: with a bytes operand, `in` first tries to read it as an integer, and
# the error it raises and clears costs more than the search.
_NUL = 0
_STOP = ord("*")

# The first token of a UniRef header is `<this>_<accession>`.
_UNIREF_PREFIXES = frozenset(("UniRef50", "UniRef90", "UniRef100"))
_UNIPROTKB_ID = re.compile(r"(sp|tr)\|([^|\s]+)\|(\S*)$")


class Rules(NamedTuple):
    """The validation flags: non-canonical policy and the inclusive length bounds."""

    non_canonical: str = KEEP
    min_length: int = DEFAULT_MIN_LENGTH
    max_length: int = DEFAULT_MAX_LENGTH


class Header(NamedTuple):
    """What the job reads of a header line; `member_count` and `taxon_id` are None when the
    header does not state them."""

    id: str
    cluster_id: str
    member_count: Optional[int]
    taxon_id: Optional[int]


class Record(NamedTuple):
    """A valid, normalized record, from validation to the writers.

    `sequence_hash` is sha256(sequence), the deduplication key; (`path`, `offset`) where the
    record starts in the input. Deduplication sets `num_duplicates` (records with the same
    sequence that this one stands for) and `duplicate_ids` (the smallest of their ids, sorted),
    and, once the cluster id is final, `shuffle_key` (orders and shards the records,
    `split.shuffle_key`) and `split` (`train` or `validation`, `split.split_of`).
    """

    id: str
    cluster_id: str
    sequence: bytes
    sequence_hash: bytes
    member_count: Optional[int]
    taxon_id: Optional[int]
    path: str
    offset: int
    num_duplicates: int = 0
    duplicate_ids: tuple[str, ...] = ()
    shuffle_key: bytes = b""
    split: str = ""


class RecordCoder(worker.FieldsCoder):
    """Encodes a `Record` as the tuple of its fields (primitives only: no pickled class)."""

    record_type = Record

    def estimate_size(self, value):
        # The sequence, and ~200 bytes of ids, hashes, path and numbers.
        return len(value.sequence) + 200


beam.coders.registry.register_coder(Record, RecordCoder)
# `Record._make` without its Python frame (a `Record` from the tuple of its fields): records are
# made once per record at validation and again after the shuffle.
record_from_fields = functools.partial(tuple.__new__, Record)
# The fields that deduplication and the split set, as they are before (`Record`'s defaults).
_RECORD_DEFAULTS = tuple(Record._field_defaults.values())
# The element types of the job's PCollections of records (declared on the transforms that output
# them, so that Beam gives them `RecordCoder`s): a batch, and a bucket with its index.
RecordBatch = List[Record]
RecordBucket = Tuple[int, List[Record]]


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


def rejected_record(record: Record, reason: str, detail: str, match=None) -> Rejected:
    """The rejection of a valid record by a later stage (duplicates, membership, overlap)."""
    return Rejected(record.id, record.path, record.offset, reason, detail,
                    excerpt_head(record.sequence), match)


def _word_int(text: str, key: str) -> Optional[int]:
    """The number of the first `<key><digits>` in `text` that is a whole word (whitespace, as
    `str.isspace` has it, or the text's ends on both sides), or None."""
    # String methods rather than a regex: a header is parsed per record, and a regex search
    # with its match object cost twice as much.
    start = text.find(key)
    while start >= 0:
        if start == 0 or text[start - 1].isspace():
            tail = text[start + len(key):]
            if tail and not tail[0].isspace():
                word = tail.split(None, 1)[0]
                if word.isdecimal():
                    return int(word)
        start = text.find(key, start + 1)
    return None


def parse_header(line: str) -> Header:
    """Parses a header line (with or without its leading `>`) into a `Header`.

    Raises ValueError when the line holds no id (an empty header).
    """
    return Header._make(_header_fields(line))


def _header_fields(line: str) -> tuple:
    """`parse_header`'s fields as a plain tuple (what `check_record` unpacks)."""
    text = line[1:] if line.startswith(">") else line
    parts = text.split(None, 1)
    if not parts:
        raise ValueError("header has no id")
    token = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    prefix, _, accession = token.partition("_")
    if accession and prefix in _UNIREF_PREFIXES:
        return token, token, _word_int(rest, "n="), _word_int(rest, "TaxID=")
    uniprotkb = _UNIPROTKB_ID.match(token) if token[2:3] == "|" else None
    if uniprotkb:
        accession = uniprotkb.group(2)
        return accession, accession, None, _word_int(rest, "OX=")
    return token, token, None, None


def normalize(body: bytes) -> bytes:
    """Removes all whitespace (line ends included), uppercases, strips one trailing `*`."""
    return _without_final_stop(body.translate(_UPPERCASE, WHITESPACE))


def _without_final_stop(sequence: bytes) -> bytes:
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


def check_record(raw, rules: Rules) -> Union[Record, Rejected]:
    """Decodes, parses, normalizes and validates one raw record (`fasta.RawRecord`: path,
    offset, header bytes or None, body bytes)."""
    path, offset, raw_header, body = raw
    if raw_header is None:
        return Rejected(None, path, offset, SEQUENCE_BEFORE_HEADER,
                        "sequence lines before the first header", excerpt_head(body.strip()))
    try:
        record_id, cluster_id, member_count, taxon_id = _header_fields(raw_header.decode("utf-8"))
    except UnicodeDecodeError as error:
        return Rejected(None, path, offset, INVALID_ENCODING, "header is not UTF-8: %s" % error,
                        excerpt_at(raw_header, error.start))
    except ValueError as error:
        return Rejected(None, path, offset, MISSING_ID, str(error), excerpt_head(raw_header))
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            position = len(body[:error.start].translate(None, WHITESPACE))
            return Rejected(record_id, path, offset, INVALID_ENCODING,
                            "sequence is not UTF-8: %s" % error,
                            excerpt_at(body.translate(None, WHITESPACE), position))
    screened = body.translate(_SCREEN, WHITESPACE)
    if _NUL in screened:
        checked = check_sequence(normalize(body), rules)
    else:
        sequence = _without_final_stop(screened)
        # Nearly every record: nothing for `check_sequence` to diagnose or map.
        if (_STOP in sequence or not sequence or rules.non_canonical != KEEP
                or not rules.min_length <= len(sequence) <= rules.max_length):
            checked = check_sequence(sequence, rules)
        else:
            checked = sequence
    if isinstance(checked, tuple):
        return Rejected(record_id, path, offset, *checked)
    return record_from_fields((record_id, cluster_id, checked, sequence_hash(checked),
                               member_count, taxon_id, path, offset, *_RECORD_DEFAULTS))


_PATH_OF_RAW = operator.itemgetter(0)  # of a `fasta.RawRecord`: (path, offset, header, body)


class _ValidateFn(beam.DoFn):

    def __init__(self, rules: Rules):
        self._rules = rules

    def setup(self):
        worker.tune_garbage_collection()
        self._read = worker.counter("records_read")
        self._valid = worker.counter("records_valid")
        self._rejected = {reason: worker.counter("rejected_" + reason) for reason in REASONS}

    def process(self, batch):
        valid = []
        for raw in batch:
            checked = check_record(raw, self._rules)
            if type(checked) is Record:  # pylint: disable=unidiomatic-typecheck
                valid.append(checked)
            else:
                self._rejected[checked.reason].inc()
                yield beam.pvalue.TaggedOutput(REJECTED, checked)
        self._read.inc(len(batch))
        self._valid.inc(len(valid))
        for path, count in collections.Counter(map(_PATH_OF_RAW, batch)).items():
            yield beam.pvalue.TaggedOutput(RECORDS_PER_FILE, (path, count))
        if valid:
            yield valid


class Validate(beam.PTransform):
    """Batches of `fasta.RawRecord`s -> batches of `Record`s (`records`), `Rejected`s
    (`rejected`) and (path, number of records read) per batch (`records_per_file`)."""

    def __init__(self, rules: Rules):
        super().__init__()
        self._rules = rules

    def expand(self, batches):
        return batches | "Check" >> beam.ParDo(_ValidateFn(self._rules)).with_output_types(
            RecordBatch).with_outputs(REJECTED, RECORDS_PER_FILE, main=RECORDS)
