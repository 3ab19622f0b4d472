"""Channels between two cores (ST's cm_ipc model): pairs of message buffers and a notification strategy.

Theory of operation
-------------------
The initialising core (``Ipc.init``) lays out, in one region: a descriptor object (``<name>``, kind
``ipc``) holding the channel count, the buffer size, the strategy's name and options and the two core
names; per channel *i* a MessageBuffer ``<name>.<i>.a`` (written by the initialising core, buffer id
2i) and ``<name>.<i>.b`` (written by the other core, id 2i+1); and whatever the strategy needs. The
descriptor's magic word is stored last, so a core that attaches (``Ipc.attach``) either finds nothing
(`ObjectNotFound`) or a complete layout, which it validates (every value read is range-checked)
before use.

Each buffer has one writer and one reader: channel sends from one core go through that core's
``a`` or ``b`` buffer only. ``start()`` installs the strategy (the local hooks and the interrupt
handler) and starts the local core's dispatcher; ``close()`` undoes both and closes this core's
sides of the channels (the peer drains, then gets `PeerClosed`).

Sending from tasks and interrupt handlers on one channel: a task's ``send`` writes the ring (and
runs the send hook) inside the core's critical section, as firmware disables interrupts around the
write (ST's toggle example), and waits for room outside it, never holding it while blocked. So an
interrupt handler's ``send_from_isr`` on the same channel either completes or returns False when
the buffer is full, never `RoleBusy`; tasks of one core may also share a channel. ``send_from_isr``
never blocks, as every FromISR call.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import time
from typing import TYPE_CHECKING, Literal, TypeVar

from . import _layout as L
from .buffers import BufferStatistics, MessageBuffer
from .errors import CorruptRegion, ObjectNotFound, RegionFull, Timeout
from .hw import Core, Hardware
from .notify import (
    STRATEGIES,
    DataBuffer,
    EndpointSpec,
    ErrorCallback,
    Strategy,
    StrategyOptions,
    strategy_class,
)
from .notify.control import RECORD_FOOTPRINT
from .region import Region

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from ._native import Buffer

__all__ = ["DEFAULT_BUFFER_SIZE", "IPC_KIND", "ChannelStatistics", "Ipc"]

DEFAULT_BUFFER_SIZE = 16 * (36 + 4)
"""ST's cm_ipc default: room for 16 messages of 36 bytes with their 4-byte length prefixes."""

IPC_KIND = "ipc"
_MAGIC = 0x43504949  # "IIPC"
_VERSION = 1
_DESCRIPTOR = struct.Struct("<IIII16s16s16sIII")
_NAME_FIELD = 16
MAX_CHANNELS = 1024
_I = TypeVar("_I", bound="Ipc")
StrategyName = Literal["direct", "hsem", "control", "toggle"]
"""The notification strategies `Ipc.init` accepts (see `ampipc.notify`)."""


@dataclass(frozen=True)
class ChannelStatistics:
    """One channel as the local core sees it: its outgoing and incoming buffers' shared counters."""

    channel: int
    sent: BufferStatistics
    received: BufferStatistics


def _text(raw: bytes, what: str, name: str) -> str:
    text = raw.split(b"\0", 1)[0]
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        raise CorruptRegion(f"ipc descriptor {name!r}: {what} is not ASCII", object=name, field=what) from None
    if not value:
        raise CorruptRegion(f"ipc descriptor {name!r}: {what} is empty", object=name, field=what)
    return value


def _ring_footprint(size: int) -> int:
    return L.align_up(L.RING_HEADER_SIZE + L.align_up(size + 1))


class Ipc:
    """Bidirectional message channels between this core and one peer core."""

    def __init__(
        self,
        region: Region,
        name: str,
        hardware: Hardware,
        owns_hardware: bool,
        core: Core,
        peer: str,
        channels: int,
        buffer_size: int,
        strategy_name: str,
        options: StrategyOptions,
        initiator: bool,
        on_error: ErrorCallback | None,
    ) -> None:
        self.region = region
        self.name = name
        self.hardware = hardware
        self._owns_hardware = owns_hardware
        self.core = core
        self.peer = peer
        self.channels = channels
        self.buffer_size = buffer_size
        self.options = options
        self._tx: list[MessageBuffer] = []
        self._rx: list[MessageBuffer] = []
        buffers: list[DataBuffer] = []
        first, second = (core.name, peer) if initiator else (peer, core.name)
        for i in range(channels):
            a = MessageBuffer.attach(region, f"{name}.{i}.a")
            b = MessageBuffer.attach(region, f"{name}.{i}.b")
            for buf in (a, b):
                if buf.capacity != buffer_size:
                    raise CorruptRegion(
                        f"channel {i} of {name!r}: buffer holds {buf.capacity} bytes, the descriptor says {buffer_size}",
                        object=name, field="buffer_size", value=buf.capacity,
                    )
            buffers.append(DataBuffer(EndpointSpec(2 * i, first, second), a))
            buffers.append(DataBuffer(EndpointSpec(2 * i + 1, second, first), b))
            self._tx.append(a if initiator else b)
            self._rx.append(b if initiator else a)
        self.strategy: Strategy = strategy_class(strategy_name)(
            region, name, core, buffers, options, on_error=on_error
        )
        self.started = False
        self.closed = False

    # ---- creation ------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        region: Region,
        *,
        channels: int,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        strategy: StrategyName = "control",
        core: str = "CM7",
        peer: str | None = None,
        name: str = "ipc",
        options: StrategyOptions | None = None,
        hardware: Hardware | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Ipc:
        """Lay out `channels` channels of two `buffer_size` buffers in `region`, on the initialising core.

        Creates the region's `Hardware` if it has none. Raises ValueError for bad arguments (an unknown
        strategy, a channel count or size out of range), `RegionFull` when the channels do not fit,
        `ResourceExhausted` when the strategy's hardware (the 32 HSEM) does not suffice.
        """
        strategy_class(strategy)
        options = options or StrategyOptions()
        if not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1..{MAX_CHANNELS}, not {channels!r}")
        if not isinstance(buffer_size, int) or not L.PREFIX_SIZE < buffer_size < 1 << 31:
            raise ValueError(f"buffer_size must be {L.PREFIX_SIZE + 1}..2**31-1 bytes (prefixes included), not {buffer_size!r}")
        if not isinstance(name, str) or not 1 <= len(name) <= 20:
            raise ValueError(f"a channel set's name must be 1..20 characters, not {name!r}")
        hw, owns = cls._hardware(region, hardware, create=True)
        try:
            local = hw.core(core)
            peer_name = peer if peer is not None else next((c.name for c in hw.cores if c.name != core), None)
            if peer_name is None or peer_name == core or peer_name not in {c.name for c in hw.cores}:
                raise ValueError(f"no peer core {peer_name!r} distinct from {core!r} among {[c.name for c in hw.cores]}")
            for label, text in (("core", core), ("peer", peer_name), ("strategy", strategy)):
                if len(text.encode()) >= _NAME_FIELD:
                    raise ValueError(f"{label} name {text!r} is longer than {_NAME_FIELD - 1} bytes")
            cls._check_room(region, name, channels, buffer_size, strategy, options)
            endpoints = [
                spec
                for i in range(channels)
                for spec in (EndpointSpec(2 * i, core, peer_name), EndpointSpec(2 * i + 1, peer_name, core))
            ]
            strategy_cls = strategy_class(strategy)
            if strategy == "hsem":
                strategy_cls.prepare(region, name, endpoints, options)  # fail on HSEM count before allocating
            offset = region.allocate(name, IPC_KIND, L.align_up(_DESCRIPTOR.size))
            for i in range(channels):
                MessageBuffer.create(region, f"{name}.{i}.a", buffer_size)
                MessageBuffer.create(region, f"{name}.{i}.b", buffer_size)
            if strategy != "hsem":
                strategy_cls.prepare(region, name, endpoints, options)
            with region.view as view:
                _DESCRIPTOR.pack_into(
                    view, offset, 0, _VERSION, channels, buffer_size,
                    strategy.encode(), core.encode(), peer_name.encode(),
                    options.irq_line, options.control_records, options.hsem_base,
                )
            region.mapping.store_u32(offset, _MAGIC)  # published last: the layout is complete
            return cls(region, name, hw, owns, local, peer_name, channels, buffer_size, strategy, options, True, on_error)
        except BaseException:
            if owns:
                hw.close()
            raise

    @classmethod
    def attach(
        cls,
        region: Region,
        *,
        core: str = "CM4",
        name: str = "ipc",
        hardware: Hardware | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Ipc:
        """Attach the other core to the channels `Ipc.init` laid out (`ObjectNotFound` if none yet)."""
        entry = region.lookup(name, IPC_KIND)
        if entry.size < _DESCRIPTOR.size:
            raise CorruptRegion(f"ipc descriptor {name!r} is {entry.size} bytes", object=name, field="size", value=entry.size)
        magic = region.mapping.load_u32(entry.offset)
        if magic != _MAGIC:
            raise CorruptRegion(f"ipc descriptor {name!r}: bad magic {magic:#x} (not initialised?)", object=name, field="magic", value=magic)
        with region.view as view:
            fields = _DESCRIPTOR.unpack_from(view, entry.offset)
        _, version, channels, buffer_size, strategy_raw, init_raw, peer_raw, irq_line, records, hsem_base = fields
        if version != _VERSION:
            raise CorruptRegion(f"ipc descriptor {name!r}: version {version}, expected {_VERSION}", object=name, field="version", value=version)
        if not 1 <= channels <= MAX_CHANNELS:
            raise CorruptRegion(f"ipc descriptor {name!r}: {channels} channels", object=name, field="channels", value=channels)
        if not L.PREFIX_SIZE < buffer_size < 1 << 31:
            raise CorruptRegion(f"ipc descriptor {name!r}: buffer size {buffer_size}", object=name, field="buffer_size", value=buffer_size)
        strategy = _text(strategy_raw, "strategy", name)
        if strategy not in STRATEGIES:
            raise CorruptRegion(f"ipc descriptor {name!r}: unknown strategy {strategy!r}", object=name, field="strategy")
        initiator, other = _text(init_raw, "core", name), _text(peer_raw, "peer", name)
        if core not in (initiator, other):
            raise ValueError(f"channels {name!r} connect {initiator} and {other}, not {core!r}")
        if core == initiator:
            raise ValueError(f"core {core!r} initialised channels {name!r}; attach as {other!r}")
        try:
            options = StrategyOptions(irq_line=irq_line, control_records=records, hsem_base=hsem_base)
        except ValueError as e:
            raise CorruptRegion(f"ipc descriptor {name!r}: {e}", object=name, field="options") from None
        hw, owns = cls._hardware(region, hardware, create=False)
        try:
            return cls(region, name, hw, owns, hw.core(core), initiator, channels, buffer_size, strategy, options, False, on_error)
        except BaseException:
            if owns:
                hw.close()
            raise

    @staticmethod
    def _hardware(region: Region, hardware: Hardware | None, *, create: bool) -> tuple[Hardware, bool]:
        if hardware is not None:
            return hardware, False
        try:
            return Hardware.attach(region), True
        except ObjectNotFound:
            if not create:
                raise
            return Hardware.create(region), True

    @staticmethod
    def _check_room(
        region: Region, name: str, channels: int, buffer_size: int, strategy: str, options: StrategyOptions
    ) -> None:
        needed = L.align_up(_DESCRIPTOR.size) + 2 * channels * _ring_footprint(buffer_size)
        entries = 1 + 2 * channels
        if strategy == "control":
            records = options.control_records or 4 * channels
            needed += 2 * _ring_footprint(records * RECORD_FOOTPRINT) + 64 + 2 * (64 + L.align_up(4 * ((2 * channels + 31) // 32)))
            entries += 3
        elif strategy == "toggle":
            needed += 64 + 4 * L.align_up(4 * ((2 * channels + 31) // 32))
            entries += 1
        free = region.free_bytes
        if needed > free:
            per_channel = 2 * _ring_footprint(buffer_size)
            raise RegionFull(
                f"{channels} channels of 2 x {buffer_size}-byte buffers ({strategy}) need about {needed} bytes; "
                f"region {region.name!r} has {free} free (each channel takes {per_channel}): "
                f"use fewer channels, smaller buffers or a larger region"
            )
        capacity = region.mapping.load_u32(L.OFF_DIR_CAPACITY)
        used = len(region.objects())
        if used + entries > capacity:
            raise RegionFull(
                f"{channels} channels need {entries} directory entries; region {region.name!r} has "
                f"{capacity - used} left of {capacity}: create the region with a larger directory_capacity"
            )

    # ---- operation -----------------------------------------------------------------------------

    def start(self) -> None:
        """Install the notification strategy and start this core's interrupt dispatcher (idempotent)."""
        self._check_open()
        if not self.started:
            self.strategy.install()
            self.core.start()
            self.started = True

    def close(self) -> None:
        """Remove the strategy; stop the dispatcher if this object started the hardware (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.strategy.uninstall()
        finally:
            try:
                for buf in (*self._tx, *self._rx):
                    buf.close()
            finally:
                if self._owns_hardware:
                    self.hardware.close()

    def __enter__(self: _I) -> _I:  # noqa: PYI019 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"channels {self.name!r} are closed")

    def _channel(self, channel: int) -> int:
        if not isinstance(channel, int) or not 0 <= channel < self.channels:
            raise ValueError(f"channel must be 0..{self.channels - 1}, not {channel!r}")
        return channel

    def send(self, channel: int, data: Buffer, timeout: float | None = None) -> None:
        """Send one message; waits for room until `timeout` (None: forever), then `Timeout`.

        The write runs in the core's critical section (see the module doc); the wait does not.
        """
        tx = self._tx[self._channel(channel)]
        critical = self.core.critical_section
        with critical():
            if tx.try_send(data):
                return
        deadline = None if timeout is None else time.monotonic() + timeout
        size = memoryview(data).nbytes  # type: ignore[arg-type]  # numpy arrays typed for Python < 3.12 (_native.Buffer)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            room = tx.wait_writable(size, timeout=left)
            with critical():
                if tx.try_send(data):
                    return
            if not room:
                raise Timeout(f"timed out waiting to send on channel {channel} of {self.name!r}")

    def try_send(self, channel: int, data: Buffer) -> bool:
        """Send one message if it fits now; False otherwise."""
        tx = self._tx[self._channel(channel)]
        with self.core.critical_section():
            return bool(tx.try_send(data))

    def send_from_isr(self, channel: int, data: Buffer) -> bool:
        """The FromISR send: never blocks; False if the message does not fit now (never `RoleBusy`)."""
        tx = self._tx[self._channel(channel)]
        with self.core.critical_section():
            return bool(tx.try_send(data))

    def send_many(self, channel: int, messages: Sequence[Buffer], timeout: float | None = None) -> int:
        """Send each message whole, in order, in as few ring writes as room allows; returns how many were sent.

        Waits for room until `timeout` (None: until all are sent; 0: never); each write runs in the
        core's critical section, the waits do not.
        """
        tx = self._tx[self._channel(channel)]
        critical = self.core.critical_section
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        items = list(messages)
        while True:
            with critical():
                sent += tx.send_many(items[sent:], timeout=0)
            if sent == len(items):
                return sent
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                return sent
            if not tx.wait_writable(memoryview(items[sent]).nbytes, timeout=left):  # type: ignore[arg-type]  # see send
                with critical():
                    return sent + tx.send_many(items[sent:], timeout=0)

    def receive_many(self, channel: int, max_count: int, timeout: float | None = None) -> list[bytes]:
        """At least one and at most `max_count` messages of `channel`, waiting until `timeout` (then `Timeout`)."""
        return self._rx[self._channel(channel)].receive_many(max_count, timeout=timeout)

    def try_receive_many(self, channel: int, max_count: int) -> list[bytes]:
        """The messages of `channel` there now, at most `max_count` (maybe none)."""
        return self._rx[self._channel(channel)].try_receive_many(max_count)

    if TYPE_CHECKING:  # the awaitable twins, added by ampipc.aio at import

        def send_async(self, channel: int, data: Buffer, timeout: float | None = None) -> Coroutine[Any, Any, None]: ...
        def receive_async(self, channel: int, timeout: float | None = None) -> Coroutine[Any, Any, bytes]: ...

    def receive(self, channel: int, timeout: float | None = None) -> bytes:
        """The next message of `channel`; waits until `timeout` (None: forever), then TimeoutError."""
        return bytes(self._rx[self._channel(channel)].receive(timeout=timeout))

    def try_receive(self, channel: int) -> bytes | None:
        """The next message of `channel` if there is one now, else None."""
        got = self._rx[self._channel(channel)].try_receive()
        return None if got is None else bytes(got)

    def tx_buffer(self, channel: int) -> MessageBuffer:
        """The message buffer this core writes for `channel`."""
        return self._tx[self._channel(channel)]

    def rx_buffer(self, channel: int) -> MessageBuffer:
        """The message buffer this core reads for `channel`."""
        return self._rx[self._channel(channel)]

    def statistics(self, channel: int) -> ChannelStatistics:
        """The shared counters of one channel's two buffers."""
        c = self._channel(channel)
        return ChannelStatistics(c, self._tx[c].statistics(), self._rx[c].statistics())

    def all_statistics(self) -> Iterator[ChannelStatistics]:
        return (self.statistics(c) for c in range(self.channels))

    def strategy_statistics(self) -> dict[str, int]:
        """What the notification strategy counted on this core."""
        return self.strategy.statistics()

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    def __repr__(self) -> str:
        return f"<Ipc {self.name!r} {self.core.name}<->{self.peer} {self.channels} channels, {self.strategy.name}>"
