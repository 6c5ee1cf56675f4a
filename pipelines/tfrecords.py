"""The output record format: `tf.train.Example` protos in TFRecord framing.

The features each output record has are the data contract with `tasks/` (see the README's
table). Examples are TensorFlow's `tf.train.Example` message, built by protobuf (upb backend) from
the schema of TensorFlow's `example.proto` and `feature.proto` (`_EXAMPLE_SCHEMA`), in a pool of
its own: importing TensorFlow for the message would cost the job's workers seconds of start-up
and ~0.6 GB of memory each. A test checks the schema field by field against TensorFlow's and the
bytes against `tf.train.Example`'s. Examples are serialized deterministically (map entries sorted
by key). Shards are written through Beam's `FileSystems` (so gs:// works without TensorFlow's GCS
filesystem), so the TFRecord framing is done here, with `google_crc32c` and `struct`; a test
checks it against `tf.io.TFRecordWriter`.

Public API: `Example` (the message class), `RecordEncoder` (`Record` -> bytes),
`cluster_example(...) -> bytes`, `profile_example(record, depth) -> bytes`,
`frame(payload) -> bytes` (one TFRecord), `read_tfrecords(path) -> Iterator[bytes]`.
"""
import functools
import struct

import google_crc32c
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format

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


# TensorFlow's tensorflow/core/example/{feature,example}.proto (TF 2.x), as one file descriptor:
# the same message and field names, numbers and types, hence the same wire bytes.
_EXAMPLE_SCHEMA = """
name: "ankh3/tf_example.proto"
package: "tensorflow"
syntax: "proto3"
message_type {
  name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "FloatList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
}
message_type {
  name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64
          options { packed: true jstype: JS_STRING } }
}
message_type {
  name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.BytesList" oneof_index: 0 }
  field { name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.FloatList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Int64List" oneof_index: 0 }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Features.FeatureEntry" }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.Feature" }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Features" }
}
"""
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(text_format.Parse(_EXAMPLE_SCHEMA, descriptor_pb2.FileDescriptorProto()))
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))


def _bytes_feature(features, name: str, values) -> None:
    values_list = features[name].bytes_list
    values_list.SetInParent()
    values_list.value.extend(values)


# Records encoded with one message before it is replaced (see `RecordEncoder`).
_RECORDS_PER_MESSAGE = 1000


class RecordEncoder:
    """Serializes `records.Record`s as `tf.train.Example`s, refilling one message per record.

    Setting the values of an existing message is ~4x cheaper than building a new one (each map
    lookup and sub-message is a Python object), so the encoder keeps one `Example` holding every
    feature of a record, and its value lists to assign to. A feature's presence survives its
    values being replaced, so an empty `duplicate_ids` is still written. upb keeps a message's
    values in an arena that grows with every value set and is freed only with the message, so
    the message is replaced every `_RECORDS_PER_MESSAGE` records, which keeps memory flat.
    Not thread-safe: each writer (a DoFn instance, which Beam gives one thread) has its own.
    """

    __slots__ = ("_records_left", "_example", "_id", "_cluster_id", "_sequence", "_length",
                 "_num_duplicates", "_duplicate_ids", "_member_count", "_taxon_id")

    def __init__(self):
        self._renew()

    def _renew(self) -> None:
        """Starts a new message (and so a new arena)."""
        self._records_left = _RECORDS_PER_MESSAGE
        self._example = Example()
        features = self._example.features.feature

        def one(name, kind, placeholder):
            values = getattr(features[name], kind).value
            values.append(placeholder)
            return values

        self._id = one(ID, "bytes_list", b"")
        self._cluster_id = one(CLUSTER_ID, "bytes_list", b"")
        self._sequence = one(SEQUENCE, "bytes_list", b"")
        self._length = one(LENGTH, "int64_list", 0)
        self._num_duplicates = one(NUM_DUPLICATES, "int64_list", 0)
        features[DUPLICATE_IDS].bytes_list.SetInParent()
        self._duplicate_ids = features[DUPLICATE_IDS].bytes_list.value
        self._member_count = one(MEMBER_COUNT, "int64_list", 0)
        self._taxon_id = one(TAXON_ID, "int64_list", 0)

    def encode(self, record) -> bytes:
        """The serialized `tf.train.Example` of a `records.Record` (member count and taxon id 0
        when the header did not state them)."""
        self._records_left -= 1
        if self._records_left < 0:
            self._renew()
        self._id[0] = record.id.encode()
        self._cluster_id[0] = record.cluster_id.encode()
        self._sequence[0] = record.sequence
        self._length[0] = len(record.sequence)
        self._num_duplicates[0] = record.num_duplicates
        # Most records have no duplicate: their (empty) list is left as it is.
        if record.duplicate_ids or self._duplicate_ids:
            self._duplicate_ids[:] = [i.encode() for i in record.duplicate_ids]
        self._member_count[0] = record.member_count or 0
        self._taxon_id[0] = record.taxon_id or 0
        return self._example.SerializeToString(deterministic=True)


def cluster_example(cluster_id: str, member_ids: list[str], member_sequences: list[bytes]) -> bytes:
    """A serialized `tf.train.Example` holding one cluster's member ids and sequences, in the
    given order."""
    example = Example()
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
    example = Example()
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


@functools.lru_cache(maxsize=1 << 16)
def _frame_header(length: int) -> bytes:
    # Records of one payload length share their framing header. A job meets a few thousand
    # distinct lengths, so the cache saves most records a CRC and two packs.
    packed = _LENGTH.pack(length)
    return packed + _CRC.pack(_masked_crc32c(packed))


def frame(payload: bytes) -> bytes:
    """One record in TFRecord framing: little-endian uint64 length, masked CRC-32C of the
    length (uint32), the payload, its masked CRC-32C (uint32)."""
    return b"".join((_frame_header(len(payload)), payload, _CRC.pack(_masked_crc32c(payload))))


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
