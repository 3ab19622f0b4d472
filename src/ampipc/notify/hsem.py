"""The hsem strategy: one hardware semaphore per data buffer and event, "take + release" as the doorbell.

Theory of operation
-------------------
Each (data buffer, event kind) owns one HSEM id: ``hsem_base + 2 * position + kind``, where position is
the buffer's rank by id. The source core raises an event with ``FastTake(id); Release(id, 0)``: the
release frees the semaphore, which sets ISR bit *id* on every core and interrupts each core whose IER
bit *id* is set. The destination core enables notification (IER) on exactly the ids of its incoming
events and attaches the HAL's HSEM interrupt handler; its free callback first re-activates the
notification of the ids it got (the HAL handler disables them, as on the chip) and then makes the
FromISR call each id stands for. Re-activating before waking means an event raised during the
wake-up interrupts again instead of being lost.

Only the source core ever takes or releases an event's semaphore, so the take never fails for
contention with the other core. There are 32 semaphores; ids below ``hsem_base`` are reserved
(0 is the boot semaphore), so 2 per data buffer, 4 per bidirectional channel, run out quickly:
`prepare` and the constructor raise `ResourceExhausted` saying how many channels fit.

The HSEM free callback is one per core per process (``HAL_HSEM_FreeCallback``): while this strategy
is installed it owns it, and ids that are not its own are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from .. import _native
from ..errors import ResourceExhausted
from ..hw import _regs as R
from .base import (
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

__all__ = ["SEMAPHORES", "HsemStrategy", "semaphore_ids"]

SEMAPHORES = 32


def semaphore_ids(endpoints: Sequence[EndpointSpec], hsem_base: int) -> dict[tuple[int, EventKind], int]:
    """The HSEM id of every (buffer id, event kind); ResourceExhausted if the 32 semaphores do not suffice."""
    ordered = sorted(e.buffer_id for e in endpoints)
    needed = 2 * len(ordered)
    available = SEMAPHORES - hsem_base
    if needed > available:
        raise ResourceExhausted(
            f"the hsem strategy needs 2 hardware semaphores per data buffer (4 per channel): {len(ordered)} buffers "
            f"need {needed}, but only {available} of the {SEMAPHORES} are free (ids {hsem_base}..{SEMAPHORES - 1}); "
            f"use at most {available // 4} channels, or the control or toggle strategy, which need one interrupt"
        )
    return {
        (buffer_id, kind): hsem_base + 2 * position + kind.value
        for position, buffer_id in enumerate(ordered)
        for kind in EventKind
    }


class HsemStrategy(Strategy):
    """Notification by one HSEM free interrupt per buffer and event."""

    name = "hsem"

    @classmethod
    def prepare(cls, region: Region, prefix: str, endpoints: Sequence[EndpointSpec], options: StrategyOptions) -> None:
        EventMap(endpoints)
        semaphore_ids(endpoints, options.hsem_base)

    def _attach_shared(self) -> None:
        self.ids = semaphore_ids([b.spec for b in self.buffers], self.options.hsem_base)
        self._event_of_id = {sem: ev for ev, sem in self.ids.items()}
        self.incoming_mask = 0
        for b, kind in self._incoming():
            self.incoming_mask |= 1 << self.ids[(b.buffer_id, kind)]

    def install(self) -> None:
        if self.installed:
            return
        hsem = self.core.hsem
        hw = self.core.hardware
        blocks = [hw._base + R.core_block(info.index) for info in hw.cores]
        unwoken = [hw._base + R.lines_unwoken(info.index) for info in hw.cores]
        taken = R.r_value(self.core.core_id, 0)
        for b, kind in self._outgoing():
            sem = self.ids[(b.buffer_id, kind)]
            pending, raised, _ = self._line_words(b.spec.destination_of(kind))
            hook = _native.Notifier(
                strategy=3, event=kind.value, mapping=self.region.mapping, word=hw._base + R.hsem_r_offset(sem),
                acked=0, bit=1 << sem, control=None, record=bytes(8), line_pending=pending, line_raised=raised,
                line=R.IRQ_HSEM, counters=self.native_counters, fallback=partial(self._ring, sem),
                hsem_taken=taken, hsem_cores=blocks, hsem_unwoken=unwoken,
            )
            self._set_hook(b.buffer, kind, hook)
        me = hw._base + R.core_block(self.core.index)
        isr = _native.TaskIsr(
            strategy=3, mapping=self.region.mapping, gate=self.core._gate, counters=self.native_counters,
            pending=me + R.C_PENDING, handled=me + R.C_HANDLED, line=R.IRQ_HSEM,
            table=(me + R.C_HSEM_IER, me + R.C_HSEM_ISR,
                   [(self.ids[(b.buffer_id, kind)], b.buffer, kind.value) for b, kind in self._incoming()]),
            unwoken=hw._base + R.lines_unwoken(self.core.index),
        )
        self._task_isr = isr
        for b, _kind in self._incoming():
            b.buffer._set_isr(isr)
        hsem.set_free_callback(self._on_free)
        hsem.activate_notification(self.incoming_mask)
        hsem.enable_irq()
        self.installed = True

    def _release_interrupt(self) -> None:
        hsem = self.core.hsem
        hsem.deactivate_notification(self.incoming_mask)
        hsem.set_free_callback(None)

    def _ring(self, sem: int, _buffer: AnyBuffer) -> None:
        hsem = self.core.hsem
        if not hsem.fast_take(sem):
            # Held by this core already (another task of it is mid-doorbell): its release notifies.
            self.counters.events_coalesced += 1
            return
        hsem.release(sem, 0)
        self.counters.events_raised += 1
        self.counters.doorbells += 1

    def _on_free(self, mask: int) -> None:
        ours = mask & self.incoming_mask
        if not ours:
            return
        self.counters.interrupts += 1
        self.core.hsem.activate_notification(ours)
        for sem in bits_of(ours):
            buffer_id, kind = self._event_of_id[sem]
            self.counters.events_handled += 1
            self._wake(self._by_id[buffer_id].buffer, kind)
