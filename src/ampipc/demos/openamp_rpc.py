"""``ampipc openamp-rpc``: OpenAMP's rpmsg-rpc file-I/O proxy programs over the Linux transport.

``--role server`` plays ``linux_rpc_demod`` (VIRTIO driver, proc 0: writes the resource table and
serves the socket) confined to ``--root``; ``--role client`` plays ``linux_rpc_demo 1`` (VIRTIO
device, proc 1) and exits 0 only if what it read back equals what it wrote. The protocol lives in
`ampipc.services.openamp_rpc`; this module is only the command line.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]

_MAX_SHM_SIZE = 1 << 32


def _run(args: argparse.Namespace) -> int:
    from ..services import openamp_rpc

    options: dict[str, Any] = {}
    for key, option in (("shm_name", "shm_name"), ("shm_size", "shm_size"), ("socket", "socket_path")):
        value = getattr(args, key)
        if value is not None:
            options[option] = value
    if args.role == "server":
        return openamp_rpc.run_server(root=args.root, open_timeout=args.open_timeout, **options)
    timeout = 60.0 if args.open_timeout is None else args.open_timeout
    return openamp_rpc.run_client(open_timeout=timeout, **options)


def add_parser(subparsers: Any) -> None:
    from ..cli import bounded_float, bounded_int

    p = subparsers.add_parser(
        "openamp-rpc",
        help="play OpenAMP's rpmsg-rpc server (linux_rpc_demod) or client (linux_rpc_demo 1)",
        description="OpenAMP's rpmsg-rpc file-I/O proxy over the Linux transport (shm file + UNIX socket). "
                    "The server is the VIRTIO driver and starts first; the client is the VIRTIO device.",
    )
    p.add_argument("--role", choices=("server", "client"), required=True)
    p.add_argument("--root", default=".", help="server: the directory served (default: the current one); "
                                               "no path outside it is reachable")
    p.add_argument("--shm-name", dest="shm_name", help="shared-memory file (default openamp.shm)")
    p.add_argument("--shm-size", dest="shm_size", type=bounded_int(0x50000, _MAX_SHM_SIZE, "--shm-size"),
                   help="its size, 0x50000 (the OpenAMP layout) to 0x100000000 (default 0x80000)")
    p.add_argument("--socket", help="the kick socket path (default /tmp/openamp.event.0)")
    p.add_argument("--open-timeout", dest="open_timeout", default=None,
                   type=bounded_float(0, 86400.0, "--open-timeout", none_word="forever"),
                   help="seconds to wait for the peer (default: server forever, client 60; 'forever')")
    p.set_defaults(func=_run)
