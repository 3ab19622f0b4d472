"""Region: a named shared-memory segment that describes itself.

Theory of operation
-------------------
The segment starts with a header, a directory of named objects and a table of attached processes
(layouts in `ampipc._layout`). The creator writes the whole header and stores the magic last, so an
attacher that sees the magic sees a complete header. Objects are appended by a bump allocator under
a lock word that holds the allocating process's pid; a lock whose holder died is taken over.
A directory entry is written completely before the directory count (a release store) covers it, so
readers never see half an entry. Entries are never removed: objects live as long as the region.

Every value read from the header, the directory and the process table is checked against the
segment's real size before use; a bad one raises `CorruptRegion` or `IncompatibleRegion`.

Each process that creates or attaches takes a slot in the process table with its liveness token,
so a blocked reader can tell that the other side has gone. The creator unlinks the segment on
close; a region whose creator (and every other registered process) died is *stale* and
`Region.create(..., replace_stale=True)` replaces it; a live one is never touched.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _layout as L
from . import _native
from .errors import (
    CorruptRegion,
    IncompatibleRegion,
    ObjectExists,
    ObjectNotFound,
    RegionClosed,
    RegionExists,
    RegionFull,
    RegionNotFound,
)
from .liveness import current_token, is_alive

__all__ = ["Region", "ObjectEntry", "ProcessEntry", "validate_name"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,31}$")
_ATTACH_WAIT = 2.0  # seconds an attacher waits for a creator that is still initialising


def validate_name(name: str, what: str = "region") -> str:
    """Check a portable name: 1 to 31 characters of letters, digits, '_', '.', '-' (so no '/')."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("."):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1 to 31 characters among letters, digits, '_', '.' and '-',"
            " not starting with '.'"
        )
    return name


@dataclass(frozen=True)
class ObjectEntry:
    """One entry of a region's directory."""

    name: str
    kind: str
    offset: int
    size: int


@dataclass(frozen=True)
class ProcessEntry:
    """A process registered in a region, and whether it still runs."""

    pid: int
    start_time: int
    alive: bool


class Region:
    """A named shared-memory region with a directory of named objects.

    Use `Region.create` or `Region.attach`, not the constructor.
    """

    mapping: _native.Mapping

    def __init__(self, name: str, fd: int, size: int, *, creator: bool) -> None:
        self.name = name
        self.size = size
        self.is_creator = creator
        try:
            self.mapping = _native.Mapping(fd, size)
        finally:
            os.close(fd)
        self._view: memoryview | None = memoryview(self.mapping)
        self._slot: int | None = None
        self._closed = False
        self._unlinked = False

    # ---- creation and attachment ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        *,
        mode: int = 0o600,
        replace_stale: bool = False,
        directory_capacity: int = L.DEFAULT_DIR_CAPACITY,
        process_capacity: int = L.DEFAULT_PROC_CAPACITY,
    ) -> Region:
        """Create a region of `size` bytes (header included). Raises `RegionExists` if the name is taken.

        With ``replace_stale=True`` a region whose creator and attached processes are all dead is
        unlinked and created anew.
        """
        validate_name(name)
        if directory_capacity < 1 or process_capacity < 1:
            raise ValueError("directory_capacity and process_capacity must be at least 1")
        dir_offset = L.REGION_HEADER_SIZE
        proc_offset = dir_offset + directory_capacity * L.DIR_ENTRY_SIZE
        objects_offset = L.align_up(proc_offset + process_capacity * L.PROC_SLOT_SIZE, 4096)
        if size < objects_offset + L.OBJECT_ALIGN or size > 1 << 40:
            raise ValueError(f"size must be between {objects_offset + L.OBJECT_ALIGN} bytes and 1 TiB, not {size}")
        try:
            fd = _native.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            stale = cls._is_stale(name)
            if not (replace_stale and stale):
                hint = " (it is stale: pass replace_stale=True to replace it)" if stale else ""
                raise RegionExists(f"region {name!r} exists already{hint}") from None
            try:
                _native.shm_unlink("/" + name)
            except FileNotFoundError:
                pass
            try:
                fd = _native.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                raise RegionExists(f"region {name!r} was created by another process meanwhile") from None
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            _native.shm_unlink("/" + name)
            raise
        region = cls(name, fd, size, creator=True)
        m = region.mapping
        pid, start = current_token()
        m.store_u32(L.OFF_VERSION, L.LAYOUT_VERSION)
        m.store_u64(L.OFF_SIZE, size)
        m.store_u32(L.OFF_CREATOR_PID, pid)
        m.store_u64(L.OFF_CREATOR_START, start)
        m.store_u32(L.OFF_DIR_CAPACITY, directory_capacity)
        m.store_u32(L.OFF_PROC_CAPACITY, process_capacity)
        m.store_u64(L.OFF_CURSOR, objects_offset)
        m.store_u32(L.OFF_DIR_OFFSET, dir_offset)
        m.store_u32(L.OFF_PROC_OFFSET, proc_offset)
        m.store_u32(L.OFF_OBJECTS_OFFSET, objects_offset)
        m.store_u32(L.OFF_MAGIC, L.REGION_MAGIC)  # last: the header is complete
        region._register()
        return region

    @classmethod
    def attach(cls, name: str) -> Region:
        """Attach to an existing region. Raises `RegionNotFound` or `IncompatibleRegion`."""
        validate_name(name)
        try:
            fd = _native.shm_open("/" + name, os.O_RDWR)
        except FileNotFoundError:
            raise RegionNotFound(f"no region named {name!r}") from None
        deadline = time.monotonic() + _ATTACH_WAIT
        while True:
            size = os.fstat(fd).st_size
            if size >= L.REGION_HEADER_SIZE:
                head = os.pread(fd, L.REGION_HEADER_SIZE, 0)
                magic, version = int.from_bytes(head[0:4], "little"), int.from_bytes(head[4:8], "little")
                if magic == L.REGION_MAGIC:
                    break
                if magic != 0 or time.monotonic() > deadline:
                    os.close(fd)
                    raise IncompatibleRegion(
                        f"{name!r} is not an ampipc region (magic {magic:#010x}, expected {L.REGION_MAGIC:#010x})"
                    )
            elif time.monotonic() > deadline:
                os.close(fd)
                raise IncompatibleRegion(f"{name!r} is not an ampipc region ({size} bytes, no header)")
            time.sleep(0.005)  # the creator is still initialising the header
        if version != L.LAYOUT_VERSION:
            os.close(fd)
            raise IncompatibleRegion(
                f"region {name!r} has layout version {version}; this ampipc reads version {L.LAYOUT_VERSION}"
            )
        declared = int.from_bytes(head[8:16], "little")
        if declared != size:
            os.close(fd)
            raise CorruptRegion(
                f"region {name!r} declares {declared} bytes but the segment has {size}",
                object=name, field="size", value=declared,
            )
        region = cls(name, fd, size, creator=False)
        try:
            region._check_header()
            region._register()
        except BaseException:
            region.close()
            raise
        return region

    @classmethod
    def _is_stale(cls, name: str) -> bool:
        """True if the segment is an ampipc region whose registered processes are all dead."""
        try:
            region = cls.attach(name)
        except (IncompatibleRegion, CorruptRegion, RegionNotFound):
            return False
        try:
            m = region.mapping
            if is_alive(m.load_u32(L.OFF_CREATOR_PID), m.load_u64(L.OFF_CREATOR_START)):
                return False
            me = os.getpid()
            return not any(p.alive for p in region.processes() if p.pid != me)
        finally:
            region.close()

    # ---- header checks ------------------------------------------------------------------------

    def _corrupt(self, field: str, value: int, why: str) -> CorruptRegion:
        return CorruptRegion(
            f"region {self.name!r} is corrupt: {field} = {value} {why}", object=self.name, field=field, value=value
        )

    def _geometry(self) -> tuple[int, int, int, int, int]:
        """(dir offset, dir capacity, proc offset, proc capacity, objects offset), all checked."""
        m = self.mapping
        dir_off, dir_cap = m.load_u32(L.OFF_DIR_OFFSET), m.load_u32(L.OFF_DIR_CAPACITY)
        proc_off, proc_cap = m.load_u32(L.OFF_PROC_OFFSET), m.load_u32(L.OFF_PROC_CAPACITY)
        obj_off = m.load_u32(L.OFF_OBJECTS_OFFSET)
        if dir_off < L.REGION_HEADER_SIZE or dir_off + dir_cap * L.DIR_ENTRY_SIZE > self.size:
            raise self._corrupt("directory", dir_off, f"(capacity {dir_cap}) lies outside the region")
        if proc_off < dir_off + dir_cap * L.DIR_ENTRY_SIZE or proc_off + proc_cap * L.PROC_SLOT_SIZE > self.size:
            raise self._corrupt("process table", proc_off, f"(capacity {proc_cap}) lies outside the region")
        if obj_off < proc_off + proc_cap * L.PROC_SLOT_SIZE or obj_off > self.size:
            raise self._corrupt("objects offset", obj_off, "lies outside the region")
        return dir_off, dir_cap, proc_off, proc_cap, obj_off

    def _check_header(self) -> None:
        self._geometry()
        count = self.mapping.load_u32(L.OFF_DIR_COUNT)
        if count > self.mapping.load_u32(L.OFF_DIR_CAPACITY):
            raise self._corrupt("directory count", count, "exceeds the directory capacity")

    # ---- process table ------------------------------------------------------------------------

    def _register(self) -> None:
        _, _, proc_off, proc_cap, _ = self._geometry()
        pid, start = current_token()
        m = self.mapping
        for i in range(proc_cap):
            slot = proc_off + i * L.PROC_SLOT_SIZE
            state = m.load_u32(slot + 4)
            if state == L.PROC_STATE_ATTACHED:
                if is_alive(m.load_u32(slot), m.load_u64(slot + 8)):
                    continue
                # a dead process's slot is reclaimed by whoever wins this swap, exactly once
                if m.cas_u32(slot + 4, state, L.PROC_STATE_FREE) != state:
                    continue
            if m.cas_u32(slot + 4, L.PROC_STATE_FREE, L.PROC_STATE_ATTACHED) == L.PROC_STATE_FREE:
                m.store_u64(slot + 8, start)
                m.store_u32(slot, pid)
                self._slot = slot
                return
        # A full table only costs liveness information; the region itself stays usable.
        self._slot = None

    def processes(self) -> list[ProcessEntry]:
        """The processes attached to this region, with whether each still runs."""
        self._check_open()
        _, _, proc_off, proc_cap, _ = self._geometry()
        m = self.mapping
        out = []
        for i in range(proc_cap):
            slot = proc_off + i * L.PROC_SLOT_SIZE
            if m.load_u32(slot + 4) == L.PROC_STATE_ATTACHED:
                pid, start = m.load_u32(slot), m.load_u64(slot + 8)
                if pid:
                    out.append(ProcessEntry(pid, start, is_alive(pid, start)))
        return out

    def others_alive(self) -> bool:
        """True if any process other than this one is attached and alive."""
        me = os.getpid()
        return any(p.alive for p in self.processes() if p.pid != me)

    @property
    def creator_pid(self) -> int:
        self._check_open()
        return self.mapping.load_u32(L.OFF_CREATOR_PID)

    @property
    def creator_alive(self) -> bool:
        """False once the process that created the region has died."""
        self._check_open()
        return is_alive(self.mapping.load_u32(L.OFF_CREATOR_PID), self.mapping.load_u64(L.OFF_CREATOR_START))

    # ---- directory ----------------------------------------------------------------------------

    def _lock(self) -> None:
        m = self.mapping
        pid = os.getpid()
        deadline = time.monotonic() + 10.0
        while True:
            holder = m.cas_u32(L.OFF_LOCK, 0, pid)
            if holder == 0:
                return
            if holder != pid and not is_alive(holder):
                m.cas_u32(L.OFF_LOCK, holder, 0)  # the holder died mid-allocation
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"region {self.name!r}: the directory lock is held by pid {holder}")
            time.sleep(0.0005)

    def _unlock(self) -> None:
        self.mapping.store_u32(L.OFF_LOCK, 0)

    def _read_entry(self, dir_off: int, index: int, obj_off: int) -> ObjectEntry:
        assert self._view is not None
        raw_name, raw_kind, offset, size = L.DIR_ENTRY.unpack_from(self._view, dir_off + index * L.DIR_ENTRY_SIZE)
        name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        kind = raw_kind.split(b"\0", 1)[0].decode("ascii", "replace")
        if offset < obj_off or offset % L.OBJECT_ALIGN or size > self.size or offset + size > self.size:
            raise self._corrupt(f"directory entry {index} ({name!r}) offset", offset, f"(size {size}) is out of range")
        return ObjectEntry(name, kind, offset, size)

    def _entries(self) -> Iterator[ObjectEntry]:
        dir_off, dir_cap, _, _, obj_off = self._geometry()
        count = self.mapping.load_u32(L.OFF_DIR_COUNT)
        if count > dir_cap:
            raise self._corrupt("directory count", count, "exceeds the directory capacity")
        for i in range(count):
            yield self._read_entry(dir_off, i, obj_off)

    def objects(self) -> list[ObjectEntry]:
        """Every object in the directory, in creation order."""
        self._check_open()
        return list(self._entries())

    def lookup(self, name: str, kind: str | None = None) -> ObjectEntry:
        """The entry named `name` (of `kind`, if given). Raises `ObjectNotFound`."""
        self._check_open()
        for entry in self._entries():
            if entry.name == name:
                if kind is not None and entry.kind != kind:
                    raise ObjectNotFound(f"object {name!r} in region {self.name!r} is a {entry.kind}, not a {kind}")
                return entry
        raise ObjectNotFound(f"no object named {name!r} in region {self.name!r}")

    def allocate(self, name: str, kind: str, size: int) -> int:
        """Reserve a zeroed, 64-byte-aligned object and list it in the directory; returns its offset."""
        self._check_open()
        if not isinstance(name, str) or not name or len(name.encode()) >= L.NAME_BYTES or "\0" in name:
            raise ValueError(f"invalid object name {name!r}: 1 to {L.NAME_BYTES - 1} UTF-8 bytes, no NUL")
        if not kind or len(kind.encode("ascii")) >= L.KIND_BYTES:
            raise ValueError(f"invalid object kind {kind!r}: 1 to {L.KIND_BYTES - 1} ASCII characters")
        if size <= 0:
            raise ValueError("object size must be positive")
        self._lock()
        try:
            dir_off, dir_cap, _, _, obj_off = self._geometry()
            for entry in self._entries():
                if entry.name == name:
                    raise ObjectExists(f"an object named {name!r} ({entry.kind}) is in region {self.name!r} already")
            count = self.mapping.load_u32(L.OFF_DIR_COUNT)
            if count >= dir_cap:
                raise RegionFull(f"region {self.name!r}: the directory's {dir_cap} entries are all used")
            cursor = self.mapping.load_u64(L.OFF_CURSOR)
            if cursor < obj_off or cursor % L.OBJECT_ALIGN or cursor > self.size:
                raise self._corrupt("allocation cursor", cursor, "is out of range")
            end = cursor + L.align_up(size)
            if end > self.size:
                raise RegionFull(
                    f"region {self.name!r} has {self.size - cursor} bytes free; {name!r} needs {L.align_up(size)}"
                )
            assert self._view is not None
            self._view[cursor : cursor + size] = bytes(size)
            L.DIR_ENTRY.pack_into(
                self._view, dir_off + count * L.DIR_ENTRY_SIZE, name.encode(), kind.encode("ascii"), cursor, size
            )
            self.mapping.store_u64(L.OFF_CURSOR, end)
            self.mapping.store_u32(L.OFF_DIR_COUNT, count + 1)  # publishes the complete entry
            return cursor
        finally:
            self._unlock()

    @property
    def free_bytes(self) -> int:
        self._check_open()
        return self.size - self.mapping.load_u64(L.OFF_CURSOR)

    # ---- views and lifetime -------------------------------------------------------------------

    @property
    def view(self) -> memoryview:
        """A writable memoryview of the whole mapping (for tools and tests)."""
        self._check_open()
        return memoryview(self.mapping)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RegionClosed(f"region {self.name!r} is closed")

    def close(self) -> None:
        """Detach; the creator also unlinks the segment. Never fails because objects are still alive."""
        if self._closed:
            return
        if self._slot is not None and not self.mapping.closed:
            try:
                self.mapping.cas_u32(self._slot + 4, L.PROC_STATE_ATTACHED, L.PROC_STATE_FREE)
            except Exception:
                pass
        self._closed = True
        if self._view is not None:
            self._view.release()
            self._view = None
        self.mapping.close()
        if self.is_creator:
            self.unlink()

    def unlink(self) -> None:
        """Remove the name; processes still attached keep their mapping."""
        if self._unlinked:
            return
        self._unlinked = True
        try:
            _native.shm_unlink("/" + self.name)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.size} bytes"
        return f"<Region {self.name!r} {state}>"
