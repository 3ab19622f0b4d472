"""The pool's API in one process: every messaging path, typed views with and without numpy,
timeouts, refusals of stale and forged descriptors, close, attach checks."""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Any

import numpy as np
import pytest

from ampipc import IpcError, Ipc, MessageBuffer, Timeout
from ampipc.errors import CorruptRegion, ObjectNotFound
from ampipc.services import (
    ForgedDescriptor,
    PayloadPool,
    Processing,
    ProcessingDirective,
    StaleDescriptor,
)
from ampipc.services import arrays as A
from ampipc.services import pool as P

from rpmsg._support import loopback_pair  # type: ignore[import-not-found]


def _pool(region: Any, slots: int = 4, slot_size: int = 1024) -> tuple[PayloadPool, MessageBuffer]:
    return PayloadPool.create(region, "pool", slots=slots, slot_size=slot_size), MessageBuffer.create(region, "d", 4096)


def test_numpy_frame_round_trip_is_zero_copy(region: Any) -> None:
    pool, buf = _pool(region)
    loan = pool.loan(timeout=0)
    frame = loan.array(np.float32, (16, 16))
    frame[:] = np.arange(256, dtype=np.float32).reshape(16, 16)
    pool.commit(loan, buf, ProcessingDirective(1024, "<f4", Processing.FFT, sequence=7, params=(0.5,), user=b"u"))
    with pool.receive(buf, timeout=0) as payload:
        got = payload.array()
        assert got.shape == (16, 16) and got.dtype == np.float32 and not got.flags.writeable
        assert np.array_equal(got, np.arange(256, dtype=np.float32).reshape(16, 16))
        assert payload.directive == ProcessingDirective(1024, "<f4", Processing.FFT, sequence=7, params=(0.5,), user=b"u")
        # zero copy: the received array is the slot's memory
        start = pool._data + payload.slot * pool.slot_size
        region.view[start : start + 4] = struct.pack("<f", 99.0)
        assert got[0, 0] == 99.0
        with pytest.raises(ValueError):
            got[0, 0] = 1.0
        del got
    assert payload.released and pool.statistics().in_use == 0


def test_without_numpy_views_are_cast_memoryviews(region: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(A, "_numpy", lambda: None)
    pool, buf = _pool(region)
    loan = pool.loan(timeout=0)
    view = loan.array("<i4", (3, 2))
    assert isinstance(view, memoryview) and view.format == "i" and view.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            view[i, j] = i * 10 + j
    pool.commit(loan, buf)
    payload = pool.receive(buf, timeout=0)
    got = payload.array()
    assert isinstance(got, memoryview) and got.readonly and got.tolist() == [[0, 1], [10, 11], [20, 21]]
    payload.release()
    with pytest.raises(ValueError):
        pool.loan(timeout=0).array("<c16", 2)  # no struct format without numpy


def test_ipc_channel_and_rpmsg_endpoint_carry_descriptors(region: Any) -> None:
    pool, _ = _pool(region)
    cm7 = Ipc.init(region, channels=1, strategy="direct")
    cm4 = Ipc.attach(region)
    cm7.start()
    cm4.start()
    try:
        assert pool.try_receive((cm4, 0)) is None
        loan = pool.loan(timeout=0)
        loan.view[:5] = b"hello"
        loan.commit((cm7, 0), length=5)
        with pool.receive((cm4, 0), timeout=10) as payload:
            assert bytes(payload.data) == b"hello"
    finally:
        cm4.close()
        cm7.close()
    with loopback_pair() as (host, remote):
        bound = threading.Event()
        host.on_new_service = lambda dev, name, addr: (dev.create_endpoint(name, dest=addr), bound.set())
        ept = remote.create_endpoint("frames")
        assert bound.wait(10)
        host_ept = host.endpoints[0] if host.endpoints[0].name == "frames" else host.endpoints[1]
        assert pool.try_receive(ept) is None
        loan = pool.loan(timeout=0)
        loan.view[:3] = b"abc"
        pool.commit(loan, host_ept, b"dir", length=3)
        with pool.receive(ept, timeout=10) as payload:
            assert bytes(payload.data) == b"abc" and payload.directive == b"dir"


def test_stale_and_forged_descriptors_are_refused(region: Any, make_region: Any) -> None:
    pool, buf = _pool(region)
    loan = pool.loan(timeout=0)
    raw = pool.commit(loan, buf, length=16)
    buf.receive(timeout=0)

    def patched(offset: int, fmt: str, value: Any) -> bytes:
        out = bytearray(raw)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    for bad, what in [
        (patched(0, "<I", 0x12345678), "magic"),
        (patched(4, "<I", 0x1234), "nonce"),
        (patched(8, "<I", 4), "slot out of range"),
        (patched(16, "<I", 4096), "length beyond slot"),
        (patched(16, "<I", 8), "length vs shape"),
        (patched(20, "<B", 9), "ndim"),
        (patched(24, "8s", b"|O8"), "object dtype"),
        (patched(32, "<Q", 8), "shape"),
        (raw[:20], "truncated"),
        (raw + b"x", "trailing"),
    ]:
        with pytest.raises(ForgedDescriptor):
            pool.accept(bad)
            pytest.fail(f"a descriptor with a bad {what} was accepted")
    # a consistent descriptor that was not the one committed: the checksum tells
    fake = bytearray(raw)
    struct.pack_into("<I", fake, 16, 8)
    struct.pack_into("<Q", fake, 32, 8)
    with pytest.raises(ForgedDescriptor, match="differs"):
        pool.accept(bytes(fake))
    # another pool's descriptor
    other_region = make_region()
    other = PayloadPool.create(other_region, "pool", slots=4, slot_size=1024)
    with pytest.raises(ForgedDescriptor, match="another pool"):
        other.accept(raw)
    payload = pool.accept(raw)
    with pytest.raises(StaleDescriptor, match="accepted already"):
        pool.accept(raw)
    payload.release()
    with pytest.raises(StaleDescriptor, match="generation"):
        pool.accept(raw)
    assert zlib.crc32(raw) != 0 and pool.statistics().accepts == 1


def test_try_receive_from_a_buffer(region: Any) -> None:
    pool, buf = _pool(region)
    assert pool.try_receive(buf) is None
    pool.commit(pool.loan(timeout=0), buf, length=2)
    payload = pool.try_receive(buf)
    assert payload is not None and payload.length == 2
    payload.release()
    assert pool.try_receive(buf) is None


def test_loan_timeout_try_loan_and_cancel(region: Any) -> None:
    pool, _ = _pool(region, slots=2)
    a, b = pool.loan(timeout=0), pool.loan(timeout=0)
    assert pool.try_loan() is None
    with pytest.raises(Timeout):
        pool.loan(timeout=0.05)
    with pytest.raises(TimeoutError):
        pool.loan(timeout=0)
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError):
            pool.loan(timeout=bad)  # type: ignore[arg-type]
    a.cancel()
    with pytest.raises(IpcError):
        a.cancel()
    c = pool.loan(timeout=0)
    assert c.slot == a.slot and c.generation == a.generation + 1
    stats = pool.statistics()
    assert stats.in_use == 2 and stats.peak_in_use == 2 and stats.loans == 3 and stats.releases == 1
    b.cancel()
    c.cancel()


def test_failed_send_keeps_the_loan(region: Any) -> None:
    pool = PayloadPool.create(region, "pool", slots=2, slot_size=64)
    tiny = MessageBuffer.create(region, "tiny", 40)
    loan = pool.loan(timeout=0)
    with pytest.raises(ValueError):  # the descriptor can never fit the buffer
        pool.commit(loan, tiny, length=8)
    assert pool.owners()[loan.slot][1] == "loaned"
    big = MessageBuffer.create(region, "big", 1024)
    pool.commit(loan, big, length=8)
    assert pool.owners()[loan.slot][1] == "committed"


def test_close_gives_back_what_this_process_holds(region: Any) -> None:
    pool, buf = _pool(region)
    pool.loan(timeout=0)
    pool.commit(pool.loan(timeout=0), buf, length=1)
    payload = pool.receive(buf, timeout=0)
    pool.close()
    twin = PayloadPool.attach(region, "pool")
    assert [state for _, state, _ in twin.owners()] == ["free"] * 4
    with pytest.raises(IpcError):
        pool.loan(timeout=0)
    assert payload.released  # given back at close; a later release() is a no-op
    payload.release()
    twin.close()


def test_attach_checks_the_header(region: Any) -> None:
    with pytest.raises(ObjectNotFound):
        PayloadPool.attach(region, "none")
    pool = PayloadPool.create(region, "pool", slots=2, slot_size=64)
    region.mapping.store_u32(pool._base + P.OFF_COUNT, 1 << 20)
    with pytest.raises(CorruptRegion):
        PayloadPool.attach(region, "pool")
    with pytest.raises(ValueError):
        PayloadPool.create(region, "p2", slots=0, slot_size=64)
    with pytest.raises(ValueError):
        PayloadPool.create(region, "p3", slots=2, slot_size=0)


def test_directive_record_checks() -> None:
    d = ProcessingDirective(1 << 20, "<f4", Processing.MEAN, sequence=3, params=(1.0, 2.0), user=b"xyz")
    raw = d.encode()
    assert len(raw) == 99 and ProcessingDirective.decode(raw) == d and d.processing_name == "MEAN"
    assert ProcessingDirective(0, "|u1", 300).processing_name == "user:300"
    from ampipc import ProtocolError

    for bad in (raw[:50], b"XXXX" + raw[4:], raw[:28] + b"\x09\x00" + raw[30:], raw + b"extra"):
        with pytest.raises(ProtocolError):
            ProcessingDirective.decode(bad)
    with pytest.raises(ValueError):
        ProcessingDirective(1, "<f4", params=(1, 2, 3, 4, 5))
    with pytest.raises(ValueError):
        ProcessingDirective(-1, "<f4")


def test_a_closed_pool_refuses_loans_commits_and_cancels(region: Any) -> None:
    pool, buf = _pool(region)
    loan = pool.loan(timeout=0)
    other = PayloadPool.attach(region, "pool")
    pool.close()  # gives the loan back
    for call in (lambda: pool.commit(loan, buf), lambda: pool.cancel(loan), pool.try_loan):
        with pytest.raises(IpcError):
            call()
    assert [state for _, state, _ in other.owners()] == ["free"] * 4
    other.close()
