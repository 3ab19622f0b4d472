/*
 * ampipc._native: the small C core.
 *
 * Theory of operation
 * -------------------
 * Mapping  owns one MAP_SHARED mapping of a shared-memory segment. It exports the bytes through
 *          the buffer protocol and offers atomic operations (acquire/release or seq_cst, via the
 *          GCC __atomic builtins, so ordering is right on aarch64 as on x86) and futex wait/wake on
 *          aligned words of it. Every offset is checked against the mapping's size and alignment.
 *          close() never fails: the unmap is deferred until no buffer export and no native call in
 *          flight (one that released the GIL to wait) still uses the memory.
 *
 * MessageRing / StreamRing  the FreeRTOS stream-buffer ring (one byte always free, xLength =
 *          capacity + 1) at an offset of a Mapping. The whole send and receive fast path is one C
 *          call. Ownership of the words of a ring header (layout in ampipc/_layout.py):
 *            - the writer alone stores head and the writer statistics;
 *            - the reader alone stores tail and the reader statistics;
 *            - a waiting flag (tx_waiting, rx_waiting) is set by the side about to sleep and
 *              cleared by that side or by the peer that wakes it (FreeRTOS clears
 *              xTaskWaitingToReceive when it notifies);
 *            - constants (magic, flags, length, data offset, prefix size) are written once at create;
 *            - trigger_level may be set by either side (as xStreamBufferSetTriggerLevel).
 *          The writer copies the payload, then publishes head with one release store; the reader
 *          copies out, then publishes tail with one release store (FreeRTOS main-branch order).
 *          A blocked side first spins a bounded, adaptive time; then it stores its waiting flag,
 *          issues a seq_cst fence, re-checks, then sleeps
 *          on the futex of the index the peer publishes (head for a reader, tail for a writer).
 *          The peer publishes, fences, and wakes only if the flag is set: no system call when nobody
 *          waits. A sleep never exceeds WAIT_SLICE_NS, after which signals, the region's state and
 *          the peer's liveness are checked: a missed wake-up costs latency, never a hang.
 *          Every index and length read from shared memory is checked before use; a bad one raises
 *          CorruptRegion naming the object and field.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <sched.h> /* sched_getaffinity, CPU_COUNT: Python.h defines _GNU_SOURCE */
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- ring header layout: must match ampipc/_layout.py -------------------------------------- */
#define RING_MAGIC 0x42534D41u /* "AMSB" little-endian */
#define OFF_MAGIC 0
#define OFF_FLAGS 4
#define OFF_LENGTH 8
#define OFF_DATA 12
#define OFF_TRIGGER 16
#define OFF_PREFIX 20
#define OFF_TOTAL 24
/* writer cache line */
#define OFF_HEAD 64
#define OFF_TX_WAITING 192 /* line 3: written only around a sleep */
#define OFF_WRITER_PID 72
#define OFF_WRITER_START 80
#define OFF_MSGS_IN 88
#define OFF_BYTES_IN 96
#define OFF_PEAK 104
#define OFF_TX_BLOCKS 112
#define OFF_WAKES_BY_WRITER 120
/* reader cache line */
#define OFF_TAIL 128
#define OFF_RX_WAITING 196
/* line 3 also holds the close flags: each stored only by its own side's close() and cleared by
 * that role's next operation (a new writer or reader takes the role over) */
#define OFF_WRITER_CLOSED 200
#define OFF_READER_CLOSED 204
#define OFF_READER_PID 136
#define OFF_READER_START 144
#define OFF_MSGS_OUT 152
#define OFF_BYTES_OUT 160
#define OFF_RX_BLOCKS 168
#define OFF_WAKES_BY_READER 176
#define RING_HEADER_SIZE 256

/* flags, as FreeRTOS's ucFlags where they exist: message, static, batching; then ampipc's strict mode */
#define FLAG_MESSAGE 1u
#define FLAG_STATIC 2u
#define FLAG_BATCHING 4u
#define FLAG_STRICT 8u /* refuse zero-length messages, which a FreeRTOS reader cannot consume */
#define PREFIX_SIZE 4u /* the default length-prefix width: sizeof(size_t) on a 32-bit MCU */

#define WAIT_SLICE_NS 100000000LL /* 100 ms: the longest a wait goes without re-checking */
#define DEFAULT_SPIN_NS 50000

static PyObject *ErrCorrupt, *ErrTooLarge, *ErrTooSmall, *ErrClosed, *ErrRoleBusy, *ErrInIsr, *ErrTimeout,
    *ErrPeerClosed;
/* Set while this thread runs an interrupt handler: blocking calls are refused there. */
static __thread int in_isr_context __attribute__((tls_model("initial-exec"))) = 0;
static uint32_t process_pid = 0;
static uint64_t process_start = 0;
static long default_spin_ns = DEFAULT_SPIN_NS;

/* ---- small helpers ------------------------------------------------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint32_t ld32_acq(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline uint32_t ld32_rlx(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED); }
static inline void st32_rel(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void st32_rlx(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED); }
static inline uint64_t ld64_rlx(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline void st64_rlx(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
/* Counters have a single writer: a relaxed load and store is enough, and never tears. */
static inline void bump64(void *p, uint64_t d) { st64_rlx(p, ld64_rlx(p) + d); }

static long sys_futex(void *addr, int op, uint32_t val, const struct timespec *ts) {
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* Parse a timeout argument: None -> -1 (forever); a number >= 0 -> nanoseconds. */
static int parse_timeout(PyObject *obj, int64_t *out_ns) {
    if (obj == NULL || obj == Py_None) {
        *out_ns = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(t) || t < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be None or a number >= 0");
        return -1;
    }
    if (t > 1e9) { /* about 31 years: treat as forever */
        *out_ns = -1;
        return 0;
    }
    *out_ns = (int64_t)(t * 1e9);
    return 0;
}

/* ---- the SIGBUS guard ---------------------------------------------------------------------- */
/* Any process that can open a segment can ftruncate it smaller; the next access of every process
 * that maps it beyond the new end faults with SIGBUS. The handler below looks the faulting address
 * up among this process's mappings; if it is one of them, it replaces the pages from the fault to
 * the end of that mapping with private zero pages (the access then completes harmlessly) and marks
 * the mapping faulted. Every native call checks that mark on entry and on exit and raises
 * CorruptRegion, so the interpreter survives and the caller learns the segment was shrunk. A fault
 * outside our mappings goes to the handler that was installed before (or the default action).
 * The table is read by the handler without locks: slots are claimed with a CAS, their fields
 * published with release stores, and a slot is freed only after its munmap. */
#define GUARD_SLOTS 1024
typedef struct {
    uintptr_t base; /* 0: free */
    size_t size;
    int faulted;
} guard_slot;
static guard_slot guard_table[GUARD_SLOTS];
static struct sigaction previous_sigbus;
static long page_size = 4096;

static int guard_register(unsigned char *base, size_t size) {
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t expected = 0;
        if (__atomic_load_n(&guard_table[i].base, __ATOMIC_RELAXED) != 0) continue;
        /* claim with a sentinel, fill in, then publish the real base */
        if (!__atomic_compare_exchange_n(&guard_table[i].base, &expected, (uintptr_t)1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        __atomic_store_n(&guard_table[i].size, size, __ATOMIC_RELAXED);
        __atomic_store_n(&guard_table[i].faulted, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&guard_table[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
        return i + 1;
    }
    return 0; /* more than GUARD_SLOTS live mappings: this one is unguarded */
}

/* `slot` is the index + 1 that guard_register returned; 0 means none. */
static void guard_unregister(int slot) {
    if (slot > 0) __atomic_store_n(&guard_table[slot - 1].base, (uintptr_t)0, __ATOMIC_RELEASE);
}

static void sigbus_handler(int sig, siginfo_t *info, void *context) {
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t base = __atomic_load_n(&guard_table[i].base, __ATOMIC_ACQUIRE);
        if (base <= 1) continue;
        size_t size = __atomic_load_n(&guard_table[i].size, __ATOMIC_RELAXED);
        if (addr < base || addr >= base + size) continue;
        uintptr_t page = addr & ~((uintptr_t)page_size - 1);
        /* the raw system call: async-signal-safe, unlike some libc wrappers */
        long p = syscall(SYS_mmap, (void *)page, (size_t)(base + size - page), PROT_READ | PROT_WRITE,
                         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != -1) {
            __atomic_store_n(&guard_table[i].faulted, 1, __ATOMIC_RELEASE);
            return; /* the access is retried on the zero pages */
        }
        break;
    }
    /* Not ours: let the handler that was there before see the retried access (faulthandler prints
     * its traceback); if the same fault comes back to us, the default action ends the process. */
    static uintptr_t last_foreign_fault = 0;
    if (addr != last_foreign_fault && previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
        last_foreign_fault = addr;
        sigaction(SIGBUS, &previous_sigbus, NULL);
        return;
    }
    signal(SIGBUS, SIG_DFL);
}

/* Installed at import and checked again whenever a mapping is made: a handler installed after ours
 * (faulthandler, for one, which pytest enables) would otherwise see our faults first and end the
 * process. Ours goes back in front and passes on every fault that is not ours. */
static void guard_install(void) {
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
        current.sa_sigaction == sigbus_handler)
        return;
    page_size = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sigbus_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous_sigbus);
}

/* ---- Mapping ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned char *base;
    Py_ssize_t size;
    int closed;
    int guard_slot;     /* index + 1 in guard_table, 0 if none (a new object is zeroed) */
    Py_ssize_t exports; /* buffer-protocol views alive */
    Py_ssize_t busy;    /* native calls in flight that released the GIL */
    PyObject *weakreflist;
} MappingObject;

static void mapping_unmap(MappingObject *m) {
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

/* ---- rings --------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    MappingObject *mapping;
    Py_ssize_t offset; /* of the header in the mapping */
    uint32_t length;   /* xLength = capacity + 1, cached and re-checked against the header */
    uint32_t data_off; /* of the storage, relative to the header */
    int is_message;
    uint32_t flags;
    uint32_t prefix; /* message length-prefix width: 1, 2, 4 or 8 bytes (configMESSAGE_BUFFER_LENGTH_TYPE) */
    PyObject *name;
    PyObject *send_hook;    /* NULL: the default direct futex wake */
    PyObject *receive_hook; /* NULL: the default direct futex wake */
    PyObject *peer_check;   /* called with (role,) after a wait slice runs out */
    PyObject *guard;        /* bytearray(2): in-process writer / reader busy flags */
    long spin_ns;  /* the configured spin */
    int spin_score;     /* the spin policy's record of recent spins (see spin_decide) */
    unsigned spin_probe; /* waits since spinning was turned off */
    int in_hook; /* bit ROLE_WRITER: in the send hook; bit ROLE_READER: in the receive hook */
    int roles_used; /* bit per role this object has taken (what close() closes) */
    int closed;     /* this object was closed: its calls raise RegionClosed */
    uint32_t limit; /* bytes of the object's directory entry: the header must stay inside */
    PyObject *weakreflist;
} RingObject;

#define ROLE_WRITER 0
#define ROLE_READER 1

static inline unsigned char *ring_hdr(RingObject *r) { return r->mapping->base + r->offset; }

static PyObject *raise_corrupt(RingObject *r, const char *field, long long value, const char *why) {
    PyObject *msg = PyUnicode_FromFormat("shared buffer %R is corrupt: %s = %lld %s", r->name, field, value, why);
    if (msg == NULL) return NULL;
    PyObject *args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    if (args == NULL) return NULL;
    PyObject *kw = Py_BuildValue("{s:O,s:s,s:L}", "object", r->name, "field", field, "value", value);
    if (kw == NULL) {
        Py_DECREF(args);
        return NULL;
    }
    PyObject *exc = PyObject_Call(ErrCorrupt, args, kw);
    Py_DECREF(args);
    Py_DECREF(kw);
    if (exc == NULL) return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* Snapshot of the indexes, validated. */
typedef struct {
    uint32_t head, tail, length;
} ring_state;

static int ring_open(RingObject *r) {
    if (r->mapping == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "buffer object is not initialised");
        return -1;
    }
    if (r->closed) {
        PyErr_Format(ErrClosed, "buffer %R was closed", r->name);
        return -1;
    }
    return mapping_check_open(r->mapping);
}

static int ring_load(RingObject *r, ring_state *s, int role) {
    unsigned char *h = ring_hdr(r);
    uint32_t length = ld32_rlx(h + OFF_LENGTH);
    if (length != r->length) {
        raise_corrupt(r, "length", length, "changed since attach");
        return -1;
    }
    s->length = length;
    /* own index relaxed, the peer's with acquire: the peer's data is visible once its index is */
    if (role == ROLE_WRITER) {
        s->head = ld32_rlx(h + OFF_HEAD);
        s->tail = ld32_acq(h + OFF_TAIL);
    } else {
        s->tail = ld32_rlx(h + OFF_TAIL);
        s->head = ld32_acq(h + OFF_HEAD);
    }
    if (s->head >= length) {
        raise_corrupt(r, "head", s->head, "is not below the ring length");
        return -1;
    }
    if (s->tail >= length) {
        raise_corrupt(r, "tail", s->tail, "is not below the ring length");
        return -1;
    }
    return 0;
}

static inline uint32_t st_avail(const ring_state *s) {
    uint32_t c = s->length + s->head - s->tail;
    if (c >= s->length) c -= s->length;
    return c;
}

static inline uint32_t st_spaces(const ring_state *s) {
    uint32_t c = s->length + s->tail - s->head - 1;
    if (c >= s->length) c -= s->length;
    return c;
}

static void ring_copy_in(RingObject *r, uint32_t at, const unsigned char *src, uint32_t n) {
    unsigned char *data = ring_hdr(r) + r->data_off;
    uint32_t first = r->length - at;
    if (first > n) first = n;
    /* memmove: the source may be a view of this very ring's storage */
    memmove(data + at, src, first);
    if (n > first) memmove(data, src + first, n - first);
}

static void ring_copy_out(RingObject *r, uint32_t at, unsigned char *dst, uint32_t n) {
    unsigned char *data = ring_hdr(r) + r->data_off;
    uint32_t first = r->length - at;
    if (first > n) first = n;
    memmove(dst, data + at, first);
    if (n > first) memmove(dst + first, data, n - first);
}

static inline uint32_t ring_advance(RingObject *r, uint32_t at, uint32_t n) {
    uint32_t x = at + n;
    if (x >= r->length) x -= r->length;
    return x;
}

/* Wake the side sleeping on `word_off` if its waiting flag is set. The seq_cst fence pairs with
 * the one the sleeper issues between storing its flag and re-checking the index. */
static int ring_wake_if_waiting(RingObject *r, Py_ssize_t flag_off, Py_ssize_t word_off, Py_ssize_t stat_off) {
    unsigned char *h = ring_hdr(r);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* Load first: on the fast path nobody waits and the peer's cache line is not written. The
     * notifier clears the flag (as FreeRTOS clears xTaskWaitingToReceive), so one sleep costs
     * one wake system call however many sends follow before the sleeper runs. */
    if (ld32_rlx(h + flag_off) == 0) return 0;
    if (__atomic_exchange_n((uint32_t *)(h + flag_off), 0, __ATOMIC_SEQ_CST) == 0) return 0;
    sys_futex(h + word_off, FUTEX_WAKE, INT_MAX, NULL);
    /* atomic: the FromISR helpers count here too, from the other side's process */
    __atomic_fetch_add((uint64_t *)(h + stat_off), 1, __ATOMIC_RELAXED);
    return 1;
}

static void ring_record_identity(RingObject *r, Py_ssize_t pid_off, Py_ssize_t start_off) {
    unsigned char *h = ring_hdr(r);
    if (ld32_rlx(h + pid_off) != process_pid || ld64_rlx(h + start_off) != process_start) {
        st64_rlx(h + start_off, process_start);
        __atomic_store_n((uint32_t *)(h + pid_off), process_pid, __ATOMIC_RELEASE);
    }
}

static void ring_call_hook(RingObject *r, PyObject *hook, int role) {
    /* A hook that raises cannot undo a completed send or receive; its error is reported, not lost. */
    /* Recursion guard (a send hook sending on its own buffer), one per hook: the other role's
     * hook, run by another thread meanwhile, must still fire. */
    int bit = 1 << role;
    if (r->in_hook & bit) return;
    r->in_hook |= bit;
    Py_INCREF(hook); /* the hook may replace itself, dropping the buffer's reference */
    PyObject *res = PyObject_CallOneArg(hook, (PyObject *)r);
    r->in_hook &= ~bit;
    if (res == NULL && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        /* Ctrl-C must not be swallowed: re-arm SIGINT so it is raised right after this call */
        PyErr_Clear();
        PyErr_SetInterrupt();
    } else if (res == NULL)
        PyErr_WriteUnraisable(hook);
    else
        Py_DECREF(res);
    Py_DECREF(hook);
}

/* After `n` bytes (record included) were published: the sbSEND_COMPLETED point. */
static void ring_send_completed(RingObject *r, uint32_t new_head, uint32_t tail) {
    unsigned char *h = ring_hdr(r);
    ring_state s = {new_head, tail, r->length};
    uint32_t fill = st_avail(&s);
    if ((uint64_t)fill > ld64_rlx(h + OFF_PEAK)) st64_rlx(h + OFF_PEAK, fill);
    uint32_t trigger = ld32_rlx(h + OFF_TRIGGER);
    /* a batching buffer (FreeRTOS >= 11.1, main) notifies only once the fill exceeds the trigger */
    if ((r->flags & FLAG_BATCHING) ? fill <= trigger : fill < trigger) return;
    if (r->send_hook != NULL)
        ring_call_hook(r, r->send_hook, ROLE_WRITER);
    else
        ring_wake_if_waiting(r, OFF_RX_WAITING, OFF_HEAD, OFF_WAKES_BY_WRITER);
}

static void ring_receive_completed(RingObject *r) {
    if (r->receive_hook != NULL)
        ring_call_hook(r, r->receive_hook, ROLE_READER);
    else
        ring_wake_if_waiting(r, OFF_TX_WAITING, OFF_TAIL, OFF_WAKES_BY_READER);
}

/* ---- the operations, non-blocking. Each returns: 1 done, 0 not possible now, -1 error. ---- */

/* Message send: all or nothing. */
static int op_message_send(RingObject *r, const unsigned char *src, uint32_t n) {
    ring_state s;
    if (ring_load(r, &s, ROLE_WRITER) < 0) return -1;
    if (st_spaces(&s) < n + r->prefix) return 0;
    unsigned char prefix[8] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                               (unsigned char)(n >> 24), 0, 0, 0, 0}; /* little-endian, as on ARM and x86 */
    ring_copy_in(r, s.head, prefix, r->prefix);
    uint32_t at = ring_advance(r, s.head, r->prefix);
    ring_copy_in(r, at, src, n);
    uint32_t new_head = ring_advance(r, at, n);
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_WRITER_PID, OFF_WRITER_START);
    st32_rel(h + OFF_HEAD, new_head);
    bump64(h + OFF_MSGS_IN, 1);
    bump64(h + OFF_BYTES_IN, n);
    ring_send_completed(r, new_head, s.tail);
    return 1;
}

/* Stream send: writes what fits; *written gets the count. Returns 1 if anything was written. */
static int op_stream_send(RingObject *r, const unsigned char *src, uint32_t n, uint32_t *written) {
    ring_state s;
    *written = 0;
    if (ring_load(r, &s, ROLE_WRITER) < 0) return -1;
    uint32_t k = st_spaces(&s);
    if (k > n) k = n;
    if (k == 0) return 0;
    ring_copy_in(r, s.head, src, k);
    uint32_t new_head = ring_advance(r, s.head, k);
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_WRITER_PID, OFF_WRITER_START);
    st32_rel(h + OFF_HEAD, new_head);
    bump64(h + OFF_MSGS_IN, 1);
    bump64(h + OFF_BYTES_IN, k);
    *written = k;
    ring_send_completed(r, new_head, s.tail);
    return 1;
}

/* Peek the next message's length. Returns 1 with *len set, 0 if empty, -1 on error. */
static int ring_peek_length(RingObject *r, ring_state *s, uint32_t *len) {
    uint32_t avail = st_avail(s);
    if (avail == 0) return 0;
    if (avail < r->prefix) {
        raise_corrupt(r, "head", s->head, "leaves fewer bytes than a length prefix in the buffer");
        return -1;
    }
    unsigned char prefix[8];
    ring_copy_out(r, s->tail, prefix, r->prefix);
    uint64_t n = 0;
    for (uint32_t i = 0; i < r->prefix; i++) n |= (uint64_t)prefix[i] << (8 * i);
    if (n > avail - r->prefix) {
        raise_corrupt(r, "message length prefix", (long long)(n > LLONG_MAX ? LLONG_MAX : n),
                      "is longer than the bytes in the buffer");
        return -1;
    }
    *len = (uint32_t)n;
    return 1;
}

/* Message receive. If `dst` is NULL a bytes object is made and returned in *out; otherwise the
 * payload goes to dst (capacity dst_cap) and *out_len gets its length. */
static int op_message_receive(RingObject *r, unsigned char *dst, Py_ssize_t dst_cap, PyObject **out,
                              uint32_t *out_len) {
    ring_state s;
    if (ring_load(r, &s, ROLE_READER) < 0) return -1;
    uint32_t n;
    int k = ring_peek_length(r, &s, &n);
    if (k <= 0) return k;
    uint32_t at = ring_advance(r, s.tail, r->prefix);
    if (dst == NULL) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, n);
        if (b == NULL) return -1;
        ring_copy_out(r, at, (unsigned char *)PyBytes_AS_STRING(b), n);
        *out = b;
    } else {
        if ((Py_ssize_t)n > dst_cap) {
            PyObject *msg = PyUnicode_FromFormat(
                "the next message is %u bytes but the buffer holds only %zd; it stays in place", n, dst_cap);
            if (msg == NULL) return -1;
            PyObject *args = PyTuple_Pack(1, msg);
            Py_DECREF(msg);
            PyObject *kw = args ? Py_BuildValue("{s:I}", "needed", n) : NULL;
            PyObject *exc = kw ? PyObject_Call(ErrTooSmall, args, kw) : NULL;
            Py_XDECREF(args);
            Py_XDECREF(kw);
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            return -1;
        }
        ring_copy_out(r, at, dst, n);
    }
    *out_len = n;
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_READER_PID, OFF_READER_START);
    st32_rel(h + OFF_TAIL, ring_advance(r, at, n));
    bump64(h + OFF_MSGS_OUT, 1);
    bump64(h + OFF_BYTES_OUT, n);
    ring_receive_completed(r);
    return 1;
}

/* Stream receive of up to `max` bytes into dst, only if more than `gate` bytes are there (FreeRTOS:
 * a batching buffer's task-level receive reads only above its trigger level). */
static int op_stream_receive(RingObject *r, unsigned char *dst, uint32_t max, uint32_t *got, uint32_t gate) {
    ring_state s;
    *got = 0;
    if (ring_load(r, &s, ROLE_READER) < 0) return -1;
    uint32_t k = st_avail(&s);
    if (k <= gate) return 0;
    if (k > max) k = max;
    if (k == 0) return 0;
    ring_copy_out(r, s.tail, dst, k);
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_READER_PID, OFF_READER_START);
    st32_rel(h + OFF_TAIL, ring_advance(r, s.tail, k));
    bump64(h + OFF_MSGS_OUT, 1);
    bump64(h + OFF_BYTES_OUT, k);
    *got = k;
    ring_receive_completed(r);
    return 1;
}

/* ---- waiting ------------------------------------------------------------------------------- */

/* What a blocked side waits for: for a writer, `need` free spaces; for a reader, `need` bytes. */
static inline int ring_ready(RingObject *r, int role, uint32_t need) {
    unsigned char *h = ring_hdr(r);
    ring_state s;
    s.length = r->length;
    s.head = ld32_acq(h + OFF_HEAD);
    s.tail = ld32_acq(h + OFF_TAIL);
    if (s.head >= s.length || s.tail >= s.length) return 1; /* let the operation report it */
    return role == ROLE_WRITER ? st_spaces(&s) >= need : st_avail(&s) >= need;
}

/* ---- the spin policy -------------------------------------------------------------------------- */

#define SPIN_PROBE_EVERY 32 /* waits between probes while spinning is off */
#define SPIN_SCORE_MAX 8
#define CPU_RECHECK_EVERY 256 /* waits between affinity checks (taskset may change it) */

static int usable_cpus = 0; /* CPUs this process may run on; 0: not known yet */
static unsigned cpu_checks = 0;

static int cpus_for_this_process(void) {
    if (usable_cpus == 0 || (cpu_checks++ % CPU_RECHECK_EVERY) == 0) {
        cpu_set_t set;
        usable_cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 2;
    }
    return usable_cpus;
}

/* How long to spin before this wait: the configured spin while spins succeed, nothing while they
 * fail (score below zero), a probe of an eighth of it every SPIN_PROBE_EVERY waits meanwhile. */
static long spin_decide(RingObject *r) {
    if (r->spin_ns <= 0 || cpus_for_this_process() < 2) return 0;
    if (r->spin_score >= 0) return r->spin_ns;
    if (++r->spin_probe % SPIN_PROBE_EVERY == 0) return r->spin_ns / 8;
    return 0;
}

/* A success earns one point, a failure costs two: spinning stays on only where it wins at least
 * two waits in three. A success while off (a probe) turns it back on at once. */
static void spin_learn(RingObject *r, int ready) {
    if (ready)
        r->spin_score = r->spin_score < 0 ? 0 : (r->spin_score < SPIN_SCORE_MAX ? r->spin_score + 1 : SPIN_SCORE_MAX);
    else
        r->spin_score = r->spin_score - 2 < -1 ? -1 : r->spin_score - 2;
}

static inline Py_ssize_t peer_closed_off(int role) { return role == ROLE_WRITER ? OFF_READER_CLOSED : OFF_WRITER_CLOSED; }

/* The peer closed its side (orderly, like EOF on a pipe). A reader first drains what is left, so
 * this returns 1 while anything is there; then -1 with PeerClosed set. A writer whose reader closed
 * gets PeerClosed at once. 0: the peer has not closed. The flag is loaded with acquire: the writer
 * published its last head before storing it, so a reader that sees the flag also sees that data. */
static int ring_check_peer_closed(RingObject *r, int role, int probe) {
    unsigned char *h = ring_hdr(r);
    if (ld32_acq(h + peer_closed_off(role)) == 0) return 0;
    if (probe) return 1;
    if (role == ROLE_READER && ring_ready(r, ROLE_READER, 1)) return 2; /* drain first */
    /* A reader is told once per close (the end of that writer's stream): the next receive waits
     * for a new writer. A writer keeps being told until a new reader takes the role. */
    if (role == ROLE_READER) st32_rel(h + OFF_WRITER_CLOSED, 0);
    PyErr_Format(ErrPeerClosed, "the %s of buffer %R closed its side%s", role == ROLE_READER ? "writer" : "reader",
                 r->name, role == ROLE_READER ? " (everything it sent was received)" : "");
    return -1;
}

/* Wait until ring_ready(role, need) or the deadline. Returns 1 ready (or worth retrying), 0 at
 * the deadline, 2 when the peer is gone but data is left (to drain, below any trigger level), -1 on
 * error (signal, closed region, dead or closed peer, corrupt state).
 * Drain before you declare death: a reader whose writer died or closed still gets every byte the
 * writer published; PeerDied / PeerClosed come only when nothing is left. */
static int ring_wait(RingObject *r, int role, uint32_t need, int64_t deadline, int probe) {
    MappingObject *m = r->mapping;
    unsigned char *h = ring_hdr(r);
    Py_ssize_t flag_off = role == ROLE_WRITER ? OFF_TX_WAITING : OFF_RX_WAITING;
    Py_ssize_t word_off = role == ROLE_WRITER ? OFF_TAIL : OFF_HEAD;
    Py_ssize_t blocks_off = role == ROLE_WRITER ? OFF_TX_BLOCKS : OFF_RX_BLOCKS;
    int result = 0;

    m->busy++;
    /* Bounded spin first: the peer is often about to answer, and a futex round costs microseconds.
     * A spin must never cost more than it saves (spin_decide): none when this process may run on
     * one CPU only (the peer cannot answer while we spin), and none after spins keep failing (a
     * loaded machine), but for a short probe now and then that finds out when spinning pays again. */
    long spin = spin_decide(r);
    if (spin > 0) {
        int ready = 0;
        Py_BEGIN_ALLOW_THREADS
        int64_t start = now_ns();
        int64_t stop = start + spin;
        if (deadline >= 0 && deadline < stop) stop = deadline;
        for (unsigned i = 1;; i++) {
            if (ring_ready(r, role, need)) {
                ready = 1;
                break;
            }
            cpu_relax();
            if ((i & 63) == 0 && now_ns() >= stop) break;
        }
        Py_END_ALLOW_THREADS
        spin_learn(r, ready);
        if (ready) {
            result = 1;
            goto out;
        }
    }
    for (;;) {
        int64_t slice = WAIT_SLICE_NS;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                result = 0;
                goto out;
            }
            if (left < slice) slice = left;
        }
        uint32_t seen = ld32_acq(h + word_off);
        st32_rlx(h + flag_off, 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ring_ready(r, role, need)) {
            st32_rlx(h + flag_off, 0);
            result = 1;
            goto out;
        }
        int peer_closed = ring_check_peer_closed(r, role, probe);
        if (peer_closed != 0) {
            st32_rlx(h + flag_off, 0);
            result = peer_closed;
            goto out;
        }
        bump64(h + blocks_off, 1);
        int woken = futex_sleep((uint32_t *)(h + word_off), seen, slice);
        st32_rlx(h + flag_off, 0);
        if (PyErr_CheckSignals() < 0) {
            result = -1;
            goto out;
        }
        if (m->closed) {
            PyErr_SetString(ErrClosed, "the region was closed during the wait");
            result = -1;
            goto out;
        }
        if (woken) {
            if (ring_ready(r, role, need)) {
                result = 1;
                goto out;
            }
            continue; /* the index moved but not far enough (trigger level): wait again */
        }
        /* The slice ran out. The peer may have published just before it died: look at the ring
         * before asking whether the peer lives, and again after it was found dead. */
        if (ring_ready(r, role, need)) {
            result = 1;
            goto out;
        }
        if (r->peer_check != NULL) {
            PyObject *check = Py_NewRef(r->peer_check); /* it may replace itself */
            PyObject *res = PyObject_CallFunction(check, "i", role);
            Py_DECREF(check);
            if (res == NULL) {
                if (role == ROLE_READER && ring_ready(r, ROLE_READER, 1) &&
                    !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
                    PyErr_Clear(); /* data left: deliver it; the death is reported once it is drained */
                    result = 2;
                } else
                    result = -1;
                goto out;
            }
            Py_DECREF(res);
        }
        if (ring_ready(r, role, need)) {
            result = 1;
            goto out;
        }
    }
out:
    m->busy--;
    mapping_maybe_unmap(m);
    return result;
}

/* ---- taking a role ------------------------------------------------------------------------- */

/* A call that takes a role records this process as its holder (so the peer's liveness check and
 * close() know it, before anything is published) and re-opens the role if an earlier holder closed
 * it. A writer whose reader closed is told at once. */
static int ring_enter_role(RingObject *r, int role) {
    unsigned char *h = ring_hdr(r);
    r->roles_used |= 1 << role;
    if (role == ROLE_WRITER) {
        ring_record_identity(r, OFF_WRITER_PID, OFF_WRITER_START);
        if (ld32_rlx(h + OFF_WRITER_CLOSED)) st32_rel(h + OFF_WRITER_CLOSED, 0);
        if (ld32_acq(h + OFF_READER_CLOSED)) {
            PyErr_Format(ErrPeerClosed, "the reader of buffer %R closed its side", r->name);
            return -1;
        }
    } else {
        ring_record_identity(r, OFF_READER_PID, OFF_READER_START);
        if (ld32_rlx(h + OFF_READER_CLOSED)) st32_rel(h + OFF_READER_CLOSED, 0);
    }
    return 0;
}

/* ---- role guards --------------------------------------------------------------------------- */

static int guard_enter(RingObject *r, int role) {
    if (r->guard == NULL) return 0;
    /* The GIL is held here, so plain accesses are enough between this process's threads. */
    unsigned char *g = (unsigned char *)PyByteArray_AS_STRING(r->guard);
    if (g[role]) {
        PyErr_Format(ErrRoleBusy,
                     "buffer %R already has a %s in a call in this process; one writer and one reader at a time",
                     r->name, role == ROLE_WRITER ? "writer" : "reader");
        return -1;
    }
    g[role] = 1;
    return 0;
}

static void guard_exit(RingObject *r, int role) {
    if (r->guard == NULL) return;
    unsigned char *g = (unsigned char *)PyByteArray_AS_STRING(r->guard);
    g[role] = 0;
}

static int refuse_in_isr(RingObject *r, int64_t timeout_ns, const char *what) {
    if (timeout_ns != 0 && in_isr_context) {
        PyErr_Format(ErrInIsr, "%s on buffer %R would block inside an interrupt handler; use the try_ form", what,
                     r->name);
        return -1;
    }
    return 0;
}

/* A blocked reader is woken only by the send hook, which fires once the trigger level is reached
 * (FreeRTOS); so it waits for that many bytes, or its deadline, then takes what there is. */
static uint32_t ring_trigger(RingObject *r) {
    uint32_t trigger = ld32_rlx(ring_hdr(r) + OFF_TRIGGER);
    if (trigger == 0 || trigger >= r->length) trigger = 1;
    if ((r->flags & FLAG_BATCHING) && trigger < r->length - 1) trigger++; /* more than the trigger */
    return trigger;
}

/* The bytes a task-level stream read needs to exceed before it reads anything (0: none). */
static uint32_t ring_read_gate(RingObject *r) {
    if (!(r->flags & FLAG_BATCHING) || in_isr_context) return 0; /* an ISR read ignores it, as FreeRTOS's */
    uint32_t trigger = ld32_rlx(ring_hdr(r) + OFF_TRIGGER);
    return trigger >= r->length ? r->length - 1 : trigger;
}

/* No clock read for the try_ twins and zero timeouts: they never wait, so they need no deadline. */
static int64_t deadline_from(int64_t timeout_ns) {
    if (timeout_ns <= 0) return timeout_ns < 0 ? -1 : 0;
    return now_ns() + timeout_ns;
}

static PyObject *raise_timeout(RingObject *r, const char *what) {
    PyErr_Format(ErrTimeout, "timed out waiting to %s on buffer %R", what, r->name);
    return NULL;
}

/* The end of every call: a fault on the mapping during the call (the segment was shrunk by another
 * process, see the SIGBUS guard) turns its result into CorruptRegion, since what it read is not data. */
static PyObject *ring_finish(RingObject *r, PyObject *ret) {
    if (r->mapping != NULL && mapping_faulted(r->mapping)) {
        Py_XDECREF(ret);
        PyErr_Clear(); /* whatever the call made of the zero pages, the cause is the shrink */
        mapping_raise_faulted(r->mapping);
        return NULL;
    }
    return ret;
}

/* ---- Python methods ------------------------------------------------------------------------ */

static int get_src(PyObject *data, Py_buffer *view) {
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) return -1;
    if (view->len > 0x7FFFFFFF) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_OverflowError, "data longer than 2 GiB");
        return -1;
    }
    return 0;
}

static PyObject *message_too_large(RingObject *r, Py_ssize_t n) {
    if (r->prefix < 4 && (uint64_t)n >> (8 * r->prefix))
        PyErr_Format(ErrTooLarge, "a %zd-byte message does not fit in the %u-byte length prefix of buffer %R", n,
                     r->prefix, r->name);
    else
        PyErr_Format(ErrTooLarge,
                     "a %zd-byte message needs %zd bytes (%u-byte length prefix) but buffer %R holds at most %u", n,
                     n + (Py_ssize_t)r->prefix, r->prefix, r->name, r->length - 1);
    return NULL;
}

/* send(data, timeout=None) -> None */
static PyObject *message_send_impl(RingObject *r, PyObject *data, int64_t timeout_ns, int raise_on_full) {
    if (ring_open(r) < 0) return NULL;
    Py_buffer v;
    if (get_src(data, &v) < 0) return NULL;
    uint32_t n = (uint32_t)v.len;
    PyObject *ret = NULL;
    if (refuse_in_isr(r, timeout_ns, "send") < 0) {
        PyBuffer_Release(&v);
        return NULL;
    }
    if ((uint64_t)n + r->prefix > (uint64_t)r->length - 1 || (r->prefix < 4 && (uint64_t)n >> (8 * r->prefix))) {
        message_too_large(r, v.len);
        PyBuffer_Release(&v);
        return NULL;
    }
    if (n == 0 && (r->flags & FLAG_STRICT)) {
        PyErr_Format(PyExc_ValueError, "buffer %R is in strict FreeRTOS mode: a FreeRTOS reader cannot consume "
                     "a zero-length message", r->name);
        PyBuffer_Release(&v);
        return NULL;
    }
    if (guard_enter(r, ROLE_WRITER) < 0) {
        PyBuffer_Release(&v);
        return NULL;
    }
    if (ring_enter_role(r, ROLE_WRITER) < 0) {
        guard_exit(r, ROLE_WRITER);
        PyBuffer_Release(&v);
        return NULL;
    }
    int64_t deadline = deadline_from(timeout_ns);
    for (;;) {
        int k = op_message_send(r, (const unsigned char *)v.buf, n);
        if (k < 0) break;
        if (k == 1) {
            ret = raise_on_full ? Py_NewRef(Py_None) : Py_NewRef(Py_True);
            break;
        }
        if (timeout_ns == 0) {
            ret = raise_on_full ? raise_timeout(r, "send") : Py_NewRef(Py_False);
            break;
        }
        int w = ring_wait(r, ROLE_WRITER, n + r->prefix, deadline, 0);
        if (w < 0) break;
        if (w == 0) {
            /* one last attempt: the space may have come free as the deadline passed; the region
             * may also have been closed (and unmapped) meanwhile */
            if (ring_open(r) < 0) break;
            k = op_message_send(r, (const unsigned char *)v.buf, n);
            if (k == 1) ret = Py_NewRef(Py_None);
            else if (k == 0) raise_timeout(r, "send");
            break;
        }
        if (ring_open(r) < 0) break;
    }
    guard_exit(r, ROLE_WRITER);
    PyBuffer_Release(&v);
    return ring_finish(r, ret);
}

static PyObject *ring_send(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"data", "timeout"};
    PyObject *vals[2] = {NULL, Py_None};
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 2) goto usage;
    vals[0] = args[0];
    if (nargs == 2) vals[1] = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, names[1]) == 0 && nargs < 2)
            vals[1] = args[nargs + i];
        else
            goto usage;
    }
    int64_t t;
    if (parse_timeout(vals[1], &t) < 0) return NULL;
    return message_send_impl(r, vals[0], t, 1);
usage:
    PyErr_SetString(PyExc_TypeError, "send(data, timeout=None)");
    return NULL;
}

static PyObject *ring_try_send(RingObject *r, PyObject *data) { return message_send_impl(r, data, 0, 0); }

/* Parse (timeout=None) or (buffer, timeout=None) vectorcall arguments. */
static int parse_opt_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t npos,
                             PyObject **pos, int64_t *t, const char *usage) {
    PyObject *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < npos || nargs > npos + 1) goto bad;
    for (Py_ssize_t i = 0; i < npos; i++) pos[i] = args[i];
    if (nargs == npos + 1) timeout = args[npos];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "timeout") == 0 && nargs == npos)
            timeout = args[nargs + i];
        else
            goto bad;
    }
    return parse_timeout(timeout, t);
bad:
    PyErr_SetString(PyExc_TypeError, usage);
    return -1;
}

static PyObject *message_receive_impl(RingObject *r, int64_t timeout_ns, int raise_on_empty, Py_buffer *into) {
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "receive") < 0) return NULL;
    if (guard_enter(r, ROLE_READER) < 0) return NULL;
    ring_enter_role(r, ROLE_READER);
    int64_t deadline = deadline_from(timeout_ns);
    PyObject *ret = NULL;
    for (int last = 0;; ) {
        PyObject *out = NULL;
        uint32_t n = 0;
        int k = into ? op_message_receive(r, (unsigned char *)into->buf, into->len, NULL, &n)
                     : op_message_receive(r, NULL, 0, &out, &n);
        if (k < 0) break;
        if (k == 1) {
            ret = into ? PyLong_FromUnsignedLong(n) : out;
            break;
        }
        if (timeout_ns == 0 || last) {
            /* empty: a closed writer is reported even by the non-blocking twin (like EOF) */
            if (ring_check_peer_closed(r, ROLE_READER, 0) < 0) break;
            ret = raise_on_empty ? raise_timeout(r, "receive") : Py_NewRef(Py_None);
            break;
        }
        int w = ring_wait(r, ROLE_READER, ring_trigger(r), deadline, 0);
        if (w < 0) break;
        if (w == 0) last = 1;
        if (ring_open(r) < 0) break;
    }
    guard_exit(r, ROLE_READER);
    return ring_finish(r, ret);
}

static PyObject *ring_receive(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    if (parse_opt_timeout(args, nargs, kwnames, 0, NULL, &t, "receive(timeout=None)") < 0) return NULL;
    return message_receive_impl(r, t, 1, NULL);
}

static PyObject *ring_try_receive(RingObject *r, PyObject *unused) { return message_receive_impl(r, 0, 0, NULL); }


/* ---- batches: many messages per call, one index publication and one wake per batch ---------- */

/* Write messages[i..count) that fit now, in order; one head store and one send hook for all of
 * them. Returns how many were written (0 if the next does not fit), -1 on error. */
static Py_ssize_t op_message_send_batch(RingObject *r, Py_buffer *views, Py_ssize_t count) {
    ring_state s;
    if (ring_load(r, &s, ROLE_WRITER) < 0) return -1;
    uint32_t spaces = st_spaces(&s), head = s.head;
    uint64_t bytes = 0;
    Py_ssize_t done = 0;
    for (; done < count; done++) {
        uint32_t n = (uint32_t)views[done].len;
        if (spaces < n + r->prefix) break;
        unsigned char prefix[8] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                                   (unsigned char)(n >> 24), 0, 0, 0, 0};
        ring_copy_in(r, head, prefix, r->prefix);
        head = ring_advance(r, head, r->prefix);
        ring_copy_in(r, head, (const unsigned char *)views[done].buf, n);
        head = ring_advance(r, head, n);
        spaces -= n + r->prefix;
        bytes += n;
    }
    if (done == 0) return 0;
    unsigned char *h = ring_hdr(r);
    st32_rel(h + OFF_HEAD, head);
    bump64(h + OFF_MSGS_IN, (uint64_t)done);
    bump64(h + OFF_BYTES_IN, bytes);
    ring_send_completed(r, head, s.tail);
    return done;
}

/* send_many(messages, timeout=None) -> int: every message, in order, each whole; waits for room
 * until the timeout (None: until all are sent; 0: never) and returns how many were sent. */
static PyObject *ring_send_many(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "send_many(messages, timeout=None)") < 0) return NULL;
    if (ring_open(r) < 0 || refuse_in_isr(r, t, "send_many") < 0) return NULL;
    PyObject *seq = PySequence_Fast(pos[0], "send_many() takes a sequence of bytes-like messages");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), got = 0, sent = 0;
    Py_buffer *views = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Py_buffer));
    PyObject *ret = NULL;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < count; got++) {
        if (get_src(PySequence_Fast_GET_ITEM(seq, got), &views[got]) < 0) goto done;
        uint64_t n = (uint64_t)views[got].len;
        if (n + r->prefix > (uint64_t)r->length - 1 || (r->prefix < 4 && n >> (8 * r->prefix))) {
            message_too_large(r, views[got].len);
            goto done;
        }
        if (n == 0 && (r->flags & FLAG_STRICT)) {
            PyErr_Format(PyExc_ValueError, "buffer %R is in strict FreeRTOS mode: message %zd is empty", r->name, got);
            goto done;
        }
    }
    if (guard_enter(r, ROLE_WRITER) < 0) goto done;
    if (ring_enter_role(r, ROLE_WRITER) == 0) {
        int64_t deadline = deadline_from(t);
        int failed = 0;
        while (sent < count) {
            Py_ssize_t k = op_message_send_batch(r, views + sent, count - sent);
            if (k < 0) {
                failed = 1;
                break;
            }
            sent += k;
            if (sent == count || t == 0) break;
            if (k == 0) {
                int w = ring_wait(r, ROLE_WRITER, (uint32_t)views[sent].len + r->prefix, deadline, 0);
                if (w < 0 || ring_open(r) < 0) {
                    failed = 1;
                    break;
                }
                if (w == 0) { /* the deadline: one last attempt, then the count */
                    k = op_message_send_batch(r, views + sent, count - sent);
                    if (k < 0) failed = 1;
                    else sent += k;
                    break;
                }
            }
        }
        if (!failed) ret = PyLong_FromSsize_t(sent);
    }
    guard_exit(r, ROLE_WRITER);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq);
    return ring_finish(r, ret);
}

/* Take up to `max_count` whole messages now: into new bytes objects (dst NULL) appended to `out`, or
 * packed one after another into dst (capacity dst_cap) with (offset, length) pairs appended to
 * `out`. One tail store and one receive hook for the batch. Returns how many, -1 on error. */
static Py_ssize_t op_message_receive_batch(RingObject *r, Py_ssize_t max_count, PyObject *out, unsigned char *dst,
                                           Py_ssize_t dst_cap) {
    ring_state s;
    if (ring_load(r, &s, ROLE_READER) < 0) return -1;
    Py_ssize_t done = 0, used = 0;
    uint64_t bytes = 0;
    uint32_t n;
    while (done < max_count) {
        int k = ring_peek_length(r, &s, &n);
        if (k < 0) return -1;
        if (k == 0) break;
        uint32_t at = ring_advance(r, s.tail, r->prefix);
        PyObject *item;
        if (dst == NULL) {
            item = PyBytes_FromStringAndSize(NULL, n);
            if (item == NULL) return -1;
            ring_copy_out(r, at, (unsigned char *)PyBytes_AS_STRING(item), n);
        } else {
            if ((Py_ssize_t)n > dst_cap - used) {
                if (done == 0) { /* not even the first fits: as receive_into, it stays in place */
                    PyErr_Format(ErrTooSmall, "the next message is %u bytes but the buffer holds only %zd", n,
                                 dst_cap - used);
                    return -1;
                }
                break;
            }
            ring_copy_out(r, at, dst + used, n);
            item = Py_BuildValue("(nI)", used, n);
            if (item == NULL) return -1;
            used += n;
        }
        int bad = PyList_Append(out, item);
        Py_DECREF(item);
        if (bad < 0) return -1;
        s.tail = ring_advance(r, at, n);
        bytes += n;
        done++;
    }
    if (done == 0) return 0;
    unsigned char *h = ring_hdr(r);
    st32_rel(h + OFF_TAIL, s.tail);
    bump64(h + OFF_MSGS_OUT, (uint64_t)done);
    bump64(h + OFF_BYTES_OUT, bytes);
    ring_receive_completed(r);
    return done;
}

/* receive_many / try_receive_many / _receive_many_into: at least one message, waiting until the
 * timeout (then Timeout; the try_ twin returns what there is, maybe nothing). */
static PyObject *message_receive_many_impl(RingObject *r, Py_ssize_t max_count, int64_t timeout_ns, int raise_on_empty,
                                           Py_buffer *into) {
    if (max_count < 1) {
        PyErr_SetString(PyExc_ValueError, "max_count must be at least 1");
        return NULL;
    }
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "receive_many") < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    if (guard_enter(r, ROLE_READER) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    ring_enter_role(r, ROLE_READER);
    int64_t deadline = deadline_from(timeout_ns);
    int failed = 0;
    for (int last = 0;;) {
        Py_ssize_t k = op_message_receive_batch(r, max_count, out, into ? (unsigned char *)into->buf : NULL,
                                                into ? into->len : 0);
        if (k < 0) {
            failed = 1;
            break;
        }
        if (k > 0) break;
        if (timeout_ns == 0 || last) {
            if (ring_check_peer_closed(r, ROLE_READER, 0) < 0) failed = 1;
            else if (raise_on_empty) {
                raise_timeout(r, "receive");
                failed = 1;
            }
            break;
        }
        int w = ring_wait(r, ROLE_READER, ring_trigger(r), deadline, 0);
        if (w < 0 || ring_open(r) < 0) {
            failed = 1;
            break;
        }
        if (w == 0) last = 1;
    }
    guard_exit(r, ROLE_READER);
    if (failed) Py_CLEAR(out);
    return ring_finish(r, out);
}

static PyObject *ring_receive_many(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "receive_many(max_count, timeout=None)") < 0) return NULL;
    Py_ssize_t max_count = PyLong_AsSsize_t(pos[0]);
    if (max_count == -1 && PyErr_Occurred()) return NULL;
    return message_receive_many_impl(r, max_count, t, 1, NULL);
}

static PyObject *ring_try_receive_many(RingObject *r, PyObject *arg) {
    Py_ssize_t max_count = PyLong_AsSsize_t(arg);
    if (max_count == -1 && PyErr_Occurred()) return NULL;
    return message_receive_many_impl(r, max_count, 0, 0, NULL);
}

/* _receive_many_into(buffer, max_count, timeout=None) -> [(offset, length), ...] packed in buffer */
static PyObject *ring_receive_many_into(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[2];
    if (parse_opt_timeout(args, nargs, kwnames, 2, pos, &t, "_receive_many_into(buffer, max_count, timeout=None)") < 0)
        return NULL;
    Py_ssize_t max_count = PyLong_AsSsize_t(pos[1]);
    if (max_count == -1 && PyErr_Occurred()) return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(pos[0], &v, PyBUF_WRITABLE) < 0) return NULL;
    PyObject *ret = message_receive_many_impl(r, max_count, t, 1, &v);
    PyBuffer_Release(&v);
    return ret;
}

static PyObject *ring_receive_into(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "receive_into(buffer, timeout=None)") < 0)
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(pos[0], &v, PyBUF_WRITABLE) < 0) return NULL;
    PyObject *ret = message_receive_impl(r, t, 1, &v);
    PyBuffer_Release(&v);
    return ret;
}

/* Stream write: writes what fits, waits for the rest until the timeout; returns the count. */
static PyObject *stream_write_impl(RingObject *r, PyObject *data, int64_t timeout_ns) {
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "write") < 0) return NULL;
    Py_buffer v;
    if (get_src(data, &v) < 0) return NULL;
    if (guard_enter(r, ROLE_WRITER) < 0) {
        PyBuffer_Release(&v);
        return NULL;
    }
    if (ring_enter_role(r, ROLE_WRITER) < 0) {
        guard_exit(r, ROLE_WRITER);
        PyBuffer_Release(&v);
        return NULL;
    }
    int64_t deadline = deadline_from(timeout_ns);
    uint32_t n = (uint32_t)v.len, total = 0;
    int err = 0;
    for (int last = 0;;) {
        uint32_t w = 0;
        if (op_stream_send(r, (const unsigned char *)v.buf + total, n - total, &w) < 0) {
            err = 1;
            break;
        }
        total += w;
        if (total == n || timeout_ns == 0 || last) break;
        if (ring_open(r) < 0) { /* a send hook may have closed the region */
            err = 1;
            break;
        }
        int k = ring_wait(r, ROLE_WRITER, 1, deadline, 0);
        if (k < 0 || ring_open(r) < 0) {
            err = 1;
            break;
        }
        if (k == 0) last = 1;
    }
    guard_exit(r, ROLE_WRITER);
    PyBuffer_Release(&v);
    if (err) return NULL;
    return ring_finish(r, PyLong_FromUnsignedLong(total));
}

static PyObject *ring_write(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "write(data, timeout=None)") < 0) return NULL;
    return stream_write_impl(r, pos[0], t);
}

static PyObject *ring_try_write(RingObject *r, PyObject *data) { return stream_write_impl(r, data, 0); }

/* Stream read: if the buffer is empty, wait until trigger_level bytes are there (or the timeout),
 * then return what there is, up to max (as xStreamBufferReceive). */
static PyObject *stream_read_impl(RingObject *r, unsigned char *dst, uint32_t max, int64_t timeout_ns, uint32_t *got) {
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "read") < 0) return NULL;
    if (guard_enter(r, ROLE_READER) < 0) return NULL;
    ring_enter_role(r, ROLE_READER);
    int64_t deadline = deadline_from(timeout_ns);
    int err = 0;
    *got = 0;
    if (max > 0) {
        for (int last = 0, drain = 0;;) {
            int k = op_stream_receive(r, dst, max, got, drain ? 0 : ring_read_gate(r));
            if (k < 0) {
                err = 1;
                break;
            }
            if (k == 1) break;
            if (timeout_ns == 0 || last) {
                if (ring_check_peer_closed(r, ROLE_READER, 0) < 0) err = 1;
                break;
            }
            int w = ring_wait(r, ROLE_READER, ring_trigger(r), deadline, 0);
            if (w < 0 || ring_open(r) < 0) {
                err = 1;
                break;
            }
            if (w == 0) last = 1;
            if (w == 2) drain = 1; /* the writer is gone: what is left is read, below the trigger too */
        }
    }
    guard_exit(r, ROLE_READER);
    if (err || ring_finish(r, Py_NewRef(Py_None)) == NULL) return NULL;
    Py_DECREF(Py_None);
    return Py_None; /* a borrowed marker: the callers only test it against NULL */
}

static PyObject *ring_read(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "read(max_bytes, timeout=None)") < 0) return NULL;
    Py_ssize_t max = PyLong_AsSsize_t(pos[0]);
    if (max == -1 && PyErr_Occurred()) return NULL;
    if (max < 0) {
        PyErr_SetString(PyExc_ValueError, "max_bytes must be >= 0");
        return NULL;
    }
    if (r->mapping != NULL && max > (Py_ssize_t)r->length) max = r->length;
    PyObject *b = PyBytes_FromStringAndSize(NULL, max);
    if (b == NULL) return NULL;
    uint32_t got;
    if (stream_read_impl(r, (unsigned char *)PyBytes_AS_STRING(b), (uint32_t)max, t, &got) == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    if ((Py_ssize_t)got != max) _PyBytes_Resize(&b, got);
    return b;
}

static PyObject *ring_try_read(RingObject *r, PyObject *arg) {
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) return NULL;
    PyObject *args[2] = {arg, zero};
    PyObject *res = ring_read(r, args, 2, NULL);
    Py_DECREF(zero);
    return res;
}

static PyObject *ring_read_into(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "read_into(buffer, timeout=None)") < 0) return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(pos[0], &v, PyBUF_WRITABLE) < 0) return NULL;
    uint32_t max = v.len > 0x7FFFFFFF ? 0x7FFFFFFF : (uint32_t)v.len;
    uint32_t got;
    PyObject *ok = stream_read_impl(r, (unsigned char *)v.buf, max, t, &got);
    PyBuffer_Release(&v);
    if (ok == NULL) return NULL;
    return PyLong_FromUnsignedLong(got);
}

/* The FromISR helpers: wake the recorded waiter, if any (xStreamBuffer{Send,Receive}CompletedFromISR). */
static PyObject *ring_send_completed_from_isr(RingObject *r, PyObject *unused) {
    if (ring_open(r) < 0) return NULL;
    return PyBool_FromLong(ring_wake_if_waiting(r, OFF_RX_WAITING, OFF_HEAD, OFF_WAKES_BY_WRITER));
}

static PyObject *ring_receive_completed_from_isr(RingObject *r, PyObject *unused) {
    if (ring_open(r) < 0) return NULL;
    return PyBool_FromLong(ring_wake_if_waiting(r, OFF_TX_WAITING, OFF_TAIL, OFF_WAKES_BY_READER));
}

/* _close(roles): mark the given roles closed (bit 0 writer, bit 1 reader; -1: the roles this object
 * took) and wake the peer so a blocked call sees it; then this object refuses further calls. */
static PyObject *ring_close(RingObject *r, PyObject *arg) {
    long roles = PyLong_AsLong(arg);
    if (roles == -1 && PyErr_Occurred()) return NULL;
    if (r->closed || r->mapping == NULL) Py_RETURN_NONE;
    if (roles < 0) roles = r->roles_used;
    if (mapping_check_open(r->mapping) == 0) {
        unsigned char *h = ring_hdr(r);
        if (roles & (1 << ROLE_WRITER)) {
            st32_rel(h + OFF_WRITER_CLOSED, 1);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            sys_futex(h + OFF_HEAD, FUTEX_WAKE, INT_MAX, NULL); /* a reader sleeps on head */
        }
        if (roles & (1 << ROLE_READER)) {
            st32_rel(h + OFF_READER_CLOSED, 1);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            sys_futex(h + OFF_TAIL, FUTEX_WAKE, INT_MAX, NULL); /* a writer sleeps on tail */
        }
    } else
        PyErr_Clear(); /* the region is gone already: nobody is left to tell */
    r->closed = 1;
    Py_RETURN_NONE;
}

/* wait_readable(timeout=None) / wait_writable(nbytes, timeout=None) -> bool: wait until a receive
 * (a send of nbytes) would not block, without taking the role: True when it would not (data or room
 * there, or the peer closed, which the call then reports), False at the timeout; PeerDied when the
 * peer died (a reader's only once nothing is left to drain). */
static PyObject *ring_wait_ready(RingObject *r, int role, uint32_t need, int64_t timeout_ns) {
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "wait") < 0) return NULL;
    if (ring_ready(r, role, need) || ring_check_peer_closed(r, role, 1)) return ring_finish(r, Py_NewRef(Py_True));
    if (timeout_ns == 0) return ring_finish(r, Py_NewRef(Py_False));
    int w = ring_wait(r, role, need, deadline_from(timeout_ns), 1);
    if (w < 0) return NULL;
    if (ring_open(r) < 0) return NULL;
    int ready = w >= 1 || ring_ready(r, role, need) || ring_check_peer_closed(r, role, 1);
    return ring_finish(r, PyBool_FromLong(ready));
}

static PyObject *ring_wait_readable(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    if (parse_opt_timeout(args, nargs, kwnames, 0, NULL, &t, "wait_readable(timeout=None)") < 0) return NULL;
    return ring_wait_ready(r, ROLE_READER, 1, t);
}

static PyObject *ring_wait_writable(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "wait_writable(nbytes, timeout=None)") < 0) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(pos[0]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (r->mapping == NULL) return ring_wait_ready(r, ROLE_WRITER, 1, t); /* raises: not initialised */
    Py_ssize_t need = n + (r->is_message ? (Py_ssize_t)r->prefix : 0);
    if (n < 0 || need > (Py_ssize_t)r->length - 1) {
        PyErr_Format(PyExc_ValueError, "nbytes must be 0..%zd for buffer %R, not %zd",
                     (Py_ssize_t)r->length - 1 - (r->is_message ? (Py_ssize_t)r->prefix : 0), r->name, n);
        return NULL;
    }
    return ring_wait_ready(r, ROLE_WRITER, need == 0 ? 1 : (uint32_t)need, t);
}

static PyObject *ring_flag(RingObject *r, Py_ssize_t off) {
    if (ring_open(r) < 0) return NULL;
    return PyBool_FromLong(ld32_acq(ring_hdr(r) + off) != 0);
}
static PyObject *ring_get_writer_closed(RingObject *r, void *c) { return ring_flag(r, OFF_WRITER_CLOSED); }
static PyObject *ring_get_reader_closed(RingObject *r, void *c) { return ring_flag(r, OFF_READER_CLOSED); }
static PyObject *ring_get_closed(RingObject *r, void *c) { return PyBool_FromLong(r->closed); }
static PyObject *ring_get_prefix_width(RingObject *r, void *c) { return PyLong_FromUnsignedLong(r->prefix); }
static PyObject *ring_get_flags(RingObject *r, void *c) { return PyLong_FromUnsignedLong(r->flags); }

static PyObject *ring_reset(RingObject *r, PyObject *unused) {
    if (ring_open(r) < 0) return NULL;
    unsigned char *h = ring_hdr(r);
    if (r->guard != NULL) {
        unsigned char *g = (unsigned char *)PyByteArray_AS_STRING(r->guard);
        if (__atomic_load_n(&g[0], __ATOMIC_ACQUIRE) || __atomic_load_n(&g[1], __ATOMIC_ACQUIRE)) Py_RETURN_FALSE;
    }
    if (ld32_acq(h + OFF_TX_WAITING) || ld32_acq(h + OFF_RX_WAITING)) Py_RETURN_FALSE;
    st32_rel(h + OFF_TAIL, 0);
    st32_rel(h + OFF_HEAD, 0);
    Py_RETURN_TRUE;
}

static PyObject *ring_state_value(RingObject *r, int which) {
    if (ring_open(r) < 0) return NULL;
    ring_state s;
    if (ring_load(r, &s, ROLE_READER) < 0) return NULL;
    switch (which) {
    case 0: return PyLong_FromUnsignedLong(st_avail(&s));
    case 1: return PyLong_FromUnsignedLong(st_spaces(&s));
    case 2: return PyBool_FromLong(s.head == s.tail);
    case 3: return PyBool_FromLong(st_spaces(&s) <= (r->is_message ? r->prefix : 0));
    default: {
        uint32_t n;
        int k = ring_peek_length(r, &s, &n);
        if (k < 0) return NULL;
        if (k == 0) Py_RETURN_NONE;
        return PyLong_FromUnsignedLong(n);
    }
    }
}

static PyObject *ring_get_bytes_available(RingObject *r, void *c) { return ring_state_value(r, 0); }
static PyObject *ring_get_spaces_available(RingObject *r, void *c) { return ring_state_value(r, 1); }
static PyObject *ring_get_is_empty(RingObject *r, void *c) { return ring_state_value(r, 2); }
static PyObject *ring_get_is_full(RingObject *r, void *c) { return ring_state_value(r, 3); }
static PyObject *ring_get_next_length(RingObject *r, void *c) { return ring_state_value(r, 4); }

static PyObject *ring_get_capacity(RingObject *r, void *c) {
    if (r->mapping == NULL) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(r->length - 1);
}

static PyObject *ring_get_trigger(RingObject *r, void *c) {
    if (ring_open(r) < 0) return NULL;
    return PyLong_FromUnsignedLong(ld32_rlx(ring_hdr(r) + OFF_TRIGGER));
}

/* xStreamBufferSetTriggerLevel: 0 becomes 1; accepted only below xLength (main branch). */
static int ring_set_trigger(RingObject *r, PyObject *value, void *c) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "trigger_level cannot be deleted");
        return -1;
    }
    if (ring_open(r) < 0) return -1;
    long long n = PyLong_AsLongLong(value);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "trigger_level must be >= 0");
        return -1;
    }
    if (n == 0) n = 1;
    if (n >= (long long)r->length) {
        PyErr_Format(PyExc_ValueError, "trigger_level %lld is above the capacity %u", n, r->length - 1);
        return -1;
    }
    st32_rel(ring_hdr(r) + OFF_TRIGGER, (uint32_t)n);
    return 0;
}

static PyObject *ring_get_hook(RingObject *r, void *which) {
    PyObject *h = which ? r->receive_hook : r->send_hook;
    return Py_NewRef(h ? h : Py_None);
}

static int ring_set_hook(RingObject *r, PyObject *value, void *which) {
    PyObject **slot = which ? &r->receive_hook : &r->send_hook;
    if (value != NULL && value != Py_None && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "a hook must be callable or None");
        return -1;
    }
    PyObject *old = *slot;
    *slot = (value == NULL || value == Py_None) ? NULL : Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

static PyObject *ring_get_spin(RingObject *r, void *c) { return PyFloat_FromDouble((double)r->spin_ns / 1e9); }

static int ring_set_spin(RingObject *r, PyObject *value, void *c) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "spin cannot be deleted");
        return -1;
    }
    double s = PyFloat_AsDouble(value);
    if (s == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(s) || s < 0 || s > 1.0) {
        PyErr_SetString(PyExc_ValueError, "spin must be between 0 and 1 second");
        return -1;
    }
    r->spin_ns = (long)(s * 1e9);
    r->spin_score = 0;
    return 0;
}

static PyObject *ring_get_name(RingObject *r, void *c) { return Py_NewRef(r->name ? r->name : Py_None); }
static PyObject *ring_get_offset(RingObject *r, void *c) { return PyLong_FromSsize_t(r->offset); }

/* The shared counters, as a tuple (the Python layer wraps them in a frozen object). */
static PyObject *ring_raw_statistics(RingObject *r, PyObject *unused) {
    if (ring_open(r) < 0) return NULL;
    unsigned char *h = ring_hdr(r);
    return Py_BuildValue("(KKKKKKKKK)", (unsigned long long)ld64_rlx(h + OFF_MSGS_IN),
                         (unsigned long long)ld64_rlx(h + OFF_BYTES_IN), (unsigned long long)ld64_rlx(h + OFF_MSGS_OUT),
                         (unsigned long long)ld64_rlx(h + OFF_BYTES_OUT), (unsigned long long)ld64_rlx(h + OFF_PEAK),
                         (unsigned long long)ld64_rlx(h + OFF_TX_BLOCKS), (unsigned long long)ld64_rlx(h + OFF_RX_BLOCKS),
                         (unsigned long long)ld64_rlx(h + OFF_WAKES_BY_WRITER),
                         (unsigned long long)ld64_rlx(h + OFF_WAKES_BY_READER));
}

static PyObject *ring_peer_identity(RingObject *r, PyObject *arg) {
    long role = PyLong_AsLong(arg);
    if (role == -1 && PyErr_Occurred()) return NULL;
    if (ring_open(r) < 0) return NULL;
    unsigned char *h = ring_hdr(r);
    Py_ssize_t pid_off = role == ROLE_WRITER ? OFF_WRITER_PID : OFF_READER_PID;
    Py_ssize_t start_off = role == ROLE_WRITER ? OFF_WRITER_START : OFF_READER_START;
    uint32_t pid = __atomic_load_n((uint32_t *)(h + pid_off), __ATOMIC_ACQUIRE);
    return Py_BuildValue("(kK)", (unsigned long)pid, (unsigned long long)ld64_rlx(h + start_off));
}

static int ring_init(RingObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"mapping", "offset", "name", "guard", "limit", NULL};
    PyObject *mapping, *name, *guard = Py_None;
    Py_ssize_t offset, limit = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nU|On", kwlist, &MappingType, &mapping, &offset, &name, &guard,
                                     &limit))
        return -1;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "buffer object is already initialised");
        return -1;
    }
    if (guard != Py_None && (!PyByteArray_Check(guard) || PyByteArray_GET_SIZE(guard) != 2)) {
        PyErr_SetString(PyExc_TypeError, "guard must be a bytearray of length 2");
        return -1;
    }
    MappingObject *m = (MappingObject *)mapping;
    if (mapping_check_open(m) < 0) return -1;
    Py_XSETREF(self->name, Py_NewRef(name));
    if (offset < 0 || offset % 64 != 0 || offset > m->size - RING_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not a valid buffer offset in a mapping of %zd bytes", offset,
                     m->size);
        return -1;
    }
    /* The object's own directory entry bounds it, not the whole mapping: a hostile header must not
     * reach into the next object. */
    if (limit < 0 || limit > m->size - offset) limit = m->size - offset;
    unsigned char *h = m->base + offset;
    /* Validate the constant part of the header once; the indexes are checked on every call. */
    uint32_t magic = ld32_acq(h + OFF_MAGIC);
    uint32_t flags = ld32_rlx(h + OFF_FLAGS);
    uint32_t length = ld32_rlx(h + OFF_LENGTH);
    uint32_t data_off = ld32_rlx(h + OFF_DATA);
    uint32_t prefix = ld32_rlx(h + OFF_PREFIX);
    uint32_t total = ld32_rlx(h + OFF_TOTAL);
    self->offset = offset;
    if (magic != RING_MAGIC) {
        raise_corrupt(self, "magic", magic, "is not a buffer header");
        return -1;
    }
    if ((Py_ssize_t)total > limit || total < RING_HEADER_SIZE) {
        raise_corrupt(self, "total size", total, "does not fit in the object's directory entry");
        return -1;
    }
    if (data_off < RING_HEADER_SIZE || data_off > total) {
        raise_corrupt(self, "data offset", data_off, "is outside the object");
        return -1;
    }
    if (length < 2 || length > total - data_off) {
        raise_corrupt(self, "length", length, "does not fit in the object");
        return -1;
    }
    if (flags & ~(FLAG_MESSAGE | FLAG_STATIC | FLAG_BATCHING | FLAG_STRICT)) {
        raise_corrupt(self, "flags", flags, "has bits no buffer kind defines");
        return -1;
    }
    if (flags & FLAG_MESSAGE) {
        if (prefix != 1 && prefix != 2 && prefix != 4 && prefix != 8) {
            raise_corrupt(self, "prefix size", prefix, "is not 1, 2, 4 or 8");
            return -1;
        }
        if (length - 1 < prefix) {
            raise_corrupt(self, "length", length, "is too small for a message buffer");
            return -1;
        }
    }
    self->mapping = (MappingObject *)Py_NewRef(mapping);
    self->length = length;
    self->data_off = data_off;
    self->is_message = (flags & FLAG_MESSAGE) != 0;
    self->flags = flags;
    self->prefix = self->is_message ? prefix : 0;
    self->limit = (uint32_t)(limit > 0xFFFFFFFF ? 0xFFFFFFFF : limit);
    self->spin_ns = default_spin_ns;
    self->spin_score = 0;
    if (guard != Py_None) self->guard = Py_NewRef(guard);
    return 0;
}

static int ring_traverse(RingObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->mapping);
    Py_VISIT(self->send_hook);
    Py_VISIT(self->receive_hook);
    Py_VISIT(self->peer_check);
    return 0;
}

static int ring_clear(RingObject *self) {
    Py_CLEAR(self->send_hook);
    Py_CLEAR(self->receive_hook);
    Py_CLEAR(self->peer_check);
    return 0;
}

static void ring_dealloc(RingObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    ring_clear(self);
    Py_CLEAR(self->mapping);
    Py_CLEAR(self->name);
    Py_CLEAR(self->guard);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ring_get_peer_check(RingObject *r, void *c) { return Py_NewRef(r->peer_check ? r->peer_check : Py_None); }

static int ring_set_peer_check(RingObject *r, PyObject *value, void *c) {
    if (value != NULL && value != Py_None && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "peer_check must be callable or None");
        return -1;
    }
    PyObject *old = r->peer_check;
    r->peer_check = (value == NULL || value == Py_None) ? NULL : Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

#define COMMON_METHODS                                                                                           \
    {"reset", (PyCFunction)ring_reset, METH_NOARGS, "Empty the buffer; False (and no change) while a side is blocked."}, \
    {"send_completed_from_isr", (PyCFunction)ring_send_completed_from_isr, METH_NOARGS,                          \
     "Wake a reader blocked on this buffer, if any; True if one was (xStreamBufferSendCompletedFromISR)."},      \
    {"receive_completed_from_isr", (PyCFunction)ring_receive_completed_from_isr, METH_NOARGS,                    \
     "Wake a writer blocked on this buffer, if any; True if one was (xStreamBufferReceiveCompletedFromISR)."},   \
    {"_raw_statistics", (PyCFunction)ring_raw_statistics, METH_NOARGS, "The shared counters as a tuple."},      \
    {"_peer_identity", (PyCFunction)ring_peer_identity, METH_O, "(pid, start time) recorded for a role."},     \
    {"_close", (PyCFunction)ring_close, METH_O, "Close roles (bit 0 writer, 1 reader; -1 those used) and wake the peer."}, \
    {"wait_readable", (PyCFunction)(void (*)(void))ring_wait_readable, METH_FASTCALL | METH_KEYWORDS,          \
     "wait_readable(timeout=None) -> bool: until a receive would not block."},                                  \
    {"wait_writable", (PyCFunction)(void (*)(void))ring_wait_writable, METH_FASTCALL | METH_KEYWORDS,          \
     "wait_writable(nbytes, timeout=None) -> bool: until a send of nbytes would not block."}

static PyMethodDef ring_methods[] = {
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef message_methods[] = {
    {"send_many", (PyCFunction)(void (*)(void))ring_send_many, METH_FASTCALL | METH_KEYWORDS,
     "send_many(messages, timeout=None) -> int: send each message whole, in order; how many were sent."},
    {"receive_many", (PyCFunction)(void (*)(void))ring_receive_many, METH_FASTCALL | METH_KEYWORDS,
     "receive_many(max_count, timeout=None) -> list[bytes]: at least one message, at most max_count."},
    {"try_receive_many", (PyCFunction)ring_try_receive_many, METH_O,
     "try_receive_many(max_count) -> list[bytes]: the messages there now (maybe none)."},
    {"_receive_many_into", (PyCFunction)(void (*)(void))ring_receive_many_into, METH_FASTCALL | METH_KEYWORDS,
     "_receive_many_into(buffer, max_count, timeout=None) -> list of (offset, length) in buffer."},
    {"send", (PyCFunction)(void (*)(void))ring_send, METH_FASTCALL | METH_KEYWORDS,
     "send(data, timeout=None): block until the whole message fits, then write it."},
    {"try_send", (PyCFunction)ring_try_send, METH_O, "try_send(data) -> bool: write the message if it fits now."},
    {"receive", (PyCFunction)(void (*)(void))ring_receive, METH_FASTCALL | METH_KEYWORDS,
     "receive(timeout=None) -> bytes: block until a message is there."},
    {"try_receive", (PyCFunction)ring_try_receive, METH_NOARGS, "try_receive() -> bytes | None."},
    {"receive_into", (PyCFunction)(void (*)(void))ring_receive_into, METH_FASTCALL | METH_KEYWORDS,
     "receive_into(buffer, timeout=None) -> int: the message into a writable buffer."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)(void (*)(void))ring_write, METH_FASTCALL | METH_KEYWORDS,
     "write(data, timeout=None) -> int: write what fits, wait for the rest until the timeout."},
    {"try_write", (PyCFunction)ring_try_write, METH_O, "try_write(data) -> int: write what fits now."},
    {"read", (PyCFunction)(void (*)(void))ring_read, METH_FASTCALL | METH_KEYWORDS,
     "read(max_bytes, timeout=None) -> bytes."},
    {"try_read", (PyCFunction)ring_try_read, METH_O, "try_read(max_bytes) -> bytes: what is there now."},
    {"read_into", (PyCFunction)(void (*)(void))ring_read_into, METH_FASTCALL | METH_KEYWORDS,
     "read_into(buffer, timeout=None) -> int."},
    {NULL, NULL, 0, NULL},
};

#define COMMON_GETSET                                                                                             \
    {"bytes_available", (getter)ring_get_bytes_available, NULL, "Bytes in the buffer (prefixes included).", NULL}, \
    {"spaces_available", (getter)ring_get_spaces_available, NULL, "Free bytes.", NULL},                           \
    {"is_empty", (getter)ring_get_is_empty, NULL, "True when nothing is in the buffer.", NULL},                   \
    {"is_full", (getter)ring_get_is_full, NULL, "True when nothing more fits.", NULL},                            \
    {"capacity", (getter)ring_get_capacity, NULL, "Bytes the buffer holds.", NULL},                               \
    {"trigger_level", (getter)ring_get_trigger, (setter)ring_set_trigger, "FreeRTOS trigger level.", NULL},       \
    {"on_send_completed", (getter)ring_get_hook, (setter)ring_set_hook, "sbSEND_COMPLETED hook or None.", NULL},  \
    {"on_receive_completed", (getter)ring_get_hook, (setter)ring_set_hook, "sbRECEIVE_COMPLETED hook or None.",   \
     (void *)1},                                                                                                  \
    {"spin", (getter)ring_get_spin, (setter)ring_set_spin, "Seconds to spin before sleeping on the futex.", NULL}, \
    {"_peer_check", (getter)ring_get_peer_check, (setter)ring_set_peer_check, "Liveness callback.", NULL},        \
    {"name", (getter)ring_get_name, NULL, "The object's name.", NULL},                                            \
    {"offset", (getter)ring_get_offset, NULL, "The header's offset in the region.", NULL},                       \
    {"writer_closed", (getter)ring_get_writer_closed, NULL, "True while the writer side is closed.", NULL},       \
    {"reader_closed", (getter)ring_get_reader_closed, NULL, "True while the reader side is closed.", NULL},       \
    {"closed", (getter)ring_get_closed, NULL, "True once this object was closed.", NULL},                         \
    {"prefix_width", (getter)ring_get_prefix_width, NULL, "Bytes of each message's length prefix (0: stream).", NULL}, \
    {"_flags", (getter)ring_get_flags, NULL, "The header's flags word (message, static, batching, strict).", NULL}

static PyGetSetDef ring_getset[] = {
    COMMON_GETSET,
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef message_getset[] = {
    {"next_length", (getter)ring_get_next_length, NULL, "Length of the next message, None when empty.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef stream_getset[] = {
    {NULL, NULL, NULL, NULL, NULL},
};

static int message_init(RingObject *self, PyObject *args, PyObject *kwds) {
    if (ring_init(self, args, kwds) < 0) return -1;
    if (!self->is_message) {
        Py_CLEAR(self->mapping);
        raise_corrupt(self, "flags", 0, "say stream buffer, not message buffer");
        return -1;
    }
    return 0;
}

static int stream_init(RingObject *self, PyObject *args, PyObject *kwds) {
    if (ring_init(self, args, kwds) < 0) return -1;
    if (self->is_message) {
        Py_CLEAR(self->mapping);
        raise_corrupt(self, "flags", 1, "say message buffer, not stream buffer");
        return -1;
    }
    return 0;
}

static int ring_abstract_init(RingObject *self, PyObject *args, PyObject *kwds) {
    PyErr_SetString(PyExc_TypeError, "Ring is abstract: use MessageRing or StreamRing");
    return -1;
}

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The part of a FreeRTOS ring common to message and stream buffers (not instantiable).",
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_clear,
    .tp_weaklistoffset = offsetof(RingObject, weakreflist),
    .tp_methods = ring_methods,
    .tp_getset = ring_getset,
    .tp_init = (initproc)ring_abstract_init,
    .tp_new = PyType_GenericNew,
};

static PyTypeObject MessageRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.MessageRing",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "MessageRing(mapping, offset, name, guard=None): the FreeRTOS message-buffer fast path.",
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_clear,
    .tp_weaklistoffset = offsetof(RingObject, weakreflist),
    .tp_base = &RingType,
    .tp_methods = message_methods,
    .tp_getset = message_getset,
    .tp_init = (initproc)message_init,
    .tp_new = PyType_GenericNew,
};

static PyTypeObject StreamRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.StreamRing",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "StreamRing(mapping, offset, name, guard=None): the FreeRTOS stream-buffer fast path.",
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_clear,
    .tp_weaklistoffset = offsetof(RingObject, weakreflist),
    .tp_base = &RingType,
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
    .tp_init = (initproc)stream_init,
    .tp_new = PyType_GenericNew,
};

/* ---- module functions ---------------------------------------------------------------------- */

static PyObject *mod_shm_open(PyObject *m, PyObject *args) {
    const char *name;
    int flags;
    unsigned int mode = 0600;
    if (!PyArg_ParseTuple(args, "si|I", &name, &flags, &mode)) return NULL;
    int fd;
    Py_BEGIN_ALLOW_THREADS
    fd = shm_open(name, flags | O_CLOEXEC, (mode_t)mode);
    Py_END_ALLOW_THREADS
    if (fd < 0) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, name);
    return PyLong_FromLong(fd);
}

static PyObject *mod_shm_unlink(PyObject *m, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    if (shm_unlink(name) < 0) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, name);
    Py_RETURN_NONE;
}

static PyObject *mod_set_process_identity(PyObject *m, PyObject *args) {
    unsigned long pid;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "kK", &pid, &start)) return NULL;
    process_pid = (uint32_t)pid;
    process_start = (uint64_t)start;
    Py_RETURN_NONE;
}

static PyObject *mod_set_errors(PyObject *m, PyObject *args) {
    PyObject *a, *b, *c, *d, *e, *f, *g, *i;
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &a, &b, &c, &d, &e, &f, &g, &i)) return NULL;
    Py_XSETREF(ErrTimeout, Py_NewRef(g));
    Py_XSETREF(ErrPeerClosed, Py_NewRef(i));
    Py_XSETREF(ErrInIsr, Py_NewRef(f));
    Py_XSETREF(ErrCorrupt, Py_NewRef(a));
    Py_XSETREF(ErrTooLarge, Py_NewRef(b));
    Py_XSETREF(ErrTooSmall, Py_NewRef(c));
    Py_XSETREF(ErrClosed, Py_NewRef(d));
    Py_XSETREF(ErrRoleBusy, Py_NewRef(e));
    Py_RETURN_NONE;
}

static PyObject *mod_get_default_spin(PyObject *m, PyObject *unused) {
    return PyFloat_FromDouble((double)default_spin_ns / 1e9);
}

static PyObject *mod_set_default_spin(PyObject *m, PyObject *arg) {
    double s = PyFloat_AsDouble(arg);
    if (s == -1.0 && PyErr_Occurred()) return NULL;
    if (isnan(s) || s < 0 || s > 1.0) {
        PyErr_SetString(PyExc_ValueError, "spin must be between 0 and 1 second");
        return NULL;
    }
    default_spin_ns = (long)(s * 1e9);
    Py_RETURN_NONE;
}

static PyObject *mod_set_isr_context(PyObject *m, PyObject *arg) {
    int flag = PyObject_IsTrue(arg);
    if (flag < 0) return NULL;
    int previous = in_isr_context;
    in_isr_context = flag;
    return PyBool_FromLong(previous);
}

static PyObject *mod_in_isr(PyObject *m, PyObject *unused) { return PyBool_FromLong(in_isr_context); }

static PyMethodDef module_methods[] = {
    {"set_isr_context", mod_set_isr_context, METH_O,
     "set_isr_context(flag) -> previous: mark this thread as running an interrupt handler."},
    {"in_isr", mod_in_isr, METH_NOARGS, "True while this thread runs an interrupt handler."},
    {"shm_open", mod_shm_open, METH_VARARGS, "shm_open(name, flags, mode=0o600) -> fd"},
    {"shm_unlink", mod_shm_unlink, METH_O, "shm_unlink(name)"},
    {"set_process_identity", mod_set_process_identity, METH_VARARGS,
     "set_process_identity(pid, start_time): the token buffers record for their writer and reader."},
    {"_set_errors", mod_set_errors, METH_VARARGS, "Install the exception classes the core raises."},
    {"get_default_spin", mod_get_default_spin, METH_NOARGS, "Seconds new buffers spin before sleeping."},
    {"set_default_spin", mod_set_default_spin, METH_O, "Set the spin of buffers made from now on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "ampipc._native", "The ampipc C core.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&MappingType) < 0 || PyType_Ready(&RingType) < 0 || PyType_Ready(&MessageRingType) < 0 || PyType_Ready(&StreamRingType) < 0)
        return NULL;
    ErrCorrupt = Py_NewRef(PyExc_RuntimeError);
    ErrTooLarge = Py_NewRef(PyExc_ValueError);
    ErrTooSmall = Py_NewRef(PyExc_ValueError);
    ErrClosed = Py_NewRef(PyExc_ValueError);
    ErrRoleBusy = Py_NewRef(PyExc_RuntimeError);
    ErrInIsr = Py_NewRef(PyExc_RuntimeError);
    ErrTimeout = Py_NewRef(PyExc_TimeoutError);
    ErrPeerClosed = Py_NewRef(PyExc_EOFError);
    guard_install();
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Mapping", (PyObject *)&MappingType) < 0 ||
        PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObjectRef(m, "MessageRing", (PyObject *)&MessageRingType) < 0 ||
        PyModule_AddObjectRef(m, "StreamRing", (PyObject *)&StreamRingType) < 0 ||
        PyModule_AddIntConstant(m, "RING_HEADER_SIZE", RING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "RING_MAGIC", (long)RING_MAGIC) < 0 ||
        PyModule_AddIntConstant(m, "PREFIX_SIZE", PREFIX_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
