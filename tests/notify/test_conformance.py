"""Every strategy under the same channel workload: two processes, many channels, contents and order checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from notify_workers import TIMEOUT, cm4_exchange, exchange

from ampipc import Region, ResourceExhausted
from ampipc.ipc import Ipc
from ampipc.notify import STRATEGIES

MESSAGES = 10_000
HSEM_MAX_CHANNELS = 7  # (32 - 1 reserved) // 4


def channels_for(strategy: str) -> int:
    return HSEM_MAX_CHANNELS if strategy == "hsem" else 16


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_channels_both_ways(strategy: str, region: Region, spawn: Callable[..., tuple[Any, Any]]) -> None:
    channels = channels_for(strategy)
    with Ipc.init(region, channels=channels, buffer_size=160, strategy=strategy) as ipc:
        ipc.start()
        child, results = spawn(cm4_exchange, region.name, MESSAGES)
        mine = exchange(ipc, MESSAGES)
        theirs = results.get(timeout=TIMEOUT * 4)
        child.join(TIMEOUT)
    assert mine["errors"] == [] and theirs["errors"] == []
    assert mine["sent"] == mine["received"] == theirs["sent"] == theirs["received"] == channels * MESSAGES
    assert child.exitcode == 0
    if strategy != "direct":
        # the interrupt path really carried the wake-ups
        assert mine["strategy"]["events_handled"] > 0 and theirs["strategy"]["events_handled"] > 0
        assert mine["strategy"]["errors"] == theirs["strategy"]["errors"] == 0


def test_hsem_strategy_runs_out_of_semaphores(region: Region) -> None:
    with pytest.raises(ResourceExhausted, match="at most 7 channels"):
        Ipc.init(region, channels=8, strategy="hsem")
    assert [o for o in region.objects() if o.kind in ("ipc", "message_buffer")] == []


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_small_buffers_block_and_wake(strategy: str, region: Region, spawn: Callable[..., tuple[Any, Any]]) -> None:
    """Buffers holding about two messages: both sides block constantly and only the strategy wakes them."""
    with Ipc.init(region, channels=2, buffer_size=40, strategy=strategy) as ipc:
        ipc.start()
        child, results = spawn(cm4_exchange, region.name, 2000)
        mine = exchange(ipc, 2000)
        theirs = results.get(timeout=TIMEOUT * 4)
        child.join(TIMEOUT)
        stats = ipc.statistics(0)
    assert mine["errors"] == [] and theirs["errors"] == []
    assert mine["received"] == theirs["received"] == 4000
    assert stats.sent.messages_sent == stats.received.messages_received == 2000
