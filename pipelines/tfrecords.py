"""The output record format: `tf.train.Example` protos in TFRecord framing.

Shards are written through Beam's `FileSystems` (so gs:// works without TensorFlow's GCS plugin);
the TFRecord framing is therefore done here rather than by `tf.io.TFRecordWriter`. A test checks
that both give the same bytes.
"""
import functools
import struct

import google_crc32c

# Features every output record has (the data contract with tasks/): see README.md.
ID = "id"
CLUSTER_ID = "cluster_id"
SEQUENCE = "sequence"
LENGTH = "length"
NUM_DUPLICATES = "num_duplicates"
DUPLICATE_IDS = "duplicate_ids"
MEMBER_COUNT = "member_count"
TAXON_ID = "taxon_id"
# Features of a cluster-grouped record (`train_clusters.tfrecord-*`, membership mode).
MEMBER_IDS = "member_ids"
MEMBER_SEQUENCES = "member_sequences"
MEMBER_LENGTHS = "member_lengths"
NUM_MEMBERS = "num_members"

_CRC_MASK_DELTA = 0xA282EAD8


def _masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing: length, masked CRC32C of the length, data, its CRC."""
    length = struct.pack("<Q", len(record))
    return b"".join((
        length, struct.pack("<I", _masked_crc32c(length)),
        record, struct.pack("<I", _masked_crc32c(record))))


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of an int64 (negative values as their 64-bit two's complement)."""
    if 0 <= value < len(_SMALL_VARINTS):
        return _SMALL_VARINTS[value]
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints of 0 .. 2**14 - 1 (one or two bytes), looked up: they cover nearly every length written.
_SMALL_VARINTS = tuple(
    bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7]) for v in range(1 << 14))
# Protobuf tags (field number << 3 | wire type 2, length-delimited) of the fields written:
# Example.features = 1, Features.feature (map entry) = 1, entry key = 1 and value = 2,
# Feature.bytes_list = 1 and int64_list = 3, BytesList.value / Int64List.value (packed) = 1.
_FIELD_1 = b"\x0a"
_MAP_VALUE = b"\x12"
_INT64_LIST = b"\x1a"


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _bytes_feature(*values: bytes) -> bytes:
    return _length_delimited(_FIELD_1, b"".join(
        [_FIELD_1 + _varint(len(v)) + v for v in values]))


def _int64_feature(value: int) -> bytes:
    packed = _varint(value)
    return _INT64_LIST + _varint(len(packed) + 2) + _FIELD_1 + _varint(len(packed)) + packed


def _map_key(name: str) -> bytes:
    """The key half of a Features map entry, up to the value's tag (the same for every record)."""
    return _length_delimited(_FIELD_1, name.encode()) + _MAP_VALUE


def _map_entry(key: bytes, feature: bytes) -> bytes:
    entry = key + _varint(len(feature)) + feature
    return _FIELD_1 + _varint(len(entry)) + entry


def _one_bytes_entry(key: bytes, value: bytes) -> bytes:
    """A map entry whose feature is a BytesList of one value."""
    value = _FIELD_1 + _varint(len(value)) + value
    return _map_entry(key, _FIELD_1 + _varint(len(value)) + value)


@functools.lru_cache(maxsize=1 << 16)
def _int64_entry(key: bytes, value: int) -> bytes:
    """A map entry whose feature is an Int64List of one value (few distinct ones: cached)."""
    return _map_entry(key, _int64_feature(value))


_CLUSTER_ID_KEY = _map_key(CLUSTER_ID)
_DUPLICATE_IDS_KEY = _map_key(DUPLICATE_IDS)
_ID_KEY = _map_key(ID)
_LENGTH_KEY = _map_key(LENGTH)
_MEMBER_COUNT_KEY = _map_key(MEMBER_COUNT)
_NUM_DUPLICATES_KEY = _map_key(NUM_DUPLICATES)
_SEQUENCE_KEY = _map_key(SEQUENCE)
_TAXON_ID_KEY = _map_key(TAXON_ID)


def example_bytes(
    record_id: str,
    cluster_id: str,
    sequence: bytes,
    num_duplicates: int,
    duplicate_ids: list[str],
    member_count: int,
    taxon_id: int,
) -> bytes:
    """A serialized `tf.train.Example` with the output features.

    The bytes are those of TensorFlow's `Example.SerializeToString(deterministic=True)` (map
    entries sorted by key; a test checks the equality), encoded here directly in the protobuf
    wire format: building the proto objects made every worker import TensorFlow and was the
    largest per-record cost of the job after Beam's own. `member_count` and `taxon_id` are 0
    when the header did not state them.
    """
    # Sorted by feature name, as deterministic serialization orders map entries.
    return _length_delimited(_FIELD_1, b"".join([
        _one_bytes_entry(_CLUSTER_ID_KEY, cluster_id.encode()),
        _map_entry(_DUPLICATE_IDS_KEY, _bytes_feature(*[i.encode() for i in duplicate_ids])),
        _one_bytes_entry(_ID_KEY, record_id.encode()),
        _int64_entry(_LENGTH_KEY, len(sequence)),
        _int64_entry(_MEMBER_COUNT_KEY, member_count),
        _int64_entry(_NUM_DUPLICATES_KEY, num_duplicates),
        _one_bytes_entry(_SEQUENCE_KEY, sequence),
        _int64_entry(_TAXON_ID_KEY, taxon_id),
    ]))


def cluster_example_bytes(cluster_id: str, member_ids: list[str],
                          member_sequences: list[bytes]) -> bytes:
    """A serialized `tf.train.Example` holding one cluster's member ids and sequences, in the
    given order (deterministic serialization)."""
    import tensorflow as tf  # Imported here, as in example_bytes.

    example = tf.train.Example(features=tf.train.Features(feature={
        CLUSTER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[cluster_id.encode()])),
        MEMBER_IDS: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[i.encode() for i in member_ids])),
        MEMBER_SEQUENCES: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=list(member_sequences))),
        MEMBER_LENGTHS: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[len(s) for s in member_sequences])),
        NUM_MEMBERS: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[len(member_ids)])),
    }))
    return example.SerializeToString(deterministic=True)
