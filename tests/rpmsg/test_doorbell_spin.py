"""The spinning futex doorbell, and the C path talking to the Python path across processes.

Nothing here is timed: the spin either sees the ring or gives way to the futex sleep, and both must
deliver every kick; only counters and contents are checked.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from ampipc import Region, RegionClosed, _vring
from ampipc.rpmsg import Endpoint, open_region
from ampipc.rpmsg.transports import FutexDoorbell, RegionTransport

from ._support import payload

ECHOES = 3000


def test_spin_wait_returns_the_changed_value() -> None:
    word = bytearray(16)
    word[4:8] = (7).to_bytes(4, "little")
    assert _vring.spin_wait_u32(word, 4, 3, 0.5) == 7  # already different: returns at once
    assert _vring.spin_wait_u32(word, 4, 7, 0.0001) == 7  # unchanged: returns seen when the spin ends
    assert _vring.spin_wait_u32(word, 0, 0, 0.0) == 0


def test_spin_wait_sees_another_thread_store() -> None:
    area = bytearray(64)
    view = memoryview(area)

    def store() -> None:
        view[8:12] = (0xABCD).to_bytes(4, "little")

    timer = threading.Timer(0.01, store)
    timer.start()
    try:
        seen = 0
        for _ in range(300):  # up to 300 spins of 0.1 s: the store lands in one of them
            seen = _vring.spin_wait_u32(area, 8, 0, 0.1)
            if seen:
                break
        assert seen == 0xABCD
    finally:
        timer.join()
        view.release()


@pytest.mark.parametrize(
    ("offset", "seconds"),
    [(2, 0.0), (-4, 0.0), (64, 0.0), (61, 0.0), (0, -1.0), (0, 1.5), (0, float("nan"))],
)
def test_spin_wait_refuses_bad_arguments(offset: int, seconds: float) -> None:
    with pytest.raises(ValueError):
        _vring.spin_wait_u32(bytearray(64), offset, 0, seconds)


def test_spin_wait_on_a_closed_region_raises(make_region: Callable[..., Region]) -> None:
    region = make_region(1 << 16)
    mapping = region.mapping
    region.close()
    with pytest.raises(RegionClosed):
        _vring.spin_wait_u32(mapping, 0, 0, 0.001)


def bell_pong(region_name: str, offset: int, spin: float, rounds: int) -> None:
    """The other side of test_doorbell_ping_pong: ring once when ready, then answer each ring with a ring."""
    with Region.attach(region_name) as region:
        bell = FutexDoorbell(region.mapping, offset, offset + 0x40, spin=spin)
        bell.ring()
        for _ in range(rounds):
            while not bell.wait(30.0):
                pass
            bell.ring()


@pytest.mark.parametrize("spin", [0.0, 50e-6, 0.002])
def test_doorbell_ping_pong(make_region: Callable[..., Region], spawn, spin: float) -> None:  # type: ignore[no-untyped-def]
    """Thousands of kicks each way between two processes; every one is seen, whether spun for or slept on."""
    region = make_region(1 << 16)
    offset = region.allocate("bells", "test", 0x100)
    rounds = 2000
    bell = FutexDoorbell(region.mapping, offset + 0x40, offset, spin=spin)
    child = spawn(bell_pong, region.name, offset, spin, rounds)
    assert bell.wait(30.0) or bell.wait(30.0), "the child never became ready"
    for i in range(rounds):
        bell.ring()
        answered = False
        for _ in range(2):  # two waits of 30 s at most
            if bell.wait(30.0):
                answered = True
                break
        assert answered, f"no answer to ring {i}"
    assert spawn.join(child, 60) == 0
    assert region.mapping.load_u32(offset + 0x40) == rounds  # the child's counter: every ring counted
    assert region.mapping.load_u32(offset) == rounds + 1  # ours: the ready ring and one answer per ring
    if spin == 0.0:
        assert bell.spins_won == 0


def test_doorbell_spin_is_bounded() -> None:
    with pytest.raises(ValueError):
        FutexDoorbell(None, 0, 0, spin=2.0)  # type: ignore[arg-type]


def mixed_echo_device(region_name: str, link: str, fast: bool, spin: float) -> None:
    """Echo over a Region link on the path ``fast`` says, until the peer unbinds."""
    with Region.attach(region_name) as region:
        done = threading.Event()

        def echo(ept: Endpoint, data: bytes, src: int) -> None:
            ept.send_to(src, data)

        device = open_region(region, link, "device", create=False, open_timeout=60, fast=fast, spin=spin)
        try:
            device.create_endpoint("mixed", echo, on_unbind=lambda ept: done.set())
            while not done.wait(0.05):
                if device.closed:
                    raise SystemExit(3)
            if device.statistics.protocol_errors:
                raise SystemExit(4)
        finally:
            device.close()


@pytest.mark.parametrize(("driver_fast", "device_fast", "spin"), [(True, False, 0.0), (False, True, 50e-6), (True, True, 0.0)])
def test_c_and_python_paths_interoperate(  # type: ignore[no-untyped-def]
    make_region: Callable[..., Region], spawn, driver_fast: bool, device_fast: bool, spin: float
) -> None:
    """One side on the C path, the other on the reference (or both on C with the spin off): the wire is the same."""
    region = make_region(1 << 20)
    child = spawn(mixed_echo_device, region.name, "mixed0", device_fast, spin)
    host = open_region(region, "mixed0", "driver", create=True, open_timeout=60, fast=driver_fast, spin=spin)
    try:
        assert isinstance(host.transport, RegionTransport)
        ept = host.create_endpoint("mixed")
        ept.wait_bound(60)
        rng = random.Random(11)
        for i in range(ECHOES):
            data = payload(i, rng)
            ept.send(data, timeout=30)
            assert ept.receive(30) == data, f"echo {i} differs"
        ept.destroy()
        assert spawn.join(child, 60) == 0
        assert host.statistics.protocol_errors == 0
        assert host.statistics.messages_received == ECHOES
    finally:
        host.close()
