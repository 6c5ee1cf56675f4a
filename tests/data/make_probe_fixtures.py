"""Rebuilds the probe fixtures in tests/data from the installed sidechainnet and mavenn wheels.

        python tests/data/make_probe_fixtures.py

Writes:
- `dssp_sample.json`: 240 real records of sidechainnet 1.0.1's
    `resources/full_protein_dssp_annotations.json`, in its format: the 200 records of 40-300
    residues whose chain ids have the smallest sha256, plus every chain of five families with
    several near-identical entries (T4 lysozyme 1L**, myoglobin 1**M, ...) cut to 40 records, so
    that the split has whole clusters to keep together; a few records are of sequences that
    occur twice, contain X, or are too short, so each rejection reason occurs.
- `gb1_sample.csv.gz`: 300 rows of mavenn 1.1.4's `examples/datasets/gb1_data.csv.gz` (100 of
    each set, the first by sha256 of the sequence).
"""
import csv
import gzip
import hashlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from probes import data  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILY_PREFIXES = ("1L0", "1L1", "10", "2LZ", "1A2")


def _key(text):
    return hashlib.sha256(text.encode()).hexdigest()


def main():
    with open(data.package_file(data.DSSP_PACKAGE, data.DSSP_RESOURCE)) as f:
        entries = json.load(f)
    ids = sorted(entries, key=_key)
    plain = [i for i in ids if 40 <= len(entries[i]["Sequence"]) <= 300][:200]
    family = [i for i in sorted(entries) if i.startswith(FAMILY_PREFIXES) and i not in plain
              and 40 <= len(entries[i]["Sequence"]) <= 300][:30]
    odd = ([i for i in ids if "X" in entries[i]["Sequence"]][:4]
           + [i for i in ids if len(entries[i]["Sequence"]) < 40][:3])
    seen = {entries[i]["Sequence"] for i in plain + family}
    duplicates = [i for i in ids if entries[i]["Sequence"] in seen
                  and i not in plain + family][:3]
    chosen = sorted(set(plain + family + odd + duplicates))
    with open(os.path.join(HERE, "dssp_sample.json"), "w") as f:
        json.dump({i: entries[i] for i in chosen}, f, indent=1)
    with gzip.open(data.package_file(data.GB1_PACKAGE, data.GB1_RESOURCE), "rt") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for name in ("training", "validation", "test"):
        kept += sorted((r for r in rows if r["set"] == name), key=lambda r: _key(r["x"]))[:100]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    with gzip.GzipFile(os.path.join(HERE, "gb1_sample.csv.gz"), "wb", mtime=0) as f:
        f.write(text.getvalue().encode())
    print(len(chosen), "DSSP records,", len(kept), "GB1 rows")


if __name__ == "__main__":
    main()
