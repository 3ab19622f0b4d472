"""The payload pool between real processes: 100,000 checked frames, a consumer killed holding slots,
a blocked loan woken from another process. No timing is asserted; every wait is generous."""

from __future__ import annotations

import math
import os
import queue
import signal
from typing import Any

import numpy as np
import pytest

from ampipc import MessageBuffer, Region
from ampipc.services import PayloadPool, ProcessingDirective, StaleDescriptor

from . import _workers as W

pytestmark = pytest.mark.timeout(240)

FRAMES = 100_000


def _get(results: Any, timeout: float = W.GENEROUS) -> Any:
    try:
        return results.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("the child reported nothing") from None


def test_100k_frames_random_dtypes_and_sizes(make_region: Any, spawn: Any) -> None:
    """A producer process sends 100,000 frames of random dtype/shape; this process checks each one."""
    region = make_region(4 << 20)
    pool = PayloadPool.create(region, "pool", slots=16, slot_size=256)
    descriptors = MessageBuffer.create(region, "desc", 4096)
    results = spawn.ctx.Queue()
    child = spawn(W.produce, region.name, "pool", "desc", FRAMES, results)
    seen_slots = set()
    for seq in range(FRAMES):
        dtype, shape, start = W.frame_spec(seq, pool.slot_size)
        nbytes = math.prod(shape) * W.ITEMSIZE[dtype]
        with pool.receive(descriptors, timeout=W.GENEROUS) as payload:
            assert (payload.dtype, payload.shape, payload.length) == (dtype, shape, nbytes), seq
            directive = payload.directive
            assert isinstance(directive, ProcessingDirective)
            assert (directive.sequence, directive.data_size, directive.processing) == (seq, nbytes, seq % 4)
            array = payload.array()
            assert array.dtype == np.dtype(dtype) and array.shape == shape and not array.flags.writeable
            assert payload.data.tobytes() == W.BYTES[start : start + nbytes], f"frame {seq} differs"
            seen_slots.add(payload.slot)
            del array
    assert _get(results) == ("ok", FRAMES)
    assert spawn.join(child) == 0
    stats = pool.statistics()
    assert stats.loans == stats.commits == stats.accepts == stats.releases == FRAMES
    assert stats.in_use == 0 and stats.reclaims == 0 and 1 <= stats.peak_in_use <= 16
    assert seen_slots == set(range(16))
    pool.close()


def test_consumer_killed_holding_slots_is_reclaimed_exactly_once(make_region: Any, spawn: Any) -> None:
    region = make_region(1 << 20)
    slots, held = 12, 5
    pool = PayloadPool.create(region, "pool", slots=slots, slot_size=128)
    descriptors = MessageBuffer.create(region, "desc", 4096)
    for i in range(held):
        loan = pool.loan(timeout=0)
        loan.view[:4] = i.to_bytes(4, "little")
        pool.commit(loan, descriptors, length=4)
    results = spawn.ctx.Queue()
    consumer = spawn(W.hold_and_wait, region.name, "pool", "desc", held, results)
    kind, holding, raws = _get(results)
    assert kind == "holding" and len(holding) == held
    assert sorted(state for _, state, _ in pool.owners()).count("held") == held
    os.kill(consumer.pid, signal.SIGKILL)
    spawn.join(consumer)

    # a fresh queue: the killed child may have died holding the old queue's write lock
    go, done, reported = spawn.ctx.Event(), spawn.ctx.Event(), spawn.ctx.Queue()
    grabbers = [spawn(W.reclaim_and_grab, region.name, "pool", go, reported, done) for _ in range(2)]
    go.set()
    reports = [_get(reported), _get(reported)]
    freed = [r[1] for r in reports]
    grabbed = [slot for r in reports for slot in r[2]]
    assert sum(freed) == held, f"reclaimed {freed}: each dead slot must be reclaimed exactly once"
    assert sorted(grabbed) == list(range(slots)), f"slots handed out {sorted(grabbed)}: none twice, none lost"
    assert pool.reclaim() == 0
    assert pool.statistics().reclaims == held
    for raw in raws:  # the dead consumer's descriptors are of a past generation now
        with pytest.raises(StaleDescriptor):
            pool.accept(raw)
    done.set()
    for g in grabbers:
        assert spawn.join(g) == 0
    assert pool.statistics().in_use == 0
    pool.close()


def test_blocked_loan_reclaims_a_dead_holders_slots(make_region: Any, spawn: Any) -> None:
    """A loan on a pool whose every slot a dead process holds returns once the slots are reclaimed."""
    region = make_region(1 << 20)
    pool = PayloadPool.create(region, "pool", slots=3, slot_size=64)
    descriptors = MessageBuffer.create(region, "desc", 1024)
    for _ in range(3):
        pool.commit(pool.loan(timeout=0), descriptors, length=8)
    results = spawn.ctx.Queue()
    consumer = spawn(W.hold_and_wait, region.name, "pool", "desc", 3, results)
    assert _get(results)[0] == "holding"
    assert pool.try_loan() is None
    os.kill(consumer.pid, signal.SIGKILL)
    spawn.join(consumer)
    loan = pool.loan(timeout=W.GENEROUS)
    assert pool.statistics().reclaims >= 1
    loan.cancel()
    pool.close()


def test_release_in_another_process_wakes_a_blocked_loan(make_region: Any, spawn: Any) -> None:
    region = make_region(1 << 20)
    pool = PayloadPool.create(region, "pool", slots=1, slot_size=64)
    descriptors = MessageBuffer.create(region, "desc", 1024)
    pool.commit(pool.loan(timeout=0), descriptors, length=1)
    results = spawn.ctx.Queue()
    child = spawn(W.release_later, region.name, "pool", "desc", results)
    assert _get(results) == ("accepted", 0)
    loan = pool.loan(timeout=W.GENEROUS)  # sleeps on the futex until the child releases
    assert loan.slot == 0 and loan.generation == 1
    assert _get(results) == ("released", 0)
    assert pool.statistics().loan_waits >= 1
    loan.cancel()
    assert spawn.join(child) == 0
    pool.close()


def test_attach_sees_the_same_pool(make_region: Any) -> None:
    region = make_region(1 << 20)
    pool = PayloadPool.create(region, "pool", slots=4, slot_size=100)
    with Region.attach(region.name) as other:
        twin = PayloadPool.attach(other, "pool")
        assert (twin.slots, twin.slot_size) == (4, 128)
        loan = twin.loan(timeout=0)
        assert pool.owners()[loan.slot][1] == "loaned" and pool.owners()[loan.slot][2] == os.getpid()
        twin.close()  # gives the loan back
    assert pool.statistics().in_use == 0
    pool.close()
