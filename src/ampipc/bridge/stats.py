"""Bridge statistics: the frozen snapshots, and the shared object in the region that tools read.

Theory of operation
-------------------
Each `ZenohBridge` owns one region object of kind ``zenoh_bridge`` named ``bridge.<name>``
(layout in `ampipc.bridge._wire`). Directory entries live as long as the region, so a bridge
started again under the same name takes over the object of its dead predecessor (a CAS on the
owner pid word decides the single winner); a live owner keeps it, and the new bridge gets
`BridgeRunning`. The owner alone writes: the header at start and close, and each route's record
from that route's thread, with aligned atomic stores, so a reader sees every field whole (a
snapshot may mix values of two instants, which a live view tolerates). A route appears once its
record is complete: the route count is stored after it.

`read_bridge_statistics(region)` needs only the standard library (no Zenoh), checks every value it
reads against the object's size and the layout, and skips objects that are not yet initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptRegion, IpcError, ObjectNotFound
from ..liveness import current_token, is_alive
from ..region import Region, validate_name
from . import _wire as W

__all__ = [
    "BridgeRunning",
    "BridgeStatistics",
    "RouteStatistics",
    "SharedStatistics",
    "read_bridge_statistics",
]


class BridgeRunning(IpcError):
    """A bridge with this name already runs on this region (another live process owns its statistics)."""


@dataclass(frozen=True)
class RouteStatistics:
    """One route of a bridge.

    ``drops``: messages the bridge discarded by choice (drop-on-congestion, a sink that can never
    take the message, samples left when the bridge closed); ``lost``: sequence gaps seen by an
    import route (published by an exporter, never arrived). ``lag_ns_*``: publication to delivery
    into the sink (import routes). ``backlog``: bytes waiting in the export route's source buffer.
    """

    direction: str
    local: str
    key: str
    state: str
    messages: int
    bytes: int
    drops: int
    lost: int
    lag_ns_last: int
    lag_ns_max: int
    backlog: int
    peers: int
    peer_losses: int


@dataclass(frozen=True)
class BridgeStatistics:
    """A bridge as its shared statistics object describes it."""

    name: str
    region: str
    pid: int
    alive: bool
    running: bool
    zid: str
    routes: tuple[RouteStatistics, ...]

    def _total(self, direction: str, field: str) -> int:
        return sum(getattr(r, field) for r in self.routes if r.direction == direction)

    @property
    def messages_exported(self) -> int:
        return self._total("export", "messages")

    @property
    def bytes_exported(self) -> int:
        return self._total("export", "bytes")

    @property
    def messages_imported(self) -> int:
        return self._total("import", "messages")

    @property
    def bytes_imported(self) -> int:
        return self._total("import", "bytes")

    @property
    def drops(self) -> int:
        return sum(r.drops for r in self.routes)

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.routes)


def object_name(bridge_name: str) -> str:
    validate_name(bridge_name, "bridge")
    name = f"bridge.{bridge_name}"
    if len(name) > 31:
        raise ValueError(f"bridge name {bridge_name!r} is too long: at most 24 characters")
    return name


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fit(text: str, width: int) -> bytes:
    raw = text.encode()
    if len(raw) <= width:
        return raw
    return raw[: width - 4] + b"..."  # shown truncated; the bridge object keeps the full name


class SharedStatistics:
    """The owner's side of a bridge's statistics object (one per `ZenohBridge`)."""

    def __init__(self, region: Region, bridge_name: str, *, route_capacity: int, zid: str) -> None:
        if not isinstance(route_capacity, int) or not 1 <= route_capacity <= 4096:
            raise ValueError(f"max_routes must be 1..4096, not {route_capacity!r}")
        self.region = region
        self._previous: dict[str, tuple[int, int]] = {}
        name = object_name(bridge_name)
        size = W.HEADER_SIZE + route_capacity * W.ROUTE_SIZE
        pid, start = current_token()
        m = region.mapping
        try:
            entry = region.lookup(name, W.STATS_KIND)
        except ObjectNotFound:
            offset = region.allocate(name, W.STATS_KIND, size)
            m.store_u32(offset + W.OFF_PID, pid)
        else:
            offset = entry.offset
            if entry.size < W.HEADER_SIZE + W.ROUTE_SIZE:
                raise CorruptRegion(f"bridge statistics {name!r} are {entry.size} bytes", object=name, field="size")
            owner = m.load_u32(offset + W.OFF_PID)
            owner_start = m.load_u64(offset + W.OFF_START)
            if owner and is_alive(owner, owner_start) and owner != pid:
                raise BridgeRunning(
                    f"a bridge named {bridge_name!r} runs already on region {region.name!r} (pid {owner}); "
                    "stop it or choose another --name"
                )
            if m.cas_u32(offset + W.OFF_PID, owner, pid) != owner:
                raise BridgeRunning(f"another bridge named {bridge_name!r} started on region {region.name!r} meanwhile")
            old_capacity = min(m.load_u32(offset + W.OFF_ROUTE_CAPACITY), (entry.size - W.HEADER_SIZE) // W.ROUTE_SIZE)
            self._previous = self._export_positions(region, offset, min(m.load_u32(offset + W.OFF_ROUTE_COUNT), old_capacity))
            route_capacity = (entry.size - W.HEADER_SIZE) // W.ROUTE_SIZE
            m.store_u32(offset + W.OFF_ROUTE_COUNT, 0)
        self.offset = offset
        self.route_capacity = route_capacity
        self.routes = 0
        with region.view as view:
            view[offset + 12 : offset + W.HEADER_SIZE] = bytes(W.HEADER_SIZE - 12)
            W.HEADER.pack_into(
                view, offset, 0, W.STATS_VERSION, pid, route_capacity, 0, W.BRIDGE_RUNNING, start,
                _fit(zid, W.ZID_BYTES), _fit(bridge_name, W.NAME_BYTES),
            )
        m.store_u32(offset, W.STATS_MAGIC)

    @staticmethod
    def _export_positions(region: Region, offset: int, count: int) -> dict[str, tuple[int, int]]:
        """key -> (epoch, last sequence) of the export routes a dead predecessor recorded."""
        out = {}
        with region.view as view:
            for i in range(count):
                fields = W.ROUTE_HEAD.unpack_from(view, offset + W.HEADER_SIZE + i * W.ROUTE_SIZE)
                direction, epoch, sequence, raw_key = fields[0], fields[11], fields[12], fields[14]
                key = _text(raw_key)
                if direction == 1 and epoch and not key.endswith("..."):
                    out[key] = (epoch, sequence)
        return out

    def previous_position(self, key: str) -> tuple[int, int] | None:
        """(epoch, last sequence) of the export of `key` by the bridge this one replaces, if any."""
        return self._previous.pop(key, None)

    def add_route(self, direction: int, local: str, key: str) -> int:
        """Reserve and fill a route record; returns its offset. ValueError when the bridge has no room left."""
        if self.routes >= self.route_capacity:
            raise ValueError(f"this bridge has room for {self.route_capacity} routes (max_routes)")
        record = self.offset + W.HEADER_SIZE + self.routes * W.ROUTE_SIZE
        with self.region.view as view:
            W.ROUTE_HEAD.pack_into(
                view, record, direction, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                _fit(local, W.LOCAL_BYTES), _fit(key, W.KEY_BYTES),
            )
        self.routes += 1
        self.region.mapping.store_u32(self.offset + W.OFF_ROUTE_COUNT, self.routes)  # publishes the record
        return record

    def close(self) -> None:
        if not self.region.closed:
            self.region.mapping.store_u32(self.offset + W.OFF_STATE, W.BRIDGE_CLOSED)


def _read_one(region: Region, name: str, offset: int, size: int) -> BridgeStatistics | None:
    m = region.mapping
    if size < W.HEADER_SIZE or m.load_u32(offset) != W.STATS_MAGIC:
        return None  # not initialised yet
    with region.view as view:
        _, version, pid, capacity, count, state, start, zid, bname = W.HEADER.unpack_from(view, offset)
        if version != W.STATS_VERSION:
            raise CorruptRegion(f"bridge statistics {name!r}: version {version}", object=name, field="version", value=version)
        if count > capacity or W.HEADER_SIZE + capacity * W.ROUTE_SIZE > size:
            raise CorruptRegion(
                f"bridge statistics {name!r}: {count} routes of {capacity} do not fit {size} bytes",
                object=name, field="route count", value=count,
            )
        routes = []
        for i in range(count):
            (direction, rstate, messages, nbytes, drops, lost, lag_last, lag_max, backlog, peers, losses,
             _epoch, _sequence, local, key) = W.ROUTE_HEAD.unpack_from(view, offset + W.HEADER_SIZE + i * W.ROUTE_SIZE)
            routes.append(RouteStatistics(
                W.DIRECTIONS.get(direction, f"unknown ({direction})"), _text(local), _text(key),
                W.ROUTE_STATES.get(rstate, f"unknown ({rstate})"),
                messages, nbytes, drops, lost, lag_last, lag_max, backlog, peers, losses,
            ))
    alive = is_alive(pid, start)
    return BridgeStatistics(_text(bname), region.name, pid, alive, alive and state == W.BRIDGE_RUNNING, _text(zid),
                            tuple(routes))


def read_bridge_statistics(region: Region) -> list[BridgeStatistics]:
    """Every bridge that ran or runs on `region`, from its shared statistics object (no Zenoh needed)."""
    out = []
    for entry in region.objects():
        if entry.kind == W.STATS_KIND:
            stats = _read_one(region, entry.name, entry.offset, entry.size)
            if stats is not None:
                out.append(stats)
    return out
