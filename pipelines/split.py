"""Where a record goes: its split (train or validation), its shuffle key and its shard.

Everything here is a function of a hash, so it depends on nothing but the record's cluster id or
sequence and the seed: not on shard counts of other outputs, workers, bundle order or reruns.
The split is decided once per record, by `Assigner`, when its cluster id is final (after the
membership join), and travels on the record (`Record.split`) to every later stage.
"""
import functools
import hashlib

from pipelines import records

TRAIN = "train"
VALIDATION = "validation"
# Where `Assigner` puts what it sets: the last two fields of a `Record`.
KEY_FIELD = records.Record._fields.index("shuffle_key")
assert records.Record._fields[KEY_FIELD:] == ("shuffle_key", "split")


def hash_fraction(text: str) -> float:
    """The first 8 bytes of sha256(text) as an integer, divided by 2**64: uniform in [0, 1).

    The split rule: a cluster is in validation when this is below the validation fraction.
    """
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@functools.lru_cache(maxsize=None)
def _validation_bound(validation_fraction: float) -> bytes:
    """The 8 bytes B such that, for any text, `sha256(text)[:8] < B` exactly when
    `hash_fraction(text) < validation_fraction`.

    `hash_fraction` is a non-decreasing function of the 8-byte prefix (the division is
    correctly rounded), so the prefixes below the fraction are those below the smallest one
    that is not; comparing bytes is cheaper than converting and dividing for every record.
    """
    if not 0 <= validation_fraction <= 1:
        raise ValueError("validation fraction %r is not in [0, 1]" % validation_fraction)
    low, high = 0, 2**64 - 1  # (2**64 - 1) / 2**64 rounds to 1.0: never below any fraction.
    while low < high:
        middle = (low + high) // 2
        if middle / 2**64 < validation_fraction:
            low = middle + 1
        else:
            high = middle
    return low.to_bytes(8, "big")


def _split_below(cluster_id: str, bound: bytes) -> str:
    return VALIDATION if hashlib.sha256(cluster_id.encode()).digest()[:8] < bound else TRAIN


def split_of(cluster_id: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of cluster ids (`hash_fraction` below
    it), else `train`.

    Depends on nothing but the cluster id, so one cluster never straddles the split.
    """
    return _split_below(cluster_id, _validation_bound(validation_fraction))


def _seed_bytes(seed: int) -> bytes:
    return str(seed).encode()


def shuffle_key(sequence_hash: bytes, seed: int) -> bytes:
    """The key that orders records inside shards and picks their shard: sha256(hash + seed)."""
    return _shuffle_key(sequence_hash, _seed_bytes(seed))


def _shuffle_key(sequence_hash: bytes, seed_bytes: bytes) -> bytes:
    return hashlib.sha256(sequence_hash + seed_bytes).digest()


def shard_of(key: bytes, num_shards: int) -> int:
    """The shard of a record with this key (first 8 bytes of the key, modulo the shard count)."""
    return int.from_bytes(key[:8], "big") % num_shards


class Assigner:
    """Sets the shuffle key (`shuffle_key`) and split (`split_of`) of records, for one seed and
    validation fraction."""

    def __init__(self, seed: int, validation_fraction: float):
        # Both computed once, not per record.
        self._seed = _seed_bytes(seed)
        self._bound = _validation_bound(validation_fraction)

    def fields(self, record: records.Record) -> tuple:
        """The fields of `record` with its shuffle key and split set, as a plain tuple (what
        the shuffle carries; `Record._make` of it is the assigned record)."""
        return record[:KEY_FIELD] + (_shuffle_key(record.sequence_hash, self._seed),
                                     _split_below(record.cluster_id, self._bound))

    def assign(self, record: records.Record) -> records.Record:
        """The record with its shuffle key and split set."""
        return record._make(self.fields(record))
