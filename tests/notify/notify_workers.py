"""Code the spawned "CM4" processes of the notification tests run (importable by the spawn context)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ampipc import Region
from ampipc.ipc import Ipc

TIMEOUT = 60.0


def payload(core: str, channel: int, k: int) -> bytes:
    """A message whose content and length depend on who sent it, where and when."""
    return f"{core}:{channel}:{k}:".encode() + bytes([(k + channel) & 0xFF]) * (k % 23)


def exchange(ipc: Ipc, messages: int) -> dict[str, Any]:
    """Send `messages` on every channel from a task while receiving as many from the peer; check each."""
    me, peer = ipc.core.name, ipc.peer
    errors: list[str] = []
    sent = [0]

    def sender() -> None:
        try:
            for k in range(messages):
                for c in range(ipc.channels):
                    ipc.send(c, payload(me, c, k), timeout=TIMEOUT)
                    sent[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(f"send: {e!r}")

    thread = threading.Thread(target=sender, name=f"{me}-sender")
    thread.start()
    received = 0
    try:
        for k in range(messages):
            for c in range(ipc.channels):
                got = ipc.receive(c, timeout=TIMEOUT)
                if got != payload(peer, c, k):
                    errors.append(f"channel {c} message {k}: got {got[:40]!r}")
                    raise AssertionError(errors[-1])
                received += 1
    except BaseException as e:  # noqa: BLE001 - reported to the test
        errors.append(f"receive: {e!r}")
    finally:
        thread.join(TIMEOUT)
    return {"sent": sent[0], "received": received, "errors": errors, "strategy": ipc.strategy_statistics()}


def cm4_exchange(region_name: str, messages: int, results: Any) -> None:
    out: dict[str, Any]
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            out = exchange(ipc, messages)
    except BaseException as e:  # noqa: BLE001
        out = {"errors": [repr(e)]}
    results.put(out)


def cm4_isr_and_task_sender(region_name: str, messages: int, results: Any) -> None:
    """CM4: channel 0 from a task with send(), channel 1 from an interrupt handler with send_from_isr()."""
    out: dict[str, Any] = {"errors": []}
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            isr_sent = [0]
            isr_full = [0]
            line = 6

            def isr(_line: int) -> None:
                # send as many as fit now; a full buffer waits for the next interrupt
                while isr_sent[0] < messages:
                    if not ipc.send_from_isr(1, payload("CM4", 1, isr_sent[0])):
                        isr_full[0] += 1
                        return
                    isr_sent[0] += 1

            ipc.core.attach_handler(line, isr, priority=3)
            ipc.start()

            def task() -> None:
                for k in range(messages):
                    ipc.send(0, payload("CM4", 0, k), timeout=TIMEOUT)

            t = threading.Thread(target=task)
            t.start()
            deadline = time.monotonic() + TIMEOUT
            while isr_sent[0] < messages and time.monotonic() < deadline:
                ipc.core.raise_interrupt(line)
                time.sleep(0.0005)
            t.join(TIMEOUT)
            out.update(isr_sent=isr_sent[0], isr_full=isr_full[0], task_alive=t.is_alive())
    except BaseException as e:  # noqa: BLE001
        out["errors"].append(repr(e))
    results.put(out)
