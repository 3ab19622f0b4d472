"""The shared interface of the notification strategies, and the event numbering they all use.

Theory of operation
-------------------
A data buffer has one writer core and one reader core. Two *events* belong to it: DATA_SENT
(raised by the writer after a send; the reader's side must call `send_completed_from_isr()`, which
wakes a blocked reader) and SPACE_FREED (raised by the reader after a receive; the writer's side
must call `receive_completed_from_isr()`, which wakes a blocked writer). An event travels from the
core that raises it to the other core, so each ordered pair of cores (a *direction*) has its own set
of events. `EventMap` numbers them densely per direction, in (buffer id, kind) order: index *i* of a
direction is bit ``i % 32`` of word ``i // 32``. Both cores build the same map from the same buffer
list, so the numbering never travels through shared memory.

A strategy object lives in one process and acts for one core (the *local* core). ``install()``
replaces the completion hooks of the local side of every data buffer (the writer's send hook, the
reader's receive hook) and registers the interrupt handler that turns incoming events into wake-ups;
``uninstall()`` restores the default hooks and removes the handler. Shared state a strategy needs
(control buffers, toggle words) is laid out once by the initialising core with ``prepare()`` and found
again by name with the constructor.

Every wake-up is an optimisation: a blocked buffer call re-checks its condition every 100 ms on its
own, so an event lost to any cause costs latency, never a hang.

The fixed algorithms (toggle, control) also run in the C core (`ampipc._native.Notifier` for the
hooks, `TaskIsr` for the handler, which a task blocked on one of the core's buffers services itself
while it waits); these Python classes stay their readable reference, run by the dispatcher for every
case the C half leaves to it, and the statistics add up both halves.

This module is pure (no shared memory, no threads): the event map can be tested on its own.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

from .. import _native
from ..buffers import MessageBuffer, StreamBuffer

if TYPE_CHECKING:
    from ..hw import Core
    from ..region import Region

__all__ = [
    "DEFAULT_IRQ_LINE",
    "DataBuffer",
    "EndpointSpec",
    "ErrorCallback",
    "EventKind",
    "EventMap",
    "Strategy",
    "StrategyOptions",
    "WORD_AND",
    "WORD_CAS",
    "WORD_LOAD",
    "WORD_OR",
    "WORD_XOR",
    "bits_of",
]

AnyBuffer = MessageBuffer | StreamBuffer
_log = logging.getLogger("ampipc.notify")
ErrorCallback = Callable[[str, int], None]
"""``callback(message, buffer_id)``: a strategy reports a problem it cannot raise (it runs in a hook or an ISR)."""

# The operations of `_native.Mapping.data_word_u32`: a strategy's shared words (toggle words, control
# pending words) are firmware data, so on a chip region they go through the CM7 cache model.
WORD_LOAD, WORD_OR, WORD_XOR, WORD_AND, WORD_CAS = range(5)

DEFAULT_IRQ_LINE = 4
"""The interrupt line the one-interrupt strategies (control, toggle) ring: the first application line."""


class EventKind(IntEnum):
    """What happened to a data buffer; the value is the one carried in control records."""

    DATA_SENT = 0
    SPACE_FREED = 1


@dataclass(frozen=True)
class EndpointSpec:
    """A data buffer as the strategies see it, without the buffer object: id and the two cores."""

    buffer_id: int
    writer: str
    reader: str

    def source_of(self, kind: EventKind) -> str:
        """The core that raises `kind` for this buffer."""
        return self.writer if kind is EventKind.DATA_SENT else self.reader

    def destination_of(self, kind: EventKind) -> str:
        """The core that handles `kind` for this buffer."""
        return self.reader if kind is EventKind.DATA_SENT else self.writer


@dataclass(frozen=True)
class DataBuffer:
    """A data buffer attached in this process, with its id and its writer and reader cores."""

    spec: EndpointSpec
    buffer: AnyBuffer

    @property
    def buffer_id(self) -> int:
        return self.spec.buffer_id


@dataclass(frozen=True)
class StrategyOptions:
    """Parameters both cores must agree on (the channel descriptor stores them in shared memory).

    ``irq_line``: the doorbell line of the control and toggle strategies. ``control_records``: the
    capacity of each control buffer in records (0: two per data buffer). ``hsem_base``: the first HSEM
    id the hsem strategy may use (ids below it are reserved; 0 is the boot semaphore).
    """

    irq_line: int = DEFAULT_IRQ_LINE
    control_records: int = 0
    hsem_base: int = 1

    def __post_init__(self) -> None:
        if not 4 <= self.irq_line <= 31:
            raise ValueError(f"irq_line must be an application interrupt line, 4..31, not {self.irq_line}")
        if not 0 <= self.control_records <= 1 << 20:
            raise ValueError(f"control_records must be 0 (default) to 2**20, not {self.control_records}")
        if not 1 <= self.hsem_base <= 31:
            raise ValueError(f"hsem_base must be 1..31 (semaphore 0 is the boot semaphore), not {self.hsem_base}")


def bits_of(mask: int) -> Iterator[int]:
    """The indices of the set bits of `mask`, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class EventMap:
    """The dense per-direction numbering of the events of a set of data buffers (pure)."""

    def __init__(self, endpoints: Sequence[EndpointSpec]) -> None:
        ids = [e.buffer_id for e in endpoints]
        if len(set(ids)) != len(ids):
            raise ValueError("buffer ids must be unique")
        for e in endpoints:
            if e.buffer_id < 0 or e.buffer_id >= 1 << 32:
                raise ValueError(f"a buffer id must fit in 32 bits, not {e.buffer_id}")
            if e.writer == e.reader:
                raise ValueError(f"buffer {e.buffer_id}: writer and reader must be different cores ({e.writer!r})")
        self.endpoints: tuple[EndpointSpec, ...] = tuple(sorted(endpoints, key=lambda e: e.buffer_id))
        self._by_id = {e.buffer_id: e for e in self.endpoints}
        events: dict[tuple[str, str], list[tuple[int, EventKind]]] = {}
        for e in self.endpoints:
            for kind in EventKind:
                events.setdefault((e.source_of(kind), e.destination_of(kind)), []).append((e.buffer_id, kind))
        self._events = {d: tuple(v) for d, v in sorted(events.items())}
        self._index = {ev: i for evs in self._events.values() for i, ev in enumerate(evs)}

    @property
    def directions(self) -> tuple[tuple[str, str], ...]:
        """Every (source core, destination core) pair that carries at least one event, sorted."""
        return tuple(self._events)

    @property
    def cores(self) -> tuple[str, ...]:
        return tuple(sorted({c for d in self._events for c in d}))

    def endpoint(self, buffer_id: int) -> EndpointSpec:
        try:
            return self._by_id[buffer_id]
        except KeyError:
            raise KeyError(f"no data buffer with id {buffer_id}") from None

    def events(self, source: str, destination: str) -> tuple[tuple[int, EventKind], ...]:
        """The events of one direction, in index order (empty if none)."""
        return self._events.get((source, destination), ())

    def index(self, buffer_id: int, kind: EventKind) -> int:
        """The index of an event within its direction."""
        return self._index[(buffer_id, kind)]

    def direction_of(self, buffer_id: int, kind: EventKind) -> tuple[str, str]:
        e = self.endpoint(buffer_id)
        return e.source_of(kind), e.destination_of(kind)

    def word_count(self, source: str, destination: str) -> int:
        """The 32-bit words a bit set over one direction's events needs (at least one)."""
        return max(1, (len(self.events(source, destination)) + 31) // 32)

    def locate(self, buffer_id: int, kind: EventKind) -> tuple[int, int]:
        """(word index, bit mask) of an event within its direction."""
        i = self.index(buffer_id, kind)
        return i // 32, 1 << (i % 32)

    def event_at(self, source: str, destination: str, word: int, bit: int) -> tuple[int, EventKind]:
        """The event that owns `bit` (0..31) of `word` in a direction; IndexError if none."""
        evs = self.events(source, destination)
        i = word * 32 + bit
        if not 0 <= bit < 32 or word < 0 or i >= len(evs):
            raise IndexError(f"no event at word {word} bit {bit} of direction {source}->{destination}")
        return evs[i]

    def valid_mask(self, source: str, destination: str, word: int) -> int:
        """The bits of `word` that belong to an event."""
        n = len(self.events(source, destination)) - word * 32
        return 0 if n <= 0 else (1 << min(n, 32)) - 1


@dataclass
class StrategyCounters:
    """Counters one strategy object keeps in its own process (what this core saw)."""

    events_raised: int = 0
    events_coalesced: int = 0
    doorbells: int = 0
    interrupts: int = 0
    events_handled: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {
            "events_raised": self.events_raised,
            "events_coalesced": self.events_coalesced,
            "doorbells": self.doorbells,
            "interrupts": self.interrupts,
            "events_handled": self.events_handled,
            "errors": self.errors,
        }
        d.update(self.extra)
        return d


class Strategy(ABC):
    """A way for one core to tell another that a data buffer's send or receive completed."""

    name: ClassVar[str]

    def __init__(
        self,
        region: Region,
        prefix: str,
        core: Core,
        buffers: Sequence[DataBuffer],
        options: StrategyOptions = StrategyOptions(),
        *,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self.region = region
        self.prefix = prefix
        self.core = core
        self.options = options
        self.on_error = on_error
        self.buffers: tuple[DataBuffer, ...] = tuple(buffers)
        self.event_map = EventMap([b.spec for b in self.buffers])
        self._by_id: dict[int, DataBuffer] = {b.buffer_id: b for b in self.buffers}
        self.counters = StrategyCounters()
        self.native_counters = _native.StrategyCounters()
        self._task_isr: _native.TaskIsr | None = None
        self.installed = False
        if core.name not in self.event_map.cores:
            raise ValueError(f"core {core.name!r} neither writes nor reads any of the buffers")
        self._attach_shared()

    def _attach_shared(self) -> None:  # noqa: B027 - a hook with a default, not an abstract method
        """Find and validate the shared state `prepare` laid out. Default: there is none."""

    @classmethod
    def prepare(cls, region: Region, prefix: str, endpoints: Sequence[EndpointSpec], options: StrategyOptions) -> None:
        """Lay out the shared state this strategy needs (on the initialising core, once). Default: none."""
        EventMap(endpoints)  # validates

    @abstractmethod
    def install(self) -> None:
        """Replace the local side's completion hooks and register the local interrupt handler."""

    def uninstall(self) -> None:
        """Undo `install` (idempotent): the default hooks come back, then the interrupt is let go."""
        if not self.installed:
            return
        self._restore_default_hooks()
        for b, _kind in self._incoming():
            b.buffer._set_isr(None)
        self._release_interrupt()
        self.installed = False

    def _release_interrupt(self) -> None:  # noqa: B027 - a hook with a default, not an abstract method
        """Let go of whatever interrupt `install` claimed. Default: none."""

    def statistics(self) -> dict[str, int]:
        """What this core's side of the strategy counted (events raised, coalesced, handled, errors...).

        Both halves add up: the Python reference's counts and the C core's (``serviced_by_task``: the
        interrupts a blocked task served itself; ``doorbells_skipped``: space-freed events not raised
        because no writer waited; ``fallbacks``: events the C hook handed to the Python one).
        """
        stats = self.counters.as_dict()
        for key, value in self.native_counters.as_dict().items():
            stats[key] = stats.get(key, 0) + value
        return stats

    def _line_words(self, core: str) -> tuple[int, int, int]:
        """(pending-lines word, raised counter, handled counter) offsets of `core`'s interrupt lines."""
        from ..hw import _regs as R

        hw = self.core.hardware
        block = hw._base + R.core_block(hw.core_info(core).index)
        return block + R.C_PENDING, block + R.C_RAISED, block + R.C_HANDLED

    def _reader_waits(self, buffer: AnyBuffer) -> bool:
        """Whether `buffer`'s reader announced that it waits (the C hooks' coalesced-event check)."""
        from .. import _layout as L

        return self.region.mapping.load_u32(buffer.offset + L.RING_OFF_RX_WAITING) != 0

    def _line_unwoken(self, core: str) -> int:
        """Offset of `core`'s unwoken-lines word (lines a C hook raised without waking anyone)."""
        from ..hw import _regs as R

        hw = self.core.hardware
        return hw._base + R.lines_unwoken(hw.core_info(core).index)

    # ---- helpers for the implementations -------------------------------------------------------

    def _outgoing(self) -> Iterator[tuple[DataBuffer, EventKind]]:
        """The (buffer, event) pairs the local core raises."""
        me = self.core.name
        for b in self.buffers:
            for kind in EventKind:
                if b.spec.source_of(kind) == me:
                    yield b, kind

    def _incoming(self) -> Iterator[tuple[DataBuffer, EventKind]]:
        """The (buffer, event) pairs the local core handles."""
        me = self.core.name
        for b in self.buffers:
            for kind in EventKind:
                if b.spec.destination_of(kind) == me:
                    yield b, kind

    @staticmethod
    def _set_hook(buffer: AnyBuffer, kind: EventKind, hook: Callable[[AnyBuffer], None] | None) -> None:
        if kind is EventKind.DATA_SENT:
            buffer.on_send_completed = hook
        else:
            buffer.on_receive_completed = hook

    @staticmethod
    def _wake(buffer: AnyBuffer, kind: EventKind) -> bool:
        """The FromISR call an incoming event stands for; True if a blocked side was woken."""
        if kind is EventKind.DATA_SENT:
            return bool(buffer.send_completed_from_isr())
        return bool(buffer.receive_completed_from_isr())

    def _restore_default_hooks(self) -> None:
        for b, kind in self._outgoing():
            self._set_hook(b.buffer, kind, None)

    def _report(self, message: str, buffer_id: int) -> None:
        """Count an error and hand it to the error callback; a hook or ISR cannot raise it."""
        self.counters.errors += 1
        callback = self.on_error
        if callback is not None:
            try:
                callback(message, buffer_id)
            except Exception:  # noqa: BLE001 - an error callback must not break the hook or interrupt path: log it
                _log.exception("the error callback of the %s strategy raised", self.name)

    def _wake_all_incoming(self) -> None:
        """Wake every local side that could be waiting: the recovery path after a lost event."""
        for b, kind in self._incoming():
            self._wake(b.buffer, kind)

