"""The control strategy: a control message buffer per direction carries {buffer id, event kind}.

Theory of operation
-------------------
As in the FreeRTOS STM32H745 AMP demo and ST's multi-buffer example: for each direction (source ->
destination) a *control* MessageBuffer (``<prefix>.cb<n>``) carries 8-byte records
``<u32 buffer id, u32 event kind>`` (12 bytes each with the length prefix). The source's completion
hook writes one record and rings the destination's doorbell (one interrupt line); the destination's
handler drains the control buffer completely and makes the FromISR call each record names.

The control buffers' own hooks do nothing (the recursion guard: a control buffer never produces
records of its own; the doorbell is rung explicitly).

Coalescing: a state object (``<prefix>.cs``) holds per direction a bit set of events that have a
record in flight (``pending``; bits numbered by `EventMap`). The source sets the bit with
``fetch_or`` and writes a record only if it was clear; the destination clears it (``fetch_and``)
*before* it wakes the buffer, so an event raised meanwhile writes a fresh record. So at most one
record per event is ever in flight, and the default control buffer (two records per event of the
direction, i.e. two per data buffer) cannot fill up in normal operation.

Overflow is still detected and reported, never silent: when the record does not fit (a control
buffer sized smaller with `StrategyOptions.control_records`, or a stalled destination), the source
counts it (locally and in the shared ``overflows`` word), calls the error callback, sets the shared
``overflow`` flag and still rings. The destination, on seeing the flag (``exchange`` to 0), drains the
buffer, clears every pending bit of the direction and wakes every buffer of the direction, so
nothing waits for a record that was never written.

Who writes what: ``pending`` bits are set by the source and cleared by the destination (atomic
read-modify-writes); ``overflow`` is set by the source and cleared by the destination; ``overflows``
is incremented by the source only. The control buffer has one writer per core at a time: a lock in
the source process serialises tasks and handlers of that core (on the host the task holding it keeps
running, so a handler waits only for a short non-blocking ``try_send``). Only the destination's
handler reads it.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from .. import _native
from ..buffers import MessageBuffer
from ..errors import CorruptRegion, PeerClosed, ProtocolError
from .base import (
    WORD_AND,
    WORD_OR,
    AnyBuffer,
    EndpointSpec,
    EventKind,
    EventMap,
    Strategy,
    StrategyOptions,
)

if TYPE_CHECKING:
    from ..region import Region

__all__ = [
    "CONTROL_STATE_KIND",
    "RECORD",
    "RECORD_FOOTPRINT",
    "ControlLayout",
    "ControlStrategy",
    "decode_record",
    "encode_record",
]

RECORD = struct.Struct("<II")
RECORD_FOOTPRINT = RECORD.size + 4  # with the message buffer's length prefix
CONTROL_STATE_KIND = "control_state"
_MAGIC = 0x4C525443  # "CTRL"
_MASK32 = 0xFFFFFFFF
# per direction block: [overflow flag, overflow count] on one cache line, pending words after it
_OFF_FLAG = 0
_OFF_COUNT = 4


def encode_record(buffer_id: int, kind: EventKind) -> bytes:
    """The 8-byte control record for an event."""
    if not 0 <= buffer_id <= _MASK32:
        raise ValueError(f"a buffer id must fit in 32 bits, not {buffer_id}")
    return RECORD.pack(buffer_id, EventKind(kind).value)


def decode_record(record: bytes) -> tuple[int, EventKind]:
    """(buffer id, event kind) of a control record; ProtocolError for anything malformed."""
    if len(record) != RECORD.size:
        raise ProtocolError(f"a control record is {RECORD.size} bytes, not {len(record)}")
    buffer_id, kind = RECORD.unpack(record)
    try:
        return buffer_id, EventKind(kind)
    except ValueError:
        raise ProtocolError(f"control record for buffer {buffer_id}: unknown event kind {kind}") from None


class ControlLayout:
    """Names and offsets of the control buffers and the state object (pure)."""

    def __init__(self, prefix: str, event_map: EventMap, options: StrategyOptions) -> None:
        self.event_map = event_map
        self.state_name = f"{prefix}.cs"
        self.buffer_names: dict[tuple[str, str], str] = {}
        self.records: dict[tuple[str, str], int] = {}
        self.block_at: dict[tuple[str, str], int] = {}
        at = 64  # header: magic, direction count, size
        for n, d in enumerate(event_map.directions):
            self.buffer_names[d] = f"{prefix}.cb{n}"
            self.records[d] = options.control_records or 2 * len(event_map.events(*d))
            self.block_at[d] = at
            at += 64 + (event_map.word_count(*d) * 4 + 63) // 64 * 64
        self.state_size = at

    def buffer_size(self, d: tuple[str, str]) -> int:
        return self.records[d] * RECORD_FOOTPRINT


def _no_record(_buffer: AnyBuffer) -> None:
    """The control buffers' hooks: a control buffer never produces records of its own."""


class ControlStrategy(Strategy):
    """Notification by control records in a message buffer per direction, and one doorbell."""

    name = "control"

    @classmethod
    def prepare(cls, region: Region, prefix: str, endpoints: Sequence[EndpointSpec], options: StrategyOptions) -> None:
        layout = ControlLayout(prefix, EventMap(endpoints), options)
        offset = region.allocate(layout.state_name, CONTROL_STATE_KIND, layout.state_size)
        for d, name in layout.buffer_names.items():
            MessageBuffer.create(region, name, layout.buffer_size(d))
        region.mapping.store_u32(offset + 4, len(layout.buffer_names))
        region.mapping.store_u32(offset + 8, layout.state_size)
        region.mapping.store_u32(offset, _MAGIC)

    def _attach_shared(self) -> None:
        self.layout = ControlLayout(self.prefix, self.event_map, self.options)
        entry = self.region.lookup(self.layout.state_name, CONTROL_STATE_KIND)
        if entry.size != self.layout.state_size:
            raise CorruptRegion(
                f"control state {entry.name!r}: {entry.size} bytes, the channel layout needs {self.layout.state_size}",
                object=entry.name, field="size", value=entry.size,
            )
        magic = self.region.mapping.load_u32(entry.offset)
        if magic != _MAGIC:
            raise CorruptRegion(f"control state {entry.name!r}: bad magic {magic:#x}", object=entry.name, field="magic", value=magic)
        self._base = entry.offset
        me = self.core.name
        self.control: dict[tuple[str, str], MessageBuffer] = {}
        for d, name in self.layout.buffer_names.items():
            if me in d:
                cb = MessageBuffer.attach(self.region, name)
                if cb.capacity != self.layout.buffer_size(d):
                    raise CorruptRegion(
                        f"control buffer {name!r} holds {cb.capacity} bytes, the channel layout says {self.layout.buffer_size(d)}",
                        object=name, field="capacity", value=cb.capacity,
                    )
                self.control[d] = cb
        self._writer_lock = threading.Lock()
        self.counters.extra["overflows"] = 0
        self.counters.extra["overflow_recoveries"] = 0
        self.counters.extra["bad_records"] = 0

    def install(self) -> None:
        if self.installed:
            return
        for cb in self.control.values():
            cb.on_send_completed = _no_record
            cb.on_receive_completed = _no_record
        m = self.region.mapping
        for b, kind in self._outgoing():
            d = self.event_map.direction_of(b.buffer_id, kind)
            word, bit = self.event_map.locate(b.buffer_id, kind)
            pending_off = self._base + self.layout.block_at[d] + 64 + 4 * word
            record = encode_record(b.buffer_id, kind)
            line_pending, line_raised, _ = self._line_words(d[1])
            hook = _native.Notifier(
                strategy=2, event=kind.value, mapping=m, word=pending_off, acked=0, bit=bit, control=self.control[d],
                record=record, line_pending=line_pending, line_raised=line_raised, line=self.options.irq_line,
                counters=self.native_counters, fallback=partial(self._raise_event, d, pending_off, bit, record),
                line_unwoken=self._line_unwoken(d[1]),
            )
            self._set_hook(b.buffer, kind, hook)
        self._install_task_isr()
        self.core.attach_handler(self.options.irq_line, self._isr, priority=5)
        self.installed = True

    def _install_task_isr(self) -> None:
        """The C mirror of `_isr`, serviced by whichever local task is blocked on an incoming buffer."""
        me = self.core.name
        table = []
        for d, cb in self.control.items():
            if d[1] != me:
                continue
            block = self._base + self.layout.block_at[d]
            events = []
            for buffer_id, kind in self.event_map.events(*d):
                word, bit = self.event_map.locate(buffer_id, kind)
                events.append((buffer_id, kind.value, block + 64 + 4 * word, bit, self._by_id[buffer_id].buffer, kind.value))
            table.append((cb, block + _OFF_FLAG, events))
        pending, _, handled = self._line_words(me)
        isr = _native.TaskIsr(
            strategy=2, mapping=self.region.mapping, gate=self.core._gate, counters=self.native_counters,
            pending=pending, handled=handled, line=self.options.irq_line, table=table, unwoken=self._line_unwoken(me),
        )
        self._task_isr = isr
        for b, _kind in self._incoming():
            b.buffer._set_isr(isr)

    def _release_interrupt(self) -> None:
        self.core.detach_handler(self.options.irq_line)

    def overflow_count(self, source: str, destination: str) -> int:
        """The shared count of records that did not fit in that direction's control buffer."""
        d = (source, destination)
        if d not in self.layout.block_at:
            raise ValueError(f"no direction {source}->{destination}")
        return self.region.mapping.load_u32(self._base + self.layout.block_at[d] + _OFF_COUNT)

    def statistics(self) -> dict[str, int]:
        stats = super().statistics()
        me = self.core.name
        stats["shared_overflows_out"] = sum(self.overflow_count(*d) for d in self.control if d[0] == me)
        stats["shared_overflows_in"] = sum(self.overflow_count(*d) for d in self.control if d[1] == me)
        return stats

    def _raise_event(self, d: tuple[str, str], pending_off: int, bit: int, record: bytes, _buffer: AnyBuffer) -> None:
        m = self.region.mapping
        # fetch_or is a full barrier: the data is visible before the destination can clear the bit
        if m.data_word_u32(pending_off, WORD_OR, bit) & bit:  # firmware data: through the chip model if any
            self.counters.events_coalesced += 1
            if decode_record(record)[1] is EventKind.DATA_SENT and self._reader_waits(_buffer):  # raised quietly by C?
                self.core.raise_interrupt(self.options.irq_line, target=d[1])
            return
        with self._writer_lock:
            written = self.control[d].try_send(record)
        if written:
            self.counters.events_raised += 1
        else:
            block = self._base + self.layout.block_at[d]
            m.fetch_add_u32(block + _OFF_COUNT, 1)
            m.store_u32(block + _OFF_FLAG, 1)
            self.counters.extra["overflows"] += 1
            buffer_id, kind = decode_record(record)
            self._report(
                f"control buffer {self.layout.buffer_names[d]!r} ({d[0]}->{d[1]}) is full: the {kind.name} record "
                f"of buffer {buffer_id} did not fit; the receiver will rescan every buffer "
                f"(make control_records larger than {self.layout.records[d]})",
                buffer_id,
            )
        self.counters.doorbells += 1
        self.core.raise_interrupt(self.options.irq_line, target=d[1])

    def _isr(self, _line: int) -> None:
        self.counters.interrupts += 1
        m = self.region.mapping
        me = self.core.name
        for d, cb in self.control.items():
            if d[1] != me:
                continue
            block = self._base + self.layout.block_at[d]
            overflowed = m.exchange_u32(block + _OFF_FLAG, 0)
            while True:
                try:
                    record = cb.try_receive()
                except PeerClosed:  # the writer core left: every record it wrote has been taken
                    break
                if record is None:
                    break
                self._handle_record(d, block, record)
            if overflowed:
                self.counters.extra["overflow_recoveries"] += 1
                for word in range(self.event_map.word_count(*d)):
                    m.data_word_u32(block + 64 + 4 * word, WORD_AND, 0)
                for buffer_id, kind in self.event_map.events(*d):
                    self._wake(self._by_id[buffer_id].buffer, kind)

    def _handle_record(self, d: tuple[str, str], block: int, record: bytes) -> None:
        try:
            buffer_id, kind = decode_record(record)
            if buffer_id not in self._by_id or self.event_map.direction_of(buffer_id, kind) != d:
                raise ProtocolError(f"control record names {kind.name} of buffer {buffer_id}, not an event {d[0]}->{d[1]}")
        except ProtocolError as e:
            self.counters.extra["bad_records"] += 1
            self._report(f"control buffer {self.layout.buffer_names[d]!r}: {e}", -1)
            return
        word, bit = self.event_map.locate(buffer_id, kind)
        self.region.mapping.data_word_u32(block + 64 + 4 * word, WORD_AND, ~bit & _MASK32)
        self.counters.events_handled += 1
        self._wake(self._by_id[buffer_id].buffer, kind)

