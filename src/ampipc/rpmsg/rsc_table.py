"""The resource table: build it (table writer), parse it (both sides), and its live fields.

Theory of operation
-------------------
One side (the *table writer*: OpenAMP's socket server, ampipc's region creator) writes the whole
table once, with ``status`` = 0 and ``gfeatures`` = 0, before the other side can look. After that:

- the **driver** alone writes ``gfeatures`` (= dfeatures & wanted) and ``status`` (only 0x04,
  DRIVER_OK, as OpenAMP does);
- the **device** only reads them (it busy-polls ``status``), except that it writes ``status`` = 0
  when the driver sets NEEDS_RESET;
- everything else is constant.

`parse_resource_table` validates every field it returns against the size of the shared area, so a
corrupt or hostile table raises `ProtocolError` instead of steering later reads out of bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError
from ._window import Window
from ._wire import (
    FEATURE_NS,
    RSC_HEADER,
    RSC_OFF_OFFSETS,
    RSC_TABLE_VERSION,
    RSC_VDEV,
    STATUS_DRIVER_OK,
    VDEV_HDR,
    VDEV_HDR_SIZE,
    VDEV_OFF_DFEATURES,
    VDEV_OFF_GFEATURES,
    VDEV_OFF_STATUS,
    VIRTIO_ID_RPMSG,
    VRING_ENTRY,
    VRING_ENTRY_SIZE,
    VringGeometry,
)

__all__ = [
    "MAX_RSC_ENTRIES",
    "ResourceTable",
    "VringEntry",
    "build_resource_table",
    "parse_resource_table",
    "write_resource_table",
]

MAX_RSC_ENTRIES = 64  # more entries than any real table; bounds the parse


@dataclass(frozen=True)
class VringEntry:
    da: int
    align: int
    num: int
    notifyid: int

    @property
    def geometry(self) -> VringGeometry:
        return VringGeometry(self.da, self.num, self.align)


@dataclass(frozen=True)
class ResourceTable:
    """A parsed table with one rpmsg vdev; ``vdev_offset`` is where the vdev entry sits."""

    offset: int
    vdev_offset: int
    notifyid: int
    dfeatures: int
    gfeatures: int
    config_len: int
    status: int
    vrings: tuple[VringEntry, ...]

    @property
    def status_offset(self) -> int:
        return self.vdev_offset + VDEV_OFF_STATUS

    @property
    def gfeatures_offset(self) -> int:
        return self.vdev_offset + VDEV_OFF_GFEATURES

    @property
    def dfeatures_offset(self) -> int:
        return self.vdev_offset + VDEV_OFF_DFEATURES

    @property
    def size(self) -> int:
        return self.vdev_offset + VDEV_HDR_SIZE + VRING_ENTRY_SIZE * len(self.vrings) + self.config_len - self.offset


def build_resource_table(
    vring0: VringEntry,
    vring1: VringEntry,
    *,
    dfeatures: int = FEATURE_NS,
    vdev_notifyid: int = 0,
) -> bytes:
    """The table OpenAMP's demo uses: one vdev (rpmsg), two vrings; 0x58 bytes."""
    vdev_offset = RSC_OFF_OFFSETS + 4
    out = bytearray()
    out += RSC_HEADER.pack(RSC_TABLE_VERSION, 1, 0) + b"\0" * 4
    out += vdev_offset.to_bytes(4, "little")
    out += VDEV_HDR.pack(RSC_VDEV, VIRTIO_ID_RPMSG, vdev_notifyid, dfeatures, 0, 0, 0, 2, 0, 0)
    for v in (vring0, vring1):
        out += VRING_ENTRY.pack(v.da, v.align, v.num, v.notifyid, 0)
    assert len(out) == 0x58
    return bytes(out)


def write_resource_table(window: Window, offset: int, table: bytes) -> None:
    window.write(offset, table)


def parse_resource_table(window: Window, offset: int = 0) -> ResourceTable:
    """Find and validate the rpmsg vdev in the table at ``offset``."""
    if not window.contains(offset, RSC_OFF_OFFSETS):
        raise ProtocolError(f"resource table at {offset:#x} is outside the shared area")
    ver, num, reserved0 = window.unpack(RSC_HEADER, offset)
    reserved1 = window.u32(offset + 12)
    if ver != RSC_TABLE_VERSION:
        raise ProtocolError(f"resource table version {ver}, expected {RSC_TABLE_VERSION}")
    if reserved0 or reserved1:
        raise ProtocolError("resource table reserved words are not zero")
    if num == 0 or num > MAX_RSC_ENTRIES:
        raise ProtocolError(f"resource table has {num} entries")
    if not window.contains(offset + RSC_OFF_OFFSETS, 4 * num):
        raise ProtocolError("resource table offsets are outside the shared area")
    for i in range(num):
        entry_off = window.u32(offset + RSC_OFF_OFFSETS + 4 * i)
        entry = offset + entry_off
        if entry_off < RSC_OFF_OFFSETS + 4 * num or not window.contains(entry, 4):
            raise ProtocolError(f"resource table entry {i} offset {entry_off:#x} is invalid")
        if window.u32(entry) != RSC_VDEV:
            continue
        if not window.contains(entry, VDEV_HDR_SIZE):
            raise ProtocolError("vdev entry is outside the shared area")
        (_t, vid, notifyid, dfeatures, gfeatures, config_len, status, nvrings, _r0, _r1) = window.unpack(VDEV_HDR, entry)
        if vid != VIRTIO_ID_RPMSG:
            continue
        if nvrings < 2:
            raise ProtocolError(f"rpmsg vdev has {nvrings} vrings, needs 2")
        if not window.contains(entry + VDEV_HDR_SIZE, VRING_ENTRY_SIZE * nvrings + config_len):
            raise ProtocolError("vdev vring entries are outside the shared area")
        vrings = []
        for k in range(nvrings):
            da, align, vnum, vnotify, _rsv = window.unpack(VRING_ENTRY, entry + VDEV_HDR_SIZE + VRING_ENTRY_SIZE * k)
            v = VringEntry(da, align, vnum, vnotify)
            problem = v.geometry.problem(window.size)
            if problem is not None:
                raise ProtocolError(f"vring{k}: {problem}")
            vrings.append(v)
        g0, g1 = vrings[0].geometry, vrings[1].geometry
        if g0.da < g1.da + g1.size and g1.da < g0.da + g0.size:
            raise ProtocolError("vring0 and vring1 overlap")
        return ResourceTable(offset, entry, notifyid, dfeatures, gfeatures, config_len, status, tuple(vrings))
    raise ProtocolError("no rpmsg vdev in the resource table")


def default_status_ready(status: int) -> bool:
    return bool(status & STATUS_DRIVER_OK)
