"""Cluster-weighted sampling: uniform over clusters whatever their sizes, uniform within one."""
import collections
import gzip
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
from scipy import stats

from pipelines import records
from pipelines import tfrecords
from tasks import cluster_sampling
from tasks import mixtures
from tasks import tasks

SAMPLE = os.path.join("tests", "data", "uniref50_sample.fasta.gz")
# Wildly different cluster sizes: one member to two thousand.
CLUSTER_SIZES = {"UniRef50_single": 1, "UniRef50_pair": 2, "UniRef50_twenty": 20,
                 "UniRef50_two_hundred": 200, "UniRef50_two_thousand": 2000}
P_VALUE = 0.001


# Members are the first residues of real sequences: the draws parse every member of a cluster
# on each visit, and what is tested is which member is drawn, not its residues.
MEMBER_RESIDUES = 16


def _real_sequences():
    with gzip.open(SAMPLE, "rt") as f:
        records = ("\n" + f.read()).split("\n>")[1:]
    return ["".join(r.split("\n")[1:])[:MEMBER_RESIDUES].encode() for r in records]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two cluster shards and one validation shard, in the job's formats."""
    directory = tmp_path_factory.mktemp("clusters")
    sequences = _real_sequences()
    examples, used = [], 0
    for cluster_id, size in CLUSTER_SIZES.items():
        members = [sequences[(used + i) % len(sequences)] for i in range(size)]
        ids = ["%s_m%04d" % (cluster_id.replace("UniRef50", "UniRef90"), i) for i in range(size)]
        used += size
        examples.append(tfrecords.cluster_example(cluster_id, ids, members))
    for shard in range(2):
        with tf.io.TFRecordWriter(str(directory / (
                "train_clusters.tfrecord-%05d-of-00002" % shard))) as writer:
            for example in examples[shard::2]:
                writer.write(example)
    with tf.io.TFRecordWriter(str(directory / "validation.tfrecord-00000-of-00001")) as writer:
        encoder = tfrecords.RecordEncoder()
        for i in range(3):
            writer.write(encoder.encode(records.Record(
                "UniRef90_val%d" % i, "UniRef50_val", sequences[i], b"", 1, 0, "", 0)))
    return str(directory)


def _draws(data_dir, count, seed=7):
    """`count` draws through a real seqio Task: source, seqio's repeat, then the member draw."""
    name = "test_cluster_draws"
    seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(
        name, source=cluster_sampling.ClusterSampledSource(data_dir),
        preprocessors=[cluster_sampling.sample_cluster_member], output_features={})
    dataset = task.get_dataset(None, split="train", shuffle=True, seed=seed, num_epochs=None)
    return [(x["cluster_id"].decode(), x["id"].decode())
            for x in dataset.take(count).as_numpy_iterator()]


def test_draws_are_uniform_over_clusters_and_over_members(data_dir):
    draws = _draws(data_dir, 5000)
    per_cluster = collections.Counter(cluster for cluster, _ in draws)
    assert set(per_cluster) == set(CLUSTER_SIZES)
    observed = [per_cluster[c] for c in CLUSTER_SIZES]
    # Each epoch visits each cluster once; the bound is the acceptance criterion's:
    # chi-square against uniform, p > 0.001.
    assert stats.chisquare(observed).pvalue > P_VALUE, observed
    within = collections.Counter(m for c, m in draws if c == "UniRef50_twenty")
    assert len(within) == 20
    members = [within[m] for m in sorted(within)]
    assert stats.chisquare(members).pvalue > P_VALUE, members
    # 1,000 draws of the 2,000-member cluster spread over many members, not one.
    assert len({m for c, m in draws if c == "UniRef50_two_thousand"}) > 500


def test_the_uniformity_test_rejects_sampling_by_sequence(data_dir):
    """The same chi-square test fails for per-sequence sampling, where big clusters dominate."""
    flat = [c for c, size in CLUSTER_SIZES.items() for _ in range(size)]
    rng = np.random.default_rng(0)
    per_cluster = collections.Counter(flat[i] for i in rng.integers(0, len(flat), 5000))
    observed = [per_cluster[c] for c in CLUSTER_SIZES]
    assert stats.chisquare(observed).pvalue < P_VALUE


def test_draws_are_reproducible_and_change_across_epochs(data_dir):
    first, again = _draws(data_dir, 100, seed=3), _draws(data_dir, 100, seed=3)
    assert first == again
    assert first != _draws(data_dir, 100, seed=4)
    # The 2000-member cluster is visited once per epoch (5 clusters; seqio's shuffle buffer
    # mixes neighbouring epochs): ~20 visits in 100 draws, each drawing a member anew.
    big = [m for c, m in first if c == "UniRef50_two_thousand"]
    assert len(big) >= 10 and len(set(big)) >= len(big) - 3


def test_validation_records_are_one_member_clusters(data_dir):
    source = cluster_sampling.ClusterSampledSource(data_dir)
    drawn = cluster_sampling.sample_cluster_member(
        source.get_dataset("validation", shuffle=False))
    with seqio.utils.map_seed_manager(1):
        values = sorted(x["id"] for x in drawn.as_numpy_iterator())
    assert values == [b"UniRef90_val0", b"UniRef90_val1", b"UniRef90_val2"]
    assert not source.caching_permitted


def test_mixture_selects_cluster_sampling_by_gin_parameter(data_dir):
    import gin

    with gin.unlock_config():
        gin.parse_config("tasks.mixtures.ankh3_pretrain_mixture.sampling = 'clusters'")
    try:
        name = mixtures.ankh3_pretrain_mixture(data_dir=data_dir, mask_probabilities=(0.2,))
    finally:
        gin.clear_config()
    task = seqio.get_mixture_or_task(name).tasks[0]
    assert isinstance(task.source, cluster_sampling.ClusterSampledSource)
    assert not task.supports_caching
    dataset = task.get_dataset({"inputs": 64, "targets": 64}, split="train", seed=1,
                               num_epochs=None)
    example = next(dataset.as_numpy_iterator())
    assert example["inputs"].size > 0 and example["targets"].size > 0
    with pytest.raises(ValueError, match="sampling must be one of"):
        tasks.register_completion_task(data_dir, task.output_features["inputs"].vocabulary,
                                       sampling="members")
    mixtures.ankh3_pretrain_mixture(data_dir=data_dir)  # back to representatives
