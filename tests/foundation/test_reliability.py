"""The reliability defects: nothing acknowledged lost, no hostile segment trusted, never a crash.

Each test fails on a build without the fix it names (the memmove one under the sanitizer run,
``scripts/sanitize``, which reports the overlapping memcpy of the old ring copy).
"""

from __future__ import annotations

import gc
import os
import queue
import struct
import threading
import time
from typing import Any

import pytest

import ampipc
from ampipc import (
    CorruptRegion,
    ForeignRegion,
    IpcError,
    MessageBuffer,
    PeerClosed,
    PeerDied,
    Region,
    RegionExists,
    StreamBuffer,
    Timeout,
)
from ampipc import _layout as L
from ampipc.ipc import Ipc

from . import _reliability_workers as W
from . import _support as S

pytestmark = pytest.mark.timeout(240)


def _get(results: Any, timeout: float = S.GENEROUS) -> Any:
    try:
        return results.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("the child reported nothing") from None


# ---- 1. drain before you declare death --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
@pytest.mark.parametrize("timeout", [None, S.GENEROUS], ids=["blocking", "timed"])
def test_message_of_a_writer_that_dies_in_its_hook_is_delivered(
    region: Region, spawn: Any, stream: bool, timeout: float | None
) -> None:
    buf: MessageBuffer | StreamBuffer
    buf = StreamBuffer.create(region, "b", 256) if stream else MessageBuffer.create(region, "b", 256)
    buf.spin = 0.0
    child = spawn(W.die_inside_send_hook, region.name, "b", stream, b"complete")
    if isinstance(buf, StreamBuffer):
        assert buf.read(100, timeout=timeout) == b"complete"
        with pytest.raises(PeerDied) as info:
            buf.read(100, timeout=timeout)
    else:
        assert buf.receive(timeout=timeout) == b"complete"
        with pytest.raises(PeerDied) as info:
            buf.receive(timeout=timeout)
    assert info.value.pid == child.pid
    spawn.join(child)


@pytest.mark.parametrize("strategy", ["control", "toggle"])
def test_channel_message_of_a_core_that_dies_in_the_send_hook_is_delivered(
    region: Region, spawn: Any, strategy: str
) -> None:
    """With the interrupt strategies the window is the whole Python send hook."""
    with Ipc.init(region, channels=1, buffer_size=128, strategy=strategy) as ipc:
        ipc.start()
        ipc.rx_buffer(0).spin = 0.0
        child = spawn(W.die_inside_send_hook, region.name, ipc.rx_buffer(0).name, False, b"last words")
        assert ipc.receive(0, timeout=S.GENEROUS) == b"last words"
        with pytest.raises(PeerDied):
            ipc.receive(0, timeout=S.GENEROUS)
        spawn.join(child)


# ---- 2. the writer role passes to another process ------------------------------------------------------


def test_no_false_peer_died_while_the_writer_role_passes(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 256)
    mb.spin = 0.0
    writer_a = spawn(W.send_and_vanish, region.name, "mb", b"from A")
    assert mb.receive(timeout=S.GENEROUS) == b"from A"
    assert spawn.join(writer_a) == 0
    go, attached = spawn.ctx.Event(), spawn.ctx.Event()
    writer_b = spawn(W.send_when_told, region.name, "mb", b"from B", go, attached)
    assert attached.wait(S.GENEROUS)

    def release_b_after_the_reader_slept_through_slices() -> None:
        # A is dead and recorded as the writer; B lives but has not sent. Let the blocked reader
        # run its liveness check several times before B takes the role.
        start = mb.statistics().receive_waits
        deadline = time.monotonic() + S.GENEROUS
        while mb.statistics().receive_waits < start + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        go.set()

    helper = threading.Thread(target=release_b_after_the_reader_slept_through_slices)
    helper.start()
    try:
        assert mb.receive(timeout=S.GENEROUS) == b"from B"
    finally:
        go.set()
        helper.join()
    assert spawn.join(writer_b) == 0


# ---- 3. segments of another user ------------------------------------------------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a segment to another uid needs root (CI runs as root)")
_NOBODY = 65534


@needs_root
def test_attach_refuses_a_segment_of_another_user(make_region: Any) -> None:
    planted = make_region(1 << 16)
    MessageBuffer.create(planted, "mb", 64).send(b"injected")
    os.chown(f"/dev/shm/{planted.name}", _NOBODY, _NOBODY)
    os.chmod(f"/dev/shm/{planted.name}", 0o666)
    with pytest.raises(ForeignRegion) as info:
        Region.attach(planted.name)
    assert info.value.owner_uid == _NOBODY and info.value.mode == 0o666
    assert "65534" in str(info.value) and "0o666" in str(info.value)
    assert isinstance(info.value, IpcError) and isinstance(info.value, PermissionError)
    with Region.attach(planted.name, trusted_uids={_NOBODY}) as shared:  # deliberate sharing
        assert MessageBuffer.attach(shared, "mb").try_receive() == b"injected"


@needs_root
def test_create_never_registers_into_a_squatted_segment(make_region: Any, unique_name: Any) -> None:
    squatted = make_region(1 << 16)
    os.chown(f"/dev/shm/{squatted.name}", _NOBODY, _NOBODY)
    before = len(squatted.processes())
    for replace in (False, True):
        with pytest.raises(ForeignRegion):
            Region.create(squatted.name, 1 << 16, replace_stale=replace)
    assert len(squatted.processes()) == before


@needs_root
def test_openamp_linux_transport_refuses_a_planted_file(unique_name: Any) -> None:
    from ampipc.rpmsg.transports import LinuxTransport

    name = unique_name("oa")
    path = f"/dev/shm/{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    try:
        os.ftruncate(fd, 0x80000)
        os.fchown(fd, _NOBODY, _NOBODY)
        os.close(fd)
        sock = f"/tmp/{name}.sock"
        for role in ("device", "driver"):
            transport = LinuxTransport(role, shm_name=name, socket_path=sock)
            with pytest.raises(ForeignRegion):
                transport._map()
            transport.close()
        assert os.stat(path).st_uid == _NOBODY  # neither reused nor replaced
    finally:
        if os.path.exists(path):
            os.unlink(path)


# ---- 4. a peer shrinks the segment --------------------------------------------------------------------


def test_a_shrunk_segment_raises_instead_of_killing_the_process(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 4096)
    mb.send(b"before")
    results = spawn.ctx.Queue()
    child = spawn(W.receive_after_shrink, region.name, results)
    assert _get(results) == "ready"
    with open(f"/dev/shm/{region.name}", "r+b") as f:
        os.ftruncate(f.fileno(), 4096)
    outcome = _get(results)
    assert spawn.join(child) == 0, "the child died (SIGBUS is exit code -7)"
    assert outcome == ["CorruptRegion"] * 3
    # this process's own mapping faults the same way and reports it
    with pytest.raises(CorruptRegion, match="shrunk"):
        mb.try_receive()
    assert region.mapping.faulted


# ---- 5. a ring header must stay inside its directory entry ---------------------------------------------


def test_ring_header_claiming_more_than_its_entry_is_refused(region: Region) -> None:
    first = MessageBuffer.create(region, "first", 256)
    second = MessageBuffer.create(region, "second", 256)
    second.send(b"must not be touched")
    entry = region.lookup("first")
    # claim the next object too: still inside the mapping, outside the entry
    total = entry.size + 4096
    struct.pack_into("<I", region.view, first.offset + 24, total)
    struct.pack_into("<I", region.view, first.offset + 8, total - L.RING_HEADER_SIZE)
    with pytest.raises(CorruptRegion) as info:
        MessageBuffer.attach(region, "first")
    assert info.value.field == "total size"
    assert second.try_receive() == b"must not be touched"


# ---- 6. data that is a view of the ring's own storage ---------------------------------------------------


def test_send_and_receive_into_views_of_the_ring_itself(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 1024)
    data_at = mb.offset + L.RING_HEADER_SIZE
    view = region.view
    pattern = bytes(range(256)) * 4
    view[data_at : data_at + 1024] = pattern
    # the payload goes to storage[4:404] from storage[8:408]: overlapping, the prefix not in the source
    mb.send(view[data_at + 8 : data_at + 408])
    assert mb.receive(timeout=0) == pattern[8:408]
    # receive_into the storage the message comes from
    view[data_at : data_at + 1024] = pattern
    head_before = region.mapping.load_u32(mb.offset + 64)
    mb.send(pattern[:300])
    start = data_at + head_before + 4
    n = mb.receive_into(view[start + 2 : start + 302])
    assert n == 300 and bytes(view[start + 2 : start + 302]) == pattern[:300]
    view.release()


# ---- 7. hygiene ---------------------------------------------------------------------------------------


def _my_slots(region: Region) -> int:
    me = os.getpid()
    return sum(1 for p in region.processes() if p.pid == me)


def test_a_dropped_region_gives_its_process_slot_back(region: Region) -> None:
    base = _my_slots(region)
    for _ in range(40):  # more than the 32 slots of the table
        other = Region.attach(region.name)
        assert _my_slots(region) == base + 1
        del other
        gc.collect()
        assert _my_slots(region) == base
    assert Region.attach(region.name, observe=True).processes() is not None
    assert _my_slots(region) == base  # an observer takes no slot


def test_a_creator_that_exits_without_close_unlinks(spawn: Any, unique_name: Any) -> None:
    name = unique_name("ex")
    child = spawn(W.create_and_exit_without_close, name)
    assert spawn.join(child) == 0
    leaked = os.path.exists(f"/dev/shm/{name}")
    if leaked:
        os.unlink(f"/dev/shm/{name}")
    assert not leaked


def test_replace_stale_reclaims_a_dead_region_of_another_layout_version(spawn: Any, unique_name: Any) -> None:
    dead = spawn(W.exit_at_once)
    assert spawn.join(dead) == 0
    name = unique_name("v")
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 1 << 16)
        os.pwrite(fd, struct.pack("<IIQI4xQ", L.REGION_MAGIC, L.LAYOUT_VERSION + 7, 1 << 16, dead.pid, 12345), 0)
    finally:
        os.close(fd)
    try:
        with pytest.raises(RegionExists, match="stale"):
            Region.create(name, 1 << 16)
        with Region.create(name, 1 << 16, replace_stale=True) as fresh:
            assert fresh.mapping.load_u32(L.OFF_VERSION) == L.LAYOUT_VERSION
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_timeouts_are_ipc_errors_and_timeout_errors(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 16)
    sb = StreamBuffer.create(region, "sb", 16, trigger_level=16)
    for call in (lambda: mb.receive(timeout=0.01), lambda: mb.send(b"x" * 12, timeout=0) or mb.send(b"y", timeout=0.01)):
        with pytest.raises(Timeout) as info:
            call()
        assert isinstance(info.value, IpcError) and isinstance(info.value, TimeoutError)
    assert sb.read(4, timeout=0.01) == b""  # a stream read returns what there is at its timeout
    assert issubclass(ampipc.NoBuffer, Timeout)


# ---- 8. an interrupt handler and a task send on one channel ----------------------------------------------


@pytest.mark.parametrize("strategy", ["direct", "hsem", "control", "toggle"])
def test_isr_and_task_send_on_the_same_channel(region: Region, strategy: str) -> None:
    count = 3000
    line = 12
    isr_results: list[bool] = []
    isr_errors: list[BaseException] = []
    with Ipc.init(region, channels=1, buffer_size=96, strategy=strategy) as ipc, Ipc.attach(region, core="CM4") as cm4:
        ipc.start()
        cm4.start()

        def handler(_line: int) -> None:
            try:
                isr_results.append(ipc.send_from_isr(0, b"I%06d" % len(isr_results)))
            except BaseException as e:  # noqa: BLE001 - RoleBusy here is the defect
                isr_errors.append(e)

        ipc.core.attach_handler(line, handler)
        stop = threading.Event()

        def raiser() -> None:
            while not stop.is_set():
                ipc.core.raise_interrupt(line, target="CM7")
                time.sleep(0.0002)

        def task() -> None:
            for k in range(count):
                ipc.send(0, b"T%06d" % k, timeout=S.GENEROUS)

        threads = [threading.Thread(target=raiser), threading.Thread(target=task)]
        for t in threads:
            t.start()
        got: list[bytes] = []
        try:
            while sum(1 for m in got if m.startswith(b"T")) < count:
                got.append(cm4.receive(0, timeout=S.GENEROUS))
        finally:
            stop.set()
            for t in threads:
                t.join(S.GENEROUS)
        ipc.core.detach_handler(line)
        while (more := cm4.try_receive(0)) is not None:
            got.append(more)
    assert isr_errors == []
    assert [m for m in got if m.startswith(b"T")] == [b"T%06d" % k for k in range(count)]
    sent_by_isr = [b"I%06d" % k for k, ok in enumerate(isr_results) if ok]
    assert [m for m in got if m.startswith(b"I")] == sent_by_isr
    assert sent_by_isr, "the handler never ran while the task was sending"


# ---- orderly close ------------------------------------------------------------------------------------------


def test_reader_drains_then_gets_peer_closed_once(region: Region) -> None:
    writer = MessageBuffer.create(region, "mb", 256)
    reader = MessageBuffer.attach(region, "mb")
    for k in range(5):
        writer.send(b"m%d" % k)
    writer.close()
    with pytest.raises(ampipc.RegionClosed):
        writer.send(b"after close")
    assert reader.writer_closed
    assert list(reader) == [b"m%d" % k for k in range(5)]  # iteration ends at PeerClosed
    assert not reader.writer_closed  # told once: a later receive waits for a new writer
    with pytest.raises(Timeout):
        reader.receive(timeout=0.05)
    new_writer = MessageBuffer.attach(region, "mb")  # a new writer takes the role
    new_writer.send(b"again")
    assert reader.receive(timeout=S.GENEROUS) == b"again"


def test_writer_gets_peer_closed_at_once_until_a_new_reader(region: Region) -> None:
    writer = MessageBuffer.create(region, "mb", 64)
    reader = MessageBuffer.attach(region, "mb")
    writer.send(b"x")
    assert reader.receive(timeout=0) == b"x"
    reader.close()
    for call in (lambda: writer.send(b"y", timeout=S.GENEROUS), lambda: writer.try_send(b"y")):
        with pytest.raises(PeerClosed):
            call()
    assert writer.wait_writable(1, timeout=0) is True  # the send would not block: it raises
    second = MessageBuffer.attach(region, "mb")
    with pytest.raises(Timeout):
        second.receive(timeout=0.01)  # taking the reader role re-opens it
    writer.send(b"z", timeout=S.GENEROUS)
    assert second.receive(timeout=0) == b"z"


def test_blocked_reader_is_woken_by_close(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    writer = MessageBuffer.attach(region, "mb")
    writer.send(b"left")
    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(mb.receive(timeout=S.GENEROUS))
            outcome.append(mb.receive(timeout=S.GENEROUS))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            outcome.append(e)

    t = threading.Thread(target=read)
    t.start()
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    writer.close()
    t.join(S.GENEROUS)
    assert outcome[0] == b"left" and isinstance(outcome[1], PeerClosed)


def test_a_dead_writer_is_found_although_other_processes_of_the_region_live(region: Region, spawn: Any) -> None:
    """A server with many clients: the client that wrote one buffer dies; another client, alive,
    attached only its own buffer. The blocked reader of the first buffer still learns of the death."""
    mine = MessageBuffer.create(region, "client-a", 128)
    MessageBuffer.create(region, "client-b", 128)
    mine.spin = 0.0
    ready_a, ready_b = spawn.ctx.Event(), spawn.ctx.Event()
    a = spawn(W.send_one_then_idle, region.name, "client-a", b"hello from a", ready_a)
    b = spawn(W.attach_buffer_and_idle, region.name, "client-b", ready_b)
    assert ready_a.wait(S.GENEROUS) and ready_b.wait(S.GENEROUS)
    assert mine.receive(timeout=S.GENEROUS) == b"hello from a"
    os.kill(a.pid, 9)
    with pytest.raises(PeerDied) as info:
        mine.receive(timeout=S.GENEROUS)
    assert info.value.pid == a.pid
    assert b.is_alive()
    b.kill()
    spawn.join(a)
    spawn.join(b)


def test_an_observer_records_no_attach(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    before = [p.pid for p in region.attachers(mb.offset) or []]
    with Region.attach(region.name, observe=True) as watcher:
        _ = MessageBuffer.attach(watcher, "mb").bytes_available
        assert [p.pid for p in region.attachers(mb.offset) or []] == before == [os.getpid()]


def test_reset_clears_the_close_flags(region: Region) -> None:
    writer = MessageBuffer.create(region, "mb", 64)
    reader = MessageBuffer.attach(region, "mb")
    reader.receive(timeout=0.01) if writer.try_send(b"x") else None
    reader.close()
    assert writer.reader_closed
    assert writer.reset() is True
    assert not writer.reader_closed and not writer.writer_closed
    writer.send(b"after reset", timeout=S.GENEROUS)
