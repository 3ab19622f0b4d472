"""Byte-level checks of the resource table, the ring layout and the messages against OpenAMP."""

from __future__ import annotations

import struct

import pytest

from ampipc.errors import ProtocolError
from ampipc.rpmsg import _wire as W
from ampipc.rpmsg._window import Window
from ampipc.rpmsg.rsc_table import parse_resource_table
from ampipc.rpmsg.transports import demo_table

from ._support import core_pair


def u16(mem: bytearray, off: int) -> int:
    return int(struct.unpack_from("<H", mem, off)[0])


def u32(mem: bytearray, off: int) -> int:
    return int(struct.unpack_from("<I", mem, off)[0])


def test_resource_table_bytes_match_openamps_demo() -> None:
    table = demo_table()
    assert len(table) == 0x58
    expected = {
        0x00: 1, 0x04: 1, 0x08: 0, 0x0C: 0, 0x10: 0x14,
        0x14: 3, 0x18: 7, 0x1C: 0, 0x20: 0x1, 0x24: 0, 0x28: 0,
        0x30: 0x4000, 0x34: 0x1000, 0x38: 256, 0x3C: 1, 0x40: 0,
        0x44: 0x8000, 0x48: 0x1000, 0x4C: 256, 0x50: 2, 0x54: 0,
    }
    for off, value in expected.items():
        assert struct.unpack_from("<I", table, off)[0] == value, hex(off)
    assert table[0x2C:0x30] == bytes([0, 2, 0, 0])  # status, num_of_vrings, reserved[2]


def test_parse_finds_the_vdev_and_vrings() -> None:
    mem = bytearray(0x80000)
    mem[0:0x58] = demo_table()
    t = parse_resource_table(Window(mem), 0)
    assert t.vdev_offset == 0x14 and t.status_offset == 0x2C and t.gfeatures_offset == 0x24
    assert [(v.da, v.align, v.num, v.notifyid) for v in t.vrings] == [(0x4000, 0x1000, 256, 1), (0x8000, 0x1000, 256, 2)]


@pytest.mark.parametrize(
    "off, value",
    [(0x00, 2), (0x04, 0), (0x08, 5), (0x10, 0x7FFFFFF0), (0x2D, 1), (0x30, 0x7FFF0), (0x38, 100), (0x34, 2), (0x44, 0x4000)],
)
def test_parse_rejects_bad_tables(off: int, value: int) -> None:
    mem = bytearray(0x80000)
    mem[0:0x58] = demo_table()
    if off == 0x2D:
        mem[off] = value
    else:
        struct.pack_into("<I", mem, off, value)
    with pytest.raises(ProtocolError):
        parse_resource_table(Window(mem), 0)


def test_vring_geometry_matches_the_reference() -> None:
    g = W.VringGeometry(0x4000, 256, 0x1000)
    assert (g.desc_offset, g.avail_offset, g.used_offset, g.size) == (0x4000, 0x5000, 0x6000, 0x2806)
    assert W.vring_size(256, 0x1000) == 0x2806


def test_driver_start_up_writes_exactly_what_openamp_writes() -> None:
    mem, drv, dev = core_pair()
    assert u32(mem, 0x24) == 0x1  # gfeatures = dfeatures & wanted
    assert mem[0x2C] == 0x04  # DRIVER_OK only, never ACK or DRIVER
    assert drv.ns_enabled and dev.ns_enabled
    # vring0: 256 receive buffers, device-writable, 512 B, from 0x10000
    for i in range(256):
        addr, length, flags, _next = struct.unpack_from("<QIHH", mem, 0x4000 + 16 * i)
        assert (addr, length, flags) == (0x10000 + 512 * i, 512, W.DESC_F_WRITE)
        assert u16(mem, 0x5004 + 2 * i) == i
    assert u16(mem, 0x5002) == 256  # avail.idx
    assert u16(mem, 0x5000) == 0  # vring0 avail.flags: the driver wants kicks for messages
    assert u16(mem, 0x6000) == W.USED_F_NO_NOTIFY  # set by the device at start
    assert u16(mem, 0x9000) == W.AVAIL_F_NO_INTERRUPT  # vring1 avail.flags, set by the driver
    assert u16(mem, 0xA000) == 0  # vring1 used.flags


def test_first_driver_message_layout() -> None:
    mem, drv, dev = core_pair()
    assert drv.try_send(0x400, 0x401, b"hello")
    addr, length, flags, _ = struct.unpack_from("<QIHH", mem, 0x8000)
    assert (addr, length, flags) == (0x30000, 512, 0)  # TX pool starts after the RX buffers; len = 512
    assert u16(mem, 0x9002) == 1 and u16(mem, 0x9004) == 0
    assert struct.unpack_from("<IIIHH", mem, 0x30000) == (0x400, 0x401, 0, 5, 0)
    assert bytes(mem[0x30010:0x30015]) == b"hello"
    assert drv.take_kick()  # the device did not set NO_NOTIFY on vring1
    [msg] = dev.poll()
    assert (msg.src, msg.dst, msg.payload) == (0x400, 0x401, b"hello")
    assert struct.unpack_from("<II", mem, 0xA004) == (0, 512)  # used {id = head, len = desc.len}
    assert u16(mem, 0xA002) == 1
    assert not dev.take_kick()  # the driver set NO_INTERRUPT on vring1


def test_device_message_and_name_service_layout() -> None:
    mem, drv, dev = core_pair()
    assert dev.send_ns("rpmsg-openamp-demo-channel", 0x400)
    hdr = struct.unpack_from("<IIIHH", mem, 0x10000)
    assert hdr == (0x400, 0x35, 0, 40, 0)
    name, addr, flags = struct.unpack_from("<32sII", mem, 0x10010)
    assert name.rstrip(b"\0") == b"rpmsg-openamp-demo-channel" and addr == 0x400 and flags == 0
    assert struct.unpack_from("<II", mem, 0x6004) == (0, 512)
    assert u16(mem, 0x6002) == 1
    assert dev.take_kick()
    [ns] = drv.poll()
    assert (ns.name, ns.addr, ns.destroy) == ("rpmsg-openamp-demo-channel", 0x400, False)
    assert u16(mem, 0x5002) == 257  # the buffer went straight back to the device
    assert not drv.take_kick()  # the device set NO_NOTIFY on vring0


def test_ns_name_compared_up_to_the_first_nul() -> None:
    _mem, drv, dev = core_pair()
    record = W.NS_RECORD.pack(b"chan\0GARBAGE-after-the-nul", 0x402, W.NS_DESTROY)
    assert dev.try_send(0x402, W.RPMSG_NS_ADDR, record)
    [ns] = drv.poll()
    assert (ns.name, ns.addr, ns.destroy) == ("chan", 0x402, True)


def test_descriptor_next_chain_is_left_as_openamp_leaves_it() -> None:
    # OpenAMP chains desc[i].next = i + 1 at ring init and never rewrites next when it adds a
    # single-descriptor buffer; the bytes of both tables after start-up and a first send match.
    mem, drv, _dev = core_pair()
    assert drv.try_send(0x400, 0x400, b"hi")
    for base in (0x4000, 0x8000):
        nexts = [u16(mem, base + 16 * i + 14) for i in range(256)]
        assert nexts == [*range(1, 256), 0], hex(base)
    assert struct.unpack_from("<QIH", mem, 0x8000) == (0x30000, 512, 0)
