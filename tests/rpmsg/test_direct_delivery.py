"""Direct delivery: the C receive poll queueing messages for endpoints itself, and the C doorbell.

Without an I/O thread the C poll hands the messages of bound, callback-less endpoints straight to
their queues (`EndpointTable.direct`). The reference for what it must do is the Python router, which
the pure-Python path always takes: the same random script of endpoint changes and peer traffic runs
on both, and every endpoint must end with the same messages, binding and counters.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ampipc import Region, RegionClosed, _vring
from ampipc.rpmsg import Endpoint, RpmsgDevice, open_region
from ampipc.rpmsg._wire import RPMSG_ADDR_ANY, RPMSG_NS_ADDR
from ampipc.rpmsg.rpmsg_virtio import NameService

from tests.conftest import make_unique_name

from .test_fast_path import guarded_area, link_pair

NAMES = ["alpha", "beta", "gamma"]
PEER_ADDRS = [0x400, 0x401, RPMSG_ADDR_ANY]
LOCAL_ADDRS = [0x400, 0x401, 0x402, 0x403, 0x500]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(NAMES), st.booleans()),
        st.tuples(st.just("send"), st.sampled_from(PEER_ADDRS), st.sampled_from(LOCAL_ADDRS), st.integers(0, 40)),
        st.tuples(st.just("send"), st.sampled_from(PEER_ADDRS[:2]), st.sampled_from(LOCAL_ADDRS[:2]), st.integers(0, 40)),
        st.tuples(st.just("announce"), st.sampled_from(NAMES), st.sampled_from(PEER_ADDRS[:2]), st.booleans()),
        st.tuples(st.just("callback"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("dest"), st.integers(0, 3), st.sampled_from([RPMSG_ADDR_ANY, 0x401])),
        st.tuples(st.just("destroy"), st.integers(0, 3)),
        st.tuples(st.just("poll"),),
    ),
    max_size=40,
)


@contextmanager
def local_and_peer(fast: bool) -> Iterator[tuple[RpmsgDevice, RpmsgDevice]]:
    """The link under test (driver, no I/O thread) and its peer, both in this process."""
    name = make_unique_name()
    with Region.create(name, 1 << 20) as region, Region.attach(name) as other:
        local = open_region(region, "l", "driver", create=True, io_thread=False, fast=fast)
        try:
            peer = open_region(other, "l", "device", create=False, io_thread=False, fast=fast)
            try:
                yield local, peer
            finally:
                peer.close()
        finally:
            local.close()


def bound_pair(
    local: RpmsgDevice, peer: RpmsgDevice, callback: Callable[[Endpoint, bytes, int], None] | None = None
) -> tuple[Endpoint, Endpoint]:
    """An endpoint "svc" on each side (``callback`` on the local one), polled until both are bound."""
    ept = local.create_endpoint("svc", callback)
    peer_ept = peer.create_endpoint("svc")
    while not (ept.is_bound and peer_ept.is_bound):
        local.poll(0.01)
        peer.poll(0.01)
    return ept, peer_ept


def play(fast: bool, ops: list[tuple[Any, ...]]) -> dict[str, Any]:
    with local_and_peer(fast) as (local, peer):
        endpoints: list[Endpoint] = []
        calls: dict[int, list[tuple[int, bytes]]] = {}

        def recorder(index: int) -> Callable[[Any, bytes, int], None]:
            return lambda ept, data, src: calls[index].append((src, data))

        def quiet() -> None:
            while peer.poll(0) + local.poll(0):
                pass

        for n, op in enumerate(ops):
            kind = op[0]
            if kind == "create":
                index = len(endpoints)
                calls[index] = []
                endpoints.append(local.create_endpoint(op[1], recorder(index) if op[2] else None))
            elif kind == "send":
                _, src, dst, size = op
                peer._send(src, dst, bytes([n % 256]) * size, 5.0, True)
            elif kind == "announce":
                _, name, addr, destroy = op
                peer._send_ns(name, addr, destroy, 5.0)
            elif kind == "poll":
                quiet()
            elif endpoints:
                index = op[1] % len(endpoints)
                ept = endpoints[index]
                if kind == "callback":
                    ept.callback = recorder(index) if op[2] else None
                elif kind == "dest":
                    ept.dest = op[2]
                elif kind == "destroy":
                    ept.destroy()
        quiet()
        stats = dataclasses.asdict(local.statistics)
        for key in ("kicks_sent", "kicks_received", "tx_buffer_waits"):  # timing, not routing
            stats.pop(key)
        return {
            "endpoints": [(e.addr, e.dest, e.destroyed, e.is_bound, e.peer_unbound, list(e._queue)) for e in endpoints],
            "callbacks": calls,
            "stats": stats,
        }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
# a callback endpoint bound by its first message, then sent to again
@example([("create", "alpha", False), ("create", "beta", True), ("send", 0x401, 0x401, 5), ("poll",), ("send", 0x401, 0x401, 6)])
# bound by announcement, unbound by its DESTROY, then bound again by a message from another address
@example([("create", "alpha", False), ("announce", "alpha", 0x400, False), ("poll",), ("announce", "alpha", 0x400, True),
          ("poll",), ("send", 0x401, 0x400, 1), ("poll",), ("send", 0x400, 0x400, 2)])
# unbound by hand, then bound again by a message
@example([("create", "alpha", False), ("send", 0x400, 0x400, 1), ("poll",), ("dest", 0, RPMSG_ADDR_ANY), ("send", 0x401, 0x400, 2)])
def test_direct_delivery_delivers_what_the_router_delivers(ops: list[tuple[Any, ...]]) -> None:
    assert play(True, ops) == play(False, ops)


def test_an_endpoint_is_served_directly_into_its_queue_or_its_callback_until_destroyed() -> None:
    with local_and_peer(True) as (local, peer):
        ept, peer_ept = bound_pair(local, peer)
        assert local._endpoints.direct == {ept.addr: ept._queue.append}
        for i in range(300):
            peer_ept.send(i.to_bytes(2, "little"))
            if i % 50 == 49:
                local.poll(0)
        assert [ept.receive(5) for _ in range(300)] == [i.to_bytes(2, "little") for i in range(300)]
        seen: list[bytes] = []

        def callback(e: Endpoint, data: bytes, src: int) -> None:
            seen.append(data)

        ept.callback = callback
        assert local._endpoints.direct == {ept.addr: (callback, ept)}
        peer_ept.send(b"to the callback")
        while not seen:
            local.poll(0.01)
        assert seen == [b"to the callback"] and ept.pending == 0
        ept.callback = None
        assert ept.addr in local._endpoints.direct
        ept.destroy()
        assert local._endpoints.direct == {}
        assert local.statistics.messages_received == 301


def test_the_c_poll_hands_over_up_to_the_first_message_it_may_not() -> None:
    _big, area = guarded_area(0x10000 + 2 * 16 * 512 + 1024)
    drv, dev = link_pair(area, True, 16)
    for dst, data in [(0x400, b"a"), (0x401, b"b"), (0x400, b"c"), (0x402, b"d"), (0x400, b"e")]:
        assert dev.try_send(0x500, dst, data)
    assert dev.send_ns("later", 0x501)
    queued: list[tuple[int, bytes]] = []

    def callback(ept: object, data: bytes, src: int) -> None:
        raise AssertionError("a call is the caller's to make")

    marker = object()
    events, delivered, calls = drv.poll_direct({0x400: queued.append, 0x401: (callback, marker)})
    assert delivered == 3 and queued == [(0x500, b"a"), (0x500, b"c")]
    assert calls == [(callback, marker, b"b", 0x500)]
    assert events == [(0x500, 0x402, b"d"), (0x500, 0x400, b"e"), NameService("later", 0x501, 0)]
    assert drv.statistics.messages_received == 5 and drv.statistics.bytes_received == 5
    assert drv.statistics.ns_received == 1


def test_the_c_poll_refuses_a_direct_table_that_is_not_a_dict() -> None:
    _big, area = guarded_area(0x10000 + 2 * 16 * 512 + 1024)
    drv, dev = link_pair(area, True, 16)
    assert dev.try_send(0x500, 0x400, b"x")
    with pytest.raises(TypeError, match="direct"):
        drv._fast_rx.rx_batch(drv.buffer_size, RPMSG_NS_ADDR, [])  # type: ignore[union-attr, arg-type]


def test_a_direct_callable_that_raises_fails_the_poll_after_the_ring_work() -> None:
    _big, area = guarded_area(0x10000 + 2 * 16 * 512 + 1024)
    drv, dev = link_pair(area, True, 16)
    assert dev.try_send(0x500, 0x400, b"x")

    def broken(item: tuple[int, bytes]) -> None:
        raise RuntimeError("full")

    with pytest.raises(RuntimeError, match="full"):
        drv.poll_direct({0x400: broken})
    assert dev.try_send(0x500, 0x400, b"y")  # the buffer went back all the same
    assert drv.poll_direct({}) == ([(0x500, 0x400, b"y")], 0, ())


def test_the_transmit_ring_rings_a_c_doorbell_itself() -> None:
    _big, area = guarded_area(0x10000 + 2 * 16 * 512 + 1024)
    drv, dev = link_pair(area, True, 16)
    words = bytearray(16)
    bell = _vring.Doorbell(words, 0, 8, 0.0)
    drv.take_kick()  # the start-up kick
    assert drv.try_send(0x400, 0x400, b"ping", bell)
    assert bell.rings == 1 and int.from_bytes(words[0:4], "little") == 1
    assert drv.statistics.kicks_sent == 1 and not drv.take_kick()
    assert drv._fast_tx is not None
    with pytest.raises(TypeError, match="Doorbell"):
        drv._fast_tx.tx_send(0x400, 0x400, b"x", object())  # type: ignore[arg-type]
    assert dev.poll()[0].payload == b"ping"  # type: ignore[union-attr]


@pytest.mark.parametrize(("ring_offset", "wait_offset"), [(2, 8), (0, 60), (-4, 8), (0, 9)])
def test_the_doorbell_refuses_words_outside_the_area(ring_offset: int, wait_offset: int) -> None:
    with pytest.raises(ValueError, match="aligned word pair"):
        _vring.Doorbell(bytearray(64), ring_offset, wait_offset, 0.0)


@pytest.mark.parametrize("spin", [-0.1, 1.5, float("nan")])
def test_the_doorbell_refuses_a_bad_spin(spin: float) -> None:
    with pytest.raises(ValueError, match="spin"):
        _vring.Doorbell(bytearray(64), 0, 8, spin)


def test_the_doorbell_refuses_a_nan_timeout_and_returns_at_once_for_none_left() -> None:
    words = bytearray(16)
    bell = _vring.Doorbell(words, 0, 8, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        bell.wait(float("nan"))
    assert bell.wait(0.0) is False and bell.wait(-1.0) is False
    _vring.Doorbell(words, 8, 0, 0.0).ring()
    assert bell.wait(0.0) is True and bell.wait(0.0) is False


def test_the_doorbell_of_a_closed_region_raises(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 16)
    bell = _vring.Doorbell(region.mapping, 0, 8, 0.0)
    region.close()
    with pytest.raises(RegionClosed):
        bell.ring()
    with pytest.raises(RegionClosed):
        bell.wait(0.01)


def test_a_callback_that_raises_is_logged_and_the_rest_of_the_batch_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    with local_and_peer(True) as (local, peer):
        seen: list[bytes] = []

        def callback(ept: Endpoint, data: bytes, src: int) -> None:
            if data == b"boom":
                raise RuntimeError("the handler failed")
            seen.append(data)

        ept, peer_ept = bound_pair(local, peer, callback)
        assert local._endpoints.direct == {ept.addr: (callback, ept)}
        for data in (b"one", b"boom", b"two"):
            peer_ept.send(data)
        with caplog.at_level("ERROR", logger="ampipc.rpmsg"):
            while len(seen) < 2:
                local.poll(0.01)
        assert seen == [b"one", b"two"]
        assert any("callback raised" in r.getMessage() and r.exc_info for r in caplog.records)
        assert not local.closed and local.statistics.messages_received == 3


def test_threads_sending_at_once_lose_nothing_and_every_message_is_counted() -> None:
    """Four threads send on one link without an I/O thread (the C path's sends take no lock): the
    peer gets every message, each thread's in its order, and both sides count them all."""
    threads, per_thread = 4, 3000
    with local_and_peer(True) as (local, peer):
        sender, receiver = bound_pair(local, peer)
        failures: list[BaseException] = []

        def send_all(index: int) -> None:
            try:
                for i in range(per_thread):
                    sender.send(bytes([index]) + i.to_bytes(4, "little"), 60)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        workers = [threading.Thread(target=send_all, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        seen: dict[int, list[int]] = {k: [] for k in range(threads)}
        try:
            for _ in range(threads * per_thread):
                data = receiver.receive(60)
                seen[data[0]].append(int.from_bytes(data[1:], "little"))
                if len(seen[data[0]]) % 16 == 0:
                    local.poll(0)  # the sending side takes back its buffers' kicks and returns
        finally:
            for w in workers:
                w.join(60)
        assert not failures
        assert all(seen[k] == list(range(per_thread)) for k in range(threads))
        total = threads * per_thread
        assert local.statistics.messages_sent == total and local.statistics.bytes_sent == 5 * total
        assert peer.statistics.messages_received == total and peer.statistics.bytes_received == 5 * total
