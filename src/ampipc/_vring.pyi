"""Type stubs for `ampipc._vring`, the RPMsg fast path in C (hand-written; keep in step with _vring.c).

`DriverRing` and `DeviceRing` mirror `ampipc.rpmsg.virtqueue.DriverQueue` / `DeviceQueue` method for
method; the batch calls mirror the hot loops of `ampipc.rpmsg.rpmsg_virtio.RpmsgVirtio`.
"""

from collections.abc import Callable, Sequence
from typing import Any

from typing_extensions import Buffer

# A direct entry: a queue's append, or (callback, endpoint); a call: (callback, endpoint, payload, src).
DirectTarget = Callable[[tuple[int, bytes]], object] | tuple[Callable[[Any, bytes, int], object], Any]
DirectCall = tuple[Callable[[Any, bytes, int], object], Any, bytes, int]

class DriverRing:
    def __init__(self, area: Buffer, da: int, num: int, align: int, name: str = "vring") -> None: ...
    @property
    def num(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def messages(self) -> int:
        """Data messages this ring carried: sent by tx_send, or received by rx_batch (name-service records excluded)."""
    @property
    def payload_bytes(self) -> int:
        """Their payload bytes."""
    @property
    def kicks(self) -> int:
        """Doorbell rings tx_send made itself (its ``bell``)."""
    @property
    def free_count(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def reset(self) -> None: ...
    def set_no_interrupt(self, on: bool, /) -> None: ...
    def publish(self) -> None: ...
    def add(self, addr: int, length: int, writable: bool, *, publish: bool = True) -> int: ...
    def needs_kick(self) -> bool: ...
    def has_used(self) -> bool: ...
    def get_used(self) -> tuple[int, int, int, int] | None: ...
    def rx_batch(
        self, buffer_size: int, ns_addr: int = -1, direct: dict[int, DirectTarget] | None = None, /
    ) -> tuple[list[tuple[int, int, bytes] | tuple[str, str]], bool, bool, int, int, Sequence[DirectCall]]:
        """One receive poll: (events (src, dst, payload) and errors (kind, message) in order, more pending,
        kick, messages handed to ``direct``, data messages in the batch (delivered or not; name-service
        records to ``ns_addr`` excluded; they and their bytes go into `messages` / `payload_bytes`), the
        calls to make).

        Data messages for an address in ``direct`` go, after the ring work, to ``direct[dst]((src,
        payload))`` or, for a (callback, endpoint) entry, into the calls as (callback, endpoint, payload,
        src); until the first data or name-service (to ``ns_addr``) message that is not for ``direct``:
        it and the rest stay in the events."""
    def reclaim(self) -> tuple[list[tuple[int, int]], list[tuple[str, str]]]:
        """Every returned transmit buffer as (addr, buffer length), and the errors met."""
    def add_message(self, addr: int, buflen: int, src: int, dst: int, payload: Buffer, /) -> bool:
        """Write the header and payload at addr, make the buffer available; True if the device wants a kick."""
    def configure_tx(self, bump_start: int, bump_end: int, buffer_size: int, /) -> None:
        """Transmit buffers: fresh ones from [bump_start, bump_end) in buffer_size steps, returned ones reused."""
    def tx_reclaim(self) -> list[tuple[str, str]]:
        """Queue every returned transmit buffer; the errors met (kind, message)."""
    def tx_send(self, src: int, dst: int, payload: Buffer, bell: Doorbell | None = None, /) -> tuple[bool, int, list[tuple[str, str]]]:
        """Reclaim, take a transmit buffer, write header and payload, publish: (sent, kick, errors).

        kick: 0 none needed, 1 needed (the caller notifies the peer), 2 rung on ``bell`` here."""
    def tx_available(self) -> bool:
        """Could tx_send find a transmit buffer now?"""

class DeviceRing:
    def __init__(
        self, area: Buffer, da: int, num: int, align: int, pool_start: int, pool_end: int, name: str = "vring"
    ) -> None: ...
    @property
    def num(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def messages(self) -> int:
        """Data messages this ring carried: sent by tx_send, or received by rx_batch (name-service records excluded)."""
    @property
    def payload_bytes(self) -> int:
        """Their payload bytes."""
    @property
    def kicks(self) -> int:
        """Doorbell rings tx_send made itself (its ``bell``)."""
    @property
    def held(self) -> int: ...
    @property
    def pool_start(self) -> int: ...
    @property
    def pool_end(self) -> int: ...
    def attach(self) -> None: ...
    def set_no_notify(self, on: bool, /) -> None: ...
    def publish(self) -> None: ...
    def needs_kick(self) -> bool: ...
    def has_available(self) -> bool: ...
    def get_available(self) -> tuple[int, int, int, int] | None: ...
    def put_used(self, head: int, length: int, *, publish: bool = True) -> None: ...
    def rx_batch(
        self, buffer_size: int, ns_addr: int = -1, direct: dict[int, DirectTarget] | None = None, /
    ) -> tuple[list[tuple[int, int, bytes] | tuple[str, str]], bool, bool, int, int, Sequence[DirectCall]]:
        """One receive poll: (events (src, dst, payload) and errors (kind, message) in order, more pending,
        kick, messages handed to ``direct``, data messages in the batch (delivered or not; name-service
        records to ``ns_addr`` excluded; they and their bytes go into `messages` / `payload_bytes`), the
        calls to make).

        Data messages for an address in ``direct`` go, after the ring work, to ``direct[dst]((src,
        payload))`` or, for a (callback, endpoint) entry, into the calls as (callback, endpoint, payload,
        src); until the first data or name-service (to ``ns_addr``) message that is not for ``direct``:
        it and the rest stay in the events."""
    def put_message(self, head: int, addr: int, length: int, src: int, dst: int, payload: Buffer, /) -> bool:
        """Write the header and payload at addr, return the held head used; True if the driver wants a kick."""
    def tx_send(self, src: int, dst: int, payload: Buffer, bell: Doorbell | None = None, /) -> tuple[bool, int, list[tuple[str, str]]]:
        """Take a driver buffer (stashed or newly available), write header and payload, return it used:
        (sent, kick, errors); kick as `DriverRing.tx_send` says."""
    def tx_available(self) -> bool:
        """Could tx_send find a driver buffer now?"""

class Doorbell:
    """The futex doorbell of a Region link: a counter per direction, the owner's waiting flag after it."""

    def __init__(self, area: Buffer, ring_offset: int, wait_offset: int, spin: float) -> None: ...
    def ring(self) -> None:
        """Add one to the peer's counter (ring_offset); wake it if its flag says it sleeps."""
    def wait(self, timeout: float, /) -> bool:
        """True once the counter at wait_offset moved since the last True; spins, then sleeps (GIL released)."""
    @property
    def spin(self) -> float: ...
    @property
    def spins_won(self) -> int: ...
    @property
    def rings(self) -> int: ...

def spin_wait_u32(area: Buffer, offset: int, seen: int, seconds: float, /) -> int:
    """Read the aligned u32 at offset until it differs from seen or seconds pass (GIL released); its value."""

def _set_errors(
    ring: type[BaseException], exhausted: type[BaseException], out_of_window: type[BaseException],
    protocol: type[BaseException], /,
) -> None: ...
