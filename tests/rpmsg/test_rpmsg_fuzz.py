"""A hostile peer: corrupt rings, descriptors, headers and records give counted errors, no crash.

The shared area is a window in the middle of a larger bytearray whose guard bytes must survive
every test: nothing may be read or written outside the area.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc.rpmsg import _wire as W

from ._support import SHM_SIZE, core_pair

GUARD = 4096
# The parts of the area a peer can corrupt: ring words, descriptors, used elements, buffers.
AREAS = [
    (0x4000, 0x4000 + 0x2806),  # vring0
    (0x8000, 0x8000 + 0x2806),  # vring1
    (0x10000, 0x10000 + 4 * 512),  # first receive buffers (headers)
    (0x30000, 0x30000 + 4 * 512),  # first transmit buffers
    (0x0, 0x58),  # the resource table (after start-up: must not matter)
]


def guarded_pair():  # type: ignore[no-untyped-def]
    big = bytearray(b"\xee" * (GUARD + SHM_SIZE + GUARD))
    view = memoryview(big)[GUARD : GUARD + SHM_SIZE]
    _mem, drv, dev = core_pair(view)
    return big, view, drv, dev


def guards_intact(big: bytearray) -> bool:
    return big[:GUARD] == b"\xee" * GUARD and big[-GUARD:] == b"\xee" * GUARD


def exercise(drv, dev, rounds: int = 8) -> None:  # type: ignore[no-untyped-def]
    for i in range(rounds):
        drv.try_send(0x400, 0x400, bytes([i]) * (1 + 61 * i % 496))
        dev.poll()
        dev.try_send(0x400, 0x400, bytes([i]) * (1 + 37 * i % 496))
        drv.poll()
        drv.take_kick()
        dev.take_kick()


corruption = st.lists(
    st.tuples(
        st.sampled_from(AREAS),
        st.integers(min_value=0, max_value=0x3000),
        st.sampled_from(["u8", "u16", "u32", "u64"]),
        st.integers(min_value=0, max_value=2**64 - 1),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruption)
def test_random_corruption_never_crashes_or_escapes(writes) -> None:  # type: ignore[no-untyped-def]
    big, view, drv, dev = guarded_pair()
    exercise(drv, dev, 3)
    for (lo, hi), off, kind, value in writes:
        size = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}[kind]
        at = lo + off % max(1, hi - lo - size)
        struct.pack_into({"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q"}[kind], view, at, value % (1 << (8 * size)))
    exercise(drv, dev, 8)  # must not raise
    assert guards_intact(big)
    for side in (drv, dev):
        assert side.statistics.protocol_errors == sum(side.statistics.errors_by_kind.values())


def test_bad_used_id_is_counted_and_skipped() -> None:
    _big, view, drv, dev = guarded_pair()
    assert dev.try_send(0x400, 0x400, b"ok")
    struct.pack_into("<I", view, 0x6004, 9999)  # used.ring[0].id out of range
    assert drv.poll() == []
    assert drv.statistics.protocol_errors == 1 and "used-ring" in drv.statistics.errors_by_kind
    assert dev.try_send(0x400, 0x400, b"next")  # the link goes on
    assert [m.payload for m in drv.poll()] == [b"next"]  # type: ignore[union-attr]


def test_used_id_not_held_is_counted() -> None:
    _big, view, drv, dev = guarded_pair()
    assert drv.try_send(0x400, 0x400, b"a")
    dev.poll()
    struct.pack_into("<II", view, 0xA004, 200, 512)  # a descriptor the device never had
    assert drv.try_send(0x400, 0x400, b"b")
    assert drv.statistics.protocol_errors == 1


def test_oversized_header_length_is_dropped_and_the_buffer_returned() -> None:
    _big, view, drv, dev = guarded_pair()
    assert drv.try_send(0x400, 0x400, b"x")
    struct.pack_into("<H", view, 0x30000 + 12, 497)  # hdr.len > 512 - 16
    assert dev.poll() == []
    assert dev.statistics.errors_by_kind == {"header-length": 1}
    assert struct.unpack_from("<H", view, 0xA002)[0] == 1  # returned on the used ring anyway
    assert drv.try_send(0x400, 0x400, b"y")
    assert [m.payload for m in dev.poll()] == [b"y"]  # type: ignore[union-attr]


def test_descriptor_outside_the_pool_is_refused_and_returned() -> None:
    big, view, drv, dev = guarded_pair()
    struct.pack_into("<QI", view, 0x4000, SHM_SIZE - 8, 512)  # desc[0] of vring0 runs off the end
    assert dev.try_send(0x400, 0x400, b"z")  # it skips the bad buffer and takes the next
    assert dev.statistics.errors_by_kind == {"avail-ring": 1}
    assert struct.unpack_from("<II", view, 0x6004) == (0, 0)  # bad one handed back, length 0
    msgs = drv.poll()
    assert [getattr(m, "payload", None) for m in msgs] == [b"z"]
    assert guards_intact(big)


def test_index_jump_is_counted_and_resynchronised() -> None:
    _big, view, drv, dev = guarded_pair()
    struct.pack_into("<H", view, 0x9002, 1000)  # vring1 avail.idx far ahead of anything posted
    assert dev.poll() == []
    assert dev.statistics.errors_by_kind == {"avail-ring": 1}
    struct.pack_into("<H", view, 0x6002, 0x8000)  # vring0 used.idx jump
    assert drv.poll() == []
    assert drv.statistics.errors_by_kind == {"used-ring": 1}


def test_name_service_record_of_wrong_size_or_flags_is_refused() -> None:
    _big, _view, drv, dev = guarded_pair()
    assert dev.try_send(0x400, W.RPMSG_NS_ADDR, b"short record")
    assert dev.try_send(0x400, W.RPMSG_NS_ADDR, W.NS_RECORD.pack(b"n", 0x400, 7))
    assert dev.try_send(0x400, W.RPMSG_NS_ADDR, W.NS_RECORD.pack(b"n", 0x400, 0))
    events = drv.poll()
    assert [getattr(e, "name", None) for e in events] == ["n"]
    assert drv.statistics.errors_by_kind == {"ns-record": 2}
