"""Demo: EXTI/SEV notification: send-event, wait-for-event, and the SEV interrupt.

Phase 1: the CM7 publishes a counter in shared memory and executes SEV; the CM4 sleeps in WFE,
wakes, acknowledges in shared memory and executes SEV back. Phase 2: the CM4 unmasks its SEV
interrupt; its handler acknowledges a second counter and answers with SEV from the ISR. Every wait
re-checks the shared words, so a missed event costs latency, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import Timeout
from ..hw import IRQ_SEV, Core, Hardware
from ..hw.boot import cm7_release_boot
from ..region import Region
from ._common import cm4_booted, CHILD_TIMEOUT, Timeline, print_summary, run_pair

__all__ = ["run"]

ROUNDS = 10
_COUNTER, _ACK, _READY, _COUNTER2, _ACK2 = 0, 4, 8, 64, 68  # counters and acks on separate lines


def _wait_word(core: Core, region: Region, offset: int, value: int) -> int:
    """WFE until the word at `offset` reaches `value`; returns the events consumed."""
    events = 0
    deadline = time.monotonic() + CHILD_TIMEOUT
    while region.mapping.load_u32(offset) != value:
        if time.monotonic() > deadline:
            raise Timeout(f"word at {offset} never reached {value}")
        if core.wfe(timeout=0.1):
            events += 1
    return events


def _cm4(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"wfe acks": 0, "isr acks": 0}
    with cm4_booted(region_name, counts, results) as hw:
        region = hw.region
        core = hw.core("CM4")
        base = region.lookup("sev.words").offset
        m = region.mapping

        def sev_isr(_line: int) -> None:
            value = m.load_u32(base + _COUNTER2)
            if value != m.load_u32(base + _ACK2):
                m.store_u32(base + _ACK2, value)
                counts["isr acks"] += 1
                core.sev()

        core.set_event_mask(True)
        core.set_sev_interrupt_mask(True)
        core.attach_handler(IRQ_SEV, sev_isr, priority=8)
        core.start()
        m.store_u32(base + _READY, 1)
        say("events and the SEV interrupt unmasked; entering WFE")
        for i in range(1, ROUNDS + 1):
            _wait_word(core, region, base + _COUNTER, i)
            m.store_u32(base + _ACK, i)
            counts["wfe acks"] += 1
            say(f"WFE woke: counter {i}; SEV back")
            core.sev()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while counts["isr acks"] < ROUNDS and time.monotonic() < deadline:
            time.sleep(0.005)
        say(f"SEV interrupt handler acknowledged {counts['isr acks']} counters")


def _cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
    start_cm4()
    counts: dict[str, Any] = {"acks seen": 0, "isr acks seen": 0, "events": 0}
    hw = Hardware.create(region)
    try:
        base = region.allocate("sev.words", "sev_words", 128)
        core = hw.core("CM7")
        core.set_event_mask(True)
        cm7_release_boot(hw)
        m = region.mapping
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not m.load_u32(base + _READY) and time.monotonic() < deadline:
            time.sleep(0.001)
        say("phase 1: counter + SEV, the CM4 waits in WFE")
        for i in range(1, ROUNDS + 1):
            m.store_u32(base + _COUNTER, i)
            core.sev()
            counts["events"] += _wait_word(core, region, base + _ACK, i)
            counts["acks seen"] += 1
        say(f"phase 1 done: {counts['acks seen']} acknowledgements")
        say("phase 2: counter + SEV, the CM4's SEV interrupt handler answers")
        for i in range(1, ROUNDS + 1):
            m.store_u32(base + _COUNTER2, i)
            core.sev()
            counts["events"] += _wait_word(core, region, base + _ACK2, i)
            counts["isr acks seen"] += 1
            say(f"handler acknowledged counter {i}")
        return counts
    finally:
        hw.close()


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 if every counter was acknowledged by WFE and by the SEV interrupt handler."""
    cm7, cm4 = run_pair("sev", 1 << 16, _cm7, _cm4, quiet=quiet)
    ok = (
        cm7["acks seen"] == ROUNDS
        and cm7["isr acks seen"] == ROUNDS
        and cm4.get("wfe acks") == ROUNDS
        and cm4.get("isr acks") == ROUNDS
        and cm4.get("exit code") == 0
        and "error" not in cm4
    )
    rows: dict[str, object] = {
        "WFE round trips": cm4.get("wfe acks"),
        "SEV-interrupt round trips": cm4.get("isr acks"),
        "events the CM7 consumed in WFE": cm7["events"],
    }
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary("sev", rows, ok, quiet=quiet)
    return 0 if ok else 1
