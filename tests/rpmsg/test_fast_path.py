"""The C fast path (``ampipc._vring``) against the Python reference, byte for byte.

Each test runs one random operation sequence twice: through the pure-Python classes over byte image
A and through the C classes over byte image B, the same bytes written into both images when the
sequence plays the hostile peer. After every operation the two images must be identical, and so
must every result: return values, the exception class, its message and the head it names, the
counters and statistics. Both images sit inside guard bytes that must survive (nothing read or
written outside the area).
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc import ProtocolError, ResourceExhausted, _vring
from ampipc.rpmsg import _wire as W
from ampipc.rpmsg._window import OutOfWindow, Window
from ampipc.rpmsg.rpmsg_virtio import Message, NameService, Role, RpmsgVirtio
from ampipc.rpmsg.transports import demo_table
from ampipc.rpmsg.virtqueue import (
    DeviceQueue,
    DriverQueue,
    RingError,
    make_device_queue,
    make_driver_queue,
)

GUARD = 256
AREA = 0x3000
DA = 0x100
POOL = (0x1000, 0x2C00)


def guarded_area(size: int) -> tuple[bytearray, memoryview]:
    big = bytearray(b"\xee" * (GUARD + size + GUARD))
    return big, memoryview(big)[GUARD : GUARD + size]


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did, in a form both paths must match exactly."""
    try:
        return ("ok", call())
    except (RingError, ResourceExhausted, ProtocolError, ValueError, OverflowError) as exc:
        return ("raised", type(exc).__name__, str(exc), getattr(exc, "head", None))


# ---- split rings: every operation of both halves, and a hostile peer scribbling -----------------

# Small values hit the interesting cases (heads, indexes and lengths near their bounds) far more often.
VALUES = st.one_of(st.integers(0, 20), st.integers(0, 0x1FF), st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1))

RING_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, AREA),
            st.integers(0, 600),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(st.sampled_from(["drv_publish", "get_used", "drv_kick", "has_used", "reset"])),
        st.tuples(st.just("no_interrupt"), st.booleans()),
        st.tuples(st.sampled_from(["get_available", "dev_publish", "dev_kick", "has_available", "attach"])),
        st.tuples(st.just("put_used"), st.integers(-2, 40), st.integers(0, 2**32 - 1), st.booleans()),
        st.tuples(st.just("put_held"), st.integers(0, 63), st.integers(0, 600), st.booleans()),
        st.tuples(st.just("no_notify"), st.booleans()),
        # the hostile peer: a word anywhere in the ring area (indexes, slots, descriptors, elements)
        st.tuples(st.just("scribble"), st.integers(0, 0x1C0), st.sampled_from([1, 2, 4, 8]), VALUES),
    ),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("num", [4, 16])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=RING_OPS)
def test_rings_match_the_reference_byte_for_byte(num: int, ops: list[tuple[Any, ...]]) -> None:
    geometry = W.VringGeometry(DA, num, 16)
    big_a, area_a = guarded_area(AREA)
    big_b, area_b = guarded_area(AREA)
    win_a, win_b = Window(area_a), Window(area_b)
    py_drv = make_driver_queue(win_a, geometry, "v", fast=False)
    c_drv = make_driver_queue(win_b, geometry, "v", fast=True)
    py_dev = make_device_queue(win_a, geometry, POOL, "v", fast=False)
    c_dev = make_device_queue(win_b, geometry, POOL, "v", fast=True)
    assert isinstance(py_drv, DriverQueue) and isinstance(c_drv, _vring.DriverRing)
    assert isinstance(py_dev, DeviceQueue) and isinstance(c_dev, _vring.DeviceRing)
    py_drv.reset()
    c_drv.reset()
    held: list[int] = []
    for op in ops:
        kind = op[0]
        results = []
        for drv, dev, mem in ((py_drv, py_dev, area_a), (c_drv, c_dev, area_b)):
            call: Callable[[], Any]
            if kind == "add":
                _, addr, length, writable, publish = op
                call = partial(drv.add, addr, length, writable, publish=publish)
            elif kind == "drv_publish":
                call = drv.publish
            elif kind == "get_used":
                call = drv.get_used
            elif kind == "drv_kick":
                call = drv.needs_kick
            elif kind == "has_used":
                call = drv.has_used
            elif kind == "reset":
                call = drv.reset
            elif kind == "no_interrupt":
                call = partial(drv.set_no_interrupt, op[1])
            elif kind == "get_available":
                call = dev.get_available
            elif kind == "dev_publish":
                call = dev.publish
            elif kind == "dev_kick":
                call = dev.needs_kick
            elif kind == "has_available":
                call = dev.has_available
            elif kind == "attach":
                call = dev.attach
            elif kind == "put_used":
                call = partial(dev.put_used, op[1], op[2], publish=op[3])
            elif kind == "put_held":
                if not held:
                    continue
                head = held[op[1] % len(held)]
                call = partial(dev.put_used, head, op[2], publish=op[3])
            elif kind == "no_notify":
                call = partial(dev.set_no_notify, op[1])
            else:  # scribble: the same bytes land in both images
                _, off, width, value = op
                where = DA + off
                raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

                def call(m: memoryview = mem, w: int = where, r: bytes = raw) -> None:
                    m[w : w + len(r)] = r

            results.append(
                (
                    outcome(call),
                    drv.free_count,
                    drv.in_flight,
                    dev.held,
                )
            )
        if results:
            assert results[0] == results[1], op
            status = results[0][0]
            if kind == "get_available" and status[0] == "ok" and status[1] is not None:
                held.append(status[1][0])
            elif kind == "get_available" and status[0] == "raised" and status[3] is not None:
                held.append(status[3])
            elif kind in ("put_used", "put_held") and status[0] == "ok":
                head = op[1] if kind == "put_used" else held[op[1] % len(held)]
                held.remove(head)
            elif kind == "attach":
                held.clear()
        assert bytes(area_a) == bytes(area_b), op
    assert big_a[:GUARD] == big_b[:GUARD] == b"\xee" * GUARD
    assert big_a[-GUARD:] == big_b[-GUARD:] == b"\xee" * GUARD


def test_geometry_refused_alike() -> None:
    _big, area = guarded_area(AREA)
    window = Window(area)
    for geometry in (
        W.VringGeometry(DA, 3, 16),
        W.VringGeometry(DA, 8, 3),
        W.VringGeometry(DA + 2, 8, 16),
        W.VringGeometry(AREA - 64, 8, 16),
        W.VringGeometry(DA, 65536, 16),
    ):
        results = [outcome(partial(make_driver_queue, window, geometry, "v", fast=fast)) for fast in (False, True)]
        assert results[0][0] == results[1][0] == "raised"
        assert results[0][1:] == results[1][1:]
        assert results[0][1] == "ProtocolError"


def test_exhausted_and_released_area() -> None:
    """No free descriptor raises ResourceExhausted; a released view is a clean error, not a crash."""
    _big, area = guarded_area(AREA)
    window = Window(area)
    ring = make_driver_queue(window, W.VringGeometry(DA, 4, 16), "v", fast=True)
    ring.reset()
    for i in range(4):
        assert ring.add(POOL[0] + 512 * i, 512, True) == i
    with pytest.raises(ResourceExhausted, match="no free descriptor"):
        ring.add(POOL[0], 512, True)
    window.release()
    with pytest.raises(ValueError):
        ring.has_used()


# ---- the rpmsg level: whole links on both paths, header checks and batches included ------------


def link_pair(mem: memoryview, fast: bool, num: int) -> tuple[RpmsgVirtio, RpmsgVirtio]:
    vring0, vring1 = 0x4000, 0x8000
    Window(mem).write(0, demo_table(vring0, vring1, num, 16))
    pool = (0x10000, 2 * num * 512 + 1024)
    drv = RpmsgVirtio(Window(mem), Role.DRIVER, pool_offset=pool[0], pool_size=pool[1], fast=fast, name="L")
    dev = RpmsgVirtio(Window(mem), Role.DEVICE, pool_offset=pool[0], pool_size=pool[1], fast=fast, name="L")
    drv.start_driver()
    assert dev.device_ready()
    dev.start_device()
    return drv, dev


# Where a hostile peer writes: ring words and slots of both rings, and the first buffers' headers.
TARGETS = [0x4000, 0x4000 + 16 * 16 + 2, 0x8000, 0x8000 + 16 * 16 + 2, 0x4000 + 0x180, 0x8000 + 0x180, 0x10000, 0x10000 + 16 * 512]

SENDS = st.tuples(st.sampled_from(["drv_send", "dev_send"]), st.integers(0, 496), st.sampled_from([0x400, 0x35, 0x401]))
POLLS = st.tuples(st.sampled_from(["drv_poll", "dev_poll"]))

LINK_OPS = st.lists(
    st.one_of(
        SENDS,
        POLLS,
        SENDS,
        POLLS,
        st.tuples(st.sampled_from(["drv_poll", "dev_poll", "drv_poll_raw", "dev_poll_raw", "drv_reclaim", "kicks", "has_tx"])),
        st.tuples(st.just("ns"), st.sampled_from(["drv", "dev"]), st.booleans()),
        st.tuples(
            st.just("scribble"),
            st.sampled_from(TARGETS),
            st.integers(0, 0x80),
            st.sampled_from([1, 2, 4, 8]),
            VALUES,
        ),
        # the length of the driver buffer the device takes next for sending, near its bounds
        st.tuples(st.just("desc_len"), st.integers(0, 2), st.sampled_from([0, 15, 16, 17, 40, 56, 57, 100, 512, 513])),
        # the header length of the message sent last in one direction, near its bounds
        st.tuples(
            st.just("hdr_len"),
            st.sampled_from(["down", "up"]),
            st.sampled_from([0, 1, 39, 40, 41, 495, 496, 497, 498, 512, 0xFFFF]),
        ),
    ),
    min_size=1,
    max_size=50,
)


def last_message(mem: memoryview, direction: str, num: int) -> int:
    """The buffer address of the message published last: driver to device on vring1, back on vring0."""
    image = Window(mem)
    geometry = W.VringGeometry(0x8000 if direction == "down" else 0x4000, num, 16)
    if direction == "down":
        idx = image.u16(geometry.avail_offset + 2)
        head = image.u16(geometry.avail_offset + 4 + 2 * ((idx - 1) % num)) % num  # the peer may have scribbled
    else:
        idx = image.u16(geometry.used_offset + 2)
        head = image.u32(geometry.used_offset + 4 + 8 * ((idx - 1) % num)) % num
    return image.u64(geometry.da + 16 * head) % (len(mem) - 16)


def next_device_buffer(mem: memoryview, num: int, ahead: int) -> int:
    """The descriptor of the driver buffer the device takes ``ahead`` buffers from now (vring0),
    assuming it returned every buffer it took (the usual case)."""
    image = Window(mem)
    geometry = W.VringGeometry(0x4000, num, 16)
    slot = (image.u16(geometry.used_offset + 2) + ahead) % num
    head = image.u16(geometry.avail_offset + 4 + 2 * slot) % num
    return geometry.da + 16 * head


def both(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    return first(), second()


def link_state(link: RpmsgVirtio) -> dict[str, Any]:
    return {"stats": dataclasses.asdict(link.statistics), "more": link.more_pending}


@settings(max_examples=300, deadline=None)
@given(ops=LINK_OPS, seed=st.integers(0, 2**32 - 1))
def test_links_match_the_reference_byte_for_byte(ops: list[tuple[Any, ...]], seed: int) -> None:
    num = 16
    size = 0x10000 + 2 * num * 512 + 1024
    big_a, area_a = guarded_area(size)
    big_b, area_b = guarded_area(size)
    py = link_pair(area_a, False, num)
    fast = link_pair(area_b, True, num)
    assert bytes(area_a) == bytes(area_b)
    rng = random.Random(seed)
    for op in ops:
        kind = op[0]
        payload = rng.randbytes(op[1]) if kind in ("drv_send", "dev_send") else b""
        results = []
        for (drv, dev), mem in ((py, area_a), (fast, area_b)):
            call: Callable[[], Any]
            if kind == "drv_send":
                call = partial(drv.try_send, 0x400, op[2], payload)
            elif kind == "dev_send":
                call = partial(dev.try_send, 0x400, op[2], payload)
            elif kind == "drv_poll":
                call = drv.poll
            elif kind == "dev_poll":
                call = dev.poll
            elif kind == "drv_poll_raw":
                call = drv.poll_raw
            elif kind == "dev_poll_raw":
                call = dev.poll_raw
            elif kind == "drv_reclaim":
                call = drv.reclaim
            elif kind == "kicks":
                call = partial(both, drv.take_kick, dev.take_kick)
            elif kind == "has_tx":
                call = partial(both, drv.has_tx_buffer, dev.has_tx_buffer)
            elif kind == "ns":
                side = drv if op[1] == "drv" else dev
                call = partial(side.send_ns, "svc", 0x400, destroy=op[2])
            elif kind == "desc_len":
                where = next_device_buffer(mem, num, op[1]) + 8

                def call(m: memoryview = mem, w: int = where, v: int = op[2]) -> None:
                    m[w : w + 4] = v.to_bytes(4, "little")
            elif kind == "hdr_len":
                _, direction, value = op
                where = last_message(mem, direction, num) + 12

                def call(m: memoryview = mem, w: int = where, v: int = value) -> None:
                    m[w : w + 2] = v.to_bytes(2, "little")
            else:
                _, base, off, width, value = op
                raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

                def call(m: memoryview = mem, w: int = base + off, r: bytes = raw) -> None:
                    m[w : w + len(r)] = r

            results.append((outcome(call), link_state(drv), link_state(dev)))
        assert results[0] == results[1], op
        assert bytes(area_a) == bytes(area_b), op
    for big in (big_a, big_b):
        assert big[:GUARD] == big[-GUARD:] == b"\xee" * GUARD


def test_fast_link_carries_thousands_of_messages_in_order() -> None:
    """A healthy link on the fast path: contents, order and counters over many ring wraps."""
    num = 16
    _big, area = guarded_area(0x10000 + 2 * num * 512 + 1024)
    drv, dev = link_pair(area, True, num)
    rng = random.Random(7)
    sent_down: list[bytes] = []
    sent_up: list[bytes] = []
    got_down: list[bytes] = []
    got_up: list[bytes] = []
    for i in range(3000):
        message = rng.randbytes(rng.randrange(0, 497))
        if drv.try_send(0x400, 0x401, message):
            sent_down.append(message)
        reply = struct.pack("<I", i) + message[:100]
        if dev.try_send(0x401, 0x400, reply):
            sent_up.append(reply)
        if i % 3 == 0:
            got_down += [e.payload for e in dev.poll()]  # type: ignore[union-attr]
            got_up += [e.payload for e in drv.poll()]  # type: ignore[union-attr]
    for _ in range(4):
        got_down += [e.payload for e in dev.poll()]  # type: ignore[union-attr]
        got_up += [e.payload for e in drv.poll()]  # type: ignore[union-attr]
    assert got_down == sent_down and len(sent_down) > 1000
    assert got_up == sent_up and len(sent_up) > 1000
    assert drv.statistics.protocol_errors == dev.statistics.protocol_errors == 0
    assert dev.statistics.messages_received == len(sent_down)


def test_fill_outside_the_area_is_refused() -> None:
    """The C fill checks header and payload against the area, as Window does."""
    _big, area = guarded_area(AREA)
    ring = _vring.DriverRing(area, DA, 4, 16, "v")
    ring.reset()
    with pytest.raises(OutOfWindow, match="outside the shared area"):
        ring.add_message(AREA - 8, 512, 1, 2, b"x")
    with pytest.raises(OutOfWindow, match="outside the shared area"):
        ring.add_message(AREA - 20, 512, 1, 2, b"y" * 10)
    assert ring.free_count == 4  # nothing was made available


@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("length", [0, 40, 495, 496, 497, 511, 0xFFFF])
def test_header_length_bounds_alike(direction: str, length: int) -> None:
    """A forged header length at and around its bound: the same verdict, error text and bytes on both paths."""
    num = 16
    seen = []
    for fast in (False, True):
        _big, area = guarded_area(0x10000 + 2 * num * 512 + 1024)
        drv, dev = link_pair(area, fast, num)
        sender, receiver = (drv, dev) if direction == "down" else (dev, drv)
        assert sender.try_send(0x400, 0x400, bytes(range(200)) * 2)
        area[last_message(area, direction, num) + 12 :][:2] = length.to_bytes(2, "little")
        events = receiver.poll()
        seen.append((events, dataclasses.asdict(receiver.statistics), bytes(area)))
    assert seen[0] == seen[1]
    events, stats, _ = seen[0]
    if length <= 496:
        assert len(events) == 1 and len(events[0].payload) == length  # type: ignore[union-attr]
    else:
        assert events == [] and stats["errors_by_kind"] == {"header-length": 1}


def test_poll_raw_gives_the_same_messages_as_tuples() -> None:
    num = 16
    for fast in (False, True):
        _big, area = guarded_area(0x10000 + 2 * num * 512 + 1024)
        drv, dev = link_pair(area, fast, num)
        assert dev.send_ns("svc", 0x401)
        for i in range(5):
            assert dev.try_send(0x401, 0x400, bytes([i]) * (i * 50))
        events = drv.poll_raw()
        assert isinstance(events[0], NameService) and events[0].name == "svc"
        assert events[1:] == [(0x401, 0x400, bytes([i]) * (i * 50)) for i in range(5)]
        assert drv.statistics.messages_received == 5
        assert dev.try_send(0x401, 0x400, b"again")
        assert drv.poll() == [Message(0x401, 0x400, b"again")]
