"""Child-process targets of the payload tests (module level, so the spawn start method imports them).

Every frame's contents, dtype and shape are derived from its sequence number, so the receiving side
checks each one independently of the sender.
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any

from ampipc import MessageBuffer, Region
from ampipc.services import PayloadPool, ProcessingDirective

GENEROUS = 60.0
BYTES = random.Random(7).randbytes(1 << 16)
DTYPES = ("|u1", "<i2", "<u4", "<f4", "<f8", "<i8")
ITEMSIZE = {"|u1": 1, "<i2": 2, "<u4": 4, "<f4": 4, "<f8": 8, "<i8": 8}


def frame_spec(seq: int, slot_size: int) -> tuple[str, tuple[int, ...], int]:
    """dtype, shape and the content's start in BYTES of frame `seq` (both sides compute it)."""
    rng = random.Random(seq * 1_000_003 + 17)
    dtype = DTYPES[rng.randrange(len(DTYPES))]
    most = slot_size // ITEMSIZE[dtype]
    count = rng.randrange(0, most + 1)
    if count and rng.random() < 0.5:
        cols = next(c for c in (4, 3, 2, 1) if count % c == 0)
        shape: tuple[int, ...] = (count // cols, cols)
    else:
        shape = (count,)
    nbytes = math.prod(shape) * ITEMSIZE[dtype]
    start = rng.randrange(0, len(BYTES) - nbytes + 1)
    return dtype, shape, start


def produce(region_name: str, pool_name: str, buffer_name: str, count: int, results: Any) -> None:
    """Loan, fill, commit `count` frames of random dtype/shape; report ("ok", count) or the error."""
    try:
        with Region.attach(region_name) as region:
            pool = PayloadPool.attach(region, pool_name)
            out = MessageBuffer.attach(region, buffer_name)
            for seq in range(count):
                dtype, shape, start = frame_spec(seq, pool.slot_size)
                loan = pool.loan(timeout=GENEROUS)
                loan.array(dtype, shape)
                nbytes = math.prod(shape) * ITEMSIZE[dtype]
                loan.view[:nbytes] = BYTES[start : start + nbytes]
                directive = ProcessingDirective(nbytes, dtype, processing=seq % 4, sequence=seq)
                pool.commit(loan, out, directive, timeout=GENEROUS)
            pool.close()
        results.put(("ok", count))
    except BaseException as exc:  # reported to the test, which fails with it
        results.put(("error", repr(exc)))


def hold_and_wait(region_name: str, pool_name: str, buffer_name: str, hold: int, results: Any) -> None:
    """Accept `hold` payloads, report their (slot, generation) and descriptors, then sleep until killed."""
    with Region.attach(region_name) as region:
        pool = PayloadPool.attach(region, pool_name)
        src = MessageBuffer.attach(region, buffer_name)
        held = []
        raws = []
        for _ in range(hold):
            raw = src.receive(timeout=GENEROUS)
            payload = pool.accept(raw)
            held.append((payload.slot, payload.generation))
            raws.append(raw)
        results.put(("holding", held, raws))
        time.sleep(3600)


def reclaim_and_grab(region_name: str, pool_name: str, go: Any, results: Any, done: Any) -> None:
    """At `go`, reclaim dead processes' slots and loan every slot it can; report, hold until `done`."""
    with Region.attach(region_name) as region:
        pool = PayloadPool.attach(region, pool_name)
        go.wait(GENEROUS)
        freed = pool.reclaim()
        loans = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # race the other grabber for a while
            loan = pool.try_loan()
            if loan is not None:
                loans.append(loan)
        results.put(("grabbed", freed, sorted(loan.slot for loan in loans)))
        done.wait(GENEROUS)
        pool.close()


def release_later(region_name: str, pool_name: str, buffer_name: str, results: Any) -> None:
    """Accept one payload, tell the test, wait a little, release it (wakes a blocked loaner)."""
    with Region.attach(region_name) as region:
        pool = PayloadPool.attach(region, pool_name)
        payload = pool.receive(MessageBuffer.attach(region, buffer_name), timeout=GENEROUS)
        results.put(("accepted", payload.slot))
        time.sleep(0.3)
        payload.release()
        results.put(("released", payload.slot))
        pool.close()


_names = iter(range(1 << 30))


def new_name(tag: str = "p") -> str:
    """A fresh ``ampipc-test-<pid>-<tag><n>`` region name (the session leak guard watches these)."""
    return f"ampipc-test-{os.getpid()}-{tag}{next(_names)}"


def dma_into_region(region_name: str, offset: int, frames: int, size: int, results: Any) -> None:
    """Act as the CM4: DMA `frames` private frames into the region, one after another, each raising
    the transfer-complete line on the CM7; wait for the CM7's acknowledgement word before the next."""
    from ampipc.hw import Hardware
    from ampipc.hw.dma import DmaController, RegionAddress

    try:
        with Region.attach(region_name) as region:
            hw = Hardware.attach(region)
            dma = DmaController.attach(region, hw)
            channel = dma.channel(1)
            channel.set_interrupts("CM7", complete_line=6, error_line=7)
            ack = offset - 64  # the CM7 stores the number of frames it has checked here
            m = region.mapping
            for i in range(frames):
                frame = random.Random(i).randbytes(size)
                channel.start(frame, RegionAddress(offset)).wait(GENEROUS)
                deadline = time.monotonic() + GENEROUS
                while m.load_u32(ack) != i + 1:
                    m.futex_wait(ack, m.load_u32(ack), 0.1)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the CM7 did not acknowledge frame {i}")
            # and one transfer that points outside the region: TEIF + the error line, no write
            transfer = channel.start(b"x" * size, RegionAddress(region.size - size // 2))
            try:
                transfer.wait(GENEROUS)
            except Exception as exc:  # the DmaError is what the test expects
                results.put(("error", type(exc).__name__))
            dma.close()
            hw.close()
        results.put(("ok", frames))
    except BaseException as exc:
        results.put(("failed", repr(exc)))


def claim_dma_channel(region_name: str, number: int, claimed: Any, leave: Any) -> None:
    """Claim a DMA channel, say so, and exit at `leave` without giving it back (as a crash would)."""
    from ampipc.hw import Hardware
    from ampipc.hw.dma import DmaController

    region = Region.attach(region_name)
    dma = DmaController.attach(region, Hardware.attach(region))
    dma.channel(number)
    claimed.set()
    leave.wait(GENEROUS)
    os._exit(0)
