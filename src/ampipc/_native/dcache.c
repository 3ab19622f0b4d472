/*
 * The chip memory model: the CM7's data cache and the coherency checker (part of the C core;
 * module.c includes it). Opt-in per region (ampipc.hw.memory, ampipc.hw.cache); a mapping without a
 * model never enters this file.
 *
 * Theory of operation
 * -------------------
 * A process acting as a core of a chip region attaches a model to its Mapping. The data of the
 * shared objects (ring indexes, constants, trigger level and storage) is then read and written
 * through model_read / model_write; ampipc's own host bookkeeping in the same headers (liveness,
 * statistics, waiting and close flags, futex words) is not firmware data and stays direct.
 *
 * The CM7 (with the cache model on) has one write-back cache per process, as a core has one:
 * 32-byte lines, `ways`-way set associative, round-robin victims per set, indexed by chip address.
 * Each line keeps its data, a dirty byte mask and `fill`: the memory's bytes when the line was last
 * in step with memory (filled or written back). The policy of an address is the highest-numbered
 * MPU range that covers it, else the memory's default; non-cacheable accesses go to memory.
 *   - read hit: the line's data, stale or not; if memory differs from `fill` in the bytes read,
 *     another side changed them since the fill: REPORT_STALE_READ.
 *   - read miss (cacheable): allocate (the victim is written back if dirty), fill from memory.
 *   - write: write-back with write-allocate updates the line (allocated if missing) and marks the
 *     bytes dirty; write-back without write-allocate writes memory on a miss; write-through writes
 *     memory and updates a present line.
 *   - write-back of a dirty line writes its dirty bytes (byte masks: ampipc's host bookkeeping that
 *     shares a line with a ring index is never clobbered, so the false-sharing loss of a whole-line
 *     write-back is not modelled); a dirty byte that memory changed since the fill was written by
 *     both sides, and the other side's value is overwritten: REPORT_LOST_WRITE.
 *   - invalidate by address drops every line the range touches (CMSIS rounds to lines); dirty
 *     bytes outside the range are lost: REPORT_PARTIAL_INVALIDATE.
 * The CM4 and DMA have no cache: they access memory, and a read of bytes the CM7 holds dirty is
 * REPORT_DIRTY_READ. The dirty map in the region's chip record (one u32 byte mask per line) is how
 * they know: written only by the CM7's model, under its lock, as masks change.
 * Reports go to the record's table under its lock word (pid of the holder; a dead or slow holder's
 * lock is taken over after a bounded spin: a report may then be counted twice, never lost).
 * Every offset is checked against the mapping and the record before use.
 */

#include <pthread.h>

#define CHIP_MAGIC 0x4D434D41u
#define CHIP_VERSION 1u
#define CHIP_LINE 32u
#define CHIP_OFF_FLAGS 48
#define CHIP_OFF_LINE 52
#define CHIP_OFF_CACHE_SIZE 60
#define CHIP_OFF_CACHE_WAYS 64
#define CHIP_OFF_LINES 68
#define CHIP_OFF_BASE 40
#define CHIP_OFF_DEFAULT_POLICY 88
#define CHIP_OFF_REPORT_LOCK 128
#define CHIP_OFF_REPORT_CAPACITY 132
#define CHIP_OFF_REPORTS_USED 136
#define CHIP_OFF_REPORTS_DROPPED 140
#define CHIP_OFF_REPORTS_TOTAL 144
#define CHIP_OFF_REPORTS 160
#define CHIP_REPORT_SIZE 32

#define POLICY_NC 0
#define POLICY_WB 1
#define POLICY_WB_NO_WA 2
#define POLICY_WT 3

#define MODEL_CM7 1
#define MODEL_CM4 2
#define MODEL_DMA 3

#define REPORT_STALE_READ 1
#define REPORT_DIRTY_READ 2
#define REPORT_LOST_WRITE 3
#define REPORT_PARTIAL_INVALIDATE 4

#define MPU_RANGES 16

typedef struct memmodel {
    int core;
    int cached;
    unsigned char *record;
    unsigned char *mem; /* the mapping's base */
    uint32_t size;      /* bytes of the region */
    uint32_t base_addr;
    uint32_t lines;
    uint32_t capacity;
    uint32_t default_policy;
    int nmpu;
    struct {
        uint32_t lo, hi; /* region offsets [lo, hi) */
        int policy;
    } mpu[MPU_RANGES]; /* in MPU region number order: the last that covers an offset wins */
} memmodel;

typedef struct {
    memmodel *owner; /* NULL: the way is free */
    uint32_t off;    /* region offset of the line */
    uint32_t addr;   /* its chip address */
    uint32_t dirty;  /* byte mask */
    unsigned char data[CHIP_LINE];
    unsigned char fill[CHIP_LINE];
} cline;

/* The CM7's one cache in this process. */
static struct {
    uint32_t sets, ways;
    cline *lines;
    uint32_t *victim; /* per set: the next way to evict */
    uint64_t hits, misses, writebacks, evictions;
    pthread_mutex_t lock;
} dcache = {0, 0, NULL, NULL, 0, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

static inline uint32_t *dirty_word(memmodel *md, uint32_t line_off) {
    return (uint32_t *)(md->record + CHIP_OFF_REPORTS + CHIP_REPORT_SIZE * md->capacity + 4 * (line_off / CHIP_LINE));
}

static void model_report(memmodel *md, uint32_t kind, int core, uint32_t off, uint32_t len) {
    unsigned char *rec = md->record;
    __atomic_fetch_add((uint64_t *)(rec + CHIP_OFF_REPORTS_TOTAL), 1, __ATOMIC_RELAXED);
    uint32_t *lock = (uint32_t *)(rec + CHIP_OFF_REPORT_LOCK);
    for (int spin = 0;; spin++) {
        uint32_t free_word = 0;
        if (__atomic_compare_exchange_n(lock, &free_word, process_pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) break;
        if (spin > 100000) { /* a holder that died in here: take the lock over */
            __atomic_store_n(lock, process_pid, __ATOMIC_SEQ_CST);
            break;
        }
        sched_yield();
    }
    uint32_t used = ld32_rlx(rec + CHIP_OFF_REPORTS_USED);
    if (used > md->capacity) used = md->capacity; /* hostile value: stay inside the table */
    uint32_t line = off / CHIP_LINE;
    unsigned char *e = rec + CHIP_OFF_REPORTS;
    uint32_t i;
    for (i = 0; i < used; i++, e += CHIP_REPORT_SIZE) {
        if (ld32_rlx(e) == kind && ld32_rlx(e + 4) == (uint32_t)core && ld32_rlx(e + 8) / CHIP_LINE == line) {
            st64_rlx(e + 16, ld64_rlx(e + 16) + 1);
            break;
        }
    }
    if (i == used) {
        if (used < md->capacity) {
            st32_rlx(e, kind);
            st32_rlx(e + 4, (uint32_t)core);
            st32_rlx(e + 8, off);
            st32_rlx(e + 12, len);
            st64_rlx(e + 16, 1);
            st64_rlx(e + 24, (uint64_t)now_ns());
            st32_rel(rec + CHIP_OFF_REPORTS_USED, used + 1);
        } else
            st32_rlx(rec + CHIP_OFF_REPORTS_DROPPED, ld32_rlx(rec + CHIP_OFF_REPORTS_DROPPED) + 1);
    }
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

static int model_policy(memmodel *md, uint32_t off) {
    int policy = (int)md->default_policy;
    for (int i = 0; i < md->nmpu; i++)
        if (off >= md->mpu[i].lo && off < md->mpu[i].hi) policy = md->mpu[i].policy;
    return policy;
}

static cline *cache_find(memmodel *md, uint32_t line_off) {
    uint32_t addr = md->base_addr + line_off;
    uint32_t set = (addr / CHIP_LINE) % dcache.sets;
    cline *l = dcache.lines + (size_t)set * dcache.ways;
    for (uint32_t w = 0; w < dcache.ways; w++)
        if (l[w].owner == md && l[w].addr == addr) return &l[w];
    return NULL;
}

static void line_set_dirty(cline *l, uint32_t mask) {
    l->dirty = mask;
    __atomic_store_n(dirty_word(l->owner, l->off), mask, __ATOMIC_RELEASE);
}

static void cache_writeback(cline *l) {
    if (l->dirty == 0) return;
    memmodel *md = l->owner;
    unsigned char *mem = md->mem + l->off;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int lost = -1;
    for (uint32_t i = 0; i < CHIP_LINE; i++) {
        if (!(l->dirty & (1u << i))) continue;
        if (lost < 0 && mem[i] != l->fill[i]) lost = (int)i;
        mem[i] = l->data[i];
        l->fill[i] = l->data[i];
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (lost >= 0) model_report(md, REPORT_LOST_WRITE, MODEL_CM7, l->off + (uint32_t)lost, 1);
    line_set_dirty(l, 0);
    dcache.writebacks++;
}

static void cache_drop(cline *l) {
    if (l->dirty) line_set_dirty(l, 0);
    l->owner = NULL;
}

static cline *cache_allocate(memmodel *md, uint32_t line_off) {
    uint32_t addr = md->base_addr + line_off;
    uint32_t set = (addr / CHIP_LINE) % dcache.sets;
    cline *l = dcache.lines + (size_t)set * dcache.ways;
    cline *way = NULL;
    for (uint32_t w = 0; w < dcache.ways && way == NULL; w++)
        if (l[w].owner == NULL) way = &l[w];
    if (way == NULL) {
        way = &l[dcache.victim[set]];
        dcache.victim[set] = (dcache.victim[set] + 1) % dcache.ways;
        cache_writeback(way);
        cache_drop(way);
        dcache.evictions++;
    }
    way->owner = md;
    way->off = line_off;
    way->addr = addr;
    way->dirty = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(way->data, md->mem + line_off, CHIP_LINE);
    memcpy(way->fill, way->data, CHIP_LINE);
    return way;
}

static inline uint32_t byte_mask(uint32_t from, uint32_t n) {
    return (n >= 32 ? 0xFFFFFFFFu : ((1u << n) - 1)) << from;
}

/* Bytes the CM7 holds dirty, read by a core without a cache (the CM4) or a DMA: reported. */
static void model_check_dirty(memmodel *md, uint32_t off, uint32_t n) {
    for (uint32_t at = off; at < off + n;) {
        uint32_t line_off = at / CHIP_LINE * CHIP_LINE, from = at - line_off;
        uint32_t k = CHIP_LINE - from < off + n - at ? CHIP_LINE - from : off + n - at;
        if (__atomic_load_n(dirty_word(md, line_off), __ATOMIC_ACQUIRE) & byte_mask(from, k))
            model_report(md, REPORT_DIRTY_READ, md->core, at, k);
        at += k;
    }
}

/* The CM7's read through its cache; dcache.lock held. */
static void cache_read_locked(memmodel *md, uint32_t off, unsigned char *dst, uint32_t n) {
    for (uint32_t at = off; at < off + n;) {
        uint32_t line_off = at / CHIP_LINE * CHIP_LINE, from = at - line_off;
        uint32_t k = CHIP_LINE - from < off + n - at ? CHIP_LINE - from : off + n - at;
        unsigned char *out = dst + (at - off);
        if (model_policy(md, at) == POLICY_NC) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            memcpy(out, md->mem + at, k);
        } else {
            cline *l = cache_find(md, line_off);
            if (l != NULL) {
                dcache.hits++;
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if (memcmp(md->mem + at, l->fill + from, k) != 0) model_report(md, REPORT_STALE_READ, MODEL_CM7, at, k);
            } else {
                dcache.misses++;
                l = cache_allocate(md, line_off);
            }
            memcpy(out, l->data + from, k);
        }
        at += k;
    }
}

/* The CM7's write through its cache; dcache.lock held. */
static void cache_write_locked(memmodel *md, uint32_t off, const unsigned char *src, uint32_t n) {
    for (uint32_t at = off; at < off + n;) {
        uint32_t line_off = at / CHIP_LINE * CHIP_LINE, from = at - line_off;
        uint32_t k = CHIP_LINE - from < off + n - at ? CHIP_LINE - from : off + n - at;
        const unsigned char *in = src + (at - off);
        int policy = model_policy(md, at);
        cline *l = policy == POLICY_NC ? NULL : cache_find(md, line_off);
        if (policy == POLICY_NC || policy == POLICY_WT || (l == NULL && policy == POLICY_WB_NO_WA)) {
            if (l != NULL) { /* write-through hit: the line stays in step with memory */
                memcpy(l->data + from, in, k);
                memcpy(l->fill + from, in, k);
                dcache.hits++;
            } else if (policy != POLICY_NC)
                dcache.misses++;
            memmove(md->mem + at, in, k);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
        } else {
            if (l != NULL)
                dcache.hits++;
            else {
                dcache.misses++;
                l = cache_allocate(md, line_off);
            }
            memcpy(l->data + from, in, k);
            line_set_dirty(l, l->dirty | byte_mask(from, k));
        }
        at += k;
    }
}

/* A read of [off, off + n) by this process's core. */
static void model_read(memmodel *md, uint32_t off, unsigned char *dst, uint32_t n) {
    if (!md->cached) {
        model_check_dirty(md, off, n);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        memcpy(dst, md->mem + off, n);
        return;
    }
    pthread_mutex_lock(&dcache.lock);
    cache_read_locked(md, off, dst, n);
    pthread_mutex_unlock(&dcache.lock);
}

static void model_write(memmodel *md, uint32_t off, const unsigned char *src, uint32_t n) {
    if (!md->cached) {
        memmove(md->mem + off, src, n);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        return;
    }
    pthread_mutex_lock(&dcache.lock);
    cache_write_locked(md, off, src, n);
    pthread_mutex_unlock(&dcache.lock);
}

/* ---- shared words of firmware data (toggle words, control pending words) --------------------
 * A strategy's shared word is updated by read-modify-write. A core without a cache, or the CM7 on
 * non-cacheable memory, does what LDREX/STREX does on the chip: one atomic operation on memory (the
 * CM4's read is checked against the CM7's dirty bytes first). The CM7 on cacheable memory operates on
 * its cached copy, atomic only against its own tasks (the exclusive monitor is local): the other
 * core neither sees the new value nor is seen, exactly the lost-event bug of a cacheable flag word. */
#define WORD_LOAD 0
#define WORD_OR 1
#define WORD_XOR 2
#define WORD_AND 3
#define WORD_CAS 4 /* a: expected, b: desired */

static inline uint32_t word_apply(int op, uint32_t old, uint32_t a, uint32_t b) {
    switch (op) {
    case WORD_OR: return old | a;
    case WORD_XOR: return old ^ a;
    case WORD_AND: return old & a;
    case WORD_CAS: return old == a ? b : old;
    default: return old;
    }
}

static uint32_t memory_atomic32(uint32_t *p, int op, uint32_t a, uint32_t b) {
    switch (op) {
    case WORD_OR: return __atomic_fetch_or(p, a, __ATOMIC_SEQ_CST);
    case WORD_XOR: return __atomic_fetch_xor(p, a, __ATOMIC_SEQ_CST);
    case WORD_AND: return __atomic_fetch_and(p, a, __ATOMIC_SEQ_CST);
    case WORD_CAS: __atomic_compare_exchange_n(p, &a, b, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return a;
    default: return __atomic_load_n(p, __ATOMIC_SEQ_CST);
    }
}

/* The value before the operation (WORD_CAS: the value found). `off` is 4-aligned and in bounds. */
static uint32_t model_word32(memmodel *md, uint32_t off, int op, uint32_t a, uint32_t b) {
    uint32_t *p = (uint32_t *)(md->mem + off);
    if (!md->cached) {
        model_check_dirty(md, off, 4);
        return memory_atomic32(p, op, a, b);
    }
    pthread_mutex_lock(&dcache.lock);
    uint32_t old;
    if (model_policy(md, off) == POLICY_NC)
        old = memory_atomic32(p, op, a, b);
    else {
        unsigned char raw[4];
        cache_read_locked(md, off, raw, 4);
        memcpy(&old, raw, 4);
        uint32_t value = word_apply(op, old, a, b);
        if (op != WORD_LOAD && value != old) {
            memcpy(raw, &value, 4);
            cache_write_locked(md, off, raw, 4);
        }
    }
    pthread_mutex_unlock(&dcache.lock);
    return old;
}

/* What the strategies call: straight to memory on a region without a model. */
static inline uint32_t data_word32(MappingObject *m, Py_ssize_t off, int op, uint32_t a, uint32_t b) {
    if (__builtin_expect(m->model != NULL, 0)) return model_word32(m->model, (uint32_t)off, op, a, b);
    return memory_atomic32((uint32_t *)(m->base + off), op, a, b);
}

#define MAINTAIN_CLEAN 1
#define MAINTAIN_INVALIDATE 2
#define MAINTAIN_CLEAN_INVALIDATE 3

/* SCB_*DCache_by_Addr over region offsets [off, off + n) (every line the range touches), or the
 * whole cache (n < 0: SCB_CleanDCache and friends, every line of every region). */
static void model_maintain(memmodel *md, int op, uint32_t off, int64_t n) {
    if (n == 0) return; /* CMSIS: a by-address operation of no bytes does nothing */
    pthread_mutex_lock(&dcache.lock);
    size_t total = (size_t)dcache.sets * dcache.ways;
    for (size_t i = 0; i < total; i++) {
        cline *l = &dcache.lines[i];
        if (l->owner == NULL) continue;
        uint32_t from = 0, to = CHIP_LINE; /* the part of the line inside the range */
        if (n >= 0) {
            if (l->owner != md || l->off + CHIP_LINE <= off || (int64_t)l->off >= (int64_t)off + n) continue;
            if (off > l->off) from = off - l->off;
            if ((int64_t)off + n < (int64_t)l->off + CHIP_LINE) to = (uint32_t)((int64_t)off + n - l->off);
        }
        if (op & MAINTAIN_CLEAN) cache_writeback(l);
        if (op == MAINTAIN_INVALIDATE && l->dirty) {
            uint32_t outside = l->dirty & ~byte_mask(from, to - from);
            if (outside) model_report(l->owner, REPORT_PARTIAL_INVALIDATE, MODEL_CM7, l->off + (uint32_t)__builtin_ctz(outside), 1);
        }
        if (op & MAINTAIN_INVALIDATE) cache_drop(l);
    }
    pthread_mutex_unlock(&dcache.lock);
}

static void model_free(MappingObject *m) {
    memmodel *md = m->model;
    if (md == NULL) return;
    m->model = NULL;
    if (md->cached && dcache.lines != NULL) { /* this process stops acting as the CM7 on the region */
        pthread_mutex_lock(&dcache.lock);
        size_t total = (size_t)dcache.sets * dcache.ways;
        for (size_t i = 0; i < total; i++)
            if (dcache.lines[i].owner == md) {
                if (m->base != NULL) cache_drop(&dcache.lines[i]);
                else dcache.lines[i].owner = NULL;
            }
        pthread_mutex_unlock(&dcache.lock);
    }
    PyMem_RawFree(md);
}

/* ---- the Python surface (Mapping methods) ------------------------------------------------ */

static int model_range(MappingObject *m, Py_ssize_t off, Py_ssize_t n) {
    if (mapping_check_open(m) < 0) return -1;
    if (m->model == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no memory model is attached to this mapping (attach as a core of a chip region)");
        return -1;
    }
    if (off < 0 || n < 0 || off > m->size || n > m->size - off) {
        PyErr_Format(PyExc_IndexError, "range %zd + %zd is outside the region of %zd bytes", off, n, m->size);
        return -1;
    }
    return 0;
}

static int model_idle(MappingObject *self);

static PyObject *raise_record(const char *field, long long value, const char *why) {
    PyErr_Format(ErrCorrupt, "chip memory record is corrupt: %s = %lld %s", field, value, why);
    return NULL;
}

static PyObject *mapping_model_attach(MappingObject *self, PyObject *args) {
    Py_ssize_t record;
    int core, cached;
    if (!PyArg_ParseTuple(args, "nip", &record, &core, &cached)) return NULL;
    if (mapping_check_open(self) < 0) return NULL;
    if (core != MODEL_CM7 && core != MODEL_CM4) {
        PyErr_SetString(PyExc_ValueError, "core must be 1 (CM7) or 2 (CM4)");
        return NULL;
    }
    if (cached && core != MODEL_CM7) {
        PyErr_SetString(PyExc_ValueError, "only the CM7 has a data cache");
        return NULL;
    }
    if (self->size > 0xFFFFFFF0) {
        PyErr_SetString(PyExc_ValueError, "a chip region is at most 4 GiB");
        return NULL;
    }
    if (record < 0 || record % 8 != 0 || record > self->size - CHIP_OFF_REPORTS) return raise_record("offset", record, "is outside the region");
    unsigned char *rec = self->base + record;
    if (ld32_acq(rec) != CHIP_MAGIC) return raise_record("magic", ld32_rlx(rec), "is not \"AMCM\"");
    if (ld32_rlx(rec + 4) != CHIP_VERSION) return raise_record("version", ld32_rlx(rec + 4), "is not 1");
    if (ld32_rlx(rec + CHIP_OFF_LINE) != CHIP_LINE) return raise_record("line size", ld32_rlx(rec + CHIP_OFF_LINE), "is not 32");
    uint32_t lines = ld32_rlx(rec + CHIP_OFF_LINES);
    if ((uint64_t)lines * CHIP_LINE < (uint64_t)self->size || (uint64_t)lines * CHIP_LINE >= (uint64_t)self->size + CHIP_LINE)
        return raise_record("lines", lines, "does not cover the region");
    uint32_t capacity = ld32_rlx(rec + CHIP_OFF_REPORT_CAPACITY);
    uint64_t need = (uint64_t)CHIP_OFF_REPORTS + (uint64_t)CHIP_REPORT_SIZE * capacity + 4ull * lines;
    if (capacity == 0 || (uint64_t)record + need > (uint64_t)self->size) return raise_record("report capacity", capacity, "does not fit the region");
    uint32_t policy = ld32_rlx(rec + CHIP_OFF_DEFAULT_POLICY);
    if (policy > POLICY_WT) return raise_record("default policy", policy, "is not a cache policy");
    uint32_t base_addr = ld32_rlx(rec + CHIP_OFF_BASE);
    if ((uint64_t)base_addr + (uint64_t)self->size > 0x100000000ull || base_addr % CHIP_LINE)
        return raise_record("base address", base_addr, "leaves the 32-bit address space or is not line aligned");
    if (cached) {
        uint32_t csize = ld32_rlx(rec + CHIP_OFF_CACHE_SIZE), ways = ld32_rlx(rec + CHIP_OFF_CACHE_WAYS);
        if (ways == 0 || ways > 64 || csize == 0 || csize > (1u << 24) || csize % (ways * CHIP_LINE))
            return raise_record("cache geometry", csize, "is not a whole number of sets");
        pthread_mutex_lock(&dcache.lock);
        if (dcache.lines == NULL) {
            dcache.sets = csize / (ways * CHIP_LINE);
            dcache.ways = ways;
            dcache.lines = PyMem_RawCalloc((size_t)dcache.sets * ways, sizeof(cline));
            dcache.victim = PyMem_RawCalloc(dcache.sets, sizeof(uint32_t));
            if (dcache.lines == NULL || dcache.victim == NULL) {
                PyMem_RawFree(dcache.lines);
                PyMem_RawFree(dcache.victim);
                dcache.lines = NULL;
                dcache.victim = NULL;
                pthread_mutex_unlock(&dcache.lock);
                return PyErr_NoMemory();
            }
        } else if (dcache.sets * dcache.ways * CHIP_LINE != csize || dcache.ways != ways) {
            pthread_mutex_unlock(&dcache.lock);
            PyErr_SetString(PyExc_ValueError, "this process's CM7 cache has another geometry than this region's record");
            return NULL;
        }
        pthread_mutex_unlock(&dcache.lock);
    }
    if (model_idle(self) < 0) return NULL;
    memmodel *md = PyMem_RawCalloc(1, sizeof(memmodel));
    if (md == NULL) return PyErr_NoMemory();
    md->core = core;
    md->cached = cached;
    md->record = rec;
    md->mem = self->base;
    md->size = (uint32_t)self->size;
    md->base_addr = base_addr;
    md->lines = lines;
    md->capacity = capacity;
    md->default_policy = policy;
    model_free(self);
    self->model = md;
    Py_RETURN_NONE;
}

static int model_idle(MappingObject *self) {
    if (self->busy == 0) return 0;
    PyErr_SetString(PyExc_RuntimeError, "a wait is in flight on this region: the memory model cannot change under it");
    return -1;
}

static PyObject *mapping_model_detach(MappingObject *self, PyObject *unused) {
    if (model_idle(self) < 0) return NULL;
    model_free(self);
    Py_RETURN_NONE;
}

static PyObject *mapping_model_read(MappingObject *self, PyObject *args) {
    Py_ssize_t off, n;
    if (!PyArg_ParseTuple(args, "nn", &off, &n)) return NULL;
    if (model_range(self, off, n) < 0 || mapping_check_powered_at(self, off) < 0) return NULL;
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b == NULL) return NULL;
    model_read(self->model, (uint32_t)off, (unsigned char *)PyBytes_AS_STRING(b), (uint32_t)n);
    return b;
}

static PyObject *mapping_model_write(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "ny*", &off, &data)) return NULL;
    if (model_range(self, off, data.len) < 0 || mapping_check_powered_at(self, off) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    model_write(self->model, (uint32_t)off, data.buf, (uint32_t)data.len);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* data_word_u32(offset, op, a=0, b=0): a strategy's shared word, through the model when one is
 * attached (op 0 load, 1 or, 2 xor, 3 and, 4 compare-and-swap of a by b); the value before. */
static PyObject *mapping_data_word_u32(MappingObject *self, PyObject *args) {
    Py_ssize_t off;
    int op;
    unsigned long a = 0, b = 0;
    if (!PyArg_ParseTuple(args, "ni|kk", &off, &op, &a, &b)) return NULL;
    if (op < WORD_LOAD || op > WORD_CAS) {
        PyErr_SetString(PyExc_ValueError, "op must be 0 (load), 1 (or), 2 (xor), 3 (and) or 4 (compare-and-swap)");
        return NULL;
    }
    if (a > 0xFFFFFFFFul || b > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    if (mapping_word(self, off, 4) == NULL || mapping_check_powered_at(self, off) < 0) return NULL;
    return PyLong_FromUnsignedLong(data_word32(self, off, op, (uint32_t)a, (uint32_t)b));
}

/* A read by another bus master (a DMA stream): memory as it is, checked against the dirty map. */
static PyObject *mapping_model_observe(MappingObject *self, PyObject *args) {
    Py_ssize_t off, n;
    int core = MODEL_DMA;
    if (!PyArg_ParseTuple(args, "nn|i", &off, &n, &core)) return NULL;
    if (model_range(self, off, n) < 0) return NULL;
    if (core != MODEL_CM4 && core != MODEL_DMA) {
        PyErr_SetString(PyExc_ValueError, "an observer is the CM4 (2) or a DMA (3)");
        return NULL;
    }
    memmodel view = *self->model;
    view.cached = 0;
    view.core = core;
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b == NULL) return NULL;
    model_read(&view, (uint32_t)off, (unsigned char *)PyBytes_AS_STRING(b), (uint32_t)n);
    return b;
}

static PyObject *mapping_model_maintain(MappingObject *self, PyObject *args) {
    int op;
    Py_ssize_t off = 0, n = -1;
    if (!PyArg_ParseTuple(args, "i|nn", &op, &off, &n)) return NULL;
    if (op < MAINTAIN_CLEAN || op > MAINTAIN_CLEAN_INVALIDATE) {
        PyErr_SetString(PyExc_ValueError, "op must be 1 (clean), 2 (invalidate) or 3 (clean and invalidate)");
        return NULL;
    }
    if (model_range(self, off, n < 0 ? 0 : n) < 0) return NULL;
    if (self->model->cached) model_maintain(self->model, op, (uint32_t)off, n);
    Py_RETURN_NONE;
}

static PyObject *mapping_model_set_mpu(MappingObject *self, PyObject *ranges) {
    if (model_range(self, 0, 0) < 0) return NULL;
    PyObject *seq = PySequence_Fast(ranges, "ranges must be a sequence of (lo, hi, policy)");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > MPU_RANGES) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d MPU ranges", MPU_RANGES);
        return NULL;
    }
    memmodel *md = self->model;
    int nmpu = 0;
    typeof(md->mpu[0]) table[MPU_RANGES];
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned long long lo, hi;
        int policy;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KKi", &lo, &hi, &policy)) {
            Py_DECREF(seq);
            return NULL;
        }
        if (policy < POLICY_NC || policy > POLICY_WT || lo > hi) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a range is (lo <= hi, policy 0..3)");
            return NULL;
        }
        table[nmpu].lo = lo > md->size ? md->size : (uint32_t)lo;
        table[nmpu].hi = hi > md->size ? md->size : (uint32_t)hi;
        table[nmpu].policy = policy;
        nmpu++;
    }
    Py_DECREF(seq);
    pthread_mutex_lock(&dcache.lock);
    memcpy(md->mpu, table, sizeof(table[0]) * (size_t)nmpu);
    md->nmpu = nmpu;
    pthread_mutex_unlock(&dcache.lock);
    Py_RETURN_NONE;
}

/* The CM7's cached lines of this region: [(offset, dirty mask, data, fill)], and the counters. */
static PyObject *mapping_model_lines(MappingObject *self, PyObject *unused) {
    if (model_range(self, 0, 0) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL || !self->model->cached) return out;
    pthread_mutex_lock(&dcache.lock);
    size_t total = (size_t)dcache.sets * dcache.ways;
    for (size_t i = 0; i < total; i++) {
        cline *l = &dcache.lines[i];
        if (l->owner != self->model) continue;
        PyObject *t = Py_BuildValue("(kky#y#)", (unsigned long)l->off, (unsigned long)l->dirty, (const char *)l->data,
                                    (Py_ssize_t)CHIP_LINE, (const char *)l->fill, (Py_ssize_t)CHIP_LINE);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            pthread_mutex_unlock(&dcache.lock);
            return NULL;
        }
        Py_DECREF(t);
    }
    pthread_mutex_unlock(&dcache.lock);
    PyList_Sort(out);
    return out;
}

static PyObject *mapping_model_counters(MappingObject *self, PyObject *unused) {
    if (model_range(self, 0, 0) < 0) return NULL;
    return Py_BuildValue("{s:K,s:K,s:K,s:K}", "hits", (unsigned long long)dcache.hits, "misses",
                         (unsigned long long)dcache.misses, "writebacks", (unsigned long long)dcache.writebacks,
                         "evictions", (unsigned long long)dcache.evictions);
}

static PyObject *mapping_get_model_core(MappingObject *self, void *c) {
    if (self->model == NULL) Py_RETURN_NONE;
    return PyLong_FromLong(self->model->core);
}
