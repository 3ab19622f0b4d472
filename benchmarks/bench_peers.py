"""ampipc MessageBuffer against the usual Python inter-process channels.

Theory of operation
-------------------
Every peer is measured the same way, by the same two functions, in two processes started with the
multiprocessing *spawn* context: side ``a`` (initiator, producer) and side ``b`` (echo, consumer).
A peer is a pair of one-way channels, a->b and b->a, opened in the parent (`_Peer.open`) and turned
into four callables in each child (`_Peer.endpoint`): ``send``/``recv`` for 64-byte messages and
``send_large``/``recv_large`` for 64 KiB and 1 MiB ones (each peer's fastest natural call for that
size). One pair of processes runs the whole plan, scenario after scenario:

- ping-pong: ``a`` sends a 64-byte message, ``b`` echoes it, ``a`` times each round trip with
  ``perf_counter_ns`` after a warm-up and reports the median and the 99th percentile;
- one-way: ``b`` first tells ``a`` it is ready (a 1-byte message on b->a), ``a`` sends warm-up plus
  N messages as fast as it can, ``b`` receives them and times the N after the warm-up, from the
  last warm-up message to the last message (messages/s, and MB/s with MB = 10**6 bytes of payload).

The ready message keeps one scenario's messages from piling up behind the previous scenario's.
The consumer checks the count and the last message's contents, so a peer that drops or mangles
messages fails instead of looking fast. The parent keeps every resource (the region, the socket
directory) until both children are done, then releases it in ``finally``; a child that does not
finish in time is terminated, then killed, and its row says so. A peer whose module is missing is a
"skipped" row, never an error.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PEER_NAMES", "Plan", "format_table", "run", "verdicts"]

SMALL = 64
MEDIUM = 64 * 1024
LARGE = 1024 * 1024
MB = 1_000_000

# ampipc rings and faster-fifo queues hold a few 1 MiB messages in flight, as a pipe or socket would.
RING_CAPACITY = 4 * LARGE + 64 * 1024
REGION_SIZE = 2 * (RING_CAPACITY + 64 * 1024) + 1024 * 1024

Row = dict[str, Any]
Sender = Callable[[bytes], object]
Receiver = Callable[[], object]


@dataclass(frozen=True)
class Plan:
    """How many messages each scenario uses (warm-up messages are not timed)."""

    pingpong_warmup: int
    pingpong_iterations: int
    small_warmup: int
    small_count: int
    medium_warmup: int
    medium_count: int
    large_warmup: int
    large_count: int
    child_timeout: float

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(200, 2_000, 1_000, 20_000, 20, 400, 5, 40, 60.0)
        return cls(2_000, 20_000, 5_000, 200_000, 50, 3_000, 10, 300, 120.0)


@dataclass
class _Endpoint:
    send: Sender
    recv: Receiver  # returns the payload, bytes-like (the ping-pong echoes it)
    send_large: Sender
    recv_large: Receiver
    close: Callable[[], None] = lambda: None
    # One-way consumers may receive into their own storage: `drain` replaces recv and recv_large
    # there, and `payload` turns what it returned into the message, for the final check.
    drain: Receiver | None = None
    payload: Callable[[object], bytes] | None = None


@dataclass
class _Opened:
    """What the parent made for one peer: a picklable spec per side and what to release after."""

    spec_a: Any
    spec_b: Any
    release: Callable[[], None] = lambda: None


@dataclass
class _Peer:
    name: str
    api: str
    module: str | None  # imported first; ImportError makes the row "skipped"
    open: Callable[[Any, int], _Opened]  # (spawn context, unique number) -> specs
    endpoint: Callable[[Any, str], _Endpoint]  # (spec, side) -> callables, in the child
    group: str = "peer"  # "peer" rows are the competition; "ampipc" rows are ours
    notes: list[str] = field(default_factory=list)


def _as_bytes(data: object) -> bytes:
    """The received payload as bytes, for the one content check outside the timed loop."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return bytes(memoryview(data))  # type: ignore[arg-type]


# ---- multiprocessing.Pipe -------------------------------------------------------------------


def _pipe_open(ctx: Any, unique: int) -> _Opened:
    a2b_recv, a2b_send = ctx.Pipe(duplex=False)
    b2a_recv, b2a_send = ctx.Pipe(duplex=False)

    def release() -> None:
        for conn in (a2b_recv, a2b_send, b2a_recv, b2a_send):
            conn.close()

    return _Opened((a2b_send, b2a_recv), (b2a_send, a2b_recv), release)


def _pipe_endpoint(spec: Any, side: str) -> _Endpoint:
    out, into = spec
    assert isinstance(out, multiprocessing.connection.Connection)
    assert isinstance(into, multiprocessing.connection.Connection)

    def close() -> None:
        out.close()
        into.close()

    return _Endpoint(out.send_bytes, into.recv_bytes, out.send_bytes, into.recv_bytes, close)


# ---- multiprocessing.Queue ------------------------------------------------------------------


def _queue_open(ctx: Any, unique: int) -> _Opened:
    a2b, b2a = ctx.Queue(), ctx.Queue()

    def release() -> None:
        for q in (a2b, b2a):
            q.close()
            q.join_thread()

    return _Opened((a2b, b2a), (b2a, a2b), release)


def _queue_endpoint(spec: Any, side: str) -> _Endpoint:
    out, into = spec

    def close() -> None:
        # The consumer has received everything, so the feeder thread has nothing left to flush.
        out.close()
        out.join_thread()

    return _Endpoint(out.put, into.get, out.put, into.get, close)


# ---- faster-fifo ----------------------------------------------------------------------------

FASTER_FIFO_BYTES = 8 * LARGE + 64 * 1024


def _identity_dumps(data: bytes) -> bytes:
    return data


def _faster_fifo_open(ctx: Any, unique: int) -> _Opened:
    import faster_fifo  # type: ignore[import-not-found, unused-ignore]

    # Bytes in, bytes out: no pickling. `bytes` copies the message out of the queue's reused buffer.
    a2b = faster_fifo.Queue(max_size_bytes=FASTER_FIFO_BYTES, loads=bytes, dumps=_identity_dumps)
    b2a = faster_fifo.Queue(max_size_bytes=FASTER_FIFO_BYTES, loads=bytes, dumps=_identity_dumps)
    return _Opened((a2b, b2a), (b2a, a2b))


def _faster_fifo_endpoint(spec: Any, side: str) -> _Endpoint:
    out, into = spec
    # faster-fifo's calls time out after 10 s by default; a slow machine must not fail the run.
    put = functools.partial(out.put, timeout=300.0)
    get = functools.partial(into.get, timeout=300.0)
    return _Endpoint(put, get, put, get)


# ---- pyzmq ----------------------------------------------------------------------------------


def _zmq_open(ctx: Any, unique: int) -> _Opened:
    import zmq  # noqa: F401  (fail here, in the parent, if it is missing)

    directory = tempfile.mkdtemp(prefix="ampipc-bench-zmq-")
    address = f"ipc://{directory}/pair"
    return _Opened((address, "bind"), (address, "connect"), lambda: shutil.rmtree(directory, ignore_errors=True))


def _zmq_endpoint(spec: Any, side: str) -> _Endpoint:
    import zmq

    address, how = spec
    context = zmq.Context()
    socket = context.socket(zmq.PAIR)
    socket.setsockopt(zmq.LINGER, 0)
    if how == "bind":
        socket.bind(address)
    else:
        socket.connect(address)

    def close() -> None:
        socket.close(linger=0)
        context.term()

    # copy=False pays for itself only on large messages (pyzmq's own advice: above ~10 kB).
    send_large = functools.partial(socket.send, copy=False)
    recv_large = functools.partial(socket.recv, copy=False)
    return _Endpoint(socket.send, socket.recv, send_large, recv_large, close)


# ---- ampipc ---------------------------------------------------------------------------------


def _ampipc_open(ctx: Any, unique: int) -> _Opened:
    from ampipc import MessageBuffer, Region

    name = f"ampipc-bench-{os.getpid()}-{unique}"
    region = Region.create(name, REGION_SIZE)
    try:
        MessageBuffer.create(region, "a2b", RING_CAPACITY)
        MessageBuffer.create(region, "b2a", RING_CAPACITY)
    except BaseException:
        region.close()
        raise
    return _Opened((name, "a2b", "b2a"), (name, "b2a", "a2b"), region.close)


def _ampipc_buffers(spec: Any) -> tuple[Any, Any, Any]:
    from ampipc import MessageBuffer, Region

    name, out_name, in_name = spec
    region = Region.attach(name)
    return region, MessageBuffer.attach(region, out_name), MessageBuffer.attach(region, in_name)


def _ampipc_endpoint(spec: Any, side: str) -> _Endpoint:
    region, out, into = _ampipc_buffers(spec)
    return _Endpoint(out.send, into.receive, out.send, into.receive, region.close)


def _ampipc_into_endpoint(spec: Any, side: str) -> _Endpoint:
    region, out, into = _ampipc_buffers(spec)
    scratch = bytearray(RING_CAPACITY)
    view = memoryview(scratch)
    receive_into = into.receive_into

    def recv() -> memoryview:
        return view[: receive_into(scratch)]

    def payload(length: object) -> bytes:
        assert isinstance(length, int)
        return bytes(scratch[:length])

    def close() -> None:
        view.release()
        region.close()

    drain = functools.partial(receive_into, scratch)
    return _Endpoint(out.send, recv, out.send, recv, close, drain, payload)


def _ampipc_no_spin_endpoint(spec: Any, side: str) -> _Endpoint:
    region, out, into = _ampipc_buffers(spec)
    out.spin = into.spin = 0.0
    return _Endpoint(out.send, into.receive, out.send, into.receive, region.close)


PEERS: list[_Peer] = [
    _Peer("ampipc", "MessageBuffer.send / receive", "ampipc", _ampipc_open, _ampipc_endpoint, "ampipc"),
    _Peer(
        "ampipc (receive_into)",
        "MessageBuffer.send / receive_into(preallocated)",
        "ampipc",
        _ampipc_open,
        _ampipc_into_endpoint,
        "ampipc",
    ),
    _Peer(
        "ampipc (spin 0)",
        "MessageBuffer.send / receive, spin = 0: straight to the futex",
        "ampipc",
        _ampipc_open,
        _ampipc_no_spin_endpoint,
        "ampipc",
    ),
    _Peer("multiprocessing.Pipe", "send_bytes / recv_bytes", None, _pipe_open, _pipe_endpoint),
    _Peer("multiprocessing.Queue", "put / get of bytes", None, _queue_open, _queue_endpoint),
    _Peer(
        "faster-fifo", "Queue.put / get of bytes (no pickling)", "faster_fifo", _faster_fifo_open, _faster_fifo_endpoint
    ),
    _Peer("pyzmq", "PAIR over ipc://, send / recv (copy=False >= 64 KiB)", "zmq", _zmq_open, _zmq_endpoint),
]
PEER_NAMES = [p.name for p in PEERS]
_BY_NAME = {p.name: p for p in PEERS}


# ---- the measurement, run in the children ----------------------------------------------------


def _pattern(size: int) -> bytes:
    return bytes(i & 0xFF for i in range(size)) if size < 4096 else (bytes(range(256)) * (size // 256 + 1))[:size]


def _side_a(ep: _Endpoint, plan: Plan) -> Row:
    send, recv = ep.send, ep.recv
    small = _pattern(SMALL)
    clock = time.perf_counter_ns
    timings = [0] * plan.pingpong_iterations
    for _ in range(plan.pingpong_warmup):
        send(small)
        recv()
    reply: object = b""
    for i in range(plan.pingpong_iterations):
        t0 = clock()
        send(small)
        reply = recv()
        timings[i] = clock() - t0
    if _as_bytes(reply) != small:
        raise AssertionError("ping-pong reply differs from the message sent")
    timings.sort()
    result: Row = {
        "rtt_median_us": statistics.median(timings) / 1000.0,
        "rtt_p99_us": timings[min(len(timings) - 1, (len(timings) * 99) // 100)] / 1000.0,
    }
    for size, warmup, count, large in _one_way_plan(plan):
        message = _pattern(size)
        post = ep.send_large if large else send
        recv()  # the consumer is ready
        for _ in range(warmup + count):
            post(message)
    recv()  # the consumer has everything
    return result


def _side_b(ep: _Endpoint, plan: Plan) -> Row:
    send, recv = ep.send, ep.recv
    for _ in range(plan.pingpong_warmup + plan.pingpong_iterations):
        send(recv())  # type: ignore[arg-type]  # every peer's receive returns a bytes-like object
    result: Row = {}
    ready = b"r"
    clock = time.perf_counter_ns
    for size, warmup, count, large in _one_way_plan(plan):
        take = ep.drain or (ep.recv_large if large else recv)
        payload = ep.payload or _as_bytes
        send(ready)
        for _ in range(warmup):
            take()
        t0 = clock()
        last: object = None
        for _ in range(count - 1):
            take()
        last = take()
        elapsed = clock() - t0
        if payload(last) != _pattern(size):
            raise AssertionError(f"the last {size}-byte message differs from the one sent")
        seconds = elapsed / 1e9
        if size == SMALL:
            result["msgs_per_s_64B"] = count / seconds
        else:
            key = "mb_per_s_64KiB" if size == MEDIUM else "mb_per_s_1MiB"
            result[key] = count * size / MB / seconds
    send(ready)
    return result


def _one_way_plan(plan: Plan) -> Iterator[tuple[int, int, int, bool]]:
    yield SMALL, plan.small_warmup, plan.small_count, False
    yield MEDIUM, plan.medium_warmup, plan.medium_count, True
    yield LARGE, plan.large_warmup, plan.large_count, True


def _child(peer_name: str, side: str, spec: Any, plan: Plan, results: Any) -> None:
    try:
        peer = _BY_NAME[peer_name]
        ep = peer.endpoint(spec, side)
        try:
            row = _side_a(ep, plan) if side == "a" else _side_b(ep, plan)
        finally:
            ep.close()
        results.put((side, row, None))
    except BaseException:  # noqa: BLE001  (any failure becomes the peer's error row in the parent)
        results.put((side, None, traceback.format_exc(limit=6)))


# ---- the parent ----------------------------------------------------------------------------


_unique = itertools.count()


@contextmanager
def _children(ctx: Any, peer: _Peer, opened: _Opened, plan: Plan, results: Any) -> Iterator[list[Any]]:
    procs = [
        ctx.Process(target=_child, args=(peer.name, side, spec, plan, results), name=f"bench-{peer.name}-{side}")
        for side, spec in (("b", opened.spec_b), ("a", opened.spec_a))
    ]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


def _measure(peer: _Peer, plan: Plan) -> Row:
    row: Row = {"peer": peer.name, "api": peer.api, "group": peer.group}
    if peer.module is not None:
        try:
            __import__(peer.module)
        except ImportError as e:
            row["status"] = f"skipped ({e.name or peer.module} not installed; pip install 'ampipc[bench]')"
            return row
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    errors: list[str] = []
    try:
        try:
            opened = peer.open(ctx, next(_unique))
        except Exception as e:  # noqa: BLE001  (a peer that cannot start is a row, not a crash)
            row["status"] = f"error: could not open the channel: {e!r}"
            return row
        try:
            with _children(ctx, peer, opened, plan, results) as procs:
                deadline = time.monotonic() + plan.child_timeout
                for _ in procs:
                    try:
                        side, part, error = results.get(timeout=max(0.1, deadline - time.monotonic()))
                    except queue.Empty:
                        errors.append(f"no result within {plan.child_timeout:.0f} s")
                        break
                    if error is not None:
                        errors.append(f"side {side}: {error.strip().splitlines()[-1]}")
                        break
                    row.update(part)
        finally:
            opened.release()
    finally:
        results.close()
        results.join_thread()
    row["status"] = "error: " + "; ".join(errors) if errors else "ok"
    return row


_MEASURES = ("rtt_median_us", "rtt_p99_us", "msgs_per_s_64B", "mb_per_s_64KiB", "mb_per_s_1MiB")


def _median_rows(runs: list[Row]) -> Row:
    """One peer's rows from several runs merged: the median of each figure over the runs that worked."""
    good = [r for r in runs if r.get("status") == "ok"]
    if not good:
        return runs[0]
    merged = dict(good[0])
    for key in _MEASURES:
        values = [float(r[key]) for r in good if key in r]
        if values:
            merged[key] = statistics.median(values)
    merged["runs"] = len(good)
    if len(good) < len(runs):
        failed = next(r for r in runs if r.get("status") != "ok")
        merged["status"] = f"ok in {len(good)} of {len(runs)} runs; {failed.get('status')}"
    return merged


def run(quick: bool = False, peers: list[str] | None = None, runs: int = 1) -> list[Row]:
    """Measure every peer (or those named) `runs` times and return one row per peer, ampipc rows first.

    Keys: peer, api, group ("ampipc" or "peer"), status ("ok", "skipped (...)", "error: ..."),
    and when measured rtt_median_us, rtt_p99_us, msgs_per_s_64B, mb_per_s_64KiB, mb_per_s_1MiB
    (with several runs, each figure is the median over the runs, and "runs" counts them).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    plan = Plan.for_mode(quick)
    chosen = PEERS if peers is None else [_BY_NAME[name] for name in peers]
    # Peers are interleaved run by run, so a burst of noise on the machine hits them all alike.
    table: list[list[Row]] = [[] for _ in chosen]
    for _ in range(runs):
        for i, peer in enumerate(chosen):
            table[i].append(_measure(peer, plan))
    return [_median_rows(rows) for rows in table]


# ---- verdicts and formatting ----------------------------------------------------------------


def _ok(rows: list[Row], group: str, key: str) -> list[Row]:
    return [r for r in rows if r.get("group") == group and r.get("status") == "ok" and key in r]


def verdicts(rows: list[Row]) -> list[str]:
    """One line per target: the measured ratio against the target, PASS or MISS (or n/a)."""
    lines = []
    ours = next((r for r in rows if r["peer"] == "ampipc" and r.get("status") == "ok"), None)
    pipe = next((r for r in rows if r["peer"] == "multiprocessing.Pipe" and r.get("status") == "ok"), None)
    if ours is None or pipe is None:
        lines.append("round trip  : n/a (ampipc or multiprocessing.Pipe not measured)")
    else:
        ratio = ours["rtt_median_us"] / pipe["rtt_median_us"]
        verdict = "PASS" if ratio <= 0.5 else "MISS"
        lines.append(
            f"round trip  : ampipc median {ours['rtt_median_us']:.1f} us = {ratio:.2f}x multiprocessing.Pipe's "
            f"{pipe['rtt_median_us']:.1f} us (target <= 0.50x) {verdict}"
        )
    for key, what, target, fmt in (
        ("msgs_per_s_64B", "64 B one-way", 3.0, "{:,.0f} msg/s"),
        ("mb_per_s_1MiB", "1 MiB one-way", 1.0, "{:,.0f} MB/s"),
    ):
        mine = _ok(rows, "ampipc", key)
        theirs = _ok(rows, "peer", key)
        if not mine or not theirs:
            lines.append(f"{what:<12}: n/a (no measured ampipc row or peer)")
            continue
        best_mine = max(mine, key=lambda r: float(r[key]))
        best_peer = max(theirs, key=lambda r: float(r[key]))
        ratio = best_mine[key] / best_peer[key]
        verdict = "PASS" if ratio >= target else "MISS"
        lines.append(
            f"{what:<12}: {best_mine['peer']} {fmt.format(best_mine[key])} = {ratio:.2f}x best peer "
            f"{best_peer['peer']} {fmt.format(best_peer[key])} (target >= {target:.2f}x) {verdict}"
        )
    return lines


_COLUMNS = [
    ("peer", "peer", "{}"),
    ("rtt_median_us", "RTT median us", "{:.1f}"),
    ("rtt_p99_us", "RTT p99 us", "{:.1f}"),
    ("msgs_per_s_64B", "64 B msg/s", "{:,.0f}"),
    ("mb_per_s_64KiB", "64 KiB MB/s", "{:,.0f}"),
    ("mb_per_s_1MiB", "1 MiB MB/s", "{:,.0f}"),
]


def format_table(rows: list[Row], markdown: bool = False) -> str:
    """The peers table, as aligned text or as a Markdown table."""
    header = [title for _, title, _ in _COLUMNS] + ["status"]
    body = []
    for r in rows:
        cells = [fmt.format(r[key]) if key in r else "-" for key, _, fmt in _COLUMNS]
        body.append(cells + [str(r.get("status", ""))])
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header) - 1)) + "|---|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    parser.add_argument("--peer", action="append", choices=PEER_NAMES, help="measure only this peer (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="runs to take the median of (default 1)")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.peer, args.runs)
    print(format_table(rows))
    for line in verdicts(rows):
        print(line)


if __name__ == "__main__":
    main()
