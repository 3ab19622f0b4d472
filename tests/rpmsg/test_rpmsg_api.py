"""The public API over an in-process loopback link (real protocol core, in-process doorbell)."""

from __future__ import annotations

import threading

import pytest

from ampipc import rpmsg
from ampipc.errors import NoBuffer
from ampipc.rpmsg import RPMSG_ADDR_ANY, RpmsgDevice

from ._support import loopback_pair


def test_announce_bind_send_receive_and_destroy() -> None:
    with loopback_pair() as (host, remote):
        services: list[tuple[str, int]] = []
        bound = threading.Event()
        host_ept: list[rpmsg.Endpoint] = []

        def on_new_service(device: RpmsgDevice, name: str, addr: int) -> None:
            services.append((name, addr))
            host_ept.append(device.create_endpoint(name, dest=addr))
            bound.set()

        host.on_new_service = on_new_service
        unbound = threading.Event()
        r = remote.create_endpoint("chan", on_unbind=lambda e: unbound.set())
        assert bound.wait(10)
        assert services == [("chan", 0x400)]
        h = host_ept[0]
        assert h.addr == 0x400 and h.dest == 0x400
        h.send(b"ping")
        assert r.receive_from(10) == (0x400, b"ping")
        assert r.is_bound and r.dest == 0x400  # bound on the first message
        r.send(b"pong")
        assert h.receive(10) == b"pong"
        h.destroy()  # NS DESTROY: the remote's endpoint is unbound
        assert unbound.wait(10)
        assert r.dest == RPMSG_ADDR_ANY
        assert host.statistics.protocol_errors == remote.statistics.protocol_errors == 0


def test_announcement_before_the_endpoint_exists_still_binds() -> None:
    with loopback_pair() as (host, remote):
        remote.create_endpoint("early")
        while "early" not in host._endpoints.unclaimed:
            host.poll(0.01)
        h = host.create_endpoint("early")
        assert h.dest == 0x400


def test_callback_endpoint_and_receive_timeout() -> None:
    with loopback_pair() as (host, remote):
        got: list[tuple[bytes, int]] = []
        done = threading.Event()

        def cb(ept: rpmsg.Endpoint, data: bytes, src: int) -> None:
            got.append((data, src))
            done.set()

        remote.create_endpoint("cb", cb)
        h = host.create_endpoint("cb")
        h.wait_bound(10)
        h.send(b"abc")
        assert done.wait(10) and got == [(b"abc", 0x400)]
        with pytest.raises(TimeoutError):
            h.receive(0.05)


def test_blocking_send_raises_no_buffer_then_recovers() -> None:
    with loopback_pair(io_thread=False) as (host, remote):
        r = remote.create_endpoint("x")
        host.poll(0.0)
        h = host.create_endpoint("x")
        assert h.is_bound
        remote.poll(0.0)  # the host's own announcement
        sent = 0
        while h.try_send(b"m"):
            sent += 1
        assert sent == 256
        with pytest.raises(NoBuffer):
            h.send(b"late", timeout=0.05)
        assert host.statistics.tx_buffer_waits >= 1
        remote.poll(0.0)  # the device consumes and returns every buffer
        assert r.pending == 256
        h.send(b"after", timeout=5)
        remote.poll(0.0)
        assert r.pending == 257


def test_st_wrapper_names() -> None:
    from ampipc.rpmsg._window import Window
    from ampipc.rpmsg.rpmsg_virtio import Role
    from ampipc.rpmsg.transports import demo_table

    from ._support import SHM_SIZE, EventDoorbell, LoopbackTransport

    mem = bytearray(SHM_SIZE)
    Window(mem).write(0, demo_table())
    a, b = threading.Event(), threading.Event()
    announced: list[tuple[str, int]] = []
    assert rpmsg.MX_OPENAMP_Init(
        rpmsg.RPMSG_MASTER, lambda dev, name, addr: announced.append((name, addr)),
        transport=LoopbackTransport(mem, Role.DRIVER, EventDoorbell(a, b)),  # type: ignore[arg-type]
    ) == 0
    try:
        remote_dev = RpmsgDevice(LoopbackTransport(mem, Role.DEVICE, EventDoorbell(b, a)))  # type: ignore[arg-type]
        try:
            echo = remote_dev.create_endpoint("st", lambda e, d, s: e.send_to(s, d[::-1]))
            while not announced:
                rpmsg.OPENAMP_check_for_message()
            replies: list[bytes] = []
            ept = rpmsg.OPENAMP_create_endpoint("st", announced[0][1], lambda e, d, s: replies.append(d))
            rpmsg.OPENAMP_Wait_EndPointready(ept, 5)
            assert rpmsg.OPENAMP_send(ept, b"abc") == 3
            while not replies:
                rpmsg.OPENAMP_check_for_message()
            assert replies == [b"cba"] and echo.addr == 0x400
        finally:
            remote_dev.close()
    finally:
        rpmsg.OPENAMP_DeInit()
