"""Split virtqueues, both sides, sans-I/O over a `Window`.

Theory of operation
-------------------
A split ring has three parts with fixed writers (layout in `_wire`):

- the descriptor table and the avail ring are written by the **driver** only;
- the used ring is written by the **device** only.

`DriverQueue` is the driver's half. It keeps its own record of every descriptor it handed out
(head -> address, length), so a used element coming back is checked against that record and
the buffer address is taken from the record, never re-read from shared memory. Its free list of
descriptors is local too; the ``next`` chain written at reset is only for the peer's benefit.

`DeviceQueue` is the device's half. Every head it reads from the avail ring, and every descriptor
that head names, is validated (head < num; not already held, nor returned in a batch not yet
published, which the driver cannot have seen come back; address and length inside the buffer
pool; no indirect table) before use. NEXT is never followed: OpenAMP posts one descriptor per
buffer, so a chain (looping or not) costs nothing.

Both halves track the peer's free-running 16-bit index against their own: the peer may be at
most ``num`` entries ahead. An index further ahead is corrupt; the queue counts it as a protocol
error and resynchronises to the peer's index (the entries in between are lost, the link goes on).

Publishing: a side writes descriptors and ring slots first, then its (flags, idx) word with one
release store. It reads the peer's word with one acquire load before reading the slots it covers.

Nothing here kicks: `needs_kick()` says whether the peer asked to be notified, and the caller
notifies. Every protocol violation raises `RingError` (a `ProtocolError`) naming the descriptor
head when the buffer can still be returned safely.

Fast path: `ampipc._vring.DriverRing` / `DeviceRing` are these two classes in C, method for
method, with the same checks and messages (plus the batch calls of `rpmsg_virtio`'s hot loops).
`make_driver_queue` / `make_device_queue` pick one; this module stays the reference, and the
tests run both on byte images and compare. ``AMPIPC_RPMSG_PURE=1`` in the environment (or
``fast=False``) selects the pure-Python path, e.g. to debug or to step through the protocol.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Union

from .. import _vring
from ..errors import ProtocolError, ResourceExhausted
from ._window import OutOfWindow, Window
from ._wire import (
    AVAIL_F_NO_INTERRUPT,
    AVAIL_OFF_RING,
    DESC_HEAD,
    DESC_F_INDIRECT,
    DESC_F_WRITE,
    DESC_SIZE,
    USED_ELEM,
    USED_ELEM_SIZE,
    USED_F_NO_NOTIFY,
    USED_OFF_RING,
    VringGeometry,
)

__all__ = [
    "PURE_PATH_ENV",
    "AnyDeviceQueue",
    "AnyDriverQueue",
    "DeviceQueue",
    "DriverQueue",
    "RingError",
    "fast_path_default",
    "make_device_queue",
    "make_driver_queue",
]

PURE_PATH_ENV = "AMPIPC_RPMSG_PURE"


class RingError(ProtocolError):
    """A value the peer put in a ring is invalid. ``head`` is the descriptor to return, if any."""

    def __init__(self, message: str, *, head: int | None = None, length: int = 0) -> None:
        super().__init__(message)
        self.head = head
        self.length = length


class _Queue:
    def __init__(self, window: Window, geometry: VringGeometry, name: str) -> None:
        problem = geometry.problem(window.size)
        if problem is not None:
            raise ProtocolError(f"{name}: {problem}")
        self.window = window
        self.geometry = geometry
        self.name = name
        self.num = geometry.num
        self.mask = geometry.num - 1
        self.avail_word = geometry.avail_offset  # (flags | idx << 16), driver-written
        self.used_word = geometry.used_offset  # (flags | idx << 16), device-written
        self.avail_ring = geometry.avail_offset + AVAIL_OFF_RING
        self.used_ring = geometry.used_offset + USED_OFF_RING
        self.desc = geometry.desc_offset


class DriverQueue(_Queue):
    """The driver's side: makes buffers available, collects used ones."""

    def __init__(self, window: Window, geometry: VringGeometry, name: str = "vring") -> None:
        super().__init__(window, geometry, name)
        self._free: deque[int] = deque(range(self.num))
        self._in_flight: dict[int, tuple[int, int]] = {}
        self._avail_idx = 0
        self._avail_flags = 0
        self._last_used = 0

    def reset(self) -> None:
        """Zero the whole ring area and chain the descriptors (what the driver does at start)."""
        g = self.geometry
        self.window.fill(g.da, g.size)
        for i in range(self.num - 1):
            self.window.put_u16(self.desc + i * DESC_SIZE + 14, i + 1)
        self._free = deque(range(self.num))
        self._in_flight.clear()
        self._avail_idx = 0
        self._avail_flags = 0
        self._last_used = 0

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def set_no_interrupt(self, on: bool) -> None:
        """Ask the device not to notify when it uses a buffer (VRING_AVAIL_F_NO_INTERRUPT)."""
        self._avail_flags = AVAIL_F_NO_INTERRUPT if on else 0
        self._publish()

    def _publish(self) -> None:
        self.window.store_word(self.avail_word, self._avail_flags | (self._avail_idx & 0xFFFF) << 16)

    def add(self, addr: int, length: int, writable: bool, *, publish: bool = True) -> int:
        """Make one buffer available; returns its descriptor head."""
        if not self._free:
            raise ResourceExhausted(f"{self.name}: no free descriptor")
        head = self._free.popleft()
        # ``next`` keeps the chain written at reset, byte for byte what OpenAMP's driver leaves.
        self.window.pack(DESC_HEAD, self.desc + head * DESC_SIZE, addr, length, DESC_F_WRITE if writable else 0)
        self.window.put_u16(self.avail_ring + 2 * (self._avail_idx & self.mask), head)
        self._avail_idx = (self._avail_idx + 1) & 0xFFFF
        self._in_flight[head] = (addr, length)
        if publish:
            self._publish()
        return head

    def publish(self) -> None:
        self._publish()

    def needs_kick(self) -> bool:
        return not (self.window.load_word(self.used_word) & USED_F_NO_NOTIFY)

    def has_used(self) -> bool:
        return (self.window.load_word(self.used_word) >> 16) != self._last_used

    def get_used(self) -> tuple[int, int, int, int] | None:
        """The next used buffer as (head, addr, buffer length, used length), or None.

        Raises `RingError` (the element is consumed) if the device returned an index too far
        ahead, an id out of range, or a descriptor it does not hold.
        """
        used_idx = self.window.load_word(self.used_word) >> 16
        pending = (used_idx - self._last_used) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.num:
            old = self._last_used
            self._last_used = used_idx
            raise RingError(f"{self.name}: used.idx jumped from {old} to {used_idx} (more than num={self.num} ahead)")
        slot = self._last_used & self.mask
        self._last_used = (self._last_used + 1) & 0xFFFF
        head, used_len = self.window.unpack(USED_ELEM, self.used_ring + slot * USED_ELEM_SIZE)
        if head >= self.num:
            raise RingError(f"{self.name}: used id {head} is out of range (num={self.num})")
        record = self._in_flight.pop(head, None)
        if record is None:
            raise RingError(f"{self.name}: used id {head} names a descriptor the device does not hold")
        self._free.append(head)
        addr, length = record
        return head, addr, length, used_len


class DeviceQueue(_Queue):
    """The device's side: takes available buffers, returns them used.

    ``pool`` is the (start, end) range every descriptor must lie in.
    """

    def __init__(self, window: Window, geometry: VringGeometry, pool: tuple[int, int], name: str = "vring") -> None:
        super().__init__(window, geometry, name)
        lo, hi = pool
        self.pool_start = max(0, lo)
        self.pool_end = min(window.size, hi)
        self._last_avail = 0
        self._used_idx = 0
        self._used_flags = 0
        self._held: set[int] = set()
        # Heads returned but not yet published: the driver cannot have seen them come back, so
        # one of them offered again before the next publish is a duplicate, not a reuse.
        self._unpublished: set[int] = set()

    def attach(self) -> None:
        """Start from the state the driver left at reset: both indexes 0."""
        self._last_avail = 0
        self._used_idx = 0
        self._used_flags = 0
        self._held.clear()
        self._unpublished.clear()

    def set_no_notify(self, on: bool) -> None:
        """Ask the driver not to notify when it makes a buffer available (VRING_USED_F_NO_NOTIFY)."""
        self._used_flags = USED_F_NO_NOTIFY if on else 0
        self._publish()

    def _publish(self) -> None:
        self.window.store_word(self.used_word, self._used_flags | (self._used_idx & 0xFFFF) << 16)
        self._unpublished.clear()

    def needs_kick(self) -> bool:
        return not (self.window.load_word(self.avail_word) & AVAIL_F_NO_INTERRUPT)

    def has_available(self) -> bool:
        return (self.window.load_word(self.avail_word) >> 16) != self._last_avail

    def get_available(self) -> tuple[int, int, int, int] | None:
        """The next available buffer as (head, addr, length, flags), or None.

        Raises `RingError` for a bad index, head or descriptor; when the head itself is valid the
        error carries it, so the caller can give the buffer back with `put_used(head, 0)`.
        """
        avail_idx = self.window.load_word(self.avail_word) >> 16
        pending = (avail_idx - self._last_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.num:
            old = self._last_avail
            self._last_avail = avail_idx
            raise RingError(f"{self.name}: avail.idx jumped from {old} to {avail_idx} (more than num={self.num} ahead)")
        slot = self._last_avail & self.mask
        self._last_avail = (self._last_avail + 1) & 0xFFFF
        head = self.window.u16(self.avail_ring + 2 * slot)
        if head >= self.num:
            raise RingError(f"{self.name}: avail head {head} is out of range (num={self.num})")
        if head in self._held or head in self._unpublished:
            raise RingError(f"{self.name}: avail head {head} is already held by the device")
        addr, length, flags = self.window.unpack(DESC_HEAD, self.desc + head * DESC_SIZE)
        self._held.add(head)
        if flags & DESC_F_INDIRECT:
            raise RingError(f"{self.name}: descriptor {head} is indirect (not negotiated)", head=head)
        if not (self.pool_start <= addr and addr + length <= self.pool_end):
            raise RingError(
                f"{self.name}: descriptor {head} {{addr={addr:#x}, len={length}}} is outside the buffer pool "
                f"[{self.pool_start:#x}, {self.pool_end:#x})",
                head=head,
            )
        return head, addr, length, flags

    def put_used(self, head: int, length: int, *, publish: bool = True) -> None:
        """Return a buffer taken by `get_available` (a held head only)."""
        if head not in self._held:
            raise ValueError(f"{self.name}: descriptor {head} is not held by the device")
        self._held.discard(head)
        self.window.pack(USED_ELEM, self.used_ring + (self._used_idx & self.mask) * USED_ELEM_SIZE, head, length)
        self._used_idx = (self._used_idx + 1) & 0xFFFF
        if publish:
            self._publish()
        else:
            self._unpublished.add(head)

    def publish(self) -> None:
        self._publish()

    @property
    def held(self) -> int:
        return len(self._held)


_vring._set_errors(RingError, ResourceExhausted, OutOfWindow, ProtocolError)

AnyDriverQueue = Union[DriverQueue, _vring.DriverRing]
AnyDeviceQueue = Union[DeviceQueue, _vring.DeviceRing]


def fast_path_default() -> bool:
    """True unless ``AMPIPC_RPMSG_PURE`` is set to something other than "" or "0"."""
    return os.environ.get(PURE_PATH_ENV, "") in ("", "0")


def make_driver_queue(window: Window, geometry: VringGeometry, name: str, *, fast: bool) -> AnyDriverQueue:
    """The driver's half in C (``fast``) or in Python; both refuse a bad geometry alike.

    Under a chip memory model (`ModelledWindow`) the rings are always the Python ones.
    """
    if fast and not window.modelled:
        return _vring.DriverRing(window.view, geometry.da, geometry.num, geometry.align, name)
    return DriverQueue(window, geometry, name)


def make_device_queue(
    window: Window, geometry: VringGeometry, pool: tuple[int, int], name: str, *, fast: bool
) -> AnyDeviceQueue:
    """The device's half in C (``fast``) or in Python (always under a chip memory model)."""
    if fast and not window.modelled:
        return _vring.DeviceRing(window.view, geometry.da, geometry.num, geometry.align, pool[0], pool[1], name)
    return DeviceQueue(window, geometry, pool, name)
