"""The chip memory model under the other objects of a region: toggle words, payload pools, RPMsg.

Each object kind gets the seeded bug (its firmware data left cacheable without maintenance, caught
by the checker and named by object and field) and the fix (the MPU makes the memory non-cacheable, or
the CM7 cleans / invalidates), which must exchange everything and report nothing. The other core is
a real second process attached as the CM4.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from itertools import count

import pytest

from ampipc import DomainPoweredDown, Ipc, MessageBuffer, Region
from ampipc.hw import Hardware
from ampipc.hw.cache import DCache, Mpu, ReportKind, reports
from ampipc.hw.power import PowerState
from ampipc.notify.base import WORD_LOAD
from ampipc.rpmsg import open_region
from ampipc.rpmsg._window import ModelledWindow, OutOfWindow, Window
from ampipc.rpmsg.virtqueue import DriverQueue
from ampipc.services import PayloadPool

from ._cache_support import (
    GENEROUS,
    cm4_pool_accept,
    cm4_pool_produce,
    cm4_rpmsg_echo,
    cm4_rpmsg_open,
    cm4_toggle_echo,
    cm4_toggle_receive,
)

SRAM4 = 0x38000000
SRAM4_SIZE = 64 * 1024
_names = count()
_ctx = multiprocessing.get_context("spawn")


def _unique(tag: str) -> str:
    return f"t-cobj-{tag}-{os.getpid()}-{next(_names)}"


@pytest.fixture
def chip_region() -> Iterator[Region]:
    region = Region.create(_unique("chip"), SRAM4_SIZE, chip="stm32h745", memory="SRAM4", core="CM7", cache_model=True)
    try:
        yield region
    finally:
        region.close()


@pytest.fixture
def plain_region() -> Iterator[Region]:
    region = Region.create(_unique("plain"), 64 * 1024)
    try:
        MessageBuffer.create(region, "desc", 1024)
        yield region
    finally:
        region.close()


class _Child:
    """One CM4 process with a result queue; always reaped."""

    def __init__(self, target: object, *args: object) -> None:
        self.results = _ctx.Queue()
        self.process = _ctx.Process(target=target, args=(*args, self.results), daemon=True)
        self.process.start()

    def result(self) -> object:
        value = self.results.get(timeout=GENEROUS * 4)
        self.process.join(GENEROUS)
        assert self.process.exitcode == 0
        return value

    def reap(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def _found(region: Region) -> set[tuple[ReportKind, str, str, str]]:
    return {(r.kind, r.core, r.object, r.field) for r in reports(region)}


def _non_cacheable(region: Region) -> Mpu:
    mpu = Mpu(region)
    mpu.configure_region(SRAM4, SRAM4_SIZE, number=0, cacheable=False, shareable=True)
    return mpu


# ---- toggle words -------------------------------------------------------------------------------


def test_a_cacheable_toggle_word_hides_the_event_from_the_cm4_and_the_read_is_reported(chip_region: Region) -> None:
    mpu = _non_cacheable(chip_region)
    ipc = Ipc.init(chip_region, channels=1, strategy="toggle", core="CM7")
    try:
        words = chip_region.lookup("ipc.tg")
        for i, block in enumerate(range(64, words.size, 64)):  # every word block, cacheable write-back
            mpu.configure_region(SRAM4 + words.offset + block, 64, number=1 + i, cacheable=True, bufferable=True)
        ipc.start()
        child = _Child(cm4_toggle_receive, chip_region.name)
        try:
            assert ipc.try_send(0, b"wake up")
            child.result()
        finally:
            child.reap()
        dirty = [r for r in reports(chip_region) if r.kind is ReportKind.DIRTY_READ and r.object == "ipc.tg"]
        assert dirty, reports(chip_region)
        assert all(r.core == "CM4" for r in dirty)
        assert any(r.field.startswith("direction ") and " sent[" in r.field for r in dirty), [r.field for r in dirty]
        # the buffers themselves are non-cacheable: the checker blames only the toggle words
        assert {r.object for r in reports(chip_region)} == {"ipc.tg"}
    finally:
        ipc.close()


def test_non_cacheable_toggle_words_carry_every_event_and_the_checker_stays_silent(chip_region: Region) -> None:
    _non_cacheable(chip_region)
    ipc = Ipc.init(chip_region, channels=1, strategy="toggle", core="CM7")
    child = None
    try:
        ipc.start()
        child = _Child(cm4_toggle_echo, chip_region.name, 1500)
        for i in range(1500):
            message = f"toggle {i}".encode() * (1 + i % 3)
            ipc.send(0, message, timeout=GENEROUS)
            assert ipc.receive(0, timeout=GENEROUS) == message
        assert child.result() == 1500
        assert ipc.strategy_statistics()["events_raised"] > 0
    finally:
        if child is not None:
            child.reap()
        ipc.close()
    assert reports(chip_region) == []
    assert DCache(chip_region).lines() == []


# ---- payload pools ------------------------------------------------------------------------------


def test_a_cm7_frame_committed_without_a_clean_is_caught_when_the_cm4_reads_the_slot(
    chip_region: Region, plain_region: Region
) -> None:
    pool = PayloadPool.create(chip_region, "frames", slots=2, slot_size=1024)
    try:
        desc = MessageBuffer.attach(plain_region, "desc")
        loan = pool.loan(timeout=GENEROUS)
        loan.view[:11] = b"frame 0 ..."
        loan.commit(desc, length=11)
        child = _Child(cm4_pool_accept, chip_region.name, plain_region.name)
        try:
            seen = child.result()
        finally:
            child.reap()
        assert seen == bytes(11)  # the CM4 read memory: the frame is still in the CM7's cache
        found = _found(chip_region)
        assert (ReportKind.DIRTY_READ, "CM4", "frames", "slot[0]+0") in found, found
    finally:
        pool.close()


def test_a_cm7_frame_cleaned_before_its_commit_reaches_the_cm4_silently(chip_region: Region, plain_region: Region) -> None:
    pool = PayloadPool.create(chip_region, "frames", slots=2, slot_size=1024)
    try:
        desc = MessageBuffer.attach(plain_region, "desc")
        dcache = DCache(chip_region)
        loan = pool.loan(timeout=GENEROUS)
        loan.view[:11] = b"frame 0 ..."
        loan.commit(desc, length=11)
        address, size = dcache.address_of("frames")
        dcache.SCB_CleanDCache_by_Addr(address, size)
        child = _Child(cm4_pool_accept, chip_region.name, plain_region.name)
        try:
            assert child.result() == b"frame 0 ..."
        finally:
            child.reap()
        assert reports(chip_region) == []
    finally:
        pool.close()


@pytest.mark.parametrize("invalidate", [False, True])
def test_the_cm7_reads_a_reused_slot_through_its_cache(chip_region: Region, plain_region: Region, invalidate: bool) -> None:
    pool = PayloadPool.create(chip_region, "frames", slots=1, slot_size=256)
    dcache = DCache(chip_region)
    frames = [b"A" * 64, b"B" * 64, b"C" * 64]
    child = _Child(cm4_pool_produce, chip_region.name, plain_region.name, frames)
    try:
        desc = MessageBuffer.attach(plain_region, "desc")
        seen = []
        for _ in frames:
            raw = desc.receive(timeout=GENEROUS)
            if invalidate:  # what firmware must do before reading what the other core wrote
                dcache.SCB_InvalidateDCache_by_Addr(*dcache.address_of("frames"))
            with pool.accept(raw) as payload:
                seen.append(bytes(payload.data))
        assert child.result() == len(frames)
    finally:
        child.reap()
        pool.close()
    if invalidate:
        assert seen == frames
        assert reports(chip_region) == []
    else:
        assert seen == [frames[0]] * 3  # the first fill, hit again and again
        assert (ReportKind.STALE_READ, "CM7", "frames", "slot[0]+0") in _found(chip_region)


# ---- RPMsg over a chip region -------------------------------------------------------------------


def test_a_link_table_left_in_the_cm7_cache_never_reaches_the_cm4(chip_region: Region) -> None:
    host = open_region(chip_region, "link0", "driver", create=True, open_timeout=GENEROUS, num=8)
    child = _Child(cm4_rpmsg_open, chip_region.name)
    try:
        assert child.result() is False  # its open timed out: the table's magic never reached memory
    finally:
        child.reap()
        host.close()
    found = _found(chip_region)
    assert (ReportKind.DIRTY_READ, "CM4", "link0", "magic") in found, found


def test_an_rpmsg_echo_over_non_cacheable_memory_runs_through_the_model_and_stays_silent(chip_region: Region) -> None:
    _non_cacheable(chip_region)
    child = _Child(cm4_rpmsg_echo, chip_region.name)
    host = None
    try:
        host = open_region(chip_region, "link0", "driver", create=True, open_timeout=GENEROUS, num=8)
        transport = host.transport
        assert isinstance(transport.window, ModelledWindow)
        ept = host.create_endpoint("echo")
        ept.wait_bound(GENEROUS)
        for i in range(400):
            data = f"echo {i} ".encode() * (1 + i % 11)
            ept.send(data, timeout=GENEROUS)
            assert ept.receive(GENEROUS) == data
        assert isinstance(host._core._drv_rx, DriverQueue) and isinstance(host._core._drv_tx, DriverQueue)  # noqa: SLF001
        ept.destroy()
        assert child.result() == 400
        assert host.statistics.protocol_errors == 0
    finally:
        if host is not None:
            host.close()
        child.reap()
    assert reports(chip_region) == []


# ---- power domains under every object kind ------------------------------------------------------


def test_a_stopped_domain_refuses_pool_rpmsg_and_strategy_word_accesses_until_it_wakes(plain_region: Region) -> None:
    region = Region.create(_unique("d2"), 64 * 1024, chip="stm32h745", memory="SRAM1", core="CM7")
    try:
        hw = Hardware.create(region)
        pool = PayloadPool.create(region, "frames", slots=2, slot_size=256)
        desc = MessageBuffer.attach(plain_region, "desc")
        loan = pool.loan(timeout=GENEROUS)
        loan.view[:5] = b"hello"
        ipc = Ipc.init(region, channels=1, strategy="toggle", core="CM7")
        words = region.lookup("ipc.tg")
        host = open_region(region, "link0", "driver", create=True, open_timeout=GENEROUS, num=4)
        window = host.transport.window
        power = hw.core("CM4").power
        power.enter(PowerState.STOP)  # D2, and SRAM1 with it, goes down
        try:
            with pytest.raises(DomainPoweredDown) as caught:
                loan.commit(desc, length=5)
            assert caught.value.domain == "D2" and caught.value.memory == "SRAM1"
            with pytest.raises(DomainPoweredDown):
                pool.try_loan()
            with pytest.raises(DomainPoweredDown):
                window.u32(0)
            with pytest.raises(DomainPoweredDown):
                region.mapping.data_word_u32(words.offset + 64, WORD_LOAD)
        finally:
            power.wake()
        loan.commit(desc, length=5)  # the loan survived the refusal
        with pool.receive(desc, timeout=GENEROUS) as payload:
            assert bytes(payload.data) == b"hello"
        host.close()
        ipc.close()
        pool.close()
        hw.close()
    finally:
        region.close()


@pytest.mark.parametrize("modelled", [False, True])
@pytest.mark.parametrize(("offset", "length"), [(0, -1), (16, -16), (-4, 4), (0, 1 << 20)])
def test_a_window_refuses_an_access_out_of_its_area_alike_with_and_without_the_model(
    chip_region: Region, modelled: bool, offset: int, length: int
) -> None:
    """A length or offset from shared memory outside the window is OutOfWindow on both window kinds."""
    base = chip_region.allocate(_unique("win"), "test", 4096)
    view = chip_region.view[base : base + 4096]
    try:
        window = (ModelledWindow if modelled else Window)(view, chip_region.mapping, base)
        window.write(16, b"kept")
        with pytest.raises(OutOfWindow):
            window.read(offset, length)
        with pytest.raises(OutOfWindow):
            window.fill(offset, length)
        assert window.read(16, 4) == b"kept"  # the refused accesses wrote nothing
    finally:
        view.release()
