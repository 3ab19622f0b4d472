"""The command line as a user runs it: subprocesses, exit statuses, one-line errors, signals, pipes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import ampipc
from ampipc import MessageBuffer, Region
from ampipc.cli import _DEMOS
from ampipc.liveness import is_alive

pytestmark = pytest.mark.timeout(300)

CLI = [sys.executable, "-m", "ampipc.cli"]
_TIMELINE = re.compile(r"^\[\s*[\d.]+ ms\]|^\s+[\d.]+ ms\s")


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@contextmanager
def _started(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ampipc {ampipc.__version__}"


@pytest.mark.parametrize("demo", sorted(_DEMOS))
def test_quiet_prints_exactly_the_summary(demo: str) -> None:
    result = _run("demo", demo, "--quiet")
    # the format is what is tested here; each demo's own tests check that its counts come out right
    assert result.returncode in (0, 1), (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"demo {demo} printed nothing with --quiet"
    assert not [line for line in lines if _TIMELINE.search(line)], result.stdout
    if demo == "openamp":
        assert len(lines) == 1 and re.match(r"echoes: \d+ correct, -?\d+ wrong of 1000", lines[0]), lines
        assert (result.returncode == 0) == lines[0].startswith("echoes: 1000 correct, 0 wrong"), lines
    else:
        assert lines[0].endswith("summary"), lines
        assert all(line.startswith("  ") for line in lines[1:]), lines
        verdict = re.match(r"^  result\s+(OK|FAILED)$", lines[-1])
        assert verdict, lines
        assert (result.returncode == 0) == (verdict.group(1) == "OK"), (result.returncode, lines)


def test_missing_region_is_one_line() -> None:
    _assert_one_line_error(_run("layout", "no-such-region-here"), "no region named 'no-such-region-here'")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["openamp-echo", "--role", "device", "--shm-size", "0x1000000000"], "--shm-size"),
        (["openamp-echo", "--role", "device", "--shm-size", "0x100"], "--shm-size"),
        (["openamp-echo", "--role", "driver", "--count", "0"], "--count"),
        (["openamp-echo", "--role", "driver", "--count", "many"], "--count"),
        (["openamp-echo", "--role", "device", "--open-timeout", "-1"], "--open-timeout"),
        (["openamp-echo", "--role", "device", "--open-timeout", "nan"], "--open-timeout"),
        (["layout", "bad/name"], "invalid region name"),
        (["demo", "no-such-demo"], "invalid choice"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_values_are_one_line_errors(args: list[str], needle: str) -> None:
    _assert_one_line_error(_run(*args), needle)


def test_closed_output_pipe_is_one_line() -> None:
    """``ampipc demo sev | head -1``: the demo stops on the closed pipe with one line, status 2."""
    with _started("demo", "sev") as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert "ms]" in first
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 2
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == ["ampipc: error: the output was closed before the command finished (broken pipe)"]


def test_sigterm_on_a_waiting_echo_device_removes_its_files(unique_name: Callable[..., str]) -> None:
    shm = unique_name("oa")
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "event.0")
        try:
            with _started("openamp-echo", "--role", "device", "--shm-name", shm, "--socket", sock) as proc:
                assert proc.stdout is not None
                said = proc.stdout.readline()
                assert "waiting forever for an rpmsg-echo-ping driver" in said and sock in said
                deadline = time.monotonic() + 60
                while not (os.path.exists(sock) and os.path.exists(f"/dev/shm/{shm}")):
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 128 + signal.SIGTERM
            assert not os.path.exists(sock)
            assert not os.path.exists(f"/dev/shm/{shm}")
        finally:
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")


def test_echo_device_open_timeout(unique_name: Callable[..., str]) -> None:
    shm = unique_name("ot")
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "event.0")
        try:
            result = _run("openamp-echo", "--role", "device", "--shm-name", shm, "--socket", sock, "--open-timeout", "0.5")
            assert "waiting up to 0.5 s for an rpmsg-echo-ping driver" in result.stdout
            _assert_one_line_error(result, "no peer connected", sock)
            assert not os.path.exists(sock) and not os.path.exists(f"/dev/shm/{shm}")
        finally:
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")


def test_sigterm_on_a_demo_stops_the_child_and_unlinks_the_region() -> None:
    with _started("demo", "main") as proc:
        assert proc.stdout is not None
        region_line = proc.stdout.readline()
        child_line = proc.stdout.readline()
        name = re.search(r"region '([^']+)'", region_line)
        child = re.search(r"started the CM4 \(pid (\d+)\)", child_line)
        assert name and child, (region_line, child_line)
        cm4 = int(child.group(1))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not os.path.exists(f"/dev/shm/{name.group(1)}")
    deadline = time.monotonic() + 30
    while is_alive(cm4):  # the parent killed it; its exit reaches /proc at once, the reaping just after
        assert time.monotonic() < deadline, f"the CM4 (pid {cm4}) still runs"
        time.sleep(0.05)


def test_layout_shows_fill_and_not_itself(region: Region) -> None:
    buf = MessageBuffer.create(region, "telemetry", 100)
    buf.send(b"x" * 46)  # 50 bytes with the prefix
    with _started("layout", region.name) as proc:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    row = next(line for line in out.splitlines() if line.endswith("telemetry"))
    assert "message_buffer" in row and "50/100 B (50%)" in row
    assert f"process {os.getpid()} (alive)" in out
    assert f"process {proc.pid} " not in out
