"""The payload demo, two real processes, with its summary checked (normal and quiet)."""

from __future__ import annotations

import re

import pytest

from ampipc.demos import payload

pytestmark = pytest.mark.timeout(180)


def test_payload_demo(capfd: pytest.CaptureFixture[str]) -> None:
    assert payload.run() == 0
    out = capfd.readouterr().out
    assert re.search(r"\[\s*\d+\.\d{3} ms\] CM4  frame 23: DMA 1024 KiB into slot \d", out)
    assert len(re.findall(r"CM7  frame\s+\d+ \((FFT|MEAN|FILTER)\) in slot \d: .* ok", out)) == payload.FRAMES
    assert re.search(rf"frames \(1 MiB float32\) checked\s+{payload.FRAMES} / {payload.FRAMES}", out)
    assert re.search(rf"DMA transfers \(errors\)\s+{payload.FRAMES} \(0\)", out)
    assert re.search(r"in use at the end: 0", out) and re.search(r"result\s+OK", out)


def test_payload_demo_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    assert payload.run(quiet=True) == 0
    out = capfd.readouterr().out
    assert out.startswith("payload summary\n") and "ms]" not in out and re.search(r"result\s+OK", out)


def test_the_checks_catch_wrong_results() -> None:
    import numpy as np
    phase = np.arange(payload.SAMPLES, dtype=np.float32) * np.float32(2 * np.pi / payload.SAMPLES)
    frame = np.empty(payload.SAMPLES, np.float32)
    payload._generate(np, 5, frame, phase)
    for kind in payload._KINDS:
        assert payload._check(np, 5, kind, frame)[0]
        assert not payload._check(np, 6, kind, frame)[0]  # another frame's expectations
