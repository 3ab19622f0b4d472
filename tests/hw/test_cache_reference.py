"""The CM7 D-cache model (the C core's dcache.c) against the pure-Python reference (`_cache_reference`).

Theory of operation
-------------------
A `Pair` drives the C model of one region and a `RefChipMemory` of the same geometry with the
same calls (the CM7 reading and writing through its cache, the other side writing memory, the
CM4 and a DMA reading memory, CMSIS maintenance by address and of the whole cache, MPU ranges)
and `Pair.check` compares everything observable: the window's memory, the cached lines (offset,
dirty mask, data, fill), the dirty map in the chip record (every line of the region), the report
table in order (kind, core, first offset, length, occurrences; used, dropped, total; first-seen
stamps in order) and the cache counters.

A process has one CM7 cache, its geometry fixed by the first cached attach. The state machine
wants a tiny cache (256 bytes, 2 ways: 4 sets) so that evictions are frequent, so it runs in a
spawn child (`_run_machine_in_child`) and reports the falsifying example back through a queue.
The directed tests run here with the chip's real geometry (16 KiB, 4 ways), which the other
tests of this process use too.

The round-robin pointers of the child's cache outlive a hypothesis example (one region serves
them all; the pointers cannot be reset), so each example starts by measuring them (`_probe`):
with the cache empty, fill each set's ways with one line each in order (a miss takes the lowest
free way), read one more: the line that went was the victim.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing.queues
import queue as queue_module
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ampipc import Region
from ampipc import _layout as L

from ._cache_reference import (
    CM4,
    CM7,
    DIRTY_READ,
    DMA,
    LINE,
    LOST_WRITE,
    NON_CACHEABLE,
    PARTIAL_INVALIDATE,
    STALE_READ,
    WRITE_BACK,
    WRITE_BACK_NO_WA,
    WRITE_THROUGH,
    RefChipMemory,
)

BASE_ADDRESS = 0x38000000  # SRAM4
REGION_SIZE = 1 << 16
CHIP_CACHE = (16384, 4)  # the STM32H745's D-cache: what every test of this process attaches with
SMALL_CACHE = (256, 2)  # 4 sets of 2 ways: the state machine's, in its own process
MACHINE_LINES = 12  # the state machine's window: 3 lines per set of the small cache
MACHINE_CAPACITY = 4  # report entries: small enough that runs fill the table (drops are modelled too)
CLEAN, INVALIDATE, CLEAN_INVALIDATE = 1, 2, 3


class Pair:
    """One chip region accessed as the CM7 (with its cache) and the reference, driven in lockstep."""

    def __init__(self, name: str, *, cache: tuple[int, int], lines: int, capacity: int) -> None:
        self.region = Region.create(name, REGION_SIZE)
        try:
            self.capacity = capacity
            self.sets = cache[0] // (cache[1] * LINE)
            self.ways = cache[1]
            self.record = self.region.allocate(
                L.CHIP_RECORD_NAME, L.KIND_CHIP_MEMORY, L.chip_record_size(self.region.size, capacity)
            )
            header = L.CHIP_HEADER.pack(
                L.CHIP_RECORD_MAGIC, 1, b"stm32h745", b"SRAM4", BASE_ADDRESS, 65536, L.CHIP_FLAG_CACHE_MODEL, LINE,
                3, cache[0], cache[1], (self.region.size + LINE - 1) // LINE, 0, 0, 0, 0, L.CACHE_POLICY_WRITE_BACK,
            )
            self.region.view[self.record : self.record + len(header)] = header
            self.region.mapping.store_u32(self.record + L.CHIP_OFF_REPORT_CAPACITY, capacity)
            self.region.mapping.model_attach(self.record, L.MODEL_CORE_CM7, True)
            self.lo = self.region.allocate("window", "test", (lines + 1) * LINE)
            self.lo += -self.lo % LINE
            self.hi = self.lo + lines * LINE
            self.dirty_map_at = self.record + L.CHIP_OFF_REPORTS + L.CHIP_REPORT_SIZE * capacity
            self.ref = self._fresh_reference()
            self.counters_base = self.region.mapping.model_counters()
        except BaseException:
            self.region.close()
            raise

    def _fresh_reference(self, victim: list[int] | None = None) -> RefChipMemory:
        ref = RefChipMemory(self.lo, self.hi, BASE_ADDRESS, self.sets, self.ways, self.capacity, WRITE_BACK)
        if victim is not None:
            ref.victim = victim
        return ref

    def close(self) -> None:
        self.region.close()

    def reset(self) -> None:
        """Empty cache, zero window, no MPU ranges, no reports; the reference in the same state."""
        m = self.region.mapping
        m.model_set_mpu([])
        m.model_maintain(INVALIDATE)
        self.region.view[self.lo : self.hi] = bytes(self.hi - self.lo)
        victim = self._probe()
        m.model_maintain(INVALIDATE)
        self._clear_reports()
        self.ref = self._fresh_reference(victim)
        self.counters_base = m.model_counters()

    def _probe(self) -> list[int]:
        """The round-robin pointer of every set (the cache must be empty); leaves each advanced by one."""
        m = self.region.mapping
        by_set: dict[int, list[int]] = {}
        for off in range(self.lo, self.hi, LINE):
            by_set.setdefault((BASE_ADDRESS + off) // LINE % self.sets, []).append(off)
        victim = [0] * self.sets
        for s, offs in by_set.items():
            assert len(offs) > self.ways, "the window needs ways + 1 lines of every set to measure the pointers"
            for off in offs[: self.ways + 1]:
                m.model_read(off, 1)
            cached = {line[0] for line in m.model_lines()}
            gone = [w for w, off in enumerate(offs[: self.ways]) if off not in cached]
            assert len(gone) == 1, f"set {s}: a read into a full set evicted {len(gone)} lines"
            victim[s] = (gone[0] + 1) % self.ways
        return victim

    def _clear_reports(self) -> None:
        m = self.region.mapping
        m.store_u32(self.record + L.CHIP_OFF_REPORTS_USED, 0)
        m.store_u32(self.record + L.CHIP_OFF_REPORTS_DROPPED, 0)
        m.store_u64(self.record + L.CHIP_OFF_REPORTS_TOTAL, 0)

    # ---- the bus masters, both sides -----------------------------------------------------------

    def clip(self, rel: int, n: int) -> tuple[int, int]:
        off = self.lo + rel % (self.hi - self.lo)
        return off, max(1, min(n, self.hi - off))

    def cm7_read(self, off: int, n: int) -> bytes:
        got = self.region.mapping.model_read(off, n)
        want = self.ref.cm7_read(off, n)
        assert got == want, f"CM7 read {off:#x}+{n}: C {got.hex()} reference {want.hex()}"
        return got

    def cm7_write(self, off: int, data: bytes) -> None:
        self.region.mapping.model_write(off, data)
        self.ref.cm7_write(off, data)

    def cm7_word(self, off: int, op: int, a: int, b: int) -> int:
        got = self.region.mapping.data_word_u32(off, op, a, b)
        want = self.ref.cm7_word(off, op, a, b)
        assert got == want, f"CM7 word op {op} at {off:#x}: C {got:#x} reference {want:#x}"
        return got

    def other_write(self, off: int, data: bytes) -> None:
        self.region.view[off : off + len(data)] = data
        self.ref.other_write(off, data)

    def other_store_u32(self, off: int, value: int) -> None:
        self.region.mapping.store_u32(off, value)
        self.ref.other_write(off, value.to_bytes(4, "little"))

    def observe(self, off: int, n: int, core: int) -> bytes:
        got = self.region.mapping.model_observe(off, n, core)
        want = self.ref.observe(off, n, core)
        assert got == want, f"core {core} read {off:#x}+{n}: C {got.hex()} reference {want.hex()}"
        return got

    def maintain(self, op: int, off: int = 0, n: int = -1) -> None:
        self.region.mapping.model_maintain(op, off, n)
        self.ref.maintain(op, off, n)

    def set_mpu(self, ranges: list[tuple[int, int, int]]) -> None:
        self.region.mapping.model_set_mpu(ranges)
        self.ref.set_mpu(ranges)

    # ---- what the C model shows ----------------------------------------------------------------

    def c_lines(self) -> list[tuple[int, int, bytes, bytes]]:
        return self.region.mapping.model_lines()

    def c_dirty_map(self) -> dict[int, int]:
        lines = (self.region.size + LINE - 1) // LINE
        words = self.region.view[self.dirty_map_at : self.dirty_map_at + 4 * lines].cast("I")
        try:
            return {i * LINE: mask for i, mask in enumerate(words) if mask}
        finally:
            words.release()

    def c_reports(self) -> list[tuple[int, int, int, int, int]]:
        used = self.region.mapping.load_u32(self.record + L.CHIP_OFF_REPORTS_USED)
        assert used <= self.capacity
        entries = [L.CHIP_REPORT.unpack_from(self.region.view, self.record + L.CHIP_OFF_REPORTS + 32 * i)
                   for i in range(used)]
        stamps = [e[5] for e in entries]
        assert all(s > 0 for s in stamps) and stamps == sorted(stamps), f"first-seen stamps out of order: {stamps}"
        return [e[:5] for e in entries]

    def c_report_counts(self) -> dict[tuple[int, int, int], int]:
        return {(kind, core, off // LINE): count for kind, core, off, _, count in self.c_reports()}

    def check(self) -> None:
        m = self.region.mapping
        ref = self.ref
        assert bytes(self.region.view[self.lo : self.hi]) == bytes(ref.memory), "memory differs"
        want_lines = [(w.offset, w.dirty, bytes(w.data), bytes(w.fill)) for w in ref.lines()]
        assert self.c_lines() == want_lines, "cached lines differ (offset, dirty mask, data, fill)"
        assert self.c_dirty_map() == ref.dirty_map(), "the record's dirty map differs from the dirty masks"
        want_reports = [(r.kind, r.core, r.offset, r.length, r.occurrences) for r in ref.reports]
        assert self.c_reports() == want_reports, "report tables differ (kind, core, offset, length, occurrences)"
        assert m.load_u32(self.record + L.CHIP_OFF_REPORTS_DROPPED) == ref.dropped, "dropped reports differ"
        assert m.load_u64(self.record + L.CHIP_OFF_REPORTS_TOTAL) == ref.total, "total reports differ"
        counters = {k: v - self.counters_base[k] for k, v in m.model_counters().items()}
        want = {"hits": ref.hits, "misses": ref.misses, "writebacks": ref.writebacks, "evictions": ref.evictions}
        assert counters == want, f"counters differ: C {counters} reference {want}"


# ---- the state machine (in a child process: its own tiny cache) ---------------------------------

_machine_pair: Pair | None = None

window_bytes = MACHINE_LINES * LINE
rel_offsets = st.one_of(st.integers(0, MACHINE_LINES - 1).map(lambda i: i * LINE), st.integers(0, window_bytes - 1))
lengths = st.one_of(st.sampled_from([1, 4, LINE, 2 * LINE]), st.integers(1, 3 * LINE))
policies = st.sampled_from([NON_CACHEABLE, WRITE_BACK, WRITE_BACK_NO_WA, WRITE_THROUGH])
line_ranges = st.tuples(st.integers(0, MACHINE_LINES), st.integers(0, MACHINE_LINES), policies)


class CacheMachine(RuleBasedStateMachine):
    """Random interleavings of every bus master and maintenance call; everything compared after each step."""

    def __init__(self) -> None:
        super().__init__()
        assert _machine_pair is not None, "the machine runs in _run_machine_in_child"
        self.pair = _machine_pair

    @initialize()
    def start_clean(self) -> None:
        self.pair.reset()

    @rule(rel=rel_offsets, n=lengths)
    def cm7_read(self, rel: int, n: int) -> None:
        self.pair.cm7_read(*self.pair.clip(rel, n))

    @rule(rel=rel_offsets, data=st.binary(min_size=1, max_size=3 * LINE))
    def cm7_write(self, rel: int, data: bytes) -> None:
        off, n = self.pair.clip(rel, len(data))
        self.pair.cm7_write(off, data[:n])

    @rule(rel=rel_offsets, data=st.binary(min_size=1, max_size=2 * LINE))
    def other_side_writes(self, rel: int, data: bytes) -> None:
        off, n = self.pair.clip(rel, len(data))
        self.pair.other_write(off, data[:n])

    @rule(word=st.integers(0, window_bytes // 4 - 1), op=st.integers(0, 4), a=st.integers(0, 2**32 - 1),
          b=st.integers(0, 2**32 - 1), same=st.booleans())
    def cm7_shared_word(self, word: int, op: int, a: int, b: int, same: bool) -> None:
        off = self.pair.lo + 4 * word
        if same and op == 4:  # a compare-and-swap that succeeds: expect what the CM7 sees now
            a = int.from_bytes(self.pair.cm7_read(off, 4), "little")  # on both sides, compared
        self.pair.cm7_word(off, op, a, b)

    @rule(word=st.integers(0, window_bytes // 4 - 1), value=st.integers(0, 2**32 - 1))
    def other_side_stores_word(self, word: int, value: int) -> None:
        self.pair.other_store_u32(self.pair.lo + 4 * word, value)

    @rule(rel=rel_offsets, n=lengths, core=st.sampled_from([CM4, DMA]))
    def observer_reads(self, rel: int, n: int, core: int) -> None:
        self.pair.observe(*self.pair.clip(rel, n), core)

    @rule(op=st.sampled_from([CLEAN, INVALIDATE, CLEAN_INVALIDATE]), rel=rel_offsets, n=lengths)
    def maintain_by_address(self, op: int, rel: int, n: int) -> None:
        self.pair.maintain(op, *self.pair.clip(rel, n))

    @rule(op=st.sampled_from([CLEAN, INVALIDATE, CLEAN_INVALIDATE]))
    def maintain_whole_cache(self, op: int) -> None:
        self.pair.maintain(op)

    @rule(ranges=st.lists(line_ranges, max_size=3), whole=st.one_of(st.none(), policies))
    def program_mpu(self, ranges: list[tuple[int, int, int]], whole: int | None) -> None:
        table = [(0, self.pair.region.size, whole)] if whole is not None else []
        table += [(self.pair.lo + LINE * min(a, b), self.pair.lo + LINE * max(a, b), p) for a, b, p in ranges]
        self.pair.set_mpu(table)

    @invariant()
    def same_state(self) -> None:
        self.pair.check()


def _run_machine_in_child(name: str, max_examples: int, results: multiprocessing.queues.Queue[str]) -> None:
    """The state machine with the small cache, in a fresh process; puts "" or the failure report."""
    global _machine_pair
    output = io.StringIO()
    message = ""
    try:
        _machine_pair = Pair(name, cache=SMALL_CACHE, lines=MACHINE_LINES, capacity=MACHINE_CAPACITY)
        try:
            with contextlib.redirect_stdout(output):
                run_state_machine_as_test(
                    CacheMachine,
                    settings=settings(
                        max_examples=max_examples, stateful_step_count=50, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.too_slow], print_blob=True,
                    ),
                )
        finally:
            _machine_pair.close()
    except BaseException:  # noqa: BLE001 - everything goes back to the test
        message = output.getvalue() + traceback.format_exc()
    results.put(message)
    if message:
        raise SystemExit(1)


def test_cache_model_matches_reference(spawn: Any, unique_name: Callable[..., str]) -> None:
    results = spawn.ctx.Queue()
    proc = spawn(_run_machine_in_child, unique_name("dc"), 200, results)
    try:
        message = results.get(timeout=240)
    except queue_module.Empty:
        pytest.fail("the state machine's child reported nothing in 240 s")
    assert spawn.join(proc, timeout=60) == 0 and not message, message


# ---- directed tests (the chip's geometry, in this process) --------------------------------------


@pytest.fixture
def pair(unique_name: Callable[..., str]) -> Iterator[Pair]:
    p = Pair(unique_name("dc"), cache=CHIP_CACHE, lines=8, capacity=32)
    try:
        yield p
    finally:
        p.close()


def test_partial_invalidate_of_a_dirty_neighbour_is_reported_aligned_is_not(pair: Pair) -> None:
    first, second = pair.lo, pair.lo + LINE
    # one line holds object A (bytes 0..15) and its neighbour B (16..31); the CM7 wrote B
    pair.cm7_write(first + 16, b"B" * 16)
    pair.maintain(INVALIDATE, first, 16)  # firmware invalidates A before reading a DMA's data
    pair.check()
    assert pair.c_report_counts() == {(PARTIAL_INVALIDATE, CM7, first // LINE): 1}
    assert pair.c_reports()[0][2] == first + 16  # the first lost byte
    assert pair.c_lines() == [] and pair.region.view[first + 16 : first + 32] == bytes(16)  # B's write is gone
    # a line-aligned invalidate of dirty bytes drops them by intent: no report
    pair.cm7_write(second, b"C" * LINE)
    pair.maintain(INVALIDATE, second, LINE)
    # nor an unaligned one whose dirty bytes are all inside the range
    pair.cm7_write(second + 4, b"D" * 8)
    pair.maintain(INVALIDATE, second + 2, 12)
    pair.check()
    assert pair.c_report_counts() == {(PARTIAL_INVALIDATE, CM7, first // LINE): 1}
    assert pair.c_lines() == []


def test_stale_read_reported_only_when_memory_changed_in_the_bytes_read(pair: Pair) -> None:
    off = pair.lo
    pair.other_write(off, bytes(range(32)))
    assert pair.cm7_read(off, LINE) == bytes(range(32))  # filled
    pair.other_write(off + 10, b"\xee")
    assert pair.cm7_read(off, 10) == bytes(range(10))  # bytes 0..9 unchanged in memory
    pair.other_write(off + 20, bytes([20]))  # the same value again: memory unchanged
    assert pair.cm7_read(off + 12, 20) == bytes(range(12, 32))
    pair.check()
    assert pair.c_report_counts() == {}
    assert pair.cm7_read(off + 8, 4) == bytes([8, 9, 10, 11])  # the stale copy of byte 10
    assert pair.cm7_read(off + 10, 1) == b"\x0a"
    pair.check()
    assert pair.c_reports() == [(STALE_READ, CM7, off + 8, 4, 2)]
    pair.maintain(INVALIDATE, off, LINE)
    assert pair.cm7_read(off + 10, 1) == b"\xee"  # refilled: in step again
    pair.check()
    assert pair.c_reports() == [(STALE_READ, CM7, off + 8, 4, 2)]


def test_dma_read_of_dirty_bytes_reported_of_clean_ones_not(pair: Pair) -> None:
    off = pair.lo
    pair.cm7_write(off + 4, b"\x01\x02\x03\x04")
    assert pair.c_dirty_map() == {off: 0xF0}
    assert pair.observe(off + 8, 24, DMA) == bytes(24)  # clean bytes of a dirty line
    assert pair.observe(off + LINE, LINE, DMA) == bytes(LINE)  # a line not cached at all
    pair.check()
    assert pair.c_reports() == []
    assert pair.observe(off, 6, DMA) == bytes(6)  # memory, not the CM7's dirty bytes 4..5
    assert pair.observe(off + 7, 1, CM4) == b"\x00"
    pair.check()
    assert pair.c_reports() == [(DIRTY_READ, DMA, off, 6, 1), (DIRTY_READ, CM4, off + 7, 1, 1)]
    pair.maintain(CLEAN, off + 4, 1)
    assert pair.c_dirty_map() == {}
    assert pair.observe(off, 8, DMA) == bytes(4) + b"\x01\x02\x03\x04"
    pair.check()
    assert pair.c_report_counts() == {(DIRTY_READ, DMA, off // LINE): 1, (DIRTY_READ, CM4, off // LINE): 1}


def test_write_back_over_the_other_sides_write_is_a_lost_write(pair: Pair) -> None:
    off = pair.lo + 2 * LINE
    pair.cm7_write(off + 3, b"\x77")
    pair.other_write(off + 3, b"\x44")  # the CM4 wrote the same byte meanwhile
    pair.other_write(off + 9, b"\x55")  # and a byte the CM7 never wrote
    pair.maintain(CLEAN_INVALIDATE, off, LINE)
    pair.check()
    assert pair.c_reports() == [(LOST_WRITE, CM7, off + 3, 1, 1)]
    assert pair.region.view[off + 3] == 0x77 and pair.region.view[off + 9] == 0x55  # byte masks, not the whole line


def test_policies_write_through_and_no_write_allocate(pair: Pair) -> None:
    wt, nowa, nc = pair.lo, pair.lo + LINE, pair.lo + 2 * LINE
    pair.set_mpu([(wt, wt + LINE, WRITE_THROUGH), (nowa, nowa + LINE, WRITE_BACK_NO_WA), (nc, nc + LINE, NON_CACHEABLE)])
    pair.cm7_write(wt, b"t")  # write-through miss: memory only
    pair.cm7_write(nowa, b"n")  # no-write-allocate miss: memory only
    pair.cm7_write(nc, b"c")
    assert pair.c_lines() == []
    pair.cm7_read(wt, 1)
    pair.cm7_read(nowa, 1)
    pair.cm7_read(nc, 1)  # never cached
    pair.cm7_write(wt + 1, b"T")  # write-through hit: line and memory
    pair.cm7_write(nowa + 1, b"N")  # write-back hit: dirty
    pair.check()
    assert [(off, dirty) for off, dirty, _, _ in pair.c_lines()] == [(wt, 0), (nowa, 0b10)]
    assert bytes(pair.region.view[wt : wt + 2]) == b"tT" and bytes(pair.region.view[nowa : nowa + 2]) == b"n\0"


def test_a_full_report_table_counts_every_occurrence_it_drops(unique_name: Callable[..., str]) -> None:
    p = Pair(unique_name("dc"), cache=CHIP_CACHE, lines=4, capacity=1)
    try:
        for line in range(3):
            p.cm7_write(p.lo + line * LINE, b"x")
        p.observe(p.lo, 1, DMA)
        p.observe(p.lo, 1, DMA)  # the recorded report: counted in its entry
        p.observe(p.lo + LINE, 1, DMA)  # no free entry: dropped ...
        p.observe(p.lo + LINE, 1, DMA)  # ... per occurrence (the C cannot remember what it dropped)
        p.observe(p.lo + 2 * LINE, 1, CM4)
        p.check()
        assert p.c_reports() == [(DIRTY_READ, DMA, p.lo, 1, 2)]
        assert p.region.mapping.load_u32(p.record + L.CHIP_OFF_REPORTS_DROPPED) == 3
        assert p.region.mapping.load_u64(p.record + L.CHIP_OFF_REPORTS_TOTAL) == 5
    finally:
        p.close()


def test_zero_size_maintenance_by_address_does_nothing(pair: Pair) -> None:
    off = pair.lo
    pair.cm7_write(off, b"\x11" * LINE)
    pair.maintain(INVALIDATE, off + 5, 0)
    pair.check()
    assert pair.c_report_counts() == {}
