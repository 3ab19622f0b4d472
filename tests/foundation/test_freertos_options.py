"""FreeRTOS creation options: static creation, length-prefix widths, batching stream buffers,
xStreamBufferSend's blocking behaviour and the strict mode (freertos-buffers.md §2.2-2.7)."""

from __future__ import annotations

import threading
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import MessageBuffer, MessageTooLarge, Region, StreamBuffer, Timeout
from ampipc import _layout as L

from ._support import wait_for_flag


def test_static_creation_keeps_one_byte_of_the_storage_free(region: Region) -> None:
    mb = MessageBuffer.create(region, "m", 1000, static=True)
    sb = StreamBuffer.create(region, "s", 1000, static=True, trigger_level=999)
    assert mb.capacity == sb.capacity == 999  # "so 999", as the FreeRTOS header says
    assert region.mapping.load_u32(mb.offset + 8) == 1000  # xLength = SIZE
    assert mb._flags & L.RING_FLAG_STATIC and sb._flags & L.RING_FLAG_STATIC
    mb.send(b"x" * 995)
    assert not mb.try_send(b"")
    assert sb.try_write(b"y" * 1000) == 999
    with pytest.raises(ValueError):
        StreamBuffer.create(region, "s2", 1000, static=True, trigger_level=1000)
    with pytest.raises(ValueError):
        sb.trigger_level = 999 + 1


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_prefix_width_is_stored_little_endian_and_counted(region: Region, width: int) -> None:
    mb = MessageBuffer.create(region, "m", 400, prefix_width=width)
    assert mb.prefix_width == width
    mb.send(b"0123456789")
    assert mb.bytes_available == 10 + width
    storage = mb.offset + L.RING_HEADER_SIZE
    assert bytes(region.view[storage : storage + width]) == (10).to_bytes(width, "little")
    assert mb.next_length == 10
    assert mb.receive(timeout=0) == b"0123456789"
    if width == 1:
        with pytest.raises(MessageTooLarge, match="1-byte length prefix"):
            mb.send(b"z" * 256)
        mb.send(b"z" * 255)
        assert mb.receive(timeout=0) == b"z" * 255
    if width > 1:
        with pytest.raises(MessageTooLarge, match="holds at most 400"):
            mb.send(b"q" * (400 - width + 1))
        mb.send(b"q" * (400 - width))  # exactly full
        assert mb.is_full


def test_prefix_width_is_refused_when_odd(region: Region) -> None:
    with pytest.raises(ValueError, match="prefix_width"):
        MessageBuffer.create(region, "m", 100, prefix_width=3)


@settings(max_examples=60, deadline=None)
@given(
    width=st.sampled_from([1, 2, 4, 8]),
    ops=st.lists(st.one_of(st.integers(0, 60), st.none()), max_size=60),
)
def test_prefix_widths_against_a_model(width: int, ops: list[int | None]) -> None:
    """Sends (a length) and receives (None) against a queue that counts length + prefix bytes."""
    from tests.conftest import make_unique_name

    with Region.create(make_unique_name("pw"), 1 << 16) as region:
        capacity = 97
        mb = MessageBuffer.create(region, "m", capacity, prefix_width=width)
        model: deque[bytes] = deque()
        used = 0
        for k, op in enumerate(ops):
            if op is None:
                got = mb.try_receive()
                expect = model.popleft() if model else None
                if expect is not None:
                    used -= len(expect) + width
                assert got == expect
            else:
                data = bytes([k & 0xFF]) * op
                fits = used + op + width <= capacity
                assert mb.try_send(data) is fits
                if fits:
                    model.append(data)
                    used += op + width
            assert mb.bytes_available == used
            assert mb.next_length == (len(model[0]) if model else None)


def test_batching_buffer_reads_only_above_the_trigger(region: Region) -> None:
    sb = StreamBuffer.create(region, "s", 64, trigger_level=4, batching=True)
    hooks: list[int] = []
    sb.on_send_completed = lambda b: hooks.append(b.bytes_available)
    sb.write(b"abcd")
    assert hooks == []  # 4 is not more than the trigger
    assert sb.read(10, timeout=0) == b""  # a task-level read needs more than the trigger, even with 0 ticks
    assert sb.read(10, timeout=0.02) == b""  # and at its timeout
    sb.write(b"e")
    assert hooks == [5]
    assert sb.read(10, timeout=0) == b"abcde"
    plain = StreamBuffer.create(region, "p", 64, trigger_level=4)
    plain.write(b"ab")
    assert plain.read(10, timeout=0) == b"ab"  # a plain stream buffer has no read gate


def test_batching_reader_blocks_until_more_than_the_trigger(region: Region) -> None:
    sb = StreamBuffer.create(region, "s", 64, trigger_level=3, batching=True)
    writer = StreamBuffer.attach(region, "s")
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(sb.read(64, timeout=60)))
    t.start()
    wait_for_flag(region, sb, L.RING_OFF_RX_WAITING)
    writer.write(b"123")
    writer.write(b"4")
    t.join(60)
    assert got == [b"1234"]


def test_write_once_waits_for_all_of_it_then_writes_once(region: Region) -> None:
    sb = StreamBuffer.create(region, "s", 16)
    reader = StreamBuffer.attach(region, "s")
    sb.write(b"x" * 10)
    assert sb.write_once(b"y" * 8, timeout=0.02) == 6  # at the timeout: what fits
    assert reader.read(16, timeout=0) == b"x" * 10 + b"y" * 6
    sb.write(b"z" * 12)
    freed = threading.Timer(0.05, lambda: reader.read(6, timeout=0))
    freed.start()
    assert sb.write_once(b"w" * 8, timeout=60) == 8  # all of it, in one write, once there was room
    freed.join()
    assert reader.read(16, timeout=0) == b"z" * 6 + b"w" * 8
    assert sb.write_once(b"v" * 40, timeout=60) == 16  # capped at the capacity


def test_strict_mode_refuses_zero_length_messages(region: Region) -> None:
    strict = MessageBuffer.create(region, "s", 64, strict=True)
    with pytest.raises(ValueError, match="strict FreeRTOS mode"):
        strict.send(b"")
    with pytest.raises(ValueError):
        strict.try_send(b"")
    relaxed = MessageBuffer.create(region, "r", 64)
    relaxed.send(b"")
    assert relaxed.receive(timeout=0) == b""
    with pytest.raises(Timeout):
        strict.receive(timeout=0)
