"""Benchmark: what decontamination costs, against the same job without it (the baseline).

    python bench/bench_decontamination.py [--db=DB.fasta.gz] [--queries=QUERY.fasta.gz]
        [--num_sequences=100000] [--benchmark_size=300] [--work_dir=/tmp/bench_decontamination]

Input: `--num_sequences` real UniProtKB sequences from Debian's mmseqs2-examples `DB.fasta.gz`
(20,000 entries), each entry used several times with 1-25 % random substitutions so that the
set is large and holds near-duplicates. Benchmark set: the first `--benchmark_size` entries of
`QUERY.fasta.gz` (real UniProtKB entries). It runs, on the default runner:

1. the similarity step alone (`decontaminate.MmseqsSearch` over all sequences in the job's
   batch size), seconds per 100,000 sequences;
2. the job without decontamination (baseline) and the job with `--benchmark_fasta`, and prints
   seconds added per 100,000 sequences and the ratio, and what each step removed.
"""
import argparse
import gzip
import json
import logging
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import decontaminate  # pylint: disable=wrong-import-position
from pipelines import uniref  # pylint: disable=wrong-import-position
from pipelines import validation  # pylint: disable=wrong-import-position

EXAMPLES = "/tmp/mmex/usr/share/doc/mmseqs2/example-data"
RATES = (0.01, 0.03, 0.06, 0.12, 0.25)
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def read_fasta(path):
    """(header, sequence) pairs of a gzipped FASTA."""
    with gzip.open(path, "rt") as f:
        records = ("\n" + f.read()).split("\n>")[1:]
    for record in records:
        header, *lines = record.split("\n")
        yield header, "".join(lines)


def mutate(sequence, rate, rng):
    residues = list(sequence)
    for position in rng.sample(range(len(residues)), int(rate * len(residues))):
        residues[position] = rng.choice(RESIDUES)
    return "".join(residues)


def write_inputs(args):
    """The mutated sample (one FASTA) and the benchmark set; returns their paths."""
    rng = random.Random(0)
    entries = list(read_fasta(args.db))
    sample = os.path.join(args.work_dir, "sample.fasta")
    with open(sample, "w") as out:
        for i in range(args.num_sequences):
            header, sequence = entries[i % len(entries)]
            rate = RATES[(i // len(entries)) % len(RATES)]
            out.write(">s%06d %s\n%s\n" % (i, header.split()[0], mutate(sequence, rate, rng)))
    benchmark = os.path.join(args.work_dir, "benchmark.fasta")
    with open(benchmark, "w") as out:
        for header, sequence in list(read_fasta(args.queries))[:args.benchmark_size]:
            out.write(">%s\n%s\n" % (header.split()[0], sequence))
    return sample, benchmark


def time_search(sample, benchmark):
    """Seconds of the similarity step alone over all sample sequences, and how many it matched."""
    rules = validation.Rules()
    targets = decontaminate.read_benchmark_fasta(benchmark, rules)
    queries = [s.encode() for _, s in read_fasta_plain(sample)]
    started = time.monotonic()
    matched = 0
    with decontaminate.MmseqsSearch(targets, decontaminate.DEFAULT_MIN_IDENTITY,
                                    decontaminate.DEFAULT_MIN_COVERAGE) as search:
        for start in range(0, len(queries), decontaminate.DEFAULT_BATCH_SIZE):
            matched += len(search.search(queries[start:start + decontaminate.DEFAULT_BATCH_SIZE]))
            print("progress: searched %d / %d sequences" % (
                min(start + decontaminate.DEFAULT_BATCH_SIZE, len(queries)), len(queries)),
                flush=True)
    return time.monotonic() - started, matched


def read_fasta_plain(path):
    with open(path) as f:
        records = ("\n" + f.read()).split("\n>")[1:]
    for record in records:
        header, *lines = record.split("\n")
        yield header, "".join(lines)


def time_job(sample, out, extra):
    started = time.monotonic()
    value = uniref.run(["--input=" + sample, "--output_dir=" + out, "--overwrite",
                        "--release=bench", "--num_train_shards=8",
                        "--num_validation_shards=1"] + extra)
    return time.monotonic() - started, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=os.path.join(EXAMPLES, "DB.fasta.gz"))
    parser.add_argument("--queries", default=os.path.join(EXAMPLES, "QUERY.fasta.gz"))
    parser.add_argument("--num_sequences", type=int, default=100_000)
    parser.add_argument("--benchmark_size", type=int, default=300)
    parser.add_argument("--work_dir", default="/tmp/bench_decontamination")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    sample, benchmark = write_inputs(args)
    per_100k = 100_000 / args.num_sequences
    print("mmseqs %s; %d sequences; benchmark set of %d sequences" % (
        decontaminate.mmseqs_version(), args.num_sequences, args.benchmark_size))
    search_s, matched = time_search(sample, benchmark)
    print("similarity step alone: %.1f s (%.1f s per 100,000 sequences), %d matched" % (
        search_s, search_s * per_100k, matched))
    base_s, base = time_job(sample, os.path.join(args.work_dir, "baseline"), [])
    with_s, cleaned = time_job(sample, os.path.join(args.work_dir, "decontaminated"),
                               ["--benchmark_fasta=" + benchmark, "--decontaminate_validation"])
    print("job without decontamination (baseline): %.1f s" % base_s)
    print("job with benchmark + validation decontamination: %.1f s" % with_s)
    print("added: %.1f s per 100,000 sequences; ratio to baseline: %.2fx" % (
        (with_s - base_s) * per_100k, with_s / base_s))
    counts = cleaned["counts"]
    removed = {
        "records_read": counts["records_read"],
        "duplicates (exact dedup)": counts["duplicates"],
        "rejected by validation": sum(n for r, n in counts["rejected"].items()
                                      if r not in ("benchmark_overlap", "validation_overlap")),
        "benchmark_overlap": counts["rejected"]["benchmark_overlap"],
        "validation_overlap": counts["rejected"]["validation_overlap"],
        "train": counts["train"], "validation": counts["validation"],
    }
    print(json.dumps({"removed_per_step": removed,
                      "benchmark_files": cleaned["decontamination"]["benchmarks"],
                      "baseline_counts": base["counts"]}, indent=1))


if __name__ == "__main__":
    main()
