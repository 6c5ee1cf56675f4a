"""Writes the alignment samples of tests/data/profiles from Debian's hmmer-examples,
python-biopython-doc and pyfamsa's test data (all real Pfam / FAMSA alignments).

    python3 scripts/make_profile_samples.py [OUT_DIR]

- pfam_seeds.sto.gz: Pfam seed alignments, one family after another (fn3 PF00041, Pkinase
  PF00069, RRM_1 PF00076, globins4 (no ID/AC), PF03773 (with a #=GC RF line)).
- pfam_full.sto.gz, pfam_published.hmm.gz: the seed sequences of fn3 and RRM_1 aligned by
  hmmalign (pyhmmer) to Pfam's published HMMs of those families, written as Pfam writes its full
  alignments (one block; uppercase match, lowercase insert, '-' delete, '.' insert gap), with the
  published HMMs.
- hemopexin.afa.gz: the first 200 rows of FAMSA's alignment of 4,188 hemopexin domains.
"""
import gzip
import io
import os
import sys

from pyhmmer import easel, hmmer, plan7

HMMER = "/usr/share/doc/hmmer/examples/"
BIOPYTHON = "/usr/share/doc/python-biopython-doc/Tests/Stockholm/"
SEEDS = (HMMER + "tutorial/fn3.sto", HMMER + "tutorial/Pkinase.sto",
         HMMER + "testsuite/RRM_1.sto.gz", HMMER + "tutorial/globins4.sto",
         BIOPYTHON + "pfam5.seed.txt.gz")
PUBLISHED = ((HMMER + "tutorial/fn3.hmm", HMMER + "tutorial/fn3.sto"),
             (HMMER + "testsuite/RRM_1.hmm.gz", HMMER + "testsuite/RRM_1.sto.gz"))
HEMOPEXIN_ROWS = 200


def _read(path: str) -> bytes:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        return f.read()


def _write_gz(path: str, data: bytes) -> None:
    # mtime=0: the same bytes on every run.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(data)


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    _write_gz(os.path.join(out_dir, "pfam_seeds.sto.gz"), b"".join(_read(p) for p in SEEDS))
    alphabet = easel.Alphabet.amino()
    full, hmm_text = io.BytesIO(), io.BytesIO()
    for hmm_path, seed_path in PUBLISHED:
        hmm = plan7.HMMFile(io.BytesIO(_read(hmm_path))).read()
        with easel.MSAFile(io.BytesIO(_read(seed_path)), "stockholm", digital=True,
                           alphabet=alphabet) as msa_file:
            seed = msa_file.read()
        sequences = [easel.TextSequence(name=s.name, sequence=s.sequence.replace(
            "-", "").replace(".", "")).digitize(alphabet)
            for s in seed.textize().sequences]
        aligned = hmmer.hmmalign(hmm, sequences, trim=False)
        aligned.name, aligned.accession = hmm.name, hmm.accession
        aligned.write(full, "pfam")
        hmm_text.write(_read(hmm_path))
    _write_gz(os.path.join(out_dir, "pfam_full.sto.gz"), full.getvalue())
    _write_gz(os.path.join(out_dir, "pfam_published.hmm.gz"), hmm_text.getvalue())
    famsa = os.path.join(os.path.dirname(__import__("pyfamsa").__file__), "tests", "data",
                         "hemopexin.medoid-nj.afa")
    records = _read(famsa).split(b">")[1:HEMOPEXIN_ROWS + 1]
    _write_gz(os.path.join(out_dir, "hemopexin.afa.gz"), b"".join(b">" + r for r in records))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/profiles")
