"""The CM7 D-cache model under real buffers, two real processes, and the coherency checker.

The CM7 is this test process (its one modelled cache: 16 KiB, 4 ways, as the chip); the CM4 is a
spawned child with no cache. Each test seeds one bug class, or its fix, and checks what memory
holds, what each side received, and what the checker reports (object and field).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import count

import pytest

import ampipc
from ampipc import MessageBuffer, Region
from ampipc.hw import Hardware
from ampipc.hw.cache import CachePolicy, DCache, Mpu, ReportKind, clear_reports, policy_of, reports
from ampipc.hw.power import PowerState

from ._cache_support import GENEROUS, cm4_echo, cm4_poll_once, cm4_send

SRAM4 = 0x38000000
_names = count()
_ctx = multiprocessing.get_context("spawn")


@pytest.fixture
def chip_region() -> Iterator[Region]:
    region = Region.create(f"t-cache-{os.getpid()}-{next(_names)}", 64 * 1024, chip="stm32h745", memory="SRAM4",
                           core="CM7", cache_model=True)
    try:
        MessageBuffer.create(region, "to_cm4", 256)
        MessageBuffer.create(region, "to_cm7", 256)
        yield region
    finally:
        region.close()


def _run_child(target: object, *args: object) -> object:
    results = _ctx.Queue()
    child = _ctx.Process(target=target, args=(*args, results), daemon=True)
    child.start()
    try:
        value = results.get(timeout=GENEROUS)
        child.join(GENEROUS)
        assert child.exitcode == 0
        return value
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)


def _kinds(region: Region) -> set[tuple[ReportKind, str, str, str]]:
    return {(r.kind, r.core, r.object, r.field) for r in reports(region)}


def test_an_uncleaned_send_stays_in_the_cm7_cache_and_the_cm4_read_is_reported(chip_region: Region) -> None:
    tx = MessageBuffer.attach(chip_region, "to_cm4")
    tx.send(b"frame 0")
    entry = chip_region.lookup("to_cm4")
    assert chip_region.mapping.load_u32(entry.offset + 64) == 0  # head is still 0 in memory
    assert any(line.dirty for line in DCache(chip_region).lines())
    assert _run_child(cm4_poll_once, chip_region.name) is None  # the CM4 sees an empty buffer
    found = _kinds(chip_region)
    assert (ReportKind.DIRTY_READ, "CM4", "to_cm4", "head") in found
    report = next(r for r in reports(chip_region) if r.field == "head")
    assert report.address == SRAM4 + entry.offset + 64
    assert "to_cm4.head" in str(report)


def test_clean_by_address_publishes_the_message_and_the_checker_stays_silent(chip_region: Region) -> None:
    tx = MessageBuffer.attach(chip_region, "to_cm4")
    dcache = DCache(chip_region)
    tx.send(b"frame 0")
    dcache.SCB_CleanDCache_by_Addr(*dcache.address_of("to_cm4"))
    assert not any(line.dirty for line in dcache.lines())
    assert _run_child(cm4_poll_once, chip_region.name) == b"frame 0"
    assert reports(chip_region) == []


def test_a_cached_index_hides_the_cm4_message_until_invalidated(chip_region: Region) -> None:
    rx = MessageBuffer.attach(chip_region, "to_cm7")
    dcache = DCache(chip_region)
    assert rx.try_receive() is None  # the CM7 caches the empty ring's lines
    assert _run_child(cm4_send, chip_region.name, b"from the CM4") is True
    # The CM4 closed its side as it left; through its stale head the CM7 believes it drained
    # everything: the message in memory is invisible to it.
    with pytest.raises(ampipc.PeerClosed):
        rx.try_receive()
    assert (ReportKind.STALE_READ, "CM7", "to_cm7", "head") in _kinds(chip_region)
    clear_reports(chip_region)
    dcache.SCB_InvalidateDCache_by_Addr(*dcache.address_of("to_cm7"))
    assert rx.try_receive() == b"from the CM4"
    dcache.SCB_CleanDCache_by_Addr(*dcache.address_of("to_cm7"))  # the tail the CM7 wrote
    assert reports(chip_region) == []


def test_an_mpu_non_cacheable_region_makes_a_blocking_exchange_coherent(chip_region: Region) -> None:
    policy = Mpu(chip_region).configure_region(SRAM4, 64 * 1024, cacheable=False, shareable=True)
    assert policy is CachePolicy.NON_CACHEABLE
    tx = MessageBuffer.attach(chip_region, "to_cm4")
    rx = MessageBuffer.attach(chip_region, "to_cm7")
    results = _ctx.Queue()
    child = _ctx.Process(target=cm4_echo, args=(chip_region.name, 2000, results), daemon=True)
    child.start()
    try:
        for i in range(2000):
            message = f"message {i}".encode() * (1 + i % 7)
            tx.send(message, timeout=GENEROUS)
            assert rx.receive(timeout=GENEROUS) == message
        got = results.get(timeout=GENEROUS)
        child.join(GENEROUS)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)
    assert len(got) == 2000 and got[1999] == b"message 1999" * (1 + 1999 % 7)
    assert DCache(chip_region).lines() == []  # nothing was cached
    assert reports(chip_region) == []


def test_a_partial_line_invalidate_that_drops_a_neighbours_dirty_bytes_is_reported(chip_region: Region) -> None:
    dcache = DCache(chip_region)
    base, _ = dcache.address_of("to_cm4")
    storage = base + 256  # the ring's storage starts after its 256-byte header
    m = chip_region.mapping
    offset = storage - SRAM4
    m.model_write(offset, b"A" * 32)  # one whole line, dirty
    dcache.invalidate_by_addr(storage, 32)  # aligned: discards only what it names
    assert reports(chip_region) == []
    m.model_write(offset, b"B" * 32)
    dcache.invalidate_by_addr(storage + 8, 8)  # touches the line, names 8 of its bytes
    found = reports(chip_region)
    assert [(r.kind, r.object, r.offset - offset) for r in found] == [(ReportKind.PARTIAL_INVALIDATE, "to_cm4", 0)]
    assert bytes(chip_region.view[offset:offset + 32]) == b"\0" * 32  # nothing reached memory


def test_mpu_attribute_rules_of_the_cortex_m7() -> None:
    assert policy_of(cacheable=True, bufferable=True, shareable=False, tex=1) is CachePolicy.WRITE_BACK
    assert policy_of(cacheable=True, bufferable=True, shareable=False, tex=0) is CachePolicy.WRITE_BACK_NO_WRITE_ALLOCATE
    assert policy_of(cacheable=True, bufferable=False, shareable=False) is CachePolicy.WRITE_THROUGH
    assert policy_of(cacheable=True, bufferable=True, shareable=True, tex=1) is CachePolicy.NON_CACHEABLE
    assert policy_of(cacheable=False, bufferable=False, shareable=True, tex=1) is CachePolicy.NON_CACHEABLE
    with pytest.raises(ValueError):
        policy_of(cacheable=True, bufferable=True, shareable=False, tex=5)


def test_an_mpu_region_must_be_a_power_of_two_aligned_to_its_size(chip_region: Region) -> None:
    mpu = Mpu(chip_region)
    with pytest.raises(ValueError, match="power of two"):
        mpu.configure_region(SRAM4, 3000, cacheable=False)
    with pytest.raises(ValueError, match="power of two"):
        mpu.configure_region(SRAM4 + 32, 64, cacheable=False)
    with pytest.raises(ValueError, match="0..15"):
        mpu.configure_region(SRAM4, 64, number=16, cacheable=False)


def test_a_region_without_the_model_has_no_cache_to_maintain() -> None:
    region = Region.create(f"t-cache-plain-{os.getpid()}-{next(_names)}", 64 * 1024)
    try:
        assert region.mapping.model_core is None
        with pytest.raises(RuntimeError):
            DCache(region)
    finally:
        region.close()


def test_a_domain_in_stop_refuses_buffer_operations_until_it_wakes() -> None:
    region = Region.create(f"t-cache-d2-{os.getpid()}-{next(_names)}", 64 * 1024, chip="stm32h745",
                           memory="SRAM1", core="CM7")
    try:
        hw = Hardware.create(region)
        buffer = MessageBuffer.create(region, "in_d2", 256)
        buffer.send(b"before")
        power = hw.core("CM4").power
        power.enter(PowerState.STOP)  # the CM4's deep sleep stops D2
        with pytest.raises(ampipc.DomainPoweredDown) as caught:
            buffer.send(b"while D2 sleeps")
        assert caught.value.domain == "D2" and caught.value.memory == "SRAM1"
        assert isinstance(caught.value, ampipc.IpcError)
        power.enter(PowerState.SLEEP)  # SLEEP stops the core's clock only: D2 runs
        assert buffer.receive(timeout=1) == b"before"
        power.enter(PowerState.STOP)
        with pytest.raises(ampipc.DomainPoweredDown):
            buffer.receive(timeout=0)
        power.wake()  # the wake-up handler: back to RUN, D2 with it
        buffer.send(b"after")
        assert buffer.receive(timeout=1) == b"after"
    finally:
        region.close()


def test_d3_stays_reachable_while_both_cores_stop() -> None:
    region = Region.create(f"t-cache-d3-{os.getpid()}-{next(_names)}", 64 * 1024, chip="stm32h745",
                           memory="SRAM4", core="CM7")
    try:
        hw = Hardware.create(region)
        buffer = MessageBuffer.create(region, "in_d3", 256)
        hw.core("CM4").power.enter(PowerState.STOP)
        hw.core("CM7").power.enter(PowerState.STOP)
        buffer.send(b"still powered")
        assert buffer.receive(timeout=1) == b"still powered"
    finally:
        region.close()


def test_the_cache_demo_catches_the_bug_and_passes_both_fixes() -> None:
    done = subprocess.run([sys.executable, "-m", "ampipc.cli", "demo", "cache"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^  run 1 \(no maintenance\)\s+0/8 replies, [1-9]\d* coherency reports.*: caught$", out, re.M), out
    assert re.search(r"^  run 2 \(MPU non-cacheable\)\s+8/8 replies, 0 coherency reports, CM7 cache 0 hits / 0 misses: "
                     r"clean$", out, re.M), out
    assert re.search(r"^  run 3 \(clean/invalidate\)\s+8/8 replies, 0 coherency reports.*: clean$", out, re.M), out
    assert re.search(r"^  result\s+OK$", out, re.M), out
    assert "m7_to_m4.head at 0x38" in out  # where the checker caught it


def test_a_dma_read_of_bytes_the_cm7_holds_dirty_is_reported_and_copies_memory(chip_region: Region) -> None:
    from ampipc.hw.dma import DmaController, RegionAddress

    hw = Hardware.create(chip_region)
    dma = DmaController.create(chip_region, hw)
    try:
        source = chip_region.allocate("frame", "test_frame", 64)
        chip_region.view[source:source + 64] = b"m" * 64  # what memory holds
        chip_region.mapping.model_write(source, b"c" * 64)  # the CM7's newer frame, in its cache only
        out = bytearray(64)
        dma.channel(0).copy(RegionAddress(source), out, 64, timeout=GENEROUS)
        assert bytes(out) == b"m" * 64  # the DMA copied memory, not the cache
        found = reports(chip_region)
        assert {(r.kind, r.core, r.object) for r in found} == {(ReportKind.DIRTY_READ, "DMA", "frame")}
        clear_reports(chip_region)
        DCache(chip_region).clean_by_addr(SRAM4 + source, 64)
        dma.channel(0).copy(RegionAddress(source), out, 64, timeout=GENEROUS)
        assert bytes(out) == b"c" * 64 and reports(chip_region) == []
    finally:
        dma.close()
