"""Helpers of the rpmsg tests: an in-process loopback link, checked payloads, child targets.

Child-process targets live here, at module level, so the spawn start method can import them.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ampipc import Region
from ampipc.hw import Hardware
from ampipc.rpmsg import Endpoint, RpmsgDevice, open_region
from ampipc.rpmsg._window import Window
from ampipc.rpmsg.echo import run_echo_device
from ampipc.rpmsg.rpmsg_virtio import Role, RpmsgVirtio
from ampipc.rpmsg.transports import HsemDoorbell, RegionTransport, demo_table

POOL = (0x10000, 0x40000)
SHM_SIZE = 0x80000


def payload(i: int, rng: random.Random) -> bytes:
    """Message ``i``: 1..496 bytes of random content, the size cycling through every value."""
    n = 1 + i % 496
    return rng.randbytes(n)


def core_pair(mem: bytearray | memoryview | None = None) -> tuple[bytearray | memoryview, RpmsgVirtio, RpmsgVirtio]:
    """A started driver/device pair of protocol cores over one byte image of OpenAMP's layout."""
    if mem is None:
        mem = bytearray(SHM_SIZE)
    Window(mem).write(0, demo_table())
    drv = RpmsgVirtio(Window(mem), Role.DRIVER, pool_offset=POOL[0], pool_size=POOL[1])
    dev = RpmsgVirtio(Window(mem), Role.DEVICE, pool_offset=POOL[0], pool_size=POOL[1])
    drv.start_driver()
    assert dev.device_ready()
    dev.start_device()
    assert drv.take_kick()  # the driver notifies after DRIVER_OK
    assert not dev.take_kick()
    return mem, drv, dev


class EventDoorbell:
    """An in-process doorbell (two threading.Events), for links inside one test process."""

    def __init__(self, mine: threading.Event, theirs: threading.Event) -> None:
        self._mine = mine
        self._theirs = theirs

    @property
    def peer_gone(self) -> bool:
        return False

    def ring(self) -> None:
        self._theirs.set()

    def wait(self, timeout: float) -> bool:
        if self._mine.wait(timeout):
            self._mine.clear()
            return True
        return False

    def close(self) -> None:
        pass


class LoopbackTransport:
    """OpenAMP's layout in a bytearray; the table is written by `loopback_pair`."""

    def __init__(self, mem: bytearray, role: Role, doorbell: EventDoorbell) -> None:
        self.role = role
        self.window = Window(mem)
        self.doorbell = doorbell
        self.rsc_offset = 0
        self.pool_offset, self.pool_size = POOL
        self.buffer_size = 512
        self.writes_table = False
        self.description = f"loopback-{role.value}"

    def open(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def loopback_pair(**device_kwargs: object) -> Iterator[tuple[RpmsgDevice, RpmsgDevice]]:
    """Driver and device `RpmsgDevice`s in this process, over one bytearray."""
    mem = bytearray(SHM_SIZE)
    Window(mem).write(0, demo_table())
    to_driver, to_device = threading.Event(), threading.Event()
    drv = RpmsgDevice(LoopbackTransport(mem, Role.DRIVER, EventDoorbell(to_driver, to_device)), **device_kwargs)  # type: ignore[arg-type]
    try:
        dev = RpmsgDevice(LoopbackTransport(mem, Role.DEVICE, EventDoorbell(to_device, to_driver)), **device_kwargs)  # type: ignore[arg-type]
        try:
            yield drv, dev
        finally:
            dev.close()
    finally:
        drv.close()


@contextmanager
def socket_dir() -> Iterator[str]:
    """A private directory for socket files (short path: AF_UNIX paths are limited to 108 bytes)."""
    path = tempfile.mkdtemp(prefix="ampipc-rpmsg-", dir="/tmp")
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


class NoLink:
    """A link that refuses to send: endpoint-table tests run without a transport."""

    def _send(self, *a: object) -> bool:
        raise AssertionError

    def _destroy_endpoint(self, endpoint: Endpoint) -> None:
        pass

    def _wait_slice(self, endpoint: Endpoint, timeout: float) -> None:
        pass

    def _check_open(self) -> None:
        pass

    def _wait_event(self, event: object, timeout: float) -> bool:
        return False


# ---- child-process targets ------------------------------------------------------------------


def hsem_doorbell(hw: Hardware, core_name: str) -> Callable[[RegionTransport], HsemDoorbell]:
    """The HSEM doorbell of one side: the CM7 (driver) rings semaphore 1 and listens on 2, the CM4 the reverse."""
    ring, listen = (1, 2) if core_name == "CM7" else (2, 1)
    core = hw.core(core_name)
    return lambda transport: HsemDoorbell(core, ring, listen, transport.peer_watch)


def region_echo_device(region_name: str, link: str, service: str, doorbell: str = "futex") -> None:
    """Attach to the region, play the device, echo every message until the peer unbinds."""
    with Region.attach(region_name) as region:
        done = threading.Event()

        def echo(ept: Endpoint, data: bytes, src: int) -> None:
            ept.send_to(src, data)

        hw = Hardware.attach(region) if doorbell == "hsem" else None
        factory = hsem_doorbell(hw, "CM4") if hw is not None else None
        device = open_region(region, link, "device", create=False, open_timeout=60, doorbell_factory=factory)
        try:
            device.create_endpoint(service, echo, on_unbind=lambda ept: done.set())
            while not done.wait(0.05):
                if device.closed:
                    raise SystemExit(3)
            if device.statistics.protocol_errors:
                raise SystemExit(4)
        finally:
            device.close()
            if hw is not None:
                hw.close()


def linux_echo_device(shm_name: str, socket_path: str) -> None:
    """OpenAMP's rpmsg-echo played by ampipc (the real program of `ampipc openamp-echo`)."""
    raise SystemExit(run_echo_device(shm_name=shm_name, socket_path=socket_path, open_timeout=60, out=lambda s: None))


def linux_echo_driver(shm_name: str, socket_path: str, count: int) -> None:
    from ampipc.rpmsg.echo import run_echo_driver

    raise SystemExit(run_echo_driver(count=count, shm_name=shm_name, socket_path=socket_path, open_timeout=60, out=lambda s: None))
