"""Hypothesis stateful tests: both buffers against a small reference model of the FreeRTOS rules.

The model is the FreeRTOS ring itself (main branch, dynamic creation): ``length = capacity + 1``,
one byte always free, head and tail indexes, a 4-byte little-endian length prefix that wraps like
data. After every step the real buffer must agree with the model on everything observable and
on the raw shared memory too: the head and tail words and every byte of the storage. That pins
down wrap-around, prefixes straddling the end, partial stream writes, too-small receives,
trigger levels, reset, fullness, the hooks and the statistics.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ampipc import BufferTooSmall, MessageBuffer, MessageTooLarge, Region, StreamBuffer
from ampipc import _layout as L

from . import _support as S

PREFIX = 4


class RingModel:
    """The FreeRTOS stream-buffer ring, as plain Python."""

    def __init__(self, capacity: int, message: bool) -> None:
        self.length = capacity + 1
        self.head = 0
        self.tail = 0
        self.storage = bytearray(self.length)
        self.message = message
        self.trigger = 1
        self.send_hooks = 0
        self.receive_hooks = 0
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = self.peak = 0

    @property
    def capacity(self) -> int:
        return self.length - 1

    @property
    def available(self) -> int:
        return (self.length + self.head - self.tail) % self.length

    @property
    def spaces(self) -> int:
        return (self.length + self.tail - self.head - 1) % self.length

    @property
    def is_full(self) -> bool:
        return self.spaces <= (PREFIX if self.message else 0)

    def _copy_in(self, data: bytes) -> None:
        for b in data:
            self.storage[self.head] = b
            self.head = (self.head + 1) % self.length

    def _peek(self, n: int, skip: int = 0) -> bytes:
        return bytes(self.storage[(self.tail + skip + i) % self.length] for i in range(n))

    def _after_send(self, payload: int) -> None:
        self.messages_in += 1
        self.bytes_in += payload
        self.peak = max(self.peak, self.available)
        if self.available >= self.trigger:
            self.send_hooks += 1

    def _after_receive(self, payload: int) -> None:
        self.messages_out += 1
        self.bytes_out += payload
        self.receive_hooks += 1

    # message buffer
    def send(self, data: bytes) -> bool | type[Exception]:
        if len(data) + PREFIX > self.capacity:
            return MessageTooLarge
        if self.spaces < len(data) + PREFIX:
            return False
        self._copy_in(len(data).to_bytes(PREFIX, "little") + data)
        self._after_send(len(data))
        return True

    def next_length(self) -> int | None:
        if self.available == 0:
            return None
        return int.from_bytes(self._peek(PREFIX), "little")

    def receive(self, room: int | None = None) -> bytes | None | BufferTooSmall:
        n = self.next_length()
        if n is None:
            return None
        if room is not None and n > room:
            return BufferTooSmall("", needed=n)
        data = self._peek(n, PREFIX)
        self.tail = (self.tail + PREFIX + n) % self.length
        self._after_receive(n)
        return data

    # stream buffer
    def write(self, data: bytes) -> int:
        k = min(len(data), self.spaces)
        if k:
            self._copy_in(data[:k])
            self._after_send(k)
        return k

    def read(self, max_bytes: int) -> bytes:
        k = min(max_bytes, self.available)
        data = self._peek(k)
        if k:
            self.tail = (self.tail + k) % self.length
            self._after_receive(k)
        return data

    def set_trigger(self, n: int) -> bool:
        n = max(n, 1)
        if n >= self.length:
            return False
        self.trigger = n
        return True

    def reset(self) -> None:
        self.head = self.tail = 0


class _RingMachine(RuleBasedStateMachine):
    buffer: Any
    model: RingModel
    region: Region | None

    def __init__(self) -> None:
        super().__init__()
        self.region = None

    def _open(self, capacity: int, message: bool) -> None:
        self.region = Region.create(S.new_name("h"), 1 << 16)
        if message:
            self.buffer = MessageBuffer.create(self.region, "buf", capacity)
        else:
            self.buffer = StreamBuffer.create(self.region, "buf", capacity)
        self.model = RingModel(capacity, message)
        self.hooks = [0, 0]

        def on_send(b: Any) -> None:
            assert b is self.buffer
            self.hooks[0] += 1

        def on_receive(b: Any) -> None:
            self.hooks[1] += 1

        self.buffer.on_send_completed = on_send
        self.buffer.on_receive_completed = on_receive

    def teardown(self) -> None:
        if self.region is not None:
            self.region.close()

    @rule(level=st.integers(0, 70))
    def set_trigger(self, level: int) -> None:
        if self.model.set_trigger(level):
            self.buffer.trigger_level = level
        else:
            with pytest.raises(ValueError):
                self.buffer.trigger_level = level

    @rule()
    def reset(self) -> None:
        assert self.buffer.reset() is True
        self.model.reset()

    @rule()
    def reattach(self) -> None:
        """Another object for the same shared buffer sees the same state (hooks are per object)."""
        assert self.region is not None
        other = type(self.buffer).attach(self.region, "buf")
        assert other.bytes_available == self.model.available
        assert other.trigger_level == self.model.trigger

    @invariant()
    def agrees_with_model(self) -> None:
        if self.region is None:
            return
        b, m = self.buffer, self.model
        h = b.offset
        assert self.region.mapping.load_u32(h + L.RING_OFF_HEAD) == m.head
        assert self.region.mapping.load_u32(h + L.RING_OFF_TAIL) == m.tail
        data = h + L.RING_HEADER_SIZE
        assert bytes(self.region.view[data : data + m.length]) == bytes(m.storage)
        assert b.capacity == m.capacity
        assert b.bytes_available == m.available
        assert b.spaces_available == m.spaces
        assert b.is_empty == (m.available == 0)
        assert b.is_full == m.is_full
        assert b.trigger_level == m.trigger
        assert self.hooks == [m.send_hooks, m.receive_hooks]
        stats = b.statistics()
        assert (stats.messages_sent, stats.bytes_sent) == (m.messages_in, m.bytes_in)
        assert (stats.messages_received, stats.bytes_received) == (m.messages_out, m.bytes_out)
        assert stats.peak_fill == m.peak


class MessageMachine(_RingMachine):
    @initialize(capacity=st.integers(5, 48))
    def create(self, capacity: int) -> None:
        self._open(capacity, message=True)

    @rule(data=st.binary(max_size=52), blocking=st.booleans())
    def send(self, data: bytes, blocking: bool) -> None:
        expected = self.model.send(data)
        if expected is MessageTooLarge:
            with pytest.raises(MessageTooLarge):
                self.buffer.send(data, timeout=0) if blocking else self.buffer.try_send(data)
        elif blocking:
            if expected:
                assert self.buffer.send(data, timeout=0) is None
            else:
                with pytest.raises(TimeoutError):
                    self.buffer.send(data, timeout=0)
        else:
            assert self.buffer.try_send(data) is expected

    @rule(blocking=st.booleans())
    def receive(self, blocking: bool) -> None:
        expected = self.model.receive()
        if blocking:
            if expected is None:
                with pytest.raises(TimeoutError):
                    self.buffer.receive(timeout=0)
            else:
                assert self.buffer.receive(timeout=0) == expected
        else:
            assert self.buffer.try_receive() == expected

    @rule(room=st.integers(0, 50))
    def receive_into(self, room: int) -> None:
        expected = self.model.receive(room)
        out = bytearray(b"\xee" * room)
        if expected is None:
            with pytest.raises(TimeoutError):
                self.buffer.receive_into(out, timeout=0)
        elif isinstance(expected, BufferTooSmall):
            with pytest.raises(BufferTooSmall) as info:
                self.buffer.receive_into(out, timeout=0)
            assert info.value.needed == expected.needed
            assert out == b"\xee" * room
        else:
            assert self.buffer.receive_into(out, timeout=0) == len(expected)
            assert out[: len(expected)] == expected and out[len(expected) :] == b"\xee" * (room - len(expected))

    @invariant()
    def next_length_agrees(self) -> None:
        if self.region is not None:
            assert self.buffer.next_length == self.model.next_length()


class StreamMachine(_RingMachine):
    @initialize(capacity=st.integers(1, 40), trigger=st.integers(0, 40))
    def create(self, capacity: int, trigger: int) -> None:
        self._open(capacity, message=False)
        trigger = min(trigger, capacity)
        self.buffer.trigger_level = trigger
        self.model.set_trigger(trigger)

    @rule(data=st.binary(max_size=50), blocking=st.booleans())
    def write(self, data: bytes, blocking: bool) -> None:
        expected = self.model.write(data)
        got = self.buffer.write(data, timeout=0) if blocking else self.buffer.try_write(data)
        assert got == expected

    @rule(max_bytes=st.integers(0, 50), how=st.sampled_from(["read", "try_read", "read_into"]))
    def read(self, max_bytes: int, how: str) -> None:
        expected = self.model.read(max_bytes)
        if how == "read":
            assert self.buffer.read(max_bytes, timeout=0) == expected
        elif how == "try_read":
            assert self.buffer.try_read(max_bytes) == expected
        else:
            out = bytearray(max_bytes)
            assert self.buffer.read_into(out, timeout=0) == len(expected)
            assert out[: len(expected)] == expected


_SETTINGS = settings(max_examples=300, stateful_step_count=50, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
MessageMachine.TestCase.settings = _SETTINGS
StreamMachine.TestCase.settings = _SETTINGS
TestMessageBufferModel = MessageMachine.TestCase
TestStreamBufferModel = StreamMachine.TestCase


# ---- the model's own rules, checked on fixed cases ---------------------------------------------


def test_model_capacity_rules() -> None:
    m = RingModel(100, message=True)
    assert m.capacity == 100 and m.length == 101
    assert m.send(bytes(10)) is True and m.available == 14
    assert m.send(bytes(97)) is MessageTooLarge and m.send(bytes(96)) is False
    assert m.send(bytes(82)) is True and m.spaces == 0 and m.is_full


def test_prefix_straddles_the_end(region: Region) -> None:
    """A length prefix split across the end of the storage, byte for byte as FreeRTOS lays it out."""
    mb = MessageBuffer.create(region, "mb", 10)  # xLength 11
    mb.send(b"abcde")  # prefix 0..3, payload 4..8, head 9
    assert mb.receive() == b"abcde"
    mb.send(b"XYZ")  # prefix at 9, 10, 0, 1; payload 2..4
    data = region.view[mb.offset + L.RING_HEADER_SIZE : mb.offset + L.RING_HEADER_SIZE + 11]
    assert bytes(data[9:11]) + bytes(data[0:2]) == (3).to_bytes(4, "little")
    assert bytes(data[2:5]) == b"XYZ"
    assert region.mapping.load_u32(mb.offset + L.RING_OFF_HEAD) == 5
    assert mb.next_length == 3 and mb.receive() == b"XYZ"
    # and a payload straddling the end
    mb.send(b"123")  # prefix 5..8, payload 9, 10, 0
    assert mb.receive() == b"123"
    data.release()
