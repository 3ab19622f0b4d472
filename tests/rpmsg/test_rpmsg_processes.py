"""Two real processes over both transports: echoes checked byte for byte, the echo programs, the demo."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from ampipc import Region
from ampipc.hw import Hardware
from ampipc.errors import PeerDied
from ampipc.rpmsg import DEMO_CHANNEL, open_linux, open_region
from ampipc.rpmsg.demo import run_demo

from ._support import (
    linux_echo_device,
    linux_echo_driver,
    payload,
    hsem_doorbell,
    region_echo_device,
    socket_dir,
)

ECHOES = 10_000


def echo_many(ept, count: int, seed: int) -> int:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    sizes = set()
    for i in range(count):
        data = payload(i, rng)
        ept.send(data, timeout=30)
        assert ept.receive(30) == data, f"echo {i} differs"
        sizes.add(len(data))
    return len(sizes)


@pytest.mark.parametrize("doorbell", ["futex", "hsem"])
def test_region_transport_two_processes(make_region: Callable[..., Region], spawn, doorbell: str) -> None:  # type: ignore[no-untyped-def]
    region = make_region(1 << 20)
    hw = Hardware.create(region)
    factory = hsem_doorbell(hw, "CM7") if doorbell == "hsem" else None
    child = spawn(region_echo_device, region.name, "link0", "echo", doorbell)
    host = open_region(region, "link0", "driver", create=True, open_timeout=60, doorbell_factory=factory)
    try:
        ept = host.create_endpoint("echo")
        ept.wait_bound(60)
        assert echo_many(ept, ECHOES, 7) == 496
        ept.destroy()
        assert spawn.join(child, 60) == 0
        assert host.statistics.protocol_errors == 0
        assert host.statistics.messages_received == ECHOES
        if doorbell == "hsem":
            # the kicks really travelled as HSEM free interrupts
            assert hw.core("CM7").statistics().handlers_run > 0
    finally:
        host.close()
        hw.close()


def test_linux_transport_two_processes_against_the_echo_program(unique_name, spawn) -> None:  # type: ignore[no-untyped-def]
    shm = unique_name("lx")
    with socket_dir() as d:
        sock = os.path.join(d, "event.0")
        child = spawn(linux_echo_device, shm, sock)
        try:
            host = open_linux("driver", shm_name=shm, socket_path=sock, open_timeout=60)
            try:
                ept = host.create_endpoint(DEMO_CHANNEL)
                ept.wait_bound(60)
                assert ept.dest == 0x400 and ept.addr == 0x400
                assert echo_many(ept, ECHOES, 11) == 496
                ept.destroy()
                assert spawn.join(child, 60) == 0  # the echo exits on NS DESTROY, without error
                assert host.statistics.protocol_errors == 0
            finally:
                host.close()
            assert not os.path.exists(f"/dev/shm/{shm}")  # the server removed its shm file
            assert not os.path.exists(sock)
        finally:
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")


def test_echo_programs_against_each_other(unique_name, spawn) -> None:  # type: ignore[no-untyped-def]
    shm = unique_name("ep")
    with socket_dir() as d:
        sock = os.path.join(d, "event.0")
        try:
            driver = spawn(linux_echo_driver, shm, sock, 480)  # the client retries until the server is up
            device = spawn(linux_echo_device, shm, sock)
            assert spawn.join(driver, 60) == 0
            assert spawn.join(device, 60) == 0
        finally:
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")


def test_demo_openamp(capsys) -> None:  # type: ignore[no-untyped-def]
    assert run_demo(count=200) == 0
    out = capsys.readouterr().out
    assert "new-service callback: 'rpmsg-openamp-demo-channel' at 0x400" in out
    assert "echoes: 200 correct, 0 wrong of 200" in out


def test_region_peer_death_closes_the_link(make_region: Callable[..., Region], spawn) -> None:  # type: ignore[no-untyped-def]
    region = make_region(1 << 20)
    child = spawn(region_echo_device, region.name, "link1", "echo")
    host = open_region(region, "link1", "driver", create=True, open_timeout=60)
    try:
        ept = host.create_endpoint("echo")
        ept.wait_bound(60)
        ept.send(b"alive?")
        assert ept.receive(30) == b"alive?"
        child.kill()
        with pytest.raises(PeerDied):
            ept.receive(60)
        assert host.closed and "peer" in (host.closed_reason or "")
    finally:
        host.close()
