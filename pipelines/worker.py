"""What every per-record stage of the job sets up on a worker: counters and garbage collection."""
import functools
import gc

import apache_beam as beam

METRICS_NAMESPACE = "uniref"
# Young-generation collections every this many container allocations (CPython's default: 700).
_GC_YOUNG_THRESHOLD = 10_000


def counter(name: str):
    """A Beam counter of the job's namespace."""
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


@functools.cache
def tune_garbage_collection() -> None:
    """Once per process, before the per-record work: keeps CPython's cycle collector off what
    never becomes cyclic garbage.

    The job allocates several objects per record, so the collector runs often, and each of its
    full collections walked every object of the process: ~200k from importing Beam alone.
    Freezing what exists when the work starts (modules, the runner) takes those out of every
    later collection, and a larger young generation makes collections rarer (measured on 200k
    records: 1.7 s of collection -> 0.2 s). Reference counting still frees everything as usual;
    only cycles wait longer.
    """
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
