"""ST's ``cm_ipc`` names (STIPC ``cm_ipc.h``) over `ampipc.Ipc` channels.

Theory of operation
-------------------
ST's ``cm_ipc.c`` keeps its state in globals: the buffer handles of each direction, the control
buffers and the HSEM doorbell. Here that state is one `Ipc` object per process (a core runs one
firmware image), set by `ipc_init` and used by every other call; `CmIpc` holds it for programs
that play several cores in one process (tests), and the module-level functions use a default one.

- ``ipc_init`` lays out the channels (the creating core: in ST's STIPC the CM4 creates the
  buffers, so ``create`` defaults to True on "CM4") or waits for them to appear and attaches
  (the other core). Returns 0, or -1 when the channels did not appear within `open_timeout`
  seconds or do not fit the region.
- ``ipc_start`` installs the notification strategy and starts the core's interrupt dispatcher
  (``HAL_NVIC_EnableIRQ(HSEMx_IRQn)`` and the hooks in the C file). Returns 0.
- ``ipc_sendmsg(msg, size, timeout)`` / ``ipc_recvmsg(msg, size, timeout)`` are ST's one-channel
  calls (channel 0); ``ipc_send`` / ``ipc_receive`` take the channel first (the multi-channel
  derivatives); ``ipc_sendmsg_irq`` is the never-blocking send for interrupt handlers. They return
  the byte count, 0 on timeout, and 0 for a received message larger than `size` (it stays queued).
  Timeouts are FreeRTOS ticks (`ampipc.compat.freertos` tick rate); a negative receive timeout
  waits forever, as ST's ``ipc_recvmsg`` does, and so does ``portMAX_DELAY``.
- A dead or closed peer raises `PeerDied` / `PeerClosed` (ST's C code would block forever).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import BufferTooSmall, CorruptRegion, MessageTooLarge, ObjectNotFound, RegionFull, Timeout
from ..hw import Hardware
from ..ipc import DEFAULT_BUFFER_SIZE, Ipc, StrategyName
from ..region import Region
from . import freertos
from ._types import as_view, as_writable_view

if TYPE_CHECKING:
    from ._types import Buffer, WritableBuffer

__all__ = [
    "IPC_DEFAULT_BUFFER_SIZE",
    "CmIpc",
    "ipc_deinit",
    "ipc_init",
    "ipc_receive",
    "ipc_recvmsg",
    "ipc_send",
    "ipc_sendmsg",
    "ipc_sendmsg_irq",
    "ipc_start",
]

IPC_DEFAULT_BUFFER_SIZE = DEFAULT_BUFFER_SIZE  # 16 * (sizeof(struct ipc_msg) + 4) = 640, ST's TASK_MSG_BUFFER_SIZE
_ATTACH_POLL = 0.005


def _receive_timeout(timeout: int) -> float | None:
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise ValueError(f"timeout is an int32_t of ticks, not {timeout!r}")
    return None if timeout < 0 else freertos.ticks_to_seconds(timeout)


def _payload(msg: Buffer, size: int) -> memoryview:
    view = as_view(msg)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= view.nbytes:
        raise ValueError(f"size {size!r} is not within the {view.nbytes} bytes of the message")
    return view[:size]


class CmIpc:
    """One core's cm_ipc state (the C file's globals)."""

    def __init__(self) -> None:
        self.ipc: Ipc | None = None

    def _channels(self) -> Ipc:
        if self.ipc is None:
            raise RuntimeError("call ipc_init() first")
        return self.ipc

    def ipc_init(
        self,
        region: Region,
        core: str = "CM7",
        *,
        create: bool | None = None,
        channels: int = 1,
        buffer_size: int = IPC_DEFAULT_BUFFER_SIZE,
        strategy: StrategyName = "control",
        hardware: Hardware | None = None,
        open_timeout: float | None = 60.0,
        name: str = "ipc",
    ) -> int:
        """Create (`create`, default: on the CM4) or attach to the channels; 0 on success, -1 if not."""
        if self.ipc is not None:
            raise RuntimeError("ipc_init() was called already on this core")
        if create is None:
            create = core == "CM4"
        if create:
            try:
                self.ipc = Ipc.init(region, channels=channels, buffer_size=buffer_size, strategy=strategy,
                                    core=core, name=name, hardware=hardware)
            except RegionFull:
                return -1
            return 0
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        while True:
            try:
                self.ipc = Ipc.attach(region, core=core, name=name, hardware=hardware)
                return 0
            except (ObjectNotFound, CorruptRegion) as exc:
                # not there yet, or its descriptor not yet published (the magic is stored last)
                if isinstance(exc, CorruptRegion) and exc.field != "magic":
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                return -1
            time.sleep(_ATTACH_POLL)

    def ipc_start(self) -> int:
        """Install the notification and start this core's interrupt dispatcher; 0."""
        self._channels().start()
        return 0

    def ipc_deinit(self) -> None:
        """ampipc: remove the notification, stop the dispatcher (if `ipc_init` made the hardware)."""
        if self.ipc is not None:
            self.ipc.close()
            self.ipc = None

    def ipc_send(self, channel: int, msg: Buffer, size: int, timeout: int = freertos.portMAX_DELAY) -> int:
        """Send `size` bytes of `msg` on `channel`, waiting up to `timeout` ticks; bytes sent or 0."""
        data = _payload(msg, size)
        try:
            self._channels().send(channel, data, timeout=freertos.ticks_to_seconds(timeout))
        except (Timeout, MessageTooLarge):
            return 0
        return size

    def ipc_receive(self, channel: int, msg: WritableBuffer, size: int, timeout: int) -> int:
        """Receive the next message of `channel` into `msg` (at most `size` bytes); its length or 0."""
        room = as_writable_view(msg)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= room.nbytes:
            raise ValueError(f"size {size!r} is not within the {room.nbytes} bytes of the buffer")
        try:
            return int(self._channels().rx_buffer(channel).receive_into(room[:size], timeout=_receive_timeout(timeout)))
        except (Timeout, BufferTooSmall):
            return 0

    def ipc_sendmsg_irq(self, channel: int, msg: Buffer, size: int) -> int:
        """The send for interrupt handlers: never blocks; bytes sent, or 0 if it does not fit now."""
        data = _payload(msg, size)
        return size if self._channels().send_from_isr(channel, data) else 0

    def ipc_sendmsg(self, msg: Buffer, size: int, timeout: int = freertos.portMAX_DELAY) -> int:
        """ST's one-channel send (channel 0)."""
        return self.ipc_send(0, msg, size, timeout)

    def ipc_recvmsg(self, msg: WritableBuffer, size: int, timeout: int) -> int:
        """ST's one-channel receive (channel 0); a negative `timeout` waits forever."""
        return self.ipc_receive(0, msg, size, timeout)


_default = CmIpc()

ipc_init = _default.ipc_init
ipc_start = _default.ipc_start
ipc_deinit = _default.ipc_deinit
ipc_send = _default.ipc_send
ipc_receive = _default.ipc_receive
ipc_sendmsg_irq = _default.ipc_sendmsg_irq
ipc_sendmsg = _default.ipc_sendmsg
ipc_recvmsg = _default.ipc_recvmsg
