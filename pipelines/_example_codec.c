/* The output record encoder of the UniRef job: `tf.train.Example` protos and TFRecord framing.
 *
 * Building each record was the largest per-record cost of the job after Beam's own (about 9 us in
 * pure Python); here it is a size computation, one allocation and one pass of copies. The bytes
 * are those of TensorFlow's `Example.SerializeToString(deterministic=True)` and of
 * `tf.io.TFRecordWriter` (tests compare them), written without TensorFlow so that workers never
 * import it.
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
 * Argument checks. Errors name the argument, as Python-level signatures would. */

static int as_utf8(const char *argument, PyObject *value, const char **data, Py_ssize_t *size)
{
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "example_bytes() argument '%s' must be str, not %.100s",
                     argument, Py_TYPE(value)->tp_name);
        return -1;
    }
    /* Strict UTF-8, as str.encode(); the encoding is cached in the str (ASCII needs none). */
    *data = PyUnicode_AsUTF8AndSize(value, size);
    return *data == NULL ? -1 : 0;
}

static int as_int64(const char *argument, PyObject *value, int64_t *result)
{
    int overflow;
    long long converted;
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "example_bytes() argument '%s' must be int, not %.100s",
                     argument, Py_TYPE(value)->tp_name);
        return -1;
    }
    converted = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
        PyErr_Format(PyExc_OverflowError,
                     "example_bytes() argument '%s' is outside the int64 range", argument);
        return -1;
    }
    if (converted == -1 && PyErr_Occurred()) {
        return -1;
    }
    *result = (int64_t)converted;
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
    PyObject *record_id, *cluster_id, *sequence, *num_duplicates_arg, *duplicate_ids_arg,
        *member_count_arg, *taxon_id_arg;
    PyObject *duplicate_ids = NULL, *result = NULL;
    const char *id_data, *cluster_data, *value_data;
    Py_ssize_t id_size, cluster_size, sequence_size, value_size, i, num_values;
    Py_ssize_t duplicate_ids_list_size = 0, features_size;
    int64_t num_duplicates, member_count, taxon_id;
    char *out;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO:example_bytes", keywords, &record_id,
                                     &cluster_id, &sequence, &num_duplicates_arg,
                                     &duplicate_ids_arg, &member_count_arg, &taxon_id_arg)) {
        return NULL;
    }
    if (as_utf8("record_id", record_id, &id_data, &id_size) < 0
        || as_utf8("cluster_id", cluster_id, &cluster_data, &cluster_size) < 0
        || as_int64("num_duplicates", num_duplicates_arg, &num_duplicates) < 0
        || as_int64("member_count", member_count_arg, &member_count) < 0
        || as_int64("taxon_id", taxon_id_arg, &taxon_id) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(sequence)) {
        PyErr_Format(PyExc_TypeError,
                     "example_bytes() argument 'sequence' must be bytes, not %.100s",
                     Py_TYPE(sequence)->tp_name);
        return NULL;
    }
    sequence_size = PyBytes_GET_SIZE(sequence);
    /* Only a list or tuple: a str is a sequence of str too, but as duplicate_ids a mistake. */
    if (!PyList_Check(duplicate_ids_arg) && !PyTuple_Check(duplicate_ids_arg)) {
        PyErr_Format(PyExc_TypeError,
                     "example_bytes() argument 'duplicate_ids' must be a list or tuple of str, "
                     "not %.100s", Py_TYPE(duplicate_ids_arg)->tp_name);
        return NULL;
    }
    /* A list or tuple comes back as itself (a new reference, no copy). */
    duplicate_ids = PySequence_Fast(duplicate_ids_arg, "duplicate_ids");
    if (duplicate_ids == NULL) {
        return NULL;
    }
    num_values = PySequence_Fast_GET_SIZE(duplicate_ids);
    for (i = 0; i < num_values; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(duplicate_ids, i);
        if (!PyUnicode_Check(value)) {
            PyErr_Format(PyExc_TypeError,
                         "example_bytes() argument 'duplicate_ids' item %zd must be str, "
                         "not %.100s", i, Py_TYPE(value)->tp_name);
            goto done;
        }
        value_data = PyUnicode_AsUTF8AndSize(value, &value_size);
        if (value_data == NULL) {
            goto done;
        }
        /* Sizes below are Py_ssize_t sums: keep them far from overflow (the same long str
         * may be listed many times). */
        if (value_size > PY_SSIZE_T_MAX / 4 - 16 - duplicate_ids_list_size) {
            PyErr_NoMemory();
            goto done;
        }
        duplicate_ids_list_size += delimited_size(value_size);
    }

    /* Sizes first, so that the result is allocated once and filled in one pass. */
    features_size = entry_size(CLUSTER_ID, one_bytes_feature_size(cluster_size))
        + entry_size(DUPLICATE_IDS, delimited_size(duplicate_ids_list_size))
        + entry_size(ID, one_bytes_feature_size(id_size))
        + entry_size(LENGTH, int64_feature_size(sequence_size))
        + entry_size(MEMBER_COUNT, int64_feature_size(member_count))
        + entry_size(NUM_DUPLICATES, int64_feature_size(num_duplicates))
        + entry_size(SEQUENCE, one_bytes_feature_size(sequence_size))
        + entry_size(TAXON_ID, int64_feature_size(taxon_id));
    result = PyBytes_FromStringAndSize(NULL, delimited_size(features_size));
    if (result == NULL) {
        goto done;
    }
    out = PyBytes_AS_STRING(result);

    /* Map entries sorted by feature name, as deterministic serialization orders them. */
    out = put_delimited_header(out, TAG_FIELD_1, features_size);
    out = put_one_bytes_entry(out, CLUSTER_ID, cluster_data, cluster_size);
    out = put_entry_header(out, DUPLICATE_IDS, delimited_size(duplicate_ids_list_size));
    out = put_delimited_header(out, TAG_FIELD_1, duplicate_ids_list_size);
    for (i = 0; i < num_values; i++) {
        /* Checked and encoded above: this reads the cached UTF-8. */
        value_data = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(duplicate_ids, i),
                                             &value_size);
        out = put_delimited(out, TAG_FIELD_1, value_data, value_size);
    }
    out = put_one_bytes_entry(out, ID, id_data, id_size);
    out = put_int64_entry(out, LENGTH, sequence_size);
    out = put_int64_entry(out, MEMBER_COUNT, member_count);
    out = put_int64_entry(out, NUM_DUPLICATES, num_duplicates);
    out = put_one_bytes_entry(out, SEQUENCE, PyBytes_AS_STRING(sequence), sequence_size);
    out = put_int64_entry(out, TAXON_ID, taxon_id);

    /* The sizes and the writers must agree; a mismatch is a bug here, never bad input. */
    if (out != PyBytes_AS_STRING(result) + PyBytes_GET_SIZE(result)) {
        PyErr_SetString(PyExc_SystemError, "example_bytes(): computed and written sizes differ");
        Py_CLEAR(result);
    }
done:
    Py_DECREF(duplicate_ids);
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
    const unsigned char *data;
    Py_ssize_t size;
    char *out;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:frame", keywords, &record)) {
        return NULL;
    }
    if (!PyBytes_Check(record)) {
        PyErr_Format(PyExc_TypeError, "frame() argument 'record' must be bytes, not %.100s",
                     Py_TYPE(record)->tp_name);
        return NULL;
    }
    data = (const unsigned char *)PyBytes_AS_STRING(record);
    size = PyBytes_GET_SIZE(record);
    if (size > PY_SSIZE_T_MAX - 16) {
        return PyErr_NoMemory();
    }
    result = PyBytes_FromStringAndSize(NULL, 8 + 4 + size + 4);
    if (result == NULL) {
        return NULL;
    }
    out = PyBytes_AS_STRING(result);
    out = put_le(out, (uint64_t)size, 8);
    out = put_le(out, masked_crc32c((const unsigned char *)PyBytes_AS_STRING(result), 8), 4);
    memcpy(out, data, (size_t)size);
    out += size;
    put_le(out, masked_crc32c(data, (size_t)size), 4);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * Module */

static PyMethodDef codec_methods[] = {
    {"example_bytes", (PyCFunction)(void (*)(void))example_bytes, METH_VARARGS | METH_KEYWORDS,
     example_bytes_doc},
    {"frame", (PyCFunction)(void (*)(void))frame, METH_VARARGS | METH_KEYWORDS, frame_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipelines._example_codec",
    .m_doc = "Compiled encoder of the UniRef job's output records: `tf.train.Example` bytes and\n"
             "TFRecord framing, without TensorFlow. Used through `pipelines.tfrecords`.",
    .m_size = 0,
    .m_methods = codec_methods,
};

PyMODINIT_FUNC PyInit__example_codec(void)
{
    PyObject *module;

    build_crc32c_tables();
    module = PyModule_Create(&codec_module);
    if (module != NULL
        && PyModule_AddStringConstant(module, "CRC32C_IMPLEMENTATION", choose_crc32c()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
