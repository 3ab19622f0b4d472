"""Links: the message paths remote calls travel on (buffer pairs, `Ipc` channels, RPMsg endpoints).

Theory of operation
-------------------
A link moves whole messages both ways between exactly two parties, in order, with a largest
message size (`Link.max_message`). ``send(data, timeout)`` blocks for room (``timeout=0``: do not
wait), ``receive(timeout)`` for the next message; both raise `Timeout` at the timeout, `PeerDied`
when the other side is gone (after everything it sent was drained) and `PeerClosed` when it ended
the link in an orderly way. One thread sends at a time and one receives at a time: the caller
serialises (the rpc layer holds a send lock per link and elects one reader).

Frames longer than ``max_message`` are split by `send_frame` into `Chunk` frames sent back to back
(under the caller's send lock, so the pieces of two frames never interleave) and joined by
`Reassembler` on the other side, up to a bounded total (``max_frame``), so a reply larger than the
transport's message never hangs and never needs an unbounded buffer.

Implementations:

* `BufferPairLink` - two MessageBuffers (ours to write, theirs to read); the optional
  ``peer_alive`` callable replaces the buffers' liveness check, so a wait notices at once (within
  one 100 ms wait slice) that the process on the other side died, even before it ever wrote.
* `IpcLink` - one channel of an `ampipc.Ipc` (any notification strategy).
* `EndpointLink` - an RPMsg endpoint (Region transport or OpenAMP's Linux transport); the peer
  destroying its endpoint (name-service DESTROY) is `PeerClosed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, Union

from ..buffers import MessageBuffer
from ..errors import IpcError, MessageTooLarge, PeerClosed, PeerDied, ProtocolError, Timeout
from ..ipc import Ipc
from ..rpmsg.endpoints import Endpoint
from . import _codec

__all__ = [
    "Link",
    "BufferPairLink",
    "IpcLink",
    "EndpointLink",
    "Reassembler",
    "send_frame",
    "DEFAULT_MAX_FRAME",
    "RPMSG_MAX_PAYLOAD",
]

Data = Union[bytes, bytearray, memoryview]

DEFAULT_MAX_FRAME = 64 << 20
"""The largest frame (after joining chunks) a receiver accepts: 64 MiB unless configured."""

RPMSG_MAX_PAYLOAD = 496
"""OpenAMP's largest RPMsg payload: a 512-byte buffer less the 16-byte header."""

_SLICE = 0.1
_PIECE_GRACE = 5.0


class Link(Protocol):
    """Whole messages both ways between two parties (see the module documentation)."""

    description: str
    max_message: int

    def send(self, data: Data, timeout: float | None) -> None: ...
    def receive(self, timeout: float | None) -> bytes: ...
    def close(self) -> None: ...


def _timeout(what: str, timeout: float | None) -> Timeout:
    return Timeout(f"{what}: nothing within {timeout} s")


class BufferPairLink:
    """A link over two MessageBuffers: ``tx`` this side writes, ``rx`` this side reads."""

    def __init__(
        self,
        tx: MessageBuffer,
        rx: MessageBuffer,
        *,
        peer_alive: Callable[[], bool] | None = None,
        peer: str = "peer",
        description: str | None = None,
    ) -> None:
        self.tx = tx
        self.rx = rx
        self.max_message = tx.capacity - 4
        self.description = description or f"{tx.name}/{rx.name}"
        self._peer = peer
        if peer_alive is not None:
            self._install_liveness(peer_alive)

    def _install_liveness(self, peer_alive: Callable[[], bool]) -> None:
        rx, desc, peer = self.rx, self.description, self._peer

        def check(waiting_role: int) -> None:
            # Called by the core after an unfruitful wait slice. Drain before declaring death: a
            # reader with data left is not told that the writer died.
            if waiting_role == 1 and rx.next_length is not None:
                return
            if not peer_alive():
                raise PeerDied(f"the {peer} of link {desc!r} has died")

        self.tx._peer_check = check
        self.rx._peer_check = check

    def send(self, data: Data, timeout: float | None) -> None:
        if timeout == 0:
            if not self.tx.try_send(data):
                raise Timeout(f"link {self.description!r}: no room for a {len(data)}-byte message now")
            return
        try:
            self.tx.send(data, timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, Timeout):
                raise
            raise Timeout(str(exc)) from None

    def receive(self, timeout: float | None) -> bytes:
        try:
            return self.rx.receive(timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, Timeout):
                raise
            raise Timeout(str(exc)) from None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<BufferPairLink {self.description!r}>"


class IpcLink:
    """A link over channel ``channel`` of an `Ipc` (its notification strategy wakes the reader)."""

    def __init__(self, ipc: Ipc, channel: int) -> None:
        self.ipc = ipc
        self.channel = channel
        self.max_message = ipc.buffer_size - 4
        self.description = f"{ipc.name}[{channel}] {ipc.core.name}<->{ipc.peer}"

    def send(self, data: Data, timeout: float | None) -> None:
        if timeout == 0:
            if not self.ipc.try_send(self.channel, data):
                raise Timeout(f"channel {self.description!r}: no room for a {len(data)}-byte message now")
            return
        try:
            self.ipc.send(self.channel, data, timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, Timeout):
                raise
            raise Timeout(str(exc)) from None

    def receive(self, timeout: float | None) -> bytes:
        try:
            return self.ipc.receive(self.channel, timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, Timeout):
                raise
            raise Timeout(str(exc)) from None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<IpcLink {self.description!r}>"


class EndpointLink:
    """A link over a bound RPMsg endpoint (messages go to ``endpoint.dest``)."""

    def __init__(self, endpoint: Endpoint, *, max_message: int = RPMSG_MAX_PAYLOAD) -> None:
        if endpoint.callback is not None:
            raise ValueError("an EndpointLink needs an endpoint without a callback (its messages queue for receive)")
        self.endpoint = endpoint
        self.max_message = max_message
        self.description = f"rpmsg {endpoint.name!r} {endpoint.addr:#x}"

    def send(self, data: Data, timeout: float | None) -> None:
        if self.endpoint.peer_unbound:
            raise PeerClosed(f"the peer of {self.description} destroyed its endpoint")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.endpoint.is_bound:
            self.endpoint.wait_bound(timeout)
        if timeout == 0:
            if not self.endpoint.try_send(data):
                raise Timeout(f"{self.description}: no free rpmsg buffer now")
            return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.endpoint.send(data, timeout=left)
        except TimeoutError as exc:  # NoBuffer is a Timeout
            if isinstance(exc, Timeout):
                raise
            raise Timeout(str(exc)) from None

    def receive(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0 and deadline is not None:
                if self.endpoint.pending:
                    left = 0.0
                else:
                    raise _timeout(self.description, timeout)
            try:
                return self.endpoint.receive(max(left, 0.0001))
            except TimeoutError:
                pass
            if self.endpoint.peer_unbound and not self.endpoint.pending:
                raise PeerClosed(f"the peer of {self.description} destroyed its endpoint")
            if self.endpoint.destroyed:
                raise IpcError(f"{self.description} is destroyed")

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<EndpointLink {self.description!r}>"


def send_frame(link: Link, frame: Data, timeout: float | None) -> int:
    """Send one encoded frame, split into `Chunk` frames if it is longer than the link's messages.

    The caller holds the link's send lock. Returns the number of messages sent.
    """
    size = len(frame)
    if size <= link.max_message:
        link.send(frame, timeout)
        return 1
    piece = link.max_message - _codec.CHUNK_OVERHEAD
    if piece < 1:
        raise MessageTooLarge(
            f"a {size}-byte frame does not fit link {link.description!r} ({link.max_message}-byte messages)"
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    view = memoryview(frame)
    sent = 0
    for start in range(0, size, piece):
        end = min(start + piece, size)
        chunk = _codec.encode(_codec.Chunk(end < size, view[start:end]))  # type: ignore[arg-type]  # bin from a view: no copy
        if sent == 0 or deadline is None:
            left = timeout if sent == 0 else None
        else:
            # once the first piece is out, the frame is finished even past a short deadline:
            # a frame abandoned half-way would cost the peer a protocol error
            left = max(deadline - time.monotonic(), _PIECE_GRACE)
        link.send(chunk, left)
        sent += 1
    return sent


class Reassembler:
    """Joins the `Chunk` frames of one side of a link; bounded by ``max_frame`` bytes."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        return bool(self._parts)

    def feed(self, chunk: _codec.Chunk) -> bytes | None:
        """Add a piece; returns the whole frame after the last piece, else None."""
        self._size += len(chunk.data)
        if self._size > self.max_frame:
            self.reset()
            raise ProtocolError(f"a chunked frame exceeds the {self.max_frame}-byte limit")
        self._parts.append(chunk.data)
        if chunk.more:
            return None
        whole = b"".join(self._parts)
        self.reset()
        return whole

    def reset(self) -> None:
        self._parts = []
        self._size = 0
