"""Boot synchronisation of the CubeH7 dual-core template, between processes.

Theory of operation
-------------------
On the chip the CM4 enables the HSEM notification of semaphore 0 and stops; the CM7 initialises
the system and the shared structures, then takes and releases HSEM 0; the free event wakes the
CM4, which clears the flag and goes on. Here the CM4 may even start before the CM7 has created the
region, so `cm4_wait_for_boot` proceeds in three steps, under one deadline:

1. poll `Region.attach` until the region exists (unless a `Region` is passed);
2. poll `Hardware.attach` until the hardware object exists and is initialised;
3. activate the notification of the boot semaphore and sleep on the core's pending-interrupt word
   (the stand-in for STOP mode: any raise of a line wakes it) until the boot is announced.

The announcement has two parts, written by the booting core only (`cm7_release_boot`): first the
hardware's *boot state* word is set to ``BOOT_READY`` (a sequentially consistent store, after every
shared structure has been written), then the semaphore is taken and released, which is the free
event that raises ``IRQ_HSEM`` on the waiting core. The waiting core checks the boot state after
activating the notification and after every wake-up, so it never misses a release that happened
before it started waiting, and a lost wake-up costs at most one poll interval (0.1 s).

When it proceeds, the waiting core clears the semaphore's status flag (``__HAL_HSEM_CLEAR_FLAG``)
and deactivates the notification, so the boot event does not reach a free callback installed
later. It does not take the ``IRQ_HSEM`` pending bit: an ``irq_handler`` that runs for it finds an
empty ``MISR`` and does nothing.
"""

from __future__ import annotations

import math
import time

from .. import _native
from ..errors import BlockingInIsr, ObjectNotFound, RegionNotFound, Timeout
from ..region import Region
from . import _regs as R
from .hardware import Hardware
from .hsem import check_sem_id

__all__ = ["BOOT_SEMAPHORE", "boot_ready", "cm4_wait_for_boot", "cm7_release_boot"]

BOOT_SEMAPHORE = 0  # HSEM_ID_0 of the CubeH7 template
_POLL = 0.1


def boot_ready(hw: Hardware) -> bool:
    """True once the booting core has announced that the shared structures are ready."""
    return hw.region.mapping.load_u32(hw._word(R.OFF_BOOT_STATE)) == R.BOOT_READY


def cm7_release_boot(hw: Hardware, *, core: str = "CM7", sem_id: int = BOOT_SEMAPHORE) -> None:
    """Announce that the system and the shared structures are initialised (the CM7's side).

    Call it after creating every shared object the other cores attach to. It sets the boot state
    and pulses a free event on `sem_id` (``HAL_HSEM_FastTake(0); HAL_HSEM_Release(0, 0)``).
    If the semaphore is held by someone else, its eventual release is the event; the boot state
    alone already lets the waiting core proceed.
    """
    check_sem_id(sem_id)
    hsem = hw.core(core).hsem
    m = hw.region.mapping
    m.store_u32(hw._word(R.OFF_BOOT_STATE), R.BOOT_READY)
    m.fetch_add_u32(hw._word(R.OFF_BOOT_COUNT), 1)
    if hsem.owner(sem_id) == (hsem.core_id, 0):
        hsem.release(sem_id, 0)  # left taken by an earlier pulse that was interrupted: free it now
    elif hsem.fast_take(sem_id):
        hsem.release(sem_id, 0)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _sleep_until_next_poll(deadline: float | None, what: str) -> None:
    remaining = _remaining(deadline)
    if remaining is not None and remaining <= 0:
        raise Timeout(f"boot synchronisation timed out while waiting for {what}")
    time.sleep(0.01 if remaining is None else min(0.01, remaining))


def cm4_wait_for_boot(
    region: Region | str,
    *,
    timeout: float | None = None,
    core: str = "CM4",
    hw_name: str = "hw",
    sem_id: int = BOOT_SEMAPHORE,
) -> Hardware:
    """Wait until the booting core announces that the shared structures are ready (the CM4's side).

    `region` is an attached `Region`, or the name of a region that may not exist yet (it is
    attached when it appears; the caller then owns ``result.region`` and must close it). Returns
    the attached `Hardware`. Raises `TimeoutError` when `timeout` seconds pass first (the region
    attached here is closed again), and `BlockingInIsr` when called from an interrupt handler.
    """
    if timeout is not None and (isinstance(timeout, bool) or math.isnan(timeout) or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    check_sem_id(sem_id)
    if _native.in_isr():
        raise BlockingInIsr("cm4_wait_for_boot() blocks; it cannot run in an interrupt handler")
    deadline = None if timeout is None else time.monotonic() + timeout
    owned = False
    if isinstance(region, str):
        region_name = region
        while True:
            try:
                region = Region.attach(region_name)
                owned = True
                break
            except RegionNotFound:
                _sleep_until_next_poll(deadline, f"region {region_name!r} to be created")
    try:
        while True:
            try:
                hw = Hardware.attach(region, name=hw_name)
                break
            except ObjectNotFound:
                _sleep_until_next_poll(deadline, f"hardware object {hw_name!r} in region {region.name!r}")
        me = hw.core(core)
        mask = 1 << sem_id
        me.hsem.activate_notification(mask)
        m = region.mapping
        pending_off = hw._base + R.core_block(me.index) + R.C_PENDING
        while not boot_ready(hw):
            seen = m.load_u32(pending_off)
            if boot_ready(hw):
                break
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                me.hsem.deactivate_notification(mask)
                raise Timeout(
                    f"boot synchronisation timed out: core {core} saw no boot release on HSEM {sem_id}"
                )
            m.futex_wait(pending_off, seen, _POLL if remaining is None else min(_POLL, remaining))
        me.hsem.clear_flag(mask)
        me.hsem.deactivate_notification(mask)
        return hw
    except BaseException:
        if owned:
            region.close()
        raise
