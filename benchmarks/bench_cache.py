"""What the chip memory model costs: the 64-byte message-buffer round trip with and without it.

Three cases, one run, two processes (this one the CM7, a spawned child the CM4, each pinned to a CPU
of its own when there are two), blocking calls:

- ``plain``: an ordinary region: the fast path, which must not pay for the model;
- ``nospin``: the same without the blocked side's spin (what every wait costs when the peer is
  asleep: a futex wake-up);
- ``chip``: the region placed in SRAM4 with both cores attached (power-domain checks, the CM4's
  reads checked against the CM7's dirty map), no cache model;
- ``cache``: the same with the CM7's D-cache model on and the MPU making SRAM4 non-cacheable
  (a blocked CM7 reading a *cached* index would spin on a stale copy for ever, as on the chip, so a
  blocking benchmark needs the coherent configuration).

Usage: ``python benchmarks/bench_cache.py [--messages N] [--cases plain,chip,cache] [--ops]``; ``--ops``
adds the per-call cost of the plain path in one process (a try_send + try_receive pair, best of 5),
the figure to compare before and after a change to the fast path. It prints the
median round trip of each case and its ratios to ``plain`` and ``nospin``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from typing import Any

from ampipc import MessageBuffer, Region

SRAM4 = 0x38000000
SIZE = 64 * 1024
PAYLOAD = b"x" * 64


def _region(case: str, name: str) -> Region:
    if case in ("plain", "nospin"):
        return Region.create(name, SIZE)
    region = Region.create(name, SIZE, chip="stm32h745", memory="SRAM4", core="CM7", cache_model=case == "cache")
    if case == "cache":
        from ampipc.hw.cache import Mpu

        Mpu(region).configure_region(SRAM4, SIZE, cacheable=False, shareable=True)
    return region


def _cpus() -> tuple[int, int] | None:
    """Two CPUs to pin the two cores to (one process per CPU, as on the chip); None on one CPU."""
    usable = sorted(os.sched_getaffinity(0))
    return (usable[0], usable[1]) if len(usable) >= 2 else None


def _echo(name: str, case: str, messages: int, cpu: int | None = None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    region = Region.attach(name) if case in ("plain", "nospin") else Region.attach(name, core="CM4")
    with region:
        rx = MessageBuffer.attach(region, "ping")
        tx = MessageBuffer.attach(region, "pong")
        if case == "nospin":
            rx.spin = tx.spin = 0.0
        for _ in range(messages):
            tx.send(rx.receive(timeout=60), timeout=60)


def measure(case: str, messages: int) -> float:
    """Median round trip (seconds) over blocks of `messages` // 10."""
    name = f"bench-cache-{case}-{os.getpid()}"
    allowed = os.sched_getaffinity(0)
    region = _region(case, name)
    ctx = multiprocessing.get_context("spawn")
    child = None
    try:
        ping = MessageBuffer.create(region, "ping", 1024)
        pong = MessageBuffer.create(region, "pong", 1024)
        if case == "nospin":
            ping.spin = pong.spin = 0.0
        cpus = _cpus()
        child = ctx.Process(target=_echo, args=(name, case, messages, None if cpus is None else cpus[1]), daemon=True)
        child.start()
        if cpus is not None:  # the VM's round trips are bimodal unpinned: fix the placement
            os.sched_setaffinity(0, {cpus[0]})
        block = max(messages // 10, 1)
        samples = []
        done = 0
        while done < messages:
            n = min(block, messages - done)
            start = time.perf_counter()
            for _ in range(n):
                ping.send(PAYLOAD, timeout=60)
                pong.receive(timeout=60)
            samples.append((time.perf_counter() - start) / n)
            done += n
        child.join(60)
        return statistics.median(samples[1:] or samples)
    finally:
        os.sched_setaffinity(0, allowed)
        if child is not None and child.is_alive():
            child.terminate()
            child.join(5)
        region.close()


def plain_ops(pairs: int = 200_000) -> float:
    """Seconds per try_send + try_receive of 64 bytes on a plain region, one process (best of 5)."""
    region = Region.create(f"bench-cache-ops-{os.getpid()}", SIZE)
    try:
        buffer = MessageBuffer.create(region, "b", 1024)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(pairs):
                buffer.try_send(PAYLOAD)
                buffer.try_receive()
            best = min(best, (time.perf_counter() - start) / pairs)
        return best
    finally:
        region.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The round trip of every case (the median of three turns through all) and its ratio to ``plain``
    (for ``run_all.py``)."""
    messages, turns = (4000, 1) if quick else (20000, 3)
    samples: dict[str, list[float]] = {case: [] for case in ("plain", "nospin", "chip", "cache")}
    for _ in range(turns):  # in turns, so the VM's bimodal placements and drift fall on every case
        for case in samples:
            samples[case].append(measure(case, messages))
    results = {case: statistics.median(values) for case, values in samples.items()}
    rows: list[dict[str, Any]] = [{"measure": "plain try_send + try_receive pair, one process", "us": plain_ops() * 1e6,
                                   "vs_plain": "-"}]
    for case, rtt in results.items():
        rows.append({"measure": f"{case}: 64 B round trip", "us": rtt * 1e6, "vs_plain": f"{rtt / results['plain']:.2f}x"})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--cases", default="plain,nospin,chip,cache")
    parser.add_argument("--ops", action="store_true", help="also the plain path's per-call cost in one process")
    args = parser.parse_args(argv)
    if args.ops:
        print(f"plain try_send + try_receive, one process: {plain_ops() * 1e9:.1f} ns")
    results: dict[str, Any] = {}
    for case in args.cases.split(","):
        results[case] = measure(case, args.messages)
    base, slow = results.get("plain"), results.get("nospin")
    for case, rtt in results.items():
        ratio = f"  {rtt / base:7.2f}x plain" if base else ""
        ratio += f"  {rtt / slow:5.2f}x nospin" if slow else ""
        print(f"{case:6s} 64 B round trip {rtt * 1e6:8.2f} us{ratio}")


if __name__ == "__main__":
    main()
