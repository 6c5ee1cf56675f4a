"""FASTA header parsing for UniRef, UniProtKB and plain FASTA (plain functions, no Beam).

Formats recognised, by the first token of the header:

- UniRef: `UniRef50_<acc> <cluster name> n=<members> [Tax=<taxon> TaxID=<id>] RepID=<entry>`
  (`UniRef90_`/`UniRef100_` too). UniProt omits `Tax=`/`TaxID=` when the common taxon is root,
  and `<acc>` can be a UniParc `UPI...` accession. The cluster id is the whole first token.
- UniProtKB: `sp|<acc>|<entry name> <description> OS=<organism> OX=<taxid> ...` (`tr|` for
  TrEMBL). The id and the cluster id are the accession.
- Plain: anything else. The id and the cluster id are the first token; the rest is the name.
"""
import re
from typing import NamedTuple, Optional

UNIREF = "uniref"
UNIPROTKB = "uniprotkb"
PLAIN = "fasta"

_UNIREF_ID = re.compile(r"UniRef(?:50|90|100)_\S+$")
# The cluster name ends where the first `key=` field starts; UniRef puts `n=` first.
_UNIREF_MEMBERS = re.compile(r"(?:^|\s)n=(\d+)(?=\s|$)")
_UNIREF_TAXON = re.compile(r"(?:^|\s)Tax=(.*?)(?=\s+TaxID=|\s+RepID=|$)")
_UNIREF_TAXID = re.compile(r"(?:^|\s)TaxID=(\d+)(?=\s|$)")
_UNIREF_REPID = re.compile(r"(?:^|\s)RepID=(\S+)")
# The usual UniRef layout in one match (`parse_header`'s fast path). It agrees with the field
# patterns above whenever the name and taxon hold no `=` and the separators are single spaces;
# any other header takes the general path. The name and taxon are greedy: as they cannot hold
# `=`, the field that follows each is found by backing up from the next `=` (half the time of
# trying every position with a lazy match).
_UNIREF_USUAL = re.compile(
    r"(UniRef(?:50|90|100)_\S+) ([^=]*) n=(\d+)(?: Tax=([^=]*)(?<!\s) TaxID=(\d+))? RepID=(\S+)")
_UNIPROTKB_ID = re.compile(r"(sp|tr)\|([^|\s]+)\|(\S*)$")
_UNIPROTKB_FIELD = re.compile(r"\s(?:OS|OX|GN|PE|SV)=")
_UNIPROTKB_ORGANISM = re.compile(r"(?:^|\s)OS=(.*?)(?=\s+(?:OX|GN|PE|SV)=|$)")
_UNIPROTKB_TAXID = re.compile(r"(?:^|\s)OX=(\d+)(?=\s|$)")


class Header(NamedTuple):
    """The fields parsed from one FASTA header line.

    `member_count`, `taxon` and `taxon_id` are None when the header does not state them;
    `representative` is UniRef's `RepID` (None for other formats).
    """

    id: str
    cluster_id: str
    name: str
    member_count: Optional[int]
    taxon: Optional[str]
    taxon_id: Optional[int]
    representative: Optional[str]
    source_format: str


def _search(pattern: re.Pattern, text: str) -> Optional[str]:
    match = pattern.search(text)
    return match.group(1) if match else None


def _optional_int(text: Optional[str]) -> Optional[int]:
    return None if text is None else int(text)


def _parse_uniref(accession: str, rest: str) -> Header:
    first_field = re.search(r"(?:^|\s)(?:n|Tax|TaxID|RepID)=", rest)
    name = rest[:first_field.start()] if first_field else rest
    return Header(
        id=accession,
        cluster_id=accession,
        name=name.strip(),
        member_count=_optional_int(_search(_UNIREF_MEMBERS, rest)),
        taxon=_search(_UNIREF_TAXON, rest),
        taxon_id=_optional_int(_search(_UNIREF_TAXID, rest)),
        representative=_search(_UNIREF_REPID, rest),
        source_format=UNIREF,
    )


def _parse_uniprotkb(accession: str, rest: str) -> Header:
    first_field = _UNIPROTKB_FIELD.search(" " + rest)
    name = rest[:first_field.start()] if first_field else rest
    return Header(
        id=accession,
        cluster_id=accession,
        name=name.strip(),
        member_count=None,
        taxon=_search(_UNIPROTKB_ORGANISM, rest),
        taxon_id=_optional_int(_search(_UNIPROTKB_TAXID, rest)),
        representative=None,
        source_format=UNIPROTKB,
    )


def parse_header(line: str) -> Header:
    """Parses a header line (with or without its leading `>`) into a `Header`.

    Raises ValueError when the line holds no id (an empty header).
    """
    text = line[1:] if line.startswith(">") else line
    usual = _UNIREF_USUAL.fullmatch(text)
    if usual:
        accession, name, members, taxon, taxon_id, representative = usual.groups()
        return Header(accession, accession, name.strip(), int(members), taxon,
                      _optional_int(taxon_id), representative, UNIREF)
    parts = text.strip().split(None, 1)
    if not parts:
        raise ValueError("header has no id")
    token, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    if _UNIREF_ID.match(token):
        return _parse_uniref(token, rest)
    uniprotkb = _UNIPROTKB_ID.match(token)
    if uniprotkb:
        return _parse_uniprotkb(uniprotkb.group(2), rest)
    return Header(
        id=token,
        cluster_id=token,
        name=rest.strip(),
        member_count=None,
        taxon=None,
        taxon_id=None,
        representative=None,
        source_format=PLAIN,
    )


class RawRecord(NamedTuple):
    """One FASTA record as read from a file, before any decoding or validation.

    `offset` is the (uncompressed) byte offset of the record's `>` in `path`. `header` is the
    header line without `>` and line end, or None for sequence lines that come before any
    header; `body` holds the raw sequence lines, line ends included.
    """

    path: str
    offset: int
    header: Optional[bytes]
    body: bytes
