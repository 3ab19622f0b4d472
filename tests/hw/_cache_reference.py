"""A pure-Python reference model of the CM7 D-cache and the coherency checker (the C core's dcache.c).

Theory of operation
-------------------
`RefChipMemory` is what the C model promises, written as plainly as possible so that a test can
drive both with the same calls and compare every observable after every step:

* ``memory``: the bytes of a window of the region (region offsets ``[lo, hi)``, whole lines), as
  the bus holds them. Only the CM7's write-backs, its non-cached or write-through writes and the
  other side's writes (`other_write`) change it.
* the cache: ``sets`` x ``ways`` ways of 32-byte lines indexed by chip address
  (``(base + offset) // 32 % sets``). A miss takes the lowest free way of the set; a full set
  evicts the way its round-robin pointer names and only then advances the pointer. Each line
  holds ``data``, a byte ``dirty`` mask and ``fill``: memory's bytes when the line was last in
  step with memory (filled, written back, or written through).
* the policy of an offset: the last MPU range (in table order) covering it, else the default.
  The policy of a line chunk is that of its first byte: MPU ranges are whole lines (an MPU region
  is a power of two >= 32 bytes aligned to its size), so this is exact for them.
* the reports: a table in order of first sighting, one entry per distinct (kind, core, line)
  holding the first occurrence's offset and length and the occurrence count; ``capacity``
  entries, an occurrence that finds no entry and no free one is ``dropped`` (counted per
  occurrence, as the C does); ``total`` counts every occurrence.
* counters: hits and misses per cacheable line chunk of a CM7 access, write-backs of dirty lines,
  evictions of a full set's victim.

Maintenance by address is CMSIS's: the lines ``[off, off + n)`` touches; ``n == 0`` touches none
(``SCB_*DCache_by_Addr`` does nothing for ``dsize <= 0``). Whole-cache maintenance is ``n < 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CM4",
    "CM7",
    "DMA",
    "LINE",
    "NON_CACHEABLE",
    "PARTIAL_INVALIDATE",
    "DIRTY_READ",
    "LOST_WRITE",
    "STALE_READ",
    "WRITE_BACK",
    "WRITE_BACK_NO_WA",
    "WRITE_THROUGH",
    "RefChipMemory",
    "RefLine",
    "RefReport",
]

LINE = 32

NON_CACHEABLE, WRITE_BACK, WRITE_BACK_NO_WA, WRITE_THROUGH = 0, 1, 2, 3
CM7, CM4, DMA = 1, 2, 3
STALE_READ, DIRTY_READ, LOST_WRITE, PARTIAL_INVALIDATE = 1, 2, 3, 4
CLEAN, INVALIDATE, CLEAN_INVALIDATE = 1, 2, 3


@dataclass
class RefLine:
    offset: int
    data: bytearray
    fill: bytearray
    dirty: int = 0


@dataclass
class RefReport:
    kind: int
    core: int
    offset: int
    length: int
    occurrences: int = 1

    @property
    def line(self) -> int:
        return self.offset // LINE


WORD_LOAD, WORD_OR, WORD_XOR, WORD_AND, WORD_CAS = range(5)


def word_apply(op: int, old: int, a: int, b: int) -> int:
    if op == WORD_OR:
        return old | a
    if op == WORD_XOR:
        return old ^ a
    if op == WORD_AND:
        return old & a
    if op == WORD_CAS:
        return b if old == a else old
    return old


def _mask(start: int, n: int) -> int:
    return ((1 << n) - 1) << start


def _chunks(off: int, n: int) -> list[tuple[int, int, int]]:
    """(line offset, start in the line, bytes) for each line [off, off + n) touches."""
    out = []
    at = off
    while at < off + n:
        line_off = at - at % LINE
        k = min(LINE - (at - line_off), off + n - at)
        out.append((line_off, at - line_off, k))
        at += k
    return out


@dataclass
class RefChipMemory:
    lo: int
    hi: int
    base_address: int
    sets: int
    ways: int
    capacity: int
    default_policy: int = WRITE_BACK
    memory: bytearray = field(init=False)
    cache: list[list[RefLine | None]] = field(init=False)
    victim: list[int] = field(init=False)
    mpu: list[tuple[int, int, int]] = field(default_factory=list)
    reports: list[RefReport] = field(default_factory=list)
    dropped: int = 0
    total: int = 0
    hits: int = 0
    misses: int = 0
    writebacks: int = 0
    evictions: int = 0

    def __post_init__(self) -> None:
        assert self.lo % LINE == 0 and self.hi % LINE == 0 and self.base_address % LINE == 0
        self.memory = bytearray(self.hi - self.lo)
        self.cache = [[None] * self.ways for _ in range(self.sets)]
        self.victim = [0] * self.sets

    # ---- helpers -----------------------------------------------------------------------------

    def mem(self, off: int, n: int) -> bytes:
        return bytes(self.memory[off - self.lo : off - self.lo + n])

    def _set_mem(self, off: int, data: bytes) -> None:
        assert self.lo <= off and off + len(data) <= self.hi, "outside the modelled window"
        self.memory[off - self.lo : off - self.lo + len(data)] = data

    def _set_of(self, line_off: int) -> int:
        return (self.base_address + line_off) // LINE % self.sets

    def policy(self, off: int) -> int:
        policy = self.default_policy
        for lo, hi, p in self.mpu:
            if lo <= off < hi:
                policy = p
        return policy

    def find(self, line_off: int) -> RefLine | None:
        for way in self.cache[self._set_of(line_off)]:
            if way is not None and way.offset == line_off:
                return way
        return None

    def lines(self) -> list[RefLine]:
        return sorted((w for s in self.cache for w in s if w is not None), key=lambda w: w.offset)

    def dirty_map(self) -> dict[int, int]:
        """Line offset -> dirty byte mask, for every line held dirty."""
        return {w.offset: w.dirty for w in self.lines() if w.dirty}

    def report_counts(self) -> dict[tuple[int, int, int], int]:
        return {(r.kind, r.core, r.line): r.occurrences for r in self.reports}

    def report(self, kind: int, core: int, off: int, n: int) -> None:
        self.total += 1
        for r in self.reports:
            if (r.kind, r.core, r.line) == (kind, core, off // LINE):
                r.occurrences += 1
                return
        if len(self.reports) < self.capacity:
            self.reports.append(RefReport(kind, core, off, n))
        else:
            self.dropped += 1

    def _writeback(self, line: RefLine) -> None:
        if not line.dirty:
            return
        lost = None
        for i in range(LINE):
            if line.dirty >> i & 1:
                at = line.offset + i
                if lost is None and self.mem(at, 1)[0] != line.fill[i]:
                    lost = at  # the other side wrote this byte since the fill: its value is overwritten
                self._set_mem(at, bytes([line.data[i]]))
                line.fill[i] = line.data[i]
        if lost is not None:
            self.report(LOST_WRITE, CM7, lost, 1)
        line.dirty = 0
        self.writebacks += 1

    def _drop(self, line: RefLine) -> None:
        s = self.cache[self._set_of(line.offset)]
        s[s.index(line)] = None

    def _allocate(self, line_off: int) -> RefLine:
        set_index = self._set_of(line_off)
        ways = self.cache[set_index]
        free = [w for w in range(self.ways) if ways[w] is None]
        if free:
            way = free[0]
        else:
            way = self.victim[set_index]
            self.victim[set_index] = (way + 1) % self.ways
            old = ways[way]
            assert old is not None
            self._writeback(old)
            self.evictions += 1
        snapshot = bytearray(self.mem(line_off, LINE))
        line = RefLine(line_off, bytearray(snapshot), snapshot)
        ways[way] = line
        return line

    # ---- the bus masters ---------------------------------------------------------------------

    def cm7_read(self, off: int, n: int) -> bytes:
        out = bytearray()
        for line_off, start, k in _chunks(off, n):
            at = line_off + start
            if self.policy(at) == NON_CACHEABLE:
                out += self.mem(at, k)
                continue
            line = self.find(line_off)
            if line is not None:
                self.hits += 1
                if self.mem(at, k) != bytes(line.fill[start : start + k]):
                    self.report(STALE_READ, CM7, at, k)
            else:
                self.misses += 1
                line = self._allocate(line_off)
            out += line.data[start : start + k]
        return bytes(out)

    def cm7_write(self, off: int, data: bytes) -> None:
        pos = 0
        for line_off, start, k in _chunks(off, len(data)):
            at = line_off + start
            piece = data[pos : pos + k]
            pos += k
            policy = self.policy(at)
            line = None if policy == NON_CACHEABLE else self.find(line_off)
            if policy == NON_CACHEABLE:
                self._set_mem(at, piece)
            elif policy == WRITE_THROUGH or (line is None and policy == WRITE_BACK_NO_WA):
                if line is not None:  # a write-through hit keeps the line in step with memory
                    line.data[start : start + k] = piece
                    line.fill[start : start + k] = piece
                    self.hits += 1
                else:
                    self.misses += 1
                self._set_mem(at, piece)
            else:
                if line is not None:
                    self.hits += 1
                else:
                    self.misses += 1
                    line = self._allocate(line_off)
                line.data[start : start + k] = piece
                line.dirty |= _mask(start, k)

    def cm7_word(self, off: int, op: int, a: int, b: int) -> int:
        """A strategy's shared word, read-modified-written by the CM7 (Mapping.data_word_u32)."""
        if self.policy(off) == NON_CACHEABLE:  # LDREX/STREX on memory
            old = int.from_bytes(self.mem(off, 4), "little")
            self._set_mem(off, word_apply(op, old, a, b).to_bytes(4, "little"))
            return old
        old = int.from_bytes(self.cm7_read(off, 4), "little")  # on its cached copy
        new = word_apply(op, old, a, b)
        if op != WORD_LOAD and new != old:
            self.cm7_write(off, new.to_bytes(4, "little"))
        return old

    def other_write(self, off: int, data: bytes) -> None:
        """The CM4 (or a DMA) writes memory: no cache between it and the bus."""
        self._set_mem(off, data)

    def observe(self, off: int, n: int, core: int) -> bytes:
        """A read by the CM4 or a DMA: memory as it is; bytes the CM7 holds dirty are reported."""
        for line_off, start, k in _chunks(off, n):
            line = self.find(line_off)
            if line is not None and line.dirty & _mask(start, k):
                self.report(DIRTY_READ, core, line_off + start, k)
        return self.mem(off, n)

    def maintain(self, op: int, off: int = 0, n: int = -1) -> None:
        """SCB_{Clean,Invalidate,CleanInvalidate}DCache[_by_Addr]: n < 0 is the whole cache."""
        # the C walks the cache way by way, set by set: reports come in that order
        for s in self.cache:
            for line in list(s):
                if line is None:
                    continue
                start, end = 0, LINE
                if n >= 0:
                    if n == 0 or line.offset + LINE <= off or line.offset >= off + n:
                        continue
                    start = max(off - line.offset, 0)
                    end = min(off + n - line.offset, LINE)
                if op & CLEAN:
                    self._writeback(line)
                if op == INVALIDATE and line.dirty:
                    outside = line.dirty & ~_mask(start, end - start)
                    if outside:
                        first = (outside & -outside).bit_length() - 1
                        self.report(PARTIAL_INVALIDATE, CM7, line.offset + first, 1)
                if op & INVALIDATE:
                    self._drop(line)

    def set_mpu(self, ranges: list[tuple[int, int, int]]) -> None:
        self.mpu = list(ranges)
