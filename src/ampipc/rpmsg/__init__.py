"""RPMsg over virtio, wire-compatible with OpenAMP, in both roles.

Layers, each over the one below: `_wire` (byte layouts) -> `virtqueue` (split rings) ->
`rsc_table` -> `rpmsg_virtio` (the sans-I/O transport state machine) -> `endpoints` ->
`transports` (ampipc Region, OpenAMP's Linux shm + socket) -> `api` (`RpmsgDevice`).

    >>> dev = open_linux("device")                         # doctest: +SKIP
    >>> ept = dev.create_endpoint("rpmsg-openamp-demo-channel")
    >>> ept.send(ept.receive())
"""

from __future__ import annotations

from ._wire import (
    DEMO_CHANNEL,
    DEMO_SHM_NAME,
    DEMO_SHM_SIZE,
    DEMO_SOCKET_PATH,
    RPMSG_ADDR_ANY,
    RPMSG_BUFFER_SIZE,
    RPMSG_MAX_PAYLOAD,
    RPMSG_NS_ADDR,
)
from .api import (
    RPMSG_MASTER,
    RPMSG_REMOTE,
    MX_OPENAMP_Init,
    NewServiceCallback,
    OPENAMP_check_for_message,
    OPENAMP_create_endpoint,
    OPENAMP_DeInit,
    OPENAMP_send,
    OPENAMP_Wait_EndPointready,
    RpmsgDevice,
    open_linux,
    open_region,
)
from .endpoints import Endpoint, EndpointCallback, UnbindCallback
from .rpmsg_virtio import LinkStatistics, Message, NameService, Role, RpmsgVirtio
from .rsc_table import (
    ResourceTable,
    VringEntry,
    build_resource_table,
    parse_resource_table,
)
from .transports import (
    Doorbell,
    FutexDoorbell,
    HsemDoorbell,
    PeerWatch,
    LinuxTransport,
    RegionTransport,
    SocketDoorbell,
    region_object_size,
)

__all__ = [
    "DEMO_CHANNEL",
    "DEMO_SHM_NAME",
    "DEMO_SHM_SIZE",
    "DEMO_SOCKET_PATH",
    "RPMSG_ADDR_ANY",
    "RPMSG_BUFFER_SIZE",
    "RPMSG_MASTER",
    "RPMSG_MAX_PAYLOAD",
    "RPMSG_NS_ADDR",
    "RPMSG_REMOTE",
    "Doorbell",
    "Endpoint",
    "EndpointCallback",
    "FutexDoorbell",
    "HsemDoorbell",
    "PeerWatch",
    "LinkStatistics",
    "LinuxTransport",
    "MX_OPENAMP_Init",
    "Message",
    "NameService",
    "NewServiceCallback",
    "OPENAMP_DeInit",
    "OPENAMP_Wait_EndPointready",
    "OPENAMP_check_for_message",
    "OPENAMP_create_endpoint",
    "OPENAMP_send",
    "RegionTransport",
    "ResourceTable",
    "Role",
    "RpmsgDevice",
    "RpmsgVirtio",
    "SocketDoorbell",
    "UnbindCallback",
    "VringEntry",
    "build_resource_table",
    "open_linux",
    "open_region",
    "parse_resource_table",
    "region_object_size",
]
