"""How clients find a server in a Region and get their own pair of message buffers.

Theory of operation
-------------------
A server publishes a *registry*: one object named after the service (kind ``rpc_registry``) with a
fixed number of client *slots*. Slot *i* owns two MessageBuffers, ``<service>.<i>.q`` (requests,
written by the client) and ``<service>.<i>.r`` (replies, written by the server), created by the
first client that uses the slot and reused by later ones (directory entries are never removed,
so reuse keeps a long-running system from filling the directory).

Layout (little-endian; offsets in bytes from the object's start)::

    0   u32 magic "ARPC"        written last by the server at creation
    4   u32 version             1
    8   u32 slot count          1..4096
    12  u32 buffer size         capacity of each slot buffer, length prefixes included
    16  u32 server pid          } the serving process's liveness token
    24  u64 server start time   }
    20  u32 doorbell            futex word: bumped (and woken) by a client after it readied a slot
    32  u32 server state        1 serving, 2 closed
    64 + 32*i: slot i
        0  u32 state            0 FREE, 1 CLAIMED, 2 READY, 3 ACTIVE, 4 BROKEN
        4  u32 client pid       } the client's liveness token
        8  u64 client start     }
        16 u32 generation       incremented at every claim (who used the slot how often)

Who writes what: a client moves a slot FREE -> CLAIMED (compare-and-swap, so two clients never
share a slot), writes its token, creates or attaches the two buffers, says `Hello` on ``q``, moves
the slot to READY and rings the doorbell. The server's accept loop sleeps on the doorbell (no
polling), moves READY -> ACTIVE, attaches the buffers, says `Hello` on ``r`` and serves the slot.
When the connection ends (the client said `Bye`, or died) the server empties both buffers and
moves the slot back to FREE. A slot CLAIMED by a client that died before READY is freed by the
server's next scan. Each side's liveness check reads the other's token from the registry, so a
blocked wait learns within one wait slice (100 ms) that the other process died.

A server that finds a registry of a dead server takes it over (all slots freed); a live one is
never touched (`ObjectExists`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..buffers import MessageBuffer
from ..errors import CorruptRegion, IpcError, ObjectExists, ObjectNotFound, PeerDied, ProtocolError, ResourceExhausted, Timeout
from ..liveness import current_token, is_alive
from ..region import Region
from . import _codec
from .rpc_links import BufferPairLink

__all__ = ["REGISTRY_KIND", "Registry", "Slot", "connect_slot", "DEFAULT_SLOTS", "DEFAULT_BUFFER_SIZE"]

log = logging.getLogger("ampipc.services")

REGISTRY_KIND = "rpc_registry"
DEFAULT_SLOTS = 16
DEFAULT_BUFFER_SIZE = 64 * 1024
MAX_SLOTS = 4096
_MAGIC = 0x43505241  # "ARPC"
_VERSION = 1
_HEADER = 64
_SLOT = 32
_OFF_MAGIC, _OFF_VERSION, _OFF_SLOTS, _OFF_BUFSIZE = 0, 4, 8, 12
_OFF_SERVER_PID, _OFF_DOORBELL, _OFF_SERVER_START, _OFF_STATE = 16, 20, 24, 32
FREE, CLAIMED, READY, ACTIVE, BROKEN = 0, 1, 2, 3, 4
_SERVING, _CLOSED = 1, 2
_MAX_NAME = 20


def _check_service_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name.encode()) <= _MAX_NAME or "\0" in name:
        raise ValueError(f"a service name must be 1..{_MAX_NAME} bytes without NUL, not {name!r}")
    return name


def _buffer_names(service: str, index: int) -> tuple[str, str]:
    return f"{service}.{index}.q", f"{service}.{index}.r"


@dataclass
class Slot:
    """One accepted client: its index, its link (server side) and its liveness token."""

    index: int
    link: BufferPairLink
    client_pid: int
    client_start: int


class _Layout:
    """The registry object: offset and checked geometry, with accessors for its words."""

    def __init__(self, region: Region, service: str, offset: int, size: int) -> None:
        self.region = region
        self.service = service
        self.offset = offset
        m = region.mapping
        if size < _HEADER:
            raise CorruptRegion(f"rpc registry {service!r} is {size} bytes", object=service, field="size", value=size)
        magic = m.load_u32(offset + _OFF_MAGIC)
        if magic != _MAGIC:
            raise CorruptRegion(f"rpc registry {service!r}: bad magic {magic:#x}", object=service, field="magic", value=magic)
        version = m.load_u32(offset + _OFF_VERSION)
        if version != _VERSION:
            raise CorruptRegion(f"rpc registry {service!r}: version {version}, expected {_VERSION}",
                                object=service, field="version", value=version)
        self.slots = m.load_u32(offset + _OFF_SLOTS)
        if not 1 <= self.slots <= MAX_SLOTS or _HEADER + self.slots * _SLOT > size:
            raise CorruptRegion(f"rpc registry {service!r}: {self.slots} slots in {size} bytes",
                                object=service, field="slots", value=self.slots)
        self.buffer_size = m.load_u32(offset + _OFF_BUFSIZE)
        if not 64 <= self.buffer_size < 1 << 31:
            raise CorruptRegion(f"rpc registry {service!r}: buffer size {self.buffer_size}",
                                object=service, field="buffer_size", value=self.buffer_size)

    def slot_offset(self, index: int) -> int:
        return self.offset + _HEADER + index * _SLOT

    def server_token(self) -> tuple[int, int]:
        m = self.region.mapping
        return m.load_u32(self.offset + _OFF_SERVER_PID), m.load_u64(self.offset + _OFF_SERVER_START)

    def server_alive(self) -> bool:
        if self.region.closed:
            return False
        pid, start = self.server_token()
        return is_alive(pid, start)

    def serving(self) -> bool:
        return self.region.mapping.load_u32(self.offset + _OFF_STATE) == _SERVING and self.server_alive()

    def client_token(self, index: int) -> tuple[int, int]:
        m, s = self.region.mapping, self.slot_offset(index)
        return m.load_u32(s + 4), m.load_u64(s + 8)

    def buffers(self, index: int, *, create: bool) -> tuple[MessageBuffer, MessageBuffer]:
        q_name, r_name = _buffer_names(self.service, index)
        out = []
        for name in (q_name, r_name):
            try:
                buf = MessageBuffer.attach(self.region, name)
            except ObjectNotFound:
                if not create:
                    raise
                buf = MessageBuffer.create(self.region, name, self.buffer_size)
            if buf.capacity != self.buffer_size:
                raise CorruptRegion(f"rpc buffer {name!r} holds {buf.capacity} bytes, the registry says {self.buffer_size}",
                                    object=name, field="capacity", value=buf.capacity)
            out.append(buf)
        return out[0], out[1]


class Registry:
    """The server side: publishes the registry and accepts clients as they ready their slots."""

    def __init__(self, layout: _Layout) -> None:
        self._layout = layout
        self.service = layout.service
        self.region = layout.region

    @classmethod
    def create(cls, region: Region, service: str, *, slots: int = DEFAULT_SLOTS,
               buffer_size: int = DEFAULT_BUFFER_SIZE) -> Registry:
        """Publish (or take over from a dead server) the registry ``service`` in ``region``."""
        _check_service_name(service)
        if not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be 1..{MAX_SLOTS}, not {slots!r}")
        if not isinstance(buffer_size, int) or not 64 <= buffer_size < 1 << 31:
            raise ValueError(f"buffer_size must be 64..2**31-1 bytes, not {buffer_size!r}")
        m = region.mapping
        pid, start = current_token()
        try:
            offset = region.allocate(service, REGISTRY_KIND, _HEADER + slots * _SLOT)
        except ObjectExists:
            entry = region.lookup(service, REGISTRY_KIND)
            layout = _Layout(region, service, entry.offset, entry.size)
            if layout.serving():
                raise ObjectExists(f"a live server (pid {layout.server_token()[0]}) serves {service!r} already") from None
            log.info("rpc registry %r: taking over from a dead server", service)
            m.store_u64(entry.offset + _OFF_SERVER_START, start)
            m.store_u32(entry.offset + _OFF_SERVER_PID, pid)
            registry = cls(layout)
            for i in range(layout.slots):
                registry.recycle(i)
            m.store_u32(entry.offset + _OFF_STATE, _SERVING)
            return registry
        m.store_u32(offset + _OFF_VERSION, _VERSION)
        m.store_u32(offset + _OFF_SLOTS, slots)
        m.store_u32(offset + _OFF_BUFSIZE, buffer_size)
        m.store_u64(offset + _OFF_SERVER_START, start)
        m.store_u32(offset + _OFF_SERVER_PID, pid)
        m.store_u32(offset + _OFF_STATE, _SERVING)
        m.store_u32(offset + _OFF_MAGIC, _MAGIC)  # last: the registry is complete
        return cls(_Layout(region, service, offset, _HEADER + slots * _SLOT))

    @property
    def slots(self) -> int:
        return self._layout.slots

    def slot_states(self) -> list[int]:
        m = self.region.mapping
        return [m.load_u32(self._layout.slot_offset(i)) for i in range(self._layout.slots)]

    def accept(self, timeout: float) -> list[Slot]:
        """The slots clients readied; sleeps on the doorbell up to ``timeout`` s if there are none."""
        m = self.region.mapping
        bell = self._layout.offset + _OFF_DOORBELL
        seen = m.load_u32(bell)
        ready = self._scan()
        if not ready and timeout > 0:
            m.futex_wait(bell, seen, timeout)
            ready = self._scan()
        return ready

    def _scan(self) -> list[Slot]:
        m = self.region.mapping
        out = []
        for i in range(self._layout.slots):
            s = self._layout.slot_offset(i)
            state = m.load_u32(s)
            if state == CLAIMED:
                pid, start = self._layout.client_token(i)
                if pid and not is_alive(pid, start) and m.cas_u32(s, CLAIMED, FREE) == CLAIMED:
                    log.info("rpc %r: slot %d freed (client pid %d died while connecting)", self.service, i, pid)
            elif state == READY and m.cas_u32(s, READY, ACTIVE) == READY:
                pid, start = self._layout.client_token(i)
                try:
                    q, r = self._layout.buffers(i, create=False)
                except IpcError as exc:
                    log.warning("rpc %r: slot %d is unusable: %s", self.service, i, exc)
                    m.store_u32(s, BROKEN)
                    continue

                def client_alive(pid: int = pid, start: int = start) -> bool:
                    return is_alive(pid, start)

                link = BufferPairLink(r, q, peer_alive=client_alive, peer=f"client (pid {pid})",
                                      description=f"{self.service}[{i}] pid {pid}")
                out.append(Slot(i, link, pid, start))
        return out

    def recycle(self, index: int) -> None:
        """Empty the slot's buffers and free it for the next client."""
        s = self._layout.slot_offset(index)
        try:
            q, r = self._layout.buffers(index, create=False)
            q.reset()
            r.reset()
        except ObjectNotFound:
            pass
        except IpcError as exc:
            log.warning("rpc %r: slot %d could not be emptied: %s", self.service, index, exc)
            self.region.mapping.store_u32(s, BROKEN)
            return
        self.region.mapping.store_u32(s, FREE)

    def close(self) -> None:
        """Say the server is gone (clients that try to connect get `PeerDied`); wake the accept loop."""
        if self.region.closed:
            return
        m = self.region.mapping
        m.store_u32(self._layout.offset + _OFF_STATE, _CLOSED)
        bell = self._layout.offset + _OFF_DOORBELL
        m.fetch_add_u32(bell, 1)
        m.futex_wake(bell)


def connect_slot(region: Region, service: str, *, timeout: float | None = 10.0) -> tuple[BufferPairLink, int, Callable[[], bool]]:
    """The client side: claim a free slot, ready its buffers, and wait for the server's `Hello`.

    Returns ``(link, slot index, server_alive)``. Raises `ObjectNotFound` (no such service),
    `PeerDied` (its server is not running), `ResourceExhausted` (every slot is taken) or `Timeout`.
    """
    _check_service_name(service)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            entry = region.lookup(service, REGISTRY_KIND)
            break
        except ObjectNotFound:
            if deadline is None or time.monotonic() >= deadline:
                raise ObjectNotFound(f"no rpc service {service!r} in region {region.name!r}") from None
            time.sleep(0.01)  # the server is starting: the registry appears once
    layout = _Layout(region, service, entry.offset, entry.size)
    if not layout.serving():
        raise PeerDied(f"the server of rpc service {service!r} is not running", pid=layout.server_token()[0])
    m = region.mapping
    pid, start = current_token()
    index = -1
    for i in range(layout.slots):
        s = layout.slot_offset(i)
        if m.cas_u32(s, FREE, CLAIMED) == FREE:
            index = i
            break
    if index < 0:
        raise ResourceExhausted(f"rpc service {service!r}: all {layout.slots} client slots are in use")
    s = layout.slot_offset(index)
    m.store_u64(s + 8, start)
    m.store_u32(s + 4, pid)
    m.fetch_add_u32(s + 16, 1)
    try:
        q, r = layout.buffers(index, create=True)
        # Take the reader role of the reply buffer now: a previous client of this slot closed it
        # (orderly close), and the server's Hello would be refused until a new reader receives.
        while r.try_receive() is not None:
            pass  # nothing should be left (the server emptied the slot); never read as ours
        link = BufferPairLink(q, r, peer_alive=layout.server_alive, peer="server",
                              description=f"{service}[{index}] client pid {pid}")
        link.send(_codec.encode(_codec.Hello(_codec.PROTOCOL_VERSION, pid, link.max_message)), 1.0)
    except BaseException:
        m.store_u32(s, FREE)
        raise
    m.store_u32(s, READY)
    bell = layout.offset + _OFF_DOORBELL
    m.fetch_add_u32(bell, 1)
    m.futex_wake(bell)
    left = None if deadline is None else max(0.001, deadline - time.monotonic())
    try:
        data = link.receive(left)
    except Timeout:
        raise Timeout(f"rpc service {service!r}: the server did not accept within {timeout} s") from None
    frame = _codec.decode_to_client(data)
    if not isinstance(frame, _codec.Hello):
        raise ProtocolError(f"rpc service {service!r}: expected the server's Hello, got {type(frame).__name__}")
    if frame.version != _codec.PROTOCOL_VERSION:
        raise ProtocolError(f"rpc service {service!r} speaks protocol {frame.version}, this client {_codec.PROTOCOL_VERSION}")
    return link, index, layout.server_alive

