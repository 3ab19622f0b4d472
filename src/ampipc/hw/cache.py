"""The CM7's data cache as firmware sees it: MPU attributes, CMSIS cache maintenance, coherency reports.

Theory of operation
-------------------
A chip region created with ``cache_model=True`` (`ampipc.hw.memory`) is accessed by the process
acting as the CM7 through a modelled write-back D-cache (the C core's ``dcache.c``): 32-byte lines,
the chip's size and ways, round-robin victims, write-allocate by default. The firmware data of every
buffer and channel in the region (ring indexes, constants, trigger level, storage; the control
buffers of the control strategy) goes through it; ampipc's host bookkeeping in the same headers
(liveness, statistics, waiting and close flags) does not. The CM4 and DMA have no cache: they see
memory, checked against the CM7's dirty map.

`Mpu` is the CM7's MPU as ``HAL_MPU_ConfigRegion`` programs it: each region's attributes give a
cache policy (the Cortex-M7 rules: C=0 non-cacheable; C=1 B=0 write-through; C=1 B=1 write-back,
TEX=1 adding write-allocate; a *shareable* cacheable region is not cached by the D-cache unless
CACR.SIWT makes it write-through, so it is treated as non-cacheable here). The highest-numbered
enabled region that covers an address wins; elsewhere the memory's default (the default map:
write-back write-allocate for the SRAMs). Only the CM7's process programs it: it lives in that
process, as the MPU lives in the core.

`DCache` offers the CMSIS functions by chip address (``SCB_CleanDCache_by_Addr`` and friends, the
whole-cache variants), with their rounding to whole lines. `reports(region)` reads the coherency
checker's table from the region (every process's reports: it is in shared memory) and names the
object and field of each, as a firmware engineer would look them up in the linker map.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from .. import _layout as L
from ..errors import CorruptRegion

if TYPE_CHECKING:
    from ..region import ObjectEntry, Region

__all__ = [
    "CachePolicy",
    "CacheLine",
    "CacheStatistics",
    "CoherencyReport",
    "DCache",
    "Mpu",
    "ReportKind",
    "attach_model",
    "clear_reports",
    "policy_of",
    "reports",
]


class CachePolicy(IntEnum):
    NON_CACHEABLE = L.CACHE_POLICY_NONCACHEABLE
    WRITE_BACK = L.CACHE_POLICY_WRITE_BACK
    WRITE_BACK_NO_WRITE_ALLOCATE = L.CACHE_POLICY_WRITE_BACK_NO_WA
    WRITE_THROUGH = L.CACHE_POLICY_WRITE_THROUGH


class ReportKind(IntEnum):
    STALE_READ = L.REPORT_STALE_READ
    DIRTY_READ = L.REPORT_DIRTY_READ
    LOST_WRITE = L.REPORT_LOST_WRITE
    PARTIAL_INVALIDATE = L.REPORT_PARTIAL_INVALIDATE


_CORE_NAMES = {L.MODEL_CORE_CM7: "CM7", L.MODEL_CORE_CM4: "CM4", L.MODEL_CORE_DMA: "DMA"}
_WHAT = {
    ReportKind.STALE_READ: "read a stale cached copy (another side changed memory since the line was filled)",
    ReportKind.DIRTY_READ: "read memory the CM7 still holds dirty in its cache (not cleaned)",
    ReportKind.LOST_WRITE: "wrote back over bytes another side had written since the fill",
    ReportKind.PARTIAL_INVALIDATE: "invalidated a line partly outside the range: dirty bytes of a neighbour were lost",
}
_RING_FIELDS = {0: "magic", L.RING_OFF_FLAGS: "flags", L.RING_OFF_LENGTH: "length", L.RING_OFF_DATA: "data offset",
                L.RING_OFF_TRIGGER: "trigger level", L.RING_OFF_PREFIX: "prefix size", L.RING_OFF_TOTAL: "total size",
                L.RING_OFF_HEAD: "head", L.RING_OFF_TAIL: "tail"}
_RING_KINDS = (L.KIND_MESSAGE_BUFFER, L.KIND_STREAM_BUFFER)


@dataclass(frozen=True)
class CacheLine:
    """One line of the CM7's cache holding region bytes: its offset and address, dirty byte mask, data."""

    offset: int
    address: int
    dirty_mask: int
    data: bytes
    memory_at_fill: bytes

    @property
    def dirty(self) -> bool:
        return self.dirty_mask != 0


@dataclass(frozen=True)
class CacheStatistics:
    hits: int
    misses: int
    writebacks: int
    evictions: int


@dataclass(frozen=True)
class CoherencyReport:
    """One distinct finding of the coherency checker: what, by whom, where (object and field), how often."""

    kind: ReportKind
    core: str
    offset: int
    address: int
    length: int
    occurrences: int
    object: str
    field: str

    def __str__(self) -> str:
        where = f"{self.object}.{self.field}" if self.object else f"offset {self.offset}"
        return f"{self.core} {_WHAT[self.kind]}: {where} at {self.address:#010x} ({self.occurrences}x)"


def _record(region: Region) -> tuple[int, int]:
    """(record offset, base address) of a chip region, from its validated placement."""
    placement = region.placement
    if placement is None:
        raise RuntimeError(f"region {region.name!r} is not placed in a chip memory (Region.create(..., memory=...))")
    return placement.record_offset, placement.base_address


# The layers above name the fields of their own objects: ``field_name(mapping, offset, size, delta)``
# (the object's offset and size in the region, the byte within it). Imported when a report needs it.
_FIELD_NAMERS = {
    "toggle_words": "ampipc.notify.toggle",
    "payload_pool": "ampipc.services.pool",
    "rpmsg": "ampipc.rpmsg.transports",
}


def _name(region: Region, entries: list[ObjectEntry], offset: int) -> tuple[str, str]:
    for entry in entries:
        if entry.offset <= offset < entry.offset + entry.size:
            delta = offset - entry.offset
            if entry.kind in _RING_KINDS:
                data_off = region.mapping.load_u32(entry.offset + L.RING_OFF_DATA)
                if data_off and delta >= data_off:
                    return entry.name, f"storage[{delta - data_off}]"
                return entry.name, _RING_FIELDS.get(delta - delta % 4, f"header+{delta}")
            module = _FIELD_NAMERS.get(entry.kind)
            if module is not None:
                namer = importlib.import_module(module).field_name
                return entry.name, namer(region.mapping, entry.offset, entry.size, delta)
            return entry.name, f"+{delta}"
    return "", ""


def reports(region: Region) -> list[CoherencyReport]:
    """The coherency checker's findings in `region` (from every process), in order of first sighting."""
    rec, base = _record(region)
    m = region.mapping
    capacity = m.load_u32(rec + L.CHIP_OFF_REPORT_CAPACITY)
    used = m.load_u32(rec + L.CHIP_OFF_REPORTS_USED)
    if used > capacity or rec + L.CHIP_OFF_REPORTS + L.CHIP_REPORT_SIZE * capacity > region.size:
        raise CorruptRegion(f"chip memory record: {used} reports used of {capacity}",
                            object=L.CHIP_RECORD_NAME, field="reports used", value=used)
    found = []
    entries = region.objects()
    view = region.view
    for i in range(used):
        kind, core, offset, length, count, first = L.CHIP_REPORT.unpack_from(view, rec + L.CHIP_OFF_REPORTS + 32 * i)
        try:
            report_kind = ReportKind(kind)
        except ValueError:
            raise CorruptRegion(f"coherency report {i} has kind {kind}", object=L.CHIP_RECORD_NAME,
                                field="report kind", value=kind) from None
        obj, field = _name(region, entries, offset)
        found.append((first, CoherencyReport(report_kind, _CORE_NAMES.get(core, f"core {core}"), offset,
                                             base + offset, length, count, obj, field)))
    return [r for _, r in sorted(found, key=lambda t: t[0])]


def clear_reports(region: Region) -> None:
    """Forget every report (between runs of a test or a demo)."""
    rec, _ = _record(region)
    m = region.mapping
    m.store_u32(rec + L.CHIP_OFF_REPORTS_USED, 0)
    m.store_u32(rec + L.CHIP_OFF_REPORTS_DROPPED, 0)
    m.store_u64(rec + L.CHIP_OFF_REPORTS_TOTAL, 0)


def _check_cm7(region: Region) -> None:
    if region.mapping.model_core != L.MODEL_CORE_CM7:
        raise RuntimeError(
            f"region {region.name!r} is not accessed through the CM7's cache model here: attach it as "
            "core='CM7' to a region created with cache_model=True"
        )


class DCache:
    """The CM7's data cache over one chip region, with the CMSIS maintenance functions (chip addresses)."""

    def __init__(self, region: Region) -> None:
        _check_cm7(region)
        self.region = region
        self._base = _record(region)[1]

    def _range(self, address: int, size: int) -> tuple[int, int]:
        offset = address - self._base
        if size < 0 or offset < 0 or offset + size > self.region.size:
            raise ValueError(
                f"{address:#010x} + {size} is outside region {self.region.name!r} "
                f"({self._base:#010x} - {self._base + self.region.size - 1:#010x})"
            )
        return offset, size

    def clean_by_addr(self, address: int, size: int) -> None:
        """SCB_CleanDCache_by_Addr: write back the dirty lines the range touches (they stay valid)."""
        self.region.mapping.model_maintain(1, *self._range(address, size))

    def invalidate_by_addr(self, address: int, size: int) -> None:
        """SCB_InvalidateDCache_by_Addr: drop the lines the range touches, dirty or not (CMSIS asks for
        32-byte alignment: a partial line's dirty bytes outside the range are lost, and reported)."""
        self.region.mapping.model_maintain(2, *self._range(address, size))

    def clean_invalidate_by_addr(self, address: int, size: int) -> None:
        """SCB_CleanInvalidateDCache_by_Addr: write back, then drop, the lines the range touches."""
        self.region.mapping.model_maintain(3, *self._range(address, size))

    def clean(self) -> None:
        """SCB_CleanDCache: every dirty line of the cache."""
        self.region.mapping.model_maintain(1)

    def invalidate(self) -> None:
        """SCB_InvalidateDCache: every line, dirty data discarded."""
        self.region.mapping.model_maintain(2)

    def clean_invalidate(self) -> None:
        """SCB_CleanInvalidateDCache."""
        self.region.mapping.model_maintain(3)

    SCB_CleanDCache_by_Addr = clean_by_addr
    SCB_InvalidateDCache_by_Addr = invalidate_by_addr
    SCB_CleanInvalidateDCache_by_Addr = clean_invalidate_by_addr
    SCB_CleanDCache = clean
    SCB_InvalidateDCache = invalidate
    SCB_CleanInvalidateDCache = clean_invalidate

    def address_of(self, name: str) -> tuple[int, int]:
        """The chip address and size of object `name` (what the linker map gives firmware)."""
        entry = self.region.lookup(name)
        return self._base + entry.offset, entry.size

    def lines(self) -> list[CacheLine]:
        return [CacheLine(off, self._base + off, dirty, data, fill)
                for off, dirty, data, fill in self.region.mapping.model_lines()]

    def statistics(self) -> CacheStatistics:
        c = self.region.mapping.model_counters()
        return CacheStatistics(c["hits"], c["misses"], c["writebacks"], c["evictions"])


def policy_of(*, cacheable: bool, bufferable: bool, shareable: bool, tex: int = 0) -> CachePolicy:
    """The D-cache policy of MPU attributes (TEX, C, B, S) on the Cortex-M7."""
    if tex not in (0, 1, 2):
        raise ValueError(f"TEX {tex} is not a level the HAL sets (MPU_TEX_LEVEL0..2)")
    if not cacheable or tex == 2 or shareable:
        return CachePolicy.NON_CACHEABLE
    if not bufferable:
        return CachePolicy.WRITE_THROUGH
    return CachePolicy.WRITE_BACK if tex == 1 else CachePolicy.WRITE_BACK_NO_WRITE_ALLOCATE


@dataclass(frozen=True)
class _MpuRegion:
    number: int
    base: int
    size: int
    policy: CachePolicy


class Mpu:
    """The CM7's MPU as HAL_MPU_ConfigRegion programs it: regions of attributes over chip addresses."""

    REGIONS = 16

    def __init__(self, region: Region) -> None:
        _check_cm7(region)
        self.region = region
        self._base = _record(region)[1]
        self._regions: dict[int, _MpuRegion] = {}
        self._enabled = True

    def configure_region(
        self, base: int, size: int, *, number: int = 0, cacheable: bool, shareable: bool = False,
        bufferable: bool = False, tex: int = 0, enabled: bool = True,
    ) -> CachePolicy:
        """Program MPU region `number` (0..15) over [base, base + size): size a power of two >= 32,
        base aligned to it (the MPU's rule). Returns the cache policy it gives."""
        if not 0 <= number < self.REGIONS:
            raise ValueError(f"MPU region number must be 0..{self.REGIONS - 1}, not {number}")
        if size < 32 or not L.is_power_of_two(size) or base % size:
            raise ValueError(f"an MPU region is a power of two >= 32 bytes aligned to its size, not {size} at {base:#x}")
        policy = policy_of(cacheable=cacheable, bufferable=bufferable, shareable=shareable, tex=tex)
        if enabled:
            self._regions[number] = _MpuRegion(number, base, size, policy)
        else:
            self._regions.pop(number, None)
        self._apply()
        return policy

    def disable_region(self, number: int) -> None:
        self._regions.pop(number, None)
        self._apply()

    def enable(self) -> None:
        """HAL_MPU_Enable(MPU_PRIVILEGED_DEFAULT): regions apply, the default map elsewhere."""
        self._enabled = True
        self._apply()

    def disable(self) -> None:
        """HAL_MPU_Disable: the default memory map everywhere."""
        self._enabled = False
        self._apply()

    def _apply(self) -> None:
        ranges = []
        if self._enabled:
            for r in sorted(self._regions.values(), key=lambda r: r.number):
                lo = max(r.base - self._base, 0)
                hi = min(r.base + r.size - self._base, self.region.size)
                if lo < hi:
                    ranges.append((lo, hi, int(r.policy)))
        self.region.mapping.model_set_mpu(ranges)


def attach_model(region: Region, core: str) -> None:
    """Access `region`'s firmware data as `core` ("CM7" or "CM4") of its chip model: through the
    modelled D-cache for the CM7 when the region was created with ``cache_model=True``, checked
    against the CM7's dirty map for the CM4. Called by `Region.create`/`Region.attach` for a chip
    region when a core is given."""
    placement = region.placement
    if placement is None:
        raise RuntimeError(f"region {region.name!r} is not placed in a chip memory")
    name = core.upper()
    if name == "CM7":
        region.mapping.model_attach(placement.record_offset, L.MODEL_CORE_CM7, placement.cache_model)
    elif name == "CM4":
        region.mapping.model_attach(placement.record_offset, L.MODEL_CORE_CM4, False)
    else:
        raise ValueError(f"core must be 'CM7' or 'CM4', not {core!r}")
