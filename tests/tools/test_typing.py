"""The published types as a user's type checker sees them: ``mypy --strict`` on Python 3.10 to 3.13.

Any buffer is accepted where the API takes bytes (bytes, bytearray, memoryview, array, numpy arrays,
whose stubs declare ``__buffer__`` only for Python >= 3.12), ``Ipc.send`` refuses a non-buffer, and a
strategy name is a Literal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

GOOD = '''
from __future__ import annotations
import array
import numpy as np
from ampipc import Ipc, MessageBuffer, Region, StreamBuffer
from ampipc.compat import cm_ipc, freertos

def use(region: Region, ipc: Ipc) -> None:
    mb = MessageBuffer.create(region, "m", 100)
    sb = StreamBuffer.create(region, "s", 100)
    samples = np.zeros(4, dtype=np.float32)
    mb.send(samples)
    mb.try_send(memoryview(b"x"))
    mb.send(array.array("i", [1]))
    mb.receive_into(samples)
    sb.write(bytearray(3))
    sb.read_into(np.empty(10, dtype=np.uint8))
    ipc.send(0, samples)
    ipc.try_send(0, b"bytes")
    ipc.send_from_isr(0, samples[::1])
    ipc.send_many(0, [samples, b"header", bytearray(2)])
    Ipc.init(region, channels=1, strategy="toggle")
    freertos.xMessageBufferSend(mb, samples, 16, freertos.portMAX_DELAY)
    freertos.xStreamBufferReceive(sb, np.empty(8, dtype=np.uint8), 8, 0)
    cm_ipc.ipc_sendmsg(samples, 16)
'''

BAD = '''
from ampipc import Ipc, MessageBuffer, Region

def misuse(region: Region, ipc: Ipc, mb: MessageBuffer) -> None:
    ipc.send(0, 42)
    ipc.send(0, "text")
    mb.send([1, 2, 3])
    Ipc.init(region, channels=1, strategy="bogus")
'''


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_any_buffer_type_checks_and_misuse_is_reported(tmp_path: Path, version: str) -> None:
    """One mypy run per version over both samples: the good one is clean, each misuse is reported."""
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(GOOD)
    bad.write_text(BAD)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version", version, str(good), str(bad)],
        capture_output=True, text=True, timeout=240,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if line.startswith(str(good))], result.stdout
    assert [int(line.split(":")[1]) for line in errors] == [5, 6, 7, 8], result.stdout
    assert "Literal['direct', 'hsem', 'control', 'toggle']" in errors[3]
    assert result.returncode == 1
