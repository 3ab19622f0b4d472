"""Shared-memory layouts of the region header, its directory and the buffer headers.

Every multi-byte field is little-endian and naturally aligned. Offsets only, never pointers:
each process maps the region at its own address. This module is the one description of these
layouts on the Python side; `_native/layout.h` repeats the buffer-header offsets (its fast path reads
them) and the test suite checks that both agree.

Region header (offset 0, 128 bytes)::

    0   u32  magic            "AMPR" (0x52504D41)
    4   u32  layout version   LAYOUT_VERSION
    8   u64  size             bytes in the segment
    16  u32  creator pid
    24  u64  creator start    the creator's start time (clock ticks since boot), against pid reuse
    32  u32  lock             0 free, else the pid of the process allocating an object
    36  u32  directory count  entries published (each entry is complete before the count covers it)
    40  u32  directory capacity
    44  u32  process capacity
    48  u64  allocation cursor  first free byte for the next object (64-byte aligned)
    56  u32  directory offset
    60  u32  process table offset
    64  u32  objects offset   where the first object may start

Directory entry (64 bytes): name[32] (UTF-8, NUL padded), kind[16] (ASCII, NUL padded),
u64 offset, u64 size. Entries are appended under the lock and never removed.

Process slot (32 bytes): u32 pid, u32 state (0 free, 1 attached), u64 start time, 16 reserved.
A process claims a free (or dead) slot with a compare-and-swap on `state`.

Buffer header (256 bytes; the storage follows at ``data offset``)::

    line 0, constants written once at creation (trigger level: either side, FreeRTOS rules)
    0   u32  magic           "AMSB" (0x42534D41)
    4   u32  flags           bit 0: message buffer, 1: static, 2: batching, 3: strict (no zero-length)
    8   u32  length          xLength = capacity + 1 (one byte is always kept free)
    12  u32  data offset     from the header
    16  u32  trigger level
    20  u32  prefix size     1, 2, 4 (default) or 8: the message length prefix, little-endian
    24  u32  total size      header + storage
    line 1 (64), written by the writer only
    64  u32  head            xHead, the next byte to write; the reader's futex word
    68  u32  writer cpu      1 + the CPU the writer last waited on (0: not known), for the spin policy
    72  u32  writer pid      80  u64 writer start time
    88  u64  messages in     96  u64 bytes in     104 u64 peak fill
    112 u64  writer waits    120 u64 wake-ups issued by the writer
    line 2 (128), written by the reader only
    128 u32  tail            xTail, the next byte to read; the writer's futex word
    132 u32  reader cpu      1 + the CPU the reader last waited on (0: not known), for the spin policy
    136 u32  reader pid      144 u64 reader start time
    152 u64  messages out    160 u64 bytes out
    168 u64  reader waits    176 u64 wake-ups issued by the reader
    line 3 (192), the waiting flags: stored by a side about to sleep, cleared by whoever wakes it.
    Apart from the indexes, so that checking them on every send and receive reads a line that
    changes only when somebody blocks.
    192 u32  tx waiting      1 while the writer sleeps (xTaskWaitingToSend)
    196 u32  rx waiting      1 while the reader sleeps (xTaskWaitingToReceive)
    200 u32  writer closed   1 after the writer's close(); cleared when a writer takes the role again
                             (or by the reader, once it has reported PeerClosed)
    204 u32  reader closed   1 after the reader's close(); cleared when a reader takes the role again
    208 u64  attachers       bit i: the process in region process slot i attached this buffer (set by
                             that process; a process taking slot i clears bit i of every buffer first)
"""

from __future__ import annotations

import struct

REGION_MAGIC = 0x52504D41
LAYOUT_VERSION = 1
REGION_HEADER = struct.Struct("<IIQI4xQIIIIQIII")
REGION_HEADER_SIZE = 128

OFF_MAGIC = 0
OFF_VERSION = 4
OFF_SIZE = 8
OFF_CREATOR_PID = 16
OFF_CREATOR_START = 24
OFF_LOCK = 32
OFF_DIR_COUNT = 36
OFF_DIR_CAPACITY = 40
OFF_PROC_CAPACITY = 44
OFF_CURSOR = 48
OFF_DIR_OFFSET = 56
OFF_PROC_OFFSET = 60
OFF_OBJECTS_OFFSET = 64

DIR_ENTRY = struct.Struct("<32s16sQQ")
DIR_ENTRY_SIZE = 64
NAME_BYTES = 32
KIND_BYTES = 16

PROC_SLOT = struct.Struct("<IIQ16x")
PROC_SLOT_SIZE = 32
PROC_STATE_FREE = 0
PROC_STATE_ATTACHED = 1

DEFAULT_DIR_CAPACITY = 128
DEFAULT_PROC_CAPACITY = 32
OBJECT_ALIGN = 64

RING_MAGIC = 0x42534D41
RING_HEADER_SIZE = 256
RING_FLAG_MESSAGE = 1
RING_FLAG_STATIC = 2  # created with the static convention: xLength = size, capacity size - 1
RING_FLAG_BATCHING = 4  # a FreeRTOS >= 11.1 batching stream buffer: readers need more than the trigger
RING_FLAG_STRICT = 8  # strict FreeRTOS mode: zero-length messages are refused
PREFIX_SIZE = 4
PREFIX_WIDTHS = (1, 2, 4, 8)
RING_CONSTANTS = struct.Struct("<IIIIIII")  # magic, flags, length, data offset, trigger, prefix, total
RING_OFF_FLAGS = 4
RING_OFF_LENGTH = 8
RING_OFF_DATA = 12
RING_OFF_TRIGGER = 16
RING_OFF_PREFIX = 20
RING_OFF_TOTAL = 24
RING_OFF_HEAD = 64
RING_OFF_WRITER_CPU = 68
RING_OFF_TX_WAITING = 192
RING_OFF_TAIL = 128
RING_OFF_READER_CPU = 132
RING_OFF_RX_WAITING = 196
RING_OFF_WRITER_CLOSED = 200
RING_OFF_READER_CLOSED = 204
RING_OFF_ATTACHERS = 208
ATTACHER_SLOTS = 64  # region process slots an attacher mask can name

KIND_MESSAGE_BUFFER = "message_buffer"
KIND_STREAM_BUFFER = "stream_buffer"


def align_up(value: int, alignment: int = OBJECT_ALIGN) -> int:
    return (value + alignment - 1) // alignment * alignment


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


# ---- the chip memory record (ampipc.hw.memory; the C core's memory model reads it: layout.h) ----
#
# A region placed in a chip memory (``Region.create(..., chip=..., memory=...)``) holds one directory
# object named CHIP_RECORD_NAME, kind KIND_CHIP_MEMORY, written once by the creator but for the
# words marked otherwise::
#
#     0   u32  magic            "AMCM" (0x4D434D41)
#     4   u32  record version   CHIP_RECORD_VERSION
#     8   char chip[16]         ASCII, NUL padded ("stm32h745")
#     24  char memory[16]       ASCII, NUL padded ("SRAM4")
#     40  u32  base address     the chip address of region byte 0 (0x38000000 for SRAM4)
#     44  u32  memory size      bytes of that chip memory (the region is at most this big)
#     48  u32  flags            bit 0: the CM7 D-cache model is on for this region
#     52  u32  line size        32: the Cortex-M7 D-cache line
#     56  u32  domain           1, 2 or 3: the power domain (D1, D2, D3) the memory is in
#     60  u32  cache size       bytes of the CM7 D-cache (16384 on the STM32H745/H747)
#     64  u32  cache ways       4
#     68  u32  lines            lines of the region: region size / line size (the dirty map's entries)
#     72  u32  domain power[4]  index 1..3: 0 while the domain runs, 1 while it is in a low-power mode
#                               (its SRAMs unreachable); written by ampipc.hw.power as cores sleep and wake
#     88  u32  default policy   the CM7's cache policy for this memory without an MPU region (CACHE_POLICY_*)
#     92..127 reserved (0)
#     128 u32  report lock      0 free, else the pid of the process adding a report
#     132 u32  report capacity  entries below
#     136 u32  reports used     distinct reports recorded (entries in use)
#     140 u32  reports dropped  occurrences that found neither their entry nor a free one
#     144 u64  reports total    every occurrence, recorded or not
#     152 u64  reserved
#     160 entries[capacity], 32 bytes each: u32 kind (REPORT_*), u32 core (MODEL_CORE_*),
#         u32 offset (region offset of the first byte concerned), u32 length (bytes accessed),
#         u64 occurrences, u64 first seen (CLOCK_MONOTONIC ns)
#     160 + 32 * capacity: the dirty map, one u32 per region line: bit i set while the CM7 holds
#         byte i of that line dirty in its cache (written by the CM7's model only)
#
# A report is one distinct (kind, core, line) and counts its occurrences.
# The power domains (ampipc.hw.memory.Domain), as the record and the power words number them.
DOMAIN_D1, DOMAIN_D2, DOMAIN_D3 = 1, 2, 3
CHIP_RECORD_NAME = "__chip_memory__"
KIND_CHIP_MEMORY = "hw_chip_memory"
CHIP_RECORD_MAGIC = 0x4D434D41
CHIP_RECORD_VERSION = 1
CHIP_HEADER = struct.Struct("<II16s16sIIIIIIIIIIIII")  # through default policy (offset 92)
CHIP_OFF_FLAGS = 48
CHIP_OFF_DOMAIN_POWER = 72  # + 4 * domain
CHIP_OFF_DEFAULT_POLICY = 88
CHIP_OFF_REPORT_LOCK = 128
CHIP_OFF_REPORT_CAPACITY = 132
CHIP_OFF_REPORTS_USED = 136
CHIP_OFF_REPORTS_DROPPED = 140
CHIP_OFF_REPORTS_TOTAL = 144
CHIP_OFF_REPORTS = 160
CHIP_REPORT = struct.Struct("<IIIIQQ")
CHIP_REPORT_SIZE = 32
CHIP_DEFAULT_REPORT_CAPACITY = 256
CHIP_FLAG_CACHE_MODEL = 1
CHIP_LINE_SIZE = 32

# cache policies of a memory or an MPU region, as the CM7 applies them
CACHE_POLICY_NONCACHEABLE = 0
CACHE_POLICY_WRITE_BACK = 1  # write-back, read and write allocate (the default map's SRAM policy)
CACHE_POLICY_WRITE_BACK_NO_WA = 2  # write-back, read allocate only
CACHE_POLICY_WRITE_THROUGH = 3

# the accessing side, as the model and its reports name it
MODEL_CORE_CM7 = 1
MODEL_CORE_CM4 = 2
MODEL_CORE_DMA = 3

# what a report says
REPORT_STALE_READ = 1  # the CM7 read a cached line that another side changed in memory since the fill
REPORT_DIRTY_READ = 2  # the CM4 or a DMA read memory the CM7 holds dirty in its cache
REPORT_LOST_WRITE = 3  # a CM7 write-back overwrote bytes another side changed since the fill
REPORT_PARTIAL_INVALIDATE = 4  # an invalidate by address discarded dirty bytes outside its range


def chip_record_size(region_size: int, capacity: int = CHIP_DEFAULT_REPORT_CAPACITY) -> int:
    lines = (region_size + CHIP_LINE_SIZE - 1) // CHIP_LINE_SIZE
    return CHIP_OFF_REPORTS + CHIP_REPORT_SIZE * capacity + 4 * lines
