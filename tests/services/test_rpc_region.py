"""Remote calls over buffer pairs in a Region: real processes, errors, liveness, load, concurrency."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ampipc import IpcError, MessageTooLarge, PeerClosed, PeerDied, Region, Timeout
from ampipc.services import Client, MethodNotFound, RemoteError, Server
from ampipc.services.rpc_registry import FREE

from ._support import CheckService, Stat, check_digest, client_calls, client_hang, random_payload, serve_region


@contextmanager
def child_server(spawn: Any, region: Region, service: str = "svc", **kwargs: Any) -> Iterator[Any]:
    """TestService served by a child process; stopped (or found dead) at the end."""
    ready = spawn.ctx.Event()
    stop_child, stop = spawn.ctx.Pipe(duplex=False)
    started = kwargs.pop("started", None)
    proc = spawn(serve_region, region.name, service, ready, stop_child, started, **kwargs)
    assert ready.wait(60), "the server process did not start"
    try:
        yield proc
    finally:
        stop_process(stop)
        spawn.join(proc, 60)


def stop_process(stop: Any) -> None:
    try:
        stop.send(True)
    except OSError:
        pass  # the child is gone already
    stop.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the timeout")
        time.sleep(0.01)


def test_calls_results_and_errors_across_processes(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(4 << 20)
    with child_server(spawn, region) as proc, Client.connect(region, "svc", timeout=30) as client:
        assert client.call("pid") == proc.pid != os.getpid()
        assert client.call("echo", b"\x00\xffbytes") == b"\x00\xffbytes"
        assert client.call("echo", {"k": [1, 2.5, None, "s"]}) == {"k": [1, 2.5, None, "s"]}
        assert client.call("add", 2, 3, scale=10) == 50
        assert client.call("add", 4) == 4
        # built-in exceptions come back as themselves, with errno, filename and the remote traceback
        with pytest.raises(FileNotFoundError) as missing:
            client.call("fail", "missing")
        assert missing.value.errno == 2 and missing.value.filename == "/nonexistent/ampipc-test-file"
        assert "in fail" in missing.value.remote_traceback  # type: ignore[attr-defined]
        with pytest.raises(PermissionError) as perm:
            client.call("fail", "permission")
        assert perm.value.errno == 13 and perm.value.filename == "/root/secret"
        with pytest.raises(ValueError, match="bad value 42"):
            client.call("fail", "value")
        with pytest.raises(TimeoutError, match="did not answer") as remote_timeout:
            client.call("fail", "timeout")
        assert not isinstance(remote_timeout.value, Timeout)  # the handler's, not a local timeout
        with pytest.raises(RemoteError) as custom:
            client.call("fail", "custom")
        assert custom.value.type_name == "ZeroDivisionError"
        assert custom.value.message == "custom failure in the handler"
        assert "ZeroDivisionError" in custom.value.remote_traceback and "_support.py" in custom.value.remote_traceback
        with pytest.raises(MethodNotFound, match="no_such_method") as unknown:
            client.call("no_such_method", 1)
        assert unknown.value.method == "no_such_method"
        # arguments that cannot be encoded fail at the caller, and the client stays usable
        with pytest.raises(TypeError):
            client.call("echo", object())
        with pytest.raises(TypeError, match="cannot be sent"):  # the server's TypeError, re-raised as itself
            client.call("unencodable")
        assert client.call("echo", 7) == 7
        # a reply much larger than the 64 KiB buffers travels in chunks
        assert client.call("big", 1_000_000) == random.Random(1_000_000).randbytes(1_000_000)
        assert len(client.call("echo", b"q" * 300_000)) == 300_000
        # typed proxy: structured results and arguments are rebuilt as their types
        svc = client.proxy(CheckService)
        assert svc.stat("abc") == Stat(3, "abc", ["ABC", "x"])
        assert svc.size_of(Stat(5, "n", ["a", "b"])) == 7
        assert svc.add(1, 2) == 3
        # one-way notifications are run without replies; inline ones in order, before the next call
        for i in range(50):
            client.notify("record", i)
        assert client.call("notified_values") == list(range(50))
        stats = client.statistics()
        assert stats.notifications == 50 and stats.pending == 0 and stats.unexpected_replies == 0
        assert stats.remote_errors == 7


def test_eight_clients_ten_thousand_calls_each(make_region: Callable[..., Region], spawn: Any) -> None:
    """4 processes x 2 threads = 8 clients, each 10,000 calls with random payloads, every reply checked."""
    region = make_region(8 << 20)
    server = Server(workers=4)
    server.add(CheckService())
    server.listen(region, "load", buffer_size=16 * 1024)
    results = spawn.ctx.Queue()
    try:
        procs = [spawn(client_calls, region.name, "load", 2, 10_000, seed, results) for seed in range(4)]
        got = [results.get(timeout=240) for _ in procs]
        for proc in procs:
            assert spawn.join(proc, 60) == 0
        for seed, count, errors in got:
            assert errors == [], errors
            assert count == 20_000, seed
        stats = server.statistics()
        assert stats.calls == stats.completed == 80_000
        assert stats.connections_opened == 8 and stats.bad_frames == 0 and stats.replies_dropped == 0
        wait_until(lambda: server.statistics().connections_active == 0)
    finally:
        server.close()


def test_threads_share_one_client(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(4 << 20)
    with child_server(spawn, region) as _, Client.connect(region, "svc", timeout=30) as client:
        errors: list[BaseException] = []

        def run(t: int) -> None:
            rng = random.Random(t)
            try:
                for i in range(500):
                    payload = random_payload(rng)
                    check_digest(i, payload, client.call("digest", i, payload))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stats = client.statistics()
        assert stats.completed == 3000 and stats.late_replies == stats.unexpected_replies == 0


def test_slow_handlers_run_concurrently(make_region: Callable[..., Region]) -> None:
    """Four calls meet at a barrier inside the handler: they can only return if they run at once."""
    region = make_region(2 << 20)
    server = Server(workers=4)
    server.add(CheckService(barrier_parties=4))
    server.listen(region, "slow")
    try:
        clients = [Client.connect(region, "slow", timeout=30) for _ in range(2)]
        calls = [c.submit("rendezvous", i, timeout=60) for i, c in enumerate(clients + clients)]
        assert sorted(call.result() for call in calls) == [0, 1, 2, 3]
        # and a fast call of a third client is not held up by slow ones in progress
        for c in clients:
            c.close()
    finally:
        server.close()


def test_back_pressure_with_a_small_pool(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    service = CheckService()
    server = Server(workers=1, backlog=1)
    server.add(service)
    server.listen(region, "bp")
    try:
        with Client.connect(region, "bp", timeout=30) as client:
            calls = [client.submit("wait_release", i, timeout=60) for i in range(20)]
            wait_until(lambda: server.statistics().back_pressure_waits >= 1)
            # the server holds at most workers + backlog calls plus the one its reader is placing
            assert server.statistics().calls <= 3
            service.release.set()
            assert [c.result() for c in calls] == list(range(20))
            assert server.statistics().queue_peak <= 1
    finally:
        server.close()


def test_timeout_late_reply_and_cancel(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    service = CheckService()
    server = Server(workers=2)
    server.add(service)
    server.listen(region, "late")
    try:
        with Client.connect(region, "late", timeout=30) as client:
            with pytest.raises(Timeout):
                client.call("wait_release", 1, timeout=0.2)
            cancelled = client.submit("wait_release", 2, timeout=60)
            assert cancelled.cancel() and not cancelled.cancel()
            service.release.set()
            assert client.call("echo", "after") == "after"
            # call 1's reply comes late (dropped, counted); call 2's is either skipped by the server
            # (it saw the Cancel) or comes late as well
            wait_until(lambda: client.call("echo", 0) == 0
                       and client.statistics().late_replies + server.statistics().cancelled == 2)
            stats = client.statistics()
            assert stats.timeouts == 1 and stats.cancelled == 1 and stats.unexpected_replies == 0
    finally:
        server.close()


def test_server_killed_mid_call_gives_peer_died(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(2 << 20)
    started = spawn.ctx.Event()
    with child_server(spawn, region, started=started) as proc:
        client = Client.connect(region, "svc", timeout=30, call_timeout=None)
        try:
            result: list[BaseException] = []

            def caller() -> None:
                try:
                    client.call("hang")
                except BaseException as exc:
                    result.append(exc)

            t = threading.Thread(target=caller)
            t.start()
            assert started.wait(60)
            os.kill(proc.pid, signal.SIGKILL)
            t.join(60)
            assert not t.is_alive()
            assert len(result) == 1 and isinstance(result[0], PeerDied), result
            with pytest.raises(PeerDied):
                client.call("echo", 1)
        finally:
            client.close()


def test_async_calls_fail_with_peer_died_when_the_server_dies(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(2 << 20)
    started = spawn.ctx.Event()
    with child_server(spawn, region, started=started) as proc:
        client = Client.connect(region, "svc", timeout=30, call_timeout=None)

        async def main() -> list[Any]:
            assert await client.call_async("echo", "a") == "a"
            pending = [asyncio.ensure_future(client.call_async("hang"))] + [
                asyncio.ensure_future(client.call_async("wait_release", i)) for i in range(5)
            ]
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 60)
            os.kill(proc.pid, signal.SIGKILL)
            return await asyncio.gather(*pending, return_exceptions=True)

        try:
            outcomes = asyncio.run(main())
            assert len(outcomes) == 6 and all(isinstance(o, PeerDied) for o in outcomes), outcomes
        finally:
            client.close()


def test_dead_client_is_dropped_and_its_slot_reused(make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(2 << 20)
    service = CheckService()
    server = Server()
    server.add(service)
    server.listen(region, "dc", slots=1)
    try:
        proc = spawn(client_hang, region.name, "dc")
        wait_until(lambda: server.statistics().calls == 1)
        os.kill(proc.pid, signal.SIGKILL)
        spawn.join(proc, 30)
        wait_until(lambda: server.statistics().dead_clients == 1 and server.statistics().connections_active == 0)
        assert server._listeners[0][0].slot_states() == [FREE]
        # the only slot was freed: a new client connects and is served
        with Client.connect(region, "dc", timeout=30) as client:
            assert client.call("echo", "reused") == "reused"
    finally:
        service.release.set()
        server.close()


def test_orderly_close_tells_pending_calls(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    service = CheckService()
    server = Server()
    server.add(service)
    server.listen(region, "oc")
    client = Client.connect(region, "oc", timeout=30)
    try:
        call = client.submit("wait_release", 1, timeout=60)
        wait_until(lambda: server.statistics().calls == 1)
        server.close(timeout=1.0)  # the handler still runs: close does not wait for it long
        with pytest.raises(PeerClosed):
            call.result()
        with pytest.raises(PeerClosed):
            client.call("echo", 1)
    finally:
        service.release.set()
        client.close()
        server.close()


def test_connect_errors(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 20)
    from ampipc import ObjectNotFound, ResourceExhausted

    with pytest.raises(ObjectNotFound):
        Client.connect(region, "nothing", timeout=0.05)
    server = Server()
    server.add(CheckService())
    server.listen(region, "one", slots=1, buffer_size=4096)
    try:
        with Client.connect(region, "one", timeout=30) as first:
            with pytest.raises(ResourceExhausted):
                Client.connect(region, "one", timeout=1)
            assert first.call("echo", 1) == 1
            with pytest.raises(MessageTooLarge):
                Client(first._link, max_frame=1000).call("echo", b"x" * 2000)
    finally:
        server.close()
    with pytest.raises(PeerDied):
        Client.connect(region, "one", timeout=1)


def test_registry_slots_return_to_free(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    server = Server()
    server.add(CheckService())
    server.listen(region, "slots", slots=3)
    try:
        for _ in range(5):  # more connections than slots: each is recycled after its Bye
            with Client.connect(region, "slots", timeout=30) as c:
                assert c.call("echo", "x") == "x"
        wait_until(lambda: server.statistics().connections_active == 0)
        registry = server._listeners[0][0]
        wait_until(lambda: registry.slot_states() == [FREE] * 3)
        assert server.statistics().connections_opened == 5
    finally:
        server.close()


def test_one_slot_serves_client_processes_one_after_another(make_region: Callable[..., Region], spawn: Any) -> None:
    """A client process that exits closes its buffer sides; the next one on the same slot takes them over."""
    region = make_region(2 << 20)
    server = Server()
    server.add(CheckService())
    server.listen(region, "seq", slots=1)
    results = spawn.ctx.Queue()
    try:
        for seed in range(3):
            proc = spawn(client_calls, region.name, "seq", 1, 50, seed, results)
            assert results.get(timeout=60) == (seed, 50, [])
            assert spawn.join(proc, 60) == 0
            wait_until(lambda: server.statistics().connections_active == 0)
        assert server.statistics().connections_opened == 3
    finally:
        server.close()


def test_asyncio_cancellation_and_timeout(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    service = CheckService()
    server = Server(workers=1, backlog=8)
    server.add(service)
    server.listen(region, "acan")
    try:
        with Client.connect(region, "acan", timeout=30) as client:

            async def main() -> None:
                blocker = asyncio.ensure_future(client.call_async("wait_release", 0))
                queued = asyncio.ensure_future(client.call_async("wait_release", 1))
                await asyncio.sleep(0)
                await asyncio.get_running_loop().run_in_executor(
                    None, wait_until, lambda: server.statistics().calls == 2)
                queued.cancel()  # still queued behind the blocker: the server must skip it
                with pytest.raises(asyncio.CancelledError):
                    await queued
                with pytest.raises(Timeout):
                    await client.call_async("wait_release", 2, timeout=0.2)
                service.release.set()
                assert await blocker == 0
                assert await client.call_async("echo", "still fine") == "still fine"

            asyncio.run(main())
            stats = client.statistics()
            assert stats.cancelled == 1 and stats.timeouts == 1 and stats.unexpected_replies == 0
            # the cancelled call never ran; the timed-out one ran late or was skipped as expired
            wait_until(lambda: server.statistics().cancelled >= 1)
            s = server.statistics()
            assert s.completed + s.cancelled + s.expired == 4 and s.cancelled >= 1
    finally:
        service.release.set()
        server.close()


def test_reply_over_the_frame_limit_is_a_clear_error(make_region: Callable[..., Region]) -> None:
    region = make_region(2 << 20)
    server = Server(max_frame=100_000)
    server.add(CheckService())
    server.listen(region, "big", buffer_size=8192)
    try:
        with Client.connect(region, "big", timeout=30) as client:
            assert len(client.call("big", 90_000)) == 90_000  # chunked through 8 KiB buffers
            with pytest.raises(MessageTooLarge, match="frame limit"):
                client.call("big", 200_000)
            assert client.call("echo", "next") == "next"
        with pytest.raises(IpcError, match="closed"):
            client.call("echo", 1)
    finally:
        server.close()
