"""Services above messaging: remote calls (native, OpenAMP's rpmsg-rpc, eRPC transports).

The names are loaded on first use, so importing one service module does not import the others
(the remote-call modules need the optional ``msgspec`` package: ``pip install 'ampipc[services]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # re-exports for type checkers; loaded lazily at run time
    from .rpc import (  # noqa: F401
        CallContext,
        Client,
        ClientStatistics,
        Connection,
        MethodNotFound,
        PendingCall,
        RemoteError,
        Server,
        ServerStatistics,
        Service,
        current_call,
        method,
    )
    from .rpc_links import BufferPairLink, EndpointLink, IpcLink, Link  # noqa: F401
    from .arrays import ReceivedArray, receive_array, send_array, send_parts  # noqa: F401
    from .directives import Processing, ProcessingDirective  # noqa: F401
    from .pool import (  # noqa: F401
        ForgedDescriptor, Loan, Payload, PayloadPool, PoolStatistics, SlotReclaimed, StaleDescriptor,
    )

# public name -> the module (relative to this package) that defines it
_LAZY: dict[str, str] = {
    "Server": "rpc",
    "Client": "rpc",
    "Connection": "rpc",
    "PendingCall": "rpc",
    "Service": "rpc",
    "method": "rpc",
    "current_call": "rpc",
    "CallContext": "rpc",
    "RemoteError": "rpc",
    "MethodNotFound": "rpc",
    "ServerStatistics": "rpc",
    "ClientStatistics": "rpc",
    "Link": "rpc_links",
    "BufferPairLink": "rpc_links",
    "IpcLink": "rpc_links",
    "EndpointLink": "rpc_links",
    **{n: "pool" for n in ("PayloadPool", "Loan", "Payload", "PoolStatistics", "StaleDescriptor", "ForgedDescriptor",
                           "SlotReclaimed")},
    **{n: "arrays" for n in ("ReceivedArray", "send_array", "receive_array", "send_parts")},
    **{n: "directives" for n in ("Processing", "ProcessingDirective")},
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
