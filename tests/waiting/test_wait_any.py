"""wait_any and Selector over buffers: the ready subset, writability, bad input, many objects, many processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from ampipc import MessageBuffer, PeerClosed, Region, RegionClosed, StreamBuffer, wait_any
from ampipc.hw import Hardware
from ampipc.waiting import READABLE, WRITABLE, Selector

from ._workers import TIMEOUT, client, drain_slowly, message


def test_the_ready_subset_in_the_order_given(region: Region) -> None:
    bufs = [MessageBuffer.create(region, f"b{i}", 128) for i in range(6)]
    assert wait_any(bufs, 0) == []
    bufs[4].send(b"x")
    bufs[1].send(b"")  # a zero-length message is a message
    assert wait_any(bufs, 0) == [bufs[1], bufs[4]]
    assert wait_any(reversed(bufs), 0) == [bufs[4], bufs[1]]
    assert bufs[4].receive() == b"x"
    assert wait_any(bufs, 0) == [bufs[1]]


def test_writable_means_a_message_fits(region: Region) -> None:
    buf = MessageBuffer.create(region, "w", 16)
    assert wait_any([(buf, WRITABLE)], 0) == [buf]
    buf.send(b"0123456789")  # 14 of 16 bytes: a 1-byte message (5 bytes) no longer fits
    assert wait_any([(buf, WRITABLE)], 0) == []
    assert wait_any([(buf, READABLE | WRITABLE)], 0) == [buf]
    buf.receive()
    assert wait_any([(buf, WRITABLE)], 0) == [buf]


def test_a_stream_buffer_is_readable_at_its_trigger_level(region: Region) -> None:
    s = StreamBuffer.create(region, "s", 64, trigger_level=4)
    s.write(b"abc")
    assert wait_any([s], 0) == []
    s.write(b"d")
    assert wait_any([s], 0) == [s]


def test_a_sleeping_wait_is_woken_by_a_send(region: Region) -> None:
    bufs = [MessageBuffer.create(region, f"b{i}", 128) for i in range(10)]

    def later() -> None:
        time.sleep(0.1)
        bufs[7].send(b"wake")

    t = threading.Thread(target=later)
    t.start()
    try:
        got = wait_any(bufs, TIMEOUT)
    finally:
        t.join()
    assert got == [bufs[7]]
    assert bufs[7].receive() == b"wake"
    # the waiting words are cleared after the wait: reset() (refused while someone waits) works
    assert all(b.reset() for b in bufs)


def test_a_writer_waiting_for_room_is_woken_by_the_reader(region: Region, spawn: Callable[..., object]) -> None:
    buf = MessageBuffer.create(region, "full", 64)
    count = 60
    sent = 0
    proc = spawn(drain_slowly, region.name, "full", count)
    try:
        while sent < count:
            if buf.try_send(message(9, 0, sent)):
                sent += 1
                continue
            assert wait_any([(buf, WRITABLE)], TIMEOUT) == [buf]
    finally:
        assert spawn.join(proc) == 0  # type: ignore[attr-defined]
    assert buf.statistics().messages_received == count


def test_timeout_returns_an_empty_list(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 64)
    assert wait_any([buf], 0.05) == []
    with pytest.raises(ValueError):
        wait_any([buf], -1)


def test_a_closed_region_raises_region_closed(make_region: Callable[..., Region]) -> None:
    r = make_region()
    buf = MessageBuffer.create(r, "b", 64)
    r.close()
    with pytest.raises(RegionClosed):
        wait_any([buf], 0)
    sel = Selector()
    with pytest.raises(RegionClosed):
        sel.register(buf)


def test_a_region_closed_during_the_wait_ends_it(make_region: Callable[..., Region]) -> None:
    r = make_region()
    buf = MessageBuffer.create(r, "b", 64)
    t = threading.Timer(0.1, r.close)
    t.start()
    try:
        with pytest.raises(RegionClosed):
            wait_any([buf], TIMEOUT)
    finally:
        t.join()


@pytest.mark.parametrize("bad", [42, "buffer", object(), None])
def test_a_non_waitable_is_a_type_error_naming_it(region: Region, bad: object) -> None:
    buf = MessageBuffer.create(region, "b", 64)
    with pytest.raises(TypeError, match=type(bad).__name__):
        wait_any([buf, bad], 0)


def test_bad_events_and_arguments(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 64)
    for events in (0, 4, -1, True, "r"):
        with pytest.raises(ValueError):
            wait_any([(buf, events)], 0)
    with pytest.raises(TypeError):
        wait_any([(buf, READABLE, 1)], 0)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        wait_any(buf, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wait_any([], 0)


@pytest.mark.parametrize("fallback", [False, True])
def test_more_objects_than_the_kernel_limit(make_region: Callable[..., Region], fallback: bool) -> None:
    r = make_region(4 << 20, directory_capacity=400)
    bufs = [MessageBuffer.create(r, f"b{i}", 64) for i in range(300)]  # 300 words > 128
    for target in (0, 150, 299):

        def later(i: int = target) -> None:
            time.sleep(0.05)
            bufs[i].send(b"%d" % i)

        t = threading.Thread(target=later)
        t.start()
        try:
            got = wait_any(bufs, TIMEOUT, fallback=fallback)
        finally:
            t.join()
        assert got == [bufs[target]]
        assert bufs[target].receive() == b"%d" % target


def test_a_hardware_core_is_readable_when_a_sev_arrived(region: Region) -> None:
    with Hardware.create(region) as hw:
        cm7, cm4 = hw.core("CM7"), hw.core("CM4")
        assert wait_any([cm4], 0) == []
        t = threading.Timer(0.05, cm7.sev)
        t.start()
        try:
            assert wait_any([cm4], TIMEOUT) == [cm4]
        finally:
            t.join()
        assert cm4.try_wfe()  # wait_any does not consume the event
        assert wait_any([cm4], 0) == []
        with pytest.raises(ValueError):
            wait_any([(cm4, WRITABLE)], 0)


def test_buffers_and_other_objects_together(region: Region) -> None:
    """A mix of kinds takes the generic path (buffers of one region alone take the C batch)."""
    bufs = [MessageBuffer.create(region, f"m{i}", 64) for i in range(3)]
    with Hardware.create(region) as hw:
        cm4 = hw.core("CM4")
        assert wait_any([*bufs, cm4], 0) == []
        t = threading.Timer(0.05, bufs[2].send, (b"x",))
        t.start()
        try:
            assert wait_any([*bufs, cm4], TIMEOUT) == [bufs[2]]
        finally:
            t.join()
        hw.core("CM7").sev()
        assert wait_any([*bufs, cm4], 0) == [bufs[2], cm4]
        assert bufs[0].reset() and bufs[1].reset()  # refused while a waiting word is set: cleared after the wait


def test_a_server_on_64_buffers_fed_by_8_client_processes(
    make_region: Callable[..., Region], spawn: Callable[..., object]
) -> None:
    clients, per_client, count = 8, 8, 400
    r = make_region(4 << 20, directory_capacity=128)
    names = [[f"c{c}.{i}" for i in range(per_client)] for c in range(clients)]
    bufs = {n: MessageBuffer.create(r, n, 256) for row in names for n in row}
    procs = [spawn(client, r.name, c, names[c], count, 1000 + c) for c in range(clients)]
    received: dict[tuple[int, int], list[int]] = {}
    expected_total = clients * per_client * count
    total = 0
    selector = Selector()
    for c in range(clients):
        for i, n in enumerate(names[c]):
            selector.register(bufs[n], READABLE, (c, i))
    deadline = time.monotonic() + 120
    closed = 0
    while total < expected_total:
        assert time.monotonic() < deadline, f"only {total} of {expected_total} messages arrived"
        for key, events in selector.select(TIMEOUT):
            assert events == READABLE
            c, i = key.data
            try:
                while (m := key.obj.try_receive()) is not None:
                    src, buf_index, k, _ = m.split(b":", 3)
                    assert (int(src), int(buf_index)) == (c, i)
                    assert m == message(c, i, int(k))
                    received.setdefault((c, i), []).append(int(k))
                    total += 1
            except PeerClosed:  # the client closed its region (and so its side) after its last send
                assert received[(c, i)] == list(range(count))  # ...and only once everything was drained
                selector.unregister(key.obj)
                closed += 1
    for p in procs:
        assert spawn.join(p) == 0  # type: ignore[attr-defined]
    assert all(b.is_empty for b in bufs.values())
    # every message once, in each client's (and each buffer's) order
    assert received == {(c, i): list(range(count)) for c in range(clients) for i in range(per_client)}
