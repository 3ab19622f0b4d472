"""Helpers of the hardware-model tests: shared test words and the child-process targets.

Child targets live here, at module level, so the spawn start method can import them. Each one
attaches to the region by name, acts as one core, and exits non-zero (with a traceback on stderr)
when anything it checks goes wrong; every wait is bounded by GENEROUS seconds, never timed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ampipc import MessageBuffer, Region
from ampipc.hw import Hardware, cm4_wait_for_boot

__all__ = [
    "GENEROUS",
    "Words",
    "boot_cm4_worker",
    "contention_worker",
    "exti_worker",
    "hsem_doorbell_worker",
    "irq_pingpong_worker",
    "raise_lines_worker",
    "sev_pingpong_worker",
    "wait_until",
]

GENEROUS = 60.0
WORDS_OBJECT = "testwords"
WORDS_SIZE = 4096


class Words:
    """An array of u32 test words in the region (object ``testwords``), for counters and flags."""

    def __init__(self, region: Region, offset: int) -> None:
        self.m = region.mapping
        self.base = offset

    @classmethod
    def create(cls, region: Region) -> Words:
        return cls(region, region.allocate(WORDS_OBJECT, "test", WORDS_SIZE))

    @classmethod
    def attach(cls, region: Region) -> Words:
        return cls(region, region.lookup(WORDS_OBJECT, "test").offset)

    def off(self, index: int) -> int:
        assert 0 <= index < WORDS_SIZE // 4
        return self.base + 4 * index

    def load(self, index: int) -> int:
        return self.m.load_u32(self.off(index))

    def store(self, index: int, value: int) -> None:
        self.m.store_u32(self.off(index), value)

    def add(self, index: int, value: int = 1) -> int:
        return self.m.fetch_add_u32(self.off(index), value)

    def wait_for(self, index: int, value: int, timeout: float = GENEROUS) -> None:
        """Wait (futex) until word `index` equals `value`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.load(index)
            if seen == value:
                return
            left = deadline - time.monotonic()
            assert left > 0, f"word {index} is {seen}, expected {value} within {timeout} s"
            self.m.futex_wait(self.off(index), seen, min(left, 0.1))

    def set_and_wake(self, index: int, value: int) -> None:
        self.store(index, value)
        self.m.futex_wake(self.off(index))


def wait_until(predicate: Callable[[], bool], timeout: float = GENEROUS, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.001)


# ---- children ----------------------------------------------------------------------------------

# Words used by the contention test: per semaphore s, word 8*s = counter, 8*s+1 = "inside" flag.
VIOLATIONS = 1000
START = 1001  # the parent's go signal
READY = 1002  # children count in here


def contention_worker(
    region_name: str, core: str, process_id: int, iterations: int, sems: list[int], fast: bool
) -> None:
    """Take each semaphore in turn `iterations` times; inside, a non-atomic increment of its counter."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        hsem = hw.core(core).hsem
        words = Words.attach(region)
        words.add(READY)
        words.wait_for(START, 1)
        for i in range(iterations):
            sem = sems[(i // 64) % len(sems)]  # runs on one semaphore, so both processes collide on it
            while not (hsem.fast_take(sem) if fast else hsem.take(sem, process_id)):
                pass
            if words.m.cas_u32(words.off(8 * sem + 1), 0, 1) != 0:
                words.add(VIOLATIONS)
            assert hsem.owner(sem) == (hsem.core_id, 0 if fast else process_id)
            count = words.load(8 * sem)
            words.store(8 * sem, count + 1)
            words.store(8 * sem + 1, 0)
            hsem.release(sem, 0 if fast else process_id)
        hw.close()


def raise_lines_worker(region_name: str, target: str, lines: list[int]) -> None:
    """Act as CM7 and raise `lines` on core `target`, in that order."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        me = hw.core("CM7")
        for line in lines:
            me.raise_interrupt(line, target=target)
        hw.close()


def irq_pingpong_worker(region_name: str, rounds: int) -> None:
    """Act as CM7: for each round, publish a sequence number, raise line 7 on CM4 and wait for the
    CM4's handler to answer on line 8 (served by this process's CM7 dispatcher)."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        me = hw.core("CM7")
        words = Words.attach(region)
        answered = threading.Semaphore(0)
        seen: list[int] = []

        def on_answer(line: int) -> None:
            assert me.in_isr()
            seen.append(words.load(1))
            answered.release()

        me.attach_handler(8, on_answer)
        me.start()
        try:
            for seq in range(1, rounds + 1):
                words.store(0, seq)
                me.raise_interrupt(7, target="CM4")
                assert answered.acquire(timeout=GENEROUS), f"no answer to round {seq}"
                assert seen[-1] == seq, (seq, seen[-5:])
            assert seen == list(range(1, rounds + 1))
        finally:
            hw.close()


def hsem_doorbell_worker(region_name: str, rounds: int, sem: int) -> None:
    """Act as CM7: ring the CM4 by "take + release" of `sem`, wait for its acknowledgement word."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        hsem = hw.core("CM7").hsem
        words = Words.attach(region)
        for seq in range(1, rounds + 1):
            words.store(0, seq)
            assert hsem.take(sem, 12)
            hsem.release(sem, 12)
            words.wait_for(1, seq)
        hw.close()


def sev_pingpong_worker(region_name: str, rounds: int) -> None:
    """Act as CM4: wait for an event, echo the sequence number, send an event back."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        me = hw.core("CM4")
        words = Words.attach(region)
        words.set_and_wake(READY, 1)
        for _ in range(rounds):
            assert me.wfe(GENEROUS), "no event from the CM7"
            words.store(1, words.load(0))
            me.sev()
        hw.close()


def exti_worker(region_name: str, exti_line: int, times: int) -> None:
    """Act as CM7 and generate EXTI software interrupts, waiting for each to be acknowledged."""
    with Region.attach(region_name) as region:
        hw = Hardware.attach(region)
        me = hw.core("CM7")
        words = Words.attach(region)
        for seq in range(1, times + 1):
            words.store(0, seq)
            me.generate_sw_interrupt(exti_line)
            words.wait_for(1, seq)
        hw.close()


def boot_cm4_worker(region_name: str, started: Any, echo_count: int) -> None:
    """The CM4 of the CubeH7 template: wait for the boot release (the region may not exist yet),
    then read what the CM7 prepared and echo it back through a second buffer."""
    started.set()
    hw = cm4_wait_for_boot(region_name, timeout=GENEROUS)
    region = hw.region
    try:
        me = hw.core("CM4")
        assert me.hsem.isr & 1 == 0, "the boot flag was not cleared"
        assert me.hsem.ier & 1 == 0, "the boot notification was left enabled"
        inbox = MessageBuffer.attach(region, "to-cm4")
        outbox = MessageBuffer.attach(region, "to-cm7")
        for i in range(echo_count):
            data = inbox.receive(timeout=GENEROUS)
            assert data == b"boot-%d" % i, data
            outbox.send(data.upper(), timeout=GENEROUS)
    finally:
        hw.close()
        region.close()
