"""What the per-record stages of the job share on a worker: counters, garbage collection, and the
coder of their typed records."""
import functools
import gc

import apache_beam as beam

METRICS_NAMESPACE = "uniref"
# Young-generation collections once this many more containers are allocated than freed
# (CPython's default: 700). A batch of records lives for one stage and is freed by reference
# counting, so the count rarely gets there during the per-record work.
_GC_YOUNG_THRESHOLD = 100_000


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
    later collection, and a larger young generation makes collections rarer (measured over a
    whole job on 400k records: 0.75 s of collection with a young generation of 10,000, 0.36 s
    with 100,000, nearly all of it before the records). Reference counting still frees
    everything as usual; only cycles wait longer.
    """
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class FieldsCoder(beam.coders.Coder):
    """Encodes a NamedTuple of primitives (`record_type`) as the plain tuple of its fields.

    Beam's default coder pickles a NamedTuple, class reference included, one by one; its size
    estimate (Beam encodes a sample of every stage's output elements to estimate their sizes)
    would do the same. Subclasses set `record_type` and give a cheap `estimate_size`, as Beam's
    `Coder.estimate_size` invites.
    """

    record_type = tuple
    _fields = beam.coders.FastPrimitivesCoder()

    def encode(self, value):
        return self._fields.encode(tuple(value))

    def decode(self, encoded):
        return self.record_type._make(self._fields.decode(encoded))

    def is_deterministic(self):
        return True
