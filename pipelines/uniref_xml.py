"""UniRef XML (`uniref50.xml[.gz]`, `uniref90.xml[.gz]`) as a Beam source of cluster memberships.

UniProt's format (namespace `http://uniprot.org/uniref`):

    <UniRef50 xmlns="http://uniprot.org/uniref" releaseDate="2024-11-27" version="2024_06">
     <entry id="UniRef50_Q6GZX4" updated="...">
      <name>Cluster: ...</name>
      <property type="member count" value="2"/> ...
      <representativeMember>
       <dbReference type="UniProtKB ID" id="001R_FRG3G">
        <property type="UniProtKB accession" value="Q6GZX4"/>
        <property type="UniRef100 ID" value="UniRef100_Q6GZX4"/>
        <property type="UniRef90 ID" value="UniRef90_Q6GZX4"/> ...
       </dbReference>
       <sequence length="256" checksum="...">MAFSAEDVLK...</sequence>
      </representativeMember>
      <member><dbReference type="UniProtKB ID" id="..."> ... </dbReference></member> ...
     </entry> ...
    </UniRef50>

Members may be UniParc entries (`<dbReference type="UniParc ID" id="UPI...">`). In
`uniref90.xml` the entries are UniRef90 clusters and the members carry `UniRef50 ID` instead.

Each entry becomes a `ClusterEntry` (UniRef50 id, its representative's UniRef90 id, the distinct
UniRef90 ids of representative and members). The document is streamed with
`ElementTree.iterparse`, and the root is cleared after each entry, so memory holds one entry
(the largest UniRef50 clusters list tens of thousands of members), never the document. The source
is not splittable: a `.gz` cannot be split, and UniProt ships only `.gz`; one worker reads the
file, and the job spreads its entries with a `Reshuffle`.
"""
import xml.etree.ElementTree as ElementTree
from typing import Iterator, NamedTuple

from apache_beam.io import filebasedsource

from pipelines import compression

UNIREF50 = "UniRef50"
UNIREF90 = "UniRef90"
UNIREF50_ID = "UniRef50 ID"
UNIREF90_ID = "UniRef90 ID"


class ClusterEntry(NamedTuple):
    """One UniRef50 cluster as one XML entry shows it.

    From `uniref50.xml`: the entry's cluster, its representative's UniRef90 id and every
    member's. From `uniref90.xml`: the representative's UniRef50 cluster and the entry's own
    UniRef90 id (`representative_uniref90_id` is then "": the UniRef50 representative is not
    known from one UniRef90 entry).
    """

    uniref50_id: str
    representative_uniref90_id: str
    uniref90_ids: tuple[str, ...]


class UniRefXmlError(ValueError):
    """A UniRef XML lacks what it must have (a UniRef root, entry ids, representatives, member ids)."""


def local_name(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _children(element, name: str):
    return [child for child in element if local_name(child.tag) == name]


def _member_properties(member) -> dict[str, str]:
    """The `property` values of a representativeMember's or member's dbReference."""
    references = _children(member, "dbReference")
    if len(references) != 1:
        raise UniRefXmlError("a member has %d dbReference elements" % len(references))
    return {p.get("type"): p.get("value") for p in _children(references[0], "property")}


def parse_entry(entry, level: str) -> ClusterEntry:
    """The ClusterEntry of one `<entry>` element of a UniRef50 or UniRef90 document."""
    entry_id = entry.get("id")
    if not entry_id:
        raise UniRefXmlError("an entry has no id attribute")
    representatives = _children(entry, "representativeMember")
    if len(representatives) != 1:
        raise UniRefXmlError("entry %s has %d representativeMember elements" % (
            entry_id, len(representatives)))
    representative = _member_properties(representatives[0])
    if level == UNIREF90:
        if not representative.get(UNIREF50_ID):
            raise UniRefXmlError("entry %s: the representative has no %s" % (
                entry_id, UNIREF50_ID))
        return ClusterEntry(representative[UNIREF50_ID], "", (entry_id,))
    members = [representative] + [_member_properties(m) for m in _children(entry, "member")]
    missing = [i for i, m in enumerate(members) if not m.get(UNIREF90_ID)]
    if missing:
        which = "the representative" if missing[0] == 0 else "member %d" % missing[0]
        raise UniRefXmlError("entry %s: %s has no %s" % (entry_id, which, UNIREF90_ID))
    return ClusterEntry(entry_id, representative[UNIREF90_ID],
                        tuple(sorted({m[UNIREF90_ID] for m in members})))


def iter_entries(stream, file_name: str) -> Iterator[ClusterEntry]:
    """Streams the ClusterEntries of a UniRef XML document read from `stream`.

    Raises UniRefXmlError (naming the file and entry) for an entry without the expected
    elements or a root that is not a UniRef50 or UniRef90 element.
    """
    events = ElementTree.iterparse(stream, events=("start", "end"))
    _, root = next(events)
    level = local_name(root.tag)
    if level not in (UNIREF50, UNIREF90):
        raise UniRefXmlError("%s: the root element is <%s>, not <UniRef50> or <UniRef90>" % (
            file_name, level))
    depth = 0
    for event, element in events:
        if event == "start":
            depth += 1
            continue
        depth -= 1
        if depth == 0 and local_name(element.tag) == "entry":
            try:
                yield parse_entry(element, level)
            except UniRefXmlError as error:
                raise UniRefXmlError("%s: %s" % (file_name, error)) from error
            # The entries are the root's children: dropping them bounds memory to one entry.
            root.clear()


class UniRefXmlSource(filebasedsource.FileBasedSource):
    """Reads `ClusterEntry`s from the UniRef XML files matching a pattern (not splittable)."""

    def __init__(self, file_pattern: str, validate: bool = True):
        """Args: `file_pattern` (a path or glob, local or gs://, plain or .gz/.bz2); `validate`:
        fail at construction when the pattern matches no file."""
        super().__init__(file_pattern, splittable=False, validate=validate)

    def read_records(self, file_name: str, range_tracker) -> Iterator[ClusterEntry]:
        """Yields the file's entries; their positions are their indices in the file."""
        last_read = "none"
        try:
            with compression.open_decompressed(file_name) as stream:
                for index, entry in enumerate(iter_entries(stream, file_name)):
                    if not range_tracker.try_claim(index):
                        return
                    last_read = entry.uniref50_id
                    yield entry
        except UniRefXmlError:
            raise
        except compression.DECOMPRESSION_ERRORS + (ElementTree.ParseError,) as error:
            raise compression.TruncatedInputError(
                "%s is truncated or not well-formed XML (%s); last complete entry read: %s" % (
                    file_name, error, last_read)) from error
