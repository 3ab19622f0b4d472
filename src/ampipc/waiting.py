"""Wait on many objects at once: `wait_any` and `Selector`, over the buffers' own waiting words.

Theory of operation
-------------------
A blocked buffer side (see `_native.c`) announces itself in its ring's waiting word (``rx
waiting`` at header offset 196 for a reader, ``tx waiting`` at 192 for a writer), re-checks, and
sleeps on the futex of the index its peer publishes (``head`` at 64 for a reader, ``tail`` at 128
for a writer). The peer publishes its index, fences, and wakes that futex only if the waiting word
is set, clearing it (it is the peer, or with the hsem/control/toggle strategies the peer's
interrupt handler running ``send_completed_from_isr`` in *this* process's dispatcher, that does
so). Waiting on many objects is the same protocol over many words:

1. check every object without announcing (the fast path: something is ready, no store at all);
2. for each object, read the index word it sleeps on (``seen``), store its waiting word = 1
   (sequentially consistent), then re-check it from sequentially consistent loads of head/tail;
3. if none is ready, sleep on every index word at once with ``futex_waitv`` (`ampipc._waitv`),
   each with its ``seen`` value: a publication after step 2's read changes the word, so the kernel
   returns at once instead of sleeping, and one after the sleep began wakes it. No wake-up is lost;
4. clear the waiting words that were stored (as the core does after its own sleep), re-check.

Every sleep is a bounded slice (100 ms): after it the peers' liveness is checked, so a buffer
whose peer died is reported ready (its receive then drains what is left and raises `PeerDied`),
and a notification lost to any cause costs latency, never a hang. A buffer whose peer closed its
side is reported ready too (its receive drains, then raises `PeerClosed`).

Readiness (what "ready" promises: the next non-blocking call does not find the object empty/full,
or raises): a message buffer is READABLE when a message is there; a stream buffer when at least
its trigger level of bytes is there (the level at which a writer wakes a reader, as SO_RCVLOWAT);
either is WRITABLE when something fits (a message buffer: a message of one byte at least). An
`Ipc` `Channel` is readable/writable as its incoming/outgoing buffer; an `Ipc` as a whole when any
of its channels is. An RPMsg `Endpoint` is readable when a message is queued for it (or its link
or peer went away). A hardware `Core` is readable when its event register is set (a SEV arrived;
`Core.try_wfe` consumes it).

Fallbacks (documented, never an error): more words than the kernel's 128 are waited on in chunks
(see `_waitv.c`, one native thread per extra 127 words); without futex_waitv (kernels before 5.16)
the words are compared every millisecond while sleeping on one of them.

Single reader, single writer: a buffer waited on for READABLE must not also have another thread of
this process blocked in ``receive`` on it (they would be two readers); the same for WRITABLE.
RPMsg endpoints have no shared waiting word (their messages are queued in process memory by the
link's I/O thread); their delivery path is extended once per endpoint to bump a process-local
futex word that the wait includes (a link that closes, which delivers nothing, is noticed at the
next 100 ms re-check).
"""

from __future__ import annotations

import math
import selectors
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from . import _layout as L
from . import _native, _waitv
from .buffers import MessageBuffer, StreamBuffer
from .errors import IpcError, PeerDied, RegionClosed
from .hw import _regs as R
from .hw.hardware import Core
from .ipc import Ipc
from .rpmsg.endpoints import Endpoint

__all__ = [
    "READABLE",
    "WRITABLE",
    "Channel",
    "Selector",
    "SelectorKey",
    "Waitable",
    "wait_any",
    "futex_waitv_available",
]

READABLE: int = selectors.EVENT_READ
"""The object has something to read (or its receive would raise: peer closed or died)."""
WRITABLE: int = selectors.EVENT_WRITE
"""Something fits in the object now (or its send would raise)."""
_ALL_EVENTS = READABLE | WRITABLE
SLICE = 0.1
"""The longest one sleep lasts before liveness is re-checked (the core's WAIT_SLICE)."""

Word = tuple[Any, int, int]
"""(buffer-protocol object, byte offset, expected value): one futex word to sleep on."""


def futex_waitv_available() -> bool:
    """True if the kernel has futex_waitv (Linux 5.16+); otherwise waits use the documented fallback."""
    return _waitv.available()


@dataclass(frozen=True)
class Channel:
    """Channel `channel` of an `Ipc`, as a waitable: readable by its incoming buffer, writable by its outgoing one."""

    ipc: Ipc
    channel: int

    def __post_init__(self) -> None:
        if not isinstance(self.ipc, Ipc):
            raise TypeError(f"Channel needs an Ipc, not {type(self.ipc).__name__}")
        self.ipc.rx_buffer(self.channel)  # validates the channel number

    def receive(self, timeout: float | None = None) -> bytes:
        return self.ipc.receive(self.channel, timeout=timeout)

    def try_receive(self) -> bytes | None:
        return self.ipc.try_receive(self.channel)

    def send(self, data: Any, timeout: float | None = None) -> None:
        self.ipc.send(self.channel, data, timeout=timeout)


_OFF_PREFIX = 20  # u32 prefix size, a constant of the header's line 0 (see ampipc._layout)


# ---- sources: one per waitable object, knowing its words ------------------------------------------


class _Source(Protocol):
    def ready(self, events: int) -> int: ...
    def arm(self, events: int, words: list[Word]) -> None: ...
    def disarm(self, events: int) -> None: ...
    def slice_check(self, events: int) -> int: ...
    def wake_hint(self, events: int) -> int: ...


class _RingSource:
    """A MessageBuffer or StreamBuffer: the same words and protocol as the C core's blocking calls."""

    __slots__ = ("buffer", "mapping", "head", "tail", "rx_flag", "tx_flag", "trigger", "length", "is_message", "room")

    def __init__(self, buffer: MessageBuffer | StreamBuffer) -> None:
        self.buffer = buffer
        self.mapping: _native.Mapping = buffer.region.mapping
        base = buffer.offset
        self.head = base + L.RING_OFF_HEAD
        self.tail = base + L.RING_OFF_TAIL
        self.rx_flag = base + L.RING_OFF_RX_WAITING
        self.tx_flag = base + L.RING_OFF_TX_WAITING
        self.trigger = base + L.RING_OFF_TRIGGER
        self.length = buffer.capacity + 1
        self.is_message = isinstance(buffer, MessageBuffer)
        # the message length prefix is 1, 2, 4 or 8 bytes (a creation option); writable = a 1-byte message fits
        prefix = self.mapping.load_u32(base + _OFF_PREFIX) if self.is_message else 0
        self.room = prefix if prefix in L.PREFIX_WIDTHS else L.PREFIX_SIZE
        if not self.is_message:
            self.room = 0
        self.mapping.load_u32(self.head)  # RegionClosed now, at registration, for a closed region

    def ready(self, events: int) -> int:
        if self.buffer.closed:
            raise RegionClosed(f"buffer {self.buffer.name!r} was closed")
        m = self.mapping
        head = m.load_u32(self.head)
        tail = m.load_u32(self.tail)
        length = self.length
        if head >= length or tail >= length:
            return events  # corrupt: the operation itself reports it (CorruptRegion)
        mask = 0
        if events & READABLE:
            avail = head - tail if head >= tail else length + head - tail
            if self.is_message:
                need = 1
            else:
                trigger = m.load_u32(self.trigger)
                need = 1 if trigger == 0 or trigger >= length else trigger
            if avail >= need or _peer_closed(self.buffer, reading=True):
                mask |= READABLE
        if events & WRITABLE:
            spaces = (tail - head - 1) if tail > head else length + tail - head - 1
            if spaces > self.room or _peer_closed(self.buffer, reading=False):
                mask |= WRITABLE
        return mask

    def arm(self, events: int, words: list[Word]) -> None:
        m = self.mapping
        if events & READABLE:
            seen = m.load_u32(self.head)
            m.store_u32(self.rx_flag, 1)
            words.append((m, self.head, seen))
        if events & WRITABLE:
            seen = m.load_u32(self.tail)
            m.store_u32(self.tx_flag, 1)
            words.append((m, self.tail, seen))

    def disarm(self, events: int) -> None:
        m = self.mapping
        if m.closed:
            return
        if events & READABLE:
            m.store_u32(self.rx_flag, 0)
        if events & WRITABLE:
            m.store_u32(self.tx_flag, 0)

    def wake_hint(self, events: int) -> int:
        """How many waiting readers the contents can satisfy at most (one per length prefix held)."""
        if events != READABLE or not self.is_message:
            return 1
        m = self.mapping
        head, tail = m.load_u32(self.head), m.load_u32(self.tail)
        avail = (head - tail if head >= tail else self.length + head - tail) if max(head, tail) < self.length else 0
        return max(1, avail // max(1, self.room))

    def slice_check(self, events: int) -> int:
        """After a sleep slice ran out: a side whose peer died is ready (its call raises PeerDied)."""
        mask = 0
        for role, event in ((1, READABLE), (0, WRITABLE)):
            if events & event:
                try:
                    self.buffer._check_peer(role)
                except PeerDied:
                    mask |= event
        return mask




def _peer_closed(buffer: MessageBuffer | StreamBuffer, *, reading: bool) -> bool:
    """Whether the other side closed in an orderly way: the writer (for a reader) or the reader."""
    return bool(buffer.writer_closed if reading else buffer.reader_closed)


class _ChannelSource:
    __slots__ = ("rx", "tx")

    def __init__(self, ipc: Ipc, channels: Iterable[int]) -> None:
        if ipc.closed:
            raise RegionClosed(f"channels {ipc.name!r} are closed")
        chans = list(channels)
        self.rx = [_RingSource(ipc.rx_buffer(c)) for c in chans]
        self.tx = [_RingSource(ipc.tx_buffer(c)) for c in chans]

    def ready(self, events: int) -> int:
        mask = 0
        if events & READABLE and any(s.ready(READABLE) for s in self.rx):
            mask |= READABLE
        if events & WRITABLE and any(s.ready(WRITABLE) for s in self.tx):
            mask |= WRITABLE
        return mask

    def arm(self, events: int, words: list[Word]) -> None:
        if events & READABLE:
            for s in self.rx:
                s.arm(READABLE, words)
        if events & WRITABLE:
            for s in self.tx:
                s.arm(WRITABLE, words)

    def disarm(self, events: int) -> None:
        if events & READABLE:
            for s in self.rx:
                s.disarm(READABLE)
        if events & WRITABLE:
            for s in self.tx:
                s.disarm(WRITABLE)

    def wake_hint(self, events: int) -> int:
        return 1

    def slice_check(self, events: int) -> int:
        mask = 0
        if events & READABLE and any(s.slice_check(READABLE) for s in self.rx):
            mask |= READABLE
        if events & WRITABLE and any(s.slice_check(WRITABLE) for s in self.tx):
            mask |= WRITABLE
        return mask


class _CoreEventSource:
    """A core's SEV event register: SEV stores 1 and wakes the word when it was 0 (no announcement needed)."""

    __slots__ = ("mapping", "word")

    def __init__(self, core: Core) -> None:
        self.mapping: _native.Mapping = core._mapping
        self.word = core._block + R.C_EVENT
        self.mapping.load_u32(self.word)  # RegionClosed now rather than in the wait

    def ready(self, events: int) -> int:
        return READABLE if events & READABLE and self.mapping.load_u32(self.word) else 0

    def arm(self, events: int, words: list[Word]) -> None:
        if events & READABLE:
            words.append((self.mapping, self.word, 0))

    def disarm(self, events: int) -> None:
        pass

    def slice_check(self, events: int) -> int:
        return 0

    def wake_hint(self, events: int) -> int:
        return 1


class _EndpointSignal:
    """A process-local futex word an endpoint's delivery bumps: [0] sequence, [4] someone waits."""

    __slots__ = ("word", "__weakref__")

    def __init__(self) -> None:
        self.word = bytearray(8)

    def bump(self) -> None:
        _waitv.fetch_add(self.word, 0, 1)
        if _waitv.load(self.word, 4):
            _waitv.wake(self.word, 0)


_endpoint_signals: weakref.WeakKeyDictionary[Endpoint, _EndpointSignal] = weakref.WeakKeyDictionary()
_endpoint_lock = threading.Lock()


def _signal_for(endpoint: Endpoint) -> _EndpointSignal:
    with _endpoint_lock:
        signal = _endpoint_signals.get(endpoint)
        if signal is None:
            signal = _endpoint_signals[endpoint] = _EndpointSignal()
            deliver = endpoint._deliver
            signal_ref = weakref.ref(signal)

            def deliver_and_signal(src: int, payload: bytes) -> None:
                deliver(src, payload)
                s = signal_ref()
                if s is not None:
                    s.bump()

            endpoint._deliver = deliver_and_signal  # type: ignore[method-assign]
        return signal


class _EndpointSource:
    __slots__ = ("endpoint", "signal")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.signal = _signal_for(endpoint)

    def ready(self, events: int) -> int:
        if not events & READABLE:
            return 0
        e = self.endpoint
        if e.pending or e.destroyed or e.peer_unbound:
            return READABLE
        try:
            e._check_link()
        except IpcError:
            return READABLE
        return 0

    def arm(self, events: int, words: list[Word]) -> None:
        if events & READABLE:
            seen = _waitv.load(self.signal.word, 0)
            _waitv.fetch_add(self.signal.word, 4, 1)
            words.append((self.signal.word, 0, seen))

    def disarm(self, events: int) -> None:
        if events & READABLE:
            _waitv.fetch_add(self.signal.word, 4, 0xFFFFFFFF)  # -1

    def slice_check(self, events: int) -> int:
        return 0

    def wake_hint(self, events: int) -> int:
        return max(1, self.endpoint.pending)


Waitable = MessageBuffer | StreamBuffer | Channel | Ipc | Endpoint | Core
"""What `wait_any` and `Selector` accept."""
_WAITABLE_TYPES = (MessageBuffer, StreamBuffer, Channel, Ipc, Endpoint, Core)


def _source_for(obj: object) -> _Source:
    if isinstance(obj, (MessageBuffer, StreamBuffer)):
        return _RingSource(obj)
    if isinstance(obj, Channel):
        return _ChannelSource(obj.ipc, [obj.channel])
    if isinstance(obj, Ipc):
        return _ChannelSource(obj, range(obj.channels))
    if isinstance(obj, Endpoint):
        return _EndpointSource(obj)
    if isinstance(obj, Core):
        return _CoreEventSource(obj)
    raise TypeError(
        f"{obj!r} ({type(obj).__name__}) is not waitable: expected a MessageBuffer, StreamBuffer, "
        "ampipc.waiting.Channel, Ipc, RPMsg Endpoint or hardware Core"
    )


def _check_events(events: object, obj: object) -> int:
    if isinstance(events, bool) or not isinstance(events, int) or events & ~_ALL_EVENTS or not events:
        raise ValueError(f"events for {obj!r} must be READABLE, WRITABLE or both, not {events!r}")
    if isinstance(obj, (Endpoint, Core)) and events & WRITABLE:
        raise ValueError(f"{type(obj).__name__} objects can only be waited on for READABLE")
    return events


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    return time.monotonic() + float(timeout)


def wait_entries(
    entries: list[tuple[_Source, int]],
    deadline: float | None,
    *,
    extra_words: list[Word] | None = None,
    fallback: bool = False,
) -> list[tuple[int, int]]:
    """The (index, ready mask) of the entries that are ready, waiting until `deadline` (monotonic).

    Returns an empty list at the deadline, or as soon as one of `extra_words` no longer holds its
    expected value or is woken (the asyncio waker's control word). The machinery of this module;
    public callers use `wait_any` and `Selector`. Buffers of one region take the C path
    (`_waitv.wait_rings`: the same protocol, one call per slice); any other mix this Python one.
    """
    batch = _ring_batch(entries)
    if batch is not None:
        return _wait_ring_batch(entries, batch[0], batch[1], deadline, extra_words, fallback)
    while True:
        ready = [(i, r) for i, (s, ev) in enumerate(entries) if (r := s.ready(ev))]
        if ready:
            return ready
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return []
        words: list[Word] = list(extra_words or ())
        armed: list[tuple[_Source, int]] = []
        woken: int | None = None
        try:
            for s, ev in entries:
                s.arm(ev, words)
                armed.append((s, ev))
            ready = [(i, r) for i, (s, ev) in enumerate(entries) if (r := s.ready(ev))]
            if ready:
                return ready
            if not words:  # nothing can ever wake us: sleep out the timeout
                time.sleep(SLICE if deadline is None else max(0.0, min(SLICE, deadline - now)))
                continue
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - now))
            woken = _waitv.wait(words, left, fallback)
        finally:
            for s, ev in armed:
                s.disarm(ev)
        if extra_words and woken is not None and 0 <= woken < len(extra_words):
            return []
        if extra_words and any(_waitv.load(obj, off) != expected for obj, off, expected in extra_words):
            return []
        if woken is None:
            dead = [(i, r) for i, (s, ev) in enumerate(entries) if (r := s.slice_check(ev))]
            if dead:
                return dead


def _ring_batch(entries: list[tuple[_Source, int]]) -> tuple[_native.Mapping, list[tuple[int, int]]] | None:
    """(mapping, [(header offset, events)]) when every entry is a buffer of one region: the C path."""
    mapping = None
    rings = []
    for source, events in entries:
        if not isinstance(source, _RingSource):
            return None
        if mapping is None:
            mapping = source.mapping
        elif source.mapping is not mapping:
            return None
        rings.append((source.buffer.offset, events))
    return None if mapping is None else (mapping, rings)


def _wait_ring_batch(
    entries: list[tuple[_Source, int]],
    mapping: _native.Mapping,
    rings: list[tuple[int, int]],
    deadline: float | None,
    extra_words: list[Word] | None,
    fallback: bool,
    enabled: bytearray | None = None,
) -> list[tuple[int, int]]:
    """`wait_entries` for buffers of one region: announce, re-check and sleep in one C call per slice.

    `enabled` (one byte per entry, 0: leave it out of this wait) lets a caller that keeps one list
    switch entries off and on without rebuilding it (the asyncio waker).
    """
    extra = extra_words or []
    buffers = [s.buffer for s, _ in entries if isinstance(s, _RingSource)]
    last_check = time.monotonic()
    while True:
        for buffer in buffers:  # a buffer object closed meanwhile (its region may still be open)
            if buffer.closed:
                raise RegionClosed(f"buffer {buffer.name!r} was closed")
        now = time.monotonic()
        left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - now))
        ready = _waitv.wait_rings(mapping, rings, extra, left, fallback, enabled)  # RegionClosed once the region closed
        if ready:
            return ready
        if extra and any(_waitv.load(obj, off) != expected for obj, off, expected in extra):
            return []
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return []
        if now - last_check >= SLICE:
            last_check = now
            dead = [
                (i, r) for i, (s, ev) in enumerate(entries) if (enabled is None or enabled[i]) and (r := s.slice_check(ev))
            ]
            if dead:
                return dead


def _normalise(waitables: Iterable[object]) -> tuple[list[object], list[tuple[_Source, int]]]:
    """Merge duplicate objects (their events or-ed together) and build one source per object."""
    # a buffer is iterable itself (its messages): taken for a list of waitables it would block forever
    if isinstance(waitables, (str, bytes, *_WAITABLE_TYPES)) or not isinstance(waitables, Iterable):
        raise TypeError(
            f"wait_any needs an iterable of waitables (a list), not {type(waitables).__name__}; "
            "for one object write wait_any([obj])"
        )
    order: list[object] = []
    masks: dict[int, int] = {}
    for item in waitables:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"{item!r}: a waitable with events is an (object, events) pair")
            obj, events = item
        else:
            obj, events = item, READABLE
        events = _check_events(events, obj)
        key = id(obj)
        if key not in masks:
            order.append(obj)
            masks[key] = 0
        masks[key] |= events
    entries = [(_source_for(obj), masks[id(obj)]) for obj in order]
    return order, entries


def wait_any(
    waitables: Iterable[object], timeout: float | None = None, *, fallback: bool = False
) -> list[Any]:
    """Wait until at least one of `waitables` is ready; return the ready ones, in the order given.

    Each item is a waitable (waited on for READABLE) or an ``(object, events)`` pair with events
    READABLE, WRITABLE or both. Returns ``[]`` at the timeout (None: wait forever; 0: just check).
    Raises `RegionClosed` if an object's region (or an Ipc) is closed, TypeError naming an object
    that is not waitable. Any number of objects: beyond the kernel's 128 words the documented
    fallback applies (`fallback=True` forces the no-futex_waitv fallback, for tests).
    """
    deadline = _deadline(timeout)
    order, entries = _normalise(waitables)
    if not entries:
        raise ValueError("wait_any needs at least one waitable")
    return [order[i] for i, _ in wait_entries(entries, deadline, fallback=fallback)]


class SelectorKey(NamedTuple):
    """What `Selector.register` returns and `select` reports: the object, its events, your data."""

    obj: Any
    events: int
    data: Any


class Selector:
    """Repeated waits on a changing set of waitables, in the spirit of `selectors`.

    ``register(obj, events=READABLE, data=None)``, ``unregister(obj)``, ``modify(obj, events, data)``,
    ``select(timeout=None) -> [(key, ready_events)]``, ``get_key(obj)``, ``get_map()``, ``close()``.
    Objects are identified by identity. Not thread-safe: one thread uses a selector.
    """

    def __init__(self, *, fallback: bool = False) -> None:
        self._keys: dict[int, SelectorKey] = {}
        self._sources: dict[int, _Source] = {}
        self._fallback = fallback
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the selector is closed")

    def register(self, obj: object, events: int = READABLE, data: Any = None) -> SelectorKey:
        """Watch `obj` for `events`; KeyError if it is registered already."""
        self._check_open()
        events = _check_events(events, obj)
        if id(obj) in self._keys:
            raise KeyError(f"{obj!r} is already registered")
        source = _source_for(obj)
        key = SelectorKey(obj, events, data)
        self._keys[id(obj)] = key
        self._sources[id(obj)] = source
        return key

    def unregister(self, obj: object) -> SelectorKey:
        """Stop watching `obj`; KeyError if it is not registered."""
        self._check_open()
        try:
            key = self._keys.pop(id(obj))
        except KeyError:
            raise KeyError(f"{obj!r} is not registered") from None
        del self._sources[id(obj)]
        return key

    def modify(self, obj: object, events: int, data: Any = None) -> SelectorKey:
        """Change the events (and data) of a registered object."""
        self._check_open()
        if id(obj) not in self._keys:
            raise KeyError(f"{obj!r} is not registered")
        events = _check_events(events, obj)
        key = self._keys[id(obj)] = SelectorKey(obj, events, data)
        return key

    def get_key(self, obj: object) -> SelectorKey:
        self._check_open()
        try:
            return self._keys[id(obj)]
        except KeyError:
            raise KeyError(f"{obj!r} is not registered") from None

    def get_map(self) -> Mapping[int, SelectorKey]:
        """The registered keys by ``id(obj)`` (read-only view)."""
        from types import MappingProxyType

        return MappingProxyType(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Wait until a registered object is ready; its (key, ready events), or [] at the timeout.

        With nothing registered it sleeps out the timeout (forever if None raises ValueError).
        """
        self._check_open()
        deadline = _deadline(timeout)
        if not self._keys:
            if deadline is None:
                raise ValueError("select() with nothing registered and no timeout would never return")
            time.sleep(max(0.0, deadline - time.monotonic()))
            return []
        keys = list(self._keys.values())
        entries = [(self._sources[id(k.obj)], k.events) for k in keys]
        return [(keys[i], mask) for i, mask in wait_entries(entries, deadline, fallback=self._fallback)]

    def close(self) -> None:
        self._keys.clear()
        self._sources.clear()
        self._closed = True

    def __enter__(self) -> Selector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
