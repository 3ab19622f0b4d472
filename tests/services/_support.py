"""Shared pieces of the services tests: a test service and child-process targets.

Child targets live here, at module level, so the spawn start method can import them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from ampipc import Ipc, Region
from ampipc.rpmsg import open_linux, open_region
from ampipc.services import Client, EndpointLink, IpcLink, Server, Service, method


@dataclass
class Stat:
    size: int
    name: str
    tags: list[str]


class CheckService(Service):
    """The service the tests call: echo, transforms, errors, slow calls."""

    def __init__(self, barrier_parties: int = 0, started: Any = None) -> None:
        self.barrier = threading.Barrier(barrier_parties) if barrier_parties else None
        self.started = started
        self.notified: list[Any] = []
        self.release = threading.Event()

    @method(inline=True)
    def echo(self, value: Any) -> Any:
        return value

    @method
    def digest(self, seed: int, payload: bytes) -> tuple[int, bytes, bytes]:
        """A transformation the caller can check: (seed + len, reversed payload, sha256)."""
        return seed + len(payload), payload[::-1], hashlib.sha256(payload).digest()

    @method
    def add(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        return (a + b) * scale

    @method
    def stat(self, name: str) -> Stat:
        return Stat(len(name), name, [name.upper(), "x"])

    @method
    def size_of(self, s: Stat) -> int:
        """Takes a structured argument: the server rebuilds the dataclass."""
        assert isinstance(s, Stat)
        return s.size + len(s.tags)

    @method
    def fail(self, kind: str) -> None:
        if kind == "missing":
            open("/nonexistent/ampipc-test-file")  # noqa: SIM115 - raises FileNotFoundError
        if kind == "permission":
            raise PermissionError(13, "Permission denied", "/root/secret")
        if kind == "value":
            raise ValueError("bad value 42")
        if kind == "timeout":
            raise TimeoutError("the device did not answer")
        if kind == "custom":
            raise ZeroDivisionError("custom failure in the handler")
        raise RuntimeError(kind)

    @method
    def big(self, n: int) -> bytes:
        return bytes(random.Random(n).randbytes(n))

    @method
    def rendezvous(self, i: int) -> int:
        """Returns only when `barrier_parties` calls run at the same time (proves concurrency)."""
        assert self.barrier is not None
        self.barrier.wait(timeout=60)
        return i

    @method
    def hang(self) -> None:
        if self.started is not None:
            self.started.set()
        time.sleep(3600)

    @method
    def wait_release(self, i: int) -> int:
        self.release.wait(60)
        return i

    @method
    def unencodable(self) -> Any:
        return object()

    @method(inline=True)
    def record(self, value: Any) -> None:
        self.notified.append(value)

    @method(inline=True)
    def notified_values(self) -> list[Any]:
        return list(self.notified)

    @method
    def pid(self) -> int:
        return os.getpid()


def check_digest(seed: int, payload: bytes, got: Any) -> None:
    n, rev, sha = got
    assert n == seed + len(payload)
    assert rev == payload[::-1]
    assert sha == hashlib.sha256(payload).digest()


def random_payload(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 7, 64, 200, 1000, rng.randrange(0, 4000))))


# ---- child-process targets --------------------------------------------------------------------


def serve_region(region_name: str, service: str, ready: Any, stop: Any, started: Any = None,
                 workers: int = 8, buffer_size: int = 64 * 1024) -> None:
    """Attach, serve CheckService as `service` until `stop` (a pipe end) says so, or the process is killed.

    (A pipe, not a multiprocessing Event: setting an Event a killed process waited on blocks.)
    """
    with Region.attach(region_name) as region:
        server = Server(workers=workers)
        server.add(CheckService(started=started))
        server.listen(region, service, buffer_size=buffer_size)
        ready.set()
        try:
            stop.poll(120)
        finally:
            server.close()


def client_calls(region_name: str, service: str, threads: int, calls: int, seed: int, results: Any) -> None:
    """`threads` clients (one Client each) make `calls` digest calls with random payloads, each checked."""
    with Region.attach(region_name) as region:
        errors: list[str] = []
        counts = [0] * threads

        def run(t: int) -> None:
            rng = random.Random(seed * 1000 + t)
            try:
                with Client.connect(region, service, timeout=30, call_timeout=60) as client:
                    for i in range(calls):
                        payload = random_payload(rng)
                        check_digest(i, payload, client.call("digest", i, payload))
                        counts[t] += 1
            except BaseException as exc:  # reported to the parent
                errors.append(f"thread {t}: {exc!r}")

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        results.put((seed, sum(counts), errors))


def client_hang(region_name: str, service: str) -> None:
    """Connect and make a call that blocks in the server (the test kills this process meanwhile)."""
    with Region.attach(region_name) as region:
        client = Client.connect(region, service, timeout=30, call_timeout=None)
        client.call("wait_release", 0)


def serve_ipc(region_name: str, strategy: str, ready: Any, stop: Any) -> None:
    """The CM4 side of an Ipc: serve CheckService on channel 0 until `stop`."""
    with Region.attach(region_name) as region:
        ipc = Ipc.attach(region, core="CM4")
        ipc.start()
        server = Server()
        server.add(CheckService())
        server.serve(IpcLink(ipc, 0))
        ready.set()
        try:
            stop.poll(120)
        finally:
            server.close()
            ipc.close()


def serve_rpmsg_region(region_name: str, link: str, ready: Any, stop: Any) -> None:
    """The RPMsg device over a Region: endpoint "ampipc-rpc" serves CheckService."""
    with Region.attach(region_name) as region:
        device = open_region(region, link, "device", create=False, open_timeout=60)
        try:
            ept = device.create_endpoint("ampipc-rpc")
            server = Server()
            server.add(CheckService())
            server.serve(EndpointLink(ept))
            ready.set()
            try:
                stop.poll(120)
            finally:
                server.close()
        finally:
            device.close()


def serve_rpmsg_linux(shm_name: str, socket_path: str, ready: Any, stop: Any) -> None:
    """The RPMsg device over OpenAMP's Linux transport (socket client): serves CheckService."""
    device = open_linux("device", shm_name=shm_name, socket_path=socket_path, server=False, open_timeout=60)
    try:
        ept = device.create_endpoint("ampipc-rpc")
        server = Server()
        server.add(CheckService())
        server.serve(EndpointLink(ept))
        ready.set()
        try:
            stop.poll(120)
        finally:
            server.close()
    finally:
        device.close()


def async_client(region_name: str, service: str, calls: int, results: Any) -> None:
    """One client, `calls` concurrent call_async calls (gathered in batches), each checked."""

    async def main(client: Client) -> int:
        rng = random.Random(5)
        done = 0
        for batch in range(calls // 100):
            payloads = [random_payload(rng) for _ in range(100)]
            got = await asyncio.gather(*[client.call_async("digest", batch * 100 + i, p) for i, p in enumerate(payloads)])
            for i, (p, g) in enumerate(zip(payloads, got)):
                check_digest(batch * 100 + i, p, g)
                done += 1
        return done

    with Region.attach(region_name) as region:
        with Client.connect(region, service, timeout=30, call_timeout=60) as client:
            results.put(asyncio.run(main(client)))


def region_rpc_client(region_name: str, link: str, results: Any) -> None:
    """The rpmsg-rpc client script as the VIRTIO device of a Region link; reports its lines."""
    from ampipc.services import openamp_rpc

    lines: list[str] = []
    status = 3
    try:
        with Region.attach(region_name) as region:
            device = open_region(region, link, "device", create=False, open_timeout=60)
            try:
                ept = device.create_endpoint(openamp_rpc.SERVICE_NAME)
                ept.wait_bound(60)
                status = openamp_rpc.run_client_script(openamp_rpc.RpcFileClient(ept), out=lines.append)
                ept.destroy()
            finally:
                device.close()
    finally:
        results.put(lines)
    raise SystemExit(status)


def _erpc_serve(transport: Any) -> int:
    import erpc

    from .erpc_shim.server import SensorHandler, SensorService

    handler = SensorHandler()
    server = erpc.simple_server.SimpleServer(transport, erpc.basic_codec.BasicCodec)
    original_log = handler.log

    def log(text: str) -> None:
        original_log(text)
        if text == "quit":
            server.stop()

    handler.log = log  # type: ignore[method-assign]
    server.add_service(SensorService(handler))
    server.run()
    return len(handler.logged)


def erpc_buffer_server(region_name: str, ready: Any) -> None:
    """SimpleServer over BufferTransport (crossed pair) until a oneway log("quit")."""
    from ampipc import MessageBuffer
    from ampipc.services.erpc import BufferTransport

    with Region.attach(region_name) as region:
        transport = BufferTransport(MessageBuffer.attach(region, "erpc.s2c"), MessageBuffer.attach(region, "erpc.c2s"))
        ready.set()
        raise SystemExit(0 if _erpc_serve(transport) >= 2 else 5)


def erpc_endpoint_server(region_name: str, link: str, ready: Any) -> None:
    """SimpleServer over EndpointTransport as the RPMsg device of a Region link."""
    from ampipc.services.erpc import EndpointTransport

    with Region.attach(region_name) as region:
        device = open_region(region, link, "device", create=False, open_timeout=60)
        try:
            ept = device.create_endpoint("erpc")
            ept.wait_bound(60)
            ready.set()
            status = 0 if _erpc_serve(EndpointTransport(ept)) >= 2 else 5
        finally:
            device.close()
    raise SystemExit(status)
