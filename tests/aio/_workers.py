"""Code the spawned peer processes of the asyncio tests run (synchronous, importable by spawn)."""

from __future__ import annotations

import random
import time
from typing import Any

from ampipc import MessageBuffer, Region, StreamBuffer
from ampipc.ipc import Ipc

TIMEOUT = 60.0


def numbered(buffer: int, k: int) -> bytes:
    return b"%d:%d:" % (buffer, k) + bytes([k & 0xFF]) * (k % 11)


def send_numbered(
    region_name: str, names: list[str], per_buffer: int, seed: int, start: Any = None, hold: Any = None
) -> None:
    """`per_buffer` numbered messages to every buffer, in a random interleaving, pausing now and then.

    With `hold` (an event), the region stays attached after the last send until the event is set.
    """
    rng = random.Random(seed)
    with Region.attach(region_name) as region:
        bufs = [MessageBuffer.attach(region, n) for n in names]
        if start is not None:
            start.wait(TIMEOUT)
        order = [i for i in range(len(bufs)) for _ in range(per_buffer)]
        rng.shuffle(order)
        next_k = [0] * len(bufs)
        for n, i in enumerate(order):
            bufs[i].send(numbered(i, next_k[i]), timeout=TIMEOUT)
            next_k[i] += 1
            if n % 500 == 499:
                time.sleep(rng.uniform(0, 0.005))
        if hold is not None:
            hold.wait(TIMEOUT * 4)


def echo(region_name: str, inbox: str, outbox: str, count: int) -> None:
    with Region.attach(region_name) as region:
        rx = MessageBuffer.attach(region, inbox)
        tx = MessageBuffer.attach(region, outbox)
        for _ in range(count):
            tx.send(rx.receive(timeout=TIMEOUT), timeout=TIMEOUT)


def drain(region_name: str, name: str, count: int) -> None:
    """Receive `count` messages slowly at first (the async writer finds the buffer full and waits)."""
    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, name)
        for k in range(count):
            if k < 3:
                time.sleep(0.05)
            got = buf.receive(timeout=TIMEOUT)
            assert got == numbered(0, k), (got, k)


def stream_echo(region_name: str, total: int) -> None:
    """Read `total` bytes from stream "up" and write them back on stream "down", in odd-sized pieces."""
    with Region.attach(region_name) as region:
        up = StreamBuffer.attach(region, "up")
        down = StreamBuffer.attach(region, "down")
        moved = 0
        while moved < total:
            chunk = up.read(97, timeout=TIMEOUT)
            n = 0
            while n < len(chunk):
                n += down.write(chunk[n:], timeout=TIMEOUT)
            moved += len(chunk)


def ipc_echo(region_name: str, count: int, results: Any) -> None:
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            for k in range(count):
                c = k % ipc.channels
                ipc.send(c, ipc.receive(c, timeout=TIMEOUT) + b"!", timeout=TIMEOUT)
            ipc.receive(0, timeout=TIMEOUT)  # "done": keep the strategy installed until the test has all
        results.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put(repr(e))
