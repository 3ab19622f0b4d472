"""The virtual IPC hardware of a dual-core MCU (STM32H745/H747 by default), in a shared region.

Cores and their interrupt lines (with a dispatcher thread per core and process that runs handlers
in ISR context), the 32 hardware semaphores (HSEM), EXTI software interrupts and SEV/WFE events,
and the boot synchronisation of the CubeH7 dual-core template (`ampipc.hw.boot`). Every register
lives in one object of the region, so any process acting as any core sees the same hardware.
"""

from __future__ import annotations

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

__all__ = [
    "BOOT_SEMAPHORE",
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
    "cm7_release_boot",
]
