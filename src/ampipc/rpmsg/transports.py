"""Transports: where the shared area comes from, and how kicks travel.

Theory of operation
-------------------
A transport gives the protocol core a `Window` (the shared area, addressed by offset), the
layout parameters (resource table offset, buffer pool, buffer size), whether this side writes the
resource table, and a `Doorbell`: ``ring()`` notifies the peer, ``wait(timeout)`` returns True
once the peer has notified since the last call (notifications may be coalesced: one True stands
for any number of kicks, and the receiver rescans every ring).

`LinuxTransport` is OpenAMP's two-process transport: a POSIX shared-memory file whose offsets are
the protocol's physical addresses (resource table at 0, vrings at 0x4000 / 0x8000, pool at
0x10000), and one connected AF_UNIX stream socket whose bytes are kicks (each kick is one 0x01
byte; any byte received means "rescan"). The table writer is the socket server: it writes the
table before ``listen()``, then accepts one peer. The client retries ``connect()`` (100 tries,
sleeping i*10 ms) as OpenAMP does.

`RegionTransport` places the same structures in one object of an ampipc `Region`. The object
starts with a control block: a magic word the creator stores last (so an attacher never sees a
half-written table), the layout, and one doorbell per direction. `FutexDoorbell` is the "direct"
doorbell: the ringer increments the peer's counter word and wakes its futex only if the peer
announced it is sleeping; the waiter first spins on its counter word for a bounded, adaptive time
(in C, without the GIL: the peer's answer often comes within microseconds, and a futex sleep and
wake cost more than that), then announces, re-checks, and sleeps for a bounded slice. The spin
adapts to how fast the peer answers: a wait that ended within the configured spin (caught by the
spin, or by a sleep that a longer spin would have avoided) restores the full spin; a wait that took
longer halves the next spin, down to a sixteenth of the configured one, so an idle peer costs
little CPU. (Only halving would never recover once the spin fell below the peer's answer time.)
Only the ringer increments a counter; only its owner writes its ``waiting`` word. Each side
records its liveness token (pid, start time) in the control block at open, so the other side can
tell that it died (the link then closes with `PeerDied`).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from .. import _native, _vring
from ..errors import IpcError, ObjectNotFound, ProtocolError, Timeout
from ..hw import Core
from ..liveness import current_token, is_alive
from ..region import Region, check_segment_owner
from ._window import ModelledWindow, Window
from ._wire import (
    DEMO_POOL_OFFSET,
    DEMO_POOL_SIZE,
    DEMO_RSC_OFFSET,
    DEMO_SHM_NAME,
    DEMO_SHM_SIZE,
    DEMO_SOCKET_PATH,
    DEMO_VRING0_DA,
    DEMO_VRING1_DA,
    DEMO_VRING_ALIGN,
    DEMO_VRING_NUM,
    FEATURE_NS,
    KICK_BYTE,
    RPMSG_BUFFER_SIZE,
    align_up,
    vring_size,
)
from .rpmsg_virtio import Role
from .rsc_table import VringEntry, build_resource_table, parse_resource_table

__all__ = [
    "Doorbell",
    "FutexDoorbell",
    "HsemDoorbell",
    "PeerWatch",
    "LinuxTransport",
    "RegionTransport",
    "SocketDoorbell",
    "Transport",
    "region_object_size",
]


class Doorbell(Protocol):
    """One notification line in each direction between the two sides."""

    def ring(self) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def close(self) -> None: ...
    @property
    def peer_gone(self) -> bool: ...


class Transport(Protocol):
    role: Role
    rsc_offset: int
    pool_offset: int
    pool_size: int
    buffer_size: int
    writes_table: bool
    description: str

    @property
    def window(self) -> Window: ...
    @property
    def doorbell(self) -> Doorbell: ...
    def open(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


def demo_table(
    vring0_da: int = DEMO_VRING0_DA, vring1_da: int = DEMO_VRING1_DA, num: int = DEMO_VRING_NUM, align: int = DEMO_VRING_ALIGN
) -> bytes:
    return build_resource_table(VringEntry(vring0_da, align, num, 1), VringEntry(vring1_da, align, num, 2), dfeatures=FEATURE_NS)


# ---- OpenAMP's Linux transport ------------------------------------------------------------------


_MAX_KICK_READS = 16


class SocketDoorbell:
    """Kicks as bytes on a connected AF_UNIX stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._gone = False
        self._lock = threading.Lock()

    @property
    def peer_gone(self) -> bool:
        return self._gone

    def ring(self) -> None:
        if self._gone:
            return
        try:
            with self._lock:
                self._sock.send(KICK_BYTE, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            pass  # the peer has plenty of unread kicks already: one more adds nothing
        except OSError:
            self._gone = True

    def wait(self, timeout: float) -> bool:
        if self._gone:
            return False
        try:
            ready = self._poller.poll(max(0, int(timeout * 1000)))
        except InterruptedError:
            return False
        if not ready:
            return False
        got = False
        # Bounded: a peer that writes kicks as fast as they are read must not keep the caller
        # here; whatever is left is the next call's kick.
        for _ in range(_MAX_KICK_READS):
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                self._gone = True
                break
            if not data:
                self._gone = True
                break
            got = True
            if len(data) < 4096:
                break
        return got or self._gone

    def close(self) -> None:
        try:
            self._poller.unregister(self._sock.fileno())
        except (KeyError, ValueError):
            pass
        self._sock.close()


def _shm_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


_D = TypeVar("_D", bound=Doorbell)


class _Opened(Generic[_D]):
    """The window on the shared memory and the doorbell a transport holds while it is open."""

    _window: Window | None
    _doorbell: _D | None

    @property
    def window(self) -> Window:
        if self._window is None:
            raise IpcError("the transport is not open")
        return self._window

    @property
    def doorbell(self) -> _D:
        if self._doorbell is None:
            raise IpcError("the transport is not open")
        return self._doorbell


class LinuxTransport(_Opened[SocketDoorbell]):
    """OpenAMP's Linux two-process transport (shm file + UNIX-socket kicks), either role.

    ``server`` defaults to True for the device, as in OpenAMP's echo demo (the server writes the
    resource table). The server removes the socket file when it closes; ``unlink_shm`` (default:
    the server does) removes the shared-memory file too.
    """

    def __init__(
        self,
        role: Role | str,
        *,
        shm_name: str = DEMO_SHM_NAME,
        shm_size: int = DEMO_SHM_SIZE,
        socket_path: str = DEMO_SOCKET_PATH,
        server: bool | None = None,
        connect_attempts: int = 100,
        unlink_shm: bool | None = None,
    ) -> None:
        self.role = Role(role)
        self.shm_name = _shm_name(shm_name)
        self.shm_size = shm_size
        self.socket_path = socket_path
        self.server = self.role is Role.DEVICE if server is None else server
        self.writes_table = self.server
        self.connect_attempts = connect_attempts
        self.unlink_shm = self.server if unlink_shm is None else unlink_shm
        self.rsc_offset = DEMO_RSC_OFFSET
        self.pool_offset = DEMO_POOL_OFFSET
        self.pool_size = DEMO_POOL_SIZE
        self.buffer_size = RPMSG_BUFFER_SIZE
        need = max(DEMO_POOL_OFFSET + DEMO_POOL_SIZE, DEMO_VRING1_DA + vring_size(DEMO_VRING_NUM, DEMO_VRING_ALIGN))
        if shm_size < need:
            raise ValueError(f"the shared memory must be at least {need:#x} bytes for OpenAMP's layout")
        self.description = f"openamp-linux shm={self.shm_name} socket={socket_path}"
        self._mapping: _native.Mapping | None = None
        self._view: memoryview | None = None
        self._window: Window | None = None
        self._doorbell: SocketDoorbell | None = None
        self._listener: socket.socket | None = None
        self._closing = threading.Event()
        self._bound_socket = False

    def _map(self) -> None:
        """The server creates the file anew (never reusing one it did not create); the client opens it.

        Either side refuses a file owned by another user (`ForeignRegion`): it may have been planted.
        """
        if self.server:
            try:
                fd = _native.shm_open(self.shm_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                # left by an earlier run: replace it if it is ours, refuse it otherwise
                old = _native.shm_open(self.shm_name, os.O_RDONLY)
                try:
                    check_segment_owner(self.shm_name, old, close_on_error=False)
                finally:
                    os.close(old)
                _native.shm_unlink(self.shm_name)
                fd = _native.shm_open(self.shm_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, self.shm_size)
            except BaseException:
                os.close(fd)
                raise
        else:
            fd = _native.shm_open(self.shm_name, os.O_RDWR)
            check_segment_owner(self.shm_name, fd)
            size = os.fstat(fd).st_size
            if size < self.shm_size:
                os.close(fd)
                raise ProtocolError(f"{self.shm_name} has {size} bytes, fewer than the {self.shm_size} expected")
        try:
            self._mapping = _native.Mapping(fd, self.shm_size)
        finally:
            os.close(fd)
        self._view = memoryview(self._mapping)
        self._window = Window(self._view, self._mapping, 0)

    def open(self, timeout: float | None = None) -> None:
        """Server: write the table, listen, accept one peer. Client: connect (retrying), map."""
        try:
            if self.server:
                self._map()
                self.window.write(self.rsc_offset, demo_table())
                self._doorbell = SocketDoorbell(self._accept(timeout))
            else:
                sock = self._connect(timeout)
                self._map()
                self._doorbell = SocketDoorbell(sock)
        except BaseException:
            self.close()
            raise

    def _accept(self, timeout: float | None) -> socket.socket:
        try:
            st = os.lstat(self.socket_path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener = listener
        listener.bind(self.socket_path)
        self._bound_socket = True
        listener.listen(1)
        listener.settimeout(0.1)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closing.is_set():
                raise IpcError("the transport was closed while waiting for a peer")
            try:
                conn, _ = listener.accept()
                break
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no peer connected to {self.socket_path} within {timeout} s") from None
        listener.close()
        self._listener = None
        return conn

    def _connect(self, timeout: float | None) -> socket.socket:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: OSError | None = None
        for attempt in range(max(1, self.connect_attempts)):
            if self._closing.is_set():
                raise IpcError("the transport was closed while connecting")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                last = exc
            pause = attempt * 0.01
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pause = min(pause, left)
            time.sleep(pause)
        raise Timeout(f"could not connect to {self.socket_path}: {last}")

    def close(self) -> None:
        self._closing.set()
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._bound_socket:
            self._bound_socket = False
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        if self._window is not None:
            self._window.release()
            self._window = None
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None
            if self.unlink_shm:
                try:
                    _native.shm_unlink(self.shm_name)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise


# ---- ampipc Region transport --------------------------------------------------------------------

_RT_MAGIC = 0x50524D41  # "AMRP"
_RT_VERSION = 2  # 2: the endpoint tables after the pool
_OFF_MAGIC = 0x00
_OFF_VERSION = 0x04
_OFF_RSC = 0x08
_OFF_POOL = 0x0C
_OFF_POOL_SIZE = 0x10
_OFF_BUFFER_SIZE = 0x14
_OFF_DRIVER_PID = 0x18  # u32 pid, then u64 start time at 0x20: written by the driver at open
_OFF_DRIVER_START = 0x20
_OFF_DEVICE_PID = 0x28  # u32 pid, then u64 start time at 0x30: written by the device at open
_OFF_DEVICE_START = 0x30
_OFF_ENDPOINTS = 0x38  # u32: offset of the two endpoint tables (driver's, then device's)
_OFF_BELL_TO_DRIVER = 0x40  # u32 counter, then u32 waiting
_OFF_BELL_TO_DEVICE = 0x80
_RSC_AT = 0x100
_HEADER_FIELDS = {_OFF_MAGIC: "magic", _OFF_VERSION: "version", _OFF_RSC: "resource table offset", _OFF_POOL: "pool offset",
                  _OFF_POOL_SIZE: "pool size", _OFF_BUFFER_SIZE: "buffer size", _OFF_ENDPOINTS: "endpoint tables offset"}


# Each side's table of its endpoints, for tools that watch a running system (``ampipc top``); the
# protocol never reads them. Written only by its side, whole, between two stores of its sequence
# word (odd while it writes): u32 sequence, u32 count, then ENDPOINT_SLOTS entries of name[32]
# (UTF-8, NUL padded), u32 local address, u32 remote address (0xFFFFFFFF: not bound).
ENDPOINT_SLOTS = 32
_ENDPOINT_ENTRY = struct.Struct("<32sII")
_ENDPOINT_TABLE_SIZE = align_up(8 + ENDPOINT_SLOTS * _ENDPOINT_ENTRY.size, 64)


def _region_layout(num: int, align: int, buffer_size: int) -> tuple[int, int, int, int, int]:
    """(vring0 da, vring1 da, pool offset, pool size, object size) for a region object."""
    size = vring_size(num, align)
    step = max(align, 64)
    vring0 = align_up(_RSC_AT + 0x58, step)
    vring1 = align_up(vring0 + size, step)
    pool = align_up(vring1 + size, 64)
    pool_size = 2 * num * buffer_size
    return vring0, vring1, pool, pool_size, pool + pool_size + 2 * _ENDPOINT_TABLE_SIZE


def field_name(mapping: _native.Mapping, offset: int, size: int, delta: int) -> str:
    """The part of a region rpmsg object at byte `delta` (the coherency checker's reports).

    The resource table is parsed from memory, bounds-checked; a corrupt one names the byte only.
    """
    if delta < _RSC_AT:
        return _HEADER_FIELDS.get(delta - delta % 4, f"header+{delta}")
    with memoryview(mapping) as whole, whole[offset : offset + size] as view:
        window = Window(view)
        try:
            table = parse_resource_table(window, window.u32(_OFF_RSC))
            pool, pool_size, buffer_size = window.u32(_OFF_POOL), window.u32(_OFF_POOL_SIZE), window.u32(_OFF_BUFFER_SIZE)
        except ProtocolError:
            return f"+{delta}"
        finally:
            window.release()
    if table.offset <= delta < table.offset + table.size:
        return f"resource table+{delta - table.offset}"
    for i, vring in enumerate(table.vrings):
        g = vring.geometry
        if g.desc_offset <= delta < g.avail_offset:
            return f"vring{i}.desc[{(delta - g.desc_offset) // 16}]"
        if g.avail_offset <= delta < g.used_offset:
            rel = delta - g.avail_offset
            return f"vring{i}.avail." + ("flags" if rel < 2 else "idx" if rel < 4 else f"ring[{(rel - 4) // 2}]")
        if g.used_offset <= delta < g.da + g.size:
            rel = delta - g.used_offset
            return f"vring{i}.used." + ("flags" if rel < 2 else "idx" if rel < 4 else f"ring[{(rel - 4) // 8}]")
    if buffer_size and pool <= delta < pool + pool_size:
        return f"buffer[{(delta - pool) // buffer_size}]+{(delta - pool) % buffer_size}"
    return f"+{delta}"


def read_endpoint_tables(view: memoryview) -> dict[str, list[tuple[str, int, int]]]:
    """The endpoints each side of a region rpmsg object published: {"driver": [(name, addr, dest)], "device": [...]}.

    `view` is the whole object. A table caught mid-write, or out of range, reads as empty.
    """
    out: dict[str, list[tuple[str, int, int]]] = {"driver": [], "device": []}
    if len(view) < 0x40:
        return out
    base = int.from_bytes(view[_OFF_ENDPOINTS : _OFF_ENDPOINTS + 4], "little")
    if base == 0 or base + 2 * _ENDPOINT_TABLE_SIZE > len(view):
        return out
    for k, side in enumerate(("driver", "device")):
        table = base + k * _ENDPOINT_TABLE_SIZE
        seq = int.from_bytes(view[table : table + 4], "little")
        count = min(int.from_bytes(view[table + 4 : table + 8], "little"), ENDPOINT_SLOTS)
        entries = []
        for i in range(count):
            raw, addr, dest = _ENDPOINT_ENTRY.unpack_from(view, table + 8 + i * _ENDPOINT_ENTRY.size)
            entries.append((raw.split(b"\0", 1)[0].decode("utf-8", "replace"), addr, dest))
        if seq % 2 == 0 and int.from_bytes(view[table : table + 4], "little") == seq:
            out[side] = entries
    return out


def region_object_size(num: int = 64, align: int = 16, buffer_size: int = RPMSG_BUFFER_SIZE) -> int:
    """Bytes the region object of one link takes."""
    return _region_layout(num, align, buffer_size)[4]


class PeerWatch:
    """Whether the peer still runs: ``peer_token`` returns its liveness token ((0, 0) until it
    has attached), checked at most every half second; once gone, always gone."""

    def __init__(self, peer_token: Callable[[], tuple[int, int]] | None = None) -> None:
        self._peer_token = peer_token
        self._gone = False
        self._next_check = 0.0

    @property
    def gone(self) -> bool:
        if self._gone or self._peer_token is None:
            return self._gone
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 0.5
            pid, start = self._peer_token()
            if pid and not is_alive(pid, start):
                self._gone = True
        return self._gone


class FutexDoorbell:
    """The direct doorbell: a counter word per direction, futex wake only when the peer sleeps.

    ``spin`` (seconds, default: the buffers' default spin) bounds the spin before the sleep; 0 sleeps at once.
    The work is `ampipc._vring.Doorbell` (GIL released while it spins and sleeps): ``ring`` and
    ``wait(timeout)`` are its methods, bound here so a call costs one C call. The spin adapts: the
    whole spin again after an answer that came within it, half the last one (never below spin/16)
    after one that did not.
    """

    def __init__(
        self,
        mapping: _native.Mapping,
        ring_offset: int,
        wait_offset: int,
        peer_token: Callable[[], tuple[int, int]] | None = None,
        *,
        spin: float | None = None,
    ) -> None:
        spin = _native.get_default_spin() if spin is None else spin
        if not 0.0 <= spin <= 1.0:
            raise ValueError("spin must be between 0 and 1 second")
        # the peer's counter (and +4: its waiting flag); ours likewise
        self._bell = _vring.Doorbell(mapping, ring_offset, wait_offset, spin)
        self._watch = PeerWatch(peer_token)
        self.ring: Callable[[], None] = self._bell.ring
        self.wait: Callable[[float], bool] = self._bell.wait

    @property
    def native(self) -> _vring.Doorbell:
        """The C doorbell, which a C transmit ring rings itself (`RpmsgVirtio.try_send`'s ``bell``)."""
        return self._bell

    @property
    def spin(self) -> float:
        return self._bell.spin

    @property
    def spins_won(self) -> int:
        """Waits that the spin ended (no futex sleep)."""
        return self._bell.spins_won

    @property
    def peer_gone(self) -> bool:
        return self._watch.gone

    def close(self) -> None:
        pass


class HsemDoorbell:
    """A doorbell over the virtual hardware semaphores, as OpenAMP's mailbox works on the STM32H7.

    Ringing pulses the semaphore the peer core listens on (1-step take, then release: the HSEM
    "free" event); the peer's HSEM interrupt, run by its core's dispatcher, calls the free
    callback, which re-activates the notification (the HAL's IRQ handler disabled it) and sets
    the event the waiter sleeps on. While the doorbell is open it owns this core's HSEM free
    callback in this process. A lost interrupt costs latency only: the RPMsg I/O loop rescans
    the rings after every bounded wait.
    """

    def __init__(self, core: Core, ring_sem: int, listen_sem: int, peer_watch: PeerWatch | None = None) -> None:
        if ring_sem == listen_sem:
            raise ValueError("the two directions need two semaphores")
        self._core = core
        self._ring_sem = ring_sem
        self._listen_mask = 1 << listen_sem
        self._event = threading.Event()
        self._watch = peer_watch or PeerWatch()
        hsem = core.hsem
        hsem.set_free_callback(self._on_free)
        hsem.enable_irq()
        hsem.activate_notification(self._listen_mask)
        core.start()

    def _on_free(self, mask: int) -> None:
        if mask & self._listen_mask:
            self._core.hsem.activate_notification(self._listen_mask)
            self._event.set()

    @property
    def peer_gone(self) -> bool:
        return self._watch.gone

    def ring(self) -> None:
        hsem = self._core.hsem
        if hsem.fast_take(self._ring_sem):
            hsem.release(self._ring_sem, 0)

    def wait(self, timeout: float) -> bool:
        if not self._event.is_set() and (timeout <= 0 or not self._event.wait(timeout)):
            return False
        # Cleared before the caller rescans: a ring that lands after this is seen next time.
        self._event.clear()
        return True

    def close(self) -> None:
        hsem = self._core.hsem
        hsem.deactivate_notification(self._listen_mask)
        hsem.set_free_callback(None)


class RegionTransport(_Opened[Doorbell]):
    """RPMsg in one object of an ampipc `Region`, with a pluggable doorbell.

    The ``create`` side allocates the object (kind ``"rpmsg"``) and writes the resource table;
    the other side waits up to its open timeout for the object to appear. ``doorbell_factory``,
    if given, replaces the futex doorbell: it is called as ``factory(transport)`` after the
    object exists and must return a `Doorbell` (e.g. one built on HSEM interrupt lines).
    ``spin`` is the futex doorbell's spin (seconds; None: the buffers' default).
    """

    def __init__(
        self,
        region: Region,
        name: str,
        role: Role | str,
        *,
        create: bool,
        num: int = 64,
        align: int = 16,
        buffer_size: int = RPMSG_BUFFER_SIZE,
        doorbell_factory: Callable[[RegionTransport], Doorbell] | None = None,
        spin: float | None = None,
    ) -> None:
        self.region = region
        self.spin = spin
        self.name = name
        self.role = Role(role)
        self.create = create
        self.writes_table = create
        self.num = num
        self.align = align
        self.buffer_size = buffer_size
        self.rsc_offset = _RSC_AT
        self.pool_offset = 0
        self.pool_size = 0
        self.object_offset = 0
        self.description = f"region {region.name}/{name}"
        self._doorbell_factory = doorbell_factory
        self.peer_watch = PeerWatch()  # replaced by one watching the peer once the link is open
        self._view: memoryview | None = None
        self._window: Window | None = None
        self._host_window: Window | None = None
        self._doorbell: Doorbell | None = None

    @property
    def mapping(self) -> _native.Mapping:
        return self.region.mapping

    def open(self, timeout: float | None = None) -> None:
        region = self.region
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.create:
            vring0, vring1, pool, pool_size, size = _region_layout(self.num, self.align, self.buffer_size)
            off = region.allocate(self.name, "rpmsg", size)
        else:
            while True:
                try:
                    entry = region.lookup(self.name, "rpmsg")
                    off, size = entry.offset, entry.size
                    break
                except ObjectNotFound:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise Timeout(f"no rpmsg object {self.name!r} appeared within {timeout} s") from None
                    time.sleep(0.005)
        m = self.mapping
        self.object_offset = off
        whole: memoryview = region.view
        self._view = whole[off : off + size]
        whole.release()  # the slice keeps the buffer export alive on its own
        # a core of a chip region sees the link through its memory model (the CM7's cache)
        self._window = (ModelledWindow if m.model_core is not None else Window)(self._view, m, off)
        self._host_window = Window(self._view, m, off)  # the endpoint tables are for tools: host memory
        w = self._window
        if self.create:
            w.put_u32(_OFF_VERSION, _RT_VERSION)
            w.put_u32(_OFF_RSC, _RSC_AT)
            w.put_u32(_OFF_POOL, pool)
            w.put_u32(_OFF_POOL_SIZE, pool_size)
            w.put_u32(_OFF_BUFFER_SIZE, self.buffer_size)
            self._host_window.put_u32(_OFF_ENDPOINTS, pool + pool_size)  # for tools: host memory
            w.write(_RSC_AT, demo_table(vring0, vring1, self.num, self.align))
            w.store_word(_OFF_MAGIC, _RT_MAGIC)
        else:
            while w.load_word(_OFF_MAGIC) != _RT_MAGIC:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"rpmsg object {self.name!r} was not initialised within {timeout} s")
                time.sleep(0.002)
            if w.u32(_OFF_VERSION) != _RT_VERSION:
                raise ProtocolError(f"rpmsg object {self.name!r} has layout version {w.u32(_OFF_VERSION)}")
        self.rsc_offset = w.u32(_OFF_RSC)
        self.pool_offset = w.u32(_OFF_POOL)
        self.pool_size = w.u32(_OFF_POOL_SIZE)
        self.buffer_size = w.u32(_OFF_BUFFER_SIZE)
        if not w.contains(self.pool_offset, self.pool_size) or not w.contains(self.rsc_offset, 0x58):
            raise ProtocolError(f"rpmsg object {self.name!r} has an invalid layout")
        pid, start = current_token()
        my_pid, my_start, peer_pid, peer_start = (
            (_OFF_DRIVER_PID, _OFF_DRIVER_START, _OFF_DEVICE_PID, _OFF_DEVICE_START)
            if self.role is Role.DRIVER
            else (_OFF_DEVICE_PID, _OFF_DEVICE_START, _OFF_DRIVER_PID, _OFF_DRIVER_START)
        )
        m.store_u64(off + my_start, start)
        m.store_u32(off + my_pid, pid)

        def peer_token() -> tuple[int, int]:
            # pid is stored after the start time: a reader that sees the pid sees its start time
            peer = m.load_u32(off + peer_pid)
            return peer, m.load_u64(off + peer_start)

        self.peer_watch = PeerWatch(peer_token)
        if self._doorbell_factory is not None:
            self._doorbell = self._doorbell_factory(self)
        else:
            mine, theirs = (
                (_OFF_BELL_TO_DRIVER, _OFF_BELL_TO_DEVICE) if self.role is Role.DRIVER else (_OFF_BELL_TO_DEVICE, _OFF_BELL_TO_DRIVER)
            )
            self._doorbell = FutexDoorbell(m, off + theirs, off + mine, peer_token, spin=self.spin)

    def publish_endpoints(self, endpoints: Sequence[tuple[str, int, int]]) -> None:
        """Write this side's endpoint table (name, local address, remote address) for watching tools."""
        w = self._host_window
        if w is None:
            return
        base = w.u32(_OFF_ENDPOINTS)
        if base == 0 or not w.contains(base, 2 * _ENDPOINT_TABLE_SIZE):
            return
        table = base + (0 if self.role is Role.DRIVER else _ENDPOINT_TABLE_SIZE)
        seq = w.load_word(table)
        writing = seq + 1 if seq % 2 == 0 else seq
        w.store_word(table, writing)  # odd: being written
        rows = list(endpoints)[:ENDPOINT_SLOTS]
        body = bytearray(4 + len(rows) * _ENDPOINT_ENTRY.size)
        body[0:4] = len(rows).to_bytes(4, "little")
        for i, (name, addr, dest) in enumerate(rows):
            _ENDPOINT_ENTRY.pack_into(body, 4 + i * _ENDPOINT_ENTRY.size, name.encode()[:31], addr & 0xFFFFFFFF,
                                      dest & 0xFFFFFFFF)
        w.write(table + 4, bytes(body))
        w.store_word(table, writing + 1)  # even again: complete

    def close(self) -> None:
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        for window in (self._window, self._host_window):
            if window is not None:
                window.release()
        self._window = self._host_window = None
        if self._view is not None:
            self._view.release()
            self._view = None
