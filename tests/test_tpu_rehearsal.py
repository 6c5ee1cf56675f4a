"""The TPU v4 runs rehearsed on this machine: partitioned training on simulated devices, per-host
input sharding, and the seqio cache's identity check. Everything reads real `pipelines.uniref`
output of the bundled sample.

The partitioned run needs 8 jax devices, which jax fixes when it starts; it runs in a subprocess
(`scripts/rehearse_partitioned_training.py`, which sets XLA_FLAGS) while this process keeps the
suite's single CPU device. That subprocess runs in the session's background queue
(tests/conftest.py: `partitioned_training`); its test waits for it.
"""
import collections
import hashlib
import importlib.util
import json
import logging
import os
import shutil

import pytest
import seqio
import tensorflow as tf

from scripts import rehearse
from tasks import cache_identity
from tasks import mixtures
from tasks import tasks as tasks_lib

HOSTS = 4
LENGTHS = {"inputs": 32, "targets": 32}
MORE_SHARDS, FEWER_SHARDS = 8, 2  # than HOSTS (tests/conftest.py: `rehearsal_releases`)
NEEDS_T5X = pytest.mark.skipif(
    importlib.util.find_spec("t5x") is None,
    reason="t5x not installed: pip install --no-deps -r requirements-t5x.txt")


@pytest.fixture(scope="module")
def releases(rehearsal_releases):
    """{train shards: (data dir, manifest, train ids, cluster ids)} for 8 and 2 train shards
    (tests/conftest.py: the suite's rehearsal releases)."""
    out = {}
    for num_shards in (MORE_SHARDS, FEWER_SHARDS):
        data_dir, manifest = rehearsal_releases[num_shards]
        ids = sorted(_read(data_dir, "train.tfrecord-*", "id"))
        assert len(ids) == manifest["counts"]["train"] > 800
        clusters = sorted(set(rehearse.cluster_of_member(data_dir).values()))
        assert len(clusters) > 200
        out[num_shards] = (data_dir, manifest, ids, clusters)
    return out


def _read(data_dir, pattern, feature):
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(data_dir, pattern))).map(
        lambda r: tf.io.parse_single_example(r, {feature: tf.io.FixedLenFeature([], tf.string)}))
    return [x[feature].decode() for x in records.as_numpy_iterator()]


def _assert_partition(per_host, epoch):
    """The hosts' parts are disjoint and together are the epoch, each example once."""
    counts = collections.Counter(x for part in per_host for x in part)
    assert sorted(counts) == sorted(epoch)
    assert set(counts.values()) == {1}
    for i in range(HOSTS):
        assert per_host[i], "host %d read nothing" % i
        for j in range(i + 1, HOSTS):
            assert not set(per_host[i]) & set(per_host[j])


@pytest.mark.parametrize("num_shards", [MORE_SHARDS, FEWER_SHARDS])
def test_each_host_reads_a_disjoint_part_of_every_task_and_the_mixture(
        releases, num_shards, caplog):
    data_dir, _, ids, _ = releases[num_shards]
    mixture = seqio.get_mixture_or_task(mixtures.ankh3_pretrain_mixture(data_dir))
    assert len(mixture.tasks) == 4
    with caplog.at_level(logging.WARNING):
        for task in mixture.tasks:
            _assert_partition(rehearse.host_parts(task, "id"), ids)
    fallback = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    # seqio mixes tasks that each read the host's part, and a one-epoch mixture ends when its
    # first task has given all of that part: every protein on exactly one host, up to once per
    # task.
    per_host = rehearse.host_parts(mixture, "id", passthrough_features=["id"])
    counts = collections.Counter(x for part in per_host for x in part)
    assert sorted(counts) == ids
    assert set(counts.values()) <= set(range(1, len(mixture.tasks) + 1))
    shared = set.union(*(set(per_host[i]) & set(per_host[j])
                         for i in range(HOSTS) for j in range(i + 1, HOSTS)))
    if num_shards >= HOSTS:
        assert not shared  # by file: host i reads files i, i + HOSTS, ... in every task
        assert not fallback
    else:
        # By example, each task keeps every HOSTS-th example of its own file order (the tasks'
        # orders differ), so a protein is on one host per task but not the same host.
        assert shared
        assert len(fallback) == len(mixture.tasks) * HOSTS  # each task, on each host
        for message in fallback:
            assert data_dir in message, message
            assert "every host reads every file" in message.lower()
            assert "--num_train_shards=%d" % (tasks_lib.TRAIN_SHARDS_PER_HOST * HOSTS) in message


@pytest.mark.parametrize("num_shards", [MORE_SHARDS, FEWER_SHARDS])
def test_each_host_samples_a_disjoint_part_of_the_clusters(releases, num_shards):
    data_dir, _, _, clusters = releases[num_shards]
    mixture = seqio.get_mixture_or_task(
        mixtures.ankh3_pretrain_mixture(data_dir, sampling="clusters", denoising_share=1.0,
                                        mask_probabilities=(0.15,)))
    (task,) = mixture.tasks
    cluster_of = rehearse.cluster_of_member(data_dir)
    per_host = [[cluster_of[member] for member in part]
                for part in rehearse.host_parts(task, "id")]
    _assert_partition(per_host, clusters)  # one member drawn per cluster, on one host


@pytest.fixture(scope="module")
def cached(releases, seqio_cache):
    """A real seqio cache (Beam DirectRunner) of the 8-shard release, whose ankh3_denoise_p15
    these tests read (tests/conftest.py: the suite's seqio cache), among seqio's cache dirs."""
    assert seqio_cache["data_dir"] == releases[MORE_SHARDS][0]
    previous = list(seqio.utils.get_global_cache_dirs())
    seqio.add_global_cache_dirs([seqio_cache["dir"]])
    yield seqio_cache["dir"]
    seqio.set_global_cache_dirs(previous)


def _one_task_mixture(data_dir):
    mixtures.ankh3_pretrain_mixture(data_dir, mask_probabilities=(0.15,), denoising_share=1.0)
    task = seqio.get_mixture_or_task("ankh3_denoise_p15")
    task._cache_dir = None  # seqio remembers where it found a cache; look again
    return task


def test_cache_records_what_it_was_made_from(releases, cached):
    data_dir, _, ids, _ = releases[MORE_SHARDS]
    recorded = cache_identity.read_identity(os.path.join(cached, "ankh3_denoise_p15"))
    with open(os.path.join(data_dir, "manifest.json"), "rb") as f:
        assert recorded["manifest_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert recorded["data_dir"] == data_dir
    assert recorded["vocabulary"]["vocab_size"] == 256
    assert [step["fn"].rsplit(".", 1)[1] for step in recorded["preprocessors"]] == [
        "normalize_sequence", "tokenize_residues"]
    task = _one_task_mixture(data_dir)
    seen = sorted(x["id"].decode() for x in task.get_dataset(
        LENGTHS, use_cached=True, shuffle=False).as_numpy_iterator())
    assert seen == ids


def test_a_cache_of_another_release_is_refused_naming_both(releases, cached):
    made_from, other = releases[MORE_SHARDS][0], releases[FEWER_SHARDS][0]
    task = _one_task_mixture(other)
    with pytest.raises(cache_identity.CacheMismatchError) as error:
        task.get_dataset(LENGTHS, use_cached=True, shuffle=False)
    message = str(error.value)
    assert made_from in message and other in message and "manifest_sha256" in message
    assert os.path.join(cached, "ankh3_denoise_p15") in message
    # Uncached, the same task reads its own release.
    assert next(task.get_dataset(LENGTHS, use_cached=False).as_numpy_iterator())


def test_a_cache_without_a_record_is_refused(releases, cached, tmp_path):
    data_dir = releases[MORE_SHARDS][0]
    copy = str(tmp_path / "copy")
    tf.io.gfile.makedirs(copy)
    shutil.copytree(os.path.join(cached, "ankh3_denoise_p15"),
                    os.path.join(copy, "ankh3_denoise_p15"))
    os.remove(os.path.join(copy, "ankh3_denoise_p15", cache_identity.IDENTITY_FILE))
    task = _one_task_mixture(data_dir)
    task._cache_dir = os.path.join(copy, "ankh3_denoise_p15")
    with pytest.raises(cache_identity.CacheMismatchError, match="has no ankh3_cache_identity"):
        task.get_dataset(LENGTHS, use_cached=True)


@NEEDS_T5X
def test_partitioned_training_on_simulated_devices(partitioned_training):
    """2x4 and 8x1 meshes train with the unpartitioned run's losses; a 2x4 checkpoint restores
    on 4x2 and on one device and training continues with the same losses."""
    with open(partitioned_training["log"]) as log:  # exited 0 (tests/conftest.py)
        output = log.read()
    with open(partitioned_training["report"]) as f:
        figures = json.load(f)
    assert figures["num_devices"] == 8
    assert set(figures["runs"]) == {"2x4", "8x1", "4x2<-2x4", "1x1<-2x4"}
    reference = figures["reference_losses"]
    assert len({round(v, 4) for v in reference.values()}) == 4  # the steps differ
    for name, run in figures["runs"].items():
        assert run["steps"] == ([3, 4] if "<-" in name else [1, 2, 3, 4]), name
        assert run["max_rel_diff"] < 1e-5, (name, run)
    assert figures["misplaced"] == []
    specs = {row["name"]: row["spec"] for row in figures["partition_table"]}
    assert specs["encoder/layers_0/mlp/wi_0/kernel"] == "(None, 'model')"
    assert specs["encoder/layers_0/attention/out/kernel"] == "('model', None)"
    assert specs["decoder/logits_dense/kernel"] == "(None, 'model')"
    # Adafactor: factored moments of the matrices (replicated vectors), full ones of vectors.
    assert specs["param_states/encoder/layers_0/mlp/wi_0/kernel/v_row"] == "None"
    assert specs["param_states/encoder/layers_0/mlp/wi_0/kernel/v_col"] == "None"
    assert specs["param_states/encoder/encoder_norm/scale/v"] == "(None,)"
    assert "2x4" in output and "partition spec" in output
