"""Cluster-weighted sampling (the ESM-2 / BioNeMo recipe) as a SeqIO data option.

Instead of one UniRef50 representative per cluster, each training example is drawn by picking a
UniRef50 cluster uniformly and then one of its UniRef90 members uniformly. It needs the shards
that `pipelines/` writes in membership mode with `--write_cluster_shards`:
`train_clusters.tfrecord-*`, one `tf.train.Example` per UniRef50 cluster (`cluster_id`,
`member_ids`, `member_sequences`). The validation split stays the job's per-sequence
`validation.tfrecord-*` (whole UniRef50 clusters, since the job splits by UniRef50 cluster).

- `ClusterSampledSource` reads train as clusters, and validation records as one-member
  clusters, so that both splits take the same preprocessors.
- `sample_cluster_member` picks the member. It must run after seqio's `repeat` (no
  `CacheDatasetPlaceholder` before it: seqio repeats between the cached and the post-cache
  preprocessors), so that each epoch draws new members: every epoch visits every cluster once,
  and each visit draws a member with a stateless seed that seqio derives from the task's seed
  and the example's position. Draws are therefore uniform over clusters whatever their sizes,
  uniform over members within a cluster, and reproducible for a fixed seed.

The source forbids caching (`caching_permitted=False`): a cache would freeze one member per
cluster. Select it with `ankh3_pretrain_mixture.sampling = 'clusters'`.
"""
import os

import seqio
import tensorflow as tf

REPRESENTATIVES = "representatives"
CLUSTERS = "clusters"
SAMPLING_POLICIES = (REPRESENTATIVES, CLUSTERS)
TRAIN_PATTERN = "train_clusters.tfrecord-*"
VALIDATION_PATTERN = "validation.tfrecord-*"

_CLUSTER_FEATURES = {
    "cluster_id": tf.io.FixedLenFeature([], tf.string),
    "member_ids": tf.io.VarLenFeature(tf.string),
    "member_sequences": tf.io.VarLenFeature(tf.string),
}
_SEQUENCE_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "cluster_id": tf.io.FixedLenFeature([], tf.string),
    "sequence": tf.io.FixedLenFeature([], tf.string),
}


def _parse_cluster(record: tf.Tensor) -> dict:
    example = tf.io.parse_single_example(record, _CLUSTER_FEATURES)
    return {"cluster_id": example["cluster_id"],
            "member_ids": tf.sparse.to_dense(example["member_ids"]),
            "member_sequences": tf.sparse.to_dense(example["member_sequences"])}


def _parse_sequence_as_cluster(record: tf.Tensor) -> dict:
    example = tf.io.parse_single_example(record, _SEQUENCE_FEATURES)
    return {"cluster_id": example["cluster_id"], "member_ids": tf.reshape(example["id"], [1]),
            "member_sequences": tf.reshape(example["sequence"], [1])}


class ClusterSampledSource(seqio.FileDataSource):
    """Train: `train_clusters.tfrecord-*`; validation: `validation.tfrecord-*` as one-member
    clusters. Output features: `cluster_id` (string), `member_ids` and `member_sequences`
    ([n] strings).

    `seed_salt` offsets the file-shuffle seed, so that the tasks of a mixture, which seqio gives
    one seed, do not read the files in the same order.
    """

    def __init__(self, data_dir: str, seed_salt: int = 0):
        self._seed_salt = seed_salt
        super().__init__(
            read_file_fn=tf.data.TFRecordDataset,
            split_to_filepattern={"train": os.path.join(data_dir, TRAIN_PATTERN),
                                  "validation": os.path.join(data_dir, VALIDATION_PATTERN)},
            caching_permitted=False)

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **kwargs):
        """The split's clusters (see the class docstring), files shuffled when `shuffle`."""
        salted = None if seed is None else (seed + self._seed_salt) % 2**31
        records = super().get_dataset(split, shuffle, salted, shard_info, **kwargs)
        parse = _parse_cluster if split == "train" else _parse_sequence_as_cluster
        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def sample_cluster_member(dataset: tf.data.Dataset, seed_salt: int = 0) -> tf.data.Dataset:
    """Draws one member of each cluster, uniformly, with a stateless per-example seed.

    Input features: `cluster_id` (string), `member_ids`, `member_sequences` ([n] strings,
    n >= 1). Output features: `id`, `cluster_id`, `sequence` (strings) of the drawn member.
    `seed_salt` is folded into seqio's seed so that sibling tasks draw differently.
    """

    @seqio.map_over_dataset(num_seeds=1)
    def draw(example, seed):
        salted = tf.random.experimental.stateless_fold_in(
            tf.cast(tf.stack(seed), tf.int64), seed_salt)
        count = tf.size(example["member_ids"])
        check = tf.debugging.assert_positive(
            count, message="a cluster without members in the cluster shards")
        with tf.control_dependencies([check]):
            index = tf.random.stateless_uniform([], salted, minval=0, maxval=count,
                                                dtype=tf.int32)
        return {"id": example["member_ids"][index], "cluster_id": example["cluster_id"],
                "sequence": example["member_sequences"][index]}

    return draw(dataset)
