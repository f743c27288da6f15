/*
 * _cetf: the C fast path of dspex_cluster.etf. Same API, results, limits and errors as the pure
 * reference (pure.py), which it imports for the Python classes, for the rare paths
 * (compression, map keys that collide under Python's ==) and for anything it does not own.
 *
 * Instances of the slotted classes (Pid, Reference, ...) are built by writing their slots
 * directly, which skips the frozen dataclass __init__ (it validates nothing for those types).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* tags */
enum {
    VERSION = 131, COMPRESSED = 80, PASS_THROUGH = 112,
    NEW_FLOAT = 70, BIT_BINARY = 77, NEW_PID = 88, NEW_PORT = 89, NEWER_REFERENCE = 90,
    SMALL_INTEGER = 97, INTEGER = 98, FLOAT_OLD = 99, ATOM = 100, SMALL_TUPLE = 104,
    LARGE_TUPLE = 105, NIL = 106, STRING = 107, LIST = 108, BINARY = 109, SMALL_BIG = 110,
    LARGE_BIG = 111, NEW_FUN = 112, EXPORT = 113, SMALL_ATOM = 115, MAP = 116, ATOM_UTF8 = 118,
    SMALL_ATOM_UTF8 = 119, V4_PORT = 120,
};

#define ENCODE_MAX_DEPTH 1000

/* ---- Python objects borrowed from the pure modules (strong references, set at import) ---- */
static PyObject *AtomType, *PidType, *ReferenceType, *PortType, *ExportFunType, *FunType;
static PyObject *BitStringType, *ImproperListType, *FrozenTermType, *ETFError, *DefaultLimits;
static PyObject *NoMessage, *py_build_map_with_aliases, *py_inflate, *py_finish, *py_fragment;
static PyObject *s_max_depth, *s_max_elements, *s_max_uncompressed_size, *s_max_atom_chars;
static PyObject *s_max_huge_int_keys, *s_max_expansion, *s_expansion_allowance;

/* What decoded values cost in bytes of Python objects: the same amounts, charged at the same
   points, as pure.py's COST_* (see there). */
#define COST_LIST 56
#define COST_TUPLE 40
#define COST_MAP 64
#define COST_MAP_PAIR 48
#define COST_SLOT 8
#define COST_INT 32
#define COST_FLOAT 24
#define COST_BYTES 33
#define COST_OBJECT 64
#define COST_FUN 160

/* pure.py's _check_probe_work constants */
#define PROBE_CHECK_MIN_KEYS 128
#define PROBE_BUDGET_PER_KEY 32
#define PROBE_BUDGET_BASE 4096

/* slot offsets of the classes we build and read directly */
typedef struct { Py_ssize_t node, id, serial, creation; } PidSlots;
typedef struct { Py_ssize_t node, creation, ids; } RefSlots;
typedef struct { Py_ssize_t node, id, creation, v4; } PortSlots;
typedef struct { Py_ssize_t module, function, arity; } ExportSlots;
typedef struct {
    Py_ssize_t raw, module, arity, index, uniq, old_index, old_uniq, pid, free_vars;
} FunSlots;
typedef struct { Py_ssize_t data, bits; } BitSlots;
typedef struct { Py_ssize_t items, tail; } ImproperSlots;
typedef struct { Py_ssize_t term; } FrozenSlots;
static PidSlots pid_s;
static RefSlots ref_s;
static PortSlots port_s;
static ExportSlots export_s;
static FunSlots fun_s;
static BitSlots bit_s;
static ImproperSlots improper_s;
static FrozenSlots frozen_s;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offset(PyObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL)
        return -1;
    if (Py_TYPE(descr) != &PyMemberDescr_Type) {
        Py_DECREF(descr);
        PyErr_Format(PyExc_ImportError, "_cetf: %s.%s is not a slot", ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        Py_DECREF(descr);
        PyErr_Format(PyExc_ImportError, "_cetf: %s.%s is not an object slot", ((PyTypeObject *)type)->tp_name, name);
        return -1;
    }
    *out = m->offset;
    Py_DECREF(descr);
    return 0;
}

/* A new instance of a slotted class with its slots set (references stolen from vals). */
static PyObject *
new_slotted(PyObject *type, const Py_ssize_t *offsets, PyObject **vals, int n)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *obj = tp->tp_alloc(tp, 0);
    if (obj == NULL) {
        for (int i = 0; i < n; i++)
            Py_XDECREF(vals[i]);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        SLOT(obj, offsets[i]) = vals[i];
    return obj;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    long max_depth;
    Py_ssize_t max_elements, elements_left;
    Py_ssize_t max_atom_chars;
    Py_ssize_t max_huge_int_keys, huge_int_keys;
    Py_ssize_t huge_ints; /* integers Python hashes modulo 2**61 - 1 (see dec_map) */
    Py_ssize_t max_expansion, expansion_allowance;
    long long cost_left;  /* bytes of Python objects the input may still decode to */
    unsigned long steps;  /* terms decoded, to let other threads run now and then */
    PyObject *limits;     /* borrowed */
} Dec;

static PyObject *
fail(Py_ssize_t pos, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyErr_Format(ETFError, "%s at offset %zd", msg, pos);
    return NULL;
}

static int
need(Dec *d, Py_ssize_t pos, Py_ssize_t n, const char *what)
{
    if (n > d->len - pos) {
        Py_ssize_t left = d->len - pos;
        fail(pos, "truncated %s: needs %zd bytes, %zd left", what, n, left > 0 ? left : 0);
        return -1;
    }
    return 0;
}

static int
spend(Dec *d, Py_ssize_t n, Py_ssize_t pos)
{
    d->elements_left -= n;
    if (d->elements_left < 0) {
        fail(pos, "term has more than max_elements=%zd elements", d->max_elements);
        return -1;
    }
    return 0;
}

static int
charge(Dec *d, long long cost, Py_ssize_t pos)
{
    d->cost_left -= cost;
    if (d->cost_left < 0) {
        fail(pos, "decoded term would take more memory than max_expansion=%zd times its input "
                  "plus expansion_allowance", d->max_expansion);
        return -1;
    }
    return 0;
}

static int
check_depth(Dec *d, long depth, Py_ssize_t pos)
{
    if (depth >= d->max_depth) {
        fail(pos, "nesting deeper than max_depth=%ld", d->max_depth);
        return -1;
    }
    return 0;
}

static inline uint16_t
rd16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t
rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t
rd64(const unsigned char *p)
{
    return ((uint64_t)rd32(p) << 32) | rd32(p + 4);
}

/* ---- atom cache: direct-mapped, keyed by (utf8, bytes); holds the Atom objects ---- */
#define ATOM_CACHE_SIZE 4096
typedef struct {
    PyObject *key; /* bytes: one flag byte (utf8) then the atom's encoded bytes */
    PyObject *atom;
} AtomEntry;
static AtomEntry atom_cache[ATOM_CACHE_SIZE];

static inline uint32_t
fnv1a(const unsigned char *p, Py_ssize_t n, int utf8)
{
    uint32_t h = 2166136261u ^ (uint32_t)utf8;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* The Atom for n bytes at pos (a new reference). */
static PyObject *
atom_from_bytes(Dec *d, Py_ssize_t pos, Py_ssize_t n, int utf8)
{
    const unsigned char *p = d->buf + pos;
    AtomEntry *e = &atom_cache[fnv1a(p, n, utf8) & (ATOM_CACHE_SIZE - 1)];
    if (e->key != NULL && PyBytes_GET_SIZE(e->key) == n + 1) {
        const char *k = PyBytes_AS_STRING(e->key);
        if (k[0] == (char)utf8 && memcmp(k + 1, p, (size_t)n) == 0) {
            if (PyUnicode_GET_LENGTH(e->atom) > d->max_atom_chars)
                return fail(pos, "atom longer than %zd characters", d->max_atom_chars);
            Py_INCREF(e->atom);
            return e->atom;
        }
    }
    PyObject *text = utf8 ? PyUnicode_DecodeUTF8((const char *)p, n, "strict")
                          : PyUnicode_DecodeLatin1((const char *)p, n, "strict");
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return fail(pos, "atom is not valid UTF-8");
        }
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(text) > d->max_atom_chars) {
        Py_DECREF(text);
        return fail(pos, "atom longer than %zd characters", d->max_atom_chars);
    }
    PyObject *atom = PyObject_CallOneArg(AtomType, text);
    Py_DECREF(text);
    if (atom == NULL)
        return NULL;
    if (n <= 255) {
        PyObject *key = PyBytes_FromStringAndSize(NULL, n + 1);
        if (key == NULL) {
            Py_DECREF(atom);
            return NULL;
        }
        PyBytes_AS_STRING(key)[0] = (char)utf8;
        memcpy(PyBytes_AS_STRING(key) + 1, p, (size_t)n);
        PyObject *old_key = e->key, *old_atom = e->atom;
        e->key = key;
        Py_INCREF(atom);
        e->atom = atom;
        Py_XDECREF(old_key);
        Py_XDECREF(old_atom);
    }
    return atom;
}

/* Decode an atom at *pos (any of the four atom tags). special: true/false/nil -> True/False/None */
static PyObject *
read_atom(Dec *d, Py_ssize_t *pos, int special)
{
    Py_ssize_t p = *pos, n, start;
    if (need(d, p, 1, "atom") < 0)
        return NULL;
    int tag = d->buf[p];
    if (tag == SMALL_ATOM_UTF8 || tag == SMALL_ATOM) {
        if (need(d, p + 1, 1, "atom length") < 0)
            return NULL;
        n = d->buf[p + 1];
        start = p + 2;
    }
    else if (tag == ATOM_UTF8 || tag == ATOM) {
        if (need(d, p + 1, 2, "atom length") < 0)
            return NULL;
        n = rd16(d->buf + p + 1);
        start = p + 3;
    }
    else {
        return fail(p, "expected an atom, got tag %d", tag);
    }
    if (need(d, start, n, "atom") < 0)
        return NULL;
    int utf8 = tag == SMALL_ATOM_UTF8 || tag == ATOM_UTF8;
    if (special && n >= 3 && n <= 5) {
        const char *s = (const char *)d->buf + start;
        PyObject *v = NULL;
        if (n == 4 && memcmp(s, "true", 4) == 0)
            v = Py_True;
        else if (n == 5 && memcmp(s, "false", 5) == 0)
            v = Py_False;
        else if (n == 3 && memcmp(s, "nil", 3) == 0)
            v = Py_None;
        if (v != NULL && d->max_atom_chars >= n) {
            *pos = start + n;
            Py_INCREF(v);
            return v;
        }
    }
    PyObject *atom = atom_from_bytes(d, start, n, utf8);
    if (atom != NULL)
        *pos = start + n;
    return atom;
}

static PyObject *dec_term(Dec *d, Py_ssize_t *pos, long depth);

static PyObject *
read_pid(Dec *d, Py_ssize_t *pos)
{
    Py_ssize_t p = *pos;
    if (p >= d->len || d->buf[p] != NEW_PID)
        return fail(p, "expected a NEW_PID_EXT");
    p++;
    PyObject *node = read_atom(d, &p, 0);
    if (node == NULL)
        return NULL;
    if (need(d, p, 12, "pid") < 0 || charge(d, COST_OBJECT + 3 * COST_INT, *pos) < 0) {
        Py_DECREF(node);
        return NULL;
    }
    const unsigned char *b = d->buf + p;
    PyObject *vals[4] = {node, PyLong_FromUnsignedLong(rd32(b)), PyLong_FromUnsignedLong(rd32(b + 4)),
                         PyLong_FromUnsignedLong(rd32(b + 8))};
    if (!vals[1] || !vals[2] || !vals[3]) {
        for (int i = 0; i < 4; i++)
            Py_XDECREF(vals[i]);
        return NULL;
    }
    *pos = p + 12;
    return new_slotted(PidType, (const Py_ssize_t *)&pid_s, vals, 4);
}

/* Python hashes an int k as k mod (2**61 - 1), so such integers collide at will. */
#define HASH_MODULUS ((uint64_t)0x1FFFFFFFFFFFFFFFull)

static PyObject *
dec_big(Dec *d, Py_ssize_t start, Py_ssize_t n, Py_ssize_t tagpos, Py_ssize_t *pos)
{
    if (need(d, start, n + 1, "bignum") < 0)
        return NULL;
    int sign = d->buf[start];
    if (sign > 1)
        return fail(tagpos, "bignum sign byte must be 0 or 1, got %d", sign);
    if (charge(d, 28 + 4 * ((8 * (long long)n + 29) / 30), tagpos) < 0)
        return NULL;
    const unsigned char *digits = d->buf + start + 1;
    PyObject *v;
    uint64_t m = 0;
    for (Py_ssize_t i = (n < 8 ? n : 8) - 1; i >= 0; i--)
        m = (m << 8) | digits[i];
    int huge = m >= HASH_MODULUS;
    for (Py_ssize_t i = 8; i < n && !huge; i++)
        huge = digits[i] != 0;
    d->huge_ints += huge;
    if (n <= 8)
        v = PyLong_FromUnsignedLongLong(m);
    else
        v = _PyLong_FromByteArray(digits, (size_t)n, 1, 0);
    if (v == NULL)
        return NULL;
    if (sign) {
        PyObject *neg = PyNumber_Negative(v);
        Py_DECREF(v);
        v = neg;
        if (v == NULL)
            return NULL;
    }
    *pos = start + 1 + n;
    return v;
}

static PyObject *
check_float(double x, Py_ssize_t pos)
{
    if (!isfinite(x))
        return fail(pos, "float is not finite");
    return PyFloat_FromDouble(x);
}

static PyObject *
dec_list(Dec *d, Py_ssize_t p, Py_ssize_t tagpos, long depth, Py_ssize_t *pos)
{
    if (need(d, p, 4, "LIST_EXT") < 0)
        return NULL;
    Py_ssize_t n = rd32(d->buf + p);
    p += 4;
    if (n + 1 > d->len - p)
        return fail(tagpos, "list of %zd elements cannot fit in %zd bytes", n, d->len - p);
    if (check_depth(d, depth, tagpos) < 0 || spend(d, n, tagpos) < 0 ||
        charge(d, COST_LIST + COST_SLOT * (long long)n, tagpos) < 0)
        return NULL;
    PyObject *items = PyList_New(n);
    if (items == NULL)
        return NULL;
    Py_ssize_t filled = 0; /* items set so far; the list may grow past n with list tails */
    for (;;) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = dec_term(d, &p, depth + 1);
            if (v == NULL) {
                Py_DECREF(items);
                return NULL;
            }
            if (filled < PyList_GET_SIZE(items))
                PyList_SET_ITEM(items, filled, v);
            else if (PyList_Append(items, v) < 0) {
                Py_DECREF(v);
                Py_DECREF(items);
                return NULL;
            }
            else
                Py_DECREF(v);
            filled++;
        }
        if (p >= d->len || d->buf[p] != LIST)
            break;
        /* [a | [b | ...]]: never sent by OTP, but one list, read in one pass (linear time) */
        Py_ssize_t at = p;
        if (need(d, p + 1, 4, "LIST_EXT") < 0) {
            Py_DECREF(items);
            return NULL;
        }
        n = rd32(d->buf + p + 1);
        if (n + 1 > d->len - p - 5) {
            Py_DECREF(items);
            return fail(at, "list of %zd elements cannot fit in %zd bytes", n, d->len - p - 5);
        }
        if (spend(d, n, at) < 0 || charge(d, COST_SLOT * (long long)n, at) < 0) {
            Py_DECREF(items);
            return NULL;
        }
        p += 5;
    }
    if (p < d->len && d->buf[p] == NIL) {
        *pos = p + 1;
        return items;
    }
    PyObject *tail = dec_term(d, &p, depth + 1);
    if (tail == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    *pos = p;
    if (PyList_CheckExact(tail)) { /* a STRING_EXT tail */
        Py_ssize_t k = PyList_GET_SIZE(items);
        int r = PyList_SetSlice(items, k, k, tail);
        Py_DECREF(tail);
        if (r < 0) {
            Py_DECREF(items);
            return NULL;
        }
        return items;
    }
    if (PyList_GET_SIZE(items) == 0) {
        Py_DECREF(items);
        return tail;
    }
    if (charge(d, COST_OBJECT, tagpos) < 0) {
        Py_DECREF(items);
        Py_DECREF(tail);
        return NULL;
    }
    PyObject *vals[2] = {items, tail};
    return new_slotted(ImproperListType, (const Py_ssize_t *)&improper_s, vals, 2);
}

/* Replays Python's dict probing (i = hash & mask, then i = 5i + 1 + (perturb >>= 5)) for every
   table size from 8 up to 4 times the key count; -1 with an ETFError when the probes exceed the
   budget at any size. Exactly pure.py's _check_probe_work. */
static int
check_probe_work(const Py_hash_t *hashes, Py_ssize_t n, Py_ssize_t tagpos)
{
    if (n < PROBE_CHECK_MIN_KEYS)
        return 0;
    size_t size = 8;
    for (;;) {
        Py_ssize_t m = (Py_ssize_t)(2 * size / 3);
        if (m > n)
            m = n;
        long long budget = (long long)PROBE_BUDGET_PER_KEY * m + PROBE_BUDGET_BASE, work = 0;
        size_t mask = size - 1;
        unsigned char *table = PyMem_Calloc(size, 1);
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < m; k++) {
            size_t h = (size_t)hashes[k], i = h & mask, perturb = h;
            while (table[i]) {
                work++;
                perturb >>= 5;
                i = (i * 5 + perturb + 1) & mask;
            }
            table[i] = 1;
            if (work > budget) {
                PyMem_Free(table);
                fail(tagpos, "map of %zd pairs whose keys collide in Python's hash", n);
                return -1;
            }
        }
        PyMem_Free(table);
        if (size >= 4 * (size_t)n)
            return 0;
        size *= 2;
    }
}

static PyObject *
dec_map(Dec *d, Py_ssize_t p, Py_ssize_t tagpos, long depth, Py_ssize_t *pos)
{
    if (need(d, p, 4, "MAP_EXT") < 0)
        return NULL;
    Py_ssize_t n = rd32(d->buf + p);
    p += 4;
    if (2 * n > d->len - p)
        return fail(tagpos, "map of %zd pairs cannot fit in %zd bytes", n, d->len - p);
    if (check_depth(d, depth, tagpos) < 0 || spend(d, 2 * n, tagpos) < 0 ||
        charge(d, COST_MAP + COST_MAP_PAIR * (long long)n, tagpos) < 0)
        return NULL;
    /* keys and values first, then the dict (as pure.py's _d_map and _build_map) */
    PyObject *keys = PyList_New(n), *values = PyList_New(n), *result = NULL;
    Py_hash_t *hashes = NULL;
    if (keys == NULL || values == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t key_pos = p;
        Py_ssize_t huge = d->huge_ints;
        PyObject *key = dec_term(d, &p, depth + 1);
        if (key == NULL)
            goto done;
        PyList_SET_ITEM(keys, i, key);
        if (d->huge_ints != huge && ++d->huge_int_keys > d->max_huge_int_keys) {
            fail(key_pos,
                 "more than max_huge_int_keys=%zd map keys hold integers of 2**61 - 1 or more",
                 d->max_huge_int_keys);
            goto done;
        }
        PyObject *value = dec_term(d, &p, depth + 1);
        if (value == NULL)
            goto done;
        PyList_SET_ITEM(values, i, value);
    }
    hashes = PyMem_Malloc(sizeof(Py_hash_t) * (size_t)(n ? n : 1));
    if (hashes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        Py_hash_t h = PyObject_Hash(key);
        if (h == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError))
                goto done;
            PyErr_Clear(); /* unhashable (a list, a map, ...) */
            PyObject *wrapped = PyObject_CallOneArg(FrozenTermType, key);
            if (wrapped == NULL)
                goto done;
            PyList_SetItem(keys, i, wrapped); /* steals; drops the old key */
            h = PyObject_Hash(wrapped);
            if (h == -1 && PyErr_Occurred())
                goto done;
        }
        hashes[i] = h;
    }
    if (check_probe_work(hashes, n, tagpos) < 0)
        goto done;
    result = PyDict_New();
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        int present = PyDict_Contains(result, key);
        if (present < 0)
            goto fail;
        if (present) { /* equal under Python's == (1, 1.0, true), or a duplicate */
            Py_CLEAR(result);
            PyObject *at = PyLong_FromSsize_t(tagpos);
            if (at == NULL)
                goto done;
            result = PyObject_CallFunctionObjArgs(py_build_map_with_aliases, keys, values, at, NULL);
            Py_DECREF(at);
            goto done;
        }
        if (PyDict_SetItem(result, key, PyList_GET_ITEM(values, i)) < 0)
            goto fail;
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    PyMem_Free(hashes);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    if (result != NULL)
        *pos = p;
    return result;
}

static PyObject *
read_uint_term(Dec *d, Py_ssize_t *pos, long depth, const char *what)
{
    Py_ssize_t start = *pos;
    PyObject *v = dec_term(d, pos, depth);
    if (v == NULL)
        return NULL;
    if (!PyLong_CheckExact(v) || _PyLong_Sign(v) < 0) {
        Py_DECREF(v);
        return fail(start, "%s must be a non-negative integer", what);
    }
    return v;
}

static PyObject *
dec_fun(Dec *d, Py_ssize_t tagpos, long depth, Py_ssize_t *pos)
{
    const unsigned char *b = d->buf;
    if (need(d, tagpos + 1, 4 + 1 + 16 + 4 + 4, "NEW_FUN_EXT") < 0)
        return NULL;
    Py_ssize_t size = rd32(b + tagpos + 1);
    if (size < 29 || size > d->len - tagpos - 1)
        return fail(tagpos, "NEW_FUN_EXT size %zd does not fit the input", size);
    Py_ssize_t end = tagpos + 1 + size;
    if (check_depth(d, depth, tagpos) < 0)
        return NULL;
    int arity = b[tagpos + 5];
    uint32_t index = rd32(b + tagpos + 22);
    Py_ssize_t num_free = rd32(b + tagpos + 26);
    Py_ssize_t p = tagpos + 30;
    if (num_free > end - p)
        return fail(tagpos, "NEW_FUN_EXT with %zd free variables cannot fit", num_free);
    if (spend(d, num_free, tagpos) < 0 ||
        charge(d, COST_FUN + COST_BYTES + size + COST_TUPLE + COST_SLOT * (long long)num_free, tagpos) < 0)
        return NULL;
    PyObject *vals[9] = {NULL};
    /* raw, module, arity, index, uniq, old_index, old_uniq, pid, free_vars */
    vals[1] = read_atom(d, &p, 0);
    if (vals[1] == NULL)
        goto error;
    vals[5] = read_uint_term(d, &p, depth + 1, "NEW_FUN_EXT OldIndex");
    if (vals[5] == NULL)
        goto error;
    vals[6] = read_uint_term(d, &p, depth + 1, "NEW_FUN_EXT OldUniq");
    if (vals[6] == NULL)
        goto error;
    vals[7] = read_pid(d, &p);
    if (vals[7] == NULL)
        goto error;
    vals[8] = PyTuple_New(num_free);
    if (vals[8] == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < num_free; i++) {
        PyObject *v = dec_term(d, &p, depth + 1);
        if (v == NULL)
            goto error;
        PyTuple_SET_ITEM(vals[8], i, v);
    }
    if (p != end) {
        fail(tagpos, "NEW_FUN_EXT size %zd does not match its contents", size);
        goto error;
    }
    vals[0] = PyBytes_FromStringAndSize((const char *)b + tagpos, end - tagpos);
    vals[2] = PyLong_FromLong(arity);
    vals[3] = PyLong_FromUnsignedLong(index);
    vals[4] = PyBytes_FromStringAndSize((const char *)b + tagpos + 6, 16);
    if (!vals[0] || !vals[2] || !vals[3] || !vals[4])
        goto error;
    *pos = end;
    return new_slotted(FunType, (const Py_ssize_t *)&fun_s, vals, 9);
error:
    for (int i = 0; i < 9; i++)
        Py_XDECREF(vals[i]);
    return NULL;
}

static PyObject *
dec_term(Dec *d, Py_ssize_t *pos, long depth)
{
    Py_ssize_t p = *pos;
    const unsigned char *b = d->buf;
    if (p >= d->len)
        return fail(p, "truncated: expected a term");
    int tag = b[p];
    if ((++d->steps & 0xFFFF) == 0) {
        /* a large decode runs in a worker thread: let the event loop's thread have the GIL */
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
    }
    switch (tag) {
    case SMALL_INTEGER:
        if (need(d, p + 1, 1, "SMALL_INTEGER_EXT") < 0)
            return NULL;
        *pos = p + 2;
        return PyLong_FromLong(b[p + 1]);
    case INTEGER:
        if (need(d, p + 1, 4, "INTEGER_EXT") < 0)
            return NULL;
        {
            long v = (int32_t)rd32(b + p + 1);
            if ((v < -5 || v > 256) && charge(d, COST_INT, p) < 0)
                return NULL;
            *pos = p + 5;
            return PyLong_FromLong(v);
        }
    case SMALL_BIG:
        if (need(d, p + 1, 1, "SMALL_BIG_EXT") < 0)
            return NULL;
        return dec_big(d, p + 2, b[p + 1], p, pos);
    case LARGE_BIG:
        if (need(d, p + 1, 4, "LARGE_BIG_EXT") < 0)
            return NULL;
        return dec_big(d, p + 5, rd32(b + p + 1), p, pos);
    case NEW_FLOAT: {
        if (need(d, p + 1, 8, "NEW_FLOAT_EXT") < 0 || charge(d, COST_FLOAT, p) < 0)
            return NULL;
        uint64_t bits = rd64(b + p + 1);
        double x;
        memcpy(&x, &bits, sizeof x);
        *pos = p + 9;
        return check_float(x, p);
    }
    case FLOAT_OLD: {
        if (need(d, p + 1, 31, "FLOAT_EXT") < 0 || charge(d, COST_FLOAT, p) < 0)
            return NULL;
        Py_ssize_t n = 31;
        while (n > 0 && b[p + n] == 0) /* strip the NUL padding */
            n--;
        for (Py_ssize_t i = 1; i <= n; i++)
            if (b[p + i] >= 128)
                return fail(p, "FLOAT_EXT is not a number");
        PyObject *text = PyUnicode_FromStringAndSize((const char *)b + p + 1, n);
        if (text == NULL)
            return NULL;
        PyObject *f = PyFloat_FromString(text);
        Py_DECREF(text);
        if (f == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError))
                return NULL;
            PyErr_Clear();
            return fail(p, "FLOAT_EXT is not a number");
        }
        double x = PyFloat_AS_DOUBLE(f);
        Py_DECREF(f);
        *pos = p + 32;
        return check_float(x, p);
    }
    case ATOM:
    case SMALL_ATOM:
    case ATOM_UTF8:
    case SMALL_ATOM_UTF8:
        return read_atom(d, pos, 1);
    case SMALL_TUPLE:
    case LARGE_TUPLE: {
        Py_ssize_t n;
        if (tag == SMALL_TUPLE) {
            if (need(d, p + 1, 1, "SMALL_TUPLE_EXT") < 0)
                return NULL;
            n = b[p + 1];
            p += 2;
        }
        else {
            if (need(d, p + 1, 4, "LARGE_TUPLE_EXT") < 0)
                return NULL;
            n = rd32(b + p + 1);
            p += 5;
        }
        if (n > d->len - p)
            return fail(p, "tuple of %zd elements cannot fit in %zd bytes", n, d->len - p);
        if (check_depth(d, depth, p) < 0 || spend(d, n, p) < 0 ||
            (n > 0 && charge(d, COST_TUPLE + COST_SLOT * (long long)n, p) < 0))
            return NULL;
        PyObject *t = PyTuple_New(n);
        if (t == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = dec_term(d, &p, depth + 1);
            if (v == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, v);
        }
        *pos = p;
        return t;
    }
    case NIL:
        if (charge(d, COST_LIST, p) < 0)
            return NULL;
        *pos = p + 1;
        return PyList_New(0);
    case STRING: {
        if (need(d, p + 1, 2, "STRING_EXT") < 0)
            return NULL;
        Py_ssize_t n = rd16(b + p + 1);
        if (need(d, p + 3, n, "STRING_EXT") < 0 || spend(d, n, p) < 0 ||
            charge(d, COST_LIST + COST_SLOT * (long long)n, p) < 0)
            return NULL;
        PyObject *l = PyList_New(n);
        if (l == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++)
            PyList_SET_ITEM(l, i, PyLong_FromLong(b[p + 3 + i])); /* cached small ints */
        *pos = p + 3 + n;
        return l;
    }
    case LIST:
        return dec_list(d, p + 1, p, depth, pos);
    case BINARY: {
        if (need(d, p + 1, 4, "BINARY_EXT") < 0)
            return NULL;
        Py_ssize_t n = rd32(b + p + 1);
        if (need(d, p + 5, n, "BINARY_EXT") < 0 || (n > 1 && charge(d, COST_BYTES + n, p) < 0))
            return NULL;
        *pos = p + 5 + n;
        return PyBytes_FromStringAndSize((const char *)b + p + 5, n);
    }
    case BIT_BINARY: {
        if (need(d, p + 1, 5, "BIT_BINARY_EXT") < 0)
            return NULL;
        Py_ssize_t n = rd32(b + p + 1);
        int bits = b[p + 5];
        if (need(d, p + 6, n, "BIT_BINARY_EXT") < 0)
            return NULL;
        if (n == 0 || bits < 1 || bits > 8)
            return fail(p, "BIT_BINARY_EXT with %zd bytes and %d bits in the last", n, bits);
        if (charge(d, COST_OBJECT + (n > 1 ? COST_BYTES + n : 0), p) < 0)
            return NULL;
        PyObject *vals[2] = {PyBytes_FromStringAndSize((const char *)b + p + 6, n), PyLong_FromLong(bits)};
        if (!vals[0] || !vals[1]) {
            Py_XDECREF(vals[0]);
            Py_XDECREF(vals[1]);
            return NULL;
        }
        *pos = p + 6 + n;
        return new_slotted(BitStringType, (const Py_ssize_t *)&bit_s, vals, 2);
    }
    case MAP:
        return dec_map(d, p + 1, p, depth, pos);
    case NEW_PID:
        return read_pid(d, pos);
    case NEW_PORT:
    case V4_PORT: {
        Py_ssize_t q = p + 1;
        PyObject *node = read_atom(d, &q, 0);
        if (node == NULL)
            return NULL;
        int v4 = tag == V4_PORT;
        if (need(d, q, v4 ? 12 : 8, v4 ? "V4_PORT_EXT" : "NEW_PORT_EXT") < 0 ||
            charge(d, COST_OBJECT + 2 * COST_INT, p) < 0) {
            Py_DECREF(node);
            return NULL;
        }
        PyObject *vals[4] = {node,
                             v4 ? PyLong_FromUnsignedLongLong(rd64(b + q)) : PyLong_FromUnsignedLong(rd32(b + q)),
                             PyLong_FromUnsignedLong(rd32(b + q + (v4 ? 8 : 4))), v4 ? Py_True : Py_False};
        Py_INCREF(vals[3]);
        if (!vals[1] || !vals[2]) {
            for (int i = 0; i < 4; i++)
                Py_XDECREF(vals[i]);
            return NULL;
        }
        *pos = q + (v4 ? 12 : 8);
        return new_slotted(PortType, (const Py_ssize_t *)&port_s, vals, 4);
    }
    case NEWER_REFERENCE: {
        if (need(d, p + 1, 2, "NEWER_REFERENCE_EXT") < 0)
            return NULL;
        Py_ssize_t n = rd16(b + p + 1);
        if (n < 1 || n > 5)
            return fail(p, "reference with %zd words (1..5 allowed)", n);
        Py_ssize_t q = p + 3;
        PyObject *node = read_atom(d, &q, 0);
        if (node == NULL)
            return NULL;
        if (need(d, q, 4 + 4 * n, "NEWER_REFERENCE_EXT") < 0 ||
            charge(d, COST_OBJECT + COST_TUPLE + (COST_SLOT + COST_INT) * n + COST_INT, p) < 0) {
            Py_DECREF(node);
            return NULL;
        }
        PyObject *vals[3] = {node, PyLong_FromUnsignedLong(rd32(b + q)), PyTuple_New(n)};
        if (!vals[1] || !vals[2])
            goto ref_error;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *w = PyLong_FromUnsignedLong(rd32(b + q + 4 + 4 * i));
            if (w == NULL)
                goto ref_error;
            PyTuple_SET_ITEM(vals[2], i, w);
        }
        *pos = q + 4 + 4 * n;
        return new_slotted(ReferenceType, (const Py_ssize_t *)&ref_s, vals, 3);
    ref_error:
        for (int i = 0; i < 3; i++)
            Py_XDECREF(vals[i]);
        return NULL;
    }
    case EXPORT: {
        Py_ssize_t q = p + 1;
        PyObject *vals[3] = {NULL, NULL, NULL};
        vals[0] = read_atom(d, &q, 0);
        if (vals[0] == NULL)
            return NULL;
        vals[1] = read_atom(d, &q, 0);
        if (vals[1] == NULL) {
            Py_DECREF(vals[0]);
            return NULL;
        }
        if (q + 2 > d->len || b[q] != SMALL_INTEGER) {
            Py_DECREF(vals[0]);
            Py_DECREF(vals[1]);
            return fail(q, "EXPORT_EXT arity must be a SMALL_INTEGER_EXT");
        }
        if (charge(d, COST_OBJECT, p) < 0) {
            Py_DECREF(vals[0]);
            Py_DECREF(vals[1]);
            return NULL;
        }
        vals[2] = PyLong_FromLong(b[q + 1]);
        *pos = q + 2;
        return new_slotted(ExportFunType, (const Py_ssize_t *)&export_s, vals, 3);
    }
    case NEW_FUN:
        return dec_fun(d, p, depth, pos);
    case 101:
        return fail(p, "unsupported tag 101 (REFERENCE_EXT)");
    case 102:
        return fail(p, "unsupported tag 102 (PORT_EXT)");
    case 103:
        return fail(p, "unsupported tag 103 (PID_EXT)");
    case 114:
        return fail(p, "unsupported tag 114 (NEW_REFERENCE_EXT)");
    case 117:
        return fail(p, "unsupported tag 117 (FUN_EXT)");
    case 121:
        return fail(p, "unsupported tag 121 (LOCAL_EXT)");
    case 68:
        return fail(p, "unsupported tag 68 (DIST_HEADER)");
    case 82:
        return fail(p, "unsupported tag 82 (ATOM_CACHE_REF)");
    default:
        return fail(p, "unknown tag %d", tag);
    }
}

/* ---- entry points ---- */

static int
limits_attr(PyObject *limits, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(limits, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Limits and budgets for decoding `input_size` bytes (a term, or a frame's two terms). */
static int
limits_init(Dec *d, PyObject *limits, Py_ssize_t input_size)
{
    if (limits == NULL || limits == Py_None)
        limits = DefaultLimits;
    d->limits = limits;
    d->huge_ints = 0;
    d->huge_int_keys = 0;
    d->steps = 0;
    static int have_defaults = 0;
    static Dec defaults;
    if (limits == DefaultLimits && have_defaults) {
        d->max_depth = defaults.max_depth;
        d->max_elements = defaults.max_elements;
        d->max_atom_chars = defaults.max_atom_chars;
        d->max_huge_int_keys = defaults.max_huge_int_keys;
        d->max_expansion = defaults.max_expansion;
        d->expansion_allowance = defaults.expansion_allowance;
    }
    else {
        Py_ssize_t depth;
        if (limits_attr(limits, s_max_depth, &depth) < 0 ||
            limits_attr(limits, s_max_elements, &d->max_elements) < 0 ||
            limits_attr(limits, s_max_atom_chars, &d->max_atom_chars) < 0 ||
            limits_attr(limits, s_max_huge_int_keys, &d->max_huge_int_keys) < 0 ||
            limits_attr(limits, s_max_expansion, &d->max_expansion) < 0 ||
            limits_attr(limits, s_expansion_allowance, &d->expansion_allowance) < 0)
            return -1;
        if (depth < 1 || depth > 2000) { /* types.MAX_DEPTH_CEILING */
            PyErr_SetString(PyExc_ValueError, "DecodeLimits.max_depth must be 1..2000");
            return -1;
        }
        d->max_depth = (long)depth;
        if (limits == DefaultLimits) {
            defaults = *d;
            have_defaults = 1;
        }
    }
    d->elements_left = d->max_elements;
    d->cost_left = (long long)d->max_expansion * input_size + d->expansion_allowance;
    return 0;
}

static int
get_buffer(PyObject *data, Py_buffer *view)
{
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, bytearray or memoryview, got %s", Py_TYPE(data)->tp_name);
        return -1;
    }
    return PyObject_GetBuffer(data, view, PyBUF_SIMPLE);
}

/* Decoded terms hold no reference cycles: the cyclic GC has nothing to find while a large input
   is decoded, and its passes over millions of young containers cost far more than the decode
   (pure.py does the same above the same size). Returns whether it was running. */
#define GC_PAUSE_ABOVE 65536
static int
gc_pause(Py_ssize_t size)
{
    return size >= GC_PAUSE_ABOVE ? PyGC_Disable() : 0;
}

static void
gc_resume(int was_enabled)
{
    if (was_enabled)
        PyGC_Enable();
}

/* One 131-prefixed term at offset of the buffer (held by the caller), with the budgets in d. */
static PyObject *
decode_at(Dec *d, Py_buffer *view, PyObject *data, Py_ssize_t offset, Py_ssize_t *end)
{
    d->buf = (const unsigned char *)view->buf;
    d->len = view->len;
    if (offset >= d->len)
        return fail(offset, "truncated: expected the version byte 131");
    if (d->buf[offset] != VERSION)
        return fail(offset, "expected version byte 131, got %d", d->buf[offset]);
    if (offset + 1 < d->len && d->buf[offset + 1] == COMPRESSED) {
        /* the inflated bytes count against the memory budget */
        Py_ssize_t max_inflated;
        if (limits_attr(d->limits, s_max_uncompressed_size, &max_inflated) < 0)
            return NULL;
        if (d->len - offset >= 6 && rd32(d->buf + offset + 2) <= (uint64_t)max_inflated &&
            charge(d, rd32(d->buf + offset + 2), offset) < 0)
            return NULL; /* a declared size over max_uncompressed_size: pure._inflate says so */
        PyObject *off = PyLong_FromSsize_t(offset);
        if (off == NULL)
            return NULL;
        PyObject *pair = PyObject_CallFunctionObjArgs(py_inflate, data, off, d->limits, NULL);
        Py_DECREF(off);
        if (pair == NULL)
            return NULL;
        PyObject *inner = PyTuple_GET_ITEM(pair, 0);
        Py_ssize_t after = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        d->buf = (const unsigned char *)PyBytes_AS_STRING(inner);
        d->len = PyBytes_GET_SIZE(inner);
        Py_ssize_t p = 0;
        PyObject *term = dec_term(d, &p, 0);
        if (term != NULL && p != d->len) {
            Py_DECREF(term);
            term = fail(offset, "compressed term has %zd trailing bytes", d->len - p);
        }
        Py_DECREF(pair);
        d->buf = (const unsigned char *)view->buf;
        d->len = view->len;
        if (term != NULL)
            *end = after;
        return term;
    }
    Py_ssize_t p = offset + 1;
    PyObject *term = dec_term(d, &p, 0);
    if (term != NULL)
        *end = p;
    return term;
}

static PyObject *
py_decode_from(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "offset", "limits", NULL};
    PyObject *data, *offset_obj = NULL, *limits = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$O:decode_from", kwlist, &data, &offset_obj, &limits))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    Py_ssize_t offset = 0;
    if (offset_obj != NULL) {
        PyObject *index = PyNumber_Index(offset_obj);
        if (index == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(index, &overflow);
        if (overflow || x < 0 || x > view.len) {
            PyErr_Format(ETFError, "offset %S outside the input of %zd bytes", index, view.len);
            Py_DECREF(index);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(index);
        offset = (Py_ssize_t)x;
    }
    Py_ssize_t end = 0;
    Dec d;
    PyObject *term = NULL;
    int gc_was = gc_pause(view.len - offset);
    if (limits_init(&d, limits, view.len - offset) == 0)
        term = decode_at(&d, &view, data, offset, &end);
    gc_resume(gc_was);
    PyBuffer_Release(&view);
    if (term == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", term, end);
}

static PyObject *
py_decode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "limits", NULL};
    PyObject *data, *limits = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:decode", kwlist, &data, &limits))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    Py_ssize_t end = 0;
    Dec d;
    PyObject *term = NULL;
    int gc_was = gc_pause(view.len);
    if (limits_init(&d, limits, view.len) == 0)
        term = decode_at(&d, &view, data, 0, &end);
    gc_resume(gc_was);
    if (term != NULL && end != view.len) {
        Py_DECREF(term);
        term = fail(end, "trailing bytes after the term");
    }
    PyBuffer_Release(&view);
    return term;
}

static PyObject *
py_decode_dist_frame(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "limits", NULL};
    PyObject *data, *limits = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:decode_dist_frame", kwlist, &data, &limits))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    PyObject *control = NULL, *message = NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    Dec d; /* one budget for the frame's two terms */
    int gc_was = 0;
    if (view.len == 0) {
        PyErr_SetString(ETFError, "distribution frame must start with 112, got nothing at offset 0");
        goto done;
    }
    if (b[0] != PASS_THROUGH) {
        PyErr_Format(ETFError, "distribution frame must start with 112, got %d at offset 0", b[0]);
        goto done;
    }
    if (limits_init(&d, limits, view.len) < 0)
        goto done;
    gc_was = gc_pause(view.len);
    Py_ssize_t p = 0;
    control = decode_at(&d, &view, data, 1, &p);
    if (control == NULL)
        goto done;
    if (p == view.len) {
        Py_INCREF(NoMessage);
        message = NoMessage;
        goto done;
    }
    message = decode_at(&d, &view, data, p, &p);
    if (message != NULL && p != view.len) {
        Py_CLEAR(message);
        fail(p, "trailing bytes after the message in a distribution frame");
    }
done:
    gc_resume(gc_was);
    PyBuffer_Release(&view);
    if (message == NULL) {
        Py_XDECREF(control);
        return NULL;
    }
    return Py_BuildValue("(NN)", control, message);
}

/* ------------------------------------------------------------------------------------------ */
/* encoding */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int
grow(Out *o, Py_ssize_t extra)
{
    if (o->len + extra <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2;
    if (cap < o->len + extra)
        cap = o->len + extra + 64;
    char *nb = PyMem_Realloc(o->buf, (size_t)cap);
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = nb;
    o->cap = cap;
    return 0;
}

#define ENSURE(o, n)              \
    do {                          \
        if (grow((o), (n)) < 0)   \
            return -1;            \
    } while (0)

static inline void
put8(Out *o, unsigned v)
{
    o->buf[o->len++] = (char)v;
}

static inline void
put16(Out *o, unsigned v)
{
    o->buf[o->len++] = (char)(v >> 8);
    o->buf[o->len++] = (char)v;
}

static inline void
put32(Out *o, uint32_t v)
{
    o->buf[o->len++] = (char)(v >> 24);
    o->buf[o->len++] = (char)(v >> 16);
    o->buf[o->len++] = (char)(v >> 8);
    o->buf[o->len++] = (char)v;
}

static inline void
putmem(Out *o, const void *p, Py_ssize_t n)
{
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
}

static int
enc_fail(const char *fmt, PyObject *obj)
{
    if (obj == NULL) {
        PyErr_SetString(ETFError, fmt);
        return -1;
    }
    PyObject *r = PyObject_Repr(obj);
    if (r == NULL)
        return -1;
    PyErr_Format(ETFError, fmt, r);
    Py_DECREF(r);
    return -1;
}

static int
utf8_of(PyObject *s, const char **p, Py_ssize_t *n)
{
    *p = PyUnicode_AsUTF8AndSize(s, n);
    if (*p == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyErr_Format(ETFError, "cannot encode text as UTF-8: %S", value);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return -1;
    }
    return 0;
}

static int
enc_atom(Out *o, PyObject *s)
{
    if (!PyUnicode_Check(s))
        return enc_fail("an atom (node, module, function name) must be a str, got %.80U", s);
    const char *p;
    Py_ssize_t n;
    if (utf8_of(s, &p, &n) < 0)
        return -1;
    ENSURE(o, n + 3);
    if (n < 256) {
        put8(o, SMALL_ATOM_UTF8);
        put8(o, (unsigned)n);
    }
    else {
        if (PyUnicode_GET_LENGTH(s) > 255)
            return enc_fail("atom longer than 255 characters: %.40U...", s);
        put8(o, ATOM_UTF8);
        put16(o, (unsigned)n);
    }
    putmem(o, p, n);
    return 0;
}

static int
enc_int(Out *o, PyObject *v)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && x >= 0 && x <= 255) {
        ENSURE(o, 2);
        put8(o, SMALL_INTEGER);
        put8(o, (unsigned)x);
        return 0;
    }
    if (!overflow && x >= INT32_MIN && x <= INT32_MAX) {
        ENSURE(o, 5);
        put8(o, INTEGER);
        put32(o, (uint32_t)(int32_t)x);
        return 0;
    }
    int neg = _PyLong_Sign(v) < 0;
    PyObject *mag = neg ? PyNumber_Negative(v) : (Py_INCREF(v), v);
    if (mag == NULL)
        return -1;
    size_t bits = _PyLong_NumBits(mag);
    if (bits == (size_t)-1 && PyErr_Occurred()) {
        Py_DECREF(mag);
        return -1;
    }
    Py_ssize_t n = (Py_ssize_t)((bits + 7) / 8);
    if ((uint64_t)n > 0xFFFFFFFFu) {
        Py_DECREF(mag);
        return enc_fail("integer too large to encode", NULL);
    }
    if (grow(o, n + 6) < 0) {
        Py_DECREF(mag);
        return -1;
    }
    if (n < 256) {
        put8(o, SMALL_BIG);
        put8(o, (unsigned)n);
    }
    else {
        put8(o, LARGE_BIG);
        put32(o, (uint32_t)n);
    }
    put8(o, neg ? 1 : 0);
#if PY_VERSION_HEX >= 0x030D0000
    int r = _PyLong_AsByteArray((PyLongObject *)mag, (unsigned char *)o->buf + o->len, (size_t)n, 1, 0, 1);
#else
    int r = _PyLong_AsByteArray((PyLongObject *)mag, (unsigned char *)o->buf + o->len, (size_t)n, 1, 0);
#endif
    Py_DECREF(mag);
    if (r < 0)
        return -1;
    o->len += n;
    return 0;
}

static int
enc_binary(Out *o, const char *p, Py_ssize_t n)
{
    if ((uint64_t)n > 0xFFFFFFFFu)
        return enc_fail("binary too large to encode", NULL);
    ENSURE(o, n + 5);
    put8(o, BINARY);
    put32(o, (uint32_t)n);
    putmem(o, p, n);
    return 0;
}

/* A field that must be an int in 0..2**32-1 (type-exact, as the pure encoder requires). */
static int
u32_field(PyObject *v, const char *what, uint32_t *out)
{
    if (v != NULL && PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && x >= 0 && x <= 0xFFFFFFFFLL) {
            *out = (uint32_t)x;
            return 0;
        }
    }
    PyErr_Clear();
    PyObject *r = v ? PyObject_Repr(v) : NULL;
    PyErr_Format(ETFError, "%s must be an integer in 0..2**32-1, got %S", what, r ? r : Py_None);
    Py_XDECREF(r);
    return -1;
}

static int enc_term(Out *o, PyObject *t, int depth);
static int enc_fallback(Out *o, PyObject *t, int depth);

#define SNAPSHOT_ON_STACK 8

static int
enc_items(Out *o, PyObject *seq, Py_ssize_t n, int depth)
{
    /* Items of a tuple, or of a snapshot of a list (encoding a subclass runs Python code,
       which may change the list: the count already written must match what follows). The
       snapshot is an array of strong references, not a new list: no allocation the cyclic GC
       would count, and none at all for short lists. */
    if (PyTuple_Check(seq)) {
        for (Py_ssize_t i = 0; i < n; i++)
            if (enc_term(o, PyTuple_GET_ITEM(seq, i), depth) < 0)
                return -1;
        return 0;
    }
    PyObject *stack[SNAPSHOT_ON_STACK];
    PyObject **items = n <= SNAPSHOT_ON_STACK ? stack : PyMem_Malloc(sizeof(PyObject *) * (size_t)n);
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyList_GET_SIZE(seq) < n)
        n = PyList_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i] = PyList_GET_ITEM(seq, i);
        Py_INCREF(items[i]);
    }
    int r = 0;
    for (Py_ssize_t i = 0; i < n && r == 0; i++)
        r = enc_term(o, items[i], depth);
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(items[i]);
    if (items != stack)
        PyMem_Free(items);
    return r;
}

static int
enc_list(Out *o, PyObject *l, int depth)
{
    Py_ssize_t n = PyList_GET_SIZE(l);
    if (n == 0) {
        ENSURE(o, 1);
        put8(o, NIL);
        return 0;
    }
    if (n < 65536) {
        int bytes = 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(l, i);
            if (!PyLong_CheckExact(x)) {
                bytes = 0;
                break;
            }
            int overflow = 0;
            long v = PyLong_AsLongAndOverflow(x, &overflow);
            if (overflow || v < 0 || v > 255) {
                bytes = 0;
                break;
            }
        }
        if (bytes) {
            ENSURE(o, n + 3);
            put8(o, STRING);
            put16(o, (unsigned)n);
            for (Py_ssize_t i = 0; i < n; i++)
                put8(o, (unsigned)PyLong_AsLong(PyList_GET_ITEM(l, i)));
            return 0;
        }
    }
    if ((uint64_t)n > 0xFFFFFFFFu)
        return enc_fail("list too long to encode", NULL);
    ENSURE(o, 5);
    put8(o, LIST);
    put32(o, (uint32_t)n);
    if (enc_items(o, l, n, depth + 1) < 0)
        return -1;
    ENSURE(o, 1);
    put8(o, NIL);
    return 0;
}

static int
enc_dict(Out *o, PyObject *m, int depth)
{
    /* a snapshot of the pairs, for the same reason as enc_items */
    Py_ssize_t n = PyDict_GET_SIZE(m);
    PyObject *stack[2 * SNAPSHOT_ON_STACK];
    PyObject **pairs = n <= SNAPSHOT_ON_STACK ? stack : PyMem_Malloc(sizeof(PyObject *) * 2 * (size_t)n);
    if (pairs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0, k = 0;
    PyObject *key, *value;
    while (k < n && PyDict_Next(m, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        pairs[2 * k] = key;
        pairs[2 * k + 1] = value;
        k++;
    }
    int r = grow(o, 5);
    if (r == 0) {
        put8(o, MAP);
        put32(o, (uint32_t)k);
    }
    for (Py_ssize_t i = 0; i < k && r == 0; i++) {
        PyObject *kk = pairs[2 * i];
        if (Py_TYPE(kk) == (PyTypeObject *)FrozenTermType) {
            if (SLOT(kk, frozen_s.term) == NULL) { /* never initialised: the pure encoder says so */
                r = enc_term(o, kk, depth + 1);
                if (r == 0)
                    r = enc_term(o, pairs[2 * i + 1], depth + 1);
                continue;
            }
            kk = SLOT(kk, frozen_s.term);
        }
        r = enc_term(o, kk, depth + 1);
        if (r == 0)
            r = enc_term(o, pairs[2 * i + 1], depth + 1);
    }
    for (Py_ssize_t i = 0; i < 2 * k; i++)
        Py_DECREF(pairs[i]);
    if (pairs != stack)
        PyMem_Free(pairs);
    return r;
}

/* The pure encoder for one subterm: for everything the fast path does not own (subclasses,
   unknown types, term objects whose fields are missing or odd), so results and errors are the
   reference's own. */
static int
enc_fallback(Out *o, PyObject *t, int depth)
{
    PyObject *d = PyLong_FromLong(depth);
    if (d == NULL)
        return -1;
    PyObject *frag = PyObject_CallFunctionObjArgs(py_fragment, t, d, NULL);
    Py_DECREF(d);
    if (frag == NULL)
        return -1;
    Py_ssize_t n = PyBytes_GET_SIZE(frag);
    if (grow(o, n) < 0) {
        Py_DECREF(frag);
        return -1;
    }
    putmem(o, PyBytes_AS_STRING(frag), n);
    Py_DECREF(frag);
    return 0;
}

static int
enc_term(Out *o, PyObject *t, int depth)
{
    if (depth > ENCODE_MAX_DEPTH) {
        PyErr_Format(ETFError, "term nested deeper than %d (or cyclic)", ENCODE_MAX_DEPTH);
        return -1;
    }
    PyTypeObject *tp = Py_TYPE(t);
    if (tp == (PyTypeObject *)AtomType)
        return enc_atom(o, t);
    if (tp == &PyLong_Type)
        return enc_int(o, t);
    if (tp == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(t);
        ENSURE(o, 5);
        if (n < 256) {
            put8(o, SMALL_TUPLE);
            put8(o, (unsigned)n);
        }
        else {
            put8(o, LARGE_TUPLE);
            put32(o, (uint32_t)n);
        }
        return enc_items(o, t, n, depth + 1);
    }
    if (tp == &PyBytes_Type)
        return enc_binary(o, PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t));
    if (tp == &PyList_Type)
        return enc_list(o, t, depth);
    if (tp == &PyDict_Type)
        return enc_dict(o, t, depth);
    if (t == Py_True || t == Py_False || t == Py_None) {
        const char *s = t == Py_True ? "true" : t == Py_False ? "false" : "nil";
        Py_ssize_t n = (Py_ssize_t)strlen(s);
        ENSURE(o, n + 2);
        put8(o, SMALL_ATOM_UTF8);
        put8(o, (unsigned)n);
        putmem(o, s, n);
        return 0;
    }
    if (tp == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(t);
        if (!isfinite(x))
            return enc_fail("cannot encode a non-finite float: %U", t);
        uint64_t bits;
        memcpy(&bits, &x, sizeof bits);
        ENSURE(o, 9);
        put8(o, NEW_FLOAT);
        put32(o, (uint32_t)(bits >> 32));
        put32(o, (uint32_t)bits);
        return 0;
    }
    if (tp == &PyUnicode_Type) {
        const char *p;
        Py_ssize_t n;
        if (utf8_of(t, &p, &n) < 0)
            return -1;
        return enc_binary(o, p, n);
    }
    if (tp == (PyTypeObject *)PidType) {
        uint32_t id, serial, creation;
        if (!SLOT(t, pid_s.node) || !SLOT(t, pid_s.id) || !SLOT(t, pid_s.serial) || !SLOT(t, pid_s.creation))
            return enc_fallback(o, t, depth);
        ENSURE(o, 1);
        put8(o, NEW_PID);
        if (enc_atom(o, SLOT(t, pid_s.node)) < 0 || u32_field(SLOT(t, pid_s.id), "Pid id", &id) < 0 ||
            u32_field(SLOT(t, pid_s.serial), "Pid serial", &serial) < 0 ||
            u32_field(SLOT(t, pid_s.creation), "Pid creation", &creation) < 0)
            return -1;
        ENSURE(o, 12);
        put32(o, id);
        put32(o, serial);
        put32(o, creation);
        return 0;
    }
    if (tp == (PyTypeObject *)ReferenceType) {
        PyObject *ids = SLOT(t, ref_s.ids);
        if (!ids || !SLOT(t, ref_s.node) || !SLOT(t, ref_s.creation))
            return enc_fallback(o, t, depth);
        if (!PyTuple_Check(ids) || PyTuple_GET_SIZE(ids) < 1 || PyTuple_GET_SIZE(ids) > 5)
            return enc_fail("Reference ids must be a tuple of 1..5 words, got %U", ids);
        Py_ssize_t n = PyTuple_GET_SIZE(ids);
        uint32_t creation, w;
        ENSURE(o, 3);
        put8(o, NEWER_REFERENCE);
        put16(o, (unsigned)n);
        if (enc_atom(o, SLOT(t, ref_s.node)) < 0 ||
            u32_field(SLOT(t, ref_s.creation), "Reference creation", &creation) < 0)
            return -1;
        ENSURE(o, 4 + 4 * n);
        put32(o, creation);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (u32_field(PyTuple_GET_ITEM(ids, i), "Reference id word", &w) < 0)
                return -1;
            put32(o, w);
        }
        return 0;
    }
    if (tp == (PyTypeObject *)PortType) {
        PyObject *id = SLOT(t, port_s.id);
        if (!id || !SLOT(t, port_s.node) || !SLOT(t, port_s.creation) || !SLOT(t, port_s.v4))
            return enc_fallback(o, t, depth);
        unsigned long long x = 0;
        int ok = id != NULL && PyLong_CheckExact(id) && _PyLong_Sign(id) >= 0;
        if (ok) {
            x = PyLong_AsUnsignedLongLong(id);
            if (x == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                ok = 0;
            }
        }
        if (!ok)
            return enc_fail("Port id must be an integer in 0..2**64-1, got %U", id ? id : Py_None);
        int v4 = PyObject_IsTrue(SLOT(t, port_s.v4));
        if (v4 < 0)
            return -1;
        v4 = v4 || x > 0xFFFFFFFFull;
        uint32_t creation;
        ENSURE(o, 1);
        put8(o, v4 ? V4_PORT : NEW_PORT);
        if (enc_atom(o, SLOT(t, port_s.node)) < 0)
            return -1;
        ENSURE(o, 8);
        if (v4)
            put32(o, (uint32_t)(x >> 32));
        put32(o, (uint32_t)x);
        if (u32_field(SLOT(t, port_s.creation), "Port creation", &creation) < 0)
            return -1;
        ENSURE(o, 4);
        put32(o, creation);
        return 0;
    }
    if (tp == (PyTypeObject *)ImproperListType) {
        PyObject *items = SLOT(t, improper_s.items), *tail = SLOT(t, improper_s.tail);
        if (!items || !tail || !PyList_CheckExact(items))
            return enc_fallback(o, t, depth);
        Py_ssize_t n = PyList_GET_SIZE(items);
        ENSURE(o, 5);
        put8(o, LIST);
        put32(o, (uint32_t)n);
        Py_INCREF(items);
        Py_INCREF(tail);
        int r = enc_items(o, items, n, depth + 1);
        if (r == 0)
            r = enc_term(o, tail, depth + 1);
        Py_DECREF(items);
        Py_DECREF(tail);
        return r;
    }
    if (tp == (PyTypeObject *)BitStringType) {
        PyObject *data = SLOT(t, bit_s.data), *bits = SLOT(t, bit_s.bits);
        int overflow = 0;
        long b = bits && PyLong_CheckExact(bits) ? PyLong_AsLongAndOverflow(bits, &overflow) : 0;
        if (!data || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) == 0 || overflow || b < 1 || b > 8)
            return enc_fallback(o, t, depth);
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        ENSURE(o, n + 6);
        put8(o, BIT_BINARY);
        put32(o, (uint32_t)n);
        put8(o, (unsigned)b);
        putmem(o, PyBytes_AS_STRING(data), n);
        return 0;
    }
    if (tp == (PyTypeObject *)ExportFunType) {
        PyObject *arity = SLOT(t, export_s.arity);
        if (!arity || !SLOT(t, export_s.module) || !SLOT(t, export_s.function))
            return enc_fallback(o, t, depth);
        int overflow = 0;
        long a = arity && PyLong_CheckExact(arity) ? PyLong_AsLongAndOverflow(arity, &overflow) : -1;
        if (overflow || a < 0 || a > 255)
            return enc_fail("ExportFun arity must be 0..255, got %U", arity ? arity : Py_None);
        ENSURE(o, 1);
        put8(o, EXPORT);
        if (enc_atom(o, SLOT(t, export_s.module)) < 0 || enc_atom(o, SLOT(t, export_s.function)) < 0)
            return -1;
        ENSURE(o, 2);
        put8(o, SMALL_INTEGER);
        put8(o, (unsigned)a);
        return 0;
    }
    if (tp == (PyTypeObject *)FunType) {
        PyObject *raw = SLOT(t, fun_s.raw);
        if (!raw || !PyBytes_CheckExact(raw))
            return enc_fallback(o, t, depth);
        ENSURE(o, PyBytes_GET_SIZE(raw));
        putmem(o, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
        return 0;
    }
    if (tp == (PyTypeObject *)FrozenTermType) {
        if (SLOT(t, frozen_s.term) == NULL)
            return enc_fallback(o, t, depth);
        return enc_term(o, SLOT(t, frozen_s.term), depth + 1); /* + 1: it may hold itself */
    }
    if (tp == &PyByteArray_Type)
        return enc_binary(o, PyByteArray_AS_STRING(t), PyByteArray_GET_SIZE(t));
    /* anything else (subclasses, dict-likes, unknown types) */
    return enc_fallback(o, t, depth);
}

static PyObject *
py_encode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"term", "compressed", NULL};
    PyObject *term, *compressed = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:encode", kwlist, &term, &compressed))
        return NULL;
    Out o;
    o.cap = 256;
    o.len = 0;
    o.buf = PyMem_Malloc((size_t)o.cap);
    if (o.buf == NULL)
        return PyErr_NoMemory();
    put8(&o, VERSION);
    if (enc_term(&o, term, 0) < 0) {
        PyMem_Free(o.buf);
        return NULL;
    }
    PyObject *plain = PyBytes_FromStringAndSize(o.buf, o.len);
    PyMem_Free(o.buf);
    if (plain == NULL || compressed == Py_False)
        return plain;
    PyObject *r = PyObject_CallFunctionObjArgs(py_finish, plain, compressed, NULL);
    Py_DECREF(plain);
    return r;
}

/* ------------------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))py_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(term, *, compressed=False) -> bytes"},
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(data, *, limits=DEFAULT_LIMITS) -> term"},
    {"decode_from", (PyCFunction)(void (*)(void))py_decode_from, METH_VARARGS | METH_KEYWORDS,
     "decode_from(data, offset=0, *, limits=DEFAULT_LIMITS) -> (term, end)"},
    {"decode_dist_frame", (PyCFunction)(void (*)(void))py_decode_dist_frame, METH_VARARGS | METH_KEYWORDS,
     "decode_dist_frame(data, *, limits=DEFAULT_LIMITS) -> (control, message | NO_MESSAGE)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cetf", "C fast path of dspex_cluster.etf (see the package docstring).", -1,
    methods,
};

static int
load(PyObject *mod, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(mod, name);
    return *out == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__cetf(void)
{
    PyObject *types = PyImport_ImportModule("dspex_cluster.etf.types");
    if (types == NULL)
        return NULL;
    PyObject *pure = PyImport_ImportModule("dspex_cluster.etf.pure");
    if (pure == NULL) {
        Py_DECREF(types);
        return NULL;
    }
    int bad = load(types, "Atom", &AtomType) || load(types, "Pid", &PidType) ||
              load(types, "Reference", &ReferenceType) || load(types, "Port", &PortType) ||
              load(types, "ExportFun", &ExportFunType) || load(types, "Fun", &FunType) ||
              load(types, "BitString", &BitStringType) || load(types, "ImproperList", &ImproperListType) ||
              load(types, "FrozenTerm", &FrozenTermType) || load(types, "ETFError", &ETFError) ||
              load(types, "DEFAULT_LIMITS", &DefaultLimits) || load(types, "NO_MESSAGE", &NoMessage) ||
              load(pure, "_build_map_with_aliases", &py_build_map_with_aliases) || load(pure, "_inflate", &py_inflate) ||
              load(pure, "_finish", &py_finish) || load(pure, "_encode_fragment", &py_fragment);
    Py_DECREF(types);
    Py_DECREF(pure);
    if (bad)
        return NULL;
    bad = slot_offset(PidType, "node", &pid_s.node) || slot_offset(PidType, "id", &pid_s.id) ||
          slot_offset(PidType, "serial", &pid_s.serial) || slot_offset(PidType, "creation", &pid_s.creation) ||
          slot_offset(ReferenceType, "node", &ref_s.node) ||
          slot_offset(ReferenceType, "creation", &ref_s.creation) || slot_offset(ReferenceType, "ids", &ref_s.ids) ||
          slot_offset(PortType, "node", &port_s.node) || slot_offset(PortType, "id", &port_s.id) ||
          slot_offset(PortType, "creation", &port_s.creation) || slot_offset(PortType, "v4", &port_s.v4) ||
          slot_offset(ExportFunType, "module", &export_s.module) ||
          slot_offset(ExportFunType, "function", &export_s.function) ||
          slot_offset(ExportFunType, "arity", &export_s.arity) || slot_offset(FunType, "raw", &fun_s.raw) ||
          slot_offset(FunType, "module", &fun_s.module) || slot_offset(FunType, "arity", &fun_s.arity) ||
          slot_offset(FunType, "index", &fun_s.index) || slot_offset(FunType, "uniq", &fun_s.uniq) ||
          slot_offset(FunType, "old_index", &fun_s.old_index) ||
          slot_offset(FunType, "old_uniq", &fun_s.old_uniq) || slot_offset(FunType, "pid", &fun_s.pid) ||
          slot_offset(FunType, "free_vars", &fun_s.free_vars) || slot_offset(BitStringType, "data", &bit_s.data) ||
          slot_offset(BitStringType, "bits", &bit_s.bits) ||
          slot_offset(ImproperListType, "items", &improper_s.items) ||
          slot_offset(ImproperListType, "tail", &improper_s.tail) ||
          slot_offset(FrozenTermType, "term", &frozen_s.term);
    if (bad)
        return NULL;
    s_max_depth = PyUnicode_InternFromString("max_depth");
    s_max_elements = PyUnicode_InternFromString("max_elements");
    s_max_uncompressed_size = PyUnicode_InternFromString("max_uncompressed_size");
    s_max_atom_chars = PyUnicode_InternFromString("max_atom_chars");
    s_max_huge_int_keys = PyUnicode_InternFromString("max_huge_int_keys");
    s_max_expansion = PyUnicode_InternFromString("max_expansion");
    s_expansion_allowance = PyUnicode_InternFromString("expansion_allowance");
    if (!s_max_depth || !s_max_elements || !s_max_uncompressed_size || !s_max_atom_chars ||
        !s_max_huge_int_keys || !s_max_expansion || !s_expansion_allowance)
        return NULL;
    return PyModule_Create(&module);
}
