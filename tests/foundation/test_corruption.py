"""Corrupted and hostile buffer headers: every operation raises a clear error, nothing crashes.

The fuzz cases run in a spawned child process, so that a crash of the C core (a segfault) is a
test failure with its signal number instead of the end of the test run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc import CorruptRegion, IpcError, MessageBuffer, Region, RegionClosed, StreamBuffer
from ampipc import _layout as L
from ampipc import _native

from . import _support as S

pytestmark = pytest.mark.timeout(180)

# header fields a hostile or broken peer could scribble on (offset, width)
_FIELDS = [0, 4, 8, 12, 16, 20, 24, L.RING_OFF_HEAD, L.RING_OFF_TX_WAITING, L.RING_OFF_TAIL, L.RING_OFF_RX_WAITING,
           72, 136]
_values = st.one_of(st.integers(0, 80), st.integers(0, 2**32 - 1), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]))
_ALLOWED = (IpcError, TimeoutError)


def _exercise(buf: Any, message: bool) -> None:
    """Call every operation; each may succeed or raise an IpcError/TimeoutError, nothing else."""
    calls: list[Callable[[], Any]] = [
        lambda: buf.bytes_available, lambda: buf.spaces_available, lambda: buf.is_empty, lambda: buf.is_full,
        lambda: buf.capacity, lambda: buf.trigger_level, lambda: buf.statistics(), lambda: repr(buf),
        lambda: buf.send_completed_from_isr(), lambda: buf.receive_completed_from_isr(),
    ]
    if message:
        calls += [
            lambda: buf.next_length, lambda: buf.try_receive(), lambda: buf.receive(timeout=0),
            lambda: buf.receive_into(bytearray(3), timeout=0), lambda: buf.receive_into(bytearray(200), timeout=0),
            lambda: buf.receive(timeout=0.001), lambda: buf.try_send(b"abc"), lambda: buf.send(bytes(9), timeout=0),
            lambda: buf.send(b"", timeout=0.001), lambda: buf.try_receive(),
        ]
    else:
        calls += [
            lambda: buf.try_read(100), lambda: buf.read(5, timeout=0.001), lambda: buf.read_into(bytearray(7), timeout=0),
            lambda: buf.try_write(b"abcdefgh"), lambda: buf.write(bytes(100), timeout=0.001), lambda: buf.try_read(3),
        ]
    calls += [lambda: buf.reset(), lambda: buf.try_receive() if message else buf.try_read(50)]
    for call in calls:
        try:
            result = call()
        except _ALLOWED as e:
            if isinstance(e, CorruptRegion):
                assert e.field, f"CorruptRegion without a field: {e}"
            continue
        except ValueError as e:
            # a corrupted flags word may turn the strict FreeRTOS mode on: a zero-length send is then refused
            assert "strict FreeRTOS mode" in str(e) and buf._flags & L.RING_FLAG_STRICT, e
            continue
        if isinstance(result, bytes):
            assert len(result) <= buf.capacity, "returned more bytes than the buffer holds"


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    message=st.booleans(),
    capacity=st.integers(5, 64),
    fill=st.lists(st.binary(max_size=20), max_size=6),
    corruption=st.lists(st.tuples(st.sampled_from(_FIELDS), _values), min_size=1, max_size=4),
    garbage=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 255)), max_size=8),
)
def _fuzz_case(message: bool, capacity: int, fill: list[bytes], corruption: list[tuple[int, int]],
               garbage: list[tuple[int, int]]) -> None:
    with Region.create(S.new_name("z"), 1 << 16) as region:
        buf: Any = (MessageBuffer if message else StreamBuffer).create(region, "buf", capacity)
        buf.spin = 0.0
        for data in fill:
            buf.try_send(data[: capacity - 4]) if message else buf.try_write(data)
        for field, value in corruption:
            region.mapping.store_u32(buf.offset + field, value)
        data_start = buf.offset + L.RING_HEADER_SIZE
        for at, value in garbage:
            region.view[data_start + at % (capacity + 1)] = value
        _exercise(buf, message)
        try:
            fresh = (MessageBuffer if message else StreamBuffer).attach(region, "buf")
        except CorruptRegion as e:
            assert e.field
            return
        fresh.spin = 0.0
        _exercise(fresh, message)


def fuzz_buffer_headers() -> None:
    """The fuzz run (in a child process)."""
    _fuzz_case()


def test_fuzzed_headers_never_crash(spawn: Any) -> None:
    results = spawn.ctx.Queue()
    child = spawn(S.run_callable, fuzz_buffer_headers, results)
    code = spawn.join(child, timeout=150)
    assert code != -11, "the C core crashed (SIGSEGV) on a corrupted header"
    status, detail = results.get(timeout=5) if code == 0 else ("error", "exit code %d" % code)
    if code != 0 and not results.empty():
        status, detail = results.get(timeout=5)
    assert code == 0 and status == "ok", detail


# ---- precise errors for the common corruptions --------------------------------------------------


@pytest.mark.parametrize("field, offset", [("head", L.RING_OFF_HEAD), ("tail", L.RING_OFF_TAIL)])
def test_index_out_of_range(region: Region, field: str, offset: int) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    mb.send(b"abc")
    region.mapping.store_u32(mb.offset + offset, 33)  # == xLength
    for call in (lambda: mb.try_receive(), lambda: mb.try_send(b"x"), lambda: mb.bytes_available,
                 lambda: mb.next_length, lambda: mb.receive(timeout=0.01), lambda: mb.send(b"x", timeout=0.01)):
        with pytest.raises(CorruptRegion) as info:
            call()
        assert info.value.field == field and info.value.value == 33 and info.value.object == "mb"
        assert "corrupt" in str(info.value)


def test_prefix_longer_than_the_data(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    mb.send(b"abcd")
    start = mb.offset + L.RING_HEADER_SIZE
    region.view[start : start + 4] = (200).to_bytes(4, "little")
    with pytest.raises(CorruptRegion) as info:
        mb.receive(timeout=0)
    assert info.value.field == "message length prefix" and info.value.value == 200
    with pytest.raises(CorruptRegion):
        _ = mb.next_length
    with pytest.raises(CorruptRegion):
        mb.receive_into(bytearray(1000))
    region.view[start : start + 4] = (4).to_bytes(4, "little")
    assert mb.receive() == b"abcd", "a repaired buffer works again"


def test_fewer_bytes_than_a_prefix(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    region.mapping.store_u32(mb.offset + L.RING_OFF_HEAD, 2)
    with pytest.raises(CorruptRegion) as info:
        mb.try_receive()
    assert info.value.field == "head"


def test_length_changed_after_attach(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 32)
    region.mapping.store_u32(sb.offset + 8, 1000)
    with pytest.raises(CorruptRegion) as info:
        sb.try_write(b"x")
    assert info.value.field == "length"
    with pytest.raises(CorruptRegion) as info:
        StreamBuffer.attach(region, "sb")
    assert info.value.field == "length"


@pytest.mark.parametrize(
    "offset, value, field",
    [(0, 0x12345678, "magic"), (24, 10, "total size"), (24, 1 << 30, "total size"), (12, 5000, "data offset"),
     (12, 3, "data offset"), (8, 1, "length"), (8, 0, "length"), (20, 3, "prefix size"), (20, 16, "prefix size"), (4, 17, "flags")],
)
def test_bad_header_constants_on_attach(region: Region, offset: int, value: int, field: str) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    region.mapping.store_u32(mb.offset + offset, value)
    with pytest.raises(CorruptRegion) as info:
        MessageBuffer.attach(region, "mb")
    assert info.value.field == field


def test_kind_mismatch_in_the_header(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 32)
    guard = bytearray(2)
    with pytest.raises(CorruptRegion, match="stream buffer"):
        _native.MessageRing(region.mapping, sb.offset, "sb", guard)
    with pytest.raises(ValueError):
        _native.MessageRing(region.mapping, sb.offset + 1, "sb", guard)
    with pytest.raises(ValueError):
        _native.StreamRing(region.mapping, region.size, "sb", guard)
    with pytest.raises(TypeError):
        _native.StreamRing(region.mapping, sb.offset, "sb", bytearray(3))


def test_mapping_atomics_are_bounds_checked(region: Region) -> None:
    m = region.mapping
    for call in (lambda: m.load_u32(region.size), lambda: m.load_u32(-4), lambda: m.store_u32(region.size - 2, 1),
                 lambda: m.load_u64(region.size - 4), lambda: m.futex_wake(1 << 40)):
        with pytest.raises(IndexError):
            call()
    with pytest.raises(ValueError):
        m.load_u32(2)
    with pytest.raises(OverflowError):
        m.store_u32(0, 2**32)
    off = region.allocate("w", "word", 8)
    assert m.cas_u32(off, 0, 5) == 0 and m.cas_u32(off, 0, 7) == 5 and m.load_u32(off) == 5
    assert m.fetch_add_u32(off, 3) == 5 and m.fetch_xor_u32(off, 1) == 8 and m.exchange_u32(off, 0) == 9
    assert m.futex_wait(off, 1, timeout=0) is True  # the word differs: returns at once
    assert m.futex_wait(off, 0, timeout=0.01) is False


# ---- a hook that closes the region in the middle of a write ------------------------------------


def hook_closes_region_mid_write() -> None:
    """A send hook closes the region while a stream write still has bytes to write."""
    region = Region.create(S.new_name("c"), 1 << 16)
    sb = StreamBuffer.create(region, "sb", 8)
    sb.on_send_completed = lambda b: region.close()
    try:
        sb.write(bytes(20), timeout=0.5)
    except RegionClosed:
        pass


def test_hook_closing_the_region_mid_write(spawn: Any) -> None:
    results = spawn.ctx.Queue()
    child = spawn(S.run_callable, hook_closes_region_mid_write, results)
    code = spawn.join(child)
    assert code != -11, "the C core touched an unmapped region (SIGSEGV)"
    assert code == 0, results.get(timeout=5)
