"""Child targets of the chip-memory tests (module level, for the spawn start method).

Each one attaches to the region by name as the CM4 and exits non-zero when a check fails; every
wait is bounded by GENEROUS seconds.
"""

from __future__ import annotations

from typing import Any

from ampipc import MessageBuffer, Region

GENEROUS = 60.0


def cm4_echo(name: str, count: int, results: Any) -> None:
    """Echo `count` messages from ``to_cm4`` back on ``to_cm7`` (blocking), then report what came."""
    got: list[bytes] = []
    try:
        with Region.attach(name, core="CM4") as region:
            rx = MessageBuffer.attach(region, "to_cm4")
            tx = MessageBuffer.attach(region, "to_cm7")
            for _ in range(count):
                message = rx.receive(timeout=GENEROUS)
                got.append(message)
                tx.send(message, timeout=GENEROUS)
    finally:
        results.put(got)


def cm4_poll_once(name: str, results: Any) -> None:
    """Read ``to_cm4`` once, without blocking, as the CM4: report what was there (None if empty)."""
    message = None
    try:
        with Region.attach(name, core="CM4") as region:
            rx = MessageBuffer.attach(region, "to_cm4")
            message = rx.try_receive()
    finally:
        results.put(message)


def cm4_send(name: str, payload: bytes, results: Any) -> None:
    """Send `payload` on ``to_cm7`` as the CM4 (memory directly: the CM4 has no cache)."""
    ok = False
    try:
        with Region.attach(name, core="CM4") as region:
            tx = MessageBuffer.attach(region, "to_cm7")
            tx.send(payload, timeout=GENEROUS)
            ok = True
    finally:
        results.put(ok)
