"""Code the spawned processes of the waiting tests run (importable by the spawn context)."""

from __future__ import annotations

import random
import time
from typing import Any

from ampipc import MessageBuffer, Region
from ampipc.ipc import Ipc

TIMEOUT = 60.0


def message(client: int, buffer: int, k: int) -> bytes:
    """A message that says who sent it, where, and its rank; its length varies."""
    return f"{client}:{buffer}:{k}:".encode() + bytes([k & 0xFF]) * (k % 17)


def client(region_name: str, client_id: int, buffer_names: list[str], count: int, seed: int) -> None:
    """Send `count` numbered messages to each buffer, in a random interleaving, with random pauses."""
    rng = random.Random(seed)
    with Region.attach(region_name) as region:
        buffers = [MessageBuffer.attach(region, n) for n in buffer_names]
        next_k = [0] * len(buffers)
        left = list(range(len(buffers)))
        while left:
            i = rng.choice(left)
            buffers[i].send(message(client_id, i, next_k[i]), timeout=TIMEOUT)
            next_k[i] += 1
            if next_k[i] == count:
                left.remove(i)
            if rng.random() < 0.002:
                import time

                time.sleep(rng.uniform(0, 0.01))  # let the server fall asleep in the wait


def channel_sender(region_name: str, count: int, seed: int, results: Any) -> None:
    """The CM4 of an Ipc: send `count` messages per channel, random channel order; echo nothing."""
    rng = random.Random(seed)
    try:
        with Region.attach(region_name) as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            next_k = [0] * ipc.channels
            left = list(range(ipc.channels))
            while left:
                c = rng.choice(left)
                ipc.send(c, message(0, c, next_k[c]), timeout=TIMEOUT)
                next_k[c] += 1
                if sum(next_k) % 150 == 0:
                    time.sleep(0.02)  # the server falls asleep: the next send must wake it
                if next_k[c] == count:
                    left.remove(c)
            # wait for the server's "done" before the strategy goes away (its interrupts serve the server's sends)
            ipc.receive(0, timeout=TIMEOUT)
        results.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put(repr(e))


def drain_slowly(region_name: str, name: str, count: int) -> None:
    """Receive `count` messages from `name`, slowly at first, so that its writer fills it and waits."""
    import time

    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, name)
        for k in range(count):
            if k < 5:
                time.sleep(0.05)
            got = buf.receive(timeout=TIMEOUT)
            assert got == message(9, 0, k), got


def rpmsg_echo_device(region_name: str, link: str, service: str) -> None:
    """The RPMsg device of a Region link: echo every message on `service` until the peer unbinds."""
    import threading

    from ampipc.rpmsg import Endpoint, open_region

    with Region.attach(region_name) as region:
        done = threading.Event()

        def echo(ept: Endpoint, data: bytes, src: int) -> None:
            ept.send_to(src, data)

        device = open_region(region, link, "device", create=False, open_timeout=TIMEOUT)
        try:
            device.create_endpoint(service, echo, on_unbind=lambda ept: done.set())
            if not done.wait(TIMEOUT):
                raise SystemExit(3)
        finally:
            device.close()


def power_sleeper(region_name: str, rounds: int, results: Any) -> None:
    """Act as the CM7: sleep in STOP (or SLEEP on odd rounds) until woken, `rounds` times; report."""
    from ampipc.hw import Hardware
    from ampipc.hw.power import PowerState

    try:
        with Region.attach(region_name) as region:
            hw = Hardware.attach(region)
            try:
                core = hw.core("CM7")
                power = core.power
                woken = 0
                seq = power.wake_sequence
                power.sleep(PowerState.STOP, timeout=TIMEOUT, since=seq)  # until the test's first wake
                for k in range(rounds):
                    seq = power.wake_sequence
                    region.mapping.store_u32(region.lookup("ack").offset, k + 1)  # "about to sleep, round k"
                    mode = PowerState.SLEEP if k % 2 else PowerState.STOP
                    woken += power.sleep(mode, timeout=TIMEOUT, since=seq)
                results.put(("ok", woken))
            finally:
                hw.close()
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put((repr(e), 0))


def write_then_close(region_name: str, name: str, count: int, closed: Any, release: Any) -> None:
    """Send `count` messages, close the writer side, then stay alive until told (no PeerDied)."""
    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, name)
        for k in range(count):
            buf.send(message(1, 0, k), timeout=TIMEOUT)
        buf.close()
        closed.set()
        release.wait(TIMEOUT)


def read_then_close(region_name: str, name: str, count: int, closed: Any, release: Any) -> None:
    """Receive `count` messages, close the reader side, then stay alive until told."""
    with Region.attach(region_name) as region:
        buf = MessageBuffer.attach(region, name)
        for k in range(count):
            got = buf.receive(timeout=TIMEOUT)
            assert got == message(2, 0, k), got
        buf.close()
        closed.set()
        release.wait(TIMEOUT)
