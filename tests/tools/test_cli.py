"""The command line: the main demo, the region inspector and the OpenAMP echo programs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

import pytest

from ampipc import MessageBuffer, Region
from ampipc.cli import main

pytestmark = pytest.mark.timeout(240)


def _summary(text: str) -> dict[str, str]:
    rows = {}
    for line in text.split("summary", 1)[1].splitlines():
        if line.startswith("  "):
            key, _, value = line.strip().partition("  ")
            rows[key.strip()] = value.strip()
    return rows


def test_main_demo_exchanges_every_frame(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = _summary(out)
    assert rows["frames sent by the CM7"] == "20000"
    assert rows["answers received by the CM7"] == "20000"
    assert rows["wrong or out-of-order answers"] == "0"
    assert rows["CM4 exit code"] == "0"
    assert rows["result"] == "OK"
    assert "CM4  answered frame 0: sum" in out  # the timeline


def test_main_demo_quiet_prints_only_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from ampipc.demo_main import run

    assert run(frames=2_000, quiet=True) == 0
    out = capsys.readouterr().out
    assert "sent frame" not in out and _summary(out)["answers received by the CM7"] == "2000"


def test_layout_lists_the_objects(region: Region, capsys: pytest.CaptureFixture[str]) -> None:
    MessageBuffer.create(region, "telemetry", 1000)
    shown = subprocess.run([sys.executable, "-m", "ampipc.cli", "layout", region.name], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "message_buffer" in out and "telemetry" in out and "0/1000 B (0%)" in out
    # the inspector attaches as an observer: only the running system (this process, the creator) is listed
    assert [line for line in out.splitlines() if line.startswith("process ")] == [f"process {os.getpid()} (alive)"]


def test_unknown_demo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "no-such-demo"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_openamp_echo_device_and_driver_over_the_linux_transport(unique_name: Callable[..., str]) -> None:
    """The two echo programs, as separate commands, over a shm file and a socket of their own."""
    shm = unique_name("oa")
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "event.0")
        common = ["--shm-name", shm, "--socket", sock]
        cli = [sys.executable, "-m", "ampipc.cli", "openamp-echo"]
        device = subprocess.Popen([*cli, "--role", "device", *common], stdout=subprocess.PIPE, text=True)
        try:
            driver = subprocess.run(
                [*cli, "--role", "driver", "--count", "200", *common],
                stdout=subprocess.PIPE, text=True, timeout=120,
            )
            device_out, _ = device.communicate(timeout=120)
        finally:
            if device.poll() is None:
                device.kill()
                device.wait()
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")
        assert driver.returncode == 0, driver.stdout
        assert "200 echoes" in driver.stdout and "errors: 0" in driver.stdout
        assert device.returncode == 0, device_out
        assert "echoed 200 messages" in device_out and "protocol errors 0" in device_out
