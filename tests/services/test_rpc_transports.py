"""Remote calls over Ipc channels (every strategy) and RPMsg endpoints (Region and Linux transports),
server and client in two processes; call_async from another process."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from ampipc import Ipc, PeerClosed, PeerDied, Region
from ampipc.rpmsg import open_linux, open_region
from ampipc.services import Client, EndpointLink, IpcLink, Server

from ._support import CheckService, async_client, check_digest, random_payload, serve_ipc, serve_rpmsg_linux, serve_rpmsg_region
from .test_rpc_region import stop_process

CALLS = 1000


def exercise(client: Client, server_pid: int, calls: int = CALLS) -> None:
    assert client.call("pid") == server_pid != os.getpid()
    rng = random.Random(3)
    for i in range(calls):
        payload = random_payload(rng)
        check_digest(i, payload, client.call("digest", i, payload))
    with pytest.raises(FileNotFoundError):
        client.call("fail", "missing")
    # larger than any one message of the transport: chunked both ways
    assert client.call("echo", bytes(range(256)) * 40) == bytes(range(256)) * 40
    assert client.call("big", 20_000) == random.Random(20_000).randbytes(20_000)


@pytest.mark.parametrize("strategy", ["direct", "hsem", "control", "toggle"])
def test_over_ipc_channels(make_region: Callable[..., Region], spawn: Any, strategy: str) -> None:
    region = make_region(2 << 20)
    ipc = Ipc.init(region, channels=2, buffer_size=2048, strategy=strategy)
    ready = spawn.ctx.Event()
    stop_child, stop = spawn.ctx.Pipe(duplex=False)
    proc = spawn(serve_ipc, region.name, strategy, ready, stop_child)
    try:
        ipc.start()
        assert ready.wait(60)
        client = Client(IpcLink(ipc, 0), timeout=60)
        exercise(client, proc.pid)
        assert client.statistics().unexpected_replies == 0
    finally:
        stop_process(stop)
        spawn.join(proc, 60)
        ipc.close()


def test_over_rpmsg_region_transport(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(2 << 20)
    ready = spawn.ctx.Event()
    stop_child, stop = spawn.ctx.Pipe(duplex=False)
    proc = spawn(serve_rpmsg_region, region.name, "link0", ready, stop_child)
    host = open_region(region, "link0", "driver", create=True, open_timeout=60)
    try:
        ept = host.create_endpoint("ampipc-rpc")
        ept.wait_bound(60)
        assert ready.wait(60)
        client = Client(EndpointLink(ept), timeout=60)
        exercise(client, proc.pid)
        assert host.statistics.protocol_errors == 0
        stop_process(stop)
        assert spawn.join(proc, 60) == 0
        # the server's endpoint went away (name-service DESTROY): the link is closed or dead
        with pytest.raises((PeerClosed, PeerDied)):
            client.call("echo", 1)
    finally:
        stop_process(stop)
        host.close()


def test_over_openamp_linux_transport(unique_name: Callable[..., str], spawn: Any, tmp_path: Any) -> None:
    shm_name = unique_name("rl")
    sock = f"/tmp/{shm_name}.sock"
    ready = spawn.ctx.Event()
    stop_child, stop = spawn.ctx.Pipe(duplex=False)
    host = None
    proc = None
    try:
        # the driver is the socket server and writes the resource table (as linux_rpc_demod)
        import threading

        opened: list[Any] = []
        opener = threading.Thread(target=lambda: opened.append(
            open_linux("driver", shm_name=shm_name, socket_path=sock, server=True, open_timeout=60)))
        opener.start()
        proc = spawn(serve_rpmsg_linux, shm_name, sock, ready, stop_child)
        opener.join(60)
        assert opened, "the device did not connect"
        host = opened[0]
        ept = host.create_endpoint("ampipc-rpc")
        ept.wait_bound(60)
        assert ready.wait(60)
        client = Client(EndpointLink(ept), timeout=60)
        exercise(client, proc.pid)
        assert host.statistics.protocol_errors == 0
    finally:
        stop_process(stop)
        if proc is not None:
            spawn.join(proc, 60)
        if host is not None:
            host.close()
        if os.path.exists(sock):
            os.unlink(sock)


def test_call_async_from_another_process(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(4 << 20)
    server = Server(workers=4)
    server.add(CheckService())
    server.listen(region, "aio")
    results = spawn.ctx.Queue()
    try:
        proc = spawn(async_client, region.name, "aio", 2000, results)
        assert results.get(timeout=120) == 2000
        assert spawn.join(proc, 60) == 0
        assert server.statistics().completed == 2000
    finally:
        server.close()


def test_server_over_a_link_in_this_process_threads(make_region: Callable[..., Region]) -> None:
    """Server.serve on a plain Ipc link, both cores in one process (threads as tasks)."""
    region = make_region(1 << 20)
    cm7 = Ipc.init(region, channels=1, buffer_size=1024, strategy="control")
    cm4 = Ipc.attach(region, core="CM4", hardware=cm7.hardware)
    cm7.start()
    cm4.start()
    server = Server()
    server.add(CheckService())
    conn = server.serve(IpcLink(cm4, 0))
    try:
        client = Client(IpcLink(cm7, 0), timeout=30)
        assert [client.call("add", i, i) for i in range(100)] == [2 * i for i in range(100)]
        client.close()
        conn.join(30)
        assert conn.closed and conn.end_reason == "the client said goodbye"
    finally:
        server.close()
        cm4.close()
        cm7.close()
