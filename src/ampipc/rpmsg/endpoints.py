"""Endpoints: local addresses, binding to the peer, and delivery.

Theory of operation
-------------------
An endpoint is a local address (``addr``) with an optional peer address (``dest``) and a name.
`EndpointTable` owns the address space of one link, as OpenAMP's ``rpmsg_device`` does:

- addresses 0..1023 are reserved; dynamic addresses are ``1024 + first free bit`` of a 128-bit
  map, so the first is 0x400 (each side allocates its own, so both sides' first endpoint is 0x400);
- a name-service CREATE binds the first local endpoint with the same name (compared up to the
  first NUL) and no destination yet; with none, it is a *new service* for the application,
  remembered (at most `MAX_UNCLAIMED` names, the oldest forgotten first) for an endpoint created later;
- a name-service DESTROY unbinds the local endpoint with that name bound to that address;
- the first data message to an endpoint without a destination binds it to the sender (unless the
  sender claims address ANY);
- a message to an unknown local address is dropped (and counted), its buffer already returned.

The table is plain data guarded by its owner's lock; it never calls user code. `route()` says what
happened, and the owner runs callbacks outside its lock, so a callback may send or create
endpoints.

Direct delivery: when its owner turns it on (a link without an I/O thread, whose receivers poll for
themselves), the table keeps `EndpointTable.direct` for exactly the endpoints whose data messages
need no routing decision, those in the table and bound: local address -> the ``append`` of the
queue (no callback), or (callback, endpoint). The C receive poll hands their messages over itself
(`RpmsgVirtio.poll_direct`): into the queue, or as a call the owner makes after the poll, outside
its lock. Every change that could move an endpoint in or out of that set or change its entry (add,
remove, binding, unbinding, a new ``callback`` or ``dest``) refreshes it, so a direct delivery is
always the delivery `route` would have made.

An `Endpoint` delivers either to its callback (``callback(endpoint, data, src)``, run on the link's
I/O thread, like an OpenAMP endpoint callback) or, without a callback, to its own queue, read with
`Endpoint.receive`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


from ..errors import IpcError, ResourceExhausted, Timeout
from ._wire import RPMSG_ADDR_ANY, RPMSG_ADDR_BMP_SIZE, RPMSG_RESERVED_ADDRESSES
from .rpmsg_virtio import DirectTarget, Message, NameService

__all__ = [
    "MAX_UNCLAIMED",
    "Bound",
    "Delivery",
    "Dropped",
    "Endpoint",
    "EndpointCallback",
    "EndpointTable",
    "NewService",
    "UnbindCallback",
    "Unbound",
]

EndpointCallback = Callable[["Endpoint", bytes, int], None]
UnbindCallback = Callable[["Endpoint"], None]


class _Link(Protocol):
    def _send(self, src: int, dst: int, data: bytes | bytearray | memoryview, timeout: float | None, block: bool) -> bool: ...
    def _destroy_endpoint(self, endpoint: Endpoint) -> None: ...
    def _wait_slice(self, endpoint: Endpoint, timeout: float) -> None: ...
    def _check_open(self) -> None: ...
    def _wait_event(self, event: threading.Event, timeout: float) -> bool: ...
    def _receive(self, endpoint: Endpoint, timeout: float | None) -> tuple[int, bytes]: ...
    def _reroute(self, endpoint: Endpoint) -> None: ...


class Endpoint:
    """A local rpmsg address on one link. Create with `RpmsgDevice.create_endpoint`."""

    def __init__(
        self,
        link: _Link,
        name: str,
        addr: int,
        dest: int,
        callback: EndpointCallback | None,
        on_unbind: UnbindCallback | None,
    ) -> None:
        self._link = link
        self.name = name
        self.addr = addr
        # Written by the table under the link's lock (then `_reroute` is not called: the table
        # refreshes its direct entry itself); the properties below are for everyone else.
        self._dest = dest
        self._callback = callback
        self.on_unbind = on_unbind
        self._queue: deque[tuple[int, bytes]] = deque()
        self._cond = threading.Condition()
        self._sleepers = 0  # threads in _wait_queue: a delivery notifies only when someone sleeps
        self._bound = threading.Event()
        self._unbound = threading.Event()
        self.destroyed = False
        if dest != RPMSG_ADDR_ANY:
            self._bound.set()

    def __repr__(self) -> str:
        dest = "ANY" if self._dest == RPMSG_ADDR_ANY else f"{self._dest:#x}"
        return f"<Endpoint {self.name!r} addr={self.addr:#x} dest={dest}>"

    @property
    def dest(self) -> int:
        """The peer address messages go to (OpenAMP's ``dest_addr``); ANY until bound."""
        return self._dest

    @dest.setter
    def dest(self, value: int) -> None:
        self._dest = value
        self._link._reroute(self)

    @property
    def callback(self) -> EndpointCallback | None:
        """``callback(endpoint, data, src)`` for each message, or None: messages queue for `receive`."""
        return self._callback

    @callback.setter
    def callback(self, value: EndpointCallback | None) -> None:
        self._callback = value
        self._link._reroute(self)

    @property
    def is_bound(self) -> bool:
        """True once the endpoint knows its peer address (OpenAMP's ``is_rpmsg_ept_ready``)."""
        return self._dest != RPMSG_ADDR_ANY

    @property
    def peer_unbound(self) -> bool:
        """True after the peer destroyed the endpoint this one was bound to."""
        return self._unbound.is_set()

    def wait_bound(self, timeout: float | None = None) -> None:
        """Block until bound; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._link._wait_event(self._bound, 0.05):
            self._check_link()
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"endpoint {self.name!r} was not bound to a peer within {timeout} s")

    def wait_unbound(self, timeout: float | None = None) -> None:
        """Block until the peer destroys its side (name-service DESTROY)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._link._wait_event(self._unbound, 0.05):
            self._check_link()
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"the peer of endpoint {self.name!r} did not go away within {timeout} s")

    def _check_link(self) -> None:
        self._link._check_open()

    # ---- sending --------------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview, timeout: float | None = 15.0) -> None:
        """Send to the bound peer; waits up to ``timeout`` s for a free buffer, then NoBuffer."""
        dest = self._dest
        if dest == RPMSG_ADDR_ANY:
            raise IpcError(f"endpoint {self.name!r} has no destination yet (not bound)")
        self._link._send(self.addr, dest, data, timeout, True)

    def try_send(self, data: bytes | bytearray | memoryview) -> bool:
        """Send to the bound peer if a buffer is free now; False otherwise."""
        dest = self._dest
        if dest == RPMSG_ADDR_ANY:
            raise IpcError(f"endpoint {self.name!r} has no destination yet (not bound)")
        return self._link._send(self.addr, dest, data, 0.0, False)

    def send_to(self, dst: int, data: bytes | bytearray | memoryview, timeout: float | None = 15.0) -> None:
        """Send to address ``dst``; waits up to ``timeout`` s for a free buffer, then NoBuffer."""
        if dst == RPMSG_ADDR_ANY:
            raise IpcError(f"endpoint {self.name!r} has no destination yet (not bound)")
        self._link._send(self.addr, dst, data, timeout, True)

    # ---- receiving ------------------------------------------------------------------------------
    def receive_from(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next (src, payload) queued for this endpoint (endpoints without a callback)."""
        queue = self._queue
        if queue:  # popleft is atomic, the lock is for sleepers: a message already here costs no lock
            try:
                return queue.popleft()
            except IndexError:  # another thread took it
                pass
        return self._link._receive(self, timeout)

    def _receive_loop(self, deadline: float | None, timeout: float | None) -> tuple[int, bytes]:
        """Wait for a message in slices of the link's wait until ``deadline`` (monotonic)."""
        queue = self._queue
        while True:
            if queue:
                try:
                    return queue.popleft()
                except IndexError:
                    pass
            try:
                self._check_link()
            except IpcError as exc:
                closed: IpcError | None = exc
            else:
                closed = None
            if closed is not None:
                # drain before you declare death: what the link delivered before it closed is still read
                try:
                    return queue.popleft()
                except IndexError:
                    raise closed from None
            if self.destroyed:
                raise IpcError(f"endpoint {self.name!r} is destroyed")
            left = 0.1 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no message for endpoint {self.name!r} within {timeout} s")
            self._link._wait_slice(self, min(left, 0.1))

    def receive(self, timeout: float | None = None) -> bytes:
        """The next payload queued for this endpoint; TimeoutError after ``timeout`` seconds."""
        queue = self._queue
        if queue:  # `receive_from`, inline
            try:
                return queue.popleft()[1]
            except IndexError:
                pass
        return self._link._receive(self, timeout)[1]

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _deliver(self, src: int, payload: bytes) -> None:
        with self._cond:
            self._queue.append((src, payload))
            if self._sleepers:
                self._cond.notify_all()

    def _wait_queue(self, timeout: float) -> None:
        with self._cond:
            if not self._queue:
                self._sleepers += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._sleepers -= 1

    def destroy(self) -> None:
        """Release the address; announces DESTROY for dynamic addresses when NS is on."""
        if not self.destroyed:
            self._link._destroy_endpoint(self)
            self.destroyed = True
            with self._cond:
                self._cond.notify_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


@dataclass(frozen=True)
class Delivery:
    endpoint: Endpoint
    src: int
    payload: bytes


@dataclass(frozen=True)
class Bound:
    endpoint: Endpoint
    dest: int


@dataclass(frozen=True)
class Unbound:
    endpoint: Endpoint


@dataclass(frozen=True)
class NewService:
    name: str
    addr: int


@dataclass(frozen=True)
class Dropped:
    dst: int
    reason: str


Routed = Delivery | Bound | Unbound | NewService | Dropped


MAX_UNCLAIMED = 256  # announcements remembered for endpoints not made yet; the oldest go first


class EndpointTable:
    """The endpoints of one link, by local address."""

    def __init__(self) -> None:
        self._by_addr: dict[int, Endpoint] = {}
        # Told after every change of the set of endpoints or of their bindings (for watching tools).
        self.on_change: Callable[[], None] | None = None
        # Announcements no endpoint claimed yet, by name: an endpoint created later with that
        # name binds at once (the announcement may arrive before the application creates it).
        self.unclaimed: dict[str, int] = {}
        # Local address -> queue append or (callback, endpoint) of the endpoints the receive poll
        # may deliver to itself; kept only while direct_enabled (see the module docstring).
        self.direct: dict[int, DirectTarget] = {}
        self.direct_enabled = False

    def refresh(self, endpoint: Endpoint) -> None:
        """Put ``endpoint`` in `direct` or take it out, as its state now says."""
        if self._by_addr.get(endpoint.addr) is not endpoint:
            return  # not (or no longer) in this table: its address may be another endpoint's now
        if self.direct_enabled and endpoint._dest != RPMSG_ADDR_ANY:
            callback = endpoint._callback
            self.direct[endpoint.addr] = endpoint._queue.append if callback is None else (callback, endpoint)
        else:
            self.direct.pop(endpoint.addr, None)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(list(self._by_addr.values()))

    def __len__(self) -> int:
        return len(self._by_addr)

    def get(self, addr: int) -> Endpoint | None:
        return self._by_addr.get(addr)

    def allocate_address(self) -> int:
        for bit in range(RPMSG_ADDR_BMP_SIZE):
            addr = RPMSG_RESERVED_ADDRESSES + bit
            if addr not in self._by_addr:
                return addr
        raise ResourceExhausted(f"all {RPMSG_ADDR_BMP_SIZE} dynamic rpmsg addresses are in use")

    def add(self, endpoint: Endpoint) -> None:
        if endpoint.addr in self._by_addr:
            raise IpcError(f"rpmsg address {endpoint.addr:#x} is in use")
        self._by_addr[endpoint.addr] = endpoint
        self.refresh(endpoint)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def listing(self) -> list[tuple[str, int, int]]:
        """(name, local address, remote address) of every endpoint, by address."""
        return [(e.name, e.addr, e._dest) for _, e in sorted(self._by_addr.items())]

    def claim(self, name: str) -> int | None:
        """The address of an unclaimed announcement of ``name`` (now claimed), or None."""
        return self.unclaimed.pop(name, None) if name else None

    def remove(self, endpoint: Endpoint) -> None:
        if self._by_addr.get(endpoint.addr) is endpoint:
            del self._by_addr[endpoint.addr]
            self.direct.pop(endpoint.addr, None)
            self._changed()

    def route(self, event: Message | NameService) -> Routed:
        if isinstance(event, NameService):
            if not event.destroy:
                for ept in self._by_addr.values():
                    if ept.name == event.name and ept._dest == RPMSG_ADDR_ANY:
                        ept._dest = event.addr
                        ept._unbound.clear()
                        ept._bound.set()
                        self.refresh(ept)
                        self._changed()
                        return Bound(ept, event.addr)
                self.unclaimed.pop(event.name, None)
                self.unclaimed[event.name] = event.addr
                # The peer chooses how many names it announces: the memory they take must not grow with it.
                while len(self.unclaimed) > MAX_UNCLAIMED:
                    del self.unclaimed[next(iter(self.unclaimed))]
                return NewService(event.name, event.addr)
            for ept in self._by_addr.values():
                if ept.name == event.name and ept._dest == event.addr:
                    ept._dest = RPMSG_ADDR_ANY
                    ept._bound.clear()
                    ept._unbound.set()
                    self.refresh(ept)
                    self._changed()
                    return Unbound(ept)
            if self.unclaimed.get(event.name) == event.addr:
                del self.unclaimed[event.name]
            return Dropped(event.addr, f"name-service DESTROY for unknown {event.name!r} at {event.addr:#x}")
        routed = self.route_data(event.src, event.dst, event.payload)
        return routed if isinstance(routed, Dropped) else Delivery(*routed)

    def route_data(self, src: int, dst: int, payload: bytes) -> tuple[Endpoint, int, bytes] | Dropped:
        """`route` for a data message given as its fields: (endpoint, src, payload), or Dropped."""
        target = self._by_addr.get(dst)
        if target is None:
            return Dropped(dst, f"message from {src:#x} to unknown address {dst:#x}")
        if target._dest == RPMSG_ADDR_ANY and src != RPMSG_ADDR_ANY:
            target._dest = src
            target._bound.set()
            self.refresh(target)
            self._changed()
        return (target, src, payload)
