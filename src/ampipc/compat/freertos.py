"""FreeRTOS stream- and message-buffer names over ampipc buffers (``stream_buffer.h``, ``message_buffer.h``).

Theory of operation
-------------------
Every function is the FreeRTOS call of the same name, with its argument order, its return values
(bytes written or read, ``pdPASS``/``pdFAIL``, ``pdTRUE``/``pdFALSE``) and its block times in
*ticks*, over an ampipc `MessageBuffer` or `StreamBuffer` in shared memory. As in FreeRTOS, where
the ``xMessageBuffer*`` macros expand to the ``xStreamBuffer*`` functions, the stream functions
take either kind of handle and behave as the handle's kind does.

Ticks: ``configTICK_RATE_HZ`` (default 1000, change it with `set_tick_rate`) converts a block time
to seconds; ``portMAX_DELAY`` waits forever (``INCLUDE_vTaskSuspend`` = 1, as in every dual-core
demo); 0 never waits.

Differences from the C API, all of them forced by shared memory between processes:

- A buffer lives in a `Region` under a name, so creation takes ``region, name`` after the FreeRTOS
  arguments, and the other core obtains the handle with `xMessageBufferAttach` /
  `xStreamBufferAttach` (firmware passes the handle's address through a linker section instead).
  Creation returns None (NULL) when the region has no room left, as FreeRTOS does when the heap is
  exhausted; a taken name raises `ObjectExists`.
- ``...CreateStatic``: the storage area and the static structure are the region's; the capacity is
  ``SIZE - 1`` bytes, as with FreeRTOS's static convention (the header's "so 999"). A static stream
  buffer refuses a trigger equal to its size (FreeRTOS accepts it, and then it is never reached).
- ``configMESSAGE_BUFFER_LENGTH_TYPE`` is a build option of FreeRTOS; here `set_length_type_size`
  chooses the prefix width (1, 2, 4 or 8 bytes; 4 by default, as ``size_t`` on a Cortex-M) of the
  message buffers created afterwards. Both sides of a buffer must agree, as both images must.
- ``pxHigherPriorityTaskWoken`` is a one-element list standing for the ``BaseType_t`` pointer (or
  None, as NULL); it is set to ``pdTRUE`` when the call woke a blocked task of the other side.
- A failure the C API cannot report, a peer process that died or closed its side while a call
  waits, raises `PeerDied` / `PeerClosed`; a closed region raises `RegionClosed`.
- Sending a zero-length message returns 0 and writes nothing, as FreeRTOS ≥ 10.4.4 does (the
  native API accepts zero-length messages, which a FreeRTOS reader cannot consume).
- ``configASSERT`` failures (a trigger above the size, a length beyond the data) raise ValueError.
- ``xStreamBufferSend`` on a stream buffer blocks as FreeRTOS does: it waits until all of the data
  fits (capped at the capacity) or the block time ends, then writes what fits, once.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import TYPE_CHECKING, Final, Union

from ..buffers import MessageBuffer, StreamBuffer
from ..errors import BufferTooSmall, MessageTooLarge, RegionFull, Timeout
from ..region import Region
from ._types import as_view, as_writable_view

if TYPE_CHECKING:
    from ._types import Buffer, WritableBuffer

__all__ = [
    "BaseType_t",
    "MessageBufferHandle_t",
    "StreamBufferHandle_t",
    "TaskWoken",
    "TickType_t",
    "configMESSAGE_BUFFER_LENGTH_TYPE_SIZE",
    "get_tick_rate",
    "pdFAIL",
    "pdFALSE",
    "pdMS_TO_TICKS",
    "pdPASS",
    "pdTICKS_TO_MS",
    "pdTRUE",
    "portMAX_DELAY",
    "get_length_type_size",
    "set_length_type_size",
    "set_tick_rate",
    "ticks_to_seconds",
    "vMessageBufferDelete",
    "vStreamBufferDelete",
    "xMessageBufferAttach",
    "xMessageBufferCreate",
    "xMessageBufferCreateStatic",
    "xMessageBufferIsEmpty",
    "xMessageBufferIsFull",
    "xMessageBufferNextLengthBytes",
    "xMessageBufferReceive",
    "xMessageBufferReceiveCompletedFromISR",
    "xMessageBufferReceiveFromISR",
    "xMessageBufferReset",
    "xMessageBufferSend",
    "xMessageBufferSendCompletedFromISR",
    "xMessageBufferSendFromISR",
    "xMessageBufferSpaceAvailable",
    "xMessageBufferSpacesAvailable",
    "xStreamBatchingBufferCreate",
    "xStreamBatchingBufferCreateStatic",
    "xStreamBufferAttach",
    "xStreamBufferBytesAvailable",
    "xStreamBufferCreate",
    "xStreamBufferCreateStatic",
    "xStreamBufferIsEmpty",
    "xStreamBufferIsFull",
    "xStreamBufferNextMessageLengthBytes",
    "xStreamBufferReceive",
    "xStreamBufferReceiveCompletedFromISR",
    "xStreamBufferReceiveFromISR",
    "xStreamBufferReset",
    "xStreamBufferSend",
    "xStreamBufferSendCompletedFromISR",
    "xStreamBufferSendFromISR",
    "xStreamBufferSetTriggerLevel",
    "xStreamBufferSpacesAvailable",
]

BaseType_t = int
TickType_t = int
MessageBufferHandle_t = MessageBuffer
StreamBufferHandle_t = Union[StreamBuffer, MessageBuffer]  # the stream functions take both kinds
TaskWoken = MutableSequence[int]
"""``BaseType_t *pxHigherPriorityTaskWoken``: a one-element list, e.g. ``woken = [pdFALSE]``."""

pdFALSE: Final = 0
pdTRUE: Final = 1
pdFAIL: Final = 0
pdPASS: Final = 1
portMAX_DELAY: Final = 0xFFFFFFFF
configMESSAGE_BUFFER_LENGTH_TYPE_SIZE: Final = 4  # the default: size_t on a 32-bit Cortex-M (10 bytes take 14)

_tick_rate_hz = 1000
_length_type_size = configMESSAGE_BUFFER_LENGTH_TYPE_SIZE


def set_length_type_size(width: int) -> None:
    """``sizeof(configMESSAGE_BUFFER_LENGTH_TYPE)`` for the message buffers this process creates next
    (1, 2, 4 or 8; an x86-64 FreeRTOS peer with the default ``size_t`` uses 8)."""
    global _length_type_size
    if width not in (1, 2, 4, 8) or isinstance(width, bool):
        raise ValueError(f"the message length type is 1, 2, 4 or 8 bytes, not {width!r}")
    _length_type_size = width


def get_length_type_size() -> int:
    """The prefix width `xMessageBufferCreate` uses (4 unless `set_length_type_size` changed it)."""
    return _length_type_size


def set_tick_rate(hz: int) -> None:
    """Set ``configTICK_RATE_HZ`` for this process (1..1_000_000; the default is 1000)."""
    global _tick_rate_hz
    if isinstance(hz, bool) or not isinstance(hz, int) or not 1 <= hz <= 1_000_000:
        raise ValueError(f"configTICK_RATE_HZ must be an int in 1..1000000, not {hz!r}")
    _tick_rate_hz = hz


def get_tick_rate() -> int:
    """``configTICK_RATE_HZ`` of this process."""
    return _tick_rate_hz


def pdMS_TO_TICKS(xTimeInMs: int) -> TickType_t:
    """Milliseconds to ticks, rounding down as the FreeRTOS macro does."""
    return (int(xTimeInMs) * _tick_rate_hz) // 1000


def pdTICKS_TO_MS(xTicks: TickType_t) -> int:
    """Ticks to milliseconds, rounding down."""
    return (int(xTicks) * 1000) // _tick_rate_hz


def ticks_to_seconds(xTicksToWait: TickType_t) -> float | None:
    """A block time in ticks as the native ``timeout=``: ``portMAX_DELAY`` is None (forever)."""
    if isinstance(xTicksToWait, bool) or not isinstance(xTicksToWait, int) or not 0 <= xTicksToWait <= portMAX_DELAY:
        raise ValueError(f"a block time is a TickType_t in 0..portMAX_DELAY, not {xTicksToWait!r}")
    if xTicksToWait == portMAX_DELAY:
        return None
    return xTicksToWait / _tick_rate_hz


def _set_woken(pxHigherPriorityTaskWoken: TaskWoken | None, woke: bool) -> None:
    if pxHigherPriorityTaskWoken is not None and woke:
        pxHigherPriorityTaskWoken[0] = pdTRUE


def _prefix(data: Buffer, length: int) -> memoryview:
    view = as_view(data)
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= view.nbytes:
        raise ValueError(f"configASSERT: the length {length!r} is not within the {view.nbytes} bytes of the data")
    return view[:length]


def _room(buffer: WritableBuffer, length: int) -> memoryview:
    view = as_writable_view(buffer)
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= view.nbytes:
        raise ValueError(f"configASSERT: the length {length!r} is not within the {view.nbytes} bytes of the buffer")
    return view[:length]


# ---- creation ---------------------------------------------------------------------------------


def xMessageBufferCreate(xBufferSizeBytes: int, region: Region, name: str) -> MessageBufferHandle_t | None:
    """A message buffer of capacity `xBufferSizeBytes` (prefixes included); None if the region is full."""
    try:
        return MessageBuffer.create(region, name, xBufferSizeBytes, prefix_width=_length_type_size)
    except RegionFull:
        return None


def xMessageBufferCreateStatic(xBufferSizeBytes: int, region: Region, name: str) -> MessageBufferHandle_t | None:
    """The static convention: a `xBufferSizeBytes` storage area holds ``xBufferSizeBytes - 1`` bytes."""
    try:
        return MessageBuffer.create(region, name, xBufferSizeBytes, static=True, prefix_width=_length_type_size)
    except RegionFull:
        return None


def xStreamBufferCreate(
    xBufferSizeBytes: int, xTriggerLevelBytes: int, region: Region, name: str
) -> StreamBuffer | None:
    """A stream buffer of capacity `xBufferSizeBytes`; trigger 0 becomes 1; None if the region is full."""
    try:
        return StreamBuffer.create(region, name, xBufferSizeBytes, trigger_level=xTriggerLevelBytes)
    except RegionFull:
        return None


def xStreamBufferCreateStatic(
    xBufferSizeBytes: int, xTriggerLevelBytes: int, region: Region, name: str
) -> StreamBuffer | None:
    """The static convention: capacity ``xBufferSizeBytes - 1``; the trigger must be below the size."""
    if isinstance(xBufferSizeBytes, bool) or not isinstance(xBufferSizeBytes, int):
        raise TypeError(f"xBufferSizeBytes must be an int, not {xBufferSizeBytes!r}")
    if xBufferSizeBytes < 2:
        raise ValueError(f"configASSERT: a static stream buffer needs at least 2 bytes, not {xBufferSizeBytes}")
    if isinstance(xTriggerLevelBytes, bool) or not isinstance(xTriggerLevelBytes, int) or xTriggerLevelBytes < 0:
        raise ValueError(f"configASSERT: the trigger level must be an int >= 0, not {xTriggerLevelBytes!r}")
    if xTriggerLevelBytes >= xBufferSizeBytes:
        # FreeRTOS accepts TRIG == SIZE for a static buffer although it can never be reached; refuse it
        raise ValueError(f"configASSERT: a static buffer of {xBufferSizeBytes} bytes holds "
                         f"{xBufferSizeBytes - 1}: a trigger of {xTriggerLevelBytes} can never be reached")
    try:
        return StreamBuffer.create(region, name, xBufferSizeBytes, trigger_level=xTriggerLevelBytes, static=True)
    except RegionFull:
        return None


def xStreamBatchingBufferCreate(
    xBufferSizeBytes: int, xTriggerLevelBytes: int, region: Region, name: str
) -> StreamBuffer | None:
    """A FreeRTOS >= 11.1 batching buffer: a task's read waits until *more* than the trigger is there."""
    try:
        return StreamBuffer.create(region, name, xBufferSizeBytes, trigger_level=xTriggerLevelBytes, batching=True)
    except RegionFull:
        return None


def xStreamBatchingBufferCreateStatic(
    xBufferSizeBytes: int, xTriggerLevelBytes: int, region: Region, name: str
) -> StreamBuffer | None:
    """A static batching buffer (capacity ``xBufferSizeBytes - 1``)."""
    if isinstance(xTriggerLevelBytes, int) and isinstance(xBufferSizeBytes, int) and xTriggerLevelBytes >= xBufferSizeBytes:
        raise ValueError(f"configASSERT: a static buffer of {xBufferSizeBytes} bytes holds "
                         f"{xBufferSizeBytes - 1}: a trigger of {xTriggerLevelBytes} can never be reached")
    try:
        return StreamBuffer.create(
            region, name, xBufferSizeBytes, trigger_level=xTriggerLevelBytes, static=True, batching=True
        )
    except RegionFull:
        return None


def xMessageBufferAttach(region: Region, name: str) -> MessageBufferHandle_t:
    """ampipc: the other core's handle to the message buffer `name` (`ObjectNotFound` if none)."""
    return MessageBuffer.attach(region, name)


def xStreamBufferAttach(region: Region, name: str) -> StreamBuffer:
    """ampipc: the other core's handle to the stream buffer `name` (`ObjectNotFound` if none)."""
    return StreamBuffer.attach(region, name)


def vStreamBufferDelete(xStreamBuffer: StreamBufferHandle_t) -> None:
    """Nothing to free: a region's objects live as long as the region."""


vMessageBufferDelete = vStreamBufferDelete


# ---- send -------------------------------------------------------------------------------------


def xStreamBufferSend(
    xStreamBuffer: StreamBufferHandle_t, pvTxData: Buffer, xDataLengthBytes: int, xTicksToWait: TickType_t
) -> int:
    """Bytes written: a message buffer writes all or nothing (0 on timeout or if it can never fit),
    a stream buffer writes what fits within the block time."""
    data = _prefix(pvTxData, xDataLengthBytes)
    timeout = ticks_to_seconds(xTicksToWait)
    if isinstance(xStreamBuffer, MessageBuffer):
        if xDataLengthBytes == 0:
            return 0
        try:
            xStreamBuffer.send(data, timeout=timeout)
        except (Timeout, MessageTooLarge):
            return 0
        return xDataLengthBytes
    return int(xStreamBuffer.write_once(data, timeout=timeout))


def xStreamBufferSendFromISR(
    xStreamBuffer: StreamBufferHandle_t,
    pvTxData: Buffer,
    xDataLengthBytes: int,
    pxHigherPriorityTaskWoken: TaskWoken | None,
) -> int:
    """The never-blocking send: bytes written now (0 when a message does not fit)."""
    data = _prefix(pvTxData, xDataLengthBytes)
    before = xStreamBuffer.statistics().reader_wakeups
    if isinstance(xStreamBuffer, MessageBuffer):
        written = xDataLengthBytes if xDataLengthBytes and xStreamBuffer.try_send(data) else 0
    else:
        written = int(xStreamBuffer.try_write(data))
    _set_woken(pxHigherPriorityTaskWoken, written > 0 and xStreamBuffer.statistics().reader_wakeups != before)
    return written


xMessageBufferSend = xStreamBufferSend
xMessageBufferSendFromISR = xStreamBufferSendFromISR


# ---- receive ----------------------------------------------------------------------------------


def xStreamBufferReceive(
    xStreamBuffer: StreamBufferHandle_t, pvRxData: WritableBuffer, xBufferLengthBytes: int, xTicksToWait: TickType_t
) -> int:
    """Bytes read into `pvRxData`: 0 at the timeout, and 0 for a message larger than
    `xBufferLengthBytes` (it stays in the buffer; `xMessageBufferNextLengthBytes` tells its length)."""
    room = _room(pvRxData, xBufferLengthBytes)
    timeout = ticks_to_seconds(xTicksToWait)
    if isinstance(xStreamBuffer, MessageBuffer):
        try:
            return int(xStreamBuffer.receive_into(room, timeout=timeout))
        except (Timeout, BufferTooSmall):
            return 0
    if xBufferLengthBytes == 0:
        return 0
    return int(xStreamBuffer.read_into(room, timeout=timeout))


def xStreamBufferReceiveFromISR(
    xStreamBuffer: StreamBufferHandle_t,
    pvRxData: WritableBuffer,
    xBufferLengthBytes: int,
    pxHigherPriorityTaskWoken: TaskWoken | None,
) -> int:
    """The never-blocking receive: bytes read now (0 when empty or the message is too large)."""
    room = _room(pvRxData, xBufferLengthBytes)
    before = xStreamBuffer.statistics().writer_wakeups
    got: bytes | None
    if isinstance(xStreamBuffer, MessageBuffer):
        length = xStreamBuffer.next_length
        if length is None or length > xBufferLengthBytes:
            return 0
        got = xStreamBuffer.try_receive()
    else:
        got = xStreamBuffer.try_read(xBufferLengthBytes) if xBufferLengthBytes else b""
    if not got:
        return 0
    room[: len(got)] = got
    _set_woken(pxHigherPriorityTaskWoken, xStreamBuffer.statistics().writer_wakeups != before)
    return len(got)


xMessageBufferReceive = xStreamBufferReceive
xMessageBufferReceiveFromISR = xStreamBufferReceiveFromISR


# ---- completion helpers (called from the other core's interrupt handler) ------------------------


def xStreamBufferSendCompletedFromISR(
    xStreamBuffer: StreamBufferHandle_t, pxHigherPriorityTaskWoken: TaskWoken | None
) -> BaseType_t:
    """Wake the task blocked reading this buffer, if any: ``pdTRUE`` if one was waiting."""
    woke = bool(xStreamBuffer.send_completed_from_isr())
    _set_woken(pxHigherPriorityTaskWoken, woke)
    return pdTRUE if woke else pdFALSE


def xStreamBufferReceiveCompletedFromISR(
    xStreamBuffer: StreamBufferHandle_t, pxHigherPriorityTaskWoken: TaskWoken | None
) -> BaseType_t:
    """Wake the task blocked writing this buffer, if any: ``pdTRUE`` if one was waiting."""
    woke = bool(xStreamBuffer.receive_completed_from_isr())
    _set_woken(pxHigherPriorityTaskWoken, woke)
    return pdTRUE if woke else pdFALSE


xMessageBufferSendCompletedFromISR = xStreamBufferSendCompletedFromISR
xMessageBufferReceiveCompletedFromISR = xStreamBufferReceiveCompletedFromISR


# ---- queries and control ------------------------------------------------------------------------


def xStreamBufferReset(xStreamBuffer: StreamBufferHandle_t) -> BaseType_t:
    """Empty the buffer: ``pdPASS``, or ``pdFAIL`` while a task is blocked on it."""
    return pdPASS if xStreamBuffer.reset() else pdFAIL


def xStreamBufferIsEmpty(xStreamBuffer: StreamBufferHandle_t) -> BaseType_t:
    return pdTRUE if xStreamBuffer.is_empty else pdFALSE


def xStreamBufferIsFull(xStreamBuffer: StreamBufferHandle_t) -> BaseType_t:
    """A message buffer is full when not even a 1-byte message fits (spaces <= the prefix)."""
    return pdTRUE if xStreamBuffer.is_full else pdFALSE


def xStreamBufferSpacesAvailable(xStreamBuffer: StreamBufferHandle_t) -> int:
    """Free bytes (for a message buffer, the largest message is 4 bytes less)."""
    return int(xStreamBuffer.spaces_available)


def xStreamBufferBytesAvailable(xStreamBuffer: StreamBufferHandle_t) -> int:
    """Bytes in the buffer (for a message buffer, length prefixes included)."""
    return int(xStreamBuffer.bytes_available)


def xStreamBufferSetTriggerLevel(xStreamBuffer: StreamBufferHandle_t, xTriggerLevel: int) -> BaseType_t:
    """Set the trigger level (0 becomes 1): ``pdPASS`` if it is at most the capacity, else ``pdFAIL``."""
    if isinstance(xTriggerLevel, bool) or not isinstance(xTriggerLevel, int) or xTriggerLevel < 0:
        raise ValueError(f"the trigger level is a size_t, not {xTriggerLevel!r}")
    if xTriggerLevel > xStreamBuffer.capacity:  # FreeRTOS: N < xLength, and xLength = capacity + 1
        return pdFAIL
    xStreamBuffer.trigger_level = max(xTriggerLevel, 1)
    return pdPASS


def xStreamBufferNextMessageLengthBytes(xStreamBuffer: StreamBufferHandle_t) -> int:
    """Length of the next message of a message buffer, 0 when it is empty (always 0 for a stream)."""
    if isinstance(xStreamBuffer, MessageBuffer):
        length = xStreamBuffer.next_length
        return 0 if length is None else int(length)
    return 0


xMessageBufferReset = xStreamBufferReset
xMessageBufferIsEmpty = xStreamBufferIsEmpty
xMessageBufferIsFull = xStreamBufferIsFull
xMessageBufferSpacesAvailable = xStreamBufferSpacesAvailable
xMessageBufferSpaceAvailable = xStreamBufferSpacesAvailable  # the name before FreeRTOS 10.2
xMessageBufferNextLengthBytes = xStreamBufferNextMessageLengthBytes
