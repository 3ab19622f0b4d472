"""eRPC transports over ampipc: NXP's Embedded RPC (the ``erpc`` package) runs unchanged on top.

Theory of operation
-------------------
eRPC's ``Transport`` moves whole messages: ``send(message)`` and ``receive() -> message``. Its
framed transports (serial, TCP) add a length and CRC header because a byte stream has no message
boundaries; ampipc's MessageBuffers and RPMsg endpoints carry whole messages with their lengths
already, and a message is received whole or not at all, so no framing is added: one eRPC message
is one ampipc message.

* `BufferTransport(tx, rx)` - two MessageBuffers: ``tx`` this side writes, ``rx`` it reads (the
  peer uses the same pair crossed). At most ``tx.capacity - 4`` bytes per message.
* `EndpointTransport(endpoint)` - a bound RPMsg endpoint without a callback (Region transport or
  OpenAMP's Linux transport). At most 496 bytes per message, RPMsg's payload.

``erpc.client.ClientManager`` and ``erpc.simple_server.SimpleServer`` (with
``erpc.basic_codec.BasicCodec``) use them as they use eRPC's own transports. One sender and one
receiver at a time (locks, as eRPC's framed transports have). ``receive`` blocks until a message
comes (or ``timeout``, then `Timeout`); the peer's death raises `PeerDied` and its orderly end
`PeerClosed`, which ends ``SimpleServer.run`` with that exception.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import erpc.transport  # type: ignore[import-untyped]  # erpc ships no type information

from ..buffers import MessageBuffer
from ..errors import MessageTooLarge, PeerClosed, Timeout
from ..rpmsg.endpoints import Endpoint
from .rpc_links import RPMSG_MAX_PAYLOAD

__all__ = ["BufferTransport", "EndpointTransport"]


class BufferTransport(erpc.transport.Transport):  # type: ignore[misc]  # an untyped base class
    """An eRPC transport over two MessageBuffers."""

    def __init__(self, tx: MessageBuffer, rx: MessageBuffer, *, timeout: float | None = None) -> None:
        super().__init__()
        self.tx = tx
        self.rx = rx
        self.timeout = timeout
        self.max_message = tx.capacity - 4
        self._send_lock = threading.Lock()
        self._receive_lock = threading.Lock()

    def send(self, message: Any) -> None:
        if len(message) > self.max_message:
            raise MessageTooLarge(f"an eRPC message of {len(message)} bytes exceeds buffer {self.tx.name!r}'s "
                                  f"{self.max_message}-byte messages")
        with self._send_lock:
            self.tx.send(message, timeout=self.timeout)

    def receive(self) -> bytearray:
        with self._receive_lock:
            return bytearray(self.rx.receive(timeout=self.timeout))


class EndpointTransport(erpc.transport.Transport):  # type: ignore[misc]  # an untyped base class
    """An eRPC transport over a bound RPMsg endpoint (created without a callback)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float | None = None, max_message: int = RPMSG_MAX_PAYLOAD) -> None:
        super().__init__()
        if endpoint.callback is not None:
            raise ValueError("an EndpointTransport needs an endpoint without a callback (its messages queue for receive)")
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_message = max_message
        self._send_lock = threading.Lock()
        self._receive_lock = threading.Lock()

    def send(self, message: Any) -> None:
        if len(message) > self.max_message:
            raise MessageTooLarge(f"an eRPC message of {len(message)} bytes exceeds RPMsg's {self.max_message}-byte payload")
        with self._send_lock:
            if not self.endpoint.is_bound:
                self.endpoint.wait_bound(self.timeout)
            self.endpoint.send(bytes(message), timeout=15.0 if self.timeout is None else self.timeout)

    def receive(self) -> bytearray:
        with self._receive_lock:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            while True:
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                try:
                    return bytearray(self.endpoint.receive(max(left, 0.0001)))
                except TimeoutError:
                    if self.endpoint.peer_unbound and not self.endpoint.pending:
                        raise PeerClosed(f"the peer of rpmsg endpoint {self.endpoint.name!r} destroyed its endpoint") from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise Timeout(f"no eRPC message on rpmsg endpoint {self.endpoint.name!r} within {self.timeout} s") from None
