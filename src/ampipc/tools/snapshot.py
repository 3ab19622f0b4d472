"""A frozen picture of a running region: what ``ampipc top`` shows, without any rendering.

Theory of operation
-------------------
`take_snapshot(region)` reads, once, everything the region says about itself and returns a tree
of frozen dataclasses: the header and processes; every message and stream buffer with its fill,
trigger, shared counters and the pid (and liveness) of its writer and reader; the channel sets
(``ipc`` objects) with the strategy state that lives in shared memory (control-buffer overflow
counts, pending toggle events, the HSEM ids in use); the virtual hardware (per core: pending
lines and their counters, HSEM notification enables and status, EXTI inputs; the 32 semaphores
with their owners); RPMsg links (resource-table status, vring indices, the two sides' pids);
payload pools and Zenoh bridges when their modules are installed (imported lazily: a region that
holds one but a build without the module shows it as a plain object); everything else as a plain
directory entry. Nothing is written to the region (attaching to it registers the observing
process, which `take_snapshot` leaves out of the process list when told its pid).

Values change while they are read (the writers keep running), so one snapshot may mix instants;
every value comes from an atomic load and stays within its own bounds. `rates(before, after)`
turns two snapshots into per-buffer messages/s and bytes/s.

A region placed in a chip memory (`ampipc.hw.memory`) also gets a `ChipView` (`chip_view`): the
chip, memory and power domain, and the chip address range of the region's own header and of every
object, as a linker map gives them; a plain region has none (and its JSON no ``chip`` key).

`snapshot_to_json` gives the machine-readable form (plain dicts and lists) of ``top --json``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from .. import _layout as L
from ..buffers import BufferStatistics, MessageBuffer, StreamBuffer
from ..errors import IpcError
from ..liveness import is_alive
from ..region import ObjectEntry, Region

__all__ = [
    "BufferRate",
    "BufferView",
    "ChannelView",
    "ChipObjectView",
    "ChipView",
    "CoreView",
    "GenericView",
    "Peer",
    "PoolView",
    "ProcessView",
    "RegionSnapshot",
    "RpmsgView",
    "SemaphoreView",
    "BridgeView",
    "chip_view",
    "rates",
    "snapshot_to_json",
    "take_snapshot",
]


@dataclass(frozen=True)
class Peer:
    """The process recorded as a buffer's writer or reader."""

    pid: int
    alive: bool


@dataclass(frozen=True)
class ProcessView:
    pid: int
    alive: bool


@dataclass(frozen=True)
class BufferView:
    name: str
    kind: str  # "message_buffer" or "stream_buffer"
    capacity: int
    used: int
    trigger_level: int
    statistics: BufferStatistics
    writer: Peer | None
    reader: Peer | None

    @property
    def fill(self) -> float:
        return self.used / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class ChannelView:
    """A channel set (``Ipc.init``): its layout and the strategy state kept in shared memory."""

    name: str
    strategy: str
    channels: int
    buffer_size: int
    cores: tuple[str, str]
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CoreView:
    name: str
    core_id: int
    pending: int
    interrupts_raised: int
    handlers_run: int
    events_received: int
    hsem_enabled: int  # CnIER
    hsem_status: int  # CnISR
    exti_enabled: tuple[bool, ...]


@dataclass(frozen=True)
class SemaphoreView:
    sem_id: int
    owner_core: int | None  # HSEM COREID of the holder, None when free
    owner_process: int | None
    owner_name: str | None


@dataclass(frozen=True)
class RpmsgView:
    name: str
    status: int | None  # the vdev status byte of the resource table
    vrings: tuple[tuple[int, int], ...]  # (avail idx, used idx) per vring
    driver: Peer | None
    device: Peer | None
    # (side, name, local address, remote address or None while unbound), as each side publishes them
    endpoints: tuple[tuple[str, str, int, int | None], ...] = ()


@dataclass(frozen=True)
class PoolView:
    name: str
    statistics: dict[str, int]


@dataclass(frozen=True)
class BridgeView:
    name: str
    pid: int
    alive: bool
    running: bool
    routes: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class GenericView:
    name: str
    kind: str
    offset: int
    size: int
    note: str = ""


@dataclass(frozen=True)
class ChipObjectView:
    """One range of a chip region in chip addresses: ``end`` is the last byte (as a linker map shows it)."""

    name: str
    kind: str
    start: int
    end: int
    size: int


@dataclass(frozen=True)
class ChipView:
    """Where a chip region lies and what sits at which chip address (the build analyzer's view)."""

    chip: str
    memory: str
    domain: int
    domain_name: str
    stays_powered: bool  # a D3 memory: it keeps its contents and stays reachable while D1/D2 sleep
    memory_base: int
    memory_size: int
    base_address: int  # region byte 0
    end_address: int  # the region's last byte
    cache_model: bool
    header: ChipObjectView  # the region header, directory and process table
    objects: tuple[ChipObjectView, ...]
    free: ChipObjectView | None  # the unallocated tail, None when the region is full


@dataclass(frozen=True)
class RegionSnapshot:
    name: str
    size: int
    free: int
    creator_pid: int
    creator_alive: bool
    taken_at: float  # time.monotonic() when the snapshot was taken
    processes: tuple[ProcessView, ...]
    buffers: tuple[BufferView, ...]
    channels: tuple[ChannelView, ...]
    cores: tuple[CoreView, ...]
    semaphores: tuple[SemaphoreView, ...]
    rpmsg: tuple[RpmsgView, ...]
    pools: tuple[PoolView, ...]
    bridges: tuple[BridgeView, ...]
    others: tuple[GenericView, ...]
    chip: ChipView | None = None


@dataclass(frozen=True)
class BufferRate:
    messages_per_s: float
    bytes_per_s: float


def _peer(buf: MessageBuffer | StreamBuffer, role: int) -> Peer | None:
    pid, start = buf._peer_identity(role)
    return Peer(pid, is_alive(pid, start)) if pid else None


def _buffer(region: Region, entry: ObjectEntry) -> BufferView | None:
    buf: MessageBuffer | StreamBuffer
    try:
        if entry.kind == L.KIND_MESSAGE_BUFFER:
            buf = MessageBuffer.attach(region, entry.name)
        else:
            buf = StreamBuffer.attach(region, entry.name)
        return BufferView(
            name=entry.name, kind=entry.kind, capacity=buf.capacity, used=buf.bytes_available,
            trigger_level=buf.trigger_level, statistics=buf.statistics(), writer=_peer(buf, 0), reader=_peer(buf, 1),
        )
    except IpcError:
        return None  # not yet initialised, or corrupt: shown as a plain entry


def _channel(region: Region, entry: ObjectEntry) -> ChannelView | None:
    from ..ipc import _DESCRIPTOR, _MAGIC  # the descriptor layout is defined once, in ipc.py
    from ..notify import EndpointSpec, EventMap, StrategyOptions

    m = region.mapping
    if entry.size < _DESCRIPTOR.size or m.load_u32(entry.offset) != _MAGIC:
        return None
    with region.view as view:
        fields = _DESCRIPTOR.unpack_from(view, entry.offset)
    _, _, channels, buffer_size, raw_strategy, raw_a, raw_b, irq_line, records, hsem_base = fields
    text = [raw.split(b"\0", 1)[0].decode("ascii", "replace") for raw in (raw_strategy, raw_a, raw_b)]
    strategy, core_a, core_b = text
    counters: dict[str, int] = {}
    if not 1 <= channels <= 1024:
        return ChannelView(entry.name, strategy, channels, buffer_size, (core_a, core_b), {"corrupt": 1})
    endpoints = [
        spec for i in range(channels)
        for spec in (EndpointSpec(2 * i, core_a, core_b), EndpointSpec(2 * i + 1, core_b, core_a))
    ]
    try:
        event_map = EventMap(endpoints)
        options = StrategyOptions(irq_line=irq_line, control_records=records, hsem_base=hsem_base)
        if strategy == "control":
            from ..notify.control import CONTROL_STATE_KIND, ControlLayout

            layout = ControlLayout(entry.name, event_map, options)
            state = region.lookup(layout.state_name, CONTROL_STATE_KIND)
            if state.size == layout.state_size:
                for (src, dst), at in layout.block_at.items():
                    counters[f"overflows {src}->{dst}"] = m.load_u32(state.offset + at + 4)
                    counters[f"overflow flag {src}->{dst}"] = m.load_u32(state.offset + at)
        elif strategy == "toggle":
            from ..notify.toggle import TOGGLE_KIND, ToggleLayout, pending_bits

            tlayout = ToggleLayout(event_map)
            words = region.lookup(f"{entry.name}.tg", TOGGLE_KIND)
            if words.size == tlayout.size:
                for d, n in tlayout.words.items():
                    pending = 0
                    for w in range(n):
                        sent = m.load_u32(words.offset + tlayout.sent_at[d] + 4 * w)
                        acked = m.load_u32(words.offset + tlayout.acked_at[d] + 4 * w)
                        pending += bin(pending_bits(sent, acked, event_map.valid_mask(*d, w))).count("1")
                    counters[f"pending toggles {d[0]}->{d[1]}"] = pending
        elif strategy == "hsem":
            counters["first HSEM"] = hsem_base
            counters["HSEMs used"] = 4 * channels
        counters["irq line"] = irq_line
    except (IpcError, ValueError):
        counters["unreadable"] = 1
    return ChannelView(entry.name, strategy, channels, buffer_size, (core_a, core_b), counters)


def _hardware(region: Region, entry: ObjectEntry) -> tuple[list[CoreView], list[SemaphoreView]]:
    from ..hw import HSEM_COUNT, Hardware

    hw = Hardware.attach(region, name=entry.name)
    cores = []
    names = {info.core_id: info.name for info in hw.cores}
    for info in hw.cores:
        core = hw.core(info.name)
        stats = core.statistics()
        cores.append(CoreView(
            name=info.name, core_id=info.core_id, pending=stats.pending, interrupts_raised=stats.interrupts_raised,
            handlers_run=stats.handlers_run, events_received=stats.events_received, hsem_enabled=core.hsem.ier,
            hsem_status=core.hsem.isr, exti_enabled=(core.exti_enabled(0), core.exti_enabled(1)),
        ))
    hsem = hw.core(hw.cores[0].name).hsem
    sems = []
    for n in range(HSEM_COUNT):
        owner = hsem.owner(n)
        sems.append(SemaphoreView(n, None, None, None) if owner is None
                    else SemaphoreView(n, owner[0], owner[1], names.get(owner[0])))
    return cores, sems


def _rpmsg(region: Region, entry: ObjectEntry) -> RpmsgView:
    from ..rpmsg import transports as T

    m = region.mapping
    base = entry.offset

    def side(pid_at: int, start_at: int) -> Peer | None:
        pid = m.load_u32(base + pid_at)
        return Peer(pid, is_alive(pid, m.load_u64(base + start_at))) if pid else None

    status: int | None = None
    vrings: list[tuple[int, int]] = []
    endpoints: list[tuple[str, str, int, int | None]] = []
    if entry.size >= T._RSC_AT + 0x58 and m.load_u32(base + T._OFF_MAGIC) == T._RT_MAGIC:
        try:
            from ..rpmsg._window import Window
            from ..rpmsg.rsc_table import parse_resource_table

            whole = region.view
            view = whole[base: base + entry.size]
            whole.release()
            window = Window(view, m, base)
            try:
                for side_name, rows in T.read_endpoint_tables(view).items():
                    endpoints += [(side_name, n, a, None if d == 0xFFFFFFFF else d) for n, a, d in rows]
                table = parse_resource_table(window, m.load_u32(base + T._OFF_RSC))
                status = table.status
                for ring in table.vrings:
                    geometry = ring.geometry
                    vrings.append((window.u16(geometry.avail_offset + 2), window.u16(geometry.used_offset + 2)))
            finally:
                window.release()
                view.release()
        except (IpcError, ValueError, AttributeError, TypeError):
            pass  # a table still being written, or a layout this reader does not know
    return RpmsgView(
        entry.name, status, tuple(vrings),
        side(T._OFF_DRIVER_PID, T._OFF_DRIVER_START), side(T._OFF_DEVICE_PID, T._OFF_DEVICE_START),
        tuple(endpoints),
    )


def _pool(region: Region, entry: ObjectEntry) -> PoolView | None:
    try:
        from ..services.pool import PayloadPool
    except ImportError:
        return None
    try:
        stats = PayloadPool.attach(region, entry.name).statistics()
    except (IpcError, ValueError):
        return None
    return PoolView(entry.name, {k: int(v) for k, v in dataclasses.asdict(stats).items()})


def _bridges(region: Region) -> list[BridgeView] | None:
    try:
        from ..bridge.stats import read_bridge_statistics
    except ImportError:
        return None
    try:
        found = read_bridge_statistics(region)
    except (IpcError, ValueError):
        return None
    return [
        BridgeView(b.name, b.pid, b.alive, b.running, tuple(dataclasses.asdict(r) for r in b.routes)) for b in found
    ]


def chip_view(region: Region) -> ChipView | None:
    """The chip address map of `region` (None for a region not placed in a chip memory)."""
    placement = region.placement
    if placement is None:
        return None
    info = placement.memory_info
    base = placement.base_address
    objects_offset = region.mapping.load_u32(L.OFF_OBJECTS_OFFSET)
    cursor = region.size - region.free_bytes
    objects = tuple(ChipObjectView(e.name, e.kind, base + e.offset, base + e.offset + e.size - 1, e.size)
                    for e in region.objects())
    free = None
    if cursor < region.size:
        free = ChipObjectView("(free)", "", base + cursor, base + region.size - 1, region.size - cursor)
    return ChipView(
        chip=placement.chip, memory=placement.memory, domain=int(placement.domain), domain_name=placement.domain_name,
        stays_powered=info.stays_powered, memory_base=info.base, memory_size=info.size, base_address=base,
        end_address=base + region.size - 1, cache_model=placement.cache_model,
        header=ChipObjectView("(region header)", "", base, base + objects_offset - 1, objects_offset),
        objects=objects, free=free,
    )


def take_snapshot(region: Region, *, observer: int | None = None) -> RegionSnapshot:
    """Everything `region` says about itself, read once (see the module docstring).

    `observer`: the pid of a process that attached only to look (``ampipc top`` passes its own), left
    out of the process list.
    """
    buffers: list[BufferView] = []
    channels: list[ChannelView] = []
    cores: list[CoreView] = []
    semaphores: list[SemaphoreView] = []
    links: list[RpmsgView] = []
    pools: list[PoolView] = []
    others: list[GenericView] = []
    entries = region.objects()
    bridges = _bridges(region)
    chip = chip_view(region)
    for entry in entries:
        shown = False
        if entry.kind == L.KIND_CHIP_MEMORY and chip is not None:
            shown = True  # the memory map shows it
        elif entry.kind in (L.KIND_MESSAGE_BUFFER, L.KIND_STREAM_BUFFER):
            view = _buffer(region, entry)
            if view is not None:
                buffers.append(view)
                shown = True
        elif entry.kind == "ipc":
            channel = _channel(region, entry)
            if channel is not None:
                channels.append(channel)
                shown = True
        elif entry.kind == "hw" and not cores:
            try:
                cores, semaphores = _hardware(region, entry)
                shown = True
            except IpcError:
                pass
        elif entry.kind == "rpmsg":
            links.append(_rpmsg(region, entry))
            shown = True
        elif entry.kind == "payload_pool":
            pool = _pool(region, entry)
            if pool is not None:
                pools.append(pool)
                shown = True
        elif entry.kind == "zenoh_bridge" and bridges is not None:
            shown = True
        if not shown:
            others.append(GenericView(entry.name, entry.kind, entry.offset, entry.size))
    return RegionSnapshot(
        name=region.name, size=region.size, free=region.free_bytes, creator_pid=region.creator_pid,
        creator_alive=region.creator_alive, taken_at=time.monotonic(),
        processes=tuple(ProcessView(p.pid, p.alive) for p in region.processes() if p.pid != observer),
        buffers=tuple(buffers), channels=tuple(channels), cores=tuple(cores), semaphores=tuple(semaphores),
        rpmsg=tuple(links), pools=tuple(pools), bridges=tuple(bridges or ()), others=tuple(others), chip=chip,
    )


def rates(before: RegionSnapshot, after: RegionSnapshot) -> dict[str, BufferRate]:
    """Messages/s and bytes/s sent into each buffer present in both snapshots."""
    elapsed = after.taken_at - before.taken_at
    if elapsed <= 0:
        return {b.name: BufferRate(0.0, 0.0) for b in after.buffers}
    old = {b.name: b.statistics for b in before.buffers}
    out = {}
    for b in after.buffers:
        prev = old.get(b.name)
        if prev is None:
            out[b.name] = BufferRate(0.0, 0.0)
            continue
        out[b.name] = BufferRate(
            max(0, b.statistics.messages_sent - prev.messages_sent) / elapsed,
            max(0, b.statistics.bytes_sent - prev.bytes_sent) / elapsed,
        )
    return out


def snapshot_to_json(snapshot: RegionSnapshot, buffer_rates: dict[str, BufferRate] | None = None) -> dict[str, Any]:
    """The snapshot as plain data (``top --json``); rates included when given."""
    data = dataclasses.asdict(snapshot)
    if data["chip"] is None:
        del data["chip"]  # a plain region's JSON is what it always was
    if buffer_rates is not None:
        for item in data["buffers"]:
            rate = buffer_rates.get(item["name"])
            item["rate"] = None if rate is None else dataclasses.asdict(rate)
    return data


