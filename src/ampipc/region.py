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
so a blocked reader can tell that the other side has gone (an *observer*, ``attach(name,
observe=True)``, takes none: tools that look at a running system do not keep a dead peer looking
alive). The creator unlinks the segment on close; a region whose creator (and every other
registered process) died is *stale* and `Region.create(..., replace_stale=True)` replaces it,
whatever its layout version; a live one is never touched. A `Region` that is dropped without
`close()` gives its slot back when it is collected or at interpreter exit, and a creator that exits
without closing still unlinks its segment then.

Trust: a segment is attached only if it belongs to the current user (or to a uid in
``trusted_uids``); another user's segment under the expected name may be planted, so it is refused
with `ForeignRegion`. Creating never reuses an existing segment (``O_EXCL``).

Chip regions (opt-in): ``create(..., chip=, memory=)`` places the region in one memory of a dual-core
part (`ampipc.hw.memory`): region byte 0 is at the memory's base address. The creator writes the
chip memory record as the first object *before* the region's magic, so an attacher sees a chip
region completely or not at all. Its objects start at the first 64-byte boundary after the process
table rather than the next page (nothing depends on page alignment: the directory checks 64-byte
alignment only), so a region fits the 4 KiB backup SRAM with small capacities. ``core=`` names the
core the handle acts as: a core that cannot reach the memory is refused with `MemoryUnreachable`
before it takes a process slot. hw.memory is imported only for chip regions.

Version-independent header words: bytes 0-31 (magic, version, size, creator pid, creator start)
keep their meaning in every layout version, so a stale region of another version is recognised.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _layout as L
from . import _native
from .errors import (
    CorruptRegion,
    ForeignRegion,
    IncompatibleRegion,
    ObjectExists,
    ObjectNotFound,
    RegionClosed,
    RegionExists,
    RegionFull,
    RegionNotFound,
    Timeout,
)
from .liveness import current_token, is_alive

if TYPE_CHECKING:
    from .hw.memory import ChipPlacement

__all__ = ["Region", "ObjectEntry", "ProcessEntry", "validate_name", "check_segment_owner"]

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


class _Lifetime:
    """What must be undone for one `Region` handle, kept apart from it so a finalizer can do it.

    Only the process that made the handle undoes it: a forked child that drops an inherited handle
    must neither free the parent's process slot nor unlink the parent's segment.
    """

    def __init__(self, name: str, mapping: _native.Mapping, creator: bool) -> None:
        self.name = name
        self.mapping = mapping
        self.creator = creator
        self.slot: int | None = None
        self.unlinked = False
        self.pid = os.getpid()

    def release(self) -> None:
        if os.getpid() != self.pid:
            return
        if self.slot is not None and not self.mapping.closed:
            try:
                self.mapping.cas_u32(self.slot + 4, L.PROC_STATE_ATTACHED, L.PROC_STATE_FREE)
            except Exception:  # noqa: BLE001 - a faulted or corrupt mapping: the slot is lost with it
                pass
        self.slot = None
        self.mapping.close()
        if self.creator:
            self.unlink()

    def unlink(self) -> None:
        if self.unlinked:
            return
        self.unlinked = True
        try:
            _native.shm_unlink("/" + self.name)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def check_segment_owner(name: str, fd: int, trusted_uids: Collection[int] = (), *, close_on_error: bool = True) -> None:
    """Raise `ForeignRegion` if the open segment `fd` belongs to another user not in `trusted_uids`.

    The descriptor is closed when it raises (unless ``close_on_error=False``).
    """
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid != me and st.st_uid not in trusted_uids:
        if close_on_error:
            os.close(fd)
        raise ForeignRegion(
            f"region {name!r} belongs to uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):#o}), not to this user "
            f"(uid {me}): another user may have planted it; pass trusted_uids={{{st.st_uid}}} to share it deliberately",
            owner_uid=st.st_uid, mode=stat.S_IMODE(st.st_mode),
        )


def _open_segment(name: str, flags: int, mode: int = 0o600) -> int:
    try:
        return _native.shm_open("/" + name, flags, mode)
    except PermissionError as e:
        raise ForeignRegion(f"region {name!r} may not be opened by this user: {e.strerror}") from None


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
        self._closed = False
        self._objects: weakref.WeakSet[Any] = weakref.WeakSet()
        self._placement: ChipPlacement | None = None  # set by create/attach for a chip region
        self._core: str | None = None
        self._life = _Lifetime(name, self.mapping, creator)
        # Runs once: at close(), when the object is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, self._life.release)

    @property
    def _slot(self) -> int | None:
        return self._life.slot

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
        chip: str | None = None,
        memory: str | None = None,
        core: str | None = None,
        cache_model: bool = False,
    ) -> Region:
        """Create a region of `size` bytes (header included). Raises `RegionExists` if the name is taken.

        With ``replace_stale=True`` a region whose creator and attached processes are all dead is
        unlinked and created anew, whatever its layout version (its creator is dead: the segment is
        garbage). A segment of another user under that name raises `ForeignRegion`; an existing
        segment is never reused.

        Chip regions (`ampipc.hw.memory`): ``memory`` (e.g. ``"SRAM4"``) of ``chip`` (default
        ``"stm32h745"``) places the region there; `size` is at most the memory's size. ``core``
        (e.g. ``"CM7"``) is the core this process acts as: refused with `MemoryUnreachable` if it
        cannot reach the memory. ``cache_model=True`` turns the CM7's D-cache model on for the
        region (`ampipc.hw.cache`). Wrong chip, memory or core names raise `ValueError`.
        """
        validate_name(name)
        if directory_capacity < 1 or process_capacity < 1:
            raise ValueError("directory_capacity and process_capacity must be at least 1")
        plan = None
        if chip is not None or memory is not None or core is not None or cache_model:
            from .hw import memory as chip_memory  # only chip regions load the chip table

            plan = chip_memory._plan(chip, memory, core, cache_model, size)
        dir_offset = L.REGION_HEADER_SIZE
        proc_offset = dir_offset + directory_capacity * L.DIR_ENTRY_SIZE
        # a plain region keeps its objects page aligned as it always did; a chip memory may be
        # as small as 4 KiB, and nothing needs more than the directory's 64-byte alignment
        objects_offset = L.align_up(proc_offset + process_capacity * L.PROC_SLOT_SIZE,
                                    4096 if plan is None else L.OBJECT_ALIGN)
        smallest = objects_offset + L.OBJECT_ALIGN
        if plan is not None:
            smallest += L.align_up(chip_memory.record_size_for(size))
        if size < smallest or size > 1 << 40:
            where = "" if plan is None else (
                f" for a region in {plan.memory.name} with directory_capacity={directory_capacity} and "
                f"process_capacity={process_capacity} (its chip memory record included)"
            )
            raise ValueError(f"size must be between {smallest} bytes and 1 TiB{where}, not {size}")
        try:
            fd = _open_segment(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
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
                fd = _open_segment(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
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
        if plan is None:
            m.store_u32(L.OFF_MAGIC, L.REGION_MAGIC)  # last: the header is complete
            region._register()
            return region
        try:
            chip_memory._write_record(region, plan)  # before the magic: attachers see it or no region
            region._placement = chip_memory.placement_of(region)  # read back: the writer agrees with the reader
            m.store_u32(L.OFF_MAGIC, L.REGION_MAGIC)
            region._register()
            region._enter_chip(plan.core)
        except BaseException:
            region.close()
            raise
        return region

    @classmethod
    def attach(
        cls, name: str, *, observe: bool = False, trusted_uids: Collection[int] = (), core: str | None = None
    ) -> Region:
        """Attach to an existing region. Raises `RegionNotFound`, `IncompatibleRegion` or `ForeignRegion`.

        ``observe=True`` attaches without registering in the process table (for tools that watch a
        running system: they never count as a peer that may take a role). ``trusted_uids``: other
        users whose segments may be attached (by default only the current user's are).

        ``core`` (a chip region only): the core this process acts as. One that reaches the region's
        memory only through the MDMA, or not at all, is refused with `MemoryUnreachable` (nothing
        is left taken); an unknown core name, or a core for a plain region, raises `ValueError`.
        A chip region's record is checked field by field (`CorruptRegion`).
        """
        validate_name(name)
        try:
            fd = _open_segment(name, os.O_RDWR)
        except FileNotFoundError:
            raise RegionNotFound(f"no region named {name!r}") from None
        check_segment_owner(name, fd, trusted_uids)
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
            if region._has_chip_record():
                from .hw import memory as chip_memory  # only chip regions load the chip table

                placement = chip_memory.placement_of(region)
                region._placement = placement
                if placement is not None and core is not None:
                    core = placement.chip_info.core(core)
                    chip_memory.check_access(placement.chip, placement.memory, core)
            elif core is not None:
                raise ValueError(f"region {name!r} is not placed in a chip memory: core={core!r} needs a chip region")
            if not observe:
                region._register()
            region._enter_chip(core)
        except BaseException:
            region.close()
            raise
        return region

    @classmethod
    def _is_stale(cls, name: str) -> bool:
        """True if the segment is an ampipc region (of any layout version) whose processes are all dead.

        Raises `ForeignRegion` for another user's segment: it is never replaced nor reused.
        """
        try:
            fd = _open_segment(name, os.O_RDONLY)
        except FileNotFoundError:
            return False
        check_segment_owner(name, fd)
        try:
            head = os.pread(fd, 32, 0)
        finally:
            os.close(fd)
        if len(head) < 32 or int.from_bytes(head[0:4], "little") != L.REGION_MAGIC:
            return False
        creator_pid = int.from_bytes(head[16:20], "little")
        creator_start = int.from_bytes(head[24:32], "little")
        if is_alive(creator_pid, creator_start):
            return False
        if int.from_bytes(head[4:8], "little") != L.LAYOUT_VERSION:
            return True  # its process table is of a layout this version cannot read; the creator is dead
        try:
            region = cls.attach(name, observe=True)
        except (IncompatibleRegion, CorruptRegion, RegionNotFound):
            return False
        try:
            me = current_token()
            return not any(p.alive for p in region.processes() if (p.pid, p.start_time) != me)
        finally:
            region.close()

    # ---- chip placement (ampipc.hw.memory) ----------------------------------------------------

    def _has_chip_record(self) -> bool:
        """True if the directory names a chip memory record (read without loading hw.memory, and
        without checking the entries' offsets: a plain region attaches as it always did)."""
        dir_off, dir_cap, _, _, _ = self._geometry()
        count = min(self.mapping.load_u32(L.OFF_DIR_COUNT), dir_cap)
        name, kind = L.CHIP_RECORD_NAME.encode().ljust(L.NAME_BYTES, b"\0"), L.KIND_CHIP_MEMORY.encode()
        assert self._view is not None
        view = self._view
        for i in range(count):
            at = dir_off + i * L.DIR_ENTRY_SIZE
            kind_at = at + L.NAME_BYTES
            if view[at: kind_at] == name or view[kind_at: kind_at + len(kind) + 1] == kind + b"\0":
                return True
        return False

    def _enter_chip(self, core: str | None) -> None:
        """Act as `core` in a chip region: refuse buffer operations while the memory's domain
        sleeps (D1, D2; D3 stays powered) and access the region through the core's memory model."""
        placement = self._placement
        if placement is None:
            return
        if placement.domain in (1, 2):
            self.mapping.set_power_word(placement.record_offset + L.CHIP_OFF_DOMAIN_POWER + 4 * placement.domain,
                                        placement.domain_name, placement.memory)
        if core is not None:
            from .hw.cache import attach_model

            attach_model(self, core)
            self._core = core

    @property
    def placement(self) -> ChipPlacement | None:
        """Where the region lies on the chip (None for a plain region)."""
        return self._placement

    @property
    def core(self) -> str | None:
        """The core this handle acts as (``"CM7"``, ``"CM4"``), None if none was given."""
        return self._core

    def chip_address(self, offset: int) -> int:
        """The chip address of region byte `offset` (base address + offset).

        Raises `ValueError` for an offset outside the region, or for a region not placed in a chip memory.
        """
        placement = self._placement
        if placement is None:
            raise ValueError(f"region {self.name!r} is not placed in a chip memory (create it with chip= and memory=)"
                             ": it has no chip addresses")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < self.size:
            raise ValueError(f"offset {offset!r} is outside region {self.name!r} (0 to {self.size - 1})")
        return placement.base_address + offset

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
                self._life.slot = slot
                self._forget_previous_holder(i)
                return
        # A full table only costs liveness information; the region itself stays usable.
        self._life.slot = None

    # ---- which processes attached a buffer (the peers that may take its roles) ----------------

    @property
    def slot_index(self) -> int | None:
        """This handle's index in the process table (None for an observer or a full table)."""
        slot = self._life.slot
        if slot is None:
            return None
        return (slot - self._geometry()[2]) // L.PROC_SLOT_SIZE

    def _ring_offsets(self) -> Iterator[int]:
        for entry in self._entries():
            if entry.kind in (L.KIND_MESSAGE_BUFFER, L.KIND_STREAM_BUFFER) and entry.size >= L.RING_HEADER_SIZE:
                yield entry.offset

    def _update_attachers(self, ring_offset: int, bit: int, present: bool) -> None:
        m = self.mapping
        word = ring_offset + L.RING_OFF_ATTACHERS
        value = m.load_u64(word)
        while True:
            new = value | bit if present else value & ~bit
            if new == value:
                return
            found = m.cas_u64(word, value, new)
            if found == value:
                return
            value = found

    def _forget_previous_holder(self, index: int) -> None:
        """A process taking slot `index` is not the dead one that held it: clear its attacher bits."""
        if index < L.ATTACHER_SLOTS:
            for offset in self._ring_offsets():
                self._update_attachers(offset, 1 << index, False)

    def _mark_attached(self, ring_offset: int) -> None:
        """Record that this process attached the buffer at `ring_offset` (observers record nothing)."""
        index = self.slot_index
        if index is not None and index < L.ATTACHER_SLOTS:
            self._update_attachers(ring_offset, 1 << index, True)

    def attachers(self, ring_offset: int) -> list[ProcessEntry] | None:
        """The processes that attached the buffer at `ring_offset`; None if that cannot be told (slots beyond 64)."""
        _, _, proc_off, proc_cap, _ = self._geometry()
        if proc_cap > L.ATTACHER_SLOTS and any(p.pid for p in self._slots(range(L.ATTACHER_SLOTS, proc_cap), proc_off)):
            return None
        mask = self.mapping.load_u64(ring_offset + L.RING_OFF_ATTACHERS)
        return self._slots((i for i in range(min(proc_cap, L.ATTACHER_SLOTS)) if mask >> i & 1), proc_off)

    def _slots(self, indexes: Iterator[int] | range, proc_off: int) -> list[ProcessEntry]:
        m = self.mapping
        out = []
        for i in indexes:
            slot = proc_off + i * L.PROC_SLOT_SIZE
            if m.load_u32(slot + 4) == L.PROC_STATE_ATTACHED:
                pid, start = m.load_u32(slot), m.load_u64(slot + 8)
                if pid:
                    out.append(ProcessEntry(pid, start, is_alive(pid, start)))
        return out

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
                raise Timeout(f"region {self.name!r}: the directory lock is held by pid {holder}")
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
        if self.mapping.faulted:
            raise CorruptRegion(
                f"region {self.name!r}: the segment was shrunk by another process while mapped here", object=self.name,
                field="size", value=self.size,
            )

    def _remember(self, obj: Any) -> None:
        """An object attached through this handle: `close()` closes its sides too (telling the peers)."""
        self._objects.add(obj)

    def _forget(self, obj: Any) -> None:
        self._objects.discard(obj)

    def close(self) -> None:
        """Detach; the creator also unlinks the segment. Never fails because objects are still alive.

        The sides of the buffers attached through this handle are closed first, so their peers drain
        what is left and then get `PeerClosed`.
        """
        if self._closed:
            return
        for obj in list(self._objects):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - closing must not fail; a faulted mapping has no peer to tell
                pass
        self._closed = True
        if self._view is not None:
            self._view.release()
            self._view = None
        self._finalizer()

    def unlink(self) -> None:
        """Remove the name; processes still attached keep their mapping."""
        self._life.unlink()

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.size} bytes"
        return f"<Region {self.name!r} {state}>"
