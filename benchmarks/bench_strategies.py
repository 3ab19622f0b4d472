"""Notification strategies compared: round trip and messages/s over one channel and over 16 at once.

Two real processes (the CM7 here, the CM4 spawned). Round trip: the CM7 sends one message on every
channel, the CM4 echoes each, the CM7 waits for all echoes; the time per message is the round's time
divided by the channel count. Throughput: the CM7 streams messages round-robin over the channels, the
CM4 counts them and answers once. Every figure is the median of three turns through all strategies. ``hop_cost_vs_direct`` is the strategy's median round trip over the
direct strategy's at the same channel count: the cost of the interrupt hop. The hsem strategy cannot
serve 16 channels (32 semaphores, 4 per channel): its "16" row uses the most it can, 7.

Run: ``python benchmarks/bench_strategies.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

from ampipc import Region
from ampipc.ipc import Ipc
from ampipc.notify import STRATEGIES

__all__ = ["run"]

_TIMEOUT = 60.0
_PAYLOAD = b"x" * 32


def _echo(region_name: str, rounds: int, stream: int, results: Any) -> None:
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            n = ipc.channels
            for _ in range(rounds):
                for c in range(n):
                    ipc.send(c, ipc.receive(c, timeout=_TIMEOUT), timeout=_TIMEOUT)
            for k in range(stream):
                ipc.receive(k % n, timeout=_TIMEOUT)
            ipc.send(0, b"done", timeout=_TIMEOUT)
        results.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put(repr(e))


def _measure(strategy: str, channels: int, rounds: int, stream: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    name = f"ampipc-bench-{os.getpid()}-{strategy}-{channels}"
    with (
        Region.create(name, 1 << 20, replace_stale=True) as region,
        Ipc.init(region, channels=channels, buffer_size=640, strategy=strategy) as ipc,
    ):
        ipc.start()
        child = ctx.Process(target=_echo, args=(region.name, rounds, stream, results), daemon=True)
        child.start()
        try:
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for c in range(channels):
                    ipc.send(c, _PAYLOAD, timeout=_TIMEOUT)
                for c in range(channels):
                    ipc.receive(c, timeout=_TIMEOUT)
                samples.append((time.perf_counter() - t0) / channels)
            t0 = time.perf_counter()
            for k in range(stream):
                ipc.send(k % channels, _PAYLOAD, timeout=_TIMEOUT)
            ipc.receive(0, timeout=_TIMEOUT)
            elapsed = time.perf_counter() - t0
            outcome = results.get(timeout=_TIMEOUT)
            child.join(_TIMEOUT)
            if outcome != "ok":
                raise RuntimeError(f"the CM4 side of {strategy}/{channels} failed: {outcome}")
        finally:
            if child.is_alive():
                child.kill()
            child.join(5)
            results.close()
            results.join_thread()
    samples.sort()
    return {
        "strategy": strategy,
        "channels": channels,
        "round_trip_us_median": statistics.median(samples) * 1e6,
        "round_trip_us_p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6,
        "msgs_per_s": stream / elapsed,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure every strategy at 1 and 16 channels (hsem: 7); rows as in the module docstring.

    The strategies are measured in turn, ``repeats`` times over (3; 1 with ``quick``), and each
    figure is the median of its repeats: the machine's drift during the run falls on all alike.
    """
    rounds, stream, repeats = (300, 5_000, 1) if quick else (3_000, 50_000, 3)
    rows = []
    for wanted in (1, 16):
        samples: dict[str, list[dict[str, Any]]] = {strategy: [] for strategy in STRATEGIES}
        for _ in range(repeats):
            for strategy in STRATEGIES:
                channels = min(wanted, 7) if strategy == "hsem" else wanted
                samples[strategy].append(_measure(strategy, channels, rounds, stream))
        group = []
        for runs in samples.values():
            row = dict(runs[0])
            for key in ("round_trip_us_median", "round_trip_us_p99", "msgs_per_s"):
                row[key] = statistics.median(r[key] for r in runs)
            group.append(row)
        direct = next(r for r in group if r["strategy"] == "direct")["round_trip_us_median"]
        for r in group:
            r["hop_cost_vs_direct"] = r["round_trip_us_median"] / direct
        rows.extend(group)
    return rows


def main(argv: list[str]) -> int:
    rows = run(quick="--quick" in argv)
    print(
        f"{'strategy':<9} {'channels':>8} {'rtt median us':>14} {'rtt p99 us':>11} {'msgs/s':>10} {'hop vs direct':>14}"
    )
    for r in rows:
        print(
            f"{r['strategy']:<9} {r['channels']:>8} {r['round_trip_us_median']:>14.1f} {r['round_trip_us_p99']:>11.1f} "
            f"{r['msgs_per_s']:>10.0f} {r['hop_cost_vs_direct']:>14.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
