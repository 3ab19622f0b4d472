"""Bad input: a fuzzed request decoder, hostile clients and servers on raw buffers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc import MessageBuffer, ProtocolError, Region
from ampipc.services import BufferPairLink, Client, Server
from ampipc.services import _codec
from ampipc.services.rpc_links import Reassembler

from ._support import CheckService
from .test_rpc_region import wait_until

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

requests = st.builds(
    _codec.Request, st.integers(0, 2**64 - 1), st.text(max_size=30), st.lists(values, max_size=4),
    st.dictionaries(st.text(max_size=8), values, max_size=3), st.integers(0, 2**40),
)
to_server_frames = st.one_of(
    requests,
    st.builds(_codec.Notify, st.text(max_size=30), st.lists(values, max_size=3), st.dictionaries(st.text(max_size=8), values, max_size=2)),
    st.builds(_codec.Cancel, st.integers(0, 2**64 - 1)),
    st.builds(_codec.Hello, st.integers(0, 10), st.integers(0, 2**31), st.integers(0, 2**31)),
    st.builds(_codec.Bye, st.text(max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_takes_any_bytes(data: bytes) -> None:
    """Garbage is a ProtocolError or a well-typed frame; nothing else ever comes out."""
    try:
        frame = _codec.decode_to_server(data)
    except ProtocolError:
        return
    assert isinstance(frame, (_codec.Request, _codec.Notify, _codec.Cancel, _codec.Hello, _codec.Bye, _codec.Chunk))
    if isinstance(frame, _codec.Request):
        assert isinstance(frame.method, str) and isinstance(frame.args, list) and isinstance(frame.kwargs, dict)
        assert 0 <= frame.id < 2**64 and frame.budget_us >= 0


@settings(max_examples=200, deadline=None)
@given(to_server_frames, st.integers(0, 3), st.binary(max_size=3))
def test_decoder_round_trips_and_rejects_mutations(frame: Any, cut: int, junk: bytes) -> None:
    """The reference model: decode(encode(f)) == f; a truncated frame is refused, never misread."""
    data = _codec.encode(frame)
    assert _codec.decode_to_server(data) == frame
    if cut:
        with pytest.raises(ProtocolError):
            _codec.decode_to_server(data[:-cut] if cut < len(data) else b"")
    if junk:
        with pytest.raises(ProtocolError):  # trailing bytes are not silently ignored
            _codec.decode_to_server(data + junk)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=10))
def test_reassembler_joins_pieces(pieces: list[bytes]) -> None:
    r = Reassembler(max_frame=10_000)
    for p in pieces[:-1]:
        assert r.feed(_codec.Chunk(True, p)) is None
    assert r.feed(_codec.Chunk(False, pieces[-1])) == b"".join(pieces)
    assert not r.in_progress


class RawPeer:
    """The test's end of a link: raw MessageBuffers it writes and reads directly."""

    def __init__(self, region: Region, tag: str) -> None:
        self.to_them = MessageBuffer.create(region, f"{tag}.a", 8192)
        self.from_them = MessageBuffer.create(region, f"{tag}.b", 8192)

    def their_link(self) -> BufferPairLink:
        return BufferPairLink(self.from_them, self.to_them)

    def send(self, data: bytes) -> None:
        self.to_them.send(data, timeout=10)

    def send_frame(self, frame: msgspec.Struct) -> None:
        self.send(_codec.encode(frame))

    def receive(self) -> Any:
        return _codec.decode_to_client(self.from_them.receive(timeout=30))


@pytest.fixture
def hostile_client(region: Region) -> Iterator[tuple[RawPeer, Server]]:
    peer = RawPeer(region, "hc")
    service = CheckService()
    server = Server(max_frame=50_000)
    server.add(service)
    server.serve(peer.their_link())
    try:
        yield peer, server
    finally:
        service.release.set()
        server.close()


def test_hostile_client_gets_errors_and_the_server_keeps_serving(hostile_client: tuple[RawPeer, Server]) -> None:
    peer, server = hostile_client
    garbage = [
        b"", b"\x00", b"\xff\xff\xff", b"\x93\x01\x02", msgspec.msgpack.encode([1, "x", "not a list", {}, 0]),
        msgspec.msgpack.encode([99, 1, 2]), msgspec.msgpack.encode({"id": 1}),
        _codec.encode(_codec.Reply(5, "a reply sent the wrong way")),
        msgspec.msgpack.encode([1, -1, "echo", [], {}, 0]),  # negative id
        msgspec.msgpack.encode([1, 1, "echo", [], {}, -5]),  # negative deadline budget
        b"\x91" + b"\x91" * 3000,  # deep nesting
    ]
    for data in garbage:
        peer.send(data)
    peer.send_frame(_codec.Cancel(123456))  # a cancel for a call never made: ignored
    # a chunked frame over the server's limit is refused, and so is one interrupted by another frame
    for _ in range(12):
        peer.send_frame(_codec.Chunk(True, b"z" * 5000))
    peer.send_frame(_codec.Chunk(True, b"half"))
    peer.send_frame(_codec.Request(1, "unknown.method", [], {}, 0))
    failure = peer.receive()
    assert isinstance(failure, _codec.Failure) and failure.exc_type == "MethodNotFound"
    assert "unknown.method" in failure.message
    # paths and ids from a hostile peer are just data to a handler; the reply is correct
    peer.send_frame(_codec.Request(2, "echo", ["../../etc/passwd"], {}, 0))
    reply = peer.receive()
    assert isinstance(reply, _codec.Reply) and reply.id == 2 and reply.result == "../../etc/passwd"
    # a duplicate id while the first call still runs gets an error of its own
    peer.send_frame(_codec.Request(3, "wait_release", [1], {}, 0))
    wait_until(lambda: server.statistics().calls == 3)
    peer.send_frame(_codec.Request(3, "echo", [1], {}, 0))
    dup = peer.receive()
    assert isinstance(dup, _codec.Failure) and dup.id == 3 and "in use" in dup.message
    stats = server.statistics()
    # every garbage message, the oversized chunk run and the interrupted chunk counted as bad frames
    assert stats.bad_frames == len(garbage) + 2 + 1
    assert stats.unknown_methods == 1 and stats.connections_active == 1


def test_hostile_server_replies_are_checked(region: Region) -> None:
    peer = RawPeer(region, "hs")
    client = Client(peer.their_link(), timeout=30)
    call = client.submit("anything", 1)
    request = _codec.decode_to_server(peer.from_them.receive(timeout=10))
    assert isinstance(request, _codec.Request) and request.method == "anything" and request.args == [1]
    # replies for calls never made, garbage and a wrong-direction frame: counted, the call waits on
    peer.send_frame(_codec.Reply(request.id + 1000, "forged"))
    peer.send_frame(_codec.Failure(request.id + 2000, "ValueError", "forged", ""))
    peer.send(b"\xc1garbage")
    peer.send_frame(_codec.Request(1, "x", [], {}, 0))
    peer.send_frame(_codec.Reply(request.id, {"the": "answer"}))
    assert call.result() == {"the": "answer"}
    stats = client.statistics()
    assert stats.unexpected_replies == 2 and stats.bad_frames == 2 and stats.completed == 1
    # a second reply for the same id is unexpected too (it was answered already)
    peer.send_frame(_codec.Reply(request.id, "again"))
    second = client.submit("other")
    req2 = _codec.decode_to_server(peer.from_them.receive(timeout=10))
    assert isinstance(req2, _codec.Request)
    peer.send_frame(_codec.Failure(req2.id, "PermissionError", "Permission denied", "remote tb", 13, "/x"))
    with pytest.raises(PermissionError) as perm:
        second.result()
    assert perm.value.filename == "/x" and perm.value.remote_traceback == "remote tb"  # type: ignore[attr-defined]
    assert client.statistics().unexpected_replies == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=60), to_server_frames.map(_codec.encode)), max_size=15))
def test_fuzzed_streams_never_break_the_server(make_region: Callable[..., Region], stream: list[bytes]) -> None:
    region = make_region(1 << 20)
    peer = RawPeer(region, "fz")
    server = Server(workers=2)
    server.add(CheckService())
    conn = server.serve(peer.their_link())
    try:
        for data in stream:
            if _is_bye_or_uses_the_sentinel(data):
                continue  # a Bye ends the link on purpose; the sentinel id is the check's own
            peer.send(data)
        peer.send_frame(_codec.Request(2**64 - 1, "add", [20, 22], {}, 0))
        while True:
            frame = peer.receive()
            if isinstance(frame, (_codec.Reply, _codec.Failure)) and frame.id == 2**64 - 1:
                break
        assert isinstance(frame, _codec.Reply) and frame.result == 42
        assert not conn.closed
    finally:
        server.close()


def _is_bye_or_uses_the_sentinel(data: bytes) -> bool:
    try:
        frame = _codec.decode_to_server(data)
    except ProtocolError:
        return False
    return isinstance(frame, _codec.Bye) or (isinstance(frame, (_codec.Request, _codec.Cancel)) and frame.id == 2**64 - 1)
