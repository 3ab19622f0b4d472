"""ampipc: inter-processor communication for asymmetric multi-processing.

FreeRTOS stream and message buffers, the STM32H7 dual-core IPC hardware and OpenAMP RPMsg,
implemented over real shared memory with processes as cores.
"""

from __future__ import annotations

import os as _os

from . import _native
from .buffers import BufferStatistics, MessageBuffer, StreamBuffer
from .errors import (
    BlockingInIsr,
    BufferTooSmall,
    CorruptRegion,
    DomainPoweredDown,
    IncompatibleRegion,
    IpcError,
    LayoutMismatch,
    MemoryUnreachable,
    MessageTooLarge,
    NoBuffer,
    ObjectExists,
    ObjectNotFound,
    PeerClosed,
    PeerDied,
    ProtocolError,
    RegionClosed,
    RegionExists,
    RegionFull,
    RegionNotFound,
    ResourceExhausted,
    RoleBusy,
    Timeout,
    ForeignRegion,
)
from .ipc import ChannelStatistics, Ipc
from .liveness import current_token as _current_token
from .notify import STRATEGIES, StrategyOptions
from .region import ObjectEntry, ProcessEntry, Region

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Region",
    "ObjectEntry",
    "ProcessEntry",
    "MessageBuffer",
    "StreamBuffer",
    "BufferStatistics",
    "Ipc",
    "ChannelStatistics",
    "StrategyOptions",
    "STRATEGIES",
    "get_default_spin",
    "set_default_spin",
    "IpcError",
    "RegionExists",
    "RegionNotFound",
    "IncompatibleRegion",
    "RegionClosed",
    "RegionFull",
    "ObjectNotFound",
    "ObjectExists",
    "CorruptRegion",
    "MessageTooLarge",
    "BufferTooSmall",
    "PeerDied",
    "PeerClosed",
    "Timeout",
    "ForeignRegion",
    "RoleBusy",
    "BlockingInIsr",
    "ResourceExhausted",
    "ProtocolError",
    "NoBuffer",
    "MemoryUnreachable",
    "DomainPoweredDown",
    "LayoutMismatch",
]

get_default_spin = _native.get_default_spin
set_default_spin = _native.set_default_spin

_native._set_errors(
    CorruptRegion, MessageTooLarge, BufferTooSmall, RegionClosed, RoleBusy, BlockingInIsr, Timeout, PeerClosed
)
_native._set_chip_errors(DomainPoweredDown)


def _refresh_identity() -> None:
    _native.set_process_identity(*_current_token())


_refresh_identity()
_os.register_at_fork(after_in_child=_refresh_identity)

from .waiting import READABLE, WRITABLE, Channel, Selector, SelectorKey, wait_any  # noqa: E402
from . import aio as _aio  # noqa: E402

_aio.attach()  # send_async / receive_async / ... and iteration on the buffer, Ipc and Endpoint classes
__all__ += ["wait_any", "Selector", "SelectorKey", "Channel", "READABLE", "WRITABLE"]
