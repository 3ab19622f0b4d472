"""wait_any over Ipc channels with every notification strategy: the interrupt path wakes the waiter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ampipc import Ipc, PeerClosed, Region, wait_any
from ampipc.notify import STRATEGIES
from ampipc.waiting import Channel

from ._workers import TIMEOUT, channel_sender, message

CHANNELS = 6  # the hsem strategy fits 7 (4 semaphores per channel)
COUNT = 300


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_wait_any_on_channels(region: Region, spawn: Callable[..., object], strategy: str) -> None:
    results = spawn.ctx.Queue()  # type: ignore[attr-defined]
    with Ipc.init(region, channels=CHANNELS, buffer_size=512, strategy=strategy) as ipc:
        ipc.start()
        proc = spawn(channel_sender, region.name, COUNT, 7, results)
        channels = [Channel(ipc, c) for c in range(CHANNELS)]
        received: dict[int, list[bytes]] = {c: [] for c in range(CHANNELS)}
        total = 0
        while total < CHANNELS * COUNT:
            ready = wait_any(channels, TIMEOUT)
            assert ready, "nothing arrived within the timeout"
            for ch in ready:
                assert isinstance(ch, Channel)
                try:
                    while (m := ch.try_receive()) is not None:
                        received[ch.channel].append(m)
                        total += 1
                except PeerClosed:
                    pytest.fail(f"channel {ch.channel} closed before all its messages arrived")
        ipc.send(0, b"done", timeout=TIMEOUT)
        assert results.get(timeout=TIMEOUT) == "ok"
        assert spawn.join(proc) == 0  # type: ignore[attr-defined]
        assert received == {c: [message(0, c, k) for k in range(COUNT)] for c in range(CHANNELS)}
        # the waiter slept and was woken through the strategy's own path (a lost wake-up would still
        # get through at the 100 ms re-check, but would not be counted as a wake-up)
        assert sum(ipc.rx_buffer(c).statistics().reader_wakeups for c in range(CHANNELS)) > 0
        if strategy != "direct":
            assert ipc.strategy_statistics()["events_handled"] > 0


def test_an_ipc_as_a_whole_is_ready_when_any_channel_is(region: Region) -> None:
    with Ipc.init(region, channels=3, strategy="direct") as ipc:
        other = Ipc.attach(region, core="CM4")
        try:
            assert wait_any([ipc], 0) == []
            other.send(2, b"x")
            assert wait_any([ipc, Channel(ipc, 0)], 0) == [ipc]
            assert wait_any([Channel(ipc, 2)], 0) != []
            assert ipc.receive(2) == b"x"
        finally:
            other.close()
    with pytest.raises(ValueError):
        Channel(ipc, 3)
    with pytest.raises(TypeError):
        Channel(object(), 0)  # type: ignore[arg-type]
