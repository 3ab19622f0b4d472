"""asyncio twins of the blocking calls: ``await buf.receive_async()``, ``async for m in buf``, ...

Theory of operation
-------------------
Every awaitable call first makes the non-blocking attempt (``try_receive``, ``try_send``, ...)
synchronously: a message that is already there costs one C call and no thread hop. When the
buffer is empty (full) and the loop has nothing else ready to run, a message call then spins as
its blocking twin does (the core's bounded adaptive spin, `_may_spin`). Only then does the task
wait, and not in a thread of its own:
each event loop has one `_Waker`, a thread that sleeps on the waiting words of every object some
task of that loop waits for, all at once (`ampipc.waiting.wait_entries`, the announce / re-check /
``futex_waitv`` protocol of the C core, so the writers' and the interrupt handlers' existing wake
paths wake it). When objects become ready the waker queues them and writes an eventfd the loop
watches (``loop.add_reader``); the loop's callback resolves the waiting tasks' futures, and each
task repeats its non-blocking attempt. A task whose attempt fails again waits again.

Who owns what: the loop thread alone adds and removes waiters (under the waker's lock, as the
waker thread reads them); the waker thread alone sleeps and reports; a reported object is left out
of the waker's sleeps until the loop has taken the report (no busy loop on an object that stays
ready). New interest bumps a process-local control word the waker's sleep includes, so the waker
re-reads the set at once; a removed waiter is simply dropped (a spurious report is harmless).

Cancellation (``task.cancel()``, ``asyncio.timeout``) can only land at an ``await`` of the waker's
future, never inside the synchronous attempt: a message is either received whole (the attempt
succeeded and the coroutine returns it) or still in the buffer. Timeouts: the same ``timeout=``
as the blocking twin (None: forever) and the same result at the deadline (`Timeout` for message
send/receive; the count so far for stream writes; what is there, possibly b"", for stream reads).

Teardown: the waker stops, and its eventfd is closed, when its loop closes (``loop.close`` is
wrapped where the loop allows it; the waker also notices a closed loop within 100 ms).

`attach()` (run when ampipc is imported) adds the methods to `MessageBuffer`, `StreamBuffer`,
`Ipc` and the RPMsg `Endpoint`: ``send_async``, ``receive_async``, ``receive_into_async``,
``write_async``, ``read_async`` and ``__aiter__`` (``async for``, which ends at `PeerClosed` as
the buffers' own ``for`` does); the same functions are usable directly (``await aio.receive(buf)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from . import _waitv
from .buffers import MessageBuffer, StreamBuffer
from .errors import IpcError, PeerClosed, Timeout
from .ipc import Ipc
from .waiting import (
    READABLE,
    SLICE,
    WRITABLE,
    _Source,
    _ring_batch,
    _source_for,
    _wait_ring_batch,
    wait_entries,
)

__all__ = [
    "attach",
    "receive",
    "receive_into",
    "send",
    "read",
    "write",
    "ipc_send",
    "ipc_receive",
    "endpoint_receive",
    "messages",
    "chunks",
    "waker_statistics",
]

_T = TypeVar("_T")
_NOTHING: Any = object()
_Key = tuple[int, int]


def _running_loop(what: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{what}() needs a running asyncio event loop: call it from a coroutine "
            f"(use the blocking twin outside asyncio)"
        ) from None


class _Interest:
    __slots__ = ("obj", "source", "events", "waiters", "outstanding")

    def __init__(self, obj: object, source: _Source, events: int) -> None:
        self.obj = obj
        self.source = source
        self.events = events
        self.waiters: deque[asyncio.Future[bool]] = deque()
        self.outstanding = 0  # waiters woken by a hand-over that have not made their attempt yet


class _Waker:
    """One per event loop: a thread sleeping on every awaited object's words, reporting through an eventfd.

    An object the thread reported ready is *handed over* to the loop (``reported``): the thread stops
    watching it and the loop wakes as many of its waiters as the object can satisfy (a message
    buffer: at most one per length prefix it holds; otherwise one). Each woken waiter makes its
    attempt: one that got something wakes the next waiter (there may be more), one that got nothing
    is done; when the last woken waiter got nothing, the object goes back to the thread. So n
    waiters on one buffer cost O(n) wake-ups per burst, not O(n) per message, and a woken waiter
    that is cancelled before it runs hands on, so no readiness is lost with it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.control = bytearray(4)
        self.lock = threading.Lock()
        self.interests: dict[_Key, _Interest] = {}
        self.sources: dict[int, list[Any]] = {}  # id(obj) -> [obj, source, interests using it]
        self.reported: set[_Key] = set()
        self.fired: deque[_Key] = deque()
        # The thread's view of the interests, rebuilt only when keys come or go (`generation`):
        # their order (`index`) and one byte per key, 0 while the key is handed over to the loop.
        self.generation = 0
        self.index: dict[_Key, int] = {}
        self.enabled = bytearray()
        self.stopping = False
        self.reports = 0
        self.sleeps = 0
        loop.add_reader(self.efd, self._on_ready)
        self.thread = threading.Thread(target=self._run, name="ampipc-aio-waker", daemon=True)
        self.thread.start()

    # ---- loop thread ---------------------------------------------------------------------------

    def add(self, obj: object, events: int, *, rearm: bool = False) -> tuple[_Key, asyncio.Future[bool]]:
        """A new waiter for (obj, events); `rearm`: it was woken before and found nothing."""
        key = (id(obj), events)
        if rearm:
            self.release(key, got_something=False)
        fut: asyncio.Future[bool] = self.loop.create_future()
        with self.lock:
            interest = self.interests.get(key)
            poke = interest is None
            if interest is None:
                cached = self.sources.get(id(obj))
                if cached is None or cached[0] is not obj:
                    cached = self.sources[id(obj)] = [obj, _source_for(obj), 0]
                cached[2] += 1
                interest = self.interests[key] = _Interest(obj, cached[1], events)
                self.generation += 1
            interest.waiters.append(fut)
        if poke:
            self._poke()
        return key, fut

    def remove(self, key: _Key, fut: asyncio.Future[bool]) -> None:
        """A waiter that was not woken by a hand-over goes away (cancelled, or its timer fired)."""
        with self.lock:
            interest = self.interests.get(key)
            if interest is None:
                return
            with contextlib.suppress(ValueError):
                interest.waiters.remove(fut)
            if not interest.waiters and not interest.outstanding:
                self._drop(key)

    def release(self, key: _Key, *, got_something: bool) -> None:
        """A waiter woken by a hand-over made its attempt (or was cancelled: `got_something`=True)."""
        poke = False
        with self.lock:
            interest = self.interests.get(key)
            if interest is None:
                self.reported.discard(key)
                return
            interest.outstanding = max(0, interest.outstanding - 1)
            if got_something:
                self._wake(key, interest, 1)
            elif not interest.outstanding:
                poke = self._hand_back(key, interest)
        if poke:
            self._poke()

    def _hand_back(self, key: _Key, interest: _Interest) -> bool:  # with the lock held
        """The object goes back to the thread's watch (True: poke it), or away if nobody waits."""
        if not interest.waiters:
            self._drop(key)
            return False
        self._unreport(key)
        return True

    def _unreport(self, key: _Key) -> None:  # with the lock held
        self.reported.discard(key)
        i = self.index.get(key)
        if i is not None and i < len(self.enabled):
            self.enabled[i] = 1

    def _drop(self, key: _Key) -> None:  # with the lock held
        del self.interests[key]
        self.reported.discard(key)
        self.generation += 1
        cached = self.sources.get(key[0])
        if cached is not None:
            cached[2] -= 1
            if cached[2] <= 0:
                del self.sources[key[0]]

    def _wake(self, key: _Key, interest: _Interest, count: int) -> bool:  # with the lock held
        """Wake up to `count` waiters; if none is left to wake and none is out, hand back (True: poke)."""
        while count > 0 and interest.waiters:
            fut = interest.waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                interest.outstanding += 1
                count -= 1
        if not interest.outstanding:
            return self._hand_back(key, interest)
        return False

    def _poke(self) -> None:
        _waitv.fetch_add(self.control, 0, 1)
        _waitv.wake(self.control, 0)

    def _on_ready(self) -> None:
        with contextlib.suppress(OSError):  # empty (BlockingIOError), or closed
            os.eventfd_read(self.efd)
        poke = False
        with self.lock:
            keys = list(self.fired)
            self.fired.clear()
            for key in keys:
                interest = self.interests.get(key)
                if interest is None:
                    self.reported.discard(key)
                    continue
                try:
                    count = interest.source.wake_hint(interest.events)
                except Exception:  # noqa: BLE001 - a closed region: one waiter goes to find the error
                    count = 1
                poke |= self._wake(key, interest, count)
        if poke:
            self._poke()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._poke()
        if threading.current_thread() is not self.thread:
            self.thread.join()
        with contextlib.suppress(Exception):
            if not self.loop.is_closed():
                self.loop.remove_reader(self.efd)
        self._close_fd()
        with self.lock:
            waiters = [f for i in self.interests.values() for f in i.waiters]
            self.interests.clear()
        for fut in waiters:
            if not fut.done() and not self.loop.is_closed():
                fut.cancel()

    # ---- waker thread --------------------------------------------------------------------------

    def _close_fd(self) -> None:
        with self.lock:
            fd, self.efd = self.efd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        generation = -1
        keys: list[_Key] = []
        entries: list[tuple[_Source, int]] = []
        batch: tuple[Any, list[tuple[int, int]]] | None = None
        while not self.stopping:
            if self.loop.is_closed():  # a loop whose close() could not be wrapped (uvloop)
                self.stopping = True
                self._close_fd()
                break
            with self.lock:
                seen = _waitv.load(self.control, 0)
                if generation != self.generation:
                    generation = self.generation
                    keys = list(self.interests)
                    entries = [(self.interests[k].source, self.interests[k].events) for k in keys]
                    batch = _ring_batch(entries) if entries else None
                    self.index = {k: i for i, k in enumerate(keys)}
                    self.enabled = bytearray(0 if k in self.reported else 1 for k in keys)
                enabled = self.enabled
                watching = any(enabled)
                if watching and batch is None:
                    watched = [(k, entries[i]) for i, k in enumerate(keys) if enabled[i]]
            control = [(self.control, 0, seen)]
            if not watching:
                _waitv.wait(control, SLICE)
                continue
            self.sleeps += 1
            try:
                if batch is not None:
                    found = _wait_ring_batch(
                        entries, batch[0], batch[1], time.monotonic() + SLICE, control, False, enabled
                    )
                    ready = [keys[i] for i, _ in found]
                else:
                    found = wait_entries([e for _, e in watched], time.monotonic() + SLICE, extra_words=control)
                    ready = [watched[i][0] for i, _ in found]
            except Exception:  # noqa: BLE001 - a closed region or corrupt object: let its waiters find out
                ready = [k for i, k in enumerate(keys) if enabled[i] and self._raises(*entries[i])]
            if ready:
                with self.lock:
                    for k in ready:
                        i = self.index.get(k)
                        if i is not None and i < len(self.enabled) and k in self.interests:
                            self.enabled[i] = 0
                    self.reported.update(ready)
                    self.fired.extend(ready)
                self.reports += 1
                try:
                    os.eventfd_write(self.efd, 1)
                except (OSError, ValueError):  # closed under us: the loop is going away
                    break

    @staticmethod
    def _raises(source: _Source, events: int) -> bool:
        try:
            source.ready(events)
        except Exception:  # noqa: BLE001 - the waiting task repeats the call and gets the real error
            return True
        return False


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


def _waker_for(loop: asyncio.AbstractEventLoop) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None or waker.stopping:
        waker = _wakers[loop] = _Waker(loop)
        _wrap_close(loop, waker)
    return waker


def _wrap_close(loop: asyncio.AbstractEventLoop, waker: _Waker) -> None:
    original = loop.close
    if getattr(original, "_ampipc_wrapped", False):
        return

    def close() -> None:
        current = _wakers.pop(loop, None)
        if current is not None:
            current.stop()
        original()

    close._ampipc_wrapped = True  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError, TypeError):  # a loop type without __dict__ (uvloop)
        loop.close = close  # type: ignore[method-assign]


def waker_statistics() -> dict[str, int]:
    """The running loop's waker: sleeps taken and reports made (for benchmarks and tests)."""
    waker = _wakers.get(_running_loop("waker_statistics"))
    if waker is None:
        return {"sleeps": 0, "reports": 0, "interests": 0}
    return {"sleeps": waker.sleeps, "reports": waker.reports, "interests": len(waker.interests)}


async def _wait_until(
    loop: asyncio.AbstractEventLoop,
    obj: object,
    events: int,
    attempt: Callable[[], _T],
    deadline: float | None,
    on_deadline: Callable[[], _T],
    peer_check: Callable[[], None] | None,
) -> _T:
    """Repeat `attempt` (non-blocking; _NOTHING when not possible) each time `obj` becomes ready."""
    waker = _waker_for(loop)
    last_check = time.monotonic()
    woken = False  # holding the object the waker handed over (see _Waker)
    while True:
        key, fut = waker.add(obj, events, rearm=woken)
        timer = None if deadline is None else loop.call_at(loop.time() + (deadline - time.monotonic()), _expire, fut)
        try:
            woken = await fut
        except BaseException:  # cancelled: a hand-over that came meanwhile goes on to the next waiter
            if fut.done() and not fut.cancelled() and fut.result():
                waker.release(key, got_something=True)
            else:
                waker.remove(key, fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not woken:
            waker.remove(key, fut)  # the timer fired
        try:
            result = attempt()
        except BaseException:
            if woken:
                waker.release(key, got_something=True)  # let the next waiter find out too
            raise
        if result is not _NOTHING:
            if woken:
                waker.release(key, got_something=True)
            return result
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if woken:
                waker.release(key, got_something=False)
            return on_deadline()
        if peer_check is not None and now - last_check >= SLICE:
            last_check = now
            try:
                peer_check()
            except BaseException:
                if woken:
                    waker.release(key, got_something=False)
                raise


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


def _deadline_of(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    return time.monotonic() + float(timeout)


def _may_spin(loop: asyncio.AbstractEventLoop, buf: MessageBuffer | StreamBuffer) -> bool:
    """Spin like the blocking call does (its bounded, adaptive spin, in C) only when nothing else is ready.

    The peer often answers within microseconds, far sooner than a hop through the waker thread and
    the loop's selector. The spin holds the loop for at most the buffer's `spin` (50 us by default,
    shortened by the core when spins fail), and only when the loop has no other callback ready to
    run; a loop type that does not expose its ready queue never spins.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready and buf.spin > 0


def _reader_check(buf: MessageBuffer | StreamBuffer) -> Callable[[], None]:
    return lambda: buf._check_peer(1)


def _writer_check(buf: MessageBuffer | StreamBuffer) -> Callable[[], None]:
    return lambda: buf._check_peer(0)


# ---- message buffers ---------------------------------------------------------------------------


async def _receive(loop: asyncio.AbstractEventLoop, buf: MessageBuffer, timeout: float | None) -> bytes:
    got = buf.try_receive()
    if got is not None:
        return got
    if timeout != 0 and _may_spin(loop, buf):
        try:
            return buf.receive(timeout=buf.spin)
        except TimeoutError:
            pass
    deadline = _deadline_of(timeout)
    if deadline is not None and timeout == 0:
        raise Timeout(f"timed out waiting to receive on buffer {buf.name!r}")

    def attempt() -> bytes:
        m = buf.try_receive()  # drained and the writer closed: raises PeerClosed (like EOF)
        return _NOTHING if m is None else m

    def expired() -> bytes:
        raise Timeout(f"timed out waiting to receive on buffer {buf.name!r}")

    return await _wait_until(loop, buf, READABLE, attempt, deadline, expired, _reader_check(buf))


def receive(buf: MessageBuffer, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
    """``await buf.receive_async(timeout=None)``: the next message; `Timeout` at the timeout."""
    return _receive(_running_loop("receive_async"), buf, timeout)


async def _receive_into(loop: asyncio.AbstractEventLoop, buf: MessageBuffer, into: Any, timeout: float | None) -> int:
    def attempt() -> int:
        try:  # BufferTooSmall leaves the message in place; drained and closed: PeerClosed
            return buf.receive_into(into, timeout=0)
        except TimeoutError:
            return _NOTHING  # type: ignore[no-any-return]

    got = attempt()
    if got is not _NOTHING:
        return got
    deadline = _deadline_of(timeout)

    def expired() -> int:
        raise Timeout(f"timed out waiting to receive on buffer {buf.name!r}")

    if timeout == 0:
        return expired()
    return await _wait_until(loop, buf, READABLE, attempt, deadline, expired, _reader_check(buf))


def receive_into(buf: MessageBuffer, into: Any, timeout: float | None = None) -> Coroutine[Any, Any, int]:
    """``await buf.receive_into_async(b, timeout=None)``: copy the next message into `b`, return its length."""
    return _receive_into(_running_loop("receive_into_async"), buf, into, timeout)


async def _send(loop: asyncio.AbstractEventLoop, buf: MessageBuffer, data: Any, timeout: float | None) -> None:
    if buf.try_send(data):
        return
    if timeout != 0 and _may_spin(loop, buf):
        try:
            return buf.send(data, timeout=buf.spin)
        except TimeoutError:
            pass
    deadline = _deadline_of(timeout)

    def attempt() -> Any:
        return None if buf.try_send(data) else _NOTHING  # the reader closed: PeerClosed at once

    def expired() -> None:
        raise Timeout(f"timed out waiting to send on buffer {buf.name!r}")

    if timeout == 0:
        return expired()
    return await _wait_until(loop, buf, WRITABLE, attempt, deadline, expired, _writer_check(buf))


def send(buf: MessageBuffer, data: Any, timeout: float | None = None) -> Coroutine[Any, Any, None]:
    """``await buf.send_async(data, timeout=None)``: send the whole message; `Timeout` at the timeout."""
    return _send(_running_loop("send_async"), buf, data, timeout)


# ---- stream buffers ----------------------------------------------------------------------------


async def _write(loop: asyncio.AbstractEventLoop, buf: StreamBuffer, data: Any, timeout: float | None) -> int:
    view = memoryview(data).cast("B")
    total = buf.try_write(view)
    if total == len(view) or timeout == 0:
        return total
    deadline = _deadline_of(timeout)
    written = [total]

    def attempt() -> int:
        written[0] += buf.try_write(view[written[0]:])
        return written[0] if written[0] == len(view) else _NOTHING

    return await _wait_until(loop, buf, WRITABLE, attempt, deadline, lambda: written[0], _writer_check(buf))


def write(buf: StreamBuffer, data: Any, timeout: float | None = None) -> Coroutine[Any, Any, int]:
    """``await stream.write_async(data, timeout=None)``: write it all, or what fitted by the timeout; the count."""
    return _write(_running_loop("write_async"), buf, data, timeout)


async def _read(loop: asyncio.AbstractEventLoop, buf: StreamBuffer, max_bytes: int, timeout: float | None) -> bytes:
    got = buf.try_read(max_bytes)
    if got or max_bytes == 0 or timeout == 0:
        return got
    deadline = _deadline_of(timeout)

    def attempt() -> bytes:
        data = buf.try_read(max_bytes)  # drained and the writer closed: raises PeerClosed
        return data if data else _NOTHING

    return await _wait_until(
        loop, buf, READABLE, attempt, deadline, lambda: buf.try_read(max_bytes), _reader_check(buf)
    )


def read(buf: StreamBuffer, max_bytes: int, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
    """``await stream.read_async(max_bytes, timeout=None)``: what is there, else wait for the trigger level."""
    return _read(_running_loop("read_async"), buf, max_bytes, timeout)


# ---- channels and endpoints ----------------------------------------------------------------------


def ipc_send(ipc: Ipc, channel: int, data: Any, timeout: float | None = None) -> Coroutine[Any, Any, None]:
    """``await ipc.send_async(channel, data, timeout=None)``."""
    loop = _running_loop("send_async")
    return _send(loop, ipc.tx_buffer(channel), data, timeout)


async def _ipc_receive(loop: asyncio.AbstractEventLoop, ipc: Ipc, channel: int, timeout: float | None) -> bytes:
    return bytes(await _receive(loop, ipc.rx_buffer(channel), timeout))


def ipc_receive(ipc: Ipc, channel: int, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
    """``await ipc.receive_async(channel, timeout=None)``."""
    loop = _running_loop("receive_async")
    ipc.rx_buffer(channel)  # a bad channel number fails at the call
    return _ipc_receive(loop, ipc, channel, timeout)


async def _endpoint_receive(loop: asyncio.AbstractEventLoop, endpoint: Any, timeout: float | None) -> bytes:
    def attempt() -> bytes:
        if not endpoint.pending and not endpoint.destroyed:
            try:
                endpoint._check_link()
            except IpcError:
                return bytes(endpoint.receive(timeout=0))
            return _NOTHING  # type: ignore[no-any-return]
        return bytes(endpoint.receive(timeout=0))  # a destroyed endpoint raises

    got = attempt()
    if got is not _NOTHING:
        return got
    deadline = _deadline_of(timeout)

    def expired() -> bytes:
        raise Timeout(f"no message for endpoint {endpoint.name!r} within {timeout} s")

    if timeout == 0:
        return expired()
    return await _wait_until(loop, endpoint, READABLE, attempt, deadline, expired, None)


def endpoint_receive(endpoint: Any, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
    """``await endpoint.receive_async(timeout=None)``: the next payload queued for the RPMsg endpoint."""
    return _endpoint_receive(_running_loop("receive_async"), endpoint, timeout)


# ---- iteration -----------------------------------------------------------------------------------


async def messages(buf: MessageBuffer) -> AsyncIterator[bytes]:
    """``async for message in buf``: every message until the peer closes (`PeerClosed` ends it)."""
    loop = _running_loop("async for")
    while True:
        try:
            message = await _receive(loop, buf, None)
        except PeerClosed:
            return
        yield message


async def chunks(buf: StreamBuffer) -> AsyncIterator[bytes]:
    """``async for chunk in stream``: what the stream holds, chunk by chunk, until the writer closes."""
    loop = _running_loop("async for")
    while True:
        try:
            chunk = await _read(loop, buf, buf.capacity, None)
        except PeerClosed:
            return
        yield chunk


def _aiter(buf: MessageBuffer | StreamBuffer) -> AsyncIterator[bytes]:
    _running_loop("async for")
    return messages(buf) if isinstance(buf, MessageBuffer) else chunks(buf)


_ATTACHED = False


def attach() -> None:
    """Add the awaitable methods to MessageBuffer, StreamBuffer, Ipc and Endpoint (idempotent)."""
    global _ATTACHED
    if _ATTACHED:
        return
    from .rpmsg.endpoints import Endpoint

    additions: list[tuple[type, str, Any]] = [
        (MessageBuffer, "send_async", send),
        (MessageBuffer, "receive_async", receive),
        (MessageBuffer, "receive_into_async", receive_into),
        (MessageBuffer, "__aiter__", _aiter),
        (StreamBuffer, "__aiter__", _aiter),
        (StreamBuffer, "write_async", write),
        (StreamBuffer, "read_async", read),
        (Ipc, "send_async", ipc_send),
        (Ipc, "receive_async", ipc_receive),
        (Endpoint, "receive_async", endpoint_receive),
    ]
    for cls, name, func in additions:
        if not hasattr(cls, name):  # a method the class (or a base) defines itself wins
            setattr(cls, name, func)
    _ATTACHED = True

