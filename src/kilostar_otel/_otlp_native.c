/* The common span, encoded in C: what _otlp._span writes, byte for byte, without the interpreter.
 *
 * encode(fields) takes the tuple _internals.span_wire_fields returns and gives the span's
 * ScopeSpans.spans field, or None for any span it does not handle (a trace state, a status, an
 * attribute value that is not exactly str, bool, int or float, an int outside int64, text that is
 * not UTF-8 encodable, ids out of range, anything shaped unlike the SDK's events and links): the
 * Python encoder then handles that span. Events and links are read through their public
 * properties, their attributes through _internals.attribute_items. join(entries, origin) joins
 * the export queue's encoded spans into one request, as _otlp.join_encoded_spans does.
 * tests/otlp compare both encoders and the SDK's on spans of every shape.
 *
 * Copyright kilostar-otel contributors. Licensed under the Apache License, Version 2.0.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* SpanKind members, INTERNAL..CONSUMER (protobuf values 1..5), set once by setup(). */
static PyObject *span_kinds[5];
static PyObject *sixty_four;
/* OpenTelemetry's shared empty TraceState (most spans carry it): empty without a call. */
static PyObject *empty_trace_state;

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

/* A trace id (field 1) and a span id (field 2), big-endian, as in a Span and a Link. */
static int
put_ids(Buffer *buffer, PyObject *trace_id, PyObject *span_id)
{
    int handled;
    if (!PyLong_CheckExact(trace_id)) {
        return NOT_HANDLED;
    }
    uint64_t low = PyLong_AsUnsignedLongLongMask(trace_id);
    PyObject *high_object = PyNumber_Rshift(trace_id, sixty_four);
    if (high_object == NULL) {
        return -1;
    }
    uint64_t high = id64(high_object, &handled);
    Py_DECREF(high_object);
    if (!handled) {
        return NOT_HANDLED;
    }
    uint64_t span = id64(span_id, &handled);
    if (!handled) {
        return NOT_HANDLED;
    }
    if (put_byte(buffer, 0x0a) < 0 || put_byte(buffer, 0x10) < 0
        || put_big_endian64(buffer, high) < 0 || put_big_endian64(buffer, low) < 0
        || put_byte(buffer, 0x12) < 0 || put_byte(buffer, 0x08) < 0
        || put_big_endian64(buffer, span) < 0) {
        return -1;
    }
    return DONE;
}

/* A count or a time as a varint field, written when not zero (Python's _uint). */
static int
put_count(Buffer *buffer, unsigned char tag, PyObject *count)
{
    int handled;
    uint64_t value = id64(count, &handled);
    if (!handled) {
        return NOT_HANDLED;
    }
    if (value && (put_byte(buffer, tag) < 0 || put_varint(buffer, value) < 0)) {
        return -1;
    }
    return DONE;
}

/* Every attribute of a mapping as KeyValue fields: a dict read in place, any other mapping
 * (an OrderedDict too: its order is not its dict's) through _internals.attribute_items (set by
 * setup()). None or empty: nothing. */
static PyObject *attribute_items;

static int
put_attributes(Buffer *buffer, unsigned char tag, PyObject *attributes)
{
    int written;
    if (attributes == Py_None) {
        return DONE;
    }
    if (PyDict_CheckExact(attributes)) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(attributes, &position, &key, &value)) {
            written = put_attribute(buffer, tag, key, value);
            if (written != DONE) {
                return written;
            }
        }
        return DONE;
    }
    if (attribute_items == NULL) {
        return NOT_HANDLED;
    }
    PyObject *items = PyObject_CallOneArg(attribute_items, attributes);
    if (items == NULL) {
        PyErr_Clear();
        return NOT_HANDLED;
    }
    PyObject *iterator = PyObject_GetIter(items);
    Py_DECREF(items);
    if (iterator == NULL) {
        PyErr_Clear();
        return NOT_HANDLED;
    }
    written = DONE;
    PyObject *item;
    while (written == DONE && (item = PyIter_Next(iterator)) != NULL) {
        if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
            written = put_attribute(buffer, tag, PyTuple_GET_ITEM(item, 0),
                                    PyTuple_GET_ITEM(item, 1));
        }
        else {
            written = NOT_HANDLED;
        }
        Py_DECREF(item);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* a mapping changed while read: the Python encoder decides */
        return NOT_HANDLED;
    }
    return written;
}

/* Reads a public attribute into *value (a new reference); 0 if it could not be read. */
static int
get_public(PyObject *object, const char *name, PyObject **value)
{
    *value = PyObject_GetAttrString(object, name);
    if (*value == NULL) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* One Span.Event (field 11): time, name, attributes, dropped count. */
static int
put_event(Buffer *buffer, PyObject *event)
{
    PyObject *timestamp = NULL, *name = NULL, *attributes = NULL, *dropped = NULL;
    int written = NOT_HANDLED;
    if (!get_public(event, "timestamp", &timestamp) || !get_public(event, "name", &name)
        || !get_public(event, "attributes", &attributes) || !get_public(event, "dropped_attributes", &dropped)
        || !PyUnicode_CheckExact(name)) {
        goto done;
    }
    Py_ssize_t body = buffer->size;
    if (timestamp != Py_None) {
        int handled;
        uint64_t when = id64(timestamp, &handled);
        if (!handled) {
            goto done;
        }
        if (when && (put_byte(buffer, 0x09) < 0 || put_fixed(buffer, when, 8) < 0)) {
            written = -1;
            goto done;
        }
    }
    if (PyUnicode_GET_LENGTH(name) > 0 && (written = put_string(buffer, 0x12, name)) != DONE) {
        goto done;
    }
    if ((written = put_attributes(buffer, 0x1a, attributes)) != DONE
        || (written = put_count(buffer, 0x20, dropped)) != DONE) {
        goto done;
    }
    written = wrap(buffer, body, 0x5a) < 0 ? -1 : DONE;
done:
    Py_XDECREF(timestamp);
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    Py_XDECREF(dropped);
    return written;
}

/* One Span.Link (field 13): ids, attributes, dropped count, flags. */
static int
put_link(Buffer *buffer, PyObject *link)
{
    PyObject *context = NULL, *trace_id = NULL, *span_id = NULL, *is_remote = NULL;
    PyObject *attributes = NULL, *dropped = NULL;
    int written = NOT_HANDLED;
    if (!get_public(link, "context", &context) || !get_public(context, "trace_id", &trace_id)
        || !get_public(context, "span_id", &span_id) || !get_public(context, "is_remote", &is_remote)
        || !get_public(link, "attributes", &attributes) || !get_public(link, "dropped_attributes", &dropped)
        || !PyBool_Check(is_remote)) {
        goto done;
    }
    Py_ssize_t body = buffer->size;
    if ((written = put_ids(buffer, trace_id, span_id)) != DONE
        || (written = put_attributes(buffer, 0x22, attributes)) != DONE
        || (written = put_count(buffer, 0x28, dropped)) != DONE) {
        goto done;
    }
    if (put_byte(buffer, 0x35) < 0 || put_fixed(buffer, is_remote == Py_True ? 0x300 : 0x100, 4) < 0
        || wrap(buffer, body, 0x6a) < 0) {
        written = -1;
        goto done;
    }
    written = DONE;
done:
    Py_XDECREF(context);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    Py_XDECREF(is_remote);
    Py_XDECREF(attributes);
    Py_XDECREF(dropped);
    return written;
}

/* Each item of a sequence (events, links) through put. */
static int
put_each(Buffer *buffer, PyObject *sequence, int (*put_one)(Buffer *, PyObject *))
{
    Py_ssize_t length = PyObject_Length(sequence);
    if (length == 0) {
        return DONE;
    }
    if (length < 0) {
        PyErr_Clear();
        return NOT_HANDLED;
    }
    PyObject *items = PySequence_Fast(sequence, "events and links are sequences");
    if (items == NULL) {
        PyErr_Clear();
        return NOT_HANDLED;
    }
    int written = DONE;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t n = 0; n < count && written == DONE; n++) {
        written = put_one(buffer, PySequence_Fast_GET_ITEM(items, n));
    }
    Py_DECREF(items);
    return written;
}

static int
put_span(Buffer *buffer, PyObject *fields)
{
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 19) {
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

    /* A trace state and a status are the Python encoder's. */
    if (status != Py_None || !PyBool_Check(parent_is_remote) || !PyUnicode_CheckExact(name)) {
        return NOT_HANDLED;
    }
    if (trace_state != Py_None && trace_state != empty_trace_state) {
        int has_state = PyObject_IsTrue(trace_state);
        if (has_state != 0) {
            PyErr_Clear();
            return NOT_HANDLED;
        }
    }
    int handled;
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

    Py_ssize_t body = buffer->size;
    int written = put_ids(buffer, trace_id, span_id);
    if (written != DONE) {
        return written;
    }
    if (parent_id != Py_None) {
        if (put_byte(buffer, 0x22) < 0 || put_byte(buffer, 0x08) < 0
            || put_big_endian64(buffer, parent) < 0) {
            return -1;
        }
    }
    if (PyUnicode_GET_LENGTH(name) > 0 && (written = put_string(buffer, 0x2a, name)) != DONE) {
        return written;
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
    /* Attributes (9), dropped (10), events (11), dropped (12), links (13), dropped (14). */
    if ((written = put_attributes(buffer, 0x4a, attributes)) != DONE
        || (written = put_count(buffer, 0x50, dropped_attributes)) != DONE
        || (written = put_each(buffer, events, put_event)) != DONE
        || (written = put_count(buffer, 0x60, dropped_events)) != DONE
        || (written = put_each(buffer, links, put_link)) != DONE
        || (written = put_count(buffer, 0x70, dropped_links)) != DONE) {
        return written;
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

/* join(entries, resource_parts, scope_parts): the queue's (size, encoded span, resource, scope)
 * entries as one ExportTraceServiceRequest, grouped as _otlp.join_encoded_spans groups them:
 * resources in the order first seen (equal ones together), scopes likewise within a resource,
 * spans in entry order. resource_parts(resource) gives the encoded fields around a resource's
 * scopes (the resource, its schema_url), asked once per resource; scope_parts(scope) those around
 * a scope's spans (the scope, its schema_url), once per group. None for entries shaped otherwise,
 * or for more groups than MAX_GROUPS: the Python join handles those. */
#define MAX_GROUPS 32

typedef struct {
    PyObject *scope;    /* borrowed from the entries */
    int resource_group; /* index into resources */
    PyObject *parts;    /* scope_parts()'s 2-tuple (owned) */
    Py_ssize_t spans_size;
    Py_ssize_t body_size; /* ScopeSpans body */
} ScopeGroup;

static Py_ssize_t
varint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value > 127) {
        value >>= 7;
        size++;
    }
    return size;
}

static unsigned char *
write_header(unsigned char *out, unsigned char tag, uint64_t length)
{
    *out++ = tag;
    while (length > 127) {
        *out++ = (unsigned char)((length & 0x7F) | 0x80);
        length >>= 7;
    }
    *out++ = (unsigned char)length;
    return out;
}

static unsigned char *
write_bytes(unsigned char *out, PyObject *bytes)
{
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    memcpy(out, PyBytes_AS_STRING(bytes), (size_t)size);
    return out + size;
}

/* The index of the group equal to (resource, scope), added if new; -1 with an error set; -2 when
 * there are too many groups. */
static int
find_group(ScopeGroup *groups, int *group_count, PyObject **resources, int *resource_count,
           PyObject *resource, PyObject *scope)
{
    int r = 0;
    for (; r < *resource_count; r++) {
        int equal = PyObject_RichCompareBool(resources[r], resource, Py_EQ);
        if (equal < 0) {
            return -1;
        }
        if (equal) {
            break;
        }
    }
    if (r == *resource_count) {
        if (r == MAX_GROUPS) {
            return -2;
        }
        resources[r] = resource;
        (*resource_count)++;
    }
    for (int g = 0; g < *group_count; g++) {
        if (groups[g].resource_group != r) {
            continue;
        }
        int equal = PyObject_RichCompareBool(groups[g].scope, scope, Py_EQ);
        if (equal < 0) {
            return -1;
        }
        if (equal) {
            return g;
        }
    }
    if (*group_count == MAX_GROUPS) {
        return -2;
    }
    int g = (*group_count)++;
    groups[g].scope = scope;
    groups[g].resource_group = r;
    groups[g].parts = NULL;
    groups[g].spans_size = 0;
    groups[g].body_size = 0;
    return g;
}

/* parts_of(resource or scope): a new reference to its 2-tuple of bytes; NULL with an error set. */
static PyObject *
two_parts(PyObject *parts_of, PyObject *origin)
{
    PyObject *parts = PyObject_CallOneArg(parts_of, origin);
    if (parts == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 2
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(parts, 0))
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(parts, 1))) {
        Py_DECREF(parts);
        PyErr_SetString(PyExc_TypeError, "resource_parts() and scope_parts() must return a tuple "
                                         "of 2 bytes");
        return NULL;
    }
    return parts;
}

static PyObject *
join(PyObject *Py_UNUSED(module), PyObject *arguments)
{
    PyObject *entries, *resource_parts_of, *scope_parts_of;
    if (!PyArg_ParseTuple(arguments, "O!OO:join", &PyList_Type, &entries, &resource_parts_of,
                          &scope_parts_of)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(entries);
    ScopeGroup groups[MAX_GROUPS];
    PyObject *resources[MAX_GROUPS];
    int group_count = 0, resource_count = 0;
    /* (resource, scope) identities seen, and their group: most batches have one or two. */
    PyObject *seen_resource[MAX_GROUPS], *seen_scope[MAX_GROUPS];
    int seen_group[MAX_GROUPS];
    int seen_count = 0;
    unsigned char *group_of = PyMem_Malloc(count > 0 ? (size_t)count : 1);
    if (group_of == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    PyObject *resource_parts[MAX_GROUPS];
    int parts_count = 0; /* resource_parts filled */
    int last = -1;
    for (Py_ssize_t n = 0; n < count; n++) {
        PyObject *entry = PyList_GET_ITEM(entries, n);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 4
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *resource = PyTuple_GET_ITEM(entry, 2);
        PyObject *scope = PyTuple_GET_ITEM(entry, 3);
        int g = -1;
        if (last >= 0 && seen_resource[last] == resource && seen_scope[last] == scope) {
            g = seen_group[last];
        }
        else {
            for (int k = 0; k < seen_count; k++) {
                if (seen_resource[k] == resource && seen_scope[k] == scope) {
                    last = k;
                    g = seen_group[k];
                    break;
                }
            }
            if (g < 0) {
                if (seen_count == MAX_GROUPS) {
                    result = Py_NewRef(Py_None);
                    goto done;
                }
                g = find_group(groups, &group_count, resources, &resource_count, resource, scope);
                if (g == -1) {
                    goto done;
                }
                if (g == -2) {
                    result = Py_NewRef(Py_None);
                    goto done;
                }
                last = seen_count++;
                seen_resource[last] = resource;
                seen_scope[last] = scope;
                seen_group[last] = g;
            }
        }
        group_of[n] = (unsigned char)g;
        groups[g].spans_size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 1));
    }
    /* The parts around each resource and each group, and the sizes. */
    Py_ssize_t resource_body[MAX_GROUPS];
    for (int r = 0; r < resource_count; r++) {
        PyObject *parts = two_parts(resource_parts_of, resources[r]);
        if (parts == NULL) {
            goto done;
        }
        resource_parts[parts_count++] = parts;
        resource_body[r] = PyBytes_GET_SIZE(PyTuple_GET_ITEM(parts, 0))
                           + PyBytes_GET_SIZE(PyTuple_GET_ITEM(parts, 1));
    }
    for (int g = 0; g < group_count; g++) {
        PyObject *parts = two_parts(scope_parts_of, groups[g].scope);
        if (parts == NULL) {
            goto done;
        }
        ScopeGroup *group = &groups[g];
        group->parts = parts;
        group->body_size = PyBytes_GET_SIZE(PyTuple_GET_ITEM(parts, 0)) + group->spans_size
                           + PyBytes_GET_SIZE(PyTuple_GET_ITEM(parts, 1));
        resource_body[group->resource_group] +=
            1 + varint_size((uint64_t)group->body_size) + group->body_size;
    }
    Py_ssize_t total = 0;
    for (int r = 0; r < resource_count; r++) {
        total += 1 + varint_size((uint64_t)resource_body[r]) + resource_body[r];
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (joined == NULL) {
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(joined);
    for (int r = 0; r < resource_count; r++) {
        out = write_header(out, 0x0a, (uint64_t)resource_body[r]); /* resource_spans */
        out = write_bytes(out, PyTuple_GET_ITEM(resource_parts[r], 0));
        for (int g = 0; g < group_count; g++) {
            if (groups[g].resource_group != r) {
                continue;
            }
            out = write_header(out, 0x12, (uint64_t)groups[g].body_size); /* scope_spans */
            out = write_bytes(out, PyTuple_GET_ITEM(groups[g].parts, 0));
            for (Py_ssize_t n = 0; n < count; n++) {
                if (group_of[n] == g) {
                    out = write_bytes(out, PyTuple_GET_ITEM(PyList_GET_ITEM(entries, n), 1));
                }
            }
            out = write_bytes(out, PyTuple_GET_ITEM(groups[g].parts, 1));
        }
        out = write_bytes(out, PyTuple_GET_ITEM(resource_parts[r], 1));
    }
    result = joined;
done:
    for (int g = 0; g < group_count; g++) {
        Py_XDECREF(groups[g].parts);
    }
    for (int r = 0; r < parts_count; r++) {
        Py_DECREF(resource_parts[r]);
    }
    PyMem_Free(group_of);
    return result;
}

static PyObject *
setup(PyObject *Py_UNUSED(module), PyObject *arguments)
{
    PyObject *kinds, *items, *empty;
    if (!PyArg_ParseTuple(arguments, "O!OO:setup", &PyTuple_Type, &kinds, &items, &empty)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(kinds) != 5 || !PyCallable_Check(items)) {
        PyErr_SetString(PyExc_TypeError,
                        "setup() takes the 5 SpanKind members and attribute_items");
        return NULL;
    }
    for (int n = 0; n < 5; n++) {
        PyObject *kind = PyTuple_GET_ITEM(kinds, n);
        Py_INCREF(kind);
        Py_XSETREF(span_kinds[n], kind);
    }
    Py_INCREF(items);
    Py_XSETREF(attribute_items, items);
    Py_INCREF(empty);
    Py_XSETREF(empty_trace_state, empty);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_O,
     "encode(fields) -> bytes | None\n\nThe span_wire_fields() tuple of a common span as its "
     "ScopeSpans.spans field; None for a span only the Python encoder handles."},
    {"join", join, METH_VARARGS,
     "join(entries, resource_parts, scope_parts) -> bytes | None\n\nThe queue's (size, encoded "
     "span, resource, scope) entries as one serialized ExportTraceServiceRequest, grouped by "
     "resource and scope; resource_parts(resource) and scope_parts(scope) give the encoded fields "
     "around a resource's scopes and a scope's spans. None for entries shaped otherwise or too "
     "many groups."},
    {"setup", setup, METH_VARARGS,
     "setup(kinds, attribute_items, empty_trace_state)\n\nThe SpanKind members INTERNAL..CONSUMER "
     "(compared by identity), how to read a mapping of attributes that is not a dict, and the "
     "shared empty TraceState."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "kilostar_otel._otlp_native",
    "The common span encoded in C, byte for byte as kilostar_otel._otlp encodes it.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
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
    PyObject *names = Py_BuildValue("(sss)", "encode", "join", "setup");
    if (names == NULL || PyModule_AddObject(module, "__all__", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
