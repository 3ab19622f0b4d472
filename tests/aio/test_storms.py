"""Many waiters and cancellation storms in one loop, fed by a real peer process: nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from ampipc import MessageBuffer, PeerClosed, Region

from ._workers import TIMEOUT, numbered, send_numbered


def _parse(m: bytes) -> tuple[int, int]:
    i, k, _ = m.split(b":", 2)
    return int(i), int(k)


def test_10000_waiters_on_1000_buffers(make_region: Callable[..., Region], spawn: Callable[..., object]) -> None:
    buffers, per_buffer = 1000, 10
    r = make_region(8 << 20, directory_capacity=buffers + 8)
    names = [f"w{i}" for i in range(buffers)]
    bufs = [MessageBuffer.create(r, n, 256) for n in names]
    start = spawn.ctx.Event()  # type: ignore[attr-defined]
    proc = spawn(send_numbered, r.name, names, per_buffer, 11, start)

    async def main() -> list[bytes]:
        async def one(b: MessageBuffer) -> bytes:
            got: bytes = await b.receive_async(timeout=TIMEOUT)  # type: ignore[attr-defined]
            return got

        tasks = [asyncio.create_task(one(bufs[n % buffers])) for n in range(buffers * per_buffer)]
        await asyncio.sleep(0.1)  # every task is waiting (on the waker) before the first message is sent
        assert not any(t.done() for t in tasks)
        start.set()
        return await asyncio.gather(*tasks)

    got = asyncio.run(main())
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]
    assert sorted(got) == sorted(numbered(i, k) for i in range(buffers) for k in range(per_buffer))
    assert all(b.is_empty for b in bufs)


def test_cancellation_storm(make_region: Callable[..., Region], spawn: Callable[..., object]) -> None:
    """10,000 receives cancelled at random moments while a peer sends: every message arrives exactly once."""
    buffers, per_buffer, cancels = 50, 800, 10_000
    r = make_region(4 << 20)
    names = [f"s{i}" for i in range(buffers)]
    bufs = [MessageBuffer.create(r, n, 512) for n in names]
    hold = spawn.ctx.Event()  # type: ignore[attr-defined]  # the sender stays until the storm is over
    proc = spawn(send_numbered, r.name, names, per_buffer, 5, None, hold)
    rng = random.Random(1234)
    received: list[list[int]] = [[] for _ in range(buffers)]
    closed_reported: set[int] = set()

    async def receive_on(i: int) -> None:
        try:
            m = await bufs[i].receive_async(timeout=TIMEOUT)  # type: ignore[attr-defined]
        except PeerClosed:  # the sender closed its region once done: only after everything was drained
            assert len(received[i]) == per_buffer
            closed_reported.add(i)
            return
        src, k = _parse(m)
        assert src == i and m == numbered(i, k)
        received[i].append(k)

    async def main() -> int:
        cancelled = 0
        pending: set[asyncio.Task[None]] = set()
        while cancelled < cancels:
            # every buffer, drained ones too: their receives block until cancelled, so the storm
            # reaches its count however fast the messages go
            while len(pending) < 200:
                pending.add(asyncio.create_task(receive_on(rng.randrange(buffers))))
            await asyncio.sleep(rng.choice((0, 0, 0, 0.0005, 0.001)))
            for task in rng.sample(sorted(pending, key=id), k=min(len(pending), rng.randint(60, 180))):
                if task.cancel():
                    cancelled += 1
            done = {t for t in pending if t.done()}
            for t in done:
                if not t.cancelled():
                    t.result()  # an assertion inside a receiver fails the test here
            pending -= done
        for t in pending:
            t.cancel()
        for res in await asyncio.gather(*pending, return_exceptions=True):
            if not isinstance(res, asyncio.CancelledError) and res is not None:
                raise res  # type: ignore[misc]
        # then every message left, the same way
        await asyncio.gather(*(receive_on(i) for i in range(buffers) for _ in range(per_buffer - len(received[i]))))
        return cancelled

    try:
        assert asyncio.run(main()) >= cancels
    finally:
        hold.set()
    assert spawn.join(proc) == 0  # type: ignore[attr-defined]
    # nothing lost, nothing duplicated, each buffer in its order (receives of one buffer are in one loop)
    assert received == [list(range(per_buffer)) for _ in range(buffers)]
    assert all(b.is_empty for b in bufs)


@pytest.mark.asyncio
async def test_a_cancelled_receive_never_takes_a_message(region: Region) -> None:
    """Cancel exactly when the message becomes ready: it is received by someone, once."""
    buf = MessageBuffer.create(region, "b", 4096)
    loop = asyncio.get_running_loop()
    taken = []
    for k in range(300):
        task = asyncio.create_task(buf.receive_async())  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        loop.call_soon(buf.send, b"%d" % k)
        await asyncio.sleep(0)
        task.cancel()
        try:
            taken.append(await task)
        except asyncio.CancelledError:
            pass
        while (m := buf.try_receive()) is not None:
            taken.append(m)
    assert taken == [b"%d" % k for k in range(300)]
