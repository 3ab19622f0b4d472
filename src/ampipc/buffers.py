"""StreamBuffer and MessageBuffer: FreeRTOS stream and message buffers in a Region.

Theory of operation
-------------------
The ring and its fast path are in the C core (`_native.StreamRing` / `_native.MessageRing`); these
classes add creation, attachment, statistics and the liveness check. Semantics follow FreeRTOS
`stream_buffer.c` (main branch) with the *dynamic creation* convention: ``size`` is the capacity
(xLength = size + 1, one byte always kept free) and each message carries a 4-byte little-endian
length prefix, so a 10-byte message takes 14 bytes.

`reset()` empties the buffer only while nobody is blocked on it, as in FreeRTOS, and clears both
close flags (a reset buffer starts a new exchange); like FreeRTOS on
two cores, it must not race with an operation in progress on the other side (it cannot see a peer
that is mid-call without being blocked), so reset only a buffer whose peer is idle.

Single writer, single reader. The writer alone moves ``head``, the reader alone moves ``tail``;
each copies first and publishes its index once, so a message is received whole or not at all,
even if the writer dies mid-write. Within one process a second concurrent writer (or reader)
gets `RoleBusy`; across processes the application must keep to one writer and one reader at a
time (the role may pass between threads or processes that take turns).

ampipc extensions to FreeRTOS, all documented on the methods: zero-length messages are allowed
(they take 4 bytes; `next_length` is None, not 0, when the buffer is empty); a receive hook fires
for every consumed message, zero-length ones included, so a writer waiting for space always wakes;
timeouts raise `ampipc.Timeout` (a `TimeoutError`); a blocked side notices a dead peer (`PeerDied`).

Peer death and close. *Drain before you declare death*: a reader whose writer died still receives
every message the writer published; `PeerDied` comes only when nothing is left. A peer is dead
only when no process that may take its role is alive: the recorded holder of the role is dead and
no other process that attached this buffer lives (a role may pass between processes that take
turns; each attach is recorded in the buffer's attacher mask; observers such as ``ampipc top``
attach without registering and record nothing). `close()` is the orderly end
of a side, like closing one end of a pipe: the reader drains what is left, then gets `PeerClosed`
once (the end of that writer's stream; a later receive waits for a new writer); a writer whose
reader closed gets `PeerClosed` at once, on every send, until a new reader receives. The next
call of a role re-opens it: a new writer or reader takes the role over.

Hooks: `on_send_completed` and `on_receive_completed` are the `sbSEND_COMPLETED` and
`sbRECEIVE_COMPLETED` points, called with the buffer as argument. With no hook (None) the core
wakes a blocked peer directly through a futex, without a system call when nobody waits. A hook
replaces that default, as an overriding FreeRTOS macro does: the notification strategy must then
arrange for the other side to call `send_completed_from_isr()` / `receive_completed_from_isr()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from . import _layout as L
from . import _native
from .errors import PeerClosed, PeerDied
from .liveness import current_token, is_alive
from .region import Region

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine
    from typing import Any

    from ._native import Buffer

__all__ = ["MessageBuffer", "StreamBuffer", "BufferStatistics"]

_ROLE_NAMES = ("writer", "reader")


@dataclass(frozen=True)
class BufferStatistics:
    """A snapshot of a buffer's shared counters (both sides' view is the same)."""

    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    peak_fill: int
    send_waits: int
    receive_waits: int
    reader_wakeups: int
    writer_wakeups: int


# One pair of in-process role flags per shared buffer, whatever number of Python objects attach it.
_guards: dict[tuple[str, int, int], bytearray] = {}


def _guard_for(region: Region, offset: int) -> bytearray:
    key = (region.name, offset, os.getpid())
    guard = _guards.get(key)
    if guard is None:
        guard = _guards[key] = bytearray(2)
    return guard


def _ring_bytes(capacity: int) -> int:
    return L.RING_HEADER_SIZE + L.align_up(capacity + 1)


def _init_header(region: Region, offset: int, capacity: int, *, flags: int, trigger: int, prefix: int) -> None:
    total = _ring_bytes(capacity)
    L.RING_CONSTANTS.pack_into(
        region.view,
        offset,
        0,  # magic last
        flags,
        capacity + 1,
        L.RING_HEADER_SIZE,
        trigger,
        prefix,
        total,
    )
    region.mapping.store_u32(offset, L.RING_MAGIC)


def _capacity(size: object, static: bool, minimum: int, what: str) -> int:
    """The bytes a buffer of `size` holds: `size` (dynamic creation) or `size` - 1 (static creation).

    FreeRTOS's static creation hands over a SIZE-byte storage array and keeps one byte of it free
    (xLength = SIZE); dynamic creation allocates SIZE + 1 bytes (xLength = SIZE + 1).
    """
    low = minimum + (1 if static else 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < low or size >= 1 << 31:
        raise ValueError(f"a {what}'s size must be between {low} and 2**31 - 1, not {size!r}")
    return size - 1 if static else size


_B = TypeVar("_B", bound="_BufferBase")


class _BufferBase(_native.Ring):
    """Creation, attachment, statistics and the liveness check, shared by both buffer kinds."""

    _kind: str
    region: Region

    def _setup(self, region: Region) -> None:
        self.region = region
        self._peer_check = self._check_peer

    def _check_peer(self, waiting_role: int) -> None:
        """Called by the core after a wait slice runs out: raise `PeerDied` if the other side is gone.

        The core looks at the ring again before and after this call, so data published by a peer
        that then died is still delivered (drain before you declare death).
        """
        peer_role = 1 - waiting_role
        pid, start = self._peer_identity(peer_role)
        me = current_token()
        if pid and ((pid, start) == me or is_alive(pid, start)):
            return  # the holder lives (this process itself, for one: another of its threads)
        # The recorded holder is dead, or none was recorded: the role may pass to another live process
        # that attached this buffer (processes that take turns), so only when none is left is the
        # peer gone. When no process but this one ever attached the buffer, the region's other
        # processes stand for the peer that has not attached yet.
        region = self.region
        attached = region.attachers(self.offset)
        candidates = [p for p in attached if (p.pid, p.start_time) != me] if attached is not None else None
        if candidates is None or (not pid and not candidates):
            candidates = [p for p in region.processes() if (p.pid, p.start_time) != me]
        others = candidates
        if any(p.alive for p in others):
            return
        if not pid and not others:
            return  # nobody else has attached yet: the peer may still come
        role = _ROLE_NAMES[peer_role]
        if pid:
            raise PeerDied(f"the {role} of buffer {self.name!r} (pid {pid}) has died", pid=pid)
        raise PeerDied(
            f"every other process attached to region {self.region.name!r} has died; buffer {self.name!r} has no {role}",
            pid=others[0].pid if others else 0,
        )

    def close(self) -> None:
        """Close the sides this object used (writer, reader or both), telling the peer; idempotent.

        The peer's blocked receive drains what is left and then raises `PeerClosed`; a writer whose
        reader closed gets `PeerClosed` at once. This object refuses further calls (`RegionClosed`);
        attach again to take a role anew.
        """
        if not self.closed:
            self._close(-1)
        self.region._forget(self)

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self: _B) -> _B:
        return self

    def __next__(self) -> bytes:
        """The next message (`MessageBuffer`) or chunk (`StreamBuffer`); the iteration ends at `PeerClosed`."""
        try:
            return self._next_item()
        except PeerClosed:
            raise StopIteration from None

    def _next_item(self) -> bytes:
        raise NotImplementedError

    def statistics(self) -> BufferStatistics:
        """The shared counters: messages and bytes in and out, peak fill, blocked waits, wake-ups."""
        return BufferStatistics(*self._raw_statistics())

    @classmethod
    def _attach(cls: type[_B], region: Region, name: str) -> _B:
        entry = region.lookup(name, cls._kind)
        obj = cls(region.mapping, entry.offset, name, _guard_for(region, entry.offset), limit=entry.size)
        obj._setup(region)
        region._remember(obj)
        region._mark_attached(entry.offset)
        return obj

    def __repr__(self) -> str:
        try:
            state = f"{self.bytes_available}/{self.capacity} bytes"
        except Exception as e:  # closed region, corrupt header
            state = type(e).__name__
        return f"<{type(self).__name__} {self.name!r} {state}>"


class MessageBuffer(_BufferBase, _native.MessageRing):
    """A FreeRTOS message buffer in shared memory: whole messages, each with a 4-byte length prefix.

    ``send(data, timeout=None)`` blocks until the whole message fits; ``TimeoutError`` at the
    timeout; `MessageTooLarge` at once if it can never fit (len + 4 > capacity). ``try_send``
    returns False instead of waiting. ``receive(timeout=None)`` returns the next message;
    ``try_receive()`` returns None when empty; ``receive_into(buffer, timeout=None)`` copies it into
    a writable buffer and returns its length, raising `BufferTooSmall` (message left in place) when
    the buffer is too small. Zero-length messages are allowed (an ampipc extension).
    """

    _kind = L.KIND_MESSAGE_BUFFER

    def _next_item(self) -> bytes:
        return self.receive()

    if TYPE_CHECKING:  # the awaitable twins, added by ampipc.aio at import

        def send_async(self, data: Buffer, timeout: float | None = None) -> Coroutine[Any, Any, None]: ...
        def receive_async(self, timeout: float | None = None) -> Coroutine[Any, Any, bytes]: ...
        def receive_into_async(self, buffer: Buffer, timeout: float | None = None) -> Coroutine[Any, Any, int]: ...
        def __aiter__(self) -> AsyncIterator[bytes]: ...

    def receive_many_into(self, buffer: Buffer, max_count: int, timeout: float | None = None) -> list[memoryview]:
        """Up to `max_count` messages packed one after another into the writable `buffer`, as views of it.

        At least one message, waiting until `timeout` (then `Timeout`). Stops before a message that
        does not fit in what is left of `buffer` (it stays in place); `BufferTooSmall` if not even
        the first fits. One call into the core, one index update and one wake-up for the batch.
        """
        view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
        return [view[offset : offset + length] for offset, length in self._receive_many_into(view, max_count, timeout)]

    @classmethod
    def create(
        cls,
        region: Region,
        name: str,
        size: int,
        *,
        static: bool = False,
        prefix_width: int = L.PREFIX_SIZE,
        strict: bool = False,
    ) -> MessageBuffer:
        """Create a message buffer that holds `size` bytes, length prefixes included.

        ``static=True`` follows ``xMessageBufferCreateStatic``: a `size`-byte storage holds
        `size` - 1 bytes. ``prefix_width`` is ``sizeof(configMESSAGE_BUFFER_LENGTH_TYPE)``: 4 on a
        32-bit MCU, 8 for an x86-64 FreeRTOS peer, 1 or 2 to save space (a message longer than
        the prefix can count is refused). ``strict=True`` refuses zero-length messages, which a
        FreeRTOS reader cannot consume.
        """
        if prefix_width not in L.PREFIX_WIDTHS:
            raise ValueError(f"prefix_width must be one of {L.PREFIX_WIDTHS}, not {prefix_width!r}")
        capacity = _capacity(size, static, prefix_width + 1, "message buffer")
        flags = L.RING_FLAG_MESSAGE | (L.RING_FLAG_STATIC if static else 0) | (L.RING_FLAG_STRICT if strict else 0)
        offset = region.allocate(name, cls._kind, _ring_bytes(capacity))
        _init_header(region, offset, capacity, flags=flags, trigger=1, prefix=prefix_width)
        return cls._attach(region, name)

    @classmethod
    def attach(cls, region: Region, name: str) -> MessageBuffer:
        """Attach to the message buffer `name` of `region` (`ObjectNotFound` if there is none)."""
        return cls._attach(region, name)


class StreamBuffer(_BufferBase, _native.StreamRing):
    """A FreeRTOS stream buffer in shared memory: a byte stream with a trigger level.

    ``write(data, timeout=None)`` writes what fits at once, waits for room for the rest until the
    timeout, and returns the count written. (xStreamBufferSend instead waits until all of it fits,
    capped at the capacity, and then writes once; the count returned is the same whenever the data
    fits within the timeout, and ampipc also writes data longer than the capacity, in pieces as the
    reader makes room.) ``read(max_bytes, timeout=None)`` returns what is there at
    once if anything is; on an empty buffer it waits until `trigger_level` bytes are there or the
    timeout, then returns what there is (possibly b""). ``try_write`` and ``try_read`` never wait.
    """

    _kind = L.KIND_STREAM_BUFFER

    def _next_item(self) -> bytes:
        return self.read(self.capacity)

    if TYPE_CHECKING:  # the awaitable twins, added by ampipc.aio at import

        def write_async(self, data: Buffer, timeout: float | None = None) -> Coroutine[Any, Any, int]: ...
        def read_async(self, max_bytes: int, timeout: float | None = None) -> Coroutine[Any, Any, bytes]: ...
        def __aiter__(self) -> AsyncIterator[bytes]: ...

    @classmethod
    def create(
        cls,
        region: Region,
        name: str,
        size: int,
        *,
        trigger_level: int = 1,
        static: bool = False,
        batching: bool = False,
    ) -> StreamBuffer:
        """Create a stream buffer of capacity `size`; `trigger_level` 0 becomes 1, above `size` is an error.

        ``static=True`` follows ``xStreamBufferCreateStatic`` (a `size`-byte storage holds `size`
        - 1 bytes). ``batching=True`` makes a FreeRTOS >= 11.1 batching buffer
        (``xStreamBatchingBufferCreate``): a task's read returns data only once *more* than
        `trigger_level` bytes are there (at its timeout it returns b"" otherwise), and the send
        hook fires only above the trigger level; an interrupt handler's read ignores the trigger.
        """
        capacity = _capacity(size, static, 1, "stream buffer")
        if trigger_level < 0 or trigger_level > capacity:
            raise ValueError(f"trigger_level must be between 0 and the capacity {capacity}, not {trigger_level}")
        flags = (L.RING_FLAG_STATIC if static else 0) | (L.RING_FLAG_BATCHING if batching else 0)
        offset = region.allocate(name, cls._kind, _ring_bytes(capacity))
        _init_header(region, offset, capacity, flags=flags, trigger=max(trigger_level, 1), prefix=L.PREFIX_SIZE)
        return cls._attach(region, name)

    def write_once(self, data: Buffer, timeout: float | None = None) -> int:
        """``xStreamBufferSend``'s blocking behaviour: wait until all of `data` fits (capped at the
        capacity) or the timeout, then write what fits, once; returns the count (0 at a timeout
        with no room at all)."""
        size = memoryview(data).nbytes  # type: ignore[arg-type]
        if size and timeout != 0:
            self.wait_writable(min(size, self.capacity), timeout=timeout)
        return self.try_write(data)

    @classmethod
    def attach(cls, region: Region, name: str) -> StreamBuffer:
        """Attach to the stream buffer `name` of `region` (`ObjectNotFound` if there is none)."""
        return cls._attach(region, name)
