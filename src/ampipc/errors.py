"""The exception tree: one root, `IpcError`; each subclass says what happened.

Timeouts raise `Timeout`, which is also the built-in `TimeoutError`, so ``except TimeoutError``
keeps working. Several classes also derive from the built-in exception a Python user would expect
to catch (`FileExistsError`, `ValueError`, ...). Bad arguments stay plain `ValueError`/`TypeError`.
"""

from __future__ import annotations

__all__ = [
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


class IpcError(Exception):
    """Root of every ampipc error."""


class RegionExists(IpcError, FileExistsError):
    """A region of that name exists already (live, or stale without ``replace_stale=True``)."""


class RegionNotFound(IpcError, FileNotFoundError):
    """No region of that name exists."""


class IncompatibleRegion(IpcError):
    """The segment is not an ampipc region, or it has another layout version."""


class RegionClosed(IpcError):
    """The region (or the object in it) was used after `Region.close()`."""


class RegionFull(IpcError):
    """No room is left in the region for the object or directory entry asked for."""


class ObjectNotFound(IpcError, LookupError):
    """No object of that name (and kind) is in the region's directory."""


class ObjectExists(IpcError):
    """An object of that name is in the region's directory already."""


class CorruptRegion(IpcError):
    """A value read from shared memory is out of range: the region is corrupt or hostile.

    ``object`` names the object, ``field`` the field, ``value`` the offending value.
    """

    def __init__(self, message: str, *, object: str = "", field: str = "", value: int | None = None) -> None:
        super().__init__(message)
        self.object = object
        self.field = field
        self.value = value


class MessageTooLarge(IpcError, ValueError):
    """The message can never fit in the buffer, however long one waits."""


class BufferTooSmall(IpcError):
    """The receive buffer is smaller than the next message; the message stays in place.

    ``needed`` is the length of the waiting message.
    """

    def __init__(self, message: str, *, needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed


class PeerDied(IpcError):
    """The process on the other side of a blocked wait has died. ``pid`` is its process id."""

    def __init__(self, message: str, *, pid: int = 0) -> None:
        super().__init__(message)
        self.pid = pid


class PeerClosed(IpcError):
    """The peer closed its side in an orderly way (like EOF on a pipe); what it sent was drained first."""


class Timeout(IpcError, TimeoutError):
    """A blocking call did not complete within its ``timeout``."""


class ForeignRegion(IpcError, PermissionError):
    """The segment belongs to another user (or may not be opened): it is not trusted by default.

    ``owner_uid`` and ``mode`` describe the segment (``None`` when it could not be examined).
    """

    def __init__(self, message: str, *, owner_uid: int | None = None, mode: int | None = None) -> None:
        super().__init__(message)
        self.owner_uid = owner_uid
        self.mode = mode


class RoleBusy(IpcError):
    """A second writer (or reader) in this process used a buffer while the first was still in a call."""


class BlockingInIsr(IpcError):
    """A blocking call was made from an interrupt handler (ISR context), where nothing may block."""


class ResourceExhausted(IpcError):
    """A fixed pool (hardware semaphores, channels, endpoints, addresses) has no free entry left."""


class ProtocolError(IpcError):
    """The peer broke the wire protocol (a bad descriptor, length, index or record)."""


class NoBuffer(Timeout):
    """No transmit buffer came free within the timeout (OpenAMP's RPMSG_ERR_NO_BUFF)."""


class MemoryUnreachable(IpcError, PermissionError):
    """The core cannot reach the chip memory the region lies in (the chip's memory map says why).

    ``core`` names the core, ``memory`` the memory, ``reason`` the table's reason.
    """

    def __init__(self, message: str, *, core: str = "", memory: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.core = core
        self.memory = memory
        self.reason = reason


class DomainPoweredDown(IpcError):
    """An access to a memory whose power domain is in a low-power mode (its SRAMs are unreachable).

    ``domain`` names the domain (``"D1"``, ``"D2"``), ``memory`` the memory.
    """

    def __init__(self, message: str, *, domain: str = "", memory: str = "") -> None:
        super().__init__(message)
        self.domain = domain
        self.memory = memory


class LayoutMismatch(IpcError):
    """Two images disagree on a shared structure's layout (size, alignment or a field's offset).

    ``structure`` names the structure, ``field`` the first field that differs (empty: the size or
    alignment of the whole), ``expected`` and ``found`` describe both sides.
    """

    def __init__(
        self, message: str, *, structure: str = "", field: str = "", expected: str = "", found: str = ""
    ) -> None:
        super().__init__(message)
        self.structure = structure
        self.field = field
        self.expected = expected
        self.found = found
