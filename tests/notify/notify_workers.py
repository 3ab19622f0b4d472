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


# ---- the buffer conformance tests' CM4 side (every strategy; spin 0, so every wait is a sleep) ----

RX_WAITING = 196  # ampipc._layout.RING_OFF_RX_WAITING
TX_WAITING = 192  # ampipc._layout.RING_OFF_TX_WAITING


def waiting_flag(ipc: Ipc, buffer: Any, offset: int) -> int:
    return ipc.region.mapping.load_u32(buffer.offset + offset)


def wait_until_blocked(ipc: Ipc, buffer: Any, offset: int) -> None:
    """Poll the buffer's waiting flag until the other side sleeps on it."""
    deadline = time.monotonic() + TIMEOUT
    while waiting_flag(ipc, buffer, offset) != 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"{buffer.name!r}: the peer never blocked")
        time.sleep(0.001)


def _no_spin(ipc: Ipc) -> None:
    for c in range(ipc.channels):
        ipc.tx_buffer(c).spin = 0
        ipc.rx_buffer(c).spin = 0


def cm4_blocked_reader(region_name: str, results: Any) -> None:
    """CM4: block in receive on channel 0 before anything was sent; report what arrives."""
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            _no_spin(ipc)
            ipc.start()
            got = ipc.receive(0, timeout=TIMEOUT)
            ipc.send(0, b"ack:" + got, timeout=TIMEOUT)
            results.put({"got": got, "strategy": ipc.strategy_statistics()})
    except BaseException as e:  # noqa: BLE001
        results.put({"error": repr(e)})


def cm4_frees_space(region_name: str, results: Any) -> None:
    """CM4: once the CM7 sleeps on a full channel 0, read one message; then drain and report."""
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            _no_spin(ipc)
            ipc.start()
            wait_until_blocked(ipc, ipc.rx_buffer(0), TX_WAITING)
            received = [ipc.receive(0, timeout=TIMEOUT)]
            while True:
                msg = ipc.receive(0, timeout=TIMEOUT)
                if msg == b"end":
                    break
                received.append(msg)
            results.put({"received": received})
    except BaseException as e:  # noqa: BLE001
        results.put({"error": repr(e)})


def cm4_echo(region_name: str, rounds: int, results: Any) -> None:
    """CM4: echo `rounds` messages on channel 0, blocking on every receive."""
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            _no_spin(ipc)
            ipc.start()
            for _ in range(rounds):
                ipc.send(0, ipc.receive(0, timeout=TIMEOUT), timeout=TIMEOUT)
            results.put({"echoed": rounds})
    except BaseException as e:  # noqa: BLE001
        results.put({"error": repr(e)})
