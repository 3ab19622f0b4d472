"""Demo: two channels multiplexed over one interrupt with a control message buffer per direction."""

from __future__ import annotations

from typing import Any

from ._multi import _cm4, run_multi

__all__ = ["run"]


def _cm4_control(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    _cm4(region_name, origin, quiet, results, "control", False)


def run(*, quiet: bool = False) -> int:
    """Run the demo; 0 if both directions arrived in order, the CM7 blocked and was woken, the LED toggled."""
    return run_multi("multi", "control", False, _cm4_control, quiet=quiet)
