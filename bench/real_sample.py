"""Real protein sequences for the benchmark scripts: `DB.fasta.gz` of Debian's `mmseqs2-examples`.

`DB.fasta.gz` holds 20,000 real UniProtKB entries (one sequence line each). It is not in the
repository; `find_source` looks for it where the Debian package puts it, or where
`dpkg -x` of the downloaded package puts it, and otherwise exits saying how to get it.
"""
import os
import random
import sys
from typing import Iterator, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SOURCE_CANDIDATES = (
    "/usr/share/doc/mmseqs2/example-data/DB.fasta.gz",
    "/tmp/mmex/usr/share/doc/mmseqs2/example-data/DB.fasta.gz",
)
GET_SOURCE = ("apt-get install mmseqs2-examples (or: apt-get download mmseqs2-examples && "
              "dpkg -x mmseqs2-examples_*.deb /tmp/mmex), or pass --source=PATH/DB.fasta.gz")
CANONICAL = b"ACDEFGHIKLMNPQRSTVWY"


def find_source(path: Optional[str], script: str) -> str:
    """The path of DB.fasta.gz: `path` (the script's --source flag) if given, else the first of
    SOURCE_CANDIDATES that exists; exits naming `script` and saying how to get it otherwise."""
    for candidate in ([path] if path else list(SOURCE_CANDIDATES)):
        if os.path.exists(candidate):
            return candidate
    sys.exit("%s: DB.fasta.gz of mmseqs2-examples not found (%s). Get it: %s" % (
        script, path or " or ".join(SOURCE_CANDIDATES), GET_SOURCE))


def read_fasta(path: str) -> Iterator[tuple[str, bytes]]:
    """(header without '>', sequence without whitespace) of each record of a FASTA file, plain or
    compressed, read by the job's own reader (`pipelines.fasta.read_fasta`)."""
    # Imported here: the job's modules import Beam (~0.24 GB resident), and a benchmark's own
    # process, the parent of the commands it measures, must stay small (a child's peak memory
    # starts at its parent's).
    from pipelines import fasta  # pylint: disable=import-outside-toplevel
    from pipelines import records  # pylint: disable=import-outside-toplevel
    for raw in fasta.read_fasta(path):
        yield raw.header.decode().strip(), raw.body.translate(None, records.WHITESPACE)


def mutate(sequence: bytes, substitutions: int, rng: random.Random) -> bytes:
    """`sequence` with `substitutions` point substitutions, each at a random position (drawn with
    replacement) to a different canonical residue; an empty sequence stays empty."""
    if not sequence:
        return sequence
    mutated = bytearray(sequence)
    for _ in range(substitutions):
        position = rng.randrange(len(mutated))
        residue = CANONICAL[rng.randrange(len(CANONICAL))]
        while residue == mutated[position]:
            residue = CANONICAL[rng.randrange(len(CANONICAL))]
        mutated[position] = residue
    return bytes(mutated)
