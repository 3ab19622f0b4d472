/*
 * Mapping: one shared mapping, its atomics and futex words (part of the C core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * A Mapping owns one MAP_SHARED mapping of a shared-memory segment. It exports the bytes through
 * the buffer protocol and offers atomic operations (acquire/release or seq_cst, via the GCC
 * __atomic builtins, so ordering is right on aarch64 as on x86) and futex wait/wake on aligned
 * words of it. Every offset is checked against the mapping's size and alignment. close() never
 * fails: the unmap is deferred until no buffer export and no native call in flight (one that
 * released the GIL to wait) still uses the memory. Each mapping is registered with the SIGBUS
 * guard (guard.c), and every call checks whether the segment was shrunk under it.
 */

struct memmodel; /* dcache.c: the chip memory model of a chip region's core, if attached */

typedef struct {
    PyObject_HEAD
    unsigned char *base;
    Py_ssize_t size;
    int closed;
    int guard_slot;     /* index + 1 in guard_table, 0 if none (a new object is zeroed) */
    Py_ssize_t exports; /* buffer-protocol views alive */
    Py_ssize_t busy;    /* native calls in flight that released the GIL */
    /* Chip regions (ampipc.hw.memory): the u32 that is non-zero while the power domain of the
     * region's memory is in a low-power mode, + 1 (0: a plain region, nothing to check), and the
     * (domain, memory) names the refusal gives. */
    Py_ssize_t power_off_plus1;
    PyObject *power_names;
    struct memmodel *model; /* NULL: plain memory, the fast path */
    PyObject *weakreflist;
} MappingObject;

static void model_free(MappingObject *m);
static PyObject *mapping_model_attach(MappingObject *self, PyObject *args);
static PyObject *mapping_model_detach(MappingObject *self, PyObject *unused);
static PyObject *mapping_model_read(MappingObject *self, PyObject *args);
static PyObject *mapping_model_write(MappingObject *self, PyObject *args);
static PyObject *mapping_model_observe(MappingObject *self, PyObject *args);
static PyObject *mapping_data_word_u32(MappingObject *self, PyObject *args);
static PyObject *mapping_model_maintain(MappingObject *self, PyObject *args);
static PyObject *mapping_model_set_mpu(MappingObject *self, PyObject *ranges);
static PyObject *mapping_model_lines(MappingObject *self, PyObject *unused);
static PyObject *mapping_model_counters(MappingObject *self, PyObject *unused);
static PyObject *mapping_get_model_core(MappingObject *self, void *c);

static void mapping_unmap(MappingObject *m) {
    model_free(m);
    munmap(m->base, (size_t)m->size);
    guard_unregister(m->guard_slot);
    m->guard_slot = 0;
    m->base = NULL;
}

static void mapping_maybe_unmap(MappingObject *m) {
    if (m->closed && m->exports == 0 && m->busy == 0 && m->base != NULL) mapping_unmap(m);
}

static inline int mapping_faulted(MappingObject *m) {
    return m->guard_slot > 0 && __atomic_load_n(&guard_table[m->guard_slot - 1].faulted, __ATOMIC_ACQUIRE);
}

static void mapping_raise_faulted(MappingObject *m) {
    PyErr_Format(ErrCorrupt,
                 "the shared segment was shrunk below its %zd bytes by another process while mapped here: "
                 "the region is unusable (close it)",
                 m->size);
}

static int mapping_init(MappingObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "size", NULL};
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "in", kwlist, &fd, &size)) return -1;
    if (self->base != NULL || self->closed) { /* rings were checked against the first mapping */
        PyErr_SetString(PyExc_RuntimeError, "Mapping is already initialised");
        return -1;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return -1;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->base = (unsigned char *)p;
    self->size = size;
    self->closed = 0;
    self->guard_slot = guard_register(self->base, (size_t)size);
    guard_install();
    return 0;
}

static void mapping_dealloc(MappingObject *self) {
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->power_names);
    if (self->base != NULL) mapping_unmap(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int mapping_check_open(MappingObject *m) {
    if (m->closed || m->base == NULL) {
        PyErr_SetString(ErrClosed, "the region is closed");
        return -1;
    }
    if (mapping_faulted(m)) {
        mapping_raise_faulted(m);
        return -1;
    }
    return 0;
}

/* The SRAMs of a domain in a low-power mode cannot be reached: every buffer operation on a chip
 * region whose domain is down is refused (ring_open). One predictable branch for plain regions. */
static int mapping_check_powered(MappingObject *m, PyObject *what) {
    if (__builtin_expect(m->power_off_plus1 == 0, 1)) return 0;
    if (ld32_acq(m->base + m->power_off_plus1 - 1) == 0) return 0;
    PyObject *domain = PyTuple_GET_ITEM(m->power_names, 0), *memory = PyTuple_GET_ITEM(m->power_names, 1);
    PyObject *msg = PyUnicode_FromFormat(
        "%R lies in %U, in power domain %U, which is in a low-power mode: its SRAMs cannot be reached until a "
        "wake-up (HSEM, EXTI or SEV) brings the domain back to RUN",
        what, memory, domain);
    raise_with_details(ErrPoweredDown, msg, msg ? Py_BuildValue("{s:O,s:O}", "domain", domain, "memory", memory) : NULL);
    return -1;
}

/* The same check for one access at `off` of the region (the memory model's Python surface). */
static int mapping_check_powered_at(MappingObject *m, Py_ssize_t off) {
    if (__builtin_expect(m->power_off_plus1 == 0, 1)) return 0;
    if (ld32_acq(m->base + m->power_off_plus1 - 1) == 0) return 0;
    PyObject *what = PyUnicode_FromFormat("the access at region offset %zd", off);
    if (what == NULL) return -1;
    int rc = mapping_check_powered(m, what);
    Py_DECREF(what);
    return rc;
}

static PyObject *mapping_check_power(MappingObject *self, PyObject *what) {
    if (mapping_check_open(self) < 0 || mapping_check_powered(self, what) < 0) return NULL;
    Py_RETURN_NONE;
}

static unsigned char *mapping_word(MappingObject *m, Py_ssize_t off, Py_ssize_t width);

static PyObject *mapping_set_power_word(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    PyObject *domain, *memory;
    if (!PyArg_ParseTuple(args, "nUU", &off, &domain, &memory)) return NULL;
    if (mapping_word(self, off, 4) == NULL) return NULL;
    Py_XSETREF(self->power_names, PyTuple_Pack(2, domain, memory));
    if (self->power_names == NULL) return NULL;
    self->power_off_plus1 = off + 1;
    Py_RETURN_NONE;
}

static PyObject *mapping_close(MappingObject *self, PyObject *unused) {
    self->closed = 1;
    mapping_maybe_unmap(self);
    Py_RETURN_NONE;
}

static int mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags) {
    if (mapping_check_open(self) < 0) {
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->size, 0, flags) < 0) return -1;
    self->exports++;
    return 0;
}

static void mapping_releasebuffer(MappingObject *self, Py_buffer *view) {
    self->exports--;
    mapping_maybe_unmap(self);
}

static PyBufferProcs mapping_as_buffer = {
    (getbufferproc)mapping_getbuffer,
    (releasebufferproc)mapping_releasebuffer,
};

/* Returns a pointer to `width` bytes at `off`, or NULL with an exception set. */
static unsigned char *mapping_word(MappingObject *m, Py_ssize_t off, Py_ssize_t width) {
    if (mapping_check_open(m) < 0) return NULL;
    if (off < 0 || off > m->size - width) {
        PyErr_Format(PyExc_IndexError, "offset %zd is outside the mapping of %zd bytes", off, m->size);
        return NULL;
    }
    if (off % width != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not aligned to %zd bytes", off, width);
        return NULL;
    }
    return m->base + off;
}

#define MAPPING_U32_OP(NAME, EXPR)                                                        \
    static PyObject *mapping_##NAME(MappingObject *self, PyObject *args) {                \
        Py_ssize_t off;                                                                   \
        unsigned long v;                                                                  \
        if (!PyArg_ParseTuple(args, "nk", &off, &v)) return NULL;                         \
        uint32_t *p = (uint32_t *)mapping_word(self, off, 4);                             \
        if (p == NULL) return NULL;                                                       \
        if (v > 0xFFFFFFFFul) {                                                           \
            PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");        \
            return NULL;                                                                  \
        }                                                                                 \
        uint32_t val = (uint32_t)v;                                                       \
        return PyLong_FromUnsignedLong(EXPR);                                             \
    }

MAPPING_U32_OP(fetch_add_u32, __atomic_fetch_add(p, val, __ATOMIC_SEQ_CST))
MAPPING_U32_OP(fetch_sub_u32, __atomic_fetch_sub(p, val, __ATOMIC_SEQ_CST))
MAPPING_U32_OP(fetch_or_u32, __atomic_fetch_or(p, val, __ATOMIC_SEQ_CST))
MAPPING_U32_OP(fetch_and_u32, __atomic_fetch_and(p, val, __ATOMIC_SEQ_CST))
MAPPING_U32_OP(fetch_xor_u32, __atomic_fetch_xor(p, val, __ATOMIC_SEQ_CST))
MAPPING_U32_OP(exchange_u32, __atomic_exchange_n(p, val, __ATOMIC_SEQ_CST))

static PyObject *mapping_load_u32(MappingObject *self, PyObject *arg) {
    Py_ssize_t off = PyLong_AsSsize_t(arg);
    if (off == -1 && PyErr_Occurred()) return NULL;
    uint32_t *p = (uint32_t *)mapping_word(self, off, 4);
    if (p == NULL) return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(p, __ATOMIC_SEQ_CST));
}

static PyObject *mapping_store_u32(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    unsigned long v;
    if (!PyArg_ParseTuple(args, "nk", &off, &v)) return NULL;
    uint32_t *p = (uint32_t *)mapping_word(self, off, 4);
    if (p == NULL) return NULL;
    if (v > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    __atomic_store_n(p, (uint32_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *mapping_cas_u32(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    unsigned long expected, desired;
    if (!PyArg_ParseTuple(args, "nkk", &off, &expected, &desired)) return NULL;
    uint32_t *p = (uint32_t *)mapping_word(self, off, 4);
    if (p == NULL) return NULL;
    if (expected > 0xFFFFFFFFul || desired > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    uint32_t exp = (uint32_t)expected;
    __atomic_compare_exchange_n(p, &exp, (uint32_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(exp); /* the value found: == expected iff it succeeded */
}

static PyObject *mapping_load_u64(MappingObject *self, PyObject *arg) {
    Py_ssize_t off = PyLong_AsSsize_t(arg);
    if (off == -1 && PyErr_Occurred()) return NULL;
    uint64_t *p = (uint64_t *)mapping_word(self, off, 8);
    if (p == NULL) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(p, __ATOMIC_SEQ_CST));
}

static PyObject *mapping_store_u64(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    unsigned long long v;
    if (!PyArg_ParseTuple(args, "nK", &off, &v)) return NULL;
    uint64_t *p = (uint64_t *)mapping_word(self, off, 8);
    if (p == NULL) return NULL;
    __atomic_store_n(p, (uint64_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *mapping_cas_u64(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    unsigned long long expected, desired;
    if (!PyArg_ParseTuple(args, "nKK", &off, &expected, &desired)) return NULL;
    uint64_t *p = (uint64_t *)mapping_word(self, off, 8);
    if (p == NULL) return NULL;
    uint64_t exp = (uint64_t)expected;
    __atomic_compare_exchange_n(p, &exp, (uint64_t)desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLongLong(exp);
}

static PyObject *mapping_fetch_add_u64(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    unsigned long long v;
    if (!PyArg_ParseTuple(args, "nK", &off, &v)) return NULL;
    uint64_t *p = (uint64_t *)mapping_word(self, off, 8);
    if (p == NULL) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add(p, (uint64_t)v, __ATOMIC_SEQ_CST));
}

/* Sleep on the futex word at `addr` while it holds `expected`, for at most `slice_ns`, with the
 * GIL released. The caller holds the GIL and has marked the mapping busy. Returns 1 if woken
 * (or the word differed), 0 if the slice ran out or a signal arrived. */
static int futex_sleep(uint32_t *addr, uint32_t expected, int64_t slice_ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(slice_ns / 1000000000LL);
    ts.tv_nsec = (long)(slice_ns % 1000000000LL);
    long r;
    Py_BEGIN_ALLOW_THREADS
    r = sys_futex(addr, FUTEX_WAIT, expected, &ts);
    Py_END_ALLOW_THREADS
    if (r == 0) return 1;
    if (errno == EAGAIN) return 1;
    return 0; /* ETIMEDOUT, EINTR */
}

static PyObject *mapping_futex_wait(MappingObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"offset", "expected", "timeout", NULL};
    Py_ssize_t off;
    unsigned long expected;
    PyObject *timeout_obj = Py_None;
    int64_t timeout_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nk|O", kwlist, &off, &expected, &timeout_obj)) return NULL;
    if (parse_timeout(timeout_obj, &timeout_ns) < 0) return NULL;
    uint32_t *p = (uint32_t *)mapping_word(self, off, 4);
    if (p == NULL) return NULL;
    if (expected > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    int64_t deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    int result = 0;
    self->busy++;
    for (;;) {
        if (__atomic_load_n(p, __ATOMIC_SEQ_CST) != (uint32_t)expected) {
            result = 1;
            break;
        }
        int64_t slice = WAIT_SLICE_NS;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) break;
            if (left < slice) slice = left;
        }
        if (futex_sleep(p, (uint32_t)expected, slice)) {
            result = 1;
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            self->busy--;
            mapping_maybe_unmap(self);
            return NULL;
        }
        if (self->closed) {
            self->busy--;
            mapping_maybe_unmap(self);
            PyErr_SetString(ErrClosed, "the region was closed during the wait");
            return NULL;
        }
    }
    self->busy--;
    mapping_maybe_unmap(self);
    return PyBool_FromLong(result);
}

static PyObject *mapping_futex_wake(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    int count = INT_MAX;
    if (!PyArg_ParseTuple(args, "n|i", &off, &count)) return NULL;
    uint32_t *p = (uint32_t *)mapping_word(self, off, 4);
    if (p == NULL) return NULL;
    long r = sys_futex(p, FUTEX_WAKE, (uint32_t)count, NULL);
    if (r < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(r);
}

static PyObject *mapping_get_size(MappingObject *self, void *c) { return PyLong_FromSsize_t(self->size); }
static PyObject *mapping_get_closed(MappingObject *self, void *c) { return PyBool_FromLong(self->closed); }
static PyObject *mapping_get_faulted(MappingObject *self, void *c) { return PyBool_FromLong(mapping_faulted(self)); }

static PyMethodDef mapping_methods[] = {
    {"close", (PyCFunction)mapping_close, METH_NOARGS, "Close; the unmap waits for views and waits in flight."},
    {"model_attach", (PyCFunction)mapping_model_attach, METH_VARARGS,
     "model_attach(record, core, cached): access the region's data as core 1 (CM7) or 2 (CM4) of its chip model."},
    {"model_detach", (PyCFunction)mapping_model_detach, METH_NOARGS, "Back to plain memory (the CM7's lines are dropped)."},
    {"model_read", (PyCFunction)mapping_model_read, METH_VARARGS, "model_read(offset, n): read as this core."},
    {"model_write", (PyCFunction)mapping_model_write, METH_VARARGS, "model_write(offset, data): write as this core."},
    {"data_word_u32", (PyCFunction)mapping_data_word_u32, METH_VARARGS,
     "data_word_u32(offset, op, a=0, b=0): a strategy's shared word (0 load, 1 or, 2 xor, 3 and, 4 cas a->b), "
     "through the memory model when one is attached; returns the value before."},
    {"model_observe", (PyCFunction)mapping_model_observe, METH_VARARGS,
     "model_observe(offset, n, core=3): a read of memory by another bus master, checked against the dirty map."},
    {"model_maintain", (PyCFunction)mapping_model_maintain, METH_VARARGS,
     "model_maintain(op, offset=0, n=-1): 1 clean, 2 invalidate, 3 both, by range (n < 0: the whole cache)."},
    {"model_set_mpu", (PyCFunction)mapping_model_set_mpu, METH_O,
     "model_set_mpu([(lo, hi, policy), ...]): the MPU's ranges in region offsets, lowest region number first."},
    {"model_lines", (PyCFunction)mapping_model_lines, METH_NOARGS, "The CM7's lines of this region: (offset, dirty, data, fill)."},
    {"model_counters", (PyCFunction)mapping_model_counters, METH_NOARGS, "The CM7 cache's hit/miss/write-back counters."},
    {"check_power", (PyCFunction)mapping_check_power, METH_O,
     "check_power(what): raise DomainPoweredDown (naming `what`) while the region's power domain is down."},
    {"set_power_word", (PyCFunction)mapping_set_power_word, METH_VARARGS,
     "set_power_word(offset, domain, memory): buffer operations are refused while the u32 at offset is non-zero."},
    {"load_u32", (PyCFunction)mapping_load_u32, METH_O, "Atomic load (seq_cst) of the u32 at offset."},
    {"store_u32", (PyCFunction)mapping_store_u32, METH_VARARGS, "Atomic store (seq_cst)."},
    {"cas_u32", (PyCFunction)mapping_cas_u32, METH_VARARGS, "Compare-and-swap; returns the value found."},
    {"fetch_add_u32", (PyCFunction)mapping_fetch_add_u32, METH_VARARGS, "Atomic add; returns the old value."},
    {"fetch_sub_u32", (PyCFunction)mapping_fetch_sub_u32, METH_VARARGS, "Atomic subtract; returns the old value."},
    {"fetch_or_u32", (PyCFunction)mapping_fetch_or_u32, METH_VARARGS, "Atomic or; returns the old value."},
    {"fetch_and_u32", (PyCFunction)mapping_fetch_and_u32, METH_VARARGS, "Atomic and; returns the old value."},
    {"fetch_xor_u32", (PyCFunction)mapping_fetch_xor_u32, METH_VARARGS, "Atomic xor; returns the old value."},
    {"exchange_u32", (PyCFunction)mapping_exchange_u32, METH_VARARGS, "Atomic exchange; returns the old value."},
    {"load_u64", (PyCFunction)mapping_load_u64, METH_O, "Atomic load of the u64 at offset."},
    {"store_u64", (PyCFunction)mapping_store_u64, METH_VARARGS, "Atomic store of a u64."},
    {"cas_u64", (PyCFunction)mapping_cas_u64, METH_VARARGS, "Compare-and-swap of a u64; returns the value found."},
    {"fetch_add_u64", (PyCFunction)mapping_fetch_add_u64, METH_VARARGS, "Atomic add of a u64; returns the old value."},
    {"futex_wait", (PyCFunction)(void (*)(void))mapping_futex_wait, METH_VARARGS | METH_KEYWORDS,
     "Sleep while the u32 at offset equals expected; True if woken or changed, False on timeout."},
    {"futex_wake", (PyCFunction)mapping_futex_wake, METH_VARARGS, "Wake up to count sleepers; returns how many."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"size", (getter)mapping_get_size, NULL, "Bytes mapped.", NULL},
    {"closed", (getter)mapping_get_closed, NULL, "True after close().", NULL},
    {"model_core", (getter)mapping_get_model_core, NULL, "The core the model accesses as (1 CM7, 2 CM4), or None.", NULL},
    {"faulted", (getter)mapping_get_faulted, NULL, "True once an access faulted: the segment was shrunk.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.Mapping",
    .tp_basicsize = sizeof(MappingObject),
    .tp_dealloc = (destructor)mapping_dealloc,
    .tp_as_buffer = &mapping_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Mapping(fd, size): a shared mapping with atomics and futex wait/wake on its words.",
    .tp_weaklistoffset = offsetof(MappingObject, weakreflist),
    .tp_methods = mapping_methods,
    .tp_getset = mapping_getset,
    .tp_init = (initproc)mapping_init,
    .tp_new = PyType_GenericNew,
};
