r"""Caches the tokenized Ankh3 tasks with seqio's Beam cache job.

    python -m tasks.cache_tasks \
      --gin_bindings="ankh3_pretrain_mixture.data_dir = 'gs://BUCKET/uniref50_2024_06'" \
      --output_cache_dir=gs://BUCKET/seqio_cache \
      --pipeline_options=--runner=DataflowRunner,--project=P,--region=R,...

Registers the tasks of `ankh3_pretrain` from the gin files and bindings (the same ones the
training run uses, so that both agree on data and vocabulary), then runs seqio's
`cache_tasks_main.run_pipeline` with keyword arguments: its own `main()` passes
`--output_format` positionally into `completed_file_contents`, so ArrayRecord output is silently
ignored there. All of seqio's cache flags (`--min_shards`, `--base_seed`, `--output_format`,
`--overwrite`, ...) apply.

The workers of a distributed runner register the same tasks from the gin text, which travels
with the job as a pipeline option (see `tasks.cache_registration`).

Before the job runs, each task's cache directory gets what the cache is made from
(`tasks/cache_identity.py`: the data directory's manifest sha256, the vocabulary, the steps
before the cache); training with `use_cached=True` refuses a cache whose record differs from the
run's settings. A task whose cache is already complete there and is not `--overwrite`n keeps its
record (seqio skips it).
"""
import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import apache_beam as beam
from apache_beam.options import pipeline_options
import seqio
from seqio.scripts import cache_tasks_main
import tensorflow as tf

from tasks import cache_identity
from tasks import cache_registration

_GIN_FILE = flags.DEFINE_multi_string(
    "gin_file", [], "Gin files that configure `ankh3_pretrain_mixture` (data_dir, vocabulary...).")
_GIN_BINDINGS = flags.DEFINE_multi_string(
    "gin_bindings", [], "Gin bindings, applied after the gin files.")
FLAGS = flags.FLAGS


def gin_text(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> str:
    """The gin files' contents followed by the bindings, as one parseable text."""
    parts = []
    for path in gin_files:
        with tf.io.gfile.GFile(path) as f:
            parts.append(f.read())
    parts.extend(gin_bindings)
    return "\n".join(parts)


def main(argv: Sequence[str]) -> None:
    """Registers the tasks from the gin flags and caches them (see the module docstring)."""
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    flags.mark_flags_as_required(["output_cache_dir"])
    config = gin_text(_GIN_FILE.value, _GIN_BINDINGS.value)
    task_names = cache_registration.register_tasks(config)
    logging.info("caching tasks %s into %s", task_names, FLAGS.output_cache_dir)
    seqio.add_global_cache_dirs([FLAGS.output_cache_dir] + FLAGS.tasks_additional_cache_dirs)
    for name in task_names:
        if name in (FLAGS.excluded_tasks or ()):
            continue
        task = seqio.get_mixture_or_task(name)
        completed = os.path.join(FLAGS.output_cache_dir, seqio.get_task_dir_from_name(name),
                                 "COMPLETED")
        if task.supports_caching and (FLAGS.overwrite or not tf.io.gfile.exists(completed)):
            logging.info("recorded what %s is cached from in %s", name,
                         cache_identity.write_identity(task, task.data_dir,
                                                       FLAGS.output_cache_dir))
    options = pipeline_options.PipelineOptions(
        FLAGS.pipeline_options, **{cache_registration.TASKS_GIN_OPTION: config})
    tf.io.gfile.makedirs(FLAGS.output_cache_dir)
    with beam.Pipeline(options=options) as pipeline:
        cache_tasks_main.run_pipeline(
            pipeline,
            task_names=task_names,
            cache_dir=FLAGS.output_cache_dir,
            excluded_tasks=FLAGS.excluded_tasks,
            modules_to_import=[cache_registration.__name__] + FLAGS.module_import,
            overwrite=FLAGS.overwrite,
            ignore_other_caches=FLAGS.ignore_other_caches,
            output_format=FLAGS.output_format)


def run(argv: Sequence[str]) -> None:
    """Parses `argv` (flags, without the program name) and runs `main`; for tests and scripts."""
    main(FLAGS(["tasks.cache_tasks"] + list(argv)))


if __name__ == "__main__":
    app.run(main)
