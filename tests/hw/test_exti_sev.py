"""SEV / WFE events and EXTI software interrupts, within a process and across processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ampipc import Region
from ampipc.hw import IRQ_EXTI0, IRQ_EXTI1, IRQ_SEV, Hardware

from ._support import GENEROUS, READY, Words, exti_worker, sev_pingpong_worker


@pytest.fixture
def hw(region: Region) -> Iterator[Hardware]:
    hardware = Hardware.create(region, cores=(("CM7", 3), ("CM4", 1), ("M0", 2)))
    try:
        yield hardware
    finally:
        hardware.close()


def test_sev_wfe_ping_pong_across_processes(region: Region, hw: Hardware, spawn: Any) -> None:
    """1000 strictly alternating rounds; an event is a single latched bit, so each must arrive."""
    words = Words.create(region)
    cm7 = hw.core("CM7")
    rounds = 1000
    child = spawn(sev_pingpong_worker, region.name, rounds)
    words.wait_for(READY, 1)
    for seq in range(1, rounds + 1):
        words.store(0, seq)
        cm7.sev()
        assert cm7.wfe(GENEROUS), f"no answer to round {seq}"
        assert words.load(1) == seq
    assert spawn.join(child) == 0
    assert hw.core("CM4").statistics().events_received == rounds


def test_sev_reaches_every_other_core_but_not_the_sender(hw: Hardware) -> None:
    cm7, cm4, m0 = hw.core("CM7"), hw.core("CM4"), hw.core("M0")
    cm7.sev()
    assert cm4.try_wfe() and m0.try_wfe()
    assert not cm7.try_wfe()
    assert not cm4.try_wfe(), "WFE consumes the event"
    cm7.sev()
    cm7.sev()
    assert cm4.wfe(GENEROUS)
    assert not cm4.wfe(0.01), "events latch in one bit: two SEVs make one event"


def test_event_mask_and_sev_interrupt_mask(hw: Hardware) -> None:
    cm7, cm4 = hw.core("CM7"), hw.core("CM4")
    cm4.set_event_mask(False)
    cm7.sev()
    assert not cm4.try_wfe()
    assert not cm4.is_pending(IRQ_SEV), "SEV interrupts start masked"
    cm4.set_sev_interrupt_mask(True)
    cm7.sev()
    assert cm4.is_pending(IRQ_SEV) and not cm4.try_wfe()
    cm4.clear_pending(IRQ_SEV)
    cm4.set_event_mask(True)
    cm4.set_sev_interrupt_mask(False)
    cm7.sev()
    assert cm4.try_wfe() and not cm4.is_pending(IRQ_SEV)


def test_unmasked_sev_runs_the_sev_handler(hw: Hardware) -> None:
    cm4 = hw.core("CM4")
    got = threading.Event()
    cm4.attach_handler(IRQ_SEV, lambda line: got.set())
    cm4.set_sev_interrupt_mask(True)
    cm4.start()
    hw.core("M0").sev()
    assert got.wait(GENEROUS)


def test_wfe_times_out_without_an_event(hw: Hardware) -> None:
    assert hw.core("CM4").wfe(0.05) is False


def test_wfe_is_woken_by_a_sev_from_another_thread(hw: Hardware) -> None:
    cm4 = hw.core("CM4")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(cm4.wfe(GENEROUS)))
    waiter.start()
    try:
        hw.core("CM7").sev()
    finally:
        waiter.join(GENEROUS)
    assert result == [True]


def test_exti_software_interrupt_reaches_only_enabled_cores(hw: Hardware) -> None:
    cm7, cm4, m0 = hw.core("CM7"), hw.core("CM4"), hw.core("M0")
    cm7.generate_sw_interrupt(0)
    assert not any(c.is_pending(IRQ_EXTI0) for c in (cm7, cm4, m0)), "EXTI inputs start disabled"
    # the FreeRTOS AMP demo: the CM7 disables its own input and enables the CM4's, then raises
    cm7.exti_enable(0, False)
    cm7.exti_enable(0, True, target="CM4")
    assert cm4.exti_enabled(0) and not cm7.exti_enabled(0)
    cm7.generate_sw_interrupt(0)
    assert cm4.is_pending(IRQ_EXTI0)
    assert not cm7.is_pending(IRQ_EXTI0) and not m0.is_pending(IRQ_EXTI0)
    assert not cm4.is_pending(IRQ_EXTI1)
    m0.exti_enable(1)
    cm4.generate_sw_interrupt(1)
    assert m0.is_pending(IRQ_EXTI1) and not cm4.is_pending(IRQ_EXTI1)


def test_exti_doorbell_across_processes(region: Region, hw: Hardware, spawn: Any) -> None:
    words = Words.create(region)
    cm4 = hw.core("CM4")
    cm4.exti_enable(0)
    seen: list[int] = []

    def on_exti0(line: int) -> None:
        assert line == IRQ_EXTI0
        seq = words.load(0)
        seen.append(seq)
        words.set_and_wake(1, seq)

    cm4.attach_handler(IRQ_EXTI0, on_exti0)
    cm4.start()
    times = 1000
    child = spawn(exti_worker, region.name, 0, times)
    assert spawn.join(child) == 0
    assert seen == list(range(1, times + 1))
