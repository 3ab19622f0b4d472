"""Zenoh sessions for bridges: explicit endpoints, no scouting, congestion settings stated.

Theory of operation
-------------------
A bridge never discovers peers on its own: `session_config` turns multicast scouting and gossip
off, so a session talks only to the endpoints it is given (``listen``: where it accepts peers,
``connect``: which peers it dials; e.g. ``tcp/127.0.0.1:7447``). It runs in peer mode, and a
``connect`` endpoint that is not up yet is retried in the background instead of failing `open`,
so bridges may start in any order and a restarted peer is dialled again.

Congestion control. Zenoh's congestion control is chosen per publisher (`ZenohBridge` sets
``CongestionControl.BLOCK`` and ``Reliability.RELIABLE`` unless told ``congestion="drop"``);
what a *blocked* publisher does is set here: with BLOCK, a publisher whose transmission queue
stays full waits, and after ``transport/link/tx/queue/congestion_control/block/wait_before_close``
(Zenoh's default 5 s) Zenoh closes the link, which loses what was queued on it. A bridge's
importer blocks Zenoh on purpose while a local reader is slow, so `session_config` raises that
limit to ``block_timeout`` seconds (default 3600): a reader may stall that long without loss.
Under ``congestion="drop"`` Zenoh may drop a sample after
``.../congestion_control/drop/wait_before_drop`` (1 ms by default); the importer then counts the
gap in the sequence numbers as *lost*, so no drop goes unreported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import zenoh

__all__ = ["DEFAULT_BLOCK_TIMEOUT", "session_config", "open_session", "close_session"]

DEFAULT_BLOCK_TIMEOUT = 3600.0
# A connect endpoint that is down is dialled again, first after 100 ms, then at most every second.
_RETRY = {"period_init_ms": 100, "period_max_ms": 1000, "period_increase_factor": 2}


def _endpoints(what: str, endpoints: Iterable[str]) -> list[str]:
    out = []
    for endpoint in endpoints:
        if not isinstance(endpoint, str) or "/" not in endpoint:
            raise ValueError(f"invalid {what} endpoint {endpoint!r}: expected PROTOCOL/ADDRESS, e.g. tcp/127.0.0.1:7447")
        out.append(endpoint)
    return out


def session_config(
    *,
    listen: Iterable[str] = (),
    connect: Iterable[str] = (),
    block_timeout: float = DEFAULT_BLOCK_TIMEOUT,
) -> zenoh.Config:
    """A peer-mode Zenoh configuration that uses only the given endpoints (no multicast, no gossip)."""
    listen_list, connect_list = _endpoints("listen", listen), _endpoints("connect", connect)
    if not block_timeout > 0:
        raise ValueError(f"block_timeout must be positive, not {block_timeout!r}")
    config: zenoh.Config = zenoh.Config()
    config.insert_json5("mode", json.dumps("peer"))
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("scouting/gossip/enabled", "false")
    config.insert_json5("listen/endpoints", json.dumps(listen_list))
    config.insert_json5("connect/endpoints", json.dumps(connect_list))
    config.insert_json5("connect/exit_on_failure", "false")
    config.insert_json5("connect/timeout_ms", "-1")
    config.insert_json5("connect/retry", json.dumps(_RETRY))
    config.insert_json5(
        "transport/link/tx/queue/congestion_control/block/wait_before_close", str(int(block_timeout * 1_000_000))
    )
    return config


def open_session(
    *,
    listen: Iterable[str] = (),
    connect: Iterable[str] = (),
    block_timeout: float = DEFAULT_BLOCK_TIMEOUT,
) -> zenoh.Session:
    """`zenoh.open` of `session_config`; ValueError (one line) if Zenoh refuses an endpoint."""
    listen, connect = list(listen), list(connect)
    config = session_config(listen=listen, connect=connect, block_timeout=block_timeout)
    try:
        return zenoh.open(config)
    except zenoh.ZError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot open a Zenoh session (listen {listen}, connect {connect}): {first}") from None


def close_session(session: zenoh.Session) -> None:
    """Close a session (every declaration on it goes, and its peers see its liveliness tokens go)."""
    close: Any = session.close  # untyped in the zenoh stubs
    close()
