"""The toggle strategy: per direction a sender-toggled word and a receiver-toggled word; one interrupt.

Theory of operation
-------------------
For each direction (source core -> destination core) the region holds two arrays of 32-bit words
(object ``<prefix>.tg``; see `EventMap` for which bit is which event):

- ``sent[w]``: written only by the source core. Raising an event makes its bit differ from ``acked``;
- ``acked[w]``: written only by the destination core (its interrupt handler). Acknowledging an event
  toggles its bit back to equality.

Pending events of a word are ``(sent ^ acked) & valid``. The source rings the destination's doorbell
(an interrupt line, `StrategyOptions.irq_line`) after making a bit pending; the handler reads both
words, acknowledges every pending bit with one ``fetch_xor`` on ``acked`` *before* it wakes the
buffers, so an event raised during the wake-ups makes its bit pending again and rings again.

Raising is "make pending if not already pending", never a blind toggle: two blind toggles before
the handler looks would cancel and lose the event. It is one compare-and-swap loop on ``sent``
(`raise_value` computes the new value): atomic on its own, so it is safe against the source core's
own interrupt handlers and other tasks without disabling interrupts, which is what makes sending from
an interrupt handler safe. The loop starts with a read-modify-write of ``sent`` (``fetch_or 0``), a
full barrier, so the data written into the buffer is visible before the read of ``acked``; if the bit
is already pending the receiver's handler has not acknowledged yet and will see that data.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from .. import _native
from ..errors import CorruptRegion
from .base import (
    WORD_CAS,
    WORD_LOAD,
    WORD_OR,
    WORD_XOR,
    AnyBuffer,
    EndpointSpec,
    EventKind,
    EventMap,
    Strategy,
    StrategyOptions,
    bits_of,
)

if TYPE_CHECKING:
    from ..region import Region

__all__ = ["TOGGLE_KIND", "ToggleLayout", "ToggleStrategy", "pending_bits", "raise_value"]

TOGGLE_KIND = "toggle_words"
_MAGIC = 0x4C474754  # "TGGL"
_HEADER_SIZE = 64  # magic, direction count, total size, each direction's word count (up to 13); then the words
_MAX_COUNTED_DIRECTIONS = 13
_MASK32 = 0xFFFFFFFF


def pending_bits(sent: int, acked: int, valid: int = _MASK32) -> int:
    """The events of one word that were raised and not yet acknowledged."""
    return (sent ^ acked) & valid


def raise_value(sent: int, acked: int, bit: int) -> int | None:
    """The new ``sent`` word that makes `bit` pending, or None if it is pending already."""
    if (sent ^ acked) & bit:
        return None
    return (sent ^ bit) & _MASK32


def _block(words: int) -> int:
    return (words * 4 + 63) // 64 * 64


class ToggleLayout:
    """Where each direction's ``sent`` and ``acked`` words sit in the toggle object (pure)."""

    def __init__(self, event_map: EventMap) -> None:
        self.event_map = event_map
        self.words: dict[tuple[str, str], int] = {}
        self.sent_at: dict[tuple[str, str], int] = {}
        self.acked_at: dict[tuple[str, str], int] = {}
        at = _HEADER_SIZE
        for d in event_map.directions:
            n = event_map.word_count(*d)
            self.words[d] = n
            self.sent_at[d] = at  # sender-owned and receiver-owned words on different cache lines
            at += _block(n)
            self.acked_at[d] = at
            at += _block(n)
        self.size = at


def field_name(mapping: _native.Mapping, offset: int, size: int, delta: int) -> str:
    """The toggle word at byte `delta` of a toggle object (the coherency checker's reports)."""
    if delta < _HEADER_SIZE:
        return f"header+{delta}"
    directions = min(mapping.load_u32(offset + 4), _MAX_COUNTED_DIRECTIONS)
    at = _HEADER_SIZE
    for i in range(directions):
        words = mapping.load_u32(offset + 12 + 4 * i)
        for part in ("sent", "acked"):
            if at <= delta < at + _block(words):
                return f"direction {i} {part}[{(delta - at) // 4}]"
            at += _block(words)
    return f"word[{(delta - _HEADER_SIZE) // 4}]"


class ToggleStrategy(Strategy):
    """Notification by toggle bits and one doorbell interrupt per direction."""

    name = "toggle"

    def _attach_shared(self) -> None:
        self.layout = ToggleLayout(self.event_map)
        entry = self.region.lookup(f"{self.prefix}.tg", TOGGLE_KIND)
        m = self.region.mapping
        if entry.size != self.layout.size:
            raise CorruptRegion(
                f"toggle words {entry.name!r}: {entry.size} bytes, the channel layout needs {self.layout.size}",
                object=entry.name, field="size", value=entry.size,
            )
        magic = m.load_u32(entry.offset)
        if magic != _MAGIC:
            raise CorruptRegion(f"toggle words {entry.name!r}: bad magic {magic:#x}", object=entry.name, field="magic", value=magic)
        self._base = entry.offset

    @classmethod
    def prepare(cls, region: Region, prefix: str, endpoints: Sequence[EndpointSpec], options: StrategyOptions) -> None:
        layout = ToggleLayout(EventMap(endpoints))
        offset = region.allocate(f"{prefix}.tg", TOGGLE_KIND, layout.size)
        region.mapping.store_u32(offset + 4, len(layout.words))
        region.mapping.store_u32(offset + 8, layout.size)
        for i, words in enumerate(list(layout.words.values())[:_MAX_COUNTED_DIRECTIONS]):
            region.mapping.store_u32(offset + 12 + 4 * i, words)  # for tools naming the words
        region.mapping.store_u32(offset, _MAGIC)

    def install(self) -> None:
        if self.installed:
            return
        line = self.options.irq_line
        m = self.region.mapping
        for b, kind in self._outgoing():
            d = self.event_map.direction_of(b.buffer_id, kind)
            word, bit = self.event_map.locate(b.buffer_id, kind)
            sent_off = self._base + self.layout.sent_at[d] + 4 * word
            acked_off = self._base + self.layout.acked_at[d] + 4 * word
            pending, raised, _ = self._line_words(d[1])
            hook = _native.Notifier(
                strategy=1, event=kind.value, mapping=m, word=sent_off, acked=acked_off, bit=bit, control=None,
                record=bytes(8), line_pending=pending, line_raised=raised, line=line, counters=self.native_counters,
                fallback=partial(self._raise_event, sent_off, acked_off, bit, d[1], kind), line_unwoken=self._line_unwoken(d[1]),
            )
            self._set_hook(b.buffer, kind, hook)
        self._install_task_isr()
        self.core.attach_handler(line, self._isr, priority=5)
        self.installed = True

    def _install_task_isr(self) -> None:
        """The C mirror of `_isr`, serviced by whichever local task is blocked on an incoming buffer."""
        me = self.core.name
        table = []
        for d in self.event_map.directions:
            if d[1] != me:
                continue
            for word in range(self.layout.words[d]):
                targets = []
                for bit in range(32):
                    try:
                        buffer_id, kind = self.event_map.event_at(d[0], d[1], word, bit)
                    except IndexError:
                        break
                    targets.append((bit, self._by_id[buffer_id].buffer, kind.value))
                table.append((
                    self._base + self.layout.sent_at[d] + 4 * word,
                    self._base + self.layout.acked_at[d] + 4 * word,
                    self.event_map.valid_mask(d[0], d[1], word),
                    targets,
                ))
        pending, _, handled = self._line_words(me)
        isr = _native.TaskIsr(
            strategy=1, mapping=self.region.mapping, gate=self.core._gate, counters=self.native_counters,
            pending=pending, handled=handled, line=self.options.irq_line, table=table, unwoken=self._line_unwoken(me),
        )
        self._task_isr = isr
        for b, _kind in self._incoming():
            b.buffer._set_isr(isr)

    def _release_interrupt(self) -> None:
        self.core.detach_handler(self.options.irq_line)

    def _raise_event(
        self, sent_off: int, acked_off: int, bit: int, destination: str, kind: EventKind, _buffer: AnyBuffer
    ) -> None:
        shared = self.region.mapping.data_word_u32  # firmware data: through the chip model if one is attached
        sent = shared(sent_off, WORD_OR, 0)
        while True:
            new = raise_value(sent, shared(acked_off, WORD_LOAD), bit)
            if new is None:
                self.counters.events_coalesced += 1
                if kind is EventKind.DATA_SENT and self._reader_waits(_buffer):  # raised quietly by C, maybe
                    self.core.raise_interrupt(self.options.irq_line, target=destination)
                return
            found = shared(sent_off, WORD_CAS, sent, new)
            if found == sent:
                break
            sent = found
        self.counters.events_raised += 1
        self.counters.doorbells += 1
        self.core.raise_interrupt(self.options.irq_line, target=destination)

    def _isr(self, _line: int) -> None:
        self.counters.interrupts += 1
        shared = self.region.mapping.data_word_u32
        me = self.core.name
        for d in self.event_map.directions:
            if d[1] != me:
                continue
            for word in range(self.layout.words[d]):
                sent_off = self._base + self.layout.sent_at[d] + 4 * word
                acked_off = self._base + self.layout.acked_at[d] + 4 * word
                valid = self.event_map.valid_mask(d[0], d[1], word)
                pending = pending_bits(shared(sent_off, WORD_LOAD), shared(acked_off, WORD_LOAD), valid)
                if not pending:
                    continue
                shared(acked_off, WORD_XOR, pending)
                for bit in bits_of(pending):
                    buffer_id, kind = self.event_map.event_at(d[0], d[1], word, bit)
                    self.counters.events_handled += 1
                    self._wake(self._by_id[buffer_id].buffer, kind)

