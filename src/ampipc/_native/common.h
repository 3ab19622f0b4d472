/*
 * What every part of the C core shares: the system headers, the exception classes the Python layer
 * installs, this process's identity, and the small helpers (atomics with explicit ordering, the
 * monotonic clock, futex, timeout parsing). Everything here is static: the core is compiled as one
 * translation unit (module.c includes each part), so the hot paths inline across the parts.
 */
#ifndef AMPIPC_NATIVE_COMMON_H
#define AMPIPC_NATIVE_COMMON_H

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

#include "layout.h"
#include "clock.h"

#define WAIT_SLICE_NS 100000000LL /* 100 ms: the longest a wait goes without re-checking */
#define DEFAULT_SPIN_NS 50000

static PyObject *ErrCorrupt, *ErrTooLarge, *ErrTooSmall, *ErrClosed, *ErrRoleBusy, *ErrInIsr, *ErrTimeout,
    *ErrPeerClosed, *ErrPoweredDown;
/* Set while this thread runs an interrupt handler: blocking calls are refused there. */
static __thread int in_isr_context __attribute__((tls_model("initial-exec"))) = 0;
static uint32_t process_pid = 0;
static uint64_t process_start = 0;
static long default_spin_ns = DEFAULT_SPIN_NS;

/* ---- small helpers ------------------------------------------------------------------------- */

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

/* Raise cls(msg, **kw): ampipc.errors's classes take their details as keywords. Steals both
 * references; either may be NULL after a failed build, and then that error stands. */
static void raise_with_details(PyObject *cls, PyObject *msg, PyObject *kw) {
    PyObject *args = msg != NULL ? PyTuple_Pack(1, msg) : NULL;
    Py_XDECREF(msg);
    PyObject *exc = args != NULL && kw != NULL ? PyObject_Call(cls, args, kw) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(kw);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
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


#endif
