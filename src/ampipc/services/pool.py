"""PayloadPool: fixed-size slots in a region, loaned, committed as small descriptors, released.

Theory of operation
-------------------
A pool is one directory object of kind ``"payload_pool"``: a header, a slot table and the slots'
storage. The producer `loan`s a free slot (a writable view), fills it and `commit`s it: a small
*descriptor* (slot, generation, length, dtype, shape, directive) travels through any messaging path
(MessageBuffer, ``(Ipc, channel)``, RPMsg endpoint); the consumer `accept`s it (or `receive`s it
from the path) as a read-only view of the same memory, then `release`s it. No payload byte is copied.

Ownership lives in each slot's 64-bit *control word*, changed only by compare-and-swap::

    bits 63..32  generation  (incremented each time the slot becomes free)
    bits 31..29  state       FREE 0, LOANED 1 (producer), COMMITTED 2 (in flight), HELD 3 (consumer),
                             RECLAIMING 4 (a reclaimer frees a dead owner's slot)
    bits 28..0   owner pid   (for COMMITTED: the committer)

Transitions: FREE -> LOANED (loan), LOANED -> COMMITTED (commit), COMMITTED -> LOANED (the send
failed), COMMITTED -> HELD (accept), LOANED/HELD -> FREE with generation + 1 (cancel, release),
LOANED/HELD/RECLAIMING of a dead owner (or COMMITTED when asked: ``reclaim(in_flight=True)``) ->
RECLAIMING -> FREE with generation + 1. Because each step is one CAS from the exact word read, a
slot has exactly one owner, a dead owner's slot is reclaimed exactly once, and a descriptor of an
earlier generation can never be accepted again.

The owner's start time (its liveness token with the pid, against pid reuse) sits beside the control
word. It is written by the owner right after its CAS and cleared by the owner before any CAS that
gives the slot up, so a reclaimer never pairs one process's pid with another's start time (a 0
start time means "check the pid only"). At commit the producer also records the descriptor's length
and CRC-32 in the slot entry; `accept` refuses a descriptor whose pool nonce, slot, generation,
state, length or CRC does not match (`StaleDescriptor`, `ForgedDescriptor`).

Blocking: a loaner that finds no free slot first spins a bounded, adaptive time watching the
release sequence (halved after a spin that ended in a sleep, as the buffers' spin); then it
registers in ``waiters``, re-scans, and sleeps on the
``release sequence`` word (a futex) that every release and reclaim increments; a releaser wakes only
when someone waits. Every wait slice (0.1 s) also reclaims the slots of dead owners, so a producer
whose consumer died gets its slots back without help.

Who writes which word: control words and start times as above (any process, by CAS or as owner);
length and CRC by the committer; the counters only grow (fetch_add by whoever did the step), except
``in use``, which a freeing owner decrements *before* its freeing CAS so it never exceeds the slot
count; ``peak`` is raised by CAS; the cursor is a hint any loaner stores.

On a chip region (`ampipc.hw.memory`) the slots' bytes are firmware data and go through this core's
memory model; the control words, start times and counters are host bookkeeping and stay direct.
The CM7 with its cache model loans a private staging view (its writes live in its cache, not in
memory) that `commit` writes through the cache, and accepts a copy read through the cache (stale
lines and all); the CM4 loans and accepts the memory itself, its reads checked against the bytes
the CM7 holds dirty. Both are what the cores see on the chip: the CM7 must clean a slot before
committing it and invalidate it before reading one, unless the MPU makes the pool non-cacheable.

The steps loan / commit / accept / free run in C (`ampipc._pool`, the default ``native=True``) on
the same words with the same atomics; the Python code here is their readable reference, and the
test suite drives both against one model, on one pool, interleaved. Reclaim is Python only.

Layout (little-endian, offsets from the object's start)::

    0   u32 magic "AMPP" (stored last)   4  u32 version   8  u32 slot count   12 u32 slot size
    16  u32 nonce (random, in every descriptor)            20 u32 slot table offset
    24  u64 data offset
    64  u32 release sequence (futex)     68 u32 waiters   72 u32 in use     76 u32 peak in use
    80  u32 loan cursor (a hint)
    88  u64 loans   96 u64 commits   104 u64 accepts   112 u64 releases   120 u64 reclaims
    128 u64 loan waits
    slot table at 192: per slot 32 bytes: u64 control, u64 owner start time, u32 committed length,
    u32 descriptor CRC-32, 8 reserved
    data at a 64-byte aligned offset: slot i at data + i * slot size

Descriptor (the message; ``DESCRIPTOR_HEAD`` then shape then directive)::

    0  u32 magic "AMPL"  4 u32 pool nonce  8 u32 slot  12 u32 generation  16 u32 length
    20 u8 ndim  21 u8 flags (bit 0: typed directive)  22 u16 directive length  24 8s dtype
    32 ndim x u64 shape, then the directive bytes
"""

from __future__ import annotations

import math
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from .. import _layout as L
from .. import _native
from ..errors import CorruptRegion, IncompatibleRegion, IpcError, ProtocolError, Timeout
from ..liveness import current_token, is_alive
from ..region import Region
from . import arrays as A
from .directives import ProcessingDirective

__all__ = [
    "POOL_KIND",
    "ForgedDescriptor",
    "Loan",
    "Payload",
    "PayloadPool",
    "PoolStatistics",
    "SlotReclaimed",
    "StaleDescriptor",
]

POOL_KIND = "payload_pool"
POOL_MAGIC = 0x50504D41
POOL_VERSION = 1
DESCRIPTOR_MAGIC = 0x4C504D41
DESCRIPTOR_HEAD = struct.Struct("<IIIIIBBH8s")

OFF_MAGIC, OFF_VERSION, OFF_COUNT, OFF_SLOT_SIZE, OFF_NONCE, OFF_TABLE, OFF_DATA = 0, 4, 8, 12, 16, 20, 24
OFF_SEQ, OFF_WAITERS, OFF_IN_USE, OFF_PEAK, OFF_CURSOR = 64, 68, 72, 76, 80
OFF_LOANS, OFF_COMMITS, OFF_ACCEPTS, OFF_RELEASES, OFF_RECLAIMS, OFF_LOAN_WAITS = 88, 96, 104, 112, 120, 128
TABLE_OFFSET = 192
ENTRY_SIZE = 32
E_CONTROL, E_START, E_LENGTH, E_CRC = 0, 8, 16, 20

FREE, LOANED, COMMITTED, HELD, RECLAIMING = 0, 1, 2, 3, 4
_STATE_NAMES = ("free", "loaned", "committed", "held", "reclaiming")
_PID_BITS = 29
_PID_MASK = (1 << _PID_BITS) - 1
_LOW_MASK = 0xFFFFFFFF
_WAIT_SLICE = 0.1
_ATTACH_WAIT = 2.0
MAX_SLOTS = 1 << 16
MAX_SLOT_SIZE = 1 << 31


class StaleDescriptor(ProtocolError):
    """The descriptor names a slot of an earlier generation, or one no longer in flight."""


class ForgedDescriptor(ProtocolError):
    """The descriptor was not made by this pool's `commit` (nonce, slot, length or checksum differ)."""


class SlotReclaimed(IpcError):
    """The slot was taken from this process (reclaimed) before it could give it back."""


def _state(word: int) -> int:
    return (word >> _PID_BITS) & 0x7


def _word(generation: int, state: int, pid: int) -> int:
    return (generation & _LOW_MASK) << 32 | state << _PID_BITS | pid


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool's shared counters (every process sees the same)."""

    slots: int
    slot_size: int
    in_use: int
    peak_in_use: int
    loans: int
    commits: int
    accepts: int
    releases: int
    reclaims: int
    loan_waits: int


def field_name(mapping: _native.Mapping, offset: int, size: int, delta: int) -> str:
    """The pool field at byte `delta` of a pool object (the coherency checker's reports)."""
    data = mapping.load_u64(offset + OFF_DATA)
    slot_size = mapping.load_u32(offset + OFF_SLOT_SIZE)
    table = mapping.load_u32(offset + OFF_TABLE)
    if slot_size and data <= delta < size:
        return f"slot[{(delta - data) // slot_size}]+{(delta - data) % slot_size}"
    if table <= delta < data:
        return f"slot table[{(delta - table) // ENTRY_SIZE}]+{(delta - table) % ENTRY_SIZE}"
    return f"header+{delta}"


class Loan:
    """A slot loaned to the producer: ``view`` is writable; `array` gives a typed view of it."""

    __slots__ = ("pool", "slot", "generation", "view", "dtype", "shape", "_open")

    def __init__(self, pool: PayloadPool, slot: int, generation: int, view: memoryview) -> None:
        self.pool = pool
        self.slot = slot
        self.generation = generation
        self.view = view
        self.dtype: str | None = None
        self.shape: tuple[int, ...] | None = None
        self._open = True

    def array(self, dtype: Any, shape: int | tuple[int, ...]) -> Any:
        """A writable numpy array of `dtype`/`shape` over the slot (a cast memoryview without numpy)."""
        self._check()
        text, itemsize = A.normalise_dtype(dtype)
        dims = A.check_shape((shape,) if isinstance(shape, int) else shape)
        nbytes = math.prod(dims) * itemsize
        if nbytes > len(self.view):
            raise ValueError(f"{dims} of {text} needs {nbytes} bytes; the slot has {len(self.view)}")
        self.dtype, self.shape = text, dims
        return A.typed_view(self.view[:nbytes], text, dims)

    def commit(
        self, target: A.Target, directive: ProcessingDirective | bytes | None = None, *, length: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """`PayloadPool.commit` of this loan."""
        self.pool.commit(self, target, directive=directive, length=length, timeout=timeout)

    def cancel(self) -> None:
        """Give the slot back unused."""
        self.pool.cancel(self)

    def _check(self) -> None:
        if not self._open:
            raise IpcError(f"slot {self.slot} of pool {self.pool.name!r} was committed or cancelled already")

    def __repr__(self) -> str:
        return f"<Loan slot {self.slot} gen {self.generation} of {self.pool.name!r}{'' if self._open else ' (done)'}>"


class Payload:
    """A committed slot held by the consumer: a read-only zero-copy view, released when done."""

    __slots__ = ("pool", "slot", "generation", "length", "dtype", "shape", "directive", "data", "_released")

    def __init__(
        self, pool: PayloadPool, slot: int, generation: int, length: int, dtype: str, shape: tuple[int, ...],
        directive: ProcessingDirective | bytes | None, data: memoryview,
    ) -> None:
        self.pool = pool
        self.slot = slot
        self.generation = generation
        self.length = length
        self.dtype = dtype
        self.shape = shape
        self.directive = directive
        self.data = data
        self._released = False

    def array(self) -> Any:
        """The payload as a read-only numpy array of its dtype and shape (no copy); a cast memoryview without numpy."""
        if self._released:
            raise IpcError(f"payload in slot {self.slot} was released already")
        return A.typed_view(self.data, self.dtype, self.shape)

    def release(self) -> None:
        """Give the slot back to the pool (idempotent). Views obtained from it must not be used after."""
        if not self._released:
            self._released = True
            self.pool._release(self)

    @property
    def released(self) -> bool:
        return self._released

    def __enter__(self) -> Payload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Payload slot {self.slot} gen {self.generation}: {self.length} bytes {self.dtype} {self.shape}>"


def _drop_view(view: memoryview) -> None:
    try:
        view.release()
    except BufferError:
        pass  # an array made from it still exports it; the memory stays mapped


class PayloadPool:
    """Fixed-size slots in a region with loan / commit / accept / release. Use `create` or `attach`."""

    def __init__(self, region: Region, name: str, base: int, *, native: bool = True) -> None:
        self.region = region
        self.name = name
        self._base = base
        m = self._m = region.mapping
        self.slots = m.load_u32(base + OFF_COUNT)
        self.slot_size = m.load_u32(base + OFF_SLOT_SIZE)
        self._nonce = m.load_u32(base + OFF_NONCE)
        self._table = base + m.load_u32(base + OFF_TABLE)
        self._data = base + m.load_u64(base + OFF_DATA)
        self._view: memoryview | None = memoryview(m)
        self._lock = threading.Lock()
        self._mine: dict[int, Loan | Payload] = {}  # slots this process holds, given back at close
        self.spin = _native.get_default_spin()  # seconds a blocked loan spins before sleeping (adaptive)
        self._spin_now = self.spin
        self._closed = False
        self._core: Any = None
        if native:  # the C mirror of the ownership steps; this module's code stays the reference
            from .. import _pool

            self._core = _pool.PoolCore(m, base, self._table, self.slots, self.slot_size, self._data, self._nonce)

    # ---- creation and attachment ----------------------------------------------------------------

    @staticmethod
    def footprint(slots: int, slot_size: int) -> int:
        """Bytes of region the pool takes (header, table and storage)."""
        size = (slot_size + 63) // 64 * 64
        return (TABLE_OFFSET + slots * ENTRY_SIZE + 63) // 64 * 64 + slots * size

    @classmethod
    def create(cls, region: Region, name: str, *, slots: int, slot_size: int, native: bool = True) -> PayloadPool:
        """Allocate a pool of `slots` slots of `slot_size` bytes (rounded up to 64) in `region`.

        ``native=False`` runs the ownership steps in Python (the reference) instead of the C core.
        """
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be an int in 1..{MAX_SLOTS}, not {slots!r}")
        if isinstance(slot_size, bool) or not isinstance(slot_size, int) or not 1 <= slot_size <= MAX_SLOT_SIZE:
            raise ValueError(f"slot_size must be an int in 1..{MAX_SLOT_SIZE}, not {slot_size!r}")
        size = (slot_size + 63) // 64 * 64
        data = (TABLE_OFFSET + slots * ENTRY_SIZE + 63) // 64 * 64
        base = region.allocate(name, POOL_KIND, data + slots * size)
        m = region.mapping
        m.store_u32(base + OFF_VERSION, POOL_VERSION)
        m.store_u32(base + OFF_COUNT, slots)
        m.store_u32(base + OFF_SLOT_SIZE, size)
        m.store_u32(base + OFF_NONCE, secrets.randbits(32) | 1)
        m.store_u32(base + OFF_TABLE, TABLE_OFFSET)
        m.store_u64(base + OFF_DATA, data)
        m.store_u32(base + OFF_MAGIC, POOL_MAGIC)  # last: the pool is complete
        return cls(region, name, base, native=native)

    @classmethod
    def attach(cls, region: Region, name: str, *, native: bool = True) -> PayloadPool:
        """Attach to the pool `name` of `region`; every header value is checked against the object's size."""
        entry = region.lookup(name, POOL_KIND)
        m = region.mapping
        base = entry.offset
        if entry.size < TABLE_OFFSET:
            raise CorruptRegion(f"pool {name!r} has {entry.size} bytes, less than its header", object=name, field="size")
        deadline = time.monotonic() + _ATTACH_WAIT
        while (magic := m.load_u32(base + OFF_MAGIC)) != POOL_MAGIC:
            if magic != 0 or time.monotonic() > deadline:
                raise IncompatibleRegion(f"object {name!r} is not a payload pool (magic {magic:#010x})")
            time.sleep(0.002)
        version = m.load_u32(base + OFF_VERSION)
        if version != POOL_VERSION:
            raise IncompatibleRegion(f"pool {name!r} has layout version {version}; this ampipc reads {POOL_VERSION}")
        slots, size = m.load_u32(base + OFF_COUNT), m.load_u32(base + OFF_SLOT_SIZE)
        table, data = m.load_u32(base + OFF_TABLE), m.load_u64(base + OFF_DATA)
        ok = (
            1 <= slots <= MAX_SLOTS and 1 <= size <= MAX_SLOT_SIZE and size % 64 == 0 and table == TABLE_OFFSET
            and data % 64 == 0 and data >= table + slots * ENTRY_SIZE and data + slots * size <= entry.size
        )
        if not ok:
            raise CorruptRegion(
                f"pool {name!r} is corrupt: {slots} slots of {size} bytes, table at {table}, data at {data}"
                f" do not fit its {entry.size} bytes", object=name, field="geometry", value=slots,
            )
        return cls(region, name, base, native=native)

    # ---- helpers ----------------------------------------------------------------------------------

    def _entry(self, slot: int) -> int:
        return self._table + slot * ENTRY_SIZE

    def _slot_view(self, slot: int) -> memoryview:
        if self._closed or self._view is None:
            raise IpcError(f"pool {self.name!r} is closed")
        start = self._data + slot * self.slot_size
        return self._view[start : start + self.slot_size]

    def _cm7_cached(self) -> bool:
        """This process is the CM7 of a chip region with the cache model on (its slot bytes are cached)."""
        if self._m.model_core != L.MODEL_CORE_CM7:
            return False
        placement = self.region.placement
        return placement is not None and placement.cache_model

    def _check_power(self) -> None:
        """A core of a chip region reaches the pool only while its memory's domain is up (before any claim)."""
        if self._m.model_core is not None:
            self._m.check_power(f"pool {self.name!r}")

    def _loan_view(self, slot: int) -> memoryview:
        if self._m.model_core is not None and self._cm7_cached():
            self._slot_view(slot).release()  # the closed check
            return memoryview(bytearray(self.slot_size))  # staging: the CM7's writes sit in its cache
        return self._slot_view(slot)

    def _accepted_view(self, slot: int, length: int) -> memoryview:
        view = self._slot_view(slot)[:length].toreadonly()
        if self._m.model_core is None:
            return view
        start = self._data + slot * self.slot_size
        try:
            seen = self._m.model_read(start, length)  # CM7: through its cache; CM4: checked against its dirty bytes
        except BaseException:
            _drop_view(view)
            raise
        if self._cm7_cached():
            _drop_view(view)
            return memoryview(seen)
        return view

    def _pid(self) -> tuple[int, int]:
        token = current_token()
        if token[0] > _PID_MASK:
            raise IpcError(f"pid {token[0]} does not fit the pool's {_PID_BITS}-bit owner field")
        return token

    def _note_in_use(self) -> None:
        m, base = self._m, self._base
        now = m.fetch_add_u32(base + OFF_IN_USE, 1) + 1
        peak = m.load_u32(base + OFF_PEAK)
        while now > peak:
            found = m.cas_u32(base + OFF_PEAK, peak, now)
            if found == peak:
                break
            peak = found

    def _freed(self) -> None:
        """Counters and wake-up after a slot became free."""
        m, base = self._m, self._base
        m.fetch_add_u32(base + OFF_SEQ, 1)
        if m.load_u32(base + OFF_WAITERS):
            m.futex_wake(base + OFF_SEQ)

    def _give_up(self, slot: int, word: int, new_state: int, pid: int = 0) -> bool:
        """The owner hands the slot on: clear its start time first, then one CAS."""
        entry = self._entry(slot)
        m = self._m
        m.store_u64(entry + E_START, 0)
        gen = word >> 32
        if new_state == FREE:
            gen += 1
            # counted out while still owned, so in-use never exceeds the slot count
            m.fetch_sub_u32(self._base + OFF_IN_USE, 1)
        if m.cas_u64(entry + E_CONTROL, word, _word(gen, new_state, pid)) == word:
            return True
        if new_state == FREE:
            m.fetch_add_u32(self._base + OFF_IN_USE, 1)
        return False

    # ---- producer -------------------------------------------------------------------------------

    def try_loan(self) -> Loan | None:
        """A free slot now, or None."""
        self._check_open()
        self._check_power()
        pid, start = self._pid()
        if self._core is not None:
            got = self._core.try_loan(pid, start)
            if got is None:
                return None
            loan = Loan(self, got[0], got[1], self._loan_view(got[0]))
            self._mine[got[0]] = loan
            return loan
        m, n = self._m, self.slots
        first = m.load_u32(self._base + OFF_CURSOR) % n
        for i in range(n):
            slot = (first + i) % n
            entry = self._table + slot * ENTRY_SIZE
            word = m.load_u64(entry)
            if _state(word) != FREE:
                continue
            if m.cas_u64(entry, word, (word & ~_LOW_MASK) | LOANED << _PID_BITS | pid) != word:
                continue
            m.store_u64(entry + E_START, start)
            m.store_u32(self._base + OFF_CURSOR, (slot + 1) % n)
            m.fetch_add_u64(self._base + OFF_LOANS, 1)
            self._note_in_use()
            loan = Loan(self, slot, word >> 32, self._loan_view(slot))
            with self._lock:
                self._mine[slot] = loan
            return loan
        return None

    def loan(self, timeout: float | None = None) -> Loan:
        """A free slot, waiting up to `timeout` seconds (None: forever) for one; `Timeout` then."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        loan = self.try_loan()
        if loan is not None:
            return loan
        m, base = self._m, self._base
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._spin_now > 0:  # the releaser is often about to answer: a futex round costs more
            seq = m.load_u32(base + OFF_SEQ)
            stop = time.perf_counter() + min(self._spin_now, timeout if timeout is not None else 1.0)
            while time.perf_counter() < stop:
                if m.load_u32(base + OFF_SEQ) != seq:
                    loan = self.try_loan()
                    if loan is not None:
                        self._spin_now = min(self.spin, 2 * self._spin_now)
                        return loan
                    seq = m.load_u32(base + OFF_SEQ)
            self._spin_now = max(self.spin / 16, self._spin_now / 2)  # spinning failed: less next time
        m.fetch_add_u64(base + OFF_LOAN_WAITS, 1)
        while True:
            seq = m.load_u32(base + OFF_SEQ)
            m.fetch_add_u32(base + OFF_WAITERS, 1)
            try:
                loan = self.try_loan()  # re-check after announcing, so a release in between wakes us
                if loan is not None:
                    return loan
                left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
                if left <= 0:
                    raise Timeout(f"no free slot in pool {self.name!r} ({self.slots} slots) within {timeout} s")
                woken = m.futex_wait(base + OFF_SEQ, seq, left)
            finally:
                m.fetch_sub_u32(base + OFF_WAITERS, 1)
            if not woken:
                self.reclaim()  # a slice ran out: take back what dead processes hold

    def commit(
        self, loan: Loan, target: A.Target, directive: ProcessingDirective | bytes | None = None, *,
        length: int | None = None, timeout: float | None = None,
    ) -> bytes:
        """Publish the loaned slot through `target` as a descriptor; returns the descriptor sent.

        dtype and shape come from the last `Loan.array` call; otherwise the payload is `length` bytes
        (default: the whole slot) of ``|u1``. If the send fails the loan stays valid.
        """
        self._check_open()
        loan._check()
        if loan.pool is not self:
            raise ValueError("the loan belongs to another pool")
        if loan.dtype is not None and loan.shape is not None and length is None:
            dtype, shape = loan.dtype, loan.shape
            nbytes = math.prod(shape) * A.check_wire_dtype(dtype.encode("ascii"))[1]
        else:
            nbytes = self.slot_size if length is None else length
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes <= self.slot_size:
                raise ValueError(f"length must be an int in 0..{self.slot_size}, not {length!r}")
            dtype, shape = "|u1", (nbytes,)
        raw_directive, flags = A.encode_directive(directive)
        descriptor = DESCRIPTOR_HEAD.pack(
            DESCRIPTOR_MAGIC, self._nonce, loan.slot, loan.generation, nbytes, len(shape), flags, len(raw_directive),
            dtype.encode("ascii"),
        ) + struct.pack(f"<{len(shape)}Q", *shape) + raw_directive
        self._check_power()
        if self._m.model_core is not None and self._cm7_cached():  # the CM7's stores, into its cache
            self._m.model_write(self._data + loan.slot * self.slot_size, loan.view[:nbytes])
        pid, start = self._pid()
        core = self._core
        if core is not None:
            if not core.commit(loan.slot, loan.generation, pid, nbytes, zlib.crc32(descriptor)):
                raise SlotReclaimed(f"slot {loan.slot} of pool {self.name!r} is no longer loaned to this process")
            try:
                A.send_to(target, descriptor, timeout)
            except BaseException:
                core.uncommit(loan.slot, loan.generation, pid, start)
                raise
        else:
            m = self._m
            entry = self._entry(loan.slot)
            m.store_u32(entry + E_LENGTH, nbytes)
            m.store_u32(entry + E_CRC, zlib.crc32(descriptor))
            loaned = _word(loan.generation, LOANED, pid)
            if not self._give_up(loan.slot, loaned, COMMITTED, pid):
                raise SlotReclaimed(f"slot {loan.slot} of pool {self.name!r} is no longer loaned to this process")
            try:
                A.send_to(target, descriptor, timeout)
            except BaseException:
                committed = _word(loan.generation, COMMITTED, pid)
                if m.cas_u64(entry + E_CONTROL, committed, loaned) == committed:
                    m.store_u64(entry + E_START, start)
                raise
            m.fetch_add_u64(self._base + OFF_COMMITS, 1)
        loan._open = False
        self._mine.pop(loan.slot, None)
        _drop_view(loan.view)
        return descriptor

    def cancel(self, loan: Loan) -> None:
        """Return a loaned slot unused."""
        self._check_open()
        loan._check()
        pid, _ = self._pid()
        if self._core is not None:
            freed = self._core.free(loan.slot, loan.generation, pid, LOANED)
        else:
            freed = self._give_up(loan.slot, _word(loan.generation, LOANED, pid), FREE)
        if not freed:
            raise SlotReclaimed(f"slot {loan.slot} of pool {self.name!r} is no longer loaned to this process")
        loan._open = False
        self._mine.pop(loan.slot, None)
        _drop_view(loan.view)
        if self._core is None:
            self._m.fetch_add_u64(self._base + OFF_RELEASES, 1)
            self._freed()

    # ---- consumer -------------------------------------------------------------------------------

    def parse(self, descriptor: bytes | bytearray | memoryview) -> tuple[int, int, int, str, tuple[int, ...], Any]:
        """Decode and check a descriptor against this pool (sans-I/O): (slot, gen, length, dtype, shape, directive)."""
        view = memoryview(descriptor)
        if len(view) < DESCRIPTOR_HEAD.size:
            raise ForgedDescriptor(f"a descriptor has at least {DESCRIPTOR_HEAD.size} bytes, got {len(view)}")
        magic, nonce, slot, gen, length, ndim, flags, dlen, raw_dtype = DESCRIPTOR_HEAD.unpack_from(view)
        if magic != DESCRIPTOR_MAGIC:
            raise ForgedDescriptor(f"not a pool descriptor (magic {magic:#010x}, expected {DESCRIPTOR_MAGIC:#010x})")
        if nonce != self._nonce:
            raise ForgedDescriptor(f"the descriptor belongs to another pool than {self.name!r} (nonce {nonce:#x})")
        if slot >= self.slots:
            raise ForgedDescriptor(f"slot {slot} is out of range: pool {self.name!r} has {self.slots} slots")
        if length > self.slot_size:
            raise ForgedDescriptor(f"length {length} exceeds the slot size {self.slot_size}")
        if ndim > A.MAX_NDIM or len(view) != DESCRIPTOR_HEAD.size + 8 * ndim + dlen:
            raise ForgedDescriptor(f"descriptor of {len(view)} bytes does not match ndim {ndim} and directive {dlen}")
        try:
            dtype, itemsize = A.check_wire_dtype(bytes(raw_dtype))
        except ProtocolError as exc:
            raise ForgedDescriptor(str(exc)) from None
        shape = struct.unpack_from(f"<{ndim}Q", view, DESCRIPTOR_HEAD.size)
        if math.prod(shape) * itemsize != length:
            raise ForgedDescriptor(f"shape {shape} of {dtype} does not make {length} bytes")
        raw_directive = bytes(view[DESCRIPTOR_HEAD.size + 8 * ndim :])
        try:
            directive = A.decode_directive(raw_directive, flags)
        except ProtocolError as exc:
            raise ForgedDescriptor(f"bad directive: {exc}") from None
        return slot, gen, length, dtype, shape, directive

    def accept(self, descriptor: bytes | bytearray | memoryview) -> Payload:
        """Take the slot a received descriptor names; `StaleDescriptor` / `ForgedDescriptor` if it is not valid now."""
        self._check_open()
        self._check_power()
        if self._core is None:
            return self._accept(descriptor)
        pid, start = self._pid()
        code, slot, gen, length, ndim, flags, dlen = self._core.accept(descriptor, zlib.crc32(descriptor), pid, start)
        if code:
            # refused (nothing changed): the reference path names the reason, or takes the slot if the
            # refusal was a race that has resolved meanwhile
            return self._accept(descriptor)
        try:
            dtype, itemsize = A.check_wire_dtype(bytes(descriptor[24:32]))
            shape = struct.unpack_from(f"<{ndim}Q", descriptor, DESCRIPTOR_HEAD.size)
            if math.prod(shape) * itemsize != length:
                raise ForgedDescriptor(f"shape {shape} of {dtype} does not make {length} bytes")
            directive = A.decode_directive(bytes(descriptor[DESCRIPTOR_HEAD.size + 8 * ndim :]), flags)
        except ProtocolError as exc:
            self._core.unaccept(slot, gen, pid)
            raise exc if isinstance(exc, ForgedDescriptor) else ForgedDescriptor(str(exc)) from None
        try:
            view = self._accepted_view(slot, length)
        except BaseException:
            self._core.unaccept(slot, gen, pid)  # the slot goes back to committed: nothing is lost
            raise
        payload = Payload(self, slot, gen, length, dtype, shape, directive, view)
        self._mine[slot] = payload
        return payload

    def _accept(self, descriptor: bytes | bytearray | memoryview) -> Payload:
        slot, gen, length, dtype, shape, directive = self.parse(descriptor)
        pid, start = self._pid()
        m = self._m
        entry = self._entry(slot)
        word = m.load_u64(entry + E_CONTROL)
        state = _state(word)
        if word >> 32 != gen:
            raise StaleDescriptor(
                f"descriptor of slot {slot} has generation {gen}; the slot is at generation {word >> 32}"
                " (a descriptor is good once: this one was used or its slot reclaimed)"
            )
        if state != COMMITTED:
            raise StaleDescriptor(f"slot {slot} of pool {self.name!r} is {_STATE_NAMES[state] if state < 5 else state},"
                                  " not committed: the descriptor was accepted already")
        if m.load_u32(entry + E_LENGTH) != length or m.load_u32(entry + E_CRC) != zlib.crc32(descriptor):
            raise ForgedDescriptor(f"descriptor of slot {slot} differs from the one committed")
        if m.cas_u64(entry + E_CONTROL, word, _word(gen, HELD, pid)) != word:
            raise StaleDescriptor(f"slot {slot} of pool {self.name!r} was taken meanwhile (generation {gen})")
        m.store_u64(entry + E_START, start)
        try:
            view = self._accepted_view(slot, length)
        except BaseException:
            m.store_u64(entry + E_START, 0)
            m.cas_u64(entry + E_CONTROL, _word(gen, HELD, pid), word)  # back to committed: nothing is lost
            raise
        m.fetch_add_u64(self._base + OFF_ACCEPTS, 1)
        payload = Payload(self, slot, gen, length, dtype, shape, directive, view)
        with self._lock:
            self._mine[slot] = payload
        return payload

    def receive(self, source: A.Source, timeout: float | None = None) -> Payload:
        """Receive one descriptor from `source` and `accept` it."""
        return self.accept(A.receive_from(source, timeout))

    def try_receive(self, source: A.Source) -> Payload | None:
        """`receive` without waiting: None when no descriptor is there now."""
        raw = A.try_receive_from(source)
        return None if raw is None else self.accept(raw)

    def _release(self, payload: Payload) -> None:
        pid, _ = self._pid()
        self._mine.pop(payload.slot, None)
        _drop_view(payload.data)
        if self._closed:
            raise IpcError(f"pool {self.name!r} is closed; its slots were given back at close")
        if self._core is not None:
            if not self._core.free(payload.slot, payload.generation, pid, HELD):
                raise SlotReclaimed(f"slot {payload.slot} of pool {self.name!r} was reclaimed before its release")
            return
        if not self._give_up(payload.slot, _word(payload.generation, HELD, pid), FREE):
            raise SlotReclaimed(f"slot {payload.slot} of pool {self.name!r} was reclaimed before its release")
        self._m.fetch_add_u64(self._base + OFF_RELEASES, 1)
        self._freed()

    # ---- reclaim, statistics, lifetime -----------------------------------------------------------

    def owners(self) -> list[tuple[int, str, int]]:
        """(slot, state name, owner pid) of every slot (for tools and tests)."""
        out = []
        for slot in range(self.slots):
            word = self._m.load_u64(self._entry(slot))
            state = _state(word)
            out.append((slot, _STATE_NAMES[state] if state < 5 else f"bad {state}", word & _PID_MASK))
        return out

    def reclaim(self, *, in_flight: bool = False) -> int:
        """Free the slots held (loaned, received) by dead processes; returns how many this call freed.

        With ``in_flight=True`` committed slots whose descriptor nobody accepted are freed too: call
        it when the consumer is known to be gone (their descriptors then become stale).
        """
        self._check_open()
        m = self._m
        mypid, _ = self._pid()
        freed = 0
        for slot in range(self.slots):
            entry = self._entry(slot)
            word = m.load_u64(entry)
            state = _state(word)
            if state == FREE:
                continue
            owner = word & _PID_MASK
            if state == COMMITTED:
                if not in_flight:
                    continue
            elif state in (LOANED, HELD, RECLAIMING):
                if owner == mypid or is_alive(owner, m.load_u64(entry + E_START)):
                    continue
            else:
                raise CorruptRegion(f"pool {self.name!r}: slot {slot} has state {state}", object=self.name,
                                    field="slot state", value=state)
            claim = _word(word >> 32, RECLAIMING, mypid)
            if m.cas_u64(entry, word, claim) != word:
                continue  # changed meanwhile: someone else reclaimed it, or its owner moved on
            self._give_up(slot, claim, FREE)
            m.fetch_add_u64(self._base + OFF_RECLAIMS, 1)
            self._freed()
            freed += 1
        return freed

    def statistics(self) -> PoolStatistics:
        m, b = self._m, self._base
        return PoolStatistics(
            slots=self.slots, slot_size=self.slot_size, in_use=m.load_u32(b + OFF_IN_USE),
            peak_in_use=m.load_u32(b + OFF_PEAK), loans=m.load_u64(b + OFF_LOANS), commits=m.load_u64(b + OFF_COMMITS),
            accepts=m.load_u64(b + OFF_ACCEPTS), releases=m.load_u64(b + OFF_RELEASES),
            reclaims=m.load_u64(b + OFF_RECLAIMS), loan_waits=m.load_u64(b + OFF_LOAN_WAITS),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise IpcError(f"pool {self.name!r} is closed")
        if self.region.closed:
            raise IpcError(f"the region of pool {self.name!r} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Give back every slot this process still holds (loans and payloads) and detach. Idempotent."""
        if self._closed:
            return
        with self._lock:
            mine = list(self._mine.values())
        for item in mine:
            try:
                if isinstance(item, Loan):
                    if item._open:
                        self.cancel(item)
                else:
                    item.release()
            except IpcError:
                pass  # reclaimed meanwhile, or the region is gone
        self._closed = True
        if self._core is not None:
            self._core.close()
        if self._view is not None:
            _drop_view(self._view)
            self._view = None

    def __enter__(self) -> PayloadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PayloadPool {self.name!r}: {self.slots} x {self.slot_size} bytes>"
