/*
 * Rings: the FreeRTOS stream/message-buffer ring and its non-blocking operations (part of the C
 * core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * A ring (one byte always free, xLength = capacity + 1, or = size for a static buffer) lies at an
 * offset of a Mapping, confined to its directory entry. Ownership of the words of its header
 * (layout.h, ampipc/_layout.py):
 *   - the writer alone stores head and the writer statistics;
 *   - the reader alone stores tail and the reader statistics;
 *   - a waiting flag (tx_waiting, rx_waiting) is set by the side about to sleep and cleared by that
 *     side or by the peer that wakes it (FreeRTOS clears xTaskWaitingToReceive when it notifies);
 *   - a close flag (writer_closed, reader_closed) is set by its side's close() and cleared when a
 *     process takes that role again (the reader also clears writer_closed once it reported it);
 *   - constants (magic, flags, length, data offset, prefix width) are written once at create;
 *   - trigger_level may be set by either side (as xStreamBufferSetTriggerLevel).
 * The writer copies the payload, then publishes head with one release store; the reader copies
 * out, then publishes tail with one release store (FreeRTOS main-branch order); a batch publishes
 * once for all its messages. The peer publishes, fences, and wakes only if the waiting flag is set:
 * no system call when nobody waits. Every index and length read from shared memory is checked
 * before use; a bad one raises CorruptRegion naming the object and field.
 */

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
    unsigned spin_probe; /* waits since the last probe while spinning is off */
    unsigned spin_probe_every; /* waits between probes (0: SPIN_PROBE_FIRST) */
    int probing; /* the spin in progress is a probe */
    int in_hook; /* bit ROLE_WRITER: in the send hook; bit ROLE_READER: in the receive hook */
    int roles_used; /* bit per role this object has taken (what close() closes) */
    PyObject *isr;  /* a TaskIsr (irq.c) whose line this ring's blocked side services, or NULL */
    int closed;     /* this object was closed: its calls raise RegionClosed */
    uint32_t limit; /* bytes of the object's directory entry: the header must stay inside */
    /* the mapping's chip memory model (NULL: plain memory), re-read by every operation (ring_open):
     * one load from this object instead of a chain through the mapping on every access */
    struct memmodel *model;
    PyObject *weakreflist;
} RingObject;

#define ROLE_WRITER 0
#define ROLE_READER 1

static inline unsigned char *ring_hdr(RingObject *r) { return r->mapping->base + r->offset; }

/* The firmware-visible words of a ring (length, trigger level, head, tail) and its storage go
 * through the chip memory model when one is attached (dcache.c); a plain region takes the direct
 * path (`acquire` is a constant at every call site). The rest of the header is host bookkeeping. */
static inline uint32_t ring_data_ld32(RingObject *r, Py_ssize_t off, int acquire) {
    if (__builtin_expect(r->model != NULL, 0)) {
        uint32_t v;
        model_read(r->model, (uint32_t)(r->offset + off), (unsigned char *)&v, 4);
        return v;
    }
    return acquire ? ld32_acq(ring_hdr(r) + off) : ld32_rlx(ring_hdr(r) + off);
}

static inline void ring_data_st32(RingObject *r, Py_ssize_t off, uint32_t v) {
    if (__builtin_expect(r->model != NULL, 0))
        model_write(r->model, (uint32_t)(r->offset + off), (const unsigned char *)&v, 4);
    else
        st32_rel(ring_hdr(r) + off, v);
}

static PyObject *raise_corrupt(RingObject *r, const char *field, long long value, const char *why) {
    PyObject *msg = PyUnicode_FromFormat("shared buffer %R is corrupt: %s = %lld %s", r->name, field, value, why);
    raise_with_details(ErrCorrupt, msg,
                       msg ? Py_BuildValue("{s:O,s:s,s:L}", "object", r->name, "field", field, "value", value) : NULL);
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
    if (mapping_check_open(r->mapping) < 0) return -1;
    r->model = r->mapping->model;
    return mapping_check_powered(r->mapping, r->name);
}

static int ring_load(RingObject *r, ring_state *s, int role) {
    uint32_t length = ring_data_ld32(r, OFF_LENGTH, 0);
    if (length != r->length) {
        raise_corrupt(r, "length", length, "changed since attach");
        return -1;
    }
    s->length = length;
    /* own index relaxed, the peer's with acquire: the peer's data is visible once its index is */
    if (role == ROLE_WRITER) {
        s->head = ring_data_ld32(r, OFF_HEAD, 0);
        s->tail = ring_data_ld32(r, OFF_TAIL, 1);
    } else {
        s->tail = ring_data_ld32(r, OFF_TAIL, 0);
        s->head = ring_data_ld32(r, OFF_HEAD, 1);
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
    if (__builtin_expect(r->model != NULL, 0)) {
        uint32_t storage = (uint32_t)(r->offset + r->data_off);
        model_write(r->model, storage + at, src, first);
        if (n > first) model_write(r->model, storage, src + first, n - first);
        return;
    }
    /* memmove: the source may be a view of this very ring's storage */
    memmove(data + at, src, first);
    if (n > first) memmove(data, src + first, n - first);
}

static void ring_copy_out(RingObject *r, uint32_t at, unsigned char *dst, uint32_t n) {
    unsigned char *data = ring_hdr(r) + r->data_off;
    uint32_t first = r->length - at;
    if (first > n) first = n;
    if (__builtin_expect(r->model != NULL, 0)) {
        uint32_t storage = (uint32_t)(r->offset + r->data_off);
        model_read(r->model, storage + at, dst, first);
        if (n > first) model_read(r->model, storage, dst + first, n - first);
        return;
    }
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

/* Hooks in C (irq.c's Notifier: the built-in strategies) run without a Python call. */
static int hook_is_native(PyObject *hook);
static void native_hook_run(PyObject *hook, RingObject *r);

static void ring_call_hook(RingObject *r, PyObject *hook, int role) {
    if (hook_is_native(hook)) {
        native_hook_run(hook, r);
        return;
    }
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
/* Returns the bytes in the ring after a write, having raised the peak-fill statistic to it. */
static uint32_t ring_note_fill(RingObject *r, uint32_t new_head, uint32_t tail) {
    unsigned char *h = ring_hdr(r);
    ring_state s = {new_head, tail, r->length};
    uint32_t fill = st_avail(&s);
    if ((uint64_t)fill > ld64_rlx(h + OFF_PEAK)) st64_rlx(h + OFF_PEAK, fill);
    return fill;
}

/* Record the CPU this side runs on, in its own cache line, when it wakes its peer: the peer's spin
 * policy (wait.c) spins only if the two can run on different CPUs. Only on this slow path: the
 * fast path pays nothing. */
static void ring_note_cpu(RingObject *r, int role) {
    int cpu = sched_getcpu();
    if (cpu < 0) return;
    uint32_t *slot = (uint32_t *)(ring_hdr(r) + (role == ROLE_WRITER ? OFF_WRITER_CPU : OFF_READER_CPU));
    if (ld32_rlx(slot) != (uint32_t)cpu + 1) st32_rlx(slot, (uint32_t)cpu + 1);
}

static void ring_send_completed(RingObject *r, uint32_t new_head, uint32_t tail) {
    uint32_t fill = ring_note_fill(r, new_head, tail);
    uint32_t trigger = ring_data_ld32(r, OFF_TRIGGER, 0);
    /* a batching buffer (FreeRTOS >= 11.1, main) notifies only once the fill exceeds the trigger */
    if ((r->flags & FLAG_BATCHING) ? fill <= trigger : fill < trigger) return;
    if (r->send_hook != NULL)
        ring_call_hook(r, r->send_hook, ROLE_WRITER);
    else if (ring_wake_if_waiting(r, OFF_RX_WAITING, OFF_HEAD, OFF_WAKES_BY_WRITER))
        ring_note_cpu(r, ROLE_WRITER);
}

static void ring_receive_completed(RingObject *r) {
    if (r->receive_hook != NULL)
        ring_call_hook(r, r->receive_hook, ROLE_READER);
    else if (ring_wake_if_waiting(r, OFF_TX_WAITING, OFF_TAIL, OFF_WAKES_BY_READER))
        ring_note_cpu(r, ROLE_READER);
}

/* ---- the operations, non-blocking. Each returns: 1 done, 0 not possible now, -1 error. ---- */

/* Write one whole message if it fits and publish it, without the completion (the caller's): 1 with
 * s->head the new head, 0 if it does not fit, -1 on error. */
static int message_write(RingObject *r, const unsigned char *src, uint32_t n, ring_state *s) {
    if (ring_load(r, s, ROLE_WRITER) < 0) return -1;
    if (st_spaces(s) < n + r->prefix) return 0;
    unsigned char prefix[8] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                               (unsigned char)(n >> 24), 0, 0, 0, 0}; /* little-endian, as on ARM and x86 */
    ring_copy_in(r, s->head, prefix, r->prefix);
    uint32_t at = ring_advance(r, s->head, r->prefix);
    ring_copy_in(r, at, src, n);
    s->head = ring_advance(r, at, n);
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_WRITER_PID, OFF_WRITER_START);
    ring_data_st32(r, OFF_HEAD, s->head);
    bump64(h + OFF_MSGS_IN, 1);
    bump64(h + OFF_BYTES_IN, n);
    return 1;
}

/* Message send: all or nothing. */
static int op_message_send(RingObject *r, const unsigned char *src, uint32_t n) {
    ring_state s;
    int k = message_write(r, src, n, &s);
    if (k == 1) ring_send_completed(r, s.head, s.tail);
    return k;
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
    ring_data_st32(r, OFF_HEAD, new_head);
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
            raise_with_details(ErrTooSmall, msg, msg ? Py_BuildValue("{s:I}", "needed", n) : NULL);
            return -1;
        }
        ring_copy_out(r, at, dst, n);
    }
    *out_len = n;
    unsigned char *h = ring_hdr(r);
    ring_record_identity(r, OFF_READER_PID, OFF_READER_START);
    ring_data_st32(r, OFF_TAIL, ring_advance(r, at, n));
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
    ring_data_st32(r, OFF_TAIL, ring_advance(r, s.tail, k));
    bump64(h + OFF_MSGS_OUT, 1);
    bump64(h + OFF_BYTES_OUT, k);
    *got = k;
    ring_receive_completed(r);
    return 1;
}
