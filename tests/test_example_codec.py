"""The compiled output record encoder (`pipelines/_example_codec.c`) against TensorFlow's own
serialization and TFRecord writer, and google_crc32c."""
import os
import platform
import random
import struct
import subprocess
import sys
import tempfile

import google_crc32c
import pytest
from hypothesis import example, given, settings, strategies as st

from pipelines import tfrecords

tf = pytest.importorskip(
    "tensorflow", reason="tensorflow not installed: pip install -r requirements.txt")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
VALID_ARGS = dict(record_id="UniRef50_P1", cluster_id="UniRef50_P1", sequence=b"MKV",
                  num_duplicates=2, duplicate_ids=["A", "B"], member_count=5, taxon_id=9606)


def _tensorflow_example(record_id, cluster_id, sequence, num_duplicates, duplicate_ids,
                        member_count, taxon_id):
    def as_bytes(*values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def as_int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "id": as_bytes(record_id.encode()), "cluster_id": as_bytes(cluster_id.encode()),
        "sequence": as_bytes(sequence), "length": as_int(len(sequence)),
        "num_duplicates": as_int(num_duplicates),
        "duplicate_ids": as_bytes(*(i.encode() for i in duplicate_ids)),
        "member_count": as_int(member_count), "taxon_id": as_int(taxon_id),
    })).SerializeToString(deterministic=True)


def _repeated(pattern, length):
    """`length` bytes repeating `pattern`: long sequences without drawing each byte."""
    return (pattern * (length // len(pattern) + 1))[:length]


# Sequences from empty to 100,000 residues; ids with any Unicode (UTF-8 of 1 to 4 bytes).
sequences = st.one_of(
    st.binary(max_size=300),
    st.builds(_repeated, st.binary(min_size=1, max_size=32), st.integers(0, 100_000)))
int64s = st.integers(INT64_MIN, INT64_MAX)
ids = st.text(max_size=40)


@settings(max_examples=150, deadline=None)
@given(record_id=ids, cluster_id=ids, sequence=sequences, num_duplicates=int64s,
       duplicate_ids=st.one_of(st.lists(ids, max_size=50), st.lists(ids, max_size=50).map(tuple)),
       member_count=int64s, taxon_id=int64s)
@example(record_id="", cluster_id="", sequence=b"", num_duplicates=0, duplicate_ids=[],
         member_count=0, taxon_id=0)
@example(record_id="UniRef50_\u00e9\u4e2d\U0001f9ec", cluster_id="UniRef50_\u00e9",
         sequence=b"ACDEFGHIKLMNPQRSTVWY" * 5000, num_duplicates=INT64_MAX,
         duplicate_ids=["\u00e9" * 70] * 50, member_count=INT64_MIN, taxon_id=-1)
@example(record_id="a", cluster_id="b", sequence=b"M" * 16383, num_duplicates=INT64_MIN,
         duplicate_ids=("x",), member_count=INT64_MAX, taxon_id=INT64_MIN)
@example(record_id="UniRef50_P1", cluster_id="UniRef50_P1", sequence=b"MKV", num_duplicates=2,
         duplicate_ids=["A", "B"], member_count=5, taxon_id=9606)
# Lengths and values at the one/two/three-byte varint boundaries; a negative int64.
@example(record_id="UniRef50_UPI0000000001", cluster_id="UniRef50_UPI0000000001",
         sequence=b"M" * 127, num_duplicates=127, duplicate_ids=[""], member_count=128,
         taxon_id=16383)
@example(record_id="x\u00e9", cluster_id="c", sequence=b"A" * 16384, num_duplicates=INT64_MAX,
         duplicate_ids=["a" * 300] * 32, member_count=16384, taxon_id=-1)
def test_example_bytes_equal_tensorflow_deterministic_serialization(
        record_id, cluster_id, sequence, num_duplicates, duplicate_ids, member_count, taxon_id):
    args = (record_id, cluster_id, sequence, num_duplicates, duplicate_ids, member_count,
            taxon_id)
    assert tfrecords.example_bytes(*args) == _tensorflow_example(*args)


def test_example_bytes_takes_keywords():
    assert tfrecords.example_bytes(**VALID_ARGS) == tfrecords.example_bytes(*VALID_ARGS.values())
    assert tfrecords.example_bytes(**VALID_ARGS) == _tensorflow_example(**VALID_ARGS)


def _masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tensorflow_framing(records):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "records.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        with open(path, "rb") as f:
            return f.read()


@settings(max_examples=60, deadline=None)
@given(length=st.integers(0, 70_000), seed=st.integers(0, 2**32 - 1))
def test_frame_equals_tensorflow_writer_and_google_crc32c(length, seed):
    record = random.Random(seed).randbytes(length)
    framed = tfrecords.frame(record)
    assert framed == _tensorflow_framing([record])
    header, header_crc = framed[:8], struct.unpack("<I", framed[8:12])[0]
    assert struct.unpack("<Q", header)[0] == length
    assert header_crc == _masked(google_crc32c.value(header))
    assert framed[12:-4] == record
    assert struct.unpack("<I", framed[-4:])[0] == _masked(google_crc32c.value(record))


def test_frame_every_tail_length_and_block_boundary():
    # Every length up to 64 (all tails of the 8-byte loop, from either end of a block) and
    # lengths around powers of two, in one file as the job writes shards.
    rng = random.Random(0)
    lengths = list(range(65)) + [n + d for n in (4096, 65536) for d in (-1, 0, 1)] + [70_001]
    records = [rng.randbytes(n) for n in lengths]
    assert b"".join(map(tfrecords.frame, records)) == _tensorflow_framing(records)


def test_frame_crc_is_castagnoli():
    # The CRC-32C check value of "123456789" (RFC 3720, B.4), masked as TFRecord stores it.
    assert tfrecords.frame(b"123456789")[-4:] == struct.pack("<I", _masked(0xE3069283))


def test_both_crc32c_implementations_equal_google_crc32c():
    # The CPU instruction (chosen at import where the CPU has it) and the portable tables
    # (forced by ANKH3_CRC32C=software), over every tail length and some long records.
    script = (
        "import random, struct, sys, google_crc32c\n"
        "from pipelines import _example_codec as codec\n"
        "rng = random.Random(3)\n"
        "for n in list(range(70)) + [1000, 4097, 70001]:\n"
        "    record = rng.randbytes(n)\n"
        "    crc = google_crc32c.value(record)\n"
        "    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF\n"
        "    assert codec.frame(record)[-4:] == struct.pack('<I', masked), n\n"
        "print(codec.CRC32C_IMPLEMENTATION)\n")
    used = {}
    for forced in ("", "software"):
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, check=False,
                                env=dict(os.environ, ANKH3_CRC32C=forced))
        assert result.returncode == 0, result.stderr
        used[forced] = result.stdout.strip()
    assert used["software"] == "software"
    cpu_has_it = (platform.machine() == "x86_64" and os.path.exists("/proc/cpuinfo")
                  and " sse4_2" in open("/proc/cpuinfo").read())
    assert used[""] == ("sse4.2" if cpu_has_it else "software")


@pytest.mark.parametrize("argument, value, message", [
    ("record_id", 1, "example_bytes() argument 'record_id' must be str, not int"),
    ("cluster_id", b"c", "example_bytes() argument 'cluster_id' must be str, not bytes"),
    ("sequence", "MKV", "example_bytes() argument 'sequence' must be bytes, not str"),
    ("sequence", bytearray(b"MKV"),
     "example_bytes() argument 'sequence' must be bytes, not bytearray"),
    ("num_duplicates", 2.0, "example_bytes() argument 'num_duplicates' must be int, not float"),
    ("duplicate_ids", "AB",
     "example_bytes() argument 'duplicate_ids' must be a list or tuple of str, not str"),
    ("duplicate_ids", None,
     "example_bytes() argument 'duplicate_ids' must be a list or tuple of str, not NoneType"),
    ("duplicate_ids", ["A", b"B"],
     "example_bytes() argument 'duplicate_ids' item 1 must be str, not bytes"),
    ("member_count", None, "example_bytes() argument 'member_count' must be int, not NoneType"),
    ("taxon_id", "9606", "example_bytes() argument 'taxon_id' must be int, not str"),
])
def test_example_bytes_type_errors_name_the_argument(argument, value, message):
    with pytest.raises(TypeError) as error:
        tfrecords.example_bytes(**{**VALID_ARGS, argument: value})
    assert str(error.value) == message


@pytest.mark.parametrize("argument", ["num_duplicates", "member_count", "taxon_id"])
@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 2**100])
def test_example_bytes_rejects_values_outside_int64(argument, value):
    with pytest.raises(OverflowError) as error:
        tfrecords.example_bytes(**{**VALID_ARGS, argument: value})
    assert str(error.value) == (
        "example_bytes() argument '%s' is outside the int64 range" % argument)


@pytest.mark.parametrize("argument, value", [
    ("record_id", "UniRef50_\ud800"), ("cluster_id", "\udfff"), ("duplicate_ids", ["A", "\ud800"])])
def test_example_bytes_encodes_strict_utf8(argument, value):
    # Lone surrogates have no UTF-8: the same error as str.encode().
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        tfrecords.example_bytes(**{**VALID_ARGS, argument: value})


def test_example_bytes_wrong_arity_is_a_type_error():
    with pytest.raises(TypeError, match="missing required argument 'taxon_id'"):
        tfrecords.example_bytes(*list(VALID_ARGS.values())[:-1])


def test_frame_type_error_names_the_argument():
    with pytest.raises(TypeError) as error:
        tfrecords.frame("abc")
    assert str(error.value) == "frame() argument 'record' must be bytes, not str"


def test_import_without_the_built_extension_says_how_to_build_it():
    # None in sys.modules makes the import fail as it does when the .so was never built.
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['pipelines._example_codec'] = None; "
                               "import pipelines.tfrecords"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "ImportError: pipelines._example_codec" in result.stderr
    assert "`make setup`" in result.stderr
    assert "`python3 setup.py build_ext --inplace`" in result.stderr
