"""The bridge demo as users run it: ``ampipc demo bridge`` (host A's CM4 -> Zenoh -> host B)."""

from __future__ import annotations

import pytest

from ampipc.cli import main
from ampipc.demos.bridge import FRAMES

pytestmark = pytest.mark.timeout(240)


def _summary(text: str) -> dict[str, str]:
    rows = {}
    for line in text.split("bridge summary", 1)[1].splitlines():
        if line.startswith("  "):
            key, _, value = line.strip().partition("  ")
            rows[key.strip()] = value.strip()
    return rows


def test_demo_bridge_quiet_delivers_every_frame_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "bridge", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bridge summary")  # --quiet: only the summary
    rows = _summary(out)
    assert rows["frames produced by the CM4 (host A)"] == str(FRAMES)
    assert rows["frames received on host B"] == str(FRAMES)
    assert rows["in order and intact"] == str(FRAMES)
    assert rows["lost / dropped (bridge counters)"] == "0 / 0"
    assert rows["result"] == "OK"
