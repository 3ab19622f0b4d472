"""Demo: frames from a CM4 on "host A" reach a consumer on "host B", joined only through Zenoh.

Host A is this process (the CM7: it creates region A, releases the CM4's boot and runs host A's
bridge) and a CM4 child that produces numbered sensor frames into the message buffer ``frames``.
Host B is another process with its own region B, its own bridge and a consumer. The two bridges
meet only through Zenoh on 127.0.0.1 (host B listens on a free port, host A dials it; no
scouting). The consumer checks every frame's number and checksum; the demo exits 0 only if every
frame arrived, whole and in order.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from ..buffers import MessageBuffer
from ..hw import Hardware
from ..hw.boot import cm7_release_boot
from ..region import Region
from ._common import CHILD_TIMEOUT, Timeline, cm4_booted, print_summary, region_name, run_pair

__all__ = ["run", "FRAMES"]

FRAMES = 10_000
_FRAME = struct.Struct("<IQ8fI")  # number, CM4 timestamp (ns), 8 sensor values, CRC-32 of what precedes
_REPORT_EVERY = 2_500


def _frame(number: int) -> bytes:
    values = [((number * 7 + k) % 1000) / 10.0 for k in range(8)]
    head = struct.pack("<IQ8f", number, time.monotonic_ns(), *values)
    return head + struct.pack("<I", zlib.crc32(head))


def _check(data: bytes) -> int | None:
    """The frame's number, or None if it is torn or its values are not the ones frame `number` carries."""
    if len(data) != _FRAME.size:
        return None
    number, _, *rest = _FRAME.unpack(data)
    crc = rest[-1]
    if zlib.crc32(data[:-4]) != crc:
        return None
    return int(number)


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{s.getsockname()[1]}"


def _cm4(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"produced": 0}
    with cm4_booted(region_name, counts, results) as hw:
        frames = MessageBuffer.attach(hw.region, "frames")
        say("boot released; producing frames into 'frames'")
        for number in range(FRAMES):
            frames.send(_frame(number), timeout=CHILD_TIMEOUT)
            counts["produced"] += 1
            if (number + 1) % _REPORT_EVERY == 0:
                say(f"produced {number + 1} frames")


def _host_b(name: str, endpoint: str, key: str, origin: float, quiet: bool, results: Any) -> None:
    """Host B: its own region and bridge; the consumer checks every frame."""
    from ..bridge import ZenohBridge, open_session
    from ..bridge.session import close_session

    say = Timeline("B", origin, quiet)
    counts: dict[str, Any] = {"received": 0, "in order": 0, "bad": 0}
    try:
        with Region.create(name, 1 << 20) as region:
            inbox = MessageBuffer.create(region, "frames", 1 << 14)
            session = open_session(listen=[endpoint])
            try:
                bridge = ZenohBridge(region, session, name="hostB")
                try:
                    route = bridge.import_(key, "frames")
                    say(f"region {name!r}; bridge listening on {endpoint}, importing {key!r}")
                    results.put({"ready": True})
                    expected = 0
                    started = None
                    while counts["received"] < FRAMES:
                        data = inbox.receive(timeout=CHILD_TIMEOUT)
                        started = started or time.monotonic()
                        counts["received"] += 1
                        number = _check(data)
                        if number is None:
                            counts["bad"] += 1
                        elif number == expected:
                            counts["in order"] += 1
                        expected = (number if number is not None else expected) + 1
                        if counts["received"] % _REPORT_EVERY == 0:
                            say(f"received {counts['received']} frames")
                    counts["seconds"] = time.monotonic() - (started or time.monotonic())
                    stats = route.statistics()
                    counts.update(lost=stats.lost, drops=stats.drops, lag_ms=stats.lag_ns_max / 1e6,
                                  peer_losses=stats.peer_losses)
                finally:
                    bridge.close()
            finally:
                close_session(session)
    except BaseException as e:  # noqa: BLE001 - reported to host A, which prints it
        counts["error"] = repr(e)
    results.put(counts)


def _cm7_with(quiet: bool) -> Callable[[Region, Timeline, Callable[[], None]], dict[str, Any]]:
    def cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
        from ..bridge import ZenohBridge, open_session
        from ..bridge.session import close_session

        counts: dict[str, Any] = {}
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        endpoint = _free_endpoint()
        key = f"ampipc/demo/{os.getpid()}/frames"
        host_b = ctx.Process(target=_host_b, args=(region_name("bridge-b"), endpoint, key, say.origin, quiet, results),
                             name="bridge-host-B", daemon=True)
        hw = Hardware.create(region)
        try:
            MessageBuffer.create(region, "frames", 1 << 14)
            host_b.start()
            ready = results.get(timeout=CHILD_TIMEOUT)
            if "error" in ready:
                return {"host B": ready}
            session = open_session(connect=[endpoint])
            try:
                bridge = ZenohBridge(region, session, name="hostA")
                try:
                    route = bridge.export("frames", key)
                    route.wait_peer(CHILD_TIMEOUT)
                    say(f"host A's bridge dialled {endpoint}; exporting 'frames' on {key!r}; releasing the CM4")
                    start_cm4()
                    cm7_release_boot(hw)
                    counts["host B"] = results.get(timeout=CHILD_TIMEOUT * 2)
                    counts["bridged"] = route.statistics().messages
                finally:
                    bridge.close()
            finally:
                close_session(session)
            host_b.join(CHILD_TIMEOUT)
            counts["host B exit code"] = host_b.exitcode
            return counts
        finally:
            if host_b.pid is not None and host_b.is_alive():
                host_b.terminate()
                host_b.join(5)
                if host_b.is_alive():
                    host_b.kill()
                    host_b.join(5)
            results.close()
            results.join_thread()
            hw.close()

    return cm7


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 only if every frame crossed to host B whole and in order."""
    try:
        import zenoh  # noqa: F401
    except ModuleNotFoundError:
        print("the bridge demo needs Eclipse Zenoh: pip install 'ampipc[zenoh]'")
        return 2
    host_a, cm4 = run_pair("bridge", 1 << 20, _cm7_with(quiet), _cm4, quiet=quiet)
    b: dict[str, Any] = host_a.get("host B", {})
    ok = (
        cm4.get("produced") == FRAMES
        and host_a.get("bridged") == FRAMES
        and b.get("received") == FRAMES
        and b.get("in order") == FRAMES
        and b.get("bad") == 0
        and b.get("lost") == 0
        and b.get("drops") == 0
        and cm4.get("exit code") == 0
        and host_a.get("host B exit code") == 0
        and "error" not in cm4
        and "error" not in b
    )
    seconds = b.get("seconds") or 0.0
    rows: dict[str, object] = {
        "frames produced by the CM4 (host A)": cm4.get("produced"),
        "frames published by host A's bridge": host_a.get("bridged"),
        "frames received on host B": b.get("received"),
        "in order and intact": b.get("in order"),
        "torn or corrupt": b.get("bad"),
        "lost / dropped (bridge counters)": f"{b.get('lost')} / {b.get('drops')}",
        "frames per second on host B": f"{FRAMES / seconds:,.0f}" if seconds else "-",
        "largest lag, publication -> host B buffer": f"{b.get('lag_ms', 0.0):.1f} ms",
    }
    for side, counts in (("CM4", cm4), ("host B", b)):
        if "error" in counts:
            rows[f"{side} error"] = counts["error"]
    print_summary("bridge", rows, ok, quiet=quiet)
    return 0 if ok else 1
