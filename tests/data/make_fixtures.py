"""Rebuilds the small real-data fixtures in tests/data from Debian's `mmseqs2-examples`.

The source is `DB.fasta.gz` (20,000 real UniProtKB entries, one sequence line each) from
`apt-get download mmseqs2-examples`. Run:

        python tests/data/make_fixtures.py /path/to/DB.fasta.gz

Writes:
- `uniprotkb_sample.fasta.gz`: 299 entries as they are (every 67th entry of DB.fasta.gz).
- `uniref50_sample.fasta.gz`: 900 other entries rewritten in UniRef50 FASTA format, the bundled
    sample that `make demo` runs on. Sequences and names are real; the cluster accession is the
    UniProtKB accession, as UniRef uses for a cluster whose representative is that entry. Not in the
    source and made up deterministically: the member count `n=`, the `TaxID=` (a stable number
    derived from the organism name), UniParc `UPI...` accessions for every 25th cluster, and the
    omission of `Tax=`/`TaxID=` for every 30th cluster (as UniProt does when the common taxon is root).
    Sequence lines are wrapped at 60 columns, as in UniProt's files.
"""
import gzip
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from pipelines import fasta  # pylint: disable=wrong-import-position
from pipelines import records  # pylint: disable=wrong-import-position
UNIPROTKB_STRIDE = 67
UNIREF_COUNT = 900


def read_fasta(path):
    """(header without '>' and trailing whitespace, sequence without whitespace) of each record
    of a FASTA file, read by the job's own reader."""
    for raw in fasta.read_fasta(path):
        yield raw.header.decode().rstrip(), raw.body.translate(None, records.WHITESPACE).decode()


def stable_int(text, modulo):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % modulo


def uniref_header(index, uniprot_header):
    match = re.match(r"(sp|tr)\|(\S+)\|(\S+) (.*?) OS=(.*?)(?: OX=\d+)?(?: GN=| PE=)",
                     uniprot_header)
    _, accession, entry_name, name, organism = match.groups()
    if index % 25 == 0:
        accession = "UPI%010X" % stable_int(accession, 16**10)
    members = 1 + stable_int("n" + accession, 40)
    if index % 30 == 0:
        return f">UniRef50_{accession} {name} n={members} RepID={entry_name}"
    taxid = 1 + stable_int(organism, 2_000_000)
    return (f">UniRef50_{accession} {name} n={members} Tax={organism} TaxID={taxid} "
            f"RepID={entry_name}")


def wrap(sequence, width=60):
    return "\n".join(sequence[i:i + width] for i in range(0, len(sequence), width))


def main(db_fasta_gz):
    entries = list(read_fasta(db_fasta_gz))
    picked = set(range(0, len(entries), UNIPROTKB_STRIDE))
    with gzip.GzipFile(os.path.join(HERE, "uniprotkb_sample.fasta.gz"), "wb", mtime=0) as out:
        for i in sorted(picked):
            header, sequence = entries[i]
            out.write(f">{header}\n{sequence}\n".encode())
    rest = [e for i, e in enumerate(entries) if i not in picked][:UNIREF_COUNT]
    with gzip.GzipFile(os.path.join(HERE, "uniref50_sample.fasta.gz"), "wb", mtime=0) as out:
        for i, (header, sequence) in enumerate(rest):
            out.write(f"{uniref_header(i, header)}\n{wrap(sequence)}\n".encode())


if __name__ == "__main__":
    main(sys.argv[1])
