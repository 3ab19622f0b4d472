"""Every byte layout of RPMsg over virtio, in one place (OpenAMP 1.10 / legacy virtio).

Theory of operation
-------------------
All multi-byte fields are little-endian and every struct is packed. Offsets below are relative
to the start of the struct. Nothing in this module reads or writes memory; it only names widths,
offsets and constants, and computes the split-ring layout from (da, num, align).

Split virtqueue (virtio 1.0 "legacy" layout), for a ring of ``num`` descriptors at ``da``::

    desc[num]      at da                           16 B each
        +0  u64 addr      buffer address (an offset in the shared area)
        +8  u32 len       buffer length
        +12 u16 flags     NEXT=1, WRITE=2 (device-writable), INDIRECT=4
        +14 u16 next      next descriptor of a chain
    avail          at da + 16*num                  written by the driver only
        +0  u16 flags     NO_INTERRUPT=1: "device, do not kick me when you use a buffer"
        +2  u16 idx       free-running count of heads made available
        +4  u16 ring[num] descriptor heads; slot = idx & (num - 1)
        +4+2*num u16 used_event (EVENT_IDX only; unused here)
    used           at align_up(da + 16*num + 6 + 2*num, align)   written by the device only
        +0  u16 flags     NO_NOTIFY=1: "driver, do not kick me when you make a buffer available"
        +2  u16 idx       free-running count of elements used
        +4  {u32 id; u32 len} ring[num]     8 B each
        +4+8*num u16 avail_event (EVENT_IDX only; unused here)

The (flags, idx) pair of avail and of used form one aligned u32 with a single writer, so a side
publishes its index with one 32-bit release store (flags in bits 0-15, idx in bits 16-31) and the
peer reads it with one 32-bit acquire load.

RPMsg header (16 B)::

    +0  u32 src   +4 u32 dst   +8 u32 reserved (sender writes 0; receivers may scribble)
    +12 u16 len (payload bytes)   +14 u16 flags (sender writes 0)

Name-service record (40 B, sent to address 0x35)::

    +0  char name[32] (NUL-terminated, not necessarily zero-padded)   +32 u32 addr   +36 u32 flags

Resource table with one vdev and two vrings (0x58 B)::

    0x00 u32 ver (=1)   0x04 u32 num (=1)   0x08 u32 reserved[2] (=0)   0x10 u32 offset[0] (=0x14)
    0x14 vdev: +0 u32 type (=3)  +4 u32 id (=7)  +8 u32 notifyid  +12 u32 dfeatures
               +16 u32 gfeatures  +20 u32 config_len  +24 u8 status  +25 u8 num_of_vrings
               +26 u8 reserved[2]                        (0x1C bytes of vdev header)
    0x30 vring0: u32 da, u32 align, u32 num, u32 notifyid, u32 reserved      (20 B each)
    0x44 vring1
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._layout import is_power_of_two

# ---- virtio status (virtio.h) and roles ---------------------------------------------------------
STATUS_ACKNOWLEDGE = 0x01
STATUS_DRIVER = 0x02
STATUS_DRIVER_OK = 0x04
STATUS_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80

VIRTIO_ID_RPMSG = 7
VIRTIO_RPMSG_F_NS = 0  # feature bit number: name service
FEATURE_NS = 1 << VIRTIO_RPMSG_F_NS

# ---- split ring ---------------------------------------------------------------------------------
DESC_SIZE = 16
DESC = struct.Struct("<QIHH")  # addr, len, flags, next
DESC_HEAD = struct.Struct("<QIH")  # addr, len, flags (next left alone)
DESC_OFF_ADDR = 0
DESC_OFF_LEN = 8
DESC_OFF_FLAGS = 12
DESC_OFF_NEXT = 14
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4

AVAIL_OFF_FLAGS = 0
AVAIL_OFF_IDX = 2
AVAIL_OFF_RING = 4
AVAIL_ENTRY_SIZE = 2
AVAIL_F_NO_INTERRUPT = 1

USED_OFF_FLAGS = 0
USED_OFF_IDX = 2
USED_OFF_RING = 4
USED_ELEM = struct.Struct("<II")  # id, len
USED_ELEM_SIZE = 8
USED_F_NO_NOTIFY = 1

MAX_VRING_NUM = 32768  # a u16 index space: num must be a power of two no larger than this


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


@dataclass(frozen=True)
class VringGeometry:
    """Where the three parts of a split ring sit, as offsets in the shared area."""

    da: int
    num: int
    align: int

    @property
    def desc_offset(self) -> int:
        return self.da

    @property
    def avail_offset(self) -> int:
        return self.da + DESC_SIZE * self.num

    @property
    def used_offset(self) -> int:
        return align_up(self.avail_offset + AVAIL_OFF_RING + AVAIL_ENTRY_SIZE * self.num + 2, self.align)

    @property
    def size(self) -> int:
        """vring_size(num, align): from da to the end of used.avail_event."""
        return self.used_offset + USED_OFF_RING + USED_ELEM_SIZE * self.num + 2 - self.da

    def problem(self, area_size: int) -> str | None:
        """Why this geometry cannot be used in an area of ``area_size`` bytes, or None."""
        if not is_power_of_two(self.num) or self.num > MAX_VRING_NUM:
            return f"vring num {self.num} is not a power of two <= {MAX_VRING_NUM}"
        if not is_power_of_two(self.align) or self.align < 4:
            return f"vring align {self.align:#x} is not a power of two >= 4"
        if self.da % 4:
            return f"vring da {self.da:#x} is not 4-byte aligned"
        if self.da < 0 or self.da + self.size > area_size:
            return f"vring at {self.da:#x} (+{self.size:#x}) is outside the shared area of {area_size:#x} bytes"
        return None


def vring_size(num: int, align: int) -> int:
    return VringGeometry(0, num, align).size


# ---- rpmsg --------------------------------------------------------------------------------------
RPMSG_HDR = struct.Struct("<IIIHH")  # src, dst, reserved, len, flags
RPMSG_HDR_SIZE = 16
RPMSG_BUFFER_SIZE = 512
RPMSG_MAX_PAYLOAD = RPMSG_BUFFER_SIZE - RPMSG_HDR_SIZE  # 496

RPMSG_NS_ADDR = 0x35
RPMSG_ADDR_ANY = 0xFFFFFFFF
RPMSG_RESERVED_ADDRESSES = 1024
RPMSG_ADDR_BMP_SIZE = 128  # dynamic addresses 0x400 .. 0x47F, as OpenAMP's bitmap

RPMSG_NAME_SIZE = 32
NS_RECORD = struct.Struct("<32sII")  # name, addr, flags
NS_RECORD_SIZE = 40
NS_CREATE = 0
NS_DESTROY = 1

# ---- resource table -----------------------------------------------------------------------------
RSC_VDEV = 3
RSC_TABLE_VERSION = 1
RSC_HEADER = struct.Struct("<III")  # ver, num, reserved[0]  (reserved[1] follows)
RSC_OFF_VER = 0x00
RSC_OFF_NUM = 0x04
RSC_OFF_RESERVED = 0x08
RSC_OFF_OFFSETS = 0x10

VDEV_HDR = struct.Struct("<IIIIIIBBBB")  # type id notifyid dfeatures gfeatures config_len status nvrings rsv rsv
VDEV_HDR_SIZE = 0x1C
VDEV_OFF_TYPE = 0x00
VDEV_OFF_ID = 0x04
VDEV_OFF_NOTIFYID = 0x08
VDEV_OFF_DFEATURES = 0x0C
VDEV_OFF_GFEATURES = 0x10
VDEV_OFF_CONFIG_LEN = 0x14
VDEV_OFF_STATUS = 0x18
VDEV_OFF_NUM_VRINGS = 0x19

VRING_ENTRY = struct.Struct("<IIIII")  # da, align, num, notifyid, reserved
VRING_ENTRY_SIZE = 20

# ---- OpenAMP's Linux demo (rpmsg-echo / rpmsg-echo-ping) ----------------------------------------
DEMO_SHM_NAME = "openamp.shm"
DEMO_SHM_SIZE = 0x80000
DEMO_SOCKET_PATH = "/tmp/openamp.event.0"
DEMO_CHANNEL = "rpmsg-openamp-demo-channel"
DEMO_RSC_OFFSET = 0x0
DEMO_VRING0_DA = 0x4000
DEMO_VRING1_DA = 0x8000
DEMO_VRING_ALIGN = 0x1000
DEMO_VRING_NUM = 256
DEMO_POOL_OFFSET = 0x10000
DEMO_POOL_SIZE = 0x40000
KICK_BYTE = b"\x01"
