"""The virtual IPC hardware of a dual-core MCU (STM32H745/H747 by default), in a shared region.

Cores and their interrupt lines (with a dispatcher thread per core and process that runs handlers
in ISR context), the 32 hardware semaphores (HSEM), EXTI software interrupts and SEV/WFE events,
and the boot synchronisation of the CubeH7 dual-core template (`ampipc.hw.boot`). Every register
lives in one object of the region, so any process acting as any core sees the same hardware.
The chip's memory map and regions placed in one of its memories are in `ampipc.hw.memory`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .boot import BOOT_SEMAPHORE, boot_ready, cm4_wait_for_boot, cm7_release_boot
from .hardware import (
    DEFAULT_CORES,
    HSEM_COUNT,
    IRQ_EXTI0,
    IRQ_EXTI1,
    IRQ_HSEM,
    IRQ_SEV,
    LINES_PER_CORE,
    MAX_CORES,
    Core,
    CoreInfo,
    CoreStatistics,
    Hardware,
    InterruptHandler,
)
from .hsem import FreeCallback, Hsem

if TYPE_CHECKING:
    from .structs import Layout, LayoutDifference, StructDescription, attach_struct, compare_layouts, place_struct
    from .memory import (
        Access,
        ChipInfo,
        ChipPlacement,
        Domain,
        MemoryInfo,
        check_access,
        chip_info,
        known_chips,
        memory_info,
        placement_of,
        register_chip,
    )

# The memory map and the structure layouts are loaded on first use: a program without chip regions
# or shared structures never pays for them (ctypes, hashlib, json) at import.
_MEMORY_NAMES = frozenset({
    "Access", "ChipInfo", "ChipPlacement", "Domain", "MemoryInfo", "check_access", "chip_info", "known_chips",
    "memory_info", "placement_of", "register_chip",
})
_STRUCTS_NAMES = frozenset({
    "Layout", "LayoutDifference", "StructDescription", "attach_struct", "compare_layouts", "place_struct",
})


def __getattr__(name: str) -> Any:
    if name in _MEMORY_NAMES:
        from . import memory

        return getattr(memory, name)
    if name in _STRUCTS_NAMES:
        from . import structs

        return getattr(structs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Access",
    "BOOT_SEMAPHORE",
    "ChipInfo",
    "ChipPlacement",
    "Domain",
    "MemoryInfo",
    "DEFAULT_CORES",
    "HSEM_COUNT",
    "IRQ_EXTI0",
    "IRQ_EXTI1",
    "IRQ_HSEM",
    "IRQ_SEV",
    "LINES_PER_CORE",
    "MAX_CORES",
    "Core",
    "CoreInfo",
    "CoreStatistics",
    "FreeCallback",
    "Hardware",
    "Hsem",
    "InterruptHandler",
    "boot_ready",
    "cm4_wait_for_boot",
    "check_access",
    "chip_info",
    "cm7_release_boot",
    "known_chips",
    "memory_info",
    "placement_of",
    "register_chip",
    "Layout",
    "LayoutDifference",
    "StructDescription",
    "attach_struct",
    "compare_layouts",
    "place_struct",
]
