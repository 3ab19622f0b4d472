"""Demo: the CubeH7 dual-core boot synchronisation over HSEM 0.

The CM4 starts first, enables notification on HSEM 0 and waits (on the chip: STOP mode). The CM7
initialises the shared structures (here a message buffer), then takes and releases HSEM 0; the free
interrupt wakes the CM4, which attaches the buffer and greets the CM7 through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..buffers import MessageBuffer
from ..hw import Hardware
from ..hw.boot import boot_ready, cm4_wait_for_boot, cm7_release_boot
from ..region import Region
from ._common import CHILD_TIMEOUT, Timeline, print_summary, run_pair

__all__ = ["run"]

_GREETING = b"CM4 booted: shared structures found"


def _cm4(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {}
    try:
        say("started; HSEM 0 notification enabled, waiting for the CM7 (STOP mode)")
        region = Region.attach(region_name)
        try:
            hw = cm4_wait_for_boot(region, timeout=CHILD_TIMEOUT)
            try:
                counts["ready after wake-up"] = boot_ready(hw)
                say("woken by the HSEM 0 free interrupt")
                buffer = MessageBuffer.attach(region, "boot.mailbox")
                say("attached the mailbox the CM7 created; sending a greeting")
                buffer.send(_GREETING, timeout=CHILD_TIMEOUT)
                counts["greetings sent"] = 1
            finally:
                hw.close()
        finally:
            region.close()
    except BaseException as e:  # noqa: BLE001 - reported to the CM7, which prints it
        counts["error"] = repr(e)
    results.put(counts)


def _cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
    hw = Hardware.create(region)
    try:
        say("reset; starting the CM4")
        start_cm4()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while len(region.processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)  # the CM4's interpreter is still starting
        say("initialising clocks and shared structures while the CM4 waits")
        time.sleep(0.1)
        mailbox = MessageBuffer.create(region, "boot.mailbox", 128)
        say("shared structures ready: FastTake(HSEM 0); Release(HSEM 0)")
        cm7_release_boot(hw)
        greeting = mailbox.receive(timeout=CHILD_TIMEOUT)
        say(f"received {bytes(greeting).decode()!r}")
        return {"boot releases": 1, "greeting ok": greeting == _GREETING}
    finally:
        hw.close()


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 if the CM4 woke after the release and greeted the CM7 through the shared buffer."""
    cm7, cm4 = run_pair("boot", 1 << 16, _cm7, _cm4, quiet=quiet)
    ok = (
        cm7["greeting ok"] is True
        and cm4.get("ready after wake-up") is True
        and cm4.get("greetings sent") == 1
        and cm4.get("exit code") == 0
        and "error" not in cm4
    )
    rows: dict[str, object] = {
        "CM7 boot releases": cm7["boot releases"],
        "CM4 woke with the structures ready": cm4.get("ready after wake-up"),
        "greetings received by the CM7": int(bool(cm7["greeting ok"])),
    }
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary("boot-sync", rows, ok, quiet=quiet)
    return 0 if ok else 1
