"""OpenAMP's echo demo, both programs, over the Linux transport.

`run_echo_device` plays ``rpmsg-echo`` (VIRTIO device, socket server, table writer): it announces
the channel, echoes every message back to its sender, and exits when the peer destroys its
endpoint (name-service DESTROY) or sends the shutdown word 0xEF56A55A.

`run_echo_driver` plays ``rpmsg-echo-ping`` (VIRTIO driver, socket client): it announces the
channel, waits until bound, sends ``count`` payloads ``{u64 num; u64 size; u8 data[size] = 0xA5}``
of increasing size (1..480 data bytes, wrapping), checks every echo byte for byte, prints the
error count, destroys its endpoint and exits 0 only without error.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections.abc import Callable

from ..errors import IpcError
from ._wire import DEMO_CHANNEL, DEMO_SHM_NAME, DEMO_SHM_SIZE, DEMO_SOCKET_PATH
from .api import RpmsgDevice
from .endpoints import Endpoint
from .transports import LinuxTransport

__all__ = ["PING_MAX_DATA", "SHUTDOWN_WORD", "ping_payload", "run_echo_device", "run_echo_driver", "run_region_echo_device"]

SHUTDOWN_WORD = 0xEF56A55A
PING_MAX_DATA = 480
_PING_HDR = struct.Struct("<QQ")


def ping_payload(num: int, size: int) -> bytes:
    """The ping's message: ``{unsigned long num; unsigned long size; u8 data[size] = 0xA5}``."""
    return _PING_HDR.pack(num, size) + b"\xa5" * size


def _say(out: Callable[[str], None] | None, text: str) -> None:
    if out is None:
        print(text, flush=True)
    else:
        out(text)


def run_echo_device(
    *,
    shm_name: str = DEMO_SHM_NAME,
    shm_size: int = DEMO_SHM_SIZE,
    socket_path: str = DEMO_SOCKET_PATH,
    channel: str = DEMO_CHANNEL,
    open_timeout: float | None = None,
    out: Callable[[str], None] | None = None,
) -> int:
    """Serve one echo session as OpenAMP's ``rpmsg-echo``; returns the exit code."""
    transport = LinuxTransport("device", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path)
    _say(out, f"rpmsg-echo (ampipc, VIRTIO device): waiting for a driver on {socket_path}, shm {transport.shm_name}")
    device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False)
    done = threading.Event()
    reason = ["peer gone"]
    echoed = [0, 0]

    def on_message(ept: Endpoint, data: bytes, src: int) -> None:
        if len(data) >= 4 and struct.unpack_from("<I", data)[0] == SHUTDOWN_WORD:
            reason[0] = "shutdown message"
            done.set()
            return
        ept.send_to(src, data)
        echoed[0] += 1
        echoed[1] += len(data)

    def on_unbind(ept: Endpoint) -> None:
        reason[0] = "the peer destroyed its endpoint"
        done.set()

    try:
        ept = device.create_endpoint(channel, on_message, on_unbind=on_unbind)
        _say(out, f"endpoint {channel!r} at {ept.addr:#x} announced (name service {'on' if device.ns_enabled else 'off'})")
        while not done.is_set() and not device.closed:
            device.poll(0.1)  # single-threaded, as the C program: callbacks run here
        stats = device.statistics
        clean = done.is_set()
        _say(
            out,
            f"stopping ({reason[0]}): echoed {echoed[0]} messages ({echoed[1]} bytes), "
            f"protocol errors {stats.protocol_errors}",
        )
        return 0 if clean and stats.protocol_errors == 0 else 1
    finally:
        device.close()


def run_echo_driver(
    *,
    count: int = PING_MAX_DATA,
    shm_name: str = DEMO_SHM_NAME,
    shm_size: int = DEMO_SHM_SIZE,
    socket_path: str = DEMO_SOCKET_PATH,
    channel: str = DEMO_CHANNEL,
    open_timeout: float | None = 60.0,
    reply_timeout: float = 15.0,
    out: Callable[[str], None] | None = None,
) -> int:
    """Run OpenAMP's ``rpmsg-echo-ping`` against a device; returns 0 only if every echo matched."""
    transport = LinuxTransport("driver", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path)
    try:
        device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False)
    except (TimeoutError, IpcError, OSError) as exc:
        _say(out, f"rpmsg-echo-ping (ampipc): cannot start: {exc}")
        return 2
    errors = 0
    received = 0
    try:
        ept = device.create_endpoint(channel)
        try:
            ept.wait_bound(open_timeout)
        except TimeoutError:
            _say(out, f"no endpoint {channel!r} was announced by the device")
            return 2
        _say(out, f"bound {channel!r}: local {ept.addr:#x} -> remote {ept.dest:#x}; sending {count} payloads")
        t0 = time.perf_counter()
        for i in range(count):
            size = 1 + i % PING_MAX_DATA
            payload = ping_payload(i, size)
            ept.send(payload)
            try:
                echo = ept.receive(reply_timeout)
            except TimeoutError:
                _say(out, f"no echo for payload {i} within {reply_timeout} s")
                errors += 1
                break
            received += 1
            if echo != payload:
                errors += 1
                if errors <= 10:
                    _say(out, f"echo {i} differs: sent {len(payload)} bytes, got {len(echo)}")
        elapsed = time.perf_counter() - t0
        errors += device.statistics.protocol_errors
        rate = received / elapsed if elapsed > 0 else 0.0
        _say(out, f"**** test finished: {received} echoes, {rate:.0f} round trips/s; errors: {errors} ****")
        ept.destroy()
        return 0 if errors == 0 and received == count else 1
    except IpcError as exc:
        _say(out, f"link failed: {exc}")
        return 1
    finally:
        device.close()


def run_region_echo_device(region_name: str, link: str, service: str = DEMO_CHANNEL, *, open_timeout: float | None = 60.0) -> int:
    """The echo device over an ampipc Region link (the object ``link``, created by the driver)."""
    from ..region import Region
    from .api import open_region

    with Region.attach(region_name) as region:
        device = open_region(region, link, "device", create=False, open_timeout=open_timeout, io_thread=False)
        done = threading.Event()
        try:
            device.create_endpoint(service, lambda ept, data, src: ept.send_to(src, data), on_unbind=lambda ept: done.set())
            while not done.is_set() and not device.closed:
                device.poll(0.1)
            return 0 if done.is_set() and device.statistics.protocol_errors == 0 else 1
        finally:
            device.close()


if __name__ == "__main__":  # pragma: no cover - manual runs
    role = sys.argv[1] if len(sys.argv) > 1 else "device"
    sys.exit(run_echo_device() if role == "device" else run_echo_driver())
