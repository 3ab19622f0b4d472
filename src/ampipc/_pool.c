/*
 * ampipc._pool: the payload pool's slot-ownership fast path (ampipc/services/pool.py is the
 * readable reference of the same protocol; the tests run both against one model).
 *
 * Theory of operation
 * -------------------
 * A PoolCore holds a buffer export of the region's mapping (the memory stays mapped while it
 * lives) and the pool's geometry, checked once at construction against the export's length. Each
 * method is one step of the protocol described in pool.py, on the same words with the same
 * atomics (seq_cst, as the Mapping's):
 *   control word (u64 per slot): generation << 32 | state << 29 | owner pid, changed only by CAS;
 *   owner start time (u64): written by the owner after its CAS, cleared before it gives the slot up;
 *   committed length and descriptor CRC-32 (u32 each): written by the committer before its CAS.
 * Every slot index and length that comes from a descriptor (another process's bytes) is checked
 * before use; a mismatch returns a code that the Python layer turns into StaleDescriptor or
 * ForgedDescriptor with a message. Nothing here blocks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* header words (offsets from the pool object): must match ampipc/services/pool.py */
#define OFF_SEQ 64
#define OFF_WAITERS 68
#define OFF_IN_USE 72
#define OFF_PEAK 76
#define OFF_CURSOR 80
#define OFF_LOANS 88
#define OFF_COMMITS 96
#define OFF_ACCEPTS 104
#define OFF_RELEASES 112
#define ENTRY_SIZE 32
#define E_CONTROL 0
#define E_START 8
#define E_LENGTH 16
#define E_CRC 20

#define ST_FREE 0u
#define ST_LOANED 1u
#define ST_COMMITTED 2u
#define ST_HELD 3u
#define PID_BITS 29
#define PID_MASK ((1u << PID_BITS) - 1u)

#define DESC_MAGIC 0x4C504D41u
#define DESC_HEAD 32
#define MAX_NDIM 8

/* accept() results besides success */
#define R_SHORT 1
#define R_MAGIC 2
#define R_NONCE 3
#define R_SLOT 4
#define R_LENGTH 5
#define R_SIZE 6
#define R_GENERATION 7
#define R_STATE 8
#define R_MISMATCH 9
#define R_RACE 10

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int have_view;
    unsigned char *base; /* the pool object */
    unsigned char *table;
    uint32_t slots, slot_size, nonce;
} CoreObject;

static inline uint64_t mk(uint64_t gen, uint32_t state, uint32_t pid) {
    return (gen & 0xFFFFFFFFull) << 32 | (uint64_t)state << PID_BITS | pid;
}
static inline uint32_t state_of(uint64_t w) { return (uint32_t)(w >> PID_BITS) & 7u; }
static inline uint64_t *ctl(CoreObject *c, uint32_t slot) { return (uint64_t *)(c->table + (size_t)slot * ENTRY_SIZE); }
static inline unsigned char *ent(CoreObject *c, uint32_t slot) { return c->table + (size_t)slot * ENTRY_SIZE; }
static inline uint32_t *w32(CoreObject *c, int off) { return (uint32_t *)(c->base + off); }
static inline uint64_t *w64(CoreObject *c, int off) { return (uint64_t *)(c->base + off); }

static int cas64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static int core_init(CoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"region", "base", "table", "slots", "slot_size", "data", "nonce", NULL};
    PyObject *region;
    Py_ssize_t base, table, data;
    unsigned int slots, slot_size, nonce;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnIInI", kwlist, &region, &base, &table, &slots, &slot_size, &data,
                                     &nonce))
        return -1;
    if (self->have_view) {
        PyErr_SetString(PyExc_RuntimeError, "PoolCore is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(region, &self->view, PyBUF_WRITABLE) < 0) return -1;
    self->have_view = 1;
    Py_ssize_t len = self->view.len;
    if (base < 0 || base % 64 || table <= base || table % 8 || data % 64 || slots == 0 || slot_size == 0 ||
        table > len - (Py_ssize_t)slots * ENTRY_SIZE || base > len - 192 ||
        data > len || (Py_ssize_t)slots * slot_size > len - data) {
        PyErr_SetString(PyExc_ValueError, "pool geometry does not fit the region");
        return -1;
    }
    self->base = (unsigned char *)self->view.buf + base;
    self->table = (unsigned char *)self->view.buf + table;
    self->slots = slots;
    self->slot_size = slot_size;
    self->nonce = nonce;
    return 0;
}

static void core_dealloc(CoreObject *self) {
    if (self->have_view) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *core_close(CoreObject *self, PyObject *unused) {
    if (self->have_view) {
        PyBuffer_Release(&self->view);
        self->have_view = 0;
    }
    Py_RETURN_NONE;
}

static int check_open(CoreObject *self) {
    if (!self->have_view) {
        PyErr_SetString(PyExc_ValueError, "the pool core is closed");
        return -1;
    }
    return 0;
}

static void note_in_use(CoreObject *c) {
    uint32_t now = __atomic_add_fetch(w32(c, OFF_IN_USE), 1, __ATOMIC_SEQ_CST);
    uint32_t peak = __atomic_load_n(w32(c, OFF_PEAK), __ATOMIC_SEQ_CST);
    while (now > peak &&
           !__atomic_compare_exchange_n(w32(c, OFF_PEAK), &peak, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

/* try_loan(pid, start) -> (slot, generation) or None */
static PyObject *core_try_loan(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "try_loan(pid, start)");
        return NULL;
    }
    unsigned long pid = PyLong_AsUnsignedLong(args[0]);
    unsigned long long start = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (check_open(self) < 0) return NULL;
    if (pid > PID_MASK) {
        PyErr_SetString(PyExc_OverflowError, "pid does not fit the owner field");
        return NULL;
    }
    uint32_t n = self->slots;
    uint32_t first = __atomic_load_n(w32(self, OFF_CURSOR), __ATOMIC_RELAXED) % n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = (first + i) % n;
        uint64_t w = __atomic_load_n(ctl(self, slot), __ATOMIC_SEQ_CST);
        if (state_of(w) != ST_FREE) continue;
        if (!cas64(ctl(self, slot), w, mk(w >> 32, ST_LOANED, (uint32_t)pid))) continue;
        __atomic_store_n((uint64_t *)(ent(self, slot) + E_START), (uint64_t)start, __ATOMIC_SEQ_CST);
        __atomic_store_n(w32(self, OFF_CURSOR), (slot + 1) % n, __ATOMIC_RELAXED);
        __atomic_fetch_add(w64(self, OFF_LOANS), 1, __ATOMIC_SEQ_CST);
        note_in_use(self);
        return Py_BuildValue("(Ik)", slot, (unsigned long)(w >> 32));
    }
    Py_RETURN_NONE;
}

/* The owner gives the slot up: clear its start time, then one CAS. Freeing counts in-use out first. */
static int give_up(CoreObject *c, uint32_t slot, uint64_t word, uint32_t new_state, uint32_t pid) {
    __atomic_store_n((uint64_t *)(ent(c, slot) + E_START), 0, __ATOMIC_SEQ_CST);
    uint64_t gen = word >> 32;
    if (new_state == ST_FREE) {
        gen += 1;
        __atomic_fetch_sub(w32(c, OFF_IN_USE), 1, __ATOMIC_SEQ_CST);
    }
    if (cas64(ctl(c, slot), word, mk(gen, new_state, pid))) return 1;
    if (new_state == ST_FREE) __atomic_fetch_add(w32(c, OFF_IN_USE), 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void freed(CoreObject *c) {
    __atomic_fetch_add(w32(c, OFF_SEQ), 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(w32(c, OFF_WAITERS), __ATOMIC_SEQ_CST))
        syscall(SYS_futex, w32(c, OFF_SEQ), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static int parse_slot_gen_pid(CoreObject *self, PyObject *const *args, uint32_t *slot, uint64_t *gen, uint32_t *pid) {
    unsigned long s = PyLong_AsUnsignedLong(args[0]);
    unsigned long long g = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long p = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred()) return -1;
    if (check_open(self) < 0) return -1;
    if (s >= self->slots || g > 0xFFFFFFFFull || p > PID_MASK) {
        PyErr_SetString(PyExc_ValueError, "slot, generation or pid out of range");
        return -1;
    }
    *slot = (uint32_t)s;
    *gen = g;
    *pid = (uint32_t)p;
    return 0;
}

/* commit(slot, generation, pid, length, crc) -> bool: LOANED -> COMMITTED */
static PyObject *core_commit(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "commit(slot, generation, pid, length, crc)");
        return NULL;
    }
    uint32_t slot, pid;
    uint64_t gen;
    if (parse_slot_gen_pid(self, args, &slot, &gen, &pid) < 0) return NULL;
    unsigned long length = PyLong_AsUnsignedLong(args[3]);
    unsigned long crc = PyLong_AsUnsignedLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (length > self->slot_size || crc > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "length or crc out of range");
        return NULL;
    }
    __atomic_store_n((uint32_t *)(ent(self, slot) + E_LENGTH), (uint32_t)length, __ATOMIC_SEQ_CST);
    __atomic_store_n((uint32_t *)(ent(self, slot) + E_CRC), (uint32_t)crc, __ATOMIC_SEQ_CST);
    if (!give_up(self, slot, mk(gen, ST_LOANED, pid), ST_COMMITTED, pid)) Py_RETURN_FALSE;
    __atomic_fetch_add(w64(self, OFF_COMMITS), 1, __ATOMIC_SEQ_CST);
    Py_RETURN_TRUE;
}

/* uncommit(slot, generation, pid, start) -> bool: COMMITTED -> LOANED (the send failed) */
static PyObject *core_uncommit(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "uncommit(slot, generation, pid, start)");
        return NULL;
    }
    uint32_t slot, pid;
    uint64_t gen;
    if (parse_slot_gen_pid(self, args, &slot, &gen, &pid) < 0) return NULL;
    unsigned long long start = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (!cas64(ctl(self, slot), mk(gen, ST_COMMITTED, pid), mk(gen, ST_LOANED, pid))) Py_RETURN_FALSE;
    __atomic_store_n((uint64_t *)(ent(self, slot) + E_START), (uint64_t)start, __ATOMIC_SEQ_CST);
    __atomic_fetch_sub(w64(self, OFF_COMMITS), 1, __ATOMIC_SEQ_CST);
    Py_RETURN_TRUE;
}

/* free(slot, generation, pid, state) -> bool: LOANED (cancel) or HELD (release) -> FREE, generation + 1 */
static PyObject *core_free(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "free(slot, generation, pid, state)");
        return NULL;
    }
    uint32_t slot, pid;
    uint64_t gen;
    if (parse_slot_gen_pid(self, args, &slot, &gen, &pid) < 0) return NULL;
    long state = PyLong_AsLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (state != ST_LOANED && state != ST_HELD) {
        PyErr_SetString(PyExc_ValueError, "only a loaned or held slot is freed by its owner");
        return NULL;
    }
    if (!give_up(self, slot, mk(gen, (uint32_t)state, pid), ST_FREE, 0)) Py_RETURN_FALSE;
    __atomic_fetch_add(w64(self, OFF_RELEASES), 1, __ATOMIC_SEQ_CST);
    freed(self);
    Py_RETURN_TRUE;
}

static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* accept(descriptor, crc, pid, start) -> (code, slot, generation, length, ndim, flags, dlen):
 * code 0 = the slot is now HELD by pid; otherwise nothing changed and code says why. */
static PyObject *core_accept(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "accept(descriptor, crc, pid, start)");
        return NULL;
    }
    Py_buffer d;
    if (PyObject_GetBuffer(args[0], &d, PyBUF_SIMPLE) < 0) return NULL;
    unsigned long crc = PyLong_AsUnsignedLong(args[1]);
    unsigned long pid = PyLong_AsUnsignedLong(args[2]);
    unsigned long long start = PyLong_AsUnsignedLongLong(args[3]);
    int code = 0;
    uint32_t slot = 0, gen = 0, length = 0, ndim = 0, flags = 0, dlen = 0;
    if (PyErr_Occurred() || check_open(self) < 0) {
        PyBuffer_Release(&d);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)d.buf;
    if (d.len < DESC_HEAD) {
        code = R_SHORT;
        goto out;
    }
    slot = rd32(p + 8);
    gen = rd32(p + 12);
    length = rd32(p + 16);
    ndim = p[20];
    flags = p[21];
    dlen = (uint32_t)p[22] | (uint32_t)p[23] << 8;
    if (rd32(p) != DESC_MAGIC) code = R_MAGIC;
    else if (rd32(p + 4) != self->nonce) code = R_NONCE;
    else if (slot >= self->slots) code = R_SLOT;
    else if (length > self->slot_size) code = R_LENGTH;
    else if (ndim > MAX_NDIM || d.len != (Py_ssize_t)(DESC_HEAD + 8 * ndim + dlen)) code = R_SIZE;
    if (code) goto out;
    {
        uint64_t w = __atomic_load_n(ctl(self, slot), __ATOMIC_SEQ_CST);
        if ((uint32_t)(w >> 32) != gen) {
            code = R_GENERATION;
            gen = (uint32_t)(w >> 32); /* reported: the slot's current generation */
            goto out;
        }
        if (state_of(w) != ST_COMMITTED) {
            code = R_STATE;
            flags = state_of(w); /* reported: the state found */
            goto out;
        }
        if (__atomic_load_n((uint32_t *)(ent(self, slot) + E_LENGTH), __ATOMIC_SEQ_CST) != length ||
            __atomic_load_n((uint32_t *)(ent(self, slot) + E_CRC), __ATOMIC_SEQ_CST) != (uint32_t)crc) {
            code = R_MISMATCH;
            goto out;
        }
        if (!cas64(ctl(self, slot), w, mk(gen, ST_HELD, (uint32_t)pid))) {
            code = R_RACE;
            goto out;
        }
        __atomic_store_n((uint64_t *)(ent(self, slot) + E_START), (uint64_t)start, __ATOMIC_SEQ_CST);
        __atomic_fetch_add(w64(self, OFF_ACCEPTS), 1, __ATOMIC_SEQ_CST);
    }
out:
    PyBuffer_Release(&d);
    return Py_BuildValue("(iIIIIII)", code, slot, gen, length, ndim, flags, dlen);
}

/* unaccept(slot, generation, pid) -> bool: HELD -> COMMITTED (a check after the CAS failed) */
static PyObject *core_unaccept(CoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "unaccept(slot, generation, pid)");
        return NULL;
    }
    uint32_t slot, pid;
    uint64_t gen;
    if (parse_slot_gen_pid(self, args, &slot, &gen, &pid) < 0) return NULL;
    if (!give_up(self, slot, mk(gen, ST_HELD, pid), ST_COMMITTED, pid)) Py_RETURN_FALSE;
    __atomic_fetch_sub(w64(self, OFF_ACCEPTS), 1, __ATOMIC_SEQ_CST);
    Py_RETURN_TRUE;
}

static PyMethodDef core_methods[] = {
    {"try_loan", (PyCFunction)(void (*)(void))core_try_loan, METH_FASTCALL, "try_loan(pid, start) -> (slot, gen) | None"},
    {"commit", (PyCFunction)(void (*)(void))core_commit, METH_FASTCALL, "commit(slot, gen, pid, length, crc) -> bool"},
    {"uncommit", (PyCFunction)(void (*)(void))core_uncommit, METH_FASTCALL, "uncommit(slot, gen, pid, start) -> bool"},
    {"free", (PyCFunction)(void (*)(void))core_free, METH_FASTCALL, "free(slot, gen, pid, state) -> bool"},
    {"accept", (PyCFunction)(void (*)(void))core_accept, METH_FASTCALL,
     "accept(descriptor, crc, pid, start) -> (code, slot, gen, length, ndim, flags, dlen)"},
    {"unaccept", (PyCFunction)(void (*)(void))core_unaccept, METH_FASTCALL, "unaccept(slot, gen, pid) -> bool"},
    {"close", (PyCFunction)core_close, METH_NOARGS, "Release the region export."},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._pool.PoolCore",
    .tp_basicsize = sizeof(CoreObject),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The slot-ownership steps of one payload pool, on the region's words.",
    .tp_methods = core_methods,
    .tp_init = (initproc)core_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef pool_module = {
    PyModuleDef_HEAD_INIT, "ampipc._pool", "The payload pool's ownership fast path.", -1, NULL,
};

PyMODINIT_FUNC PyInit__pool(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&pool_module);
    if (m == NULL) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "PoolCore", (PyObject *)&CoreType) < 0) return NULL;
    static const struct { const char *name; int value; } codes[] = {
        {"OK", 0}, {"SHORT", R_SHORT}, {"MAGIC", R_MAGIC}, {"NONCE", R_NONCE}, {"SLOT", R_SLOT},
        {"LENGTH", R_LENGTH}, {"SIZE", R_SIZE}, {"GENERATION", R_GENERATION}, {"STATE", R_STATE},
        {"MISMATCH", R_MISMATCH}, {"RACE", R_RACE},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) PyModule_AddIntConstant(m, codes[i].name, codes[i].value);
    return m;
}
