"""Where a record goes: its split (train or validation), its shuffle key and its shard.

Everything here is a function of a hash, so it depends on nothing but the record's cluster id or
sequence and the seed: not on shard counts of other outputs, workers, bundle order or reruns.
The split is decided once per record, by `assign`, when its cluster id is final (after the
membership join), and travels on the record (`Record.split`) to every later stage.
"""
import hashlib

from pipelines import records

TRAIN = "train"
VALIDATION = "validation"
# Where `assign` puts what it sets: the last two fields of a `Record`.
_KEY_FIELD = records.Record._fields.index("shuffle_key")
assert records.Record._fields[_KEY_FIELD:] == ("shuffle_key", "split")


def hash_fraction(text: str) -> float:
    """The first 8 bytes of sha256(text) as an integer, divided by 2**64: uniform in [0, 1)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(cluster_id: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of cluster ids, else `train`.

    Depends on nothing but the cluster id, so one cluster never straddles the split.
    """
    return VALIDATION if hash_fraction(cluster_id) < validation_fraction else TRAIN


def shuffle_key(sequence_hash: bytes, seed: int) -> bytes:
    """The key that orders records inside shards and picks their shard: sha256(hash + seed)."""
    return hashlib.sha256(sequence_hash + str(seed).encode()).digest()


def shard_of(key: bytes, num_shards: int) -> int:
    """The shard of a record with this key (first 8 bytes of the key, modulo the shard count)."""
    return int.from_bytes(key[:8], "big") % num_shards


def assign(record: records.Record, seed: int, validation_fraction: float) -> records.Record:
    """The record with its shuffle key and split set."""
    # `_replace` would rebuild the record by keyword, at ~3x the cost.
    return record._make((*record[:_KEY_FIELD], shuffle_key(record.sequence_hash, seed),
                         split_of(record.cluster_id, validation_fraction)))
