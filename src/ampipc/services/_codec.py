"""The remote-call wire format: msgspec MessagePack frames, defined once.

Theory of operation
-------------------
Every message on a link is one MessagePack *array* whose first element is the frame's tag (a small
integer); the rest are the fields below, in order (msgspec ``array_like`` structs). Integers are
MessagePack integers (any width up to 64 bits); ``id`` is an unsigned 64-bit request id chosen by
the client, unique per link; ``budget_us`` is the caller's remaining deadline in microseconds at
send time (0: none), relative so that peers need no common clock.

====  ========  =================================================================================
tag   frame     fields after the tag
====  ========  =================================================================================
1     Request   id, method (str), args (array), kwargs (map str -> any), budget_us
2     Notify    method, args, kwargs                         (one-way: never answered)
3     Cancel    id                                           (the caller gave up on ``id``)
4     Reply     id, result
5     Failure   id, exc_type (str), message (str), traceback (str), errno (int|nil), filename (str|nil)
6     Hello     version, pid, max_message                    (a side announces itself on a link)
7     Bye       reason (str)                                 (orderly end of the link)
8     Chunk     more (bool), data (bin)                      (a piece of a frame too large for one
                                                              message; pieces of one frame are sent
                                                              back to back, the last has more=false)
====  ========  =================================================================================

Decoding is strict: anything that is not one of these frames with fields of these types raises
`ProtocolError`, so a hostile or broken peer never reaches a handler with malformed input.
Arguments and results are any msgspec-encodable values (None, bool, int, float, str, bytes,
bytearray, memoryview, list, tuple, dict, dataclasses, msgspec Structs, ...); bytes travel as
MessagePack ``bin``, copied once into the frame.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from ..errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "Request",
    "Notify",
    "Cancel",
    "Reply",
    "Failure",
    "Hello",
    "Bye",
    "Chunk",
    "ToServer",
    "ToClient",
    "encode",
    "encode_into",
    "decode_to_server",
    "decode_to_client",
    "CHUNK_OVERHEAD",
]

PROTOCOL_VERSION = 1


class Request(msgspec.Struct, array_like=True, tag=1):
    id: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    budget_us: int


class Notify(msgspec.Struct, array_like=True, tag=2):
    method: str
    args: list[Any]
    kwargs: dict[str, Any]


class Cancel(msgspec.Struct, array_like=True, tag=3):
    id: int


class Reply(msgspec.Struct, array_like=True, tag=4):
    id: int
    result: Any


class Failure(msgspec.Struct, array_like=True, tag=5):
    id: int
    exc_type: str
    message: str
    traceback: str
    errno: Union[int, None] = None
    filename: Union[str, None] = None


class Hello(msgspec.Struct, array_like=True, tag=6):
    version: int
    pid: int
    max_message: int


class Bye(msgspec.Struct, array_like=True, tag=7):
    reason: str


class Chunk(msgspec.Struct, array_like=True, tag=8):
    more: bool
    data: bytes


ToServer = Union[Request, Notify, Cancel, Hello, Bye, Chunk]
ToClient = Union[Reply, Failure, Hello, Bye, Chunk]

# Bytes a Chunk frame adds around its data: fixarray(1) + tag(1) + bool(1) + bin32 header(5).
CHUNK_OVERHEAD = 8

_encoder = msgspec.msgpack.Encoder()
_to_server = msgspec.msgpack.Decoder(ToServer)
_to_client = msgspec.msgpack.Decoder(ToClient)


def encode(frame: msgspec.Struct) -> bytes:
    """The frame's bytes. Raises TypeError for a value msgspec cannot encode."""
    try:
        return _encoder.encode(frame)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode the call's values: {exc}") from None


def encode_into(encoder: msgspec.msgpack.Encoder, frame: msgspec.Struct, buffer: bytearray) -> None:
    """Encode into a reused buffer (no new bytes object per frame). Raises TypeError as `encode`."""
    try:
        encoder.encode_into(frame, buffer)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode the call's values: {exc}") from None


def _decode(decoder: msgspec.msgpack.Decoder[Any], data: Any, side: str) -> Any:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed frame to the {side} ({len(data)} bytes): {exc}") from None


def decode_to_server(data: Any) -> Request | Notify | Cancel | Hello | Bye | Chunk:
    """Decode a frame a client sent; `ProtocolError` if it is not a valid one."""
    frame: Request | Notify | Cancel | Hello | Bye | Chunk = _decode(_to_server, data, "server")
    if isinstance(frame, (Request, Cancel)) and not 0 <= frame.id < 1 << 64:
        raise ProtocolError(f"request id {frame.id} is out of range")
    if isinstance(frame, Request) and frame.budget_us < 0:
        raise ProtocolError(f"negative deadline budget {frame.budget_us}")
    return frame


def decode_to_client(data: Any) -> Reply | Failure | Hello | Bye | Chunk:
    """Decode a frame a server sent; `ProtocolError` if it is not a valid one."""
    result: Reply | Failure | Hello | Bye | Chunk = _decode(_to_client, data, "client")
    return result
