"""Batches: send_many / receive_many / receive_many_into against a model, across two processes,
and with one wake-up per batch."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import BufferTooSmall, MessageBuffer, MessageTooLarge, Region, Timeout
from ampipc import _layout as L
from ampipc.ipc import Ipc

from . import _support as S

pytestmark = pytest.mark.timeout(240)


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.lists(st.integers(0, 40), max_size=8)),
            st.tuples(st.just("recv"), st.integers(1, 6)),
            st.tuples(st.just("into"), st.integers(1, 6), st.integers(0, 120)),
        ),
        max_size=40,
    ),
)
def test_batches_against_a_model(ops: list[Any]) -> None:
    from tests.conftest import make_unique_name

    capacity = 150
    with Region.create(make_unique_name("bt"), 1 << 16) as region:
        mb = MessageBuffer.create(region, "m", capacity)
        model: deque[bytes] = deque()
        used = 0
        counter = 0
        for op in ops:
            if op[0] == "send":
                batch = []
                for n in op[1]:
                    batch.append(bytes([counter & 0xFF]) * n)
                    counter += 1
                expect = 0
                for m in batch:  # all or nothing per message, in order, stopping at the first that does not fit
                    if used + len(m) + L.PREFIX_SIZE > capacity:
                        break
                    used += len(m) + L.PREFIX_SIZE
                    model.append(m)
                    expect += 1
                assert mb.send_many(batch, timeout=0) == expect
            elif op[0] == "recv":
                got = mb.try_receive_many(op[1])
                expect_list = [model.popleft() for _ in range(min(op[1], len(model)))]
                used -= sum(len(m) + L.PREFIX_SIZE for m in expect_list)
                assert got == expect_list
            else:
                _, max_count, room = op
                buf = bytearray(room)
                taken: list[bytes] = []
                total = 0
                for m in list(model)[:max_count]:
                    if total + len(m) > room:
                        break
                    taken.append(m)
                    total += len(m)
                if not model:
                    with pytest.raises(Timeout):
                        mb.receive_many_into(buf, max_count, timeout=0)
                elif not taken:
                    with pytest.raises(BufferTooSmall):
                        mb.receive_many_into(buf, max_count, timeout=0)
                else:
                    views = mb.receive_many_into(buf, max_count, timeout=0)
                    assert [bytes(v) for v in views] == taken
                    for _ in taken:
                        model.popleft()
                    used -= sum(len(m) + L.PREFIX_SIZE for m in taken)
            assert mb.bytes_available == used


def test_a_batch_is_one_wake_up(region: Region) -> None:
    mb = MessageBuffer.create(region, "m", 4096)
    reader_side = MessageBuffer.attach(region, "m")
    mb.spin = reader_side.spin = 0.0
    got: list[list[bytes]] = []
    t = threading.Thread(target=lambda: got.append(reader_side.receive_many(100, timeout=S.GENEROUS)))
    t.start()
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    before = mb.statistics().reader_wakeups
    assert mb.send_many([b"%d" % k for k in range(50)]) == 50
    t.join(S.GENEROUS)
    assert got == [[b"%d" % k for k in range(50)]]
    assert mb.statistics().reader_wakeups == before + 1


def test_batch_errors(region: Region) -> None:
    mb = MessageBuffer.create(region, "m", 64)
    with pytest.raises(MessageTooLarge):
        mb.send_many([b"ok", b"x" * 61])
    assert mb.is_empty  # checked before anything is written
    with pytest.raises(TypeError):
        mb.send_many([b"ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        mb.receive_many(0)
    with pytest.raises(Timeout):
        mb.receive_many(5, timeout=0.01)
    assert mb.send_many([b"a" * 20, b"b" * 20, b"c" * 20], timeout=0.01) == 2  # the third has no room


def batch_writer(region_name: str, count: int) -> None:
    with Region.attach(region_name) as region:
        mb = MessageBuffer.attach(region, "m")
        seq = 0
        while seq < count:
            batch = [S.make_message(k, S.message_size(3, k, 200)) for k in range(seq, min(count, seq + 37))]
            assert mb.send_many(batch, timeout=S.GENEROUS) == len(batch)
            seq += len(batch)


def test_batches_across_two_processes(region: Region, spawn: Any) -> None:
    count = 50_000
    mb = MessageBuffer.create(region, "m", 8192)
    child = spawn(batch_writer, region.name, count)
    seq = 0
    while seq < count:
        for data in mb.receive_many(64, timeout=S.GENEROUS):
            S.check_message(data, seq, S.message_size(3, seq, 200))
            seq += 1
    assert spawn.join(child) == 0


@pytest.mark.parametrize("strategy", ["direct", "control", "toggle", "hsem"])
def test_channel_batches(region: Region, strategy: str) -> None:
    with Ipc.init(region, channels=2, buffer_size=256, strategy=strategy) as ipc, Ipc.attach(region, core="CM4") as cm4:
        ipc.start()
        cm4.start()
        messages = [b"m%05d" % k for k in range(2000)]
        out: list[int] = []
        t = threading.Thread(target=lambda: out.append(ipc.send_many(1, messages, timeout=S.GENEROUS)))
        t.start()
        got: list[bytes] = []
        while len(got) < len(messages):
            got.extend(cm4.receive_many(1, 100, timeout=S.GENEROUS))
        t.join(S.GENEROUS)
        assert out == [len(messages)] and got == messages
        assert cm4.try_receive_many(1, 10) == []


@settings(max_examples=60, deadline=None)
@given(
    sends=st.lists(st.lists(st.binary(max_size=30), max_size=5), max_size=12),
    width=st.sampled_from([1, 2, 4, 8]),
)
def test_send_parts_is_one_message_of_the_joined_parts(sends: list[list[bytes]], width: int) -> None:
    from tests.conftest import make_unique_name

    with Region.create(make_unique_name("sp"), 1 << 16) as region:
        mb = MessageBuffer.create(region, "m", 120, prefix_width=width)
        model: deque[bytes] = deque()
        used = 0
        for parts in sends:
            joined = b"".join(parts)
            fits = used + len(joined) + width <= 120
            # memoryviews and bytearrays too: any buffer
            assert mb.try_send_parts([memoryview(p) if k % 2 else bytearray(p) for k, p in enumerate(parts)]) is fits
            if fits:
                model.append(joined)
                used += len(joined) + width
            assert mb.bytes_available == used
        assert mb.try_receive_many(100) == list(model)


def test_send_parts_errors_and_waits(region: Region) -> None:
    mb = MessageBuffer.create(region, "m", 64)
    reader = MessageBuffer.attach(region, "m")
    with pytest.raises(MessageTooLarge):
        mb.send_parts([b"x" * 30, b"y" * 31])
    with pytest.raises(TypeError):
        mb.send_parts([b"ok", 5])  # type: ignore[list-item]
    mb.send_parts([b"a" * 40])
    with pytest.raises(Timeout):
        mb.send_parts([b"b" * 10, b"c" * 10], timeout=0.01)
    t = threading.Timer(0.05, reader.receive, kwargs={"timeout": 0})
    t.start()
    mb.send_parts([b"b" * 10, b"c" * 10], timeout=S.GENEROUS)  # waits for the room the reader makes
    t.join()
    assert reader.receive(timeout=0) == b"b" * 10 + b"c" * 10
