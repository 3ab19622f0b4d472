"""Remote calls across the bridge: a client on "host B" calls a service that a core runs on host A.

Host A: a core process serves ``calc`` in region A (``Server.listen``), and a bridge process (the
``ampipc bridge --service calc=KEY`` command) relays it onto Zenoh. Host B is this test process:
a Zenoh session that reaches host A only through tcp/127.0.0.1, and a services `Client`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from ampipc import PeerClosed, PeerDied, Region
from ampipc.bridge import ZenohBridge, connect_service, open_session
from ampipc.bridge.session import close_session
from ampipc.services import Server

from . import _support as S

pytestmark = pytest.mark.timeout(180)


def _add(a: int, b: int) -> int:
    return a + b


def _echo(data: bytes) -> bytes:
    return data


def _fail(path: str) -> None:
    raise FileNotFoundError(2, "no such file here", path)


def _serve_calc(region_name: str, ready: Any, stop: Any) -> None:
    """Child target: the core that runs the service."""
    with Region.attach(region_name) as region:
        server = Server(workers=4)
        server.register(_add, "add")
        server.register(_echo, "echo")
        server.register(_fail, "fail")
        server.listen(region, "calc")
        ready.set()
        stop.wait(S.GENEROUS * 2)
        server.close()


def test_remote_call_reaches_a_core_through_the_bridge(spawn: Any, make_region: Any, unique_name: Any) -> None:
    region = make_region(1 << 23)
    ready, stop = spawn.ctx.Event(), spawn.ctx.Event()
    core = spawn(_serve_calc, region.name, ready, stop)
    assert ready.wait(S.GENEROUS)
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}/calc"
    bridge = spawn(S.run_cli, ["bridge", region.name, "--name", "a", "--service", f"calc={key}", "--listen", endpoint])
    session = open_session(connect=[endpoint])
    try:
        client = connect_service(session, key, timeout=S.GENEROUS)
        try:
            assert [client.call("add", i, 1000) for i in range(1000)] == [i + 1000 for i in range(1000)]
            big = os.urandom(300_000)  # larger than one link message: chunked by the services layer
            assert client.call("echo", big) == big
            with pytest.raises(FileNotFoundError) as info:
                client.call("fail", "/nowhere")
            assert info.value.filename == "/nowhere" and "no such file here" in str(info.value)
            # many threads at once, one link: every reply reaches its own call
            results: dict[int, int] = {}

            def caller(base: int) -> None:
                for i in range(100):
                    results[base + i] = client.call("add", base, i)

            threads = [threading.Thread(target=caller, args=(1000 * t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(S.GENEROUS)
            assert results == {1000 * t + i: 1000 * t + i for t in range(4) for i in range(100)}
            # The bridge process dies: the pending and later calls fail, they do not hang.
            os.kill(bridge.pid, signal.SIGKILL)
            assert spawn.join(bridge) == -signal.SIGKILL
            with pytest.raises((PeerDied, PeerClosed)):
                for _ in range(100):
                    client.call("add", 1, 2, timeout=S.GENEROUS)
        finally:
            client.close()
    finally:
        close_session(session)
        stop.set()
    assert spawn.join(core) == 0


def _remote_client(endpoint: str, key: str, ready: Any) -> None:
    """Child target: a client on another host that calls once, then stays until killed."""
    session = open_session(connect=[endpoint])
    client = connect_service(session, key, timeout=S.GENEROUS)
    assert client.call("add", 40, 2) == 42
    ready.set()
    threading.Event().wait(S.GENEROUS * 2)


def test_a_killed_remote_client_ends_its_connection(spawn: Any, make_region: Any, unique_name: Any) -> None:
    region = make_region(1 << 21)
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}/dies"
    session = open_session(listen=[endpoint])
    server = Server()
    server.register(_add, "add")
    bridge = ZenohBridge(region, session, name="svc")
    try:
        export = bridge.export_service(server, key)
        ready = spawn.ctx.Event()
        child = spawn(_remote_client, endpoint, key, ready)
        assert ready.wait(S.GENEROUS)
        assert export.statistics().clients_now == 1 and len(server.connections) == 1
        os.kill(child.pid, signal.SIGKILL)
        assert spawn.join(child) == -signal.SIGKILL
        deadline = time.monotonic() + S.GENEROUS
        while export.statistics().clients_now or server.connections:
            assert time.monotonic() < deadline, "the dead client's connection was not ended"
            time.sleep(0.02)
        stats = export.statistics()
        assert (stats.clients_total, stats.failures) == (1, 0)
    finally:
        bridge.close()
        server.close()
        close_session(session)


def test_a_server_in_the_bridge_process(make_region: Any, unique_name: Any) -> None:
    region = make_region(1 << 21)
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}/local"
    server_session, client_session = open_session(listen=[endpoint]), open_session(connect=[endpoint])
    server = Server()
    server.register(_add, "add")
    bridge = ZenohBridge(region, server_session, name="svc")
    try:
        export = bridge.export_service(server, key)
        client = connect_service(client_session, key, timeout=S.GENEROUS)
        with client:
            assert client.call("add", 2, 3) == 5
            assert export.statistics().clients_now == 1
        with pytest.raises(ValueError):
            bridge.export_service(server, "a/*")
    finally:
        bridge.close()
        server.close()
        close_session(server_session)
        close_session(client_session)
