"""The native many-word futex wait (`ampipc._waitv`): results, bounds checks, chunks, fallback, signals."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ampipc import _waitv


def _later(delay: float, fn: object, *args: object) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn(*args)  # type: ignore[operator]

    t = threading.Thread(target=run)
    t.start()
    return t


def _bump_and_wake(word: bytearray, offset: int) -> None:
    _waitv.fetch_add(word, offset, 1)
    _waitv.wake(word, offset)


def test_a_word_that_differs_returns_at_once_without_sleeping() -> None:
    word = bytearray(8)
    _waitv.fetch_add(word, 4, 7)
    assert _waitv.wait([(word, 0, 0), (word, 4, 0)], None) == -1
    assert _waitv.load(word, 4) == 7


def test_timeout_returns_none() -> None:
    word = bytearray(4)
    assert _waitv.wait([(word, 0, 0)], 0.05) is None
    assert _waitv.wait([(word, 0, 0)], 0) is None


@pytest.mark.parametrize("fallback", [False, True])
def test_the_woken_word_is_reported(fallback: bool) -> None:
    words = bytearray(64)
    t = _later(0.05, _bump_and_wake, words, 36)
    try:
        got = _waitv.wait([(words, off, 0) for off in range(0, 64, 4)], 30, fallback)
    finally:
        t.join()
    assert got in (9, -1)  # woken by index, or (fallback / race) the value was seen changed
    assert _waitv.load(words, 36) == 1


@pytest.mark.parametrize("count", [127, 128, 129, 300, 1000])
def test_more_words_than_the_kernel_limit_are_waited_on_in_chunks(count: int) -> None:
    words = bytearray(4 * count)
    target = count - 1  # the last chunk, served by a helper thread
    t = _later(0.05, _bump_and_wake, words, 4 * target)
    try:
        got = _waitv.wait([(words, 4 * i, 0) for i in range(count)], 30)
    finally:
        t.join()
    assert got in (target, -1)
    assert _waitv.load(words, 4 * target) == 1


def test_chunks_time_out_together() -> None:
    words = bytearray(4 * 300)
    assert _waitv.wait([(words, 4 * i, 0) for i in range(300)], 0.05) is None
    assert threading.active_count() >= 1


@pytest.mark.parametrize(
    ("triple", "error"),
    [
        ((bytearray(8), 8, 0), IndexError),
        ((bytearray(8), -4, 0), IndexError),
        ((bytearray(8), 2, 0), ValueError),
        ((bytearray(8), 0, 1 << 32), OverflowError),
        ((42, 0, 0), TypeError),
        (("ab", 0), TypeError),
    ],
)
def test_bad_words_are_refused(triple: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        _waitv.wait([triple], 0)  # type: ignore[list-item]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _waitv.wait([], 0)
    with pytest.raises(ValueError):
        _waitv.wait([(bytearray(4), 0, 0)], -1)
    with pytest.raises(TypeError):
        _waitv.wait(5, 0)  # type: ignore[arg-type]


def test_ctrl_c_interrupts_an_endless_wait() -> None:
    word = bytearray(4)
    t = _later(0.2, os.kill, os.getpid(), signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            _waitv.wait([(word, 0, 0)], None)
    finally:
        t.join()


def test_the_kernel_feature_probe() -> None:
    assert isinstance(_waitv.available(), bool)
    assert _waitv.KERNEL_MAX_WORDS == 128


def test_wait_rings_refuses_bad_rings() -> None:
    mapping = bytearray(1024)
    for rings, error in (
        ([(32, 1)], IndexError),  # not 64-byte aligned
        ([(1024, 1)], IndexError),  # outside
        ([(-64, 1)], IndexError),
        ([(0, 0)], ValueError),
        ([(0, 4)], ValueError),
        ([(0,)], TypeError),
        ([], ValueError),
    ):
        with pytest.raises(error):
            _waitv.wait_rings(mapping, rings, (), 0)  # type: ignore[arg-type]
    # a header that does not hold together (length 0) is reported ready: the operation raises CorruptRegion
    assert _waitv.wait_rings(mapping, [(0, 1), (256, 3)], (), 0) == [(0, 1), (1, 3)]


def test_wait_rings_leaves_disabled_rings_out(region: object) -> None:
    from ampipc import MessageBuffer, Region

    assert isinstance(region, Region)
    a, b = MessageBuffer.create(region, "a", 64), MessageBuffer.create(region, "b", 64)
    rings = [(a.offset, 1), (b.offset, 1)]
    a.send(b"x")
    b.send(b"y")
    m = region.mapping
    assert _waitv.wait_rings(m, rings, (), 0) == [(0, 1), (1, 1)]
    assert _waitv.wait_rings(m, rings, (), 0, False, bytearray([0, 1])) == [(1, 1)]
    assert _waitv.wait_rings(m, rings, (), 0.02, False, bytearray([0, 0])) == []  # nothing to watch: the timeout
    with pytest.raises(ValueError):
        _waitv.wait_rings(m, rings, (), 0, False, bytearray(3))
    assert m.load_u32(a.offset + 196) == m.load_u32(b.offset + 196) == 0  # no waiting word left set
    assert (a.receive(timeout=0), b.receive(timeout=0)) == (b"x", b"y")
