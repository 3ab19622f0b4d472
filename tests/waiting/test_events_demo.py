"""`ampipc demo events`: two processes, every notification kind; the sensor detector on its own."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc.demos import events
from ampipc.demos.events import ATTACK_FRAMES, RELEASE_FRAMES, ActivationDetector, voice_activity


@pytest.mark.parametrize("notification", events.NOTIFICATIONS)
def test_the_demo_runs_with_every_notification(notification: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert events.run(quiet=True, notification=notification) == 0
    out = capsys.readouterr().out
    assert out.startswith("events summary")
    assert f"activations expected / detected      {events.BURSTS} / {events.BURSTS}" in out
    assert f"reset acknowledged (handled, lines)  ({events.BURSTS}, {events.BURSTS})" in out
    assert re.search(r"CM7 wake-ups \(power record\)\s+" + str(events.BURSTS + 1) + r"\b", out)
    assert out.rstrip().endswith("OK")
    assert "[" not in out.split("summary", 1)[0]  # --quiet prints the summary only: no timeline


def test_the_command_line_prints_a_timeline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ampipc.cli", "demo", "events-sev"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum("CM4  activation #" in line for line in lines) == events.BURSTS
    assert sum("CM7  woken from" in line for line in lines) == events.BURSTS
    assert any("safe state" in line for line in lines)
    assert lines[-1].split() == ["result", "OK"]


def test_a_bad_notification_is_refused() -> None:
    with pytest.raises(ValueError, match="hsem, sev, exti"):
        events.run(quiet=True, notification="pigeon")


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bursts=st.integers(0, 12))
def test_the_detector_finds_every_burst_and_no_click(seed: int, bursts: int) -> None:
    detector = ActivationDetector()
    assert sum(detector.feed(e) for e in voice_activity(seed, bursts)) == bursts


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.floats(0, 1), max_size=200))
def test_the_detector_against_a_reference(frames: list[float]) -> None:
    """An activation is the ATTACK_FRAMES-th loud frame in a row while idle; idle after RELEASE_FRAMES quiet."""
    detector = ActivationDetector()
    got = [i for i, e in enumerate(frames) if detector.feed(e)]
    expected, active, loud, quiet = [], False, 0, 0
    for i, e in enumerate(frames):
        loud, quiet = (loud + 1, 0) if e >= events.THRESHOLD else (0, quiet + 1)
        if not active and loud >= ATTACK_FRAMES:
            active = True
            expected.append(i)
        if active and quiet >= RELEASE_FRAMES:
            active = False
    assert got == expected
