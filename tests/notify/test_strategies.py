"""Strategy-specific behaviour: control overflow reporting, toggle sends from ISR and task, Ipc errors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from notify_workers import (
    TIMEOUT,
    cm4_exchange,
    cm4_isr_and_task_sender,
    exchange,
    payload,
)

from ampipc import MessageBuffer, ObjectNotFound, Region, RegionFull
from ampipc.hw import Hardware
from ampipc.ipc import Ipc
from ampipc.notify import DataBuffer, EndpointSpec, StrategyOptions
from ampipc.notify.base import EventKind
from ampipc.notify.control import ControlStrategy, encode_record


def test_control_overflow_is_reported_and_recovered(region: Region, spawn: Callable[..., tuple[Any, Any]]) -> None:
    """A control buffer of one record for 8 channels overflows; every overflow is counted and reported,
    the receiver rescans, and every message still arrives in order."""
    reports: list[tuple[str, int]] = []
    lock = threading.Lock()

    def on_error(message: str, buffer_id: int) -> None:
        with lock:
            reports.append((message, buffer_id))

    options = StrategyOptions(control_records=1)
    with Ipc.init(region, channels=8, buffer_size=80, strategy="control", options=options, on_error=on_error) as ipc:
        ipc.start()
        child, results = spawn(cm4_exchange, region.name, 2000)
        mine = exchange(ipc, 2000)
        theirs = results.get(timeout=TIMEOUT * 4)
        child.join(TIMEOUT)
        stats = ipc.strategy_statistics()
    assert mine["errors"] == [] and theirs["errors"] == []
    assert mine["received"] == theirs["received"] == 16000
    overflows = stats["overflows"] + theirs["strategy"]["overflows"]
    assert overflows > 0, "a one-record control buffer under 8 busy channels never overflowed"
    assert stats["overflows"] == len(reports) == stats["errors"]
    assert all("is full" in m and "control_records" in m for m, _ in reports)
    # the shared counters agree with what each side counted and reported
    assert stats["shared_overflows_out"] == stats["overflows"]
    assert stats["shared_overflows_in"] == theirs["strategy"]["overflows"]
    assert stats["overflow_recoveries"] + theirs["strategy"]["overflow_recoveries"] > 0


def test_control_overflow_single_process(region: Region) -> None:
    """Without the receiving core running, the second record cannot fit: reported at once."""
    hw = Hardware.create(region)
    try:
        buffers = [MessageBuffer.create(region, f"d{i}", 64) for i in range(2)]
        specs = [EndpointSpec(i, "CM7", "CM4") for i in range(2)]
        ControlStrategy.prepare(region, "t", specs, StrategyOptions(control_records=1))
        reports: list[int] = []
        s = ControlStrategy(
            region, "t", hw.core("CM7"), [DataBuffer(sp, b) for sp, b in zip(specs, buffers)],
            StrategyOptions(control_records=1), on_error=lambda m, b: reports.append(b),
        )
        s.install()
        try:
            buffers[0].send(b"a")  # record 1 fits
            buffers[0].send(b"b")  # coalesced: a record for buffer 0 is in flight
            buffers[1].send(b"c")  # no room: overflow
            st = s.statistics()
            assert (st["events_raised"], st["events_coalesced"], st["overflows"]) == (1, 1, 1)
            assert reports == [1]
            assert s.overflow_count("CM7", "CM4") == 1
        finally:
            s.uninstall()
    finally:
        hw.close()


def test_toggle_sends_from_isr_and_task_at_once(region: Region, spawn: Callable[..., tuple[Any, Any]]) -> None:
    messages = 5000
    with Ipc.init(region, channels=2, buffer_size=120, strategy="toggle") as ipc:
        ipc.start()
        child, results = spawn(cm4_isr_and_task_sender, region.name, messages)
        got: dict[int, list[bytes]] = {0: [], 1: []}

        def reader(c: int) -> None:
            for _ in range(messages):
                got[c].append(ipc.receive(c, timeout=TIMEOUT))

        threads = [threading.Thread(target=reader, args=(c,)) for c in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 2)
        out = results.get(timeout=TIMEOUT)
        child.join(TIMEOUT)
    assert out["errors"] == []
    assert out["isr_sent"] == messages and not out["task_alive"]
    for c in (0, 1):
        assert got[c] == [payload("CM4", c, k) for k in range(messages)]


def test_ipc_checks_arguments_and_room(region_name: str) -> None:
    with Region.create(region_name, 1 << 16) as small:
        with pytest.raises(RegionFull, match="use fewer channels"):
            Ipc.init(small, channels=64, buffer_size=640)
        with pytest.raises(ValueError, match="unknown notification strategy"):
            Ipc.init(small, channels=1, strategy="pigeon")
        with pytest.raises(ValueError, match="channels must be"):
            Ipc.init(small, channels=0)
        with pytest.raises(ValueError, match="buffer_size"):
            Ipc.init(small, channels=1, buffer_size=4)
        with pytest.raises(ObjectNotFound):
            Ipc.attach(small, core="CM4")
        with Ipc.init(small, channels=2, buffer_size=64, strategy="toggle") as ipc:
            with pytest.raises(ValueError, match="channel must be 0..1"):
                ipc.send(2, b"x")
            with pytest.raises(ValueError, match="attach as 'CM4'"):
                Ipc.attach(small, core="CM7")
            with Ipc.attach(small, core="CM4") as other:
                assert (other.channels, other.buffer_size, other.strategy_name, other.peer) == (2, 64, "toggle", "CM7")
                ipc.start()
                other.start()
                assert ipc.send_from_isr(1, b"hello") is True
                assert other.receive(1, timeout=TIMEOUT) == b"hello"
                other.send(0, b"back", timeout=TIMEOUT)
                assert ipc.receive(0, timeout=TIMEOUT) == b"back"
                assert ipc.try_receive(0) is None


def test_control_handler_drains_a_control_buffer_its_writer_closed(region: Region) -> None:
    """A writer core tearing down closes its control buffer with a record still in it: the receiving
    core's handler takes the record, wakes the reader, and sees the closed buffer as drained."""
    hw = Hardware.create(region)
    try:
        buffer = MessageBuffer.create(region, "d0", 64)
        specs = [EndpointSpec(0, "CM7", "CM4")]
        ControlStrategy.prepare(region, "t", specs, StrategyOptions())
        sides = {
            core: ControlStrategy(region, "t", hw.core(core), [DataBuffer(specs[0], buffer)], StrategyOptions())
            for core in ("CM7", "CM4")
        }
        for s in sides.values():
            s.install()
        try:
            control = sides["CM7"].control[("CM7", "CM4")]
            buffer.try_send(b"last")  # the hook raises its DATA_SENT record straight into the ring
            # The CM7's Python path writes a record of its own (as its fallback does), which makes
            # this object the writer, and then leaves before the CM4's handler ran.
            assert control.try_send(encode_record(0, EventKind.DATA_SENT))
            control.close()
            handled = sides["CM4"].statistics()["events_handled"]
            sides["CM4"]._isr(sides["CM4"].options.irq_line)  # noqa: SLF001 - the handler the line runs
            assert sides["CM4"].statistics()["events_handled"] == handled + 2
            assert buffer.try_receive() == b"last"
        finally:
            for s in sides.values():
                s.uninstall()
    finally:
        hw.close()
