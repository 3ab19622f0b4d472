"""``ampipc bridge REGION --export BUFFER=KEY ... --import KEY=BUFFER ... [--connect EP] [--listen EP]``.

Theory of operation
-------------------
Attaches to a running region, opens a Zenoh session on the given endpoints only (no scouting),
starts one `ZenohBridge` with a route per ``--export`` / ``--import`` (message buffers of the
region, named), prints one line per route, then runs until Ctrl-C or SIGTERM (which the command
line turns into the same unwinding), closes the bridge (import routes drain what arrived) and the
session, and prints each route's counters. ``--stats-interval`` also prints them periodically.
Bad arguments, a missing region or buffer, a refused endpoint: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["add_parser", "parse_pair"]


def parse_pair(text: str, what: str) -> tuple[str, str]:
    """``LEFT=RIGHT`` -> (LEFT, RIGHT); ValueError (one line) otherwise."""
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
    return left, right


def _export_pair(text: str) -> tuple[str, str]:
    return parse_pair(text, "BUFFER=KEY")


def _import_pair(text: str) -> tuple[str, str]:
    return parse_pair(text, "KEY=BUFFER")


def add_parser(subparsers: Any) -> None:
    from ..cli import bounded_float, bounded_int

    p = subparsers.add_parser(
        "bridge",
        help="bridge message buffers of a region to other hosts over Zenoh",
        description=(
            "Publish message buffers of REGION on Zenoh key expressions (--export BUFFER=KEY) and write "
            "samples of key expressions into buffers (--import KEY=BUFFER), with back-pressure. Only the "
            "given endpoints are used (no multicast scouting, no gossip). Runs until Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument("region", help="the region to bridge (it must exist)")
    p.add_argument("--export", dest="exports", action="append", type=_export_pair, default=[], metavar="BUFFER=KEY")
    p.add_argument("--import", dest="imports", action="append", type=_import_pair, default=[], metavar="KEY=BUFFER")
    p.add_argument("--service", dest="services", action="append", type=_export_pair, default=[], metavar="NAME=KEY",
                   help="let remote clients call the rpc service NAME a core serves in REGION, through KEY")
    p.add_argument("--connect", action="append", default=[], metavar="ENDPOINT", help="dial this peer, e.g. tcp/10.0.0.2:7447")
    p.add_argument("--listen", action="append", default=[], metavar="ENDPOINT", help="accept peers here, e.g. tcp/0.0.0.0:7447")
    p.add_argument("--name", default="bridge", help="the bridge's name in the region's statistics (default: bridge)")
    p.add_argument("--congestion", choices=("block", "drop"), default="block",
                   help="block: back-pressure end to end, nothing dropped (default); drop: never block, count drops")
    p.add_argument("--on-peer-lost", dest="on_peer_lost", choices=("wait", "close"), default="wait",
                   help="wait for a new peer (default), or close the local side so local peers see PeerClosed")
    p.add_argument("--pack", type=bounded_int(1, 4096, "--pack"), default=1, metavar="N",
                   help="publish a backlog as samples of up to N whole messages (only ampipc bridges read them; "
                        "default 1: one sample per message, readable by any Zenoh subscriber)")
    p.add_argument("--stats-interval", dest="stats_interval", type=bounded_float(0, 86400, "the statistics interval"),
                   default=None, metavar="SECONDS", help="print the counters every SECONDS")
    p.set_defaults(func=_run)


def _print_routes(bridge: Any) -> None:
    for r in bridge.statistics().routes:
        print(f"  {r.direction} {r.local} <-> {r.key}: {r.state}, {r.messages} messages, {r.bytes} bytes, "
              f"{r.drops} dropped, {r.lost} lost, {r.peers} peers, {r.peer_losses} peer losses", flush=True)


def _run(args: argparse.Namespace) -> int:
    if not args.exports and not args.imports and not args.services:
        raise ValueError("nothing to bridge: give at least one --export BUFFER=KEY, --import KEY=BUFFER or --service NAME=KEY")
    if not args.connect and not args.listen:
        raise ValueError("give --listen ENDPOINT and/or --connect ENDPOINT (the bridge does not scout)")
    try:
        from .session import close_session, open_session
        from .zenoh_bridge import ZenohBridge
    except ModuleNotFoundError as e:
        if e.name != "zenoh":
            raise
        raise ValueError("ampipc bridge needs Eclipse Zenoh: pip install 'ampipc[zenoh]'") from None
    from ..region import Region

    region = Region.attach(args.region)
    try:
        session = open_session(listen=args.listen, connect=args.connect)
        try:
            bridge = ZenohBridge(region, session, name=args.name, congestion=args.congestion, pack=args.pack)
            try:
                for buffer, key in args.exports:
                    bridge.export(buffer, key, on_peer_lost=args.on_peer_lost)
                for key, buffer in args.imports:
                    bridge.import_(key, buffer, on_peer_lost=args.on_peer_lost)
                for service, key in args.services:
                    bridge.export_service(service, key)
                print(f"bridge {args.name!r} on region {region.name!r}, zenoh id {bridge.zid}: "
                      f"listen {args.listen or '-'}, connect {args.connect or '-'}", flush=True)
                for route in bridge.routes:
                    arrow = "->" if route.direction == "export" else "<-"
                    print(f"  {route.local.description} {arrow} {route.key}", flush=True)
                for service, key in args.services:
                    print(f"  rpc service {service} <- {key}", flush=True)
                next_report = None if args.stats_interval is None else time.monotonic() + args.stats_interval
                states = {id(route): (route.state, route.peer_losses) for route in bridge.routes}
                while True:
                    time.sleep(0.2)
                    for route in bridge.routes:  # say when a peer comes or goes
                        now = (route.state, route.peer_losses)
                        if now != states[id(route)]:
                            states[id(route)] = now
                            print(f"  {route.direction} {route.key}: {route.state}, {route.peers} peers, "
                                  f"{route.peer_losses} peer losses", flush=True)
                    if next_report is not None and time.monotonic() >= next_report:
                        _print_routes(bridge)
                        next_report += args.stats_interval
            finally:
                bridge.close()
                print("bridge closed:", flush=True)
                _print_routes(bridge)
        finally:
            close_session(session)
    finally:
        region.close()
        sys.stdout.flush()
