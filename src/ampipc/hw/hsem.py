"""HSEM: the 32 hardware semaphores of the STM32H7, as seen from one core (RM0399, HAL HSEM driver).

Theory of operation
-------------------
Shared words (layout in `ampipc.hw._regs`): 32 ``R[n]`` registers, the key register ``KEYR``, and per
core the ``IER`` (notification enables) and ``ISR`` (raw free status) words. ``MISR`` is computed
(``ISR & IER``) and ``ICR`` is the act of clearing ISR bits, as on the chip.

- ``R[n]`` changes only by compare-and-swap, so every lock and unlock is one atomic step whatever
  the number of processes: a 2-step take is ``CAS(0 -> LOCK|COREID|PROCID)`` followed by the
  read-back comparison the HAL does; a 1-step take (read of ``RLR``) is ``CAS(0 -> LOCK|COREID)``
  returning the value found; an unlock is ``CAS(owner value -> 0)``, which changes nothing unless
  the writer is the owner. Exactly one of several concurrent takers of a free semaphore wins.
- Freeing semaphore *n* (unlock or the key-protected clear of ``CR``) is a *free event*: it sets
  bit *n* of every core's ``ISR`` (fetch_or) and then, for every core whose ``IER`` bit *n* is
  set, raises that core's ``IRQ_HSEM`` interrupt line. Activating a notification sets ``IER``
  first and then reads ``ISR``: if the status bit is already set the line is raised at once, as
  the chip's level-sensitive ``MISR`` output would. With sequentially consistent atomics either
  the freer sees the new enable bit or the activator sees the status bit, so no free event is
  lost (a duplicate raise is harmless: the handler finds an empty ``MISR``).
- ``irq_handler`` is ``HAL_HSEM_IRQHandler``: ``mask = ISR & IER``, clear those ``IER`` bits (the
  notification must be re-activated, which is why every free callback starts by doing so), clear
  them in ``ISR``, then call the free callback with the mask. Unlike the HAL it does not call the
  callback with an empty mask (a duplicate raise, see above).
- Which process writes what: any process acting as a core writes that core's ``IER`` and
  ``ISR`` (clear) bits; any process sets ``ISR`` bits of every core (free events); ``KEYR`` is
  written by whoever calls `set_key`, as any core may on the chip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _regs as R

if TYPE_CHECKING:
    from .hardware import Core

__all__ = ["FreeCallback", "Hsem", "check_core_id", "check_mask", "check_process_id", "check_sem_id"]

FreeCallback = Callable[[int], None]

_HSEM_IRQ_PRIORITY = 5  # ST's cm_ipc NVIC priority: FromISR APIs are legal at this level


def check_sem_id(sem_id: int) -> int:
    if not isinstance(sem_id, int) or isinstance(sem_id, bool) or not 0 <= sem_id < R.HSEM_COUNT:
        raise ValueError(f"HSEM semaphore id must be an int in 0..{R.HSEM_COUNT - 1}, not {sem_id!r}")
    return sem_id


def check_process_id(process_id: int) -> int:
    if not isinstance(process_id, int) or isinstance(process_id, bool) or not 0 <= process_id <= R.MAX_PROCESS_ID:
        raise ValueError(f"HSEM process id must be an int in 0..{R.MAX_PROCESS_ID}, not {process_id!r}")
    return process_id


def check_core_id(core_id: int) -> int:
    if not isinstance(core_id, int) or isinstance(core_id, bool) or not 0 <= core_id <= R.MAX_CORE_ID:
        raise ValueError(f"HSEM core id must be an int in 0..{R.MAX_CORE_ID}, not {core_id!r}")
    return core_id


def check_mask(mask: int) -> int:
    if not isinstance(mask, int) or isinstance(mask, bool) or not 0 <= mask <= R.WORD_MASK:
        raise ValueError(f"HSEM mask must be an int in 0..0xFFFFFFFF (bit n = semaphore n), not {mask!r}")
    return mask


class Hsem:
    """The hardware semaphores as seen from one core (bound to its COREID).

    Obtain it as ``hardware.core(name).hsem``; method names follow the HAL (``HAL_HSEM_Take`` ->
    `take`, ...).
    """

    def __init__(self, core: Core) -> None:
        self._core = core
        hw = core.hardware
        self._mapping = hw.region.mapping
        self._base = hw._base
        self.core_id = core.core_id
        self._block = self._base + R.core_block(core.index)
        self._callback: FreeCallback | None = None

    # ---- locking ------------------------------------------------------------------------------

    def _r(self, sem_id: int) -> int:
        return self._base + R.hsem_r_offset(check_sem_id(sem_id))

    def take(self, sem_id: int, process_id: int) -> bool:
        """HAL_HSEM_Take: 2-step lock with `process_id`. True if this core and process now hold it.

        Taking a semaphore this core and process already hold succeeds again (the read-back
        matches), as on the chip.
        """
        off = self._r(sem_id)
        wanted = R.r_value(self.core_id, check_process_id(process_id))
        found = self._mapping.cas_u32(off, 0, wanted)
        return found == 0 or found == wanted

    def fast_take(self, sem_id: int) -> bool:
        """HAL_HSEM_FastTake: 1-step lock (read of RLR), process id 0. True on success."""
        off = self._r(sem_id)
        wanted = R.r_value(self.core_id, 0)
        found = self._mapping.cas_u32(off, 0, wanted)
        return found == 0 or found == wanted

    def read_lock(self, sem_id: int) -> int:
        """The value a read of RLR[n] returns (and the 1-step lock it performs when free)."""
        off = self._r(sem_id)
        wanted = R.r_value(self.core_id, 0)
        found = self._mapping.cas_u32(off, 0, wanted)
        return wanted if found == 0 else found

    def release(self, sem_id: int, process_id: int) -> None:
        """HAL_HSEM_Release: frees the semaphore if this core and `process_id` own it, else nothing.

        A successful release is a free event (ISR bit on every core, IRQ_HSEM where enabled).
        """
        off = self._r(sem_id)
        owner = R.r_value(self.core_id, check_process_id(process_id))
        if self._mapping.cas_u32(off, owner, 0) == owner:
            self._core.hardware._hsem_freed(1 << sem_id)

    def release_all(self, key: int, core_id: int) -> None:
        """HAL_HSEM_ReleaseAll: write CR; if `key` equals KEYR's key, free every semaphore of `core_id`."""
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= R.MAX_KEY:
            raise ValueError(f"HSEM key must be an int in 0..{R.MAX_KEY:#x}, not {key!r}")
        check_core_id(core_id)
        if key != self.get_key():
            return
        freed = 0
        for sem_id in range(R.HSEM_COUNT):
            off = self._base + R.hsem_r_offset(sem_id)
            while True:
                value = self._mapping.load_u32(off)
                if not value & R.R_LOCK or (value & R.R_COREID_MASK) >> R.R_COREID_SHIFT != core_id:
                    break
                if self._mapping.cas_u32(off, value, 0) == value:
                    freed |= 1 << sem_id
                    break
        if freed:
            self._core.hardware._hsem_freed(freed)

    def set_key(self, key: int) -> None:
        """HAL_HSEM_SetClearKey: write KEYR (the key `release_all` must present)."""
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= R.MAX_KEY:
            raise ValueError(f"HSEM key must be an int in 0..{R.MAX_KEY:#x}, not {key!r}")
        self._mapping.store_u32(self._base + R.OFF_KEYR, key << R.KEY_SHIFT)

    def get_key(self) -> int:
        """HAL_HSEM_GetClearKey: the key held in KEYR."""
        return self._mapping.load_u32(self._base + R.OFF_KEYR) >> R.KEY_SHIFT

    def is_taken(self, sem_id: int) -> bool:
        """HAL_HSEM_IsSemTaken: True if the LOCK bit is set."""
        return bool(self._mapping.load_u32(self._r(sem_id)) & R.R_LOCK)

    def owner(self, sem_id: int) -> tuple[int, int] | None:
        """(core_id, process_id) of the holder, or None when free."""
        value = self._mapping.load_u32(self._r(sem_id))
        if not value & R.R_LOCK:
            return None
        return (value & R.R_COREID_MASK) >> R.R_COREID_SHIFT, value & R.R_PROCID_MASK

    def register(self, sem_id: int) -> int:
        """The raw R[n] register value."""
        return self._mapping.load_u32(self._r(sem_id))

    # ---- notification -------------------------------------------------------------------------

    @property
    def ier(self) -> int:
        """This core's CnIER."""
        return self._mapping.load_u32(self._block + R.C_HSEM_IER)

    @property
    def isr(self) -> int:
        """This core's CnISR (raw free status)."""
        return self._mapping.load_u32(self._block + R.C_HSEM_ISR)

    @property
    def misr(self) -> int:
        """This core's CnMISR = ISR & IER."""
        return self.isr & self.ier

    def activate_notification(self, mask: int) -> None:
        """HAL_HSEM_ActivateNotification: set IER bits; a bit whose status is set raises IRQ_HSEM now."""
        check_mask(mask)
        self._mapping.fetch_or_u32(self._block + R.C_HSEM_IER, mask)
        if self._mapping.load_u32(self._block + R.C_HSEM_ISR) & mask:
            self._core.hardware._raise_line(self._core.index, R.IRQ_HSEM)

    def deactivate_notification(self, mask: int) -> None:
        """HAL_HSEM_DeactivateNotification: clear IER bits."""
        check_mask(mask)
        self._mapping.fetch_and_u32(self._block + R.C_HSEM_IER, ~mask & R.WORD_MASK)

    def clear_flag(self, mask: int) -> None:
        """__HAL_HSEM_CLEAR_FLAG: write ICR, clearing those ISR bits of this core."""
        check_mask(mask)
        self._mapping.fetch_and_u32(self._block + R.C_HSEM_ISR, ~mask & R.WORD_MASK)

    def set_free_callback(self, callback: FreeCallback | None) -> None:
        """HAL_HSEM_FreeCallback for this core in this process; called by `irq_handler` with the mask."""
        if callback is not None and not callable(callback):
            raise TypeError("the free callback must be callable(mask) or None")
        self._callback = callback

    def irq_handler(self) -> None:
        """HAL_HSEM_IRQHandler: take MISR, disable those IER bits, clear them (ICR), call back with the mask."""
        ier_off = self._block + R.C_HSEM_IER
        isr_off = self._block + R.C_HSEM_ISR
        mask = self._mapping.load_u32(isr_off) & self._mapping.load_u32(ier_off)
        if not mask:
            return
        self._mapping.fetch_and_u32(ier_off, ~mask & R.WORD_MASK)
        self._mapping.fetch_and_u32(isr_off, ~mask & R.WORD_MASK)
        callback = self._callback
        if callback is not None:
            callback(mask)

    def enable_irq(self) -> None:
        """Attach `irq_handler` as this core's IRQ_HSEM handler (priority 5, as ST's cm_ipc).

        The handler runs in this process's dispatcher for the core: call ``core.start()`` too.
        """
        self._core.attach_handler(R.IRQ_HSEM, self._line_handler, priority=_HSEM_IRQ_PRIORITY)

    def disable_irq(self) -> None:
        """Detach the IRQ_HSEM handler attached by `enable_irq`."""
        self._core.detach_handler(R.IRQ_HSEM)

    def _line_handler(self, line: int) -> None:
        self.irq_handler()

    def __repr__(self) -> str:
        return f"<Hsem of core {self._core.name} (COREID {self.core_id})>"

