"""The chip's memory map, and regions placed in one of its memories.

Theory of operation
-------------------
A table of dual-core parts (STM32H745 and STM32H747 built in, others added with `register_chip`)
says, for every memory of the chip, where it lies (base address, size), which power domain it is
in, and how each core reaches it (`Access`): DIRECT (reached, never cached), CACHEABLE (reached
through the CM7's D-cache under the default memory map), MDMA_ONLY (only through the MDMA, or
indirectly), NONE. Every access a core cannot use carries a one-line reason quoting the table
(RM0399, AN5617 Table 2), which `MemoryUnreachable` repeats. The table is read-only once
registered: `MemoryInfo` and `ChipInfo` are frozen and their mappings are read-only views.

A region created with ``Region.create(..., chip=, memory=)`` is *placed* in that memory: region
byte 0 is at the memory's base address, so an object at offset X has the chip address base + X
(what the firmware's linker map gives it). The placement is written once, by the creator, into a
directory object of the region (`ampipc._layout`, "chip memory record"), before the region's
magic is stored: an attacher that sees the region sees its complete record. Who writes which word
afterwards: the domain power words belong to `ampipc.hw.power` (cores going to sleep), the report
table and the dirty map to the C memory model (``_native/dcache.c``); every other word is a
constant. `placement_of` reads the record back and checks every field against the region's size
and the table (`CorruptRegion` naming the field), as a hostile or damaged segment may hold anything.

The report capacity is scaled to the region (`report_capacity_for`) so that a region fits even in
the 4 KiB backup SRAM; the dirty map always has one word per 32-byte line of the region.

`ampipc.region` imports this module only for chip regions: a plain region pays nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from .. import _layout as L
from ..errors import CorruptRegion, IncompatibleRegion, MemoryUnreachable

if TYPE_CHECKING:
    from ..region import Region

__all__ = [
    "Access",
    "ChipInfo",
    "ChipPlacement",
    "DEFAULT_CHIP",
    "Domain",
    "MemoryInfo",
    "STM32H745",
    "STM32H747",
    "check_access",
    "chip_info",
    "known_chips",
    "memory_info",
    "placement_of",
    "record_size_for",
    "register_chip",
    "report_capacity_for",
]

DEFAULT_CHIP = "stm32h745"
_NAME_BYTES = 16  # chip[16] and memory[16] of the record, NUL padded: 15 characters at most


class Access(Enum):
    """How a core reaches a memory."""

    DIRECT = "direct"  # reached, never cached (the CM7's TCMs; everything for the CM4, which has no D-cache)
    CACHEABLE = "cacheable"  # reached through the CM7's D-cache by default (the default memory map)
    MDMA_ONLY = "mdma_only"  # the core reaches it only through the MDMA, or indirectly
    NONE = "none"  # not reached at all

    @property
    def reachable(self) -> bool:
        """True if the core's loads and stores reach the memory (DIRECT or CACHEABLE)."""
        return self in (Access.DIRECT, Access.CACHEABLE)


class Domain(IntEnum):
    """The STM32H7 power domains: D1 (CM7, AXI), D2 (CM4, AHB SRAMs), D3 (always-on: SRAM4, backup)."""

    D1 = L.DOMAIN_D1
    D2 = L.DOMAIN_D2
    D3 = L.DOMAIN_D3


@dataclass(frozen=True)
class MemoryInfo:
    """One memory of a chip: where it is, its power domain, how each core reaches it and why not."""

    name: str
    base: int
    size: int
    domain: Domain
    access: Mapping[str, Access] = field(hash=False)
    reasons: Mapping[str, str] = field(default_factory=dict, hash=False)  # core -> why it cannot use it
    note: str = ""

    def __post_init__(self) -> None:
        # read-only views, so a registered table cannot be changed through a MemoryInfo
        object.__setattr__(self, "domain", Domain(self.domain))
        object.__setattr__(self, "access", MappingProxyType({k.upper(): Access(v) for k, v in self.access.items()}))
        object.__setattr__(self, "reasons", MappingProxyType({k.upper(): str(v) for k, v in self.reasons.items()}))

    @property
    def end(self) -> int:
        """The first address after the memory."""
        return self.base + self.size

    @property
    def domain_name(self) -> str:
        return self.domain.name

    @property
    def stays_powered(self) -> bool:
        """True for D3 memories: they stay powered while D1 and D2 sleep."""
        return self.domain == Domain.D3

    @property
    def default_policy(self) -> int:
        """The CM7's cache policy here without an MPU region (``_layout.CACHE_POLICY_*``)."""
        if Access.CACHEABLE in self.access.values():
            return L.CACHE_POLICY_WRITE_BACK
        return L.CACHE_POLICY_NONCACHEABLE

    def access_for(self, core: str) -> Access:
        """How `core` reaches this memory. Raises `ValueError` for a core the table does not know."""
        try:
            return self.access[_core_key(core)]
        except KeyError:
            raise ValueError(
                f"unknown core {core!r} for memory {self.name}: known cores are {', '.join(self.access)}"
            ) from None

    def reason_for(self, core: str) -> str:
        """Why `core` cannot use this memory ("" if it can)."""
        self.access_for(core)
        return self.reasons.get(_core_key(core), "")

    def contains(self, address: int) -> bool:
        return self.base <= address < self.end


@dataclass(frozen=True)
class ChipInfo:
    """A dual-core part: its cores, its memories and the CM7's D-cache geometry."""

    name: str
    cores: tuple[str, ...]
    memories: tuple[MemoryInfo, ...]
    dcache_size: int = 16384
    dcache_ways: int = 4
    line_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "cores", tuple(c.upper() for c in self.cores))
        object.__setattr__(self, "memories", tuple(self.memories))

    def memory(self, name: str) -> MemoryInfo:
        """The memory named `name` (case-insensitive). Raises `ValueError` listing the known ones."""
        if isinstance(name, str):
            for info in self.memories:
                if info.name.upper() == name.upper():
                    return info
        raise ValueError(
            f"chip {self.name} has no memory {name!r}: its memories are {', '.join(m.name for m in self.memories)}"
        )

    def memory_at(self, address: int) -> MemoryInfo | None:
        """The memory holding chip address `address`, or None."""
        return next((m for m in self.memories if m.contains(address)), None)

    def core(self, name: str) -> str:
        """The canonical name of core `name` (case-insensitive). Raises `ValueError` for an unknown one."""
        if isinstance(name, str) and name.upper() in self.cores:
            return name.upper()
        raise ValueError(f"chip {self.name} has no core {name!r}: its cores are {', '.join(self.cores)}")


@dataclass(frozen=True)
class ChipPlacement:
    """Where a region lies on the chip, as its chip memory record says (`placement_of`)."""

    chip: str
    memory: str
    base_address: int
    domain: Domain
    cache_model: bool
    record_offset: int

    @property
    def chip_info(self) -> ChipInfo:
        return chip_info(self.chip)

    @property
    def memory_info(self) -> MemoryInfo:
        return memory_info(self.chip, self.memory)

    @property
    def domain_name(self) -> str:
        return self.domain.name


def _core_key(core: str) -> str:
    if not isinstance(core, str):
        raise ValueError(f"a core name is a string such as 'CM7', not {core!r}")
    return core.upper()


# ---- the table --------------------------------------------------------------------------------

_TABLE = "(RM0399, AN5617 Table 2)"
_TCM_CM4 = "the CM4 reaches the CM7's {} only through the MDMA " + _TABLE
_D12 = {"CM7": Access.CACHEABLE, "CM4": Access.DIRECT}


def _h7_dual_core(name: str) -> ChipInfo:
    return ChipInfo(
        name=name,
        cores=("CM7", "CM4"),
        memories=(
            MemoryInfo("ITCM", 0x00000000, 64 * 1024, Domain.D1,
                       {"CM7": Access.DIRECT, "CM4": Access.MDMA_ONLY},
                       {"CM4": _TCM_CM4.format("ITCM (instruction tightly coupled memory)")},
                       note="CM7 instruction TCM, never cached"),
            MemoryInfo("DTCM", 0x20000000, 128 * 1024, Domain.D1,
                       {"CM7": Access.DIRECT, "CM4": Access.MDMA_ONLY},
                       {"CM4": _TCM_CM4.format("DTCM (data tightly coupled memory)")},
                       note="CM7 data TCM, never cached"),
            MemoryInfo("AXISRAM", 0x24000000, 512 * 1024, Domain.D1,
                       {"CM7": Access.CACHEABLE, "CM4": Access.MDMA_ONLY},
                       {"CM4": "D1's AXI SRAM is reached from the CM4 only indirectly " + _TABLE},
                       note="D1 AXI SRAM"),
            MemoryInfo("SRAM1", 0x30000000, 128 * 1024, Domain.D2, _D12, note="D2 AHB SRAM1"),
            MemoryInfo("SRAM2", 0x30020000, 128 * 1024, Domain.D2, _D12, note="D2 AHB SRAM2"),
            MemoryInfo("SRAM3", 0x30040000, 32 * 1024, Domain.D2, _D12, note="D2 AHB SRAM3"),
            MemoryInfo("SRAM4", 0x38000000, 64 * 1024, Domain.D3, _D12, note="D3 SRAM4, stays powered"),
            MemoryInfo("BKSRAM", 0x38800000, 4 * 1024, Domain.D3, _D12, note="backup domain SRAM"),
        ),
    )


STM32H745 = _h7_dual_core("STM32H745")
STM32H747 = _h7_dual_core("STM32H747")  # the same memory map as the H745

_chips: dict[str, ChipInfo] = {}
_chips_lock = threading.Lock()


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name or not name.isascii() or len(name) >= _NAME_BYTES:
        raise ValueError(f"{what} name {name!r} must be 1 to {_NAME_BYTES - 1} ASCII characters (the record's field)")


def _check_chip(info: ChipInfo) -> None:
    _check_name("chip", info.name)
    if not info.cores or len(set(info.cores)) != len(info.cores):
        raise ValueError(f"chip {info.name}: cores must be distinct names, not {info.cores!r}")
    if info.line_size != L.CHIP_LINE_SIZE:
        raise ValueError(f"chip {info.name}: the memory model works with {L.CHIP_LINE_SIZE}-byte lines")
    if not 1 <= info.dcache_ways <= 64 or info.dcache_size <= 0 or info.dcache_size % (info.dcache_ways * info.line_size):
        raise ValueError(f"chip {info.name}: a D-cache of {info.dcache_size} bytes and {info.dcache_ways} ways "
                         "is not a whole number of sets")
    if not info.memories:
        raise ValueError(f"chip {info.name} has no memories")
    seen: list[MemoryInfo] = []
    for m in info.memories:
        _check_name("memory", m.name)
        if any(o.name.upper() == m.name.upper() for o in seen):
            raise ValueError(f"chip {info.name}: two memories are named {m.name}")
        if m.size <= 0 or m.size % info.line_size or m.base % info.line_size or m.base < 0 or m.end > 1 << 32:
            raise ValueError(f"chip {info.name}: memory {m.name} ({m.base:#x}, {m.size} bytes) must be a whole "
                             "number of lines inside the 32-bit address space")
        overlap = next((o for o in seen if o.base < m.end and m.base < o.end), None)
        if overlap is not None:
            raise ValueError(f"chip {info.name}: memories {overlap.name} and {m.name} overlap")
        if set(m.access) != set(info.cores):
            raise ValueError(f"chip {info.name}: memory {m.name} must give the access of every core "
                             f"({', '.join(info.cores)}), not of {', '.join(m.access) or 'none'}")
        for core, access in m.access.items():
            if not access.reachable and not m.reasons.get(core):
                raise ValueError(f"chip {info.name}: memory {m.name} is {access.name} for {core}: give the reason")
        seen.append(m)


def register_chip(info: ChipInfo, *, replace: bool = False) -> ChipInfo:
    """Add `info` to the table (looked up case-insensitively by its name). Raises `ValueError` if
    the description is inconsistent, or if the name is taken and ``replace`` is false.

    Every process that attaches a region placed on this chip must have registered it too.
    """
    if not isinstance(info, ChipInfo):
        raise TypeError(f"register_chip takes a ChipInfo, not {type(info).__name__}")
    _check_chip(info)
    with _chips_lock:
        key = info.name.lower()
        if key in _chips and not replace and _chips[key] != info:
            raise ValueError(f"chip {info.name} is registered already (pass replace=True to replace it)")
        _chips[key] = info
    return info


register_chip(STM32H745)
register_chip(STM32H747)


def known_chips() -> tuple[str, ...]:
    """The names of the registered chips."""
    with _chips_lock:
        return tuple(c.name for c in _chips.values())


def chip_info(name: str) -> ChipInfo:
    """The chip named `name` (case-insensitive). Raises `ValueError` listing the known chips."""
    with _chips_lock:
        found = _chips.get(name.lower()) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown chip {name!r}: known chips are {', '.join(known_chips())} "
                         "(add one with ampipc.hw.memory.register_chip)")
    return found


def memory_info(chip: str, memory: str) -> MemoryInfo:
    """Memory `memory` of chip `chip` (both case-insensitive). Raises `ValueError` for a wrong name."""
    return chip_info(chip).memory(memory)


def check_access(chip: str, memory: str, core: str) -> Access:
    """How `core` reaches `memory`; raises `MemoryUnreachable` (with the table's reason) if it cannot,
    `ValueError` for an unknown chip, memory or core."""
    info = chip_info(chip)
    mem = info.memory(memory)
    name = info.core(core)
    access = mem.access_for(name)
    if not access.reachable:
        reason = mem.reason_for(name)
        raise MemoryUnreachable(
            f"{name} cannot use a region in {info.name} {mem.name} ({access.name}): {reason}",
            core=name, memory=mem.name, reason=reason,
        )
    return access


# ---- the region's record ----------------------------------------------------------------------


def report_capacity_for(region_size: int) -> int:
    """Coherency reports a region of `region_size` bytes keeps: one per 512 bytes, 4 to 256."""
    return max(4, min(L.CHIP_DEFAULT_REPORT_CAPACITY, region_size // 512))


def record_size_for(region_size: int) -> int:
    """Bytes of the chip memory record of a region of `region_size` bytes."""
    return L.chip_record_size(region_size, report_capacity_for(region_size))


@dataclass(frozen=True)
class _Plan:
    """What `Region.create` was asked for, checked before any segment exists."""

    chip: ChipInfo
    memory: MemoryInfo
    core: str | None
    cache_model: bool


def _plan(chip: str | None, memory: str | None, core: str | None, cache_model: bool, size: int) -> _Plan:
    """Check the chip parameters of `Region.create` (see there)."""
    if memory is None:
        given = "chip" if chip is not None else "core" if core is not None else "cache_model"
        raise ValueError(f"{given}= places a region in a chip memory: give memory= too (e.g. memory='SRAM4')")
    info = chip_info(DEFAULT_CHIP if chip is None else chip)
    mem = info.memory(memory)
    if size > mem.size:
        raise ValueError(f"a region in {info.name} {mem.name} is at most {mem.size} bytes (the memory's size), "
                         f"not {size}")
    name = None
    if core is not None:
        name = info.core(core)
        check_access(info.name, mem.name, name)
    return _Plan(info, mem, name, bool(cache_model))


def _write_record(region: Region, plan: _Plan) -> int:
    """Allocate and fill the record (magic last); returns its offset. Called by `Region.create`
    before the region's own magic is stored."""
    capacity = report_capacity_for(region.size)
    offset = region.allocate(L.CHIP_RECORD_NAME, L.KIND_CHIP_MEMORY, L.chip_record_size(region.size, capacity))
    lines = (region.size + L.CHIP_LINE_SIZE - 1) // L.CHIP_LINE_SIZE
    flags = L.CHIP_FLAG_CACHE_MODEL if plan.cache_model else 0
    with region.view as view:
        # the header with a zero magic: the store below publishes it; power words, reports and
        # the dirty map stay as allocate() zeroed them
        L.CHIP_HEADER.pack_into(
            view, offset, 0, L.CHIP_RECORD_VERSION, plan.chip.name.encode("ascii"), plan.memory.name.encode("ascii"),
            plan.memory.base, plan.memory.size, flags, L.CHIP_LINE_SIZE, int(plan.memory.domain),
            plan.chip.dcache_size, plan.chip.dcache_ways, lines, 0, 0, 0, 0, plan.memory.default_policy,
        )
    region.mapping.store_u32(offset + L.CHIP_OFF_REPORT_CAPACITY, capacity)
    region.mapping.store_u32(offset, L.CHIP_RECORD_MAGIC)
    return offset


def _text(raw: bytes, what: str) -> str:
    text = raw.split(b"\0", 1)[0]
    if not text or not text.isascii():
        raise CorruptRegion(f"chip memory record: the {what} name {raw!r} is not ASCII text",
                            object=L.CHIP_RECORD_NAME, field=what, value=None)
    return text.decode("ascii")


def placement_of(region: Region) -> ChipPlacement | None:
    """The chip placement `region`'s record gives (None for a plain region), every field checked
    against the region's size and the chip table. Raises `CorruptRegion` naming the bad field."""
    entry = next((e for e in region.objects() if e.name == L.CHIP_RECORD_NAME or e.kind == L.KIND_CHIP_MEMORY), None)
    if entry is None:
        return None

    def corrupt(field_name: str, value: int | None, why: str) -> CorruptRegion:
        return CorruptRegion(f"region {region.name!r}: chip memory record is corrupt: {field_name} = {value} {why}",
                             object=L.CHIP_RECORD_NAME, field=field_name, value=value)

    if entry.name != L.CHIP_RECORD_NAME or entry.kind != L.KIND_CHIP_MEMORY:
        raise corrupt("kind", None, f"(object {entry.name!r} of kind {entry.kind!r})")
    if entry.size < L.CHIP_OFF_REPORTS:
        raise corrupt("size", entry.size, "is too small for the record's header")
    m = region.mapping
    rec = entry.offset
    with region.view as view:
        (magic, version, raw_chip, raw_memory, base, memory_size, flags, line_size, domain, cache_size, ways, lines,
         *power, policy) = L.CHIP_HEADER.unpack_from(view, rec)
    if magic != L.CHIP_RECORD_MAGIC:
        raise corrupt("magic", magic, f"is not {L.CHIP_RECORD_MAGIC:#010x}")
    if version != L.CHIP_RECORD_VERSION:
        raise corrupt("version", version, f"is not {L.CHIP_RECORD_VERSION}")
    try:
        info = chip_info(_text(raw_chip, "chip"))
    except ValueError:
        # each process brings its own table, as each core's image brings its own linker script
        raise IncompatibleRegion(
            f"region {region.name!r} is placed on chip {raw_chip.rstrip(bytes(1)).decode('ascii', 'replace')!r}, "
            f"which this process does not know (known: {', '.join(known_chips())}): register the same chip table "
            "with ampipc.hw.memory.register_chip before attaching"
        ) from None
    try:
        mem = info.memory(_text(raw_memory, "memory"))
    except ValueError:
        raise corrupt("memory", None, f"names no memory of {info.name} ({raw_memory.rstrip(bytes(1))!r})") from None
    if memory_size != mem.size:
        raise corrupt("memory size", memory_size, f"is not the size of {mem.name} ({mem.size})")
    if base % L.CHIP_LINE_SIZE or not mem.base <= base <= mem.end - region.size:
        raise corrupt("base address", base, f"does not place the region's {region.size} bytes inside {mem.name} "
                      f"({mem.base:#010x} - {mem.end - 1:#010x}) on a line boundary")
    if flags & ~L.CHIP_FLAG_CACHE_MODEL:
        raise corrupt("flags", flags, "has unknown bits")
    if line_size != info.line_size:
        raise corrupt("line size", line_size, f"is not {info.line_size}")
    if domain != mem.domain:
        raise corrupt("domain", domain, f"is not {mem.name}'s domain ({int(mem.domain)})")
    if cache_size != info.dcache_size:
        raise corrupt("cache size", cache_size, f"is not {info.name}'s ({info.dcache_size})")
    if ways != info.dcache_ways:
        raise corrupt("cache ways", ways, f"is not {info.name}'s ({info.dcache_ways})")
    expected_lines = (region.size + L.CHIP_LINE_SIZE - 1) // L.CHIP_LINE_SIZE
    if lines != expected_lines:
        raise corrupt("lines", lines, f"does not cover the region's {region.size} bytes ({expected_lines})")
    for index, word in enumerate(power):
        if word > 1 or (index == 0 and word):
            raise corrupt(f"domain power[{index}]", word, "is not a power state")
    if policy != mem.default_policy:
        raise corrupt("default policy", policy, f"is not {mem.name}'s ({mem.default_policy})")
    capacity = m.load_u32(rec + L.CHIP_OFF_REPORT_CAPACITY)
    if capacity == 0 or L.chip_record_size(region.size, capacity) > entry.size:
        raise corrupt("report capacity", capacity, f"does not fit the record's {entry.size} bytes")
    used = m.load_u32(rec + L.CHIP_OFF_REPORTS_USED)
    if used > capacity:
        raise corrupt("reports used", used, f"exceeds the report capacity ({capacity})")
    return ChipPlacement(info.name, mem.name, base, mem.domain, bool(flags & L.CHIP_FLAG_CACHE_MODEL), rec)
