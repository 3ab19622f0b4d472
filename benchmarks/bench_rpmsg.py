"""RPMsg echo benchmark, ampipc against ampipc, two processes, on both transports.

For each transport a spawn-context child plays the echo device (``run_region_echo_device`` over an
ampipc Region with the futex doorbell; ``run_echo_device`` over OpenAMP's Linux transport, shm
file + UNIX socket) and this process plays the driver, single-threaded (``io_thread=False``):

- round trip: send one payload, wait for its echo; each round trip is timed with
  ``perf_counter_ns`` after a warm-up; median and 99th percentile in microseconds;
- messages/s: echoes completed per second with up to ``WINDOW`` messages in flight.

Every echo is compared with what was sent, so a broken link cannot look fast.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from ampipc import Region
from ampipc.rpmsg import DEMO_CHANNEL, RpmsgDevice, open_linux, open_region
from ampipc.rpmsg.echo import run_echo_device, run_region_echo_device

WINDOW = 32


def _linux_child(shm: str, sock: str) -> None:
    raise SystemExit(run_echo_device(shm_name=shm, socket_path=sock, open_timeout=60, out=lambda s: None))


def _region_child(region_name: str) -> None:
    raise SystemExit(run_region_echo_device(region_name, "bench", DEMO_CHANNEL))


def _measure(device: RpmsgDevice, size: int, round_trips: int, streamed: int) -> dict[str, Any]:
    ept = device.create_endpoint(DEMO_CHANNEL)
    ept.wait_bound(60)
    data = bytes(range(256)) * 2
    msg = data[:size]
    for _ in range(200):
        ept.send(msg)
        assert ept.receive(30) == msg
    samples = []
    for _ in range(round_trips):
        t0 = time.perf_counter_ns()
        ept.send(msg)
        echo = ept.receive(30)
        samples.append(time.perf_counter_ns() - t0)
        if echo != msg:
            raise RuntimeError("echo differs")
    samples.sort()
    in_flight = 0
    sent = received = 0
    t0 = time.perf_counter()
    while received < streamed:
        while in_flight < WINDOW and sent < streamed and ept.try_send(msg):
            sent += 1
            in_flight += 1
        if ept.receive(30) != msg:
            raise RuntimeError("echo differs")
        received += 1
        in_flight -= 1
    elapsed = time.perf_counter() - t0
    ept.destroy()
    return {
        "payload_bytes": size,
        "round_trip_us_median": statistics.median(samples) / 1000,
        "round_trip_us_p99": samples[min(len(samples) - 1, int(0.99 * len(samples)))] / 1000,
        "msgs_per_s": streamed / elapsed,
    }


def _run_region(size: int, n_rt: int, n_stream: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    name = f"ampipc-bench-rpmsg-{os.getpid()}"
    with Region.create(name, 1 << 20, replace_stale=True) as region:
        child = ctx.Process(target=_region_child, args=(name,), daemon=True)
        child.start()
        try:
            with open_region(region, "bench", "driver", create=True, io_thread=False) as device:
                row = _measure(device, size, n_rt, n_stream)
            child.join(30)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
    return {"transport": "region (futex doorbell)", **row}


def _run_linux(size: int, n_rt: int, n_stream: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    shm = f"ampipc-bench-oa-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="ampipc-bench-", dir="/tmp")
    sock = os.path.join(tmp, "event.0")
    child = ctx.Process(target=_linux_child, args=(shm, sock), daemon=True)
    child.start()
    try:
        with open_linux("driver", shm_name=shm, socket_path=sock, io_thread=False) as device:
            row = _measure(device, size, n_rt, n_stream)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        for path in (f"/dev/shm/{shm}", sock):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.rmdir(tmp)
    return {"transport": "openamp-linux (shm + socket)", **row}


def run(quick: bool = False) -> list[dict[str, Any]]:
    n_rt, n_stream = (500, 2000) if quick else (5000, 20000)
    rows = []
    for size in (64, 496):
        rows.append(_run_region(size, n_rt, n_stream))
        rows.append(_run_linux(size, n_rt, n_stream))
    return rows


def main() -> int:
    rows = run(quick="--quick" in sys.argv)
    print(f"{'transport':32} {'bytes':>5} {'rtt median us':>14} {'rtt p99 us':>11} {'msgs/s':>9}")
    for r in rows:
        print(
            f"{r['transport']:32} {r['payload_bytes']:5d} {r['round_trip_us_median']:14.1f} "
            f"{r['round_trip_us_p99']:11.1f} {r['msgs_per_s']:9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
