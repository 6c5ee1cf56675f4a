/* The record scanner of the UniRef job's FASTA reader: cuts a buffer of FASTA text into records.
 *
 * Cutting records in Python (find the next header, slice, split off the header line) cost about
 * 2.7 us per record, a tenth of the job's per-record time; here it is one `memchr` for the next
 * `>` and two for the header line's end, plus the objects of the record. The records are those
 * `pipelines/fasta_source.py` documents (and tests compare against a Python reference):
 * a record starts at a `>` that follows a line end, and runs to the next one.
 *
 * It also holds the common path of sequence validation, `clean_sequence`: normalizing, checking
 * and hashing a valid body in Python takes several passes and objects; here it is one
 * table-driven pass and one call of `hashlib.sha256` (the job's validate stage went from about
 * 5.3 to 4.5 us per record). Anything that is not valid is left to `pipelines/validation.py`,
 * which states the rules and diagnoses the rejection.
 *
 * Build: `make setup`, or `python3 setup.py build_ext --inplace` (Dataflow workers compile it
 * when they install the job's sdist).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* Index of the first `>` at or after `from` that starts a line (index 0 starts a line: the
 * buffer begins at a line start or holds the byte before its first record); `size` when none. */
static Py_ssize_t next_header(const char *data, Py_ssize_t from, Py_ssize_t size)
{
    while (from < size) {
        const char *found = memchr(data + from, '>', (size_t)(size - from));
        Py_ssize_t index;
        if (found == NULL) {
            return size;
        }
        index = found - data;
        if (index == 0 || data[index - 1] == '\n') {
            return index;
        }
        from = index + 1;
    }
    return size;
}

/* The (path, offset, header, body) tuple of the record in data[begin:end] (data[begin] is its
 * `>`): the header line without `>` and trailing `\r`s, and the rest, line ends included. */
static PyObject *record_tuple(PyObject *path, long long base, const char *data, Py_ssize_t begin,
                             Py_ssize_t end)
{
    const char *header = data + begin + 1;
    const char *line_end = memchr(header, '\n', (size_t)(end - begin - 1));
    const char *header_end = line_end != NULL ? line_end : data + end;
    const char *body = line_end != NULL ? line_end + 1 : data + end;
    PyObject *record = PyTuple_New(4), *item;

    if (record == NULL) {
        return NULL;
    }
    while (header_end > header && header_end[-1] == '\r') {
        header_end--;
    }
    Py_INCREF(path);
    PyTuple_SET_ITEM(record, 0, path);
    item = PyLong_FromLongLong(base + begin);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 1, item);
    item = PyBytes_FromStringAndSize(header, header_end - header);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 2, item);
    item = PyBytes_FromStringAndSize(body, data + end - body);
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 3, item);
    return record;

error:
    Py_DECREF(record);
    return NULL;
}

PyDoc_STRVAR(scan_records_doc,
"scan_records(data, begin, base, path, at_eof, max_records, max_bytes)\n"
"--\n"
"\n"
"Cuts the complete records that start at or after index `begin` of `data` (bytes).\n"
"\n"
"A record starts at a `>` at the start of a line (index 0 counts as one) and ends where the\n"
"next one starts, or at the end of `data` when `at_eof` (the file ends there); otherwise the\n"
"last record of `data` is incomplete and is not returned. Byte 0 of `data` is at absolute offset\n"
"`base` of the file. Stops after `max_records` records, or once the records' bodies reach\n"
"`max_bytes` bytes.\n"
"\n"
"Returns `(records, stop)`: `records` a list of `(path, offset, header, body)` tuples (`offset`\n"
"absolute, of the `>`; `header` the header line without `>` and trailing `\\r`s; `body` the\n"
"rest of the record, line ends included) and `stop` the index at which to go on: the `>` of the\n"
"first record not returned (incomplete, or beyond the limits), or `len(data)` when no record\n"
"starts in data[begin:] after those returned.");

static PyObject *scan_records(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"data", "begin", "base", "path", "at_eof", "max_records",
                               "max_bytes", NULL};
    PyObject *data_object, *path, *records;
    Py_ssize_t begin, max_records, max_bytes, size, start, body_bytes = 0;
    long long base;
    int at_eof;
    const char *data;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nLUpnn:scan_records", keywords,
                                     &PyBytes_Type, &data_object, &begin, &base, &path, &at_eof,
                                     &max_records, &max_bytes)) {
        return NULL;
    }
    data = PyBytes_AS_STRING(data_object);
    size = PyBytes_GET_SIZE(data_object);
    if (begin < 0 || begin > size) {
        PyErr_Format(PyExc_ValueError, "scan_records() argument 'begin' is %zd, outside [0, %zd]",
                     begin, size);
        return NULL;
    }
    records = PyList_New(0);
    if (records == NULL) {
        return NULL;
    }
    start = next_header(data, begin, size);
    while (start < size && PyList_GET_SIZE(records) < max_records && body_bytes < max_bytes) {
        Py_ssize_t end = next_header(data, start + 1, size);
        PyObject *record;
        int appended;
        if (end == size && !at_eof) {
            break;
        }
        record = record_tuple(path, base, data, start, end);
        if (record == NULL) {
            goto error;
        }
        body_bytes += PyBytes_GET_SIZE(PyTuple_GET_ITEM(record, 3));
        appended = PyList_Append(records, record);
        Py_DECREF(record);
        if (appended < 0) {
            goto error;
        }
        start = end;
    }
    return Py_BuildValue("(Nn)", records, start);

error:
    Py_DECREF(records);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Sequence cleaning */

/* The non-canonical policies, in the order of `validation.NON_CANONICAL_POLICIES`. */
enum { POLICY_KEEP, POLICY_MAP_TO_X, POLICY_DROP, POLICY_COUNT };

/* What each body byte becomes under each policy: RESIDUE_INVALID (the record is not valid, or
 * needs Python's diagnosis), RESIDUE_SKIPPED (whitespace), or the residue written out. */
#define RESIDUE_INVALID 0
#define RESIDUE_SKIPPED 1
static unsigned char residue_tables[POLICY_COUNT][256];

/* `hashlib.sha256`, looked up at module init: OpenSSL's implementation, the one
 * `validation.sequence_hash` uses; and the interned name of its objects' `digest` method. */
static PyObject *sha256_constructor, *digest_name;

static void fill_residue_tables(void)
{
    static const char whitespace[] = " \t\r\n\v\f";
    static const char canonical_and_x[] = "ACDEFGHIKLMNPQRSTVWYX";
    static const char non_canonical[] = "BZUO";
    int policy;
    const char *c;

    for (policy = 0; policy < POLICY_COUNT; policy++) {
        unsigned char *table = residue_tables[policy];
        memset(table, RESIDUE_INVALID, 256);
        for (c = whitespace; *c; c++) {
            table[(unsigned char)*c] = RESIDUE_SKIPPED;
        }
        /* Letters of either case become the uppercase residue (`c | 0x20` is the lowercase). */
        for (c = canonical_and_x; *c; c++) {
            table[(unsigned char)*c] = (unsigned char)*c;
            table[(unsigned char)(*c | 0x20)] = (unsigned char)*c;
        }
        for (c = non_canonical; *c; c++) {
            unsigned char residue = policy == POLICY_KEEP ? (unsigned char)*c
                                  : policy == POLICY_MAP_TO_X ? 'X' : RESIDUE_INVALID;
            table[(unsigned char)*c] = residue;
            table[(unsigned char)(*c | 0x20)] = residue;
        }
        /* Written out: one `*` as the last residue is stripped, any other makes it not valid. */
        table['*'] = '*';
    }
}

PyDoc_STRVAR(clean_sequence_doc,
"clean_sequence(body, non_canonical, min_length, max_length)\n"
"--\n"
"\n"
"The normalized sequence of a valid record body (bytes) and its sha256 digest, or None.\n"
"\n"
"Does what `validation.normalize`, `validation.check_sequence` and `validation.sequence_hash`\n"
"specify, for valid bodies only: deletes whitespace (` \\t\\r\\n\\v\\f`), uppercases ASCII letters,\n"
"strips one trailing `*`, applies the non-canonical policy `non_canonical` (0 keep, 1 map B, Z,\n"
"U, O to X, 2 drop: the index in `validation.NON_CANONICAL_POLICIES`) and the inclusive length\n"
"bounds. Returns `(sequence, digest)` when the record is valid, and None for anything else\n"
"(non-ASCII bytes, no residues, `*` inside, characters outside the alphabet, a residue the\n"
"policy drops, a length out of bounds): the Python functions then give the rejection.");

static PyObject *clean_sequence(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"body", "non_canonical", "min_length", "max_length", NULL};
    PyObject *body_object, *sequence_object, *hash, *digest;
    Py_ssize_t min_length, max_length, size, length = 0, index, stops = 0;
    int policy;
    const unsigned char *body, *table;
    char *sequence;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!inn:clean_sequence", keywords,
                                     &PyBytes_Type, &body_object, &policy, &min_length,
                                     &max_length)) {
        return NULL;
    }
    if (policy < 0 || policy >= POLICY_COUNT) {
        PyErr_Format(PyExc_ValueError,
                     "clean_sequence() argument 'non_canonical' is %d, outside [0, %d]", policy,
                     POLICY_COUNT - 1);
        return NULL;
    }
    body = (const unsigned char *)PyBytes_AS_STRING(body_object);
    size = PyBytes_GET_SIZE(body_object);
    table = residue_tables[policy];
    sequence_object = PyBytes_FromStringAndSize(NULL, size);
    if (sequence_object == NULL) {
        return NULL;
    }
    sequence = PyBytes_AS_STRING(sequence_object);
    for (index = 0; index < size; index++) {
        unsigned char residue = table[body[index]];
        if (residue <= RESIDUE_SKIPPED) {
            if (residue == RESIDUE_INVALID) {
                goto not_valid;
            }
            continue;
        }
        stops += residue == '*';
        sequence[length++] = (char)residue;
    }
    /* Valid: no `*`, or one as the last residue (`normalize` strips it). */
    if (stops > 1 || (stops == 1 && sequence[length - 1] != '*')) {
        goto not_valid;
    }
    length -= stops;
    if (length == 0 || length < min_length || length > max_length) {
        goto not_valid;
    }
    if (length != size && _PyBytes_Resize(&sequence_object, length) < 0) {
        return NULL;
    }
    hash = PyObject_CallOneArg(sha256_constructor, sequence_object);
    if (hash == NULL) {
        goto error;
    }
    digest = PyObject_CallMethodNoArgs(hash, digest_name);
    Py_DECREF(hash);
    if (digest == NULL) {
        goto error;
    }
    return Py_BuildValue("(NN)", sequence_object, digest);

not_valid:
    Py_DECREF(sequence_object);
    Py_RETURN_NONE;

error:
    Py_DECREF(sequence_object);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Module */

static PyMethodDef scan_methods[] = {
    {"scan_records", (PyCFunction)(void (*)(void))scan_records, METH_VARARGS | METH_KEYWORDS,
     scan_records_doc},
    {"clean_sequence", (PyCFunction)(void (*)(void))clean_sequence, METH_VARARGS | METH_KEYWORDS,
     clean_sequence_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipelines._fasta_scan",
    .m_doc = "Compiled record scanner of the UniRef job's FASTA reader and the common path of\n"
             "its sequence validation. Used through `pipelines.fasta_source.read_batches` and\n"
             "`pipelines.validation.check_record`.",
    .m_size = 0,
    .m_methods = scan_methods,
};

PyMODINIT_FUNC PyInit__fasta_scan(void)
{
    PyObject *hashlib;

    if (sha256_constructor == NULL) {
        hashlib = PyImport_ImportModule("hashlib");
        if (hashlib == NULL) {
            return NULL;
        }
        sha256_constructor = PyObject_GetAttrString(hashlib, "sha256");
        Py_DECREF(hashlib);
        if (sha256_constructor == NULL) {
            return NULL;
        }
        digest_name = PyUnicode_InternFromString("digest");
        if (digest_name == NULL) {
            Py_CLEAR(sha256_constructor);
            return NULL;
        }
        fill_residue_tables();
    }
    return PyModule_Create(&scan_module);
}
