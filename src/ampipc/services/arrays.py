"""Arrays over copying paths: dtype, shape and C order framed in a small header; scatter-gather sends.

Theory of operation
-------------------
An array message is one message of any messaging path (MessageBuffer, `Ipc` channel, RPMsg
endpoint): an ``ARRAY_HEADER`` (16 bytes), the shape, an optional directive, then the array's
bytes in C order. Layout, little-endian::

    0   u32  magic       "AMAR" (0x52414D41)
    4   u8   ndim        0..MAX_NDIM
    5   u8   flags       bit 0: the directive is a `ProcessingDirective`
    6   u16  directive length
    8   8s   dtype       numpy type string (``<f4``, ``|u1``, ...), ASCII, NUL padded
    16  ndim x u64       shape
    ..  directive bytes, then the data (product(shape) * itemsize bytes)

The receiver checks every field before use (magic, ndim, a dtype it can represent, shape against
the data length) and raises `ampipc.ProtocolError` otherwise. Without numpy, arrays are
memoryviews of the struct-module formats that numpy's basic types map to.

`send_parts` sends several buffers as one message. A target with its own ``send_parts`` (a ring
that gathers the parts as it copies them in) is used directly; otherwise, as a MessageBuffer's
native send takes a single buffer today, the parts are gathered into a per-thread scratch area
that is reused (no allocation per message): one copy more than a native gather would make.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

from ..errors import ProtocolError
from .directives import ProcessingDirective

if TYPE_CHECKING:
    from ..ipc import Ipc

__all__ = [
    "ARRAY_HEADER",
    "ARRAY_MAGIC",
    "MAX_NDIM",
    "Receiver",
    "Sender",
    "ReceivedArray",
    "Target",
    "Source",
    "receive_array",
    "send_array",
    "send_parts",
]

ARRAY_MAGIC = 0x52414D41
ARRAY_HEADER = struct.Struct("<IBBH8s")
MAX_NDIM = 8
MAX_DIRECTIVE_BYTES = 1024
FLAG_TYPED_DIRECTIVE = 1

# numpy type strings -> struct formats, for memoryview casts without numpy
_STRUCT_FORMATS = {
    "|u1": "B", "|i1": "b", "|b1": "?",
    "<u2": "H", "<i2": "h", "<u4": "I", "<i4": "i", "<u8": "Q", "<i8": "q",
    "<f4": "f", "<f8": "d",
}
_ITEMSIZE = {"B": 1, "b": 1, "?": 1, "H": 2, "h": 2, "I": 4, "i": 4, "Q": 8, "q": 8, "f": 4, "d": 8}


class Sender(Protocol):
    def send(self, data: Any, /, timeout: float | None = ...) -> None: ...


class Receiver(Protocol):
    def receive(self, timeout: float | None = ...) -> bytes: ...


Target = Union[Sender, "tuple[Ipc, int]"]
Source = Union[Receiver, "tuple[Ipc, int]"]


def send_to(target: Target, data: Any, timeout: float | None) -> None:
    """One message through any messaging path: a buffer or endpoint, or ``(ipc, channel)``."""
    if isinstance(target, tuple):
        ipc, channel = target
        ipc.send(channel, data, timeout)
    else:
        target.send(data, timeout=timeout)


def receive_from(source: Source, timeout: float | None) -> bytes:
    if isinstance(source, tuple):
        ipc, channel = source
        return ipc.receive(channel, timeout)
    return source.receive(timeout=timeout)


def try_receive_from(source: Source) -> bytes | None:
    """One message if one is there now, else None (a buffer's or channel's try_receive; an endpoint's queue)."""
    if isinstance(source, tuple):
        ipc, channel = source
        return ipc.try_receive(channel)
    try_receive = getattr(source, "try_receive", None)
    if try_receive is not None:
        got = try_receive()
        return None if got is None else bytes(got)
    try:
        return source.receive(timeout=0)
    except TimeoutError:
        return None


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


_dtype_cache: dict[tuple[Any, bool], tuple[str, int]] = {}


def normalise_dtype(dtype: Any) -> tuple[str, int]:
    """(type string, itemsize) of a dtype-like value; ValueError for types that cannot travel."""
    key = (dtype, _numpy() is None)
    try:
        return _dtype_cache[key]
    except (KeyError, TypeError):
        pass
    found = _normalise_dtype(dtype)
    try:
        if len(_dtype_cache) < 256:
            _dtype_cache[key] = found
    except TypeError:  # an unhashable dtype-like value
        pass
    return found


def _normalise_dtype(dtype: Any) -> tuple[str, int]:
    np = _numpy()
    if np is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise ValueError(f"not a data type: {dtype!r} ({exc})") from None
        if dt.hasobject or dt.itemsize == 0 or dt.fields is not None or dt.subdtype is not None:
            raise ValueError(f"data type {dt} cannot be sent (plain numeric types only)")
        text = dt.str
        if len(text) > 8:
            raise ValueError(f"data type {text!r} has too long a name")
        return text, dt.itemsize
    text = str(dtype)
    if text not in _STRUCT_FORMATS:
        raise ValueError(f"without numpy the data type must be one of {sorted(_STRUCT_FORMATS)}, not {dtype!r}")
    return text, _ITEMSIZE[_STRUCT_FORMATS[text]]


@functools.lru_cache(maxsize=256)
def check_wire_dtype(raw: bytes) -> tuple[str, int]:
    """The type string of a header, checked; ProtocolError if unusable here."""
    text = raw.split(b"\0", 1)[0]
    if not text or not text.isascii():
        raise ProtocolError(f"invalid data type {raw!r} in the header")
    try:
        return normalise_dtype(text.decode("ascii"))
    except ValueError as exc:
        raise ProtocolError(f"unusable data type in the header: {exc}") from None


def typed_view(view: memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
    """A numpy array over `view` (no copy), or a cast memoryview when numpy is missing."""
    np = _numpy()
    if np is not None:
        return np.frombuffer(view, dtype=dtype).reshape(shape)
    fmt: Any = _STRUCT_FORMATS.get(dtype)
    if fmt is None:
        raise ValueError(f"without numpy, data type {dtype!r} has no memoryview format")
    if len(shape) == 0 or 0 in shape:
        return view.cast(fmt)
    return view.cast(fmt, shape)


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    out = tuple(shape)
    if len(out) > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dimensions, not {len(out)}")
    for n in out:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 63:
            raise ValueError(f"shape entries must be non-negative ints, not {shape!r}")
    return out


def encode_directive(directive: ProcessingDirective | bytes | None) -> tuple[bytes, int]:
    if directive is None:
        return b"", 0
    if isinstance(directive, ProcessingDirective):
        return directive.encode(), FLAG_TYPED_DIRECTIVE
    if isinstance(directive, (bytes, bytearray, memoryview)):
        raw = bytes(directive)
        if len(raw) > MAX_DIRECTIVE_BYTES:
            raise ValueError(f"a directive has at most {MAX_DIRECTIVE_BYTES} bytes, not {len(raw)}")
        return raw, 0
    raise TypeError(f"directive must be a ProcessingDirective, bytes or None, not {type(directive).__name__}")


def decode_directive(raw: bytes, flags: int) -> ProcessingDirective | bytes | None:
    if flags & FLAG_TYPED_DIRECTIVE:
        return ProcessingDirective.decode(raw)
    return raw if raw else None


def _array_parts(array: Any) -> tuple[memoryview, str, tuple[int, ...]]:
    """A C-contiguous byte view of `array`, its type string and shape."""
    np = _numpy()
    if np is not None and isinstance(array, np.ndarray):
        arr = np.ascontiguousarray(array)
        dtype, _ = normalise_dtype(arr.dtype)
        return memoryview(arr).cast("B"), dtype, check_shape(arr.shape)
    view = memoryview(array)
    if not view.c_contiguous:
        raise ValueError("the array must be C-contiguous")
    fmt = view.format.lstrip("@=<")
    found = next((k for k, v in _STRUCT_FORMATS.items() if v == fmt), None)
    if found is None:
        raise ValueError(f"unsupported memoryview format {view.format!r}")
    return view.cast("B"), found, check_shape(view.shape or ())


def array_header(dtype: str, shape: tuple[int, ...], directive: bytes, flags: int) -> bytes:
    return ARRAY_HEADER.pack(ARRAY_MAGIC, len(shape), flags, len(directive), dtype.encode("ascii")) + struct.pack(
        f"<{len(shape)}Q", *shape
    ) + directive


def send_array(
    target: Target, array: Any, directive: ProcessingDirective | bytes | None = None, *, timeout: float | None = None
) -> None:
    """Send `array` (numpy array or memoryview) with its dtype, shape and an optional directive, as one message."""
    data, dtype, shape = _array_parts(array)
    raw_directive, flags = encode_directive(directive)
    send_parts(target, [array_header(dtype, shape, raw_directive, flags), data], timeout=timeout)


class ReceivedArray:
    """An array received over a copying path: ``array`` (numpy or memoryview), ``directive``."""

    __slots__ = ("array", "directive", "dtype", "shape")

    def __init__(self, array: Any, dtype: str, shape: tuple[int, ...], directive: ProcessingDirective | bytes | None):
        self.array = array
        self.dtype = dtype
        self.shape = shape
        self.directive = directive

    def __repr__(self) -> str:
        return f"<ReceivedArray {self.dtype} {self.shape} directive={self.directive!r}>"


def parse_array(message: bytes | bytearray | memoryview) -> ReceivedArray:
    """Decode one array message (sans-I/O); ProtocolError if any field is inconsistent."""
    view = memoryview(message)
    if len(view) < ARRAY_HEADER.size:
        raise ProtocolError(f"an array message needs at least {ARRAY_HEADER.size} bytes, got {len(view)}")
    magic, ndim, flags, dlen, raw_dtype = ARRAY_HEADER.unpack_from(view)
    if magic != ARRAY_MAGIC:
        raise ProtocolError(f"not an array message (magic {magic:#010x}, expected {ARRAY_MAGIC:#010x})")
    if ndim > MAX_NDIM:
        raise ProtocolError(f"array message declares {ndim} dimensions; at most {MAX_NDIM}")
    dtype, itemsize = check_wire_dtype(raw_dtype)
    pos = ARRAY_HEADER.size
    if len(view) < pos + 8 * ndim + dlen:
        raise ProtocolError("array message is shorter than its shape and directive")
    shape = struct.unpack_from(f"<{ndim}Q", view, pos)
    pos += 8 * ndim
    directive = decode_directive(bytes(view[pos : pos + dlen]), flags)
    pos += dlen
    count = math.prod(shape)
    if count * itemsize != len(view) - pos:
        raise ProtocolError(f"array message carries {len(view) - pos} data bytes; shape {shape} of {dtype} needs {count * itemsize}")
    return ReceivedArray(typed_view(view[pos:], dtype, shape), dtype, shape, directive)


def receive_array(source: Source, timeout: float | None = None) -> ReceivedArray:
    """Receive one array message sent by `send_array`."""
    return parse_array(receive_from(source, timeout))


# One reusable gather area per thread (a buffer has one writer at a time), grown on demand.
_scratch = threading.local()


def _gather_area(size: int) -> bytearray:
    area: bytearray | None = getattr(_scratch, "area", None)
    if area is None or len(area) < size:
        area = bytearray(max(size, 2 * len(area) if area else size))
        _scratch.area = area
    return area


def send_parts(target: Target, parts: Sequence[Any], *, timeout: float | None = None) -> None:
    """Send the concatenation of `parts` (buffers) as one message, without building a new bytes object."""
    views = [memoryview(p).cast("B") if not isinstance(p, memoryview) or p.format != "B" else p for p in parts]
    if len(views) == 1:
        send_to(target, views[0], timeout)
        return
    native = None if isinstance(target, tuple) else getattr(target, "send_parts", None)
    if native is not None:  # a ring that gathers the parts itself (no scratch copy)
        native(views, timeout=timeout)
        return
    total = sum(len(v) for v in views)
    area = _gather_area(total)
    pos = 0
    for v in views:
        area[pos : pos + len(v)] = v
        pos += len(v)
    with memoryview(area) as whole:
        send_to(target, whole[:total], timeout)
