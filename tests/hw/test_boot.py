"""Boot synchronisation of the CubeH7 dual-core template, across two processes, in both orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ampipc import MessageBuffer, Region
from ampipc.hw import Hardware, boot_ready, cm4_wait_for_boot, cm7_release_boot

from ._support import GENEROUS, boot_cm4_worker, wait_until

ECHOES = 200


def _cm7_prepares(region: Region) -> tuple[Hardware, MessageBuffer, MessageBuffer]:
    hw = Hardware.create(region)
    to_cm4 = MessageBuffer.create(region, "to-cm4", 256)
    to_cm7 = MessageBuffer.create(region, "to-cm7", 256)
    assert to_cm4.try_send(b"boot-0")  # ready before the release: the CM4 finds it at once
    return hw, to_cm4, to_cm7


def _cm7_converses(to_cm4: MessageBuffer, to_cm7: MessageBuffer) -> None:
    assert to_cm7.receive(timeout=GENEROUS) == b"BOOT-0"
    for i in range(1, ECHOES):
        to_cm4.send(b"boot-%d" % i, timeout=GENEROUS)
        assert to_cm7.receive(timeout=GENEROUS) == b"BOOT-%d" % i


def test_cm4_starts_first_and_waits_on_its_hsem_interrupt(
    make_region: Callable[..., Region], unique_name: Callable[..., str], spawn: Any
) -> None:
    name = unique_name("b")
    started = spawn.ctx.Event()
    child = spawn(boot_cm4_worker, name, started, ECHOES)
    assert started.wait(GENEROUS)  # the CM4 polls for a region that does not exist yet
    region = Region.create(name, 1 << 16)
    try:
        hw, to_cm4, to_cm7 = _cm7_prepares(region)
        cm4_view = hw.core("CM4").hsem
        # the CM4 has attached and activated the notification of HSEM 0: it now waits for the event
        wait_until(lambda: cm4_view.ier & 1 == 1 or child.exitcode is not None, what="the CM4 to listen")
        assert child.exitcode is None
        assert not boot_ready(hw)
        cm7_release_boot(hw)
        assert boot_ready(hw)
        assert not hw.core("CM7").hsem.is_taken(0)
        _cm7_converses(to_cm4, to_cm7)
        assert spawn.join(child) == 0
        hw.close()
    finally:
        region.close()


def test_cm7_releases_before_the_cm4_starts(region: Region, spawn: Any) -> None:
    hw, to_cm4, to_cm7 = _cm7_prepares(region)
    cm7_release_boot(hw)  # nobody listens yet: the boot state keeps the release observable
    started = spawn.ctx.Event()
    child = spawn(boot_cm4_worker, region.name, started, ECHOES)
    _cm7_converses(to_cm4, to_cm7)
    assert spawn.join(child) == 0
    hw.close()


def test_wait_for_boot_in_process_with_a_region_object(region: Region) -> None:
    hw = Hardware.create(region)
    cm7_release_boot(hw)
    attached = cm4_wait_for_boot(region, timeout=GENEROUS)
    assert attached.region is region
    assert attached.core("CM4").hsem.ier == 0
    attached.close()
    hw.close()


def test_wait_for_boot_times_out(region: Region, unique_name: Callable[..., str]) -> None:
    with pytest.raises(TimeoutError, match="region"):
        cm4_wait_for_boot(unique_name("nb"), timeout=0.05)
    with pytest.raises(TimeoutError, match="hardware object"):
        cm4_wait_for_boot(region, timeout=0.05)
    hw = Hardware.create(region)
    with pytest.raises(TimeoutError, match="boot release"):
        cm4_wait_for_boot(region, timeout=0.05)
    assert hw.core("CM4").hsem.ier == 0, "a timed-out wait leaves no notification enabled"
    with pytest.raises(ValueError):
        cm4_wait_for_boot(region, timeout=-1)
    with pytest.raises(ValueError):
        cm7_release_boot(hw, sem_id=32)
    hw.close()
