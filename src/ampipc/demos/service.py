"""Demo: asking for a remote service. The CM4 owns a file system and a serial port; others call them.

The CM4 (a child process) serves two typed services over ampipc remote calls in one region:
``fs`` (open/read/write/close/list/stat in a temporary directory, confined to it) and ``serial``
(``transact``: one AT command on a real pseudo-terminal from ``os.openpty()``, whose other end is a
"device" thread answering AT commands). Two CM7 tasks (threads, one client each) and one more
client process call both services concurrently: each writes files, reads them back, checks sizes
and listings, and talks to the modem. Each also provokes three errors on purpose - a missing file
(FileNotFoundError), a path outside the root (PermissionError) and a command the device never
answers (TimeoutError) - and checks that they arrive as those exceptions. The demo prints a
timeline and a summary (calls, bytes, errors, latency percentiles) and exits 0 only if every
check passed. ``--quiet`` prints only the summary.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import tempfile
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from ..region import Region
from ..services.rpc import Client, Server, Service, method
from ..services.rpc_files import RootDir
from ._common import CHILD_TIMEOUT, Timeline, print_summary, region_name

__all__ = ["run", "FileService", "SerialService", "FileStat"]

ROUNDS = 25
SERVICE = "io"


# ---- the CM4's services ----------------------------------------------------------------------


@dataclass
class FileStat:
    size: int
    is_dir: bool
    mode: int


_OPEN_MODES = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+": os.O_RDWR,
}


class FileService(Service):
    """A file system confined to one directory; handles are small integers per service."""

    service_name = "fs"

    def __init__(self, root: str) -> None:
        self._root = RootDir(root)
        self._handles: dict[int, int] = {}
        self._next = 1
        self._lock = threading.Lock()

    def _fd(self, handle: int) -> int:
        with self._lock:
            fd = self._handles.get(handle)
        if fd is None:
            raise ValueError(f"no open file with handle {handle}")
        return fd

    @method
    def open(self, path: str, mode: str = "r") -> int:
        if mode not in _OPEN_MODES:
            raise ValueError(f"mode must be one of {sorted(_OPEN_MODES)}, not {mode!r}")
        fd = self._root.open(path, _OPEN_MODES[mode], 0o600)
        with self._lock:
            handle = self._next
            self._next += 1
            self._handles[handle] = fd
        return handle

    @method
    def read(self, handle: int, size: int = -1) -> bytes:
        fd = self._fd(handle)
        if size < 0:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        return os.read(fd, size)

    @method
    def write(self, handle: int, data: bytes) -> int:
        return os.write(self._fd(handle), data)

    @method
    def close(self, handle: int) -> None:
        with self._lock:
            fd = self._handles.pop(handle, None)
        if fd is None:
            raise ValueError(f"no open file with handle {handle}")
        os.close(fd)

    @method(name="list")
    def listdir(self, path: str = ".") -> list[str]:
        return self._root.listdir(path)

    @method
    def stat(self, path: str) -> FileStat:
        st = self._root.stat(path)
        return FileStat(st.st_size, self._root.is_dir(path), st.st_mode & 0o7777)


class SerialService(Service):
    """One serial port (a pty); one transaction at a time, as on a real UART."""

    service_name = "serial"

    def __init__(self, port_fd: int) -> None:
        self._fd = port_fd
        self._lock = threading.Lock()
        self._pending = b""

    @method
    def transact(self, command: str, timeout: float = 1.0) -> str:
        """Send ``command`` + CR, return the response lines before ``OK``; TimeoutError if none."""
        import select

        with self._lock:
            os.write(self._fd, command.encode() + b"\r")
            deadline = time.monotonic() + timeout
            buf = b""
            while b"OK\r\n" not in buf and b"ERROR\r\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                    raise TimeoutError(f"the device did not answer {command!r} within {timeout} s")
                buf += os.read(self._fd, 1024)
            if b"ERROR\r\n" in buf:
                raise ValueError(f"the device refused {command!r}")
            return buf.split(b"OK\r\n")[0].decode().strip()


def _device(fd: int, stop: threading.Event) -> None:
    """The modem on the other end of the pty: AT, AT+ID?, AT+ECHO=..., AT+SLOW (never answers)."""
    import select

    buf = b""
    while not stop.is_set():
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        try:
            buf += os.read(fd, 1024)
        except OSError:
            return
        while b"\r" in buf:
            line, buf = buf.split(b"\r", 1)
            cmd = line.decode(errors="replace").strip()
            if cmd == "AT":
                answer = "OK\r\n"
            elif cmd == "AT+ID?":
                answer = "+ID: AMPIPC-MODEM-1\r\nOK\r\n"
            elif cmd.startswith("AT+ECHO="):
                answer = cmd[len("AT+ECHO="):] + "\r\nOK\r\n"
            elif cmd == "AT+SLOW":
                continue  # a command the device never answers
            else:
                answer = "ERROR\r\n"
            os.write(fd, answer.encode())


def _cm4(region_name: str, origin: float, quiet: bool, root: str, ready: Any, stop: Any, results: Any) -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {}
    try:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        device_stop = threading.Event()
        device = threading.Thread(target=_device, args=(master, device_stop), daemon=True)
        device.start()
        with Region.attach(region_name) as region:
            server = Server(workers=4)
            server.add(FileService(root))
            server.add(SerialService(slave))
            server.listen(region, SERVICE, slots=4)
            say(f"serving {', '.join(server.methods)}")
            say(f"file system: {root}; serial port: {os.ttyname(slave)} (modem on the other end)")
            ready.set()
            stop.poll(CHILD_TIMEOUT)
            stats = server.statistics()
            server.close()
        device_stop.set()
        device.join(2)
        os.close(master)
        os.close(slave)
        counts.update(calls=stats.calls, completed=stats.completed, failed=stats.failed,
                      connections=stats.connections_opened, dead=stats.dead_clients, bad=stats.bad_frames)
        say(f"served {stats.completed} calls ({stats.failed} raised on purpose) for {stats.connections_opened} clients")
    except BaseException as exc:  # noqa: BLE001 - reported to the CM7
        counts["error"] = repr(exc)
    results.put(counts)


# ---- the clients -----------------------------------------------------------------------------


@dataclass
class Session:
    """What one client did and saw."""

    name: str
    calls: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    deliberate_errors: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def _timed(session: Session, fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        session.latencies.append(time.perf_counter() - t0)
        session.calls += 1


def client_session(region: Region, name: str, say: Timeline, seed: int) -> Session:
    """One client's script: files written, read back and checked; modem commands; three errors."""
    s = Session(name)
    rng = random.Random(seed)
    try:
        with Client.connect(region, SERVICE, timeout=CHILD_TIMEOUT, call_timeout=CHILD_TIMEOUT) as client:
            fs = client.proxy(FileService)
            serial = client.proxy(SerialService)
            say(f"{name}: connected")
            ident = _timed(s, serial.transact, "AT+ID?")
            if ident != "+ID: AMPIPC-MODEM-1":
                s.failures.append(f"AT+ID? answered {ident!r}")
            for i in range(ROUNDS):
                path = f"{name}-{i}.bin"
                data = rng.randbytes(rng.choice((16, 500, 4000, 70_000)))
                h = _timed(s, fs.open, path, "w")
                written = _timed(s, fs.write, h, data)
                _timed(s, fs.close, h)
                s.bytes_written += written
                h = _timed(s, fs.open, path, "r")
                back = _timed(s, fs.read, h)
                _timed(s, fs.close, h)
                s.bytes_read += len(back)
                st = _timed(s, fs.stat, path)
                if back != data or written != len(data) or st.size != len(data) or st.is_dir:
                    s.failures.append(f"{path}: wrote {written}/{len(data)}, read {len(back)}, stat {st}")
                word = f"{name}-{i}"
                echoed = _timed(s, serial.transact, f"AT+ECHO={word}")
                if echoed != word:
                    s.failures.append(f"AT+ECHO={word} answered {echoed!r}")
                if i % 10 == 0:
                    say(f"{name}: round {i}: {path} ({len(data)} B) written, read back and checked; modem echoed {word!r}")
            listing = _timed(s, fs.listdir)
            mine = sorted(p for p in listing if p.startswith(f"{name}-"))
            if mine != sorted(f"{name}-{i}.bin" for i in range(ROUNDS)):
                s.failures.append(f"the listing shows {len(mine)} of my {ROUNDS} files")
            for label, call, expected in (
                ("missing file", lambda: fs.open(f"{name}-no-such-file", "r"), FileNotFoundError),
                ("permission", lambda: fs.open("../../etc/passwd", "r"), PermissionError),
                ("timeout", lambda: serial.transact("AT+SLOW", 0.2), TimeoutError),
            ):
                try:
                    _timed(s, call)
                    s.failures.append(f"{label}: no error")
                except expected as exc:
                    s.deliberate_errors[label] = type(exc).__name__
                    say(f"{name}: {label} -> {type(exc).__name__}: {exc}")
                except Exception as exc:  # noqa: BLE001 - a wrong error type is a failed check
                    s.failures.append(f"{label}: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported in the summary
        s.failures.append(f"{type(exc).__name__}: {exc}")
    say(f"{name}: done, {s.calls} calls, {len(s.failures)} failed checks")
    return s


def _client_process(region_name: str, origin: float, quiet: bool, started: Any, go: Any, results: Any) -> None:
    say = Timeline("CM7b", origin, quiet)
    try:
        with Region.attach(region_name) as region:
            started.set()
            go.wait(CHILD_TIMEOUT)  # all three clients start together
            results.put(client_session(region, "proc", say, 3))
    except BaseException as exc:  # noqa: BLE001 - reported to the CM7
        results.put(Session("proc", failures=[repr(exc)]))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 only if every check passed."""
    ctx = multiprocessing.get_context("spawn")
    origin = time.monotonic()
    say = Timeline("CM7", origin, quiet)
    root = tempfile.mkdtemp(prefix="ampipc-demo-fs-")
    region = Region.create(region_name("service"), 8 << 20)
    cm4_results, client_results = ctx.Queue(), ctx.Queue()
    ready, started, go = ctx.Event(), ctx.Event(), ctx.Event()
    stop_cm4, stop = ctx.Pipe(duplex=False)
    cm4 = ctx.Process(target=_cm4, args=(region.name, origin, quiet, root, ready, stop_cm4, cm4_results),
                      name="service-CM4", daemon=True)
    other = ctx.Process(target=_client_process, args=(region.name, origin, quiet, started, go, client_results),
                        name="service-client", daemon=True)
    sessions: list[Session] = []
    cm4_counts: dict[str, Any] = {}
    try:
        say("starting the CM4 (file system + serial port server)")
        cm4.start()
        other.start()
        if not ready.wait(CHILD_TIMEOUT) or not started.wait(CHILD_TIMEOUT):
            raise TimeoutError("the CM4 or the client process did not start")
        go.set()
        local: list[Session] = []
        tasks = [threading.Thread(target=lambda n=n, sd=sd: local.append(client_session(region, n, say, sd)))
                 for n, sd in (("task1", 1), ("task2", 2))]
        for t in tasks:
            t.start()
        for t in tasks:
            t.join(CHILD_TIMEOUT * 2)
        sessions = local + [client_results.get(timeout=CHILD_TIMEOUT * 2)]
        stop.send(True)
        cm4_counts = cm4_results.get(timeout=CHILD_TIMEOUT)
        cm4.join(CHILD_TIMEOUT)
        other.join(CHILD_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported in the summary
        sessions.append(Session("CM7", failures=[f"{type(exc).__name__}: {exc}"]))
    finally:
        for proc in (cm4, other):
            if proc.pid is not None and proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.pid is not None and proc.is_alive():
                proc.kill()
                proc.join(5)
        stop.close()
        region.close()
        shutil.rmtree(root, ignore_errors=True)
    latencies = sorted(x for s in sessions for x in s.latencies)
    calls = sum(s.calls for s in sessions)
    failures = [f"{s.name}: {f}" for s in sessions for f in s.failures]
    if "error" in cm4_counts:
        failures.append(f"CM4: {cm4_counts['error']}")
    expected_errors = {"missing file": "FileNotFoundError", "permission": "PermissionError", "timeout": "TimeoutError"}
    for s in sessions:
        if s.deliberate_errors != expected_errors:
            failures.append(f"{s.name}: deliberate errors seen as {s.deliberate_errors}")
    if cm4_counts.get("completed", -1) + cm4_counts.get("failed", 0) != calls:
        failures.append(f"the CM4 answered {cm4_counts.get('completed')} + {cm4_counts.get('failed')} calls, the clients made {calls}")
    if cm4.exitcode != 0 or other.exitcode != 0:
        failures.append(f"exit codes: CM4 {cm4.exitcode}, client process {other.exitcode}")
    ok = not failures and len(sessions) == 3
    if not quiet:
        for f in failures[:20]:
            print(f"check failed: {f}")
    rows: dict[str, object] = {
        "clients": f"{len(sessions)} (2 CM7 tasks, 1 more process)",
        "calls": calls,
        "bytes written / read": f"{sum(s.bytes_written for s in sessions)} / {sum(s.bytes_read for s in sessions)}",
        "errors on purpose": f"{sum(len(s.deliberate_errors) for s in sessions)} (missing file, permission, timeout per client)",
        "failed checks": len(failures),
        "latency p50 / p90 / p99": " / ".join(f"{_percentile(latencies, q) * 1e6:.0f} us" for q in (0.5, 0.9, 0.99)),
        "served by the CM4": f"{cm4_counts.get('completed', '?')} ok + {cm4_counts.get('failed', '?')} raised, "
                             f"{cm4_counts.get('connections', '?')} connections",
    }
    print_summary("service demo", rows, ok, quiet=quiet)
    return 0 if ok else 1
