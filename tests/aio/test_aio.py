"""The asyncio twins: semantics, timeouts, cancellation, teardown, against real peer processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from ampipc import Ipc, MessageBuffer, Region, StreamBuffer, Timeout, aio
from ampipc.errors import BufferTooSmall, MessageTooLarge

from ._workers import TIMEOUT, drain, echo, ipc_echo, numbered, stream_echo


def _waker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ampipc-aio-waker"]


@pytest.mark.asyncio
async def test_a_message_already_there_is_returned_without_the_waker(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 256)
    buf.send(b"ready")
    assert await buf.receive_async() == b"ready"  # type: ignore[attr-defined]
    await buf.send_async(b"room")  # type: ignore[attr-defined]
    assert buf.receive() == b"room"
    assert aio.waker_statistics()["sleeps"] == 0  # no waker was needed on this loop


@pytest.mark.asyncio
async def test_ping_pong_with_a_synchronous_peer(region: Region, spawn: Callable[..., object]) -> None:
    ping = MessageBuffer.create(region, "ping", 512)
    pong = MessageBuffer.create(region, "pong", 512)
    count = 2000
    proc = spawn(echo, region.name, "ping", "pong", count)
    for k in range(count):
        await ping.send_async(numbered(1, k), timeout=TIMEOUT)  # type: ignore[attr-defined]
        assert await pong.receive_async(timeout=TIMEOUT) == numbered(1, k)  # type: ignore[attr-defined]
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_send_async_waits_for_room(region: Region, spawn: Callable[..., object]) -> None:
    buf = MessageBuffer.create(region, "full", 64)
    count = 40
    proc = spawn(drain, region.name, "full", count)
    for k in range(count):
        await buf.send_async(numbered(0, k), timeout=TIMEOUT)  # type: ignore[attr-defined]
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]
    assert buf.statistics().messages_received == count


@pytest.mark.asyncio
async def test_receive_into_async(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 256)
    target = bytearray(8)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, buf.send, b"12345")
    assert await buf.receive_into_async(target, timeout=TIMEOUT) == 5  # type: ignore[attr-defined]
    assert target[:5] == b"12345"
    buf.send(b"too long for eight")
    with pytest.raises(BufferTooSmall):
        await buf.receive_into_async(target)  # type: ignore[attr-defined]
    assert buf.receive() == b"too long for eight"  # left in place


@pytest.mark.asyncio
async def test_timeouts_are_the_blocking_twins(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 32)
    with pytest.raises(Timeout):
        await buf.receive_async(timeout=0.05)  # type: ignore[attr-defined]
    with pytest.raises(Timeout):
        await buf.receive_async(timeout=0)  # type: ignore[attr-defined]
    buf.send(b"x" * 20)
    with pytest.raises(Timeout):
        await buf.send_async(b"y" * 20, timeout=0.05)  # type: ignore[attr-defined]
    with pytest.raises(MessageTooLarge):
        await buf.send_async(b"z" * 40)  # type: ignore[attr-defined]
    assert buf.receive() == b"x" * 20
    s = StreamBuffer.create(region, "s", 16)
    assert await s.read_async(10, timeout=0.05) == b""  # type: ignore[attr-defined]
    assert await s.write_async(b"a" * 40, timeout=0.05) == 16  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_cancelled_receive_leaves_the_message_in_the_buffer(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 256)
    task = asyncio.create_task(buf.receive_async())  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):  # cancelled by a timeout of asyncio's own
        await asyncio.wait_for(buf.receive_async(), 0.05)  # type: ignore[attr-defined]
    buf.send(b"kept")
    assert buf.receive(timeout=0) == b"kept"


@pytest.mark.asyncio
async def test_streams_through_a_peer(region: Region, spawn: Callable[..., object]) -> None:
    up = StreamBuffer.create(region, "up", 300)
    down = StreamBuffer.create(region, "down", 200)
    data = bytes(range(256)) * 200
    proc = spawn(stream_echo, region.name, len(data))

    async def writer() -> None:
        assert await up.write_async(data, timeout=TIMEOUT) == len(data)  # type: ignore[attr-defined]

    async def reader() -> bytes:
        got = bytearray()
        while len(got) < len(data):
            got += await down.read_async(1000, timeout=TIMEOUT)  # type: ignore[attr-defined]
        return bytes(got)

    _, echoed = await asyncio.gather(writer(), reader())
    assert echoed == data
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", ["direct", "hsem", "control", "toggle"])
def test_ipc_channels(region: Region, spawn: Callable[..., object], strategy: str) -> None:
    results = spawn.ctx.Queue()  # type: ignore[attr-defined]
    count = 600

    async def main(ipc: Ipc) -> list[bytes]:
        async def one_channel(c: int) -> list[bytes]:
            got = []
            for k in range(c, count, ipc.channels):
                await ipc.send_async(c, numbered(c, k), timeout=TIMEOUT)  # type: ignore[attr-defined]
                got.append(await ipc.receive_async(c, timeout=TIMEOUT))  # type: ignore[attr-defined]
            return got

        per_channel = await asyncio.gather(*(one_channel(c) for c in range(ipc.channels)))
        return [m for chunk in per_channel for m in chunk]

    with Ipc.init(region, channels=3, buffer_size=256, strategy=strategy) as ipc:
        ipc.start()
        proc = spawn(ipc_echo, region.name, count, results)
        got = asyncio.run(main(ipc))
        ipc.send(0, b"done", timeout=TIMEOUT)
        assert results.get(timeout=TIMEOUT) == "ok"
        assert spawn.join(proc) == 0  # type: ignore[attr-defined]
    expected = [numbered(c, k) + b"!" for c in range(3) for k in range(c, count, 3)]
    assert got == expected


def test_outside_a_running_loop_is_a_clear_runtime_error(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 64)
    s = StreamBuffer.create(region, "s", 64)
    for call in (
        lambda: buf.receive_async(),  # type: ignore[attr-defined]
        lambda: buf.send_async(b"x"),  # type: ignore[attr-defined]
        lambda: buf.receive_into_async(bytearray(4)),  # type: ignore[attr-defined]
        lambda: s.read_async(4),  # type: ignore[attr-defined]
        lambda: s.write_async(b"x"),  # type: ignore[attr-defined]
    ):
        with pytest.raises(RuntimeError, match="running asyncio event loop"):
            call()


def test_the_waker_goes_away_with_its_loop(region: Region) -> None:
    buf = MessageBuffer.create(region, "b", 64)
    before = len(_waker_threads())

    async def main() -> None:
        with pytest.raises(Timeout):
            await buf.receive_async(timeout=0.05)  # type: ignore[attr-defined]
        assert len(_waker_threads()) == before + 1

    asyncio.run(main())
    assert len(_waker_threads()) == before
    # and a new loop gets a new waker that works
    loop = asyncio.new_event_loop()
    try:
        async def again() -> bytes:
            got: bytes = await buf.receive_async(timeout=TIMEOUT)  # type: ignore[attr-defined]
            return got

        loop.call_later(0.05, buf.send, b"again")
        assert loop.run_until_complete(again()) == b"again"
    finally:
        loop.close()
    assert len(_waker_threads()) == before
