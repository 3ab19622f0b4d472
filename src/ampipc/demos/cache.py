"""Demo: the message-buffer exchange on the modelled chip, with and without D-cache coherency.

The CM7 (this process, through its modelled data cache) and the CM4 (a child process, no cache)
exchange numbered messages over two message buffers in SRAM4 (0x38000000), a SEV event as the
doorbell after each send, as firmware does. Three runs:

1. **no maintenance**: SRAM4 is cacheable for the CM7 (the default memory map) and nobody cleans
   or invalidates: the CM7's message stays in its cache, the CM4 reads memory the CM7 holds dirty,
   and the coherency checker says where (object, field, address).
2. **MPU**: the CM7 first makes SRAM4 non-cacheable and shareable with the MPU
   (``HAL_MPU_ConfigRegion``): every access reaches memory; the checker stays silent.
3. **clean/invalidate**: SRAM4 stays cacheable; the CM7 cleans and invalidates each buffer around
   every exchange (``SCB_CleanInvalidateDCache_by_Addr`` before, ``SCB_CleanDCache_by_Addr`` after):
   silent too.

It exits 0 only if the first run is caught and the other two are clean and complete.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from ..buffers import MessageBuffer
from ..hw import Hardware
from ..hw.cache import DCache, Mpu, reports
from ..region import Region
from ._common import Timeline, print_summary, region_name

__all__ = ["run"]

MESSAGES = 8
SIZE = 64 * 1024  # all of SRAM4
WAIT = 2.0  # seconds a side waits for a message after the doorbell before it calls it lost
RUNS = ("no maintenance", "MPU non-cacheable", "clean/invalidate")
SRAM4 = 0x38000000


def _receive_after_doorbell(core: Any, buffer: MessageBuffer, before: Any = None, after: Any = None) -> bytes | None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not core.wfe(timeout=0.2):
            continue  # only a doorbell says there is something to read (as an interrupt would)
        if before is not None:
            before()
        message = buffer.try_receive()
        if after is not None:
            after()
        if message is not None:
            return message
    return None


def _cm4(name: str, results: Any) -> None:
    counts = {"received": 0, "lost": 0}
    try:
        with Region.attach(name, core="CM4") as region:
            hw = Hardware.attach(region)
            cm4 = hw.core("CM4")
            rx = MessageBuffer.attach(region, "m7_to_m4")
            tx = MessageBuffer.attach(region, "m4_to_m7")
            for _ in range(MESSAGES):
                message = _receive_after_doorbell(cm4, rx)
                if message is None:
                    counts["lost"] += 1
                    break
                counts["received"] += 1
                tx.send(b"ack " + message, timeout=WAIT)
                cm4.sev()
            tx.close()
            rx.close()
    finally:
        results.put(counts)


def _one_run(mode: int, say: Timeline) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    region = Region.create(region_name("cache"), SIZE, chip="stm32h745", memory="SRAM4", core="CM7",
                           cache_model=True)
    child = None
    try:
        hw = Hardware.create(region)
        cm7 = hw.core("CM7")
        tx = MessageBuffer.create(region, "m7_to_m4", 256)
        rx = MessageBuffer.create(region, "m4_to_m7", 256)
        dcache = DCache(region)
        before = dcache.statistics()  # the process's one cache counts across runs
        tx_range, rx_range = dcache.address_of("m7_to_m4"), dcache.address_of("m4_to_m7")
        if mode == 1:
            policy = Mpu(region).configure_region(SRAM4, 64 * 1024, number=0, cacheable=False, shareable=True)
            say(f"MPU region 0: {SRAM4:#010x} + 64 KiB -> {policy.name}")
        if mode == 2:
            say(f"m7_to_m4 at {tx_range[0]:#010x} ({tx_range[1]} B), m4_to_m7 at {rx_range[0]:#010x}: "
                "clean-invalidate before, clean after each access")
        child = ctx.Process(target=_cm4, args=(region.name, results), daemon=True)
        child.start()
        replies = 0
        for i in range(MESSAGES):
            if mode == 2:
                dcache.clean_invalidate_by_addr(*tx_range)
            tx.send(f"frame {i}".encode(), timeout=WAIT)
            if mode == 2:
                dcache.clean_by_addr(*tx_range)
            cm7.sev()
            reply = _receive_after_doorbell(
                cm7, rx,
                before=(lambda: dcache.clean_invalidate_by_addr(*rx_range)) if mode == 2 else None,
                after=(lambda: dcache.clean_by_addr(*rx_range)) if mode == 2 else None,
            )
            if reply is None:
                say(f"no reply to frame {i} within {WAIT:g} s")
                break
            replies += 1
        cm4_counts = results.get(timeout=60)
        child.join(30)
        found = reports(region)
        after = dcache.statistics()
        traffic = (after.hits - before.hits, after.misses - before.misses)
        return {"replies": replies, "cm4": cm4_counts, "reports": found, "traffic": traffic}
    finally:
        if child is not None and child.is_alive():
            child.terminate()
            child.join(5)
        region.close()


def run(*, quiet: bool = False) -> int:
    origin = time.monotonic()
    say = Timeline("CM7", origin, quiet)
    ok = True
    rows: dict[str, object] = {}
    for mode, title in enumerate(RUNS):
        say(f"run {mode + 1}: {title}")
        result = _one_run(mode, say)
        for report in result["reports"]:
            say(f"  checker: {report}")
        caught = bool(result["reports"])
        complete = result["replies"] == MESSAGES and result["cm4"]["received"] == MESSAGES
        hits, misses = result["traffic"]
        verdict = ("caught" if caught else "NOT caught") if mode == 0 else (
            "clean" if not caught and complete else "FAILED")
        rows[f"run {mode + 1} ({title})"] = (
            f"{result['replies']}/{MESSAGES} replies, {len(result['reports'])} coherency reports, "
            f"CM7 cache {hits} hits / {misses} misses: {verdict}"
        )
        if mode == 0 and caught:
            rows["caught at"] = str(result["reports"][0])
        ok = ok and (caught if mode == 0 else (not caught and complete))
    print_summary("cache", rows, ok, quiet=quiet)
    return 0 if ok else 1
