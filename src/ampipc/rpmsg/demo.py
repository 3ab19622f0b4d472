"""``ampipc demo openamp``: the H7's OpenAMP set-up as two processes.

The CM7 process is the RPMsg host (VIRTIO driver); the CM4 process is the remote (VIRTIO device).
As in ST's examples (AN5617 §4.1): the remote creates its endpoint, which announces it by name;
the host's new-service callback creates the host endpoint bound to the announced address; the
host sends, the remote echoes, and when the host destroys its endpoint the remote's unbind
callback ends it. Kicks travel as HSEM "free" interrupts, one semaphore per direction (a
mailbox over the hardware semaphores, as OpenAMP uses on the H7). The parent process owns the
region and the virtual hardware; each core reports timestamped events, printed at the end as one
timeline with the counts of both sides.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from typing import Any

from ..hw import Hardware
from ..region import Region
from .api import RpmsgDevice, open_region
from .endpoints import Endpoint
from .transports import HsemDoorbell, RegionTransport, region_object_size

__all__ = ["run_demo"]

_SERVICE = "rpmsg-openamp-demo-channel"
_LINK = "openamp"
_HSEM_CM7_TO_CM4 = 0
_HSEM_CM4_TO_CM7 = 1


def _mailbox(hw: Hardware, core: str) -> Callable[[RegionTransport], HsemDoorbell]:
    ring, listen = (_HSEM_CM7_TO_CM4, _HSEM_CM4_TO_CM7) if core == "CM7" else (_HSEM_CM4_TO_CM7, _HSEM_CM7_TO_CM4)
    return lambda transport: HsemDoorbell(hw.core(core), ring, listen, transport.peer_watch)


def _report(events: Any, core: str, text: str) -> None:
    events.put((time.monotonic(), core, text))


def _cm4_remote(region_name: str, events: Any, timeout: float) -> None:
    with Region.attach(region_name) as region, Hardware.attach(region) as hw:
        _report(events, "CM4", "MX_OPENAMP_Init(RPMSG_REMOTE): waiting for DRIVER_OK")
        device = open_region(
            region, _LINK, "device", create=False, open_timeout=timeout, doorbell_factory=_mailbox(hw, "CM4")
        )
        try:
            _report(events, "CM4", f"link up: features {device.features:#x}, name service {'on' if device.ns_enabled else 'off'}")
            done: list[bool] = []
            echoed = [0]

            def on_message(ept: Endpoint, data: bytes, src: int) -> None:
                if echoed[0] == 0:
                    _report(events, "CM4", f"first message from {src:#x}: bound to it, echoing")
                ept.send_to(src, data)
                echoed[0] += 1

            def on_unbind(ept: Endpoint) -> None:
                _report(events, "CM4", "the host destroyed its endpoint (NS DESTROY): unbind callback")
                done.append(True)

            ept = device.create_endpoint(_SERVICE, on_message, on_unbind=on_unbind)
            _report(events, "CM4", f"OPENAMP_create_endpoint({_SERVICE!r}) -> {ept.addr:#x}, NS CREATE sent")
            deadline = time.monotonic() + timeout
            while not done and not device.closed and time.monotonic() < deadline:
                time.sleep(0.01)
            st = device.statistics
            _report(
                events,
                "CM4",
                f"done: echoed {echoed[0]}, received {st.messages_received}, kicks sent {st.kicks_sent}/received "
                f"{st.kicks_received}, HSEM interrupts {hw.core('CM4').statistics().handlers_run}, "
                f"protocol errors {st.protocol_errors}",
            )
        finally:
            device.close()


def _cm7_host(region_name: str, events: Any, count: int, timeout: float) -> None:
    with Region.attach(region_name) as region, Hardware.attach(region) as hw:
        bound: list[Endpoint] = []

        def on_new_service(device: RpmsgDevice, name: str, addr: int) -> None:
            _report(events, "CM7", f"new-service callback: {name!r} at {addr:#x}")
            bound.append(device.create_endpoint(name, dest=addr))
            _report(events, "CM7", f"host endpoint {bound[0].addr:#x} bound to {addr:#x}")

        _report(events, "CM7", "MX_OPENAMP_Init(RPMSG_MASTER): resource table, vrings, buffers, DRIVER_OK")
        _report(events, "CM7", f"mailbox: HSEM {_HSEM_CM7_TO_CM4} rings the CM4, HSEM {_HSEM_CM4_TO_CM7} the CM7")
        device = open_region(
            region, _LINK, "driver", create=True, open_timeout=timeout, on_new_service=on_new_service,
            doorbell_factory=_mailbox(hw, "CM7"),
        )
        ok = bad = 0
        try:
            deadline = time.monotonic() + timeout
            while not bound and time.monotonic() < deadline:
                time.sleep(0.001)
            if not bound:
                _report(events, "CM7", "no announcement from the remote")
                return
            ept = bound[0]
            _report(events, "CM7", f"sending {count} messages of 1..496 bytes")
            t0 = time.perf_counter()
            for i in range(count):
                n = 1 + (i * 37) % 496
                msg = bytes((i + k) & 0xFF for k in range(n))
                ept.send(msg)
                if ept.receive(timeout) == msg:
                    ok += 1
                else:
                    bad += 1
            elapsed = time.perf_counter() - t0
            _report(events, "CM7", f"{ok} echoes correct, {bad} wrong; {count / elapsed:.0f} round trips/s")
            ept.destroy()
            _report(events, "CM7", "endpoint destroyed (NS DESTROY sent)")
            st = device.statistics
            _report(
                events,
                "CM7",
                f"done: sent {st.messages_sent}, received {st.messages_received}, kicks sent {st.kicks_sent}/received "
                f"{st.kicks_received}, HSEM interrupts {hw.core('CM7').statistics().handlers_run}, "
                f"protocol errors {st.protocol_errors}",
            )
        finally:
            device.close()
            events.put((time.monotonic(), "CM7", f"RESULT {ok} {bad}"))


def run_demo(count: int = 1000, timeout: float = 30.0, *, quiet: bool = False) -> int:
    """Run the two cores; print the timeline (unless `quiet`) and the counts. Returns 0 if every echo matched."""
    ctx = mp.get_context("spawn")
    name = f"ampipc-demo-openamp-{os.getpid()}"
    events = ctx.Queue()
    size = region_object_size() + (1 << 20)
    with Region.create(name, size, replace_stale=True) as region, Hardware.create(region):
        remote = ctx.Process(target=_cm4_remote, args=(name, events, timeout), name="CM4")
        host = ctx.Process(target=_cm7_host, args=(name, events, count, timeout), name="CM7")
        t0 = time.monotonic()
        remote.start()
        host.start()
        collected: list[tuple[float, str, str]] = []
        deadline = time.monotonic() + timeout + 30
        while (remote.is_alive() or host.is_alive()) and time.monotonic() < deadline:
            try:
                collected.append(events.get(timeout=0.1))
            except queue.Empty:
                pass
        for p in (host, remote):
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        while True:
            try:
                collected.append(events.get(timeout=0.2))
            except queue.Empty:
                break
    events.close()
    result = [t for _, c, t in collected if t.startswith("RESULT")]
    if not quiet:
        print(f"ampipc demo openamp: CM7 = RPMsg host (VIRTIO driver), CM4 = remote (VIRTIO device), region {name}")
        for stamp, core, text in sorted(collected):
            if not text.startswith("RESULT"):
                print(f"  {1000 * (stamp - t0):9.1f} ms  {core}  {text}")
    ok, bad = (int(x) for x in result[0].split()[1:]) if result else (0, -1)
    good = bad == 0 and ok == count and host.exitcode == 0 and remote.exitcode == 0
    print(f"echoes: {ok} correct, {bad} wrong of {count}; exit codes CM7 {host.exitcode}, CM4 {remote.exitcode}")
    return 0 if good else 1
