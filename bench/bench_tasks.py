"""Throughput of the `ankh3_pretrain` mixture on CPU, against tokenize-only over the same shards.

    python bench/bench_tasks.py [--examples=10000] [--rounds=5] [--threads=1] [--warmup=10000]

1. Writes TFRecord shards with the real UniRef pipeline (`pipelines.uniref.run`) from the bundled
   sample (`tests/data/uniref50_sample.fasta.gz`) into a temporary directory.
2. Baseline (the upper bound): read + parse + normalize + tokenize, i.e. the tasks' steps before
   `CacheDatasetPlaceholder`, repeated over the shards.
3. The mixture as T5X reads it without a cache (`ankh3_pretrain`, feature lengths 512/512,
   shuffling, crop/mask/cut, EOS), repeated over the shards.
Both run with tf.data limited to `--threads` threads and alternate for `--rounds` timed runs, so
that load from other processes on a shared machine hits both alike. Each run is timed by the
wall clock and by this process's CPU time: examples per CPU-second is the rate per core, and
unlike the wall-clock rate it does not drop when other processes take the cores. Each mixture
run is paired with the tokenize-only run just before it and the median of the rounds' ratios
counts, so that a burst of load does not decide the result. Rounds are long because a
pipeline's prefetch buffers fill in the background while the other one is timed, and that work
is charged to the other one's CPU time (rounds of 2,500 examples gave ratios over 100 %).
Prints the load average at the start, the median and best of both rates of each pipeline, the
median ratio per CPU-second with its quartiles (goal: mixture >= 50 % of tokenize-only), then
the example rate an Ankh3-Large TPU v4 host consumes and how many cores of this mixture keep up
with it.
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import param_count  # noqa: E402
from pipelines import uniref  # noqa: E402
from tasks import mixtures  # noqa: E402
import seqio  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "tests", "data", "uniref50_sample.fasta.gz")
LENGTHS = {"inputs": 512, "targets": 512}
ANKH3_LARGE_GIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "gin", "models", "ankh3_large.gin")
# A TPU v4 host: 4 chips x 275 TFLOP/s bf16 peak, at 50 % model FLOPs utilisation.
HOST_CHIPS, CHIP_PEAK_FLOPS, MFU = 4, 275e12, 0.5


def limit_threads(dataset: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def measure_rates(pipelines: dict, examples: int, warmup: int, rounds: int) -> dict:
    """For each pipeline, the examples/s (wall clock) and examples per CPU-second of this process
    of `rounds` timed runs, the pipelines alternating run by run."""
    iterators = {name: iter(dataset) for name, dataset in pipelines.items()}
    for iterator in iterators.values():
        for _ in range(warmup):
            next(iterator)
    rates = {name: {"wall": [], "cpu": []} for name in pipelines}
    for round_index in range(rounds):
        for name, iterator in iterators.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(examples):
                next(iterator)
            rates[name]["wall"].append(examples / (time.perf_counter() - wall))
            rates[name]["cpu"].append(examples / (time.process_time() - cpu))
            logging.info("round %d, %s: %.0f examples/s, %.0f examples/CPU-s", round_index + 1,
                         name, rates[name]["wall"][-1], rates[name]["cpu"][-1])
    return rates


def summary(values: list) -> str:
    return "median %6.0f, best %6.0f" % (statistics.median(values), max(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10000, help="per timed run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--warmup", type=int, default=10000,
        help="examples drawn before timing; the mixture's denoising tasks each get 1/6 of the "
             "draws, so filling their 1,000-example shuffle buffers takes ~6,000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as data_dir:
        manifest = uniref.run(["--input=" + SAMPLE, "--output_dir=" + data_dir,
                               "--release=sample", "--num_train_shards=8",
                               "--num_validation_shards=1"])
        mixture = mixtures.ankh3_pretrain_mixture(data_dir=data_dir)
        task = seqio.get_mixture_or_task("ankh3_complete")
        tokenized = task.preprocess_precache(
            task.source.get_dataset("train", shuffle=True, seed=0), seed=0).repeat()
        mixed = seqio.get_mixture_or_task(mixture).get_dataset(
            LENGTHS, split="train", shuffle=True, seed=0, num_epochs=None)
        rates = measure_rates({"tokenize-only": limit_threads(tokenized, args.threads),
                               "ankh3_pretrain": limit_threads(mixed, args.threads)},
                              args.examples, warmup=args.warmup, rounds=args.rounds)

    # The same FLOPs model as BUILD.md's sizing (models/param_count.py), at the padded feature
    # lengths T5X computes over; the batch size does not change the per-example rate.
    sizing = param_count.size_training_run(
        param_count.network_config_from_gin(ANKH3_LARGE_GIN), LENGTHS["inputs"],
        LENGTHS["targets"], batch_size=1, chips=HOST_CHIPS, peak_flops_per_chip=CHIP_PEAK_FLOPS,
        mfu=MFU)
    host_rate = sizing["examples_per_second"]
    print("shards: %d train proteins from %s" % (manifest["counts"]["train"], SAMPLE))
    print("load average at start (1/5/15 min): %.2f %.2f %.2f on %d cores"
          % (load_at_start + (os.cpu_count(),)))
    print("%d alternating rounds of %d examples, tf.data on %d thread(s):"
          % (args.rounds, args.examples, args.threads))
    for name, label in (("tokenize-only", "tokenize-only (baseline)"),
                        ("ankh3_pretrain", "ankh3_pretrain mixture")):
        print("  %-24s examples/s %s | examples/CPU-s (per core) %s"
              % (label, summary(rates[name]["wall"]), summary(rates[name]["cpu"])))
    per_core = statistics.median(rates["ankh3_pretrain"]["cpu"])
    ratios = {clock: [mixture / baseline for mixture, baseline in zip(
        rates["ankh3_pretrain"][clock], rates["tokenize-only"][clock])]
        for clock in ("cpu", "wall")}
    print("ratio mixture / tokenize-only, median of the rounds' ratios per core: %.1f %% "
          "(quartiles %.1f-%.1f %%; goal >= 50 %%); by wall clock: %.1f %%"
          % (100 * statistics.median(ratios["cpu"]),
             *(100 * q for q in statistics.quantiles(ratios["cpu"], n=4)[::2]),
             100 * statistics.median(ratios["wall"])))
    print("Ankh3-Large training FLOPs/example at %d/%d tokens (models/param_count.py): %.3g"
          % (LENGTHS["inputs"], LENGTHS["targets"], sizing["train_flops_per_example"]))
    print("TPU v4 host (4 x 275 TFLOP/s x 50 %% MFU): %.0f examples/s -> %.2f CPU cores of this "
          "mixture" % (host_rate, host_rate / per_core))


if __name__ == "__main__":
    main()
