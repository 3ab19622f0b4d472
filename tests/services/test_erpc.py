"""eRPC's own ClientManager and SimpleServer (BasicCodec) over ampipc, in two processes, with a
service written as erpcgen writes Python: over two MessageBuffers and over an RPMsg endpoint."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import erpc
import pytest

from ampipc import MessageBuffer, MessageTooLarge, PeerDied, Region
from ampipc.rpmsg import open_region
from ampipc.services.erpc import BufferTransport, EndpointTransport

from ._support import erpc_buffer_server, erpc_endpoint_server
from .erpc_shim.client import SensorClient


def exercise(client: SensorClient) -> None:
    for i in range(500):
        assert client.add(i, 3 * i) == 4 * i
    assert client.scale([1, 2, 3], 0.5) == [0.5, 1.0, 1.5]
    for channel in (0, 7, 150):
        reading = client.read(channel)
        assert (reading.channel, reading.value, reading.raw) == (channel, channel * 0.5, bytes([channel]) * (channel % 200))
    assert client.describe("t1") == "sensor t1 on ampipc"
    client.log("hello")
    assert client.describe("logged") == "hello"


def test_erpc_over_buffer_transport(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(1 << 20)
    c2s = MessageBuffer.create(region, "erpc.c2s", 4096)
    s2c = MessageBuffer.create(region, "erpc.s2c", 4096)
    ready = spawn.ctx.Event()
    proc = spawn(erpc_buffer_server, region.name, ready)
    assert ready.wait(60)
    transport = BufferTransport(c2s, s2c, timeout=60)
    client = SensorClient(erpc.client.ClientManager(transport, erpc.basic_codec.BasicCodec))
    exercise(client)
    with pytest.raises(MessageTooLarge):
        client.describe("x" * 5000)
    client.log("quit")
    assert spawn.join(proc, 60) == 0


def test_erpc_client_sees_the_server_die(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(1 << 20)
    c2s = MessageBuffer.create(region, "erpc.c2s", 4096)
    s2c = MessageBuffer.create(region, "erpc.s2c", 4096)
    ready = spawn.ctx.Event()
    proc = spawn(erpc_buffer_server, region.name, ready)
    assert ready.wait(60)
    client = SensorClient(erpc.client.ClientManager(BufferTransport(c2s, s2c), erpc.basic_codec.BasicCodec))
    assert client.add(1, 2) == 3
    os.kill(proc.pid, signal.SIGKILL)
    spawn.join(proc, 30)
    with pytest.raises(PeerDied):
        client.add(1, 2)


def test_erpc_over_endpoint_transport(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(1 << 20)
    ready = spawn.ctx.Event()
    proc = spawn(erpc_endpoint_server, region.name, "erpc-link", ready)
    host = open_region(region, "erpc-link", "driver", create=True, open_timeout=60)
    try:
        ept = host.create_endpoint("erpc")
        ept.wait_bound(60)
        assert ready.wait(60)
        client = SensorClient(erpc.client.ClientManager(EndpointTransport(ept, timeout=60), erpc.basic_codec.BasicCodec))
        exercise(client)
        with pytest.raises(MessageTooLarge):
            client.describe("y" * 600)
        client.log("quit")
        assert spawn.join(proc, 60) == 0
        assert host.statistics.protocol_errors == 0
    finally:
        host.close()
