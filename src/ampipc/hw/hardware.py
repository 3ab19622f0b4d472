"""The virtual IPC hardware of one chip: cores, interrupt lines and their dispatcher, EXTI and SEV.

Theory of operation
-------------------
One directory object of kind ``"hw"`` (layout in `ampipc.hw._regs`) holds every register, so any
process acting as any core sees the same hardware. A *core* is a name and an HSEM COREID; a
process acts as a core through `Hardware.core`, and several processes may act as the same core.

Interrupt lines. Each core has a 32-bit *pending* word. Raising line *n* (from any process) is
``fetch_or(pending, 1 << n)`` followed by a futex wake when the bit was clear, so raising an
already-pending line merges with it, as an NVIC pending bit does. Handlers are registered per
process: the dispatcher thread of a process takes (``fetch_and``) only the bits of the lines it
has handlers for and leaves the others pending for whoever has. Taken lines run highest priority
first (lower number first, then lower line number, as on the NVIC); after every handler the
dispatcher takes the lines raised meanwhile, so a higher-priority line raised during a handler
runs before the lower ones still waiting. Handlers run with the thread's ISR flag set
(`ampipc._native.set_isr_context`), so a blocking buffer call inside one raises `BlockingInIsr`.
A handler's exception is logged (logger ``ampipc.hw``) and passed to `sys.unraisablehook`; the
dispatcher keeps going.

Critical section. "Interrupts disabled" is a re-entrant lock per core per process that the
dispatcher holds while it runs handlers: a task holding it keeps every handler of that core (in
this process) from running, the raised lines stay pending in shared memory and run when the
section ends; a handler may enter it (it holds it already).

Events. Each core has an event register word. `Core.sev` sets the register of every other core
whose SEV event is unmasked (``EMR``) and raises ``IRQ_SEV`` on every other core whose SEV
interrupt is unmasked (``IMR``). `Core.wfe` consumes the event (exchange to 0) or sleeps on the
word. EXTI software interrupts raise ``IRQ_EXTI0``/``IRQ_EXTI1`` on every core whose EXTI enable
word has the line's bit.

Who writes which word: pending bits are set by any process and cleared by the dispatcher running
the line; the event register is set by SEV senders and cleared by the waiting core; ``EMR``,
``IMR`` and the EXTI enable word are configuration, written by processes acting as that core (or
by a core configuring another one's EXTI input, as the FreeRTOS AMP demo does); the statistics
counters only grow. Everything read back from shared memory at attach (core count, core table,
version) is validated before use; every other offset is a constant of the layout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .. import _native
from ..errors import (
    BlockingInIsr,
    CorruptRegion,
    IncompatibleRegion,
    IpcError,
    RegionClosed,
)
from ..region import Region
from . import _regs as R
from .hsem import Hsem, check_core_id

if TYPE_CHECKING:
    from .power import CorePower, PowerState

__all__ = [
    "DEFAULT_CORES",
    "HSEM_COUNT",
    "IRQ_EXTI0",
    "IRQ_EXTI1",
    "IRQ_HSEM",
    "IRQ_SEV",
    "LINES_PER_CORE",
    "MAX_CORES",
    "Core",
    "CoreInfo",
    "CoreStatistics",
    "Hardware",
    "InterruptHandler",
]

DEFAULT_CORES: tuple[tuple[str, int], ...] = (("CM7", 3), ("CM4", 1))
IRQ_HSEM = R.IRQ_HSEM
IRQ_EXTI0 = R.IRQ_EXTI0
IRQ_EXTI1 = R.IRQ_EXTI1
IRQ_SEV = R.IRQ_SEV
LINES_PER_CORE = R.LINES_PER_CORE
MAX_CORES = R.MAX_CORES
HSEM_COUNT = R.HSEM_COUNT

InterruptHandler = Callable[[int], None]

_log = logging.getLogger("ampipc.hw")
_CORE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,23}$")
_ATTACH_WAIT = 2.0  # seconds an attacher waits for a creator still initialising the object
_POLL = 0.1  # the dispatcher re-checks its word at least this often (stop requests, new handlers)
_DEFAULT_PRIORITY = 15
_MAX_PRIORITY = 255


@dataclass(frozen=True)
class CoreInfo:
    """A core of the chip: its name, HSEM COREID and index in the hardware's core table."""

    name: str
    core_id: int
    index: int


@dataclass(frozen=True)
class CoreStatistics:
    """A snapshot of one core's shared counters."""

    interrupts_raised: int
    handlers_run: int
    events_received: int
    pending: int


def _check_line(line: int) -> int:
    if not isinstance(line, int) or isinstance(line, bool) or not 0 <= line < R.LINES_PER_CORE:
        raise ValueError(f"interrupt line must be an int in 0..{R.LINES_PER_CORE - 1}, not {line!r}")
    return line


def _check_exti_line(exti_line: int) -> int:
    if not isinstance(exti_line, int) or isinstance(exti_line, bool) or not 0 <= exti_line < len(R.EXTI_LINE_IRQS):
        raise ValueError(f"EXTI line must be 0 or 1 (the lines the IPC doorbells use), not {exti_line!r}")
    return exti_line


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    return float(timeout)


def _validate_cores(cores: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    try:
        items = tuple((name, core_id) for name, core_id in cores)
    except (TypeError, ValueError):
        raise ValueError("cores must be a sequence of (name, HSEM COREID) pairs") from None
    if not 1 <= len(items) <= R.MAX_CORES:
        raise ValueError(f"a chip has 1 to {R.MAX_CORES} cores, not {len(items)}")
    for name, core_id in items:
        if not isinstance(name, str) or not _CORE_NAME_RE.match(name):
            raise ValueError(f"invalid core name {name!r}: 1 to 23 characters among letters, digits, '_', '.', '-'")
        check_core_id(core_id)
    names = [n for n, _ in items]
    ids = [i for _, i in items]
    if len(set(names)) != len(names):
        raise ValueError(f"core names must be distinct: {names}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"HSEM core ids must be distinct: {ids}")
    return items


class Hardware:
    """The virtual peripherals of one chip, kept in one object of a `Region`.

    Create it once (`Hardware.create`, normally on the core that initialises the system) and attach
    from every other process (`Hardware.attach`). `close` stops the dispatchers started through this
    object; the region itself stays open (it belongs to the caller).
    """

    def __init__(self, region: Region, base: int, cores: tuple[CoreInfo, ...], name: str) -> None:
        self.region = region
        self.name = name
        self.cores = cores
        self._base = base
        self._mapping = region.mapping
        self._core_objects: dict[str, Core] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def create(
        cls, region: Region, *, cores: Sequence[tuple[str, int]] = DEFAULT_CORES, name: str = "hw"
    ) -> Hardware:
        """Allocate and initialise the hardware object `name` in `region`.

        `cores` lists (name, HSEM COREID) pairs: 1 to 8 cores, distinct names and ids 0..15.
        Every core starts with SEV events unmasked, SEV interrupts masked, EXTI inputs disabled,
        no HSEM notification enabled and nothing pending.
        """
        items = _validate_cores(cores)
        base = region.allocate(name, R.HW_KIND, R.HW_SIZE)
        m = region.mapping
        m.store_u32(base + R.OFF_VERSION, R.HW_VERSION)
        m.store_u32(base + R.OFF_CORE_COUNT, len(items))
        m.store_u32(base + R.OFF_LINES, R.LINES_PER_CORE)
        view = region.view
        try:
            for index, (core_name, core_id) in enumerate(items):
                R.CORE_ENTRY.pack_into(
                    view, base + R.OFF_CORE_TABLE + index * R.CORE_ENTRY_SIZE, core_name.encode("ascii"), core_id, 0
                )
                m.store_u32(base + R.core_block(index) + R.C_EMR, 1)
        finally:
            view.release()
        m.store_u32(base + R.OFF_MAGIC, R.HW_MAGIC)  # last: the object is complete
        infos = tuple(CoreInfo(n, i, k) for k, (n, i) in enumerate(items))
        return cls(region, base, infos, name)

    @classmethod
    def attach(cls, region: Region, *, name: str = "hw") -> Hardware:
        """Attach to the hardware object `name` of `region` (`ObjectNotFound` if absent)."""
        entry = region.lookup(name, R.HW_KIND)
        if entry.size < R.HW_SIZE:
            raise CorruptRegion(
                f"hardware object {name!r} has {entry.size} bytes, the layout needs {R.HW_SIZE}",
                object=name, field="size", value=entry.size,
            )
        base = entry.offset
        m = region.mapping
        deadline = time.monotonic() + _ATTACH_WAIT
        while True:
            magic = m.load_u32(base + R.OFF_MAGIC)
            if magic == R.HW_MAGIC:
                break
            if magic != 0 or time.monotonic() > deadline:
                raise IncompatibleRegion(
                    f"object {name!r} is not an ampipc hardware object (magic {magic:#010x}, "
                    f"expected {R.HW_MAGIC:#010x})"
                )
            time.sleep(0.002)  # the creator is still writing the object
        version = m.load_u32(base + R.OFF_VERSION)
        if version != R.HW_VERSION:
            raise IncompatibleRegion(
                f"hardware object {name!r} has layout version {version}; this ampipc reads version {R.HW_VERSION}"
            )
        count = m.load_u32(base + R.OFF_CORE_COUNT)
        if not 1 <= count <= R.MAX_CORES:
            raise CorruptRegion(
                f"hardware object {name!r} is corrupt: core count {count} is not in 1..{R.MAX_CORES}",
                object=name, field="core count", value=count,
            )
        lines = m.load_u32(base + R.OFF_LINES)
        if lines != R.LINES_PER_CORE:
            raise CorruptRegion(
                f"hardware object {name!r} is corrupt: {lines} lines per core, expected {R.LINES_PER_CORE}",
                object=name, field="lines per core", value=lines,
            )
        items: list[tuple[str, int]] = []
        view = region.view
        try:
            for index in range(count):
                raw, core_id, _ = R.CORE_ENTRY.unpack_from(view, base + R.OFF_CORE_TABLE + index * R.CORE_ENTRY_SIZE)
                items.append((raw.split(b"\0", 1)[0].decode("ascii", "replace"), core_id))
        finally:
            view.release()
        try:
            _validate_cores(items)
        except ValueError as exc:
            raise CorruptRegion(
                f"hardware object {name!r} is corrupt: bad core table ({exc})", object=name, field="core table"
            ) from None
        infos = tuple(CoreInfo(n, i, k) for k, (n, i) in enumerate(items))
        return cls(region, base, infos, name)

    # ---- cores --------------------------------------------------------------------------------

    def core_info(self, name: str) -> CoreInfo:
        """The `CoreInfo` of the core called `name` (ValueError if the chip has none)."""
        for info in self.cores:
            if info.name == name:
                return info
        raise ValueError(f"no core named {name!r} in hardware {self.name!r}; cores: {[c.name for c in self.cores]}")

    def core(self, name: str) -> Core:
        """This process acting as core `name` (the same object on every call)."""
        info = self.core_info(name)
        with self._lock:
            core = self._core_objects.get(name)
            if core is None:
                core = Core(self, info)
                self._core_objects[name] = core
            return core

    def close(self) -> None:
        """Stop every dispatcher started through this object. Idempotent; the region stays open."""
        with self._lock:
            self._closed = True
            cores = list(self._core_objects.values())
        for core in cores:
            core.stop()

    def __enter__(self) -> Hardware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internal signals (used by Core and Hsem) ---------------------------------------------

    def _raise_line(self, index: int, line: int) -> None:
        block = self._base + R.core_block(index)
        bit = 1 << line
        m = self._mapping
        old = m.fetch_or_u32(block + R.C_PENDING, bit)
        m.fetch_add_u64(block + R.C_RAISED, 1)
        # merged with a pending line: wake only if that line was raised quietly (nobody woken for it)
        if not old & bit or m.load_u32(self._base + R.lines_unwoken(index)) & bit:
            m.futex_wake(block + R.C_PENDING)

    def _hsem_freed(self, mask: int) -> None:
        """A free event for the semaphores in `mask`: status on every core, interrupt where enabled."""
        m = self._mapping
        for info in self.cores:
            block = self._base + R.core_block(info.index)
            m.fetch_or_u32(block + R.C_HSEM_ISR, mask)
            if m.load_u32(block + R.C_HSEM_IER) & mask:
                self._raise_line(info.index, R.IRQ_HSEM)

    def _word(self, offset: int) -> int:
        """Absolute offset of a header word of this object."""
        return self._base + offset

    def __repr__(self) -> str:
        names = ", ".join(f"{c.name}={c.core_id}" for c in self.cores)
        return f"<Hardware {self.name!r} in {self.region.name!r}: {names}>"


class Core:
    """This process acting as one core of the chip. Obtain it with `Hardware.core`."""

    def __init__(self, hardware: Hardware, info: CoreInfo) -> None:
        self.hardware = hardware
        self.name = info.name
        self.core_id = info.core_id
        self.index = info.index
        self._mapping = hardware.region.mapping
        self._block = hardware._base + R.core_block(info.index)
        self._handlers: dict[int, tuple[int, InterruptHandler]] = {}
        self._handled_mask = 0
        self._table_lock = threading.Lock()
        self._interrupts_disabled = threading.RLock()
        # Held with the lock: a task blocked on a buffer may service this core's strategy line in C
        # (see ampipc._native.TaskIsr) only while no critical section and no dispatch holds it.
        self._gate = _native.IrqGate()
        self._dispatcher: _Dispatcher | None = None
        self.handler_errors = 0
        self.hsem = Hsem(self)
        self._power: CorePower | None = None

    # ---- power (the low-power model of ampipc.hw.power) ------------------------------------------

    @property
    def power(self) -> CorePower:
        """This core's power record: state, sleep()/wake(), time in each state, wake-up latency."""
        from .power import power_of

        return power_of(self)

    @property
    def state(self) -> PowerState:
        """RUN, SLEEP or STOP (shared: every process sees every core's state)."""
        return self.power.state

    # ---- interrupt lines ----------------------------------------------------------------------

    def _target_index(self, target: str | None) -> int:
        if target is None:
            return self.index
        return self.hardware.core_info(target).index

    def raise_interrupt(self, line: int, *, target: str | None = None) -> None:
        """Make `line` pending on core `target` (this core if None). Callable from any process and thread."""
        _check_line(line)
        self.hardware._raise_line(self._target_index(target), line)

    def attach_handler(self, line: int, handler: InterruptHandler, *, priority: int = _DEFAULT_PRIORITY) -> None:
        """Run `handler(line)` in this process's dispatcher when `line` is raised on this core.

        Lower `priority` numbers run first (Cortex-M NVIC), 0..255. Replaces a handler already
        attached to the line. Lines raised before are served as soon as the dispatcher runs.
        """
        _check_line(line)
        if not callable(handler):
            raise TypeError("the interrupt handler must be callable(line)")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= _MAX_PRIORITY:
            raise ValueError(f"priority must be an int in 0..{_MAX_PRIORITY} (lower runs first), not {priority!r}")
        with self._table_lock:
            self._handlers[line] = (priority, handler)
            self._handled_mask |= 1 << line
        self._mapping.futex_wake(self._block + R.C_PENDING)  # a running dispatcher re-reads its mask

    def detach_handler(self, line: int) -> None:
        """Stop serving `line` in this process; raised lines stay pending."""
        _check_line(line)
        with self._table_lock:
            self._handlers.pop(line, None)
            self._handled_mask &= ~(1 << line)

    def _handler_for(self, line: int) -> tuple[int, InterruptHandler] | None:
        with self._table_lock:
            return self._handlers.get(line)

    def start(self) -> None:
        """Start this core's dispatcher thread in this process (idempotent)."""
        with self.hardware._lock:
            if self.hardware._closed:
                raise IpcError(f"hardware {self.hardware.name!r} is closed")
            if self._dispatcher is not None and self._dispatcher.is_alive():
                return
            self._dispatcher = _Dispatcher(self)
            self._dispatcher.start()

    def stop(self) -> None:
        """Stop and join the dispatcher (from a handler: stop without joining). Idempotent."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        dispatcher.stopping = True
        with contextlib.suppress(IpcError, ValueError):
            self._mapping.futex_wake(self._block + R.C_PENDING)
        if dispatcher is not threading.current_thread():
            dispatcher.join()
            self._dispatcher = None

    @property
    def running(self) -> bool:
        """True while this process's dispatcher for the core runs."""
        return self._dispatcher is not None and self._dispatcher.is_alive()

    def is_pending(self, line: int) -> bool:
        """NVIC_GetPendingIRQ: whether `line` is pending on this core."""
        return bool(self.pending & (1 << _check_line(line)))

    def clear_pending(self, line: int) -> None:
        """NVIC_ClearPendingIRQ: drop a pending `line` without running its handler."""
        self._mapping.fetch_and_u32(self._block + R.C_PENDING, ~(1 << _check_line(line)) & R.WORD_MASK)

    @property
    def pending(self) -> int:
        """The pending-lines word (bit n = line n pending)."""
        return self._mapping.load_u32(self._block + R.C_PENDING)

    @contextlib.contextmanager
    def critical_section(self) -> Iterator[None]:
        """"Interrupts disabled": no handler of this core runs in this process while it is held.

        Nestable; usable from tasks and from handlers. Lines raised meanwhile stay pending and run
        when the outermost section ends.
        """
        with self._interrupts_disabled:
            self._gate.enter()
            try:
                yield
            finally:
                self._gate.exit()

    @staticmethod
    def in_isr() -> bool:
        """True while the calling thread runs an interrupt handler."""
        return _native.in_isr()

    def statistics(self) -> CoreStatistics:
        m = self._mapping
        return CoreStatistics(
            interrupts_raised=m.load_u64(self._block + R.C_RAISED),
            handlers_run=m.load_u64(self._block + R.C_HANDLED),
            events_received=m.load_u64(self._block + R.C_EVENTS),
            pending=m.load_u32(self._block + R.C_PENDING),
        )

    # ---- EXTI / SEV ---------------------------------------------------------------------------

    def sev(self) -> None:
        """Send-event: latch an event on every other core whose SEV events are unmasked, and raise
        IRQ_SEV on every other core whose SEV interrupt is unmasked."""
        m = self._mapping
        hw = self.hardware
        for info in hw.cores:
            if info.index == self.index:
                continue
            block = hw._base + R.core_block(info.index)
            if m.load_u32(block + R.C_EMR) & 1:
                m.fetch_add_u64(block + R.C_EVENTS, 1)
                if m.exchange_u32(block + R.C_EVENT, 1) == 0:
                    m.futex_wake(block + R.C_EVENT)
            if m.load_u32(block + R.C_IMR) & 1:
                hw._raise_line(info.index, R.IRQ_SEV)

    def wfe(self, timeout: float | None = None) -> bool:
        """Wait for an event: True if one arrived (it is consumed), False at the timeout.

        ``timeout=0`` polls (see also `try_wfe`); a blocking wait in a handler raises `BlockingInIsr`.
        """
        timeout = _check_timeout(timeout)
        off = self._block + R.C_EVENT
        m = self._mapping
        if m.exchange_u32(off, 0):
            return True
        if timeout == 0:
            return False
        if _native.in_isr():
            raise BlockingInIsr(f"core {self.name}: wfe() with a timeout blocks; an interrupt handler must not block")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return bool(m.exchange_u32(off, 0))
            m.futex_wait(off, 0, remaining)
            if m.exchange_u32(off, 0):
                return True

    def try_wfe(self) -> bool:
        """Consume a latched event if there is one; never blocks."""
        return self.wfe(0)

    def set_event_mask(self, unmasked: bool) -> None:
        """EMR: whether SEV events from other cores reach this core's event register."""
        self._set_bit(R.C_EMR, 1, unmasked)

    def set_sev_interrupt_mask(self, unmasked: bool) -> None:
        """IMR: whether a SEV from another core raises IRQ_SEV on this core."""
        self._set_bit(R.C_IMR, 1, unmasked)

    def exti_enable(self, exti_line: int, enabled: bool = True, *, target: str | None = None) -> None:
        """HAL_EXTI_Dx_EventInputConfig(line, IT, ENABLE/DISABLE) for this core (or core `target`)."""
        _check_exti_line(exti_line)
        block = self.hardware._base + R.core_block(self._target_index(target))
        if enabled:
            self._mapping.fetch_or_u32(block + R.C_EXTI, 1 << exti_line)
        else:
            self._mapping.fetch_and_u32(block + R.C_EXTI, ~(1 << exti_line) & R.WORD_MASK)

    def exti_enabled(self, exti_line: int) -> bool:
        """Whether EXTI line `exti_line`'s input is enabled for this core."""
        _check_exti_line(exti_line)
        return bool(self._mapping.load_u32(self._block + R.C_EXTI) & (1 << exti_line))

    def generate_sw_interrupt(self, exti_line: int) -> None:
        """HAL_EXTI_GenerateSWInterrupt: raise the line's interrupt on every core that enables it."""
        _check_exti_line(exti_line)
        hw = self.hardware
        for info in hw.cores:
            if self._mapping.load_u32(hw._base + R.core_block(info.index) + R.C_EXTI) & (1 << exti_line):
                hw._raise_line(info.index, R.EXTI_LINE_IRQS[exti_line])

    def _set_bit(self, field: int, bit: int, value: bool) -> None:
        if value:
            self._mapping.fetch_or_u32(self._block + field, bit)
        else:
            self._mapping.fetch_and_u32(self._block + field, ~bit & R.WORD_MASK)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Core {self.name} (COREID {self.core_id}) of {self.hardware.name!r}, dispatcher {state}>"


class _Dispatcher(threading.Thread):
    """The interrupt controller of one core in this process: takes pending lines, runs handlers."""

    def __init__(self, core: Core) -> None:
        super().__init__(name=f"ampipc-irq-{core.name}", daemon=True)
        self.core = core
        self.stopping = False

    def run(self) -> None:
        core = self.core
        m = core._mapping
        off = core._block + R.C_PENDING
        try:
            while not self.stopping:
                word = m.load_u32(off)
                if not word & core._handled_mask:
                    m.futex_wait(off, word, _POLL)
                    continue
                if not core._interrupts_disabled.acquire(timeout=_POLL):
                    continue  # a critical section is held: the lines stay pending
                core._gate.enter()
                try:
                    self._dispatch(m, off)
                finally:
                    core._gate.exit()
                    core._interrupts_disabled.release()
        except RegionClosed:
            pass  # the region was closed under the dispatcher: nothing left to serve

    def _dispatch(self, m: _native.Mapping, off: int) -> None:
        core = self.core
        taken = 0
        unwoken = core.hardware._base + R.lines_unwoken(core.index)
        while True:
            handled = core._handled_mask
            m.fetch_and_u32(unwoken, ~handled & R.WORD_MASK)  # the quiet-raise marks go before the lines
            taken |= m.fetch_and_u32(off, ~handled & R.WORD_MASK) & handled
            if not taken:
                return
            if self.stopping:
                m.fetch_or_u32(off, taken)  # give the lines back rather than lose them
                return
            best: tuple[int, int, InterruptHandler] | None = None
            for line in range(R.LINES_PER_CORE):
                if taken & (1 << line):
                    entry = core._handler_for(line)
                    if entry is None:
                        continue
                    if best is None or (entry[0], line) < (best[0], best[1]):
                        best = (entry[0], line, entry[1])
            if best is None:  # every taken line lost its handler meanwhile: leave them pending
                m.fetch_or_u32(off, taken)
                return
            _, line, handler = best
            taken &= ~(1 << line)
            self._run_handler(m, line, handler)

    def _run_handler(self, m: _native.Mapping, line: int, handler: InterruptHandler) -> None:
        core = self.core
        previous = _native.set_isr_context(True)
        try:
            handler(line)
        except Exception as exc:  # noqa: BLE001  (a handler's failure must not stop the controller)
            core.handler_errors += 1
            _log.error("handler of interrupt line %d on core %s raised", line, core.name, exc_info=exc)
            hook_args = types.SimpleNamespace(
                exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__,
                err_msg=f"Exception in the handler of interrupt line {line} on core {core.name}",
                object=handler,
            )
            sys.unraisablehook(cast(Any, hook_args))
        finally:
            _native.set_isr_context(previous)
        m.fetch_add_u64(core._block + R.C_HANDLED, 1)

