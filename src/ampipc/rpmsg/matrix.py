"""OpenAMP's matrix_multiply protocol, sans-I/O: the 296-byte request and the 148-byte reply.

Theory of operation
-------------------
Wire format (openamp-system-reference ``matrix_multiply``; host-native little-endian C structs,
copied raw)::

    struct _matrix { u32 size; u32 elements[6][6]; }      148 bytes, row-major: [i][j] at 4 + 4 * (6i + j)
    request  (driver -> device)  A at 0, B at 148          296 bytes
    reply    (device -> driver)  R                         148 bytes
    shutdown                     first u32 = 0xEF56A55A    (the C driver never sends it)

The device computes ``R.size = A.size`` and ``R[i][j] = sum(A[i][k] * B[k][j] for k < R.size)``
(u32 arithmetic, wrapping) for ``i < A.size, j < B.size``; other cells are 0. The C device
``memcpy``s any length into its stack and indexes with any size; this module refuses a message of
another length and any size above 6 (`ProtocolError`), so nothing from the peer is used unchecked.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "MATRIX",
    "MATRIX_DIM",
    "REPLY_SIZE",
    "REQUEST_SIZE",
    "SHUTDOWN_WORD",
    "Matrix",
    "count_errors",
    "decode_matrix",
    "decode_request",
    "encode_request",
    "generate",
    "is_shutdown",
    "multiply",
]

MATRIX_DIM = 6
MATRIX = struct.Struct(f"<I{MATRIX_DIM * MATRIX_DIM}I")
REPLY_SIZE = MATRIX.size
REQUEST_SIZE = 2 * MATRIX.size
SHUTDOWN_WORD = 0xEF56A55A
_MASK = 0xFFFFFFFF

assert REPLY_SIZE == 148 and REQUEST_SIZE == 296


@dataclass(frozen=True)
class Matrix:
    """``size`` (0..6) and the full 6x6 element grid as 36 row-major u32 values."""

    size: int
    elements: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 0 <= self.size <= MATRIX_DIM:
            raise ValueError(f"matrix size must be 0..{MATRIX_DIM}, not {self.size!r}")
        if len(self.elements) != MATRIX_DIM * MATRIX_DIM or any(not 0 <= e <= _MASK for e in self.elements):
            raise ValueError(f"a matrix has {MATRIX_DIM * MATRIX_DIM} u32 elements")

    def at(self, i: int, j: int) -> int:
        return self.elements[MATRIX_DIM * i + j]

    def encode(self) -> bytes:
        return MATRIX.pack(self.size, *self.elements)


def decode_matrix(data: bytes | bytearray | memoryview, offset: int = 0) -> Matrix:
    """One matrix at `offset`; `ProtocolError` if it does not fit or its size exceeds 6."""
    if len(data) < offset + MATRIX.size:
        raise ProtocolError(f"a matrix needs {MATRIX.size} bytes at offset {offset}; the message has {len(data)}")
    size, *elements = MATRIX.unpack_from(data, offset)
    if size > MATRIX_DIM:
        raise ProtocolError(f"matrix size {size} exceeds the wire format's {MATRIX_DIM}x{MATRIX_DIM}")
    return Matrix(size, tuple(elements))


def encode_request(a: Matrix, b: Matrix) -> bytes:
    return a.encode() + b.encode()


def is_shutdown(data: bytes | bytearray | memoryview) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == SHUTDOWN_WORD


def decode_request(data: bytes | bytearray | memoryview) -> tuple[Matrix, Matrix]:
    """(A, B) of a request; `ProtocolError` for any length but 296 or a size above 6."""
    if len(data) != REQUEST_SIZE:
        raise ProtocolError(f"a matrix request has {REQUEST_SIZE} bytes, not {len(data)}")
    return decode_matrix(data, 0), decode_matrix(data, MATRIX.size)


def multiply(a: Matrix, b: Matrix) -> Matrix:
    """What matrix_multiplyd computes (u32, wrapping); cells outside A.size x B.size are 0."""
    n = a.size
    out = [0] * (MATRIX_DIM * MATRIX_DIM)
    for i in range(n):
        for j in range(b.size):
            out[MATRIX_DIM * i + j] = sum(a.at(i, k) * b.at(k, j) for k in range(n)) & _MASK
    return Matrix(n, tuple(out))


def generate(rng: random.Random) -> Matrix:
    """A 6x6 matrix of values 0..9, as the C driver's ``(rand() & 0x7F) % 10``."""
    return Matrix(MATRIX_DIM, tuple((rng.getrandbits(31) & 0x7F) % 10 for _ in range(MATRIX_DIM * MATRIX_DIM)))


def count_errors(expected: Matrix, reply: bytes | bytearray | memoryview) -> int:
    """Elements of `reply` that differ from `expected` (all 36 compared, size not, as the C driver);
    a reply of the wrong length is `ProtocolError`."""
    if len(reply) != REPLY_SIZE:
        raise ProtocolError(f"Received matrix is of invalid len {len(reply)} (expected {REPLY_SIZE})")
    got = MATRIX.unpack(bytes(reply))[1:]
    return sum(1 for x, y in zip(got, expected.elements) if x != y)
