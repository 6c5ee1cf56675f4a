"""What a seqio cache of an Ankh3 task was made from, recorded in the cache and checked on use.

seqio finds a task's cache by the task's name alone (`<cache_dir>/<task name>/COMPLETED`), and the
Ankh3 task names do not depend on the data directory or the vocabulary: without a check, a run
pointed at one UniRef release would train on a cache made from another. So the cache job
(`tasks.cache_tasks`) writes `IDENTITY_FILE` into each task's cache directory before seqio writes
the cache, and every Ankh3 task that is read with `use_cached=True` compares it with its own
identity and refuses, before any example is read, a cache that differs, naming both.

The identity of a task is what its cached content depends on:
  manifest_sha256   sha256 of the data directory's `manifest.json` (written by `pipelines/` last,
                    with the shards' names, counts and checksums: it identifies the release);
  vocabulary        class, size, sentinel count, and the ids of every residue and prefix (for a
                    SentencePiece vocabulary also the sha256 of its model);
  preprocessors     the steps before seqio's `CacheDatasetPlaceholder`, with their arguments;
  source            the split file patterns, relative to the data directory.
The data directory's path is recorded too, for the message, but not compared: a release copied
to another bucket has the same manifest and the same cache.
"""
import functools
import hashlib
import json
import os
from typing import Optional

import seqio
import tensorflow as tf

IDENTITY_FILE = "ankh3_cache_identity.json"
MANIFEST = "manifest.json"
COMPARED_FIELDS = ("manifest_sha256", "vocabulary", "preprocessors", "source")
# Residues and prefixes: their ids are what the cache holds.
_PROBE_TEXT = "ACDEFGHIKLMNPQRSTUVWXYZBO[NLU][S2S]"


class CacheMismatchError(ValueError):
    """A task's seqio cache was made from other data, vocabulary or preprocessing."""


def manifest_sha256(data_dir: str) -> str:
    """sha256 of `<data_dir>/manifest.json`; raises naming the path if there is none."""
    path = os.path.join(data_dir, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            "%s not found: %s is not a complete output of pipelines.uniref (the manifest is "
            "written last)" % (path, data_dir))
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def vocabulary_identity(vocabulary: seqio.Vocabulary) -> dict:
    """Class, sizes and the ids of residues and prefixes (and a SentencePiece model's sha256)."""
    identity = {
        "class": "%s.%s" % (type(vocabulary).__module__, type(vocabulary).__qualname__),
        "vocab_size": int(vocabulary.vocab_size),
        "extra_ids": int(vocabulary.extra_ids),
        "probe_ids": [int(i) for i in vocabulary.encode(_PROBE_TEXT)],
    }
    sp_model = getattr(vocabulary, "sp_model", None)
    if sp_model is not None:
        identity["sp_model_sha256"] = hashlib.sha256(sp_model).hexdigest()
    return identity


def _describe(step) -> dict:
    if isinstance(step, functools.partial):
        return {"fn": _name(step.func),
                "kwargs": {key: repr(value) for key, value in sorted(step.keywords.items())}}
    return {"fn": _name(step)}


def _name(fn) -> str:
    return "%s.%s" % (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn)))


def task_identity(task: seqio.Task, data_dir: str) -> dict:
    """The identity (see the module docstring) of `task` reading `data_dir`."""
    precache = []
    for step in task.preprocessors:
        if isinstance(step, seqio.CacheDatasetPlaceholder):
            break
        precache.append(_describe(step))
    patterns = getattr(task.source, "_split_to_filepattern", {})
    return {
        "task": task.name,
        "data_dir": data_dir,
        "manifest_sha256": manifest_sha256(data_dir),
        "vocabulary": vocabulary_identity(task.output_features["inputs"].vocabulary),
        "preprocessors": precache,
        "source": {split: os.path.relpath(pattern, data_dir)
                   for split, pattern in sorted(patterns.items())},
    }


def write_identity(task: seqio.Task, data_dir: str, cache_root: str) -> str:
    """Writes the task's identity into its directory under the cache root; returns the path."""
    task_dir = os.path.join(cache_root, seqio.get_task_dir_from_name(task.name))
    tf.io.gfile.makedirs(task_dir)
    path = os.path.join(task_dir, IDENTITY_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(task_identity(task, data_dir), indent=1, sort_keys=True) + "\n")
    return path


def read_identity(task_cache_dir: str) -> Optional[dict]:
    path = os.path.join(task_cache_dir, IDENTITY_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def check_cache(task: seqio.Task, data_dir: str) -> None:
    """Raises `CacheMismatchError` unless the task's cache records the task's own identity."""
    cache_dir = task.cache_dir
    if cache_dir is None:
        return  # seqio itself refuses use_cached without a cache
    recorded = read_identity(cache_dir)
    if recorded is None:
        raise CacheMismatchError(
            "the seqio cache %s of task %s has no %s: it was not made by tasks.cache_tasks, so "
            "what it was made from is unknown. Remake it with tasks.cache_tasks from %s, or "
            "train uncached (USE_CACHED_TASKS = False)."
            % (cache_dir, task.name, IDENTITY_FILE, data_dir))
    expected = task_identity(task, data_dir)
    differing = [field for field in COMPARED_FIELDS if recorded.get(field) != expected[field]]
    if differing:
        lines = ["  %s: cache %s, run %s" % (field, json.dumps(recorded.get(field)),
                                              json.dumps(expected[field]))
                 for field in differing]
        raise CacheMismatchError(
            "the seqio cache %s of task %s was made from %s, not from this run's settings "
            "(data_dir %s); differing:\n%s\nPoint --seqio_additional_cache_dirs at a cache made "
            "by tasks.cache_tasks with the run's settings, or train uncached "
            "(USE_CACHED_TASKS = False)."
            % (cache_dir, task.name, recorded.get("data_dir"), data_dir, "\n".join(lines)))
