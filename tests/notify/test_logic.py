"""Sans-I/O logic of the strategies against simple reference models (one process, no shared memory)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ampipc import ProtocolError, ResourceExhausted
from ampipc.notify import EndpointSpec, EventKind, EventMap
from ampipc.notify.base import bits_of
from ampipc.notify.control import decode_record, encode_record
from ampipc.notify.hsem import semaphore_ids
from ampipc.notify.toggle import pending_bits, raise_value

CORES = ("CM7", "CM4")


def specs_of(ids: list[int], writers: list[bool]) -> list[EndpointSpec]:
    return [EndpointSpec(i, *(CORES if w else CORES[::-1])) for i, w in zip(ids, writers)]


endpoint_lists = st.lists(st.integers(0, 2**32 - 1), unique=True, min_size=1, max_size=80).flatmap(
    lambda ids: st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)).map(lambda ws: specs_of(ids, ws))
)


@given(endpoint_lists)
def test_event_map_numbers_each_direction_densely(specs: list[EndpointSpec]) -> None:
    m = EventMap(specs)
    seen = set()
    for src, dst in m.directions:
        events = m.events(src, dst)
        for i, (bid, kind) in enumerate(events):
            assert m.direction_of(bid, kind) == (src, dst)
            word, bit = m.locate(bid, kind)
            assert word * 32 + bit.bit_length() - 1 == i
            assert m.event_at(src, dst, word, bit.bit_length() - 1) == (bid, kind)
            assert bit & m.valid_mask(src, dst, word)
            seen.add((bid, kind))
        assert m.word_count(src, dst) == max(1, (len(events) + 31) // 32)
    assert seen == {(s.buffer_id, k) for s in specs for k in EventKind}


def test_event_map_rejects_bad_endpoints() -> None:
    with pytest.raises(ValueError, match="unique"):
        EventMap([EndpointSpec(1, "A", "B"), EndpointSpec(1, "B", "A")])
    with pytest.raises(ValueError, match="different cores"):
        EventMap([EndpointSpec(1, "A", "A")])


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 31)), max_size=200))
def test_toggle_words_against_a_set_of_pending_events(ops: list[tuple[bool, int]]) -> None:
    """Raise = add to the pending set (idempotent); acknowledge-all = empty it. The words must agree."""
    sent = acked = 0
    model: set[int] = set()
    for is_raise, bit in ops:
        if is_raise:
            new = raise_value(sent, acked, 1 << bit)
            assert (new is None) == (bit in model)
            if new is not None:
                sent = new
            model.add(bit)
        else:
            pending = pending_bits(sent, acked)
            assert set(bits_of(pending)) == model
            acked ^= pending
            model.clear()
        assert set(bits_of(pending_bits(sent, acked))) == model
        assert 0 <= sent < 2**32 and 0 <= acked < 2**32


@given(st.integers(0, 2**32 - 1), st.sampled_from(list(EventKind)))
def test_control_records_round_trip(buffer_id: int, kind: EventKind) -> None:
    record = encode_record(buffer_id, kind)
    assert len(record) == 8
    assert decode_record(record) == (buffer_id, kind)


@given(st.binary(max_size=16))
def test_control_records_malformed(data: bytes) -> None:
    if len(data) == 8 and int.from_bytes(data[4:], "little") in (0, 1):
        assert decode_record(data)[0] == int.from_bytes(data[:4], "little")
    else:
        with pytest.raises(ProtocolError):
            decode_record(data)


@given(st.integers(1, 40), st.integers(1, 31))
def test_hsem_ids_fit_or_fail_clearly(buffers: int, base: int) -> None:
    specs = specs_of(list(range(buffers)), [i % 2 == 0 for i in range(buffers)])
    if 2 * buffers > 32 - base:
        with pytest.raises(ResourceExhausted, match="2 hardware semaphores per data buffer"):
            semaphore_ids(specs, base)
    else:
        ids = semaphore_ids(specs, base)
        assert len(set(ids.values())) == 2 * buffers
        assert all(base <= s < 32 for s in ids.values())
