"""Demo: one bidirectional pair of message buffers (the FreeRTOS STM32H745 AMP demo).

The CM7 initialises one channel (a message buffer each way, a control buffer per direction and a
doorbell interrupt), releases the boot semaphore and sends numbered messages; the CM4 waits for the
boot release, attaches, and answers each message on the other buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..hw.boot import cm7_release_boot
from ..ipc import Ipc
from ..region import Region
from ._common import cm4_booted, CHILD_TIMEOUT, Timeline, print_summary, run_pair

__all__ = ["run"]

MESSAGES = 10


def _reply(message: bytes) -> bytes:
    return b"ack " + message


def _cm4(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"received": 0, "replied": 0}
    with cm4_booted(region_name, counts, results) as hw:
        region = hw.region
        with Ipc.attach(region, core="CM4", hardware=hw) as ipc:
            ipc.start()
            say(f"boot released; attached {ipc.channels} channel ({ipc.strategy_name} notification)")
            for _ in range(MESSAGES):
                message = ipc.receive(0, timeout=CHILD_TIMEOUT)
                counts["received"] += 1
                say(f"received {message.decode()!r}; replying")
                ipc.send(0, _reply(message), timeout=CHILD_TIMEOUT)
                counts["replied"] += 1
            counts["interrupts"] = ipc.strategy_statistics()["interrupts"]


def _cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
    start_cm4()
    counts: dict[str, Any] = {"sent": 0, "replies ok": 0}
    with Ipc.init(region, channels=1, buffer_size=60, strategy="control", core="CM7") as ipc:
        ipc.start()
        say("shared buffers created (2 x 60 bytes, a control buffer each way); releasing HSEM 0")
        cm7_release_boot(ipc.hardware)
        for i in range(MESSAGES):
            message = f"message {i}".encode()
            ipc.send(0, message, timeout=CHILD_TIMEOUT)
            counts["sent"] += 1
            say(f"sent {message.decode()!r}")
            reply = ipc.receive(0, timeout=CHILD_TIMEOUT)
            say(f"got {reply.decode()!r}")
            if reply == _reply(message):
                counts["replies ok"] += 1
        counts["interrupts"] = ipc.strategy_statistics()["interrupts"]
    return counts


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 if every message came back answered, in order."""
    cm7, cm4 = run_pair("msgbuf", 1 << 16, _cm7, _cm4, quiet=quiet)
    ok = (
        cm7["sent"] == MESSAGES
        and cm7["replies ok"] == MESSAGES
        and cm4.get("received") == MESSAGES
        and cm4.get("exit code") == 0
        and "error" not in cm4
    )
    rows: dict[str, object] = {
        "messages CM7 -> CM4": cm4.get("received"),
        "replies CM4 -> CM7 (checked)": cm7["replies ok"],
        "doorbell interrupts on the CM7": cm7["interrupts"],
        "doorbell interrupts on the CM4": cm4.get("interrupts"),
    }
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary("message-buffer", rows, ok, quiet=quiet)
    return 0 if ok else 1
