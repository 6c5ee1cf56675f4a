/* The record scanner of the UniRef job's FASTA reader: cuts a buffer of FASTA text into records.
 *
 * Cutting records in Python (find the next header, slice, split off the header line) cost about
 * 2.7 us per record, a tenth of the job's per-record time; here it is one `memchr` for the next
 * `>` and two for the header line's end, plus the objects of the record. The records are those
 * `pipelines/fasta_source.py` documents (and tests compare against a Python reference):
 * a record starts at a `>` that follows a line end, and runs to the next one.
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
 * Module */

static PyMethodDef scan_methods[] = {
    {"scan_records", (PyCFunction)(void (*)(void))scan_records, METH_VARARGS | METH_KEYWORDS,
     scan_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipelines._fasta_scan",
    .m_doc = "Compiled record scanner of the UniRef job's FASTA reader. Used through\n"
             "`pipelines.fasta_source.read_batches`.",
    .m_size = 0,
    .m_methods = scan_methods,
};

PyMODINIT_FUNC PyInit__fasta_scan(void)
{
    return PyModule_Create(&scan_module);
}
