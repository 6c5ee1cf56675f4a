"""The output record format: `tf.train.Example` protos in TFRecord framing.

Shards are written through Beam's `FileSystems` (so gs:// works without TensorFlow's GCS plugin);
the TFRecord framing is therefore done here rather than by `tf.io.TFRecordWriter`. A test checks
that both give the same bytes.
"""
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


def example_bytes(
    record_id: str,
    cluster_id: str,
    sequence: bytes,
    num_duplicates: int,
    duplicate_ids: list[str],
    member_count: int,
    taxon_id: int,
) -> bytes:
    """A serialized `tf.train.Example` with the output features (deterministic serialization).

    `member_count` and `taxon_id` are 0 when the header did not state them.
    """
    import tensorflow as tf  # Imported here: workers that never write shards skip its start-up.

    def as_bytes(*values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def as_int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    example = tf.train.Example(features=tf.train.Features(feature={
        ID: as_bytes(record_id.encode()),
        CLUSTER_ID: as_bytes(cluster_id.encode()),
        SEQUENCE: as_bytes(sequence),
        LENGTH: as_int(len(sequence)),
        NUM_DUPLICATES: as_int(num_duplicates),
        DUPLICATE_IDS: as_bytes(*(i.encode() for i in duplicate_ids)),
        MEMBER_COUNT: as_int(member_count),
        TAXON_ID: as_int(taxon_id),
    }))
    return example.SerializeToString(deterministic=True)
