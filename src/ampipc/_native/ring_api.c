/*
 * The Python face of the rings: methods, batches, properties and the three types (part of the C
 * core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * Each method is one C call for the whole operation: argument parsing, the role guard (one writer
 * and one reader at a time within a process), the operation, the wait when it cannot complete, and
 * ring_finish, which turns a result read from a shrunk segment into CorruptRegion. Blocking calls
 * refuse to run in ISR context, release the GIL only while they wait, and let Ctrl-C through.
 */

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


/* ---- scatter-gather: one message from several buffers, without joining them first -------------- */

static int op_message_send_gather(RingObject *r, Py_buffer *views, Py_ssize_t count, uint32_t total) {
    ring_state s;
    if (ring_load(r, &s, ROLE_WRITER) < 0) return -1;
    if (st_spaces(&s) < total + r->prefix) return 0;
    unsigned char prefix[8] = {(unsigned char)total, (unsigned char)(total >> 8), (unsigned char)(total >> 16),
                               (unsigned char)(total >> 24), 0, 0, 0, 0};
    ring_copy_in(r, s.head, prefix, r->prefix);
    uint32_t at = ring_advance(r, s.head, r->prefix);
    for (Py_ssize_t i = 0; i < count; i++) {
        ring_copy_in(r, at, (const unsigned char *)views[i].buf, (uint32_t)views[i].len);
        at = ring_advance(r, at, (uint32_t)views[i].len);
    }
    unsigned char *h = ring_hdr(r);
    ring_data_st32(r, OFF_HEAD, at);
    bump64(h + OFF_MSGS_IN, 1);
    bump64(h + OFF_BYTES_IN, total);
    ring_send_completed(r, at, s.tail);
    return 1;
}

/* send_parts(parts, timeout=None) / try_send_parts(parts): the concatenation of the parts as one
 * message, with send's semantics (whole or nothing, waits for room, MessageTooLarge, hooks). */
static PyObject *message_send_parts_impl(RingObject *r, PyObject *parts, int64_t timeout_ns, int raise_on_full) {
    if (ring_open(r) < 0 || refuse_in_isr(r, timeout_ns, "send_parts") < 0) return NULL;
    PyObject *seq = PySequence_Fast(parts, "send_parts() takes a sequence of bytes-like parts");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), got = 0;
    Py_buffer *views = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Py_buffer));
    PyObject *ret = NULL;
    uint64_t total = 0;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < count; got++) {
        if (get_src(PySequence_Fast_GET_ITEM(seq, got), &views[got]) < 0) goto done;
        total += (uint64_t)views[got].len;
    }
    if (total + r->prefix > (uint64_t)r->length - 1 || (r->prefix < 4 && total >> (8 * r->prefix))) {
        message_too_large(r, (Py_ssize_t)total);
        goto done;
    }
    if (total == 0 && (r->flags & FLAG_STRICT)) {
        PyErr_Format(PyExc_ValueError, "buffer %R is in strict FreeRTOS mode: the parts make an empty message",
                     r->name);
        goto done;
    }
    if (guard_enter(r, ROLE_WRITER) < 0) goto done;
    if (ring_enter_role(r, ROLE_WRITER) == 0) {
        int64_t deadline = deadline_from(timeout_ns);
        for (int last = 0;;) {
            int k = op_message_send_gather(r, views, count, (uint32_t)total);
            if (k < 0) break;
            if (k == 1) {
                ret = raise_on_full ? Py_NewRef(Py_None) : Py_NewRef(Py_True);
                break;
            }
            if (timeout_ns == 0 || last) {
                ret = raise_on_full ? raise_timeout(r, "send") : Py_NewRef(Py_False);
                break;
            }
            int w = ring_wait(r, ROLE_WRITER, (uint32_t)total + r->prefix, deadline, 0);
            if (w < 0 || ring_open(r) < 0) break;
            if (w == 0) last = 1;
        }
    }
    guard_exit(r, ROLE_WRITER);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq);
    return ring_finish(r, ret);
}

static PyObject *ring_send_parts(RingObject *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int64_t t;
    PyObject *pos[1];
    if (parse_opt_timeout(args, nargs, kwnames, 1, pos, &t, "send_parts(parts, timeout=None)") < 0) return NULL;
    return message_send_parts_impl(r, pos[0], t, 1);
}

static PyObject *ring_try_send_parts(RingObject *r, PyObject *parts) { return message_send_parts_impl(r, parts, 0, 0); }

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
    ring_data_st32(r, OFF_HEAD, head);
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
    ring_data_st32(r, OFF_TAIL, s.tail);
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
    /* a reset buffer starts a new exchange: no side is closed (whoever uses a role next holds it) */
    st32_rel(h + OFF_WRITER_CLOSED, 0);
    st32_rel(h + OFF_READER_CLOSED, 0);
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
    return PyLong_FromUnsignedLong(ring_data_ld32(r, OFF_TRIGGER, 0));
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
    ring_data_st32(r, OFF_TRIGGER, (uint32_t)n);
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
    self->model = self->mapping->model;
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
    Py_VISIT(self->isr);
    return 0;
}

static int ring_clear(RingObject *self) {
    Py_CLEAR(self->send_hook);
    Py_CLEAR(self->receive_hook);
    Py_CLEAR(self->peer_check);
    Py_CLEAR(self->isr);
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
    {"_set_isr", (PyCFunction)ring_set_isr, METH_O, "The TaskIsr whose line a blocked side services, or None."},   \
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
    {"send_parts", (PyCFunction)(void (*)(void))ring_send_parts, METH_FASTCALL | METH_KEYWORDS,
     "send_parts(parts, timeout=None): the parts, joined in the ring, as one message (no concatenation copy)."},
    {"try_send_parts", (PyCFunction)ring_try_send_parts, METH_O, "try_send_parts(parts) -> bool: the same if it fits now."},
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
