"""The sans-I/O core, driver and device back to back in one process over a bytearray."""

from __future__ import annotations

import random

import pytest

from ampipc.errors import MessageTooLarge
from ampipc.rpmsg import RPMSG_ADDR_ANY
from ampipc.rpmsg.endpoints import (
    Bound,
    Delivery,
    Dropped,
    Endpoint,
    EndpointTable,
    NewService,
    Unbound,
)
from ampipc.rpmsg.rpmsg_virtio import Message, NameService

from ._support import NoLink, core_pair, payload


def test_echo_every_size_both_directions() -> None:
    _mem, drv, dev = core_pair()
    rng = random.Random(1)
    for i in range(3 * 496):
        data = payload(i, rng)
        assert drv.try_send(0x400, 0x401, data)
        assert dev.poll() == [Message(0x400, 0x401, data)]
        assert dev.try_send(0x401, 0x400, data)
        assert drv.poll() == [Message(0x401, 0x400, data)]
    for side in (drv, dev):
        assert side.statistics.protocol_errors == 0
        assert side.statistics.messages_sent == side.statistics.messages_received == 3 * 496


def test_too_large_payload_is_refused() -> None:
    _mem, drv, dev = core_pair()
    with pytest.raises(MessageTooLarge):
        drv.try_send(1, 2, bytes(497))
    with pytest.raises(MessageTooLarge):
        dev.try_send(1, 2, bytes(497))
    assert drv.try_send(1, 2, bytes(496)) and dev.try_send(1, 2, bytes(496))


def test_driver_buffer_exhaustion_and_recovery() -> None:
    _mem, drv, dev = core_pair()
    sent = 0
    while drv.try_send(0x400, 0x400, sent.to_bytes(4, "little")):
        sent += 1
    assert sent == 256  # one per vring1 descriptor (the TX half of the pool)
    got = dev.poll()
    assert [int.from_bytes(m.payload, "little") for m in got] == list(range(256))  # type: ignore[union-attr]
    for _ in range(256):  # every buffer came back and is reused
        assert drv.try_send(0x400, 0x400, b"again")
    assert not drv.try_send(0x400, 0x400, b"full")
    assert len(dev.poll()) == 256


def test_device_buffer_exhaustion_and_recovery() -> None:
    _mem, drv, dev = core_pair()
    sent = 0
    while dev.try_send(0x400, 0x400, b"x" * 100):
        sent += 1
    assert sent == 256  # the receive buffers the driver posted
    assert len(drv.poll()) == 256  # the driver reposts each one at once
    assert dev.try_send(0x400, 0x400, b"y")
    assert drv.poll() == [Message(0x400, 0x400, b"y")]


def test_name_service_create_and_destroy_events() -> None:
    _mem, drv, dev = core_pair()
    assert dev.send_ns("svc", 0x400) and dev.send_ns("svc", 0x400, destroy=True)
    assert drv.poll() == [NameService("svc", 0x400, 0), NameService("svc", 0x400, 1)]
    assert drv.statistics.ns_received == 2 and dev.statistics.ns_sent == 2


def test_endpoint_table_binding_rules() -> None:
    table = EndpointTable()
    link = NoLink()
    a = Endpoint(link, "svc", table.allocate_address(), RPMSG_ADDR_ANY, None, None)  # type: ignore[arg-type]
    table.add(a)
    b = Endpoint(link, "", table.allocate_address(), RPMSG_ADDR_ANY, None, None)  # type: ignore[arg-type]
    table.add(b)
    assert (a.addr, b.addr) == (0x400, 0x401)
    # an announcement binds the endpoint of that name without a destination
    assert table.route(NameService("svc", 0x410, 0)) == Bound(a, 0x410) and a.dest == 0x410
    # a second one of the same name finds none free: a new service
    assert table.route(NameService("svc", 0x411, 0)) == NewService("svc", 0x411)
    assert table.claim("svc") == 0x411
    # the first message binds an unbound endpoint to its sender
    assert table.route(Message(0x420, 0x401, b"hi")) == Delivery(b, 0x420, b"hi") and b.dest == 0x420
    assert isinstance(table.route(Message(0x420, 0x999, b"?")), Dropped)
    # destroy unbinds only the endpoint bound to that address
    assert isinstance(table.route(NameService("svc", 0x499, 1)), Dropped)
    assert table.route(NameService("svc", 0x410, 1)) == Unbound(a) and a.dest == RPMSG_ADDR_ANY and a.peer_unbound
