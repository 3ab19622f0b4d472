"""The HSEM against a pure-Python reference model of the reference manual's registers.

`RefHsem` models R, RLR, CR, KEYR and per core IER, ISR, MISR, ICR and the interrupt line, and the
HAL calls on top of them exactly as `stm32h7xx_hal_hsem.c` writes them. The table of rows below
checks the model *and* the real implementation against the manual's behaviours one by one; the
stateful hypothesis test then drives both with random call sequences from several cores and
compares every register after every step.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ampipc import CorruptRegion, IncompatibleRegion, ObjectNotFound, Region
from ampipc.hw import IRQ_HSEM, Hardware

LOCK = 1 << 31
CORES = (("CM7", 3), ("CM4", 1), ("M0", 2))
_names = itertools.count()


# ---- the reference model ------------------------------------------------------------------------


@dataclass
class RefChip:
    """The registers of RM0399's HSEM chapter, written as the bus would write them."""

    core_ids: tuple[int, ...]
    r: list[int] = field(default_factory=lambda: [0] * 32)
    keyr: int = 0
    ier: dict[int, int] = field(default_factory=dict)
    isr: dict[int, int] = field(default_factory=dict)
    irq: dict[int, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.core_ids:
            self.ier[c], self.isr[c], self.irq[c] = 0, 0, False

    def _free(self, mask: int) -> None:
        for c in self.core_ids:
            self.isr[c] |= mask
            if self.ier[c] & mask:
                self.irq[c] = True

    def write_r(self, n: int, value: int) -> None:
        if value & LOCK:
            if self.r[n] == 0:  # a write to a locked semaphore changes nothing
                self.r[n] = value
        elif self.r[n] == value | LOCK:  # unlock only with the owner's COREID and PROCID
            self.r[n] = 0
            self._free(1 << n)

    def read_rlr(self, n: int, core: int) -> int:
        if self.r[n] == 0:
            self.r[n] = LOCK | core << 8
        return self.r[n]

    def write_cr(self, key: int, core: int) -> None:
        if key != self.keyr >> 16:
            return
        freed = 0
        for n in range(32):
            if self.r[n] & LOCK and (self.r[n] >> 8) & 0xF == core:
                self.r[n] = 0
                freed |= 1 << n
        if freed:
            self._free(freed)

    def enable(self, core: int, mask: int) -> None:
        self.ier[core] |= mask
        if self.isr[core] & mask:  # enabling a bit whose status is already set interrupts at once
            self.irq[core] = True

    def disable(self, core: int, mask: int) -> None:
        self.ier[core] &= ~mask


class HsemApi(Protocol):
    def take(self, sem_id: int, process_id: int) -> bool: ...
    def fast_take(self, sem_id: int) -> bool: ...
    def release(self, sem_id: int, process_id: int) -> None: ...
    def release_all(self, key: int, core_id: int) -> None: ...
    def set_key(self, key: int) -> None: ...
    def get_key(self) -> int: ...
    def is_taken(self, sem_id: int) -> bool: ...
    def owner(self, sem_id: int) -> tuple[int, int] | None: ...
    def activate_notification(self, mask: int) -> None: ...
    def deactivate_notification(self, mask: int) -> None: ...
    def clear_flag(self, mask: int) -> None: ...
    def set_free_callback(self, callback: Callable[[int], None] | None) -> None: ...
    def irq_handler(self) -> None: ...
    @property
    def ier(self) -> int: ...
    @property
    def isr(self) -> int: ...
    @property
    def misr(self) -> int: ...


class RefHsem:
    """The HAL HSEM driver over `RefChip`, as seen from one core."""

    def __init__(self, chip: RefChip, core_id: int) -> None:
        self.chip = chip
        self.core_id = core_id
        self.callback: Callable[[int], None] | None = None

    def take(self, sem_id: int, process_id: int) -> bool:
        value = LOCK | self.core_id << 8 | process_id
        self.chip.write_r(sem_id, value)
        return self.chip.r[sem_id] == value

    def fast_take(self, sem_id: int) -> bool:
        return self.chip.read_rlr(sem_id, self.core_id) == LOCK | self.core_id << 8

    def release(self, sem_id: int, process_id: int) -> None:
        self.chip.write_r(sem_id, self.core_id << 8 | process_id)

    def release_all(self, key: int, core_id: int) -> None:
        self.chip.write_cr(key, core_id)

    def set_key(self, key: int) -> None:
        self.chip.keyr = key << 16

    def get_key(self) -> int:
        return self.chip.keyr >> 16

    def is_taken(self, sem_id: int) -> bool:
        return bool(self.chip.r[sem_id] & LOCK)

    def owner(self, sem_id: int) -> tuple[int, int] | None:
        v = self.chip.r[sem_id]
        return ((v >> 8) & 0xF, v & 0xFF) if v & LOCK else None

    def activate_notification(self, mask: int) -> None:
        self.chip.enable(self.core_id, mask)

    def deactivate_notification(self, mask: int) -> None:
        self.chip.disable(self.core_id, mask)

    def clear_flag(self, mask: int) -> None:
        self.chip.isr[self.core_id] &= ~mask

    def set_free_callback(self, callback: Callable[[int], None] | None) -> None:
        self.callback = callback

    def irq_handler(self) -> None:
        mask = self.misr
        self.chip.ier[self.core_id] &= ~mask
        self.chip.isr[self.core_id] &= ~mask
        if mask and self.callback is not None:
            self.callback(mask)

    @property
    def ier(self) -> int:
        return self.chip.ier[self.core_id]

    @property
    def isr(self) -> int:
        return self.chip.isr[self.core_id]

    @property
    def misr(self) -> int:
        return self.isr & self.ier


# ---- the two systems under the same rows --------------------------------------------------------


class System(Protocol):
    def hsem(self, core_id: int) -> HsemApi: ...
    def irq_pending(self, core_id: int) -> bool: ...
    def ack_irq(self, core_id: int) -> None: ...
    def close(self) -> None: ...


class RefSystem:
    def __init__(self) -> None:
        self.chip = RefChip(tuple(i for _, i in CORES))
        self.views = {i: RefHsem(self.chip, i) for _, i in CORES}

    def hsem(self, core_id: int) -> RefHsem:
        return self.views[core_id]

    def irq_pending(self, core_id: int) -> bool:
        return self.chip.irq[core_id]

    def ack_irq(self, core_id: int) -> None:
        self.chip.irq[core_id] = False

    def close(self) -> None:
        pass


_open_systems: list[RealSystem] = []


@pytest.fixture(autouse=True)
def _close_leftover_systems() -> Iterator[None]:
    """A failing hypothesis run may drop a machine without its teardown: close its region anyway."""
    yield
    while _open_systems:
        _open_systems[-1].close()


class RealSystem:
    def __init__(self) -> None:
        self.region = Region.create(f"ampipc-test-{os.getpid()}-hm{next(_names)}", 1 << 16)
        try:
            self.hw = Hardware.create(self.region, cores=CORES)
            self.cores = {i: self.hw.core(n) for n, i in CORES}
        except BaseException:
            self.region.close()
            raise
        _open_systems.append(self)

    def hsem(self, core_id: int) -> HsemApi:
        return self.cores[core_id].hsem

    def irq_pending(self, core_id: int) -> bool:
        return self.cores[core_id].is_pending(IRQ_HSEM)

    def ack_irq(self, core_id: int) -> None:
        self.cores[core_id].clear_pending(IRQ_HSEM)

    def close(self) -> None:
        if self in _open_systems:
            _open_systems.remove(self)
        self.hw.close()
        self.region.close()


@pytest.fixture(params=["reference", "real"])
def system(request: pytest.FixtureRequest) -> Any:
    sys_: System = RefSystem() if request.param == "reference" else RealSystem()
    try:
        yield sys_
    finally:
        sys_.close()


CM7, CM4, M0 = 3, 1, 2


def test_row_2step_take_of_free_semaphore_locks_it(system: System) -> None:
    assert system.hsem(CM7).take(5, 12)
    assert system.hsem(CM4).owner(5) == (CM7, 12)
    assert system.hsem(CM4).is_taken(5)


def test_row_2step_take_of_locked_semaphore_fails_and_changes_nothing(system: System) -> None:
    assert system.hsem(CM7).take(5, 12)
    assert not system.hsem(CM4).take(5, 12)
    assert not system.hsem(CM7).take(5, 13)  # same core, another process
    assert system.hsem(CM4).owner(5) == (CM7, 12)


def test_row_2step_take_again_by_the_owner_succeeds(system: System) -> None:
    assert system.hsem(CM7).take(5, 12)
    assert system.hsem(CM7).take(5, 12)  # the read-back matches what was written
    assert system.hsem(CM7).owner(5) == (CM7, 12)


def test_row_1step_take_locks_with_process_id_0(system: System) -> None:
    assert system.hsem(CM4).fast_take(0)
    assert system.hsem(CM7).owner(0) == (CM4, 0)
    assert system.hsem(CM4).fast_take(0)  # RLR reads LOCK|COREID(self): success again
    assert not system.hsem(CM7).fast_take(0)
    assert system.hsem(CM7).take(1, 0)
    assert not system.hsem(CM7).fast_take(2) or system.hsem(CM7).owner(2) == (CM7, 0)
    assert system.hsem(CM4).take(3, 7)
    assert not system.hsem(CM4).fast_take(3)  # held by this core but with PROCID 7


def test_row_release_by_owner_frees_and_notifies(system: System) -> None:
    system.hsem(CM4).activate_notification(1 << 9)
    assert system.hsem(CM7).take(9, 12)
    assert not system.irq_pending(CM4)
    system.hsem(CM7).release(9, 12)
    assert not system.hsem(CM7).is_taken(9)
    for core in (CM7, CM4, M0):
        assert system.hsem(core).isr == 1 << 9  # the status is set on every core
    assert system.irq_pending(CM4)
    assert not system.irq_pending(CM7) and not system.irq_pending(M0)  # only where enabled
    assert system.hsem(CM4).misr == 1 << 9 and system.hsem(CM7).misr == 0


def test_row_release_by_non_owner_is_ignored_and_notifies_no_one(system: System) -> None:
    system.hsem(CM7).activate_notification(0xFFFFFFFF)
    system.hsem(CM4).activate_notification(0xFFFFFFFF)
    assert system.hsem(CM7).take(4, 12)
    system.hsem(CM4).release(4, 12)  # another core
    system.hsem(CM7).release(4, 11)  # another process
    assert system.hsem(M0).owner(4) == (CM7, 12)
    assert system.hsem(CM7).isr == 0 and system.hsem(CM4).isr == 0
    assert not system.irq_pending(CM7) and not system.irq_pending(CM4)
    system.hsem(CM7).release(6, 12)  # releasing a free semaphore frees nothing either
    assert system.hsem(CM7).isr == 0


def test_row_release_all_needs_the_key(system: System) -> None:
    h = system.hsem(CM7)
    h.set_key(0x1234)
    assert system.hsem(CM4).get_key() == 0x1234  # one KEYR for the chip
    assert h.take(1, 1) and h.take(2, 2) and h.fast_take(3)
    assert system.hsem(CM4).take(4, 1)
    system.hsem(CM4).release_all(0x4321, CM7)  # wrong key: nothing
    assert all(h.is_taken(n) for n in (1, 2, 3, 4))
    system.hsem(CM4).activate_notification(0b11110)
    system.hsem(CM4).release_all(0x1234, CM7)  # any writer of CR with the key frees a core's semaphores
    assert [h.is_taken(n) for n in (1, 2, 3, 4)] == [False, False, False, True]
    assert system.hsem(M0).isr == 0b1110
    assert system.irq_pending(CM4)


def test_row_irq_handler_disables_clears_and_calls_back(system: System) -> None:
    h4 = system.hsem(CM4)
    got: list[int] = []
    h4.set_free_callback(got.append)
    h4.activate_notification((1 << 8) | (1 << 9))
    for n in (8, 9, 10):
        assert system.hsem(CM7).fast_take(n)
        system.hsem(CM7).release(n, 0)
    assert h4.isr == 0b111 << 8 and h4.misr == 0b11 << 8
    h4.irq_handler()
    assert got == [0b11 << 8]
    assert h4.ier == 0, "the handler disables the bits it served"
    assert h4.isr == 1 << 10, "only the served bits are cleared"
    h4.irq_handler()
    assert got == [0b11 << 8], "an empty MISR calls nobody"


def test_row_activating_with_status_set_interrupts_at_once(system: System) -> None:
    assert system.hsem(CM7).fast_take(0)
    system.hsem(CM7).release(0, 0)  # freed before the CM4 listens
    assert not system.irq_pending(CM4)
    system.hsem(CM4).activate_notification(1)
    assert system.irq_pending(CM4)
    system.ack_irq(CM4)
    system.hsem(CM4).clear_flag(1)
    system.hsem(CM4).deactivate_notification(1)
    system.hsem(CM4).activate_notification(1)
    assert not system.irq_pending(CM4), "a cleared status does not interrupt"


# ---- the stateful comparison --------------------------------------------------------------------

core_ids = st.sampled_from([i for _, i in CORES])
sem_ids = st.one_of(st.integers(0, 3), st.integers(0, 31))
proc_ids = st.sampled_from([0, 1, 12, 255])
keys = st.sampled_from([0, 1, 0xFFFF])
masks = st.one_of(st.integers(0, 15), st.integers(0, 0xFFFFFFFF))


class HsemComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ref = RefSystem()
        self.real = RealSystem()
        self.ref_calls: dict[int, list[int]] = {i: [] for _, i in CORES}
        self.real_calls: dict[int, list[int]] = {i: [] for _, i in CORES}
        for _, i in CORES:
            self.ref.hsem(i).set_free_callback(self.ref_calls[i].append)
            self.real.hsem(i).set_free_callback(self.real_calls[i].append)

    def teardown(self) -> None:
        self.real.close()

    @rule(core=core_ids, sem=sem_ids, proc=proc_ids)
    def take(self, core: int, sem: int, proc: int) -> None:
        assert self.real.hsem(core).take(sem, proc) == self.ref.hsem(core).take(sem, proc)

    @rule(core=core_ids, sem=sem_ids)
    def fast_take(self, core: int, sem: int) -> None:
        assert self.real.hsem(core).fast_take(sem) == self.ref.hsem(core).fast_take(sem)

    @rule(core=core_ids, sem=sem_ids, proc=proc_ids)
    def release(self, core: int, sem: int, proc: int) -> None:
        self.real.hsem(core).release(sem, proc)
        self.ref.hsem(core).release(sem, proc)

    @rule(core=core_ids, sem=sem_ids)
    def release_own(self, core: int, sem: int) -> None:
        owner = self.ref.hsem(core).owner(sem)
        if owner is not None:
            self.real.hsem(owner[0]).release(sem, owner[1])
            self.ref.hsem(owner[0]).release(sem, owner[1])

    @rule(writer=core_ids, key=keys, cleared=st.one_of(core_ids, st.just(7)))
    def release_all(self, writer: int, key: int, cleared: int) -> None:
        self.real.hsem(writer).release_all(key, cleared)
        self.ref.hsem(writer).release_all(key, cleared)

    @rule(core=core_ids, key=keys)
    def set_key(self, core: int, key: int) -> None:
        self.real.hsem(core).set_key(key)
        self.ref.hsem(core).set_key(key)

    @rule(core=core_ids, mask=masks)
    def activate(self, core: int, mask: int) -> None:
        self.real.hsem(core).activate_notification(mask)
        self.ref.hsem(core).activate_notification(mask)

    @rule(core=core_ids, mask=masks)
    def deactivate(self, core: int, mask: int) -> None:
        self.real.hsem(core).deactivate_notification(mask)
        self.ref.hsem(core).deactivate_notification(mask)

    @rule(core=core_ids, mask=masks)
    def clear_flag(self, core: int, mask: int) -> None:
        self.real.hsem(core).clear_flag(mask)
        self.ref.hsem(core).clear_flag(mask)

    @rule(core=core_ids)
    def irq_handler(self, core: int) -> None:
        self.real.hsem(core).irq_handler()
        self.ref.hsem(core).irq_handler()
        assert self.real_calls[core] == self.ref_calls[core]

    @rule(core=core_ids)
    def ack_irq(self, core: int) -> None:
        self.real.ack_irq(core)
        self.ref.ack_irq(core)

    @invariant()
    def registers_agree(self) -> None:
        real, ref = self.real.hsem(CM7), self.ref.hsem(CM7)
        for n in range(32):
            assert real.owner(n) == ref.owner(n), n
            assert real.is_taken(n) == ref.is_taken(n), n
        assert real.get_key() == ref.get_key()
        for _, i in CORES:
            r, m = self.real.hsem(i), self.ref.hsem(i)
            assert (r.ier, r.isr, r.misr) == (m.ier, m.isr, m.misr), i
            assert self.real.irq_pending(i) == self.ref.irq_pending(i), i
        assert self.real_calls == self.ref_calls


TestHsemComparison = HsemComparison.TestCase
TestHsemComparison.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---- bad input and bad shared memory ------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.take(32, 0),
        lambda h: h.take(-1, 0),
        lambda h: h.take(0, 256),
        lambda h: h.take(0, True),
        lambda h: h.fast_take("1"),
        lambda h: h.release(0, -1),
        lambda h: h.release_all(0x10000, 3),
        lambda h: h.release_all(0, 16),
        lambda h: h.set_key(-1),
        lambda h: h.activate_notification(1 << 32),
        lambda h: h.deactivate_notification(-1),
        lambda h: h.is_taken(40),
        lambda h: h.owner(32),
    ],
)
def test_bad_values_raise_value_error(call: Callable[[HsemApi], object]) -> None:
    real = RealSystem()
    try:
        with pytest.raises(ValueError):
            call(real.hsem(CM7))
    finally:
        real.close()


@pytest.mark.parametrize(
    "cores",
    [(), tuple((f"C{i}", i) for i in range(9)), (("A", 1), ("B", 1)), (("A", 1), ("A", 2)), (("A", 16),),
     (("bad name", 1),), (("A" * 24, 1),)],
)
def test_bad_core_tables_are_refused(region: Region, cores: tuple[tuple[str, int], ...]) -> None:
    with pytest.raises(ValueError):
        Hardware.create(region, cores=cores)


def test_attach_validates_shared_memory(region: Region) -> None:
    with pytest.raises(ObjectNotFound):
        Hardware.attach(region)
    hw = Hardware.create(region, cores=(("A", 1), ("B", 2), ("C", 3)))
    again = Hardware.attach(region)
    assert [(c.name, c.core_id, c.index) for c in again.cores] == [("A", 1, 0), ("B", 2, 1), ("C", 3, 2)]
    base = region.lookup("hw").offset
    m = region.mapping
    m.store_u32(base + 8, 9)  # core count beyond the 8 the layout has room for
    with pytest.raises(CorruptRegion) as info:
        Hardware.attach(region)
    assert info.value.field == "core count"
    m.store_u32(base + 8, 3)
    m.store_u32(base + 64 + 24, 99)  # a core id that no HSEM register can hold
    with pytest.raises(CorruptRegion):
        Hardware.attach(region)
    m.store_u32(base + 64 + 24, 1)
    m.store_u32(base, 0xDEADBEEF)
    with pytest.raises(IncompatibleRegion):
        Hardware.attach(region)
    with pytest.raises(ValueError):
        hw.core("D")
    hw.close()
