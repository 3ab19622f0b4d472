"""Bounds-checked access to the shared area that RPMsg addresses.

Theory of operation
-------------------
A `Window` is the shared area as the protocol sees it: address *a* is byte *a* of the window.
Every access checks ``0 <= offset`` and ``offset + width <= size`` before touching memory, so a
value read from the peer can never make this process read or write outside the area, whatever
the caller forgot to validate; a violation raises `OutOfWindow` (a `ProtocolError`).

The two 32-bit words that publish ring indexes are accessed with `load_word` (acquire) and
`store_word` (release). When the window lies in a `_native.Mapping`, these are the mapping's
atomic operations (sequentially consistent, so correct on weakly ordered CPUs too); over a plain
bytearray (tests, byte images) they are ordinary reads and writes.

A `ModelledWindow` is the same area as one core of a chip region sees it (`ampipc.hw.cache`): every
access, the published words included, goes through the mapping's memory model, so the CM7's cache
holds the rings, buffers and resource table as it would on the chip. The C fast path addresses the
memory directly and is therefore not used under a model (`Window.modelled`).
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from ..errors import ProtocolError

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class OutOfWindow(ProtocolError):
    """An access would fall outside the shared area."""


class AtomicMapping(Protocol):
    def load_u32(self, offset: int, /) -> int: ...
    def store_u32(self, offset: int, value: int, /) -> Any: ...


class Window:
    """The shared area: ``size`` bytes, optionally backed by an atomic-capable mapping."""

    __slots__ = ("_base", "_mapping", "size", "view")
    modelled = False

    def __init__(self, view: memoryview | bytearray, mapping: AtomicMapping | None = None, mapping_offset: int = 0) -> None:
        mv = memoryview(view)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if mv.readonly:
            raise ValueError("the shared area must be writable")
        self.view = mv
        self.size = len(mv)
        self._mapping = mapping
        self._base = mapping_offset
        if mapping is not None and mapping_offset % 4:
            raise ValueError("a mapped window must start on a 4-byte boundary")

    def contains(self, offset: int, length: int) -> bool:
        return 0 <= offset and 0 <= length and offset + length <= self.size

    def _check(self, offset: int, length: int) -> None:
        # A negative length is refused too: a plain window would read nothing, a modelled one would
        # fail inside the memory model; both refuse it here, alike.
        if not self.contains(offset, length):
            raise OutOfWindow(f"access of {length} bytes at {offset:#x} is outside the shared area of {self.size:#x} bytes")

    def u8(self, offset: int) -> int:
        self._check(offset, 1)
        return int(self.view[offset])

    def u16(self, offset: int) -> int:
        self._check(offset, 2)
        return int(_U16.unpack_from(self.view, offset)[0])

    def u32(self, offset: int) -> int:
        self._check(offset, 4)
        return int(_U32.unpack_from(self.view, offset)[0])

    def u64(self, offset: int) -> int:
        self._check(offset, 8)
        return int(_U64.unpack_from(self.view, offset)[0])

    def put_u8(self, offset: int, value: int) -> None:
        self._check(offset, 1)
        self.view[offset] = value & 0xFF

    def put_u16(self, offset: int, value: int) -> None:
        self._check(offset, 2)
        _U16.pack_into(self.view, offset, value & 0xFFFF)

    def put_u32(self, offset: int, value: int) -> None:
        self._check(offset, 4)
        _U32.pack_into(self.view, offset, value & 0xFFFFFFFF)

    def unpack(self, fmt: struct.Struct, offset: int) -> tuple[Any, ...]:
        self._check(offset, fmt.size)
        return fmt.unpack_from(self.view, offset)

    def pack(self, fmt: struct.Struct, offset: int, *values: Any) -> None:
        self._check(offset, fmt.size)
        fmt.pack_into(self.view, offset, *values)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self.view[offset : offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self._check(offset, n)
        self.view[offset : offset + n] = data

    def fill(self, offset: int, length: int, byte: int = 0) -> None:
        self._check(offset, length)
        self.view[offset : offset + length] = bytes([byte]) * length

    def load_word(self, offset: int) -> int:
        """Acquire-load the aligned u32 at ``offset``."""
        self._check(offset, 4)
        if self._mapping is not None:
            return self._mapping.load_u32(self._base + offset)
        return int(_U32.unpack_from(self.view, offset)[0])

    def store_word(self, offset: int, value: int) -> None:
        """Release-store the aligned u32 at ``offset``: every earlier write is visible first."""
        self._check(offset, 4)
        if self._mapping is not None:
            self._mapping.store_u32(self._base + offset, value & 0xFFFFFFFF)
        else:
            _U32.pack_into(self.view, offset, value & 0xFFFFFFFF)

    def release(self) -> None:
        self.view.release()


class ModelledMapping(AtomicMapping, Protocol):
    def model_read(self, offset: int, n: int, /) -> bytes: ...
    def model_write(self, offset: int, data: bytes | bytearray | memoryview, /) -> Any: ...


class ModelledWindow(Window):
    """The shared area of a chip region, every access through this core's memory model."""

    __slots__ = ("_model",)
    modelled = True

    def __init__(self, view: memoryview | bytearray, mapping: ModelledMapping, mapping_offset: int = 0) -> None:
        super().__init__(view, mapping, mapping_offset)
        self._model = mapping

    def _get(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self._model.model_read(self._base + offset, length))

    def _put(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check(offset, len(data))
        self._model.model_write(self._base + offset, data)

    def u8(self, offset: int) -> int:
        return self._get(offset, 1)[0]

    def u16(self, offset: int) -> int:
        return int(_U16.unpack(self._get(offset, 2))[0])

    def u32(self, offset: int) -> int:
        return int(_U32.unpack(self._get(offset, 4))[0])

    def u64(self, offset: int) -> int:
        return int(_U64.unpack(self._get(offset, 8))[0])

    def put_u8(self, offset: int, value: int) -> None:
        self._put(offset, _U8.pack(value & 0xFF))

    def put_u16(self, offset: int, value: int) -> None:
        self._put(offset, _U16.pack(value & 0xFFFF))

    def put_u32(self, offset: int, value: int) -> None:
        self._put(offset, _U32.pack(value & 0xFFFFFFFF))

    def unpack(self, fmt: struct.Struct, offset: int) -> tuple[Any, ...]:
        return fmt.unpack(self._get(offset, fmt.size))

    def pack(self, fmt: struct.Struct, offset: int, *values: Any) -> None:
        self._put(offset, fmt.pack(*values))

    def read(self, offset: int, length: int) -> bytes:
        return self._get(offset, length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._put(offset, data)

    def fill(self, offset: int, length: int, byte: int = 0) -> None:
        self._check(offset, length)  # before the bytes are made: a negative length makes none
        self._put(offset, bytes([byte]) * length)

    def load_word(self, offset: int) -> int:
        return self.u32(offset)  # the model fences every access to memory

    def store_word(self, offset: int, value: int) -> None:
        self.put_u32(offset, value)
