/*
 * The built-in notification strategies' interrupt logic (part of the C core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * The toggle, control and hsem strategies (the modules of ampipc.notify, and ampipc.hw.hsem) are fixed algorithms; the
 * Python modules are their readable reference, and these objects mirror them for the hot path:
 *
 * Notifier   a data buffer's completion hook (sbSEND_COMPLETED / sbRECEIVE_COMPLETED) in C: it
 *            makes the event pending (toggle: the compare-and-swap on the sender-owned word; control:
 *            the fetch_or on the direction's pending word and one 8-byte record written to the control
 *            buffer; hsem: FastTake and Release of the event's semaphore, whose free event sets the ISR
 *            bit of every core and raises IRQ_HSEM where IER enables it, as Hsem.release does) and
 *            raises the destination core's doorbell line exactly as Hardware._raise_line
 *            does (set the pending bit, count it, wake the dispatcher if the bit was clear). The
 *            space-freed event is raised only when the writer announced that it waits (its waiting
 *            flag, read after a full fence, pairs with the one the writer issues before it sleeps).
 *            Whatever the fast path cannot do (a full control buffer, to be counted and reported)
 *            goes to the Python hook it stands for.
 * TaskIsr    the interrupt handler of the receiving core, serviced by the task that is blocked on
 *            one of the core's buffers: that task sleeps on its ring's index *and* on the core's
 *            pending-lines word (futex_waitv); when the doorbell line rings it takes the line's bit
 *            (as the dispatcher would), runs the handler here without the GIL and finds its own
 *            event, so one hop wakes the right thread. It runs only when the core's IrqGate lets
 *            it: never inside a critical section ("interrupts disabled") and never beside the
 *            dispatcher, which keeps running the Python handler for every other case; anything
 *            unusual (a control overflow, a malformed record) is left pending for the dispatcher.
 * IrqGate    per core and process: a count of critical sections and dispatcher runs, or -1 while a
 *            task services the line. Held only for short, non-blocking work.
 *
 * Who writes which word: as in the Python modules (sent/pending words by the source, acked words
 * and pending clears by the destination, the control buffer by the source's tasks and handlers
 * under the GIL). Every offset was checked against the mapping when the objects were built.
 */

/* defined in ring_api.c, which module.c includes after this part */
static PyTypeObject RingType;
static PyTypeObject MessageRingType;

#define STRATEGY_TOGGLE 1
#define STRATEGY_CONTROL 2
#define STRATEGY_HSEM 3
#define HSEM_MAX_CORES 8
#define CORE_HSEM_IER 20 /* the core block's words (hw/_regs.py) */
#define CORE_HSEM_ISR 24
#define CORE_RAISED 32
#define IRQ_HSEM_BIT 1u /* line 0 */
#define EVENT_DATA_SENT 0
#define EVENT_SPACE_FREED 1
#define CONTROL_RECORD_SIZE 8
#define SYS_FUTEX_WAITV 449 /* x86_64 and aarch64 alike */
#define FUTEX2_SIZE_U32 2

/* ---- the counters a strategy's C half keeps (merged into Strategy.statistics()) -------------- */

typedef struct {
    PyObject_HEAD
    uint64_t raised, coalesced, doorbells, interrupts, handled, serviced_by_task, fallbacks, doorbells_skipped;
} CountersObject;

static inline void count(uint64_t *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }

static PyObject *counters_as_dict(CountersObject *c, PyObject *unused) {
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "events_raised", (unsigned long long)c->raised,
                         "events_coalesced", (unsigned long long)c->coalesced, "doorbells",
                         (unsigned long long)c->doorbells, "interrupts", (unsigned long long)c->interrupts,
                         "events_handled", (unsigned long long)c->handled, "serviced_by_task",
                         (unsigned long long)c->serviced_by_task, "fallbacks", (unsigned long long)c->fallbacks,
                         "doorbells_skipped", (unsigned long long)c->doorbells_skipped);
}

static PyMethodDef counters_methods[] = {
    {"as_dict", (PyCFunction)counters_as_dict, METH_NOARGS, "The counts, by name."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.StrategyCounters",
    .tp_basicsize = sizeof(CountersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StrategyCounters(): what a strategy's C half counted in this process.",
    .tp_methods = counters_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- the gate: critical sections and the dispatcher against a servicing task ------------------ */

typedef struct {
    PyObject_HEAD
    int state; /* > 0: that many critical sections or dispatcher runs; -1: a task services */
} GateObject;

static PyObject *gate_enter(GateObject *g, PyObject *unused) {
    for (;;) {
        int s = __atomic_load_n(&g->state, __ATOMIC_ACQUIRE);
        if (s >= 0 && __atomic_compare_exchange_n(&g->state, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            Py_RETURN_NONE;
        cpu_relax(); /* a task's service is short and needs no GIL */
    }
}

static PyObject *gate_exit(GateObject *g, PyObject *unused) {
    if (__atomic_fetch_sub(&g->state, 1, __ATOMIC_RELEASE) <= 0) {
        __atomic_fetch_add(&g->state, 1, __ATOMIC_RELAXED);
        PyErr_SetString(PyExc_RuntimeError, "IrqGate.exit() without enter()");
        return NULL;
    }
    Py_RETURN_NONE;
}

static inline int gate_try_service(GateObject *g) {
    int expected = 0;
    return __atomic_compare_exchange_n(&g->state, &expected, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

static inline void gate_end_service(GateObject *g) { __atomic_store_n(&g->state, 0, __ATOMIC_RELEASE); }

static PyMethodDef gate_methods[] = {
    {"enter", (PyCFunction)gate_enter, METH_NOARGS, "Hold off servicing tasks (a critical section, a dispatch)."},
    {"exit", (PyCFunction)gate_exit, METH_NOARGS, "Let them in again."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.IrqGate",
    .tp_basicsize = sizeof(GateObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "IrqGate(): who may run a core's interrupt logic in this process right now.",
    .tp_methods = gate_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- raising a line, as Hardware._raise_line ---------------------------------------------------- */

/* The core block's words next to the pending-lines word (hw/_regs.py) */
#define CORE_TASK_SLEEPERS 28 /* of the waiters, those asleep on the doorbell (the others spin) */
#define CORE_TASK_WAITERS 56
#define CORE_TASK_DOORBELL 60

/* Set the pending bit and count it, as Hardware._raise_line; then wake one task of the destination
 * core that waits to service the line, or, when none waits, its dispatcher. The waiter count is
 * read after the seq_cst fetch_or and the task stores it before it reads the pending word: one of
 * the two always sees the other. */
static void raise_line_for(unsigned char *base, Py_ssize_t pending_off, Py_ssize_t raised_off, uint32_t bit,
                           const uint32_t *reader_waiting, uint32_t *unwoken) {
    /* A data event of a strategy line (the strategy owns it) whose buffer has no reader waiting need
     * not wake anyone: the line is raised and stays pending, marked unwoken *before* it is raised, so
     * a later event that does need a wake and finds the line pending knows nobody was woken for it.
     * The mark is cleared only by whoever takes the pending line (isr_service, the dispatcher), and
     * before it takes it: a marked line is never left pending unmarked.
     * The next task to block services the pending line first (isr_sleep), any other waiter announces
     * itself and re-checks the buffer, which holds the data already, and the dispatcher serves the
     * line at its next poll. Meanwhile further events merge into the pending line: no system call. */
    int quiet = unwoken != NULL && __atomic_load_n(reader_waiting, __ATOMIC_SEQ_CST) == 0;
    if (quiet) __atomic_fetch_or(unwoken, bit, __ATOMIC_SEQ_CST);
    uint32_t old = __atomic_fetch_or((uint32_t *)(base + pending_off), bit, __ATOMIC_SEQ_CST);
    __atomic_fetch_add((uint64_t *)(base + raised_off), 1, __ATOMIC_SEQ_CST);
    if (old & bit) { /* merged with a pending one, as an NVIC pending bit */
        if (quiet || unwoken == NULL) return;
        if (!(__atomic_load_n(unwoken, __ATOMIC_SEQ_CST) & bit)) return; /* its raise woke someone */
    }
    unsigned char *block = base + pending_off;
    if (__atomic_load_n((uint32_t *)(block + CORE_TASK_WAITERS), __ATOMIC_SEQ_CST) > 0) {
        __atomic_fetch_add((uint32_t *)(block + CORE_TASK_DOORBELL), 1, __ATOMIC_SEQ_CST);
        /* a spinning task sees the line as it leaves its spin: only a sleeping one needs the call */
        if (__atomic_load_n((uint32_t *)(block + CORE_TASK_SLEEPERS), __ATOMIC_SEQ_CST) > 0)
            sys_futex(block + CORE_TASK_DOORBELL, FUTEX_WAKE, 1, NULL);
    } else if (!quiet)
        sys_futex(block + 0, FUTEX_WAKE, INT_MAX, NULL);
}

static void raise_line(unsigned char *base, Py_ssize_t pending_off, Py_ssize_t raised_off, uint32_t bit) {
    raise_line_for(base, pending_off, raised_off, bit, NULL, NULL);
}

/* ---- Notifier ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int strategy, event;
    MappingObject *mapping;
    Py_ssize_t word_off;  /* toggle: the sent word; control: the direction's pending word */
    Py_ssize_t acked_off; /* toggle only */
    uint32_t bit;
    RingObject *control;  /* control only: the direction's control buffer */
    unsigned char record[CONTROL_RECORD_SIZE];
    Py_ssize_t line_pending_off, line_raised_off;
    Py_ssize_t line_unwoken_off; /* toggle, control: the destination core's unwoken-lines word; -1: none */
    uint32_t line_bit;
    CountersObject *counters;
    PyObject *fallback; /* the Python hook this stands for */
    /* hsem: the semaphore's R register, the value a FastTake stores, and every core's block */
    Py_ssize_t r_off;
    uint32_t r_taken;
    Py_ssize_t core_blocks[HSEM_MAX_CORES];
    Py_ssize_t core_unwoken[HSEM_MAX_CORES]; /* each core's unwoken-lines word; -1: raise loudly */
    int ncores;
} NotifierObject;

static Py_ssize_t checked_word(MappingObject *m, Py_ssize_t off, Py_ssize_t width, const char *what) {
    if (off < 0 || off > m->size - width || off % width) {
        PyErr_Format(PyExc_ValueError, "%s offset %zd is not a %zd-byte word of the mapping", what, off, width);
        return -1;
    }
    return off;
}

/* Up to HSEM_MAX_CORES offsets from a sequence, each checked as a `width`-byte word of the mapping.
 * Returns how many, or -1 with an exception set. */
static Py_ssize_t offsets_of(MappingObject *m, PyObject *obj, Py_ssize_t *out, Py_ssize_t width, const char *what) {
    PyObject *seq = PySequence_Fast(obj, "expected a sequence of word offsets");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > HSEM_MAX_CORES) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d %s offsets", HSEM_MAX_CORES, what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t off = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
        if ((off == -1 && PyErr_Occurred()) || checked_word(m, off, width, what) < 0) {
            Py_DECREF(seq);
            return -1;
        }
        out[i] = off;
    }
    Py_DECREF(seq);
    return n;
}

static int notifier_init(NotifierObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"strategy", "event", "mapping", "word", "acked", "bit", "control", "record",
                             "line_pending", "line_raised", "line", "counters", "fallback", "hsem_taken",
                             "hsem_cores", "line_unwoken", "hsem_unwoken", NULL};
    int strategy, event, line;
    PyObject *mapping, *control, *counters, *fallback, *cores = NULL, *cores_unwoken = NULL;
    Py_ssize_t word, acked, pending, raised, unwoken = -1;
    unsigned long bit, taken = 0;
    Py_buffer record;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiO!nnkOy*nniO!O|kOnO", kwlist, &strategy, &event, &MappingType,
                                     &mapping, &word, &acked, &bit, &control, &record, &pending, &raised, &line,
                                     &CountersType, &counters, &fallback, &taken, &cores, &unwoken, &cores_unwoken))
        return -1;
    MappingObject *m = (MappingObject *)mapping;
    if (strategy == STRATEGY_HSEM) {
        /* word: the R register; bit: the semaphore's bit; hsem_cores: every core's block offset;
         * hsem_unwoken (optional): each of those cores' unwoken-lines word, in the same order */
        Py_ssize_t n = cores == NULL ? -1 : offsets_of(m, cores, self->core_blocks, 64, "core block");
        if (n >= 0 && (n < 1 || taken == 0 || taken > 0xFFFFFFFFul)) {
            PyErr_SetString(PyExc_ValueError, "the hsem Notifier needs 1..8 cores and a FastTake value");
            n = -1;
        }
        for (Py_ssize_t i = 0; n > 0 && i < n; i++) self->core_unwoken[i] = -1;
        if (n > 0 && cores_unwoken != NULL && cores_unwoken != Py_None &&
            offsets_of(m, cores_unwoken, self->core_unwoken, 4, "core unwoken") != n) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "hsem_unwoken must name one word per core");
            n = -1;
        }
        if (n < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "the hsem Notifier needs hsem_cores");
            PyBuffer_Release(&record);
            return -1;
        }
        self->ncores = (int)n;
        self->r_off = word;
        self->r_taken = (uint32_t)taken;
        acked = 0;
    }
    int bad = (strategy != STRATEGY_TOGGLE && strategy != STRATEGY_CONTROL && strategy != STRATEGY_HSEM) ||
              (event != EVENT_DATA_SENT && event != EVENT_SPACE_FREED) || line < 0 || line > 31 ||
              bit == 0 || bit > 0xFFFFFFFFul || record.len != CONTROL_RECORD_SIZE || !PyCallable_Check(fallback);
    if (!bad && strategy == STRATEGY_CONTROL &&
        (!PyObject_TypeCheck(control, &MessageRingType) || ((RingObject *)control)->mapping != m))
        bad = 1;
    if (bad) {
        PyBuffer_Release(&record);
        PyErr_SetString(PyExc_ValueError, "Notifier: bad strategy, event, line, bit, control buffer or record");
        return -1;
    }
    memcpy(self->record, record.buf, CONTROL_RECORD_SIZE);
    PyBuffer_Release(&record);
    if (mapping_check_open(m) < 0 || checked_word(m, word, 4, "word") < 0 ||
        (strategy == STRATEGY_TOGGLE && checked_word(m, acked, 4, "acked") < 0) ||
        checked_word(m, pending, 64, "line pending") < 0 || checked_word(m, raised, 8, "line raised") < 0 ||
        (unwoken != -1 && (strategy == STRATEGY_HSEM || checked_word(m, unwoken, 4, "line unwoken") < 0))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "Notifier: hsem takes hsem_unwoken, one word per core");
        return -1;
    }
    self->strategy = strategy;
    self->event = event;
    Py_XSETREF(self->mapping, (MappingObject *)Py_NewRef(mapping));
    self->word_off = word;
    self->acked_off = acked;
    self->bit = (uint32_t)bit;
    Py_XSETREF(self->control, strategy == STRATEGY_CONTROL ? (RingObject *)Py_NewRef(control) : NULL);
    self->line_pending_off = pending;
    self->line_raised_off = raised;
    self->line_unwoken_off = unwoken;
    self->line_bit = 1u << line;
    Py_XSETREF(self->counters, (CountersObject *)Py_NewRef(counters));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    return 0;
}

/* The control record goes in without the control buffer's own completion (its hooks do nothing:
 * a control buffer never produces records of its own). Returns 1 written, 0 no room. */
static int control_write_record(RingObject *cb, const unsigned char *record) {
    ring_state s;
    int k = message_write(cb, record, CONTROL_RECORD_SIZE, &s);
    if (k < 0) {
        PyErr_Clear();
        return 0; /* a corrupt control buffer: the Python hook reports it */
    }
    if (k == 1) ring_note_fill(cb, s.head, s.tail);
    return k;
}

static int control_has_room(RingObject *cb) {
    ring_state s;
    if (ring_load(cb, &s, ROLE_WRITER) < 0) {
        PyErr_Clear();
        return 0;
    }
    return st_spaces(&s) >= CONTROL_RECORD_SIZE + cb->prefix;
}

/* A data event merged into one still pending. If that one was raised quietly and the reader now
 * waits, the wake its raise skipped is due: raise the line again (it merges and finds the mark). */
static void notifier_coalesced(NotifierObject *n, RingObject *data) {
    if (n->event != EVENT_DATA_SENT || n->line_unwoken_off < 0) return;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    const uint32_t *waiting = (const uint32_t *)(ring_hdr(data) + OFF_RX_WAITING);
    if (__atomic_load_n(waiting, __ATOMIC_SEQ_CST) == 0) return;
    unsigned char *base = n->mapping->base;
    raise_line_for(base, n->line_pending_off, n->line_raised_off, n->line_bit, waiting,
                   (uint32_t *)(base + n->line_unwoken_off));
}

/* Called by the ring with the GIL held, in place of the Python hook. */
static void notifier_run(NotifierObject *n, RingObject *data) {
    unsigned char *base = n->mapping->base;
    if (n->event == EVENT_SPACE_FREED) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ld32_rlx(ring_hdr(data) + OFF_TX_WAITING) == 0) { /* no writer waits: no doorbell */
            count(&n->counters->doorbells_skipped);
            return;
        }
    }
    if (n->strategy == STRATEGY_TOGGLE) {
        MappingObject *m = n->mapping; /* toggle words are firmware data: through the model if any */
        uint32_t value = data_word32(m, n->word_off, WORD_OR, 0, 0); /* a full barrier before reading acked */
        for (;;) {
            uint32_t acked = data_word32(m, n->acked_off, WORD_LOAD, 0, 0);
            if ((value ^ acked) & n->bit) {
                count(&n->counters->coalesced);
                notifier_coalesced(n, data);
                return;
            }
            uint32_t found = data_word32(m, n->word_off, WORD_CAS, value, value ^ n->bit);
            if (found == value) break;
            value = found;
        }
    } else if (n->strategy == STRATEGY_HSEM) {
        /* FastTake: CAS(0 -> LOCK|COREID); held by this core already: its release notifies */
        uint32_t *r = (uint32_t *)(base + n->r_off), expected = 0;
        if (!__atomic_compare_exchange_n(r, &expected, n->r_taken, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
            expected != n->r_taken) {
            count(&n->counters->coalesced);
            return;
        }
        expected = n->r_taken; /* Release(id, 0) by the owner: a free event */
        if (!__atomic_compare_exchange_n(r, &expected, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            count(&n->counters->coalesced);
            return;
        }
        for (int i = 0; i < n->ncores; i++) {
            unsigned char *block = base + n->core_blocks[i];
            __atomic_fetch_or((uint32_t *)(block + CORE_HSEM_ISR), n->bit, __ATOMIC_SEQ_CST);
            if (__atomic_load_n((uint32_t *)(block + CORE_HSEM_IER), __ATOMIC_SEQ_CST) & n->bit) {
                count(&n->counters->doorbells);
                raise_line_for(base, n->core_blocks[i], n->core_blocks[i] + CORE_RAISED, IRQ_HSEM_BIT,
                               (const uint32_t *)(ring_hdr(data) + OFF_RX_WAITING),
                               n->event == EVENT_DATA_SENT && n->core_unwoken[i] >= 0
                                   ? (uint32_t *)(base + n->core_unwoken[i]) : NULL);
            }
        }
        count(&n->counters->raised);
        return;
    } else {
        if (!control_has_room(n->control)) {
            /* overflow: the reference counts, reports and flags it */
            count(&n->counters->fallbacks);
            ring_call_hook(data, n->fallback, n->event == EVENT_DATA_SENT ? ROLE_WRITER : ROLE_READER);
            return;
        }
        if (data_word32(n->mapping, n->word_off, WORD_OR, n->bit, 0) & n->bit) {
            count(&n->counters->coalesced);
            notifier_coalesced(n, data);
            return;
        }
        control_write_record(n->control, n->record);
    }
    count(&n->counters->raised);
    count(&n->counters->doorbells);
    ring_note_cpu(data, n->event == EVENT_DATA_SENT ? ROLE_WRITER : ROLE_READER);
    int quiet_ok = n->event == EVENT_DATA_SENT && n->line_unwoken_off >= 0;
    raise_line_for(base, n->line_pending_off, n->line_raised_off, n->line_bit,
                   (const uint32_t *)(ring_hdr(data) + OFF_RX_WAITING),
                   quiet_ok ? (uint32_t *)(base + n->line_unwoken_off) : NULL);
}

static PyObject *notifier_call(NotifierObject *n, PyObject *args, PyObject *kwds) {
    PyObject *buf;
    if (!PyArg_ParseTuple(args, "O!", &RingType, &buf)) return NULL;
    if (n->mapping == NULL || mapping_check_open(n->mapping) < 0) return NULL;
    notifier_run(n, (RingObject *)buf);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static int notifier_traverse(NotifierObject *n, visitproc visit, void *arg) {
    Py_VISIT(n->mapping);
    Py_VISIT(n->control);
    Py_VISIT(n->counters);
    Py_VISIT(n->fallback);
    return 0;
}

static int notifier_clear(NotifierObject *n) {
    Py_CLEAR(n->mapping);
    Py_CLEAR(n->control);
    Py_CLEAR(n->counters);
    Py_CLEAR(n->fallback);
    return 0;
}

static void notifier_dealloc(NotifierObject *n) {
    PyObject_GC_UnTrack(n);
    notifier_clear(n);
    Py_TYPE(n)->tp_free((PyObject *)n);
}

static PyMemberDef notifier_members[] = {
    {"fallback", T_OBJECT, offsetof(NotifierObject, fallback), READONLY, "The Python hook this mirrors."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject NotifierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.Notifier",
    .tp_basicsize = sizeof(NotifierObject),
    .tp_dealloc = (destructor)notifier_dealloc,
    .tp_call = (ternaryfunc)notifier_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Notifier(...): a strategy's completion hook in C (see ampipc.notify).",
    .tp_members = notifier_members,
    .tp_traverse = (traverseproc)notifier_traverse,
    .tp_clear = (inquiry)notifier_clear,
    .tp_init = (initproc)notifier_init,
    .tp_new = PyType_GenericNew,
};

static int hook_is_native(PyObject *hook) { return Py_TYPE(hook) == &NotifierType; }

static void native_hook_run(PyObject *hook, RingObject *r) { notifier_run((NotifierObject *)hook, r); }

/* ---- TaskIsr ------------------------------------------------------------------------------------- */

typedef struct {
    RingObject *ring; /* NULL: no event on this bit */
    int event;
} isr_target;

typedef struct { /* toggle: one word of a direction into this core */
    Py_ssize_t sent_off, acked_off;
    uint32_t valid;
    isr_target target[32];
} isr_word;

typedef struct { /* control: one (buffer id, kind) of a direction into this core */
    uint32_t buffer_id, kind;
    Py_ssize_t pending_off; /* the direction's pending word holding its bit */
    uint32_t bit;
    isr_target target;
} isr_event;

typedef struct { /* control: one direction into this core */
    RingObject *control; /* reader side */
    Py_ssize_t flag_off; /* the direction's overflow flag */
    Py_ssize_t first, count; /* its events in `events` */
} isr_direction;

typedef struct {
    PyObject_HEAD
    int strategy;
    MappingObject *mapping;
    GateObject *gate;
    CountersObject *counters;
    Py_ssize_t pending_off, handled_off; /* this core's pending-lines word and handled counter */
    Py_ssize_t unwoken_off;              /* this core's unwoken-lines word (-1: none) */
    uint32_t line_bit;
    Py_ssize_t nwords, nevents, ndirections;
    isr_word *words;
    isr_event *events;
    isr_direction *directions;
    /* hsem: this core's IER and ISR words, the semaphores of its incoming events and what each wakes */
    Py_ssize_t ier_off, isr_off;
    uint32_t hsem_mask;
    isr_target hsem_targets[32];
    PyObject *refs; /* a list keeping every ring named above alive */
} TaskIsrObject;

static int isr_keep(TaskIsrObject *isr, PyObject *ring, int event, isr_target *t) {
    if (!PyObject_TypeCheck(ring, &RingType) || ((RingObject *)ring)->mapping != isr->mapping ||
        (event != EVENT_DATA_SENT && event != EVENT_SPACE_FREED)) {
        PyErr_SetString(PyExc_ValueError, "TaskIsr: every target must be a buffer of the same mapping, with an event 0 or 1");
        return -1;
    }
    if (PyList_Append(isr->refs, ring) < 0) return -1;
    t->ring = (RingObject *)ring;
    t->event = event;
    return 0;
}

/* TaskIsr(strategy, mapping, gate, counters, pending, handled, line, table)
 *   toggle table:  [(sent_off, acked_off, valid, [(bit, ring, event), ...]), ...]
 *   control table: [(control_ring, flag_off, [(buffer_id, kind, pending_off, bit, ring, event), ...]), ...]
 *   hsem table:    (ier_off, isr_off, [(semaphore, ring, event), ...]) */
static int isr_init(TaskIsrObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"strategy", "mapping", "gate", "counters", "pending", "handled", "line", "table", "unwoken", NULL};
    int strategy, line;
    PyObject *mapping, *gate, *counters, *table;
    Py_ssize_t pending, handled, unwoken = -1;
    if (self->mapping != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskIsr is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O!O!nniO|n", kwlist, &strategy, &MappingType, &mapping, &GateType,
                                     &gate, &CountersType, &counters, &pending, &handled, &line, &table, &unwoken))
        return -1;
    MappingObject *m = (MappingObject *)mapping;
    if ((strategy != STRATEGY_TOGGLE && strategy != STRATEGY_CONTROL && strategy != STRATEGY_HSEM) || line < 0 ||
        line > 31) {
        PyErr_SetString(PyExc_ValueError, "TaskIsr: bad strategy or line");
        return -1;
    }
    if (mapping_check_open(m) < 0 || checked_word(m, pending, 64, "pending") < 0 ||
        checked_word(m, handled, 8, "handled") < 0 || (unwoken != -1 && checked_word(m, unwoken, 4, "unwoken") < 0))
        return -1;
    self->unwoken_off = unwoken;
    self->strategy = strategy;
    self->mapping = (MappingObject *)Py_NewRef(mapping);
    self->gate = (GateObject *)Py_NewRef(gate);
    self->counters = (CountersObject *)Py_NewRef(counters);
    self->pending_off = pending;
    self->handled_off = handled;
    self->line_bit = 1u << line;
    self->refs = PyList_New(0);
    if (self->refs == NULL) return -1;
    if (strategy == STRATEGY_HSEM) {
        PyObject *sems;
        if (!PyArg_ParseTuple(table, "nnO", &self->ier_off, &self->isr_off, &sems) ||
            checked_word(m, self->ier_off, 4, "IER") < 0 || checked_word(m, self->isr_off, 4, "ISR") < 0)
            return -1;
        PyObject *items = PySequence_Fast(sems, "TaskIsr: the semaphores must be a sequence");
        if (items == NULL) return -1;
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(items); j++) {
            int sem, event;
            PyObject *ring;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, j), "iOi", &sem, &ring, &event) || sem < 0 ||
                sem > 31 || isr_keep(self, ring, event, &self->hsem_targets[sem]) < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "TaskIsr: a semaphore must be 0..31");
                Py_DECREF(items);
                return -1;
            }
            self->hsem_mask |= 1u << sem;
        }
        Py_DECREF(items);
        return 0;
    }
    PyObject *rows = PySequence_Fast(table, "TaskIsr: the table must be a sequence");
    if (rows == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    int ok = 0;
    if (strategy == STRATEGY_TOGGLE) {
        self->words = PyMem_Calloc(n ? (size_t)n : 1, sizeof(isr_word));
        if (self->words == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            isr_word *w = &self->words[i];
            PyObject *bits;
            unsigned long valid;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rows, i), "nnkO", &w->sent_off, &w->acked_off, &valid, &bits) ||
                checked_word(m, w->sent_off, 4, "sent") < 0 || checked_word(m, w->acked_off, 4, "acked") < 0)
                goto done;
            w->valid = (uint32_t)valid;
            PyObject *items = PySequence_Fast(bits, "TaskIsr: the bits must be a sequence");
            if (items == NULL) goto done;
            for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(items); j++) {
                int bit, event;
                PyObject *ring;
                if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, j), "iOi", &bit, &ring, &event) || bit < 0 ||
                    bit > 31 || isr_keep(self, ring, event, &w->target[bit]) < 0) {
                    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "TaskIsr: a bit must be 0..31");
                    Py_DECREF(items);
                    goto done;
                }
            }
            Py_DECREF(items);
            self->nwords++;
        }
    } else {
        self->directions = PyMem_Calloc(n ? (size_t)n : 1, sizeof(isr_direction));
        if (self->directions == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            isr_direction *d = &self->directions[i];
            PyObject *control, *evs;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rows, i), "OnO", &control, &d->flag_off, &evs) ||
                checked_word(m, d->flag_off, 4, "overflow flag") < 0)
                goto done;
            isr_target ct;
            if (!PyObject_TypeCheck(control, &MessageRingType) || isr_keep(self, control, 0, &ct) < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "TaskIsr: a control buffer must be a message buffer");
                goto done;
            }
            d->control = ct.ring;
            PyObject *items = PySequence_Fast(evs, "TaskIsr: the events must be a sequence");
            if (items == NULL) goto done;
            Py_ssize_t k = PySequence_Fast_GET_SIZE(items);
            isr_event *grown = PyMem_Realloc(self->events, (size_t)(self->nevents + k + 1) * sizeof(isr_event));
            if (grown == NULL) {
                Py_DECREF(items);
                PyErr_NoMemory();
                goto done;
            }
            self->events = grown;
            d->first = self->nevents;
            for (Py_ssize_t j = 0; j < k; j++) {
                isr_event *e = &self->events[self->nevents];
                unsigned long id, kind, bit;
                PyObject *ring;
                int event;
                if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, j), "kknkOi", &id, &kind, &e->pending_off, &bit,
                                      &ring, &event) ||
                    checked_word(m, e->pending_off, 4, "pending") < 0 || isr_keep(self, ring, event, &e->target) < 0) {
                    Py_DECREF(items);
                    goto done;
                }
                e->buffer_id = (uint32_t)id;
                e->kind = (uint32_t)kind;
                e->bit = (uint32_t)bit;
                self->nevents++;
            }
            d->count = k;
            Py_DECREF(items);
            self->ndirections++;
        }
    }
    ok = 1;
done:
    Py_DECREF(rows);
    return ok ? 0 : -1;
}

/* Wake the side an event stands for (the FromISR call); the servicing task itself is awake already. */
static void isr_wake(isr_target *t, RingObject *self, int self_role) {
    RingObject *r = t->ring;
    int role = t->event == EVENT_DATA_SENT ? ROLE_READER : ROLE_WRITER;
    if (r == self && role == self_role) {
        st32_rlx(ring_hdr(r) + (role == ROLE_READER ? OFF_RX_WAITING : OFF_TX_WAITING), 0);
        return;
    }
    if (role == ROLE_READER)
        ring_wake_if_waiting(r, OFF_RX_WAITING, OFF_HEAD, OFF_WAKES_BY_WRITER);
    else
        ring_wake_if_waiting(r, OFF_TX_WAITING, OFF_TAIL, OFF_WAKES_BY_READER);
}

static void isr_toggle(TaskIsrObject *isr, RingObject *self, int self_role) {
    MappingObject *m = isr->mapping;
    for (Py_ssize_t i = 0; i < isr->nwords; i++) {
        isr_word *w = &isr->words[i];
        uint32_t pending = (data_word32(m, w->sent_off, WORD_LOAD, 0, 0) ^ data_word32(m, w->acked_off, WORD_LOAD, 0, 0)) &
                           w->valid;
        if (!pending) continue;
        data_word32(m, w->acked_off, WORD_XOR, pending, 0); /* acknowledge first */
        for (uint32_t bits = pending; bits; bits &= bits - 1) {
            isr_target *t = &w->target[__builtin_ctz(bits)];
            count(&isr->counters->handled);
            if (t->ring != NULL) isr_wake(t, self, self_role);
        }
    }
}

/* Drain the control buffers. Returns 0, or -1 when a record is not one the reference would accept:
 * it is left in place for the Python handler, which reports it. */
static int isr_control(TaskIsrObject *isr, RingObject *self, int self_role) {
    for (Py_ssize_t i = 0; i < isr->ndirections; i++) {
        isr_direction *d = &isr->directions[i];
        RingObject *cb = d->control;
        cb->model = isr->mapping->model; /* this ring may not have run an operation of its own yet */
        unsigned char *ch = ring_hdr(cb);
        for (;;) {
            /* the checks of ring_load and ring_peek_length, without raising: no GIL is held here */
            uint32_t length = ring_data_ld32(cb, OFF_LENGTH, 0), tail = ring_data_ld32(cb, OFF_TAIL, 0),
                     head = ring_data_ld32(cb, OFF_HEAD, 1);
            if (length != cb->length || head >= length || tail >= length) return -1;
            ring_state s = {head, tail, length};
            uint32_t avail = st_avail(&s);
            if (avail == 0) break;
            if (avail < cb->prefix + CONTROL_RECORD_SIZE) return -1;
            unsigned char prefix[8];
            ring_copy_out(cb, tail, prefix, cb->prefix);
            uint64_t n = 0;
            for (uint32_t b = 0; b < cb->prefix; b++) n |= (uint64_t)prefix[b] << (8 * b);
            if (n != CONTROL_RECORD_SIZE) return -1;
            unsigned char rec[CONTROL_RECORD_SIZE];
            uint32_t at = ring_advance(cb, s.tail, cb->prefix);
            ring_copy_out(cb, at, rec, CONTROL_RECORD_SIZE);
            uint32_t id = (uint32_t)rec[0] | (uint32_t)rec[1] << 8 | (uint32_t)rec[2] << 16 | (uint32_t)rec[3] << 24;
            uint32_t kind = (uint32_t)rec[4] | (uint32_t)rec[5] << 8 | (uint32_t)rec[6] << 16 | (uint32_t)rec[7] << 24;
            isr_event *e = NULL;
            for (Py_ssize_t j = d->first; j < d->first + d->count; j++)
                if (isr->events[j].buffer_id == id && isr->events[j].kind == kind) {
                    e = &isr->events[j];
                    break;
                }
            if (e == NULL) return -1;
            ring_record_identity(cb, OFF_READER_PID, OFF_READER_START);
            ring_data_st32(cb, OFF_TAIL, ring_advance(cb, at, CONTROL_RECORD_SIZE));
            bump64(ch + OFF_MSGS_OUT, 1);
            bump64(ch + OFF_BYTES_OUT, CONTROL_RECORD_SIZE);
            data_word32(isr->mapping, e->pending_off, WORD_AND, ~e->bit, 0); /* before the wake */
            count(&isr->counters->handled);
            isr_wake(&e->target, self, self_role);
        }
    }
    return 0;
}

/* HAL_HSEM_IRQHandler and the strategy's free callback (Hsem.irq_handler, HsemStrategy._on_free).
 * Returns -1 when a freed semaphore is not one of the strategy's: the free callback is the
 * strategy's, but the dispatcher's Python handler is the one that ignores it the HAL's way. */
static int isr_hsem(TaskIsrObject *isr, RingObject *self, int self_role) {
    unsigned char *base = isr->mapping->base;
    uint32_t *ier = (uint32_t *)(base + isr->ier_off), *isrw = (uint32_t *)(base + isr->isr_off);
    uint32_t mask = __atomic_load_n(isrw, __ATOMIC_SEQ_CST) & __atomic_load_n(ier, __ATOMIC_SEQ_CST);
    if (!mask) return 0;
    if (mask & ~isr->hsem_mask) return -1;
    __atomic_fetch_and(ier, ~mask, __ATOMIC_SEQ_CST);
    __atomic_fetch_and(isrw, ~mask, __ATOMIC_SEQ_CST);
    /* re-activate before waking, so a free during the wake-ups interrupts again */
    __atomic_fetch_or(ier, mask, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(isrw, __ATOMIC_SEQ_CST) & mask)
        raise_line(base, isr->pending_off, isr->pending_off + CORE_RAISED, isr->line_bit);
    for (uint32_t bits = mask; bits; bits &= bits - 1) {
        count(&isr->counters->handled);
        isr_wake(&isr->hsem_targets[__builtin_ctz(bits)], self, self_role);
    }
    return 0;
}

/* Service the doorbell line from a blocked task, without the GIL. Returns 1 if it ran. */
static int isr_service(TaskIsrObject *isr, RingObject *self, int self_role) {
    unsigned char *base = isr->mapping->base;
    if (!gate_try_service(isr->gate)) return 0;
    if (isr->strategy == STRATEGY_CONTROL)
        for (Py_ssize_t i = 0; i < isr->ndirections; i++)
            if (__atomic_load_n((uint32_t *)(base + isr->directions[i].flag_off), __ATOMIC_ACQUIRE)) {
                gate_end_service(isr->gate); /* an overflow: the recovery is the Python handler's */
                return 0;
            }
    if (isr->unwoken_off >= 0) /* the mark goes before the line is taken (raise_line_for) */
        __atomic_fetch_and((uint32_t *)(base + isr->unwoken_off), ~isr->line_bit, __ATOMIC_SEQ_CST);
    uint32_t old = __atomic_fetch_and((uint32_t *)(base + isr->pending_off), ~isr->line_bit, __ATOMIC_SEQ_CST);
    if (!(old & isr->line_bit)) {
        gate_end_service(isr->gate);
        return 0;
    }
    count(&isr->counters->interrupts);
    count(&isr->counters->serviced_by_task);
    if (isr->strategy == STRATEGY_TOGGLE)
        isr_toggle(isr, self, self_role);
    else if ((isr->strategy == STRATEGY_CONTROL ? isr_control(isr, self, self_role) : isr_hsem(isr, self, self_role)) <
             0) {
        /* leave the rest to the dispatcher's Python handler, which reports it: the line is pending again */
        __atomic_fetch_or((uint32_t *)(base + isr->pending_off), isr->line_bit, __ATOMIC_SEQ_CST);
        sys_futex(base + isr->pending_off, FUTEX_WAKE, INT_MAX, NULL);
        gate_end_service(isr->gate);
        return 1;
    }
    __atomic_fetch_add((uint64_t *)(base + isr->handled_off), 1, __ATOMIC_SEQ_CST);
    gate_end_service(isr->gate);
    return 1;
}

struct ampipc_futex_waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

static int futex_waitv_missing = 0;

/* Service the line if it is pending; if this task may not (a critical section or a dispatch holds
 * the gate), hand it to the dispatcher, which a C raiser did not wake while this task waited. */
static void isr_take_or_hand_over(TaskIsrObject *isr, RingObject *r, int role) {
    uint32_t *pending = (uint32_t *)(isr->mapping->base + isr->pending_off);
    if (!(__atomic_load_n(pending, __ATOMIC_SEQ_CST) & isr->line_bit)) return;
    if (!isr_service(isr, r, role)) sys_futex(pending, FUTEX_WAKE, INT_MAX, NULL);
}

static void isr_spin_begin(RingObject *r) {
    TaskIsrObject *isr = (TaskIsrObject *)r->isr;
    if (futex_waitv_missing) return;
    __atomic_fetch_add((uint32_t *)(isr->mapping->base + isr->pending_off + CORE_TASK_WAITERS), 1, __ATOMIC_SEQ_CST);
}

static void isr_spin_end(RingObject *r, int role) {
    TaskIsrObject *isr = (TaskIsrObject *)r->isr;
    if (futex_waitv_missing) return;
    __atomic_fetch_sub((uint32_t *)(isr->mapping->base + isr->pending_off + CORE_TASK_WAITERS), 1, __ATOMIC_SEQ_CST);
    isr_take_or_hand_over(isr, r, role); /* a doorbell rung meanwhile woke nobody: it is this task's */
}

/* The blocked task's sleep when its ring is served by a TaskIsr: on the ring's index and on the
 * core's task doorbell at once, servicing the line whenever it is raised. Called with the GIL;
 * returns as futex_sleep does (1 woken or changed, 0 slice over or signal). */
static int isr_sleep(RingObject *r, int role, Py_ssize_t word_off, uint32_t seen, int64_t slice_ns) {
    TaskIsrObject *isr = (TaskIsrObject *)r->isr;
    unsigned char *h = ring_hdr(r);
    if (futex_waitv_missing) return futex_sleep((uint32_t *)(h + word_off), seen, slice_ns);
    unsigned char *block = isr->mapping->base + isr->pending_off;
    uint32_t *waiters = (uint32_t *)(block + CORE_TASK_WAITERS), *doorbell = (uint32_t *)(block + CORE_TASK_DOORBELL);
    uint32_t *sleepers = (uint32_t *)(block + CORE_TASK_SLEEPERS);
    int result = 0;
    long rc;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    uint32_t ring = __atomic_load_n(doorbell, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(waiters, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(sleepers, 1, __ATOMIC_SEQ_CST);
    uint32_t pend = __atomic_load_n((uint32_t *)block, __ATOMIC_SEQ_CST);
    int serviced = 0;
    if (pend & isr->line_bit) {
        serviced = isr_service(isr, r, role);
        if (!serviced) sys_futex(block, FUTEX_WAKE, INT_MAX, NULL); /* the dispatcher's, then */
    }
    if (serviced) {
        rc = 0;
    } else {
        struct ampipc_futex_waitv w[2] = {
            {seen, (uint64_t)(uintptr_t)(h + word_off), FUTEX2_SIZE_U32, 0},
            {ring, (uint64_t)(uintptr_t)doorbell, FUTEX2_SIZE_U32, 0},
        };
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t end = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + slice_ns;
        ts.tv_sec = (time_t)(end / 1000000000LL);
        ts.tv_nsec = (long)(end % 1000000000LL);
        rc = syscall(SYS_FUTEX_WAITV, w, 2, 0, &ts, CLOCK_MONOTONIC);
        if (rc < 0) err = errno;
    }
    /* leaving: a line raised while this task was counted woke no dispatcher, so it is this task's */
    __atomic_fetch_sub(sleepers, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_sub(waiters, 1, __ATOMIC_SEQ_CST);
    isr_take_or_hand_over(isr, r, role);
    Py_END_ALLOW_THREADS
    if (rc >= 0 || err == EAGAIN) result = 1;
    else if (err == ENOSYS || err == EINVAL) {
        futex_waitv_missing = 1; /* Linux < 5.16: the dispatcher wakes the task, as without a TaskIsr */
        result = 1;
    }
    return result;
}

static int isr_traverse(TaskIsrObject *isr, visitproc visit, void *arg) {
    Py_VISIT(isr->mapping);
    Py_VISIT(isr->gate);
    Py_VISIT(isr->counters);
    Py_VISIT(isr->refs);
    return 0;
}

static int isr_clear(TaskIsrObject *isr) {
    /* the tables point into rings kept by refs: drop them together */
    isr->nwords = isr->nevents = isr->ndirections = 0;
    Py_CLEAR(isr->refs);
    Py_CLEAR(isr->gate);
    Py_CLEAR(isr->counters);
    Py_CLEAR(isr->mapping);
    return 0;
}

static void isr_dealloc(TaskIsrObject *isr) {
    PyObject_GC_UnTrack(isr);
    isr_clear(isr);
    PyMem_Free(isr->words);
    PyMem_Free(isr->events);
    PyMem_Free(isr->directions);
    Py_TYPE(isr)->tp_free((PyObject *)isr);
}

static PyObject *isr_call(TaskIsrObject *isr, PyObject *args, PyObject *kwds) {
    /* for tests: service the line now, as a blocked task would (returns True if it ran) */
    if (isr->mapping == NULL || mapping_check_open(isr->mapping) < 0) return NULL;
    return PyBool_FromLong(isr_service(isr, NULL, -1));
}

static PyTypeObject TaskIsrType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ampipc._native.TaskIsr",
    .tp_basicsize = sizeof(TaskIsrObject),
    .tp_dealloc = (destructor)isr_dealloc,
    .tp_call = (ternaryfunc)isr_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TaskIsr(...): a strategy's interrupt handler, serviced by the task blocked on a buffer.",
    .tp_traverse = (traverseproc)isr_traverse,
    .tp_clear = (inquiry)isr_clear,
    .tp_init = (initproc)isr_init,
    .tp_new = PyType_GenericNew,
};

/* ring._set_isr(task_isr or None): the line this ring's blocked side services while it waits */
static PyObject *ring_set_isr(RingObject *r, PyObject *arg) {
    if (arg != Py_None && !PyObject_TypeCheck(arg, &TaskIsrType)) {
        PyErr_SetString(PyExc_TypeError, "_set_isr takes a TaskIsr or None");
        return NULL;
    }
    if (arg != Py_None && ((TaskIsrObject *)arg)->mapping != r->mapping) {
        PyErr_SetString(PyExc_ValueError, "the TaskIsr serves another mapping");
        return NULL;
    }
    Py_XSETREF(r->isr, arg == Py_None ? NULL : Py_NewRef(arg));
    Py_RETURN_NONE;
}
