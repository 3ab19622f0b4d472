"""The two-channel demo shared by ``multi`` (control buffer) and ``toggle`` (toggle bits, ISR sends).

Channel 0 carries periodic messages both ways. The CM4 delays its reads: for the first few it waits
until the CM7 is blocked on the full buffer, so the CM7 is provably woken by a "space freed" event.
Channel 1 carries "button press" messages from the CM4 (from a task, or from an interrupt handler
with ``send_from_isr``); each toggles the CM7's "LED".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _layout as L
from ..hw.boot import cm7_release_boot
from ..ipc import Ipc, StrategyName
from ..region import Region
from ._common import cm4_booted, CHILD_TIMEOUT, Timeline, print_summary, run_pair

__all__ = ["PRESSES", "TICKS", "run_multi"]

TICKS = 20
PRESSES = 3
BLOCKED_READS = 3  # reads the CM4 makes only once the CM7 is blocked on a full buffer
BUTTON_LINE = 5  # the CM4's "user button" EXTI interrupt (an application line)
_BUFFER_SIZE = 48  # two 16-byte ticks with their prefixes: the CM7 fills it at once


def _tick(core: str, i: int) -> bytes:
    return f"{core} tick {i:02d}".encode()


def _cm4(region_name: str, origin: float, quiet: bool, results: Any, strategy: StrategyName, isr_buttons: bool) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"ticks in ok": 0, "ticks out": 0, "presses sent": 0, "waited for a blocked CM7": 0}
    with cm4_booted(region_name, counts, results) as hw:
        region = hw.region
        with Ipc.attach(region, core="CM4", hardware=hw) as ipc:
            presses_done = threading.Event()

            def button_isr(_line: int) -> None:
                if ipc.send_from_isr(1, b"button"):
                    counts["presses sent"] += 1
                if counts["presses sent"] >= PRESSES:
                    presses_done.set()

            if isr_buttons:
                ipc.core.attach_handler(BUTTON_LINE, button_isr, priority=10)
            ipc.start()
            say(f"attached 2 channels ({strategy}); delaying my reads on channel 0")

            def ticker() -> None:
                for i in range(TICKS):
                    ipc.send(0, _tick("CM4", i), timeout=CHILD_TIMEOUT)
                    counts["ticks out"] += 1
                    time.sleep(0.002)

            sender = threading.Thread(target=ticker, name="CM4-ticker")
            sender.start()
            writer_waiting = region.lookup(ipc.rx_buffer(0).name).offset + L.RING_OFF_TX_WAITING
            for i in range(TICKS):
                if i < BLOCKED_READS:
                    deadline = time.monotonic() + CHILD_TIMEOUT
                    while not region.mapping.load_u32(writer_waiting) and time.monotonic() < deadline:
                        time.sleep(0.001)
                    if region.mapping.load_u32(writer_waiting):
                        counts["waited for a blocked CM7"] += 1
                        say("the CM7 is blocked on the full channel 0; reading frees space")
                else:
                    time.sleep(0.003)
                message = ipc.receive(0, timeout=CHILD_TIMEOUT)
                if message == _tick("CM7", i):
                    counts["ticks in ok"] += 1
                say(f"read {message.decode()!r}")
                if i in (5, 10, 15):
                    if isr_buttons:
                        say("button pressed: EXTI interrupt, the handler sends from the ISR")
                        ipc.core.raise_interrupt(BUTTON_LINE)
                    else:
                        say("button pressed: sending on channel 1")
                        ipc.send(1, b"button", timeout=CHILD_TIMEOUT)
                        counts["presses sent"] += 1
            sender.join(CHILD_TIMEOUT)
            if isr_buttons:
                presses_done.wait(CHILD_TIMEOUT)
            counts["interrupts"] = ipc.strategy_statistics()["interrupts"]


def _cm7(strategy: StrategyName) -> Callable[[Region, Timeline, Callable[[], None]], dict[str, Any]]:
    def body(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
        start_cm4()
        counts: dict[str, Any] = {"ticks in ok": 0, "ticks out": 0, "presses": 0, "led": False}
        with Ipc.init(region, channels=2, buffer_size=_BUFFER_SIZE, strategy=strategy, core="CM7") as ipc:
            ipc.start()
            say(f"2 channels of 2 x {_BUFFER_SIZE} bytes ({strategy} notification); releasing HSEM 0")
            cm7_release_boot(ipc.hardware)

            def receive_ticks() -> None:
                for i in range(TICKS):
                    if ipc.receive(0, timeout=CHILD_TIMEOUT) == _tick("CM4", i):
                        counts["ticks in ok"] += 1

            def buttons() -> None:
                for _ in range(PRESSES):
                    if ipc.receive(1, timeout=CHILD_TIMEOUT) == b"button":
                        counts["presses"] += 1
                        counts["led"] = not counts["led"]
                        say(f"button press received: LED {'on' if counts['led'] else 'off'}")

            tasks = [threading.Thread(target=receive_ticks, name="CM7-rx"), threading.Thread(target=buttons, name="CM7-led")]
            for t in tasks:
                t.start()
            for i in range(TICKS):
                ipc.send(0, _tick("CM7", i), timeout=CHILD_TIMEOUT)
                counts["ticks out"] += 1
                say(f"sent {_tick('CM7', i).decode()!r}")
            for t in tasks:
                t.join(CHILD_TIMEOUT)
            stats = ipc.statistics(0)
            counts["send waits"] = stats.sent.send_waits
            counts["writer wake-ups"] = stats.sent.writer_wakeups
            counts["interrupts"] = ipc.strategy_statistics()["interrupts"]
        return counts

    return body


def run_multi(demo: str, strategy: StrategyName, isr_buttons: bool, cm4_entry: Callable[[str, float, bool, Any], None], *, quiet: bool) -> int:
    cm7, cm4 = run_pair(demo, 1 << 16, _cm7(strategy), cm4_entry, quiet=quiet)
    ok = (
        cm7["ticks out"] == TICKS
        and cm7["ticks in ok"] == TICKS
        and cm4.get("ticks in ok") == TICKS
        and cm7["presses"] == PRESSES
        and cm7["led"] is (PRESSES % 2 == 1)
        and cm4.get("waited for a blocked CM7") == BLOCKED_READS
        and cm7["send waits"] >= BLOCKED_READS
        and cm4.get("exit code") == 0
        and "error" not in cm4
    )
    rows: dict[str, object] = {
        "channel 0 CM7 -> CM4 (in order)": cm4.get("ticks in ok"),
        "channel 0 CM4 -> CM7 (in order)": cm7["ticks in ok"],
        "CM7 blocked on a full buffer": cm7["send waits"],
        "  of which the CM4 waited for": cm4.get("waited for a blocked CM7"),
        "button presses (channel 1)": cm7["presses"],
        "LED": "on" if cm7["led"] else "off",
        "doorbell interrupts CM7 / CM4": f"{cm7['interrupts']} / {cm4.get('interrupts')}",
    }
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary(demo, rows, ok, quiet=quiet)
    return 0 if ok else 1
