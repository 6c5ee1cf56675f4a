"""The output record format: `tf.train.Example` protos in TFRecord framing.

The features each output record has are the data contract with `tasks/` (see the README's
table). Examples are TensorFlow's own message (`tensorflow.core.example.example_pb2`, protobuf's
upb backend), serialized deterministically (map entries sorted by key). Shards are written
through Beam's `FileSystems` (so gs:// works without TensorFlow's GCS filesystem), so the TFRecord
framing is done here, with `google_crc32c` and `struct`; a test checks it against
`tf.io.TFRecordWriter`.

Public API: `record_example(record) -> bytes`, `cluster_example(...) -> bytes`,
`profile_example(record, depth) -> bytes`,
`frame(payload) -> bytes` (one TFRecord), `read_tfrecords(path) -> Iterator[bytes]`.
"""
import functools
import struct

import google_crc32c

from pipelines import compression

# Features of every record of the train and validation shards.
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
# Features of a profile record (`pipelines/profiles.py`, read by `tasks/profile_tasks.py`): ID,
# SEQUENCE, LENGTH and these.
FAMILY = "family"
PROFILE = "profile"
DEPTH = "depth"

_CRC_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


@functools.cache
def _example_class():
    # Imported on first use: TensorFlow takes seconds to import, and the launcher (and --help)
    # never encodes a record.
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
    return example_pb2.Example


def _bytes_feature(features, name: str, values) -> None:
    values_list = features[name].bytes_list
    values_list.SetInParent()
    values_list.value.extend(values)


def record_example(record) -> bytes:
    """The serialized `tf.train.Example` of a `records.Record` (member count and taxon id 0 when
    the header did not state them)."""
    example = _example_class()()
    features = example.features.feature
    features[ID].bytes_list.value.append(record.id.encode())
    features[CLUSTER_ID].bytes_list.value.append(record.cluster_id.encode())
    features[SEQUENCE].bytes_list.value.append(record.sequence)
    features[LENGTH].int64_list.value.append(len(record.sequence))
    features[NUM_DUPLICATES].int64_list.value.append(record.num_duplicates)
    _bytes_feature(features, DUPLICATE_IDS, [i.encode() for i in record.duplicate_ids])
    features[MEMBER_COUNT].int64_list.value.append(record.member_count or 0)
    features[TAXON_ID].int64_list.value.append(record.taxon_id or 0)
    return example.SerializeToString(deterministic=True)


def cluster_example(cluster_id: str, member_ids: list[str], member_sequences: list[bytes]) -> bytes:
    """A serialized `tf.train.Example` holding one cluster's member ids and sequences, in the
    given order."""
    example = _example_class()()
    features = example.features.feature
    features[CLUSTER_ID].bytes_list.value.append(cluster_id.encode())
    _bytes_feature(features, MEMBER_IDS, [i.encode() for i in member_ids])
    _bytes_feature(features, MEMBER_SEQUENCES, member_sequences)
    lengths = features[MEMBER_LENGTHS].int64_list
    lengths.SetInParent()
    lengths.value.extend(len(s) for s in member_sequences)
    features[NUM_MEMBERS].int64_list.value.append(len(member_ids))
    return example.SerializeToString(deterministic=True)


def profile_example(record, depth: int) -> bytes:
    """The serialized `tf.train.Example` of a `profiles.ProfileRecord`; `depth` is the number of
    rows of its family's alignment."""
    example = _example_class()()
    features = example.features.feature
    features[ID].bytes_list.value.append(record.id.encode())
    features[FAMILY].bytes_list.value.append(record.family.encode())
    features[SEQUENCE].bytes_list.value.append(record.sequence)
    features[LENGTH].int64_list.value.append(len(record.sequence))
    features[PROFILE].bytes_list.value.append(record.profile)
    features[DEPTH].int64_list.value.append(depth)
    return example.SerializeToString(deterministic=True)


def _masked_crc32c(data: bytes) -> int:
    # TFRecord stores CRCs rotated and offset ("masked"): a CRC of data that itself holds CRCs
    # would otherwise be weak.
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """One record in TFRecord framing: little-endian uint64 length, masked CRC-32C of the
    length (uint32), the payload, its masked CRC-32C (uint32)."""
    length = _LENGTH.pack(len(payload))
    return b"".join((length, _CRC.pack(_masked_crc32c(length)), payload,
                     _CRC.pack(_masked_crc32c(payload))))


def read_tfrecords(path: str):
    """The payloads of a TFRecord file (local or gs://), CRCs checked (ValueError naming the
    file and the record's offset when one does not match)."""
    with compression.open_decompressed(path) as file:
        offset = 0
        while True:
            header = file.read(12)
            if not header:
                return
            data = file.read(_LENGTH.unpack(header[:8])[0] + 4) if len(header) == 12 else b""
            if (len(header) < 12 or _CRC.unpack(header[8:])[0] != _masked_crc32c(header[:8])
                    or len(data) < 4 or _CRC.unpack(data[-4:])[0] != _masked_crc32c(data[:-4])):
                raise ValueError("%s: bad TFRecord at offset %d" % (path, offset))
            offset += 12 + len(data)
            yield data[:-4]
