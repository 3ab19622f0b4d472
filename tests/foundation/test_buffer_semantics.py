"""MessageBuffer and StreamBuffer in one process: the FreeRTOS rules and ampipc's extensions.

Threads stand in for the second side where a test needs someone blocked; the cross-process
behaviour is in test_two_processes.py.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ampipc import (
    BlockingInIsr,
    BufferStatistics,
    BufferTooSmall,
    IpcError,
    MessageBuffer,
    MessageTooLarge,
    Region,
    RoleBusy,
    StreamBuffer,
    get_default_spin,
    set_default_spin,
)
from ampipc import _layout as L
from ampipc import _native

from . import _support as S

pytestmark = pytest.mark.timeout(120)


class Background:
    """Runs one call in a thread and keeps its outcome; always joined at teardown."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as e:
            self.error = e

    def join(self) -> Any:
        self.thread.join(S.GENEROUS)
        assert not self.thread.is_alive(), "the background call never returned"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], Background]]:
    started: list[Background] = []

    def start(fn: Callable[[], Any]) -> Background:
        b = Background(fn)
        started.append(b)
        return b

    try:
        yield start
    finally:
        for b in started:
            b.thread.join(S.GENEROUS)


# ---- capacity and the length prefix -----------------------------------------------------------


def test_message_capacity_rules(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 100)
    assert mb.capacity == 100  # dynamic convention: capacity == size (xLength = size + 1)
    assert mb.spaces_available == 100 and mb.bytes_available == 0
    assert mb.is_empty and not mb.is_full and mb.next_length is None
    assert mb.trigger_level == 1
    mb.send(b"0123456789")
    assert mb.bytes_available == 14, "a 10-byte message takes 14 bytes"
    assert mb.spaces_available == 86
    assert mb.next_length == 10 and not mb.is_empty
    # the largest message that fits is spaces - 4
    assert mb.try_send(bytes(83)) is False
    assert mb.bytes_available == 14, "a failed send writes nothing"
    assert mb.try_send(bytes(82)) is True
    assert mb.spaces_available == 0 and mb.is_full
    assert mb.receive() == b"0123456789"
    assert mb.receive() == bytes(82)
    assert mb.is_empty


def test_message_is_full_when_not_even_one_byte_fits(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 20)
    mb.send(bytes(11))  # 15 bytes used, 5 left: a 1-byte message fits
    assert not mb.is_full
    mb.send(b"")  # 4 more: 1 left, not enough for any message
    assert mb.spaces_available == 1 and mb.is_full


def test_full_message_buffer_holds_exactly_capacity(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 24)
    for i in range(3):  # the "three 4-byte handles" of the dynamic FreeRTOS demo
        assert mb.try_send(i.to_bytes(4, "little"))
    assert mb.spaces_available == 0 and mb.is_full
    assert not mb.try_send(b"")
    assert [mb.receive() for _ in range(3)] == [i.to_bytes(4, "little") for i in range(3)]


@pytest.mark.parametrize("size", [-1, 0, 3, 4, 2**31, 1.5, "64"])
def test_bad_message_buffer_sizes(region: Region, size: Any) -> None:
    with pytest.raises(ValueError):
        MessageBuffer.create(region, "mb", size)


@pytest.mark.parametrize("size", [-1, 0, 2**31, 2.0])
def test_bad_stream_buffer_sizes(region: Region, size: Any) -> None:
    with pytest.raises(ValueError):
        StreamBuffer.create(region, "sb", size)


def test_smallest_buffers(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 5)
    mb.send(b"x")
    assert mb.is_full and mb.receive() == b"x"
    with pytest.raises(MessageTooLarge):
        mb.send(b"xy")
    sb = StreamBuffer.create(region, "sb", 1)
    assert sb.write(b"abc", timeout=0) == 1 and sb.is_full
    assert sb.read(10) == b"a"


def test_message_too_large_is_immediate_and_a_value_error(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    for call in (lambda: mb.send(bytes(61)), lambda: mb.send(bytes(61), timeout=None),
                 lambda: mb.try_send(bytes(61)), lambda: mb.send(bytes(10**6), timeout=S.GENEROUS)):
        with pytest.raises(MessageTooLarge) as info:
            call()  # timeout None: would hang forever if the size were not checked first
        assert isinstance(info.value, ValueError) and isinstance(info.value, IpcError)
        assert "64" in str(info.value)
    mb.send(bytes(60))  # exactly the capacity: fits into an empty buffer
    # even on a full buffer the oversize error comes first, never a wait
    with pytest.raises(MessageTooLarge):
        mb.send(bytes(61))
    assert mb.receive() == bytes(60)


def test_zero_length_messages(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 16)
    mb.send(b"")
    assert mb.bytes_available == 4 and mb.next_length == 0 and not mb.is_empty
    mb.send(b"ab")
    mb.send(b"")
    assert mb.receive() == b""
    assert mb.next_length == 2
    assert mb.receive() == b"ab"
    out = bytearray(0)
    assert mb.receive_into(out) == 0
    assert mb.is_empty and mb.next_length is None
    assert mb.try_receive() is None
    stats = mb.statistics()
    assert stats.messages_sent == 3 and stats.bytes_sent == 2
    assert stats.messages_received == 3 and stats.bytes_received == 2


def test_receive_into_and_buffer_too_small(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.send(b"hello world")
    small = bytearray(5)
    calls: list[Callable[[], int]] = [lambda: mb.receive_into(small), lambda: mb.receive_into(small, timeout=0),
                 lambda: mb.receive_into(small, timeout=S.GENEROUS)]
    for call in calls:
        with pytest.raises(BufferTooSmall) as info:
            call()
        assert info.value.needed == 11 and "11" in str(info.value)
        assert mb.next_length == 11 and mb.bytes_available == 15, "the message stays in place"
    assert small == bytearray(5)
    exact = bytearray(11)
    assert mb.receive_into(exact) == 11 and exact == b"hello world"
    mb.send(b"abc")
    big = bytearray(b"\xff" * 8)
    assert mb.receive_into(memoryview(big)) == 3 and big == b"abc\xff\xff\xff\xff\xff"
    with pytest.raises((TypeError, BufferError)):
        mb.receive_into(b"read-only")
    mb.send(b"x")
    with pytest.raises(BufferTooSmall):
        mb.receive_into(bytearray(0))
    assert mb.receive() == b"x"


def test_accepts_any_bytes_like(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    sb = StreamBuffer.create(region, "sb", 64)
    for data in (b"ab", bytearray(b"ab"), memoryview(b"xxabxx")[2:4], __import__("array").array("B", b"ab")):
        mb.send(data)
        assert mb.receive() == b"ab"
        assert sb.write(data) == 2
        assert sb.read(2) == b"ab"
    for bad in ("text", 5, None, [1, 2]):
        with pytest.raises(TypeError):
            mb.send(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            sb.write(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1, -0.5, float("nan"), "1", [1]])
def test_bad_timeouts(region: Region, timeout: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    sb = StreamBuffer.create(region, "sb", 64)
    for call in (lambda: mb.send(b"x", timeout=timeout), lambda: mb.receive(timeout=timeout),
                 lambda: sb.write(b"x", timeout=timeout), lambda: sb.read(1, timeout=timeout)):
        with pytest.raises((ValueError, TypeError)):
            call()
    assert mb.is_empty and sb.is_empty


def test_bad_call_signatures(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    sb = StreamBuffer.create(region, "sb", 64)
    with pytest.raises(TypeError):
        mb.send()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        mb.send(b"x", 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        mb.send(b"x", timeot=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        mb.receive(1, timeout=1)  # type: ignore[misc]
    with pytest.raises(ValueError):
        sb.read(-1)
    with pytest.raises(TypeError):
        sb.read("3")  # type: ignore[arg-type]


# ---- timeouts --------------------------------------------------------------------------------


def test_timeouts_in_one_process(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 16)
    with pytest.raises(TimeoutError):
        mb.receive(timeout=0)
    with pytest.raises(TimeoutError):
        mb.receive(timeout=0.05)
    with pytest.raises(TimeoutError):
        mb.receive_into(bytearray(4), timeout=0.05)
    mb.send(bytes(12))
    with pytest.raises(TimeoutError):
        mb.send(b"x", timeout=0)
    with pytest.raises(TimeoutError):
        mb.send(b"x", timeout=0.05)
    assert mb.receive(timeout=0) == bytes(12)
    sb = StreamBuffer.create(region, "sb", 8)
    assert sb.read(4, timeout=0.05) == b""  # a stream read returns what there is, maybe nothing
    assert sb.write(bytes(20), timeout=0.05) == 8  # partial write at the timeout
    assert sb.write(b"x", timeout=0.05) == 0
    assert sb.read(100, timeout=0.05) == bytes(8)


# ---- stream buffers ----------------------------------------------------------------------------


def test_stream_partial_writes_and_reads(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 10)
    assert sb.capacity == 10 and sb.is_empty and not sb.is_full
    assert sb.try_write(b"abcdef") == 6
    assert sb.try_write(b"ghijklmn") == 4, "a stream write writes what fits"
    assert sb.is_full and sb.spaces_available == 0 and sb.bytes_available == 10
    assert sb.try_write(b"z") == 0
    assert sb.try_write(b"") == 0
    assert sb.try_read(3) == b"abc"
    assert sb.try_write(b"XYZW") == 3  # wraps around the end of the storage
    assert sb.read(100) == b"defghijXYZ"
    assert sb.try_read(5) == b"" and sb.read(0) == b""
    buf = bytearray(4)
    sb.write(b"12")
    assert sb.read_into(buf) == 2 and buf[:2] == b"12"
    assert sb.read_into(bytearray(0), timeout=0) == 0


def test_stream_write_longer_than_capacity_in_pieces(region: Region, background: Any) -> None:
    sb = StreamBuffer.create(region, "sb", 16)
    data = S.stream_bytes(0, 1000)
    writer = background(lambda: sb.write(data, timeout=S.GENEROUS))
    got = bytearray()
    deadline = time.monotonic() + S.GENEROUS
    while len(got) < len(data) and time.monotonic() < deadline:
        got += sb.read(7, timeout=1.0)
    assert writer.join() == 1000
    assert bytes(got) == data


def test_stream_read_waits_for_trigger_level(region: Region, background: Any) -> None:
    sb = StreamBuffer.create(region, "sb", 32, trigger_level=8)
    sb.spin = 0.0
    reader = background(lambda: sb.read(32, timeout=S.GENEROUS))
    S.wait_for_flag(region, sb, L.RING_OFF_RX_WAITING)
    sb.write(b"abc")  # below the trigger: the reader keeps waiting
    sb.write(b"defgh")  # 8 bytes: trigger reached
    data = reader.join()
    assert data == b"abcdefgh"
    # with bytes already there, read returns at once even below the trigger
    sb.write(b"xy")
    assert sb.read(32, timeout=S.GENEROUS) == b"xy"
    # on timeout it returns what there is
    sb.write(b"q")
    assert sb.read(1) == b"q"
    sb.write(b"abc")
    sb.read(3)


def test_trigger_level_rules(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 50, trigger_level=0)
    assert sb.trigger_level == 1, "0 is stored as 1"
    sb.trigger_level = 50  # == size is accepted for a dynamic buffer
    assert sb.trigger_level == 50
    with pytest.raises(ValueError):
        sb.trigger_level = 51
    assert sb.trigger_level == 50, "a rejected level leaves it unchanged"
    sb.trigger_level = 0
    assert sb.trigger_level == 1
    with pytest.raises(ValueError):
        sb.trigger_level = -1
    with pytest.raises(TypeError):
        sb.trigger_level = "3"  # type: ignore[assignment]
    with pytest.raises((ValueError, OverflowError)):
        sb.trigger_level = 2**70
    with pytest.raises(ValueError):
        StreamBuffer.create(region, "sb2", 50, trigger_level=51)
    with pytest.raises(ValueError):
        StreamBuffer.create(region, "sb3", 50, trigger_level=-1)
    assert StreamBuffer.create(region, "sb4", 50, trigger_level=50).trigger_level == 50
    mb = MessageBuffer.create(region, "mb", 30)
    assert mb.trigger_level == 1
    mb.trigger_level = 30
    with pytest.raises(ValueError):
        mb.trigger_level = 31
    # the level is shared: another attachment sees it
    assert StreamBuffer.attach(region, "sb").trigger_level == 1
    assert MessageBuffer.attach(region, "mb").trigger_level == 30


# ---- reset -------------------------------------------------------------------------------------


def test_reset(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.trigger_level = 5
    mb.send(b"abc")
    mb.send(b"defg")
    assert mb.reset() is True
    assert mb.is_empty and mb.next_length is None and mb.bytes_available == 0
    assert mb.trigger_level == 5, "reset keeps the trigger level"
    mb.trigger_level = 1
    mb.spin = 0.0
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    assert mb.reset() is False, "no reset while a reader is blocked"
    assert MessageBuffer.attach(region, "mb").reset() is False
    mb.send(b"wake")
    assert reader.join() == b"wake"
    assert mb.reset() is True
    # a writer blocked on a full buffer also prevents it
    mb.send(bytes(60))
    writer = background(lambda: mb.send(b"more", timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_TX_WAITING)
    assert mb.reset() is False
    assert mb.bytes_available == 64
    assert mb.receive() == bytes(60)
    writer.join()
    assert mb.receive() == b"more"
    assert mb.reset() is True


def test_reset_stream_buffer(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 10, trigger_level=3)
    sb.write(b"0123456")
    sb.read(5)
    assert sb.reset() is True
    assert sb.is_empty and sb.spaces_available == 10 and sb.trigger_level == 3
    assert sb.write(b"abcdefghijk", timeout=0) == 10 and sb.read(20) == b"abcdefghij"


# ---- statistics --------------------------------------------------------------------------------


def test_statistics(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    stats = mb.statistics()
    assert isinstance(stats, BufferStatistics)
    assert stats == BufferStatistics(0, 0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.messages_sent = 3  # type: ignore[misc]
    mb.send(b"abc")
    mb.send(b"")
    mb.send(bytes(20))
    assert not mb.try_send(bytes(60))
    mb.receive()
    stats = mb.statistics()
    assert (stats.messages_sent, stats.bytes_sent) == (3, 23)
    assert (stats.messages_received, stats.bytes_received) == (1, 3)
    assert stats.peak_fill == 7 + 4 + 24
    assert MessageBuffer.attach(region, "mb").statistics() == stats
    mb.spin = 0.0
    mb.receive()
    mb.receive()
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    mb.send(b"x")
    assert reader.join() == b"x"
    stats = mb.statistics()
    assert stats.receive_waits >= 1 and stats.reader_wakeups >= 1
    sb = StreamBuffer.create(region, "sb", 8)
    sb.write(b"abcdefghij", timeout=0)
    sb.read(3)
    s2 = sb.statistics()
    assert (s2.bytes_sent, s2.bytes_received, s2.peak_fill) == (8, 3, 8)


# ---- hooks -------------------------------------------------------------------------------------


def test_send_hook_fires_with_the_trigger_rule(region: Region) -> None:
    sb = StreamBuffer.create(region, "sb", 20, trigger_level=5)
    calls: list[int] = []
    sb.on_send_completed = lambda b: calls.append(b.bytes_available)
    assert sb.on_send_completed is not None
    sb.write(b"abc")
    assert calls == [], "3 bytes < trigger 5"
    sb.write(b"de")
    assert calls == [5]
    sb.write(b"f")
    assert calls == [5, 6]
    sb.read(6)
    sb.write(b"")
    assert calls == [5, 6], "no hook for a write of nothing"
    sb.write(bytes(20))
    sb.write(b"x", timeout=0)
    assert calls == [5, 6, 20], "no hook when nothing fitted"
    sb.on_send_completed = None
    sb.read(20)
    sb.write(bytes(6))
    assert calls == [5, 6, 20]


def test_message_hooks(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    sent: list[int] = []
    received: list[int] = []
    mb.on_send_completed = lambda b: sent.append(b.bytes_available)
    mb.on_receive_completed = lambda b: received.append(b.bytes_available)
    mb.send(b"abcd")
    mb.send(b"")
    assert sent == [8, 12]
    assert not mb.try_send(bytes(17))  # 21 > 20 free: does not fit, no hook
    assert sent == [8, 12]
    with pytest.raises(BufferTooSmall):
        mb.receive_into(bytearray(1))
    assert received == [], "a receive that consumed nothing fires no hook"
    mb.receive()
    mb.receive()
    assert received == [4, 0], "one hook per consumed message, zero-length included"
    assert mb.try_receive() is None
    assert received == [4, 0]
    # a hook's exception cannot undo the send: it is reported, the message is there
    mb.on_send_completed = lambda b: 1 / 0
    reported: list[type[BaseException] | None] = []
    saved = sys.unraisablehook
    sys.unraisablehook = lambda u: reported.append(u.exc_type)
    try:
        mb.send(b"z")
    finally:
        sys.unraisablehook = saved
    assert reported == [ZeroDivisionError]
    assert mb.receive() == b"z"
    with pytest.raises(TypeError):
        mb.on_send_completed = 42  # type: ignore[assignment]


def test_hook_replaces_the_default_wake(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.spin = 0.0
    woke: list[bool] = []
    # the hook plays the other side's interrupt handler: xMessageBufferSendCompletedFromISR
    mb.on_send_completed = lambda b: woke.append(b.send_completed_from_isr())
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    before = mb.statistics().reader_wakeups
    mb.send(b"via hook")
    assert reader.join() == b"via hook"
    assert woke == [True]
    assert mb.statistics().reader_wakeups == before + 1
    assert mb.send_completed_from_isr() is False, "nobody waits now"
    assert mb.receive_completed_from_isr() is False
    # the receive side, symmetrically: the writer blocked on a full buffer is woken by the helper
    mb.on_send_completed = None
    mb.on_receive_completed = lambda b: woke.append(b.receive_completed_from_isr())
    mb.send(bytes(60))
    writer = background(lambda: mb.send(b"after", timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_TX_WAITING)
    assert mb.receive() == bytes(60)
    writer.join()
    assert woke[-1] is True
    assert mb.receive() == b"after"


def test_hook_without_wake_only_costs_latency(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.spin = 0.0
    mb.on_send_completed = lambda b: None  # a strategy that forgot to notify
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    mb.send(b"found by the periodic re-check")
    assert reader.join() == b"found by the periodic re-check"
    assert mb.statistics().reader_wakeups == 0


def test_hook_may_use_the_buffer(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    seen: list[bytes | None] = []
    mb.on_send_completed = lambda b: seen.append(bytes([b.next_length or 0]))
    mb.send(b"abc")
    assert seen == [b"\x03"]


# ---- roles, ISR context, threads ---------------------------------------------------------------


def test_second_concurrent_writer_is_role_busy(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 32)
    mb.spin = 0.0
    mb.send(bytes(28))
    writer = background(lambda: mb.send(b"blocked", timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_TX_WAITING)
    other = MessageBuffer.attach(region, "mb")  # another object for the same buffer
    for call in (lambda: mb.send(b"x", timeout=0), lambda: mb.try_send(b"x"), lambda: other.send(b"x"),
                 lambda: other.try_send(b"x")):
        with pytest.raises(RoleBusy):
            call()
    assert mb.receive() == bytes(28)  # the reader role is free
    writer.join()
    assert mb.receive() == b"blocked"
    mb.send(b"turns")  # the role passes freely once the first call has returned
    assert other.receive() == b"turns"


def test_second_concurrent_reader_is_role_busy(region: Region, background: Any) -> None:
    sb = StreamBuffer.create(region, "sb", 32)
    sb.spin = 0.0
    reader = background(lambda: sb.read(4, timeout=S.GENEROUS))
    S.wait_for_flag(region, sb, L.RING_OFF_RX_WAITING)
    with pytest.raises(RoleBusy):
        sb.try_read(1)
    sb.write(b"data")
    assert reader.join() == b"data"


def test_blocking_calls_refused_in_isr_context(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 16)
    sb = StreamBuffer.create(region, "sb", 16)
    previous = _native.set_isr_context(True)
    try:
        assert _native.in_isr()
        for call in (lambda: mb.send(b"x"), lambda: mb.send(b"x", timeout=1), lambda: mb.receive(),
                     lambda: mb.receive_into(bytearray(4), timeout=1), lambda: sb.write(b"x"),
                     lambda: sb.read(1), lambda: sb.read_into(bytearray(1))):
            with pytest.raises(BlockingInIsr):
                call()
        assert mb.try_send(b"isr") and mb.try_receive() == b"isr"
        mb.send(b"t0", timeout=0)
        assert mb.receive(timeout=0) == b"t0"
        assert sb.try_write(b"ab") == 2 and sb.try_read(2) == b"ab"
        assert mb.send_completed_from_isr() is False
        # the flag is per thread
        seen: list[bool] = []
        t = threading.Thread(target=lambda: seen.append(_native.in_isr()))
        t.start()
        t.join()
        assert seen == [False]
    finally:
        _native.set_isr_context(previous)
    assert not _native.in_isr()


def test_blocked_wait_releases_the_gil(region: Region, background: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.spin = 0.0
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    progress = 0
    for _ in range(200_000):  # pure-Python work in this thread while the other one waits
        progress += 1
    assert progress == 200_000
    assert reader.thread.is_alive(), "the reader is still blocked"
    mb.send(b"done")
    assert reader.join() == b"done"


def test_spin_setting(region: Region) -> None:
    old = get_default_spin()
    try:
        set_default_spin(0.001)
        mb = MessageBuffer.create(region, "mb", 16)
        assert mb.spin == pytest.approx(0.001)
        mb.spin = 0
        assert mb.spin == 0
        for bad in (-1, 2.0, float("nan")):
            with pytest.raises(ValueError):
                mb.spin = bad
            with pytest.raises(ValueError):
                set_default_spin(bad)
    finally:
        set_default_spin(old)


def test_close_during_a_blocked_wait(make_region: Callable[..., Region], background: Any) -> None:
    region = make_region(1 << 16)
    mb = MessageBuffer.create(region, "mb", 16)
    mb.spin = 0.0
    reader = background(lambda: mb.receive(timeout=S.GENEROUS))
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    region.close()
    with pytest.raises(IpcError, match="closed"):
        reader.join()


def test_many_attachments_share_one_buffer(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 256)
    with Region.attach(region.name) as other_region:
        other = MessageBuffer.attach(other_region, "mb")
        for i in range(1000):
            msg = S.make_message(i, i % 50)
            (mb if i % 2 else other).send(msg)
            S.check_message((other if i % 3 else mb).receive(), i, i % 50)
    assert repr(mb).startswith("<MessageBuffer 'mb'")
