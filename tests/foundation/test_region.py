"""Region: creation, attachment, lifetime, names, the directory, stale replacement, bad segments."""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ampipc import (
    IncompatibleRegion,
    IpcError,
    MessageBuffer,
    ObjectEntry,
    ObjectExists,
    ObjectNotFound,
    Region,
    RegionClosed,
    RegionExists,
    RegionFull,
    RegionNotFound,
    StreamBuffer,
)
from ampipc import _layout as L
from ampipc import _native

from . import _support as S

SHM = "/dev/shm"


@pytest.fixture
def name() -> Iterator[str]:
    """A unique region name; whatever segment carries it is unlinked at teardown."""
    n = S.new_name("r")
    try:
        yield n
    finally:
        try:
            os.unlink(os.path.join(SHM, n))
        except FileNotFoundError:
            pass


def test_create_attach_close_unlink(name: str) -> None:
    region = Region.create(name, 1 << 16)
    assert region.name == name and region.size == 1 << 16 and region.is_creator
    assert os.path.exists(os.path.join(SHM, name))
    other = Region.attach(name)
    assert other.size == region.size and not other.is_creator
    MessageBuffer.create(region, "mb", 64)
    assert [e.name for e in other.objects()] == ["mb"]
    other.close()
    assert os.path.exists(os.path.join(SHM, name)), "an attacher's close must not unlink"
    region.close()
    assert not os.path.exists(os.path.join(SHM, name)), "the creator's close unlinks"
    region.close()  # idempotent
    with pytest.raises(RegionNotFound):
        Region.attach(name)


def test_context_manager_closes_and_unlinks(name: str) -> None:
    with Region.create(name, 1 << 16) as region:
        with Region.attach(name) as other:
            assert not other.closed
        assert other.closed and not region.closed
    assert region.closed
    assert not os.path.exists(os.path.join(SHM, name))


def test_context_manager_closes_on_error(name: str) -> None:
    with pytest.raises(RuntimeError):
        with Region.create(name, 1 << 16):
            raise RuntimeError("boom")
    assert not os.path.exists(os.path.join(SHM, name))


def test_explicit_unlink_keeps_mapping(name: str) -> None:
    region = Region.create(name, 1 << 16)
    try:
        mb = MessageBuffer.create(region, "mb", 64)
        region.unlink()
        assert not os.path.exists(os.path.join(SHM, name))
        mb.send(b"still mapped")
        assert mb.receive() == b"still mapped"
        region.unlink()  # idempotent
    finally:
        region.close()


def test_create_existing_is_region_exists(region: Region) -> None:
    with pytest.raises(RegionExists) as info:
        Region.create(region.name, 1 << 16)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, IpcError)
    # replace_stale never touches a live region
    with pytest.raises(RegionExists):
        Region.create(region.name, 1 << 16, replace_stale=True)
    MessageBuffer.create(region, "still-here", 64)
    assert region.lookup("still-here").kind == L.KIND_MESSAGE_BUFFER


def test_attach_missing_is_region_not_found() -> None:
    with pytest.raises(RegionNotFound) as info:
        Region.attach(S.new_name("missing"))
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    "bad",
    ["", "a" * 32, "has/slash", "has space", ".hidden", "é", "a\0b", "tab\t", "..", 17, None],
)
def test_invalid_region_names(bad: object) -> None:
    with pytest.raises(ValueError, match="name"):
        Region.create(bad, 1 << 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Region.attach(bad)  # type: ignore[arg-type]


def test_valid_name_edges(name: str) -> None:
    long_name = (name + "-" + "x" * 31)[:31]
    for n in (long_name, name + "_A.b-9"[: 31 - len(name)]):
        with Region.create(n, 1 << 16) as region:
            assert region.name == n


@pytest.mark.parametrize("size", [0, 100, 4096, -1])
def test_too_small_region_is_value_error(name: str, size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        Region.create(name, size)
    assert not os.path.exists(os.path.join(SHM, name))


def test_allocate_and_directory(region: Region) -> None:
    a = region.allocate("alpha", "blob", 10)
    b = region.allocate("beta", "blob", 200)
    assert a % 64 == 0 and b % 64 == 0 and b >= a + 64
    assert bytes(region.view[a : a + 10]) == bytes(10)
    region.view[a : a + 10] = b"0123456789"
    mb = MessageBuffer.create(region, "gamma", 100)
    sb = StreamBuffer.create(region, "delta", 33)
    entries = region.objects()
    assert [e.name for e in entries] == ["alpha", "beta", "gamma", "delta"]
    assert entries[0] == ObjectEntry("alpha", "blob", a, 10)
    assert entries[1] == ObjectEntry("beta", "blob", b, 200)
    assert entries[2].kind == L.KIND_MESSAGE_BUFFER and entries[2].offset == mb.offset
    assert entries[3].kind == L.KIND_STREAM_BUFFER and entries[3].offset == sb.offset
    for e in entries:
        assert e.offset % L.OBJECT_ALIGN == 0 and e.offset + e.size <= region.size
    for x, y in zip(entries, entries[1:]):
        assert x.offset + x.size <= y.offset, "objects overlap"
    assert region.lookup("beta") == entries[1]
    assert region.lookup("gamma", L.KIND_MESSAGE_BUFFER) == entries[2]
    with pytest.raises(ObjectNotFound):
        region.lookup("gamma", L.KIND_STREAM_BUFFER)
    with pytest.raises(ObjectNotFound) as info:
        region.lookup("nope")
    assert isinstance(info.value, LookupError)
    with pytest.raises(ObjectExists):
        region.allocate("alpha", "blob", 10)
    with pytest.raises(ObjectExists):
        MessageBuffer.create(region, "delta", 64)
    # an attacher sees the same directory, and the data
    with Region.attach(region.name) as other:
        assert other.objects() == entries
        assert bytes(other.view[a : a + 10]) == b"0123456789"


@pytest.mark.parametrize("bad", ["", "x" * 32, "a\0b"])
def test_invalid_object_names(region: Region, bad: str) -> None:
    with pytest.raises(ValueError):
        region.allocate(bad, "blob", 8)
    with pytest.raises(ValueError):
        MessageBuffer.create(region, bad, 64)


def test_invalid_allocation_arguments(region: Region) -> None:
    with pytest.raises(ValueError):
        region.allocate("x", "", 8)
    with pytest.raises(ValueError):
        region.allocate("x", "k" * 16, 8)
    with pytest.raises(ValueError):
        region.allocate("x", "blob", 0)
    with pytest.raises(ValueError):
        region.allocate("x", "blob", -5)
    assert region.objects() == []


def test_unknown_buffer_names(region: Region) -> None:
    MessageBuffer.create(region, "mb", 64)
    StreamBuffer.create(region, "sb", 64)
    with pytest.raises(ObjectNotFound):
        MessageBuffer.attach(region, "nothing")
    with pytest.raises(ObjectNotFound):
        StreamBuffer.attach(region, "nothing")
    with pytest.raises(ObjectNotFound):
        MessageBuffer.attach(region, "sb")  # wrong kind
    with pytest.raises(ObjectNotFound):
        StreamBuffer.attach(region, "mb")


def test_region_full_bytes(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 14)
    free = region.free_bytes
    region.allocate("big", "blob", free - 64)
    with pytest.raises(RegionFull):
        region.allocate("more", "blob", 128)
    with pytest.raises(RegionFull):
        MessageBuffer.create(region, "mb", 64)
    region.allocate("last", "blob", 64)  # exactly what is left
    assert region.free_bytes == 0
    with pytest.raises(RegionFull):
        region.allocate("none", "blob", 1)
    assert [e.name for e in region.objects()] == ["big", "last"]


def test_region_full_directory(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 16, directory_capacity=3)
    for i in range(3):
        region.allocate(f"o{i}", "blob", 8)
    with pytest.raises(RegionFull, match="directory"):
        region.allocate("o3", "blob", 8)


def test_use_after_close_is_region_closed(name: str) -> None:
    region = Region.create(name, 1 << 16)
    mb = MessageBuffer.create(region, "mb", 64)
    sb = StreamBuffer.create(region, "sb", 64)
    mb.send(b"x")
    view = region.view  # a view alive across close
    alias = view[:16]
    region.close()  # never fails while objects and views are alive
    assert region.closed
    for call in (
        lambda: mb.send(b"y"),
        lambda: mb.try_send(b"y"),
        lambda: mb.receive(timeout=0),
        lambda: mb.try_receive(),
        lambda: mb.receive_into(bytearray(8)),
        lambda: mb.next_length,
        lambda: mb.bytes_available,
        lambda: mb.spaces_available,
        lambda: mb.is_empty,
        lambda: mb.is_full,
        lambda: mb.reset(),
        lambda: mb.statistics(),
        lambda: mb.trigger_level,
        lambda: sb.write(b"y"),
        lambda: sb.try_write(b"y"),
        lambda: sb.read(4, timeout=0),
        lambda: sb.try_read(4),
        lambda: sb.read_into(bytearray(4)),
        lambda: sb.send_completed_from_isr(),
        lambda: sb.receive_completed_from_isr(),
        lambda: region.view,
        lambda: region.objects(),
        lambda: region.lookup("mb"),
        lambda: region.allocate("z", "blob", 8),
        lambda: region.processes(),
        lambda: region.creator_alive,
        lambda: MessageBuffer.attach(region, "mb"),
    ):
        with pytest.raises(RegionClosed):
            call()
    # the views made before close still work (the unmap waits for them)
    assert len(bytes(alias)) == 16
    alias.release()
    view.release()
    assert repr(mb).endswith("RegionClosed>")
    assert "closed" in repr(region)
    region.close()


def test_region_view_is_the_shared_memory(region: Region) -> None:
    view = region.view
    assert len(view) == region.size and not view.readonly
    header = bytes(view[: L.REGION_HEADER_SIZE])
    magic, version, size = struct.unpack_from("<IIQ", header)
    assert (magic, version, size) == (L.REGION_MAGIC, L.LAYOUT_VERSION, region.size)
    assert struct.unpack_from("<I", header, L.OFF_CREATOR_PID)[0] == os.getpid()
    off = region.allocate("blob", "blob", 64)
    with Region.attach(region.name) as other:
        view[off : off + 5] = b"hello"
        assert bytes(other.view[off : off + 5]) == b"hello"
        other.mapping.store_u32(off + 8, 0xDEADBEEF)
        assert region.mapping.load_u32(off + 8) == 0xDEADBEEF
    view.release()


def test_processes_and_liveness(region: Region, spawn: Any) -> None:
    me = os.getpid()
    procs = region.processes()
    assert [p.pid for p in procs] == [me] and procs[0].alive
    assert region.creator_alive and region.creator_pid == me
    assert not region.others_alive()
    ready = spawn.ctx.Event()
    child = spawn(S.attach_and_idle, region.name, ready)
    assert ready.wait(S.GENEROUS)
    assert child.pid in {p.pid for p in region.processes() if p.alive}
    assert region.others_alive()
    os.kill(child.pid, signal.SIGKILL)
    spawn.join(child)
    dead = [p for p in region.processes() if p.pid == child.pid]
    assert dead and not dead[0].alive
    assert not region.others_alive()


def test_closed_attacher_leaves_process_table(region: Region) -> None:
    other = Region.attach(region.name)
    assert len(region.processes()) == 2
    other.close()
    assert [p.pid for p in region.processes()] == [os.getpid()]


def test_replace_stale_region(name: str, spawn: Any) -> None:
    ready = spawn.ctx.Event()
    child = spawn(S.create_region_and_idle, name, ready)
    assert ready.wait(S.GENEROUS)
    # the creator is alive: never touched, with or without replace_stale
    with pytest.raises(RegionExists):
        Region.create(name, 1 << 16, replace_stale=True)
    with Region.attach(name) as live:
        assert live.lookup("left-behind").kind == L.KIND_MESSAGE_BUFFER
        assert live.creator_alive
    os.kill(child.pid, signal.SIGKILL)
    spawn.join(child)
    assert os.path.exists(os.path.join(SHM, name)), "a killed creator cannot unlink"
    with Region.attach(name) as stale:
        assert not stale.creator_alive
    with pytest.raises(RegionExists, match="stale"):
        Region.create(name, 1 << 16)
    with Region.create(name, 1 << 17, replace_stale=True) as fresh:
        assert fresh.size == 1 << 17 and fresh.objects() == []
        assert fresh.creator_pid == os.getpid()


def test_stale_region_with_live_attacher_is_not_replaced(name: str, spawn: Any) -> None:
    ready = spawn.ctx.Event()
    creator = spawn(S.create_region_and_idle, name, ready)
    assert ready.wait(S.GENEROUS)
    ready2 = spawn.ctx.Event()
    attacher = spawn(S.attach_and_idle, name, ready2)
    assert ready2.wait(S.GENEROUS)
    os.kill(creator.pid, signal.SIGKILL)
    spawn.join(creator)
    with pytest.raises(RegionExists):
        Region.create(name, 1 << 16, replace_stale=True)
    os.kill(attacher.pid, signal.SIGKILL)
    spawn.join(attacher)
    Region.create(name, 1 << 16, replace_stale=True).close()


def _raw_segment(name: str, content: bytes, size: int = 1 << 16) -> None:
    fd = _native.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, content, 0)
    finally:
        os.close(fd)


def test_other_layout_version_is_incompatible(name: str) -> None:
    with Region.create(name, 1 << 16) as region:
        region.mapping.store_u32(L.OFF_VERSION, 7)
        with pytest.raises(IncompatibleRegion, match="version 7"):
            Region.attach(name)
        region.mapping.store_u32(L.OFF_VERSION, L.LAYOUT_VERSION)
        Region.attach(name).close()


@pytest.mark.parametrize("content", [b"NOTAREGION" * 10, struct.pack("<II", 0x12345678, 1)])
def test_wrong_magic_is_incompatible(name: str, content: bytes) -> None:
    _raw_segment(name, content)
    with pytest.raises(IncompatibleRegion, match="not an ampipc region"):
        Region.attach(name)
    with pytest.raises(RegionExists):  # not ours: never replaced
        Region.create(name, 1 << 16, replace_stale=True)


def test_empty_segment_is_incompatible(name: str) -> None:
    _raw_segment(name, b"", size=0)
    with pytest.raises(IncompatibleRegion):
        Region.attach(name)


def test_declared_size_mismatch_is_rejected(name: str) -> None:
    with Region.create(name, 1 << 16) as region:
        region.mapping.store_u64(L.OFF_SIZE, 1 << 20)
        with pytest.raises(IpcError, match="declares"):
            Region.attach(name)


@pytest.mark.parametrize(
    "field, value",
    [
        (L.OFF_DIR_OFFSET, 0),
        (L.OFF_DIR_OFFSET, 1 << 30),
        (L.OFF_DIR_CAPACITY, 1 << 28),
        (L.OFF_PROC_OFFSET, 0xFFFFFFFF),
        (L.OFF_PROC_CAPACITY, 1 << 30),
        (L.OFF_OBJECTS_OFFSET, 1 << 31),
        (L.OFF_DIR_COUNT, 100000),
    ],
)
def test_corrupt_region_header_is_rejected(name: str, field: int, value: int) -> None:
    with Region.create(name, 1 << 16) as region:
        MessageBuffer.create(region, "mb", 64)
        region.mapping.store_u32(field, value)
        with pytest.raises(IpcError):
            Region.attach(name).close()
        with pytest.raises(IpcError):
            region.objects()
        with pytest.raises(IpcError):
            MessageBuffer.attach(region, "mb")


def test_corrupt_directory_entry_is_rejected(region: Region) -> None:
    MessageBuffer.create(region, "mb", 64)
    blob = region.allocate("blob", "blob", 512)
    dir_off = region.mapping.load_u32(L.OFF_DIR_OFFSET)
    for bad_offset in (3, 1 << 40, region.size - 64, region.size):
        raw = L.DIR_ENTRY.pack(b"mb", b"message_buffer", bad_offset, 384)
        region.view[dir_off : dir_off + L.DIR_ENTRY_SIZE] = raw
        with pytest.raises(IpcError):
            MessageBuffer.attach(region, "mb")
        with pytest.raises(IpcError):
            region.allocate("new", "blob", 8)
    # an entry pointing at bytes that are not a buffer header
    region.view[dir_off : dir_off + L.DIR_ENTRY_SIZE] = L.DIR_ENTRY.pack(b"mb", b"message_buffer", blob, 512)
    with pytest.raises(IpcError, match="magic"):
        MessageBuffer.attach(region, "mb")
