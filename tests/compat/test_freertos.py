"""The FreeRTOS names against the native API: one behaviour suite run through both, plus the
FreeRTOS-only conventions (return codes, ticks, static capacity, FromISR woken flags)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import BufferTooSmall, MessageBuffer, MessageTooLarge, Region, StreamBuffer, Timeout
from ampipc.compat import freertos as fr
from ampipc.hw import Hardware

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _default_tick_rate() -> Iterator[None]:
    yield
    fr.set_tick_rate(1000)


# ---- one behaviour suite, two APIs ---------------------------------------------------------------


class Native:
    """The behaviours in native terms: None stands for "nothing" (timeout, too large, too small)."""

    name = "native"

    def create_message(self, region: Region, name: str, size: int) -> MessageBuffer:
        return MessageBuffer.create(region, name, size)

    def send(self, buf: MessageBuffer, data: bytes, timeout: float) -> bool:
        try:
            buf.send(data, timeout=timeout)
        except (Timeout, MessageTooLarge):
            return False
        return True

    def receive(self, buf: MessageBuffer, room: int, timeout: float) -> bytes | None:
        target = bytearray(room)
        try:
            n = buf.receive_into(target, timeout=timeout)
        except (Timeout, BufferTooSmall):
            return None
        return bytes(target[:n])

    def write(self, buf: StreamBuffer, data: bytes, timeout: float) -> int:
        return int(buf.write(data, timeout=timeout))

    def read(self, buf: StreamBuffer, room: int, timeout: float) -> bytes:
        return bytes(buf.read(room, timeout=timeout))

    def create_stream(self, region: Region, name: str, size: int, trigger: int) -> StreamBuffer:
        return StreamBuffer.create(region, name, size, trigger_level=trigger)


class Compat:
    """The same behaviours through the FreeRTOS names (return codes decoded back)."""

    name = "freertos"

    def create_message(self, region: Region, name: str, size: int) -> MessageBuffer:
        handle = fr.xMessageBufferCreate(size, region, name)
        assert handle is not None
        return handle

    def send(self, buf: MessageBuffer, data: bytes, timeout: float) -> bool:
        n = fr.xMessageBufferSend(buf, data, len(data), round(timeout * fr.get_tick_rate()))
        assert n in (0, len(data))
        return n == len(data)

    def receive(self, buf: MessageBuffer, room: int, timeout: float) -> bytes | None:
        target = bytearray(room)
        n = fr.xMessageBufferReceive(buf, target, room, round(timeout * fr.get_tick_rate()))
        return bytes(target[:n]) if n else None

    def write(self, buf: StreamBuffer, data: bytes, timeout: float) -> int:
        return fr.xStreamBufferSend(buf, data, len(data), round(timeout * fr.get_tick_rate()))

    def read(self, buf: StreamBuffer, room: int, timeout: float) -> bytes:
        target = bytearray(room)
        n = fr.xStreamBufferReceive(buf, target, room, round(timeout * fr.get_tick_rate()))
        return bytes(target[:n])

    def create_stream(self, region: Region, name: str, size: int, trigger: int) -> StreamBuffer:
        handle = fr.xStreamBufferCreate(size, trigger, region, name)
        assert handle is not None
        return handle


APIS: list[Any] = [Native(), Compat()]


@pytest.fixture(params=APIS, ids=lambda api: api.name)
def api(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_messages_keep_their_boundaries_and_order(api: Any, region: Region) -> None:
    buf = api.create_message(region, "m", 100)
    for i in range(300):
        payload = bytes([i % 256]) * (1 + i % 40)
        assert api.send(buf, payload, 5.0)
        assert api.receive(buf, 64, 5.0) == payload


def test_a_full_message_buffer_takes_nothing(api: Any, region: Region) -> None:
    buf = api.create_message(region, "m", 28)  # two 10-byte messages (14 bytes each)
    assert api.send(buf, b"a" * 10, 0)
    assert api.send(buf, b"b" * 10, 0)
    assert not api.send(buf, b"c", 0)
    assert buf.bytes_available == 28
    assert api.receive(buf, 10, 0) == b"a" * 10


def test_a_message_that_can_never_fit_is_refused_at_once(api: Any, region: Region) -> None:
    buf = api.create_message(region, "m", 20)
    assert not api.send(buf, b"x" * 17, 30.0)  # 17 + 4 > 20: no waiting for 30 s
    assert buf.is_empty


def test_a_too_small_receive_leaves_the_message(api: Any, region: Region) -> None:
    buf = api.create_message(region, "m", 64)
    assert api.send(buf, b"0123456789", 0)
    assert api.receive(buf, 3, 0) is None
    assert fr.xMessageBufferNextLengthBytes(buf) == 10
    assert api.receive(buf, 10, 0) == b"0123456789"
    assert fr.xMessageBufferNextLengthBytes(buf) == 0


def test_an_empty_buffer_times_out(api: Any, region: Region) -> None:
    buf = api.create_message(region, "m", 64)
    assert api.receive(buf, 64, 0.02) is None


def test_stream_writes_are_partial(api: Any, region: Region) -> None:
    buf = api.create_stream(region, "s", 10, 1)
    assert api.write(buf, b"abcdefgh", 0) == 8
    assert api.write(buf, b"ijklmn", 0) == 2
    assert api.read(buf, 4, 0) == b"abcd"
    assert api.read(buf, 100, 0) == b"efghij"
    assert api.read(buf, 100, 0.01) == b""


def _cross_process_sender(region_name: str, api_name: str, count: int) -> None:
    api = next(a for a in APIS if a.name == api_name)
    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, "m")
        for i in range(count):
            assert api.send(buf, i.to_bytes(4, "little") * (1 + i % 7), 30.0)


def test_thousands_of_messages_across_processes(api: Any, make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region()
    buf = api.create_message(region, "m", 256)
    count = 3000
    child = spawn(_cross_process_sender, region.name, api.name, count)
    for i in range(count):
        assert api.receive(buf, 64, 30.0) == i.to_bytes(4, "little") * (1 + i % 7)
    assert spawn.join(child) == 0


# ---- FreeRTOS-only conventions -------------------------------------------------------------------


def test_ticks_follow_the_configured_rate() -> None:
    assert fr.ticks_to_seconds(fr.portMAX_DELAY) is None
    assert fr.ticks_to_seconds(0) == 0
    assert fr.pdMS_TO_TICKS(250) == 250
    fr.set_tick_rate(100)
    assert fr.pdMS_TO_TICKS(250) == 25 and fr.pdTICKS_TO_MS(25) == 250
    assert fr.ticks_to_seconds(5) == pytest.approx(0.05)
    for bad in (-1, fr.portMAX_DELAY + 1, 1.5, True):
        with pytest.raises(ValueError):
            fr.ticks_to_seconds(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fr.set_tick_rate(0)


def test_return_codes(region: Region) -> None:
    mb = fr.xMessageBufferCreate(30, region, "m")
    assert mb is not None
    assert fr.xMessageBufferIsEmpty(mb) == fr.pdTRUE and fr.xMessageBufferIsFull(mb) == fr.pdFALSE
    assert fr.xMessageBufferSend(mb, b"", 0, 0) == 0  # FreeRTOS writes no zero-length message
    assert fr.xMessageBufferIsEmpty(mb) == fr.pdTRUE
    assert fr.xMessageBufferSend(mb, b"0123456789abcdef", 10, 0) == 10  # the first 10 bytes
    assert fr.xMessageBufferSpacesAvailable(mb) == 16 == fr.xMessageBufferSpaceAvailable(mb)
    assert fr.xStreamBufferBytesAvailable(mb) == 14
    assert fr.xMessageBufferSend(mb, b"x" * 12, 12, 0) == 12
    assert fr.xMessageBufferIsFull(mb) == fr.pdTRUE  # 0 bytes left: not even a 1-byte message fits
    assert fr.xMessageBufferReset(mb) == fr.pdPASS
    assert fr.xMessageBufferIsEmpty(mb) == fr.pdTRUE
    with pytest.raises(ValueError):
        fr.xMessageBufferSend(mb, b"abc", 4, 0)  # a length beyond the data (configASSERT)
    with pytest.raises(TypeError):
        fr.xMessageBufferReceive(mb, b"read-only", 4, 0)


def test_reset_fails_while_a_task_is_blocked(region: Region) -> None:
    mb = fr.xMessageBufferCreate(64, region, "m")
    assert mb is not None
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(fr.xMessageBufferReceive(mb, bytearray(8), 8, fr.portMAX_DELAY)))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while mb.statistics().receive_waits == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert fr.xMessageBufferReset(mb) == fr.pdFAIL
    finally:
        assert fr.xMessageBufferSend(mb, b"wake", 4, fr.portMAX_DELAY) == 4
        reader.join(30)
    assert got == [4]
    assert fr.xMessageBufferReset(mb) == fr.pdPASS


def test_static_creation_holds_one_byte_less(region: Region) -> None:
    sb = fr.xStreamBufferCreateStatic(1000, 1, region, "s")
    mb = fr.xMessageBufferCreateStatic(24, region, "ctrl")
    assert sb is not None and mb is not None
    assert sb.capacity == 999  # "so 999", as the FreeRTOS header says
    records = 0
    while fr.xMessageBufferSend(mb, b"hndl", 4, 0) == 4:
        records += 1
    assert records == 2  # a 24-byte static control buffer holds two 4-byte handles (three dynamically)
    with pytest.raises(ValueError):
        fr.xStreamBufferCreateStatic(10, 10, region, "never")


def test_trigger_level(region: Region) -> None:
    sb = fr.xStreamBufferCreate(10, 0, region, "s")
    assert sb is not None and sb.trigger_level == 1  # 0 becomes 1
    assert fr.xStreamBufferSetTriggerLevel(sb, 10) == fr.pdPASS and sb.trigger_level == 10
    assert fr.xStreamBufferSetTriggerLevel(sb, 11) == fr.pdFAIL and sb.trigger_level == 10
    assert fr.xStreamBufferSetTriggerLevel(sb, 0) == fr.pdPASS and sb.trigger_level == 1
    assert fr.xStreamBufferNextMessageLengthBytes(sb) == 0  # a stream has no messages
    with pytest.raises(ValueError):
        fr.xStreamBufferCreate(10, 11, region, "bad")


def test_creation_in_a_full_region_returns_null(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 16)
    assert fr.xMessageBufferCreate(1 << 20, region, "huge") is None
    assert fr.xStreamBufferCreate(1 << 20, 1, region, "huge") is None


def test_from_isr_variants_report_a_woken_task(region: Region) -> None:
    """In a real interrupt handler (the dispatcher thread), with a task blocked on the other side."""
    mb = fr.xMessageBufferCreate(64, region, "m")
    assert mb is not None
    with Hardware.create(region) as hw:
        core = hw.core("CM7")
        results: list[tuple[int, int]] = []
        done = threading.Event()

        def isr(line: int) -> None:
            woken = [fr.pdFALSE]
            results.append((fr.xMessageBufferSendFromISR(mb, b"from isr", 8, woken), woken[0]))
            done.set()

        core.attach_handler(5, isr)
        core.start()
        got: list[bytes] = []

        def task() -> None:
            room = bytearray(16)
            n = fr.xMessageBufferReceive(mb, room, 16, fr.portMAX_DELAY)
            got.append(bytes(room[:n]))

        reader = threading.Thread(target=task)
        reader.start()
        deadline = time.monotonic() + 30
        while mb.statistics().receive_waits == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        core.raise_interrupt(5)
        assert done.wait(30)
        reader.join(30)
        assert got == [b"from isr"]
        assert results == [(8, fr.pdTRUE)]
        # nobody waits now: the flag stays pdFALSE
        woken = [fr.pdFALSE]
        assert fr.xMessageBufferSendFromISR(mb, b"again", 5, woken) == 5 and woken == [fr.pdFALSE]
        room = bytearray(3)
        assert fr.xMessageBufferReceiveFromISR(mb, room, 3, woken) == 0  # too small: left in place
        room = bytearray(8)
        assert fr.xMessageBufferReceiveFromISR(mb, room, 8, woken) == 5 and room[:5] == b"again"
        assert fr.xMessageBufferReceiveFromISR(mb, room, 8, None) == 0
        assert fr.xMessageBufferSendCompletedFromISR(mb, woken) == fr.pdFALSE  # no reader blocked
        assert fr.xMessageBufferReceiveCompletedFromISR(mb, None) == fr.pdFALSE
        core.detach_handler(5)


# ---- a property test against a model of FreeRTOS's message buffer ---------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 40)),
        st.tuples(st.just("receive"), st.integers(0, 40)),
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(5, 80), ops=_OPS)
def test_message_buffer_matches_the_freertos_model(size: int, ops: list[tuple[str, int]]) -> None:
    from tests.conftest import make_unique_name

    region = Region.create(make_unique_name("fr"), 1 << 16)
    try:
        mb = fr.xMessageBufferCreate(size, region, "m")
        assert mb is not None
        queue: list[bytes] = []
        counter = 0
        for op, n in ops:
            used = sum(len(m) + 4 for m in queue)
            if op == "send":
                counter += 1
                payload = bytes([counter % 256]) * n
                fits = 0 < n and n + 4 <= size - used
                assert fr.xMessageBufferSend(mb, payload, n, 0) == (n if fits else 0)
                if fits:
                    queue.append(payload)
            elif op == "receive":
                room = bytearray(n)
                expected = queue[0] if queue and len(queue[0]) <= n else None
                assert fr.xMessageBufferReceive(mb, room, n, 0) == (len(expected) if expected else 0)
                if expected is not None:
                    assert bytes(room[: len(expected)]) == expected
                    queue.pop(0)
            else:
                assert fr.xMessageBufferReset(mb) == fr.pdPASS
                queue.clear()
            used = sum(len(m) + 4 for m in queue)
            assert fr.xStreamBufferBytesAvailable(mb) == used
            assert fr.xMessageBufferSpacesAvailable(mb) == size - used
            assert fr.xMessageBufferNextLengthBytes(mb) == (len(queue[0]) if queue else 0)
            assert fr.xMessageBufferIsFull(mb) == (fr.pdTRUE if size - used <= 4 else fr.pdFALSE)
    finally:
        region.close()


def test_length_type_size_and_batching(region: Region) -> None:
    fr.set_length_type_size(8)  # an x86-64 FreeRTOS peer
    try:
        mb = fr.xMessageBufferCreate(40, region, "wide")
        assert mb is not None
        assert fr.xMessageBufferSend(mb, b"0123456789", 10, 0) == 10
        assert fr.xStreamBufferBytesAvailable(mb) == 18  # 10 bytes and an 8-byte length
        with pytest.raises(ValueError):
            fr.set_length_type_size(3)
    finally:
        fr.set_length_type_size(4)
    assert fr.get_length_type_size() == 4
    batching = fr.xStreamBatchingBufferCreate(32, 4, region, "batch")
    assert batching is not None
    assert fr.xStreamBufferSend(batching, b"abcd", 4, 0) == 4
    room = bytearray(8)
    assert fr.xStreamBufferReceive(batching, room, 8, 0) == 0  # a task reads only above the trigger
    assert fr.xStreamBufferSend(batching, b"e", 1, 0) == 1
    assert fr.xStreamBufferReceive(batching, room, 8, 0) == 5 and room[:5] == b"abcde"
    static_batching = fr.xStreamBatchingBufferCreateStatic(16, 2, region, "sbatch")
    assert static_batching is not None and static_batching.capacity == 15


def test_stream_send_waits_for_all_of_it_then_writes_once(region: Region) -> None:
    """xStreamBufferSend's blocking rule: with a reader freeing room in steps, one write of all of it."""
    sb = fr.xStreamBufferCreate(10, 1, region, "s")
    assert sb is not None
    assert fr.xStreamBufferSend(sb, b"12345678", 8, 0) == 8
    sizes: list[int] = []

    def reader() -> None:
        room = bytearray(2)
        for _ in range(3):  # frees 2 bytes at a time
            while sb.statistics().send_waits == 0:
                time.sleep(0.002)
            sizes.append(fr.xStreamBufferReceive(sb, room, 2, fr.portMAX_DELAY))
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert fr.xStreamBufferSend(sb, b"abcdef", 6, fr.pdMS_TO_TICKS(30_000)) == 6
    finally:
        thread.join(30)
    assert sizes == [2, 2, 2]
    assert sb.statistics().messages_sent == 2  # two writes in all: the first 8 bytes, then all 6 at once
