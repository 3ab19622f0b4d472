"""Two real processes (spawn) over one region: throughput with checking, blocking and wake-ups,
ping-pong, a peer killed with SIGKILL, Ctrl-C in a blocked receive.

Nothing here asserts on timing: every wait is bounded by a generous timeout and every message's
order and contents are checked.
"""

from __future__ import annotations

import os
import queue
import signal
from typing import Any

import pytest

from ampipc import MessageBuffer, PeerDied, Region, StreamBuffer
from ampipc import _layout as L

from . import _support as S

pytestmark = pytest.mark.timeout(240)

DUPLEX_COUNT = 200_000


def _result(results: Any, timeout: float = S.GENEROUS) -> Any:
    try:
        return results.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("the child reported nothing") from None


def test_duplex_200k_messages_each_way(region: Region, spawn: Any) -> None:
    """Two children exchange 200,000 random-size messages each way, concurrently, all checked."""
    max_payload = 200
    MessageBuffer.create(region, "a-to-b", 4096)
    MessageBuffer.create(region, "b-to-a", 4096)
    results = spawn.ctx.Queue()
    a = spawn(S.duplex_peer, region.name, "a-to-b", "b-to-a", DUPLEX_COUNT, 1, 2, max_payload, results)
    b = spawn(S.duplex_peer, region.name, "b-to-a", "a-to-b", DUPLEX_COUNT, 2, 1, max_payload, results)
    outcomes = [_result(results, 200), _result(results, 200)]
    assert outcomes == [("ok", DUPLEX_COUNT)] * 2, outcomes
    assert spawn.join(a) == 0 and spawn.join(b) == 0
    for name in ("a-to-b", "b-to-a"):
        stats = MessageBuffer.attach(region, name).statistics()
        assert stats.messages_sent == stats.messages_received == DUPLEX_COUNT
        expected_bytes = sum(S.message_size(1 if name == "a-to-b" else 2, i, max_payload) + 16
                             for i in range(DUPLEX_COUNT))
        assert stats.bytes_sent == stats.bytes_received == expected_bytes
        assert 0 < stats.peak_fill <= 4096


def test_stream_across_processes(region: Region, spawn: Any) -> None:
    """2 MB through a 1000-byte stream buffer in random-size writes and reads, byte-exact."""
    total = 2_000_000
    sb = StreamBuffer.create(region, "sb", 1000, trigger_level=10)
    results = spawn.ctx.Queue()
    child = spawn(S.stream_writer, region.name, "sb", total, 7, results)
    got = 0
    import random

    rng = random.Random(3)
    while got < total:
        chunk = sb.read(rng.randint(1, 1500), timeout=S.GENEROUS)
        assert chunk, "a read with a 60 s timeout returned nothing"
        assert chunk == S.stream_bytes(got, len(chunk)), f"stream corrupt at byte {got}"
        got += len(chunk)
    assert _result(results) == ("ok", total)
    assert spawn.join(child) == 0
    assert sb.is_empty


def test_blocked_reader_is_woken_by_the_writer(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    mb.spin = 0.0
    child = spawn(S.send_after_reader_blocks, region.name, "mb", b"wake up")
    assert mb.receive(timeout=S.GENEROUS) == b"wake up"
    assert spawn.join(child) == 0
    stats = mb.statistics()
    assert stats.receive_waits >= 1 and stats.reader_wakeups >= 1


def test_blocked_writer_is_woken_by_the_reader(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 256)
    mb.spin = 0.0
    results = spawn.ctx.Queue()
    child = spawn(S.fill_then_block, region.name, "mb", 40, 3, results)
    kind, queued = _result(results)
    assert kind == "full" and queued == 256 // (40 + 16 + 4)
    for seq in range(queued + 3):
        if seq < 3:
            S.wait_for_flag(region, mb, L.RING_OFF_TX_WAITING)  # the writer sleeps on the full buffer
        S.check_message(mb.receive(timeout=S.GENEROUS), seq, 40)
    assert _result(results) == ("ok", queued + 3)
    assert spawn.join(child) == 0
    stats = mb.statistics()
    assert stats.send_waits >= 3 and stats.writer_wakeups >= 3


def test_timeouts_across_processes(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    sb = StreamBuffer.create(region, "sb", 16)
    ready = spawn.ctx.Event()
    child = spawn(S.attach_and_idle, region.name, ready)  # a live peer that never sends
    assert ready.wait(S.GENEROUS)
    with pytest.raises(TimeoutError):
        mb.receive(timeout=0.3)
    assert sb.read(10, timeout=0.3) == b""
    mb.send(bytes(60))
    with pytest.raises(TimeoutError):
        mb.send(b"x", timeout=0.3)
    assert mb.receive(timeout=0) == bytes(60)
    assert sb.write(bytes(40), timeout=0.3) == 16
    assert child.is_alive()


@pytest.mark.parametrize("spin", [0.0, None])
def test_ping_pong_20k_round_trips(region: Region, spawn: Any, spin: float | None) -> None:
    """20,000 round trips, both sides blocking in every receive (spin 0: always the futex)."""
    rounds = 20_000
    ping = MessageBuffer.create(region, "ping", 128)
    pong = MessageBuffer.create(region, "pong", 128)
    child_spin = 0.0 if spin == 0.0 else ping.spin
    if spin is not None:
        ping.spin = pong.spin = spin
    results = spawn.ctx.Queue()
    child = spawn(S.echo_server, region.name, "ping", "pong", rounds, child_spin, results)
    for seq in range(rounds):
        msg = S.make_message(seq, seq % 64)
        ping.send(msg, timeout=S.GENEROUS)
        assert pong.receive(timeout=S.GENEROUS) == msg
    assert _result(results) == ("ok", rounds)
    assert spawn.join(child) == 0
    if spin == 0.0:
        assert pong.statistics().receive_waits > 0 and ping.statistics().receive_waits > 0


def _drain_until_peer_dies(mb: MessageBuffer, seq: int, seed: int, max_payload: int) -> tuple[int, BaseException]:
    while True:
        try:
            data = mb.receive(timeout=S.GENEROUS)
        except (PeerDied, TimeoutError) as e:
            return seq, e
        S.check_message(data, seq, S.message_size(seed, seq, max_payload))
        seq += 1


@pytest.mark.parametrize("round_", range(3))
def test_writer_killed_mid_stream(region: Region, spawn: Any, round_: int) -> None:
    max_payload = 3000
    mb = MessageBuffer.create(region, "mb", 16384)
    child = spawn(S.endless_writer, region.name, "mb", max_payload, round_)
    # read a while, then kill the writer while it is busy writing
    seq = 0
    for seq in range(2000 + 1000 * round_):
        S.check_message(mb.receive(timeout=S.GENEROUS), seq, S.message_size(round_, seq, max_payload))
    os.kill(child.pid, signal.SIGKILL)
    more, error = _drain_until_peer_dies(mb, seq + 1, round_, max_payload)
    assert isinstance(error, PeerDied), error
    assert error.pid == child.pid and str(child.pid) in str(error)
    assert more > seq
    spawn.join(child)


def test_stream_writer_killed(region: Region, spawn: Any) -> None:
    sb = StreamBuffer.create(region, "sb", 4096)
    child = spawn(S.endless_stream_writer, region.name, "sb")
    got = 0
    while got < 200_000:
        chunk = sb.read(5000, timeout=S.GENEROUS)
        assert chunk == S.stream_bytes(got, len(chunk))
        got += len(chunk)
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises((PeerDied, TimeoutError)):
        while True:
            chunk = sb.read(5000, timeout=S.GENEROUS)
            assert chunk == S.stream_bytes(got, len(chunk)), "torn or corrupt stream after the kill"
            got += len(chunk)
    spawn.join(child)


def test_reader_killed(region: Region, spawn: Any) -> None:
    max_payload = 500
    mb = MessageBuffer.create(region, "mb", 8192)
    results = spawn.ctx.Queue()
    child = spawn(S.endless_reader, region.name, "mb", max_payload, 9, results)
    seq = 0
    while True:
        mb.send(S.make_message(seq, S.message_size(9, seq, max_payload)), timeout=S.GENEROUS)
        seq += 1
        if seq == 5000:
            assert _result(results) >= 1000  # the reader is checking messages
            os.kill(child.pid, signal.SIGKILL)
            break
    with pytest.raises((PeerDied, TimeoutError)) as info:
        while True:
            mb.send(S.make_message(seq, S.message_size(9, seq, max_payload)), timeout=S.GENEROUS)
            seq += 1
    assert isinstance(info.value, PeerDied) and info.value.pid == child.pid
    spawn.join(child)


def test_peer_killed_before_touching_the_buffer(region: Region, spawn: Any) -> None:
    """No writer ever recorded itself: the reader falls back on the region's process table."""
    mb = MessageBuffer.create(region, "mb", 64)
    ready = spawn.ctx.Event()
    child = spawn(S.attach_and_idle, region.name, ready)
    assert ready.wait(S.GENEROUS)
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises((PeerDied, TimeoutError)) as info:
        mb.receive(timeout=S.GENEROUS)
    assert isinstance(info.value, PeerDied)
    spawn.join(child)


def test_ctrl_c_interrupts_a_blocked_receive(region: Region, spawn: Any) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    results = spawn.ctx.Queue()
    child = spawn(S.receive_until_interrupted, region.name, "mb", results)
    S.wait_for_flag(region, mb, L.RING_OFF_RX_WAITING)
    os.kill(child.pid, signal.SIGINT)
    assert _result(results) == "KeyboardInterrupt"
    assert spawn.join(child) == 0
    assert mb.is_empty


def test_role_passes_between_processes(region: Region, spawn: Any) -> None:
    """Writers taking turns across processes: the parent, then a child, then the parent again."""
    mb = MessageBuffer.create(region, "mb", 1024)
    mb.send(S.make_message(0, 10))
    child = spawn(S.send_after_reader_blocks, region.name, "mb", S.make_message(1, 10))
    S.check_message(mb.receive(timeout=S.GENEROUS), 0, 10)
    mb.spin = 0.0
    S.check_message(mb.receive(timeout=S.GENEROUS), 1, 10)
    assert spawn.join(child) == 0
    mb.send(S.make_message(2, 10))
    S.check_message(mb.receive(timeout=0), 2, 10)
