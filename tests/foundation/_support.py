"""Helpers of the foundation tests: unique names, checked messages, header access, child targets.

Child-process targets live here, at module level, so the spawn start method can import them.
Every message carries its sequence number, its length and a CRC-32 of the whole record, and its
payload is derived from the sequence number: a reader detects a torn, reordered, duplicated or
lost message.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import struct
import threading
import time
import zlib
from typing import Any

from ampipc import MessageBuffer, Region, StreamBuffer
from ampipc import _layout as L

__all__ = [
    "new_name",
    "make_message",
    "check_message",
    "message_size",
    "header_word",
    "wait_for_flag",
    "stream_bytes",
]

_counter = itertools.count()
GENEROUS = 60.0  # seconds: every blocking call in a test is bounded by this, never timed

_POOL = random.Random(20240611).randbytes(1 << 16)
_FRAME = struct.Struct("<QI")  # sequence number, payload length; a CRC-32 of all that follows


def new_name(tag: str = "f") -> str:
    """A fresh ``ampipc-test-<pid>-<tag><n>`` region name (the session leak guard watches these)."""
    return f"ampipc-test-{os.getpid()}-{tag}{next(_counter)}"


def message_size(seed: int, seq: int, max_payload: int) -> int:
    """The payload length of message `seq` of a run: both sides compute it independently."""
    return (seq * 2654435761 + seed * 40503) % (max_payload + 1)


def make_message(seq: int, payload_len: int) -> bytes:
    start = (seq * 7919) % (len(_POOL) - payload_len)
    body = _FRAME.pack(seq, payload_len) + _POOL[start : start + payload_len]
    return body + zlib.crc32(body).to_bytes(4, "little")


def check_message(data: bytes, seq: int, payload_len: int | None = None) -> None:
    """Raise AssertionError unless `data` is exactly message `seq` (of `payload_len` bytes)."""
    if len(data) < _FRAME.size + 4:
        raise AssertionError(f"message {seq}: {len(data)} bytes is shorter than the frame")
    body, crc = data[:-4], int.from_bytes(data[-4:], "little")
    if zlib.crc32(body) != crc:
        raise AssertionError(f"message {seq}: torn or corrupt (checksum mismatch), {len(data)} bytes")
    got_seq, got_len = _FRAME.unpack_from(body)
    if got_seq != seq:
        raise AssertionError(f"expected message {seq}, got message {got_seq}")
    if got_len != len(body) - _FRAME.size or (payload_len is not None and got_len != payload_len):
        raise AssertionError(f"message {seq}: payload length {got_len}, expected {payload_len}")
    if data != make_message(seq, got_len):
        raise AssertionError(f"message {seq}: payload differs from the expected bytes")


def stream_bytes(start: int, n: int) -> bytes:
    """Bytes `start` .. `start + n` of an endless deterministic stream."""
    out = bytearray()
    while n > 0:
        at = start % len(_POOL)
        take = min(n, len(_POOL) - at)
        out += _POOL[at : at + take]
        start += take
        n -= take
    return bytes(out)


def header_word(region: Region, buffer: MessageBuffer | StreamBuffer, field_offset: int) -> int:
    return region.mapping.load_u32(buffer.offset + field_offset)


def wait_for_flag(region: Region, buffer: MessageBuffer | StreamBuffer, field_offset: int, timeout: float = GENEROUS) -> None:
    """Poll until the header word (tx/rx waiting) is 1: the other side sleeps in the futex."""
    deadline = time.monotonic() + timeout
    while header_word(region, buffer, field_offset) != 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"the peer of {buffer.name!r} never blocked (word at {field_offset} stayed 0)")
        time.sleep(0.001)


# ---- child-process targets -------------------------------------------------------------------


def _report(results: Any, item: Any) -> None:
    results.put(item)


def duplex_peer(region_name: str, out_name: str, in_name: str, count: int, seed_out: int, seed_in: int,
                max_payload: int, results: Any) -> None:
    """Send `count` checked messages on `out_name` (a thread) while receiving `count` on `in_name`."""
    region = Region.attach(region_name)
    try:
        out_buf = MessageBuffer.attach(region, out_name)
        in_buf = MessageBuffer.attach(region, in_name)
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for seq in range(count):
                    out_buf.send(make_message(seq, message_size(seed_out, seq, max_payload)), timeout=GENEROUS)
            except BaseException as e:  # reported to the parent below
                errors.append(e)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for seq in range(count):
                check_message(in_buf.receive(timeout=GENEROUS), seq, message_size(seed_in, seq, max_payload))
        finally:
            thread.join(GENEROUS * 2)
        if errors:
            raise errors[0]
        _report(results, ("ok", count))
    except BaseException as e:
        _report(results, ("error", repr(e)))
        raise
    finally:
        region.close()


def stream_writer(region_name: str, buf_name: str, total: int, seed: int, results: Any) -> None:
    """Write `total` bytes of the deterministic stream in random-sized blocking writes."""
    region = Region.attach(region_name)
    try:
        sb = StreamBuffer.attach(region, buf_name)
        rng = random.Random(seed)
        sent = 0
        while sent < total:
            n = min(total - sent, rng.randint(1, 3 * sb.capacity // 2))
            written = sb.write(stream_bytes(sent, n), timeout=GENEROUS)
            if written != n:
                raise AssertionError(f"write of {n} bytes returned {written} with a 60 s timeout")
            sent += n
        _report(results, ("ok", sent))
    except BaseException as e:
        _report(results, ("error", repr(e)))
        raise
    finally:
        region.close()


def echo_server(region_name: str, in_name: str, out_name: str, rounds: int, spin: float, results: Any) -> None:
    """Receive `rounds` messages and send each back: the far side of a ping-pong."""
    region = Region.attach(region_name)
    try:
        rx = MessageBuffer.attach(region, in_name)
        tx = MessageBuffer.attach(region, out_name)
        rx.spin = spin
        tx.spin = spin
        for _ in range(rounds):
            tx.send(rx.receive(timeout=GENEROUS), timeout=GENEROUS)
        _report(results, ("ok", rounds))
    except BaseException as e:
        _report(results, ("error", repr(e)))
        raise
    finally:
        region.close()


def send_after_reader_blocks(region_name: str, buf_name: str, payload: bytes) -> None:
    """Wait until the reader sleeps in the futex, then send one message."""
    region = Region.attach(region_name)
    try:
        mb = MessageBuffer.attach(region, buf_name)
        wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
        mb.send(payload, timeout=GENEROUS)
    finally:
        region.close()


def fill_then_block(region_name: str, buf_name: str, payload_len: int, extra: int, results: Any) -> None:
    """Fill the buffer with messages, then send `extra` more (each blocks until the reader makes room)."""
    region = Region.attach(region_name)
    try:
        mb = MessageBuffer.attach(region, buf_name)
        mb.spin = 0.0
        seq = 0
        while mb.try_send(make_message(seq, payload_len)):
            seq += 1
        _report(results, ("full", seq))
        for _ in range(extra):
            mb.send(make_message(seq, payload_len), timeout=GENEROUS)
            seq += 1
        _report(results, ("ok", seq))
    except BaseException as e:
        _report(results, ("error", repr(e)))
        raise
    finally:
        region.close()


def endless_writer(region_name: str, buf_name: str, max_payload: int, seed: int) -> None:
    """Send checked messages until killed."""
    region = Region.attach(region_name)
    mb = MessageBuffer.attach(region, buf_name)
    seq = 0
    while True:
        mb.send(make_message(seq, message_size(seed, seq, max_payload)), timeout=GENEROUS)
        seq += 1


def endless_stream_writer(region_name: str, buf_name: str) -> None:
    region = Region.attach(region_name)
    sb = StreamBuffer.attach(region, buf_name)
    sent = 0
    rng = random.Random(5)
    while True:
        n = rng.randint(1, sb.capacity)
        sent += sb.write(stream_bytes(sent, n), timeout=GENEROUS)


def endless_reader(region_name: str, buf_name: str, max_payload: int, seed: int, results: Any) -> None:
    """Receive and check messages until killed; report the count every 1000."""
    region = Region.attach(region_name)
    mb = MessageBuffer.attach(region, buf_name)
    seq = 0
    while True:
        check_message(mb.receive(timeout=GENEROUS), seq, message_size(seed, seq, max_payload))
        seq += 1
        if seq % 1000 == 0:
            results.put(seq)


def attach_and_idle(region_name: str, ready: Any) -> None:
    """Attach to the region, say so, and sleep (until killed)."""
    region = Region.attach(region_name)
    ready.set()
    time.sleep(3600)
    region.close()


def create_region_and_idle(region_name: str, ready: Any) -> None:
    """Create a region (so this process is its creator), say so, and sleep until killed."""
    region = Region.create(region_name, 1 << 16)
    MessageBuffer.create(region, "left-behind", 64)
    ready.set()
    time.sleep(3600)
    region.close()


def receive_until_interrupted(region_name: str, buf_name: str, results: Any) -> None:
    """Block in receive(); report how it ended (KeyboardInterrupt is expected)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    region = Region.attach(region_name)
    try:
        mb = MessageBuffer.attach(region, buf_name)
        try:
            mb.receive(timeout=GENEROUS)
        except KeyboardInterrupt:
            results.put("KeyboardInterrupt")
            return
        except BaseException as e:
            results.put(repr(e))
            return
        results.put("returned")
    finally:
        region.close()


def run_callable(fn: Any, results: Any) -> None:
    """Run `fn()` (a module-level function); report success or the traceback."""
    import traceback

    try:
        fn()
    except BaseException:
        results.put(("error", traceback.format_exc()))
        raise
    results.put(("ok", None))
