"""ZenohBridge: a region's buffers, channels and endpoints joined to other hosts over Eclipse Zenoh.

Theory of operation
-------------------
A bridge has *routes*. An **export route** owns a thread that blocks in its source's receive (the
C fast path, GIL released), and publishes each message whole, as one sample, in the order it
was received, with the 24-byte attachment of `ampipc.bridge._wire.SAMPLE_HEADER` (epoch,
sequence, publication time). It takes a message out of the source only while Zenoh reports a
matching subscriber, so with nobody listening the messages wait in the buffer and the local
writer feels back-pressure instead of losing them. When the source ends (its writer closed or
died and it is drained) the route publishes a DELETE on its key: the end-of-stream mark.
The route stores its last sequence number in the region *before* publishing, so a bridge
restarted under the same name continues the numbering and the importer counts as ``lost`` what
the dead one took out of the source but never delivered (all but a message taken in the instant
between the receive and that store). With ``pack`` > 1 the route takes up to ``pack`` messages
at once and publishes each run of them (at most `PACK_BYTES`) as one packed sample.

An **import route** declares a subscriber with a bounded FIFO handler (``fifo_capacity``
samples) and a thread that takes what is queued (up to 256 samples), unpacks it, and writes
the messages into its sink in one call (or, with ``fifo_capacity=0``, a callback that writes
each sample from Zenoh's receive thread). With ``congestion="block"`` (the
default) the sink's send blocks while the sink is full; the FIFO then fills, Zenoh's receive
path blocks on it, the TCP window closes, and the remote publisher (``CongestionControl.BLOCK``,
``Reliability.RELIABLE``) blocks in turn, back to the remote exporter, which stops draining its
buffer: end-to-end back-pressure, nothing dropped (see `ampipc.bridge.session` for how long
Zenoh tolerates a blocked link). With ``congestion="drop"`` publishers use ``DROP`` and the
importer uses ``try_send``: a full sink drops the sample, counted in ``drops``; samples Zenoh
itself dropped show as gaps in the sequence numbers, counted in ``lost``.

Liveness: each route declares a Zenoh liveliness token ``ampipc/bridge/{export|import}/<zid>/<key>``
and watches the opposite tokens on its key. Tokens vanish when their session closes or its
process dies (the TCP link breaks, or Zenoh's lease expires), so a route knows whether a peer route
is alive (``peers``) and counts ``peer_losses``. An import route whose last exporter is gone (or
ended) with ``on_peer_lost="close"`` drains what arrived into the sink and closes its side of the
sink, so the local reader drains and then sees `PeerClosed`; an export route likewise closes its
side of the source. With ``"wait"`` a route keeps waiting for a new peer (a restarted bridge).

Statistics are counted by each route's thread (plain ints, one writer each) and copied into the
bridge's shared statistics object (`ampipc.bridge.stats`) by one ticker thread every 100 ms and at
close, so the counters in the region have a single writer; a route's state word is stored when it
changes.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import zenoh

from ..errors import IpcError, MessageTooLarge, PeerClosed, PeerDied, RegionClosed, Timeout
from ..region import Region
from . import _wire as W
from .ports import Port, port
from .sequence import SequenceTracker
from .stats import BridgeStatistics, RouteStatistics, SharedStatistics

__all__ = ["ZenohBridge", "Route", "Congestion", "PeerLost"]

log = logging.getLogger("ampipc.bridge")

Congestion = Literal["block", "drop"]
PeerLost = Literal["close", "wait"]

_SLICE = 0.1  # seconds between stop checks of a blocked route thread
_TICK = 0.1  # seconds between copies of the counters into the region
_TOKEN_ROOT = "ampipc/bridge"


def _check_key(key: str, *, concrete: bool) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a key expression must be a non-empty string, not {key!r}")
    try:
        canonical = str(zenoh.KeyExpr(key))
    except zenoh.ZError as e:
        raise ValueError(f"invalid key expression {key!r}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None
    if canonical != key:
        raise ValueError(f"key expression {key!r} is not canonical; write it as {canonical!r}")
    if concrete and ("*" in key or "$" in key):
        raise ValueError(f"an exported key must be concrete (no wildcards): {key!r}")
    return key


PACK_BYTES = 64 * 1024
"""A packed sample holds at most this many payload bytes (larger messages always go alone)."""


def _groups(batch: list[bytes]) -> list[list[bytes]]:
    """`batch` cut, in order, into runs of at most `PACK_BYTES` (a longer message forms a run alone)."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for data in batch:
        if current and size + len(data) > PACK_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append(data)
        size += len(data)
    if current:
        groups.append(current)
    return groups


def _undeclare(entity: Any) -> None:
    """Undeclare a Zenoh entity; one already undeclared (or whose session closed) is left alone."""
    try:
        entity.undeclare()
    except (zenoh.ZError, RuntimeError):
        pass


class Route:
    """One direction of a bridge between a local object and a key expression."""

    def __init__(self, bridge: ZenohBridge, direction: int, local: Port, key: str, on_peer_lost: PeerLost) -> None:
        self.bridge = bridge
        self.direction = W.DIRECTIONS[direction]
        self.local = local
        self.key = key
        self.on_peer_lost = on_peer_lost
        self._region = bridge.region
        self._record = bridge._shared.add_route(direction, local.description, key)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peers: set[str] = set()
        self._peer_present = threading.Event()
        self._peer_gone = threading.Event()
        self.state = "waiting"
        self.messages = 0
        self.bytes = 0
        self.drops = 0
        self.lost = 0
        self.lag_ns_last = 0
        self.lag_ns_max = 0
        self.peer_losses = 0
        self.samples = 0  # Zenoh samples published or received (fewer than messages when packed)
        self.error: BaseException | None = None
        session = bridge.session
        zid = str(session.info.zid())
        mine, theirs = ("export", "import") if direction == 1 else ("import", "export")
        self._token = session.liveliness().declare_token(f"{_TOKEN_ROOT}/{mine}/{zid}/{key}")
        self._watch = session.liveliness().declare_subscriber(
            f"{_TOKEN_ROOT}/{theirs}/*/{key}", zenoh.handlers.Callback(self._on_liveliness), history=True
        )
        self._thread = threading.Thread(target=self._run_safely, name=f"bridge {self.direction} {key}", daemon=True)

    # ---- liveness ---------------------------------------------------------------------------
    def _on_liveliness(self, sample: zenoh.Sample) -> None:
        token = str(sample.key_expr)
        with self._lock:
            if sample.kind == zenoh.SampleKind.PUT:
                self._peers.add(token)
                self._peer_gone.clear()
                self._peer_present.set()
                if self.state in ("waiting", "peer lost"):
                    self._set_state("connected")
            elif token in self._peers:
                self._peers.discard(token)
                self.peer_losses += 1
                log.info("bridge route %s %s: peer %s went away", self.direction, self.key, token)
                if not self._peers:
                    self._peer_present.clear()
                    self._peer_gone.set()
                    if self.state == "connected":
                        self._set_state("peer lost")

    @property
    def peers(self) -> int:
        """How many peer routes (remote importers of an export, exporters of an import) are alive."""
        return len(self._peers)

    def wait_peer(self, timeout: float | None = None) -> None:
        """Block until at least one peer route is alive; `ampipc.Timeout` after `timeout` seconds."""
        if not self._peer_present.wait(timeout):
            raise Timeout(f"no peer for the {self.direction} of {self.key!r} within {timeout} s")

    # ---- counters -----------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        try:
            self._region.mapping.store_u32(self._record + W.R_STATE, W.STATE_CODES[state])
        except RegionClosed:
            pass

    def _backlog(self) -> int:
        return 0

    def _flush(self) -> None:
        """Copy this route's counters into the region (only the bridge's ticker calls this, then close)."""
        m = self._region.mapping
        r = self._record
        try:
            m.store_u64(r + W.R_MESSAGES, self.messages)
            m.store_u64(r + W.R_BYTES, self.bytes)
            m.store_u64(r + W.R_DROPS, self.drops)
            m.store_u64(r + W.R_LOST, self.lost)
            m.store_u64(r + W.R_LAG_LAST, self.lag_ns_last)
            m.store_u64(r + W.R_LAG_MAX, self.lag_ns_max)
            m.store_u64(r + W.R_BACKLOG, self._backlog())
            m.store_u32(r + W.R_PEERS, len(self._peers))
            m.store_u32(r + W.R_PEER_LOSSES, self.peer_losses)
        except (RegionClosed, IpcError):
            pass

    def statistics(self) -> RouteStatistics:
        return RouteStatistics(
            self.direction, self.local.description, self.key, self.state, self.messages, self.bytes, self.drops,
            self.lost, self.lag_ns_last, self.lag_ns_max, self._backlog(), len(self._peers), self.peer_losses,
        )

    # ---- thread -------------------------------------------------------------------------------
    def _run_safely(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported through state and statistics, never a silent stop
            self.error = e
            if not isinstance(e, (PeerDied, PeerClosed)):
                log.exception("bridge route %s %s failed", self.direction, self.key)
            self._set_state("sink failed" if self.direction == "import" else "source ended")

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def _close_zenoh(self) -> None:
        for entity in (self._watch, self._token):
            _undeclare(entity)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._close_zenoh()
        if self.state not in ("source ended", "sink failed"):
            self._set_state("stopped")

    def __repr__(self) -> str:
        return f"<Route {self.direction} {self.local.description} <-> {self.key!r} {self.state}>"


class _ExportRoute(Route):
    def __init__(self, bridge: ZenohBridge, local: Port, key: str, on_peer_lost: PeerLost, pack: int) -> None:
        super().__init__(bridge, 1, local, key, on_peer_lost)
        self.pack = pack
        previous = bridge._shared.previous_position(key)
        # A bridge restarted under the same name continues its predecessor's numbering, so the
        # importer counts the messages the dead bridge took out of the source but never delivered.
        self.epoch, self._first_sequence = previous if previous else (secrets.randbits(64) | 1, 0)
        self._region.mapping.store_u64(self._record + W.R_EPOCH, self.epoch)
        self._region.mapping.store_u64(self._record + W.R_SEQUENCE, self._first_sequence)
        self._publisher = bridge.session.declare_publisher(
            key,
            congestion_control=bridge._congestion_control,
            reliability=zenoh.Reliability.RELIABLE,
            express=bridge.express,
        )
        self._matched = threading.Event()
        status: Any = self._publisher.matching_status  # a MatchingStatus (the stub says bool)
        if status.matching:
            self._matched.set()
        self._matching = self._publisher.declare_matching_listener(zenoh.handlers.Callback(self._on_matching))

    def _on_matching(self, status: zenoh.MatchingStatus) -> None:
        if status.matching:
            self._matched.set()
        else:
            self._matched.clear()

    def _backlog(self) -> int:
        try:
            return self.local.backlog()
        except IpcError:
            return 0

    def _run(self) -> None:
        source = self.local
        put = self._publisher.put
        pack = W.SAMPLE_HEADER.pack
        pack_many = W.PACKED_HEADER.pack
        length = W.PACKED_LENGTH.pack
        packing = self.pack
        epoch = self.epoch
        matched = self._matched
        stop = self._stop
        store = self._region.mapping.store_u64
        sequence_word = self._record + W.R_SEQUENCE
        sequence = self._first_sequence
        while not stop.is_set():
            if not matched.is_set():
                if self.on_peer_lost == "close" and self._peer_gone.is_set():
                    self.local_close()
                    return
                matched.wait(_SLICE)
                continue
            try:
                batch = [source.receive(_SLICE)] if packing == 1 else source.receive_many(packing, _SLICE)
            except TimeoutError:
                continue
            except (PeerClosed, PeerDied, RegionClosed) as e:
                log.info("bridge export %s: the source ended (%s)", self.key, e)
                self._publisher.delete()  # the end-of-stream mark, after every message
                self._set_state("source ended")
                return
            first = sequence + 1
            sequence += len(batch)
            store(sequence_word, sequence)  # before publishing: a restarted bridge resumes after these
            for group in _groups(batch) if packing > 1 else (batch,):
                if len(group) == 1:
                    data = group[0]
                    put(data, attachment=pack(epoch, first, time.time_ns()))
                    size = len(data)
                else:
                    payload = b"".join([part for data in group for part in (length(len(data)), data)])
                    put(payload, attachment=pack_many(epoch, first, time.time_ns(), len(group), 0))
                    size = len(payload) - 4 * len(group)
                first += len(group)
                self.messages += len(group)
                self.bytes += size
                self.samples += 1

    def local_close(self) -> None:
        closed = self.local.close()
        self._set_state("peer lost")
        log.info("bridge export %s: no importer left; local side %s", self.key, "closed" if closed else "kept open")

    def _close_zenoh(self) -> None:
        for entity in (self._matching, self._publisher):
            _undeclare(entity)
        super()._close_zenoh()


class _ImportRoute(Route):
    def __init__(self, bridge: ZenohBridge, local: Port, key: str, on_peer_lost: PeerLost, fifo_capacity: int) -> None:
        super().__init__(bridge, 2, local, key, on_peer_lost)
        self.drop_on_congestion = bridge.congestion == "drop"
        self._tracker = SequenceTracker()
        self._ended = False
        self._failed = False
        self._finished = threading.Event()
        self._delivering = threading.Lock()  # held by the sample path; the end waits for it
        self._undeclared = False
        self._drain_deadline: float | None = None
        self._handler: Any = None
        if fifo_capacity:
            self._subscriber = bridge.session.declare_subscriber(key, zenoh.handlers.FifoChannel(fifo_capacity))
            self._handler = self._subscriber.handler
        else:
            # Run on Zenoh's receive thread: one thread hop less per sample; a full sink blocks
            # that thread exactly as a full FIFO would.
            self._subscriber = bridge.session.declare_subscriber(
                key, zenoh.handlers.Callback(self._on_sample, indirect=False)
            )
        self._watcher = threading.Thread(target=self._watch_peer, name=f"bridge peer watch {key}", daemon=True)

    def start(self) -> None:
        super().start()
        if self.on_peer_lost == "close":
            self._watcher.start()

    def _watch_peer(self) -> None:
        """With on_peer_lost="close": once the last exporter is gone, end the subscription (what arrived drains)."""
        while not self._stop.is_set():
            if self._peer_gone.wait(_SLICE):
                self._end_subscription()
                return

    def _end_subscription(self) -> None:
        with self._lock:
            if self._undeclared:
                return
            self._undeclared = True
        self._finished.set()
        _undeclare(self._subscriber)

    def _fail(self, error: BaseException, undelivered: int) -> None:
        # The local reader is gone: say so, count what still comes, and stop matching the
        # exporters so they keep their messages in their buffers instead of sending them here.
        self.drops += undelivered
        self.error = error
        self._failed = True
        self._set_state("sink failed")
        log.warning("bridge import %s: the sink failed: %s", self.key, error)
        threading.Thread(target=self._end_subscription, daemon=True).start()

    def _deliver(self, messages: list[bytes]) -> None:
        """Write `messages` into the sink, in order: blocking for room, or dropping (counted) under "drop"."""
        if self._failed:
            self.drops += len(messages)
            return
        sink = self.local
        sent = 0
        try:
            if self.drop_on_congestion:
                for data in messages:
                    try:
                        delivered = sink.try_send(data)
                    except MessageTooLarge:
                        delivered = False
                    if delivered:
                        sent += 1
                        self.bytes += len(data)
                    else:
                        self.drops += 1
                self.messages += sent
                return
            while sent < len(messages):
                try:
                    if len(messages) - sent == 1:
                        sink.send(messages[sent], _SLICE)
                        done = 1
                    else:
                        done = sink.send_many(messages[sent:], _SLICE)
                except TimeoutError:
                    done = 0
                except MessageTooLarge as e:
                    self.drops += 1  # can never fit: counted, and said once per message
                    log.error("bridge import %s: dropped a %d-byte message: %s", self.key, len(messages[sent]), e)
                    sent += 1
                    continue
                for data in messages[sent : sent + done]:
                    self.bytes += len(data)
                self.messages += done
                sent += done
                if done == 0:
                    deadline = self._drain_deadline
                    if deadline is not None and time.monotonic() > deadline:
                        self.drops += len(messages) - sent  # the bridge is closing and the sink stays full
                        return
        except (PeerDied, PeerClosed, RegionClosed, IpcError) as e:
            self._fail(e, len(messages) - sent)

    def _take(self, samples: list[zenoh.Sample], messages: list[bytes]) -> None:
        """Append the whole messages `samples` carry (one each, or packed batches) to `messages`.

        Accounts sequence numbers (gaps are ``lost``) and the lag of the last one; stops at an
        exporter's end mark (a DELETE), setting ``_ended``. ampipc samples always carry an
        attachment, so the sample kind is looked at only for samples without one.
        """
        observe = self._tracker.observe
        single, packed = W.SAMPLE_HEADER, W.PACKED_HEADER
        published_ns = 0
        lost = 0
        for index, sample in enumerate(samples):
            self.samples += 1
            attachment = sample.attachment
            if attachment is None:
                if sample.kind == zenoh.SampleKind.DELETE:
                    self._ended = True  # the exporter's end-of-stream mark: nothing of it comes after
                    self.drops += len(samples) - index - 1  # another exporter's, after the end: counted
                    break
                messages.append(sample.payload.to_bytes())  # a plain Zenoh publisher's sample
                continue
            raw = attachment.to_bytes()
            if len(raw) == single.size:
                epoch, first, published_ns = single.unpack(raw)
                lost += observe(epoch, first)
                messages.append(sample.payload.to_bytes())
            elif len(raw) == packed.size:
                epoch, first, published_ns, count, _ = packed.unpack(raw)
                try:
                    messages += W.split_packed(sample.payload.to_bytes(), count)
                except ValueError as e:
                    self.drops += max(count, 1)  # refused, and counted: never half a batch
                    log.error("bridge import %s: %s", self.key, e)
                    continue
                lost += self._tracker.observe_batch(epoch, first, count)
            else:
                messages.append(sample.payload.to_bytes())
        self.lost += lost
        if published_ns:
            lag = time.time_ns() - published_ns
            if lag > 0:
                self.lag_ns_last = lag
                if lag > self.lag_ns_max:
                    self.lag_ns_max = lag

    def _on_sample(self, sample: zenoh.Sample) -> None:
        """One sample, from Zenoh's receive thread (``fifo_capacity=0``)."""
        with self._delivering:
            messages: list[bytes] = []
            self._take([sample], messages)
            if self._ended:
                self._finished.set()
            if messages:
                self._deliver(messages)

    def _drain_fifo(self) -> None:
        """The route thread with a FIFO: take what is queued (up to 256 samples), write it in one go."""
        handler = self._handler
        recv, try_recv = handler.recv, handler.try_recv
        while not self._ended:
            try:
                samples = [recv()]
                while len(samples) < 256:
                    more = try_recv()
                    if more is None:
                        break
                    samples.append(more)
            except zenoh.ZError:
                break  # undeclared and drained
            messages: list[bytes] = []
            with self._delivering:
                self._take(samples, messages)
                if messages:
                    self._deliver(messages)

    def _run(self) -> None:
        if self._handler is not None:
            self._drain_fifo()
        else:
            while not self._finished.wait(_SLICE):
                pass
        self._end_subscription()
        with self._delivering:  # a sample being delivered completes first
            pass
        if self._failed:
            return
        if self._ended or (self.on_peer_lost == "close" and self._peer_gone.is_set() and not self._stop.is_set()):
            closed = self.local.close()
            self._set_state("source ended" if self._ended else "peer lost")
            log.info("bridge import %s: the exporter %s; local side %s", self.key,
                     "ended" if self._ended else "went away", "closed" if closed else "kept open")

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._drain_deadline = time.monotonic() + timeout / 2
        self._end_subscription()
        super().stop(timeout)


class ZenohBridge:
    """Bridge objects of `region` to key expressions of a Zenoh `session` (see the module doc).

    ``congestion``: ``"block"`` (back-pressure end to end, nothing dropped) or ``"drop"`` (never
    block; every drop counted). ``fifo_capacity``: samples an import route buffers between Zenoh
    and its sink, read by the route's thread (default 256); 0 writes each sample into the sink
    from Zenoh's receive thread itself (one thread hop less, but the GIL taken per sample). ``name``: the name of the bridge's
    statistics object (``bridge.<name>``).
    """

    def __init__(
        self,
        region: Region,
        session: zenoh.Session,
        *,
        name: str = "bridge",
        congestion: Congestion = "block",
        fifo_capacity: int = 256,
        max_routes: int = 16,
        express: bool = False,
        pack: int = 1,
    ) -> None:
        if congestion not in ("block", "drop"):
            raise ValueError(f"congestion must be 'block' or 'drop', not {congestion!r}")
        if not isinstance(pack, int) or not 1 <= pack <= 4096:
            raise ValueError(f"pack must be 1..4096 messages per sample, not {pack!r}")
        self.pack = pack
        if not isinstance(fifo_capacity, int) or fifo_capacity < 0:
            raise ValueError(f"fifo_capacity must be an int >= 0, not {fifo_capacity!r}")
        self.region = region
        self.session = session
        self.name = name
        self.congestion: Congestion = congestion
        self.fifo_capacity = fifo_capacity
        self.express = express
        self._congestion_control = zenoh.CongestionControl.BLOCK if congestion == "block" else zenoh.CongestionControl.DROP
        self.zid = str(session.info.zid())
        self._shared = SharedStatistics(region, name, route_capacity=max_routes, zid=self.zid)
        self._routes: list[Route] = []
        self._extras: list[Callable[[float], None]] = []
        self.closed = False
        self._ticking = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"bridge {name} statistics", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._ticking.wait(_TICK):
            for route in list(self._routes):
                route._flush()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"bridge {self.name!r} is closed")

    def export(self, source: Any, key: str, *, channel: int | None = None, on_peer_lost: PeerLost = "wait") -> Route:
        """Publish every message of `source` on `key` (a MessageBuffer or its name, an Ipc with `channel`, an Endpoint)."""
        self._check_open()
        _check_key(key, concrete=True)
        if any(r.direction == "export" and r.key == key for r in self._routes):
            raise ValueError(f"key {key!r} is exported by this bridge already")
        if on_peer_lost not in ("close", "wait"):
            raise ValueError(f"on_peer_lost must be 'close' or 'wait', not {on_peer_lost!r}")
        route = _ExportRoute(self, port(source, self.region, channel=channel), key, on_peer_lost, self.pack)
        self._routes.append(route)
        route.start()
        return route

    def import_(self, key: str, sink: Any, *, channel: int | None = None, on_peer_lost: PeerLost = "wait") -> Route:
        """Write every sample received on `key` into `sink`, in order, with back-pressure."""
        self._check_open()
        _check_key(key, concrete=False)
        if any(r.direction == "import" and r.key == key for r in self._routes):
            raise ValueError(f"key {key!r} is imported by this bridge already")
        if on_peer_lost not in ("close", "wait"):
            raise ValueError(f"on_peer_lost must be 'close' or 'wait', not {on_peer_lost!r}")
        route = _ImportRoute(self, port(sink, self.region, channel=channel), key, on_peer_lost, self.fifo_capacity)
        self._routes.append(route)
        route.start()
        return route

    def export_service(self, target: Any, key: str, **options: Any) -> Any:
        """Let clients on other hosts call `target` through `key` (see `ampipc.bridge.services`).

        `target`: a services `Server` (served in this process), or the name of a service a core
        published in this bridge's region with ``Server.listen(region, name)`` (relayed to it).
        Returns the `ServiceExport`; it closes with the bridge.
        """
        self._check_open()
        from .services import export_service

        return export_service(self, target, key, **options)

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def wait_peers(self, timeout: float | None = None) -> None:
        """Block until every route has a live peer route; `ampipc.Timeout` otherwise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for route in self._routes:
            route.wait_peer(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _add_closer(self, closer: Callable[[float], None]) -> None:
        """For layers built on the bridge (remote services): called with the timeout at close."""
        self._extras.append(closer)

    def statistics(self) -> BridgeStatistics:
        """Live counters of every route (the same values the shared object shows, without its delay)."""
        return BridgeStatistics(
            self.name, self.region.name, os.getpid(), True, not self.closed, self.zid,
            tuple(r.statistics() for r in self._routes),
        )

    def close(self, timeout: float = 10.0) -> None:
        """Stop every route (import routes drain what Zenoh delivered, up to `timeout`), undeclare everything."""
        if self.closed:
            return
        self.closed = True
        for closer in self._extras:
            closer(timeout)
        for route in self._routes:
            route.stop(timeout)
        self._ticking.set()
        self._ticker.join()
        for route in self._routes:
            route._flush()
        self._shared.close()

    def __enter__(self) -> ZenohBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ZenohBridge {self.name!r} region {self.region.name!r} {len(self._routes)} routes>"
