"""A model of the cores' low-power states: RUN, SLEEP, STOP, the time spent in each, and wake-up latency.

Theory of operation
-------------------
On the STM32H7 a core with nothing to do executes WFI/WFE: in SLEEP its clock stops and any
interrupt wakes it; in STOP its domain's clocks stop too and only wake-up capable sources (HSEM,
EXTI, SEV) wake it, with a longer restart. The model keeps, per core, one 128-byte record in a
region object (``<hardware name>.power``, kind ``hw_power``), so every process (and ``ampipc top``)
sees every core's state:

    0   u32  state            PowerState (RUN 0, SLEEP 1, STOP 2)
    4   u32  wake sequence    bumped by every wake-up; the futex word a sleeping core waits on
    8   u64  entered at       CLOCK_MONOTONIC ns when the current state began
    16  u64  ns in RUN        24 u64 ns in SLEEP      32 u64 ns in STOP   (closed periods only)
    40  u64  wake-ups
    48  u64  event stamp      ns of the event that asked for the next wake-up (0: none)
    56  u64  last latency     ns from the event stamp to the wake-up handler
    64  u64  latency total    72 u64 latency max      80 u64 latencies measured

Who writes what: the state, the entered-at stamp and the time counters are written only by the
processes acting as that core (its task entering a low-power state, its interrupt handler waking
it); the event stamp by whoever sends the wake-up (the other core, just before it notifies); the
wake sequence is bumped by the waking handler. CLOCK_MONOTONIC is system-wide, so a stamp taken
in one process is comparable in another: the latency covers the notification, the interrupt
dispatch and the handler's start, as "from event to handler" on the chip.

Power domains. On a chip region (``Region.create(..., chip=..., memory=...)``, `ampipc.hw.memory`)
each core's STOP takes its domain down with it (the CM7's D1, the CM4's D2: DStop) and its wake-up
brings it back; the state is the domain's word in the region's chip memory record (written only
here, by the processes acting as that core). While a domain is down its SRAMs cannot be reached:
every buffer operation on a region in one of them raises `DomainPoweredDown` naming the domain.
D3 (SRAM4, the backup SRAM) has no core of its own and stays reachable.

`CorePower.sleep(mode)` is WFI/WFE: it enters `mode`, waits on the wake sequence (announce by
reading it first, then sleep while it is unchanged: a wake between the two is never lost), then
returns to RUN. `CorePower.wake()` is what the core's wake-up interrupt handler calls.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from .. import _layout as L
from ..errors import CorruptRegion, ObjectExists

if TYPE_CHECKING:
    from .hardware import Core

__all__ = ["POWER_KIND", "CorePower", "PowerState", "PowerStatistics", "power_of"]

POWER_KIND = "hw_power"
RECORD_SIZE = 128
_STATE, _SEQ, _ENTERED = 0, 4, 8
_TIME_IN = (16, 24, 32)
_WAKEUPS, _STAMP, _LAST, _TOTAL, _MAX, _COUNT = 40, 48, 56, 64, 72, 80
_SLICE = 0.1
# The power domain each core's deep sleep stops (STM32H745/H747: the CM7 lives in D1, the CM4 in D2).
CORE_DOMAINS = {"CM7": L.DOMAIN_D1, "CM4": L.DOMAIN_D2}


class PowerState(IntEnum):
    """A core's power state (the Cortex-M / STM32 names)."""

    RUN = 0
    SLEEP = 1
    STOP = 2


@dataclass(frozen=True)
class PowerStatistics:
    """Time in each state (the current period included), wake-ups and wake-up latency, in seconds."""

    state: PowerState
    time_in_run: float
    time_in_sleep: float
    time_in_stop: float
    wakeups: int
    latencies_measured: int
    last_wake_latency: float
    mean_wake_latency: float
    max_wake_latency: float


def _now_ns() -> int:
    return time.monotonic_ns()


class CorePower:
    """The power record of one core, seen from this process. Obtain it as ``core.power``."""

    def __init__(self, core: Core, base: int) -> None:
        self.core = core
        self._m = core.hardware.region.mapping
        self._base = base
        self._lock = threading.Lock()  # the core's task and its handler both change the state
        self._domain_word = _domain_word(core)

    # ---- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> PowerState:
        raw = self._m.load_u32(self._base + _STATE)
        try:
            return PowerState(raw)
        except ValueError:
            raise CorruptRegion(
                f"power record of core {self.core.name}: state {raw} is not RUN, SLEEP or STOP",
                object=f"{self.core.hardware.name}.power", field="state", value=raw,
            ) from None

    def _enter(self, new: PowerState) -> None:
        with self._lock:
            m, b = self._m, self._base
            old = self.state
            now = _now_ns()
            entered = m.load_u64(b + _ENTERED)
            if entered and now > entered:
                m.fetch_add_u64(b + _TIME_IN[old], now - entered)
            m.store_u64(b + _ENTERED, now)
            m.store_u32(b + _STATE, int(new))
            if self._domain_word is not None:
                m.store_u32(self._domain_word, 1 if new is PowerState.STOP else 0)

    def enter(self, state: PowerState) -> None:
        """Record that this core is now in `state` (the time in the previous one is added up)."""
        self._enter(PowerState(state))

    @property
    def wake_sequence(self) -> int:
        """The count of wake-ups so far: read it *before* checking for work, pass it to `sleep(since=)`."""
        return self._m.load_u32(self._base + _SEQ)

    def sleep(
        self, mode: PowerState = PowerState.SLEEP, timeout: float | None = None, *, since: int | None = None
    ) -> bool:
        """WFI/WFE in `mode` (SLEEP or STOP) until `wake()` or the timeout; True if woken. Back in RUN after.

        `since`: a `wake_sequence` read before the caller last looked for work; a wake-up after that
        read returns at once instead of being slept through (the announce-then-check order).
        """
        mode = PowerState(mode)
        if mode is PowerState.RUN:
            raise ValueError("sleep() needs a low-power mode: PowerState.SLEEP or PowerState.STOP")
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        seq_off = self._base + _SEQ
        seen = self._m.load_u32(seq_off) if since is None else since & 0xFFFFFFFF
        self._enter(mode)
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = False
        try:
            while True:
                if self._m.load_u32(seq_off) != seen:
                    woken = True
                    break
                left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
                if left <= 0:
                    break
                self._m.futex_wait(seq_off, seen, left)
        finally:
            if self.state is not PowerState.RUN:  # the handler normally switched to RUN already
                self._enter(PowerState.RUN)
        return woken

    @property
    def event_pending(self) -> bool:
        """True while a stamped event has not reached this core's wake-up handler yet."""
        return self._m.load_u64(self._base + _STAMP) != 0

    def stamp_event(self, at_ns: int | None = None) -> None:
        """The other side, just before it notifies: the event that will wake this core happened now."""
        self._m.store_u64(self._base + _STAMP, _now_ns() if at_ns is None else at_ns)

    def wake(self) -> float | None:
        """The wake-up handler: back to RUN, wake the sleeping task; the latency from the stamp, if any (s)."""
        m, b = self._m, self._base
        now = _now_ns()
        if self.state is not PowerState.RUN:
            self._enter(PowerState.RUN)
        m.fetch_add_u64(b + _WAKEUPS, 1)
        stamp = m.load_u64(b + _STAMP)
        latency: float | None = None
        if stamp and m.cas_u64(b + _STAMP, stamp, 0) == stamp and now >= stamp:
            ns = now - stamp
            m.store_u64(b + _LAST, ns)
            m.fetch_add_u64(b + _TOTAL, ns)
            m.fetch_add_u64(b + _COUNT, 1)
            if ns > m.load_u64(b + _MAX):
                m.store_u64(b + _MAX, ns)
            latency = ns / 1e9
        m.fetch_add_u32(b + _SEQ, 1)
        m.futex_wake(b + _SEQ)
        return latency

    def statistics(self) -> PowerStatistics:
        m, b = self._m, self._base
        state = self.state
        times = [m.load_u64(b + off) for off in _TIME_IN]
        entered = m.load_u64(b + _ENTERED)
        now = _now_ns()
        if entered and now > entered:
            times[state] += now - entered
        count = m.load_u64(b + _COUNT)
        return PowerStatistics(
            state=state,
            time_in_run=times[0] / 1e9,
            time_in_sleep=times[1] / 1e9,
            time_in_stop=times[2] / 1e9,
            wakeups=m.load_u64(b + _WAKEUPS),
            latencies_measured=count,
            last_wake_latency=m.load_u64(b + _LAST) / 1e9,
            mean_wake_latency=(m.load_u64(b + _TOTAL) / count / 1e9) if count else 0.0,
            max_wake_latency=m.load_u64(b + _MAX) / 1e9,
        )

    def __repr__(self) -> str:
        return f"<CorePower {self.core.name} {self.state.name}>"


def _domain_word(core: Core) -> int | None:
    """The offset of the power word of `core`'s domain in its region's chip record (None: no chip memory)."""
    domain = CORE_DOMAINS.get(core.name.upper())
    placement = core.hardware.region.placement
    if domain is None or placement is None:
        return None
    return placement.record_offset + L.CHIP_OFF_DOMAIN_POWER + 4 * domain


def _power_base(core: Core) -> int:
    hw = core.hardware
    region = hw.region
    name = f"{hw.name}.power"
    size = RECORD_SIZE * len(hw.cores)
    try:
        entry = region.lookup(name, POWER_KIND)
    except LookupError:
        try:
            offset = region.allocate(name, POWER_KIND, size)
        except ObjectExists:  # another process created it meanwhile
            entry = region.lookup(name, POWER_KIND)
        else:
            now = _now_ns()
            for index in range(len(hw.cores)):
                region.mapping.store_u64(offset + index * RECORD_SIZE + _ENTERED, now)
            return offset + core.index * RECORD_SIZE
    if entry.size < size:
        raise CorruptRegion(
            f"power object {name!r} has {entry.size} bytes, {len(hw.cores)} cores need {size}",
            object=name, field="size", value=entry.size,
        )
    return entry.offset + core.index * RECORD_SIZE


_cache_lock = threading.Lock()


def power_of(core: Core) -> CorePower:
    """The `CorePower` of `core` (created in the region on first use by any process)."""
    with _cache_lock:
        power = getattr(core, "_power", None)
        if power is None:
            power = CorePower(core, _power_base(core))
            core._power = power
        return power
