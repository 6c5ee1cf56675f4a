"""Benchmark: what decontamination costs, against the same job without it (the baseline).

    python bench/bench_decontamination.py [--source=DB.fasta.gz] [--queries=QUERY.fasta.gz]
        [--num_sequences=100000] [--benchmark_size=300] [--work_dir=/tmp/bench_decontamination]

Input: `--num_sequences` real UniProtKB sequences from Debian's mmseqs2-examples `DB.fasta.gz`
(20,000 entries; found as `real_sample.find_source` says), each entry used several times with
1-25 % random substitutions so that the set is large and holds near-duplicates. Benchmark set:
the first `--benchmark_size` entries of `QUERY.fasta.gz` (real UniProtKB entries, beside
`DB.fasta.gz` in the package). It runs, on the default runner:

1. the similarity step alone (`decontaminate.MmseqsSearch` over all sequences in the job's
   batch size), seconds per 100,000 sequences;
2. the job without decontamination (baseline) and the job with `--benchmark_fasta` and
   `--decontaminate_validation`, and prints seconds added per 100,000 sequences and the ratio,
   and what each step removed.
"""
import argparse
import json
import logging
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import real_sample  # pylint: disable=wrong-import-position
from pipelines import decontaminate  # pylint: disable=wrong-import-position
from pipelines import uniref  # pylint: disable=wrong-import-position
from pipelines import records  # pylint: disable=wrong-import-position

RATES = (0.01, 0.03, 0.06, 0.12, 0.25)


def write_inputs(source, queries, num_sequences, benchmark_size, work_dir):
    """Writes the mutated sample (one FASTA) and the benchmark set; returns their paths and the
    sample's sequences."""
    rng = random.Random(0)
    entries = list(real_sample.read_fasta(source))
    sample, sequences = os.path.join(work_dir, "sample.fasta"), []
    with open(sample, "wb") as out:
        for i in range(num_sequences):
            header, sequence = entries[i % len(entries)]
            rate = RATES[(i // len(entries)) % len(RATES)]
            sequences.append(real_sample.mutate(sequence, round(rate * len(sequence)), rng))
            out.write(b">s%06d %s\n%s\n" % (i, header.split()[0].encode(), sequences[-1]))
    benchmark = os.path.join(work_dir, "benchmark.fasta")
    with open(benchmark, "wb") as out:
        for header, sequence in list(real_sample.read_fasta(queries))[:benchmark_size]:
            out.write(b">%s\n%s\n" % (header.split()[0].encode(), sequence))
    return sample, benchmark, sequences


def time_search(sequences, benchmark):
    """Seconds of the similarity step alone over `sequences`, and how many it matched."""
    targets = decontaminate.read_benchmark_fasta(benchmark, records.Rules())
    batch_size = decontaminate.DEFAULT_BATCH_SIZE
    started = time.monotonic()
    matched = 0
    with decontaminate.MmseqsSearch(targets, decontaminate.DEFAULT_MIN_IDENTITY,
                                    decontaminate.DEFAULT_MIN_COVERAGE) as search:
        for start in range(0, len(sequences), batch_size):
            matched += len(search.search(sequences[start:start + batch_size]))
            logging.info("similarity step: searched %d / %d sequences",
                         min(start + batch_size, len(sequences)), len(sequences))
    return time.monotonic() - started, matched


def time_job(sample, out, extra):
    """Seconds of the whole job over `sample` with the `extra` flags, and its manifest."""
    started = time.monotonic()
    value = uniref.run(["--input=" + sample, "--output_dir=" + out, "--overwrite",
                        "--release=bench", "--num_train_shards=8",
                        "--num_validation_shards=1"] + extra)
    return time.monotonic() - started, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=None,
                        help="DB.fasta.gz of mmseqs2-examples (default: the Debian paths).")
    parser.add_argument("--queries", default=None,
                        help="QUERY.fasta.gz of mmseqs2-examples (default: beside DB.fasta.gz).")
    parser.add_argument("--num_sequences", type=int, default=100_000)
    parser.add_argument("--benchmark_size", type=int, default=300)
    parser.add_argument("--work_dir", default="/tmp/bench_decontamination")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The jobs' own logging (one line per Beam stage and per search batch) would drown the figures.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    source = real_sample.find_source(args.source, "bench_decontamination")
    queries = args.queries or os.path.join(os.path.dirname(source), "QUERY.fasta.gz")
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    sample, benchmark, sequences = write_inputs(source, queries, args.num_sequences,
                                                args.benchmark_size, args.work_dir)
    per_100k = 100_000 / args.num_sequences
    print("mmseqs %s; %d sequences; benchmark set of %d sequences" % (
        decontaminate.mmseqs_version(), args.num_sequences, args.benchmark_size))
    search_s, matched = time_search(sequences, benchmark)
    print("similarity step alone: %.1f s (%.1f s per 100,000 sequences), %d matched" % (
        search_s, search_s * per_100k, matched))
    # The baseline runs before and after the decontaminating job, so that the shared machine's
    # load hits both alike; the comparison uses their mean.
    before_s, base = time_job(sample, os.path.join(args.work_dir, "baseline"), [])
    with_s, cleaned = time_job(sample, os.path.join(args.work_dir, "decontaminated"),
                               ["--benchmark_fasta=" + benchmark, "--decontaminate_validation"])
    after_s, _ = time_job(sample, os.path.join(args.work_dir, "baseline"), [])
    base_s = (before_s + after_s) / 2
    print("job without decontamination (baseline): %.1f s (%.1f s before, %.1f s after)" % (
        base_s, before_s, after_s))
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
