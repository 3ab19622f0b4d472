"""Arrays over copying paths: header framing, directives, scatter-gather sends, refusals."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import MessageBuffer, ProtocolError
from ampipc.services import Processing, ProcessingDirective, receive_array, send_array, send_parts
from ampipc.services import arrays as A

DTYPES = ["|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8", "<c8", "|b1"]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), shape=st.lists(st.integers(0, 5), max_size=4), seed=st.integers(0, 2**32 - 1))
def test_parse_inverts_the_framing(dtype: str, shape: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype)
    array = array.reshape(shape)
    directive = ProcessingDirective(array.nbytes, dtype, Processing.FILTER, sequence=seed)
    message = A.array_header(dtype, tuple(shape), directive.encode(), A.FLAG_TYPED_DIRECTIVE) + array.tobytes()
    got = A.parse_array(message)
    assert got.dtype == dtype and got.shape == tuple(shape) and got.directive == directive
    assert np.array_equal(got.array, array, equal_nan=True) or array.size == 0


def test_send_and_receive_arrays_over_a_buffer(region: Any) -> None:
    buf = MessageBuffer.create(region, "arrays", 1 << 16)
    frame = np.linspace(0, 1, 1000, dtype=np.float64).reshape(10, 100)
    send_array(buf, frame, ProcessingDirective(frame.nbytes, "<f8", Processing.MEAN))
    send_array(buf, frame.T, b"raw directive")  # not C-contiguous: sent in C order
    send_array(buf, memoryview(bytearray(b"\x01\x02\x03")))
    first = receive_array(buf, timeout=0)
    assert np.array_equal(first.array, frame) and first.directive.processing == Processing.MEAN  # type: ignore[union-attr]
    second = receive_array(buf, timeout=0)
    assert np.array_equal(second.array, frame.T) and second.directive == b"raw directive"
    third = receive_array(buf, timeout=0)
    assert third.dtype == "|u1" and bytes(third.array) == b"\x01\x02\x03" and third.directive is None


def test_send_parts_is_one_message(region: Any) -> None:
    buf = MessageBuffer.create(region, "parts", 4096)
    payload = np.arange(100, dtype=np.int32)
    send_parts(buf, [b"HEAD", memoryview(payload), bytearray(b"tail")])
    send_parts(buf, [b"only"])
    assert buf.receive(timeout=0) == b"HEAD" + payload.tobytes() + b"tail"
    assert buf.receive(timeout=0) == b"only"
    assert buf.try_receive() is None


def test_bad_array_messages_are_refused() -> None:
    good = A.array_header("<f4", (2,), b"", 0) + bytes(8)
    assert A.parse_array(good).shape == (2,)
    for bad in (
        good[:10],
        b"XXXX" + good[4:],
        good[:4] + bytes([9]) + good[5:],  # ndim 9
        good[:8] + b"|O8\0\0\0\0\0" + good[16:],  # object dtype
        good[:8] + b"nonsense" + good[16:],
        good + b"\0",  # data longer than the shape
        good[:16] + struct.pack("<Q", 1 << 40) + good[24:],
    ):
        with pytest.raises(ProtocolError):
            A.parse_array(bad)
    with pytest.raises(ValueError):
        send_array(None, np.array([object()]))  # type: ignore[arg-type]
