/* ampipc._vring: the RPMsg fast path (split virtqueues + the 16-byte rpmsg header) in C.
 *
 * Theory of operation
 * -------------------
 * This module mirrors, call for call, the sans-I/O Python reference in ampipc/rpmsg/virtqueue.py
 * (DriverQueue, DeviceQueue) and the hot loops of ampipc/rpmsg/rpmsg_virtio.py (_poll_driver,
 * _poll_device, _decode, _fill). The Python code stays the readable statement of the protocol;
 * tests run the same operation sequences through both on two byte images and compare the images
 * and every result byte for byte. Error messages are the Python ones, character for character.
 *
 * Memory: a ring object keeps a reference to the shared area (any writable buffer-protocol object:
 * the region's memoryview slice, OpenAMP's shm mapping, or a bytearray byte image) and acquires its
 * buffer on every call, so the area can never be unmapped under a call, and a released view gives a
 * clean Python error. Every offset is checked against the size the area had when the ring was made:
 *   - the ring geometry (da, num, align) is validated at construction exactly as
 *     VringGeometry.problem() does, so ring words and slots are in bounds by construction;
 *   - every head, index and used id read from shared memory is checked against num;
 *   - every descriptor's (addr, len) is checked against the buffer pool (device side), and the
 *     driver never re-reads an address from shared memory (it keeps its own record);
 *   - every rpmsg header length is bounded by the buffer size and the descriptor length, and every
 *     header or payload access is checked against the area (OutOfWindow otherwise).
 * A corrupt or hostile peer therefore raises RingError / ProtocolError or is reported as an error
 * entry; it never makes this process read or write outside the area.
 *
 * Ordering: a side writes descriptors, slots and payloads with plain stores, then publishes its
 * (flags | idx << 16) word with one sequentially consistent 32-bit store; the peer's word is read
 * with a sequentially consistent load before the slots it covers are read. Sequential consistency
 * (not only acquire/release) also orders "publish my index" before "read the peer's NO_NOTIFY /
 * NO_INTERRUPT flag", the store-load pair virtio's kick suppression needs. These are the same
 * semantics as _native.Mapping's atomics, so the two paths interoperate, also on aarch64.
 *
 * The GIL is kept for ring work (a copy of at most one buffer costs less than giving the GIL away
 * and taking it back); it is released only by spin_wait_u32 and the Doorbell's spin and futex sleep.
 * So a ring call is atomic to the other Python threads of the process: the endpoint layer's
 * lock-free send relies on it for tx_send, whose ring work, counting and doorbell ring are one call.
 * rx_batch may call back into Python (direct delivery, below) only once its ring work is done.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <endian.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "_native/clock.h"

/* ---- the wire (rpmsg/_wire.py is the commented reference) ------------------------------------ */
#define DESC_SIZE 16
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4
#define AVAIL_OFF_RING 4
#define AVAIL_F_NO_INTERRUPT 1
#define USED_OFF_RING 4
#define USED_ELEM_SIZE 8
#define USED_F_NO_NOTIFY 1
#define MAX_VRING_NUM 32768
#define RPMSG_HDR_SIZE 16
#define PURE_SPIN_NS 2000 /* the doorbell spin yields the CPU after this long */
#define ERRMSG 1024 /* room for any error message below */

static PyObject *ErrRing, *ErrExhausted, *ErrOutOfWindow, *ErrProtocol;

/* ---- byte access (little-endian wire, any host) ----------------------------------------------- */
static inline uint16_t rd16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static inline void wr16(unsigned char *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void wr32(unsigned char *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void wr64(unsigned char *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

/* The published words: one 32-bit access, sequentially consistent. An unaligned word can only occur
 * in a byte image (a bytearray slice); it is accessed bytewise between full fences. */
static inline uint32_t load_word(const unsigned char *p) {
    if (((uintptr_t)p & 3) == 0) return le32toh(__atomic_load_n((const uint32_t *)p, __ATOMIC_SEQ_CST));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t v = rd32(p);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return v;
}
static inline void store_word(unsigned char *p, uint32_t v) {
    if (((uintptr_t)p & 3) == 0) {
        __atomic_store_n((uint32_t *)p, htole32(v), __ATOMIC_SEQ_CST);
        return;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    wr32(p, v);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* ---- the shared area of one call ------------------------------------------------------------ */
typedef struct {
    Py_buffer b;
    unsigned char *p;
    Py_ssize_t size; /* the size the ring was made for (never more than the buffer now holds) */
} area_t;

static int area_open(PyObject *obj, Py_ssize_t size, area_t *a) {
    if (PyObject_GetBuffer(obj, &a->b, PyBUF_WRITABLE) < 0) return -1;
    if (a->b.len < size) {
        PyBuffer_Release(&a->b);
        PyErr_Format(ErrOutOfWindow, "the shared area shrank from %zd to %zd bytes", size, a->b.len);
        return -1;
    }
    a->p = (unsigned char *)a->b.buf;
    a->size = size;
    return 0;
}

static inline void area_close(area_t *a) { PyBuffer_Release(&a->b); }

/* Window._check: 0 <= offset and offset + length <= size, else OutOfWindow with its message. */
static int area_check(const area_t *a, uint64_t offset, uint64_t length) {
    if (offset <= (uint64_t)a->size && length <= (uint64_t)a->size - offset) return 0;
    char msg[ERRMSG];
    snprintf(msg, sizeof msg, "access of %llu bytes at 0x%llx is outside the shared area of 0x%llx bytes",
             (unsigned long long)length, (unsigned long long)offset, (unsigned long long)a->size);
    PyErr_SetString(ErrOutOfWindow, msg);
    return -1;
}

/* ---- what both halves share --------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *area_obj;
    Py_ssize_t area_size;
    PyObject *name; /* str */
    uint32_t num, mask;
    Py_ssize_t da, ring_size, desc, avail_word, avail_ring, used_word, used_ring;
    /* What this ring carried (the link's statistics fold them in): data messages and their payload
     * bytes (sent by tx_send, received by rx_batch; name-service records received excluded), and
     * the doorbell rings tx_send made itself. Written with the GIL held, by one call at a time. */
    unsigned long long count_messages, count_bytes, count_kicks;
} QueueBase;

/* A ring error found by an internal step: message and the head to return (-1: none). */
typedef struct {
    char msg[ERRMSG];
    long head;
} ring_err_t;

static const char *qname(QueueBase *q) {
    const char *s = PyUnicode_AsUTF8(q->name);
    if (s == NULL) {
        PyErr_Clear();
        return "vring";
    }
    return s;
}

static PyObject *raise_ring_error(const ring_err_t *e) {
    PyObject *msg = PyUnicode_FromString(e->msg);
    if (msg == NULL) return NULL;
    PyObject *args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    if (args == NULL) return NULL;
    PyObject *kw = NULL;
    if (e->head >= 0) {
        kw = Py_BuildValue("{s:l}", "head", e->head);
        if (kw == NULL) {
            Py_DECREF(args);
            return NULL;
        }
    }
    PyObject *exc = PyObject_Call(ErrRing, args, kw);
    Py_DECREF(args);
    Py_XDECREF(kw);
    if (exc == NULL) return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static inline Py_ssize_t align_up(Py_ssize_t v, Py_ssize_t a) { return (v + a - 1) & ~(a - 1); }
static inline int is_pow2(long long v) { return v > 0 && (v & (v - 1)) == 0; }

/* VringGeometry.problem(), with its messages; fills the offsets on success. */
static int queue_base_init(QueueBase *q, PyObject *area_obj, long long da, long long num, long long align, PyObject *name) {
    Py_buffer b;
    if (PyObject_GetBuffer(area_obj, &b, PyBUF_WRITABLE) < 0) return -1;
    Py_ssize_t size = b.len;
    PyBuffer_Release(&b);
    const char *n = PyUnicode_AsUTF8(name);
    if (n == NULL) return -1;
    char msg[ERRMSG];
    if (!is_pow2(num) || num > MAX_VRING_NUM) {
        PyErr_Format(ErrProtocol, "%s: vring num %lld is not a power of two <= %d", n, num, MAX_VRING_NUM);
        return -1;
    }
    if (!is_pow2(align) || align < 4 || align > (1LL << 30)) {
        snprintf(msg, sizeof msg, "%s: vring align 0x%llx is not a power of two >= 4", n, align);
        PyErr_SetString(ErrProtocol, msg);
        return -1;
    }
    if (da % 4) {
        snprintf(msg, sizeof msg, "%s: vring da 0x%llx is not 4-byte aligned", n, da);
        PyErr_SetString(ErrProtocol, msg);
        return -1;
    }
    long long avail = da + DESC_SIZE * num;
    long long used = align_up((Py_ssize_t)(avail + AVAIL_OFF_RING + 2 * num + 2), (Py_ssize_t)align);
    long long ring_size = used + USED_OFF_RING + USED_ELEM_SIZE * num + 2 - da;
    if (da < 0 || da > (long long)size || ring_size > (long long)size - da) {
        snprintf(msg, sizeof msg, "%s: vring at 0x%llx (+0x%llx) is outside the shared area of 0x%llx bytes", n, da,
                 ring_size, (long long)size);
        PyErr_SetString(ErrProtocol, msg);
        return -1;
    }
    Py_INCREF(area_obj);
    Py_XSETREF(q->area_obj, area_obj);
    Py_INCREF(name);
    Py_XSETREF(q->name, name);
    q->area_size = size;
    q->num = (uint32_t)num;
    q->mask = (uint32_t)num - 1;
    q->da = (Py_ssize_t)da;
    q->ring_size = (Py_ssize_t)ring_size;
    q->desc = (Py_ssize_t)da;
    q->avail_word = (Py_ssize_t)avail;
    q->avail_ring = (Py_ssize_t)avail + AVAIL_OFF_RING;
    q->used_word = (Py_ssize_t)used;
    q->used_ring = (Py_ssize_t)used + USED_OFF_RING;
    return 0;
}

static int queue_open(QueueBase *q, area_t *a) {
    if (q->area_obj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the ring is not initialised");
        return -1;
    }
    return area_open(q->area_obj, q->area_size, a);
}

/* _fill: the header (src, dst, reserved 0, len, flags 0), then the payload, each bounds-checked. */
static int fill_message(area_t *a, uint64_t addr, uint32_t src, uint32_t dst, const Py_buffer *payload) {
    if (area_check(a, addr, RPMSG_HDR_SIZE) < 0) return -1;
    unsigned char *h = a->p + addr;
    wr32(h, src);
    wr32(h + 4, dst);
    wr32(h + 8, 0);
    wr16(h + 12, (uint16_t)payload->len);
    wr16(h + 14, 0);
    if (area_check(a, addr + RPMSG_HDR_SIZE, (uint64_t)payload->len) < 0) return -1;
    /* memmove: the payload may be a view of this very area (a message forwarded in place) */
    memmove(a->p + addr + RPMSG_HDR_SIZE, payload->buf, (size_t)payload->len);
    return 0;
}

/* Error entries: (kind, message) tuples. */
static int push_error(PyObject *errors, const char *kind, const char *msg) {
    PyObject *t = Py_BuildValue("(ss)", kind, msg);
    if (t == NULL) return -1;
    int r = PyList_Append(errors, t);
    Py_DECREF(t);
    return r;
}

/* RpmsgVirtio._decode up to the name-service split: appends an event (src, dst, payload) or an error
 * entry (kind, message) to items, in the order the Python loop meets them; returns 0, or -1. */
static int decode_message(area_t *a, uint64_t addr, uint64_t capacity, uint64_t buffer_size, PyObject *items) {
    char msg[ERRMSG];
    if (capacity > buffer_size) capacity = buffer_size;
    if (capacity < RPMSG_HDR_SIZE) {
        snprintf(msg, sizeof msg, "buffer at 0x%llx of %llu bytes cannot hold a header", (unsigned long long)addr,
                 (unsigned long long)capacity);
        return push_error(items, "short-buffer", msg);
    }
    if (area_check(a, addr, RPMSG_HDR_SIZE) < 0) return -1;
    const unsigned char *h = a->p + addr;
    uint32_t src = rd32(h), dst = rd32(h + 4);
    uint16_t length = rd16(h + 12);
    if (length > capacity - RPMSG_HDR_SIZE) {
        snprintf(msg, sizeof msg, "header len %u exceeds the buffer at 0x%llx (%llu max)", (unsigned)length,
                 (unsigned long long)addr, (unsigned long long)(capacity - RPMSG_HDR_SIZE));
        return push_error(items, "header-length", msg);
    }
    if (area_check(a, addr + RPMSG_HDR_SIZE, length) < 0) return -1;
    /* built by hand: this runs once per message received, and Py_BuildValue parses its format each time */
    PyObject *t = PyTuple_New(3);
    if (t == NULL) return -1;
    PyObject *s = PyLong_FromUnsignedLong(src), *d = PyLong_FromUnsignedLong(dst);
    PyObject *data = PyBytes_FromStringAndSize((const char *)(a->p + addr + RPMSG_HDR_SIZE), (Py_ssize_t)length);
    PyTuple_SET_ITEM(t, 0, s);
    PyTuple_SET_ITEM(t, 1, d);
    PyTuple_SET_ITEM(t, 2, data);
    if (s == NULL || d == NULL || data == NULL) {
        Py_DECREF(t);
        return -1;
    }
    int r = PyList_Append(items, t);
    Py_DECREF(t);
    return r;
}

/* The endpoint layer's direct delivery, after a batch's ring work is done (so whatever the callables
 * run cannot meet a ring in mid-update). direct maps a local address to a callable taking
 * (src, payload), the append of the queue of a bound endpoint without a callback, or to a pair
 * (callback, endpoint) of a bound endpoint with one: its message becomes the call
 * (callback, endpoint, payload, src) in *calls_out, for the caller to make once it holds no lock
 * (a callback may send). Data messages to such addresses are handed over while the batch allows;
 * the first data or name-service message that is not (ns_addr is the name-service address, or -1
 * when the feature is off) ends direct delivery, and it and everything after it stay in the batch,
 * so the Python router sees them in wire order with every binding change before it applied. Error entries stay in the batch and do not end it.
 * Returns a new reference to the rest, with the counts in *delivered_out, *data_out and *bytes_out, or
 * NULL with an exception set; the data counts cover the whole batch, delivered or not (name-service
 * records excluded). */
static PyObject *deliver_direct(PyObject *events, PyObject *direct, long long ns_addr, Py_ssize_t *delivered_out,
                                Py_ssize_t *data_out, unsigned long long *bytes_out, PyObject **calls_out) {
    Py_ssize_t n = PyList_GET_SIZE(events), delivered = 0, data = 0;
    unsigned long long nbytes = 0;
    PyObject *rest = NULL, *calls = NULL;
    Py_ssize_t i = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(events, k);
        if (PyTuple_GET_SIZE(item) == 3 && (ns_addr < 0 || PyLong_AsLongLong(PyTuple_GET_ITEM(item, 1)) != ns_addr)) {
            data++;
            nbytes += (unsigned long long)PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 2));
        }
    }
    if (direct != Py_None) {
        if (!PyDict_Check(direct)) {
            PyErr_SetString(PyExc_TypeError, "rx_batch: direct must be a dict or None");
            return NULL;
        }
        for (; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(events, i);
            if (PyTuple_GET_SIZE(item) != 3) { /* an error entry: the router records it */
                if (rest == NULL && (rest = PyList_New(0)) == NULL) goto fail;
                if (PyList_Append(rest, item) < 0) goto fail;
                continue;
            }
            PyObject *dst = PyTuple_GET_ITEM(item, 1);
            if (ns_addr >= 0 && PyLong_AsLongLong(dst) == ns_addr) break;
            PyObject *target = PyDict_GetItemWithError(direct, dst);
            if (target == NULL) {
                if (PyErr_Occurred()) goto fail;
                break;
            }
            if (PyTuple_Check(target) && PyTuple_GET_SIZE(target) == 2) { /* (callback, endpoint) */
                if (calls == NULL && (calls = PyList_New(0)) == NULL) goto fail;
                PyObject *call = PyTuple_Pack(4, PyTuple_GET_ITEM(target, 0), PyTuple_GET_ITEM(target, 1),
                                              PyTuple_GET_ITEM(item, 2), PyTuple_GET_ITEM(item, 0));
                int r = call == NULL ? -1 : PyList_Append(calls, call);
                Py_XDECREF(call);
                if (r < 0) goto fail;
                delivered++;
                continue;
            }
            Py_INCREF(target); /* the callable may change the dict */
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 2));
            PyObject *r = pair == NULL ? NULL : PyObject_CallOneArg(target, pair);
            Py_DECREF(target);
            Py_XDECREF(pair);
            if (r == NULL) goto fail;
            Py_DECREF(r);
            delivered++;
        }
    }
    if (rest == NULL) {
        rest = i == 0 ? (Py_INCREF(events), events) : PyList_GetSlice(events, i, n);
        if (rest == NULL) goto fail;
    } else if (i < n) {
        PyObject *tail = PyList_GetSlice(events, i, n);
        if (tail == NULL) goto fail;
        int r = PyList_SetSlice(rest, PyList_GET_SIZE(rest), PyList_GET_SIZE(rest), tail);
        Py_DECREF(tail);
        if (r < 0) goto fail;
    }
    if (calls == NULL && (calls = PyTuple_New(0)) == NULL) goto fail;
    *delivered_out = delivered;
    *data_out = data;
    *bytes_out = nbytes;
    *calls_out = calls;
    return rest;
fail:
    Py_XDECREF(rest);
    Py_XDECREF(calls);
    return NULL;
}

/* A transmit call's kick, given a doorbell to ring (a Doorbell, or None): 0 none needed, 1 needed
 * (no Doorbell to ring: the caller notifies), 2 rung here; -1 with an exception set. */
static int kick_with(PyObject *bell, int kick);

/* rx_batch's arguments (buffer_size, ns_addr=-1, direct=None), parsed by hand (METH_FASTCALL): 1 or 0 with
 * an exception set. */
static int parse_rx_args(PyObject *const *args, Py_ssize_t nargs, unsigned long long *buffer_size, long long *ns_addr,
                         PyObject **direct) {
    *ns_addr = -1;
    *direct = Py_None;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "rx_batch takes 1 to 3 arguments (%zd given)", nargs);
        return 0;
    }
    *buffer_size = PyLong_AsUnsignedLongLong(args[0]);
    if (*buffer_size == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    if (nargs > 1) {
        *ns_addr = PyLong_AsLongLong(args[1]);
        if (*ns_addr == -1 && PyErr_Occurred()) return 0;
    }
    if (nargs > 2) *direct = args[2];
    return 1;
}

/* The tail every rx_batch returns: (events, more, kick, delivered, data messages, calls); the batch's
 * data messages and bytes are added to the ring's counts. */
static PyObject *rx_result(QueueBase *q, PyObject *events, PyObject *direct, long long ns_addr, int more, int kick) {
    Py_ssize_t delivered, data;
    unsigned long long nbytes;
    PyObject *calls;
    PyObject *rest = deliver_direct(events, direct, ns_addr, &delivered, &data, &nbytes, &calls);
    Py_DECREF(events);
    if (rest == NULL) return NULL;
    q->count_messages += (unsigned long long)data;
    q->count_bytes += nbytes;
    PyObject *r = PyTuple_New(6);
    if (r == NULL) {
        Py_DECREF(rest);
        Py_DECREF(calls);
        return NULL;
    }
    PyTuple_SET_ITEM(r, 5, calls);
    PyTuple_SET_ITEM(r, 0, rest);
    PyTuple_SET_ITEM(r, 1, Py_NewRef(more ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 2, Py_NewRef(kick ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 3, PyLong_FromSsize_t(delivered));
    PyTuple_SET_ITEM(r, 4, PyLong_FromSsize_t(data));
    for (int k = 3; k < 5; k++) {
        if (PyTuple_GET_ITEM(r, k) == NULL) {
            Py_DECREF(r);
            return NULL;
        }
    }
    return r;
}

static int parse_u32(PyObject *o, uint32_t *out, const char *what) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (v > 0xFFFFFFFFULL) {
        PyErr_Format(PyExc_OverflowError, "%s %llu does not fit in 32 bits", what, v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* ==== DriverRing (DriverQueue) ================================================================= */
typedef struct {
    QueueBase q;
    uint16_t *free_q; /* circular queue of free heads: popped at the front, appended at the back */
    uint32_t free_front, free_count;
    uint64_t *rec_addr; /* in-flight record: what this side handed out, never re-read */
    uint32_t *rec_len;
    uint8_t *rec_on;
    uint32_t in_flight;
    uint16_t avail_idx, avail_flags, last_used;
    /* Transmit buffers (RpmsgVirtio's _tx_free deque and _tx_bump), once configure_tx was called:
     * returned buffers queue here, oldest first; fresh ones come from [bump, bump_end). Every
     * buffer queued was in flight before, so the queue never holds more than num. */
    uint64_t *txf_addr;
    uint32_t *txf_len;
    uint32_t txf_front, txf_count;
    uint64_t bump, bump_end;
    uint32_t buffer_size;
} DriverRing;

static void driver_dealloc(DriverRing *self) {
    PyMem_Free(self->free_q);
    PyMem_Free(self->rec_addr);
    PyMem_Free(self->rec_len);
    PyMem_Free(self->rec_on);
    PyMem_Free(self->txf_addr);
    PyMem_Free(self->txf_len);
    Py_XDECREF(self->q.area_obj);
    Py_XDECREF(self->q.name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void driver_clear_state(DriverRing *d) {
    for (uint32_t i = 0; i < d->q.num; i++) d->free_q[i] = (uint16_t)i;
    d->free_front = 0;
    d->free_count = d->q.num;
    memset(d->rec_on, 0, d->q.num);
    d->in_flight = 0;
    d->avail_idx = d->avail_flags = d->last_used = 0;
    d->txf_front = d->txf_count = 0;
}

static int driver_init(DriverRing *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"area", "da", "num", "align", "name", NULL};
    PyObject *area, *name = NULL;
    long long da, num, align;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLLL|U", kwlist, &area, &da, &num, &align, &name)) return -1;
    PyObject *default_name = NULL;
    if (name == NULL) name = default_name = PyUnicode_FromString("vring");
    if (name == NULL) return -1;
    int r = queue_base_init(&self->q, area, da, num, align, name);
    Py_XDECREF(default_name);
    if (r < 0) return -1;
    PyMem_Free(self->free_q);
    PyMem_Free(self->rec_addr);
    PyMem_Free(self->rec_len);
    PyMem_Free(self->rec_on);
    PyMem_Free(self->txf_addr);
    PyMem_Free(self->txf_len);
    uint32_t n = self->q.num;
    self->free_q = PyMem_Calloc(n, sizeof(uint16_t));
    self->rec_addr = PyMem_Calloc(n, sizeof(uint64_t));
    self->rec_len = PyMem_Calloc(n, sizeof(uint32_t));
    self->rec_on = PyMem_Calloc(n, 1);
    self->txf_addr = PyMem_Calloc(n, sizeof(uint64_t));
    self->txf_len = PyMem_Calloc(n, sizeof(uint32_t));
    self->bump = self->bump_end = 0;
    self->buffer_size = 0;
    if (!self->free_q || !self->rec_addr || !self->rec_len || !self->rec_on || !self->txf_addr || !self->txf_len) {
        PyErr_NoMemory();
        return -1;
    }
    driver_clear_state(self);
    return 0;
}

static inline void driver_publish(DriverRing *d, area_t *a) {
    store_word(a->p + d->q.avail_word, (uint32_t)d->avail_flags | (uint32_t)d->avail_idx << 16);
}

static PyObject *driver_reset(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    memset(a.p + self->q.da, 0, (size_t)self->q.ring_size);
    for (uint32_t i = 0; i + 1 < self->q.num; i++) wr16(a.p + self->q.desc + (Py_ssize_t)i * DESC_SIZE + 14, (uint16_t)(i + 1));
    area_close(&a);
    driver_clear_state(self);
    Py_RETURN_NONE;
}

static PyObject *driver_set_no_interrupt(DriverRing *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    self->avail_flags = on ? AVAIL_F_NO_INTERRUPT : 0;
    driver_publish(self, &a);
    area_close(&a);
    Py_RETURN_NONE;
}

static PyObject *driver_publish_py(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    driver_publish(self, &a);
    area_close(&a);
    Py_RETURN_NONE;
}

/* DriverQueue.add: returns the head, or -1 with an exception set. */
static long driver_add(DriverRing *d, area_t *a, uint64_t addr, uint32_t length, int writable, int publish) {
    if (d->free_count == 0) {
        PyErr_Format(ErrExhausted, "%s: no free descriptor", qname(&d->q));
        return -1;
    }
    uint16_t head = d->free_q[d->free_front];
    d->free_front = (d->free_front + 1) & d->q.mask;
    d->free_count--;
    /* ``next`` keeps the chain written at reset, as in the reference */
    unsigned char *desc = a->p + d->q.desc + (Py_ssize_t)head * DESC_SIZE;
    wr64(desc, addr);
    wr32(desc + 8, length);
    wr16(desc + 12, writable ? DESC_F_WRITE : 0);
    wr16(a->p + d->q.avail_ring + 2 * (Py_ssize_t)(d->avail_idx & d->q.mask), head);
    d->avail_idx = (uint16_t)(d->avail_idx + 1);
    d->rec_addr[head] = addr;
    d->rec_len[head] = length;
    d->rec_on[head] = 1;
    d->in_flight++;
    if (publish) driver_publish(d, a);
    return head;
}

static PyObject *driver_add_py(DriverRing *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"addr", "length", "writable", "publish", NULL};
    unsigned long long addr;
    PyObject *length_obj;
    int writable, publish = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KOp|$p", kwlist, &addr, &length_obj, &writable, &publish)) return NULL;
    uint32_t length;
    if (parse_u32(length_obj, &length, "length") < 0) return NULL;
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    long head = driver_add(self, &a, addr, length, writable, publish);
    area_close(&a);
    if (head < 0) return NULL;
    return PyLong_FromLong(head);
}

static inline int driver_needs_kick(DriverRing *d, area_t *a) {
    return !(load_word(a->p + d->q.used_word) & USED_F_NO_NOTIFY);
}

static PyObject *driver_needs_kick_py(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    int k = driver_needs_kick(self, &a);
    area_close(&a);
    return PyBool_FromLong(k);
}

static inline int driver_has_used(DriverRing *d, area_t *a) {
    return (load_word(a->p + d->q.used_word) >> 16) != d->last_used;
}

static PyObject *driver_has_used_py(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    int k = driver_has_used(self, &a);
    area_close(&a);
    return PyBool_FromLong(k);
}

/* DriverQueue.get_used: 0 none, 1 item, 2 ring error (in *e; the element is consumed). */
static int driver_get_used(DriverRing *d, area_t *a, uint32_t *head_out, uint64_t *addr_out, uint32_t *len_out,
                           uint32_t *used_len_out, ring_err_t *e) {
    uint16_t used_idx = (uint16_t)(load_word(a->p + d->q.used_word) >> 16);
    uint16_t pending = (uint16_t)(used_idx - d->last_used);
    if (pending == 0) return 0;
    e->head = -1;
    if (pending > d->q.num) {
        uint16_t old = d->last_used;
        d->last_used = used_idx;
        snprintf(e->msg, ERRMSG, "%s: used.idx jumped from %u to %u (more than num=%u ahead)", qname(&d->q), old,
                 used_idx, d->q.num);
        return 2;
    }
    uint32_t slot = d->last_used & d->q.mask;
    d->last_used = (uint16_t)(d->last_used + 1);
    const unsigned char *elem = a->p + d->q.used_ring + (Py_ssize_t)slot * USED_ELEM_SIZE;
    uint32_t head = rd32(elem), used_len = rd32(elem + 4);
    if (head >= d->q.num) {
        snprintf(e->msg, ERRMSG, "%s: used id %u is out of range (num=%u)", qname(&d->q), head, d->q.num);
        return 2;
    }
    if (!d->rec_on[head]) {
        snprintf(e->msg, ERRMSG, "%s: used id %u names a descriptor the device does not hold", qname(&d->q), head);
        return 2;
    }
    d->rec_on[head] = 0;
    d->in_flight--;
    d->free_q[(d->free_front + d->free_count) & d->q.mask] = (uint16_t)head;
    d->free_count++;
    *head_out = head;
    *addr_out = d->rec_addr[head];
    *len_out = d->rec_len[head];
    *used_len_out = used_len;
    return 1;
}

static PyObject *driver_get_used_py(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    uint32_t head, len, used_len;
    uint64_t addr;
    ring_err_t e;
    int r = driver_get_used(self, &a, &head, &addr, &len, &used_len, &e);
    area_close(&a);
    if (r == 0) Py_RETURN_NONE;
    if (r == 2) return raise_ring_error(&e);
    return Py_BuildValue("(IKII)", head, (unsigned long long)addr, len, used_len);
}

/* RpmsgVirtio._poll_driver without the name-service split:
 * rx_batch(buffer_size, ns_addr=-1, direct=None) -> (items, more, kick, delivered, data, calls);
 * items are events (src, dst, payload) and error entries (kind, message) in the order met (the last
 * error must be the reference's last), less the data messages deliver_direct handed over. */
static PyObject *driver_rx_batch(DriverRing *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned long long buffer_size;
    long long ns_addr;
    PyObject *direct;
    if (!parse_rx_args(args, nargs, &buffer_size, &ns_addr, &direct)) return NULL;
    PyObject *events = PyList_New(0);
    /* the repost list: on the stack for the usual ring sizes (a heap allocation per poll costs more
     * than the poll of one message) */
    uint64_t addr_here[256];
    uint32_t len_here[256];
    int on_heap = self->q.num > 256;
    uint64_t *repost_addr = on_heap ? PyMem_Malloc(self->q.num * sizeof(uint64_t)) : addr_here;
    uint32_t *repost_len = on_heap ? PyMem_Malloc(self->q.num * sizeof(uint32_t)) : len_here;
    area_t a;
    int opened = 0, more = 0, kick = 0;
    uint32_t nrepost = 0;
    char msg[ERRMSG];
    if (events == NULL) goto fail;
    if (repost_addr == NULL || repost_len == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (queue_open(&self->q, &a) < 0) goto fail;
    opened = 1;
    /* Reposted only after the batch: a head reposted at once would be in flight again, and a second
     * used element naming it in the same batch would pass for a fresh message. */
    uint32_t i;
    for (i = 0; i < self->q.num; i++) {
        uint32_t head, buflen, used_len;
        uint64_t addr;
        ring_err_t e;
        int r = driver_get_used(self, &a, &head, &addr, &buflen, &used_len, &e);
        if (r == 2) {
            if (push_error(events, "used-ring", e.msg) < 0) goto fail;
            continue;
        }
        if (r == 0) break;
        if (used_len > buflen) {
            snprintf(msg, sizeof msg, "used len %u exceeds the buffer length %u", used_len, buflen);
            if (push_error(events, "used-length", msg) < 0) goto fail;
        } else if (used_len >= RPMSG_HDR_SIZE) {
            if (decode_message(&a, addr, used_len, buffer_size, events) < 0) goto fail;
        }
        repost_addr[nrepost] = addr;
        repost_len[nrepost] = buflen;
        nrepost++;
    }
    if (i == self->q.num) more = driver_has_used(self, &a);
    for (uint32_t k = 0; k < nrepost; k++)
        if (driver_add(self, &a, repost_addr[k], repost_len[k], 1, 0) < 0) goto fail;
    if (nrepost) {
        driver_publish(self, &a);
        if (driver_needs_kick(self, &a)) kick = 1;
    }
    area_close(&a);
    if (on_heap) {
        PyMem_Free(repost_addr);
        PyMem_Free(repost_len);
    }
    return rx_result(&self->q, events, direct, ns_addr, more, kick);
fail:
    if (opened) area_close(&a);
    if (on_heap) {
        PyMem_Free(repost_addr);
        PyMem_Free(repost_len);
    }
    Py_XDECREF(events);
    return NULL;
}

/* RpmsgVirtio.reclaim's loop: reclaim() -> ([(addr, buffer length)], [(kind, message)]). */
static PyObject *driver_reclaim(DriverRing *self, PyObject *unused) {
    PyObject *freed = PyList_New(0), *errors = PyList_New(0);
    area_t a;
    int opened = 0;
    if (freed == NULL || errors == NULL) goto fail;
    if (queue_open(&self->q, &a) < 0) goto fail;
    opened = 1;
    for (uint32_t i = 0; i < self->q.num; i++) {
        uint32_t head, buflen, used_len;
        uint64_t addr;
        ring_err_t e;
        int r = driver_get_used(self, &a, &head, &addr, &buflen, &used_len, &e);
        if (r == 2) {
            if (push_error(errors, "used-ring", e.msg) < 0) goto fail;
            continue;
        }
        if (r == 0) break;
        PyObject *t = Py_BuildValue("(KI)", (unsigned long long)addr, buflen);
        if (t == NULL) goto fail;
        int ar = PyList_Append(freed, t);
        Py_DECREF(t);
        if (ar < 0) goto fail;
    }
    area_close(&a);
    return Py_BuildValue("(NN)", freed, errors);
fail:
    if (opened) area_close(&a);
    Py_XDECREF(freed);
    Py_XDECREF(errors);
    return NULL;
}

/* _fill + add(addr, buflen, writable=False) + needs_kick: add_message(addr, buflen, src, dst, payload) -> kick. */
static PyObject *driver_add_message(DriverRing *self, PyObject *args) {
    unsigned long long addr;
    PyObject *buflen_obj, *src_obj, *dst_obj;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "KOOOy*", &addr, &buflen_obj, &src_obj, &dst_obj, &payload)) return NULL;
    uint32_t buflen, src, dst;
    PyObject *result = NULL;
    area_t a;
    if (parse_u32(buflen_obj, &buflen, "length") < 0 || parse_u32(src_obj, &src, "src") < 0 ||
        parse_u32(dst_obj, &dst, "dst") < 0)
        goto out;
    if (payload.len > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "a %zd-byte payload does not fit a 16-bit header length", payload.len);
        goto out;
    }
    if (queue_open(&self->q, &a) < 0) goto out;
    if (fill_message(&a, addr, src, dst, &payload) == 0 && driver_add(self, &a, addr, buflen, 0, 1) >= 0)
        result = PyBool_FromLong(driver_needs_kick(self, &a));
    area_close(&a);
out:
    PyBuffer_Release(&payload);
    return result;
}

/* ---- the transmit side of RpmsgVirtio's driver: reclaim, _send_driver, has_tx_buffer ---- */

static PyObject *driver_configure_tx(DriverRing *self, PyObject *args) {
    unsigned long long bump, bump_end;
    unsigned int buffer_size;
    if (!PyArg_ParseTuple(args, "KKI", &bump, &bump_end, &buffer_size)) return NULL;
    self->bump = bump;
    self->bump_end = bump_end;
    self->buffer_size = buffer_size;
    self->txf_front = self->txf_count = 0;
    Py_RETURN_NONE;
}

/* The reclaim loop; error entries are appended to *errors (made on the first one). */
static int driver_tx_reclaim(DriverRing *d, area_t *a, PyObject **errors) {
    for (uint32_t i = 0; i < d->q.num; i++) {
        uint32_t head, buflen, used_len;
        uint64_t addr;
        ring_err_t e;
        int r = driver_get_used(d, a, &head, &addr, &buflen, &used_len, &e);
        if (r == 2) {
            if (*errors == NULL && (*errors = PyList_New(0)) == NULL) return -1;
            if (push_error(*errors, "used-ring", e.msg) < 0) return -1;
            continue;
        }
        if (r == 0) break;
        if (d->txf_count < d->q.num) { /* always: see the struct */
            uint32_t slot = (d->txf_front + d->txf_count) % d->q.num;
            d->txf_addr[slot] = addr;
            d->txf_len[slot] = buflen;
            d->txf_count++;
        }
    }
    return 0;
}

static PyObject *errors_or_empty(PyObject *errors) { return errors != NULL ? errors : PyList_New(0); }

/* tx_send's arguments (src, dst, payload, bell=None), parsed by hand (METH_FASTCALL); the payload
 * buffer is acquired on success (release it). 1, or 0 with an exception set. */
static int parse_tx_args(PyObject *const *args, Py_ssize_t nargs, uint32_t *src, uint32_t *dst, Py_buffer *payload,
                         PyObject **bell) {
    if (nargs < 3 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "tx_send takes 3 or 4 arguments (%zd given)", nargs);
        return 0;
    }
    if (parse_u32(args[0], src, "src") < 0 || parse_u32(args[1], dst, "dst") < 0) return 0;
    *bell = nargs > 3 ? args[3] : Py_None;
    return PyObject_GetBuffer(args[2], payload, PyBUF_SIMPLE) == 0;
}

/* tx_send's result (sent, kick, errors); errors is () when there are none (one allocation fewer). */
static PyObject *tx_result(int sent, int kick, PyObject *errors) {
    PyObject *r = PyTuple_New(3);
    if (r == NULL) return NULL;
    PyTuple_SET_ITEM(r, 0, Py_NewRef(sent ? Py_True : Py_False));
    PyTuple_SET_ITEM(r, 1, PyLong_FromLong(kick));
    PyTuple_SET_ITEM(r, 2, errors != NULL && PyList_GET_SIZE(errors) ? Py_NewRef(errors) : PyTuple_New(0));
    if (PyTuple_GET_ITEM(r, 1) == NULL || PyTuple_GET_ITEM(r, 2) == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* The end of a tx_send, once the area is closed: ring `bell` for a kick, count, build the result. */
static PyObject *tx_finish(QueueBase *q, const Py_buffer *payload, int sent, int kick, PyObject *bell, PyObject *errors) {
    if ((kick = kick_with(bell, kick)) < 0) return NULL;
    if (sent) {
        q->count_messages++;
        q->count_bytes += (unsigned long long)payload->len;
    }
    if (kick == 2) q->count_kicks++;
    return tx_result(sent, kick, errors);
}

/* tx_reclaim() -> [(kind, message)]: RpmsgVirtio.reclaim. */
static PyObject *driver_tx_reclaim_py(DriverRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    PyObject *errors = NULL;
    int r = driver_tx_reclaim(self, &a, &errors);
    area_close(&a);
    if (r < 0) {
        Py_XDECREF(errors);
        return NULL;
    }
    return errors_or_empty(errors);
}

/* tx_send(src, dst, payload, bell=None) -> (sent, kick, [(kind, message)]): RpmsgVirtio._send_driver;
 * kick as kick_with says. */
static PyObject *driver_tx_send(DriverRing *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *bell;
    Py_buffer payload;
    uint32_t src, dst;
    if (!parse_tx_args(args, nargs, &src, &dst, &payload, &bell)) return NULL;
    PyObject *errors = NULL, *result = NULL;
    area_t a;
    int opened = 0, sent = 0, kick = 0;
    if (payload.len > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "a %zd-byte payload does not fit a 16-bit header length", payload.len);
        goto out;
    }
    if (queue_open(&self->q, &a) < 0) goto out;
    opened = 1;
    if (driver_tx_reclaim(self, &a, &errors) < 0) goto out;
    if (self->free_count > 0) {
        uint64_t addr = 0;
        uint32_t buflen = 0;
        int have = 1;
        if (self->txf_count) {
            addr = self->txf_addr[self->txf_front];
            buflen = self->txf_len[self->txf_front];
            self->txf_front = (self->txf_front + 1) % self->q.num;
            self->txf_count--;
        } else if (self->buffer_size && self->bump + self->buffer_size <= self->bump_end) {
            addr = self->bump;
            buflen = self->buffer_size;
            self->bump += self->buffer_size;
        } else {
            have = 0;
        }
        if (have) {
            if (fill_message(&a, addr, src, dst, &payload) < 0 || driver_add(self, &a, addr, buflen, 0, 1) < 0) goto out;
            sent = 1;
            kick = driver_needs_kick(self, &a);
        }
    }
    area_close(&a);
    opened = 0;
    result = tx_finish(&self->q, &payload, sent, kick, bell, errors);
out:
    if (opened) area_close(&a);
    Py_XDECREF(errors);
    PyBuffer_Release(&payload);
    return result;
}

/* tx_available() -> bool: RpmsgVirtio.has_tx_buffer for the driver. */
static PyObject *driver_tx_available(DriverRing *self, PyObject *unused) {
    if (self->txf_count || (self->buffer_size && self->bump + self->buffer_size <= self->bump_end)) Py_RETURN_TRUE;
    return driver_has_used_py(self, NULL);
}

static PyObject *driver_get_free_count(DriverRing *self, void *c) { return PyLong_FromUnsignedLong(self->free_count); }
static PyObject *driver_get_in_flight(DriverRing *self, void *c) { return PyLong_FromUnsignedLong(self->in_flight); }
static PyObject *queue_get_num(QueueBase *self, void *c) { return PyLong_FromUnsignedLong(self->num); }
static PyObject *queue_get_messages(QueueBase *self, void *c) { return PyLong_FromUnsignedLongLong(self->count_messages); }
static PyObject *queue_get_bytes(QueueBase *self, void *c) { return PyLong_FromUnsignedLongLong(self->count_bytes); }
static PyObject *queue_get_kicks(QueueBase *self, void *c) { return PyLong_FromUnsignedLongLong(self->count_kicks); }
static PyObject *queue_get_name(QueueBase *self, void *c) {
    if (self->name == NULL) Py_RETURN_NONE;
    Py_INCREF(self->name);
    return self->name;
}

static PyMethodDef driver_methods[] = {
    {"reset", (PyCFunction)driver_reset, METH_NOARGS, "Zero the ring area and chain the descriptors."},
    {"set_no_interrupt", (PyCFunction)driver_set_no_interrupt, METH_O, "Set or clear VRING_AVAIL_F_NO_INTERRUPT."},
    {"publish", (PyCFunction)driver_publish_py, METH_NOARGS, "Release-store the avail (flags, idx) word."},
    {"add", (PyCFunction)(void (*)(void))driver_add_py, METH_VARARGS | METH_KEYWORDS, "Make one buffer available."},
    {"needs_kick", (PyCFunction)driver_needs_kick_py, METH_NOARGS, "Did the device not set NO_NOTIFY?"},
    {"has_used", (PyCFunction)driver_has_used_py, METH_NOARGS, "Is a used element pending?"},
    {"get_used", (PyCFunction)driver_get_used_py, METH_NOARGS, "(head, addr, buffer length, used length) or None."},
    {"rx_batch", (PyCFunction)(void (*)(void))driver_rx_batch, METH_FASTCALL, "One receive poll of the driver."},
    {"reclaim", (PyCFunction)driver_reclaim, METH_NOARGS, "Take back every returned transmit buffer."},
    {"add_message", (PyCFunction)driver_add_message, METH_VARARGS, "Write header and payload, make it available."},
    {"configure_tx", (PyCFunction)driver_configure_tx, METH_VARARGS, "Set the transmit buffers: bump start, end, size."},
    {"tx_reclaim", (PyCFunction)driver_tx_reclaim_py, METH_NOARGS, "Queue the returned transmit buffers."},
    {"tx_send", (PyCFunction)(void (*)(void))driver_tx_send, METH_FASTCALL, "Reclaim, take a transmit buffer, fill and publish it."},
    {"tx_available", (PyCFunction)driver_tx_available, METH_NOARGS, "Could tx_send find a buffer now?"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef driver_getset[] = {
    {"free_count", (getter)driver_get_free_count, NULL, "Descriptors this side may hand out.", NULL},
    {"in_flight", (getter)driver_get_in_flight, NULL, "Descriptors the device holds.", NULL},
    {"num", (getter)queue_get_num, NULL, "Ring size.", NULL},
    {"name", (getter)queue_get_name, NULL, "Name used in error messages.", NULL},
    {"messages", (getter)queue_get_messages, NULL, "Data messages carried (sent or received).", NULL},
    {"payload_bytes", (getter)queue_get_bytes, NULL, "Their payload bytes.", NULL},
    {"kicks", (getter)queue_get_kicks, NULL, "Doorbell rings tx_send made itself.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DriverRingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._vring.DriverRing",
    .tp_basicsize = sizeof(DriverRing),
    .tp_dealloc = (destructor)driver_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The driver's half of a split virtqueue (mirrors rpmsg.virtqueue.DriverQueue).",
    .tp_methods = driver_methods,
    .tp_getset = driver_getset,
    .tp_init = (initproc)driver_init,
    .tp_new = PyType_GenericNew,
};

/* ==== DeviceRing (DeviceQueue) ================================================================= */
#define HELD 1
#define UNPUBLISHED 2

typedef struct {
    QueueBase q;
    uint64_t pool_start, pool_end;
    uint8_t *state; /* per head: HELD, UNPUBLISHED (returned, not yet published) */
    uint16_t *unpub;
    uint32_t unpub_count, held_count;
    uint16_t last_avail, used_idx, used_flags;
    /* RpmsgVirtio._tx_stash: held driver buffers too small for an earlier message, oldest first
     * (each is a held head, so there are never more than num). */
    uint32_t *stash_head, *stash_len;
    uint64_t *stash_addr;
    uint32_t stash_count;
} DeviceRing;

static void device_dealloc(DeviceRing *self) {
    PyMem_Free(self->state);
    PyMem_Free(self->unpub);
    PyMem_Free(self->stash_head);
    PyMem_Free(self->stash_len);
    PyMem_Free(self->stash_addr);
    Py_XDECREF(self->q.area_obj);
    Py_XDECREF(self->q.name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void device_clear_state(DeviceRing *d) {
    memset(d->state, 0, d->q.num);
    d->unpub_count = d->held_count = 0;
    d->last_avail = d->used_idx = d->used_flags = 0;
    d->stash_count = 0;
}

static int device_init(DeviceRing *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"area", "da", "num", "align", "pool_start", "pool_end", "name", NULL};
    PyObject *area, *name = NULL;
    long long da, num, align, lo, hi;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLLLLL|U", kwlist, &area, &da, &num, &align, &lo, &hi, &name))
        return -1;
    PyObject *default_name = NULL;
    if (name == NULL) name = default_name = PyUnicode_FromString("vring");
    if (name == NULL) return -1;
    int r = queue_base_init(&self->q, area, da, num, align, name);
    Py_XDECREF(default_name);
    if (r < 0) return -1;
    /* as the reference: max(0, lo), min(size, hi) */
    self->pool_start = lo < 0 ? 0 : (uint64_t)lo;
    self->pool_end = hi > (long long)self->q.area_size ? (uint64_t)self->q.area_size : (hi < 0 ? 0 : (uint64_t)hi);
    if (hi < 0) self->pool_end = 0; /* an empty pool: nothing passes the check below */
    PyMem_Free(self->state);
    PyMem_Free(self->unpub);
    PyMem_Free(self->stash_head);
    PyMem_Free(self->stash_len);
    PyMem_Free(self->stash_addr);
    self->state = PyMem_Calloc(self->q.num, 1);
    self->unpub = PyMem_Calloc(self->q.num, sizeof(uint16_t));
    self->stash_head = PyMem_Calloc(self->q.num, sizeof(uint32_t));
    self->stash_len = PyMem_Calloc(self->q.num, sizeof(uint32_t));
    self->stash_addr = PyMem_Calloc(self->q.num, sizeof(uint64_t));
    if (!self->state || !self->unpub || !self->stash_head || !self->stash_len || !self->stash_addr) {
        PyErr_NoMemory();
        return -1;
    }
    device_clear_state(self);
    return 0;
}

static inline void device_publish(DeviceRing *d, area_t *a) {
    store_word(a->p + d->q.used_word, (uint32_t)d->used_flags | (uint32_t)d->used_idx << 16);
    for (uint32_t i = 0; i < d->unpub_count; i++) d->state[d->unpub[i]] &= (uint8_t)~UNPUBLISHED;
    d->unpub_count = 0;
}

static PyObject *device_attach(DeviceRing *self, PyObject *unused) {
    device_clear_state(self);
    Py_RETURN_NONE;
}

static PyObject *device_set_no_notify(DeviceRing *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    self->used_flags = on ? USED_F_NO_NOTIFY : 0;
    device_publish(self, &a);
    area_close(&a);
    Py_RETURN_NONE;
}

static PyObject *device_publish_py(DeviceRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    device_publish(self, &a);
    area_close(&a);
    Py_RETURN_NONE;
}

static inline int device_needs_kick(DeviceRing *d, area_t *a) {
    return !(load_word(a->p + d->q.avail_word) & AVAIL_F_NO_INTERRUPT);
}

static PyObject *device_needs_kick_py(DeviceRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    int k = device_needs_kick(self, &a);
    area_close(&a);
    return PyBool_FromLong(k);
}

static inline int device_has_available(DeviceRing *d, area_t *a) {
    return (load_word(a->p + d->q.avail_word) >> 16) != d->last_avail;
}

static PyObject *device_has_available_py(DeviceRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    int k = device_has_available(self, &a);
    area_close(&a);
    return PyBool_FromLong(k);
}

/* DeviceQueue.get_available: 0 none, 1 item, 2 ring error (in *e, with the head when valid). */
static int device_get_available(DeviceRing *d, area_t *a, uint32_t *head_out, uint64_t *addr_out, uint32_t *len_out,
                                uint16_t *flags_out, ring_err_t *e) {
    uint16_t avail_idx = (uint16_t)(load_word(a->p + d->q.avail_word) >> 16);
    uint16_t pending = (uint16_t)(avail_idx - d->last_avail);
    if (pending == 0) return 0;
    e->head = -1;
    if (pending > d->q.num) {
        uint16_t old = d->last_avail;
        d->last_avail = avail_idx;
        snprintf(e->msg, ERRMSG, "%s: avail.idx jumped from %u to %u (more than num=%u ahead)", qname(&d->q), old,
                 avail_idx, d->q.num);
        return 2;
    }
    uint32_t slot = d->last_avail & d->q.mask;
    d->last_avail = (uint16_t)(d->last_avail + 1);
    uint16_t head = rd16(a->p + d->q.avail_ring + 2 * (Py_ssize_t)slot);
    if (head >= d->q.num) {
        snprintf(e->msg, ERRMSG, "%s: avail head %u is out of range (num=%u)", qname(&d->q), head, d->q.num);
        return 2;
    }
    if (d->state[head]) {
        snprintf(e->msg, ERRMSG, "%s: avail head %u is already held by the device", qname(&d->q), head);
        return 2;
    }
    const unsigned char *desc = a->p + d->q.desc + (Py_ssize_t)head * DESC_SIZE;
    uint64_t addr = rd64(desc);
    uint32_t length = rd32(desc + 8);
    uint16_t flags = rd16(desc + 12);
    d->state[head] |= HELD;
    d->held_count++;
    if (flags & DESC_F_INDIRECT) {
        e->head = head;
        snprintf(e->msg, ERRMSG, "%s: descriptor %u is indirect (not negotiated)", qname(&d->q), head);
        return 2;
    }
    if (!(d->pool_start <= addr && addr <= d->pool_end && length <= d->pool_end - addr)) {
        e->head = head;
        snprintf(e->msg, ERRMSG,
                 "%s: descriptor %u {addr=0x%llx, len=%u} is outside the buffer pool [0x%llx, 0x%llx)", qname(&d->q),
                 head, (unsigned long long)addr, length, (unsigned long long)d->pool_start,
                 (unsigned long long)d->pool_end);
        return 2;
    }
    *head_out = head;
    *addr_out = addr;
    *len_out = length;
    *flags_out = flags;
    return 1;
}

static PyObject *device_get_available_py(DeviceRing *self, PyObject *unused) {
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    uint32_t head, len;
    uint64_t addr;
    uint16_t flags;
    ring_err_t e;
    int r = device_get_available(self, &a, &head, &addr, &len, &flags, &e);
    area_close(&a);
    if (r == 0) Py_RETURN_NONE;
    if (r == 2) return raise_ring_error(&e);
    return Py_BuildValue("(IKIH)", head, (unsigned long long)addr, len, flags);
}

/* DeviceQueue.put_used on a head known to be held. */
static void device_put_used(DeviceRing *d, area_t *a, uint32_t head, uint32_t length, int publish) {
    d->state[head] &= (uint8_t)~HELD;
    d->held_count--;
    unsigned char *elem = a->p + d->q.used_ring + (Py_ssize_t)(d->used_idx & d->q.mask) * USED_ELEM_SIZE;
    wr32(elem, head);
    wr32(elem + 4, length);
    d->used_idx = (uint16_t)(d->used_idx + 1);
    if (publish) {
        device_publish(d, a);
    } else {
        d->state[head] |= UNPUBLISHED;
        d->unpub[d->unpub_count++] = (uint16_t)head;
    }
}

static int device_check_held(DeviceRing *d, PyObject *head_obj, uint32_t *head) {
    long long h = PyLong_AsLongLong(head_obj);
    if (h == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
    } else if (h >= 0 && h < (long long)d->q.num && (d->state[h] & HELD)) {
        *head = (uint32_t)h;
        return 0;
    }
    PyObject *r = PyObject_Repr(head_obj);
    if (r == NULL) return -1;
    PyErr_Format(PyExc_ValueError, "%s: descriptor %U is not held by the device", qname(&d->q), r);
    Py_DECREF(r);
    return -1;
}

static PyObject *device_put_used_py(DeviceRing *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"head", "length", "publish", NULL};
    PyObject *head_obj, *length_obj;
    int publish = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$p", kwlist, &head_obj, &length_obj, &publish)) return NULL;
    uint32_t head, length;
    if (device_check_held(self, head_obj, &head) < 0) return NULL;
    if (parse_u32(length_obj, &length, "length") < 0) return NULL;
    area_t a;
    if (queue_open(&self->q, &a) < 0) return NULL;
    device_put_used(self, &a, head, length, publish);
    area_close(&a);
    Py_RETURN_NONE;
}

/* RpmsgVirtio._poll_device without the name-service split (same result shape as the driver's). */
static PyObject *device_rx_batch(DeviceRing *self, PyObject *const *args, Py_ssize_t nargs) {
    unsigned long long buffer_size;
    long long ns_addr;
    PyObject *direct;
    if (!parse_rx_args(args, nargs, &buffer_size, &ns_addr, &direct)) return NULL;
    PyObject *events = PyList_New(0);
    area_t a;
    int opened = 0, more = 0, kick = 0;
    uint32_t returned = 0;
    if (events == NULL) goto fail;
    if (queue_open(&self->q, &a) < 0) goto fail;
    opened = 1;
    uint32_t i;
    for (i = 0; i < self->q.num; i++) {
        uint32_t head, length;
        uint64_t addr;
        uint16_t flags;
        ring_err_t e;
        int r = device_get_available(self, &a, &head, &addr, &length, &flags, &e);
        if (r == 2) {
            if (push_error(events, "avail-ring", e.msg) < 0) goto fail;
            if (e.head >= 0) {
                device_put_used(self, &a, (uint32_t)e.head, 0, 0);
                returned++;
            }
            continue;
        }
        if (r == 0) break;
        if (decode_message(&a, addr, length, buffer_size, events) < 0) goto fail;
        device_put_used(self, &a, head, length, 0);
        returned++;
    }
    if (i == self->q.num) more = device_has_available(self, &a);
    if (returned) {
        device_publish(self, &a);
        if (device_needs_kick(self, &a)) kick = 1;
    }
    area_close(&a);
    return rx_result(&self->q, events, direct, ns_addr, more, kick);
fail:
    if (opened) area_close(&a);
    Py_XDECREF(events);
    return NULL;
}

/* _fill + put_used(head, length) + needs_kick: put_message(head, addr, length, src, dst, payload) -> kick. */
static PyObject *device_put_message(DeviceRing *self, PyObject *args) {
    PyObject *head_obj, *length_obj, *src_obj, *dst_obj;
    unsigned long long addr;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "OKOOOy*", &head_obj, &addr, &length_obj, &src_obj, &dst_obj, &payload)) return NULL;
    uint32_t head, length, src, dst;
    PyObject *result = NULL;
    area_t a;
    if (parse_u32(length_obj, &length, "length") < 0 || parse_u32(src_obj, &src, "src") < 0 ||
        parse_u32(dst_obj, &dst, "dst") < 0)
        goto out;
    if (payload.len > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "a %zd-byte payload does not fit a 16-bit header length", payload.len);
        goto out;
    }
    if (queue_open(&self->q, &a) < 0) goto out;
    if (fill_message(&a, addr, src, dst, &payload) == 0 && device_check_held(self, head_obj, &head) == 0) {
        device_put_used(self, &a, head, length, 1);
        result = PyBool_FromLong(device_needs_kick(self, &a));
    }
    area_close(&a);
out:
    PyBuffer_Release(&payload);
    return result;
}

/* tx_send(src, dst, payload, bell=None) -> (sent, kick, [(kind, message)]): RpmsgVirtio._send_device;
 * kick as kick_with says. */
static PyObject *device_tx_send(DeviceRing *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *bell;
    Py_buffer payload;
    uint32_t src, dst;
    if (!parse_tx_args(args, nargs, &src, &dst, &payload, &bell)) return NULL;
    PyObject *errors = NULL, *result = NULL;
    area_t a;
    int opened = 0, sent = 0, kick = 0;
    char msg[ERRMSG];
    if (payload.len > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "a %zd-byte payload does not fit a 16-bit header length", payload.len);
        goto out;
    }
    if (queue_open(&self->q, &a) < 0) goto out;
    opened = 1;
    uint64_t need = RPMSG_HDR_SIZE + (uint64_t)payload.len;
    int chosen = 0;
    uint32_t head = 0, length = 0;
    uint64_t addr = 0;
    for (uint32_t i = 0; i < self->stash_count; i++) {
        if (self->stash_len[i] >= need) {
            head = self->stash_head[i];
            addr = self->stash_addr[i];
            length = self->stash_len[i];
            uint32_t rest = self->stash_count - i - 1;
            memmove(self->stash_head + i, self->stash_head + i + 1, rest * sizeof(uint32_t));
            memmove(self->stash_addr + i, self->stash_addr + i + 1, rest * sizeof(uint64_t));
            memmove(self->stash_len + i, self->stash_len + i + 1, rest * sizeof(uint32_t));
            self->stash_count--;
            chosen = 1;
            break;
        }
    }
    long budget = 2 * (long)self->q.num; /* a driver that keeps advancing avail.idx cannot hold us here */
    while (!chosen) {
        if (--budget < 0) break;
        uint32_t h, len;
        uint64_t ad;
        uint16_t flags;
        ring_err_t e;
        int r = device_get_available(self, &a, &h, &ad, &len, &flags, &e);
        if (r == 2) {
            if (errors == NULL && (errors = PyList_New(0)) == NULL) goto out;
            if (push_error(errors, "avail-ring", e.msg) < 0) goto out;
            if (e.head >= 0) device_put_used(self, &a, (uint32_t)e.head, 0, 1);
            continue;
        }
        if (r == 0) break;
        if (len < RPMSG_HDR_SIZE) {
            /* no message ever fits: keeping it would hold the driver's buffer for nothing */
            snprintf(msg, sizeof msg, "%s: descriptor %u of %u bytes cannot hold a header", qname(&self->q), h, len);
            if (errors == NULL && (errors = PyList_New(0)) == NULL) goto out;
            if (push_error(errors, "short-buffer", msg) < 0) goto out;
            device_put_used(self, &a, h, 0, 1);
            continue;
        }
        if (len >= need) {
            head = h, addr = ad, length = len;
            chosen = 1;
        } else if (self->stash_count < self->q.num) { /* always: see the struct */
            self->stash_head[self->stash_count] = h;
            self->stash_addr[self->stash_count] = ad;
            self->stash_len[self->stash_count] = len;
            self->stash_count++;
        }
    }
    if (chosen) {
        /* addr was checked against the pool when the head was taken: writing through the captured
         * value stays in bounds even if the driver rewrites the descriptor meanwhile */
        if (fill_message(&a, addr, src, dst, &payload) < 0) goto out;
        device_put_used(self, &a, head, length, 1);
        sent = 1;
        kick = device_needs_kick(self, &a);
    }
    area_close(&a);
    opened = 0;
    result = tx_finish(&self->q, &payload, sent, kick, bell, errors);
out:
    if (opened) area_close(&a);
    Py_XDECREF(errors);
    PyBuffer_Release(&payload);
    return result;
}

/* tx_available() -> bool: RpmsgVirtio.has_tx_buffer for the device. */
static PyObject *device_tx_available(DeviceRing *self, PyObject *unused) {
    if (self->stash_count) Py_RETURN_TRUE;
    return device_has_available_py(self, NULL);
}

static PyObject *device_get_held(DeviceRing *self, void *c) { return PyLong_FromUnsignedLong(self->held_count); }
static PyObject *device_get_pool_start(DeviceRing *self, void *c) { return PyLong_FromUnsignedLongLong(self->pool_start); }
static PyObject *device_get_pool_end(DeviceRing *self, void *c) { return PyLong_FromUnsignedLongLong(self->pool_end); }

static PyMethodDef device_methods[] = {
    {"attach", (PyCFunction)device_attach, METH_NOARGS, "Start from the driver's reset state."},
    {"set_no_notify", (PyCFunction)device_set_no_notify, METH_O, "Set or clear VRING_USED_F_NO_NOTIFY."},
    {"publish", (PyCFunction)device_publish_py, METH_NOARGS, "Release-store the used (flags, idx) word."},
    {"needs_kick", (PyCFunction)device_needs_kick_py, METH_NOARGS, "Did the driver not set NO_INTERRUPT?"},
    {"has_available", (PyCFunction)device_has_available_py, METH_NOARGS, "Is an avail entry pending?"},
    {"get_available", (PyCFunction)device_get_available_py, METH_NOARGS, "(head, addr, length, flags) or None."},
    {"put_used", (PyCFunction)(void (*)(void))device_put_used_py, METH_VARARGS | METH_KEYWORDS, "Return a held buffer."},
    {"rx_batch", (PyCFunction)(void (*)(void))device_rx_batch, METH_FASTCALL, "One receive poll of the device."},
    {"put_message", (PyCFunction)device_put_message, METH_VARARGS, "Write header and payload, return the buffer used."},
    {"tx_send", (PyCFunction)(void (*)(void))device_tx_send, METH_FASTCALL, "Take a driver buffer, fill it, return it used."},
    {"tx_available", (PyCFunction)device_tx_available, METH_NOARGS, "Could tx_send find a buffer now?"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef device_getset[] = {
    {"held", (getter)device_get_held, NULL, "Descriptors this side holds.", NULL},
    {"pool_start", (getter)device_get_pool_start, NULL, "First byte of the buffer pool.", NULL},
    {"pool_end", (getter)device_get_pool_end, NULL, "End of the buffer pool.", NULL},
    {"num", (getter)queue_get_num, NULL, "Ring size.", NULL},
    {"name", (getter)queue_get_name, NULL, "Name used in error messages.", NULL},
    {"messages", (getter)queue_get_messages, NULL, "Data messages carried (sent or received).", NULL},
    {"payload_bytes", (getter)queue_get_bytes, NULL, "Their payload bytes.", NULL},
    {"kicks", (getter)queue_get_kicks, NULL, "Doorbell rings tx_send made itself.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DeviceRingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._vring.DeviceRing",
    .tp_basicsize = sizeof(DeviceRing),
    .tp_dealloc = (destructor)device_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The device's half of a split virtqueue (mirrors rpmsg.virtqueue.DeviceQueue).",
    .tp_methods = device_methods,
    .tp_getset = device_getset,
    .tp_init = (initproc)device_init,
    .tp_new = PyType_GenericNew,
};

/* ==== the doorbell's spin ====================================================================== */
/* spin_wait_u32(area, offset, seen, seconds) -> value: read the aligned u32 at offset until it differs
 * from seen or `seconds` pass, with the GIL released. The buffer export held meanwhile keeps the
 * mapping from being unmapped under the spin (a Mapping defers munmap while views exist). */
static PyObject *mod_spin_wait_u32(PyObject *m, PyObject *args) {
    PyObject *obj;
    Py_ssize_t offset;
    unsigned long seen_ul;
    double seconds;
    if (!PyArg_ParseTuple(args, "Onkd", &obj, &offset, &seen_ul, &seconds)) return NULL;
    if (!(seconds >= 0 && seconds <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "a spin lasts between 0 and 1 second");
        return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE) < 0) return NULL;
    if (offset < 0 || offset % 4 || offset > b.len - 4 || ((uintptr_t)b.buf & 3)) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "offset %zd is not an aligned word of the area", offset);
        return NULL;
    }
    const uint32_t *word = (const uint32_t *)((unsigned char *)b.buf + offset);
    uint32_t seen = (uint32_t)seen_ul, now;
    int64_t spin = (int64_t)(seconds * 1e9);
    Py_BEGIN_ALLOW_THREADS
    int64_t start = now_ns(), stop = start + spin, t = start;
    for (unsigned i = 1;; i++) {
        now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if (now != seen) break;
        cpu_relax();
        if ((i & 63) == 0) {
            t = now_ns();
            if (t >= stop) break;
            /* Past the first microseconds, give the CPU to whoever waits for it (the peer, on a busy
             * machine) at every check: on idle CPUs sched_yield returns at once and the spin goes on. */
            if (t - start > PURE_SPIN_NS) sched_yield();
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(now);
}

/* ==== the futex doorbell ======================================================================= */
/* Doorbell(area, ring_offset, wait_offset, spin): RegionTransport's "direct" notification, one counter
 * word per direction with the owner's waiting flag in the next word. Only the peer adds to our
 * counter (ring); only we write our flag. ring() adds one to the peer's counter (seq_cst) and wakes
 * its futex only if its flag is set; wait() returns at once if our counter moved since the last wait,
 * else spins up to the adaptive spin (GIL released), then sets the flag, re-checks (the seq_cst
 * store-load pair that keeps a ring from being missed) and sleeps in slices of at most 100 ms, checking
 * signals between slices. The spin adapts as FutexDoorbell documents: the whole spin again after a
 * quick answer, half of it (never below spin/16) after a slow one. */
#define DOORBELL_SLICE_NS 100000000LL

static PyTypeObject DoorbellType;

typedef struct {
    PyObject_HEAD
    PyObject *area_obj;
    Py_ssize_t ring_off, wait_off;
    uint32_t seen;
    int64_t spin_ns, spin_now_ns;
    unsigned long long spins_won, rings;
} Doorbell;

static void doorbell_dealloc(Doorbell *self) {
    Py_XDECREF(self->area_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The two aligned words at offset (counter, flag) of an exported area, or NULL with ValueError. */
static uint32_t *doorbell_words(Py_buffer *b, Py_ssize_t offset) {
    if (offset < 0 || offset % 4 || offset > b->len - 8 || ((uintptr_t)b->buf & 3)) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not an aligned word pair of the area", offset);
        return NULL;
    }
    return (uint32_t *)((unsigned char *)b->buf + offset);
}

static int doorbell_init(Doorbell *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"area", "ring_offset", "wait_offset", "spin", NULL};
    PyObject *area_obj;
    Py_ssize_t ring_off, wait_off;
    double spin;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onnd", kwlist, &area_obj, &ring_off, &wait_off, &spin)) return -1;
    if (!(spin >= 0 && spin <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "spin must be between 0 and 1 second");
        return -1;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(area_obj, &b, PyBUF_SIMPLE) < 0) return -1;
    uint32_t *theirs = doorbell_words(&b, ring_off), *ours = theirs ? doorbell_words(&b, wait_off) : NULL;
    if (ours == NULL) {
        PyBuffer_Release(&b);
        return -1;
    }
    self->seen = __atomic_load_n(ours, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&b);
    Py_INCREF(area_obj);
    Py_XSETREF(self->area_obj, area_obj);
    self->ring_off = ring_off;
    self->wait_off = wait_off;
    self->spin_ns = self->spin_now_ns = (int64_t)(spin * 1e9);
    self->spins_won = self->rings = 0;
    return 0;
}

static int doorbell_open(Doorbell *self, Py_buffer *b) {
    if (self->area_obj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the doorbell is not initialised");
        return -1;
    }
    return PyObject_GetBuffer(self->area_obj, b, PyBUF_SIMPLE);
}

static PyObject *doorbell_ring(Doorbell *self, PyObject *unused) {
    Py_buffer b;
    if (doorbell_open(self, &b) < 0) return NULL;
    uint32_t *theirs = doorbell_words(&b, self->ring_off);
    if (theirs != NULL) {
        __atomic_fetch_add(theirs, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(theirs + 1, __ATOMIC_SEQ_CST)) syscall(SYS_futex, theirs, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
        self->rings++;
    }
    PyBuffer_Release(&b);
    if (theirs == NULL) return NULL;
    Py_RETURN_NONE;
}

static int kick_with(PyObject *bell, int kick) {
    if (!kick) return 0;
    if (bell == Py_None) return 1;
    if (!PyObject_TypeCheck(bell, &DoorbellType)) {
        PyErr_SetString(PyExc_TypeError, "tx_send: bell must be a Doorbell or None");
        return -1;
    }
    PyObject *r = doorbell_ring((Doorbell *)bell, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 2;
}

/* Spin (GIL released by the caller) until *word != seen or `ns` pass; the value last read. */
static uint32_t spin_on(const uint32_t *word, uint32_t seen, int64_t ns) {
    int64_t start = now_ns(), stop = start + ns;
    uint32_t now;
    for (unsigned i = 1;; i++) {
        now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if (now != seen) break;
        cpu_relax();
        if ((i & 63) == 0) {
            int64_t t = now_ns();
            if (t >= stop) break;
            /* Past the first microseconds, give the CPU to whoever waits for it (the peer, on a busy
             * machine) at every check: on idle CPUs sched_yield returns at once and the spin goes on. */
            if (t - start > PURE_SPIN_NS) sched_yield();
        }
    }
    return now;
}

static inline int64_t shrink_spin(const Doorbell *d) {
    int64_t half = d->spin_now_ns / 2, floor = d->spin_ns / 16;
    return half > floor ? half : floor;
}

/* wait(timeout) -> bool: did a ring come (since the last wait that returned True)? */
static PyObject *doorbell_wait(Doorbell *self, PyObject *arg) {
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (timeout != timeout) {
        PyErr_SetString(PyExc_ValueError, "timeout is NaN");
        return NULL;
    }
    Py_buffer b;
    if (doorbell_open(self, &b) < 0) return NULL;
    uint32_t *ours = doorbell_words(&b, self->wait_off);
    if (ours == NULL) {
        PyBuffer_Release(&b);
        return NULL;
    }
    uint32_t seen = self->seen, now = __atomic_load_n(ours, __ATOMIC_SEQ_CST);
    int rang = now != seen, failed = 0;
    if (rang || timeout <= 0) goto done;
    int64_t started = now_ns();
    int64_t deadline = timeout >= 1e9 ? INT64_MAX : started + (int64_t)(timeout * 1e9);
    int64_t spin = self->spin_now_ns;
    if (spin > 0) {
        int64_t ns = spin < deadline - started ? spin : deadline - started;
        Py_BEGIN_ALLOW_THREADS
        now = spin_on(ours, seen, ns);
        Py_END_ALLOW_THREADS
        if (now != seen) {
            rang = 1;
            self->spins_won++;
            goto done;
        }
        if (now_ns() >= deadline) {
            self->spin_now_ns = shrink_spin(self);
            goto done;
        }
    }
    __atomic_store_n(ours + 1, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        now = __atomic_load_n(ours, __ATOMIC_SEQ_CST);
        if (now != seen) break;
        int64_t left = deadline - now_ns();
        if (left <= 0) break;
        if (left > DOORBELL_SLICE_NS) left = DOORBELL_SLICE_NS;
        struct timespec ts = {(time_t)(left / 1000000000LL), (long)(left % 1000000000LL)};
        Py_BEGIN_ALLOW_THREADS
        syscall(SYS_futex, ours, FUTEX_WAIT, seen, &ts, NULL, 0);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            failed = 1;
            break;
        }
    }
    __atomic_store_n(ours + 1, 0, __ATOMIC_SEQ_CST);
    rang = now != seen;
    if (spin > 0 && !failed) self->spin_now_ns = rang && now_ns() - started <= self->spin_ns ? self->spin_ns : shrink_spin(self);
done:
    PyBuffer_Release(&b);
    if (failed) return NULL;
    if (rang) self->seen = now;
    return PyBool_FromLong(rang);
}

static PyObject *doorbell_get_spin(Doorbell *self, void *c) { return PyFloat_FromDouble((double)self->spin_ns / 1e9); }
static PyObject *doorbell_get_spins_won(Doorbell *self, void *c) { return PyLong_FromUnsignedLongLong(self->spins_won); }
static PyObject *doorbell_get_rings(Doorbell *self, void *c) { return PyLong_FromUnsignedLongLong(self->rings); }

static PyMethodDef doorbell_methods[] = {
    {"ring", (PyCFunction)doorbell_ring, METH_NOARGS, "Add one to the peer's counter; wake it if it sleeps."},
    {"wait", (PyCFunction)doorbell_wait, METH_O, "Spin, then sleep, until a ring or the timeout (seconds)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef doorbell_getset[] = {
    {"spin", (getter)doorbell_get_spin, NULL, "The longest spin before a sleep (seconds).", NULL},
    {"spins_won", (getter)doorbell_get_spins_won, NULL, "Waits the spin ended (no sleep).", NULL},
    {"rings", (getter)doorbell_get_rings, NULL, "Rings sent.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DoorbellType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._vring.Doorbell",
    .tp_basicsize = sizeof(Doorbell),
    .tp_dealloc = (destructor)doorbell_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Doorbell(area, ring_offset, wait_offset, spin): the futex doorbell of a Region link.",
    .tp_methods = doorbell_methods,
    .tp_getset = doorbell_getset,
    .tp_init = (initproc)doorbell_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *mod_set_errors(PyObject *m, PyObject *args) {
    PyObject *ring, *exhausted, *out_of_window, *protocol;
    if (!PyArg_ParseTuple(args, "OOOO", &ring, &exhausted, &out_of_window, &protocol)) return NULL;
    Py_INCREF(ring);
    Py_INCREF(exhausted);
    Py_INCREF(out_of_window);
    Py_INCREF(protocol);
    Py_XSETREF(ErrRing, ring);
    Py_XSETREF(ErrExhausted, exhausted);
    Py_XSETREF(ErrOutOfWindow, out_of_window);
    Py_XSETREF(ErrProtocol, protocol);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"spin_wait_u32", mod_spin_wait_u32, METH_VARARGS, "Spin (GIL released) until a word changes or time runs out."},
    {"_set_errors", mod_set_errors, METH_VARARGS, "Install RingError, ResourceExhausted, OutOfWindow, ProtocolError."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef vring_module = {
    PyModuleDef_HEAD_INIT, "ampipc._vring", "The RPMsg fast path: split virtqueues and rpmsg headers in C.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__vring(void) {
    if (PyType_Ready(&DriverRingType) < 0 || PyType_Ready(&DeviceRingType) < 0 || PyType_Ready(&DoorbellType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&vring_module);
    if (m == NULL) return NULL;
    /* Until ampipc.rpmsg installs its own classes: never NULL, so an early error is still an error. */
    ErrRing = ErrProtocol = PyExc_RuntimeError;
    ErrExhausted = PyExc_RuntimeError;
    ErrOutOfWindow = PyExc_RuntimeError;
    Py_INCREF(PyExc_RuntimeError);
    Py_INCREF(PyExc_RuntimeError);
    Py_INCREF(PyExc_RuntimeError);
    Py_INCREF(PyExc_RuntimeError);
    Py_INCREF(&DriverRingType);
    if (PyModule_AddObject(m, "DriverRing", (PyObject *)&DriverRingType) < 0) return NULL;
    Py_INCREF(&DeviceRingType);
    if (PyModule_AddObject(m, "DeviceRing", (PyObject *)&DeviceRingType) < 0) return NULL;
    Py_INCREF(&DoorbellType);
    if (PyModule_AddObject(m, "Doorbell", (PyObject *)&DoorbellType) < 0) return NULL;
    return m;
}
