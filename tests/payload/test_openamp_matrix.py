"""OpenAMP's matrix_multiply: the wire format (sans-I/O), a hostile peer refused, and the two
``ampipc openamp-matrix`` roles as separate commands over both transports."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import ProtocolError
from ampipc.demos import openamp_matrix as program
from ampipc.rpmsg import matrix as M

from rpmsg._support import loopback_pair  # type: ignore[import-not-found]

pytestmark = pytest.mark.timeout(180)


def test_wire_layout() -> None:
    a = M.Matrix(6, tuple(range(36)))
    raw = a.encode()
    assert len(raw) == 148 and raw[:4] == b"\x06\0\0\0"
    for i in range(6):
        for j in range(6):
            assert struct.unpack_from("<I", raw, 4 + 4 * (6 * i + j))[0] == a.at(i, j) == 6 * i + j
    request = M.encode_request(a, M.Matrix(6, (9,) * 36))
    assert len(request) == 296 and request[148:156] == b"\x06\0\0\0\x09\0\0\0"
    assert M.decode_request(request) == (a, M.Matrix(6, (9,) * 36))


@settings(max_examples=80, deadline=None)
@given(na=st.integers(0, 6), nb=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_multiply_matches_the_reference(na: int, nb: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ea, eb = rng.integers(0, 2**32, size=36, dtype=np.uint64), rng.integers(0, 2**32, size=36, dtype=np.uint64)
    a, b = M.Matrix(na, tuple(int(x) for x in ea)), M.Matrix(nb, tuple(int(x) for x in eb))
    got = M.multiply(a, b)
    ref = np.zeros((6, 6), dtype=object)
    A, B = ea.astype(object).reshape(6, 6), eb.astype(object).reshape(6, 6)
    for i in range(na):
        for j in range(nb):
            ref[i, j] = sum(A[i, k] * B[k, j] for k in range(na)) % 2**32
    assert got.size == na and list(got.elements) == list(ref.reshape(36))
    assert M.count_errors(got, got.encode()) == 0
    if na and nb:
        broken = bytearray(got.encode())
        broken[4] ^= 1
        assert M.count_errors(got, bytes(broken)) == 1


def test_hostile_sizes_and_lengths_are_refused() -> None:
    good = M.encode_request(M.generate(random.Random(1)), M.generate(random.Random(2)))
    for bad in (good[:295], good + b"\0", struct.pack("<I", 7) + good[4:], good[:148] + struct.pack("<I", 1 << 31) + good[152:]):
        with pytest.raises(ProtocolError):
            M.decode_request(bad)
    with pytest.raises(ProtocolError, match="invalid len"):
        M.count_errors(M.generate(random.Random(1)), b"\0" * 147)
    assert M.is_shutdown(struct.pack("<I", M.SHUTDOWN_WORD)) and not M.is_shutdown(good)
    values = M.generate(random.Random(3)).elements
    assert all(0 <= v <= 9 for v in values) and len(set(values)) > 1


def test_device_refuses_a_hostile_request_and_answers_the_rest() -> None:
    with loopback_pair() as (driver, device):
        result: list[int] = []
        lines: list[str] = []
        server = threading.Thread(target=lambda: result.append(program.serve_matrix(device, "mm", lines.append)))
        server.start()
        try:
            ept = driver.create_endpoint("mm")
            ept.wait_bound(30)
            a, b = M.generate(random.Random(5)), M.generate(random.Random(6))
            hostile = struct.pack("<I", 200) + M.encode_request(a, b)[4:]
            ept.send(hostile)
            ept.send(M.encode_request(a, b) + b"overflow")
            ept.send(M.encode_request(a, b))
            assert ept.receive(30) == M.multiply(a, b).encode()
            ept.destroy()
        finally:
            server.join(30)
        assert result == [1]  # the session refused requests: not a clean run
        assert sum("refused a request" in line for line in lines) == 2
        assert any("answered 1 requests, refused 2" in line for line in lines)


def _run_pair(device_args: list[str], driver_args: list[str]) -> tuple[Any, Any, str]:
    cli = [sys.executable, "-m", "ampipc.cli", "openamp-matrix"]
    device = subprocess.Popen([*cli, "--role", "device", *device_args], stdout=subprocess.PIPE, text=True)
    try:
        driver = subprocess.run([*cli, "--role", "driver", *driver_args], stdout=subprocess.PIPE, text=True, timeout=120)
        device_out, _ = device.communicate(timeout=120)
    finally:
        if device.poll() is None:
            device.kill()
            device.wait()
    return driver, device, device_out


def _check(driver: Any, device: Any, device_out: str) -> None:
    assert driver.returncode == 0, driver.stdout
    assert driver.stdout.count("CLIENT> Matrix multiply: sent : 296") == 200
    assert "CLIENT>  Test Results: Error count = 0 " in driver.stdout
    assert "Matrix multiplication end" in driver.stdout
    assert device.returncode == 0, device_out
    assert "created rpmsg channel rpmsg-openamp-demo-channel, src=0x400" in device_out
    assert "answered 200 requests, refused 0, protocol errors 0" in device_out
    assert "Stopping application..." in device_out


def test_roles_over_the_openamp_linux_transport(unique_name: Any) -> None:
    shm = unique_name("mm")
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--shm-name", shm, "--socket", os.path.join(tmp, "event.0")]
        try:
            _check(*_run_pair(common, common))
        finally:
            if os.path.exists(f"/dev/shm/{shm}"):
                os.unlink(f"/dev/shm/{shm}")


def test_roles_over_a_region(unique_name: Any) -> None:
    name = unique_name("mr")
    common = ["--transport", "region", "--region", name]
    try:
        _check(*_run_pair(common, common))
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_region_transport_needs_a_name() -> None:
    out = subprocess.run([sys.executable, "-m", "ampipc.cli", "openamp-matrix", "--role", "driver", "--transport",
                          "region"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--region NAME" in out.stderr and "Traceback" not in out.stderr


def test_driver_reports_a_device_that_unbinds_early() -> None:
    with loopback_pair() as (driver, device):
        answered = [0]

        def on_message(ept: Any, data: bytes, src: int) -> None:
            a, b = M.decode_request(data)
            ept.send_to(src, M.multiply(a, b).encode())
            answered[0] += 1
            if answered[0] == 3:
                ept.destroy()  # NS DESTROY: the driver's endpoint loses its destination

        device.create_endpoint(program.DEMO_CHANNEL, on_message)
        lines: list[str] = []
        code = program.drive_matrix(driver, program.DEMO_CHANNEL, 200, 30, 5, lines.append, seed=1)
        assert code == 1
        # the 4th request fails to send once the destroy has arrived, or (if it left first) gets no reply
        assert sum(line == "CLIENT> Matrix multiply: sent : 296" for line in lines) in (3, 4)
        assert any(line.startswith("CLIENT> Error sending data") or "no reply" in line for line in lines)
        assert "CLIENT>  Test Results: Error count = 1 " in lines
