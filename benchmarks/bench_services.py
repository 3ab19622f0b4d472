"""Remote calls: ampipc.services against a raw MessageBuffer round trip and against multiprocessing.

Theory of operation
-------------------
Every figure comes from processes of the multiprocessing *spawn* context, in one run, so the ratios
compare like with like on the same (possibly loaded) machine:

- **1 client**: a 64-byte payload echoed N times, one call at a time. Rows: the raw round trip
  over a MessageBuffer pair (send 64 B, the echo process receives and sends it back); an ampipc
  call of an ``inline`` handler (runs on the connection's reader, no thread hop); an ampipc call of
  a pooled handler (one hop to a worker thread); ``multiprocessing.managers`` (a registered
  object's method through its proxy); ``multiprocessing.connection`` Listener/Client (a tuple
  ``(method, args)`` pickled each way, dispatched by a loop in the server).
- **8 clients**: 8 client processes at once, each making N calls; the server side is one process
  (raw: one echo thread per buffer pair; ampipc: one reader per connection; managers and
  connection: their thread per connection). The figure is the aggregate calls/s over the
  slowest client's time.

Targets: the ampipc call ≤ 2x the raw round trip; 8 ampipc clients ≥ 0.5x the 8 raw pairs; ampipc
≥ 10x multiprocessing.managers and multiprocessing.connection. Run: ``python benchmarks/bench_services.py
[--quick]`` (or as part of ``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import multiprocessing.managers
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["run", "verdicts", "main"]

PAYLOAD = b"\xa5" * 64
CLIENTS = 8
_TIMEOUT = 300.0


# ---- the service, as each framework wants it ---------------------------------------------------


class EchoService:
    def echo(self, data: bytes) -> bytes:
        return data


# ---- raw MessageBuffer pairs ----------------------------------------------------------------


def _raw_echo(region_name: str, pairs: int, ready: Any) -> None:
    from ampipc import MessageBuffer, PeerDied, Region

    with Region.attach(region_name) as region:
        def serve(i: int) -> None:
            rx = MessageBuffer.attach(region, f"raw.{i}.q")
            tx = MessageBuffer.attach(region, f"raw.{i}.r")
            try:
                while True:
                    data = rx.receive()
                    if not data:
                        return
                    tx.send(data)
            except PeerDied:
                return

        threads = [threading.Thread(target=serve, args=(i,)) for i in range(pairs)]
        for t in threads:
            t.start()
        ready.set()
        for t in threads:
            t.join()


def _raw_client(region_name: str, index: int, n: int, start: Any, results: Any) -> None:
    from ampipc import MessageBuffer, Region

    with Region.attach(region_name) as region:
        tx = MessageBuffer.attach(region, f"raw.{index}.q")
        rx = MessageBuffer.attach(region, f"raw.{index}.r")
        for _ in range(200):
            tx.send(PAYLOAD)
            rx.receive()
        start.wait(_TIMEOUT)
        t0 = time.perf_counter()
        for _ in range(n):
            tx.send(PAYLOAD)
            if rx.receive() != PAYLOAD:
                raise AssertionError("raw echo differs")
        results.put(time.perf_counter() - t0)
        tx.send(b"")  # stop this pair's echo thread


# ---- ampipc.services --------------------------------------------------------------------------


def _rpc_server(region_name: str, ready: Any, stop: Any) -> None:
    from ampipc import Region
    from ampipc.services import Server

    with Region.attach(region_name) as region:
        server = Server(workers=CLIENTS)
        service = EchoService()
        server.register(service.echo, "echo", inline=True)
        server.register(service.echo, "echo_pooled")
        server.listen(region, "bench", slots=CLIENTS + 2, buffer_size=16 * 1024)
        ready.set()
        stop.poll(_TIMEOUT)
        server.close()


def _rpc_client(region_name: str, method: str, n: int, start: Any, results: Any) -> None:
    from ampipc import Region
    from ampipc.services import Client

    with Region.attach(region_name) as region:
        with Client.connect(region, "bench", timeout=60) as client:
            for _ in range(200):
                client.call(method, PAYLOAD)
            start.wait(_TIMEOUT)
            t0 = time.perf_counter()
            for _ in range(n):
                if client.call(method, PAYLOAD) != PAYLOAD:
                    raise AssertionError("rpc echo differs")
            results.put(time.perf_counter() - t0)


# ---- multiprocessing.managers ---------------------------------------------------------------


class _EchoManager(multiprocessing.managers.BaseManager):
    pass


_EchoManager.register("Echo", EchoService)


def _managers_client(address: Any, authkey: bytes, n: int, start: Any, results: Any) -> None:
    manager = _EchoManager(address=address, authkey=authkey)
    manager.connect()
    echo = manager.Echo()  # type: ignore[attr-defined]
    for _ in range(200):
        echo.echo(PAYLOAD)
    start.wait(_TIMEOUT)
    t0 = time.perf_counter()
    for _ in range(n):
        if echo.echo(PAYLOAD) != PAYLOAD:
            raise AssertionError("managers echo differs")
    results.put(time.perf_counter() - t0)


# ---- multiprocessing.connection ------------------------------------------------------------


def _connection_server(address: str, authkey: bytes, clients: int, ready: Any) -> None:
    service = EchoService()
    with multiprocessing.connection.Listener(address, authkey=authkey) as listener:
        ready.set()

        def serve(conn: multiprocessing.connection.Connection) -> None:
            with conn:
                while True:
                    try:
                        method, args = conn.recv()
                    except EOFError:
                        return
                    try:
                        conn.send(("ok", getattr(service, method)(*args)))
                    except Exception as exc:  # noqa: BLE001 - sent back, as an RPC server does
                        conn.send(("error", repr(exc)))

        threads = []
        for _ in range(clients):
            t = threading.Thread(target=serve, args=(listener.accept(),))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


def _connection_client(address: str, authkey: bytes, n: int, start: Any, results: Any) -> None:
    with multiprocessing.connection.Client(address, authkey=authkey) as conn:
        def call(method: str, *args: Any) -> Any:
            conn.send((method, args))
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(value)
            return value

        for _ in range(200):
            call("echo", PAYLOAD)
        start.wait(_TIMEOUT)
        t0 = time.perf_counter()
        for _ in range(n):
            if call("echo", PAYLOAD) != PAYLOAD:
                raise AssertionError("connection echo differs")
        results.put(time.perf_counter() - t0)


# ---- running the cases ------------------------------------------------------------------------


def _clients(ctx: Any, target: Any, args_for: Any, count: int, n: int) -> float:
    """Start ``count`` client processes, release them together, return the slowest one's seconds."""
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), n, start, results), daemon=True) for i in range(count)]
    try:
        for p in procs:
            p.start()
        time.sleep(0.2)
        start.set()
        times = [results.get(timeout=_TIMEOUT) for _ in procs]
        for p in procs:
            p.join(_TIMEOUT)
        return max(times)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def _case_raw(ctx: Any, count: int, n: int) -> float:
    from ampipc import MessageBuffer, Region

    name = f"ampipc-bench-svc-{os.getpid()}"
    with Region.create(name, 4 << 20) as region:
        for i in range(count):
            MessageBuffer.create(region, f"raw.{i}.q", 16 * 1024)
            MessageBuffer.create(region, f"raw.{i}.r", 16 * 1024)
        ready = ctx.Event()
        echo = ctx.Process(target=_raw_echo, args=(name, count, ready), daemon=True)
        echo.start()
        try:
            ready.wait(60)
            return _clients(ctx, _raw_client, lambda i: (name, i), count, n)
        finally:
            echo.join(30)
            if echo.is_alive():
                echo.kill()
                echo.join(5)


def _case_rpc(ctx: Any, method: str, count: int, n: int) -> float:
    from ampipc import Region

    name = f"ampipc-bench-svc-{os.getpid()}"
    with Region.create(name, 8 << 20) as region:
        del region
        ready = ctx.Event()
        stop_child, stop = ctx.Pipe(duplex=False)
        server = ctx.Process(target=_rpc_server, args=(name, ready, stop_child), daemon=True)
        server.start()
        try:
            ready.wait(60)
            return _clients(ctx, _rpc_client, lambda i: (name, method), count, n)
        finally:
            stop.send(True)
            server.join(30)
            if server.is_alive():
                server.kill()
                server.join(5)


def _case_managers(ctx: Any, count: int, n: int) -> float:
    authkey = os.urandom(16)
    manager = _EchoManager(address=("127.0.0.1", 0), authkey=authkey, ctx=ctx)
    manager.start()
    try:
        address = manager.address
        return _clients(ctx, _managers_client, lambda i: (address, authkey), count, n)
    finally:
        manager.shutdown()


def _case_connection(ctx: Any, count: int, n: int) -> float:
    authkey = os.urandom(16)
    with tempfile.TemporaryDirectory(prefix="ampipc-bench-") as tmp:
        address = os.path.join(tmp, "listener.sock")
        ready = ctx.Event()
        server = ctx.Process(target=_connection_server, args=(address, authkey, count, ready), daemon=True)
        server.start()
        try:
            ready.wait(60)
            return _clients(ctx, _connection_client, lambda i: (address, authkey), count, n)
        finally:
            server.join(30)
            if server.is_alive():
                server.kill()
                server.join(5)


def run(quick: bool = False, runs: int | None = None) -> list[dict[str, Any]]:
    """Every case, 1 client and 8 clients; the median of ``runs`` runs (default 3, quick 1)."""
    ctx = multiprocessing.get_context("spawn")
    runs = runs or (1 if quick else 3)
    n1 = 2_000 if quick else 20_000
    n8 = 500 if quick else 5_000
    n_slow = 300 if quick else 2_000  # the multiprocessing peers are an order of magnitude slower
    cases: list[tuple[str, Any, int]] = [
        ("raw MessageBuffer round trip", lambda c, k, n: _case_raw(ctx, k, n), 0),
        ("ampipc call (inline handler)", lambda c, k, n: _case_rpc(ctx, "echo", k, n), 0),
        ("ampipc call (worker pool)", lambda c, k, n: _case_rpc(ctx, "echo_pooled", k, n), 0),
        ("multiprocessing.managers", lambda c, k, n: _case_managers(ctx, k, n), 1),
        ("multiprocessing.connection", lambda c, k, n: _case_connection(ctx, k, n), 1),
    ]
    rows: list[dict[str, Any]] = []
    for label, fn, slow in cases:
        one, eight = [], []
        for _ in range(runs):
            n = n_slow if slow else n1
            one.append(fn(ctx, 1, n) / n)
            n = n_slow // 2 if slow else n8
            eight.append(CLIENTS * n / fn(ctx, CLIENTS, n))
        rows.append({"case": label, "1 client us/call": statistics.median(one) * 1e6,
                     "8 clients calls/s": statistics.median(eight)})
    raw = rows[0]
    for row in rows:
        row["x raw (1 client)"] = row["1 client us/call"] / raw["1 client us/call"]
        row["x raw (8 clients)"] = row["8 clients calls/s"] / raw["8 clients calls/s"]
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["case"]: r for r in rows}
    raw, inline = by["raw MessageBuffer round trip"], by["ampipc call (inline handler)"]
    pooled = by["ampipc call (worker pool)"]
    out = [
        f"64 B call / raw round trip: {inline['x raw (1 client)']:.2f}x inline, {pooled['x raw (1 client)']:.2f}x pooled "
        f"(target <= 2x): {'met' if inline['x raw (1 client)'] <= 2 else 'NOT met'}",
        f"8 clients / 8 raw pairs: {inline['x raw (8 clients)']:.2f}x inline, {pooled['x raw (8 clients)']:.2f}x pooled "
        f"(target >= 0.5x): {'met' if inline['x raw (8 clients)'] >= 0.5 else 'NOT met'}",
    ]
    del raw
    for peer in ("multiprocessing.managers", "multiprocessing.connection"):
        p = by[peer]
        lat = p["1 client us/call"] / inline["1 client us/call"]
        thr = inline["8 clients calls/s"] / p["8 clients calls/s"]
        plat = p["1 client us/call"] / pooled["1 client us/call"]
        pthr = pooled["8 clients calls/s"] / p["8 clients calls/s"]
        out.append(f"ampipc vs {peer}: {lat:.1f}x faster per call, {thr:.1f}x the 8-client rate (inline); "
                   f"{plat:.1f}x / {pthr:.1f}x pooled (target >= 10x): "
                   f"{'met' if min(lat, thr) >= 10 else 'NOT met'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args(argv)
    from benchmarks.run_all import format_rows

    rows = run(args.quick, args.runs)
    print(format_rows(rows))
    print()
    for line in verdicts(rows):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
