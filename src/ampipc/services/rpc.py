"""Remote calls: a `Server` of named methods and `Client` s that call them over any link.

Theory of operation
-------------------
A *link* (`ampipc.services.rpc_links`) carries frames (`ampipc.services._codec`) between one client
and one server. The client numbers its calls (request ids, unique per link); the server answers
each `Request` with one `Reply` or `Failure` carrying the same id, in any order. `Notify` frames
are one-way. A caller that gives up (timeout, cancellation) forgets the id and sends a `Cancel`;
a reply that arrives afterwards is *late*: dropped and counted, never delivered to another call.
A reply for an id this client never issued is *unexpected*: dropped, counted and logged.

Client: any number of threads may call at once. Each call registers its id, sends under the
send lock, then waits for its reply. One waiting thread at a time is the link's *reader*: it
receives, hands each reply to its call, and wakes the others (a condition variable); a single-
threaded caller therefore reads its own reply with no thread hop. `call_async` starts one reader
thread per client (the only reader from then on) which completes asyncio futures with
``loop.call_soon_threadsafe``: no thread per call. If the link reports the server dead
(`PeerDied`) or closed, every pending call fails at once with that error; later calls raise it too.

Server: one reader thread per connection decodes requests. A method registered with
``inline=True`` runs on that thread (no hop: for handlers that never block); the others go to a
bounded worker pool (``workers`` threads, a queue of ``backlog`` calls). When the queue is full the
connection's reader waits, stops reading, the link fills, and the clients' sends block:
back-pressure, never an unbounded queue. A call whose deadline (the caller's remaining timeout at
send time) passed before a worker took it is skipped; a cancelled one too; a running handler can
look at `current_call()` to stop early. Replies are sent under the connection's send lock. When a
client dies (`PeerDied` from its link) its connection ends: queued calls are skipped and replies of
running ones are dropped (counted).

Exceptions travel as (type name, message, remote traceback text, errno, filename).
`FileNotFoundError`, `PermissionError`, `ValueError`, `TimeoutError` (and the other `OSError`
types listed in `REBUILT_EXCEPTIONS`) are re-raised as themselves (with ``remote_traceback`` set);
everything else as `RemoteError`; an unknown method as `MethodNotFound`.

Thread safety: all public methods of `Client` and `Server` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import queue
import threading
import time
import traceback
import typing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast, overload

import msgspec

from ..errors import IpcError, MessageTooLarge, PeerClosed, PeerDied, ProtocolError, Timeout
from ..region import Region
from . import _codec
from .rpc_links import DEFAULT_MAX_FRAME, Link, Reassembler, send_frame
from .rpc_registry import DEFAULT_BUFFER_SIZE, DEFAULT_SLOTS, Registry, Slot, connect_slot

__all__ = [
    "Server",
    "Client",
    "Connection",
    "PendingCall",
    "Service",
    "method",
    "current_call",
    "CallContext",
    "RemoteError",
    "MethodNotFound",
    "ServerStatistics",
    "ClientStatistics",
    "REBUILT_EXCEPTIONS",
]

log = logging.getLogger("ampipc.services")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_SLICE = 0.25  # longest a reader waits before re-checking that it should stop
_ABANDONED_MEMORY = 4096


# ---- errors -------------------------------------------------------------------------------------


class RemoteError(IpcError):
    """The remote handler raised. ``type_name``, ``message`` and ``remote_traceback`` describe it."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class MethodNotFound(RemoteError, LookupError):
    """The server has no method of that name (``method``)."""

    def __init__(self, method: str, message: str = "") -> None:
        super().__init__("MethodNotFound", message or f"no remote method {method!r}")
        self.method = method


REBUILT_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        FileNotFoundError, PermissionError, ValueError, TimeoutError, FileExistsError,
        IsADirectoryError, NotADirectoryError, KeyError, TypeError,
    )
}
"""Remote exceptions of exactly these built-in types are raised in the caller as themselves."""


def _failure(call_id: int, exc: BaseException) -> _codec.Failure:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, OSError) and exc.errno is not None:
        filename = exc.filename if isinstance(exc.filename, str) else None
        return _codec.Failure(call_id, type(exc).__name__, exc.strerror or str(exc), tb, exc.errno, filename)
    message = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return _codec.Failure(call_id, type(exc).__name__, message, tb)


def _rebuild(f: _codec.Failure) -> BaseException:
    exc: BaseException
    if f.exc_type == "MethodNotFound":
        name = f.message.split("'")[1] if f.message.count("'") >= 2 else ""
        return MethodNotFound(name, f.message)
    if f.exc_type == "MessageTooLarge":
        exc = MessageTooLarge(f.message)
    elif f.exc_type in REBUILT_EXCEPTIONS:
        cls = REBUILT_EXCEPTIONS[f.exc_type]
        if issubclass(cls, OSError) and f.errno is not None:
            exc = cls(f.errno, f.message, f.filename) if f.filename is not None else cls(f.errno, f.message)
        else:
            exc = cls(f.message)
    else:
        exc = RemoteError(f.exc_type, f.message, f.traceback)
    exc.remote_traceback = f.traceback  # type: ignore[attr-defined]
    if f.traceback and hasattr(exc, "add_note"):
        exc.add_note("remote traceback:\n" + f.traceback.rstrip())
    return exc


# ---- service definitions ------------------------------------------------------------------------


@dataclass(frozen=True)
class _MethodInfo:
    name: str
    inline: bool


@overload
def method(fn: F, /) -> F: ...
@overload
def method(*, name: str | None = None, inline: bool = False) -> Callable[[F], F]: ...


def method(fn: F | None = None, /, *, name: str | None = None, inline: bool = False) -> F | Callable[[F], F]:
    """Mark a method of a `Service` class (or a function) as remotely callable.

    ``name`` overrides the remote name (default: the function's); ``inline=True`` runs it on the
    connection's reader thread instead of the worker pool: only for handlers that never block.
    """

    def mark(f: F) -> F:
        f._rpc_method = _MethodInfo(name or f.__name__, inline)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


class Service:
    """Base of typed service classes: decorate methods with `method`; ``service_name`` prefixes them.

    The same class (or an interface class it derives from) gives the client a typed proxy:
    ``client.proxy(FileService).read(path)``. Results whose declared type is a dataclass, a msgspec
    Struct or a NamedTuple are rebuilt as that type on the client.
    """

    service_name: ClassVar[str] = ""


def _methods_of(cls: type) -> Iterator[tuple[str, Callable[..., Any], _MethodInfo]]:
    prefix = getattr(cls, "service_name", "") or ""
    for attr in dir(cls):
        fn = getattr(cls, attr, None)
        info = getattr(fn, "_rpc_method", None)
        if isinstance(info, _MethodInfo) and fn is not None:
            yield attr, fn, _MethodInfo(f"{prefix}.{info.name}" if prefix else info.name, info.inline)


def _is_structured(tp: Any) -> bool:
    if not isinstance(tp, type):
        return False
    return dataclasses.is_dataclass(tp) or issubclass(tp, msgspec.Struct) or (issubclass(tp, tuple) and hasattr(tp, "_fields"))


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: no conversion
        return {}


@dataclass
class _Handler:
    name: str
    fn: Callable[..., Any]
    inline: bool
    positional: list[tuple[int, str, Any]]  # (index, name, type) of structured parameters
    by_name: dict[str, Any]

    @classmethod
    def build(cls, name: str, fn: Callable[..., Any], inline: bool) -> _Handler:
        hints = _hints(fn)
        positional: list[tuple[int, str, Any]] = []
        by_name: dict[str, Any] = {}
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        index = 0
        for p in params:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                if _is_structured(hints.get(p.name)):
                    positional.append((index, p.name, hints[p.name]))
                    by_name[p.name] = hints[p.name]
                index += 1
            elif p.kind is p.KEYWORD_ONLY and _is_structured(hints.get(p.name)):
                by_name[p.name] = hints[p.name]
        return cls(name, fn, inline, positional, by_name)

    def convert(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        try:
            for index, _pname, tp in self.positional:
                if index < len(args):
                    args[index] = msgspec.convert(args[index], tp)
            for pname, tp in self.by_name.items():
                if pname in kwargs:
                    kwargs[pname] = msgspec.convert(kwargs[pname], tp)
        except msgspec.ValidationError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        return args, kwargs


# ---- the call context ---------------------------------------------------------------------------


class _Call:
    __slots__ = ("id", "handler", "args", "kwargs", "deadline", "cancelled", "conn", "oneway")

    def __init__(self, call_id: int, handler: _Handler, args: list[Any], kwargs: dict[str, Any],
                 deadline: float | None, conn: Connection, oneway: bool) -> None:
        self.id = call_id
        self.handler = handler
        self.args = args
        self.kwargs = kwargs
        self.deadline = deadline
        self.cancelled = False
        self.conn = conn
        self.oneway = oneway


class CallContext:
    """What a running handler may ask about its call (see `current_call`)."""

    __slots__ = ("_call",)

    def __init__(self, call: _Call) -> None:
        self._call = call

    @property
    def id(self) -> int:
        return self._call.id

    @property
    def method(self) -> str:
        return self._call.handler.name

    @property
    def peer(self) -> str:
        return self._call.conn.description

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up (cancel or timeout) or its connection ended."""
        return self._call.cancelled or self._call.conn.closed

    @property
    def deadline(self) -> float | None:
        """The caller's deadline on this process's `time.monotonic` clock (None: no deadline)."""
        return self._call.deadline

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline (None: no deadline)."""
        return None if self._call.deadline is None else self._call.deadline - time.monotonic()


_local = threading.local()


def current_call() -> CallContext | None:
    """The call the current thread is handling, or None outside a handler."""
    call = getattr(_local, "call", None)
    return None if call is None else CallContext(call)


# ---- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStatistics:
    """A snapshot of a server's counters."""

    connections_opened: int
    connections_active: int
    dead_clients: int
    calls: int
    completed: int
    failed: int
    notifications: int
    unknown_methods: int
    cancelled: int
    expired: int
    replies_dropped: int
    bad_frames: int
    back_pressure_waits: int
    queue_peak: int
    workers: int
    bytes_received: int
    bytes_sent: int


@dataclass(frozen=True)
class ClientStatistics:
    """A snapshot of a client's counters."""

    calls: int
    completed: int
    remote_errors: int
    timeouts: int
    cancelled: int
    notifications: int
    late_replies: int
    unexpected_replies: int
    bad_frames: int
    pending: int
    bytes_sent: int
    bytes_received: int


class _Counters:
    """Named counters, incremented under one lock (handlers run on many threads)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def add2(self, name: str, amount: int, name2: str, amount2: int) -> None:
        with self._lock:
            self._values[name] += amount
            self._values[name2] += amount2

    def peak(self, name: str, value: int) -> None:
        with self._lock:
            if value > self._values[name]:
                self._values[name] = value

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


# ---- server -------------------------------------------------------------------------------------


class _EndOfLink(Exception):
    pass


class Connection:
    """One client link served by a `Server` (returned by `Server.serve`)."""

    def __init__(self, server: Server, link: Link, on_end: Callable[[Connection], None] | None) -> None:
        self.server = server
        self.link = link
        self.description = link.description
        self.closed = False
        self.end_reason: str | None = None
        self.peer_pid = 0
        self._on_end = on_end
        self._send_lock = threading.Lock()
        self._active: dict[int, _Call] = {}
        self._active_lock = threading.Lock()
        self._reassembler = Reassembler(server.max_frame)
        # written by this connection's reader thread only (no lock); summed by Server.statistics
        self.reader_counts = dict.fromkeys(_READER_COUNTERS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"rpc-conn {self.description}", daemon=True)

    def __repr__(self) -> str:
        return f"<Connection {self.description!r} {'closed' if self.closed else 'open'}>"

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading this link (the reader exits within a quarter second)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the connection ended (the client left or died, or `close`)."""
        self._thread.join(timeout)

    # -- reading --
    def _read_loop(self) -> None:
        stats = self.server._stats
        counts = self.reader_counts
        receive = self.link.receive
        reason = "stopped"
        try:
            while not self._stop.is_set():
                try:
                    data = receive(_SLICE)
                except TimeoutError:
                    continue
                counts["bytes_received"] += len(data)
                self._handle(data)
        except _EndOfLink:
            reason = "the client said goodbye"
        except PeerClosed as exc:
            reason = f"closed by the client: {exc}"
        except PeerDied as exc:
            reason = f"the client died: {exc}"
            stats.add("dead_clients")
        except IpcError as exc:
            reason = f"link failed: {exc}"
            log.warning("rpc connection %s: %s", self.description, reason)
        except Exception as exc:  # the reader must never die silently
            reason = f"reader failed: {exc!r}"
            log.exception("rpc connection %s: the reader failed", self.description)
        finally:
            self._end(reason)

    def _end(self, reason: str) -> None:
        with self._send_lock:
            self.closed = True  # from now on no reply goes out on this link
            if reason == "stopped":  # the server is closing: tell the client, whose calls then fail at once
                try:
                    self.link.send(_codec.encode(_codec.Bye("the server is closing")), 0)
                except (IpcError, TimeoutError):
                    pass
        with self._active_lock:
            calls = list(self._active.values())
            self._active.clear()
        for call in calls:
            call.cancelled = True
        self.end_reason = reason
        log.info("rpc connection %s ended: %s", self.description, reason)
        self.server._connection_ended(self)
        if self._on_end is not None:
            try:
                self._on_end(self)
            except Exception:
                log.exception("rpc connection %s: the end callback failed", self.description)

    def _handle(self, data: bytes) -> None:
        counts = self.reader_counts
        try:
            frame = _codec.decode_to_server(data)
        except ProtocolError as exc:
            counts["bad_frames"] += 1
            log.warning("rpc connection %s: %s", self.description, exc)
            return
        if type(frame) is _codec.Request and not self._reassembler.in_progress:  # the common case
            self.server._dispatch(self, frame.id, frame.method, frame.args, frame.kwargs, frame.budget_us, False)
            return
        try:
            if isinstance(frame, _codec.Chunk):
                whole = self._reassembler.feed(frame)
                if whole is None:
                    return
                frame = _codec.decode_to_server(whole)
                if isinstance(frame, _codec.Chunk):
                    raise ProtocolError("a chunk inside a chunked frame")
            elif self._reassembler.in_progress:
                self._reassembler.reset()
                counts["bad_frames"] += 1
                log.warning("rpc connection %s: a frame interrupted a chunked frame (its pieces were dropped)",
                            self.description)
        except ProtocolError as exc:
            counts["bad_frames"] += 1
            log.warning("rpc connection %s: %s", self.description, exc)
            return
        if isinstance(frame, _codec.Request):
            self.server._dispatch(self, frame.id, frame.method, frame.args, frame.kwargs, frame.budget_us, False)
        elif isinstance(frame, _codec.Notify):
            self.server._dispatch(self, 0, frame.method, frame.args, frame.kwargs, 0, True)
        elif isinstance(frame, _codec.Cancel):
            with self._active_lock:
                call = self._active.get(frame.id)
            if call is not None:
                call.cancelled = True
        elif isinstance(frame, _codec.Hello):
            self.peer_pid = frame.pid
        elif isinstance(frame, _codec.Bye):
            raise _EndOfLink()

    # -- replying --
    def _register(self, call: _Call) -> bool:
        with self._active_lock:
            if call.id in self._active:
                return False
            self._active[call.id] = call
            return True

    def _unregister(self, call: _Call) -> None:
        with self._active_lock:
            if self._active.get(call.id) is call:
                del self._active[call.id]

    def _reply(self, frame: _codec.Reply | _codec.Failure, outcome: str = "") -> None:
        """Send a reply; ``outcome`` ("completed", "failed" or "") is counted with it in one step."""
        stats = self.server._stats
        try:
            data = _codec.encode(frame)
        except TypeError as exc:
            data = _codec.encode(_codec.Failure(frame.id, "TypeError", f"the result cannot be sent: {exc}", ""))
        if len(data) > self.server.max_frame:
            data = _codec.encode(_codec.Failure(
                frame.id, "MessageTooLarge",
                f"the reply of {len(data)} bytes exceeds the {self.server.max_frame}-byte frame limit", "",
            ))
        problem = None
        with self._send_lock:
            if self.closed:
                problem = "the connection ended"
            else:
                try:
                    link = self.link
                    if len(data) <= link.max_message:  # the common case: one message, no chunking
                        link.send(data, self.server.reply_timeout)
                    else:
                        send_frame(link, data, self.server.reply_timeout)
                except (PeerDied, PeerClosed) as exc:
                    problem = str(exc)
                except TimeoutError:
                    problem = f"the client did not take it within {self.server.reply_timeout} s"
                except IpcError as exc:
                    problem = f"sending failed: {exc}"
        if problem is None:
            if outcome:
                stats.add2(outcome, 1, "bytes_sent", len(data))
            else:
                stats.add("bytes_sent", len(data))
            return
        if outcome:
            stats.add2(outcome, 1, "replies_dropped", 1)
        else:
            stats.add("replies_dropped")
        log.info("rpc connection %s: reply %d dropped: %s", self.description, frame.id, problem)


class _Pool:
    """A bounded worker pool: at most ``workers`` threads, at most ``backlog`` calls waiting for one.

    The hand-off is a C-level `queue.SimpleQueue`; the bound is the count of calls not yet taken
    (``_waiting``, under ``_lock``): a submitter finding ``backlog`` of them waits on ``_room``.
    """

    def __init__(self, server: Server, workers: int, backlog: int) -> None:
        self._server = server
        self._max = workers
        self._backlog = backlog
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._waiting = 0  # submitted, not yet taken by a worker
        self._blocked = 0  # submitters waiting for room
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)

    @property
    def size(self) -> int:
        return len(self._threads)

    def submit(self, call: _Call) -> None:
        stats = self._server._stats
        with self._lock:
            if self._waiting >= self._backlog:
                stats.add("back_pressure_waits")
                while self._waiting >= self._backlog:  # stop waiting if the server closes or the client left
                    if self._server._closing or call.conn.closed:
                        call.cancelled = True
                        return
                    self._blocked += 1
                    try:
                        self._room.wait(_SLICE)
                    finally:
                        self._blocked -= 1
            self._waiting += 1
            waiting = self._waiting
            # a new worker whenever the calls not yet taken outnumber the idle workers
            if self._waiting > self._idle and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, name=f"rpc-worker-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                self._idle += 1
                t.start()
        self._queue.put(call)
        stats.peak("queue_peak", waiting)

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
                if self._blocked:
                    self._room.notify()
            try:
                self._server._run(call)
            finally:
                with self._lock:
                    self._idle += 1

    def stop(self, timeout: float) -> None:
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


_READER_COUNTERS = ("bytes_received", "calls", "notifications", "unknown_methods", "bad_frames")
_SERVER_COUNTERS = tuple(f.name for f in dataclasses.fields(ServerStatistics)
                         if f.name not in ("connections_active", "workers"))


class Server:
    """Serves named methods to any number of clients, each on its own link.

    ``workers`` bounds the threads running non-inline handlers, ``backlog`` the calls waiting for
    one (then back-pressure); ``reply_timeout`` is how long a reply may wait for room on a client's
    link before it is dropped; ``max_frame`` bounds a (chunked) frame either way.
    """

    def __init__(self, *, workers: int = 8, backlog: int = 64, reply_timeout: float = 30.0,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        if not isinstance(backlog, int) or backlog < 1:
            raise ValueError(f"backlog must be a positive integer, not {backlog!r}")
        self.reply_timeout = reply_timeout
        self.max_frame = max_frame
        self._handlers: dict[str, _Handler] = {}
        self._stats = _Counters(_SERVER_COUNTERS)
        self._pool = _Pool(self, workers, backlog)
        self._connections: set[Connection] = set()
        self._conn_lock = threading.Lock()
        self._closing = False
        self._listeners: list[tuple[Registry, threading.Thread]] = []

    # -- registration --
    def register(self, fn: Callable[..., Any], name: str | None = None, *, inline: bool = False) -> None:
        """Expose ``fn`` as ``name`` (default: its ``__name__``)."""
        if not callable(fn):
            raise TypeError(f"a remote method must be callable, not {fn!r}")
        remote = name or getattr(fn, "__name__", None)
        if not isinstance(remote, str) or not remote:
            raise ValueError("a remote method needs a name")
        if remote in self._handlers:
            raise ValueError(f"a method named {remote!r} is registered already")
        self._handlers[remote] = _Handler.build(remote, fn, inline)

    def method(self, fn: F | None = None, /, *, name: str | None = None, inline: bool = False) -> Any:
        """Decorator form of `register`: ``@server.method`` or ``@server.method(name=..., inline=True)``."""

        def deco(f: F) -> F:
            self.register(f, name, inline=inline)
            return f

        return deco(fn) if fn is not None else deco

    def add(self, service: object) -> None:
        """Expose every `method`-decorated method of ``service`` (prefixed by its ``service_name``)."""
        found = False
        for attr, _, info in _methods_of(type(service)):
            self.register(getattr(service, attr), info.name, inline=info.inline)
            found = True
        if not found:
            raise ValueError(f"{type(service).__name__} has no method marked with @method")

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    # -- serving --
    def serve(self, link: Link, *, on_end: Callable[[Connection], None] | None = None) -> Connection:
        """Serve one client on ``link`` (a reader thread starts at once)."""
        if self._closing:
            raise IpcError("the server is closed")
        conn = Connection(self, link, on_end)
        with self._conn_lock:
            self._connections.add(conn)
        self._stats.add("connections_opened")
        conn.start()
        return conn

    def listen(self, region: Region, name: str = "rpc", *, slots: int = DEFAULT_SLOTS,
               buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Publish ``name`` in ``region``: clients `Client.connect` to it, each with its own buffer pair."""
        registry = Registry.create(region, name, slots=slots, buffer_size=buffer_size)
        thread = threading.Thread(target=self._accept_loop, args=(registry,), name=f"rpc-accept {name}", daemon=True)
        self._listeners.append((registry, thread))
        thread.start()

    def _accept_loop(self, registry: Registry) -> None:
        while not self._closing:
            try:
                slots = registry.accept(_SLICE)
            except IpcError as exc:  # the region went away
                log.warning("rpc accept %r stopped: %s", registry.service, exc)
                return
            for slot in slots:
                self._accept(registry, slot)

    def _accept(self, registry: Registry, slot: Slot) -> None:
        link = slot.link
        try:
            link.send(_codec.encode(_codec.Hello(_codec.PROTOCOL_VERSION, 0, link.max_message)), 1.0)
        except (IpcError, TimeoutError) as exc:
            log.warning("rpc %r: could not greet slot %d: %s", registry.service, slot.index, exc)
            registry.recycle(slot.index)
            return
        index = slot.index

        def recycle(conn: Connection) -> None:
            # a connection the server itself ended keeps its slot: emptying the buffers would
            # drop the Bye that tells the client
            if conn.end_reason != "stopped":
                registry.recycle(index)

        self.serve(link, on_end=recycle)

    def _connection_ended(self, conn: Connection) -> None:
        with self._conn_lock:
            self._connections.discard(conn)
            for name, value in conn.reader_counts.items():  # fold into the totals, under the same lock
                self._stats.add(name, value)

    # -- dispatch --
    def _dispatch(self, conn: Connection, call_id: int, name: str, args: list[Any], kwargs: dict[str, Any],
                  budget_us: int, oneway: bool) -> None:
        counts = conn.reader_counts  # this runs on the connection's reader thread
        counts["notifications" if oneway else "calls"] += 1
        handler = self._handlers.get(name)
        if handler is None:
            counts["unknown_methods"] += 1
            log.warning("rpc connection %s: unknown method %r", conn.description, name[:80])
            if not oneway:
                conn._reply(_codec.Failure(call_id, "MethodNotFound", f"no remote method {name!r}", ""))
            return
        deadline = time.monotonic() + budget_us / 1e6 if budget_us else None
        call = _Call(call_id, handler, args, kwargs, deadline, conn, oneway)
        # an inline call is not registered: no Cancel can be read while it runs on the reader
        if not oneway and not (call_id not in conn._active if handler.inline else conn._register(call)):
            counts["bad_frames"] += 1
            log.warning("rpc connection %s: request id %d is in use already", conn.description, call_id)
            conn._reply(_codec.Failure(call_id, "ProtocolError", f"request id {call_id} is in use already", ""))
            return
        if handler.inline:
            self._run(call)
        else:
            self._pool.submit(call)

    def _run(self, call: _Call) -> None:
        stats = self._stats
        conn = call.conn
        registered = not call.oneway and not call.handler.inline
        if call.cancelled or conn.closed:
            stats.add("cancelled")
            if registered:
                conn._unregister(call)
            return
        if call.deadline is not None and time.monotonic() > call.deadline:
            stats.add("expired")
            if registered:
                conn._unregister(call)
            return
        _local.call = call
        reply: _codec.Reply | _codec.Failure
        try:
            handler = call.handler
            if handler.by_name:
                args, kwargs = handler.convert(call.args, call.kwargs)
                result = handler.fn(*args, **kwargs)
            else:
                result = handler.fn(*call.args, **call.kwargs)
        except Exception as exc:
            if call.oneway:
                stats.add("failed")
                log.warning("rpc notification %s raised %r", call.handler.name, exc)
                return
            reply, outcome = _failure(call.id, exc), "failed"
        else:
            if call.oneway:
                stats.add("completed")
                return
            reply, outcome = _codec.Reply(call.id, result), "completed"
        finally:
            _local.call = None
            if registered:
                conn._unregister(call)
        if call.cancelled:
            stats.add2(outcome, 1, "cancelled", 1)
            return
        conn._reply(reply, outcome)

    # -- lifetime --
    def statistics(self) -> ServerStatistics:
        values = self._stats.snapshot()
        with self._conn_lock:
            active = len(self._connections)
            for conn in self._connections:
                for name, value in conn.reader_counts.items():
                    values[name] += value
        return ServerStatistics(connections_active=active, workers=self._pool.size, **values)

    @property
    def connections(self) -> list[Connection]:
        with self._conn_lock:
            return list(self._connections)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (clients get `PeerClosed`), stop the workers."""
        if self._closing:
            return
        self._closing = True
        for registry, thread in self._listeners:
            registry.close()
            thread.join(timeout)
        for conn in self.connections:
            conn.close(timeout)
        self._pool.stop(timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- client -------------------------------------------------------------------------------------


class _Default:
    def __repr__(self) -> str:
        return "<the client's default>"


DEFAULT = _Default()


class _Pending:
    __slots__ = ("id", "method", "deadline", "done", "value", "error", "future", "loop")

    def __init__(self, call_id: int, method: str, deadline: float | None,
                 future: asyncio.Future[Any] | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.id = call_id
        self.method = method
        self.deadline = deadline
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.future = future
        self.loop = loop

    def complete(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error, self.done = value, error, True
        if self.future is not None and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future, value, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class PendingCall:
    """A call in flight (from `Client.submit`): ``result()``, ``cancel()``, ``done``."""

    def __init__(self, client: Client, pending: _Pending) -> None:
        self._client = client
        self._pending = pending

    @property
    def id(self) -> int:
        return self._pending.id

    @property
    def done(self) -> bool:
        return self._pending.done

    def result(self, timeout: float | None | _Default = DEFAULT) -> Any:
        """The reply (or raise its error). ``timeout`` bounds this wait only; the call's own
        deadline still applies and, once reached, abandons the call."""
        limit = None if isinstance(timeout, _Default) or timeout is None else time.monotonic() + timeout
        return self._client._wait(self._pending, limit)

    def cancel(self) -> bool:
        """Give up on the call (the server skips it if it has not started). False if already done."""
        return self._client._cancel(self._pending)


_CLIENT_COUNTERS = tuple(f.name for f in dataclasses.fields(ClientStatistics) if f.name != "pending")


class Client:
    """Calls a `Server` over ``link``. ``timeout`` is the default per-call timeout (None: none)."""

    def __init__(self, link: Link, *, timeout: float | None = 30.0, max_frame: int = DEFAULT_MAX_FRAME,
                 on_close: Callable[[], None] | None = None) -> None:
        self._link = link
        self.description = link.description
        self.timeout = timeout
        self.max_frame = max_frame
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        # _lock is _cv's lock: `with self._lock` is the C-level form of `with self._cv` (cheaper)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}
        self._reader_busy = False
        self._sleepers = 0  # threads waiting on _cv (under _cv)
        self._async_reader: threading.Thread | None = None
        self._broken: BaseException | None = None
        self._closed = False
        self._abandoned: deque[int] = deque()
        self._abandoned_set: set[int] = set()
        self._reassembler = Reassembler(max_frame)
        # counters: each is changed only under the lock noted (so no lock of their own)
        self._counts = dict.fromkeys(_CLIENT_COUNTERS, 0)  # under _cv, except "bytes_sent"/"notifications"
        self._sent = [0, 0]  # [bytes_sent, notifications], under _send_lock

    @classmethod
    def connect(cls, region: Region, name: str = "rpc", *, timeout: float | None = 10.0,
                call_timeout: float | None = 30.0) -> Client:
        """Connect to the service ``name`` a `Server.listen` published in ``region`` (own buffer pair)."""
        link, _index, _alive = connect_slot(region, name, timeout=timeout)
        return cls(link, timeout=call_timeout)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("broken" if self._broken else "open")
        return f"<Client {self.description!r} {state}>"

    # -- calling --
    def call(self, method: str, /, *args: Any, timeout: float | None | _Default = DEFAULT, **kwargs: Any) -> Any:
        """Call ``method(*args, **kwargs)`` remotely and return its result (or raise its error).

        Raises `Timeout` after ``timeout`` s, `PeerDied` if the server died, `RemoteError` (or the
        re-raised built-in) if the handler raised, TypeError if an argument cannot be encoded.
        """
        pending = self._start(method, args, kwargs, self.timeout if isinstance(timeout, _Default) else timeout)
        return self._wait(pending, None)

    def submit(self, method: str, /, *args: Any, timeout: float | None | _Default = DEFAULT, **kwargs: Any) -> PendingCall:
        """Start a call and return at once; see `PendingCall`."""
        pending = self._start(method, args, kwargs, self.timeout if isinstance(timeout, _Default) else timeout)
        return PendingCall(self, pending)

    def notify(self, method: str, /, *args: Any, **kwargs: Any) -> None:
        """A one-way call: no reply, no error back (the server logs failures)."""
        self._check_usable()
        data = _codec.encode(_codec.Notify(method, args, kwargs))  # type: ignore[arg-type]
        self._send(data, self.timeout, notification=True)

    async def call_async(self, method: str, /, *args: Any, timeout: float | None | _Default = DEFAULT,
                         **kwargs: Any) -> Any:
        """`call` for asyncio: awaits the reply without blocking the loop; cancelling the task cancels the call."""
        loop = asyncio.get_running_loop()
        self._ensure_async_reader()
        t = self.timeout if isinstance(timeout, _Default) else timeout
        future: asyncio.Future[Any] = loop.create_future()
        call_id = next(self._ids)
        data = self._encode_request(call_id, method, args, kwargs, t)
        pending = _Pending(call_id, method, None if t is None else time.monotonic() + t, future, loop)
        with self._lock:
            self._check_usable()
            self._pending[call_id] = pending
            self._counts["calls"] += 1
        try:
            try:
                self._send(data, 0)
            except Timeout:  # the link is full: wait for room off the loop
                await loop.run_in_executor(None, self._send, data, t)
        except BaseException:
            with self._lock:
                self._pending.pop(call_id, None)
            raise
        try:
            if t is None:
                return await future
            return await asyncio.wait_for(future, t)
        except asyncio.TimeoutError:
            self._abandon(pending, "timeouts")
            raise Timeout(f"remote call {method!r} did not complete within {t} s") from None
        except asyncio.CancelledError:
            self._abandon(pending, "cancelled")
            raise

    def proxy(self, service: type[T], *, timeout: float | None | _Default = DEFAULT) -> T:
        """A typed stand-in for ``service`` whose `method` s call the server (see `Service`)."""
        return cast(T, _Proxy(self, service, timeout))

    # -- internals --
    def _check_usable(self) -> None:
        if self._closed:
            raise IpcError(f"client {self.description!r} is closed")
        if self._broken is not None:
            raise self._copy_error(self._broken, "")

    @staticmethod
    def _copy_error(error: BaseException, method: str) -> BaseException:
        where = f" (call {method!r})" if method else ""
        if isinstance(error, PeerDied):
            return PeerDied(f"{error}{where}", pid=error.pid)
        if isinstance(error, PeerClosed):
            return PeerClosed(f"{error}{where}")
        return IpcError(f"{error}{where}")

    def _encode_request(self, call_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                        timeout: float | None) -> bytes:
        if not isinstance(method, str):
            raise TypeError(f"a method name is a str, not {type(method).__name__}")
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError(f"timeout must be None or a non-negative number of seconds, not {timeout!r}")
        budget = 0 if timeout is None else max(1, int(timeout * 1e6))
        data = _codec.encode(_codec.Request(call_id, method, args, kwargs, budget))  # type: ignore[arg-type]
        if len(data) > self.max_frame:
            raise MessageTooLarge(f"the call's {len(data)} bytes exceed the {self.max_frame}-byte frame limit")
        return data

    def _send(self, data: bytes, timeout: float | None, *, notification: bool = False) -> None:
        with self._send_lock:
            try:
                link = self._link
                if len(data) <= link.max_message:  # the common case: one message, no chunking
                    link.send(data, timeout)
                else:
                    send_frame(link, data, timeout)
            except (PeerDied, PeerClosed) as exc:
                error: BaseException = exc
            else:
                sent = self._sent
                sent[0] += len(data)
                if notification:
                    sent[1] += 1
                return
        self._break(error)
        raise self._copy_error(error, "") from None

    def _start(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> _Pending:
        call_id = next(self._ids)
        data = self._encode_request(call_id, method, args, kwargs, timeout)
        pending = _Pending(call_id, method, None if timeout is None else time.monotonic() + timeout)
        with self._lock:
            if self._closed or self._broken is not None:
                self._check_usable()
            self._pending[call_id] = pending
            self._counts["calls"] += 1
        try:
            self._send(data, timeout)
        except Timeout:
            with self._lock:
                self._pending.pop(call_id, None)
                self._counts["timeouts"] += 1
            raise Timeout(f"remote call {method!r}: the server took no request within {timeout} s") from None
        except BaseException:
            with self._lock:
                self._pending.pop(call_id, None)
            raise
        return pending

    def _wait(self, p: _Pending, limit: float | None) -> Any:
        deadline = p.deadline if limit is None else (limit if p.deadline is None else min(limit, p.deadline))
        while True:
            expired = False
            with self._lock:
                while not p.done:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        expired = True
                        break
                    if not self._reader_busy and self._async_reader is None:
                        self._reader_busy = True
                        break
                    self._sleepers += 1
                    try:
                        self._cv.wait(_SLICE if left is None else min(left, _SLICE))
                    finally:
                        self._sleepers -= 1
                else:
                    return self._outcome(p)
            if expired:
                if p.deadline is not None and time.monotonic() >= p.deadline:
                    if self._abandon(p, "timeouts"):
                        raise Timeout(f"remote call {p.method!r} did not complete within its timeout")
                    continue  # it completed meanwhile
                raise Timeout(f"remote call {p.method!r} still runs (the wait's limit ran out)")
            # this thread is the reader until it has received one message or its time ran out
            data: bytes | None = None
            error: BaseException | None = None
            left = None if deadline is None else deadline - time.monotonic()
            try:
                data = self._link.receive(_SLICE if left is None else max(0.0, min(left, _SLICE)))
            except TimeoutError:
                pass
            except IpcError as exc:
                error = exc
            finally:
                with self._lock:
                    self._reader_busy = False
                    if data is not None:
                        self._on_message(data)
                    if error is not None:
                        self._break_locked(error)
                    if self._sleepers:  # Condition.notify_all costs a microsecond even with nobody to wake
                        self._cv.notify_all()

    def _outcome(self, p: _Pending) -> Any:
        if p.error is not None:
            raise p.error
        return p.value

    def _abandon(self, p: _Pending, counter: str) -> bool:
        with self._lock:
            if self._pending.pop(p.id, None) is None:
                return False
            self._abandoned.append(p.id)
            self._abandoned_set.add(p.id)
            while len(self._abandoned) > _ABANDONED_MEMORY:
                self._abandoned_set.discard(self._abandoned.popleft())
            p.complete(None, Timeout(f"remote call {p.method!r} was abandoned") if counter == "timeouts"
                       else IpcError(f"remote call {p.method!r} was cancelled"))
            self._counts[counter] += 1
        try:  # best effort, never blocks: the server skips the call if it has not started
            self._send(_codec.encode(_codec.Cancel(p.id)), 0)
        except (IpcError, TimeoutError):
            pass
        return True

    def _cancel(self, p: _Pending) -> bool:
        return self._abandon(p, "cancelled")

    def _on_message(self, data: bytes) -> None:
        """Handle one received message (lock held)."""
        counts = self._counts
        counts["bytes_received"] += len(data)
        try:
            frame = _codec.decode_to_client(data)
            if type(frame) is _codec.Reply and not self._reassembler.in_progress:  # the common case
                p = self._pending.pop(frame.id, None)
                if p is not None:
                    counts["completed"] += 1
                    p.complete(frame.result, None)
                    return
            if isinstance(frame, _codec.Chunk):
                whole = self._reassembler.feed(frame)
                if whole is None:
                    return
                frame = _codec.decode_to_client(whole)
                if isinstance(frame, _codec.Chunk):
                    raise ProtocolError("a chunk inside a chunked frame")
            elif self._reassembler.in_progress:
                self._reassembler.reset()
                counts["bad_frames"] += 1
                log.warning("rpc client %s: a frame interrupted a chunked frame (its pieces were dropped)",
                            self.description)
        except ProtocolError as exc:
            counts["bad_frames"] += 1
            log.warning("rpc client %s: %s", self.description, exc)
            return
        if isinstance(frame, (_codec.Reply, _codec.Failure)):
            p = self._pending.pop(frame.id, None)
            if p is None:
                if frame.id in self._abandoned_set:
                    counts["late_replies"] += 1
                else:
                    counts["unexpected_replies"] += 1
                    log.warning("rpc client %s: a reply for call %d, which this client never made (or answered twice)",
                                self.description, frame.id)
                return
            if isinstance(frame, _codec.Reply):
                counts["completed"] += 1
                p.complete(frame.result, None)
            else:
                counts["remote_errors"] += 1
                p.complete(None, _rebuild(frame))
        elif isinstance(frame, _codec.Bye):
            self._break_locked(PeerClosed(f"the server closed the link: {frame.reason}"))

    def _break(self, error: BaseException) -> None:
        with self._lock:
            self._break_locked(error)
            self._cv.notify_all()

    def _break_locked(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
        pending = list(self._pending.values())
        self._pending.clear()
        for p in pending:
            p.complete(None, self._copy_error(error, p.method))

    def _ensure_async_reader(self) -> None:
        if self._async_reader is not None:
            return
        with self._lock:
            if self._async_reader is not None:
                return
            self._check_usable()
            thread = threading.Thread(target=self._async_read_loop, name=f"rpc-reader {self.description}", daemon=True)
            self._async_reader = thread  # sync callers stop electing a reader from now on
        thread.start()

    def _async_read_loop(self) -> None:
        with self._lock:
            while self._reader_busy:  # a sync caller is reading: let it finish its turn
                self._sleepers += 1
                try:
                    self._cv.wait(_SLICE)
                finally:
                    self._sleepers -= 1
            self._reader_busy = True
        try:
            while not self._closed and self._broken is None:
                try:
                    data = self._link.receive(_SLICE)
                except TimeoutError:
                    continue
                except IpcError as exc:
                    self._break(exc)
                    return
                with self._lock:
                    self._on_message(data)
                    self._cv.notify_all()
        except Exception as exc:
            log.exception("rpc client %s: the reader failed", self.description)
            self._break(IpcError(f"the client's reader failed: {exc!r}"))

    # -- lifetime --
    def statistics(self) -> ClientStatistics:
        with self._lock:
            values = dict(self._counts)
            pending = len(self._pending)
        values["bytes_sent"], values["notifications"] = self._sent  # read without the send lock: a send may block
        return ClientStatistics(pending=pending, **values)

    @property
    def broken(self) -> BaseException | None:
        """The error that ended the link (`PeerDied`, `PeerClosed`, ...), or None while it works."""
        return self._broken

    def close(self) -> None:
        """Say goodbye to the server, fail pending calls, stop the reader (idempotent)."""
        if self._closed:
            return
        if self._broken is None:
            try:
                with self._send_lock:
                    self._link.send(_codec.encode(_codec.Bye("the client is closing")), 0.5)
            except (IpcError, TimeoutError):
                pass
        with self._lock:
            self._closed = True
            self._break_locked(IpcError(f"client {self.description!r} was closed"))
            self._cv.notify_all()
        if self._async_reader is not None and self._async_reader is not threading.current_thread():
            self._async_reader.join(5.0)
        self._link.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Proxy:
    """The object `Client.proxy` returns: attribute -> remote call (results rebuilt by type)."""

    def __init__(self, client: Client, service: type, timeout: float | None | _Default) -> None:
        self._client = client
        self._service = service
        self._timeout = timeout
        self._names = {attr: info.name for attr, _, info in _methods_of(service)}
        if not self._names:
            raise ValueError(f"{service.__name__} has no method marked with @method")

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        names = self.__dict__.get("_names", {})
        if attr not in names:
            raise AttributeError(f"{self._service.__name__} has no remote method {attr!r}")
        remote = names[attr]
        result_type = _hints(getattr(self._service, attr)).get("return")
        structured = _is_structured(result_type)
        client, timeout = self._client, self._timeout

        def call(*args: Any, **kwargs: Any) -> Any:
            result = client.call(remote, *args, timeout=timeout, **kwargs)
            return msgspec.convert(result, result_type) if structured else result

        call.__name__ = attr
        self.__dict__[attr] = call
        return call

    def __repr__(self) -> str:
        return f"<proxy of {self._service.__name__} over {self._client.description!r}>"
