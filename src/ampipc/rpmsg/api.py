"""The public RPMsg API: one `RpmsgDevice` per link, endpoints on it, and ST's wrapper names.

Theory of operation
-------------------
`RpmsgDevice` owns a transport, the sans-I/O core (`RpmsgVirtio`) and the endpoint table. One lock
serialises every call into the core and the table. An I/O thread (the "interrupt handler") waits
on the doorbell in slices of at most 100 ms, then rescans the rings whether or not a kick came,
so a lost kick costs latency, never a hang. Callbacks run on the I/O thread, outside the lock,
so they may send and create endpoints (as OpenAMP callbacks do).

With ``io_thread=False`` nothing runs in the background: the application calls `poll()` (ST's
``OPENAMP_check_for_message``), and callbacks run in that call.

Sending takes a buffer if one is free; a blocking send re-checks every millisecond (the driver
takes back returned buffers, the device looks for newly posted ones) until its timeout, then
raises `NoBuffer`, as OpenAMP's ``rpmsg_send`` waits 15 s and fails with RPMSG_ERR_NO_BUFF.

The link closes when the application closes it, when the peer hangs up (the socket transport),
or if the I/O thread meets an unexpected error; `closed_reason` says which, and blocked calls
then raise (`PeerDied` when the peer went away).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

    from .. import _vring


from ..errors import IpcError, NoBuffer, PeerDied, Timeout
from ..region import Region
from ._wire import (
    DEMO_SHM_NAME,
    DEMO_SHM_SIZE,
    DEMO_SOCKET_PATH,
    RPMSG_ADDR_ANY,
    RPMSG_RESERVED_ADDRESSES,
)
from .endpoints import (
    Bound,
    Delivery,
    Dropped,
    Endpoint,
    EndpointCallback,
    EndpointTable,
    NewService,
    UnbindCallback,
    Unbound,
)
from .rpmsg_virtio import LinkStatistics, Role, RpmsgVirtio
from .transports import Doorbell, LinuxTransport, RegionTransport, Transport

__all__ = [
    "RPMSG_MASTER",
    "RPMSG_REMOTE",
    "MX_OPENAMP_Init",
    "NewServiceCallback",
    "OPENAMP_DeInit",
    "OPENAMP_Wait_EndPointready",
    "OPENAMP_check_for_message",
    "OPENAMP_create_endpoint",
    "OPENAMP_send",
    "RpmsgDevice",
    "open_linux",
    "open_region",
]

log = logging.getLogger("ampipc.rpmsg")

NewServiceCallback = Callable[["RpmsgDevice", str, int], None]

_POLL_SLICE = 0.1
_TX_RETRY = 0.001
_STATUS_POLL = 0.001


class RpmsgDevice:
    """One RPMsg link (an OpenAMP ``rpmsg_device``), in the transport's role.

    Opening performs the start-up handshake: the driver negotiates features, posts its receive
    buffers and writes DRIVER_OK; the device polls the status byte until DRIVER_OK (up to
    ``open_timeout``). ``on_new_service(device, name, addr)`` is called for a name-service
    announcement that matches no local endpoint. ``fast`` picks the C rings (default, unless
    ``AMPIPC_RPMSG_PURE`` is set) or the pure-Python reference (``False``); the wire is the same.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        open_timeout: float | None = 60.0,
        io_thread: bool = True,
        on_new_service: NewServiceCallback | None = None,
        fast: bool | None = None,
    ) -> None:
        self.transport = transport
        self.on_new_service = on_new_service
        self._lock = threading.Lock()
        self._endpoints = EndpointTable()
        # Without an I/O thread receivers poll for themselves, so the receive poll may queue their
        # messages itself (nobody sleeps on an endpoint's condition to be told).
        self._endpoints.direct_enabled = not io_thread
        publish = getattr(transport, "publish_endpoints", None)
        if publish is not None:  # a transport in an ampipc Region: tools see the endpoints
            table = self._endpoints
            table.on_change = lambda: publish(table.listing())
        self._stop = threading.Event()
        self._closed_reason: str | None = None
        self._peer_gone = False
        self._thread: threading.Thread | None = None
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        transport.open(open_timeout)
        self._doorbell = transport.doorbell
        # a C doorbell the C transmit ring rings itself, within its send call
        self._native_bell: _vring.Doorbell | None = getattr(self._doorbell, "native", None)
        try:
            self._core = RpmsgVirtio(
                transport.window,
                transport.role,
                rsc_offset=transport.rsc_offset,
                pool_offset=transport.pool_offset,
                pool_size=transport.pool_size,
                buffer_size=transport.buffer_size,
                name=transport.description,
                fast=fast,
            )
            if transport.role is Role.DRIVER:
                self._core.start_driver()
                self._kick_if_needed()
            else:
                while not self._core.device_ready():
                    if transport.doorbell.peer_gone:
                        raise PeerDied("the driver hung up before it set DRIVER_OK")
                    if deadline is not None and time.monotonic() >= deadline:
                        raise Timeout(f"the driver did not set DRIVER_OK within {open_timeout} s")
                    transport.doorbell.wait(_STATUS_POLL)
                self._core.start_device()
        except BaseException:
            transport.close()
            raise
        # The lock-free send: the C transmit ring, when a C doorbell is there for it to ring
        # (otherwise each send would leave a kick for this layer to ring, under the lock).
        self._native_tx = self._core.native_transmit if self._native_bell is not None else None
        self._max_payload = self._core.max_payload
        if io_thread:
            self._thread = threading.Thread(target=self._run, name=f"rpmsg-io {transport.description}", daemon=True)
            self._thread.start()

    # ---- properties -----------------------------------------------------------------------------
    @property
    def role(self) -> Role:
        return self._core.role

    @property
    def ns_enabled(self) -> bool:
        """True when the name-service feature was negotiated (both sides announce endpoints)."""
        return self._core.ns_enabled

    @property
    def features(self) -> int:
        return self._core.features

    @property
    def statistics(self) -> LinkStatistics:
        """Counters of the link, protocol errors included (a snapshot, taken at each read)."""
        return self._core.statistics

    @property
    def max_payload(self) -> int:
        return self._core.max_payload

    @property
    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    def __repr__(self) -> str:
        state = self._closed_reason or "open"
        return f"<RpmsgDevice {self.role.value} {self.transport.description} ({state})>"

    # ---- endpoints ------------------------------------------------------------------------------
    def create_endpoint(
        self,
        name: str = "",
        callback: EndpointCallback | None = None,
        *,
        addr: int | None = None,
        dest: int = RPMSG_ADDR_ANY,
        on_unbind: UnbindCallback | None = None,
        timeout: float | None = 15.0,
    ) -> Endpoint:
        """A new endpoint; with a name and no ``dest``, announced to the peer (when NS is on).

        If the peer already announced a service of that name that no endpoint claimed, the new
        endpoint binds to it at once (the announcement may come before the endpoint is made).

        ``addr`` None takes the next dynamic address (0x400 first). ``callback(endpoint, data,
        src)`` receives its messages; without one they queue for `Endpoint.receive`.
        """
        self._check_open()
        with self._lock:
            local = self._endpoints.allocate_address() if addr is None else addr
            announce = bool(name) and self._core.ns_enabled and dest == RPMSG_ADDR_ANY
            if dest == RPMSG_ADDR_ANY:
                claimed = self._endpoints.claim(name)
                if claimed is not None:
                    dest = claimed
            elif self._endpoints.unclaimed.get(name) == dest:
                del self._endpoints.unclaimed[name]
            endpoint = Endpoint(self, name, local, dest, callback, on_unbind)
            self._endpoints.add(endpoint)
        if announce:
            try:
                self._send_ns(name, local, False, timeout)
            except BaseException:
                with self._lock:
                    self._endpoints.remove(endpoint)
                raise
        return endpoint

    def _destroy_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._endpoints.remove(endpoint)
            announce = bool(endpoint.name) and self._core.ns_enabled and endpoint.addr >= RPMSG_RESERVED_ADDRESSES
        if announce and self._closed_reason is None:
            try:
                self._send_ns(endpoint.name, endpoint.addr, True, 1.0)
            except (NoBuffer, IpcError) as exc:
                log.warning("%s: could not announce the destruction of %r: %s", self.transport.description, endpoint.name, exc)

    # ---- sending --------------------------------------------------------------------------------
    def _send(self, src: int, dst: int, data: bytes | bytearray | memoryview, timeout: float | None, block: bool) -> bool:
        tx = self._native_tx
        if tx is not None and self._closed_reason is None and len(data) <= self._max_payload:
            # The C ring's send is atomic under the GIL and counts and rings for itself: no lock.
            sent, kick, errors = tx.tx_send(src, dst, data, self._native_bell)
            if errors or kick == 1:
                with self._lock:
                    self._core.record_send(errors, kick)
                    kick = self._core.take_kick()
                if kick:
                    self._ring()
            if sent or not block:
                return sent
            return self._send_with(lambda: self._core.try_send(src, dst, data), timeout, block)
        if self._closed_reason is None:
            # The common case first, without the retry loop's clock reads: a buffer is free now.
            core = self._core
            lock = self._lock
            lock.acquire()  # not `with`: this runs once per message, and a `with` costs twice as much
            try:
                sent = core.try_send(src, dst, data, self._native_bell)
                kick = core.kick_pending  # `take_kick`, inline (false when the C ring rang the bell itself)
                core.kick_pending = False
            finally:
                lock.release()
            if kick:
                self._ring()
            if sent or not block:
                return sent
        return self._send_with(lambda: self._core.try_send(src, dst, data), timeout, block)

    def _send_ns(self, name: str, addr: int, destroy: bool, timeout: float | None) -> bool:
        return self._send_with(lambda: self._core.send_ns(name, addr, destroy), timeout, True)

    def _send_with(self, attempt: Callable[[], bool], timeout: float | None, block: bool) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            self._check_open()
            with self._lock:
                sent = attempt()
                kick = self._core.take_kick()
            if kick:
                self._ring()
            if sent:
                return True
            if not block:
                return False
            if not waited:
                waited = True
                self._core.counters.tx_buffer_waits += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise NoBuffer(
                    f"no rpmsg transmit buffer came free within {timeout} s: the peer is not returning buffers "
                    f"({self.transport.description})"
                )
            time.sleep(_TX_RETRY)

    def _ring(self) -> None:
        self._doorbell.ring()
        self._core.counters.kicks_sent += 1

    def _kick_if_needed(self) -> None:
        if self._core.take_kick():
            self._ring()

    # ---- receiving ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        reason = self._closed_reason
        if reason is not None:
            if self._peer_gone:
                raise PeerDied(f"the rpmsg peer is gone: {reason}")
            raise IpcError(f"the rpmsg link is closed: {reason}")

    def _reroute(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._endpoints.refresh(endpoint)

    def _receive(self, endpoint: Endpoint, timeout: float | None) -> tuple[int, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is None and self._closed_reason is None and not endpoint.destroyed:
            # Without an I/O thread the receiver polls, and one poll usually brings the message:
            # that poll first, without the loop's checks (the loop makes them if it did not).
            first = _POLL_SLICE if timeout is None else min(timeout, _POLL_SLICE)
            core = self._core
            if first > 0 and not core.more_pending and self._doorbell.wait(first):
                core.counters.kicks_received += 1
            self._service()
            queue = endpoint._queue
            if queue:
                try:
                    return queue.popleft()
                except IndexError:
                    pass
        return endpoint._receive_loop(deadline, timeout)

    def _wait_slice(self, endpoint: Endpoint, timeout: float) -> None:
        if self._thread is not None:
            endpoint._wait_queue(timeout)
        else:
            self.poll(timeout)

    def _wait_event(self, event: threading.Event, timeout: float) -> bool:
        if self._thread is not None:
            return event.wait(timeout)
        if not event.is_set():
            self.poll(timeout)
        return event.is_set()

    def poll(self, timeout: float = 0.0) -> int:
        """Without an I/O thread: wait up to ``timeout`` s for a kick, rescan, run callbacks.

        Returns the number of events handled. (With an I/O thread this only rescans.)
        """
        if self._closed_reason is not None:
            self._check_open()
        core = self._core
        # Messages left by a poll that stopped at its limit are there now: no kick to wait for.
        if self._thread is None and timeout > 0 and not core.more_pending and self._doorbell.wait(timeout):
            core.counters.kicks_received += 1
        handled = self._service()
        # A peer that died is noticed by the first poll that finds nothing more from it: what it
        # sent before is handled first (and a busy link does not pay for the liveness check).
        if not handled and self._doorbell.peer_gone and self._closed_reason is None:
            self._service()
            self._mark_closed("the peer closed the connection", peer_gone=True)
        return handled

    def _service(self) -> int:
        core = self._core
        table = self._endpoints
        lock = self._lock
        lock.acquire()  # not `with`, as in `_send`
        try:
            if table.direct_enabled:
                events, delivered, calls = core.poll_direct(table.direct)
            else:
                events, delivered, calls = core.poll_raw(), 0, ()
            routed = [table.route_data(*e) if isinstance(e, tuple) else table.route(e) for e in events] if events else []
            kick = core.kick_pending  # `take_kick`, inline: this runs once per poll
            core.kick_pending = False
        finally:
            lock.release()
        if kick:
            self._ring()
        for _, ept, payload, src in calls:  # messages before any in `routed`, handled as `_dispatch` does
            try:
                callback = ept._callback  # the callback now: an earlier one of the batch may have changed it
                if callback is not None:
                    callback(ept, payload, src)
                else:
                    ept._deliver(src, payload)
            except Exception:
                log.exception("%s: an rpmsg callback raised", self.transport.description)
        for item in routed:
            self._dispatch(item)
        return len(routed) + delivered

    def _dispatch(self, item: tuple[Endpoint, int, bytes] | Delivery | Bound | Unbound | NewService | Dropped) -> None:
        try:
            if isinstance(item, tuple):  # a data message, the hot path
                ept, src, payload = item
                callback = ept._callback
                if callback is not None:
                    callback(ept, payload, src)
                else:
                    ept._deliver(src, payload)
            elif isinstance(item, Delivery):
                ept = item.endpoint
                if ept.callback is not None:
                    ept.callback(ept, item.payload, item.src)
                else:
                    ept._deliver(item.src, item.payload)
            elif isinstance(item, NewService):
                if self.on_new_service is not None:
                    self.on_new_service(self, item.name, item.addr)
                else:
                    log.info("%s: unclaimed service %r at %#x", self.transport.description, item.name, item.addr)
            elif isinstance(item, Unbound):
                if item.endpoint.on_unbind is not None:
                    item.endpoint.on_unbind(item.endpoint)
            elif isinstance(item, Dropped):
                self._core.counters.dropped_unknown_address += 1
                log.debug("%s: dropped: %s", self.transport.description, item.reason)
        except Exception:
            log.exception("%s: an rpmsg callback raised", self.transport.description)

    def _run(self) -> None:
        doorbell = self._doorbell
        stats = self._core.counters
        try:
            while not self._stop.is_set():
                if not self._core.more_pending and doorbell.wait(_POLL_SLICE):
                    stats.kicks_received += 1
                if self._stop.is_set():
                    break
                self._service()
                if doorbell.peer_gone:
                    self._service()
                    self._mark_closed("the peer closed the connection", peer_gone=True)
                    break
        except Exception as exc:  # the I/O thread must never die silently
            log.exception("%s: the rpmsg I/O thread failed", self.transport.description)
            self._mark_closed(f"I/O thread failed: {exc!r}")

    def _mark_closed(self, reason: str, *, peer_gone: bool = False) -> None:
        if self._closed_reason is None:
            self._peer_gone = peer_gone
            self._closed_reason = reason
            log.info("%s: link closed: %s", self.transport.description, reason)
        for ept in self.endpoints:
            with ept._cond:
                ept._cond.notify_all()

    def close(self) -> None:
        """Stop the I/O thread and close the transport (no more messages either way)."""
        self._stop.set()
        # Closed before the join: a callback blocked in a send (waiting for a buffer the peer never
        # returns) sees the link closed and returns, so the join cannot wait on it.
        self._mark_closed("closed by the application")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- constructors --------------------------------------------------------------------------------


def open_linux(
    role: Role | str,
    *,
    shm_name: str = DEMO_SHM_NAME,
    shm_size: int = DEMO_SHM_SIZE,
    socket_path: str = DEMO_SOCKET_PATH,
    server: bool | None = None,
    open_timeout: float | None = 60.0,
    **kwargs: Any,
) -> RpmsgDevice:
    """A link over OpenAMP's Linux transport (shm file + UNIX socket), as ``role``."""
    transport = LinuxTransport(role, shm_name=shm_name, shm_size=shm_size, socket_path=socket_path, server=server)
    return RpmsgDevice(transport, open_timeout=open_timeout, **kwargs)


def open_region(
    region: Region,
    name: str,
    role: Role | str,
    *,
    create: bool,
    num: int = 64,
    align: int = 16,
    open_timeout: float | None = 60.0,
    doorbell_factory: Callable[[RegionTransport], Doorbell] | None = None,
    spin: float | None = None,
    **kwargs: Any,
) -> RpmsgDevice:
    """A link in the object ``name`` of an ampipc Region; ``create`` allocates it and writes the table.

    ``spin`` bounds the futex doorbell's spin before it sleeps (seconds; None: the buffers' default).
    """
    transport = RegionTransport(
        region, name, role, create=create, num=num, align=align, doorbell_factory=doorbell_factory, spin=spin
    )
    return RpmsgDevice(transport, open_timeout=open_timeout, **kwargs)


# ---- ST's wrapper names (openamp.c of STM32CubeH7) ------------------------------------------------

RPMSG_MASTER = 0
RPMSG_REMOTE = 1

_st_device: RpmsgDevice | None = None


def _st() -> RpmsgDevice:
    if _st_device is None:
        raise IpcError("MX_OPENAMP_Init() has not been called")
    return _st_device


def MX_OPENAMP_Init(
    RPMsgRole: int,
    ns_bind_cb: NewServiceCallback | None = None,
    *,
    transport: Transport,
    open_timeout: float | None = 60.0,
) -> int:
    """Open the process-wide link as ST's firmware does (master = driver, remote = device).

    Callbacks then run inside `OPENAMP_check_for_message`, as in the polling firmware loop.
    Returns 0.
    """
    global _st_device
    expected = Role.DRIVER if RPMsgRole == RPMSG_MASTER else Role.DEVICE
    if transport.role is not expected:
        raise ValueError(f"RPMsgRole {RPMsgRole} needs a {expected.value} transport, got {transport.role.value}")
    _st_device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False, on_new_service=ns_bind_cb)
    return 0


def OPENAMP_create_endpoint(
    name: str,
    dest: int = RPMSG_ADDR_ANY,
    cb: EndpointCallback | None = None,
    unbind_cb: UnbindCallback | None = None,
) -> Endpoint:
    """Create (and, with dest ANY, announce) an endpoint on the link of `MX_OPENAMP_Init`."""
    return _st().create_endpoint(name, cb, dest=dest, on_unbind=unbind_cb)


def OPENAMP_send(ept: Endpoint, data: bytes | bytearray | memoryview) -> int:
    """Send to the endpoint's peer; returns the number of bytes sent."""
    ept.send(data)
    return len(data)


def OPENAMP_check_for_message() -> int:
    """Process whatever arrived (runs the callbacks); returns the number of events."""
    return _st().poll(0.0)


def OPENAMP_Wait_EndPointready(ept: Endpoint, timeout: float | None = None) -> None:
    """Poll until the endpoint is bound to its peer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    device = _st()
    while not ept.is_bound:
        if deadline is not None and time.monotonic() >= deadline:
            raise Timeout(f"endpoint {ept.name!r} was not bound within {timeout} s")
        device.poll(0.001)


def OPENAMP_DeInit() -> None:
    global _st_device
    if _st_device is not None:
        _st_device.close()
        _st_device = None
