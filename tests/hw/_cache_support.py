"""Child targets of the chip-memory tests (module level, for the spawn start method).

Each one attaches to the region by name as the CM4 and exits non-zero when a check fails; every
wait is bounded by GENEROUS seconds.
"""

from __future__ import annotations

from typing import Any

from ampipc import MessageBuffer, Region

GENEROUS = 60.0


def cm4_echo(name: str, count: int, results: Any) -> None:
    """Echo `count` messages from ``to_cm4`` back on ``to_cm7`` (blocking), then report what came."""
    got: list[bytes] = []
    try:
        with Region.attach(name, core="CM4") as region:
            rx = MessageBuffer.attach(region, "to_cm4")
            tx = MessageBuffer.attach(region, "to_cm7")
            for _ in range(count):
                message = rx.receive(timeout=GENEROUS)
                got.append(message)
                tx.send(message, timeout=GENEROUS)
    finally:
        results.put(got)


def cm4_poll_once(name: str, results: Any) -> None:
    """Read ``to_cm4`` once, without blocking, as the CM4: report what was there (None if empty)."""
    message = None
    try:
        with Region.attach(name, core="CM4") as region:
            rx = MessageBuffer.attach(region, "to_cm4")
            message = rx.try_receive()
    finally:
        results.put(message)


def cm4_send(name: str, payload: bytes, results: Any) -> None:
    """Send `payload` on ``to_cm7`` as the CM4 (memory directly: the CM4 has no cache)."""
    ok = False
    try:
        with Region.attach(name, core="CM4") as region:
            tx = MessageBuffer.attach(region, "to_cm7")
            tx.send(payload, timeout=GENEROUS)
            ok = True
    finally:
        results.put(ok)


def cm4_toggle_receive(name: str, results: Any) -> None:
    """As the CM4, attach the toggle channels, start them and wait for one message on channel 0."""
    from ampipc import Ipc
    from ampipc.errors import Timeout

    got: bytes | None = None
    try:
        with Region.attach(name, core="CM4") as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            try:
                got = ipc.receive(0, timeout=10)
            except Timeout:
                got = None
    finally:
        results.put(got)


def cm4_toggle_echo(name: str, count: int, results: Any) -> None:
    """As the CM4, echo `count` messages of channel 0 back on channel 0 over the toggle strategy."""
    from ampipc import Ipc

    echoed = 0
    try:
        with Region.attach(name, core="CM4") as region, Ipc.attach(region, core="CM4") as ipc:
            ipc.start()
            for _ in range(count):
                ipc.send(0, ipc.receive(0, timeout=GENEROUS), timeout=GENEROUS)
                echoed += 1
    finally:
        results.put(echoed)


def cm4_pool_accept(chip: str, plain: str, results: Any) -> None:
    """As the CM4, take one descriptor from ``desc`` (a plain region) and return the slot's bytes."""
    from ampipc.services import PayloadPool

    data = None
    try:
        with Region.attach(chip, core="CM4") as region, Region.attach(plain) as side:
            pool = PayloadPool.attach(region, "frames")
            desc = MessageBuffer.attach(side, "desc")
            with pool.receive(desc, timeout=GENEROUS) as payload:
                data = bytes(payload.data)
            pool.close()
    finally:
        results.put(data)


def cm4_pool_produce(chip: str, plain: str, frames: list[bytes], results: Any) -> None:
    """As the CM4, fill and commit one frame per loan of the one-slot pool (each loan waits for the
    CM7's release of the previous frame)."""
    from ampipc.services import PayloadPool

    sent = 0
    try:
        with Region.attach(chip, core="CM4") as region, Region.attach(plain) as side:
            pool = PayloadPool.attach(region, "frames")
            desc = MessageBuffer.attach(side, "desc")
            for frame in frames:
                loan = pool.loan(timeout=GENEROUS)
                loan.view[: len(frame)] = frame
                loan.commit(desc, length=len(frame), timeout=GENEROUS)
                sent += 1
            pool.close()
    finally:
        results.put(sent)


def cm4_rpmsg_open(name: str, results: Any) -> None:
    """As the CM4, try to open the device side of link ``link0``; report whether it opened."""
    from ampipc.errors import IpcError
    from ampipc.rpmsg import open_region

    opened = False
    try:
        with Region.attach(name, core="CM4") as region:
            try:
                device = open_region(region, "link0", "device", create=False, open_timeout=3, num=8)
            except IpcError:
                pass
            else:
                opened = True
                device.close()
    finally:
        results.put(opened)


def cm4_rpmsg_echo(name: str, results: Any) -> None:
    """As the CM4, play the device of ``link0``: echo every message until the driver unbinds."""
    import threading

    from ampipc.rpmsg import open_region

    echoed = [0]
    try:
        with Region.attach(name, core="CM4") as region:
            done = threading.Event()

            def echo(ept: Any, data: bytes, src: int) -> None:
                ept.send_to(src, data)
                echoed[0] += 1

            device = open_region(region, "link0", "device", create=False, open_timeout=GENEROUS, num=8)
            try:
                device.create_endpoint("echo", echo, on_unbind=lambda ept: done.set())
                done.wait(GENEROUS * 4)
            finally:
                device.close()
    finally:
        results.put(echoed[0])
