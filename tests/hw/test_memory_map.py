"""The chip memory map (`ampipc.hw.memory`) and regions placed in a chip memory.

The table against the reference values of RM0399 / AN5617 Table 2, regions created in every
memory with their size bounds and chip addresses, the record as the C memory model reads it,
attach refusals by real child processes acting as the CM4, wrong names, corrupt records, the power
word wiring, and the ``ampipc layout`` / ``ampipc top`` output.
"""

from __future__ import annotations

import json
import os
import queue
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc import MessageBuffer, Region
from ampipc import _layout as L
from ampipc.errors import CorruptRegion, DomainPoweredDown, MemoryUnreachable
from ampipc.hw import memory as M

from ._memory_support import GENEROUS, attach_as_core, attach_custom_chip, custom_chip

pytestmark = pytest.mark.timeout(300)

KiB = 1024
D, C, X = M.Access.DIRECT, M.Access.CACHEABLE, M.Access.MDMA_ONLY
# name: (base, size, domain, CM7 access, CM4 access), written out from the reference, not from the module
REFERENCE = {
    "ITCM": (0x00000000, 64 * KiB, 1, D, X),
    "DTCM": (0x20000000, 128 * KiB, 1, D, X),
    "AXISRAM": (0x24000000, 512 * KiB, 1, C, X),
    "SRAM1": (0x30000000, 128 * KiB, 2, C, D),
    "SRAM2": (0x30020000, 128 * KiB, 2, C, D),
    "SRAM3": (0x30040000, 32 * KiB, 2, C, D),
    "SRAM4": (0x38000000, 64 * KiB, 3, C, D),
    "BKSRAM": (0x38800000, 4 * KiB, 3, C, D),
}
SMALL: dict[str, Any] = {"directory_capacity": 8, "process_capacity": 4}  # what fits the 4 KiB backup SRAM


def _shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


# ---- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", ["STM32H745", "stm32h747"])
def test_table_matches_the_reference(chip: str) -> None:
    info = M.chip_info(chip)
    assert info.cores == ("CM7", "CM4")
    assert (info.dcache_size, info.dcache_ways, info.line_size) == (16384, 4, 32)
    assert [m.name for m in info.memories] == list(REFERENCE)
    for name, (base, size, domain, cm7, cm4) in REFERENCE.items():
        mem = M.memory_info(chip, name.lower())
        assert (mem.base, mem.size, int(mem.domain), mem.domain_name) == (base, size, domain, f"D{domain}")
        assert dict(mem.access) == {"CM7": cm7, "CM4": cm4}
        assert mem.stays_powered == (domain == 3)
        for core, access in mem.access.items():
            assert access.reachable == (access in (D, C))
            # every access a core cannot use says why, quoting the table; usable ones say nothing
            reason = mem.reason_for(core)
            assert (reason != "") == (not access.reachable)
            if reason:
                assert "Table 2" in reason and "\n" not in reason
        assert mem.default_policy == (L.CACHE_POLICY_WRITE_BACK if cm7 is C else L.CACHE_POLICY_NONCACHEABLE)
    assert "indirectly" in M.memory_info(chip, "AXISRAM").reason_for("cm4")


def test_table_is_read_only() -> None:
    mem = M.memory_info("stm32h745", "SRAM4")
    with pytest.raises(TypeError):
        mem.access["CM4"] = M.Access.NONE  # type: ignore[index]
    with pytest.raises(AttributeError):
        mem.base = 0  # type: ignore[misc]


def test_wrong_chip_and_memory_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown chip 'stm32h999'.*STM32H745.*STM32H747"):
        M.chip_info("stm32h999")
    with pytest.raises(ValueError, match=r"no memory 'SRAM9'.*ITCM.*BKSRAM"):
        M.memory_info("stm32h745", "SRAM9")
    with pytest.raises(ValueError, match=r"no core 'CM0'"):
        M.check_access("stm32h745", "SRAM4", "CM0")
    with pytest.raises(ValueError, match="unknown core"):
        M.memory_info("stm32h745", "SRAM4").access_for("M33")
    assert M.check_access("stm32h745", "sram4", "cm4") is M.Access.DIRECT
    with pytest.raises(MemoryUnreachable) as info:
        M.check_access("stm32h745", "itcm", "cm4")
    assert (info.value.core, info.value.memory) == ("CM4", "ITCM") and "MDMA" in info.value.reason


def test_register_chip_extends_the_table_and_checks_it(make_region: Callable[..., Region]) -> None:
    both = {"CM7": M.Access.CACHEABLE, "CM4": M.Access.DIRECT}
    custom = M.ChipInfo(f"TESTCHIP{os.getpid() % 10000}", ("CM7", "CM4"),
                        (M.MemoryInfo("SHARED", 0x10000000, 32 * KiB, M.Domain.D3, both),))
    M.register_chip(custom)
    assert custom.name in M.known_chips() and M.chip_info(custom.name.lower()) == custom
    region = make_region(32 * KiB, chip=custom.name, memory="shared", core="CM4")
    assert region.placement is not None and region.placement.chip == custom.name
    assert region.chip_address(64) == 0x10000040
    with pytest.raises(ValueError, match="registered already"):
        M.register_chip(M.ChipInfo(custom.name, ("CM7",), (M.MemoryInfo("A", 0, 64, M.Domain.D3, {"CM7": M.Access.DIRECT}),)))
    overlapping = M.ChipInfo("BADCHIP1", ("CM7",), (M.MemoryInfo("A", 0, 4096, M.Domain.D1, {"CM7": M.Access.DIRECT}),
                                                    M.MemoryInfo("B", 2048, 4096, M.Domain.D1, {"CM7": M.Access.DIRECT})))
    with pytest.raises(ValueError, match="overlap"):
        M.register_chip(overlapping)
    no_reason = M.ChipInfo("BADCHIP2", ("CM7", "CM4"),
                           (M.MemoryInfo("A", 0, 4096, M.Domain.D1, {"CM7": M.Access.DIRECT, "CM4": M.Access.NONE}),))
    with pytest.raises(ValueError, match="give the reason"):
        M.register_chip(no_reason)
    missing_core = M.ChipInfo("BADCHIP3", ("CM7", "CM4"), (M.MemoryInfo("A", 0, 4096, M.Domain.D1, {"CM7": M.Access.DIRECT}),))
    with pytest.raises(ValueError, match="every core"):
        M.register_chip(missing_core)
    assert "BADCHIP1" not in M.known_chips()


@pytest.mark.parametrize("register", [False, True])
def test_a_process_attaches_to_a_registered_chip_only_with_the_same_table(
    register: bool, make_region: Callable[..., Region], spawn: Any
) -> None:
    name = f"OTHERCHIP{os.getpid() % 10000}"
    if name not in M.known_chips():
        M.register_chip(custom_chip(name))
    region = make_region(16 * KiB, chip=name, memory="SHARED", core="CM7")
    results = spawn.ctx.Queue()
    child = spawn(attach_custom_chip, region.name, name, register, results)
    try:
        result = results.get(timeout=GENEROUS)
    except queue.Empty:
        pytest.fail("the child reported nothing")
    assert spawn.join(child) == 0
    if register:
        assert result == ("ok", name, "SHARED", 0x10000000)
    else:
        assert result[0] == "incompatible", result
        assert name in result[1] and "register_chip" in result[1]


# ---- regions in chip memories --------------------------------------------------------------------


def _record(region: Region) -> tuple[Any, ...]:
    entry = region.lookup(L.CHIP_RECORD_NAME, L.KIND_CHIP_MEMORY)
    with region.view as view:
        return tuple(L.CHIP_HEADER.unpack_from(view, entry.offset)) + (entry,)


@pytest.mark.parametrize("memory", list(REFERENCE))
def test_create_in_every_memory(memory: str, make_region: Callable[..., Region]) -> None:
    base, size, domain, cm7, _ = REFERENCE[memory]
    region = make_region(size, memory=memory.lower(), **SMALL)
    placement = region.placement
    assert placement is not None
    assert placement == M.ChipPlacement("STM32H745", memory, base, M.Domain(domain), False, placement.record_offset)
    assert M.placement_of(region) == placement
    assert region.core is None
    assert region.chip_address(0) == base and region.chip_address(size - 1) == base + size - 1
    (magic, version, chip, mem, rec_base, mem_size, flags, line, rec_domain, cache, ways, lines, p0, p1, p2, p3,
     policy, entry) = _record(region)
    assert (magic, version, chip.rstrip(b"\0"), mem.rstrip(b"\0")) == (0x4D434D41, 1, b"STM32H745", memory.encode())
    assert (rec_base, mem_size, flags, line, rec_domain, cache, ways) == (base, size, 0, 32, domain, 16384, 4)
    assert lines == size // 32 and (p0, p1, p2, p3) == (0, 0, 0, 0)
    assert policy == (L.CACHE_POLICY_WRITE_BACK if cm7 is C else L.CACHE_POLICY_NONCACHEABLE)
    capacity = region.mapping.load_u32(entry.offset + L.CHIP_OFF_REPORT_CAPACITY)
    assert 1 <= capacity <= 256 and entry.size == L.chip_record_size(size, capacity)
    assert region.mapping.load_u32(entry.offset + L.CHIP_OFF_REPORTS_USED) == 0
    with region.view as view:
        assert bytes(view[entry.offset + L.CHIP_OFF_REPORTS: entry.offset + entry.size]) == bytes(entry.size - 160)
    # the region is usable: a message buffer fits even in the backup SRAM
    buf = MessageBuffer.create(region, "tx", 256)
    buf.send(b"placed")
    assert buf.receive() == b"placed"
    with pytest.raises(ValueError, match=rf"{memory} is at most {size} bytes"):
        Region.create(region.name + "x", size + 1, memory=memory)


def test_lines_round_up_and_cache_model_flag(make_region: Callable[..., Region]) -> None:
    region = make_region(40_000 + 5, memory="SRAM4", cache_model=True)
    fields = _record(region)
    assert fields[11] == 1251  # ceil(40005 / 32)
    assert fields[6] == L.CHIP_FLAG_CACHE_MODEL
    assert region.placement is not None and region.placement.cache_model


def test_backup_sram_needs_small_capacities(unique_name: Callable[..., str]) -> None:
    name = unique_name("bk")
    with pytest.raises(ValueError, match=r"directory_capacity=128.*not 4096"):
        Region.create(name, 4096, memory="BKSRAM")
    assert not _shm_exists(name)


def test_object_addresses_in_sram4(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4")
    offsets = [region.allocate(f"obj{i}", "raw", 100 + i) for i in range(5)]
    for offset in offsets:
        assert region.chip_address(offset) == 0x38000000 + offset
    assert M.placement_of(region) == region.placement
    for bad in (-1, 64 * KiB, True, 1.0):
        with pytest.raises(ValueError, match="outside region"):
            region.chip_address(bad)  # type: ignore[arg-type]


def test_plain_region_has_no_placement(region: Region) -> None:
    assert region.placement is None and region.core is None and M.placement_of(region) is None
    with pytest.raises(ValueError, match="not placed in a chip memory"):
        region.chip_address(0)
    with pytest.raises(ValueError, match="not placed in a chip memory"):
        Region.attach(region.name, core="CM7")
    # its objects are still page aligned as before; a chip region's only 64-byte aligned
    assert region.mapping.load_u32(L.OFF_OBJECTS_OFFSET) % 4096 == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(memory=st.sampled_from(sorted(REFERENCE)), data=st.data())
def test_any_size_up_to_the_memory_fits(memory: str, data: st.DataObject, unique_name: Callable[..., str]) -> None:
    base, size, *_ = REFERENCE[memory]
    smallest = 8 * KiB if size > 4 * KiB else 3 * KiB
    region_size = data.draw(st.integers(smallest, size))
    region = Region.create(unique_name("h"), region_size, memory=memory, **SMALL)
    try:
        assert region.placement is not None
        entry = region.lookup(L.CHIP_RECORD_NAME)
        assert _record(region)[11] == -(-region_size // 32)
        assert entry.offset + entry.size <= region_size - region.free_bytes
        offset = data.draw(st.integers(0, region_size - 1))
        assert region.chip_address(offset) == base + offset
    finally:
        region.close()


def test_wrong_names_at_create(unique_name: Callable[..., str]) -> None:
    name = unique_name("w")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"chip": "stm32h745"}, "give memory="),
        ({"core": "CM7"}, "give memory="),
        ({"cache_model": True}, "give memory="),
        ({"chip": "stm32f4", "memory": "SRAM4"}, "unknown chip"),
        ({"memory": "SRAM5"}, "no memory 'SRAM5'"),
        ({"memory": "SRAM4", "core": "CM3"}, "no core 'CM3'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            Region.create(name, 64 * KiB, **kwargs)
        assert not _shm_exists(name)


@pytest.mark.parametrize("memory", ["ITCM", "DTCM", "AXISRAM"])
def test_create_as_cm4_in_a_cm7_memory_is_refused(memory: str, unique_name: Callable[..., str]) -> None:
    name = unique_name("r")
    with pytest.raises(MemoryUnreachable) as info:
        Region.create(name, 32 * KiB, memory=memory, core="cm4")
    assert (info.value.core, info.value.memory) == ("CM4", memory)
    assert info.value.reason == M.memory_info("stm32h745", memory).reason_for("CM4") != ""
    assert not _shm_exists(name)


# ---- attach by real processes acting as a core ---------------------------------------------------


def _run_child(spawn: Any, region: Region, core: str) -> tuple[Any, ...]:
    results = spawn.ctx.Queue()
    child = spawn(attach_as_core, region.name, core, results)
    try:
        result: tuple[Any, ...] = results.get(timeout=GENEROUS)
    except queue.Empty:
        pytest.fail("the child reported nothing")
    assert spawn.join(child) == 0
    return result


@pytest.mark.parametrize("memory", ["DTCM", "AXISRAM"])
def test_cm4_child_is_refused_on_cm7_memories(memory: str, make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(64 * KiB, memory=memory, core="CM7")
    assert region.core == "CM7"
    before = region.processes()
    result = _run_child(spawn, region, "CM4")
    assert result[0] == "unreachable", result
    _, core, mem, reason, text = result
    assert (core, mem) == ("CM4", memory)
    assert reason == M.memory_info("stm32h745", memory).reason_for("CM4") and reason in text
    if memory == "AXISRAM":
        assert "indirectly" in reason
    assert region.processes() == before  # the refused child left no slot taken


@pytest.mark.parametrize("memory", ["SRAM4", "SRAM1"])
def test_cm4_child_is_accepted_on_shared_memories(memory: str, make_region: Callable[..., Region], spawn: Any) -> None:
    region = make_region(64 * KiB, memory=memory, core="CM7")
    tx = MessageBuffer.create(region, "tx", 256)
    tx.send(b"from the CM7")
    result = _run_child(spawn, region, "cm4")
    assert result[0] == "ok", result
    _, mem, core, address, offset, registered, message = result
    assert (mem, core, registered, message) == (memory, "CM4", True, b"from the CM7")
    assert offset == region.lookup("tx").offset and address == REFERENCE[memory][0] + offset


def test_attach_with_a_wrong_core_name(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4")
    before = region.processes()
    with pytest.raises(ValueError, match="no core 'CM33'"):
        Region.attach(region.name, core="CM33")
    assert region.processes() == before
    other = Region.attach(region.name, core="CM7")
    try:
        assert other.core == "CM7" and other.placement == region.placement
    finally:
        other.close()


def test_core_attaches_the_memory_model(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4", core="CM7", cache_model=True)
    assert region.mapping.model_core == L.MODEL_CORE_CM7
    cm4 = Region.attach(region.name, core="CM4")
    plain = Region.attach(region.name)
    try:
        assert cm4.mapping.model_core == L.MODEL_CORE_CM4
        assert plain.mapping.model_core is None and plain.core is None and plain.placement == region.placement
    finally:
        cm4.close()
        plain.close()


# ---- power domains -------------------------------------------------------------------------------


def test_buffers_in_d2_stop_while_d2_sleeps(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM1")
    assert region.placement is not None
    word = region.placement.record_offset + L.CHIP_OFF_DOMAIN_POWER + 4 * 2
    buf = MessageBuffer.create(region, "tx", 256)
    region.mapping.store_u32(word, 1)  # what hw.power writes as D2 enters a low-power mode
    with pytest.raises(DomainPoweredDown) as info:
        buf.send(b"lost")
    assert (info.value.domain, info.value.memory) == ("D2", "SRAM1")
    region.mapping.store_u32(word, 0)
    buf.send(b"kept")
    assert buf.receive() == b"kept"


def test_d3_memory_is_not_tied_to_a_sleeping_domain(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4")
    assert region.placement is not None
    buf = MessageBuffer.create(region, "tx", 256)
    for domain in (1, 2):  # D1 or D2 asleep: SRAM4 stays reachable
        region.mapping.store_u32(region.placement.record_offset + L.CHIP_OFF_DOMAIN_POWER + 4 * domain, 1)
    buf.send(b"still here")
    assert buf.receive() == b"still here"


# ---- corrupt records -----------------------------------------------------------------------------

CORRUPTIONS = [
    ("magic", 0, 0x12345678),
    ("version", 4, 2),
    ("base address", 40, 0x38000004),  # not on a line boundary
    ("base address", 40, 0x20000000),  # outside SRAM4
    ("base address", 40, 0x38008000),  # the region would run past the memory's end
    ("memory size", 44, 128 * KiB),
    ("flags", 48, 6),
    ("line size", 52, 64),
    ("domain", 56, 2),
    ("cache size", 60, 32768),
    ("cache ways", 64, 8),
    ("lines", 68, 64 * KiB // 32 + 1),
    ("lines", 68, 0),
    ("domain power[0]", 72, 1),
    ("domain power[3]", 84, 7),
    ("default policy", 88, 3),
    ("report capacity", 132, 0),
    ("report capacity", 132, 1 << 20),
    ("reports used", 136, 300),
]


@pytest.mark.parametrize(("field", "at", "value"), CORRUPTIONS)
def test_corrupt_record_is_refused(field: str, at: int, value: int, make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4")
    assert region.placement is not None
    region.mapping.store_u32(region.placement.record_offset + at, value)
    with pytest.raises(CorruptRegion) as info:
        Region.attach(region.name)
    assert info.value.field == field
    with pytest.raises(CorruptRegion):
        M.placement_of(region)


def test_corrupt_names_are_refused(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4")
    assert region.placement is not None
    rec = region.placement.record_offset
    with region.view as view:
        view[rec + 24: rec + 40] = b"SRAM9".ljust(16, b"\0")
    with pytest.raises(CorruptRegion) as info:
        Region.attach(region.name)
    assert info.value.field == "memory"
    with region.view as view:
        view[rec + 24: rec + 40] = b"SRAM4".ljust(16, b"\0")
        view[rec + 8: rec + 24] = b"\xff" * 16
    with pytest.raises(CorruptRegion) as info:
        Region.attach(region.name)
    assert info.value.field == "chip"


# ---- ampipc layout and ampipc top ----------------------------------------------------------------


def _cli(*args: str) -> str:
    shown = subprocess.run([sys.executable, "-m", "ampipc.cli", *args], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_layout_and_top_show_chip_addresses(make_region: Callable[..., Region]) -> None:
    region = make_region(64 * KiB, memory="SRAM4", cache_model=True)
    MessageBuffer.create(region, "tx", 200)
    entry = region.lookup("tx")
    start, end = 0x38000000 + entry.offset, 0x38000000 + entry.offset + entry.size - 1
    line = re.compile(rf"^\s+{start:#010x} - {end:#010x}\s+tx\s+message_buffer\s+{entry.size} B\b", re.M)

    layout = _cli("layout", region.name)
    assert "STM32H745 SRAM4 (domain D3" in layout and "D-cache model on" in layout
    assert line.search(layout), layout
    assert re.search(r"^\s+0x38000000 - 0x[0-9a-f]{8}\s+\(region header\)", layout, re.M), layout
    assert "0/200 B (0%)" in layout

    once = _cli("top", region.name, "--once")
    assert line.search(once), once
    assert "memory map: STM32H745 SRAM4" in once

    data = json.loads(_cli("top", region.name, "--json"))
    chip = data["chip"]
    assert (chip["chip"], chip["memory"], chip["domain"], chip["domain_name"]) == ("STM32H745", "SRAM4", 3, "D3")
    assert chip["base_address"] == 0x38000000 and chip["end_address"] == 0x3800FFFF and chip["cache_model"]
    tx = next(o for o in chip["objects"] if o["name"] == "tx")
    assert (tx["start"], tx["end"], tx["size"]) == (start, end, entry.size)
    assert chip["free"]["end"] == 0x3800FFFF
    assert chip["free"]["start"] == 0x38000000 + 64 * KiB - region.free_bytes


def test_plain_region_json_has_no_chip_key(region: Region) -> None:
    from ampipc.tools.snapshot import snapshot_to_json, take_snapshot
    from ampipc.tools.top import render_text

    snap = take_snapshot(region)
    assert snap.chip is None and "chip" not in snapshot_to_json(snap)
    assert "memory map" not in render_text(snap)


def test_record_layout_is_what_the_c_model_reads() -> None:
    # the offsets this module writes are the ones _layout (and dcache.c) name
    assert L.CHIP_HEADER.size == 92 and struct.calcsize("<II16s16s") == 40
