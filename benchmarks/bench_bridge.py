"""Zenoh bridge benchmark: bridged messages against Zenoh's own publisher -> subscriber, in one run.

Both sides use the same Python binding of Zenoh (eclipse-zenoh), the same session settings
(`ampipc.bridge.session_config`: tcp/127.0.0.1, no scouting), ``CongestionControl.BLOCK`` and
``Reliability.RELIABLE``, and every process is a spawn-context child:

- **zenoh pub->sub**: a publisher process puts N payloads; a subscriber process (bounded FIFO
  handler, ``recv``) takes them. Messages/s = N / (last receipt - first put).
- **bridged**: a producer process sends N messages into a MessageBuffer of region A; bridge A (a
  process) exports it; bridge B (a process) imports it into a MessageBuffer of region B; a
  consumer process receives them. Same clock, same N.
- **packed**: the same with bridge A given ``pack=64`` (a backlog goes out as samples of up to
  64 whole messages, at most 64 KiB; only ampipc bridges read those).
- **round trip** (64 B): zenoh ping-pong (put "ping", an echo process answers on "pong") against
  the bridged ping-pong (buffer -> bridge A -> Zenoh -> bridge B -> buffer -> echo core -> buffer
  -> bridge B -> Zenoh -> bridge A -> buffer), the bridges' import routes writing from Zenoh's
  receive thread (``fifo_capacity=0``). Median and 99th percentile of timed round trips after a
  warm-up.

Every receiver checks each payload's sequence number, so a lossy or reordered path cannot look
fast. Ratios: bridged / zenoh throughput (target >= 0.8) and bridged / zenoh round trip (<= 1.5).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from typing import Any

__all__ = ["run", "main"]

_T = 120.0  # bound of every wait (never a measured quantity)
_PACK = 64  # the packed variant: up to 64 whole messages per sample between the two bridges


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{s.getsockname()[1]}"


def _payload(seq: int, size: int) -> bytes:
    return seq.to_bytes(8, "little") + bytes(size - 8)


def _seq(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


# ---- bare Zenoh ------------------------------------------------------------------------------


def _z_pub(endpoint: str, key: str, count: int, size: int, ready: Any, go: Any, out: Any) -> None:
    import zenoh

    from ampipc.bridge.session import close_session, open_session

    session = open_session(connect=[endpoint])
    pub = session.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK,
                                    reliability=zenoh.Reliability.RELIABLE)
    deadline = time.monotonic() + _T
    while not pub.matching_status.matching:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError("no subscriber matched")
        time.sleep(0.01)
    ready.set()
    go.wait(_T)
    payloads = [_payload(i, size) for i in range(min(count, 1024))]
    t0 = time.perf_counter()
    for i in range(count):
        data = payloads[i] if i < 1024 else _payload(i, size)
        pub.put(data)
    out.put(("pub", t0))
    go.wait(_T)
    close_session(session)


def _z_sub(endpoint: str, key: str, count: int, ready: Any, out: Any, done: Any) -> None:
    import zenoh

    from ampipc.bridge.session import close_session, open_session

    session = open_session(listen=[endpoint])
    sub = session.declare_subscriber(key, zenoh.handlers.FifoChannel(256))
    handler = sub.handler
    ready.set()
    for i in range(count):
        data = handler.recv().payload.to_bytes()
        if _seq(data) != i:
            raise RuntimeError(f"zenoh sub: expected {i}, got {_seq(data)}")
    out.put(("sub", time.perf_counter()))
    done.wait(_T)
    close_session(session)


def _z_echo(endpoint: str, ready: Any, done: Any) -> None:
    import zenoh

    from ampipc.bridge.session import close_session, open_session

    session = open_session(listen=[endpoint])
    pub = session.declare_publisher("bench/pong", congestion_control=zenoh.CongestionControl.BLOCK,
                                    reliability=zenoh.Reliability.RELIABLE)
    sub = session.declare_subscriber("bench/ping", zenoh.handlers.FifoChannel(256))
    handler = sub.handler
    ready.set()
    while True:
        sample = handler.recv()
        data = sample.payload.to_bytes()
        if data == b"stop":
            break
        pub.put(data)
    done.wait(_T)
    close_session(session)


def _z_ping(endpoint: str, rounds: int, warmup: int, out: Any) -> None:
    import zenoh

    from ampipc.bridge.session import close_session, open_session

    session = open_session(connect=[endpoint])
    pub = session.declare_publisher("bench/ping", congestion_control=zenoh.CongestionControl.BLOCK,
                                    reliability=zenoh.Reliability.RELIABLE)
    sub = session.declare_subscriber("bench/pong", zenoh.handlers.FifoChannel(256))
    handler = sub.handler
    deadline = time.monotonic() + _T
    while not pub.matching_status.matching:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError("no echo matched")
        time.sleep(0.01)
    time.sleep(0.2)  # the echo's reply publisher must also be matched by our subscriber
    samples = []
    for i in range(warmup + rounds):
        data = _payload(i, 64)
        t0 = time.perf_counter_ns()
        pub.put(data)
        reply = handler.recv().payload.to_bytes()
        elapsed = time.perf_counter_ns() - t0
        if reply != data:
            raise RuntimeError("zenoh echo differs")
        if i >= warmup:
            samples.append(elapsed)
    pub.put(b"stop")
    out.put(samples)
    close_session(session)


# ---- bridged ---------------------------------------------------------------------------------


def _bridge(region_name: str, name: str, listen: bool, endpoint: str, exports: list[tuple[str, str]],
            imports: list[tuple[str, str]], ready: Any, stop: Any, pack: int = 1, fifo: int = 256,
            express: bool = False) -> None:
    from ampipc import Region
    from ampipc.bridge import ZenohBridge
    from ampipc.bridge.session import close_session, open_session

    with Region.attach(region_name) as region:
        session = open_session(**({"listen": [endpoint]} if listen else {"connect": [endpoint]}))
        bridge = ZenohBridge(region, session, name=name, fifo_capacity=fifo, pack=pack, express=express)
        for buffer, key in exports:
            bridge.export(buffer, key)
        for key, buffer in imports:
            bridge.import_(key, buffer)
        bridge.wait_peers(_T)
        ready.set()
        stop.wait(_T * 3)
        bridge.close()
        close_session(session)


def _producer(region_name: str, buffer: str, count: int, size: int, go: Any, out: Any) -> None:
    from ampipc import MessageBuffer, Region

    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, buffer)
        payloads = [_payload(i, size) for i in range(min(count, 1024))]
        go.wait(_T)
        t0 = time.perf_counter()
        for i in range(count):
            buf.send(payloads[i] if i < 1024 else _payload(i, size), timeout=_T)
        out.put(("pub", t0))
        buf.close()


def _consumer(region_name: str, buffer: str, count: int, out: Any) -> None:
    from ampipc import MessageBuffer, Region

    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, buffer)
        for i in range(count):
            data = buf.receive(timeout=_T)
            if _seq(data) != i:
                raise RuntimeError(f"bridged consumer: expected {i}, got {_seq(data)}")
        out.put(("sub", time.perf_counter()))


def _echo_core(region_name: str, inbox: str, outbox: str) -> None:
    from ampipc import MessageBuffer, PeerClosed, Region

    with Region.attach(region_name) as region:
        rx, tx = MessageBuffer.attach(region, inbox), MessageBuffer.attach(region, outbox)
        while True:
            try:
                data = rx.receive(timeout=_T)
            except PeerClosed:
                return
            if data == b"stop":
                return
            tx.send(data, timeout=_T)


def _bridged_ping(region_name: str, outbox: str, inbox: str, rounds: int, warmup: int, out: Any) -> None:
    from ampipc import MessageBuffer, Region

    with Region.attach(region_name) as region:
        tx, rx = MessageBuffer.attach(region, outbox), MessageBuffer.attach(region, inbox)
        samples = []
        for i in range(warmup + rounds):
            data = _payload(i, 64)
            t0 = time.perf_counter_ns()
            tx.send(data, timeout=_T)
            reply = rx.receive(timeout=_T)
            elapsed = time.perf_counter_ns() - t0
            if reply != data:
                raise RuntimeError("bridged echo differs")
            if i >= warmup:
                samples.append(elapsed)
        tx.send(b"stop", timeout=_T)
        out.put(samples)


class _Procs:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.children: list[Any] = []

    def start(self, target: Any, *args: Any) -> Any:
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.children.append(p)
        return p

    def reap(self) -> None:
        for p in self.children:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def _times(out: Any) -> float:
    got = dict(out.get(timeout=_T * 3) for _ in range(2))
    return float(got["sub"] - got["pub"])


def _zenoh_throughput(count: int, size: int) -> float:
    procs = _Procs()
    ctx = procs.ctx
    ready_sub, ready_pub, go, done, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    endpoint = _endpoint()
    try:
        procs.start(_z_sub, endpoint, "bench/tp", count, ready_sub, out, done)
        ready_sub.wait(_T)
        procs.start(_z_pub, endpoint, "bench/tp", count, size, ready_pub, go, out)
        if not ready_pub.wait(_T):
            raise TimeoutError("zenoh publisher not ready")
        go.set()
        seconds = _times(out)
        done.set()
        return count / seconds
    finally:
        done.set()
        procs.reap()


def _regions(size: int) -> tuple[Any, Any]:
    from ampipc import Region

    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    return Region.create(f"ampipc-bench-za-{tag}", size), Region.create(f"ampipc-bench-zb-{tag}", size)


def _bridged_throughput(count: int, size: int, pack: int = 1) -> float:
    from ampipc import MessageBuffer

    region_a, region_b = _regions(8 << 20)
    procs = _Procs()
    ctx = procs.ctx
    ready_a, ready_b, go, stop, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    endpoint = _endpoint()
    capacity = max(1 << 20, 8 * (size + 4))
    try:
        MessageBuffer.create(region_a, "out", capacity)
        MessageBuffer.create(region_b, "in", capacity)
        procs.start(_bridge, region_b.name, "bench-b", True, endpoint, [], [("bench/bridged", "in")], ready_b, stop)
        procs.start(_bridge, region_a.name, "bench-a", False, endpoint, [("out", "bench/bridged")], [], ready_a, stop,
                    pack)
        if not (ready_a.wait(_T) and ready_b.wait(_T)):
            raise TimeoutError("bridges not ready")
        procs.start(_consumer, region_b.name, "in", count, out)
        procs.start(_producer, region_a.name, "out", count, size, go, out)
        go.set()
        seconds = _times(out)
        return count / seconds
    finally:
        stop.set()
        procs.reap()
        region_a.close()
        region_b.close()


def _zenoh_round_trip(rounds: int, warmup: int) -> list[int]:
    procs = _Procs()
    ctx = procs.ctx
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    endpoint = _endpoint()
    try:
        procs.start(_z_echo, endpoint, ready, done)
        ready.wait(_T)
        procs.start(_z_ping, endpoint, rounds, warmup, out)
        samples: list[int] = out.get(timeout=_T * 3)
        return samples
    finally:
        done.set()
        procs.reap()


def _bridged_round_trip(rounds: int, warmup: int, fifo: int = 0, express: bool = False) -> list[int]:
    from ampipc import MessageBuffer

    region_a, region_b = _regions(1 << 20)
    procs = _Procs()
    ctx = procs.ctx
    ready_a, ready_b, stop, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    endpoint = _endpoint()
    try:
        for region in (region_a, region_b):
            MessageBuffer.create(region, "ping", 4096)
            MessageBuffer.create(region, "pong", 4096)
        # A: ping (app -> bridge) exported, pong imported; B: ping imported (-> echo), pong exported.
        # Latency configuration: import routes write from Zenoh's receive thread (fifo_capacity=0).
        procs.start(_bridge, region_b.name, "bench-b", True, endpoint, [("pong", "bench/bpong")],
                    [("bench/bping", "ping")], ready_b, stop, 1, fifo, express)
        procs.start(_bridge, region_a.name, "bench-a", False, endpoint, [("ping", "bench/bping")],
                    [("bench/bpong", "pong")], ready_a, stop, 1, fifo, express)
        if not (ready_a.wait(_T) and ready_b.wait(_T)):
            raise TimeoutError("bridges not ready")
        procs.start(_echo_core, region_b.name, "ping", "pong")
        procs.start(_bridged_ping, region_a.name, "ping", "pong", rounds, warmup, out)
        samples: list[int] = out.get(timeout=_T * 3)
        return samples
    finally:
        stop.set()
        procs.reap()
        region_a.close()
        region_b.close()


def _percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The table's rows: throughput at 64 B and 64 KiB, and the 64 B round trip, with ratios."""
    rows: list[dict[str, Any]] = []
    runs = 1 if quick else 3
    for size, count in ((64, 10_000 if quick else 50_000), (64 * 1024, 500 if quick else 3_000)):
        zenoh_rates: list[float] = []
        bridged_rates: dict[int, list[float]] = {1: [], _PACK: []}
        for _ in range(runs):  # interleaved, so every variant sees the same machine load
            zenoh_rates.append(_zenoh_throughput(count, size))
            for pack, rates in bridged_rates.items():
                rates.append(_bridged_throughput(count, size, pack))
        z = statistics.median(zenoh_rates)
        label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"
        for pack, rates in bridged_rates.items():
            b = statistics.median(rates)
            rows.append({
                "measure": f"one-way {label} msg/s" + ("" if pack == 1 else f", pack {pack}"),
                "zenoh pub->sub": z, "bridged": b, "MB/s bridged": b * size / 1e6,
                "ratio": b / z, "target": ">= 0.8", "met": b / z >= 0.8,
            })
    rounds, warmup = (1_000, 100) if quick else (5_000, 300)
    z_rt, b_rt = _zenoh_round_trip(rounds, warmup), _bridged_round_trip(rounds, warmup)
    zm, bm = _percentile(z_rt, 0.5), _percentile(b_rt, 0.5)
    rows.append({
        "measure": "round trip 64 B, median us", "zenoh pub->sub": zm, "bridged": bm, "MB/s bridged": "-",
        "ratio": bm / zm, "target": "<= 1.5", "met": bm / zm <= 1.5,
    })
    rows.append({
        "measure": "round trip 64 B, p99 us", "zenoh pub->sub": _percentile(z_rt, 0.99),
        "bridged": _percentile(b_rt, 0.99), "MB/s bridged": "-",
        "ratio": _percentile(b_rt, 0.99) / _percentile(z_rt, 0.99), "target": "-", "met": "-",
    })
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    from benchmarks.run_all import format_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(format_rows(run(args.quick)))
    return 0


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    sys.exit(main())
