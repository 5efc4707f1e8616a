/* The common span, encoded in C: what _otlp._span writes, byte for byte, without the interpreter.
 *
 * encode(fields) takes the tuple _internals.span_wire_fields returns and gives the span's
 * ScopeSpans.spans field, or None for any span it does not handle (a trace state, events, links,
 * a status, an attribute value that is not exactly str, bool, int or float, an int outside int64,
 * text that is not UTF-8 encodable, ids out of range): the Python encoder then handles that span.
 * tests/otlp compare both encoders and the SDK's on spans of every shape.
 *
 * Copyright kilostar-otel contributors. Licensed under the Apache License, Version 2.0.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* SpanKind members, INTERNAL..CONSUMER (protobuf values 1..5), set once by set_span_kinds(). */
static PyObject *span_kinds[5];
static PyObject *sixty_four;

typedef struct {
    unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    unsigned char inline_buffer[512];
} Buffer;

static int
reserve(Buffer *buffer, Py_ssize_t more)
{
    Py_ssize_t needed = buffer->size + more;
    if (needed <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < needed) {
        capacity = needed;
    }
    unsigned char *data;
    if (buffer->data == buffer->inline_buffer) {
        data = PyMem_Malloc((size_t)capacity);
        if (data != NULL) {
            memcpy(data, buffer->data, (size_t)buffer->size);
        }
    }
    else {
        data = PyMem_Realloc(buffer->data, (size_t)capacity);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int
put(Buffer *buffer, const void *bytes, Py_ssize_t size)
{
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->size, bytes, (size_t)size);
    buffer->size += size;
    return 0;
}

static int
put_byte(Buffer *buffer, unsigned char byte)
{
    return put(buffer, &byte, 1);
}

static int
put_varint(Buffer *buffer, uint64_t value)
{
    unsigned char bytes[10];
    Py_ssize_t size = 0;
    while (value > 127) {
        bytes[size++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    bytes[size++] = (unsigned char)value;
    return put(buffer, bytes, size);
}

static int
put_fixed(Buffer *buffer, uint64_t value, int size)
{
    unsigned char bytes[8];
    for (int i = 0; i < size; i++) {
        bytes[i] = (unsigned char)(value >> (8 * i)); /* little-endian */
    }
    return put(buffer, bytes, size);
}

static int
put_big_endian64(Buffer *buffer, uint64_t value)
{
    unsigned char bytes[8];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(value >> (56 - 8 * i));
    }
    return put(buffer, bytes, 8);
}

/* A length-delimited field whose body is buffer[start:]: the tag and the length go in front. */
static int
wrap(Buffer *buffer, Py_ssize_t start, unsigned char tag)
{
    uint64_t length = (uint64_t)(buffer->size - start);
    unsigned char header[11];
    Py_ssize_t size = 0;
    header[size++] = tag;
    while (length > 127) {
        header[size++] = (unsigned char)((length & 0x7F) | 0x80);
        length >>= 7;
    }
    header[size++] = (unsigned char)length;
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memmove(buffer->data + start + size, buffer->data + start, (size_t)(buffer->size - start));
    memcpy(buffer->data + start, header, (size_t)size);
    buffer->size += size;
    return 0;
}

/* 1: written; 0: not handled here (the caller returns None); -1: a Python error is set. */
#define DONE 1
#define NOT_HANDLED 0

static int
put_string(Buffer *buffer, unsigned char tag, PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) {
        PyErr_Clear(); /* lone surrogates: the Python encoder says what happens */
        return NOT_HANDLED;
    }
    if (put_byte(buffer, tag) < 0 || put_varint(buffer, (uint64_t)size) < 0
        || put(buffer, utf8, size) < 0) {
        return -1;
    }
    return DONE;
}

/* One attribute as a KeyValue field (tag), its value an AnyValue of an exact scalar type. */
static int
put_attribute(Buffer *buffer, unsigned char tag, PyObject *key, PyObject *value)
{
    if (!PyUnicode_CheckExact(key)) {
        return NOT_HANDLED;
    }
    Py_ssize_t key_value = buffer->size;
    int status;
    if (PyUnicode_GET_LENGTH(key) > 0) {
        status = put_string(buffer, 0x0a, key);
        if (status != DONE) {
            return status;
        }
    }
    Py_ssize_t any_value = buffer->size;
    if (PyUnicode_CheckExact(value)) {
        status = put_string(buffer, 0x0a, value);
        if (status != DONE) {
            return status;
        }
    }
    else if (PyBool_Check(value)) {
        unsigned char field[2] = {0x10, value == Py_True ? 1 : 0};
        if (put(buffer, field, 2) < 0) {
            return -1;
        }
    }
    else if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            return NOT_HANDLED;
        }
        if (number == -1 && PyErr_Occurred()) {
            return -1;
        }
        /* A negative int64 is ten bytes of two's complement, as protobuf writes it. */
        if (put_byte(buffer, 0x18) < 0 || put_varint(buffer, (uint64_t)number) < 0) {
            return -1;
        }
    }
    else if (PyFloat_CheckExact(value)) {
        double number = PyFloat_AS_DOUBLE(value);
        uint64_t bits;
        memcpy(&bits, &number, sizeof bits);
        if (put_byte(buffer, 0x21) < 0 || put_fixed(buffer, bits, 8) < 0) {
            return -1;
        }
    }
    else {
        return NOT_HANDLED;
    }
    if (wrap(buffer, any_value, 0x12) < 0 || wrap(buffer, key_value, tag) < 0) {
        return -1;
    }
    return DONE;
}

/* An unsigned 64-bit id; 0 with *handled = 0 for anything Python's struct "Q" would refuse. */
static uint64_t
id64(PyObject *number, int *handled)
{
    *handled = 0;
    if (!PyLong_CheckExact(number)) {
        return 0;
    }
    uint64_t value = PyLong_AsUnsignedLongLong(number);
    if (value == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *handled = 1;
    return value;
}

static int
put_span(Buffer *buffer, PyObject *fields)
{
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 16) {
        return NOT_HANDLED;
    }
    PyObject *trace_id = PyTuple_GET_ITEM(fields, 0);
    PyObject *span_id = PyTuple_GET_ITEM(fields, 1);
    PyObject *trace_state = PyTuple_GET_ITEM(fields, 2);
    PyObject *parent_id = PyTuple_GET_ITEM(fields, 3);
    PyObject *parent_is_remote = PyTuple_GET_ITEM(fields, 4);
    PyObject *name = PyTuple_GET_ITEM(fields, 5);
    PyObject *kind = PyTuple_GET_ITEM(fields, 6);
    PyObject *start = PyTuple_GET_ITEM(fields, 7);
    PyObject *end = PyTuple_GET_ITEM(fields, 8);
    PyObject *status = PyTuple_GET_ITEM(fields, 9);
    PyObject *attributes = PyTuple_GET_ITEM(fields, 10);
    PyObject *dropped_attributes = PyTuple_GET_ITEM(fields, 11);
    PyObject *events = PyTuple_GET_ITEM(fields, 12);
    PyObject *dropped_events = PyTuple_GET_ITEM(fields, 13);
    PyObject *links = PyTuple_GET_ITEM(fields, 14);
    PyObject *dropped_links = PyTuple_GET_ITEM(fields, 15);

    /* Only the common shape; the rest is the Python encoder's. */
    if (status != Py_None || PyObject_IsTrue(trace_state) != 0 || PyObject_Length(events) != 0
        || PyObject_Length(links) != 0 || !PyBool_Check(parent_is_remote)
        || !PyUnicode_CheckExact(name) || !PyDict_CheckExact(attributes)) {
        PyErr_Clear();
        return NOT_HANDLED;
    }
    int handled;
    if (!PyLong_CheckExact(trace_id)) {
        return NOT_HANDLED;
    }
    uint64_t trace_low = PyLong_AsUnsignedLongLongMask(trace_id);
    PyObject *high = PyNumber_Rshift(trace_id, sixty_four);
    if (high == NULL) {
        return -1;
    }
    uint64_t trace_high = id64(high, &handled);
    Py_DECREF(high);
    if (!handled) {
        return NOT_HANDLED;
    }
    uint64_t span = id64(span_id, &handled);
    if (!handled) {
        return NOT_HANDLED;
    }
    uint64_t parent = 0;
    if (parent_id != Py_None) {
        parent = id64(parent_id, &handled);
        if (!handled) {
            return NOT_HANDLED;
        }
    }
    int kind_value = 0;
    for (int n = 0; n < 5; n++) {
        if (kind == span_kinds[n]) {
            kind_value = n + 1;
        }
    }
    if (kind_value == 0) {
        return NOT_HANDLED;
    }
    uint64_t times[2] = {0, 0};
    PyObject *time_objects[2] = {start, end};
    for (int n = 0; n < 2; n++) {
        if (time_objects[n] == Py_None) {
            continue;
        }
        times[n] = id64(time_objects[n], &handled);
        if (!handled) {
            return NOT_HANDLED;
        }
    }
    PyObject *counts[3] = {dropped_attributes, dropped_events, dropped_links};
    uint64_t dropped[3];
    for (int n = 0; n < 3; n++) {
        dropped[n] = id64(counts[n], &handled);
        if (!handled) {
            return NOT_HANDLED;
        }
    }

    Py_ssize_t body = buffer->size;
    if (put_byte(buffer, 0x0a) < 0 || put_byte(buffer, 0x10) < 0
        || put_big_endian64(buffer, trace_high) < 0 || put_big_endian64(buffer, trace_low) < 0
        || put_byte(buffer, 0x12) < 0 || put_byte(buffer, 0x08) < 0
        || put_big_endian64(buffer, span) < 0) {
        return -1;
    }
    if (parent_id != Py_None) {
        if (put_byte(buffer, 0x22) < 0 || put_byte(buffer, 0x08) < 0
            || put_big_endian64(buffer, parent) < 0) {
            return -1;
        }
    }
    if (PyUnicode_GET_LENGTH(name) > 0) {
        int written = put_string(buffer, 0x2a, name);
        if (written != DONE) {
            return written;
        }
    }
    if (put_byte(buffer, 0x30) < 0 || put_byte(buffer, (unsigned char)kind_value) < 0) {
        return -1;
    }
    if (times[0] && (put_byte(buffer, 0x39) < 0 || put_fixed(buffer, times[0], 8) < 0)) {
        return -1;
    }
    if (times[1] && (put_byte(buffer, 0x41) < 0 || put_fixed(buffer, times[1], 8) < 0)) {
        return -1;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(attributes, &position, &key, &value)) {
        int written = put_attribute(buffer, 0x4a, key, value);
        if (written != DONE) {
            return written;
        }
    }
    static const unsigned char count_tags[3] = {0x50, 0x60, 0x70};
    for (int n = 0; n < 3; n++) {
        if (dropped[n] && (put_byte(buffer, count_tags[n]) < 0 || put_varint(buffer, dropped[n]) < 0)) {
            return -1;
        }
    }
    static const unsigned char empty_status[2] = {0x7a, 0x00};
    if (put(buffer, empty_status, 2) < 0 || put_byte(buffer, 0x85) < 0 || put_byte(buffer, 0x01) < 0
        || put_fixed(buffer, parent_is_remote == Py_True ? 0x300 : 0x100, 4) < 0) {
        return -1;
    }
    if (wrap(buffer, body, 0x12) < 0) { /* ScopeSpans.spans */
        return -1;
    }
    return DONE;
}

static PyObject *
encode(PyObject *Py_UNUSED(module), PyObject *fields)
{
    Buffer buffer;
    buffer.data = buffer.inline_buffer;
    buffer.size = 0;
    buffer.capacity = (Py_ssize_t)sizeof buffer.inline_buffer;
    int status = put_span(&buffer, fields);
    PyObject *result = NULL;
    if (status == DONE) {
        result = PyBytes_FromStringAndSize((const char *)buffer.data, buffer.size);
    }
    else if (status == NOT_HANDLED) {
        result = Py_NewRef(Py_None);
    }
    if (buffer.data != buffer.inline_buffer) {
        PyMem_Free(buffer.data);
    }
    return result;
}

static PyObject *
set_span_kinds(PyObject *Py_UNUSED(module), PyObject *kinds)
{
    if (!PyTuple_Check(kinds) || PyTuple_GET_SIZE(kinds) != 5) {
        PyErr_SetString(PyExc_TypeError, "set_span_kinds() takes a tuple of the 5 SpanKind members");
        return NULL;
    }
    for (int n = 0; n < 5; n++) {
        PyObject *kind = PyTuple_GET_ITEM(kinds, n);
        Py_INCREF(kind);
        Py_XSETREF(span_kinds[n], kind);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_O,
     "encode(fields) -> bytes | None\n\nThe span_wire_fields() tuple of a common span as its "
     "ScopeSpans.spans field; None for a span only the Python encoder handles."},
    {"set_span_kinds", set_span_kinds, METH_O,
     "set_span_kinds(kinds)\n\nThe SpanKind members INTERNAL..CONSUMER, compared by identity."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "kilostar_otel._otlp_native",
    "The common span encoded in C, byte for byte as kilostar_otel._otlp encodes it.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__otlp_native(void)
{
    if (sixty_four == NULL) {
        sixty_four = PyLong_FromLong(64);
        if (sixty_four == NULL) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    PyObject *names = Py_BuildValue("(ss)", "encode", "set_span_kinds");
    if (names == NULL || PyModule_AddObject(module, "__all__", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
