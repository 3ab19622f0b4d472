"""The virtual DMA / MDMA controller: memory-to-memory copies in C, with completion interrupts.

Theory of operation
-------------------
The controller's registers are one directory object of kind ``"dma"`` so that every process (and
``ampipc top``) sees every channel's flags and statistics; the copying is done by the *engine* of
the process that submits (`ampipc._dma.Engine`: a worker thread without the GIL), because only that
process can reach its own private memory. A process claims a channel before using it (one
submitting process per channel, as one driver owns a DMA stream); any process may read it.

A transfer copies ``length`` bytes from a source to a destination, each either a `RegionAddress`
(an offset in the region, confined to the region's object area, so the header and the directory
can never be overwritten) or a private buffer (any object with the buffer protocol; writable for a
destination). `DmaChannel.start` returns at once; the engine copies, sets TCIF (or TEIF) in the
channel's flags, and raises the configured line on the configured core: the transfer-complete line
after a good copy, the transfer-error line when an address is out of bounds (nothing is written then,
and the channel records the error code and both offsets), and, if asked, a half-transfer line once
the first half of the bytes has landed (HTIF; the cue of a double buffer). Handlers read `DmaChannel.flags` and
clear them with `clear_flags`, as a DMA ISR does. The buffer exports of a transfer are held until it
has finished, so the memory cannot be freed or resized under the copy.

Layout (little-endian)::

    0   u32 magic "AMDM" (stored last)   4  u32 version   8  u32 channel count
    per channel at 64 + 64 * n:
    0   u32 flags  TCIF 1, TEIF 2, BUSY 4, HTIF 8: set by the engine; TCIF/TEIF/HTIF cleared by the handler
    4   u32 completed transfers (wraps)  8  u32 last error code   12 u32 owner pid (claim, CAS)
    16  u64 transfers   24 u64 bytes   32 u64 errors   40 u64 busy ns
    48  u64 last error's source offset   56 u64 last error's destination offset
"""

from __future__ import annotations

import enum
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import _dma
from .. import _layout as L
from ..errors import CorruptRegion, IncompatibleRegion, IpcError, ResourceExhausted, Timeout
from ..liveness import is_alive
from ..region import Region
from . import _regs as R
from .hardware import Hardware

__all__ = [
    "DMA_KIND",
    "FLAG_BUSY",
    "FLAG_HTIF",
    "FLAG_TCIF",
    "FLAG_TEIF",
    "ChannelStatistics",
    "DmaChannel",
    "DmaController",
    "DmaError",
    "DmaTransfer",
    "Priority",
    "RegionAddress",
]

DMA_KIND = "dma"
DMA_MAGIC = 0x4D444D41
DMA_VERSION = 1
FLAG_TCIF = 1
FLAG_TEIF = 2
FLAG_BUSY = 4
FLAG_HTIF = 8
_CLEARABLE = FLAG_TCIF | FLAG_TEIF | FLAG_HTIF
_OFF_MAGIC, _OFF_VERSION, _OFF_COUNT = 0, 4, 8
_REGS = 64
_STRIDE = _dma.REGS_STRIDE
_C_FLAGS, _C_COMPLETED, _C_ERROR, _C_OWNER = 0, 4, 8, 12
_C_TRANSFERS, _C_BYTES, _C_ERRORS, _C_BUSY, _C_ERR_SRC, _C_ERR_DST = 16, 24, 32, 40, 48, 56
_ERROR_TEXT = {
    _dma.ERROR_SOURCE_BOUNDS: "the source is out of bounds",
    _dma.ERROR_DESTINATION_BOUNDS: "the destination is out of bounds",
    _dma.ERROR_ABORTED: "the controller was closed before the transfer ran",
}


class Priority(enum.IntEnum):
    """Channel priority (STM32 DMA_SxCR.PL); on a tie the lower channel number goes first."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    VERY_HIGH = 3


class RegionAddress(NamedTuple):
    """An address in the shared region: a byte offset from its start."""

    offset: int


class DmaError(IpcError):
    """A transfer failed (TEIF): ``code``, ``channel`` and the two offsets say which address was bad."""

    def __init__(self, message: str, *, channel: int, code: int, source_offset: int, destination_offset: int) -> None:
        super().__init__(message)
        self.channel = channel
        self.code = code
        self.source_offset = source_offset
        self.destination_offset = destination_offset


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of one channel's shared counters."""

    channel: int
    transfers: int
    bytes: int
    errors: int
    busy_seconds: float
    flags: int
    owner_pid: int


Endpoint = Any  # a RegionAddress or an object with the buffer protocol


class DmaTransfer:
    """A submitted transfer: `wait` for it, or learn of it from the channel's interrupt."""

    __slots__ = ("channel", "_native", "_src", "_dst")

    def __init__(self, channel: DmaChannel, native: _dma.Transfer, src: int, dst: int) -> None:
        self.channel = channel
        self._native = native
        self._src = src
        self._dst = dst

    @property
    def done(self) -> bool:
        return self._native.state >= _dma.STATE_DONE

    @property
    def length(self) -> int:
        return self._native.length

    @property
    def error(self) -> int | None:
        """0 after a good copy, an error code after a failed one, None while not finished."""
        return self._native.error

    @property
    def duration(self) -> float | None:
        """Seconds the engine spent on the copy (None while not finished)."""
        times = self._native.times_ns
        return None if times is None else (times[2] - times[1]) / 1e9

    def wait(self, timeout: float | None = None) -> None:
        """Wait (GIL released) until the transfer finished; `DmaError` if it failed, `Timeout` at the timeout."""
        if not self._native.wait(timeout):
            raise Timeout(f"DMA transfer on channel {self.channel.number} not finished within {timeout} s")
        code = self._native.error
        if code:
            raise DmaError(
                f"DMA channel {self.channel.number}: {_ERROR_TEXT.get(code, f'error {code}')} "
                f"(source offset {self._src}, destination offset {self._dst}, length {self.length})",
                channel=self.channel.number, code=int(code), source_offset=self._src, destination_offset=self._dst,
            )

    def __repr__(self) -> str:
        state = "running" if not self.done else ("ok" if not self.error else f"error {self.error}")
        return f"<DmaTransfer ch{self.channel.number} {self.length} bytes {state}>"


class DmaChannel:
    """One channel claimed by this process: `start` transfers, read and clear its flags."""

    def __init__(self, controller: DmaController, number: int, priority: Priority) -> None:
        self.controller = controller
        self.number = number
        self.priority = priority
        self._regs = controller._base + _REGS + number * _STRIDE

    def set_interrupts(
        self, core: str | None, *, complete_line: int | None = None, error_line: int | None = None,
        half_line: int | None = None,
    ) -> None:
        """Raise `complete_line` (TCIE) / `error_line` (TEIE) on `core` when a transfer ends, and
        `half_line` (HTIE) when its first half has landed; None: no such interrupt."""
        ctl = self.controller
        if core is None:
            ctl._engine_for().configure(self.number, -1, -1, -1, -1, -1)
            return
        for line in (complete_line, error_line, half_line):
            if line is not None and (isinstance(line, bool) or not isinstance(line, int) or not 0 <= line < R.LINES_PER_CORE):
                raise ValueError(f"interrupt lines are ints in 0..{R.LINES_PER_CORE - 1} or None, not {line!r}")
        info = ctl.hardware.core_info(core)
        block = ctl.hardware._base + R.core_block(info.index)
        ctl._engine_for().configure(
            self.number, block + R.C_PENDING, block + R.C_RAISED,
            -1 if complete_line is None else complete_line, -1 if error_line is None else error_line,
            -1 if half_line is None else half_line,
        )

    @staticmethod
    def _split(endpoint: Endpoint, offset: int, what: str) -> tuple[Any, int]:
        """(buffer, offset) of a private side, (None, region offset) of a `RegionAddress`."""
        if type(endpoint) is RegionAddress:
            if offset:
                raise ValueError(f"give a RegionAddress's offset in the address, not as {what}_offset")
            endpoint, offset = None, endpoint.offset
        if type(offset) is not int or offset < 0:
            raise ValueError(f"the {what} offset must be a non-negative int, not {offset!r}")
        return endpoint, offset

    def start(
        self, source: Endpoint, destination: Endpoint, length: int | None = None, *,
        source_offset: int = 0, destination_offset: int = 0,
    ) -> DmaTransfer:
        """Queue a copy and return at once. `length` defaults to what the private side(s) hold past the offset."""
        engine = self.controller._engine if self.controller._engine is not None else self.controller._engine_for()
        src, src_off = self._split(source, source_offset, "source")
        dst, dst_off = self._split(destination, destination_offset, "destination")
        if length is None:
            length = -1
        elif type(length) is not int or length < 0:
            raise ValueError(f"length must be a non-negative int, not {length!r}")
        mapping = self.controller.region.mapping
        if mapping.model_core is not None and src is None and 0 <= length and src_off + length <= mapping.size:
            # a chip region's memory model: the DMA reads memory, not the CM7's cache; bytes the
            # CM7 still holds dirty there are what the coherency checker reports
            mapping.model_observe(src_off, length, L.MODEL_CORE_DMA)
        try:
            native = engine.submit(self.number, self.priority, src, src_off, dst, dst_off, length)
        except BufferError as exc:  # a read-only destination
            raise TypeError(f"the destination must be a writable buffer: {exc}") from None
        except ValueError:
            self.controller._check_open()
            raise
        return DmaTransfer(self, native, src_off, dst_off)

    def copy(
        self, source: Endpoint, destination: Endpoint, length: int | None = None, *, source_offset: int = 0,
        destination_offset: int = 0, timeout: float | None = None,
    ) -> DmaTransfer:
        """`start` and wait for the transfer."""
        transfer = self.start(source, destination, length, source_offset=source_offset,
                              destination_offset=destination_offset)
        transfer.wait(timeout)
        return transfer

    @property
    def flags(self) -> int:
        """TCIF | TEIF | BUSY as the engine set them."""
        return self.controller._m.load_u32(self._regs + _C_FLAGS)

    def clear_flags(self, mask: int = _CLEARABLE) -> int:
        """Clear TCIF/TEIF/HTIF (the IFCR write of an ISR); returns the flags found."""
        return self.controller.clear_flags(self.number, mask)

    @property
    def last_error(self) -> tuple[int, int, int]:
        """(code, source offset, destination offset) of the channel's last failed transfer (code 0: none)."""
        m = self.controller._m
        return m.load_u32(self._regs + _C_ERROR), m.load_u64(self._regs + _C_ERR_SRC), m.load_u64(self._regs + _C_ERR_DST)

    def statistics(self) -> ChannelStatistics:
        return self.controller.statistics(self.number)

    def release(self) -> None:
        """Give the channel up (another process may claim it)."""
        self.controller._release(self)

    def __repr__(self) -> str:
        return f"<DmaChannel {self.number} of {self.controller.name!r}, priority {self.priority.name}>"


class DmaController:
    """The DMA controller object of a region. `create` once, `attach` elsewhere; claim channels with `channel`."""

    def __init__(self, region: Region, hardware: Hardware, name: str, base: int, channels: int) -> None:
        self.region = region
        self.hardware = hardware
        self.name = name
        self.channels = channels
        self._base = base
        self._m = region.mapping
        self._engine: _dma.Engine | None = None
        self._claimed: dict[int, DmaChannel] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def create(cls, region: Region, hardware: Hardware, *, name: str = "dma", channels: int = 8) -> DmaController:
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= _dma.MAX_CHANNELS:
            raise ValueError(f"channels must be an int in 1..{_dma.MAX_CHANNELS}, not {channels!r}")
        base = region.allocate(name, DMA_KIND, _REGS + channels * _STRIDE)
        m = region.mapping
        m.store_u32(base + _OFF_VERSION, DMA_VERSION)
        m.store_u32(base + _OFF_COUNT, channels)
        m.store_u32(base + _OFF_MAGIC, DMA_MAGIC)
        return cls(region, hardware, name, base, channels)

    @classmethod
    def attach(cls, region: Region, hardware: Hardware, *, name: str = "dma") -> DmaController:
        entry = region.lookup(name, DMA_KIND)
        m = region.mapping
        deadline = time.monotonic() + 2.0
        while (magic := m.load_u32(entry.offset + _OFF_MAGIC)) != DMA_MAGIC:
            if magic != 0 or time.monotonic() > deadline:
                raise IncompatibleRegion(f"object {name!r} is not a DMA controller (magic {magic:#010x})")
            time.sleep(0.002)
        version = m.load_u32(entry.offset + _OFF_VERSION)
        if version != DMA_VERSION:
            raise IncompatibleRegion(f"DMA controller {name!r} has layout version {version}, expected {DMA_VERSION}")
        count = m.load_u32(entry.offset + _OFF_COUNT)
        if not 1 <= count <= _dma.MAX_CHANNELS or _REGS + count * _STRIDE > entry.size:
            raise CorruptRegion(f"DMA controller {name!r} is corrupt: {count} channels in {entry.size} bytes",
                                object=name, field="channel count", value=count)
        return cls(region, hardware, name, entry.offset, count)

    def _check_open(self) -> None:
        if self._closed:
            raise IpcError(f"DMA controller {self.name!r} is closed")

    def _engine_for(self) -> _dma.Engine:
        self._check_open()
        with self._lock:
            if self._engine is None:
                lo = self._m.load_u32(L.OFF_OBJECTS_OFFSET)
                self._engine = _dma.Engine(self._m, lo, self.region.size, self._base + _REGS, self.channels)
            return self._engine

    def channel(self, number: int, *, priority: Priority | int = Priority.MEDIUM) -> DmaChannel:
        """Claim channel `number` for this process (a channel held by a dead process is taken over)."""
        self._check_open()
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < self.channels:
            raise ValueError(f"channel must be an int in 0..{self.channels - 1}, not {number!r}")
        prio = Priority(priority)
        with self._lock:
            if number in self._claimed:
                ch = self._claimed[number]
                ch.priority = prio
                return ch
        owner_off = self._base + _REGS + number * _STRIDE + _C_OWNER
        me = os.getpid()
        while True:
            owner = self._m.cas_u32(owner_off, 0, me)
            if owner in (0, me):
                break
            if is_alive(owner):
                raise ResourceExhausted(f"DMA channel {number} of {self.name!r} is used by pid {owner}")
            self._m.cas_u32(owner_off, owner, 0)
        ch = DmaChannel(self, number, prio)
        with self._lock:
            self._claimed[number] = ch
        return ch

    def _release(self, channel: DmaChannel) -> None:
        with self._lock:
            self._claimed.pop(channel.number, None)
        self._m.cas_u32(channel._regs + _C_OWNER, os.getpid(), 0)

    def statistics(self, number: int) -> ChannelStatistics:
        """Any channel's counters (whoever owns it)."""
        if not 0 <= number < self.channels:
            raise ValueError(f"channel must be in 0..{self.channels - 1}")
        regs = self._base + _REGS + number * _STRIDE
        m = self._m
        return ChannelStatistics(
            channel=number, transfers=m.load_u64(regs + _C_TRANSFERS), bytes=m.load_u64(regs + _C_BYTES),
            errors=m.load_u64(regs + _C_ERRORS), busy_seconds=m.load_u64(regs + _C_BUSY) / 1e9,
            flags=m.load_u32(regs + _C_FLAGS), owner_pid=m.load_u32(regs + _C_OWNER),
        )

    def suspend(self) -> None:
        """Hold this process's engine: queued transfers wait (the running one finishes) until `resume`."""
        self._engine_for().suspend(True)

    def resume(self) -> None:
        """Let the engine start queued transfers again, by priority."""
        self._engine_for().suspend(False)

    def clear_flags(self, number: int, mask: int = _CLEARABLE) -> int:
        """Clear TCIF/TEIF/HTIF of any channel (the other core's handler does this); returns the flags found."""
        if not 0 <= number < self.channels:
            raise ValueError(f"channel must be in 0..{self.channels - 1}")
        regs = self._base + _REGS + number * _STRIDE
        return self._m.fetch_and_u32(regs + _C_FLAGS, ~(mask & _CLEARABLE) & 0xFFFFFFFF)

    def close(self) -> None:
        """Stop this process's engine (queued transfers end with an error) and give up its channels."""
        if self._closed:
            return
        with self._lock:
            engine, self._engine = self._engine, None
            claimed = list(self._claimed.values())
        if engine is not None:
            engine.close()
        if not self.region.closed:
            for ch in claimed:
                self._release(ch)
        self._closed = True

    def __enter__(self) -> DmaController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DmaController {self.name!r}: {self.channels} channels>"
