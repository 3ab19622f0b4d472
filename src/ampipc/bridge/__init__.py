"""Bridge regions across hosts over Eclipse Zenoh (the optional ``ampipc[zenoh]`` layer).

`ZenohBridge(region, session)` exports local objects (message buffers, `Ipc` channels, RPMsg
endpoints) to Zenoh key expressions and imports key expressions into them; `open_session` makes a
Zenoh session that talks only to explicit endpoints. `read_bridge_statistics(region)` reads every
bridge's shared statistics object and needs no Zenoh (for ``ampipc top``).

Only `read_bridge_statistics` and the statistics classes are imported eagerly; the names that need
the ``eclipse-zenoh`` package load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .stats import BridgeRunning, BridgeStatistics, RouteStatistics, read_bridge_statistics

if TYPE_CHECKING:
    from .services import ServiceExport, ZenohLink, connect_service
    from .session import open_session, session_config
    from .zenoh_bridge import Route, ZenohBridge

__all__ = [
    "BridgeRunning",
    "BridgeStatistics",
    "Route",
    "RouteStatistics",
    "ServiceExport",
    "ZenohBridge",
    "ZenohLink",
    "connect_service",
    "open_session",
    "read_bridge_statistics",
    "session_config",
]

_LAZY = {
    "ZenohBridge": "zenoh_bridge",
    "Route": "zenoh_bridge",
    "open_session": "session",
    "session_config": "session",
    "connect_service": "services",
    "ZenohLink": "services",
    "ServiceExport": "services",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ModuleNotFoundError as e:
        if e.name == "zenoh":
            raise ImportError("the ampipc bridge needs Eclipse Zenoh: pip install 'ampipc[zenoh]'") from None
        if e.name == "msgspec":
            raise ImportError("remote calls need msgspec: pip install 'ampipc[services]'") from None
        raise
    globals()[name] = value
    return value
