"""Sources and sinks: the local ends of bridge routes, one interface over buffers, channels and endpoints.

Theory of operation
-------------------
A route reads whole messages from a `Source` (``receive(timeout)``: the next message, `Timeout`
when none came, `PeerDied` / `PeerClosed` when the local writer is gone and everything it wrote
was drained) and writes them to a `Sink` (``send(data, timeout)`` blocking for room,
``try_send(data)`` never blocking). The adapters add nothing to the message: the bytes a local
writer sent are the bytes the remote reader receives.

- `BufferPort`: a `MessageBuffer` (the bridge is its reader when exporting, its writer when
  importing). Receives and sends are the C fast path, with the GIL released while blocked.
- `ChannelPort`: one channel of an `Ipc` the bridge process started as one of the two cores; the
  bridge receives what the other core sends on the channel and sends into it.
- `EndpointPort`: an RPMsg `Endpoint` without callback (its messages queue for `receive`).

`port(obj, channel=...)` picks the adapter; a ``str`` names a message buffer of the bridge's
region. ``close()`` of a sink port closes the bridge's side in an orderly way when the object
supports it (buffers with ``close()``: the local reader drains, then gets `PeerClosed`), and
reports False when it does not.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..buffers import MessageBuffer
from ..errors import PeerClosed
from ..ipc import Ipc
from ..region import Region
from ..rpmsg.endpoints import Endpoint

__all__ = ["Source", "Sink", "BufferPort", "ChannelPort", "EndpointPort", "port"]


@runtime_checkable
class Source(Protocol):
    description: str

    def receive(self, timeout: float | None) -> bytes: ...
    def receive_many(self, max_count: int, timeout: float | None) -> list[bytes]: ...
    def backlog(self) -> int: ...


@runtime_checkable
class Sink(Protocol):
    description: str

    def send(self, data: bytes, timeout: float | None) -> None: ...
    def send_many(self, messages: list[bytes], timeout: float | None) -> int: ...
    def try_send(self, data: bytes) -> bool: ...
    def close(self) -> bool: ...


def _close_side(obj: object) -> bool:
    close = getattr(obj, "close", None)
    if close is None:
        return False
    close()
    return True


class BufferPort:
    """A message buffer as source (the bridge reads it) or sink (the bridge writes it)."""

    def __init__(self, buffer: MessageBuffer) -> None:
        self.buffer = buffer
        self.description = f"buffer {buffer.name}"

    def receive(self, timeout: float | None) -> bytes:
        return self.buffer.receive(timeout=timeout)

    def receive_many(self, max_count: int, timeout: float | None) -> list[bytes]:
        return self.buffer.receive_many(max_count, timeout=timeout)

    def send_many(self, messages: list[bytes], timeout: float | None) -> int:
        return self.buffer.send_many(messages, timeout=timeout)

    def backlog(self) -> int:
        return self.buffer.bytes_available

    def send(self, data: bytes, timeout: float | None) -> None:
        self.buffer.send(data, timeout=timeout)

    def try_send(self, data: bytes) -> bool:
        return bool(self.buffer.try_send(data))

    def close(self) -> bool:
        return _close_side(self.buffer)


class ChannelPort:
    """Channel `channel` of `ipc`: receive what the peer core sent, send to the peer core."""

    def __init__(self, ipc: Ipc, channel: int) -> None:
        ipc._channel(channel)  # ValueError for a channel out of range
        self.ipc = ipc
        self.channel = channel
        self.description = f"ipc {ipc.name}#{channel}"

    def receive(self, timeout: float | None) -> bytes:
        return self.ipc.receive(self.channel, timeout=timeout)

    def receive_many(self, max_count: int, timeout: float | None) -> list[bytes]:
        return self.ipc.receive_many(self.channel, max_count, timeout=timeout)

    def send_many(self, messages: list[bytes], timeout: float | None) -> int:
        return self.ipc.send_many(self.channel, messages, timeout=timeout)

    def backlog(self) -> int:
        return self.ipc.rx_buffer(self.channel).bytes_available

    def send(self, data: bytes, timeout: float | None) -> None:
        self.ipc.send(self.channel, data, timeout=timeout)

    def try_send(self, data: bytes) -> bool:
        return self.ipc.try_send(self.channel, data)

    def close(self) -> bool:
        return _close_side(self.ipc.tx_buffer(self.channel))


class EndpointPort:
    """An RPMsg endpoint without callback: messages queued for it are the source; sends go to its peer."""

    def __init__(self, endpoint: Endpoint) -> None:
        if endpoint.callback is not None:
            raise ValueError(f"endpoint {endpoint.name!r} delivers to a callback; bridge an endpoint without one")
        self.endpoint = endpoint
        self.description = f"rpmsg {endpoint.name}"

    def receive(self, timeout: float | None) -> bytes:
        if self.endpoint.destroyed:
            raise PeerClosed(f"endpoint {self.endpoint.name!r} is destroyed")
        return self.endpoint.receive(timeout=timeout)

    def receive_many(self, max_count: int, timeout: float | None) -> list[bytes]:
        return [self.receive(timeout)]

    def send_many(self, messages: list[bytes], timeout: float | None) -> int:
        sent = 0
        for data in messages:
            try:
                self.send(data, timeout)
            except TimeoutError:  # NoBuffer or unbound: what was sent is counted, as buffers do
                return sent
            sent += 1
        return sent

    def backlog(self) -> int:
        return self.endpoint.pending

    def send(self, data: bytes, timeout: float | None) -> None:
        self.endpoint.wait_bound(timeout)
        self.endpoint.send(data, timeout=timeout)

    def try_send(self, data: bytes) -> bool:
        return self.endpoint.is_bound and self.endpoint.try_send(data)

    def close(self) -> bool:
        self.endpoint.destroy()  # announces DESTROY: the peer endpoint sees its partner unbound
        return True


Port = BufferPort | ChannelPort | EndpointPort


def port(obj: Any, region: Region, *, channel: int | None = None) -> Port:
    """The adapter for `obj`: a MessageBuffer (or its name in `region`), an Ipc with `channel`, an Endpoint."""
    if isinstance(obj, Ipc):
        if channel is None:
            raise ValueError("bridging an Ipc needs channel=N")
        return ChannelPort(obj, channel)
    if channel is not None:
        raise ValueError(f"channel= applies to Ipc channels, not to {type(obj).__name__}")
    if isinstance(obj, str):
        return BufferPort(MessageBuffer.attach(region, obj))
    if isinstance(obj, MessageBuffer):
        return BufferPort(obj)
    if isinstance(obj, Endpoint):
        return EndpointPort(obj)
    raise TypeError(f"cannot bridge a {type(obj).__name__}: use a MessageBuffer (or its name), an Ipc channel or an rpmsg Endpoint")
