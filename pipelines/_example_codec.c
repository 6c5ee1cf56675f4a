/* The output record encoder of the UniRef job: `tf.train.Example` protos and TFRecord framing.
 *
 * Building each record was the largest per-record cost of the job after Beam's own (about 9 us in
 * pure Python); here it is a size computation, one allocation and one pass of copies. The bytes
 * are those of TensorFlow's `Example.SerializeToString(deterministic=True)` and of
 * `tf.io.TFRecordWriter` (tests compare them), written without TensorFlow so that workers never
 * import it. `encode_bucket` does the rest of the per-record work of writing a bucket (split,
 * encoding, statistics' counts) for all of its records in one call.
 *
 * Build: `make setup`, or `python3 setup.py build_ext --inplace` (Dataflow workers compile it
 * when they install the job's sdist).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Protobuf wire format
 *
 * Every field written is length-delimited (wire type 2): a one-byte tag (field number << 3 | 2),
 * the payload size as a varint, the payload. The tags used:
 *   Example.features = 1, Features.feature (map entry) = 1, map entry key = 1 and value = 2,
 *   Feature.bytes_list = 1 and int64_list = 3, BytesList.value and Int64List.value (packed) = 1.
 */
#define TAG_FIELD_1 0x0a
#define TAG_MAP_VALUE 0x12
#define TAG_INT64_LIST 0x1a

static Py_ssize_t varint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static char *put_varint(char *out, uint64_t value)
{
    while (value >= 0x80) {
        *out++ = (char)(value | 0x80);
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

/* Size of a length-delimited field whose payload has `payload_size` bytes. */
static Py_ssize_t delimited_size(Py_ssize_t payload_size)
{
    return 1 + varint_size((uint64_t)payload_size) + payload_size;
}

static char *put_delimited_header(char *out, char tag, Py_ssize_t payload_size)
{
    *out++ = tag;
    return put_varint(out, (uint64_t)payload_size);
}

static char *put_delimited(char *out, char tag, const char *payload, Py_ssize_t payload_size)
{
    out = put_delimited_header(out, tag, payload_size);
    memcpy(out, payload, (size_t)payload_size);
    return out + payload_size;
}

/* Int64List.value is packed: one length-delimited field holding the varint. Negative values are
 * their 64-bit two's complement (10 bytes), as protobuf writes int64. */
static Py_ssize_t int64_feature_size(int64_t value)
{
    return delimited_size(delimited_size(varint_size((uint64_t)value)));
}

static Py_ssize_t one_bytes_feature_size(Py_ssize_t value_size)
{
    return delimited_size(delimited_size(value_size));
}

/* A map key is a feature name. */
typedef struct {
    const char *name;
    Py_ssize_t size;
} Key;

#define KEY(name) {name, sizeof(name) - 1}
static const Key CLUSTER_ID = KEY("cluster_id");
static const Key DUPLICATE_IDS = KEY("duplicate_ids");
static const Key ID = KEY("id");
static const Key LENGTH = KEY("length");
static const Key MEMBER_COUNT = KEY("member_count");
static const Key NUM_DUPLICATES = KEY("num_duplicates");
static const Key SEQUENCE = KEY("sequence");
static const Key TAXON_ID = KEY("taxon_id");

/* Size of a whole map entry (tag and length included) whose Feature has `feature_size` bytes. */
static Py_ssize_t entry_size(Key key, Py_ssize_t feature_size)
{
    return delimited_size(delimited_size(key.size) + delimited_size(feature_size));
}

/* A map entry up to the start of its Feature's payload. */
static char *put_entry_header(char *out, Key key, Py_ssize_t feature_size)
{
    out = put_delimited_header(out, TAG_FIELD_1,
                               delimited_size(key.size) + delimited_size(feature_size));
    out = put_delimited(out, TAG_FIELD_1, key.name, key.size);
    return put_delimited_header(out, TAG_MAP_VALUE, feature_size);
}

static char *put_one_bytes_entry(char *out, Key key, const char *value, Py_ssize_t value_size)
{
    out = put_entry_header(out, key, one_bytes_feature_size(value_size));
    out = put_delimited_header(out, TAG_FIELD_1, delimited_size(value_size));
    return put_delimited(out, TAG_FIELD_1, value, value_size);
}

static char *put_int64_entry(char *out, Key key, int64_t value)
{
    Py_ssize_t packed_size = varint_size((uint64_t)value);
    out = put_entry_header(out, key, int64_feature_size(value));
    out = put_delimited_header(out, TAG_INT64_LIST, delimited_size(packed_size));
    out = put_delimited_header(out, TAG_FIELD_1, packed_size);
    return put_varint(out, (uint64_t)value);
}

/* ---------------------------------------------------------------------------------------------
 * Argument checks. Errors name the argument, as Python-level signatures would; in
 * encode_bucket() they also name the item of `packed`. */

typedef struct {
    const char *function;
    Py_ssize_t item;  /* the item of encode_bucket()'s `packed`; -1 for example_bytes() */
} Origin;

/* "example_bytes() argument 'x'", "encode_bucket() packed item 3 field 'x'" or, `argument`
 * NULL, "encode_bucket() packed item 3": built only when an error is raised. */
static PyObject *describe(Origin origin, const char *argument)
{
    if (origin.item < 0) {
        return PyUnicode_FromFormat("%s() argument '%s'", origin.function, argument);
    }
    if (argument == NULL) {
        return PyUnicode_FromFormat("%s() packed item %zd", origin.function, origin.item);
    }
    return PyUnicode_FromFormat("%s() packed item %zd field '%s'", origin.function, origin.item,
                                argument);
}

static int type_error(Origin origin, const char *argument, const char *expected,
                      PyObject *value)
{
    PyObject *where = describe(origin, argument);
    if (where != NULL) {
        PyErr_Format(PyExc_TypeError, "%U must be %s, not %.100s", where, expected,
                     Py_TYPE(value)->tp_name);
        Py_DECREF(where);
    }
    return -1;
}

static int as_utf8(Origin origin, const char *argument, PyObject *value, const char **data,
                   Py_ssize_t *size)
{
    if (!PyUnicode_Check(value)) {
        return type_error(origin, argument, "str", value);
    }
    /* Strict UTF-8, as str.encode(); the encoding is cached in the str (ASCII needs none). */
    *data = PyUnicode_AsUTF8AndSize(value, size);
    return *data == NULL ? -1 : 0;
}

static int as_int64(Origin origin, const char *argument, PyObject *value, int64_t *result)
{
    int overflow;
    long long converted;
    PyObject *where;
    if (!PyLong_Check(value)) {
        return type_error(origin, argument, "int", value);
    }
    converted = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
        where = describe(origin, argument);
        if (where != NULL) {
            PyErr_Format(PyExc_OverflowError, "%U is outside the int64 range", where);
            Py_DECREF(where);
        }
        return -1;
    }
    if (converted == -1 && PyErr_Occurred()) {
        return -1;
    }
    *result = (int64_t)converted;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One output record: its fields, checked, and their encoding. */

typedef struct {
    const char *id, *cluster_id, *sequence;
    Py_ssize_t id_size, cluster_id_size, sequence_size;
    PyObject *duplicate_ids;  /* borrowed: a list or tuple of str, checked */
    Py_ssize_t duplicate_ids_list_size;  /* payload of the duplicate_ids BytesList */
    int64_t num_duplicates, member_count, taxon_id;
    Py_ssize_t features_size;  /* payload of Example.features */
} Example;

/* Checks and converts the fields of one record into `example` (which borrows from them) and
 * sizes its encoding. Returns -1 with an exception set on bad fields. */
static int read_example(Origin origin, PyObject *record_id, PyObject *cluster_id,
                        PyObject *sequence, PyObject *num_duplicates, PyObject *duplicate_ids,
                        PyObject *member_count, PyObject *taxon_id, Example *example)
{
    Py_ssize_t i, num_values, value_size;
    PyObject *value, *where;

    if (as_utf8(origin, "record_id", record_id, &example->id, &example->id_size) < 0
        || as_utf8(origin, "cluster_id", cluster_id, &example->cluster_id,
                   &example->cluster_id_size) < 0
        || as_int64(origin, "num_duplicates", num_duplicates, &example->num_duplicates) < 0
        || as_int64(origin, "member_count", member_count, &example->member_count) < 0
        || as_int64(origin, "taxon_id", taxon_id, &example->taxon_id) < 0) {
        return -1;
    }
    if (!PyBytes_Check(sequence)) {
        return type_error(origin, "sequence", "bytes", sequence);
    }
    example->sequence = PyBytes_AS_STRING(sequence);
    example->sequence_size = PyBytes_GET_SIZE(sequence);
    /* Only a list or tuple: a str is a sequence of str too, but as duplicate_ids a mistake. */
    if (!PyList_Check(duplicate_ids) && !PyTuple_Check(duplicate_ids)) {
        return type_error(origin, "duplicate_ids", "a list or tuple of str", duplicate_ids);
    }
    example->duplicate_ids = duplicate_ids;
    example->duplicate_ids_list_size = 0;
    num_values = PySequence_Fast_GET_SIZE(duplicate_ids);
    for (i = 0; i < num_values; i++) {
        value = PySequence_Fast_GET_ITEM(duplicate_ids, i);
        if (!PyUnicode_Check(value)) {
            where = describe(origin, "duplicate_ids");
            if (where != NULL) {
                PyErr_Format(PyExc_TypeError, "%U item %zd must be str, not %.100s", where, i,
                             Py_TYPE(value)->tp_name);
                Py_DECREF(where);
            }
            return -1;
        }
        if (PyUnicode_AsUTF8AndSize(value, &value_size) == NULL) {
            return -1;
        }
        /* Sizes below are Py_ssize_t sums: keep them far from overflow (the same long str
         * may be listed many times). */
        if (value_size > PY_SSIZE_T_MAX / 4 - 16 - example->duplicate_ids_list_size) {
            PyErr_NoMemory();
            return -1;
        }
        example->duplicate_ids_list_size += delimited_size(value_size);
    }
    example->features_size =
        entry_size(CLUSTER_ID, one_bytes_feature_size(example->cluster_id_size))
        + entry_size(DUPLICATE_IDS, delimited_size(example->duplicate_ids_list_size))
        + entry_size(ID, one_bytes_feature_size(example->id_size))
        + entry_size(LENGTH, int64_feature_size(example->sequence_size))
        + entry_size(MEMBER_COUNT, int64_feature_size(example->member_count))
        + entry_size(NUM_DUPLICATES, int64_feature_size(example->num_duplicates))
        + entry_size(SEQUENCE, one_bytes_feature_size(example->sequence_size))
        + entry_size(TAXON_ID, int64_feature_size(example->taxon_id));
    return 0;
}

/* Size of the serialized Example. */
static Py_ssize_t example_size(const Example *example)
{
    return delimited_size(example->features_size);
}

/* Writes the serialized Example (example_size() bytes) at `out`; returns its end. */
static char *put_example(char *out, const Example *example)
{
    Py_ssize_t i, value_size;
    const char *value_data;

    /* Map entries sorted by feature name, as deterministic serialization orders them. */
    out = put_delimited_header(out, TAG_FIELD_1, example->features_size);
    out = put_one_bytes_entry(out, CLUSTER_ID, example->cluster_id, example->cluster_id_size);
    out = put_entry_header(out, DUPLICATE_IDS, delimited_size(example->duplicate_ids_list_size));
    out = put_delimited_header(out, TAG_FIELD_1, example->duplicate_ids_list_size);
    for (i = 0; i < PySequence_Fast_GET_SIZE(example->duplicate_ids); i++) {
        /* Checked and encoded by read_example(): this reads the cached UTF-8. */
        value_data = PyUnicode_AsUTF8AndSize(
            PySequence_Fast_GET_ITEM(example->duplicate_ids, i), &value_size);
        out = put_delimited(out, TAG_FIELD_1, value_data, value_size);
    }
    out = put_one_bytes_entry(out, ID, example->id, example->id_size);
    out = put_int64_entry(out, LENGTH, example->sequence_size);
    out = put_int64_entry(out, MEMBER_COUNT, example->member_count);
    out = put_int64_entry(out, NUM_DUPLICATES, example->num_duplicates);
    out = put_one_bytes_entry(out, SEQUENCE, example->sequence, example->sequence_size);
    return put_int64_entry(out, TAXON_ID, example->taxon_id);
}

/* The sizes and the writers must agree; a mismatch is a bug here, never bad input. */
static int check_written(const char *function, const char *end, const char *expected_end)
{
    if (end != expected_end) {
        PyErr_Format(PyExc_SystemError, "%s(): computed and written sizes differ", function);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * example_bytes */

PyDoc_STRVAR(example_bytes_doc,
"example_bytes(record_id, cluster_id, sequence, num_duplicates, duplicate_ids, member_count,"
" taxon_id)\n"
"--\n"
"\n"
"A serialized `tf.train.Example` with the output features.\n"
"\n"
"The bytes are those of TensorFlow's `Example.SerializeToString(deterministic=True)` (map\n"
"entries sorted by key; a test checks the equality), encoded here directly in the protobuf\n"
"wire format: building the proto objects made every worker import TensorFlow and was the\n"
"largest per-record cost of the job after Beam's own. `record_id`, `cluster_id` and the\n"
"`duplicate_ids` (a list or tuple of str) are encoded as strict UTF-8; `sequence` is bytes and\n"
"the `length` feature its length. `num_duplicates`, `member_count` and `taxon_id` are int64\n"
"(outside it: OverflowError); `member_count` and `taxon_id` are 0 when the header did not state\n"
"them.");


static PyObject *example_bytes(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"record_id", "cluster_id", "sequence", "num_duplicates",
                               "duplicate_ids", "member_count", "taxon_id", NULL};
    const Origin origin = {"example_bytes", -1};
    PyObject *record_id, *cluster_id, *sequence, *num_duplicates, *duplicate_ids, *member_count,
        *taxon_id, *result;
    Example example;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO:example_bytes", keywords, &record_id,
                                     &cluster_id, &sequence, &num_duplicates, &duplicate_ids,
                                     &member_count, &taxon_id)
        || read_example(origin, record_id, cluster_id, sequence, num_duplicates, duplicate_ids,
                        member_count, taxon_id, &example) < 0) {
        return NULL;
    }
    /* Sizes first, so that the result is allocated once and filled in one pass. */
    result = PyBytes_FromStringAndSize(NULL, example_size(&example));
    if (result != NULL
        && check_written("example_bytes", put_example(PyBytes_AS_STRING(result), &example),
                         PyBytes_AS_STRING(result) + PyBytes_GET_SIZE(result)) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * CRC-32C (Castagnoli), as TFRecord uses: reflected polynomial 0x82F63B78, initial value and final
 * XOR 0xFFFFFFFF. Portable software, slicing-by-8: eight table lookups per 8 input bytes instead
 * of one per byte. Words are assembled byte by byte so that the result does not depend on the
 * machine's byte order. */

static uint32_t crc32c_table[8][256];

static void build_crc32c_tables(void)
{
    uint32_t byte, crc;
    int bit, slice;
    for (byte = 0; byte < 256; byte++) {
        crc = byte;
        for (bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
        crc32c_table[0][byte] = crc;
    }
    /* crc32c_table[k][b]: the CRC contribution of byte b followed by k zero bytes. */
    for (byte = 0; byte < 256; byte++) {
        crc = crc32c_table[0][byte];
        for (slice = 1; slice < 8; slice++) {
            crc = (crc >> 8) ^ crc32c_table[0][crc & 0xff];
            crc32c_table[slice][byte] = crc;
        }
    }
}

static uint32_t load_le32(const unsigned char *data)
{
    return (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16
        | (uint32_t)data[3] << 24;
}

static uint32_t crc32c(const unsigned char *data, size_t size)
{
    uint32_t crc = 0xFFFFFFFFu, low, high;
    for (; size >= 8; data += 8, size -= 8) {
        low = crc ^ load_le32(data);
        high = load_le32(data + 4);
        crc = crc32c_table[7][low & 0xff] ^ crc32c_table[6][(low >> 8) & 0xff]
            ^ crc32c_table[5][(low >> 16) & 0xff] ^ crc32c_table[4][low >> 24]
            ^ crc32c_table[3][high & 0xff] ^ crc32c_table[2][(high >> 8) & 0xff]
            ^ crc32c_table[1][(high >> 16) & 0xff] ^ crc32c_table[0][high >> 24];
    }
    for (; size > 0; data++, size--) {
        crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *data) & 0xff];
    }
    return crc ^ 0xFFFFFFFFu;
}

/* x86-64 has had a CRC-32C instruction since SSE4.2 (2008): ~10x the tables' speed, chosen at
 * import when the CPU has it. ANKH3_CRC32C=software in the environment forces the tables (the
 * tests check both against google_crc32c). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_CRC32C_INSTRUCTION 1
__attribute__((target("sse4.2")))
static uint32_t crc32c_instruction(const unsigned char *data, size_t size)
{
    uint64_t crc = 0xFFFFFFFFu, word;
    for (; size >= 8; data += 8, size -= 8) {
        memcpy(&word, data, 8);  /* little-endian, as the instruction expects */
        crc = __builtin_ia32_crc32di(crc, word);
    }
    for (; size > 0; data++, size--) {
        crc = __builtin_ia32_crc32qi((uint32_t)crc, *data);
    }
    return (uint32_t)crc ^ 0xFFFFFFFFu;
}
#endif

static uint32_t (*crc32c_implementation)(const unsigned char *, size_t) = crc32c;

/* Picks the CRC-32C implementation; returns its name, for the module's `CRC32C_IMPLEMENTATION`. */
static const char *choose_crc32c(void)
{
    const char *forced = getenv("ANKH3_CRC32C");
    if (forced != NULL && strcmp(forced, "software") == 0) {
        return "software";
    }
#ifdef HAVE_CRC32C_INSTRUCTION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc32c_implementation = crc32c_instruction;
        return "sse4.2";
    }
#endif
    return "software";
}

/* TFRecord stores CRCs rotated and offset ("masked"): a CRC of data that itself holds CRCs would
 * otherwise be weak. */
static uint32_t masked_crc32c(const unsigned char *data, size_t size)
{
    uint32_t crc = crc32c_implementation(data, size);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

static char *put_le(char *out, uint64_t value, int size)
{
    int i;
    for (i = 0; i < size; i++) {
        *out++ = (char)(value >> (8 * i));
    }
    return out;
}

/* TFRecord framing: a header (the length, its CRC) before the data, the data's CRC after it. */
#define FRAME_HEADER_SIZE 12
#define FRAME_OVERHEAD 16

/* Writes the framing around the `size` bytes of data already at `out + FRAME_HEADER_SIZE`. */
static void put_framing(char *out, Py_ssize_t size)
{
    char *data = put_le(out, (uint64_t)size, 8);
    data = put_le(data, masked_crc32c((const unsigned char *)out, 8), 4);
    put_le(data + size, masked_crc32c((const unsigned char *)data, (size_t)size), 4);
}

/* ---------------------------------------------------------------------------------------------
 * frame */

PyDoc_STRVAR(frame_doc,
"frame(record)\n"
"--\n"
"\n"
"One record in TFRecord framing: length, masked CRC32C of the length, data, its CRC.\n"
"\n"
"The length is a little-endian uint64 and each CRC a little-endian uint32, as\n"
"`tf.io.TFRecordWriter` writes them (a test compares the bytes). `record` is bytes.");

static PyObject *frame(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"record", NULL};
    PyObject *record, *result;
    Py_ssize_t size;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:frame", keywords, &record)) {
        return NULL;
    }
    if (!PyBytes_Check(record)) {
        PyErr_Format(PyExc_TypeError, "frame() argument 'record' must be bytes, not %.100s",
                     Py_TYPE(record)->tp_name);
        return NULL;
    }
    size = PyBytes_GET_SIZE(record);
    if (size > PY_SSIZE_T_MAX - FRAME_OVERHEAD) {
        return PyErr_NoMemory();
    }
    result = PyBytes_FromStringAndSize(NULL, FRAME_OVERHEAD + size);
    if (result == NULL) {
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(result) + FRAME_HEADER_SIZE, PyBytes_AS_STRING(record),
           (size_t)size);
    put_framing(PyBytes_AS_STRING(result), size);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * encode_bucket */

/* Set at import: hashlib.sha256 (the split must be transforms.split_of's bit for bit, so it
 * hashes with the same function), the interned name "digest", and the int 0. */
static PyObject *sha256_constructor;
static PyObject *digest_name;
static PyObject *zero;

/* 1 when the cluster goes to validation, 0 when to train, -1 on error. As transforms.split_of:
 * the first 8 bytes of sha256(UTF-8 of the cluster id), big-endian, divided by 2**64, below
 * `fraction`. (double)x rounds to nearest as Python's correctly rounded int / int does, and
 * dividing by 2**64 then is exact, so the quotients are the same double. */
static int is_validation(const char *cluster_id, Py_ssize_t size, double fraction)
{
    PyObject *data, *hash, *digest;
    const unsigned char *head;
    uint64_t first = 0;
    int i, result = -1;

    data = PyBytes_FromStringAndSize(cluster_id, size);
    if (data == NULL) {
        return -1;
    }
    hash = PyObject_CallOneArg(sha256_constructor, data);
    Py_DECREF(data);
    if (hash == NULL) {
        return -1;
    }
    digest = PyObject_CallMethodNoArgs(hash, digest_name);
    Py_DECREF(hash);
    if (digest == NULL) {
        return -1;
    }
    if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) < 8) {
        PyErr_SetString(PyExc_SystemError, "encode_bucket(): sha256 gave no 8-byte digest");
    }
    else {
        head = (const unsigned char *)PyBytes_AS_STRING(digest);
        for (i = 0; i < 8; i++) {
            first = first << 8 | head[i];
        }
        result = (double)first / 18446744073709551616.0 < fraction;
    }
    Py_DECREF(digest);
    return result;
}

/* What buckets.sequence_stats needs of one split's records. */
typedef struct {
    PyObject *lengths;  /* {length: records}, in the order the lengths first occur */
    uint64_t residues[256];  /* occurrences of each byte value in the sequences */
} SplitCounts;

static int count_sequence(SplitCounts *counts, const char *sequence, Py_ssize_t size)
{
    const unsigned char *residue = (const unsigned char *)sequence, *end = residue + size;
    PyObject *length, *count, *incremented;
    int result = -1;

    for (; residue < end; residue++) {
        counts->residues[*residue]++;
    }
    length = PyLong_FromSsize_t(size);
    if (length == NULL) {
        return -1;
    }
    count = PyDict_GetItemWithError(counts->lengths, length);  /* borrowed */
    if (count != NULL || !PyErr_Occurred()) {
        incremented = PyLong_FromSsize_t(count == NULL ? 1 : PyLong_AsSsize_t(count) + 1);
        if (incremented != NULL) {
            result = PyDict_SetItem(counts->lengths, length, incremented);
            Py_DECREF(incremented);
        }
    }
    Py_DECREF(length);
    return result;
}

/* (lengths, tuple of the 256 residue counts) of one split. */
static PyObject *counts_result(const SplitCounts *counts)
{
    PyObject *residues = PyTuple_New(256), *count, *result;
    int value;

    if (residues == NULL) {
        return NULL;
    }
    for (value = 0; value < 256; value++) {
        count = PyLong_FromUnsignedLongLong(counts->residues[value]);
        if (count == NULL) {
            Py_DECREF(residues);
            return NULL;
        }
        PyTuple_SET_ITEM(residues, value, count);
    }
    result = PyTuple_Pack(2, counts->lengths, residues);
    Py_DECREF(residues);
    return result;
}

/* The items of `value` when it is a list or tuple of `expected` items, else NULL with a
 * TypeError naming it (`field`, or the item of `packed` itself when `field` is NULL) and
 * `layout`, the items it should have. */
static PyObject **items_of(Origin origin, const char *field, PyObject *value,
                           Py_ssize_t expected, const char *layout)
{
    PyObject *where;
    if ((PyList_Check(value) || PyTuple_Check(value))
        && PySequence_Fast_GET_SIZE(value) == expected) {
        return PySequence_Fast_ITEMS(value);
    }
    where = describe(origin, field);
    if (where == NULL) {
        return NULL;
    }
    if (PyList_Check(value) || PyTuple_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%U must have %zd items %s, not %zd", where, expected,
                     layout, PySequence_Fast_GET_SIZE(value));
    }
    else {
        PyErr_Format(PyExc_TypeError, "%U must be a tuple %s, not %.100s", where, layout,
                     Py_TYPE(value)->tp_name);
    }
    Py_DECREF(where);
    return NULL;
}

PyDoc_STRVAR(encode_bucket_doc,
"encode_bucket(packed, validation_fraction)\n"
"--\n"
"\n"
"The records of one bucket of the UniRef job, split and encoded: the per-record work of\n"
"`buckets._WriteBucketFn` (in Python, ~4.4 us a record) in one call.\n"
"\n"
"`packed` is a list or tuple of packed `Kept`s (`buckets.pack_kept`): (protein,\n"
"num_duplicates, duplicate_ids, shuffle_key), `protein` the 8 fields of `validation.Protein`\n"
"(id, cluster_id, sequence, sequence_hash, member_count, taxon_id, path, offset). Returns\n"
"(train, validation, train_counts, validation_counts):\n"
"\n"
"- `train` [(shuffle_key, framed)] and `validation` [(shuffle_key, framed, cluster_id)], each\n"
"  in the order of `packed`; `framed` is `frame(example_bytes(id, cluster_id, sequence,\n"
"  num_duplicates, duplicate_ids, member_count, taxon_id))`, member_count and taxon_id None\n"
"  written as 0; `shuffle_key` and `cluster_id` are the objects of `packed`.\n"
"- A record is in validation when `transforms.split_of(cluster_id, validation_fraction)` says\n"
"  so: the first 8 bytes of hashlib.sha256 of the cluster id's UTF-8, big-endian, / 2**64,\n"
"  below `validation_fraction`.\n"
"- Each split's counts are ({length: records}, in the order the lengths first occur; a tuple of\n"
"  256 ints, how often each byte value occurs in the split's sequences): what\n"
"  `buckets.sequence_stats` takes.\n"
"\n"
"Bad fields raise the errors of `example_bytes`, naming the item of `packed`.");

static PyObject *encode_bucket(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"packed", "validation_fraction", NULL};
    Origin origin = {"encode_bucket", 0};
    PyObject *packed, *framed, *entry, *member_count, *taxon_id, *result = NULL;
    PyObject *records[2] = {NULL, NULL}, *split_counts[2] = {NULL, NULL};
    PyObject **kept, **protein;
    SplitCounts counts[2];
    Example example;
    Py_ssize_t i, size;
    double fraction;
    int split;
    char *out;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Od:encode_bucket", keywords, &packed,
                                     &fraction)) {
        return NULL;
    }
    if (!PyList_Check(packed) && !PyTuple_Check(packed)) {
        PyErr_Format(PyExc_TypeError,
                     "encode_bucket() argument 'packed' must be a list or tuple, not %.100s",
                     Py_TYPE(packed)->tp_name);
        return NULL;
    }
    memset(counts, 0, sizeof(counts));
    for (split = 0; split < 2; split++) {
        records[split] = PyList_New(0);
        counts[split].lengths = PyDict_New();
        if (records[split] == NULL || counts[split].lengths == NULL) {
            goto done;
        }
    }
    for (i = 0; i < PySequence_Fast_GET_SIZE(packed); i++) {
        origin.item = i;
        kept = items_of(origin, NULL, PySequence_Fast_GET_ITEM(packed, i), 4,
                        "(protein, num_duplicates, duplicate_ids, shuffle_key)");
        if (kept == NULL) {
            goto done;
        }
        protein = items_of(origin, "protein", kept[0], 8,
                           "(id, cluster_id, sequence, sequence_hash, member_count, taxon_id, "
                           "path, offset)");
        if (protein == NULL) {
            goto done;
        }
        /* None: the header did not state it (no n= or TaxID=). */
        member_count = protein[4] == Py_None ? zero : protein[4];
        taxon_id = protein[5] == Py_None ? zero : protein[5];
        if (read_example(origin, protein[0], protein[1], protein[2], kept[1], kept[2],
                         member_count, taxon_id, &example) < 0) {
            goto done;
        }
        split = is_validation(example.cluster_id, example.cluster_id_size, fraction);
        if (split < 0) {
            goto done;
        }
        size = example_size(&example);
        if (size > PY_SSIZE_T_MAX - FRAME_OVERHEAD) {
            PyErr_NoMemory();
            goto done;
        }
        /* One allocation per record: the Example is written in place inside its framing. */
        framed = PyBytes_FromStringAndSize(NULL, FRAME_OVERHEAD + size);
        if (framed == NULL) {
            goto done;
        }
        out = PyBytes_AS_STRING(framed);
        if (check_written("encode_bucket", put_example(out + FRAME_HEADER_SIZE, &example),
                          out + FRAME_HEADER_SIZE + size) < 0) {
            Py_DECREF(framed);
            goto done;
        }
        put_framing(out, size);
        entry = split ? PyTuple_Pack(3, kept[3], framed, protein[1])
                      : PyTuple_Pack(2, kept[3], framed);
        Py_DECREF(framed);
        if (entry == NULL) {
            goto done;
        }
        if (PyList_Append(records[split], entry) < 0) {
            Py_DECREF(entry);
            goto done;
        }
        Py_DECREF(entry);
        if (count_sequence(&counts[split], example.sequence, example.sequence_size) < 0) {
            goto done;
        }
    }
    split_counts[0] = counts_result(&counts[0]);
    split_counts[1] = counts_result(&counts[1]);
    if (split_counts[0] != NULL && split_counts[1] != NULL) {
        result = PyTuple_Pack(4, records[0], records[1], split_counts[0], split_counts[1]);
    }
done:
    for (split = 0; split < 2; split++) {
        Py_XDECREF(records[split]);
        Py_XDECREF(counts[split].lengths);
        Py_XDECREF(split_counts[split]);
    }
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * Module */

static PyMethodDef codec_methods[] = {
    {"example_bytes", (PyCFunction)(void (*)(void))example_bytes, METH_VARARGS | METH_KEYWORDS,
     example_bytes_doc},
    {"frame", (PyCFunction)(void (*)(void))frame, METH_VARARGS | METH_KEYWORDS, frame_doc},
    {"encode_bucket", (PyCFunction)(void (*)(void))encode_bucket, METH_VARARGS | METH_KEYWORDS,
     encode_bucket_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipelines._example_codec",
    .m_doc = "Compiled encoder of the UniRef job's output records: `tf.train.Example` bytes and\n"
             "TFRecord framing, without TensorFlow, and the per-record work of writing a bucket.\n"
             "Used through `pipelines.tfrecords` and `pipelines.buckets`.",
    .m_size = 0,
    .m_methods = codec_methods,
};

/* The objects encode_bucket() uses, looked up once; -1 with an exception set on failure. */
static int init_encode_bucket(void)
{
    PyObject *hashlib = PyImport_ImportModule("hashlib");
    if (hashlib == NULL) {
        return -1;
    }
    sha256_constructor = PyObject_GetAttrString(hashlib, "sha256");
    Py_DECREF(hashlib);
    digest_name = PyUnicode_InternFromString("digest");
    zero = PyLong_FromLong(0);
    return sha256_constructor == NULL || digest_name == NULL || zero == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__example_codec(void)
{
    PyObject *module;

    build_crc32c_tables();
    if (init_encode_bucket() < 0) {
        return NULL;
    }
    module = PyModule_Create(&codec_module);
    if (module != NULL
        && PyModule_AddStringConstant(module, "CRC32C_IMPLEMENTATION", choose_crc32c()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
