"""The C halves of the built-in strategies against their Python reference, and the line serviced by
the blocked task.

Mirror tests: two identical regions; in one the C hooks (Notifier) and the C handler (TaskIsr) run,
in the other the Python reference (the hook each Notifier stands for, and the strategy's handler as
the dispatcher would run it). After every step the two regions' bytes must be identical.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from notify_workers import TIMEOUT

from ampipc import Region
from ampipc import _layout as L
from ampipc.hw import _regs as R
from ampipc.ipc import Ipc
from ampipc.notify import StrategyOptions
from ampipc.notify.base import EventKind

STRATEGIES = ["toggle", "control", "hsem"]


@contextmanager
def _pair(name: str, strategy: str, options: StrategyOptions) -> Iterator[tuple[Region, Ipc, Ipc]]:
    with Region.create(name, 1 << 20) as region:
        with Ipc.init(region, channels=3, buffer_size=200, strategy=strategy, options=options) as cm7, \
                Ipc.attach(region, core="CM4") as cm4:
            cm7.strategy.install()  # hooks and handlers, without starting the dispatchers
            cm4.strategy.install()
            yield region, cm7, cm4


def _python_dispatch(ipc: Ipc, line: int) -> None:
    """What the dispatcher does for one line: take its pending bit, run the Python handler, count it."""
    core = ipc.core
    m = core._mapping
    if not m.fetch_and_u32(core._block + R.C_PENDING, ~(1 << line) & R.WORD_MASK) & (1 << line):
        return
    handler = core._handler_for(line)
    assert handler is not None
    handler[1](line)
    m.fetch_add_u64(core._block + R.C_HANDLED, 1)


def _protocol_bytes(region: Region) -> bytes:
    """The region's bytes without the hints only the C half keeps: the rings' CPU words (for the spin
    policy) and the cores' unwoken-lines words (for its quiet raises)."""
    image = bytearray(region.view)
    for entry in region.objects():
        if entry.kind in (L.KIND_MESSAGE_BUFFER, L.KIND_STREAM_BUFFER):
            for off in (L.RING_OFF_WRITER_CPU, L.RING_OFF_READER_CPU):
                image[entry.offset + off : entry.offset + off + 4] = bytes(4)
        if entry.kind == R.HW_KIND:
            at = entry.offset + R.OFF_LINES_UNWOKEN
            image[at : at + 4 * R.MAX_CORES] = bytes(4 * R.MAX_CORES)
    return bytes(image)


def _use_python_hooks(ipc: Ipc) -> None:
    for b, kind in ipc.strategy._outgoing():
        hook = b.buffer.on_send_completed if kind is EventKind.DATA_SENT else b.buffer.on_receive_completed
        ipc.strategy._set_hook(b.buffer, kind, hook.fallback)  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(3))
def test_c_half_leaves_the_same_bytes_as_the_reference(region_name: str, strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    line = R.IRQ_HSEM if strategy == "hsem" else StrategyOptions().irq_line
    options = StrategyOptions(control_records=2) if strategy == "control" else StrategyOptions()
    with _pair(region_name + "c", strategy, options) as (rc, c7, c4), \
            _pair(region_name + "p", strategy, options) as (rp, p7, p4):
        _use_python_hooks(p7)
        assert _protocol_bytes(rc) == _protocol_bytes(rp)
        for step in range(300):
            op = rng.random()
            channel = rng.randrange(3)
            if op < 0.6:  # a CM7 send: DATA_SENT through the hook
                payload = bytes([step & 0xFF]) * rng.randrange(1, 40)
                assert c7.try_send(channel, payload) == p7.try_send(channel, payload)
            elif op < 0.8:  # the CM4 handles its line: C TaskIsr here, Python handler there
                assert c4.strategy._task_isr is not None
                c4.strategy._task_isr()
                _python_dispatch(c4, line)  # what the task leaves (an overflow recovery) the dispatcher does
                _python_dispatch(p4, line)
            else:  # the CM4 drains a channel (its receive hooks: space-freed, raised only for a waiting writer)
                c4.rx_buffer(channel).on_receive_completed = None
                p4.rx_buffer(channel).on_receive_completed = None
                assert c4.try_receive(channel) == p4.try_receive(channel)
            assert _protocol_bytes(rc) == _protocol_bytes(rp), f"step {step}: the C half diverged from the reference"
        c_stats, p_stats = c4.strategy.statistics(), p4.strategy.statistics()
        assert c_stats["events_handled"] == p_stats["events_handled"] > 0
        assert c_stats["interrupts"] == p_stats["interrupts"] and c_stats["serviced_by_task"] > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blocked_task_services_its_line(region: Region, strategy: str) -> None:
    """The reader blocks; the writer's C hook rings; the reader's own thread runs the handler."""
    with Ipc.init(region, channels=1, buffer_size=128, strategy=strategy) as cm7, Ipc.attach(region, core="CM4") as cm4:
        cm7.start()
        cm4.start()
        cm4.rx_buffer(0).spin = cm7.rx_buffer(0).spin = 0.0
        got: list[bytes] = []

        def echo() -> None:
            for _ in range(500):
                got.append(cm4.receive(0, timeout=TIMEOUT))
                cm4.send(0, got[-1], timeout=TIMEOUT)

        t = threading.Thread(target=echo)
        t.start()
        for k in range(500):
            cm7.send(0, b"%d" % k, timeout=TIMEOUT)
            assert cm7.receive(0, timeout=TIMEOUT) == b"%d" % k
        t.join(TIMEOUT)
        assert got == [b"%d" % k for k in range(500)]
        served = cm7.strategy.statistics()["serviced_by_task"] + cm4.strategy.statistics()["serviced_by_task"]
        assert served > 0, "no blocked task ever serviced its line"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_task_services_the_line_inside_a_critical_section(region: Region, strategy: str) -> None:
    with Ipc.init(region, channels=1, buffer_size=128, strategy=strategy) as cm7, Ipc.attach(region, core="CM4") as cm4:
        cm7.start()
        cm4.start()
        result: list[Any] = []
        started = threading.Event()

        def receive() -> None:
            started.set()
            result.append(cm4.receive(0, timeout=TIMEOUT))

        with cm4.core.critical_section():  # "interrupts disabled" on the CM4
            t = threading.Thread(target=receive)
            t.start()
            started.wait(TIMEOUT)
            before = cm4.strategy.statistics()["interrupts"]
            cm7.send(0, b"held", timeout=TIMEOUT)
            # the doorbell is raised, but neither the dispatcher nor the blocked task may serve it yet
            line = R.IRQ_HSEM if strategy == "hsem" else cm4.options.irq_line
            deadline = threading.Event()
            while not cm4.core.is_pending(line) and not deadline.wait(0.001):
                pass
            assert result == [] and cm4.strategy.statistics()["interrupts"] == before
        t.join(TIMEOUT)
        assert result == [b"held"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_data_event_nobody_waits_for_raises_the_line_quietly_and_a_later_waiter_still_wakes(
    region_name: str, strategy: str
) -> None:
    line = R.IRQ_HSEM if strategy == "hsem" else StrategyOptions().irq_line
    bit = 1 << line
    with _pair(region_name, strategy, StrategyOptions()) as (region, c7, c4):
        m = region.mapping
        hw = c7.hardware
        index = hw.core_info("CM4").index
        pending = hw._base + R.core_block(index) + R.C_PENDING
        raised = hw._base + R.core_block(index) + R.C_RAISED
        unwoken = hw._base + R.lines_unwoken(index)
        assert c7.try_send(0, b"first")  # no reader waits on the CM4's channel 0
        assert m.load_u32(pending) & bit, "the line is raised all the same"
        assert m.load_u32(unwoken) & bit, "and marked: nobody was woken for it"
        count = m.load_u64(raised)
        assert c7.try_send(1, b"second")  # merges into the pending line
        assert m.load_u32(unwoken) & bit
        # a reader announces itself on channel 0, as every waiter does; the next event on channel 0
        # merges into the one still pending, and must raise the line again to wake it (toggle, control)
        waiting = c4._rx[0].offset + L.RING_OFF_RX_WAITING
        m.store_u32(waiting, 1)
        before = m.load_u64(raised)
        assert c7.try_send(0, b"third")
        assert m.load_u64(raised) > before, "a waiting reader's event is raised, merged or not"
        assert m.load_u32(unwoken) & bit, "the mark stays until the line is taken"
        m.store_u32(waiting, 0)
        assert m.load_u64(raised) > count
        assert c4.strategy._task_isr is not None
        assert c4.strategy._task_isr(), "the task services the pending line"
        assert not m.load_u32(pending) & bit and not m.load_u32(unwoken) & bit, "taking the line clears the mark"
        assert c4.try_receive(0) == b"first" and c4.try_receive(1) == b"second" and c4.try_receive(0) == b"third"
        # the Python raise also wakes when it merges into a quietly raised line (the mark is read)
        assert c7.try_send(2, b"fourth")
        assert m.load_u32(unwoken) & bit
        c7.core.raise_interrupt(line, target="CM4")
        assert m.load_u32(unwoken) & bit
        assert c4.try_receive(2) == b"fourth"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_selector_waiting_beside_a_busy_channel_gets_every_message(region_name: str, strategy: str) -> None:
    """Channel 0 is never waited on (its raises are quiet); a thread selects on channel 1 meanwhile."""
    from ampipc import READABLE, Channel, Selector

    count = 2000
    with Region.create(region_name, 1 << 20) as region, \
            Ipc.init(region, channels=2, buffer_size=200, strategy=strategy) as c7, \
            Ipc.attach(region, core="CM4") as c4:
        c7.start()
        c4.start()
        got: list[bytes] = []
        failure: list[BaseException] = []

        def selecting() -> None:
            try:
                with Selector() as selector:
                    selector.register(Channel(c4, 1), READABLE)
                    while len(got) < count:
                        for _key, _events in selector.select(timeout=TIMEOUT):
                            message = c4.try_receive(1)
                            if message is not None:
                                got.append(message)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failure.append(exc)

        thread = threading.Thread(target=selecting)
        thread.start()
        try:
            for i in range(count):
                if i % 2 == 0:  # a quiet raise first: nobody waits on channel 0
                    c7.send(0, b"busy %d" % i, timeout=TIMEOUT)
                c7.send(1, b"selected %d" % i, timeout=TIMEOUT)
                if i % 2 == 0:
                    assert c4.try_receive(0) == b"busy %d" % i
        finally:
            thread.join(TIMEOUT * 4)
        assert not thread.is_alive() and not failure, failure
        assert got == [b"selected %d" % i for i in range(count)]
