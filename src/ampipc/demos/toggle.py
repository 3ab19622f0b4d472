"""Demo: the two channels of ``multi`` over toggle bits, the CM4 sending button presses from an ISR."""

from __future__ import annotations

from typing import Any

from ._multi import _cm4, run_multi

__all__ = ["run"]


def _cm4_toggle(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    _cm4(region_name, origin, quiet, results, "toggle", True)


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 if both directions arrived in order, the CM7 blocked and was woken, the LED toggled."""
    return run_multi("toggle", "toggle", True, _cm4_toggle, quiet=quiet)
