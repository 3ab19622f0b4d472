"""The payload pool against a reference model (hypothesis state machine), in one process.

The model keeps each slot's state and generation and the FIFO of descriptors in flight; every
operation's outcome (which errors, which slot states, the counters) must agree with it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ampipc import MessageBuffer, Region
from ampipc.services import ForgedDescriptor, Loan, Payload, PayloadPool, StaleDescriptor

from ._workers import new_name

SLOTS = 4


class PoolMachine(RuleBasedStateMachine):
    native = True  # the C core; the subclass below runs the Python reference of the same steps

    def __init__(self) -> None:
        super().__init__()
        self.region = Region.create(new_name("pm"), 1 << 18)
        self.pool = PayloadPool.create(self.region, "pool", slots=SLOTS, slot_size=64, native=self.native)
        # a second handle on the same pool with the other implementation: both must agree on every word
        self.twin = PayloadPool.attach(self.region, "pool", native=not self.native)
        self.buffer = MessageBuffer.create(self.region, "desc", 4096)
        self.state = ["free"] * SLOTS  # the model
        self.gen = [0] * SLOTS
        self.loans: list[Loan] = []
        self.held: list[Payload] = []
        self.in_flight: deque[tuple[bytes, int, int, bytes]] = deque()  # descriptor, slot, gen, contents
        self.used: list[bytes] = []  # descriptors accepted (or reclaimed) earlier
        self.counts = {"loans": 0, "commits": 0, "accepts": 0, "releases": 0, "reclaims": 0}

    @rule()
    def loan(self) -> None:
        loan = self.pool.try_loan()
        if "free" not in self.state:
            assert loan is None
            return
        assert loan is not None and self.state[loan.slot] == "free" and loan.generation == self.gen[loan.slot]
        self.state[loan.slot] = "loaned"
        self.loans.append(loan)
        self.counts["loans"] += 1

    @precondition(lambda self: self.loans)
    @rule(data=st.data(), body=st.binary(max_size=64))
    def commit(self, data: Any, body: bytes) -> None:
        loan = self.loans.pop(data.draw(st.integers(0, len(self.loans) - 1)))
        loan.view[: len(body)] = body
        raw = self.pool.commit(loan, self.buffer, body[:8] or None, length=len(body))
        self.state[loan.slot] = "committed"
        self.in_flight.append((raw, loan.slot, loan.generation, body))
        self.counts["commits"] += 1

    @precondition(lambda self: self.loans)
    @rule(data=st.data())
    def cancel(self, data: Any) -> None:
        loan = self.loans.pop(data.draw(st.integers(0, len(self.loans) - 1)))
        loan.cancel()
        self.state[loan.slot] = "free"
        self.gen[loan.slot] += 1
        self.counts["releases"] += 1

    @precondition(lambda self: self.in_flight)
    @rule()
    def receive(self) -> None:
        raw, slot, gen, body = self.in_flight.popleft()
        got = self.buffer.receive(timeout=0)
        assert got == raw
        if self.state[slot] != "committed" or self.gen[slot] != gen:  # reclaimed in flight
            try:
                self.pool.accept(got)
            except StaleDescriptor:
                return
            raise AssertionError("a reclaimed slot's descriptor was accepted")
        payload = self.pool.accept(got)
        assert (payload.slot, payload.generation, bytes(payload.data)) == (slot, gen, body)
        assert payload.directive == (body[:8] or None)
        self.state[slot] = "held"
        self.held.append(payload)
        self.used.append(raw)
        self.counts["accepts"] += 1

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: Any) -> None:
        payload = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        payload.release()
        payload.release()  # idempotent
        self.state[payload.slot] = "free"
        self.gen[payload.slot] += 1
        self.counts["releases"] += 1

    @precondition(lambda self: self.used)
    @rule(data=st.data())
    def replay(self, data: Any) -> None:
        raw = data.draw(st.sampled_from(self.used))
        try:
            self.pool.accept(raw)
        except StaleDescriptor:
            return
        raise AssertionError("a descriptor was accepted twice")

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def forge(self, data: Any) -> None:
        raw = bytearray(self.in_flight[0][0])
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
        try:
            self.pool.accept(bytes(raw))
        except (ForgedDescriptor, StaleDescriptor):
            return
        raise AssertionError(f"a descriptor altered at byte {index} was accepted")

    @rule()
    def reclaim_in_flight(self) -> None:
        freed = self.pool.reclaim(in_flight=True)
        expected = [i for i, s in enumerate(self.state) if s == "committed"]
        assert freed == len(expected)
        for i in expected:
            self.state[i] = "free"
            self.gen[i] += 1
        self.counts["reclaims"] += freed

    @precondition(lambda self: self.in_flight)
    @rule()
    def receive_with_the_other_implementation(self) -> None:
        raw, slot, gen, body = self.in_flight.popleft()
        assert self.buffer.receive(timeout=0) == raw
        if self.state[slot] != "committed" or self.gen[slot] != gen:
            try:
                self.twin.accept(raw)
            except StaleDescriptor:
                return
            raise AssertionError("a reclaimed slot's descriptor was accepted")
        payload = self.twin.accept(raw)
        assert (payload.slot, payload.generation, bytes(payload.data)) == (slot, gen, body)
        payload.release()
        self.state[slot] = "free"
        self.gen[slot] += 1
        self.used.append(raw)
        self.counts["accepts"] += 1
        self.counts["releases"] += 1

    @invariant()
    def agrees(self) -> None:
        assert [s for _, s, _ in self.pool.owners()] == self.state
        stats = self.pool.statistics()
        assert stats.in_use == sum(s != "free" for s in self.state)
        assert (stats.loans, stats.commits, stats.accepts, stats.releases, stats.reclaims) == tuple(
            self.counts[k] for k in ("loans", "commits", "accepts", "releases", "reclaims")
        )

    def teardown(self) -> None:
        self.twin.close()
        self.pool.close()
        self.region.close()


class PythonPoolMachine(PoolMachine):
    native = False


TestNativePoolModel = PoolMachine.TestCase
TestNativePoolModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestPythonPoolModel = PythonPoolMachine.TestCase
TestPythonPoolModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
