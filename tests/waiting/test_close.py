"""Orderly close as the waiting layer sees it: a closed peer makes the object ready; iteration ends cleanly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from ampipc import MessageBuffer, PeerClosed, Region, StreamBuffer, wait_any
from ampipc.waiting import READABLE, WRITABLE, Selector

from ._workers import TIMEOUT, message, read_then_close, write_then_close


def _pair(region: Region, name: str = "b", size: int = 256) -> tuple[MessageBuffer, MessageBuffer]:
    MessageBuffer.create(region, name, size)
    return MessageBuffer.attach(region, name), MessageBuffer.attach(region, name)


@pytest.mark.parametrize("left", [0, 3])
def test_a_closed_writer_makes_the_reader_ready_and_iteration_ends(region: Region, left: int) -> None:
    writer, reader = _pair(region)
    writer.send(b"first")  # close() closes the roles an object took: this one is the writer
    assert reader.receive(timeout=0) == b"first"
    for k in range(left):
        writer.send(b"%d" % k)
    assert wait_any([reader], 0) == ([reader] if left else [])
    writer.close()
    assert wait_any([reader], 0) == [reader]  # data left or not: the receive will not block
    assert list(reader) == [b"%d" % k for k in range(left)]  # drains, then PeerClosed ends it
    assert wait_any([reader], 0) == []  # told once; a later receive waits for a new writer
    new_writer = MessageBuffer.attach(region, "b")
    new_writer.send(b"again")
    assert wait_any([reader], 0) == [reader]
    assert reader.receive(timeout=0) == b"again"


def test_a_blocked_wait_is_woken_by_the_close(region: Region) -> None:
    writer, reader = _pair(region)
    writer.send(b"first")
    assert reader.receive(timeout=0) == b"first"
    timer = threading.Timer(0.1, writer.close)
    timer.start()
    try:
        assert wait_any([reader], TIMEOUT) == [reader]
    finally:
        timer.join()
    with pytest.raises(PeerClosed):
        reader.receive(timeout=0)


@pytest.mark.parametrize("full", [False, True])
def test_a_closed_reader_makes_the_writer_ready(region: Region, full: bool) -> None:
    writer, reader = _pair(region, size=32)
    writer.send(b"first")
    assert reader.receive(timeout=0) == b"first"  # the reader object takes its role
    if full:
        writer.send(b"x" * 24)
        assert wait_any([(writer, WRITABLE)], 0) == []
    sel = Selector()
    sel.register(writer, WRITABLE, "w")
    timer = threading.Timer(0.05, reader.close)
    timer.start()
    try:
        [(key, events)] = sel.select(TIMEOUT)  # full: woken by the close; else: there is room anyway
    finally:
        timer.join()
    assert (key.data, events) == ("w", WRITABLE)
    if full:
        with pytest.raises(PeerClosed):
            writer.try_send(b"y")


def test_a_closed_writer_process_is_drained_then_reported(region: Region, spawn: Callable[..., object]) -> None:
    count = 500
    MessageBuffer.create(region, "b", 1024)
    reader = MessageBuffer.attach(region, "b")
    closed, release = spawn.ctx.Event(), spawn.ctx.Event()  # type: ignore[attr-defined]
    proc = spawn(write_then_close, region.name, "b", count, closed, release)
    try:
        got = []
        sel = Selector()
        sel.register(reader, READABLE)
        ended = False
        while not ended:
            for key, _ in sel.select(TIMEOUT):
                try:
                    while (m := key.obj.try_receive()) is not None:
                        got.append(m)
                except PeerClosed:
                    ended = True
        assert closed.wait(TIMEOUT)  # the writer lives: this was its close, not its death
        assert got == [message(1, 0, k) for k in range(count)]
    finally:
        release.set()
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]


def test_async_iteration_ends_at_the_close(region: Region, spawn: Callable[..., object]) -> None:
    count = 300
    MessageBuffer.create(region, "b", 512)
    reader = MessageBuffer.attach(region, "b")
    closed, release = spawn.ctx.Event(), spawn.ctx.Event()  # type: ignore[attr-defined]
    proc = spawn(write_then_close, region.name, "b", count, closed, release)

    async def main() -> list[bytes]:
        return [m async for m in reader]  # type: ignore[attr-defined]

    try:
        assert asyncio.run(main()) == [message(1, 0, k) for k in range(count)]
        assert closed.wait(TIMEOUT)
    finally:
        release.set()
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]


def test_a_blocked_async_send_gets_peer_closed(region: Region, spawn: Callable[..., object]) -> None:
    received = 20
    MessageBuffer.create(region, "b", 128)
    writer = MessageBuffer.attach(region, "b")
    closed, release = spawn.ctx.Event(), spawn.ctx.Event()  # type: ignore[attr-defined]
    proc = spawn(read_then_close, region.name, "b", received, closed, release)

    async def main() -> int:
        sent = 0
        with pytest.raises(PeerClosed):
            while True:  # the buffer fills once the reader stops; the blocked send is told of the close
                await writer.send_async(message(2, 0, sent), timeout=TIMEOUT)  # type: ignore[attr-defined]
                sent += 1
        return sent

    try:
        assert asyncio.run(main()) >= received
        assert closed.wait(TIMEOUT)
    finally:
        release.set()
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]


def test_async_iteration_of_a_stream_ends_at_the_close(region: Region) -> None:
    StreamBuffer.create(region, "s", 64)
    writer, reader = StreamBuffer.attach(region, "s"), StreamBuffer.attach(region, "s")
    data = bytes(range(200)) * 5

    async def main() -> bytes:
        async def write() -> None:
            assert await writer.write_async(data, timeout=TIMEOUT) == len(data)  # type: ignore[attr-defined]
            writer.close()

        async def read() -> bytes:
            return b"".join([chunk async for chunk in reader])  # type: ignore[attr-defined]

        _, got = await asyncio.gather(write(), read())
        return got

    assert asyncio.run(main()) == data
