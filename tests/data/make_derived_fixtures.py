"""Builds the decontamination, membership and release fixtures from the bundled real samples.

    python tests/data/make_derived_fixtures.py

Reads only `uniref50_sample.fasta.gz` and `uniprotkb_sample.fasta.gz` (real UniProtKB sequences)
and writes, deterministically:

- `benchmark_ss.fasta`, `benchmark_fluor.fasta`: two small "benchmark sets" of real sequences,
  some taken from or edited from records of `uniref50_sample.fasta.gz` (see BENCHMARK_CASES:
  identical, 3 % and 5 % substituted, a 70 % inner fragment, a chimera half made of another
  protein, 15 % substituted), the others unrelated UniProtKB entries.
- `uniref_release/uniref50.xml.gz`: a UniRef50 XML in UniProt's format (root
  `<UniRef50 xmlns="http://uniprot.org/uniref" releaseDate=".." version="2024_06">`, entries with
  `<representativeMember>` and `<member>`s, each a `<dbReference>` with `UniRef90 ID` and
  `UniRef100 ID` properties, the representative with its `<sequence>` and CRC64 checksum). Its
  sequences and names are real UniProtKB entries; the clustering itself (which entries share a
  UniRef90 or UniRef50 cluster) is made up: 12 UniRef50 clusters of 1 to 6 UniRef90 clusters of
  1 to 3 members, one member being a UniParc entry.
- `uniref_release/uniref90.fasta.gz`: the UniRef90 FASTA of those UniRef90 clusters (their
  representatives' sequences, UniProt's header format, 60-column lines).
- `uniref_release/RELEASE.metalink`: metalink 3.0 as UniProt publishes it, with the size and md5
  of the two files above.
"""
import gzip
import hashlib
import os
import random
import re
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from make_fixtures import read_fasta  # pylint: disable=wrong-import-position
from pipelines import records  # pylint: disable=wrong-import-position
RELEASE = "2024_06"
RELEASE_DATE = "2024-11-27"
# (benchmark file, benchmark id, index in uniref50_sample, edit).
BENCHMARK_CASES = (
    ("benchmark_ss.fasta", "ss_identical", 10, "identical"),
    ("benchmark_ss.fasta", "ss_subst5", 20, "subst5"),
    ("benchmark_ss.fasta", "ss_fragment70", 30, "fragment70"),
    ("benchmark_ss.fasta", "ss_chimera50", 40, "chimera50"),
    ("benchmark_ss.fasta", "ss_subst15", 50, "subst15"),
    ("benchmark_fluor.fasta", "fluor_subst3", 20, "subst3"),
    ("benchmark_fluor.fasta", "fluor_lowercase_stop", 60, "lowercase_stop"),
)
UNRELATED = {"benchmark_ss.fasta": (0, 5), "benchmark_fluor.fasta": (5, 8)}
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def substitute(sequence, fraction, seed):
    rng = random.Random(seed)
    residues = list(sequence)
    for position in rng.sample(range(len(residues)), round(fraction * len(residues))):
        residues[position] = rng.choice([r for r in RESIDUES if r != residues[position]])
    return "".join(residues)


def edit(sequence, how, other):
    if how == "identical":
        return sequence
    if how.startswith("subst"):
        return substitute(sequence, int(how[5:]) / 100, how + sequence[:10])
    if how == "fragment70":
        cut = round(0.15 * len(sequence))
        return sequence[cut:len(sequence) - cut]
    if how == "chimera50":
        half = len(sequence) // 2
        return sequence[:half] + other[:len(sequence) - half]
    if how == "lowercase_stop":
        return sequence.lower() + "*"
    raise ValueError(how)


def wrap(sequence, width=60):
    return "\n".join(sequence[i:i + width] for i in range(0, len(sequence), width))


def write_benchmarks(uniref, uniprotkb):
    files = {}
    # The chimera's other half: the first unrelated entry long enough to fill it.
    other = next(s for _, s in uniprotkb[200:] if len(s) >= 400)
    for name, record_id, index, how in BENCHMARK_CASES:
        files.setdefault(name, []).append((record_id, edit(uniref[index][1], how, other)))
    for name, (start, stop) in UNRELATED.items():
        for header, sequence in uniprotkb[start:stop]:
            files[name].append((header.split()[0], sequence))
    for name, records in files.items():
        with open(os.path.join(HERE, name), "w") as out:
            for record_id, sequence in records:
                out.write(">%s\n%s\n" % (record_id, wrap(sequence)))


def crc64(sequence):
    """UniProt's sequence checksum (CRC-64-ISO, as SWISS-PROT computes it), in hex."""
    table = []
    for i in range(256):
        value = i
        for _ in range(8):
            value = (value >> 1) ^ 0xD800000000000000 if value & 1 else value >> 1
        table.append(value)
    crc = 0
    for byte in sequence.encode():
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return "%016X" % crc


def parse_uniprotkb(header):
    """(accession, entry name, protein name, organism, taxon id) of a UniProtKB header."""
    parsed = records.parse_header(header)
    token, rest = header.split(None, 1)
    entry_name = token.split("|")[2]
    fields = re.search(r"\s(?:OS|OX|GN|PE|SV)=", " " + rest)
    name = (rest[:fields.start()] if fields else rest).strip()
    organism = re.search(r"(?:^|\s)OS=(.*?)(?=\s+(?:OX|GN|PE|SV)=|$)", rest)
    organism = organism.group(1) if organism else "unclassified"
    taxid = parsed.taxon_id or 1 + int(hashlib.sha256(organism.encode()).hexdigest()[:8], 16) % 2_000_000
    return parsed.id, entry_name, name, organism, str(taxid)


def attribute(value):
    return escape(value, {'"': "&quot;"})


def member_xml(element, entry, uniref90_id, uniparc=False, with_sequence=False):
    accession, entry_name, name, organism, taxid, sequence = entry
    if uniparc:
        upi = "UPI%010X" % (int(hashlib.sha256(accession.encode()).hexdigest()[:10], 16))
        reference = '<dbReference type="UniParc ID" id="%s">\n' % upi
        properties = []
    else:
        reference = '<dbReference type="UniProtKB ID" id="%s">\n' % attribute(entry_name)
        properties = [("UniProtKB accession", accession)]
    properties += [("UniRef100 ID", "UniRef100_" + accession), ("UniRef90 ID", uniref90_id),
                   ("protein name", name), ("source organism", organism),
                   ("NCBI taxonomy", taxid), ("length", str(len(sequence)))]
    if with_sequence:
        properties.append(("isSeed", "true"))
    text = "<%s>\n%s" % (element, reference)
    text += "".join('<property type="%s" value="%s"/>\n' % (t, attribute(v)) for t, v in properties)
    text += "</dbReference>\n"
    if with_sequence:
        text += '<sequence length="%d" checksum="%s">%s</sequence>\n' % (
            len(sequence), crc64(sequence), sequence)
    return text + "</%s>\n" % element


def write_release(uniprotkb):
    entries = [parse_uniprotkb(h) + (s,) for h, s in uniprotkb[10:200]]
    position, clusters = 0, []
    for k in range(12):
        uniref90 = []
        for j in range(1 + k % 6):
            size = 1 + (k + j) % 3
            uniref90.append(entries[position:position + size])
            position += size
        clusters.append(uniref90)
    xml = ['<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
           '<UniRef50 xmlns="http://uniprot.org/uniref" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:schemaLocation="http://uniprot.org/uniref '
           'http://www.uniprot.org/support/docs/uniref.xsd" '
           'releaseDate="%s" version="%s">\n' % (RELEASE_DATE, RELEASE)]
    fasta = []
    for k, uniref90 in enumerate(clusters):
        representative = uniref90[0][0]
        members = sum(len(c) for c in uniref90)
        xml.append('<entry id="UniRef50_%s" updated="%s">\n<name>Cluster: %s</name>\n'
                   '<property type="member count" value="%d"/>\n'
                   '<property type="common taxon" value="%s"/>\n'
                   '<property type="common taxon ID" value="%s"/>\n' % (
                       representative[0], RELEASE_DATE, escape(representative[2]), members,
                       attribute(representative[3]), representative[4]))
        for j, cluster in enumerate(uniref90):
            uniref90_id = "UniRef90_" + cluster[0][0]
            for m, entry in enumerate(cluster):
                if j == 0 and m == 0:
                    xml.append(member_xml("representativeMember", entry, uniref90_id,
                                          with_sequence=True))
                else:
                    xml.append(member_xml("member", entry, uniref90_id, uniparc=(k, j, m) == (5, 0, 1)))
            head = cluster[0]
            fasta.append(">%s %s n=%d Tax=%s TaxID=%s RepID=%s\n%s\n" % (
                uniref90_id, head[2], len(cluster), head[3], head[4], head[1], wrap(head[5])))
        xml.append("</entry>\n")
    xml.append("</UniRef50>\n")
    directory = os.path.join(HERE, "uniref_release")
    os.makedirs(directory, exist_ok=True)
    files = {"uniref50.xml.gz": "".join(xml), "uniref90.fasta.gz": "".join(fasta)}
    metalink = ['<?xml version="1.0" encoding="UTF-8"?>\n'
                '<metalink xmlns="http://www.metalinker.org/" version="3.0">\n'
                "<publisher>\n<name>UniProt Consortium</name>\n"
                "<url>http://www.uniprot.org</url>\n</publisher>\n"
                "<version>%s</version>\n<files>\n" % RELEASE]
    for name, text in files.items():
        data = gzip.compress(text.encode("latin-1"), mtime=0)
        with open(os.path.join(directory, name), "wb") as out:
            out.write(data)
        level = "uniref50" if "50" in name else "uniref90"
        metalink.append(
            '<file name="%s">\n<size>%d</size>\n<verification>\n'
            '<hash type="md5">%s</hash>\n</verification>\n<resources>\n' % (
                name, len(data), hashlib.md5(data).hexdigest()))
        for location, host in (("ch", "ftp://ftp.expasy.org/databases/uniprot"),
                               ("uk", "ftp://ftp.ebi.ac.uk/pub/databases/uniprot"),
                               ("us", "ftp://ftp.uniprot.org/pub/databases/uniprot")):
            metalink.append('<url location="%s">%s/current_release/uniref/%s/%s</url>\n' % (
                location, host, level, name))
        metalink.append("</resources>\n</file>\n")
    metalink.append("</files>\n</metalink>\n")
    with open(os.path.join(directory, "RELEASE.metalink"), "w") as out:
        out.write("".join(metalink))


def main():
    uniref = list(read_fasta(os.path.join(HERE, "uniref50_sample.fasta.gz")))
    uniprotkb = list(read_fasta(os.path.join(HERE, "uniprotkb_sample.fasta.gz")))
    write_benchmarks(uniref, uniprotkb)
    write_release(uniprotkb)


if __name__ == "__main__":
    main()
