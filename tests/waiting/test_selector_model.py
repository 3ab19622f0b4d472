"""Selector against a reference model (hypothesis state machine): register, unregister, modify, select."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ampipc import MessageBuffer, Region
from ampipc.waiting import READABLE, WRITABLE, Selector, SelectorKey

from tests.conftest import make_unique_name

BUFFERS = 4
CAPACITY = 40  # 8-byte messages take 12 bytes: three fit, and then not even a 1-byte message does
MESSAGE = 8
FIT = 3
EVENTS = st.sampled_from([READABLE, WRITABLE, READABLE | WRITABLE])
INDEX = st.integers(0, BUFFERS - 1)


class SelectorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.region = Region.create(make_unique_name("sel"), 1 << 16)
        self.buffers = [MessageBuffer.create(self.region, f"b{i}", CAPACITY) for i in range(BUFFERS)]
        self.selector = Selector()
        self.model_registered: dict[int, tuple[int, object]] = {}  # index -> (events, data)
        self.model_fill = [0] * BUFFERS
        self.sequence = 0

    def teardown(self) -> None:
        self.selector.close()
        try:
            self.region.close()
        finally:
            self.region.unlink()

    @rule(i=INDEX, events=EVENTS, data=st.integers())
    def register(self, i: int, events: int, data: int) -> None:
        if i in self.model_registered:
            with pytest.raises(KeyError):
                self.selector.register(self.buffers[i], events, data)
            return
        key = self.selector.register(self.buffers[i], events, data)
        assert key == SelectorKey(self.buffers[i], events, data)
        self.model_registered[i] = (events, data)

    @rule(i=INDEX)
    def unregister(self, i: int) -> None:
        if i not in self.model_registered:
            with pytest.raises(KeyError):
                self.selector.unregister(self.buffers[i])
            return
        key = self.selector.unregister(self.buffers[i])
        events, data = self.model_registered.pop(i)
        assert (key.obj, key.events, key.data) == (self.buffers[i], events, data)

    @rule(i=INDEX, events=EVENTS, data=st.integers())
    def modify(self, i: int, events: int, data: int) -> None:
        if i not in self.model_registered:
            with pytest.raises(KeyError):
                self.selector.modify(self.buffers[i], events, data)
            return
        assert self.selector.modify(self.buffers[i], events, data).events == events
        self.model_registered[i] = (events, data)

    @rule(i=INDEX)
    def send(self, i: int) -> None:
        self.sequence += 1
        sent = self.buffers[i].try_send(self.sequence.to_bytes(MESSAGE, "little"))
        assert sent == (self.model_fill[i] < FIT)
        self.model_fill[i] += sent

    @rule(i=INDEX)
    def receive(self, i: int) -> None:
        got = self.buffers[i].try_receive()
        assert (got is not None) == (self.model_fill[i] > 0)
        self.model_fill[i] -= got is not None

    @precondition(lambda self: True)
    @rule()
    def select(self) -> None:
        expected = {}
        for i, (events, data) in self.model_registered.items():
            ready = (READABLE if self.model_fill[i] else 0) | (WRITABLE if self.model_fill[i] < FIT else 0)
            if ready & events:
                expected[i] = (ready & events, data)
        got = self.selector.select(0)
        index = {id(b): i for i, b in enumerate(self.buffers)}
        assert {index[id(k.obj)]: (mask, k.data) for k, mask in got} == expected
        assert len(got) == len(expected)

    @invariant()
    def map_matches(self) -> None:
        keys = self.selector.get_map()
        assert len(self.selector) == len(self.model_registered) == len(keys)
        for i, (events, data) in self.model_registered.items():
            assert self.selector.get_key(self.buffers[i]) == SelectorKey(self.buffers[i], events, data)


SelectorMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestSelectorModel = SelectorMachine.TestCase


def test_select_with_nothing_registered(region: Region) -> None:
    sel = Selector()
    assert sel.select(0) == []
    with pytest.raises(ValueError):
        sel.select(None)
    sel.close()
    with pytest.raises(RuntimeError):
        sel.register(MessageBuffer.create(region, "b", 64))
