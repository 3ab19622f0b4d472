"""RPMsg endpoints as waitables (wait_any, receive_async), and the cores' low-power model across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ampipc import Region, wait_any
from ampipc.errors import CorruptRegion
from ampipc.hw import Hardware
from ampipc.hw.power import PowerState
from ampipc.rpmsg import open_region

from ._workers import TIMEOUT, power_sleeper, rpmsg_echo_device


def test_an_endpoint_is_waitable_and_awaitable(make_region: Callable[..., Region], spawn: Callable[..., object]) -> None:
    region = make_region(1 << 20)
    child = spawn(rpmsg_echo_device, region.name, "link0", "echo")
    host = open_region(region, "link0", "driver", create=True, open_timeout=TIMEOUT)
    try:
        ept = host.create_endpoint("echo")
        ept.wait_bound(TIMEOUT)
        assert wait_any([ept], 0) == []
        for k in range(50):
            ept.send(b"ping %d" % k)
            assert wait_any([ept], TIMEOUT) == [ept]
            assert ept.receive(0) == b"ping %d" % k
        assert wait_any([ept], 0) == []

        async def main() -> list[bytes]:
            got = []
            for k in range(200):
                ept.send(b"async %d" % k)
                got.append(await ept.receive_async(timeout=TIMEOUT))  # type: ignore[attr-defined]
            return got

        assert asyncio.run(main()) == [b"async %d" % k for k in range(200)]
        ept.destroy()
        assert spawn.join(child) == 0  # type: ignore[attr-defined]
    finally:
        host.close()


def test_a_core_sleeps_and_is_woken_across_processes(region: Region, spawn: Callable[..., object]) -> None:
    rounds = 20
    results = spawn.ctx.Queue()  # type: ignore[attr-defined]
    ack = region.allocate("ack", "test_words", 64)
    with Hardware.create(region) as hw:
        cm7_power = hw.core("CM7").power
        assert hw.core("CM7").state is PowerState.RUN
        proc = spawn(power_sleeper, region.name, rounds, results)
        deadline = time.monotonic() + TIMEOUT
        while cm7_power.state is not PowerState.STOP:  # the other process is in STOP: every process sees it
            assert time.monotonic() < deadline
            time.sleep(0.001)
        cm7_power.stamp_event()
        assert cm7_power.wake() is not None  # the first wake, with a latency from the stamp
        latencies = 1
        for k in range(rounds):
            while region.mapping.load_u32(ack) != k + 1:
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            cm7_power.stamp_event()
            if cm7_power.wake() is not None:
                latencies += 1
        status, woken = results.get(timeout=TIMEOUT)
        assert status == "ok"
        assert woken == rounds  # every sleep ended by a wake, none by its timeout
        assert spawn.join(proc) == 0  # type: ignore[attr-defined]
        stats = cm7_power.statistics()
        assert stats.state is PowerState.RUN
        assert stats.wakeups == rounds + 1
        assert stats.latencies_measured == latencies == rounds + 1
        assert stats.time_in_stop > 0 and stats.time_in_sleep > 0 and stats.time_in_run > 0
        assert 0 < stats.mean_wake_latency <= stats.max_wake_latency


def test_power_states_and_bad_input(region: Region) -> None:
    with Hardware.create(region) as hw:
        power = hw.core("CM4").power
        assert power is hw.core("CM4").power
        power.enter(PowerState.SLEEP)
        assert hw.core("CM4").state is PowerState.SLEEP
        power.enter(PowerState.RUN)
        assert power.sleep(PowerState.STOP, timeout=0.01) is False  # nobody woke it: the timeout
        assert power.state is PowerState.RUN
        s = power.statistics()
        assert s.wakeups == 0 and s.latencies_measured == 0 and s.time_in_stop > 0 and s.time_in_sleep > 0
        with pytest.raises(ValueError):
            power.sleep(PowerState.RUN)
        with pytest.raises(ValueError):
            power.sleep(PowerState.STOP, timeout=-1)
        region.mapping.store_u32(power._base, 7)  # a hostile state word
        with pytest.raises(CorruptRegion):
            _ = power.state
