"""Throughput of the `ankh3_pretrain` mixture on CPU, against tokenize-only over the same shards.

    python bench/bench_tasks.py [--examples=10000] [--rounds=3] [--threads=1]

1. Writes TFRecord shards with the real UniRef pipeline (`pipelines.uniref.run`) from the bundled
   sample (`tests/data/uniref50_sample.fasta.gz`) into a temporary directory.
2. Baseline (the upper bound): read + parse + normalize + tokenize, i.e. the tasks' steps before
   `CacheDatasetPlaceholder`, repeated over the shards.
3. The mixture as T5X reads it without a cache (`ankh3_pretrain`, feature lengths 512/512,
   shuffling, crop/mask/cut, EOS), repeated over the shards.
Both run with tf.data limited to `--threads` threads, so examples/s divided by threads is per
core; the two alternate for `--rounds` timed runs and the best run of each counts. Prints both rates and their ratio (goal: mixture >= 50 % of tokenize-only), then the
example rate an Ankh3-Large TPU v4 host consumes and how many such cores keep up with it.
"""
import argparse
import logging
import os
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


def best_rates(pipelines: dict, examples: int, warmup: int, rounds: int) -> dict:
    """examples/s of each pipeline: the best of `rounds` alternating timed runs, so that load
    from other processes on a shared machine hits both pipelines alike."""
    iterators = {name: iter(dataset) for name, dataset in pipelines.items()}
    for iterator in iterators.values():
        for _ in range(warmup):
            next(iterator)
    best = dict.fromkeys(pipelines, 0.0)
    for round_index in range(rounds):
        for name, iterator in iterators.items():
            start = time.perf_counter()
            for _ in range(examples):
                next(iterator)
            value = examples / (time.perf_counter() - start)
            logging.info("round %d, %s: %.0f examples/s", round_index + 1, name, value)
            best[name] = max(best[name], value)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10000, help="per timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--warmup", type=int, default=10000,
        help="examples drawn before timing; the mixture's denoising tasks each get 1/6 of the "
             "draws, so filling their 1,000-example shuffle buffers takes ~6,000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

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
        rates = best_rates({"tokenize-only": limit_threads(tokenized, args.threads),
                            "ankh3_pretrain": limit_threads(mixed, args.threads)},
                           args.examples, warmup=args.warmup, rounds=args.rounds)
        baseline, mixture_rate = rates["tokenize-only"], rates["ankh3_pretrain"]

    # The same FLOPs model as BUILD.md's sizing (models/param_count.py), at the padded feature
    # lengths T5X computes over; the batch size does not change the per-example rate.
    sizing = param_count.size_training_run(
        param_count.network_config_from_gin(ANKH3_LARGE_GIN), LENGTHS["inputs"],
        LENGTHS["targets"], batch_size=1, chips=HOST_CHIPS, peak_flops_per_chip=CHIP_PEAK_FLOPS,
        mfu=MFU)
    host_rate = sizing["examples_per_second"]
    per_core = mixture_rate / args.threads
    print("shards: %d train proteins from %s" % (manifest["counts"]["train"], SAMPLE))
    print("tokenize-only (baseline): %8.0f examples/s (%d thread(s): %.0f per core)"
          % (baseline, args.threads, baseline / args.threads))
    print("ankh3_pretrain mixture:   %8.0f examples/s (%d thread(s): %.0f per core)"
          % (mixture_rate, args.threads, per_core))
    print("ratio mixture / tokenize-only: %.1f %% (goal >= 50 %%)"
          % (100 * mixture_rate / baseline))
    print("Ankh3-Large training FLOPs/example at %d/%d tokens (models/param_count.py): %.3g"
          % (LENGTHS["inputs"], LENGTHS["targets"], sizing["train_flops_per_example"]))
    print("TPU v4 host (4 x 275 TFLOP/s x 50 %% MFU): %.0f examples/s -> %.2f CPU cores of this "
          "mixture" % (host_rate, host_rate / per_core))


if __name__ == "__main__":
    main()
