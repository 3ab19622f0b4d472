"""``ampipc top``: the snapshot of a region with known counters, the plain and JSON outputs, and the
live view driven through textual's pilot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.widgets import DataTable

from ampipc import Ipc, MessageBuffer, Region, StreamBuffer
from ampipc.hw import Hardware
from ampipc.tools.snapshot import RegionSnapshot, rates, snapshot_to_json, take_snapshot
from ampipc.tools.top import fill_bar, make_app, render_text, sorted_buffers

pytestmark = pytest.mark.timeout(180)


def _writer_child(region_name: str, release_name: str) -> None:
    """Write one message as the writer of ``remote``, then wait until the test lets go."""
    with Region.attach(region_name) as region:
        MessageBuffer.attach(region, "remote").send(b"from the child", timeout=30)
        MessageBuffer.attach(region, release_name).receive(timeout=60)


@pytest.fixture
def system(region: Region) -> Iterator[tuple[Region, Hardware]]:
    """A region with known counters: buffers, a stream, HSEM owners, pending lines, a channel set."""
    telemetry = MessageBuffer.create(region, "telemetry", 100)
    for i in range(3):
        telemetry.send(bytes([i]) * 10)
    assert telemetry.receive() == b"\x00" * 10
    log = StreamBuffer.create(region, "log", 64, trigger_level=8)
    assert log.write(b"x" * 20) == 20
    MessageBuffer.create(region, "remote", 64)
    MessageBuffer.create(region, "release", 16)
    with Hardware.create(region) as hw:
        assert hw.core("CM4").hsem.take(5, 7)
        hw.core("CM7").hsem.activate_notification(1 << 9)
        hw.core("CM7").raise_interrupt(6, target="CM4")
        hw.core("CM7").raise_interrupt(6, target="CM4")  # merges with the pending one, counted twice
        hw.core("CM7").exti_enable(1, target="CM4")
        ipc = Ipc.init(region, channels=2, strategy="control", hardware=hw)
        try:
            yield region, hw
        finally:
            ipc.close()


def _buffer(snap: RegionSnapshot, name: str) -> Any:
    return next(b for b in snap.buffers if b.name == name)


def test_snapshot_reports_the_known_counters(system: tuple[Region, Hardware], spawn: Any) -> None:
    region, _ = system
    child = spawn(_writer_child, region.name, "release")
    remote = MessageBuffer.attach(region, "remote")
    deadline = time.monotonic() + 60
    while remote.is_empty:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    snap = take_snapshot(region)

    t = _buffer(snap, "telemetry")
    assert (t.kind, t.capacity, t.used) == ("message_buffer", 100, 28)
    assert (t.statistics.messages_sent, t.statistics.bytes_sent, t.statistics.messages_received) == (3, 30, 1)
    assert t.statistics.peak_fill == 42 and t.fill == pytest.approx(0.28)
    assert t.writer is not None and t.writer.pid == os.getpid() and t.writer.alive
    s = _buffer(snap, "log")
    assert (s.kind, s.used, s.trigger_level, s.reader) == ("stream_buffer", 20, 8, None)
    r = _buffer(snap, "remote")
    assert r.writer is not None and r.writer.pid == child.pid and r.writer.alive
    assert {p.pid for p in snap.processes} >= {os.getpid(), child.pid}

    cm7, cm4 = snap.cores
    assert (cm7.name, cm7.core_id, cm4.name, cm4.core_id) == ("CM7", 3, "CM4", 1)
    assert cm4.pending & (1 << 6) and cm4.interrupts_raised == 2 and cm4.handlers_run == 0
    assert cm7.hsem_enabled == 1 << 9 and cm4.exti_enabled == (False, True)
    taken = [s for s in snap.semaphores if s.owner_core is not None]
    assert [(s.sem_id, s.owner_core, s.owner_process, s.owner_name) for s in taken] == [(5, 1, 7, "CM4")]
    assert len(snap.semaphores) == 32

    (channels,) = snap.channels
    assert (channels.name, channels.strategy, channels.channels, channels.cores) == ("ipc", "control", 2, ("CM7", "CM4"))
    assert channels.counters["overflows CM7->CM4"] == 0 and channels.counters["irq line"] == 4
    assert {"ipc.0.a", "ipc.1.b", "ipc.cb0", "ipc.cb1"} <= {b.name for b in snap.buffers}

    MessageBuffer.attach(region, "release").send(b"go")
    assert spawn.join(child) == 0
    after = take_snapshot(region)
    r = _buffer(after, "remote")
    assert r.writer is not None and r.writer.pid == child.pid and not r.writer.alive


def test_rates_come_from_two_snapshots(system: tuple[Region, Hardware]) -> None:
    region, _ = system
    telemetry = MessageBuffer.attach(region, "telemetry")
    first = take_snapshot(region)
    for _ in range(5):
        telemetry.send(b"y" * 12)
        telemetry.receive()
    second = take_snapshot(region)
    got = rates(first, second)
    elapsed = second.taken_at - first.taken_at
    assert got["telemetry"].messages_per_s * elapsed == pytest.approx(5)
    assert got["telemetry"].bytes_per_s * elapsed == pytest.approx(60)
    assert got["log"].messages_per_s == 0
    order = [b.name for b in sorted_buffers(second.buffers, got, "msgs/s")]
    assert order[0] == "telemetry"
    # telemetry now holds two 12-byte messages (32 of 100 bytes), log 20 of 64
    assert _buffer(second, "telemetry").used == 32
    assert [b.name for b in sorted_buffers(second.buffers, got, "fill")][:2] == ["telemetry", "log"]
    data = snapshot_to_json(second, got)
    assert next(b for b in data["buffers"] if b["name"] == "telemetry")["rate"]["messages_per_s"] > 0


def test_fill_bar() -> None:
    assert fill_bar(0.0) == "░" * 10 + "   0%"
    assert fill_bar(0.5) == "█" * 5 + "░" * 5 + "  50%"
    assert fill_bar(1.7) == "█" * 10 + " 100%"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ampipc.cli", *args], capture_output=True, text=True, timeout=120)


def test_once_and_json_as_a_user_runs_them(system: tuple[Region, Hardware]) -> None:
    region, _ = system
    once = _cli("top", "--once", region.name)
    assert once.returncode == 0, once.stderr
    row = next(line for line in once.stdout.splitlines() if line.strip().startswith("telemetry"))
    assert "28/100" in row and fill_bar(0.28) in row
    assert "HSEM: 1 of 32 taken" in once.stdout and "5  CM4 (COREID 1) process 7" in once.stdout
    assert "control" in once.stdout and "overflows CM7->CM4 0" in once.stdout
    assert render_text(take_snapshot(region)).splitlines()[2] == "buffers (10)"  # 4 of the test, 4 channel buffers, 2 control buffers

    result = _cli("top", "--json", "--rates", "--interval", "0.1", region.name)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    telemetry = next(b for b in data["buffers"] if b["name"] == "telemetry")
    assert telemetry["statistics"]["messages_sent"] == 3 and telemetry["used"] == 28
    assert telemetry["rate"] == {"messages_per_s": 0.0, "bytes_per_s": 0.0}
    assert data["semaphores"][5]["owner_process"] == 7
    assert os.getpid() in {p["pid"] for p in data["processes"]}
    assert len(data["processes"]) == 1  # the observing process is not listed


def test_top_user_errors() -> None:
    for args in (["top", "--interval", "0", "x"], ["top", "--interval", "soon", "x"], ["top", "--sort", "size", "x"],
                 ["top", "--once", "no-region-by-this-name"]):
        result = _cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_live_view_with_the_pilot(system: tuple[Region, Hardware]) -> None:
    region, _ = system
    telemetry = MessageBuffer.attach(region, "telemetry")
    app = make_app(region, interval=0.05)

    async def until(condition: Callable[[], bool], pilot: Any, traffic: bool = False) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, "the live view never showed the change"
            if traffic:  # keep telemetry busy until a refresh has measured it
                for _ in range(20):
                    telemetry.send(b"z" * 8)
                    telemetry.receive()
            await pilot.pause(0.05)

    def first_row() -> str:
        table = app.query_one("#buffers", DataTable)
        return str(table.ordered_rows[0].key.value)

    async def scenario() -> None:
        async with app.run_test(size=(220, 70)) as pilot:
            await until(lambda: getattr(app, "snapshot", None) is not None, pilot)
            assert first_row() == "ipc.0.a" and app.sort == "name"  # type: ignore[attr-defined]
            table = app.query_one("#buffers", DataTable)
            assert table.row_count == 10
            await pilot.press("s")
            assert app.sort == "fill" and first_row() == "log"  # type: ignore[attr-defined]
            await pilot.press("s")
            assert app.sort == "msgs/s"  # type: ignore[attr-defined]
            await until(lambda: first_row() == "telemetry" and app.buffer_rates is not None  # type: ignore[attr-defined]
                        and app.buffer_rates["telemetry"].messages_per_s > 0, pilot,  # type: ignore[attr-defined]
                        traffic=True)  # telemetry becomes the busiest buffer
            await pilot.press("p")
            assert app.paused  # type: ignore[attr-defined]
            frozen = app.refreshes  # type: ignore[attr-defined]
            telemetry.send(b"while paused")
            await pilot.pause(0.3)
            assert app.refreshes == frozen  # type: ignore[attr-defined]
            assert "PAUSED" in app.sub_title
            await pilot.press("p")
            await until(lambda: app.refreshes > frozen, pilot)  # type: ignore[attr-defined]
            await until(lambda: _buffer(app.snapshot, "telemetry").used == telemetry.bytes_available == 40, pilot)  # type: ignore[attr-defined]
            hsem = str(app.query_one("#hsem").render())
            assert " 5:CM4/7" in hsem and " 9:--" in hsem
            await pilot.press("q")
        assert app.return_code in (0, None)

    asyncio.run(scenario())


def test_snapshot_of_an_rpmsg_link_and_a_pool(region: Region) -> None:
    """A live RPMsg link (both roles in this process) and a payload pool with slots on loan."""
    import threading

    from ampipc.rpmsg import open_region
    from ampipc.rpmsg.echo import run_region_echo_device
    from ampipc.services.pool import PayloadPool

    pool = PayloadPool.create(region, "frames", slots=4, slot_size=256)
    loans = [pool.loan(timeout=30), pool.loan(timeout=30)]
    driver = open_region(region, "link", "driver", create=True, io_thread=True)
    device_status: list[int] = []
    device = threading.Thread(target=lambda: device_status.append(run_region_echo_device(region.name, "link")))
    device.start()
    try:
        ept = driver.create_endpoint("rpmsg-openamp-demo-channel")
        ept.wait_bound(60)
        for i in range(10):
            ept.send(b"ping %d" % i)
            assert ept.receive(60) == b"ping %d" % i
        snap = take_snapshot(region)
        ept.destroy()
        after = take_snapshot(region)
    finally:
        device.join(60)
        driver.close()
        for loan in loans:
            loan.cancel()
    assert device_status == [0]
    (link,) = snap.rpmsg
    assert link.name == "link" and link.status is not None and link.status & 0x04  # DRIVER_OK
    assert link.driver is not None and link.driver.pid == os.getpid() and link.driver.alive
    assert link.device is not None and link.device.pid == os.getpid()
    assert len(link.vrings) == 2 and all(avail > 0 for avail, _ in link.vrings)
    # both sides' endpoints, bound to each other (the echo device's endpoint has the same name)
    driver_side = [e for e in link.endpoints if e[0] == "driver"]
    device_side = [e for e in link.endpoints if e[0] == "device"]
    assert [(name, addr) for _, name, addr, _ in driver_side] == [("rpmsg-openamp-demo-channel", ept.addr)]
    assert [name for _, name, _, _ in device_side] == ["rpmsg-openamp-demo-channel"]
    assert driver_side[0][3] == device_side[0][2] and device_side[0][3] == ept.addr
    assert [e for e in after.rpmsg[0].endpoints if e[0] == "driver"] == []  # destroyed: gone from the table
    (frames,) = snap.pools
    assert frames.name == "frames"
    assert (frames.statistics["slots"], frames.statistics["in_use"], frames.statistics["loans"]) == (4, 2, 2)
    text = render_text(snap)
    assert "rpmsg links" in text and "payload pools" in text and "in_use 2" in text
    assert f"link driver endpoint 'rpmsg-openamp-demo-channel' at {ept.addr:#x} -> " in text


def test_snapshot_shows_a_bridge_from_its_shared_statistics(region: Region) -> None:
    from ampipc.bridge.stats import SharedStatistics

    stats = SharedStatistics(region, "uplink", route_capacity=2, zid="0123abcd")
    stats.add_route(1, "telemetry", "chip/telemetry")
    snap = take_snapshot(region)
    (bridge,) = snap.bridges
    assert (bridge.name, bridge.pid, bridge.alive, bridge.running) == ("uplink", os.getpid(), True, True)
    assert [(r["direction"], r["local"], r["key"]) for r in bridge.routes] == [("export", "telemetry", "chip/telemetry")]
    assert not any(o.kind == "zenoh_bridge" for o in snap.others)
    stats.close()
    assert not take_snapshot(region).bridges[0].running
    assert "uplink: pid" in render_text(snap) and "export telemetry <-> chip/telemetry" in render_text(snap)
