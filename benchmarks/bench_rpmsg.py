"""RPMsg echo benchmark, ampipc against ampipc, two processes, on both transports.

For each transport a spawn-context child plays the echo device (``run_region_echo_device`` over an
ampipc Region with the futex doorbell; ``run_echo_device`` over OpenAMP's Linux transport, shm
file + UNIX socket) and this process plays the driver, single-threaded (``io_thread=False``):

- round trip: send one payload, wait for its echo; each round trip is timed with
  ``perf_counter_ns`` after a warm-up; median and 99th percentile in microseconds;
- messages/s: echoes completed per second with up to ``WINDOW`` messages in flight.

The Region transport runs twice, on the C fast path (``ampipc._vring``, the default) and on the
pure-Python reference (``AMPIPC_RPMSG_PURE=1``, passed to the child through its environment).
In the same run, a MessageBuffer pair in a Region (a spawn child echoing, both sides with the
default spin) gives the reference round trip; each RPMsg row carries its ratio to it
(``vs MessageBuffer``; target for the Region transport: <= 2x).

The floor of the Region transport is measured too: the same two processes, each side past the
start-up making only the C calls a round trip needs (the transmit ring's send, which rings the
doorbell; the doorbell's wait; the receive ring's poll, which queues the message), with no endpoint
layer around them; what the full row adds to it is the Python endpoint layer.

The protocol core alone is measured too, without processes or doorbells: a driver and a device
``RpmsgVirtio`` over one byte image in this process, a message down and its echo back per round
trip, on the C path and on the pure-Python reference (the cost the fast path removes).

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

from collections.abc import Iterator
from contextlib import contextmanager

from ampipc import MessageBuffer, Region
from ampipc.rpmsg import DEMO_CHANNEL, RpmsgDevice, open_linux, open_region
from ampipc.rpmsg._window import Window
from ampipc.rpmsg._wire import RPMSG_NS_ADDR
from ampipc.rpmsg.echo import run_echo_device, run_region_echo_device
from ampipc.rpmsg.rpmsg_virtio import Role, RpmsgVirtio
from ampipc.rpmsg.transports import FutexDoorbell, demo_table
from ampipc.rpmsg.virtqueue import PURE_PATH_ENV

WINDOW = 32


def _linux_child(shm: str, sock: str) -> None:
    raise SystemExit(run_echo_device(shm_name=shm, socket_path=sock, open_timeout=60, out=lambda s: None))


def _region_child(region_name: str) -> None:
    raise SystemExit(run_region_echo_device(region_name, "bench", DEMO_CHANNEL))


def _run_core(size: int, fast: bool, round_trips: int) -> dict[str, Any]:
    """Both protocol cores in this process over one byte image: the per-round-trip protocol cost."""
    mem = bytearray(0x80000)
    Window(mem).write(0, demo_table())
    drv = RpmsgVirtio(Window(mem), Role.DRIVER, pool_offset=0x10000, pool_size=0x40000, fast=fast)
    dev = RpmsgVirtio(Window(mem), Role.DEVICE, pool_offset=0x10000, pool_size=0x40000, fast=fast)
    drv.start_driver()
    assert dev.device_ready()
    dev.start_device()
    msg = (bytes(range(256)) * 2)[:size]
    per_round_trip = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(round_trips):
            drv.try_send(0x400, 0x400, msg)
            (down,) = dev.poll()
            dev.try_send(0x400, 0x400, down.payload)  # type: ignore[union-attr]
            (up,) = drv.poll()
        per_round_trip.append((time.perf_counter_ns() - t0) / round_trips)
        if up.payload != msg:  # type: ignore[union-attr]
            raise RuntimeError("echo differs")
    return {
        "transport": "protocol core only, C path" if fast else "protocol core only, pure Python",
        "payload_bytes": size,
        "round_trip_us_median": statistics.median(per_round_trip) / 1000,
        "round_trip_us_p99": max(per_round_trip) / 1000,
    }


def _buffer_child(region_name: str) -> None:
    with Region.attach(region_name) as region:
        into = MessageBuffer.attach(region, "to-echo")
        out = MessageBuffer.attach(region, "from-echo")
        while True:
            data = into.receive(60)
            if not data:
                return
            out.send(data, 60)


def _run_message_buffer(size: int, n_rt: int) -> dict[str, Any]:
    """The reference: one message buffer each way, a child echoing, timed like the RPMsg rows."""
    ctx = mp.get_context("spawn")
    name = f"ampipc-bench-mb-{os.getpid()}"
    with Region.create(name, 1 << 20, replace_stale=True) as region:
        out = MessageBuffer.create(region, "to-echo", 16384)
        into = MessageBuffer.create(region, "from-echo", 16384)
        child = ctx.Process(target=_buffer_child, args=(name,), daemon=True)
        child.start()
        try:
            msg = (bytes(range(256)) * 2)[:size]
            for _ in range(200):
                out.send(msg, 30)
                assert into.receive(30) == msg
            samples = []
            for _ in range(n_rt):
                t0 = time.perf_counter_ns()
                out.send(msg, 30)
                echo = into.receive(30)
                samples.append(time.perf_counter_ns() - t0)
                if echo != msg:
                    raise RuntimeError("echo differs")
            out.send(b"", 30)
            child.join(30)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
    return {"transport": "MessageBuffer pair (reference)", "payload_bytes": size, **_round_trips(samples)}


def _round_trips(samples_ns: list[int]) -> dict[str, float]:
    """Median and 99th percentile, in microseconds, of round trips timed in nanoseconds."""
    samples_ns.sort()
    return {
        "round_trip_us_median": statistics.median(samples_ns) / 1000,
        "round_trip_us_p99": samples_ns[min(len(samples_ns) - 1, int(0.99 * len(samples_ns)))] / 1000,
    }


@contextmanager
def _path(fast: bool) -> Iterator[None]:
    """The RPMsg path of this process and of the children it starts meanwhile."""
    old = os.environ.get(PURE_PATH_ENV)
    os.environ[PURE_PATH_ENV] = "0" if fast else "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ[PURE_PATH_ENV]
        else:
            os.environ[PURE_PATH_ENV] = old


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
    in_flight = 0
    sent = received = 0
    started = time.perf_counter()
    while received < streamed:
        while in_flight < WINDOW and sent < streamed and ept.try_send(msg):
            sent += 1
            in_flight += 1
        if ept.receive(30) != msg:
            raise RuntimeError("echo differs")
        received += 1
        in_flight -= 1
    elapsed = time.perf_counter() - started
    ept.destroy()
    return {"payload_bytes": size, **_round_trips(samples), "msgs_per_s": streamed / elapsed}


def _run_region(size: int, n_rt: int, n_stream: int, fast: bool = True) -> dict[str, Any]:
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
    label = "region (futex doorbell)" if fast else "region (futex doorbell), pure Python"
    return {"transport": label, **row}


def _ring_calls(device: RpmsgDevice, ept: Any) -> tuple[Any, Any, Any, int, Any, Any]:
    """The C objects under a started, bound endpoint: what the floor row calls directly."""
    core = device._core  # noqa: SLF001 - the floor measures the layer under the public API
    bell = device._doorbell  # noqa: SLF001
    assert isinstance(bell, FutexDoorbell) and core._fast_tx is not None and core._fast_rx is not None  # noqa: SLF001
    return core._fast_tx, core._fast_rx, bell.native, core.buffer_size, device._endpoints.direct, ept._queue  # noqa: SLF001


def _floor_child(region_name: str, n: int) -> None:
    with Region.attach(region_name) as region:
        with open_region(region, "floor", "device", create=False, io_thread=False) as device:
            ept = device.create_endpoint(DEMO_CHANNEL)
            while not (ept.is_bound and device._endpoints.direct):  # noqa: SLF001 - bound by the first message
                device.poll(0.01)
            tx, rx, bell, size, direct, queue = _ring_calls(device, ept)
            addr = ept.addr
            for _ in range(n):
                while not queue:
                    bell.wait(1.0)
                    rx.rx_batch(size, RPMSG_NS_ADDR, direct)
                src, data = queue.popleft()
                tx.tx_send(addr, src, data, bell)
            ept.wait_unbound(60)


def _run_floor(size: int, n_rt: int) -> dict[str, Any]:
    """Round trips of the bare C calls across two processes (see the module docstring)."""
    ctx = mp.get_context("spawn")
    name = f"ampipc-bench-floor-{os.getpid()}"
    warm = 200
    with Region.create(name, 1 << 20, replace_stale=True) as region:
        child = ctx.Process(target=_floor_child, args=(name, warm + n_rt), daemon=True)
        child.start()
        try:
            with open_region(region, "floor", "driver", create=True, io_thread=False) as device:
                ept = device.create_endpoint(DEMO_CHANNEL)
                ept.wait_bound(60)
                tx, rx, bell, bsize, direct, queue = _ring_calls(device, ept)
                msg = (bytes(range(256)) * 2)[:size]
                addr, dest = ept.addr, ept.dest
                samples = []
                for i in range(warm + n_rt):
                    t0 = time.perf_counter_ns()
                    if not tx.tx_send(addr, dest, msg, bell)[0]:
                        raise RuntimeError("no transmit buffer")
                    while not queue:
                        bell.wait(1.0)
                        rx.rx_batch(bsize, RPMSG_NS_ADDR, direct)
                    echo = queue.popleft()[1]
                    if i >= warm:
                        samples.append(time.perf_counter_ns() - t0)
                    if echo != msg:
                        raise RuntimeError("echo differs")
                ept.destroy()
            child.join(30)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
    return {"transport": "region, ring calls only (floor)", "payload_bytes": size, **_round_trips(samples)}


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
        reference = _run_message_buffer(size, n_rt)
        with _path(True):
            measured = [_run_region(size, n_rt, n_stream), _run_floor(size, n_rt), _run_linux(size, n_rt, n_stream)]
        with _path(False):
            measured.append(_run_region(size, n_rt, n_stream, fast=False))
        for row in measured:
            row["vs MessageBuffer"] = row["round_trip_us_median"] / reference["round_trip_us_median"]
        rows += [*measured, reference]
    for size in (64, 496):
        rows += [_run_core(size, True, n_rt), _run_core(size, False, n_rt)]
    return rows


def main() -> int:
    rows = run(quick="--quick" in sys.argv)
    print(f"{'transport':38} {'bytes':>5} {'rtt median us':>14} {'rtt p99 us':>11} {'msgs/s':>9} {'vs MessageBuffer':>17}")
    for r in rows:
        rate = f"{r['msgs_per_s']:9.0f}" if "msgs_per_s" in r else f"{'-':>9}"
        if "vs MessageBuffer" in r:
            ratio = f"{r['vs MessageBuffer']:16.2f}x"
        else:
            ratio = f"{'1.00x' if r['transport'].startswith('MessageBuffer') else '-':>17}"
        print(
            f"{r['transport']:38} {r['payload_bytes']:5d} {r['round_trip_us_median']:14.1f} "
            f"{r['round_trip_us_p99']:11.1f} {rate} {ratio}"
        )
    cores = {(r["transport"], r["payload_bytes"]): r["round_trip_us_median"] for r in rows}
    for size in (64, 496):
        fast, pure = cores[("protocol core only, C path", size)], cores[("protocol core only, pure Python", size)]
        print(f"protocol core, {size} B: C path {fast:.1f} us, pure Python {pure:.1f} us per round trip ({pure / fast:.1f}x)")
    for r in rows:
        if r["transport"] == "region (futex doorbell)":
            verdict = "met" if r["vs MessageBuffer"] <= 2.0 else "NOT met"
            print(
                f"target RPMsg over a Region <= 2x MessageBuffer round trip, {r['payload_bytes']} B: "
                f"{r['vs MessageBuffer']:.2f}x ({verdict})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
