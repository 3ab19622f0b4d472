"""OpenAMP's matrix_multiply demo, both programs: ``ampipc openamp-matrix --role device|driver``.

`run_matrix_device` plays ``matrix_multiplyd`` (VIRTIO device, proc 0: it writes the resource table
and, over the Linux transport, serves the socket): it announces ``rpmsg-openamp-demo-channel`` and
answers each 296-byte request with the 148-byte product, until the peer destroys its endpoint
(name-service DESTROY) or sends the shutdown word. A request of another length or with a size
above 6 is refused (reported, not answered, never indexed).

`run_matrix_driver` plays ``matrix_multiply 1`` (VIRTIO driver, proc 1): it waits for the
device's announcement, sends ``count`` (200) random requests, checks every element of every reply,
prints ``Error count = N``, destroys its endpoint and returns 0 only for N = 0 and all replies.

Two transports: OpenAMP's Linux one (``--shm-name``/``--shm-size``/``--socket``, wire-compatible
with the C programs) and an ampipc Region (``--transport region --region NAME``: the device creates
the region and the link object, the driver attaches).
"""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import IpcError, ProtocolError, RegionNotFound, Timeout
from ..region import Region
from ..rpmsg import matrix as M
from ..rpmsg._wire import DEMO_CHANNEL, DEMO_SHM_NAME, DEMO_SHM_SIZE, DEMO_SOCKET_PATH
from ..rpmsg.api import RpmsgDevice, open_region
from ..rpmsg.endpoints import Endpoint
from ..rpmsg.transports import LinuxTransport

__all__ = ["ITERATIONS", "add_parser", "run_matrix_device", "run_matrix_driver"]

ITERATIONS = 200
REGION_LINK = "openamp-matrix"
REGION_SIZE = 1 << 20


def _say(out: Callable[[str], None] | None, text: str) -> None:
    if out is None:
        print(text, flush=True)
    else:
        out(text)


def serve_matrix(device: RpmsgDevice, channel: str, out: Callable[[str], None] | None) -> int:
    """The device's session on an open link; returns the exit code."""
    done = threading.Event()
    reason = ["peer gone"]
    counts = {"answered": 0, "refused": 0}

    def on_message(ept: Endpoint, data: bytes, src: int) -> None:
        if M.is_shutdown(data):
            reason[0] = "shutdown message"
            done.set()
            return
        try:
            a, b = M.decode_request(data)
        except ProtocolError as exc:
            counts["refused"] += 1
            _say(out, f"refused a request from {src:#x}: {exc}")
            return
        ept.send_to(src, M.multiply(a, b).encode())
        counts["answered"] += 1

    def on_unbind(ept: Endpoint) -> None:
        reason[0] = "ERROR: Endpoint is destroyed"
        done.set()

    ept = device.create_endpoint(channel, on_message, on_unbind=on_unbind)
    _say(out, f"created rpmsg channel {channel}, src={ept.addr:#x}, dst={ept.dest:#x}")
    while not done.is_set() and not device.closed:
        device.poll(0.1)  # single-threaded, as the C program: callbacks run here
    stats = device.statistics
    _say(out, f"{reason[0]}; answered {counts['answered']} requests, refused {counts['refused']}, "
              f"protocol errors {stats.protocol_errors}")
    _say(out, "Stopping application...")
    return 0 if done.is_set() and stats.protocol_errors == 0 and counts["refused"] == 0 else 1


def drive_matrix(
    device: RpmsgDevice, channel: str, count: int, open_timeout: float | None, reply_timeout: float,
    out: Callable[[str], None] | None, seed: int | None = None,
) -> int:
    """The driver's session on an open link; returns 0 only if every reply matched."""
    rng = random.Random(seed)
    device.on_new_service = lambda dev, name, addr: _say(out, f"CLIENT> Unexpected name service {name} ({addr:#x})")
    ept = device.create_endpoint(channel)
    try:
        ept.wait_bound(open_timeout)
    except TimeoutError:
        _say(out, f"CLIENT> no endpoint {channel!r} was announced by the device")
        return 2
    errors = sent = 0
    for _ in range(count):
        a, b = M.generate(rng), M.generate(rng)
        expected = M.multiply(a, b)
        try:
            ept.send(M.encode_request(a, b))
        except IpcError as exc:  # the device unbound early (or the link broke): the C driver's case
            _say(out, f"CLIENT> Error sending data... ({exc})")
            errors += 1
            break
        sent += 1
        _say(out, f"CLIENT> Matrix multiply: sent : {M.REQUEST_SIZE}")
        try:
            reply = ept.receive(reply_timeout)
            wrong = M.count_errors(expected, reply)
        except (Timeout, TimeoutError):
            _say(out, f"CLIENT> no reply within {reply_timeout} s")
            errors += 1
            break
        except ProtocolError as exc:
            _say(out, f"CLIENT> {exc}")
            errors += 1
            break
        if wrong:
            errors += wrong
            _say(out, "CLIENT> Result mismatched...")
            break
    errors += device.statistics.protocol_errors
    _say(out, f"CLIENT>  Test Results: Error count = {errors} ")
    _say(out, "CLIENT> Quitting application .. Matrix multiplication end")
    ept.destroy()
    return 0 if errors == 0 and sent == count else 1


def run_matrix_device(
    *, shm_name: str = DEMO_SHM_NAME, shm_size: int = DEMO_SHM_SIZE, socket_path: str = DEMO_SOCKET_PATH,
    channel: str = DEMO_CHANNEL, open_timeout: float | None = None, out: Callable[[str], None] | None = None,
) -> int:
    """``matrix_multiplyd`` over OpenAMP's Linux transport."""
    transport = LinuxTransport("device", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path)
    _say(out, f"matrix_multiplyd (ampipc, VIRTIO device): waiting for a driver on {socket_path}, shm {transport.shm_name}")
    device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False)
    try:
        return serve_matrix(device, channel, out)
    finally:
        device.close()


def run_matrix_driver(
    *, count: int = ITERATIONS, shm_name: str = DEMO_SHM_NAME, shm_size: int = DEMO_SHM_SIZE,
    socket_path: str = DEMO_SOCKET_PATH, channel: str = DEMO_CHANNEL, open_timeout: float | None = 60.0,
    reply_timeout: float = 15.0, out: Callable[[str], None] | None = None,
) -> int:
    """``matrix_multiply 1`` over OpenAMP's Linux transport."""
    transport = LinuxTransport("driver", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path)
    device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False)
    try:
        return drive_matrix(device, channel, count, open_timeout, reply_timeout, out)
    finally:
        device.close()


def run_region_matrix(
    role: str, region_name: str, *, count: int = ITERATIONS, channel: str = DEMO_CHANNEL,
    open_timeout: float | None = 60.0, reply_timeout: float = 15.0, out: Callable[[str], None] | None = None,
) -> int:
    """Either role over an ampipc Region: the device creates the region and the link, the driver attaches."""
    if role == "device":
        with Region.create(region_name, REGION_SIZE) as region:
            device = open_region(region, REGION_LINK, "device", create=True, open_timeout=open_timeout, io_thread=False)
            try:
                return serve_matrix(device, channel, out)
            finally:
                device.close()
    deadline = None if open_timeout is None else time.monotonic() + open_timeout
    while True:
        try:
            region = Region.attach(region_name)
            break
        except RegionNotFound:
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(f"no region {region_name!r} appeared within {open_timeout} s") from None
            time.sleep(0.02)
    with region:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        device = open_region(region, REGION_LINK, "driver", create=False, open_timeout=left, io_thread=False)
        try:
            return drive_matrix(device, channel, count, left, reply_timeout, out)
        finally:
            device.close()


def _command(args: argparse.Namespace) -> int:
    timeout = args.open_timeout
    if timeout is None:
        open_timeout: float | None = None if args.role == "device" else 60.0
    else:
        open_timeout = None if math.isinf(timeout) else timeout
    options: dict[str, Any] = {"open_timeout": open_timeout}
    if args.channel is not None:
        options["channel"] = args.channel
    if args.transport == "region":
        if not args.region:
            raise ValueError("--transport region needs --region NAME")
        if args.role == "driver":
            options["count"] = args.count
        return run_region_matrix(args.role, args.region, **options)
    for key, option in (("shm_name", "shm_name"), ("shm_size", "shm_size"), ("socket", "socket_path")):
        value = getattr(args, key)
        if value is not None:
            options[option] = value
    if args.role == "device":
        return run_matrix_device(**options)
    return run_matrix_driver(count=args.count, **options)


def add_parser(subparsers: Any) -> None:
    """``ampipc openamp-matrix``: the same options as ``openamp-echo``, plus the Region transport."""
    from ..cli import bounded_float, bounded_int

    p = subparsers.add_parser(
        "openamp-matrix", help="play OpenAMP's matrix_multiplyd (device) or matrix_multiply (driver)",
        description="Play OpenAMP's matrix_multiplyd (--role device: proc 0, writes the resource table, serves the"
        " socket, computes) or matrix_multiply 1 (--role driver: sends 200 requests, checks every element, prints"
        " 'Error count = N', exits 0 only for 0). Over OpenAMP's Linux transport (default, wire-compatible with"
        " the C programs) or an ampipc region (--transport region --region NAME).",
    )
    p.add_argument("--role", choices=("device", "driver"), required=True)
    p.add_argument("--count", type=bounded_int(1, 10**9, "the count"), default=ITERATIONS,
                   help=f"driver: requests to send (default {ITERATIONS})")
    p.add_argument("--transport", choices=("openamp", "region"), default="openamp",
                   help="OpenAMP's Linux shm + socket (default) or an ampipc region")
    p.add_argument("--region", help="with --transport region: the region's name")
    p.add_argument("--shm-name", dest="shm_name", help="shared-memory file (default openamp.shm)")
    p.add_argument("--shm-size", dest="shm_size", type=bounded_int(0x50000, 1 << 32, "the size"),
                   help="its size, 0x50000 to 0x100000000 (default 0x80000)")
    p.add_argument("--socket", help="the kick socket path (default /tmp/openamp.event.0)")
    p.add_argument("--channel", help="the announced name (default rpmsg-openamp-demo-channel)")
    p.add_argument("--open-timeout", dest="open_timeout", default=None,
                   type=bounded_float(0, 86400.0, "the timeout", none_word="forever"),
                   help="seconds to wait for the peer (default: device forever, driver 60; 'forever')")
    p.set_defaults(func=_command)
