"""The buffer behaviours, run over every notification strategy.

With a strategy installed, the buffers' completion hooks ring the strategy's doorbell instead of
waking the peer directly, so each blocking behaviour of the foundation is checked again here with
the wake-up coming through the interrupt path. Spinning is off (spin 0): every wait is a futex sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from notify_workers import (
    RX_WAITING,
    TIMEOUT,
    cm4_blocked_reader,
    cm4_echo,
    cm4_frees_space,
    wait_until_blocked,
)

from ampipc import MessageTooLarge, Region
from ampipc.ipc import Ipc
from ampipc.notify import STRATEGIES

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=sorted(STRATEGIES))
def ipc(request: pytest.FixtureRequest, region: Region) -> Iterator[Ipc]:
    with Ipc.init(region, channels=2, buffer_size=64, strategy=request.param) as ipc:
        for c in range(ipc.channels):
            ipc.tx_buffer(c).spin = 0
            ipc.rx_buffer(c).spin = 0
        ipc.start()
        yield ipc


def test_blocked_reader_is_woken_by_the_writer(ipc: Ipc, spawn: Callable[..., tuple[Any, Any]]) -> None:
    child, results = spawn(cm4_blocked_reader, ipc.region.name)
    wait_until_blocked(ipc, ipc.tx_buffer(0), RX_WAITING)  # the CM4 sleeps in receive
    ipc.send(0, b"wake up", timeout=TIMEOUT)
    assert ipc.receive(0, timeout=TIMEOUT) == b"ack:wake up"
    out = results.get(timeout=TIMEOUT)
    child.join(TIMEOUT)
    assert out.get("got") == b"wake up", out
    assert child.exitcode == 0
    assert ipc.tx_buffer(0).statistics().receive_waits >= 1
    if ipc.strategy.name != "direct":
        assert out["strategy"]["events_handled"] > 0  # the wake-up came through the CM4's interrupt


def test_blocked_writer_is_woken_by_the_reader(ipc: Ipc, spawn: Callable[..., tuple[Any, Any]]) -> None:
    sent = []
    k = 0
    while ipc.try_send(0, b"m%03d" % k):
        sent.append(b"m%03d" % k)
        k += 1
    assert sent, "the channel took no message at all"
    child, results = spawn(cm4_frees_space, ipc.region.name)
    blocked = b"m%03d" % k
    ipc.send(0, blocked, timeout=TIMEOUT)  # sleeps until the CM4 frees space
    sent.append(blocked)
    ipc.send(0, b"end", timeout=TIMEOUT)
    out = results.get(timeout=TIMEOUT)
    child.join(TIMEOUT)
    assert out.get("received") == sent, out
    assert ipc.tx_buffer(0).statistics().send_waits >= 1
    if ipc.strategy.name != "direct":
        assert ipc.strategy_statistics()["events_handled"] > 0


def test_ping_pong_with_both_sides_sleeping(ipc: Ipc, spawn: Callable[..., tuple[Any, Any]]) -> None:
    rounds = 2_000
    child, results = spawn(cm4_echo, ipc.region.name, rounds)
    for k in range(rounds):
        msg = k.to_bytes(4, "little") * (1 + k % 5)
        ipc.send(0, msg, timeout=TIMEOUT)
        assert ipc.receive(0, timeout=TIMEOUT) == msg
    out = results.get(timeout=TIMEOUT)
    child.join(TIMEOUT)
    assert out == {"echoed": rounds}


def test_timeouts_sizes_and_empty_messages(ipc: Ipc) -> None:
    with pytest.raises(TimeoutError):
        ipc.receive(1, timeout=0.05)
    assert ipc.try_receive(1) is None
    capacity = ipc.tx_buffer(1).capacity
    with pytest.raises(MessageTooLarge):
        ipc.send(1, bytes(capacity - 3), timeout=None)  # never fits: raised at once, never a hang
    ipc.send(1, bytes(capacity - 4), timeout=0)  # exactly fits
    with pytest.raises(TimeoutError):
        ipc.send(1, b"", timeout=0.05)
    assert ipc.send_from_isr(1, b"") is False
    assert ipc.tx_buffer(1).is_full
