/*
 * ampipc._waitv: sleep on many futex words at once (futex_waitv, Linux 5.16+).
 *
 * Theory of operation
 * -------------------
 * A blocked buffer side announces itself in its ring's waiting word, re-checks, and sleeps on the
 * futex of the index its peer publishes (see _native.c). Waiting on *many* objects is the same
 * protocol over many words: the caller (ampipc.waiting) announces in every waiting word, re-checks
 * every object, then calls `wait()` here with one (buffer, offset, expected value) triple per
 * index word. The kernel compares each word with its expected value atomically with queueing the
 * waiter, so a publication between the re-check and the sleep makes the call return at once
 * (-1): no wake-up is lost between check and sleep.
 *
 * Words are named by (buffer-protocol object, byte offset): normally the region's Mapping, whose
 * buffer export also keeps the memory mapped for the length of the call (a Mapping closed
 * meanwhile unmaps only when the last export is released). Every offset is checked against the
 * buffer's length and 4-byte alignment before use.
 *
 * Kernel limit: futex_waitv takes at most 128 words. Beyond that the words are split in chunks of
 * 127; each extra chunk is waited on by a short-lived native thread (one per chunk, never one per
 * object), every chunk also waits on a shared "stop" word, and the first chunk to return stores
 * the stop word and wakes the others. Where futex_waitv is missing (ENOSYS: kernels before 5.16,
 * or seccomp filters) `wait()` falls back to FUTEX_WAIT on one word at a time in slices of
 * FALLBACK_SLICE_NS, comparing every word between slices: a wake of another word is then seen
 * within one slice (degraded latency, never a lost wake-up). The fallback can be forced for tests.
 *
 * The GIL is released while sleeping; sleeps are cut in slices of at most SLICE_NS so that a
 * signal handler (Ctrl-C) runs within that time and its exception propagates.
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

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* x86_64 and aarch64 (asm-generic) */
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
struct futex_waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t __reserved;
};
#endif

#define KERNEL_MAX_WORDS 128
#define CHUNK_WORDS (KERNEL_MAX_WORDS - 1) /* one slot of each chunk is the shared stop word */
#define MAX_TOTAL_WORDS (1 << 20)
#define SLICE_NS 100000000LL        /* 100 ms: the longest the GIL-free sleep goes without checking signals */
#define FALLBACK_SLICE_NS 1000000LL /* 1 ms: the fallback's latency for a word it is not sleeping on */

typedef struct {
    uint32_t *addr;
    uint32_t expected;
} word_t;

static int waitv_supported = -1; /* -1 unknown, 0 no, 1 yes */

static inline struct timespec ts_of(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

static long sys_futex_waitv(struct futex_waitv *w, unsigned n, int64_t abs_deadline_ns) {
    struct timespec ts = ts_of(abs_deadline_ns);
    return syscall(SYS_futex_waitv, w, n, 0, &ts, CLOCK_MONOTONIC);
}

static int probe_waitv(void) {
    if (waitv_supported >= 0) return waitv_supported;
    uint32_t word = 1;
    struct futex_waitv w = {.val = 0, .uaddr = (uint64_t)(uintptr_t)&word, .flags = FUTEX_32, .__reserved = 0};
    long r = sys_futex_waitv(&w, 1, now_ns()); /* value differs: EAGAIN when supported */
    waitv_supported = (r < 0 && errno == ENOSYS) ? 0 : 1;
    return waitv_supported;
}

/* ---- one chunk (<= 128 words) ---------------------------------------------------------------- */

/* Returns the index woken (>= 0), -1 if a value differed, -2 at the deadline, -3 on EINTR,
 * -5 when another chunk stopped this one (it has nothing to report itself). */
static int waitv_chunk(const word_t *words, int n, uint32_t *stop, int64_t deadline) {
    struct futex_waitv w[KERNEL_MAX_WORDS];
    int k = 0;
    for (int i = 0; i < n; i++, k++) {
        w[k].val = words[i].expected;
        w[k].uaddr = (uint64_t)(uintptr_t)words[i].addr;
        w[k].flags = FUTEX_32;
        w[k].__reserved = 0;
    }
    if (stop != NULL) {
        w[k].val = 0;
        w[k].uaddr = (uint64_t)(uintptr_t)stop;
        w[k].flags = FUTEX_32;
        w[k].__reserved = 0;
        k++;
    }
    long r = sys_futex_waitv(w, (unsigned)k, deadline);
    if (r >= 0) return (stop != NULL && r == n) ? -5 : (int)r;
    if (errno == EAGAIN) {
        if (stop == NULL) return -1;
        /* the stop word or one of ours: only ours counts as news */
        for (int i = 0; i < n; i++)
            if (__atomic_load_n(words[i].addr, __ATOMIC_SEQ_CST) != words[i].expected) return -1;
        return -5;
    }
    if (errno == ETIMEDOUT) return -2;
    return -3;
}

typedef struct {
    const word_t *words;
    int n;
    int base;
    uint32_t *stop;
    int64_t deadline;
    int result;
} chunk_job;

static void chunk_finish(chunk_job *job) {
    /* the first chunk back tells the others; stop is process-local, waking it costs one syscall */
    if (__atomic_exchange_n(job->stop, 1, __ATOMIC_SEQ_CST) == 0)
        syscall(SYS_futex, job->stop, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void *chunk_thread(void *arg) {
    chunk_job *job = (chunk_job *)arg;
    int r = waitv_chunk(job->words, job->n, job->stop, job->deadline);
    job->result = r >= 0 ? job->base + r : r;
    chunk_finish(job);
    return NULL;
}

/* Many chunks: this thread waits on the first, one native thread per other chunk. */
static int waitv_many(const word_t *words, int n, int64_t deadline) {
    int chunks = (n + CHUNK_WORDS - 1) / CHUNK_WORDS;
    uint32_t stop = 0;
    chunk_job *jobs = (chunk_job *)calloc((size_t)chunks, sizeof(chunk_job));
    pthread_t *threads = (pthread_t *)calloc((size_t)chunks, sizeof(pthread_t));
    char *started = (char *)calloc((size_t)chunks, 1);
    if (jobs == NULL || threads == NULL || started == NULL) {
        free(jobs);
        free(threads);
        free(started);
        return -4;
    }
    for (int c = 0; c < chunks; c++) {
        jobs[c].words = words + (size_t)c * CHUNK_WORDS;
        jobs[c].n = (c == chunks - 1) ? n - c * CHUNK_WORDS : CHUNK_WORDS;
        jobs[c].base = c * CHUNK_WORDS;
        jobs[c].stop = &stop;
        jobs[c].deadline = deadline;
        jobs[c].result = -2;
    }
    for (int c = 1; c < chunks; c++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        started[c] = pthread_create(&threads[c], &attr, chunk_thread, &jobs[c]) == 0;
        pthread_attr_destroy(&attr);
        if (!started[c]) { /* no thread: do not sleep at all, the caller re-checks and retries */
            chunk_finish(&jobs[0]);
            jobs[c].result = -1;
        }
    }
    chunk_thread(&jobs[0]);
    int result;
    for (int c = 1; c < chunks; c++) {
        if (started[c]) pthread_join(threads[c], NULL);
    }
    /* prefer a woken index, then "a value differed", then EINTR, then the deadline; a chunk that
     * was only stopped by another has nothing to say */
    result = -2;
    for (int c = 0; c < chunks; c++) {
        int r = jobs[c].result;
        if (r >= 0) {
            result = r;
            break;
        }
        if (r == -1 || (r == -3 && result == -2)) result = r;
    }
    free(jobs);
    free(threads);
    free(started);
    return result;
}

/* The fallback without futex_waitv: FUTEX_WAIT on one word per short slice, all compared between. */
static int wait_fallback(const word_t *words, int n, int64_t deadline, unsigned *rotor) {
    for (int i = 0; i < n; i++)
        if (__atomic_load_n(words[i].addr, __ATOMIC_SEQ_CST) != words[i].expected) return -1;
    int64_t left = deadline - now_ns();
    if (left <= 0) return -2;
    if (left > FALLBACK_SLICE_NS) left = FALLBACK_SLICE_NS;
    int i = (int)(*rotor % (unsigned)n);
    (*rotor)++;
    struct timespec ts = ts_of(left);
    long r = syscall(SYS_futex, words[i].addr, FUTEX_WAIT, words[i].expected, &ts, NULL, 0);
    if (r == 0) return i;
    if (errno == EAGAIN) return -1;
    if (errno == EINTR) return -3;
    return -2; /* the slice ran out: the caller compares again */
}

/* ---- argument parsing ------------------------------------------------------------------------ */

typedef struct {
    Py_buffer *views;
    int nviews;
    word_t *words;
    int n;
} word_set;

static void word_set_release(word_set *s) {
    for (int i = 0; i < s->nviews; i++) PyBuffer_Release(&s->views[i]);
    PyMem_Free(s->views);
    PyMem_Free(s->words);
    s->views = NULL;
    s->words = NULL;
    s->nviews = s->n = 0;
}

/* Resolve (buffer, offset) to a 4-byte aligned word inside the buffer; NULL with an exception. */
static uint32_t *word_at(Py_buffer *v, Py_ssize_t off) {
    if (off < 0 || off > v->len - 4) {
        PyErr_Format(PyExc_IndexError, "offset %zd is outside the %zd-byte buffer", off, v->len);
        return NULL;
    }
    unsigned char *p = (unsigned char *)v->buf + off;
    if (((uintptr_t)p & 3u) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not a 4-byte aligned word", off);
        return NULL;
    }
    return (uint32_t *)p;
}

static int word_set_parse(PyObject *seq_obj, word_set *s) {
    memset(s, 0, sizeof(*s));
    PyObject *seq = PySequence_Fast(seq_obj, "words must be a sequence of (buffer, offset, expected) triples");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_TOTAL_WORDS) {
        PyErr_Format(PyExc_ValueError, "between 1 and %d words, not %zd", MAX_TOTAL_WORDS, n);
        Py_DECREF(seq);
        return -1;
    }
    s->views = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    s->words = PyMem_Calloc((size_t)n, sizeof(word_t));
    if (s->views == NULL || s->words == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject *last_obj = NULL;
    int last_vi = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *obj;
        Py_ssize_t off;
        unsigned long long expected;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OnK", &obj, &off, &expected)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "word %zd must be a (buffer, offset, expected) triple", i);
            }
            goto fail;
        }
        if (expected > 0xFFFFFFFFull) {
            PyErr_Format(PyExc_OverflowError, "expected value of word %zd does not fit in 32 bits", i);
            goto fail;
        }
        /* words of one object share one export (the common case: one region's mapping) */
        if (obj != last_obj) {
            last_vi = -1;
            for (int j = 0; j < s->nviews; j++)
                if (s->views[j].obj == obj) last_vi = j;
            if (last_vi < 0) {
                if (PyObject_GetBuffer(obj, &s->views[s->nviews], PyBUF_SIMPLE) < 0) goto fail;
                last_vi = s->nviews++;
            }
            last_obj = obj;
        }
        int vi = last_vi;
        uint32_t *p = word_at(&s->views[vi], off);
        if (p == NULL) goto fail;
        s->words[i].addr = p;
        s->words[i].expected = (uint32_t)expected;
    }
    s->n = (int)n;
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    word_set_release(s);
    return -1;
}

static int parse_timeout(PyObject *obj, int64_t *out_ns) {
    if (obj == NULL || obj == Py_None) {
        *out_ns = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (t != t || t < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be None or a number >= 0");
        return -1;
    }
    *out_ns = t > 1e9 ? -1 : (int64_t)(t * 1e9);
    return 0;
}

/* ---- Python functions ------------------------------------------------------------------------ */

static PyObject *mod_wait(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"words", "timeout", "fallback", NULL};
    PyObject *words_obj, *timeout_obj = Py_None;
    int force_fallback = 0;
    int64_t timeout_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|Op", kwlist, &words_obj, &timeout_obj, &force_fallback))
        return NULL;
    if (parse_timeout(timeout_obj, &timeout_ns) < 0) return NULL;
    word_set s;
    if (word_set_parse(words_obj, &s) < 0) return NULL;
    int use_waitv = !force_fallback && probe_waitv();
    int64_t deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    unsigned rotor = 0;
    int r;
    for (;;) {
        int64_t now = now_ns();
        int64_t slice_end = now + SLICE_NS;
        if (deadline >= 0 && deadline < slice_end) slice_end = deadline;
        Py_BEGIN_ALLOW_THREADS
        if (!use_waitv)
            r = wait_fallback(s.words, s.n, slice_end, &rotor);
        else if (s.n <= KERNEL_MAX_WORDS)
            r = waitv_chunk(s.words, s.n, NULL, slice_end);
        else
            r = waitv_many(s.words, s.n, slice_end);
        Py_END_ALLOW_THREADS
        if (r >= 0 || r == -1) break;
        if (r == -4) {
            word_set_release(&s);
            return PyErr_NoMemory();
        }
        if (PyErr_CheckSignals() < 0) {
            word_set_release(&s);
            return NULL;
        }
        if (r == -2 && deadline >= 0 && now_ns() >= deadline) break;
    }
    word_set_release(&s);
    if (r == -2) Py_RETURN_NONE;
    return PyLong_FromLong(r);
}

static int single_word(PyObject *args, const char *fmt, Py_buffer *v, uint32_t **p, unsigned long long *value) {
    PyObject *obj;
    Py_ssize_t off;
    unsigned long long val = 0;
    int ok = value != NULL ? PyArg_ParseTuple(args, fmt, &obj, &off, &val) : PyArg_ParseTuple(args, fmt, &obj, &off);
    if (!ok) return -1;
    if (value != NULL) {
        if (val > 0xFFFFFFFFull) {
            PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
            return -1;
        }
        *value = val;
    }
    if (PyObject_GetBuffer(obj, v, value != NULL ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    *p = word_at(v, off);
    if (*p == NULL) {
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static PyObject *mod_wake(PyObject *self, PyObject *args) {
    Py_buffer v;
    uint32_t *p;
    if (single_word(args, "On", &v, &p, NULL) < 0) return NULL;
    long r = syscall(SYS_futex, p, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    PyBuffer_Release(&v);
    if (r < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(r);
}

static PyObject *mod_load(PyObject *self, PyObject *args) {
    Py_buffer v;
    uint32_t *p;
    if (single_word(args, "On", &v, &p, NULL) < 0) return NULL;
    uint32_t x = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(x);
}

static PyObject *mod_fetch_add(PyObject *self, PyObject *args) {
    Py_buffer v;
    uint32_t *p;
    unsigned long long val;
    if (single_word(args, "OnK", &v, &p, &val) < 0) return NULL;
    uint32_t x = __atomic_fetch_add(p, (uint32_t)val, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(x);
}

/* ---- rings: announce, re-check and sleep on many ring buffers in one call ---------------------- */

/* Ring header offsets (ampipc/_layout.py, _native/layout.h): the words this module reads or stores. */
#define R_FLAGS 4
#define R_LENGTH 8
#define R_TRIGGER 16
#define R_PREFIX 20
#define R_HEAD 64
#define R_TAIL 128
#define R_TX_WAITING 192
#define R_RX_WAITING 196
#define R_WRITER_CLOSED 200
#define R_READER_CLOSED 204
#define R_HEADER 256
#define EV_READ 1
#define EV_WRITE 2

static inline uint32_t ld(const unsigned char *h, int off) { return __atomic_load_n((const uint32_t *)(h + off), __ATOMIC_SEQ_CST); }
static inline void st(unsigned char *h, int off, uint32_t v) { __atomic_store_n((uint32_t *)(h + off), v, __ATOMIC_SEQ_CST); }

/* The events of `want` a ring is ready for (the same rules as ampipc.waiting._RingSource.ready).
 * A header that does not hold together is reported ready: the operation then raises CorruptRegion. */
static int ring_ready_mask(const unsigned char *h, Py_ssize_t room_to_end, int want) {
    uint32_t length = ld(h, R_LENGTH);
    if (length < 2 || (Py_ssize_t)length > room_to_end) return want;
    uint32_t head = ld(h, R_HEAD), tail = ld(h, R_TAIL);
    if (head >= length || tail >= length) return want;
    int message = ld(h, R_FLAGS) & 1u;
    int mask = 0;
    if (want & EV_READ) {
        uint32_t avail = head >= tail ? head - tail : length + head - tail;
        uint32_t need = 1;
        if (!message) {
            uint32_t trigger = ld(h, R_TRIGGER);
            if (trigger != 0 && trigger < length) need = trigger;
        }
        if (avail >= need || ld(h, R_WRITER_CLOSED)) mask |= EV_READ;
    }
    if (want & EV_WRITE) {
        uint32_t spaces = tail > head ? tail - head - 1 : length + tail - head - 1;
        uint32_t room = 0;
        if (message) {
            room = ld(h, R_PREFIX);
            if (room != 1 && room != 2 && room != 4 && room != 8) room = 4;
        }
        if (spaces > room || ld(h, R_READER_CLOSED)) mask |= EV_WRITE;
    }
    return mask;
}

typedef struct {
    unsigned char *h;
    int events;
} ring_ref;

static PyObject *ready_list(const ring_ref *rings, Py_ssize_t n, Py_ssize_t size, unsigned char *base) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!rings[i].events) continue; /* disabled by the caller's mask */
        int mask = ring_ready_mask(rings[i].h, size - (rings[i].h - base) - R_HEADER, rings[i].events);
        if (!mask) continue;
        PyObject *item = Py_BuildValue("(ni)", i, mask);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

/* wait_rings(mapping, rings, extra=(), timeout=None, fallback=False) -> list[(index, mask)]
 * rings: (header offset, events) pairs of one mapping. The ready ones, checked first without
 * announcing; otherwise announce in each waiting word, re-check, sleep on every index word (and
 * the `extra` words) for at most `timeout`, clear the waiting words and check once more. [] when
 * nothing was ready by then (the caller loops, re-checking liveness and its deadline). */
static PyObject *mod_wait_rings(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"mapping", "rings", "extra", "timeout", "fallback", "enabled", NULL};
    PyObject *mapping, *rings_obj, *extra_obj = NULL, *timeout_obj = Py_None, *enabled_obj = Py_None;
    int force_fallback = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOpO", kwlist, &mapping, &rings_obj, &extra_obj, &timeout_obj,
                                     &force_fallback, &enabled_obj))
        return NULL;
    int64_t timeout_ns;
    if (parse_timeout(timeout_obj, &timeout_ns) < 0) return NULL;
    PyObject *seq = PySequence_Fast(rings_obj, "rings must be a sequence of (offset, events) pairs");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_TOTAL_WORDS / 2) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "between 1 and %d rings, not %zd", MAX_TOTAL_WORDS / 2, n);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(mapping, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    unsigned char *base = (unsigned char *)view.buf;
    PyObject *result = NULL;
    word_set extra;
    memset(&extra, 0, sizeof(extra));
    ring_ref *rings = PyMem_Calloc((size_t)n, sizeof(ring_ref));
    word_t *words = NULL;
    if (rings == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t off;
        int events;
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "ni", &off, &events)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "ring %zd must be an (offset, events) pair", i);
            goto done;
        }
        if (off < 0 || off % 64 != 0 || off > view.len - R_HEADER || ((uintptr_t)(base + off) & 3u)) {
            PyErr_Format(PyExc_IndexError, "ring offset %zd is not a 64-byte aligned header inside the mapping", off);
            goto done;
        }
        if (events < 1 || events > (EV_READ | EV_WRITE)) {
            PyErr_Format(PyExc_ValueError, "events of ring %zd must be 1, 2 or 3, not %d", i, events);
            goto done;
        }
        rings[i].h = base + off;
        rings[i].events = events;
    }
    if (enabled_obj != Py_None) { /* a byte per ring: 0 leaves the ring out of this wait entirely */
        Py_buffer en;
        if (PyObject_GetBuffer(enabled_obj, &en, PyBUF_SIMPLE) < 0) goto done;
        if (en.len != n) {
            PyBuffer_Release(&en);
            PyErr_Format(PyExc_ValueError, "enabled has %zd bytes for %zd rings", en.len, n);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (!((const unsigned char *)en.buf)[i]) rings[i].events = 0;
        PyBuffer_Release(&en);
    }
    if (extra_obj != NULL && extra_obj != Py_None && PySequence_Size(extra_obj) > 0) {
        if (word_set_parse(extra_obj, &extra) < 0) goto done;
    } else if (PyErr_Occurred())
        goto done;

    /* 1. the fast path: something is ready, nothing is stored */
    result = ready_list(rings, n, view.len, base);
    if (result == NULL || PyList_GET_SIZE(result) > 0 || timeout_ns == 0) goto done;
    Py_CLEAR(result);

    /* 2. announce, re-check: a publication from now on either is seen here or finds the flag */
    int nwords = extra.n;
    for (Py_ssize_t i = 0; i < n; i++) nwords += (rings[i].events & EV_READ ? 1 : 0) + (rings[i].events & EV_WRITE ? 1 : 0);
    words = PyMem_Calloc((size_t)nwords, sizeof(word_t));
    if (words == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int k = 0;
    for (int i = 0; i < extra.n; i++) words[k++] = extra.words[i];
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char *h = rings[i].h;
        if (rings[i].events & EV_READ) {
            words[k].addr = (uint32_t *)(h + R_HEAD);
            words[k++].expected = ld(h, R_HEAD);
            st(h, R_RX_WAITING, 1);
        }
        if (rings[i].events & EV_WRITE) {
            words[k].addr = (uint32_t *)(h + R_TAIL);
            words[k++].expected = ld(h, R_TAIL);
            st(h, R_TX_WAITING, 1);
        }
    }
    int any_ready = 0;
    for (Py_ssize_t i = 0; i < n && !any_ready; i++)
        any_ready = rings[i].events && ring_ready_mask(rings[i].h, view.len - (rings[i].h - base) - R_HEADER, rings[i].events) != 0;
    int r = -1;
    if (!any_ready && nwords == 0) { /* every ring disabled and no extra word: just the timeout */
        int64_t slice = timeout_ns < 0 || timeout_ns > SLICE_NS ? SLICE_NS : timeout_ns;
        struct timespec ts = ts_of(slice);
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        any_ready = 1;
    }
    if (!any_ready) {
        /* 3. sleep on every index word at once */
        int64_t slice = timeout_ns < 0 || timeout_ns > SLICE_NS ? SLICE_NS : timeout_ns;
        int64_t deadline = now_ns() + slice;
        int use_waitv = !force_fallback && probe_waitv();
        unsigned rotor = 0;
        Py_BEGIN_ALLOW_THREADS
        if (!use_waitv) {
            do r = wait_fallback(words, nwords, deadline, &rotor);
            while (r == -2 && now_ns() < deadline);
        } else if (nwords <= KERNEL_MAX_WORDS)
            r = waitv_chunk(words, nwords, NULL, deadline);
        else
            r = waitv_many(words, nwords, deadline);
        Py_END_ALLOW_THREADS
    }
    /* 4. the waiting words back to 0, as the core does after its own sleep */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rings[i].events & EV_READ) st(rings[i].h, R_RX_WAITING, 0);
        if (rings[i].events & EV_WRITE) st(rings[i].h, R_TX_WAITING, 0);
    }
    if (r == -4) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyErr_CheckSignals() < 0) goto done;
    result = ready_list(rings, n, view.len, base);
done:
    PyMem_Free(words);
    PyMem_Free(rings);
    word_set_release(&extra);
    PyBuffer_Release(&view);
    Py_DECREF(seq);
    return result;
}

static PyObject *mod_available(PyObject *self, PyObject *unused) { return PyBool_FromLong(probe_waitv()); }

static PyMethodDef module_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))mod_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(words, timeout=None, fallback=False) -> int | None: sleep until one of the (buffer, offset, "
     "expected) words is woken (its index), one no longer holds its expected value (-1), or the timeout (None)."},
    {"wake", mod_wake, METH_VARARGS, "wake(buffer, offset) -> int: wake every sleeper on the word."},
    {"load", mod_load, METH_VARARGS, "load(buffer, offset) -> int: atomic (seq_cst) load of a u32."},
    {"fetch_add", mod_fetch_add, METH_VARARGS, "fetch_add(buffer, offset, value) -> int: atomic add, old value."},
    {"wait_rings", (PyCFunction)(void (*)(void))mod_wait_rings, METH_VARARGS | METH_KEYWORDS,
     "wait_rings(mapping, rings, extra=(), timeout=None, fallback=False) -> [(index, mask)]: announce, "
     "re-check and sleep on many ring buffers of one mapping (one slice); [] when none became ready."},
    {"available", mod_available, METH_NOARGS, "True if the kernel has futex_waitv (Linux 5.16+)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef waitv_module = {
    PyModuleDef_HEAD_INIT, "ampipc._waitv", "Sleep on many futex words at once (futex_waitv).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__waitv(void) {
    PyObject *m = PyModule_Create(&waitv_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "KERNEL_MAX_WORDS", KERNEL_MAX_WORDS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_WORDS", MAX_TOTAL_WORDS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
