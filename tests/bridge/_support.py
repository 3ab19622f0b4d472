"""Helpers and child-process targets of the bridge tests (module level, so spawn can import them).

Every Zenoh session here listens or connects on tcp/127.0.0.1 with a port the test chose, with
multicast scouting and gossip off (`ampipc.bridge.session_config`): nothing else is contacted.
Messages carry their sequence number and a payload derived from it, so a reader detects a lost,
reordered, duplicated or torn message.
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
import sys
import threading
import time
import zlib
from typing import Any

from ampipc import MessageBuffer, PeerDied, Region

__all__ = ["GENEROUS", "free_endpoint", "make_message", "check_message", "send_all", "run_cli", "host_b"]

GENEROUS = 60.0  # seconds: bound of every blocking call in these tests, never a timing assertion
_HEAD = struct.Struct("<QI")  # sequence number, CRC-32 of the payload


def free_endpoint() -> str:
    """A Zenoh endpoint on a free loopback port (bound, read back, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{s.getsockname()[1]}"


def make_message(seq: int, size: int | None = None) -> bytes:
    """Message `seq`: its number, a CRC of the payload, and a payload of `size` bytes (default 0..199) from `seq`."""
    length = seq % 200 if size is None else size
    unit = seq.to_bytes(8, "little")
    payload = (unit * (length // 8 + 1))[:length]
    return _HEAD.pack(seq, zlib.crc32(payload)) + payload


def check_message(data: bytes, expected_seq: int | None = None, size: int | None = None) -> int:
    """The sequence number of a well-formed message; AssertionError if torn or not `expected_seq`."""
    seq, crc = _HEAD.unpack_from(data)
    assert data == make_message(seq, size), f"message {seq} is corrupt ({len(data)} bytes)"
    if expected_seq is not None:
        assert seq == expected_seq, f"expected message {expected_seq}, got {seq}"
    return int(seq)


def send_all(
    buffer: MessageBuffer, count: int, size: int | None = None, *, pause_at: int | None = None,
    resume: threading.Event | None = None,
) -> None:
    """Send messages 0..count-1; a send refused because the bridge died is retried (it sent nothing).

    With `pause_at` and `resume`: stop before message `pause_at` until `resume` is set (so a test
    can act in the middle of the stream however fast the machine is).
    """
    for seq in range(count):
        if seq == pause_at and resume is not None:
            resume.wait(GENEROUS)
        message = make_message(seq, size)
        deadline = time.monotonic() + GENEROUS
        while True:
            try:
                buffer.send(message, timeout=GENEROUS)
                break
            except PeerDied:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the reading bridge died; a restarted one takes the role over


def run_cli(argv: list[str]) -> None:
    """Child target: the ``ampipc`` command line in this process; exits with its status."""
    from ampipc.cli import main

    sys.exit(main(argv))


def host_b(
    region_name: str,
    endpoint: str,
    key_in: str,
    key_out: str,
    count_in: int,
    count_out: int,
    results: Any,
    go: Any,
    done: Any,
    progress: Any,
    size: int | None = None,
    buffer_size: int = 1 << 16,
    fifo_capacity: int = 256,
    slow: bool = False,
    listen: bool = False,
) -> None:
    """Child target: host B, its own region and bridge, connected to host A only through Zenoh.

    Imports `key_in` into buffer ``in``, exports buffer ``out`` on `key_out`; sends `count_out`
    messages, and once `go` is set receives until message `count_in - 1`, checking each. Reports
    a dict on `results`, then keeps the bridge up until `done` is set (host A may still receive).
    """
    from ampipc.bridge import ZenohBridge, open_session

    report: dict[str, Any] = {"ok": False}
    region = Region.create(region_name, 1 << 22)
    try:
        inbox = MessageBuffer.create(region, "in", buffer_size)
        outbox = MessageBuffer.create(region, "out", max(buffer_size, 1 << 16))
        session = open_session(**({"listen": [endpoint]} if listen else {"connect": [endpoint]}))
        bridge = ZenohBridge(region, session, name="b", fifo_capacity=fifo_capacity)
        try:
            bridge.import_(key_in, inbox)
            if count_out:
                bridge.export(outbox, key_out)
            producer = threading.Thread(target=send_all, args=(outbox, count_out), daemon=True)
            producer.start()
            if not go.wait(GENEROUS):
                raise TimeoutError("host A never said go")
            received: list[int] = []
            ordered = True
            while not received or received[-1] != count_in - 1:
                seq = check_message(inbox.receive(timeout=GENEROUS), None, size)
                if received and seq <= received[-1]:
                    ordered = False
                received.append(seq)
                progress.value = len(received)
                if slow and len(received) % 8 == 0:
                    time.sleep(0.002)
            producer.join(GENEROUS)
            report.update(
                ok=True, received=len(received), ordered=ordered, exact=received == list(range(count_in)),
                sent=count_out if not producer.is_alive() else -1, first=received[0],
            )
            results.put(report)
            done.wait(GENEROUS)
        finally:
            bridge.close()
            route_stats = bridge.statistics().routes
            session.close()
            report["routes"] = [(r.direction, r.messages, r.drops, r.lost, r.peer_losses) for r in route_stats]
            results.put(report)
    except BaseException as e:
        report["error"] = f"{type(e).__name__}: {e}"
        results.put(report)
        raise
    finally:
        region.close()


def spawn_host_b(spawn: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Start `host_b`; returns (process, results queue, go event, done event, progress value)."""
    ctx: multiprocessing.context.SpawnContext = spawn.ctx
    results, go, done, progress = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    proc = spawn(host_b, *args, results, go, done, progress, **kwargs)
    return proc, results, go, done, progress
