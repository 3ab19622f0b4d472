/*
 * Waiting, roles and the spin policy (part of the C core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * A blocked side first spins a bounded time, when spinning pays (spin_decide); then it stores its
 * waiting flag, issues a seq_cst fence, re-checks, then sleeps on the futex of the index the peer
 * publishes (head for a reader, tail for a writer). A sleep never exceeds WAIT_SLICE_NS, after which
 * signals, the region's state and the peer's liveness are checked: a missed wake-up costs latency,
 * never a hang. Drain before you declare death: a reader whose writer died or closed still gets
 * everything the writer published; PeerDied and PeerClosed come only when nothing is left.
 */

/* What a blocked side waits for: for a writer, `need` free spaces; for a reader, `need` bytes. */
static inline int ring_ready(RingObject *r, int role, uint32_t need) {
    ring_state s;
    s.length = r->length;
    s.head = ring_data_ld32(r, OFF_HEAD, 1);
    s.tail = ring_data_ld32(r, OFF_TAIL, 1);
    if (s.head >= s.length || s.tail >= s.length) return 1; /* let the operation report it */
    return role == ROLE_WRITER ? st_spaces(&s) >= need : st_avail(&s) >= need;
}

/* ---- the spin policy -------------------------------------------------------------------------- */

#define SPIN_PROBE_FIRST 32   /* waits before the first probe once spinning is off */
#define SPIN_PROBE_LAST 1024  /* the longest interval between probes (each failed probe doubles it) */
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

/* Spinning can pay only if the peer can run while this side spins: this process may use two CPUs,
 * or it is pinned to one and the peer was last seen on another (each side records its CPU in its
 * own cache line when it wakes the other, ring.c: the AMP layout of one process per CPU). */
static int peer_may_run_elsewhere(RingObject *r, int role) {
    unsigned char *h = ring_hdr(r);
    if (cpus_for_this_process() >= 2) return 1;
    int cpu = sched_getcpu();
    uint32_t peer = ld32_rlx(h + (role == ROLE_WRITER ? OFF_READER_CPU : OFF_WRITER_CPU));
    return cpu >= 0 && peer != 0 && peer != (uint32_t)cpu + 1;
}

/* How long to spin before this wait: the configured spin while spins succeed, nothing while they
 * fail (score below zero), and meanwhile a probe of the whole spin now and then. The probe is as
 * long as a spin because an answer from a peer that was asleep comes a futex wake-up later (tens
 * of microseconds on a VM): a shorter probe would never see spinning pay again. Each failed probe
 * doubles the interval to the next (SPIN_PROBE_FIRST .. SPIN_PROBE_LAST waits), so on a loaded
 * machine the probes cost next to nothing. */
static long spin_decide(RingObject *r, int role) {
    if (r->spin_ns <= 0 || !peer_may_run_elsewhere(r, role)) return 0;
    if (r->spin_score >= 0) return r->spin_ns;
    unsigned every = r->spin_probe_every ? r->spin_probe_every : SPIN_PROBE_FIRST;
    if (++r->spin_probe >= every) {
        r->spin_probe = 0;
        r->probing = 1;
        return r->spin_ns;
    }
    return 0;
}

/* A success earns one point, a failure costs two: spinning stays on only where it wins at least
 * two waits in three. A successful probe turns it back on at once; a failed one waits longer. */
static void spin_learn(RingObject *r, int ready) {
    int probe = r->probing;
    r->probing = 0;
    if (ready) {
        r->spin_score = r->spin_score < 0 ? 0 : (r->spin_score < SPIN_SCORE_MAX ? r->spin_score + 1 : SPIN_SCORE_MAX);
        r->spin_probe_every = SPIN_PROBE_FIRST;
    } else {
        r->spin_score = r->spin_score - 2 < -1 ? -1 : r->spin_score - 2;
        if (probe) {
            unsigned every = r->spin_probe_every ? r->spin_probe_every : SPIN_PROBE_FIRST;
            r->spin_probe_every = every * 2 > SPIN_PROBE_LAST ? SPIN_PROBE_LAST : every * 2;
        }
    }
}

/* irq.c: the sleep of a task that services its core's doorbell line while it waits, and the same
 * bookkeeping around a spin (no GIL held) */
static int isr_sleep(RingObject *r, int role, Py_ssize_t word_off, uint32_t seen, int64_t slice_ns);
static void isr_spin_begin(RingObject *r);
static void isr_spin_end(RingObject *r, int role);

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
     * A spin must never cost more than it saves (spin_decide): none when the peer can only run on
     * the CPU this side would spin on (it cannot answer meanwhile), and none after spins keep failing (a
     * loaded machine), but for a short probe now and then that finds out when spinning pays again. */
    long spin = spin_decide(r, role);
    if (spin > 0) {
        int ready = 0;
        Py_BEGIN_ALLOW_THREADS
        /* A task spinning on a ring that a strategy serves counts as a waiter of its core's line:
         * the sender's doorbell then does not wake the dispatcher for an event this task sees
         * by itself; the task services the line in C as it leaves (isr_spin_end). */
        if (r->isr != NULL) isr_spin_begin(r);
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
        if (r->isr != NULL) isr_spin_end(r, role);
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
        int woken = r->isr != NULL ? isr_sleep(r, role, word_off, seen, slice)
                                   : futex_sleep((uint32_t *)(h + word_off), seen, slice);
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
    uint32_t trigger = ring_data_ld32(r, OFF_TRIGGER, 0);
    if (trigger == 0 || trigger >= r->length) trigger = 1;
    if ((r->flags & FLAG_BATCHING) && trigger < r->length - 1) trigger++; /* more than the trigger */
    return trigger;
}

/* The bytes a task-level stream read needs to exceed before it reads anything (0: none). */
static uint32_t ring_read_gate(RingObject *r) {
    if (!(r->flags & FLAG_BATCHING) || in_isr_context) return 0; /* an ISR read ignores it, as FreeRTOS's */
    uint32_t trigger = ring_data_ld32(r, OFF_TRIGGER, 0);
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
