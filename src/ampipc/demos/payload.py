"""Demo: payload processing. The CM4 acquires 1 MiB float32 frames and DMAs each into a pool slot;
the CM7 processes them in place (numpy, zero copy) as each frame's directive says.

Theory of operation
-------------------
The CM7 creates the hardware, a `PayloadPool` of 1 MiB slots, a message buffer for descriptors and
the DMA controller, then releases the boot semaphore. The CM4 generates frame *i* (a sine of
``cycles(i)`` periods plus an offset ``offset(i)``) into one of two private buffers, loans a slot,
starts a DMA transfer from the buffer into the slot and, while the engine copies, generates frame
*i + 1* into the other buffer (double buffering: the task keeps running). When the transfer is
complete it commits the slot with a `ProcessingDirective` (FFT, mean or filter). The DMA's
transfer-complete interrupt is raised on the CM7, whose handler counts it and clears TCIF.

The CM7 sleeps in the descriptor buffer's receive until a commit arrives, processes the frame
through a read-only numpy view of the slot, checks the result against the values it derives from
the sequence number on its own (FFT peak bin = cycles, mean = offset, filter gain = the boxcar's
analytic gain), releases the slot and reports. The run is OK only if every frame checked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ..buffers import MessageBuffer
from ..hw.boot import cm7_release_boot
from ..hw.dma import DmaController
from ..hw.hardware import Hardware
from ..region import Region
from ..services.directives import Processing, ProcessingDirective
from ..services.pool import PayloadPool
from ._common import CHILD_TIMEOUT, Timeline, cm4_booted, print_summary, run_pair

__all__ = ["run"]

FRAMES = 24
SAMPLES = 1 << 18  # 1 MiB of float32
SLOTS = 4
IRQ_DMA = 4
FILTER_WIDTH = 8
_KINDS = (Processing.FFT, Processing.MEAN, Processing.FILTER)


def cycles(seq: int) -> int:
    return 50 + (seq * 37) % 2000


def offset(seq: int) -> float:
    return 0.25 * seq - 2.0


def _generate(np: Any, seq: int, out: Any, phase: Any) -> None:
    np.multiply(phase, cycles(seq), out=out)
    np.sin(out, out=out)
    out += offset(seq)


def _cm4(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    import numpy as np

    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"committed": 0, "dma cpu": 0.0, "generate cpu": 0.0}
    with cm4_booted(region_name, counts, results) as hw:
        region = hw.region
        pool = PayloadPool.attach(region, "frames")
        out = MessageBuffer.attach(region, "directives")
        dma = DmaController.attach(region, hw)
        channel = dma.channel(0)
        channel.set_interrupts("CM7", complete_line=IRQ_DMA, error_line=IRQ_DMA)
        say(f"boot released; pool of {pool.slots} x {pool.slot_size >> 10} KiB slots, DMA channel 0 -> CM7 line {IRQ_DMA}")
        phase = np.arange(SAMPLES, dtype=np.float32) * np.float32(2 * math.pi / SAMPLES)
        frames = [np.empty(SAMPLES, np.float32), np.empty(SAMPLES, np.float32)]
        _generate(np, 0, frames[0], phase)
        started = time.perf_counter()
        try:
            for seq in range(FRAMES):
                loan = pool.loan(timeout=CHILD_TIMEOUT)
                slot_array = loan.array("<f4", (SAMPLES,))
                t0 = time.thread_time()
                transfer = channel.start(frames[seq % 2], slot_array)
                counts["dma cpu"] += time.thread_time() - t0
                del slot_array
                if seq + 1 < FRAMES:  # the task keeps running while the engine copies
                    t0 = time.thread_time()
                    _generate(np, seq + 1, frames[(seq + 1) % 2], phase)
                    counts["generate cpu"] += time.thread_time() - t0
                t0 = time.thread_time()
                transfer.wait(CHILD_TIMEOUT)
                counts["dma cpu"] += time.thread_time() - t0
                kind = _KINDS[seq % len(_KINDS)]
                directive = ProcessingDirective(SAMPLES * 4, "<f4", kind, sequence=seq, params=(float(FILTER_WIDTH),))
                pool.commit(loan, out, directive, timeout=CHILD_TIMEOUT)
                counts["committed"] += 1
                say(f"frame {seq:2d}: DMA {transfer.length >> 10} KiB into slot {loan.slot} in "
                    f"{(transfer.duration or 0) * 1e3:.2f} ms; committed ({kind.name})")
        finally:
            counts["elapsed"] = time.perf_counter() - started
            stats = channel.statistics()
            counts["dma transfers"] = stats.transfers
            counts["dma busy"] = stats.busy_seconds
            counts["dma errors"] = stats.errors
            dma.close()
            pool.close()


def _check(np: Any, seq: int, kind: int, data: Any) -> tuple[bool, str]:
    if kind == Processing.FFT:
        spectrum = np.abs(np.fft.rfft(data))
        spectrum[0] = 0.0
        peak = int(np.argmax(spectrum))
        return peak == cycles(seq), f"FFT peak at bin {peak} (expected {cycles(seq)})"
    if kind == Processing.MEAN:
        mean = float(data.mean(dtype=np.float64))
        return abs(mean - offset(seq)) < 1e-3, f"mean {mean:.4f} (expected {offset(seq):.4f})"
    sums = np.cumsum(data, dtype=np.float64)
    filtered = (sums[FILTER_WIDTH:] - sums[:-FILTER_WIDTH]) / FILTER_WIDTH - offset(seq)
    omega = 2 * math.pi * cycles(seq) / SAMPLES
    gain = abs(math.sin(FILTER_WIDTH * omega / 2) / (FILTER_WIDTH * math.sin(omega / 2)))
    measured = float(np.abs(filtered).max())
    return abs(measured - gain) < 2e-3, f"boxcar({FILTER_WIDTH}) gain {measured:.4f} (expected {gain:.4f})"


def _cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
    import numpy as np

    counts: dict[str, Any] = {"checked": 0, "failed": [], "tc interrupts": 0, "tc transfers": 0, "bytes": 0}
    hw = Hardware.create(region)
    try:
        pool = PayloadPool.create(region, "frames", slots=SLOTS, slot_size=SAMPLES * 4)
        directives = MessageBuffer.create(region, "directives", 4096)
        dma = DmaController.create(region, hw)
        core = hw.core("CM7")

        def on_dma(line: int) -> None:  # ISR context: count, clear the flags, never block
            counts["tc interrupts"] += 1
            dma.clear_flags(0)
            counts["tc transfers"] = dma.statistics(0).transfers  # raises merge while pending, as on the NVIC

        core.attach_handler(IRQ_DMA, on_dma)
        core.start()
        start_cm4()
        say(f"pool of {SLOTS} x 1 MiB slots, descriptor buffer and DMA controller created; releasing HSEM 0")
        cm7_release_boot(hw)
        first = None
        for _ in range(FRAMES):
            with pool.receive(directives, timeout=CHILD_TIMEOUT) as payload:
                first = first or time.perf_counter()
                directive = payload.directive
                if not isinstance(directive, ProcessingDirective) or payload.shape != (SAMPLES,):
                    counts["failed"].append(f"slot {payload.slot}: unexpected directive {directive!r}")
                    continue
                ok, text = _check(np, directive.sequence, directive.processing, payload.array())
                counts["bytes"] += payload.length
                if ok:
                    counts["checked"] += 1
                else:
                    counts["failed"].append(f"frame {directive.sequence}: {text}")
                say(f"frame {directive.sequence:2d} ({directive.processing_name}) in slot {payload.slot}: "
                    f"{text} {'ok' if ok else 'WRONG'}")
        counts["elapsed"] = time.perf_counter() - (first or time.perf_counter())
        deadline = time.monotonic() + CHILD_TIMEOUT
        while counts["tc transfers"] < FRAMES and time.monotonic() < deadline:
            time.sleep(0.01)  # the last interrupts may still be on their way
        stats = pool.statistics()
        counts["peak slots"] = stats.peak_in_use
        counts["in use"] = stats.in_use
        core.stop()
        dma.close()
        pool.close()
        return counts
    finally:
        hw.close()


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 only if every frame was processed and its result checked."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("the payload demo needs numpy: pip install 'ampipc[numpy]'")
        return 2
    cm7, cm4 = run_pair("payload", (SLOTS + 1) * (SAMPLES * 4) + (1 << 20), _cm7, _cm4, quiet=quiet)
    ok = (
        cm7["checked"] == FRAMES and not cm7["failed"] and cm4.get("committed") == FRAMES
        and cm4.get("dma transfers") == FRAMES and cm4.get("dma errors") == 0 and cm4.get("exit code") == 0
        and "error" not in cm4 and cm7["tc transfers"] == FRAMES
    )
    elapsed = cm7.get("elapsed") or 0.0
    dma_busy = cm4.get("dma busy", 0.0)
    rows: dict[str, object] = {
        "frames (1 MiB float32) checked": f"{cm7['checked']} / {FRAMES}",
        "throughput CM4 -> CM7": f"{cm7['bytes'] / elapsed / 1e9:.2f} GB/s" if elapsed else "n/a",
        "peak slots in use": f"{cm7.get('peak slots')} of {SLOTS} (in use at the end: {cm7.get('in use')})",
        "DMA transfers (errors)": f"{cm4.get('dma transfers')} ({cm4.get('dma errors')})",
        "DMA busy": f"{dma_busy * 1e3:.1f} ms",
        "CM4 task CPU in DMA calls": f"{cm4.get('dma cpu', 0.0) * 1e3:.2f} ms",
        "CM4 frame generation overlapping the DMA": f"{cm4.get('generate cpu', 0.0) * 1e3:.1f} ms CPU",
        "transfer-complete interrupts on CM7": f"{cm7['tc interrupts']} (covering {cm7['tc transfers']} transfers)",
    }
    if cm7["failed"]:
        rows["failed checks"] = "; ".join(cm7["failed"][:3])
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary("payload", rows, ok, quiet=quiet)
    return 0 if ok else 1
