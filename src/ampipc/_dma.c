/*
 * ampipc._dma: the engine of the virtual DMA / MDMA controller (ampipc.hw.dma is its Python face).
 *
 * Theory of operation
 * -------------------
 * An Engine belongs to one process. It holds a buffer export of the region's mapping (so the memory
 * stays mapped while it runs) and one worker thread (a pthread that never touches a Python object
 * and never takes the GIL). submit() builds a Transfer, takes buffer exports of the private source
 * and destination (writable for a destination), holds a reference to the Transfer, and queues it
 * on its channel; it returns at once, so the submitting task keeps running while the worker copies.
 *
 * Arbitration: the worker takes the head of the non-empty channel queue with the highest priority
 * (3 very high .. 0 low), the lower channel number first on a tie (the STM32 DMA rule), one whole
 * transfer at a time. suspend(True) holds the queues (the controller's enable bit off): nothing new
 * starts until suspend(False).
 *
 * Bounds: a region address is an offset that must lie, with its whole length, inside the engine's
 * window [lo, hi) of the region; a private buffer's offset + length must lie inside the buffer.
 * Both are checked by the worker before a single byte is written; a bad transfer writes nothing,
 * sets TEIF, counts an error, records the offending offsets and raises the transfer-error line.
 * A good one is one memmove (overlap in the region is allowed), then TCIF and the
 * transfer-complete line; with a half-transfer line configured (and no overlap) it is two copies,
 * with HTIF set and that line raised once the first half has landed.
 *
 * Shared words (channel registers, 64 bytes per channel at `regs` in the region; the layout is in
 * ampipc/hw/dma.py): the worker fetch_ors TCIF/TEIF/HTIF/BUSY into `flags` and clears BUSY;
 * interrupt handlers clear TCIF/TEIF/HTIF (from Python). The statistics are fetch_add'ed by the worker only.
 * Raising a line mirrors ampipc.hw.Hardware._raise_line exactly: fetch_or the core's pending word,
 * fetch_add the raised counter, futex-wake the pending word if the bit was clear.
 *
 * Lifetime: finished transfers go on a done list; the Python side (submit, reap, close) releases
 * their buffer exports and references with the GIL held. Transfer.wait() sleeps on the transfer's
 * state word (a futex) with the GIL released, in slices, checking signals between them; it
 * announces itself in `waiting` first (seq_cst store, then a re-check of the state), and the
 * worker, after its seq_cst store of the final state, issues the wake only when someone waits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "_native/clock.h"

#define MAX_CHANNELS 16
#define REGS_STRIDE 64
#define R_FLAGS 0
#define R_COMPLETED 4
#define R_LAST_ERROR 8
#define R_TRANSFERS 16
#define R_BYTES 24
#define R_ERRORS 32
#define R_BUSY_NS 40
#define R_ERR_SRC 48
#define R_ERR_DST 56

#define F_TCIF 1u
#define F_TEIF 2u
#define F_BUSY 4u
#define F_HTIF 8u

#define ST_QUEUED 0u
#define ST_RUNNING 1u
#define ST_DONE 2u
#define ST_ERROR 3u

#define E_NONE 0u
#define E_SRC_BOUNDS 1u
#define E_DST_BOUNDS 2u
#define E_ABORTED 3u

#define WAIT_SLICE_NS 100000000LL
#define IDLE_SPIN_NS 50000LL

static long sys_futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

typedef struct TransferObject TransferObject;

typedef struct {
    Py_ssize_t pending_off; /* absolute offset of the target core's pending word, -1: no interrupts */
    Py_ssize_t raised_off;  /* absolute offset of its u64 raised counter */
    int tc_line;            /* -1: none */
    int te_line;
    int ht_line;            /* half transfer: -1 none */
} ChannelConfig;

typedef struct {
    PyObject_HEAD
    Py_buffer region;
    int have_region;
    Py_ssize_t lo, hi, regs;
    int channels;
    ChannelConfig cfg[MAX_CHANNELS];
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    TransferObject *head[MAX_CHANNELS];
    TransferObject *tail[MAX_CHANNELS];
    TransferObject *done;
    uint32_t queued; /* transfers queued, read by the spinning worker */
    int stopping;
    int paused; /* set by suspend(): queued transfers wait, the one running finishes */
    int closed;
    int sync_ready; /* lock and cond initialised */
} EngineObject;

struct TransferObject {
    PyObject_HEAD
    uint32_t state;
    uint32_t waiting; /* 1 while a thread sleeps in wait(): the worker wakes only then */
    uint32_t error;
    int channel;
    int priority;
    Py_buffer src_view, dst_view;
    int has_src, has_dst, released;
    Py_ssize_t src_off, dst_off, length;
    int64_t submitted_ns, started_ns, finished_ns;
    TransferObject *next;
};

static PyTypeObject TransferType;
static PyTypeObject EngineType;

/* ---- Transfer ------------------------------------------------------------------------------ */

static void transfer_release_buffers(TransferObject *t) {
    if (t->released) return;
    t->released = 1;
    if (t->has_src) PyBuffer_Release(&t->src_view);
    if (t->has_dst) PyBuffer_Release(&t->dst_view);
    t->has_src = t->has_dst = 0;
}

static void transfer_dealloc(TransferObject *t) {
    transfer_release_buffers(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *transfer_wait(TransferObject *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O", kwlist, &timeout_obj)) return NULL;
    int64_t deadline = -1;
    if (timeout_obj != Py_None) {
        double secs = PyFloat_AsDouble(timeout_obj);
        if (secs == -1.0 && PyErr_Occurred()) return NULL;
        if (!(secs >= 0)) {
            PyErr_SetString(PyExc_ValueError, "timeout must be None or >= 0");
            return NULL;
        }
        deadline = now_ns() + (int64_t)(secs * 1e9);
    }
    for (;;) {
        uint32_t s = __atomic_load_n(&t->state, __ATOMIC_ACQUIRE);
        if (s >= ST_DONE) break;
        int64_t slice = WAIT_SLICE_NS;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) Py_RETURN_FALSE;
            if (left < slice) slice = left;
        }
        struct timespec ts = {(time_t)(slice / 1000000000LL), (long)(slice % 1000000000LL)};
        __atomic_store_n(&t->waiting, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&t->state, __ATOMIC_SEQ_CST) != s) continue; /* finished meanwhile */
        Py_BEGIN_ALLOW_THREADS
        sys_futex(&t->state, FUTEX_WAIT_PRIVATE, s, &ts);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) return NULL;
    }
    transfer_release_buffers(t);
    Py_RETURN_TRUE;
}

static PyObject *transfer_get_state(TransferObject *t, void *c) {
    return PyLong_FromUnsignedLong(__atomic_load_n(&t->state, __ATOMIC_ACQUIRE));
}
static PyObject *transfer_get_error(TransferObject *t, void *c) {
    if (__atomic_load_n(&t->state, __ATOMIC_ACQUIRE) < ST_DONE) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(t->error);
}
static PyObject *transfer_get_channel(TransferObject *t, void *c) { return PyLong_FromLong(t->channel); }
static PyObject *transfer_get_length(TransferObject *t, void *c) { return PyLong_FromSsize_t(t->length); }
static PyObject *transfer_get_times(TransferObject *t, void *c) {
    if (__atomic_load_n(&t->state, __ATOMIC_ACQUIRE) < ST_DONE) Py_RETURN_NONE;
    return Py_BuildValue("(LLL)", (long long)t->submitted_ns, (long long)t->started_ns, (long long)t->finished_ns);
}

static PyGetSetDef transfer_getset[] = {
    {"state", (getter)transfer_get_state, NULL, "0 queued, 1 running, 2 done, 3 error", NULL},
    {"error", (getter)transfer_get_error, NULL, "error code once finished (0 none), else None", NULL},
    {"channel", (getter)transfer_get_channel, NULL, "the channel", NULL},
    {"length", (getter)transfer_get_length, NULL, "bytes to copy", NULL},
    {"times_ns", (getter)transfer_get_times, NULL, "(submitted, started, finished) monotonic ns once finished", NULL},
    {NULL},
};

static PyMethodDef transfer_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))transfer_wait, METH_VARARGS | METH_KEYWORDS,
     "Wait (GIL released) until finished; True, or False at the timeout."},
    {NULL},
};

static PyTypeObject TransferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._dma.Transfer",
    .tp_basicsize = sizeof(TransferObject),
    .tp_dealloc = (destructor)transfer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One DMA transfer (made by Engine.submit).",
    .tp_methods = transfer_methods,
    .tp_getset = transfer_getset,
};

/* ---- the worker (no GIL, no Python objects touched except the plain C fields) --------------- */

static inline unsigned char *reg(EngineObject *e, int ch, int off) {
    return (unsigned char *)e->region.buf + e->regs + (Py_ssize_t)ch * REGS_STRIDE + off;
}

static void raise_line(EngineObject *e, int ch, int line) {
    ChannelConfig *c = &e->cfg[ch];
    if (line < 0 || c->pending_off < 0) return;
    uint32_t *pending = (uint32_t *)((unsigned char *)e->region.buf + c->pending_off);
    uint32_t bit = 1u << line;
    uint32_t old = __atomic_fetch_or(pending, bit, __ATOMIC_SEQ_CST);
    __atomic_fetch_add((uint64_t *)((unsigned char *)e->region.buf + c->raised_off), 1, __ATOMIC_SEQ_CST);
    if (!(old & bit)) sys_futex(pending, FUTEX_WAKE, INT_MAX, NULL);
}

static int span_ok(Py_ssize_t off, Py_ssize_t len, Py_ssize_t lo, Py_ssize_t hi) {
    return off >= lo && off <= hi && len <= hi - off;
}

static void execute(EngineObject *e, TransferObject *t) {
    int ch = t->channel;
    unsigned char *base = (unsigned char *)e->region.buf;
    unsigned char *src = NULL, *dst = NULL;
    uint32_t err = E_NONE;
    t->started_ns = now_ns();
    __atomic_fetch_or((uint32_t *)reg(e, ch, R_FLAGS), F_BUSY, __ATOMIC_SEQ_CST);
    if (t->has_src) {
        if (span_ok(t->src_off, t->length, 0, t->src_view.len)) src = (unsigned char *)t->src_view.buf + t->src_off;
        else err = E_SRC_BOUNDS;
    } else if (span_ok(t->src_off, t->length, e->lo, e->hi)) {
        src = base + t->src_off;
    } else {
        err = E_SRC_BOUNDS;
    }
    if (err == E_NONE) {
        if (t->has_dst) {
            if (span_ok(t->dst_off, t->length, 0, t->dst_view.len)) dst = (unsigned char *)t->dst_view.buf + t->dst_off;
            else err = E_DST_BOUNDS;
        } else if (span_ok(t->dst_off, t->length, e->lo, e->hi)) {
            dst = base + t->dst_off;
        } else {
            err = E_DST_BOUNDS;
        }
    }
    if (err == E_NONE && t->length > 0) {
        int ht = e->cfg[ch].ht_line;
        if (ht >= 0 && t->length > 1 && (dst + t->length <= src || src + t->length <= dst)) {
            /* two halves with the half-transfer event between them (HTIF; a double buffer's cue) */
            size_t half = (size_t)t->length / 2;
            memcpy(dst, src, half);
            __atomic_fetch_or((uint32_t *)reg(e, ch, R_FLAGS), F_HTIF, __ATOMIC_SEQ_CST);
            raise_line(e, ch, ht);
            memcpy(dst + half, src + half, (size_t)t->length - half);
        } else {
            memmove(dst, src, (size_t)t->length);
        }
    }
    t->finished_ns = now_ns();
    t->error = err;
    __atomic_fetch_add((uint64_t *)reg(e, ch, R_BUSY_NS), (uint64_t)(t->finished_ns - t->started_ns), __ATOMIC_RELAXED);
    if (err == E_NONE) {
        __atomic_fetch_add((uint64_t *)reg(e, ch, R_TRANSFERS), 1, __ATOMIC_RELAXED);
        __atomic_fetch_add((uint64_t *)reg(e, ch, R_BYTES), (uint64_t)t->length, __ATOMIC_RELAXED);
        __atomic_fetch_add((uint32_t *)reg(e, ch, R_COMPLETED), 1, __ATOMIC_SEQ_CST);
        __atomic_fetch_or((uint32_t *)reg(e, ch, R_FLAGS), F_TCIF, __ATOMIC_SEQ_CST);
    } else {
        __atomic_fetch_add((uint64_t *)reg(e, ch, R_ERRORS), 1, __ATOMIC_RELAXED);
        __atomic_store_n((uint64_t *)reg(e, ch, R_ERR_SRC), (uint64_t)t->src_off, __ATOMIC_RELAXED);
        __atomic_store_n((uint64_t *)reg(e, ch, R_ERR_DST), (uint64_t)t->dst_off, __ATOMIC_RELAXED);
        __atomic_store_n((uint32_t *)reg(e, ch, R_LAST_ERROR), err, __ATOMIC_SEQ_CST);
        __atomic_fetch_or((uint32_t *)reg(e, ch, R_FLAGS), F_TEIF, __ATOMIC_SEQ_CST);
    }
    __atomic_fetch_and((uint32_t *)reg(e, ch, R_FLAGS), ~F_BUSY, __ATOMIC_SEQ_CST);
    /* the waiter learns first, then the interrupt: a handler that waits on the transfer never sleeps */
    __atomic_store_n(&t->state, err == E_NONE ? ST_DONE : ST_ERROR, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&t->waiting, __ATOMIC_SEQ_CST)) sys_futex(&t->state, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
    raise_line(e, ch, err == E_NONE ? e->cfg[ch].tc_line : e->cfg[ch].te_line);
}

/* Called with the lock held: the next transfer by priority, then channel number. */
static TransferObject *pick(EngineObject *e) {
    int best = -1;
    for (int ch = 0; ch < e->channels; ch++) {
        if (e->head[ch] && (best < 0 || e->head[ch]->priority > e->head[best]->priority)) best = ch;
    }
    if (best < 0) return NULL;
    TransferObject *t = e->head[best];
    e->head[best] = t->next;
    if (e->head[best] == NULL) e->tail[best] = NULL;
    t->next = NULL;
    __atomic_fetch_sub(&e->queued, 1, __ATOMIC_SEQ_CST);
    return t;
}

static void *worker_main(void *arg) {
    EngineObject *e = (EngineObject *)arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        TransferObject *t = e->paused ? NULL : pick(e);
        if (t == NULL) {
            /* a short spin first: back-to-back submissions do not pay a wake-up each */
            pthread_mutex_unlock(&e->lock);
            int64_t until = now_ns() + IDLE_SPIN_NS;
            while ((e->paused || !__atomic_load_n(&e->queued, __ATOMIC_ACQUIRE)) && now_ns() < until) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            pthread_mutex_lock(&e->lock);
            if ((e->paused || !e->queued) && !e->stopping) pthread_cond_wait(&e->cond, &e->lock);
            continue;
        }
        __atomic_store_n(&t->state, ST_RUNNING, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&e->lock);
        execute(e, t);
        pthread_mutex_lock(&e->lock);
        t->next = e->done;
        e->done = t;
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---- Engine -------------------------------------------------------------------------------- */

/* With the GIL: drop the exports and references of finished transfers. Returns how many. */
static int reap(EngineObject *e) {
    pthread_mutex_lock(&e->lock);
    TransferObject *list = e->done;
    e->done = NULL;
    pthread_mutex_unlock(&e->lock);
    int n = 0;
    while (list) {
        TransferObject *next = list->next;
        list->next = NULL;
        transfer_release_buffers(list);
        Py_DECREF(list);
        list = next;
        n++;
    }
    return n;
}

static int engine_init(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"region", "window_lo", "window_hi", "regs", "channels", NULL};
    PyObject *region;
    Py_ssize_t lo, hi, regs;
    int channels;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onnni", kwlist, &region, &lo, &hi, &regs, &channels)) return -1;
    if (self->have_region) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    if (channels < 1 || channels > MAX_CHANNELS) {
        PyErr_Format(PyExc_ValueError, "channels must be in 1..%d", MAX_CHANNELS);
        return -1;
    }
    if (PyObject_GetBuffer(region, &self->region, PyBUF_WRITABLE) < 0) return -1;
    self->have_region = 1;
    Py_ssize_t size = self->region.len;
    if (lo < 0 || hi > size || lo > hi || regs < 0 || regs % 64 || regs > size - (Py_ssize_t)channels * REGS_STRIDE) {
        PyErr_Format(PyExc_ValueError, "window [%zd, %zd) or registers at %zd do not fit a region of %zd bytes", lo, hi,
                     regs, size);
        return -1;
    }
    self->lo = lo;
    self->hi = hi;
    self->regs = regs;
    self->channels = channels;
    for (int i = 0; i < MAX_CHANNELS; i++) {
        self->cfg[i].pending_off = -1;
        self->cfg[i].raised_off = -1;
        self->cfg[i].tc_line = self->cfg[i].te_line = self->cfg[i].ht_line = -1;
    }
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    self->sync_ready = 1;
    int rc = pthread_create(&self->thread, NULL, worker_main, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->thread_started = 1;
    return 0;
}

static void engine_stop(EngineObject *self) {
    if (!self->thread_started) {
        if (self->sync_ready) reap(self);
        return;
    }
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_started = 0;
    /* transfers still queued never ran: they end with the "aborted" error, no interrupt */
    for (int ch = 0; ch < self->channels; ch++) {
        while (self->head[ch]) {
            TransferObject *t = self->head[ch];
            self->head[ch] = t->next;
            t->error = E_ABORTED;
            __atomic_store_n(&t->state, ST_ERROR, __ATOMIC_RELEASE);
            sys_futex(&t->state, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
            t->next = self->done;
            self->done = t;
        }
        self->tail[ch] = NULL;
    }
    self->queued = 0;
    reap(self);
}

static PyObject *engine_close(EngineObject *self, PyObject *unused) {
    if (self->closed) Py_RETURN_NONE;
    self->closed = 1;
    engine_stop(self);
    if (self->have_region) {
        PyBuffer_Release(&self->region);
        self->have_region = 0;
    }
    Py_RETURN_NONE;
}

static void engine_dealloc(EngineObject *self) {
    PyObject *r = engine_close(self, NULL);
    Py_XDECREF(r);
    if (self->sync_ready) {
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->cond);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(EngineObject *self) {
    if (self->closed || !self->have_region) {
        PyErr_SetString(PyExc_ValueError, "the DMA engine is closed");
        return -1;
    }
    return 0;
}

static int check_channel(EngineObject *self, int ch) {
    if (ch < 0 || ch >= self->channels) {
        PyErr_Format(PyExc_ValueError, "channel must be in 0..%d, not %d", self->channels - 1, ch);
        return -1;
    }
    return 0;
}

static PyObject *engine_configure(EngineObject *self, PyObject *args) {
    int ch, tc, te, ht = -1;
    Py_ssize_t pending, raised;
    if (!PyArg_ParseTuple(args, "innii|i", &ch, &pending, &raised, &tc, &te, &ht)) return NULL;
    if (check_open(self) < 0 || check_channel(self, ch) < 0) return NULL;
    if (pending >= 0) {
        if (pending % 4 || pending > self->region.len - 4 || raised < 0 || raised % 8 || raised > self->region.len - 8) {
            PyErr_SetString(PyExc_ValueError, "interrupt words outside the region or misaligned");
            return NULL;
        }
    }
    if (tc < -1 || tc > 31 || te < -1 || te > 31 || ht < -1 || ht > 31) {
        PyErr_SetString(PyExc_ValueError, "interrupt lines must be -1 (none) or 0..31");
        return NULL;
    }
    pthread_mutex_lock(&self->lock);
    self->cfg[ch].pending_off = pending < 0 ? -1 : pending;
    self->cfg[ch].raised_off = raised;
    self->cfg[ch].tc_line = tc;
    self->cfg[ch].te_line = te;
    self->cfg[ch].ht_line = ht;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *engine_submit(EngineObject *self, PyObject *args) {
    int ch, priority;
    PyObject *src, *dst;
    Py_ssize_t src_off, dst_off, length;
    if (!PyArg_ParseTuple(args, "iiOnOnn", &ch, &priority, &src, &src_off, &dst, &dst_off, &length)) return NULL;
    if (check_open(self) < 0 || check_channel(self, ch) < 0) return NULL;
    if (priority < 0 || priority > 3) {
        PyErr_SetString(PyExc_ValueError, "priority must be 0 (low) .. 3 (very high)");
        return NULL;
    }
    if (length < -1 || src_off < 0 || dst_off < 0) {
        PyErr_SetString(PyExc_ValueError, "offsets must be >= 0 and length >= 0 (or -1: what the private sides hold)");
        return NULL;
    }
    if (length == -1 && src == Py_None && dst == Py_None) {
        PyErr_SetString(PyExc_ValueError, "length is required for a copy within the region");
        return NULL;
    }
    reap(self);
    TransferObject *t = PyObject_New(TransferObject, &TransferType);
    if (t == NULL) return NULL;
    t->state = ST_QUEUED;
    t->waiting = 0;
    t->error = E_NONE;
    t->channel = ch;
    t->priority = priority;
    t->has_src = t->has_dst = t->released = 0;
    t->src_off = src_off;
    t->dst_off = dst_off;
    t->length = length;
    t->started_ns = t->finished_ns = 0;
    t->next = NULL;
    if (src != Py_None) {
        if (PyObject_GetBuffer(src, &t->src_view, PyBUF_SIMPLE) < 0) goto fail;
        t->has_src = 1;
    }
    if (dst != Py_None) {
        if (PyObject_GetBuffer(dst, &t->dst_view, PyBUF_WRITABLE) < 0) goto fail;
        t->has_dst = 1;
    }
    if (t->length == -1) { /* the room past the offsets of the private side(s) */
        Py_ssize_t room = PY_SSIZE_T_MAX;
        if (t->has_src) room = t->src_view.len - src_off;
        if (t->has_dst && t->dst_view.len - dst_off < room) room = t->dst_view.len - dst_off;
        t->length = room < 0 ? 0 : room;
    }
    t->submitted_ns = now_ns();
    Py_INCREF(t); /* the engine's reference, dropped by reap() */
    pthread_mutex_lock(&self->lock);
    if (self->tail[ch]) self->tail[ch]->next = t;
    else self->head[ch] = t;
    self->tail[ch] = t;
    __atomic_fetch_add(&self->queued, 1, __ATOMIC_SEQ_CST);
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
    return (PyObject *)t;
fail:
    Py_DECREF(t);
    return NULL;
}

static PyObject *engine_reap(EngineObject *self, PyObject *unused) { return PyLong_FromLong(reap(self)); }

static PyObject *engine_suspend(EngineObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    if (check_open(self) < 0) return NULL;
    pthread_mutex_lock(&self->lock);
    self->paused = on;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *engine_get_queued(EngineObject *self, void *c) {
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->queued, __ATOMIC_ACQUIRE));
}
static PyObject *engine_get_closed(EngineObject *self, void *c) { return PyBool_FromLong(self->closed); }

static PyMethodDef engine_methods[] = {
    {"configure", (PyCFunction)engine_configure, METH_VARARGS,
     "configure(channel, pending_off, raised_off, tc_line, te_line, ht_line=-1): where the channel's interrupts go."},
    {"submit", (PyCFunction)engine_submit, METH_VARARGS,
     "submit(channel, priority, src, src_off, dst, dst_off, length) -> Transfer (None = region address;"
     " length -1 = what the private side(s) hold past the offsets)."},
    {"suspend", (PyCFunction)engine_suspend, METH_O,
     "suspend(True): start no queued transfer (the running one finishes); suspend(False): go on."},
    {"reap", (PyCFunction)engine_reap, METH_NOARGS, "Drop finished transfers' buffer exports; returns how many."},
    {"close", (PyCFunction)engine_close, METH_NOARGS, "Stop the worker (queued transfers are aborted)."},
    {NULL},
};

static PyGetSetDef engine_getset[] = {
    {"queued", (getter)engine_get_queued, NULL, "transfers waiting for the worker", NULL},
    {"closed", (getter)engine_get_closed, NULL, "True after close()", NULL},
    {NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ampipc._dma.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The DMA engine of one process: a worker thread copying without the GIL.",
    .tp_methods = engine_methods,
    .tp_getset = engine_getset,
    .tp_init = (initproc)engine_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef dma_module = {
    PyModuleDef_HEAD_INIT, "ampipc._dma", "The virtual DMA controller's engine (C, no GIL while copying).", -1, NULL,
};

PyMODINIT_FUNC PyInit__dma(void) {
    if (PyType_Ready(&TransferType) < 0 || PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&dma_module);
    if (m == NULL) return NULL;
    Py_INCREF(&EngineType);
    Py_INCREF(&TransferType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObject(m, "Transfer", (PyObject *)&TransferType) < 0)
        return NULL;
    PyModule_AddIntConstant(m, "MAX_CHANNELS", MAX_CHANNELS);
    PyModule_AddIntConstant(m, "REGS_STRIDE", REGS_STRIDE);
    PyModule_AddIntConstant(m, "STATE_QUEUED", ST_QUEUED);
    PyModule_AddIntConstant(m, "STATE_RUNNING", ST_RUNNING);
    PyModule_AddIntConstant(m, "STATE_DONE", ST_DONE);
    PyModule_AddIntConstant(m, "STATE_ERROR", ST_ERROR);
    PyModule_AddIntConstant(m, "ERROR_NONE", E_NONE);
    PyModule_AddIntConstant(m, "ERROR_SOURCE_BOUNDS", E_SRC_BOUNDS);
    PyModule_AddIntConstant(m, "ERROR_DESTINATION_BOUNDS", E_DST_BOUNDS);
    PyModule_AddIntConstant(m, "ERROR_ABORTED", E_ABORTED);
    return m;
}
