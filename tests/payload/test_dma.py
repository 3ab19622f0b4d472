"""The virtual DMA controller: byte-for-byte copies, out-of-bounds transfers raising the error
interrupt without writing, interrupts on another process's core, priorities, channel claims."""

from __future__ import annotations

import os
import queue
import random
import threading
from typing import Any

import numpy as np
import pytest

from ampipc import IpcError, Region, ResourceExhausted
from ampipc.hw import Hardware
from ampipc.hw.dma import FLAG_HTIF, FLAG_TCIF, FLAG_TEIF, DmaController, DmaError, Priority, RegionAddress
from ampipc.services import PayloadPool

from . import _workers as W

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def chip(make_region: Any) -> Any:
    region = make_region(8 << 20)
    hw = Hardware.create(region)
    dma = DmaController.create(region, hw)
    try:
        yield region, hw, dma
    finally:
        dma.close()
        hw.close()


def test_private_to_region_and_back_byte_for_byte(chip: Any) -> None:
    region, _, dma = chip
    off = region.allocate("frames", "raw", 2 << 20)
    ch = dma.channel(0)
    rng = random.Random(1)
    for size in (0, 1, 63, 64, 4097, 1 << 20):
        src = rng.randbytes(size)
        ch.copy(src, RegionAddress(off), timeout=W.GENEROUS)
        assert bytes(region.view[off : off + size]) == src
        back = bytearray(size + 10)
        t = ch.copy(RegionAddress(off), back, size, destination_offset=5, timeout=W.GENEROUS)
        assert bytes(back[5 : 5 + size]) == src and back[:5] == bytes(5) and back[5 + size :] == bytes(5)
        assert t.done and t.error == 0
    stats = ch.statistics()
    assert stats.transfers == 12 and stats.errors == 0 and stats.bytes == 2 * sum((0, 1, 63, 64, 4097, 1 << 20))


def test_within_the_region_overlapping_is_a_memmove(chip: Any) -> None:
    region, _, dma = chip
    off = region.allocate("frames", "raw", 1 << 16)
    data = random.Random(2).randbytes(1000)
    region.view[off : off + 1000] = data
    dma.channel(0).copy(RegionAddress(off), RegionAddress(off + 100), 1000, timeout=W.GENEROUS)
    assert bytes(region.view[off + 100 : off + 1100]) == data


def test_numpy_arrays_and_pool_slots(chip: Any) -> None:
    region, _, dma = chip
    pool = PayloadPool.create(region, "pool", slots=2, slot_size=1 << 16)
    loan = pool.loan(timeout=0)
    frame = np.arange(1 << 14, dtype=np.float32)
    target = loan.array(np.float32, frame.shape)
    dma.channel(0).copy(frame, target, timeout=W.GENEROUS)  # a numpy view of the slot is a buffer too
    assert np.array_equal(target, frame)
    del target
    loan.cancel()
    pool.close()


@pytest.mark.parametrize("where", ["source", "destination", "private"])
def test_out_of_bounds_raises_the_error_interrupt_and_writes_nothing(chip: Any, where: str) -> None:
    region, hw, dma = chip
    off = region.allocate("frames", "raw", 4096)
    region.view[off : off + 4096] = b"\x5a" * 4096
    ch = dma.channel(2)
    ch.set_interrupts("CM7", complete_line=8, error_line=9)
    core = hw.core("CM7")
    seen: list[tuple[int, int]] = []
    arrived = threading.Event()

    def handler(line: int) -> None:
        seen.append((line, ch.clear_flags()))
        arrived.set()

    core.attach_handler(8, handler)
    core.attach_handler(9, handler)
    core.start()
    private = bytearray(b"\xa5" * 4096)
    if where == "source":
        args: tuple[Any, Any, int] = (RegionAddress(region.size - 100), RegionAddress(off), 4096)
    elif where == "destination":
        args = (private, RegionAddress(region.size - 4000), 4096)
    else:  # more bytes than the private destination has
        args = (RegionAddress(off), private, 8192)
    with pytest.raises(DmaError) as info:
        ch.copy(*args, timeout=W.GENEROUS)
    assert arrived.wait(W.GENEROUS)
    assert seen == [(9, FLAG_TEIF)]
    assert info.value.code == ch.last_error[0] != 0
    assert bytes(region.view[off : off + 4096]) == b"\x5a" * 4096 and private == b"\xa5" * 4096
    assert bytes(region.view[region.size - 4000 :]) == bytes(4000)
    assert ch.statistics().errors == 1 and ch.statistics().transfers == 0
    # the header of the region is outside the DMA's window as well
    with pytest.raises(DmaError):
        ch.copy(private, RegionAddress(0), 64, timeout=W.GENEROUS)
    assert Region.attach(region.name).close() is None  # the header is intact


def test_completion_interrupt_reaches_another_process(chip: Any, spawn: Any) -> None:
    """A child (the CM4) DMAs frames into the region; this process's CM7 handler checks each one."""
    region, hw, dma = chip
    size, frames = 1 << 16, 20
    base = region.allocate("frames", "raw", size + 64) + 64
    core = hw.core("CM7")
    dma_view = DmaController.attach(region, hw)
    problems: list[str] = []
    errors = threading.Event()

    def on_complete(line: int) -> None:
        flags = dma_view.clear_flags(1)
        if not flags & FLAG_TCIF:
            problems.append(f"transfer-complete line without TCIF (flags {flags})")
        done = region.mapping.load_u32(base - 64)
        if bytes(region.view[base : base + size]) != random.Random(done).randbytes(size):
            problems.append(f"frame {done} differs (flags {flags})")
        region.mapping.store_u32(base - 64, done + 1)
        region.mapping.futex_wake(base - 64)

    core.attach_handler(6, on_complete)
    core.attach_handler(7, lambda line: errors.set())
    core.start()
    results = spawn.ctx.Queue()
    child = spawn(W.dma_into_region, region.name, base, frames, size, results)
    try:
        first = results.get(timeout=W.GENEROUS)
        second = results.get(timeout=W.GENEROUS)
    except queue.Empty:
        raise AssertionError("the DMA child reported nothing") from None
    assert first == ("error", "DmaError") and second == ("ok", frames)
    assert errors.wait(W.GENEROUS)
    assert problems == []
    assert region.mapping.load_u32(base - 64) == frames
    stats = dma_view.statistics(1)
    assert stats.transfers == frames and stats.errors == 1 and stats.bytes == frames * size
    assert spawn.join(child) == 0
    dma_view.close()


def test_priority_then_channel_number_decide_the_order(chip: Any) -> None:
    """Queued while the engine is suspended, transfers start by priority, then lower channel first."""
    region, _, dma = chip
    off = region.allocate("frames", "raw", 1 << 16)
    low, medium, high_a, high_b = (dma.channel(n, priority=p) for n, p in (
        (3, Priority.LOW), (1, Priority.MEDIUM), (6, Priority.VERY_HIGH), (4, Priority.VERY_HIGH)))
    dma.suspend()
    order = [(low, 0), (medium, 1), (high_a, 2), (low, 3), (high_b, 4), (medium, 5)]
    transfers = [(ch.start(bytes([tag]) * 64, RegionAddress(off + 64 * tag)), tag) for ch, tag in order]
    assert not any(t.done for t, _ in transfers)
    dma.resume()
    for t, _ in transfers:
        t.wait(W.GENEROUS)
    started = sorted(transfers, key=lambda item: item[0]._native.times_ns[1])  # type: ignore[index]
    # channel 4 (very high) before channel 6 (very high), then medium, then low; FIFO within a channel
    assert [tag for _, tag in started] == [4, 2, 1, 5, 0, 3]
    for _, tag in transfers:
        assert bytes(region.view[off + 64 * tag : off + 64 * tag + 64]) == bytes([tag]) * 64


def test_buffers_stay_exported_until_the_copy_ends(chip: Any) -> None:
    region, _, dma = chip
    off = region.allocate("frames", "raw", 1 << 16)
    ch = dma.channel(0)
    dma.suspend()
    source = bytearray(b"\x42" * 4096)
    transfer = ch.start(source, RegionAddress(off))
    with pytest.raises(BufferError):
        source.extend(b"x")  # held by the queued transfer: it cannot move
    del source  # the transfer keeps the object alive
    dma.resume()
    transfer.wait(W.GENEROUS)
    assert bytes(region.view[off : off + 4096]) == b"\x42" * 4096
    again = bytearray(16)
    ch.copy(b"y" * 16, again, timeout=W.GENEROUS)
    again.extend(b"z")  # released once finished
    assert again == b"y" * 16 + b"z"


def test_close_aborts_queued_transfers(chip: Any) -> None:
    region, _, dma = chip
    off = region.allocate("frames", "raw", 4096)
    ch = dma.channel(0)
    dma.suspend()
    transfer = ch.start(b"a" * 64, RegionAddress(off))
    dma.close()
    with pytest.raises(DmaError, match="closed before the transfer ran"):
        transfer.wait(W.GENEROUS)
    assert bytes(region.view[off : off + 64]) == bytes(64)


def test_channels_are_claimed_per_process(chip: Any) -> None:
    region, hw, dma = chip
    dma.channel(5)
    with Region.attach(region.name) as other:
        twin = DmaController.attach(other, hw)
        twin_owner = twin.statistics(5).owner_pid
        assert twin_owner == os.getpid()
        twin.close()
    with pytest.raises(ValueError):
        dma.channel(99)
    with pytest.raises(TypeError):
        dma.channel(0).start(b"abc", b"readonly!")


def test_closed_controller_refuses(chip: Any) -> None:
    _, _, dma = chip
    ch = dma.channel(0)
    dma.close()
    with pytest.raises(IpcError):
        ch.start(b"a", bytearray(1))


def test_half_transfer_interrupt_comes_after_the_first_half(chip: Any) -> None:
    """HTIF: when the half-transfer handler runs, the first half is in place (a double buffer's cue)."""
    region, hw, dma = chip
    size = 1 << 20
    off = region.allocate("frames", "raw", size)
    ch = dma.channel(3)
    ch.set_interrupts("CM7", complete_line=10, error_line=11, half_line=12)
    core = hw.core("CM7")
    source = random.Random(9).randbytes(size)
    seen: list[tuple[int, bool]] = []
    done = threading.Event()

    def on_half(line: int) -> None:
        flags = ch.clear_flags(FLAG_HTIF)
        seen.append((flags & FLAG_HTIF, bytes(region.view[off : off + size // 2]) == source[: size // 2]))

    core.attach_handler(12, on_half, priority=0)  # before the completion handler when both are pending
    core.attach_handler(10, lambda line: done.set(), priority=5)
    core.start()
    for _ in range(5):
        region.view[off : off + size] = bytes(size)
        done.clear()
        ch.copy(source, RegionAddress(off), timeout=W.GENEROUS)
        assert done.wait(W.GENEROUS)
        assert bytes(region.view[off : off + size]) == source
    assert seen == [(FLAG_HTIF, True)] * 5


def test_a_channel_held_by_a_live_process_is_refused_and_a_dead_ones_taken_over(chip: Any, spawn: Any) -> None:
    region, _, dma = chip
    claimed, leave = spawn.ctx.Event(), spawn.ctx.Event()
    child = spawn(W.claim_dma_channel, region.name, 2, claimed, leave)
    assert claimed.wait(W.GENEROUS)
    assert dma.statistics(2).owner_pid == child.pid
    with pytest.raises(ResourceExhausted):
        dma.channel(2)
    leave.set()
    assert spawn.join(child) == 0
    ch = dma.channel(2)  # its owner is gone: taken over
    assert dma.statistics(2).owner_pid == os.getpid()
    ch.copy(b"ok", bytearray(2), timeout=W.GENEROUS)
