"""The ``ampipc`` command line: demos, the OpenAMP echo programs, a region inspector and live view.

Theory of operation
-------------------
One `argparse` parser; subcommands come from this module and from the modules listed in
`_COMMAND_MODULES` (each defines ``add_parser(subparsers)`` and sets ``func(args) -> int``).
Demos are listed in `_DEMOS` and imported only when run.

Exit status: what the command returns; 2 for a user error, which is always one line on stderr
(``ampipc: error: ...``), never a traceback: a bad option value (argparse, with its checks bounded
here), a missing or foreign region, an OS error, a timeout, or a closed output pipe (``| head``).
SIGTERM is turned into the same unwinding as Ctrl-C (``KeyboardInterrupt``), so every ``finally``
runs: segments are unlinked, children stopped, socket files removed; the status is then
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports it.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

__all__ = ["main", "bounded_float", "bounded_int"]

# demo name -> (module, function, one-line description). The modules are imported on use only.
# Every function is called as ``function(quiet=...)`` and returns the exit status.
_DEMOS: dict[str, tuple[str, str, str]] = {
    "main": ("ampipc.demo_main", "run", "CM7 and CM4 exchange sensor frames through two message buffers"),
    "boot-sync": ("ampipc.demos.boot_sync", "run", "CubeH7 boot synchronisation over HSEM 0"),
    "message-buffer": ("ampipc.demos.message_buffer", "run", "one bidirectional pair of message buffers"),
    "multi": ("ampipc.demos.multi", "run", "many channels over one interrupt with a control buffer"),
    "toggle": ("ampipc.demos.toggle", "run", "many channels over toggle bits, sending from an ISR"),
    "sev": ("ampipc.demos.sev", "run", "EXTI / SEV event notification"),
    "events": ("ampipc.demos.events", "run", "CM4 detects voice activity, wakes the CM7 from STOP (HSEM); safe reset"),
    "events-sev": ("ampipc.demos.events", "run_sev", "the events demo woken by SEV"),
    "events-exti": ("ampipc.demos.events", "run_exti", "the events demo woken by an EXTI software interrupt"),
    "openamp": ("ampipc.rpmsg.demo", "run_demo", "OpenAMP RPMsg: CM7 host, CM4 remote, name service and echo"),
    "bridge": ("ampipc.demos.bridge", "run", "a CM4's frames reach another host's region through two Zenoh bridges"),
    "service": ("ampipc.demos.service", "run", "a remote service: the CM4's file system and serial port called from CM7 tasks and a process"),
    "cm-ipc": ("ampipc.compat.examples.cm_ipc_sample", "run", "ST's cm_ipc sample, ported with the firmware names"),
    "cache": ("ampipc.demos.cache", "run", "the CM7's D-cache hides a message; the MPU and clean/invalidate fix it"),
    "payload": ("ampipc.demos.payload", "run", "CM4 DMAs 1 MiB frames into pool slots; CM7 processes them zero-copy"),
}


# Modules that add their own subcommands: each defines ``add_parser(subparsers) -> None`` and sets
# ``func`` on its parser (``func(args) -> int``). Imported when the parser is built.
_COMMAND_MODULES: list[str] = [
    "ampipc.demos.openamp_rpc",
    "ampipc.tools.top",
    "ampipc.demos.openamp_matrix",
    "ampipc.bridge.cli",
]

_USER_ERROR = 2
# The OpenAMP Linux layout's addresses are 32-bit device addresses (resource table ``da`` fields).
_MAX_SHM_SIZE = 1 << 32
_MAX_COUNT = 10**9


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ampipc demo: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bounded_int(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse ``type=`` accepting an integer (decimal, 0x..., 0o..., 0b...) in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, an integer, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low:#x} and {high:#x}, not {text}")
        return value

    return parse


def bounded_float(low: float, high: float, what: str, *, none_word: str | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` accepting seconds in ``(low, high]`` (or `none_word`, meaning infinity: forever)."""

    def parse(text: str) -> float:
        if none_word is not None and text == none_word:
            return math.inf
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in seconds, not {text!r}") from None
        if not low < value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{what} must be more than {low:g} and at most {high:g} seconds, not {text}")
        return value

    return parse


def _load(module: str, function: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def _cmd_demo(args: argparse.Namespace) -> int:
    module, function, _ = _DEMOS[args.name]
    return int(_load(module, function)(quiet=args.quiet))


def _cmd_openamp_echo(args: argparse.Namespace) -> int:
    from .rpmsg import _wire
    from .rpmsg import echo

    options: dict[str, Any] = {}
    if args.open_timeout is not None:  # None: the role's default (device forever, driver 60 s)
        options["open_timeout"] = None if math.isinf(args.open_timeout) else args.open_timeout
    for key, option in (("shm_name", "shm_name"), ("shm_size", "shm_size"), ("socket", "socket_path"),
                        ("channel", "channel")):
        value = getattr(args, key)
        if value is not None:
            options[option] = value
    if args.role == "device":
        wait = options.get("open_timeout")
        forever = "forever" if wait is None else f"up to {wait:g} s"
        print(f"openamp-echo: waiting {forever} for an rpmsg-echo-ping driver to connect to "
              f"{args.socket or _wire.DEMO_SOCKET_PATH} (Ctrl-C to stop)", flush=True)
        return int(echo.run_echo_device(**options))
    return int(echo.run_echo_driver(count=args.count, **options))


def _fill_of(region: Any, kind: str, name: str) -> tuple[int, int] | None:
    """(bytes used, capacity) of a buffer object, or None for other kinds."""
    from .buffers import MessageBuffer, StreamBuffer
    from .errors import IpcError

    buf: MessageBuffer | StreamBuffer
    try:
        if kind == "message_buffer":
            buf = MessageBuffer.attach(region, name)
        elif kind == "stream_buffer":
            buf = StreamBuffer.attach(region, name)
        else:
            return None
    except IpcError:
        return None
    return buf.bytes_available, buf.capacity


def _cmd_layout(args: argparse.Namespace) -> int:
    from .region import Region

    with Region.attach(args.region, observe=True) as region:  # an observer: not a peer of anything
        print(f"region {region.name!r}: {region.size} bytes, {region.free_bytes} free, creator pid {region.creator_pid}"
              f" ({'alive' if region.creator_alive else 'dead'})")
        if region.placement is not None:  # a chip region: its objects by chip address, as a linker map
            from .tools.snapshot import chip_view
            from .tools.top import memory_map_lines

            view = chip_view(region)
            assert view is not None
            fills = {}
            for entry in region.objects():
                fill = _fill_of(region, entry.kind, entry.name)
                if fill is not None:
                    fills[entry.name] = f"{fill[0]}/{fill[1]} B ({100 * fill[0] // max(fill[1], 1)}%)"
            for line in memory_map_lines(view, fills):
                print(line)
            for proc in region.processes():
                print(f"process {proc.pid} ({'alive' if proc.alive else 'dead'})")
            return 0
        print(f"{'offset':>10}  {'size':>10}  {'kind':<16}  {'fill':<22}  name")
        for entry in region.objects():
            fill = _fill_of(region, entry.kind, entry.name)
            shown = "" if fill is None else f"{fill[0]}/{fill[1]} B ({100 * fill[0] // max(fill[1], 1)}%)"
            print(f"{entry.offset:#10x}  {entry.size:>10}  {entry.kind:<16}  {shown:<22}  {entry.name}")
        for proc in region.processes():
            print(f"process {proc.pid} ({'alive' if proc.alive else 'dead'})")
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ampipc", description="Inter-processor communication for asymmetric multi-processing.")
    parser.add_argument("--version", action="version", version=f"ampipc {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    echo.add_argument("--count", type=bounded_int(1, _MAX_COUNT, "the count"), default=480,
                      help="driver: payloads to send (default 480)")
    echo.add_argument("--shm-name", dest="shm_name", help="shared-memory file (default openamp.shm)")
    echo.add_argument("--shm-size", dest="shm_size", type=bounded_int(0x50000, _MAX_SHM_SIZE, "the size"),
                      help="its size, 0x50000 (the OpenAMP layout) to 0x100000000 (default 0x80000)")
    echo.add_argument("--socket", help="the kick socket path (default /tmp/openamp.event.0)")
    echo.add_argument("--channel", help="the announced name (default rpmsg-openamp-demo-channel)")
    echo.add_argument("--open-timeout", dest="open_timeout", default=None,
                      type=bounded_float(0, 86400.0, "the timeout", none_word="forever"),
                      help="seconds to wait for the peer (default: device forever, driver 60; 'forever')")
    echo.set_defaults(func=_cmd_openamp_echo)

    layout = sub.add_parser("layout", help="show the objects (with fill) and processes of a running region")
    layout.add_argument("region")
    layout.set_defaults(func=_cmd_layout)

    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


class _SignalState:
    received: int | None = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _SignalState.received = signum
    raise KeyboardInterrupt  # unwind exactly as Ctrl-C does: every finally runs


def _error(message: str) -> int:
    try:
        sys.stderr.write(f"ampipc: error: {message}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    return _USER_ERROR


def _quiet_closed_stdout() -> None:
    # Python would flush stdout again at exit and print a second BrokenPipeError: point it at /dev/null.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from .errors import IpcError

    args = _parser().parse_args(argv)
    previous = None
    if threading_is_main():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _SignalState.received = None
    try:
        status = int(args.func(args))
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return 128 + (_SignalState.received or signal.SIGINT)
    except BrokenPipeError:
        _quiet_closed_stdout()
        return _error("the output was closed before the command finished (broken pipe)")
    except (IpcError, OSError, ValueError, TimeoutError) as exc:
        return _error(str(exc) or type(exc).__name__)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_is_main() -> bool:
    """Signal handlers can be installed only from the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
