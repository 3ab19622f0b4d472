"""Interrupt lines, the dispatcher, priorities, the critical section and ISR context."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ampipc import BlockingInIsr, MessageBuffer, Region
from ampipc.hw import IRQ_HSEM, Core, Hardware

from ._support import (
    GENEROUS,
    Words,
    hsem_doorbell_worker,
    irq_pingpong_worker,
    raise_lines_worker,
    wait_until,
)


@pytest.fixture
def hw(region: Region) -> Iterator[Hardware]:
    hardware = Hardware.create(region)
    try:
        yield hardware
    finally:
        hardware.close()
        leftover = [t.name for t in threading.enumerate() if t.name.startswith("ampipc-irq-")]
        assert not leftover, f"dispatcher threads left running: {leftover}"


def test_lines_raised_from_another_process_run_in_the_dispatcher(region: Region, hw: Hardware, spawn: Any) -> None:
    """2000 ping-pong rounds: CM7 (child) raises line 7 on CM4 (here); the handler answers on line 8."""
    words = Words.create(region)
    cm4 = hw.core("CM4")
    rounds = 2000
    seen: list[int] = []
    contexts: set[tuple[str, bool]] = set()

    def on_ring(line: int) -> None:
        assert line == 7
        contexts.add((threading.current_thread().name, Core.in_isr()))
        seq = words.load(0)
        seen.append(seq)
        words.store(1, seq)
        cm4.raise_interrupt(8, target="CM7")

    cm4.attach_handler(7, on_ring)
    cm4.start()
    child = spawn(irq_pingpong_worker, region.name, rounds)
    assert spawn.join(child) == 0
    assert seen == list(range(1, rounds + 1))
    assert contexts == {("ampipc-irq-CM4", True)}
    assert not Core.in_isr()
    assert cm4.statistics().handlers_run == rounds


def test_hsem_free_interrupts_reach_the_other_process(region: Region, hw: Hardware, spawn: Any) -> None:
    """1500 "take + release" doorbells on HSEM 8 from a child CM7; the CM4's free callback re-arms."""
    words = Words.create(region)
    cm4 = hw.core("CM4")
    masks: list[int] = []
    order: list[int] = []

    def free_callback(mask: int) -> None:
        assert Core.in_isr()
        cm4.hsem.activate_notification(mask)  # as every HAL_HSEM_FreeCallback does first
        masks.append(mask)
        seq = words.load(0)
        order.append(seq)
        words.set_and_wake(1, seq)

    cm4.hsem.set_free_callback(free_callback)
    cm4.hsem.enable_irq()
    cm4.hsem.activate_notification(1 << 8)
    cm4.start()
    rounds = 1500
    child = spawn(hsem_doorbell_worker, region.name, rounds, 8)
    assert spawn.join(child) == 0
    assert order == list(range(1, rounds + 1))
    assert set(masks) == {1 << 8}


def test_priority_order_with_lines_raised_while_interrupts_are_disabled(
    region: Region, hw: Hardware, spawn: Any
) -> None:
    cm4 = hw.core("CM4")
    rng = random.Random(7)
    lines = list(range(4, 20))
    priorities = {line: rng.choice([0, 3, 5, 5, 9, 15]) for line in lines}
    ran: list[int] = []
    for line in lines:
        cm4.attach_handler(line, ran.append, priority=priorities[line])
    cm4.start()
    raised = lines[:]
    rng.shuffle(raised)
    with cm4.critical_section():
        child = spawn(raise_lines_worker, region.name, "CM4", raised)
        assert spawn.join(child) == 0
        assert cm4.pending == sum(1 << line for line in lines)  # all still pending: nothing ran
        assert ran == []
    wait_until(lambda: len(ran) == len(lines), what="the handlers")
    assert ran == sorted(lines, key=lambda line: (priorities[line], line))
    assert cm4.pending == 0


def test_a_higher_priority_line_raised_by_a_handler_runs_before_waiting_lower_ones(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    ran: list[int] = []

    def low(line: int) -> None:
        ran.append(line)
        if line == 10:
            cm7.raise_interrupt(5)  # priority 0: runs before line 11, which is still waiting

    cm7.attach_handler(10, low, priority=8)
    cm7.attach_handler(11, low, priority=9)
    cm7.attach_handler(5, ran.append, priority=0)
    with cm7.critical_section():
        cm7.raise_interrupt(11)
        cm7.raise_interrupt(10)
        cm7.start()
    wait_until(lambda: len(ran) == 3, what="the handlers")
    assert ran == [10, 5, 11]


def test_critical_section_defers_handlers_and_nests(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    ran = threading.Event()
    cm7.attach_handler(4, lambda line: ran.set())
    cm7.start()
    with cm7.critical_section():
        with cm7.critical_section():
            cm7.raise_interrupt(4)
            assert cm7.is_pending(4)
        assert not ran.is_set() and cm7.is_pending(4)
    assert ran.wait(GENEROUS)
    assert not cm7.is_pending(4)


def test_critical_section_inside_a_handler_does_not_deadlock(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    done = threading.Event()

    def handler(line: int) -> None:
        with cm7.critical_section():
            done.set()

    cm7.attach_handler(6, handler)
    cm7.start()
    cm7.raise_interrupt(6)
    assert done.wait(GENEROUS)


def test_blocking_calls_in_a_handler_raise_blocking_in_isr(region: Region, hw: Hardware) -> None:
    cm4 = hw.core("CM4")
    buffer = MessageBuffer.create(region, "isr-mb", 64)
    outcomes: list[object] = []
    done = threading.Event()

    def handler(line: int) -> None:
        for call in (
            lambda: buffer.send(b"blocking", timeout=1.0),
            lambda: buffer.send(b"forever"),
            lambda: buffer.receive(timeout=None),
            lambda: cm4.wfe(1.0),
        ):
            try:
                call()
                outcomes.append("no error")
            except BlockingInIsr as exc:
                outcomes.append(type(exc))
        outcomes.append(buffer.try_send(b"from isr"))
        outcomes.append(cm4.try_wfe())
        done.set()

    cm4.attach_handler(9, handler)
    cm4.start()
    hw.core("CM7").raise_interrupt(9, target="CM4")
    assert done.wait(GENEROUS)
    assert outcomes == [BlockingInIsr] * 4 + [True, False]
    assert buffer.try_receive() == b"from isr"


def test_a_failing_handler_is_reported_and_the_dispatcher_goes_on(
    hw: Hardware, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    cm7 = hw.core("CM7")
    ok = threading.Event()

    def bad(line: int) -> None:
        raise RuntimeError("handler failure")

    cm7.attach_handler(12, bad)
    cm7.attach_handler(13, lambda line: ok.set())
    cm7.start()
    cm7.raise_interrupt(12)
    cm7.raise_interrupt(13)
    assert ok.wait(GENEROUS)
    assert cm7.handler_errors == 1
    assert len(reported) == 1 and isinstance(reported[0].exc_value, RuntimeError)
    assert cm7.running


def test_lines_without_a_handler_stay_pending_until_one_is_attached(hw: Hardware) -> None:
    cm4 = hw.core("CM4")
    cm4.start()
    cm4.raise_interrupt(20)
    assert cm4.is_pending(20)
    got = threading.Event()
    cm4.attach_handler(20, lambda line: got.set())
    assert got.wait(GENEROUS)
    cm4.detach_handler(20)
    cm4.raise_interrupt(20)
    assert cm4.is_pending(20)
    cm4.clear_pending(20)
    assert not cm4.is_pending(20)


def test_start_is_idempotent_and_stop_joins(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    assert hw.core("CM7") is cm7
    cm7.start()
    cm7.start()
    assert sum(t.name == "ampipc-irq-CM7" for t in threading.enumerate()) == 1
    cm7.stop()
    assert not cm7.running
    cm7.stop()
    cm7.start()
    assert cm7.running
    hw.close()
    assert not cm7.running


def test_stop_from_inside_a_handler(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    cm7.attach_handler(4, lambda line: cm7.stop())
    cm7.start()
    cm7.raise_interrupt(4)
    wait_until(lambda: not cm7.running, what="the dispatcher to stop itself")


def test_bad_interrupt_arguments(hw: Hardware) -> None:
    cm7 = hw.core("CM7")
    with pytest.raises(ValueError):
        cm7.raise_interrupt(32)
    with pytest.raises(ValueError):
        cm7.raise_interrupt(-1)
    with pytest.raises(ValueError):
        cm7.raise_interrupt(1, target="CM9")
    with pytest.raises(ValueError):
        cm7.attach_handler(1, print, priority=-1)
    with pytest.raises(ValueError):
        cm7.attach_handler(1, print, priority=256)
    with pytest.raises(TypeError):
        cm7.attach_handler(1, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cm7.wfe(-1)
    with pytest.raises(ValueError):
        cm7.generate_sw_interrupt(2)
    with pytest.raises(ValueError):
        cm7.exti_enable(5)
    assert IRQ_HSEM == 0
