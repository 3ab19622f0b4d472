"""A hostile peer, second pass: repeated ids, oversized or undersized buffers, bad layouts,
name-service floods, kick floods and a peer that never returns buffers.

Each test writes what a misbehaving peer could write into OpenAMP's layout and checks that it
is a counted protocol error (or a bounded effect), that the link goes on, and that nothing
blocks for good.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc.errors import PeerDied, ProtocolError
from ampipc.rpmsg import RPMSG_ADDR_ANY, RpmsgDevice, open_linux
from ampipc.rpmsg import _wire as W
from ampipc.rpmsg._window import Window
from ampipc.rpmsg.endpoints import MAX_UNCLAIMED, Endpoint, EndpointTable, NewService
from ampipc.rpmsg.rpmsg_virtio import Message, Role, RpmsgVirtio
from ampipc.rpmsg.transports import LinuxTransport, SocketDoorbell, demo_table

from ._support import POOL, SHM_SIZE, EventDoorbell, LoopbackTransport, NoLink, core_pair, socket_dir

VRING0_USED_RING = 0x6004
VRING1_DESC = 0x8000
VRING1_AVAIL_RING = 0x9004
VRING1_USED_IDX = 0xA002


# ---- a used id or an avail head named twice in one batch -----------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_driver_delivers_each_receive_buffer_at_most_once_per_batch(data: st.DataObject) -> None:
    mem, drv, dev = core_pair()
    n = data.draw(st.integers(min_value=1, max_value=8))
    for i in range(n):
        assert dev.try_send(0x400, 0x400, b"msg%d" % i)
    ids = data.draw(st.lists(st.integers(min_value=0, max_value=300), min_size=n, max_size=n))
    for slot, head in enumerate(ids):
        struct.pack_into("<I", mem, VRING0_USED_RING + 8 * slot, head)
    events = drv.poll()
    firsts = list(dict.fromkeys(h for h in ids if h < 256))
    assert len(events) == len(firsts)
    sent = [b"msg%d" % h for h in firsts if h < n]
    got = [e.payload for e in events if isinstance(e, Message) and e.payload]
    assert got == sent
    assert drv.statistics.protocol_errors == n - len(firsts)
    # every buffer is back with the device exactly once: the link goes on
    assert dev.try_send(0x400, 0x400, b"after")
    assert [e.payload for e in drv.poll() if isinstance(e, Message)] == [b"after"]


def test_driver_refuses_a_used_id_repeated_in_one_batch() -> None:
    mem, drv, dev = core_pair()
    assert dev.try_send(0x400, 0x400, b"first")
    assert dev.try_send(0x400, 0x400, b"second")
    struct.pack_into("<I", mem, VRING0_USED_RING + 8, 0)  # used.ring[1].id = used.ring[0].id
    events = drv.poll()
    assert [e.payload for e in events if isinstance(e, Message)] == [b"first"]
    assert drv.statistics.errors_by_kind == {"used-ring": 1}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_device_consumes_each_driver_buffer_at_most_once_per_batch(data: st.DataObject) -> None:
    mem, drv, dev = core_pair()
    n = data.draw(st.integers(min_value=1, max_value=8))
    for i in range(n):
        assert drv.try_send(0x400, 0x400, b"msg%d" % i)
    heads = data.draw(st.lists(st.integers(min_value=0, max_value=300), min_size=n, max_size=n))
    for slot, head in enumerate(heads):
        struct.pack_into("<H", mem, VRING1_AVAIL_RING + 2 * slot, head)
    events = dev.poll()
    firsts = [h for h in dict.fromkeys(heads) if h < n]
    assert [e.payload for e in events if isinstance(e, Message)] == [b"msg%d" % h for h in firsts]
    assert dev.statistics.protocol_errors == n - len(firsts)


def test_device_refuses_an_avail_head_repeated_before_it_was_published() -> None:
    mem, drv, dev = core_pair()
    assert drv.try_send(0x400, 0x400, b"first")
    assert drv.try_send(0x400, 0x400, b"second")
    struct.pack_into("<H", mem, VRING1_AVAIL_RING + 2, 0)  # avail.ring[1] = avail.ring[0]
    events = dev.poll()
    assert [e.payload for e in events if isinstance(e, Message)] == [b"first"]
    assert dev.statistics.errors_by_kind == {"avail-ring": 1}
    assert struct.unpack_from("<H", mem, VRING1_USED_IDX)[0] == 1  # head 0 returned once only


# ---- buffer sizes the layout does not allow -------------------------------------------------


def test_header_length_beyond_the_buffer_size_is_refused_even_in_a_long_descriptor() -> None:
    mem, drv, dev = core_pair()
    assert drv.try_send(0x400, 0x400, b"x")
    struct.pack_into("<I", mem, VRING1_DESC + 8, 4096)  # desc[0].len: a long buffer, still in the pool
    struct.pack_into("<H", mem, 0x30000 + 12, 1000)  # hdr.len: more than a 512-byte buffer holds
    assert dev.poll() == []
    assert dev.statistics.errors_by_kind == {"header-length": 1}
    assert drv.try_send(0x400, 0x400, b"y")
    assert [e.payload for e in dev.poll() if isinstance(e, Message)] == [b"y"]


def test_transmit_descriptor_too_short_for_a_header_is_returned_and_counted() -> None:
    mem, drv, dev = core_pair()
    struct.pack_into("<I", mem, 0x4000 + 8, 8)  # vring0 desc[0].len = 8
    assert dev.try_send(0x400, 0x400, b"z")
    assert dev.statistics.errors_by_kind == {"short-buffer": 1}
    assert struct.unpack_from("<IIII", mem, VRING0_USED_RING) == (0, 0, 1, 512)
    assert [e.payload for e in drv.poll() if isinstance(e, Message)] == [b"z"]
    assert drv.statistics.protocol_errors == 0


# ---- a resource table whose rings overlap the pool or the table ------------------------------


@pytest.mark.parametrize("role", [Role.DRIVER, Role.DEVICE])
@pytest.mark.parametrize("vring0_da", [0x0, 0x10000, 0x4FC00])
def test_rings_overlapping_the_pool_or_the_table_are_refused(role: Role, vring0_da: int) -> None:
    mem = bytearray(SHM_SIZE)
    mem[0:0x58] = demo_table(vring0_da=vring0_da)
    core = RpmsgVirtio(Window(mem), role, pool_offset=POOL[0], pool_size=POOL[1])
    with pytest.raises(ProtocolError):
        core.start_driver() if role is Role.DRIVER else core.start_device()
    if role is Role.DRIVER:
        assert mem[0x2C] == 0  # no DRIVER_OK on a layout it refused


# ---- name service: address ANY, floods of names ----------------------------------------------


def test_name_service_for_address_any_is_refused() -> None:
    _mem, drv, dev = core_pair()
    assert dev.try_send(0x400, W.RPMSG_NS_ADDR, W.NS_RECORD.pack(b"svc", RPMSG_ADDR_ANY, W.NS_CREATE))
    assert drv.poll() == []
    assert drv.statistics.errors_by_kind == {"ns-record": 1}


def test_a_message_from_address_any_does_not_half_bind_an_endpoint() -> None:
    table = EndpointTable()
    ept = Endpoint(NoLink(), "svc", table.allocate_address(), RPMSG_ADDR_ANY, None, None)
    table.add(ept)
    table.route(Message(RPMSG_ADDR_ANY, ept.addr, b"hi"))
    assert not ept.is_bound and not ept._bound.is_set()
    table.route(Message(0x420, ept.addr, b"hi"))
    assert ept.dest == 0x420 and ept._bound.is_set()


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=MAX_UNCLAIMED + 1, max_value=4 * MAX_UNCLAIMED))
def test_unclaimed_announcements_stay_bounded(count: int) -> None:
    table = EndpointTable()
    for i in range(count):
        assert table.route(_ns_create(f"svc{i}", 0x400 + i % 128)) == NewService(f"svc{i}", 0x400 + i % 128)
    assert len(table.unclaimed) == MAX_UNCLAIMED
    assert table.claim(f"svc{count - 1}") == 0x400 + (count - 1) % 128  # the newest are kept


def _ns_create(name: str, addr: int) -> Any:
    from ampipc.rpmsg.rpmsg_virtio import NameService

    return NameService(name, addr, W.NS_CREATE)


# ---- a peer that floods kicks -----------------------------------------------------------------


class _FloodingSocket:
    """A socket whose peer always has another 4096 kicks ready."""

    def __init__(self, real: socket.socket) -> None:
        self._real = real
        self.reads = 0

    def setblocking(self, flag: bool) -> None:
        self._real.setblocking(flag)

    def fileno(self) -> int:
        return self._real.fileno()

    def recv(self, n: int) -> bytes:
        self.reads += 1
        if self.reads > 100_000:  # turns an endless drain into a failure instead of a hung test
            raise AssertionError("wait() kept draining kicks")
        return b"\x01" * n

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def close(self) -> None:
        self._real.close()


def test_kick_flood_does_not_hold_the_waiter() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        b.send(b"\x01")  # poll() reports readable; the fake recv then never runs dry
        flood = _FloodingSocket(a)
        bell = SocketDoorbell(flood)  # type: ignore[arg-type]
        for _ in range(3):
            assert bell.wait(1.0)
        assert not bell.peer_gone
        bell.close()
    finally:
        a.close()
        b.close()


# ---- a peer that never returns transmit buffers -----------------------------------------------


def test_close_returns_while_a_callback_waits_for_a_buffer_the_peer_keeps() -> None:
    mem = bytearray(SHM_SIZE)
    Window(mem).write(0, demo_table())
    to_driver, to_device = threading.Event(), threading.Event()
    transport = LoopbackTransport(mem, Role.DRIVER, EventDoorbell(to_driver, to_device))
    drv = RpmsgDevice(transport, open_timeout=30)
    peer = RpmsgVirtio(Window(mem), Role.DEVICE, pool_offset=POOL[0], pool_size=POOL[1])
    closer: threading.Thread | None = None
    try:
        assert peer.device_ready()
        peer.start_device()
        entered = threading.Event()

        def reply(ept: Endpoint, data: bytes, src: int) -> None:
            entered.set()
            ept.send_to(src, data, timeout=None)  # the peer holds every buffer: waits until closed

        ept = drv.create_endpoint("", reply)
        for _ in range(256):  # the peer never consumes vring1: every transmit buffer stays there
            ept.send_to(0x500, b"fill", timeout=30)
        assert peer.try_send(0x500, ept.addr, b"ping")
        to_driver.set()
        assert entered.wait(30)
        closer = threading.Thread(target=drv.close, daemon=True)
        closer.start()
        closer.join(60)
        assert not closer.is_alive(), "close() waited on a callback blocked by the peer"
        assert drv.closed
    finally:
        # If close() hung, hand the buffers back so the blocked send completes and the threads end.
        peer.poll()
        to_driver.set()
        if closer is not None:
            closer.join(60)
        drv.close()


# ---- descriptor chains and sockets closed mid-way ---------------------------------------------


def test_descriptor_chain_looping_on_itself_is_not_followed() -> None:
    mem, drv, dev = core_pair()
    assert drv.try_send(0x400, 0x400, b"loop")
    struct.pack_into("<HH", mem, VRING1_DESC + 12, W.DESC_F_NEXT, 0)  # desc[0]: NEXT -> desc[0]
    struct.pack_into("<HH", mem, 0x4000 + 12, W.DESC_F_NEXT | W.DESC_F_WRITE, 0)  # same on vring0
    assert [e.payload for e in dev.poll() if isinstance(e, Message)] == [b"loop"]
    assert dev.try_send(0x400, 0x400, b"back")
    assert [e.payload for e in drv.poll() if isinstance(e, Message)] == [b"back"]


def _remove(shm: str) -> None:
    if os.path.exists(f"/dev/shm/{shm}"):
        os.unlink(f"/dev/shm/{shm}")


def test_driver_hanging_up_before_driver_ok_ends_the_device_open(unique_name: Callable[..., str]) -> None:
    shm = unique_name("hd")
    with socket_dir() as d:
        path = os.path.join(d, "event.0")

        def hostile_driver() -> None:
            for _ in range(600):  # the server is listening once the path exists
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                except OSError:
                    s.close()
                    threading.Event().wait(0.05)
                    continue
                s.send(b"\x01\x01\x01")
                s.close()  # gone before writing DRIVER_OK
                return

        t = threading.Thread(target=hostile_driver, daemon=True)
        t.start()
        try:
            with pytest.raises(PeerDied):
                open_linux("device", shm_name=shm, socket_path=path, open_timeout=60)
        finally:
            t.join(60)
            _remove(shm)
        assert not os.path.exists(path)


def test_device_hanging_up_mid_way_closes_the_driver_link(unique_name: Callable[..., str]) -> None:
    shm = unique_name("hv")
    with socket_dir() as d:
        path = os.path.join(d, "event.0")
        server = LinuxTransport("device", shm_name=shm, socket_path=path)
        opened = threading.Thread(target=server.open, args=(60,), daemon=True)
        opened.start()
        drv = None
        try:
            drv = open_linux("driver", shm_name=shm, socket_path=path, open_timeout=60)
            opened.join(60)
            peer = RpmsgVirtio(server.window, Role.DEVICE, pool_offset=POOL[0], pool_size=POOL[1])
            assert peer.device_ready()
            peer.start_device()
            ept = drv.create_endpoint("svc")
            assert peer.try_send(0x400, ept.addr, b"half")  # one message, then the socket goes away
            server.doorbell.ring()
            assert ept.receive(60) == b"half"
            server.doorbell.close()
            with pytest.raises(PeerDied):
                ept.receive(60)
            assert drv.closed and "peer" in (drv.closed_reason or "")
        finally:
            if drv is not None:
                drv.close()
            server.close()
            opened.join(60)
            _remove(shm)
