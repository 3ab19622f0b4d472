"""asyncio against blocking calls: 64 B ping-pong round trip and CPU per round trip; 10,000 waiters.

Two real processes. The peer (spawned) is synchronous: it receives each 64-byte ping on one
message buffer and sends it back on another. The measuring process does the same round trips
once with the blocking calls (``send`` / ``receive``) and once inside an asyncio loop
(``await send_async`` / ``await receive_async``), alternating rounds so that both see the same
machine load. CPU per round trip is the CPU time both processes used (this process's threads,
the asyncio waker included, plus the peer's, from /proc), divided by the round trips.
``ratio`` rows compare asyncio with the blocking calls of the same run (targets: <= 1.5x).

The last row: 10,000 concurrent ``receive_async`` waiters on 1,000 buffers in one loop, fed by a
peer process that sends 10 numbered messages to every buffer; every message must arrive once.

Run: ``python benchmarks/bench_aio.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

from ampipc import MessageBuffer, Region

__all__ = ["run"]

_TIMEOUT = 60.0
_PAYLOAD = b"p" * 64
_STOP = b"stop"
_CLK = os.sysconf("SC_CLK_TCK")


def _echo(region_name: str, ready: Any) -> None:
    with Region.attach(region_name) as region:
        ping = MessageBuffer.attach(region, "ping")
        pong = MessageBuffer.attach(region, "pong")
        ready.set()
        while True:
            m = ping.receive(timeout=_TIMEOUT)
            if m == _STOP:
                break
            pong.send(m, timeout=_TIMEOUT)


def _fan_out(region_name: str, buffers: int, per_buffer: int, start: Any) -> None:
    with Region.attach(region_name) as region:
        bufs = [MessageBuffer.attach(region, f"fan.{i}") for i in range(buffers)]
        start.wait(_TIMEOUT)
        for k in range(per_buffer):
            for i, b in enumerate(bufs):
                b.send(b"%d:%d" % (i, k), timeout=_TIMEOUT)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def _sync_rounds(ping: MessageBuffer, pong: MessageBuffer, n: int) -> None:
    for _ in range(n):
        ping.send(_PAYLOAD, timeout=_TIMEOUT)
        pong.receive(timeout=_TIMEOUT)


async def _async_rounds(ping: MessageBuffer, pong: MessageBuffer, n: int) -> None:
    for _ in range(n):
        await ping.send_async(_PAYLOAD, timeout=_TIMEOUT)  # type: ignore[attr-defined]
        await pong.receive_async(timeout=_TIMEOUT)  # type: ignore[attr-defined]


def _measure(fn: Any, n: int, peer: int) -> tuple[float, float]:
    cpu0, peer0, t0 = time.process_time(), _cpu_of(peer), time.perf_counter()
    fn(n)
    t1, cpu1, peer1 = time.perf_counter(), time.process_time(), _cpu_of(peer)
    return (t1 - t0) / n * 1e6, ((cpu1 - cpu0) + (peer1 - peer0)) / n * 1e6


def _ping_pong(rounds: int, runs: int) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    name = f"ampipc-bench-aio-{os.getpid()}"
    with Region.create(name, 1 << 20, replace_stale=True) as region:
        try:
            ping = MessageBuffer.create(region, "ping", 1024)
            pong = MessageBuffer.create(region, "pong", 1024)
            ready = ctx.Event()
            child = ctx.Process(target=_echo, args=(name, ready), daemon=True)
            child.start()
            try:
                if not ready.wait(_TIMEOUT) or child.pid is None:
                    raise RuntimeError("the echo process did not start")
                loop = asyncio.new_event_loop()
                try:
                    loop.run_until_complete(_async_rounds(ping, pong, 200))  # warm-up (waker thread started)
                    _sync_rounds(ping, pong, 200)
                    sync_rtt, sync_cpu, aio_rtt, aio_cpu = [], [], [], []
                    for _ in range(runs):
                        rtt, cpu = _measure(lambda k: _sync_rounds(ping, pong, k), rounds, child.pid)
                        sync_rtt.append(rtt)
                        sync_cpu.append(cpu)
                        rtt, cpu = _measure(
                            lambda k: loop.run_until_complete(_async_rounds(ping, pong, k)), rounds, child.pid
                        )
                        aio_rtt.append(rtt)
                        aio_cpu.append(cpu)
                finally:
                    loop.close()
                ping.send(_STOP, timeout=_TIMEOUT)
                child.join(_TIMEOUT)
            finally:
                if child.is_alive():
                    child.kill()
                child.join()
        finally:
            region.unlink()
    s_rtt, s_cpu = statistics.median(sync_rtt), statistics.median(sync_cpu)
    a_rtt, a_cpu = statistics.median(aio_rtt), statistics.median(aio_cpu)
    return [
        {"case": "64 B round trip, blocking calls", "rtt_us": s_rtt, "cpu_us_per_rtt": s_cpu},
        {"case": "64 B round trip, asyncio", "rtt_us": a_rtt, "cpu_us_per_rtt": a_cpu},
        {
            "case": "ratio asyncio / blocking (target <= 1.5)",
            "rtt_us": round(a_rtt / s_rtt, 2),
            "cpu_us_per_rtt": round(a_cpu / s_cpu, 2),
        },
    ]


async def _many_waiters(region: Region, bufs: list[MessageBuffer], per_buffer: int, start: Any) -> tuple[int, float]:
    async def one(b: MessageBuffer) -> bytes:
        got: bytes = await b.receive_async(timeout=_TIMEOUT)  # type: ignore[attr-defined]
        return got

    tasks = [asyncio.create_task(one(bufs[i % len(bufs)])) for i in range(len(bufs) * per_buffer)]
    await asyncio.sleep(0)  # every task is waiting before the peer starts
    t0 = time.perf_counter()
    start.set()
    got = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    expected = {b"%d:%d" % (i, k) for i in range(len(bufs)) for k in range(per_buffer)}
    if len(got) != len(expected) or set(got) != expected:
        raise AssertionError("a message was lost or duplicated among the 10,000 waiters")
    return len(got), elapsed


def _waiters(buffers: int, per_buffer: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    name = f"ampipc-bench-aiow-{os.getpid()}"
    with Region.create(name, 8 << 20, replace_stale=True, directory_capacity=buffers + 8) as region:
        try:
            bufs = [MessageBuffer.create(region, f"fan.{i}", 256) for i in range(buffers)]
            start = ctx.Event()
            child = ctx.Process(target=_fan_out, args=(name, buffers, per_buffer, start), daemon=True)
            child.start()
            try:
                count, elapsed = asyncio.run(_many_waiters(region, bufs, per_buffer, start))
                child.join(_TIMEOUT)
            finally:
                if child.is_alive():
                    child.kill()
                child.join()
        finally:
            region.unlink()
    return {
        "case": f"{count:,} receive_async waiters on {buffers:,} buffers, each message once",
        "rtt_us": elapsed / count * 1e6,
        "cpu_us_per_rtt": "-",
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    rounds, runs = (2000, 1) if quick else (10000, 5)
    rows = _ping_pong(rounds, runs)
    rows.append(_waiters(1000, 10))
    return rows


if __name__ == "__main__":
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.run_all import format_rows

    print(format_rows(run("--quick" in sys.argv)))
