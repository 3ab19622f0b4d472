"""Every seed-example demo, two real processes, with its summary checked."""

from __future__ import annotations

import re

import pytest

from ampipc.demos import DEMOS

EXPECTED = {
    "boot-sync": [r"greetings received by the CM7\s+1"],
    "message-buffer": [r"messages CM7 -> CM4\s+10", r"replies CM4 -> CM7 \(checked\)\s+10"],
    "multi": [r"channel 0 CM7 -> CM4 \(in order\)\s+20", r"channel 0 CM4 -> CM7 \(in order\)\s+20",
              r"of which the CM4 waited for\s+3", r"button presses \(channel 1\)\s+3", r"LED\s+on"],
    "toggle": [r"channel 0 CM7 -> CM4 \(in order\)\s+20", r"button presses \(channel 1\)\s+3", r"LED\s+on"],
    "sev": [r"WFE round trips\s+10", r"SEV-interrupt round trips\s+10"],
}


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo(name: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert DEMOS[name]() == 0
    out = capfd.readouterr().out
    assert re.search(r"\[\s*\d+\.\d{3} ms\] CM7 ", out) and re.search(r"\[\s*\d+\.\d{3} ms\] CM4 ", out)
    assert re.search(r"result\s+OK", out)
    for pattern in EXPECTED[name]:
        assert re.search(pattern, out), pattern


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_quiet(name: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Quiet prints exactly the summary: its title, its rows, the verdict; no timeline."""
    assert DEMOS[name](quiet=True) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == f"{name} summary"
    assert all(line.startswith("  ") for line in lines[1:]), "a timeline line in quiet output"
    assert re.fullmatch(r"\s+result\s+OK", lines[-1])
    for pattern in EXPECTED[name]:
        assert any(re.search(pattern, line) for line in lines), pattern
