"""Notification strategies: how a core learns that its peer sent into or received from a data buffer.

`STRATEGIES` maps each name to its class: ``direct`` (futex wake, no interrupt), ``hsem`` (one
hardware semaphore per buffer and event), ``control`` (a control message buffer per direction, one
interrupt) and ``toggle`` (toggle bits, one interrupt, safe from interrupt handlers).
"""

from __future__ import annotations

from .base import (
    DEFAULT_IRQ_LINE,
    DataBuffer,
    EndpointSpec,
    ErrorCallback,
    EventKind,
    EventMap,
    Strategy,
    StrategyOptions,
)
from .control import ControlStrategy
from .direct import DirectStrategy
from .hsem import HsemStrategy
from .toggle import ToggleStrategy

__all__ = [
    "DEFAULT_IRQ_LINE",
    "STRATEGIES",
    "ControlStrategy",
    "DataBuffer",
    "DirectStrategy",
    "EndpointSpec",
    "ErrorCallback",
    "EventKind",
    "EventMap",
    "HsemStrategy",
    "Strategy",
    "StrategyOptions",
    "ToggleStrategy",
    "strategy_class",
]

STRATEGIES: dict[str, type[Strategy]] = {
    "direct": DirectStrategy,
    "hsem": HsemStrategy,
    "control": ControlStrategy,
    "toggle": ToggleStrategy,
}


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class called `name`; ValueError listing the known ones otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown notification strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
