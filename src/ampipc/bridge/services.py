"""Remote calls across hosts: a client on another host calls a service that runs on a core here.

Theory of operation
-------------------
The services layer (`ampipc.services`) moves its frames (msgspec-encoded requests, replies,
chunks) over any `Link`: whole messages both ways, in order. `ZenohLink` is such a link over a
pair of Zenoh keys, so the services' own encoding, `Client` and `Server` work unchanged across
hosts; this module adds only the rendezvous. For a service exported on key expression ``K``:

==================================  ==================================================================
``K/<client>/q``                    the client's messages (requests, cancels, chunks), one sample each
``K/<client>/r``                    the server side's messages (replies, failures, Bye)
``ampipc/rpc/K/client/<client>``    liveliness token of each client (``<client>``: 32 random hex digits)
``ampipc/rpc/K/conn/<client>``      liveliness token of the server side's end of that client's link
==================================  ==================================================================

`connect_service` declares its reply subscriber, then its token, and returns a `Client` once the
exporting bridge has answered with the connection token (it subscribes to ``q`` first, so no
request is lost). `ServiceExport` (``ZenohBridge.export_service``) watches client tokens; for each
new client it opens the link and either serves it with a local `Server` in this process, or, for
a service that a core publishes in the bridge's region (``Server.listen(region, name)``), relays
every message unchanged to a connection of its own to that registry (`connect_slot`): the core's
server sees one more local client. A vanished token is the peer's death (`PeerDied` from the link,
after what arrived before it); a DELETE on the key is its orderly end (`PeerClosed`). Samples use
``CongestionControl.BLOCK`` and ``Reliability.RELIABLE``; a link's receive queue is bounded
(``capacity`` messages) and a full one blocks Zenoh's delivery: back-pressure, never a drop.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zenoh

from ..errors import IpcError, PeerClosed, PeerDied, Timeout
from ..services.rpc import Client, Server
from ..services.rpc_registry import DEFAULT_BUFFER_SIZE, connect_slot

__all__ = ["ZenohLink", "ServiceExport", "ServiceStatistics", "connect_service", "DEFAULT_MAX_MESSAGE"]

log = logging.getLogger("ampipc.bridge.services")

DEFAULT_MAX_MESSAGE = DEFAULT_BUFFER_SIZE - 4
"""A link message's largest size: what a registry slot's buffer holds, so relayed messages fit it
(the services layer splits longer frames into chunks)."""

_SLICE = 0.1
_ROOT = "ampipc/rpc"


class _End:
    def __init__(self, error: IpcError) -> None:
        self.error = error


def _undeclare(entity: Any) -> None:
    try:
        entity.undeclare()
    except (zenoh.ZError, RuntimeError):
        pass


class ZenohLink:
    """A services `Link` over Zenoh: publish on `tx_key`, receive `rx_key`, peer alive while `peer_token` is."""

    def __init__(self, session: zenoh.Session, tx_key: str, rx_key: str, peer_token: str, *,
                 max_message: int = DEFAULT_MAX_MESSAGE, capacity: int = 256, description: str | None = None) -> None:
        self.description = description or f"zenoh {tx_key} / {rx_key}"
        self.max_message = max_message
        self._queue: queue.Queue[bytes | _End] = queue.Queue(capacity)
        self._ended: IpcError | None = None
        self._peer_seen = threading.Event()
        self._peers: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._publisher = session.declare_publisher(
            tx_key, congestion_control=zenoh.CongestionControl.BLOCK, reliability=zenoh.Reliability.RELIABLE
        )
        self._subscriber = session.declare_subscriber(rx_key, zenoh.handlers.Callback(self._on_sample))
        self._watch = session.liveliness().declare_subscriber(
            peer_token, zenoh.handlers.Callback(self._on_token), history=True
        )

    # ---- Zenoh's side (callbacks) -----------------------------------------------------------
    def _push(self, item: bytes | _End) -> None:
        while not self._closed:
            try:
                self._queue.put(item, timeout=_SLICE)  # full: Zenoh's delivery waits (back-pressure)
                return
            except queue.Full:
                continue

    def _on_sample(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.DELETE:
            self._push(_End(PeerClosed(f"the peer of {self.description} closed the link")))
        else:
            self._push(sample.payload.to_bytes())

    def _on_token(self, sample: zenoh.Sample) -> None:
        token = str(sample.key_expr)
        with self._lock:
            if sample.kind == zenoh.SampleKind.PUT:
                self._peers.add(token)
                self._peer_seen.set()
                return
            self._peers.discard(token)
            gone = self._peer_seen.is_set() and not self._peers
        if gone:
            self._push(_End(PeerDied(f"the peer of {self.description} went away (its Zenoh session ended)")))

    # ---- the Link interface -----------------------------------------------------------------
    def wait_peer(self, timeout: float | None) -> bool:
        return self._peer_seen.wait(timeout)

    def send(self, data: bytes | bytearray | memoryview, timeout: float | None) -> None:
        if self._ended is not None:
            raise self._ended
        if self._closed:
            raise PeerClosed(f"{self.description} is closed")
        self._publisher.put(bytes(data))  # BLOCK: waits for room in Zenoh's queue

    def receive(self, timeout: float | None) -> bytes:
        if self._ended is not None:
            raise self._ended
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"{self.description}: nothing within {timeout} s") from None
        if isinstance(item, _End):
            self._ended = item.error
            raise item.error
        return item

    def end(self) -> None:
        """The orderly end: the peer's receive gets `PeerClosed` after what was sent before."""
        if not self._closed:
            try:
                self._publisher.delete()
            except zenoh.ZError:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for entity in (self._watch, self._subscriber, self._publisher):
            _undeclare(entity)

    def __repr__(self) -> str:
        return f"<ZenohLink {self.description!r}>"


def _check_service_key(key: str) -> str:
    if not isinstance(key, str) or not key or "*" in key or "$" in key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"a service key must be a concrete key expression, not {key!r}")
    try:
        zenoh.KeyExpr(key)
    except zenoh.ZError:
        raise ValueError(f"invalid service key {key!r}") from None
    return key


def connect_service(session: zenoh.Session, key: str, *, timeout: float | None = 10.0,
                    call_timeout: float | None = 30.0, max_message: int = DEFAULT_MAX_MESSAGE) -> Client:
    """A services `Client` of the service exported on `key` by a bridge reachable through `session`.

    Raises `Timeout` if no bridge accepts within `timeout` seconds.
    """
    _check_service_key(key)
    client_id = secrets.token_hex(16)
    link = ZenohLink(session, f"{key}/{client_id}/q", f"{key}/{client_id}/r", f"{_ROOT}/{key}/conn/{client_id}",
                     max_message=max_message, description=f"zenoh service {key} client {client_id[:8]}")
    token = session.liveliness().declare_token(f"{_ROOT}/{key}/client/{client_id}")
    if not link.wait_peer(timeout):
        _undeclare(token)
        link.close()
        raise Timeout(f"no bridge exports the service {key!r} (nothing answered within {timeout} s)")

    def on_close() -> None:
        _undeclare(token)
        link.close()

    return Client(link, timeout=call_timeout, on_close=on_close)


@dataclass(frozen=True)
class ServiceStatistics:
    key: str
    target: str
    clients_now: int
    clients_total: int
    messages_in: int
    messages_out: int
    failures: int


class _RemoteClient:
    def __init__(self, export: ServiceExport, client_id: str) -> None:
        self.export = export
        self.client_id = client_id
        key = export.key
        session = export.session
        self.link = ZenohLink(session, f"{key}/{client_id}/r", f"{key}/{client_id}/q",
                              f"{_ROOT}/{key}/client/{client_id}", max_message=export.max_message,
                              description=f"zenoh service {key} from client {client_id[:8]}")
        self.token: Any = None
        self.threads: list[threading.Thread] = []
        self.done = threading.Event()

    def open(self) -> None:
        target = self.export.target
        if isinstance(target, Server):
            target.serve(self.link, on_end=lambda _conn: self.finish())
        else:
            local, _index, _alive = connect_slot(self.export.region, target, timeout=10.0)
            self.local = local
            for name, source, sink, counter in (("up", self.link, local, "messages_in"),
                                                ("down", local, self.link, "messages_out")):
                t = threading.Thread(target=self._relay, args=(source, sink, counter),
                                     name=f"rpc relay {name} {self.client_id[:8]}", daemon=True)
                self.threads.append(t)
        # Declared last: the client sends its first request once it sees this token.
        self.token = self.export.session.liveliness().declare_token(f"{_ROOT}/{self.export.key}/conn/{self.client_id}")
        for t in self.threads:
            t.start()

    def _relay(self, source: Any, sink: Any, counter: str) -> None:
        try:
            while not self.done.is_set():
                try:
                    data = source.receive(_SLICE)
                except TimeoutError:
                    continue
                sink.send(data, None)
                self.export._count(counter)
        except (PeerDied, PeerClosed) as e:
            log.info("rpc relay %s: %s", self.link.description, e)
        except IpcError as e:
            self.export._count("failures")
            log.warning("rpc relay %s failed: %s", self.link.description, e)
        finally:
            self.finish()

    def finish(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        local = getattr(self, "local", None)
        if local is not None:  # the core's server sees its client go (PeerClosed) and frees the slot
            for buffer in (local.tx, local.rx):
                try:
                    buffer.close()
                except IpcError:
                    pass
        self.link.end()
        _undeclare(self.token)
        self.link.close()
        self.export._forget(self)


class ServiceExport:
    """Serves remote clients of `key`: with a local `Server`, or relayed to a core's registry service."""

    def __init__(self, bridge: Any, target: Server | str, key: str, *, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.key = _check_service_key(key)
        self.target = target
        self.region = bridge.region
        self.session: zenoh.Session = bridge.session
        self.max_message = max_message
        self._lock = threading.Lock()
        self._clients: dict[str, _RemoteClient] = {}
        self._counts = {"clients_total": 0, "messages_in": 0, "messages_out": 0, "failures": 0}
        self._closed = False
        self._watch = self.session.liveliness().declare_subscriber(
            f"{_ROOT}/{key}/client/*", zenoh.handlers.Callback(self._on_client), history=True
        )

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _on_client(self, sample: zenoh.Sample) -> None:
        if sample.kind != zenoh.SampleKind.PUT or self._closed:
            return
        client_id = str(sample.key_expr).rsplit("/", 1)[-1]
        with self._lock:
            if client_id in self._clients:
                return
            remote = self._clients[client_id] = _RemoteClient(self, client_id)
            self._counts["clients_total"] += 1
        # Opening may wait for the core's server to greet: not on Zenoh's callback thread.
        threading.Thread(target=self._open, args=(remote,), name=f"rpc open {client_id[:8]}", daemon=True).start()

    def _open(self, remote: _RemoteClient) -> None:
        try:
            remote.open()
        except (IpcError, TimeoutError, zenoh.ZError) as e:
            self._count("failures")
            log.warning("rpc export %s: cannot serve client %s: %s", self.key, remote.client_id[:8], e)
            remote.finish()

    def _forget(self, remote: _RemoteClient) -> None:
        with self._lock:
            self._clients.pop(remote.client_id, None)

    def statistics(self) -> ServiceStatistics:
        with self._lock:
            c = dict(self._counts)
            now = len(self._clients)
        target = self.target if isinstance(self.target, str) else "local Server"
        return ServiceStatistics(self.key, target, now, c["clients_total"], c["messages_in"], c["messages_out"],
                                 c["failures"])

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        _undeclare(self._watch)
        with self._lock:
            remotes = list(self._clients.values())
        deadline = time.monotonic() + timeout
        for remote in remotes:
            remote.finish()
            for t in remote.threads:
                t.join(max(0.0, deadline - time.monotonic()))


def export_service(bridge: Any, target: Server | str, key: str, **options: Any) -> ServiceExport:
    """Export `target` (a `Server`, or the name of a registry service in the bridge's region) on `key`."""
    export = ServiceExport(bridge, target, key, **options)
    closer: Callable[[float], None] = export.close
    bridge._add_closer(closer)
    return export
