"""Shared-memory layout of the virtual IPC hardware (one directory object of kind ``"hw"``).

Every field is a little-endian u32 (or u64), naturally aligned, addressed by its offset from the
start of the object. This module is the one description of the layout; nothing else hard-codes
an offset.

Header (line 0, 64 bytes), written once by the creator except where noted::

    0   u32  magic          "AMHW" (0x57484D41), stored last at creation: an attacher that sees it
                            sees a complete object
    4   u32  version        HW_VERSION
    8   u32  core count     1..MAX_CORES
    12  u32  lines per core LINES_PER_CORE
    16  u32  HSEM KEYR      key register: KEY in bits 31:16 (any core writes it, as on the chip)
    20  u32  boot state     BOOT_RESET / BOOT_READY (written by the booting core, `hw.boot`)
    24  u32  boot count     number of boot releases (statistics)

Core table (offset 64, MAX_CORES entries of 32 bytes), written once by the creator::

    0   name[24]            ASCII, NUL padded
    24  u32  HSEM COREID    0..15
    28  u32  reserved

HSEM semaphore registers (offset 320, HSEM_COUNT u32)::

    R[n]: bit 31 LOCK | bits 11:8 COREID | bits 7:0 PROCID; 0 = free.
    Any core changes it, only by compare-and-swap (lock: 0 -> value; unlock: owner value -> 0).

Per-core block (offset 448 + index * 64, one cache line per core, MAX_CORES blocks)::

    0   u32  pending lines  bit n = interrupt line n pending; set by any process (fetch_or),
                            cleared by the dispatcher that runs line n's handler (fetch_and).
                            The dispatcher's futex word.
    4   u32  event register 1 = an event is latched (SEV from another core); WFE consumes it
                            (exchange to 0). The futex word of WFE.
    8   u32  EMR            bit 0: SEV events reach this core (event unmasked)
    12  u32  IMR            bit 0: a SEV raises IRQ_SEV on this core (interrupt unmasked)
    16  u32  EXTI enable    bit n: EXTI line n's event input is enabled for this core
    20  u32  HSEM IER       CnIER, this core's notification enables
    24  u32  HSEM ISR       CnISR, raw free status (set by any core freeing a semaphore,
                            cleared through ICR)
    28  u32  reserved
    32  u64  interrupts raised       statistics, fetch_add by the raiser
    40  u64  handlers run            statistics, fetch_add by the dispatcher
    48  u64  events received         statistics, fetch_add by the SEV sender
"""

from __future__ import annotations

import struct

HW_MAGIC = 0x57484D41
HW_VERSION = 2  # 2: the unwoken-lines words (OFF_LINES_UNWOKEN)
HW_KIND = "hw"

MAX_CORES = 8
LINES_PER_CORE = 32
HSEM_COUNT = 32
MAX_CORE_ID = 15
MAX_PROCESS_ID = 255
MAX_KEY = 0xFFFF
CORE_NAME_BYTES = 24

OFF_MAGIC = 0
OFF_VERSION = 4
OFF_CORE_COUNT = 8
OFF_LINES = 12
OFF_KEYR = 16
OFF_BOOT_STATE = 20
OFF_BOOT_COUNT = 24
# One u32 per core (index i at OFF_LINES_UNWOKEN + 4 * i): lines raised *quietly* by a C strategy
# hook, without waking anyone, because the buffer of the event had no reader waiting. Set by the
# raiser before it raises the line; a later raise that needs a wake and finds the line pending
# clears the bit and wakes (ampipc._native irq.c raise_line_for). A stale bit costs one spare wake.
OFF_LINES_UNWOKEN = 32

OFF_CORE_TABLE = 64
CORE_ENTRY = struct.Struct("<24sII")
CORE_ENTRY_SIZE = 32

OFF_HSEM_R = OFF_CORE_TABLE + MAX_CORES * CORE_ENTRY_SIZE  # 320

OFF_CORE_BLOCKS = 448
CORE_BLOCK_SIZE = 64
C_PENDING = 0
C_EVENT = 4
C_EMR = 8
C_IMR = 12
C_EXTI = 16
C_HSEM_IER = 20
C_HSEM_ISR = 24
C_TASK_SLEEPERS = 28  # of the C_TASK_WAITERS below, those asleep (written by the C strategy paths only)
C_RAISED = 32
C_HANDLED = 40
C_EVENTS = 48
# Written only by the C core's strategy paths (ampipc._native TaskIsr / Notifier): tasks of this core
# blocked on a buffer and ready to service its doorbell line, and the word they sleep on, which a
# C raiser bumps instead of waking the dispatcher while such a task waits.
C_TASK_WAITERS = 56
C_TASK_DOORBELL = 60

HW_SIZE = OFF_CORE_BLOCKS + MAX_CORES * CORE_BLOCK_SIZE  # 960

# interrupt lines (per core) with a fixed meaning; lines 4..31 are free for applications
IRQ_HSEM = 0  # HSEM1_IRQn on the CM7, HSEM2_IRQn on the CM4
IRQ_EXTI0 = 1  # EXTI line 0
IRQ_EXTI1 = 2  # EXTI line 1
IRQ_SEV = 3  # a SEV from another core, where the SEV interrupt is unmasked
EXTI_LINE_IRQS = (IRQ_EXTI0, IRQ_EXTI1)  # EXTI line n -> interrupt line

BOOT_RESET = 0
BOOT_READY = 1

# HSEM R register fields
R_LOCK = 1 << 31
R_COREID_SHIFT = 8
R_COREID_MASK = 0xF << R_COREID_SHIFT
R_PROCID_MASK = 0xFF
R_VALID_MASK = R_LOCK | R_COREID_MASK | R_PROCID_MASK
KEY_SHIFT = 16

WORD_MASK = 0xFFFFFFFF

assert OFF_HSEM_R == 320 and OFF_HSEM_R + HSEM_COUNT * 4 <= OFF_CORE_BLOCKS
assert OFF_CORE_BLOCKS % 64 == 0 and HW_SIZE == 960


def hsem_r_offset(sem_id: int) -> int:
    """Offset of semaphore `sem_id`'s R register (the caller has validated the id)."""
    return OFF_HSEM_R + 4 * sem_id


def core_block(index: int) -> int:
    """Offset of core `index`'s block (the caller has validated the index)."""
    return OFF_CORE_BLOCKS + CORE_BLOCK_SIZE * index


def lines_unwoken(index: int) -> int:
    """Offset of core `index`'s unwoken-lines word (the caller has validated the index)."""
    return OFF_LINES_UNWOKEN + 4 * index


def r_value(core_id: int, process_id: int) -> int:
    """The R value of a semaphore locked by (core_id, process_id)."""
    return R_LOCK | (core_id << R_COREID_SHIFT) | process_id
