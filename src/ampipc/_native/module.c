/*
 * ampipc._native: the small C core, compiled as one translation unit from one file per concern.
 *
 *   layout.h     the shared-memory layout of a ring header (mirrors ampipc/_layout.py)
 *   common.h     system headers, exception classes, process identity, atomics, clock, futex
 *   guard.c      the SIGBUS guard: a segment shrunk by another process raises, never kills
 *   mapping.c    Mapping: a shared mapping with atomics and futex wait/wake on its words
 *   ring.c       the FreeRTOS ring and its non-blocking operations
 *   wait.c       blocking: the spin policy, the futex wait, peer death and close, roles
 *   irq.c        the built-in strategies' interrupt logic: C hooks, and the line serviced by the blocked task
 *   ring_api.c   the Python methods and types of the rings (single calls and batches)
 *   module.c     module functions and initialisation (this file)
 *
 * One translation unit keeps the hot paths inlined across the parts; each part opens with its
 * theory of operation.
 */
#include "common.h"

#include "guard.c"
#include "mapping.c"
#include "dcache.c"
#include "ring.c"
#include "wait.c"
#include "irq.c"
#include "ring_api.c"

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

static PyObject *mod_set_chip_errors(PyObject *m, PyObject *arg) {
    Py_XSETREF(ErrPoweredDown, Py_NewRef(arg));
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
    {"_set_chip_errors", mod_set_chip_errors, METH_O, "Install the class raised for a powered-down domain."},
    {"get_default_spin", mod_get_default_spin, METH_NOARGS, "Seconds new buffers spin before sleeping."},
    {"set_default_spin", mod_set_default_spin, METH_O, "Set the spin of buffers made from now on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "ampipc._native", "The ampipc C core.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&MappingType) < 0 || PyType_Ready(&RingType) < 0 || PyType_Ready(&MessageRingType) < 0 ||
        PyType_Ready(&StreamRingType) < 0 || PyType_Ready(&CountersType) < 0 || PyType_Ready(&GateType) < 0 ||
        PyType_Ready(&NotifierType) < 0 || PyType_Ready(&TaskIsrType) < 0)
        return NULL;
    ErrCorrupt = Py_NewRef(PyExc_RuntimeError);
    ErrTooLarge = Py_NewRef(PyExc_ValueError);
    ErrTooSmall = Py_NewRef(PyExc_ValueError);
    ErrClosed = Py_NewRef(PyExc_ValueError);
    ErrRoleBusy = Py_NewRef(PyExc_RuntimeError);
    ErrInIsr = Py_NewRef(PyExc_RuntimeError);
    ErrTimeout = Py_NewRef(PyExc_TimeoutError);
    ErrPeerClosed = Py_NewRef(PyExc_EOFError);
    ErrPoweredDown = Py_NewRef(PyExc_RuntimeError);
    guard_install();
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Mapping", (PyObject *)&MappingType) < 0 ||
        PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObjectRef(m, "MessageRing", (PyObject *)&MessageRingType) < 0 ||
        PyModule_AddObjectRef(m, "StreamRing", (PyObject *)&StreamRingType) < 0 ||
        PyModule_AddObjectRef(m, "StrategyCounters", (PyObject *)&CountersType) < 0 ||
        PyModule_AddObjectRef(m, "IrqGate", (PyObject *)&GateType) < 0 ||
        PyModule_AddObjectRef(m, "Notifier", (PyObject *)&NotifierType) < 0 ||
        PyModule_AddObjectRef(m, "TaskIsr", (PyObject *)&TaskIsrType) < 0 ||
        PyModule_AddIntConstant(m, "RING_HEADER_SIZE", RING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "RING_MAGIC", (long)RING_MAGIC) < 0 ||
        PyModule_AddIntConstant(m, "PREFIX_SIZE", PREFIX_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
