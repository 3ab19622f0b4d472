"""The ``ampipc`` command line: demos, the OpenAMP echo programs and a region inspector."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

# demo name -> (module, function, one-line description). The modules are imported on use only.
_DEMOS: dict[str, tuple[str, str, str]] = {
    "main": ("ampipc.demo_main", "run", "CM7 and CM4 exchange sensor frames through two message buffers"),
    "boot-sync": ("ampipc.demos.boot_sync", "run", "CubeH7 boot synchronisation over HSEM 0"),
    "message-buffer": ("ampipc.demos.message_buffer", "run", "one bidirectional pair of message buffers"),
    "multi": ("ampipc.demos.multi", "run", "many channels over one interrupt with a control buffer"),
    "toggle": ("ampipc.demos.toggle", "run", "many channels over toggle bits, sending from an ISR"),
    "sev": ("ampipc.demos.sev", "run", "EXTI / SEV event notification"),
    "openamp": ("ampipc.rpmsg.demo", "run_demo", "OpenAMP RPMsg: CM7 host, CM4 remote, name service and echo"),
}


# Modules that add their own subcommands: each defines ``add_parser(subparsers) -> None`` and sets
# ``func`` on its parser (``func(args) -> int``). Imported when the parser is built.
_COMMAND_MODULES: list[str] = [
]


def _load(module: str, function: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def _cmd_demo(args: argparse.Namespace) -> int:
    module, function, _ = _DEMOS[args.name]
    if args.name == "openamp":
        return int(_load(module, function)())
    return int(_load(module, function)(quiet=args.quiet))


def _cmd_openamp_echo(args: argparse.Namespace) -> int:
    echo = importlib.import_module("ampipc.rpmsg.echo")
    options: dict[str, Any] = {}
    for key, option in (("shm_name", "shm_name"), ("shm_size", "shm_size"), ("socket", "socket_path"),
                        ("channel", "channel")):
        value = getattr(args, key)
        if value is not None:
            options[option] = value
    if args.role == "device":
        return int(echo.run_echo_device(**options))
    return int(echo.run_echo_driver(count=args.count, **options))


def _cmd_layout(args: argparse.Namespace) -> int:
    from .region import Region

    with Region.attach(args.region) as region:
        print(f"region {region.name!r}: {region.size} bytes, {region.free_bytes} free, creator pid {region.creator_pid}"
              f" ({'alive' if region.creator_alive else 'dead'})")
        print(f"{'offset':>10}  {'size':>10}  {'kind':<16}  name")
        for entry in region.objects():
            print(f"{entry.offset:#10x}  {entry.size:>10}  {entry.kind:<16}  {entry.name}")
        for proc in region.processes():
            print(f"process {proc.pid} ({'alive' if proc.alive else 'dead'})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampipc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a two-process demo",
        description="Demos: " + "; ".join(f"{k}: {v[2]}" for k, v in _DEMOS.items()),
    )
    demo.add_argument("name", nargs="?", default="main", choices=sorted(_DEMOS), help="which demo (default: main)")
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.set_defaults(func=_cmd_demo)

    echo = sub.add_parser("openamp-echo", help="play OpenAMP's rpmsg-echo (device) or rpmsg-echo-ping (driver)")
    echo.add_argument("--role", choices=("device", "driver"), required=True)
    echo.add_argument("--count", type=int, default=480, help="driver: payloads to send (default 480)")
    echo.add_argument("--shm-name", dest="shm_name", help="shared-memory file (default openamp.shm)")
    echo.add_argument("--shm-size", dest="shm_size", type=lambda s: int(s, 0), help="its size (default 0x80000)")
    echo.add_argument("--socket", help="the kick socket path (default /tmp/openamp.event.0)")
    echo.add_argument("--channel", help="the announced name (default rpmsg-openamp-demo-channel)")
    echo.set_defaults(func=_cmd_openamp_echo)

    layout = sub.add_parser("layout", help="show the objects and processes of a running region")
    layout.add_argument("region")
    layout.set_defaults(func=_cmd_layout)

    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
