"""`make rehearse`: the TPU v4 runs rehearsed on this machine, with a short report to read before
launching a slice.

    python -m scripts.rehearse [--out=out/rehearse]

From the bundled sample, the real UniRef job writes two releases (8 and 2 train shards), then:

  1. partitioned training on 8 simulated CPU devices (scripts/rehearse_partitioned_training.py):
     the parameter -> partition spec table, losses of 2x4 and 8x1 against one device, a 2x4
     checkpoint restored on 4x2 and on one device;
  2. per-host input for 4 simulated hosts (seqio.ShardInfo, as t5x passes it): examples read by
     each host from every task, the mixture and the cluster-sampled source, with more train
     shards than hosts and with fewer (the by-example fallback, and its warning), and BUILD.md's
     shard counts checked against the rule for v4-64/128/256;
  3. bytes per chip of the Large and XL runs on v4-64/128/256 (models/memory.py);
  4. a seqio cache of one release, then `t5x.train` pointed at the other release with that cache:
     refused before the first step.
"""
import argparse
import collections
import logging
import os
import re
import subprocess
import sys
import time
from typing import List, Sequence

import seqio
import tensorflow as tf

from pipelines import tfrecords
from pipelines import uniref
from tasks import mixtures
from tasks import tasks as tasks_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO_ROOT, "tests", "data", "uniref50_sample.fasta.gz")
LENGTHS = {"inputs": 32, "targets": 32}
HOSTS = 4
# TPU v4: 4 chips per host, one jax device per chip; a v4-N slice has N / 2 chips.
V4_SLICES = {"v4-64": 32, "v4-128": 64, "v4-256": 128}
CHIPS_PER_HOST = 4
RUNS = {"Ankh3-Large": ("gin/runs/pretrain_ankh3_tpu_v4.gin", "1,2"),
        "Ankh3-XL": ("gin/runs/pretrain_ankh3_xl_tpu_v4.gin", "2,4,8")}


def write_release(output_dir: str, num_train_shards: int) -> dict:
    """The UniRef job on the bundled sample; also cluster shards (membership-mode format; of each
    3 consecutive train sequences the first 1-3 form one cluster), so both sampling policies
    run."""
    manifest = uniref.run(["--input=" + SAMPLE, "--output_dir=" + output_dir, "--release=sample",
                           "--overwrite", "--validation_fraction=0.1",
                           "--num_train_shards=%d" % num_train_shards,
                           "--num_validation_shards=1"])
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(
        os.path.join(output_dir, "train.tfrecord-*")))).map(
        lambda r: tf.io.parse_single_example(r, {
            "id": tf.io.FixedLenFeature([], tf.string),
            "sequence": tf.io.FixedLenFeature([], tf.string)}))
    members = [(x["id"].decode(), x["sequence"]) for x in records.as_numpy_iterator()]
    clusters = [members[i:i + 1 + (i // 3) % 3] for i in range(0, len(members), 3)]
    writers = [tf.io.TFRecordWriter(os.path.join(
        output_dir, "train_clusters.tfrecord-%05d-of-%05d" % (shard, num_train_shards)))
        for shard in range(num_train_shards)]
    for index, cluster in enumerate(clusters):
        writers[index % num_train_shards].write(tfrecords.cluster_example(
            "UniRef50_c%05d" % index, [m[0] for m in cluster], [m[1] for m in cluster]))
    for writer in writers:
        writer.close()
    return manifest


def cluster_of_member(data_dir: str) -> dict:
    """{member id: cluster id} of the release's `train_clusters.tfrecord-*`."""
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(
        os.path.join(data_dir, "train_clusters.tfrecord-*"))).map(
        lambda r: tf.io.parse_single_example(r, {
            "cluster_id": tf.io.FixedLenFeature([], tf.string),
            "member_ids": tf.io.VarLenFeature(tf.string)})).map(
        lambda x: {"cluster_id": x["cluster_id"],
                   "member_ids": tf.sparse.to_dense(x["member_ids"])})
    return {member.decode(): x["cluster_id"].decode() for x in records.as_numpy_iterator()
            for member in x["member_ids"]}


def host_parts(provider, feature: str, num_hosts: int = HOSTS, **kwargs) -> List[List[str]]:
    """For each host, `feature` of every example of one epoch of the host's part of the train
    split (`seqio.ShardInfo(host, num_hosts)`, as t5x passes `jax.process_index()`)."""
    return [[x[feature].decode() for x in provider.get_dataset(
        LENGTHS, split="train", shuffle=True, seed=11, num_epochs=1,
        shard_info=seqio.ShardInfo(host, num_hosts), **kwargs).as_numpy_iterator()]
        for host in range(num_hosts)]


def summarize_parts(parts: Sequence[Sequence[str]]) -> str:
    counts = collections.Counter(x for part in parts for x in part)
    shared = sum(1 for i in range(len(parts)) for j in range(i + 1, len(parts))
                 for _ in set(parts[i]) & set(parts[j]))
    return "per host %s, distinct %d, on 2+ hosts %d, seen more than once %d" % (
        [len(p) for p in parts], len(counts), shared, sum(1 for c in counts.values() if c > 1))


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def rehearse_input(releases: dict) -> None:
    """Part 2 of the module docstring."""
    for num_shards, (data_dir, manifest) in sorted(releases.items(), reverse=True):
        print("\n%d train shards, %d hosts, %d train sequences:" % (
            num_shards, HOSTS, manifest["counts"]["train"]))
        capture = _Capture()
        logging.getLogger().addHandler(capture)
        try:
            mixture = seqio.get_mixture_or_task(mixtures.ankh3_pretrain_mixture(data_dir))
            for task in mixture.tasks:
                print("  %-18s %s" % (task.name, summarize_parts(host_parts(task, "id"))))
            print("  %-18s %s" % ("mixture", summarize_parts(
                host_parts(mixture, "id", passthrough_features=["id"]))))
            clusters = seqio.get_mixture_or_task(mixtures.ankh3_pretrain_mixture(
                data_dir, sampling="clusters", mask_probabilities=(0.15,), denoising_share=1.0))
            cluster_of = cluster_of_member(data_dir)
            print("  %-18s %s (clusters)" % ("cluster-sampled", summarize_parts(
                [[cluster_of[m] for m in part] for part in host_parts(clusters.tasks[0], "id")])))
        finally:
            logging.getLogger().removeHandler(capture)
        fallback = [m for m in capture.messages if "falls back" in m]
        print("  by-example fallback warnings: %d%s" % (
            len(fallback), (" e.g.\n    " + fallback[0]) if fallback else ""))


def check_build_commands(build_md: str = os.path.join(REPO_ROOT, "BUILD.md")) -> None:
    """BUILD.md's `--num_train_shards` and `--min_shards` against the rule, per v4 slice."""
    with open(build_md) as f:
        text = f.read()
    print("\nBUILD.md's shard counts against the rule (>= hosts; %d per host recommended):"
          % tasks_lib.TRAIN_SHARDS_PER_HOST)
    for flag in ("--num_train_shards", "--min_shards"):
        for value in sorted({int(v) for v in re.findall(re.escape(flag) + r"=(\d+)", text)}):
            verdicts = []
            for name, chips in V4_SLICES.items():
                hosts = chips // CHIPS_PER_HOST
                verdict = ("fallback!" if value < hosts else
                           "ok" if value >= tasks_lib.recommended_train_shards(hosts)
                           and value % hosts == 0 else "uneven/few")
                verdicts.append("%s (%d hosts) %s" % (name, hosts, verdict))
            print("  %s=%d: %s" % (flag, value, ", ".join(verdicts)))


def rehearse_cache(releases: dict, out: str) -> None:
    """Part 4: cache the 8-shard release, then train on the 2-shard one with that cache."""
    from tasks import cache_tasks  # pylint: disable=import-outside-toplevel

    made_from, other = releases[8][0], releases[2][0]
    cache_dir = os.path.join(out, "seqio_cache")
    one_task = ["ankh3_pretrain_mixture.mask_probabilities = (0.15,)",
                "ankh3_pretrain_mixture.denoising_share = 1.0"]
    cache_tasks.run(["--gin_bindings=import tasks.mixtures",
                     "--gin_bindings=ankh3_pretrain_mixture.data_dir = %r" % made_from]
                    + ["--gin_bindings=" + b for b in one_task]
                    + ["--output_cache_dir=" + cache_dir, "--min_shards=4", "--overwrite",
                       "--pipeline_options=--runner=DirectRunner"])
    log = os.path.join(out, "cached_train.log")
    command = [sys.executable, "-m", "t5x.train", "--gin_file=gin/runs/demo_cpu.gin",
               "--gin.MODEL_DIR='%s'" % os.path.join(out, "cached_model"),
               "--gin.DATA_DIR='%s'" % other, "--gin.TRAIN_STEPS=1",
               "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS=%r" % LENGTHS,
               "--gin.train.train_eval_dataset_cfg=None",
               "--gin.train.run_eval_before_training=False",
               "--gin.train/utils.DatasetConfig.use_cached=True",
               "--seqio_additional_cache_dirs=" + cache_dir] + ["--gin." + b.replace(" ", "")
                                                               for b in one_task]
    with open(log, "w") as f:
        status = subprocess.call(command, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    with open(log) as f:
        text = f.read()
    refusal = re.search(r"CacheMismatchError: (.*?)\nPoint", text, re.DOTALL)
    trained = os.path.exists(os.path.join(out, "cached_model", "checkpoint_1"))
    print("\nseqio cache of %s, t5x.train --gin.DATA_DIR=%s with it: exit %d, %s" % (
        made_from, other, status, "trained (WRONG)" if trained else "no step trained"))
    print("  " + (refusal.group(1).replace("\n", "\n  ") if refusal
                  else "no CacheMismatchError in %s" % log))


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("out", "rehearse"))
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    tf.io.gfile.makedirs(out)
    started = time.time()
    releases = {}
    for num_shards in (8, 2):
        data_dir = os.path.join(out, "uniref_%d_shards" % num_shards)
        releases[num_shards] = (data_dir, write_release(data_dir, num_shards))

    print("=== 1. partitioned training on 8 simulated devices ===", flush=True)
    work_dir = os.path.join(out, "partitioned")
    if os.path.exists(work_dir):
        tf.io.gfile.rmtree(work_dir)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.check_call([sys.executable, "-m", "scripts.rehearse_partitioned_training",
                           "--data_dir=" + releases[8][0], "--work_dir=" + work_dir,
                           "--json=" + os.path.join(out, "partitioned.json")],
                          cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)

    print("\n=== 2. per-host input, %d simulated hosts ===" % HOSTS)
    rehearse_input(releases)
    check_build_commands()

    print("\n=== 3. bytes per chip (python -m models.param_count --memory) ===", flush=True)
    for name, (gin_file, partitions) in RUNS.items():
        print(name)
        subprocess.check_call([sys.executable, "-m", "models.param_count", "--memory",
                               "--gin_file=" + gin_file, "--num_partitions=" + partitions,
                               "--num_devices=" + ",".join(map(str, V4_SLICES.values()))],
                              cwd=REPO_ROOT, stderr=subprocess.DEVNULL)

    print("\n=== 4. cache identity ===", flush=True)
    rehearse_cache(releases, out)
    print("\nrehearsal done in %.0f s; outputs in %s" % (time.time() - started, out))


if __name__ == "__main__":
    main()
