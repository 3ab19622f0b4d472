"""The bridge's pieces: gap detection against a model, the shared statistics object, end of stream
and peer loss as PeerClosed, drop-on-congestion accounting, Ipc channels and RPMsg endpoints as
ends of routes, the command line's user errors.

Bridges here run in this process, each with its own region and its own Zenoh session, joined
only through tcp/127.0.0.1 (the process tests run them in separate processes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampipc import CorruptRegion, Ipc, MessageBuffer, PeerClosed, Region
from ampipc.bridge import BridgeRunning, ZenohBridge, open_session, read_bridge_statistics
from ampipc.bridge import _wire as W
from ampipc.bridge.sequence import SequenceTracker
from ampipc.bridge.session import close_session
from ampipc.bridge.stats import SharedStatistics
from ampipc.cli import main

from . import _support as S

pytestmark = pytest.mark.timeout(120)


# ---- gap detection against a reference model ------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), max_size=200))
def test_sequence_tracker_matches_a_model(events: list[tuple[int, int]]) -> None:
    tracker = SequenceTracker(max_epochs=64)
    last: dict[int, int] = {}
    lost = out_of_order = 0
    for epoch, seq in events:
        expected_missing = 0
        if epoch not in last:
            last[epoch] = seq
        elif seq <= last[epoch]:
            out_of_order += 1
        else:
            expected_missing = seq - last[epoch] - 1
            lost += expected_missing
            last[epoch] = seq
        assert tracker.observe(epoch, seq) == expected_missing
    assert (tracker.lost, tracker.out_of_order, tracker.epochs_seen) == (lost, out_of_order, len(last))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 500), st.sets(st.integers(2, 500)))
def test_every_missing_message_of_a_stream_is_counted(count: int, missing: set[int]) -> None:
    tracker = SequenceTracker()
    delivered = [seq for seq in range(1, count + 1) if seq not in missing]
    for seq in delivered:
        tracker.observe(99, seq)
    assert tracker.lost == (delivered[-1] - len(delivered) if delivered else 0)
    assert tracker.out_of_order == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=40), st.data())
def test_packed_samples_split_back_into_the_same_messages(messages: list[bytes], data: st.DataObject) -> None:
    payload = b"".join(W.PACKED_LENGTH.pack(len(m)) + m for m in messages)
    assert W.split_packed(payload, len(messages)) == messages
    # any damage is refused whole, never half a batch
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ValueError):
        W.split_packed(payload[:cut], len(messages))
    with pytest.raises(ValueError):
        W.split_packed(payload + b"x", len(messages))
    with pytest.raises(ValueError):
        W.split_packed(payload, len(messages) + 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=60))
def test_batches_and_single_messages_share_one_numbering(steps: list[tuple[int, bool]]) -> None:
    tracker, seq, expected_lost = SequenceTracker(), 0, 0
    for count, skip_one in steps:
        if skip_one and seq:
            seq += 1  # one message lost before this batch
            expected_lost += 1
        tracker.observe_batch(7, seq + 1, count)
        seq += count
    assert tracker.lost == expected_lost and tracker.out_of_order == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40_000), min_size=1, max_size=50))
def test_packing_groups_keep_order_and_bound_their_size(sizes: list[int]) -> None:
    from ampipc.bridge.zenoh_bridge import PACK_BYTES, _groups

    batch = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    groups = _groups(batch)
    assert [m for g in groups for m in g] == batch
    assert all(len(g) == 1 or sum(map(len, g)) <= PACK_BYTES for g in groups)


def test_tracker_forgets_the_oldest_epochs() -> None:
    tracker = SequenceTracker(max_epochs=2)
    for epoch in (1, 2, 3):
        tracker.observe(epoch, 5)
    assert tracker.observe(1, 9) == 0  # epoch 1 was forgotten: starts afresh, no false gap
    assert tracker.observe(3, 9) == 3


# ---- the shared statistics object ------------------------------------------------------------


def _hold_statistics(region_name: str, ready: Any, release: Any) -> None:
    with Region.attach(region_name) as region:
        SharedStatistics(region, "held", route_capacity=2, zid="z" * 32)
        ready.set()
        release.wait(S.GENEROUS)


def test_a_live_bridge_keeps_its_name(region: Region, spawn: Any) -> None:
    ready, release = spawn.ctx.Event(), spawn.ctx.Event()
    child = spawn(_hold_statistics, region.name, ready, release)
    assert ready.wait(S.GENEROUS)
    with pytest.raises(BridgeRunning, match="runs already"):
        SharedStatistics(region, "held", route_capacity=2, zid="mine")
    release.set()
    assert spawn.join(child) == 0
    taken = SharedStatistics(region, "held", route_capacity=2, zid="mine")  # its owner is gone: taken over
    (stats,) = read_bridge_statistics(region)
    assert (stats.name, stats.pid, stats.zid, stats.running, stats.routes) == ("held", os.getpid(), "mine", True, ())
    taken.add_route(1, "buffer x", "k/" + "long" * 30)
    (stats,) = read_bridge_statistics(region)
    assert stats.routes[0].key.endswith("...") and len(stats.routes[0].key.encode()) <= W.KEY_BYTES


def test_corrupt_statistics_are_refused(region: Region) -> None:
    shared = SharedStatistics(region, "c", route_capacity=2, zid="z")
    region.mapping.store_u32(shared.offset + W.OFF_ROUTE_COUNT, 3)  # more routes than room
    with pytest.raises(CorruptRegion, match="routes"):
        read_bridge_statistics(region)


def test_bad_bridge_arguments(region: Region) -> None:
    with pytest.raises(ValueError):
        SharedStatistics(region, "a/b", route_capacity=2, zid="z")
    with pytest.raises(ValueError):
        SharedStatistics(region, "x" * 30, route_capacity=2, zid="z")
    with pytest.raises(ValueError):
        SharedStatistics(region, "ok", route_capacity=0, zid="z")


# ---- bridges in this process ------------------------------------------------------------------


class Pair:
    """Two regions, two sessions (A listens, B connects), two bridges."""

    def __init__(self, make_region: Callable[..., Region], unique_name: Callable[..., str], **options: Any) -> None:
        self.a_region, self.b_region = make_region(1 << 21), make_region(1 << 21)
        endpoint = S.free_endpoint()
        self.a_session = open_session(listen=[endpoint])
        self.b_session = open_session(connect=[endpoint])
        self.a = ZenohBridge(self.a_region, self.a_session, name="a", **options)
        self.b = ZenohBridge(self.b_region, self.b_session, name="b", **options)
        self.key = f"ampipc-test/{os.getpid()}/{unique_name()}"

    def close(self) -> None:
        for bridge, session in ((self.a, self.a_session), (self.b, self.b_session)):
            bridge.close()
            if not session.is_closed():
                close_session(session)


@pytest.fixture
def pair(make_region: Callable[..., Region], unique_name: Callable[..., str]) -> Iterator[Pair]:
    p = Pair(make_region, unique_name)
    try:
        yield p
    finally:
        p.close()


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + S.GENEROUS
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_closed_source_ends_the_remote_stream(pair: Pair) -> None:
    out = MessageBuffer.create(pair.a_region, "out", 4096)
    inbox = MessageBuffer.create(pair.b_region, "in", 4096)
    exporting = pair.a.export("out", pair.key)  # the bridge attaches its own reader object
    importing = pair.b.import_(pair.key, "in")
    pair.a.wait_peers(S.GENEROUS)
    pair.b.wait_peers(S.GENEROUS)
    for seq in range(500):
        out.send(S.make_message(seq), timeout=S.GENEROUS)
    out.close()  # the local writer's orderly end: the exporter drains, then marks the end
    assert [S.check_message(m) for m in (inbox.receive(timeout=S.GENEROUS) for _ in range(500))] == list(range(500))
    with pytest.raises(PeerClosed):
        inbox.receive(timeout=S.GENEROUS)
    _until(lambda: importing.state == "source ended" and exporting.state == "source ended", "both routes to end")
    assert importing.statistics().messages == 500


def test_a_lost_peer_closes_the_sink_with_on_peer_lost_close(pair: Pair) -> None:
    out = MessageBuffer.create(pair.a_region, "out", 4096)
    inbox = MessageBuffer.create(pair.b_region, "in", 1 << 16)  # room for all 100
    pair.a.export("out", pair.key)
    importing = pair.b.import_(pair.key, "in", on_peer_lost="close")
    pair.b.wait_peers(S.GENEROUS)
    pair.a.wait_peers(S.GENEROUS)
    for seq in range(100):
        out.send(S.make_message(seq), timeout=S.GENEROUS)
    _until(lambda: importing.statistics().messages == 100, "the messages to cross")
    pair.a.close()
    close_session(pair.a_session)  # host A goes away: its liveliness tokens vanish
    assert [S.check_message(inbox.receive(timeout=S.GENEROUS)) for _ in range(100)] == list(range(100))
    with pytest.raises(PeerClosed):
        inbox.receive(timeout=S.GENEROUS)  # not a silent stall
    assert importing.state == "peer lost" and importing.peer_losses == 1


def test_packed_samples_keep_every_message_whole_and_in_order(make_region: Any, unique_name: Any) -> None:
    p = Pair(make_region, unique_name, pack=64)
    try:
        out = MessageBuffer.create(p.a_region, "out", 1 << 16)
        inbox = MessageBuffer.create(p.b_region, "in", 1 << 16)
        for seq in range(300):  # a backlog before anyone listens: the exporter packs it
            out.send(S.make_message(seq), timeout=S.GENEROUS)
        exporting = p.a.export(out, p.key)
        importing = p.b.import_(p.key, inbox)
        total = 5_000
        sender = threading.Thread(target=lambda: [out.send(S.make_message(i), timeout=S.GENEROUS)
                                                  for i in range(300, total)])
        sender.start()
        got = [S.check_message(inbox.receive(timeout=S.GENEROUS)) for _ in range(total)]
        sender.join(S.GENEROUS)
        assert got == list(range(total))
        _until(lambda: exporting.statistics().messages == total, "the exporter's count")
        assert exporting.statistics().bytes == importing.statistics().bytes == sum(len(S.make_message(i))
                                                                                    for i in range(total))
        assert (importing.statistics().lost, importing.statistics().drops) == (0, 0)
        assert importing.samples == exporting.samples < total  # the backlog went out packed
    finally:
        p.close()


def test_a_lost_importer_closes_the_source_with_on_peer_lost_close(pair: Pair) -> None:
    out = MessageBuffer.create(pair.a_region, "out", 4096)
    inbox = MessageBuffer.create(pair.b_region, "in", 1 << 16)
    exporting = pair.a.export("out", pair.key, on_peer_lost="close")
    pair.b.import_(pair.key, inbox)
    pair.a.wait_peers(S.GENEROUS)
    out.send(S.make_message(0), timeout=S.GENEROUS)
    S.check_message(inbox.receive(timeout=S.GENEROUS), 0)
    pair.b.close()
    close_session(pair.b_session)  # host B goes away
    _until(lambda: exporting.state == "peer lost", "the exporter to see its importer go")
    with pytest.raises(PeerClosed):  # the local writer is told, not left to fill the buffer
        for seq in range(1, 1000):
            out.send(S.make_message(seq), timeout=S.GENEROUS)


def test_drop_on_congestion_counts_every_drop(make_region: Any, unique_name: Any) -> None:
    p = Pair(make_region, unique_name, congestion="drop", fifo_capacity=4)
    try:
        out = MessageBuffer.create(p.a_region, "out", 1 << 16)
        inbox = MessageBuffer.create(p.b_region, "in", 1024)  # holds a handful; nobody reads yet
        exporting = p.a.export(out, p.key)
        importing = p.b.import_(p.key, inbox)
        p.a.wait_peers(S.GENEROUS)
        total = 2_000
        for seq in range(total):
            out.send(S.make_message(seq), timeout=S.GENEROUS)
        _until(lambda: exporting.statistics().messages == total, "the exporter to publish everything")
        _until(lambda: (lambda r: r.messages + r.drops + r.lost == total)(importing.statistics()),
               "every published message to be delivered or counted")
        got = []
        while (m := inbox.try_receive()) is not None:
            got.append(S.check_message(m))
        stats = importing.statistics()
        assert got == sorted(got) and len(got) == stats.messages  # what arrived is in order, and counted
        assert stats.drops > 0 and stats.messages + stats.drops + stats.lost == total
    finally:
        p.close()


def test_ipc_channel_to_rpmsg_endpoint(pair: Pair) -> None:
    from ampipc.rpmsg import open_region

    cm7 = Ipc.init(pair.a_region, channels=2, strategy="control", core="CM7")
    cm4 = Ipc.attach(pair.a_region, core="CM4")  # the bridge's core on host A
    driver = open_region(pair.b_region, "rpmsg", "driver", create=True)
    device = open_region(pair.b_region, "rpmsg", "device", create=False)
    try:
        cm7.start()
        cm4.start()
        remote = device.create_endpoint("bridged")
        local = driver.create_endpoint("bridged")  # the bridge's end on host B
        local.wait_bound(S.GENEROUS)
        pair.a.export(cm4, pair.key + "/up", channel=1)
        pair.b.import_(pair.key + "/up", local)
        pair.a.import_(pair.key + "/down", cm4, channel=1)
        pair.b.export(local, pair.key + "/down")
        pair.a.wait_peers(S.GENEROUS)
        pair.b.wait_peers(S.GENEROUS)
        sender = threading.Thread(target=lambda: [cm7.send(1, S.make_message(i, 24), timeout=S.GENEROUS)
                                                  for i in range(300)])
        sender.start()
        for seq in range(300):  # CM7 -> channel 1 -> Zenoh -> RPMsg endpoint on host B
            data = remote.receive(timeout=S.GENEROUS)
            S.check_message(data, seq, 24)
            remote.send(data)  # and back: RPMsg -> Zenoh -> channel 1 -> CM7
            S.check_message(cm7.receive(1, timeout=S.GENEROUS), seq, 24)
        sender.join(S.GENEROUS)
    finally:
        pair.close()
        driver.close()
        device.close()
        cm4.close()
        cm7.close()


def test_route_arguments_are_checked(pair: Pair) -> None:
    MessageBuffer.create(pair.a_region, "out", 4096)
    with pytest.raises(ValueError, match="concrete"):
        pair.a.export("out", "a/*")
    with pytest.raises(ValueError, match="key expression"):
        pair.a.export("out", "a//b")
    with pytest.raises(TypeError):
        pair.a.export(42, "a/b")
    with pytest.raises(ValueError, match="channel"):
        pair.a.export("out", "a/b", channel=1)
    pair.a.export("out", "a/b")
    with pytest.raises(ValueError, match="already"):
        pair.a.export("out", "a/b")


# ---- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bridge", "ampipc-test-no-such-region", "--export", "x=k", "--listen", "tcp/127.0.0.1:0"], "no region"),
        (["bridge", "{region}", "--export", "nokey", "--listen", "tcp/127.0.0.1:0"], "BUFFER=KEY"),
        (["bridge", "{region}", "--export", "out=k"], "--listen"),
        (["bridge", "{region}", "--listen", "tcp/127.0.0.1:0"], "nothing to bridge"),
        (["bridge", "{region}", "--export", "missing=k", "--listen", "tcp/127.0.0.1:0"], "missing"),
        (["bridge", "{region}", "--export", "out=a/*", "--listen", "tcp/127.0.0.1:0"], "concrete"),
        (["bridge", "{region}", "--export", "out=k", "--listen", "nonsense"], "endpoint"),
    ],
)
def test_bridge_command_user_errors(region: Region, capsys: pytest.CaptureFixture[str], argv: list[str],
                                    message: str) -> None:
    MessageBuffer.create(region, "out", 4096)
    argv = [a.replace("{region}", region.name) for a in argv]
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = int(e.code or 0)
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
