"""Registration of the Ankh3 SeqIO tasks: one denoising task per masking probability, one
completion task. Registering has no side effect beyond seqio's TaskRegistry and is idempotent
(an existing task of the same name is replaced); `tasks.mixtures` calls these functions.

Every task reads the `train.tfrecord-*` / `validation.tfrecord-*` shards that `pipelines/` writes
(features `id` and `sequence`), and runs:

    normalize_sequence, tokenize_residues      deterministic: cached by seqio's cache job
    CacheDatasetPlaceholder
    denoise | complete                          random (crop, mask, cut), seeded per example
    append_eos_after_trim                       EOS on inputs and targets
    fuse_maps                                   tf.data map fusion (same examples, less CPU)

and produces `inputs` and `targets` (int32 ids), what t5x's EncoderDecoderModel consumes.
With `sampling="clusters"` a task reads `train_clusters.tfrecord-*` instead and starts with
`sample_cluster_member` (tasks/cluster_sampling.py), with no cache placeholder.
"""
import functools
import logging
import os
import zlib
from typing import Sequence

import seqio
import tensorflow as tf

from tasks import cache_identity
from tasks import cluster_sampling
from tasks import metrics
from tasks import preprocessors

TASK_PREFIX = "ankh3_"
COMPLETION_TASK = TASK_PREFIX + "complete"
SPLITS = ("train", "validation")
# Hosts of a multi-host slice read disjoint files (seqio.ShardInfo) when there are at least as
# many files as hosts; 32 files per host keeps the file shuffle of each host's part meaningful.
TRAIN_SHARDS_PER_HOST = 32
_FEATURE_DESCRIPTION = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "sequence": tf.io.FixedLenFeature([], tf.string),
}


def denoising_task_name(mask_probability: float) -> str:
    """`ankh3_denoise_p15` for 0.15 (`p12_5` for 0.125)."""
    percent = ("%.6g" % (100.0 * mask_probability)).replace(".", "_")
    return "%sdenoise_p%s" % (TASK_PREFIX, percent)


def _seed_salt(task_name: str) -> int:
    """A stable number that makes a task's random draws differ from its siblings' (seqio gives
    every task of a mixture the same seed)."""
    return zlib.crc32(task_name.encode())


class _TaskSeededTFExampleDataSource(seqio.TFExampleDataSource):
    """A TFExampleDataSource that offsets the file-shuffle seed by a per-task salt, so the tasks
    of a mixture, which read the same shards with the same seed, do not read them in the same
    order (and then show one protein under every objective at the same time)."""

    def __init__(self, seed_salt: int, **kwargs):
        self._seed_salt = seed_salt
        super().__init__(**kwargs)

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **kwargs):
        salted = None if seed is None else (seed + self._seed_salt) % 2**31
        return super().get_dataset(split, shuffle, salted, shard_info, **kwargs)


def recommended_train_shards(num_hosts: int) -> int:
    """The `--num_train_shards` to give pipelines.uniref for a slice of `num_hosts` hosts."""
    return TRAIN_SHARDS_PER_HOST * num_hosts


class Ankh3Task(seqio.Task):
    """A seqio Task that knows its data directory, so that it can

    - refuse, with `use_cached=True`, a cache made from another data directory, vocabulary or
      preprocessing (tasks/cache_identity.py), before any example is read;
    - warn when the train split has fewer files than the hosts reading it: seqio then shards by
      example, so every host reads every file, all of UniRef50 per epoch on each host.
    """

    def __init__(self, name: str, data_dir: str, **kwargs):
        super().__init__(name, **kwargs)
        self.data_dir = data_dir

    def get_dataset(self, sequence_length=None, split="train", use_cached=False,
                    shuffle=True, shuffle_buffer_size=None, seed=None, shard_info=None,
                    num_epochs=1, **kwargs):
        """seqio's `Task.get_dataset`, after the cache check and the sharding warning."""
        if use_cached and self.supports_caching:
            cache_identity.check_cache(self, self.data_dir)
        if split == "train" and shard_info is not None and shard_info.num_shards > 1:
            reading_cache = use_cached and self.supports_caching
            source = self._get_cached_source(split) if reading_cache else self.source
            num_files = len(source.list_shards(split))
            if num_files < shard_info.num_shards:
                logging.warning(
                    "task %s: %d train files in %s for %d hosts: seqio falls back to sharding "
                    "by example, so EVERY host reads EVERY file (the whole train split per "
                    "epoch on each host). %s", self.name, num_files,
                    self.cache_dir if reading_cache else self.data_dir, shard_info.num_shards,
                    ("Remake the cache with tasks.cache_tasks --min_shards=%d."
                     if reading_cache else
                     "Rerun pipelines.uniref with --num_train_shards=%d.")
                    % recommended_train_shards(shard_info.num_shards))
        return super().get_dataset(
            sequence_length, split=split, use_cached=use_cached, shuffle=shuffle,
            shuffle_buffer_size=shuffle_buffer_size, seed=seed, shard_info=shard_info,
            num_epochs=num_epochs, **kwargs)


def _source(data_dir: str, task_name: str) -> seqio.DataSource:
    return _TaskSeededTFExampleDataSource(
        seed_salt=_seed_salt(task_name),
        split_to_filepattern={
            split: os.path.join(data_dir, "%s.tfrecord-*" % split) for split in SPLITS},
        feature_description=_FEATURE_DESCRIPTION)


def _output_features(vocabulary: seqio.Vocabulary) -> dict:
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=True),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def _register(name: str, data_dir: str, vocabulary: seqio.Vocabulary, objective,
              metric_fns: Sequence,
              sampling: str = cluster_sampling.REPRESENTATIVES) -> seqio.Task:
    if sampling not in cluster_sampling.SAMPLING_POLICIES:
        raise ValueError("sampling must be one of %s, got %r" % (
            cluster_sampling.SAMPLING_POLICIES, sampling))
    salt = _seed_salt(name)
    if sampling == cluster_sampling.CLUSTERS:
        # Not cacheable: a member is drawn anew at every visit of a cluster (see
        # tasks/cluster_sampling.py), so nothing precedes the draw and no placeholder is set.
        source = cluster_sampling.ClusterSampledSource(data_dir, seed_salt=salt)
        steps = [functools.partial(cluster_sampling.sample_cluster_member, seed_salt=salt),
                 preprocessors.normalize_sequence, preprocessors.tokenize_residues]
    else:
        source = _source(data_dir, name)
        steps = [preprocessors.normalize_sequence, preprocessors.tokenize_residues,
                 seqio.CacheDatasetPlaceholder()]
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        task_cls=Ankh3Task,
        data_dir=data_dir,
        source=source,
        preprocessors=steps + [
            functools.partial(objective, seed_salt=salt),
            seqio.preprocessors.append_eos_after_trim,
            preprocessors.fuse_maps,
        ],
        output_features=_output_features(vocabulary),
        metric_fns=list(metric_fns))


def register_denoising_task(data_dir: str, mask_probability: float,
                            vocabulary: seqio.Vocabulary,
                            crop_policy: str = preprocessors.RANDOM_CROP,
                            sampling: str = cluster_sampling.REPRESENTATIVES) -> seqio.Task:
    """Registers (or replaces) the `[NLU]` denoising task for one masking probability.

    `sampling`: `representatives` (one record per sequence of `train.tfrecord-*`) or `clusters`
    (a uniform UniRef50 cluster, then a uniform member, from `train_clusters.tfrecord-*`).
    """
    name = denoising_task_name(mask_probability)
    objective = functools.partial(
        preprocessors.denoise, mask_probability=mask_probability, crop_policy=crop_policy)
    return _register(name, data_dir, vocabulary, objective, [metrics.masked_residue_accuracy],
                     sampling)


def register_completion_task(data_dir: str, vocabulary: seqio.Vocabulary,
                             cut_fractions: Sequence[float] = (0.5, 0.5),
                             crop_policy: str = preprocessors.RANDOM_CROP,
                             sampling: str = cluster_sampling.REPRESENTATIVES) -> seqio.Task:
    """Registers (or replaces) the `[S2S]` completion task (`sampling` as for denoising)."""
    objective = functools.partial(
        preprocessors.complete, cut_fractions=tuple(cut_fractions), crop_policy=crop_policy)
    return _register(COMPLETION_TASK, data_dir, vocabulary, objective,
                     [metrics.continuation_residue_accuracy], sampling)
