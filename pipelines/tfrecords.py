"""The output record format: `tf.train.Example` protos in TFRecord framing.

Shards are written through Beam's `FileSystems` (so gs:// works without TensorFlow's GCS plugin);
the TFRecord framing is therefore done here rather than by `tf.io.TFRecordWriter`. Tests check
that both give the same bytes.

`example_bytes` (one output record), `frame` (TFRecord framing) and `encode_bucket` (a whole
bucket's records, with their split and the statistics' counts) are compiled, from
`pipelines/_example_codec.c`: in Python they were the largest per-record cost of the job after
Beam's own. Their docstrings are on the functions.
"""
try:
    from pipelines._example_codec import encode_bucket, example_bytes, frame
except ImportError as error:
    raise ImportError(
        "pipelines._example_codec (the compiled record encoder, pipelines/_example_codec.c) is not "
        "built or does not match this Python: run `make setup`, or "
        "`python3 setup.py build_ext --inplace` in the repository root.") from error

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


def cluster_example_bytes(cluster_id: str, member_ids: list[str],
                          member_sequences: list[bytes]) -> bytes:
    """A serialized `tf.train.Example` holding one cluster's member ids and sequences, in the
    given order (deterministic serialization)."""
    import tensorflow as tf  # Imported here: only membership mode needs it on workers.

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
