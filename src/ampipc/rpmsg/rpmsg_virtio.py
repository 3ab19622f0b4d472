"""The rpmsg-virtio transport state machine, both roles, sans-I/O.

Theory of operation
-------------------
`RpmsgVirtio` turns two split rings and a buffer pool into "send a message from src to dst" and
"here are the messages that arrived". It never blocks, never sleeps and never notifies: callers
call `poll()` when the peer kicked (or periodically), `try_send()` to send, and `take_kick()` to
learn whether the peer must now be notified. It is not thread-safe; the owner serialises calls.

Rings (OpenAMP's assignment): vring0 carries device -> driver messages, vring1 driver -> device.

- **Driver** (OpenAMP "host"): negotiates ``gfeatures = dfeatures & wanted``, zeroes both rings,
  sets NO_INTERRUPT on vring1, zeroes and posts ``vring0.num`` receive buffers (the first buffers
  of the pool, device-writable, 512 B each) on vring0, then writes ``status = DRIVER_OK`` and
  nothing else. Transmit buffers come from the rest of the pool, one per free descriptor, and
  are reused only after the device has returned them on vring1's used ring. A received buffer is
  copied out and made available again at once.
- **Device** (OpenAMP "remote"): waits (polls) for DRIVER_OK, reads the negotiated features, sets
  NO_NOTIFY on vring0, then takes driver buffers from vring0's avail ring to send (returning them
  used with ``len = desc.len``) and consumes vring1 (returning each buffer at once).

Validation: every head, descriptor, used element, header length and name-service record from the
peer is checked before use (see `virtqueue`). A used id named twice in one batch is refused (the
driver reposts receive buffers only after the batch); a header length is bounded by the layout's
buffer size whatever the descriptor length; a transmit descriptor too short for a header is
returned at once; rings overlapping the buffer pool or the table are refused at start. A bad
value increments ``counters.protocol_errors``, is logged on the ``ampipc.rpmsg`` logger, and
only that message is dropped; the buffer goes back to the peer whenever it can be identified. `poll()` and `try_send()` never raise for anything the
peer wrote.

Fast path (``fast=True``, the default unless ``AMPIPC_RPMSG_PURE`` is set): the rings are the C
mirrors of `virtqueue` (``ampipc._vring``), and the hot loops below (the receive poll with its
header checks; `_send_driver`: reclaim, transmit buffer choice, fill, publish; `_send_device`:
the stash, taking driver buffers, fill, publish) each run as one C call that returns the same
events and (kind, message) error entries this code produces. Everything else — start-up, name
service, statistics, the endpoint layer — is this module on both paths.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .. import _vring
from ..errors import MessageTooLarge, ProtocolError
from ._window import Window
from ._wire import (
    FEATURE_NS,
    NS_CREATE,
    NS_DESTROY,
    NS_RECORD,
    NS_RECORD_SIZE,
    RPMSG_ADDR_ANY,
    RPMSG_BUFFER_SIZE,
    RPMSG_HDR,
    RPMSG_HDR_SIZE,
    RPMSG_NAME_SIZE,
    RPMSG_NS_ADDR,
    STATUS_DRIVER_OK,
    STATUS_NEEDS_RESET,
)
from .rsc_table import ResourceTable, parse_resource_table
from .virtqueue import (
    AnyDeviceQueue,
    AnyDriverQueue,
    RingError,
    fast_path_default,
    make_device_queue,
    make_driver_queue,
)

__all__ = [
    "LinkStatistics",
    "Message",
    "NameService",
    "RawMessage",
    "Role",
    "RpmsgVirtio",
    "decode_ns_name",
    "encode_ns_name",
]

log = logging.getLogger("ampipc.rpmsg")


class Role(enum.Enum):
    """VIRTIO role: DRIVER is OpenAMP's "host" (master), DEVICE its "remote" (slave)."""

    DRIVER = "driver"
    DEVICE = "device"


@dataclass(frozen=True)
class Message:
    """A data message as it arrived: ``payload`` is a copy, the buffer is already back."""

    src: int
    dst: int
    payload: bytes


@dataclass(frozen=True)
class NameService:
    """A valid name-service record (create or destroy) from the peer."""

    name: str
    addr: int
    flags: int

    @property
    def destroy(self) -> bool:
        return self.flags == NS_DESTROY


Event = Message | NameService
RawMessage = tuple[int, int, bytes]  # (src, dst, payload): a data message as `poll_raw` gives it
# `poll_direct`'s table entries (a queue's append, or (callback, endpoint)) and the calls it returns
DirectTarget = Callable[[tuple[int, bytes]], object] | tuple[Callable[[Any, bytes, int], object], Any]
DirectCall = tuple[Callable[[Any, bytes, int], object], Any, bytes, int]


@dataclass
class LinkStatistics:
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    ns_sent: int = 0
    ns_received: int = 0
    protocol_errors: int = 0
    dropped_unknown_address: int = 0
    tx_buffer_waits: int = 0
    kicks_sent: int = 0
    kicks_received: int = 0
    last_error: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def encode_ns_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) >= RPMSG_NAME_SIZE:
        raise ValueError(f"service name {name!r} is longer than {RPMSG_NAME_SIZE - 1} bytes")
    return raw


def decode_ns_name(raw: bytes) -> str:
    """The name up to its first NUL: the bytes after it may be garbage (OpenAMP does not pad)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class RpmsgVirtio:
    """One rpmsg-virtio link over ``window``; see the module docstring."""

    def __init__(
        self,
        window: Window,
        role: Role,
        *,
        rsc_offset: int = 0,
        pool_offset: int,
        pool_size: int,
        buffer_size: int = RPMSG_BUFFER_SIZE,
        wanted_features: int = FEATURE_NS,
        name: str = "rpmsg",
        fast: bool | None = None,
    ) -> None:
        if buffer_size <= RPMSG_HDR_SIZE or buffer_size > 0xFFFF + RPMSG_HDR_SIZE:
            raise ValueError(f"buffer size {buffer_size} is out of range")
        if not window.contains(pool_offset, pool_size):
            raise ValueError("the buffer pool is outside the shared area")
        self.window = window
        self.role = role
        self.name = name
        self.rsc_offset = rsc_offset
        self.pool_offset = pool_offset
        self.pool_size = pool_size
        self.buffer_size = buffer_size
        self.wanted_features = wanted_features
        self.fast = fast_path_default() if fast is None else fast
        # What this code counted; `statistics` adds what the C rings counted themselves.
        self.counters = LinkStatistics()
        self.features = 0
        self.ns_enabled = False
        self._ns_addr = -1
        self.started = False
        self.table: ResourceTable | None = None
        # Plain attributes, read by the I/O layer on every poll: whether the peer must be notified
        # now (`take_kick` reads and clears it), and whether the last poll stopped at its limit (poll
        # again without waiting).
        self.kick_pending = False
        self.more_pending = False
        self._raw = False
        self._fast_rx: _vring.DriverRing | _vring.DeviceRing | None = None  # the receive ring, once started on C
        self._fast_tx: _vring.DriverRing | _vring.DeviceRing | None = None  # the transmit ring, likewise
        # driver side
        self._drv_rx: AnyDriverQueue | None = None
        self._drv_tx: AnyDriverQueue | None = None
        self._tx_free: deque[tuple[int, int]] = deque()
        self._tx_bump = 0
        # device side
        self._dev_rx: AnyDeviceQueue | None = None
        self._dev_tx: AnyDeviceQueue | None = None
        self._tx_stash: list[tuple[int, int, int]] = []

    # ---- errors ---------------------------------------------------------------------------------
    def _error(self, kind: str, message: str) -> None:
        st = self.counters
        st.protocol_errors += 1
        st.last_error = message
        st.errors_by_kind[kind] = st.errors_by_kind.get(kind, 0) + 1
        log.warning("%s: protocol error (%s): %s", self.name, kind, message)

    @property
    def native_transmit(self) -> _vring.DriverRing | _vring.DeviceRing | None:
        """The C transmit ring once started on the C path, else None.

        Its ``tx_send(src, dst, payload, bell)`` is `try_send` in one call that counts for itself,
        rings ``bell`` when the peer wants a kick, and holds the GIL throughout (no other call on the
        rings runs meanwhile), so the I/O layer may call it without serialising: only its errors and
        a kick it could not ring (``kick == 1``) need `record_send`, under the owner's lock.
        """
        return self._fast_tx

    def record_send(self, errors: Sequence[tuple[str, str]], kick: int) -> None:
        """What a direct `native_transmit` send left to do: its errors, a kick for `take_kick`."""
        for kind, message in errors:
            self._error(kind, message)
        if kick == 1:
            self.kick_pending = True

    @property
    def statistics(self) -> LinkStatistics:
        """A snapshot of the link's counters: `counters` with the C rings' own counts folded in."""
        st = dataclasses.replace(self.counters, errors_by_kind=dict(self.counters.errors_by_kind))
        tx, rx = self._fast_tx, self._fast_rx
        if tx is not None:  # it counted every message it sent, name-service records included
            st.messages_sent = tx.messages - st.ns_sent
            st.bytes_sent = tx.payload_bytes - st.ns_sent * NS_RECORD_SIZE
            st.kicks_sent += tx.kicks
        if rx is not None:
            st.messages_received = rx.messages
            st.bytes_received = rx.payload_bytes
        return st

    @property
    def max_payload(self) -> int:
        return self.buffer_size - RPMSG_HDR_SIZE

    # ---- start-up -------------------------------------------------------------------------------
    def _check_layout(self, table: ResourceTable) -> None:
        """Refuse a table whose rings overlap the buffer pool or the table itself.

        Overlaps stay inside the shared area, but a message written into a buffer would then
        rewrite ring words (or the status byte) under the other side's feet.
        """
        pool = (self.pool_offset, self.pool_offset + self.pool_size)
        head = (table.offset, table.offset + table.size)
        for k, v in enumerate(table.vrings[:2]):
            g = v.geometry
            ring = (g.da, g.da + g.size)
            for what, (lo, hi) in (("the buffer pool", pool), ("the resource table", head)):
                if ring[0] < hi and lo < ring[1]:
                    raise ProtocolError(
                        f"vring{k} at [{ring[0]:#x}, {ring[1]:#x}) overlaps {what} at [{lo:#x}, {hi:#x})"
                    )

    def start_driver(self) -> None:
        """Negotiate, reset the rings, post the receive buffers, set DRIVER_OK."""
        if self.role is not Role.DRIVER:
            raise ValueError("start_driver() is for the driver role")
        table = parse_resource_table(self.window, self.rsc_offset)
        self._check_layout(table)
        w = self.window
        dfeatures = table.dfeatures
        gfeatures = dfeatures & self.wanted_features
        w.put_u32(table.gfeatures_offset, gfeatures)
        self.features = dfeatures & gfeatures
        self.ns_enabled = bool(self.features & FEATURE_NS)
        self._ns_addr = RPMSG_NS_ADDR if self.ns_enabled else -1  # the C receive poll's view of it
        rx = make_driver_queue(w, table.vrings[0].geometry, f"{self.name}/vring0", fast=self.fast)
        tx = make_driver_queue(w, table.vrings[1].geometry, f"{self.name}/vring1", fast=self.fast)
        rx.reset()
        tx.reset()
        tx.set_no_interrupt(True)
        n_rx = rx.num
        if (n_rx + 1) * self.buffer_size > self.pool_size:
            raise ValueError(f"the pool of {self.pool_size:#x} bytes cannot hold {n_rx} receive buffers and a transmit buffer")
        w.fill(self.pool_offset, n_rx * self.buffer_size)
        for i in range(n_rx):
            rx.add(self.pool_offset + i * self.buffer_size, self.buffer_size, True, publish=False)
        rx.publish()
        self._tx_bump = self.pool_offset + n_rx * self.buffer_size
        if isinstance(tx, _vring.DriverRing):  # the C ring keeps the transmit buffers itself
            tx.configure_tx(self._tx_bump, self.pool_offset + self.pool_size, self.buffer_size)
        self._drv_rx, self._drv_tx = rx, tx
        self._fast_rx = rx if isinstance(rx, _vring.DriverRing) else None
        self._fast_tx = tx if isinstance(tx, _vring.DriverRing) else None
        self.table = table
        self._set_status(table, STATUS_DRIVER_OK)
        self.started = True
        self.kick_pending = True

    def _set_status(self, table: ResourceTable, status: int) -> None:
        off = table.status_offset
        if off % 4 == 0:
            word = self.window.u32(off)
            self.window.store_word(off, (word & ~0xFF) | status)
        else:
            self.window.put_u8(off, status)

    def device_ready(self) -> bool:
        """Device: has the driver written DRIVER_OK? (The device polls this; kicks play no part.)"""
        if self.role is not Role.DEVICE:
            raise ValueError("device_ready() is for the device role")
        table = self.table if self.table is not None else parse_resource_table(self.window, self.rsc_offset)
        self.table = table
        off = table.status_offset
        # Acquire: the driver's ring and feature writes precede its release store of the status.
        status = self.window.load_word(off) & 0xFF if off % 4 == 0 else self.window.u8(off)
        if status & STATUS_NEEDS_RESET:
            self._set_status(table, 0)
            return False
        return bool(status & STATUS_DRIVER_OK)

    def start_device(self) -> None:
        """Device: after DRIVER_OK, read the features and attach to the rings."""
        if self.role is not Role.DEVICE:
            raise ValueError("start_device() is for the device role")
        table = parse_resource_table(self.window, self.rsc_offset)
        self._check_layout(table)
        w = self.window
        self.features = w.u32(table.dfeatures_offset) & w.u32(table.gfeatures_offset)
        self.ns_enabled = bool(self.features & FEATURE_NS)
        self._ns_addr = RPMSG_NS_ADDR if self.ns_enabled else -1  # the C receive poll's view of it
        pool = (self.pool_offset, self.pool_offset + self.pool_size)
        tx = make_device_queue(w, table.vrings[0].geometry, pool, f"{self.name}/vring0", fast=self.fast)
        rx = make_device_queue(w, table.vrings[1].geometry, pool, f"{self.name}/vring1", fast=self.fast)
        tx.attach()
        rx.attach()
        tx.set_no_notify(True)
        self._dev_tx, self._dev_rx = tx, rx
        self._fast_rx = rx if isinstance(rx, _vring.DeviceRing) else None
        self._fast_tx = tx if isinstance(tx, _vring.DeviceRing) else None
        self.table = table
        self.started = True

    # ---- receive --------------------------------------------------------------------------------
    def poll(self) -> list[Event]:
        """Everything that arrived since the last poll (at most one ring's worth per call)."""
        return cast("list[Event]", self._poll(False))

    def poll_raw(self) -> list[Event | RawMessage]:
        """As `poll`, with each data message as a plain (src, dst, payload) tuple instead of a `Message`.

        The I/O layer's hot path: a tuple costs a fraction of a frozen dataclass.
        """
        fast_rx = self._fast_rx
        if fast_rx is not None:  # straight to the C ring's batch poll
            self._raw = True
            return self._take_batch(fast_rx.rx_batch(self.buffer_size, self._ns_addr))
        return self._poll(True)

    def poll_direct(self, direct: dict[int, DirectTarget]) -> tuple[list[Event | RawMessage], int, Sequence[DirectCall]]:
        """As `poll_raw`, handing data messages for the addresses in ``direct`` over at once.

        An entry is a callable, called with (src, payload) inside the poll, or a pair (callback,
        endpoint), which makes the message the call (callback, endpoint, payload, src) for the caller
        to make. Returns the other events, how many messages went direct, and the calls. The
        hand-over stops at the first data or name-service message that is not for ``direct`` (that
        one and the rest are returned), so the caller sees every binding change before the messages
        after it. On the C path the hand-over runs inside the ring's batch call; on the reference
        path nothing goes direct.
        """
        fast_rx = self._fast_rx
        if fast_rx is None:
            return self._poll(True), 0, ()
        self._raw = True
        batch = fast_rx.rx_batch(self.buffer_size, self._ns_addr, direct)
        items, self.more_pending, kick, delivered, data, calls = batch
        if kick:
            self.kick_pending = True
        if len(items) == data - delivered:  # `_take_batch`, inline: this runs once per poll
            return items, delivered, calls  # type: ignore[return-value]  # data messages only
        return self._batch_events(items), delivered, calls

    def _poll(self, raw: bool) -> list[Event | RawMessage]:
        if not self.started:
            return []
        self._raw = raw
        if self.role is Role.DRIVER:
            return self._poll_driver()
        return self._poll_device()

    def _decode(self, addr: int, capacity: int, events: list[Event | RawMessage]) -> None:
        # A larger descriptor does not make a larger message: the layout's buffer size bounds both.
        capacity = min(capacity, self.buffer_size)
        if capacity < RPMSG_HDR_SIZE:
            self._error("short-buffer", f"buffer at {addr:#x} of {capacity} bytes cannot hold a header")
            return
        src, dst, _reserved, length, _flags = self.window.unpack(RPMSG_HDR, addr)
        if length > capacity - RPMSG_HDR_SIZE:
            self._error("header-length", f"header len {length} exceeds the buffer at {addr:#x} ({capacity - RPMSG_HDR_SIZE} max)")
            return
        payload = self.window.read(addr + RPMSG_HDR_SIZE, length)
        self._event(src, dst, payload, events)

    def _event(self, src: int, dst: int, payload: bytes, events: list[Event | RawMessage]) -> None:
        """A message that passed the header checks: a name-service record or data."""
        length = len(payload)
        st = self.counters
        if dst == RPMSG_NS_ADDR and self.ns_enabled:
            if length != NS_RECORD_SIZE:
                self._error("ns-record", f"name-service record of {length} bytes (must be {NS_RECORD_SIZE})")
                return
            raw_name, ns_addr, ns_flags = NS_RECORD.unpack(payload)
            if ns_flags not in (NS_CREATE, NS_DESTROY):
                self._error("ns-record", f"name-service flags {ns_flags:#x}")
                return
            if ns_addr == RPMSG_ADDR_ANY:
                # Binding to ANY would mark an endpoint ready while it still has no destination.
                self._error("ns-record", "name-service record for address ANY")
                return
            st.ns_received += 1
            events.append(NameService(decode_ns_name(raw_name), ns_addr, ns_flags))
            return
        st.messages_received += 1
        st.bytes_received += length
        events.append((src, dst, payload) if self._raw else Message(src, dst, payload))

    def _take_batch(
        self, batch: tuple[list[tuple[int, int, bytes] | tuple[str, str]], bool, bool, int, int, Sequence[DirectCall]]
    ) -> list[Event | RawMessage]:
        """The result of a C receive poll, through the same error and event handling as the loops below.

        The C ring counted the batch's data messages (`_event`'s data branch); what is left here is
        errors, name-service records and, off the raw path, the `Message` objects.
        """
        items, self.more_pending, kick, delivered, data, _calls = batch
        if kick:
            self.kick_pending = True
        if self._raw and len(items) == data - delivered:
            return items  # type: ignore[return-value]  # data messages only: (src, dst, payload) each
        return self._batch_events(items)

    def _batch_events(self, items: list[tuple[int, int, bytes] | tuple[str, str]]) -> list[Event | RawMessage]:
        """The events of a C batch with errors or name-service records in it (or off the raw path)."""
        events: list[Event | RawMessage] = []
        raw = self._raw
        for item in items:
            if len(item) != 3:
                self._error(*item)
            elif item[1] == RPMSG_NS_ADDR and self.ns_enabled:
                self._event(*item, events)
            else:
                events.append(item if raw else Message(*item))
        return events

    def _poll_driver(self) -> list[Event | RawMessage]:
        rx = self._drv_rx
        assert rx is not None
        if isinstance(rx, _vring.DriverRing):
            return self._take_batch(rx.rx_batch(self.buffer_size, self._ns_addr))
        events: list[Event | RawMessage] = []
        # Reposted only after the batch: a head reposted at once would be in flight again, and a
        # second used element naming it in the same batch would pass for a fresh message.
        repost: list[tuple[int, int]] = []
        self.more_pending = False
        for _ in range(rx.num):
            try:
                item = rx.get_used()
            except RingError as exc:
                self._error("used-ring", str(exc))
                continue
            if item is None:
                break
            _head, addr, buflen, used_len = item
            if used_len > buflen:
                self._error("used-length", f"used len {used_len} exceeds the buffer length {buflen}")
            elif used_len >= RPMSG_HDR_SIZE:
                self._decode(addr, used_len, events)
            # else: the device handed the buffer back unused (e.g. after refusing it): repost it
            repost.append((addr, buflen))
        else:
            self.more_pending = rx.has_used()
        for addr, buflen in repost:
            rx.add(addr, buflen, True, publish=False)
        if repost:
            rx.publish()
            if rx.needs_kick():
                self.kick_pending = True
        return events

    def _poll_device(self) -> list[Event | RawMessage]:
        rx = self._dev_rx
        assert rx is not None
        if isinstance(rx, _vring.DeviceRing):
            return self._take_batch(rx.rx_batch(self.buffer_size, self._ns_addr))
        events: list[Event | RawMessage] = []
        returned = 0
        self.more_pending = False
        for _ in range(rx.num):
            try:
                item = rx.get_available()
            except RingError as exc:
                self._error("avail-ring", str(exc))
                if exc.head is not None:
                    rx.put_used(exc.head, 0, publish=False)
                    returned += 1
                continue
            if item is None:
                break
            head, addr, length, _flags = item
            self._decode(addr, length, events)
            rx.put_used(head, length, publish=False)
            returned += 1
        else:
            self.more_pending = rx.has_available()
        if returned:
            rx.publish()
            if rx.needs_kick():
                self.kick_pending = True
        return events

    # ---- send -----------------------------------------------------------------------------------
    def try_send(
        self, src: int, dst: int, payload: bytes | bytearray | memoryview, bell: _vring.Doorbell | None = None
    ) -> bool:
        """Send one message now if a transmit buffer is free; False if none is.

        ``bell``: on the C path, a kick the message needs rings it at once (counted in ``kicks_sent``)
        instead of waiting for `take_kick`; the reference path ignores it.
        """
        n = len(payload)
        if n > self.buffer_size - RPMSG_HDR_SIZE:
            raise MessageTooLarge(f"a {n}-byte payload exceeds the rpmsg maximum of {self.max_payload} bytes")
        fast_tx = self._fast_tx
        if fast_tx is not None:  # `_send_driver` / `_send_device` in one C call (it counts), straight
            sent, kick, errors = fast_tx.tx_send(src, dst, payload, bell)
            if errors or kick == 1:
                self.record_send(errors, kick)
            return sent
        if not self.started:
            raise ProtocolError("the link is not started")
        if self.role is Role.DRIVER:
            sent = self._send_driver(src, dst, payload)
        else:
            sent = self._send_device(src, dst, payload)
        if sent:
            self.counters.messages_sent += 1
            self.counters.bytes_sent += n
        return sent

    def _fill(self, addr: int, src: int, dst: int, payload: bytes | bytearray | memoryview) -> None:
        self.window.pack(RPMSG_HDR, addr, src, dst, 0, len(payload), 0)
        self.window.write(addr + RPMSG_HDR_SIZE, payload)

    def reclaim(self) -> None:
        """Driver: take back the transmit buffers the device has returned."""
        tx = self._drv_tx
        if tx is None:
            return
        if isinstance(tx, _vring.DriverRing):
            for kind, message in tx.tx_reclaim():
                self._error(kind, message)
            return
        for _ in range(tx.num):
            try:
                item = tx.get_used()
            except RingError as exc:
                self._error("used-ring", str(exc))
                continue
            if item is None:
                break
            _head, addr, buflen, _used_len = item
            self._tx_free.append((addr, buflen))

    def _send_driver(self, src: int, dst: int, payload: bytes | bytearray | memoryview) -> bool:
        tx = self._drv_tx
        assert tx is not None
        if isinstance(tx, _vring.DriverRing):  # this whole method in one C call, same steps
            sent, kick, errors = tx.tx_send(src, dst, payload)
            for kind, message in errors:
                self._error(kind, message)
            if kick:
                self.kick_pending = True
            return sent
        self.reclaim()
        if tx.free_count == 0:
            return False
        if self._tx_free:
            addr, buflen = self._tx_free.popleft()
        elif self._tx_bump + self.buffer_size <= self.pool_offset + self.pool_size:
            addr, buflen = self._tx_bump, self.buffer_size
            self._tx_bump += self.buffer_size
        else:
            return False
        self._fill(addr, src, dst, payload)
        tx.add(addr, buflen, False)
        if tx.needs_kick():
            self.kick_pending = True
        return True

    def _send_device(self, src: int, dst: int, payload: bytes | bytearray | memoryview) -> bool:
        tx = self._dev_tx
        assert tx is not None
        if isinstance(tx, _vring.DeviceRing):  # this whole method in one C call, same steps
            sent, kick, errors = tx.tx_send(src, dst, payload)
            for kind, message in errors:
                self._error(kind, message)
            if kick:
                self.kick_pending = True
            return sent
        need = RPMSG_HDR_SIZE + len(payload)
        chosen: tuple[int, int, int] | None = None
        for i, stashed in enumerate(self._tx_stash):
            if stashed[2] >= need:
                chosen = self._tx_stash.pop(i)
                break
        budget = 2 * tx.num  # a driver that keeps advancing avail.idx cannot hold us here
        while chosen is None:
            budget -= 1
            if budget < 0:
                return False
            try:
                item = tx.get_available()
            except RingError as exc:
                self._error("avail-ring", str(exc))
                if exc.head is not None:
                    tx.put_used(exc.head, 0)
                continue
            if item is None:
                return False
            head, addr, length, _flags = item
            if length < RPMSG_HDR_SIZE:
                # No message ever fits: keeping it would hold the driver's buffer for nothing.
                self._error("short-buffer", f"{tx.name}: descriptor {head} of {length} bytes cannot hold a header")
                tx.put_used(head, 0)
                continue
            if length >= need:
                chosen = (head, addr, length)
            else:
                # A driver buffer too small for this message still serves a shorter one later.
                self._tx_stash.append((head, addr, length))
        head, addr, length = chosen
        # addr was validated against the pool when the head was taken; writing through the
        # captured value stays in bounds even if the driver rewrites the descriptor meanwhile.
        self._fill(addr, src, dst, payload)
        tx.put_used(head, length)
        if tx.needs_kick():
            self.kick_pending = True
        return True

    def send_ns(self, name: str, addr: int, destroy: bool = False) -> bool:
        """Announce (or withdraw) a service: a 40-byte record from ``addr`` to 0x35."""
        record = NS_RECORD.pack(encode_ns_name(name), addr, NS_DESTROY if destroy else NS_CREATE)
        sent = self.try_send(addr, RPMSG_NS_ADDR, record)
        if sent:
            self.counters.ns_sent += 1
            if self._fast_tx is None:  # try_send counted it as data; the C ring's count is corrected in `statistics`
                self.counters.messages_sent -= 1
                self.counters.bytes_sent -= NS_RECORD_SIZE
        return sent

    def take_kick(self) -> bool:
        """Whether the peer must be notified now (and forget it)."""
        kick = self.kick_pending
        self.kick_pending = False
        return kick

    def has_tx_buffer(self) -> bool:
        """A cheap check for a sender waiting on buffers: could `try_send` succeed now?"""
        if self.role is Role.DRIVER:
            tx = self._drv_tx
            if isinstance(tx, _vring.DriverRing):
                return tx.tx_available()
            return tx is not None and (bool(self._tx_free) or tx.has_used() or
                                       self._tx_bump + self.buffer_size <= self.pool_offset + self.pool_size)
        dtx = self._dev_tx
        if isinstance(dtx, _vring.DeviceRing):
            return dtx.tx_available()
        return dtx is not None and (bool(self._tx_stash) or dtx.has_available())
