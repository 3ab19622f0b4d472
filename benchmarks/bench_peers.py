"""ampipc against the usual Python inter-process channels, each peer with its own best calls.

Theory of operation
-------------------
A *case* is one way of moving bytes between two processes: a library and the calls used
(``faster-fifo`` with ``get_many`` is one case, ``faster-fifo`` with ``get`` another). Each case has
a *kind* saying which kind of call it uses, and every peer case names the ampipc case of the same
kind (its ``pair``), so that a single call is compared with a single call, a batch with a batch, a
zero-copy receive with a zero-copy receive and a copying transfer with a copying one:

=========== ====================================================================================
kind        what the consumer gets
=========== ====================================================================================
single      one message per call, as a new object or copied into the caller's reusable buffer
            (64 KiB and 1 MiB transfers of these cases are the *copying* figures)
batch       many messages per call (``get_many``, ``receive_many``)
zero-copy   a view of the sender's shared memory (or of the library's own frame), released after use
=========== ====================================================================================

Every case is measured by the same code, in two processes of the multiprocessing *spawn* context:
side ``a`` (initiator, producer) and side ``b`` (echo, consumer). The parent opens the case's
channels (`Case.open`) and a control Pipe that is never timed; each child turns its spec into a
`Channel` (`Case.endpoint`). One pair of processes runs the case's whole plan:

- round trip (cases with ``rtt``): ``a`` sends a 64-byte message, ``b`` echoes it, ``a`` times each
  round trip with ``perf_counter_ns`` after a warm-up; median and 99th percentile;
- one-way, per size: ``b`` says "ready" on the control pipe, ``a`` produces warm-up + N messages as
  fast as it can, ``b`` consumes the warm-up, then times the N (messages/s, and MB/s with
  MB = 10**6 bytes of payload), checks the last message's contents, and says "done".

The consumer checks the count and the last message's bytes, so a case that drops or mangles messages
fails instead of looking fast. The parent keeps every resource until both children are done, then
releases it in ``finally``; a child that does not finish in time is terminated, then killed, and its
row says so. A case whose module or API is missing is a "skipped" row, never an error.

`run_spin` measures ampipc's 64-byte round trip with the default spin and with spin 0, with both
processes pinned to CPU 0 and on two CPUs (``os.sched_setaffinity``).
"""

from __future__ import annotations

import argparse
import ctypes
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

__all__ = [
    "CASE_NAMES",
    "CASES",
    "Case",
    "Plan",
    "format_pairs",
    "format_table",
    "pairs",
    "run",
    "run_spin",
]

SMALL = 64
MEDIUM = 64 * 1024
LARGE = 1024 * 1024
MB = 1_000_000
SIZE_KEYS = {SMALL: "64B", MEDIUM: "64KiB", LARGE: "1MiB"}

# ampipc rings and faster-fifo queues hold a few 1 MiB messages in flight, as a pipe or socket would.
RING_CAPACITY = 4 * LARGE + 64 * 1024
REGION_SIZE = 2 * (RING_CAPACITY + 64 * 1024) + 1024 * 1024
POOL_SLOTS = 16
BATCH = 64  # messages per send_many / put_many call; receive_many / get_many take up to 4x that
TIMEOUT = 300.0  # no call of a healthy run waits this long; a slow machine must not fail the run

Row = dict[str, Any]


class Unavailable(Exception):
    """The case cannot run here (an API missing from this build); its row is "skipped"."""


@dataclass(frozen=True)
class Plan:
    """How many messages each scenario uses (warm-up messages are not timed).

    The 1 MiB warm-up goes twice round the largest set of slots (the pool's, the ring's), so that no
    timed message pays for the first touch of a page.
    """

    rtt_warmup: int
    rtt_iterations: int
    counts: dict[int, tuple[int, int]]  # size -> (warm-up, timed count) for one-way transfers
    batch_factor: int  # batch cases move this many times more 64-byte messages (they are that fast)
    child_timeout: float

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(200, 2_000, {SMALL: (1_000, 20_000), MEDIUM: (40, 400), LARGE: (40, 100)}, 5, 90.0)
        return cls(2_000, 20_000, {SMALL: (5_000, 200_000), MEDIUM: (100, 3_000), LARGE: (40, 300)}, 10, 180.0)

    @classmethod
    def tiny(cls) -> Plan:
        """The harness's own check: a handful of messages (the figures mean nothing)."""
        return cls(10, 100, {SMALL: (10, 300), MEDIUM: (2, 10), LARGE: (2, 6)}, 2, 240.0)  # generous: a loaded CI


class Channel:
    """One side of a case, in its child process. Subclasses give `send`/`recv` or override the rest."""

    def send(self, message: bytes) -> None:
        raise NotImplementedError

    def recv(self) -> object:
        raise NotImplementedError

    def echo(self) -> None:
        self.send(self.recv())  # type: ignore[arg-type]  # every single-call recv returns bytes-like

    def produce(self, message: bytes, count: int) -> None:
        send = self.send
        for _ in range(count):
            send(message)

    def consume(self, size: int, count: int) -> bytes | None:
        """Take `count` messages; return the last one's bytes (None when count is 0)."""
        recv = self.recv
        for _ in range(count - 1):
            recv()
        return _as_bytes(recv()) if count > 0 else None

    def close(self) -> None:
        pass


@dataclass
class _Opened:
    """What the parent made for one case: a picklable spec per side and what to release after."""

    spec_a: Any
    spec_b: Any
    release: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Case:
    name: str
    api: str
    kind: str  # "single", "batch" or "zero-copy"
    module: str | None  # imported first; ImportError makes the row "skipped"
    open: Callable[[Any, int], _Opened]  # (spawn context, unique number) -> specs
    endpoint: Callable[[Any, str], Channel]  # (spec, side) -> channel, in the child
    sizes: tuple[int, ...] = (SMALL, MEDIUM, LARGE)
    rtt: bool = True
    pair: str | None = None  # peer cases: the ampipc case using the same kind of call
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


class _PipeChannel(Channel):
    def __init__(self, spec: Any, side: str) -> None:
        self.out, self.into = spec
        self.send = self.out.send_bytes  # type: ignore[method-assign]
        self.recv = self.into.recv_bytes  # type: ignore[method-assign]

    def close(self) -> None:
        self.out.close()
        self.into.close()


# ---- multiprocessing.Queue ------------------------------------------------------------------


def _queue_open(ctx: Any, unique: int) -> _Opened:
    a2b, b2a = ctx.Queue(), ctx.Queue()

    def release() -> None:
        for q in (a2b, b2a):
            q.close()
            q.join_thread()

    return _Opened((a2b, b2a), (b2a, a2b), release)


class _QueueChannel(Channel):
    def __init__(self, spec: Any, side: str) -> None:
        self.out, self.into = spec
        self.send = self.out.put  # type: ignore[method-assign]
        self.recv = self.into.get  # type: ignore[method-assign]

    def close(self) -> None:
        # The consumer has received everything, so the feeder thread has nothing left to flush.
        self.out.close()
        self.out.join_thread()


# ---- faster-fifo ----------------------------------------------------------------------------

FASTER_FIFO_BYTES = 8 * LARGE + 64 * 1024


def _identity(data: Any) -> Any:
    return data


def _faster_fifo_opener(loads: Callable[[Any], Any]) -> Callable[[Any, int], _Opened]:
    def open_(ctx: Any, unique: int) -> _Opened:
        import faster_fifo  # type: ignore[import-not-found, unused-ignore]

        # Bytes in, no pickling. With loads=bytes each message is copied out of the queue's reused
        # receive buffer; with loads=identity the consumer gets a memoryview into that buffer, valid
        # until its next get (faster-fifo's fastest call, as receive_into is ampipc's).
        a2b = faster_fifo.Queue(max_size_bytes=FASTER_FIFO_BYTES, loads=loads, dumps=_identity)
        b2a = faster_fifo.Queue(max_size_bytes=FASTER_FIFO_BYTES, loads=loads, dumps=_identity)
        return _Opened((a2b, b2a), (b2a, a2b))

    return open_


class _FasterFifoChannel(Channel):
    def __init__(self, spec: Any, side: str) -> None:
        self.out, self.into = spec
        # faster-fifo's calls time out after 10 s by default; a slow machine must not fail the run.
        self.send = functools.partial(self.out.put, timeout=TIMEOUT)  # type: ignore[method-assign]
        self.recv = functools.partial(self.into.get, timeout=TIMEOUT)  # type: ignore[method-assign]

    def echo(self) -> None:
        self.send(_as_bytes(self.recv()))  # its put needs bytes, not a view


class _FasterFifoBatchChannel(_FasterFifoChannel):
    def produce(self, message: bytes, count: int) -> None:
        put_many = self.out.put_many
        batch = [message] * BATCH
        full, rest = divmod(count, BATCH)
        for _ in range(full):
            put_many(batch, timeout=TIMEOUT)
        if rest:
            put_many(batch[:rest], timeout=TIMEOUT)

    def consume(self, size: int, count: int) -> bytes | None:
        get_many = self.into.get_many
        left, last = count, None
        while left > 0:
            got = get_many(timeout=TIMEOUT, max_messages_to_get=min(left, 4 * BATCH))
            left -= len(got)
            last = got[-1]
        return None if last is None else _as_bytes(last)


# ---- pyzmq ----------------------------------------------------------------------------------


def _zmq_open(ctx: Any, unique: int) -> _Opened:
    import zmq  # noqa: F401  (fail here, in the parent, if it is missing)

    directory = tempfile.mkdtemp(prefix="ampipc-bench-zmq-")
    address = f"ipc://{directory}/pair"
    return _Opened((address, "bind"), (address, "connect"), lambda: shutil.rmtree(directory, ignore_errors=True))


class _ZmqChannel(Channel):
    copy = True

    def __init__(self, spec: Any, side: str) -> None:
        import zmq

        address, how = spec
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        if how == "bind":
            self.socket.bind(address)
        else:
            self.socket.connect(address)
        self.send = functools.partial(self.socket.send, copy=self.copy)  # type: ignore[method-assign]
        self.recv = functools.partial(self.socket.recv, copy=self.copy)  # type: ignore[method-assign]

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


class _ZmqZeroCopyChannel(_ZmqChannel):
    """copy=False both ways: the message goes out without a copy, the receiver gets a zmq.Frame."""

    copy = False

    def consume(self, size: int, count: int) -> bytes | None:
        recv, buffer = self.recv, None
        for _ in range(count):
            buffer = recv().buffer  # type: ignore[attr-defined]  # the frame's bytes, as the consumer uses them
        return None if buffer is None else bytes(buffer)


# ---- iceoryx2 -------------------------------------------------------------------------------


def _iceoryx2_open(ctx: Any, unique: int) -> _Opened:
    import iceoryx2  # type: ignore[import-untyped, unused-ignore]  # noqa: F401  (fail here, in the parent)

    name = f"ampipc-bench/{os.getpid()}/{unique}"
    return _Opened((name, "publish"), (name, "subscribe"))


class _Iceoryx2Channel(Channel):
    """Publish-subscribe over a dynamic ``Slice[c_uint8]`` service: the producer loans a sample, writes
    the message into it and sends it; the consumer receives the sample (a view of the publisher's
    shared memory) and drops it. iceoryx2's subscriber has no blocking receive, so the consumer polls
    ``receive()``; the publisher waits for room (``RetryUntilDelivered``) instead of dropping."""

    def __init__(self, spec: Any, side: str) -> None:
        import iceoryx2 as iox2  # type: ignore[import-untyped, unused-ignore]

        name, role = spec
        iox2.set_log_level(iox2.LogLevel.Error)
        self.iox2 = iox2
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        self.service = (
            self.node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .subscriber_max_buffer_size(POOL_SLOTS)
            .history_size(0)
            .enable_safe_overflow(False)
            .open_or_create()
        )
        self.publisher: Any = None
        self.subscriber: Any = None
        self.connected = False
        if role == "publish":
            self.publisher = (
                self.service.publisher_builder()
                .initial_max_slice_len(LARGE)
                .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                .create()
            )
        else:
            self.subscriber = self.service.subscriber_builder().buffer_size(POOL_SLOTS).create()

    def produce(self, message: bytes, count: int) -> None:
        publisher, memmove, size = self.publisher, ctypes.memmove, len(message)
        if not self.connected:
            # A sample published before the publisher has connected to the subscriber's queue is
            # delivered to no one: wait until the service lists the subscriber, then connect.
            deadline = time.monotonic() + TIMEOUT
            while self.service.dynamic_config.number_of_subscribers < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("the iceoryx2 subscriber never appeared")
                time.sleep(0.001)
            publisher.update_connections()
            self.connected = True
        for _ in range(count):
            sample = publisher.loan_slice_uninit(size)
            memmove(sample.payload_ptr, message, size)
            sample.assume_init().send()

    def consume(self, size: int, count: int) -> bytes | None:
        receive = self.subscriber.receive
        last: bytes | None = None
        since = time.monotonic()
        for i in range(count):
            sample = receive()
            polls = 0
            while sample is None:
                polls += 1
                if polls & 0xFFFF == 0:
                    if polls == 0x10000:
                        since = time.monotonic()
                    elif time.monotonic() - since > LOSS_WAIT:
                        raise AssertionError(f"iceoryx2 delivered {i} of {count} {size}-byte samples: "
                                             f"none for {LOSS_WAIT:.0f} s, the rest were lost")
                sample = receive()
            view = sample.payload().as_memory_view()  # what the consumer uses, no copy
            if i == count - 1:
                last = bytes(view)
            view.release()
            sample.delete()
        return last

    def close(self) -> None:
        for port in (self.publisher, self.subscriber):
            if port is not None:
                port.delete()
        del self.service, self.node


# The producer blocks when the subscriber's queue is full (RetryUntilDelivered, no safe overflow), so
# a subscriber that waits this long with nothing to receive has lost samples (seen with iceoryx2 0.10).
LOSS_WAIT = 20.0


# ---- multiprocessing.shared_memory by hand ---------------------------------------------------

SHM_SLOTS = 8


def _shm_open(ctx: Any, unique: int) -> _Opened:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=SHM_SLOTS * LARGE)
    full_recv, full_send = ctx.Pipe(duplex=False)  # slot numbers, producer -> consumer
    free_recv, free_send = ctx.Pipe(duplex=False)  # slot numbers given back

    def release() -> None:
        for conn in (full_recv, full_send, free_recv, free_send):
            conn.close()
        shm.close()
        shm.unlink()

    return _Opened((shm.name, full_send, free_recv), (shm.name, free_send, full_recv), release)


class _ShmChannel(Channel):
    """The by-hand design: a ring of SHM_SLOTS 1 MiB slots in a SharedMemory segment; the producer
    copies a message into a free slot and sends (slot, length) through one Pipe, the consumer copies it
    out into its own buffer and gives the slot back through the other."""

    def __init__(self, spec: Any, side: str) -> None:
        from multiprocessing import shared_memory

        name, self.out, self.into = spec
        self.shm = shared_memory.SharedMemory(name)
        self.view = memoryview(self.shm.buf)  # type: ignore[arg-type]
        self.scratch = bytearray(LARGE)

    def produce(self, message: bytes, count: int) -> None:
        view, size, post, take = self.view, len(message), self.out.send, self.into.recv
        for i in range(count):
            slot = i if i < SHM_SLOTS else take()
            view[slot * LARGE : slot * LARGE + size] = message
            post((slot, size))
        for _ in range(min(count, SHM_SLOTS)):
            take()  # every slot back: the next scenario starts with all of them free

    def consume(self, size: int, count: int) -> bytes | None:
        view, scratch, take, give = self.view, self.scratch, self.into.recv, self.out.send
        length = 0
        for _ in range(count):
            slot, length = take()
            scratch[:length] = view[slot * LARGE : slot * LARGE + length]
            give(slot)
        return bytes(scratch[:length]) if count > 0 else None

    def close(self) -> None:
        self.view.release()
        self.shm.close()
        self.out.close()
        self.into.close()


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


def _ampipc_batch_open(ctx: Any, unique: int) -> _Opened:
    from ampipc import MessageBuffer

    missing = [n for n in ("send_many", "receive_many", "receive_many_into") if not hasattr(MessageBuffer, n)]
    if missing:
        raise Unavailable(f"MessageBuffer.{missing[0]} is not in this build of ampipc")
    return _ampipc_open(ctx, unique)


class _AmpipcChannel(Channel):
    def __init__(self, spec: Any, side: str) -> None:
        from ampipc import MessageBuffer, Region

        name, out_name, in_name = spec
        self.region = Region.attach(name)
        self.out = MessageBuffer.attach(self.region, out_name)
        self.into = MessageBuffer.attach(self.region, in_name)
        self.send = self.out.send  # type: ignore[method-assign, assignment]
        self.recv = self.into.receive  # type: ignore[method-assign]

    def close(self) -> None:
        self.region.close()


class _AmpipcNoSpinChannel(_AmpipcChannel):
    def __init__(self, spec: Any, side: str) -> None:
        super().__init__(spec, side)
        self.out.spin = self.into.spin = 0.0


class _AmpipcIntoChannel(_AmpipcChannel):
    def __init__(self, spec: Any, side: str) -> None:
        super().__init__(spec, side)
        self.scratch = bytearray(RING_CAPACITY)
        self.scratch_view = memoryview(self.scratch)
        receive_into, scratch, view = self.into.receive_into, self.scratch, self.scratch_view
        self.recv = lambda: view[: receive_into(scratch)]  # type: ignore[method-assign]

    def consume(self, size: int, count: int) -> bytes | None:
        receive_into, scratch = self.into.receive_into, self.scratch
        length = 0
        for _ in range(count):
            length = receive_into(scratch)
        return bytes(scratch[:length]) if count > 0 else None

    def close(self) -> None:
        self.scratch_view.release()
        super().close()


class _AmpipcBatchChannel(_AmpipcChannel):
    into_buffer = False

    def __init__(self, spec: Any, side: str) -> None:
        super().__init__(spec, side)
        self.scratch = bytearray(RING_CAPACITY)

    def produce(self, message: bytes, count: int) -> None:
        send_many = self.out.send_many
        batch = [message] * BATCH
        left = count
        while left > 0:
            chunk = batch if left >= BATCH else batch[:left]
            sent = send_many(chunk, timeout=TIMEOUT)  # as many as fit, waiting for room for the first
            while sent < len(chunk):
                sent += send_many(chunk[sent:], timeout=TIMEOUT)
            left -= len(chunk)

    def consume(self, size: int, count: int) -> bytes | None:
        left, last = count, None
        if self.into_buffer:
            receive_many_into, scratch = self.into.receive_many_into, self.scratch
            while left > 0:
                views = receive_many_into(scratch, min(left, 4 * BATCH), timeout=TIMEOUT)
                left -= len(views)
                last = bytes(views[-1]) if left <= 0 else None
        else:
            receive_many = self.into.receive_many
            while left > 0:
                messages = receive_many(min(left, 4 * BATCH), timeout=TIMEOUT)
                left -= len(messages)
                last = messages[-1]
        return last


class _AmpipcBatchIntoChannel(_AmpipcBatchChannel):
    into_buffer = True


def _ampipc_pool_open(ctx: Any, unique: int) -> _Opened:
    from ampipc import MessageBuffer, Region
    from ampipc.services.pool import PayloadPool

    name = f"ampipc-bench-{os.getpid()}-{unique}"
    region = Region.create(name, PayloadPool.footprint(POOL_SLOTS, LARGE) + 1024 * 1024)
    try:
        PayloadPool.create(region, "pool", slots=POOL_SLOTS, slot_size=LARGE)
        MessageBuffer.create(region, "descriptors", 64 * 1024)
    except BaseException:
        region.close()
        raise
    return _Opened((name, "a"), (name, "b"), region.close)


class _AmpipcPoolChannel(Channel):
    """PayloadPool: the producer loans a slot, writes the message into it and commits a descriptor
    through a MessageBuffer; the consumer receives a read-only view of the slot, then releases it."""

    def __init__(self, spec: Any, side: str) -> None:
        from ampipc import MessageBuffer, Region
        from ampipc.services.pool import PayloadPool

        name, _ = spec
        self.region = Region.attach(name)
        self.pool = PayloadPool.attach(self.region, "pool")
        self.descriptors = MessageBuffer.attach(self.region, "descriptors")

    def produce(self, message: bytes, count: int) -> None:
        loan, commit, path, size = self.pool.loan, self.pool.commit, self.descriptors, len(message)
        for _ in range(count):
            slot = loan(timeout=TIMEOUT)
            slot.view[:size] = message
            commit(slot, path, length=size, timeout=TIMEOUT)

    def consume(self, size: int, count: int) -> bytes | None:
        receive, path = self.pool.receive, self.descriptors
        last: bytes | None = None
        for i in range(count):
            payload = receive(path, timeout=TIMEOUT)
            if i == count - 1:
                last = bytes(payload.data)
            payload.release()
        return last

    def close(self) -> None:
        self.pool.close()
        self.region.close()


# ---- the cases --------------------------------------------------------------------------------

_ONE_WAY_SMALL = (SMALL,)
CASES: list[Case] = [
    Case("ampipc", "MessageBuffer.send / receive", "single", "ampipc", _ampipc_open, _AmpipcChannel, group="ampipc"),
    Case(
        "ampipc (receive_into)",
        "MessageBuffer.send / receive_into(preallocated)",
        "single",
        "ampipc",
        _ampipc_open,
        _AmpipcIntoChannel,
        group="ampipc",
    ),
    Case(
        "ampipc (send_many / receive_many)",
        f"MessageBuffer.send_many({BATCH}) / receive_many",
        "batch",
        "ampipc",
        _ampipc_batch_open,
        _AmpipcBatchChannel,
        _ONE_WAY_SMALL,
        rtt=False,
        group="ampipc",
    ),
    Case(
        "ampipc (receive_many_into)",
        f"MessageBuffer.send_many({BATCH}) / receive_many_into(preallocated)",
        "batch",
        "ampipc",
        _ampipc_batch_open,
        _AmpipcBatchIntoChannel,
        _ONE_WAY_SMALL,
        rtt=False,
        group="ampipc",
    ),
    Case(
        "ampipc (pool)",
        "PayloadPool loan / commit a descriptor / receive a view / release",
        "zero-copy",
        "ampipc",
        _ampipc_pool_open,
        _AmpipcPoolChannel,
        rtt=False,
        group="ampipc",
    ),
    Case("multiprocessing.Pipe", "send_bytes / recv_bytes", "single", None, _pipe_open, _PipeChannel, pair="ampipc"),
    Case("multiprocessing.Queue", "put / get of bytes", "single", None, _queue_open, _QueueChannel, pair="ampipc"),
    Case(
        "faster-fifo",
        "Queue.put / get, loads=bytes (no pickling)",
        "single",
        "faster_fifo",
        _faster_fifo_opener(bytes),
        _FasterFifoChannel,
        pair="ampipc",
    ),
    Case(
        "faster-fifo (loads=identity)",
        "Queue.put / get, loads=identity: a view of its reused buffer",
        "single",
        "faster_fifo",
        _faster_fifo_opener(_identity),
        _FasterFifoChannel,
        pair="ampipc (receive_into)",
    ),
    Case(
        "faster-fifo (put_many / get_many)",
        f"Queue.put_many({BATCH}) / get_many, loads=bytes",
        "batch",
        "faster_fifo",
        _faster_fifo_opener(bytes),
        _FasterFifoBatchChannel,
        _ONE_WAY_SMALL,
        rtt=False,
        pair="ampipc (send_many / receive_many)",
    ),
    Case(
        "faster-fifo (get_many, loads=identity)",
        f"Queue.put_many({BATCH}) / get_many, loads=identity: views of its reused buffer",
        "batch",
        "faster_fifo",
        _faster_fifo_opener(_identity),
        _FasterFifoBatchChannel,
        _ONE_WAY_SMALL,
        rtt=False,
        pair="ampipc (receive_many_into)",
    ),
    Case("pyzmq", "PAIR over ipc://, send / recv (copy=True)", "single", "zmq", _zmq_open, _ZmqChannel, pair="ampipc"),
    Case(
        "pyzmq (copy=False)",
        "PAIR over ipc://, send(copy=False) / recv(copy=False) -> Frame.buffer",
        "zero-copy",
        "zmq",
        _zmq_open,
        _ZmqZeroCopyChannel,
        rtt=False,
        pair="ampipc (pool)",
    ),
    Case(
        "iceoryx2",
        "publish-subscribe, loan_slice_uninit / send; receive -> payload view (polled)",
        "zero-copy",
        "iceoryx2",
        _iceoryx2_open,
        _Iceoryx2Channel,
        rtt=False,
        pair="ampipc (pool)",
    ),
    Case(
        "shared_memory + Pipe",
        f"multiprocessing.shared_memory ring of {SHM_SLOTS} slots, slot numbers over two Pipes; copy in, copy out",
        "single",
        None,
        _shm_open,
        _ShmChannel,
        (MEDIUM, LARGE),
        rtt=False,
        pair="ampipc (receive_into)",
    ),
]
CASE_NAMES = [c.name for c in CASES]
_SPIN_CASES = [
    Case("ampipc (default spin)", "MessageBuffer.send / receive", "single", "ampipc", _ampipc_open, _AmpipcChannel,
         (), group="ampipc"),
    Case("ampipc (spin 0)", "MessageBuffer.send / receive, spin = 0", "single", "ampipc", _ampipc_open,
         _AmpipcNoSpinChannel, (), group="ampipc"),
]
_BY_NAME = {c.name: c for c in CASES + _SPIN_CASES}


# ---- the measurement, run in the children ----------------------------------------------------


def _pattern(size: int) -> bytes:
    return bytes(i & 0xFF for i in range(size)) if size < 4096 else (bytes(range(256)) * (size // 256 + 1))[:size]


def _counts(case: Case, plan: Plan, size: int) -> tuple[int, int]:
    warmup, count = plan.counts[size]
    if case.kind == "batch":
        return warmup * plan.batch_factor, count * plan.batch_factor
    return warmup, count


def _side_a(case: Case, ch: Channel, control: Any, plan: Plan) -> Row:
    result: Row = {}
    if case.rtt:
        send, recv = ch.send, ch.recv
        small = _pattern(SMALL)
        clock = time.perf_counter_ns
        timings = [0] * plan.rtt_iterations
        for _ in range(plan.rtt_warmup):
            send(small)
            recv()
        reply: object = b""
        for i in range(plan.rtt_iterations):
            t0 = clock()
            send(small)
            reply = recv()
            timings[i] = clock() - t0
        if _as_bytes(reply) != small:
            raise AssertionError("ping-pong reply differs from the message sent")
        timings.sort()
        result["rtt_median_us"] = statistics.median(timings) / 1000.0
        result["rtt_p99_us"] = timings[min(len(timings) - 1, (len(timings) * 99) // 100)] / 1000.0
    for size in case.sizes:
        warmup, count = _counts(case, plan, size)
        if control.recv() != "ready":
            raise AssertionError("the consumer sent something other than 'ready'")
        ch.produce(_pattern(size), warmup + count)
    if control.recv() != "done":
        raise AssertionError("the consumer did not finish")
    return result


def _side_b(case: Case, ch: Channel, control: Any, plan: Plan) -> Row:
    if case.rtt:
        echo = ch.echo
        for _ in range(plan.rtt_warmup + plan.rtt_iterations):
            echo()
    result: Row = {}
    clock = time.perf_counter_ns
    for size in case.sizes:
        warmup, count = _counts(case, plan, size)
        control.send("ready")
        ch.consume(size, warmup)
        t0 = clock()
        last = ch.consume(size, count)
        elapsed = clock() - t0
        if last != _pattern(size):
            raise AssertionError(f"the last {size}-byte message differs from the one sent")
        seconds = elapsed / 1e9
        result[f"msgs_per_s_{SIZE_KEYS[size]}"] = count / seconds
        result[f"mb_per_s_{SIZE_KEYS[size]}"] = count * size / MB / seconds
    control.send("done")
    return result


def _child(case_name: str, side: str, spec: Any, control: Any, plan: Plan, cpu: int | None, results: Any) -> None:
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        case = _BY_NAME[case_name]
        ch = case.endpoint(spec, side)
        try:
            row = _side_a(case, ch, control, plan) if side == "a" else _side_b(case, ch, control, plan)
        finally:
            ch.close()
        results.put((side, row, None))
    except BaseException:  # noqa: BLE001  (any failure becomes the case's error row in the parent)
        results.put((side, None, traceback.format_exc(limit=6)))


# ---- the parent ----------------------------------------------------------------------------

_unique = itertools.count()


@contextmanager
def _children(
    ctx: Any, case: Case, opened: _Opened, plan: Plan, cpus: tuple[int, int] | None, results: Any
) -> Iterator[list[Any]]:
    control_a, control_b = ctx.Pipe(duplex=True)
    procs = [
        ctx.Process(
            target=_child,
            args=(case.name, side, spec, control, plan, None if cpus is None else cpus[i], results),
            name=f"bench-{case.name}-{side}",
        )
        for i, (side, spec, control) in enumerate((("a", opened.spec_a, control_a), ("b", opened.spec_b, control_b)))
    ]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        started = [p for p in procs if p.pid is not None]
        for p in started:
            p.join(timeout=10)
        for p in started:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        control_a.close()
        control_b.close()


def _measure(case: Case, plan: Plan, cpus: tuple[int, int] | None = None) -> Row:
    row: Row = {"peer": case.name, "api": case.api, "kind": case.kind, "group": case.group, "pair": case.pair}
    if case.module is not None:
        try:
            __import__(case.module)
        except ImportError as e:
            row["status"] = f"skipped ({e.name or case.module} not installed; pip install 'ampipc[bench]')"
            return row
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    errors: list[str] = []
    try:
        try:
            opened = case.open(ctx, next(_unique))
        except Unavailable as e:
            row["status"] = f"skipped ({e})"
            return row
        except Exception as e:  # noqa: BLE001  (a case that cannot start is a row, not a crash)
            row["status"] = f"error: could not open the channel: {e!r}"
            return row
        try:
            with _children(ctx, case, opened, plan, cpus, results) as procs:
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


def _measure_keys(rows: list[Row]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if (k.startswith(("rtt_", "msgs_per_s_", "mb_per_s_"))) and k not in keys]
    return keys


def _median_rows(runs: list[Row]) -> Row:
    """One case's rows from several runs merged: the median of each figure over the runs that worked."""
    good = [r for r in runs if r.get("status") == "ok"]
    if not good:
        return runs[0]
    merged = dict(good[0])
    for key in _measure_keys(good):
        values = [float(r[key]) for r in good if key in r]
        if values:
            merged[key] = statistics.median(values)
    merged["runs"] = len(good)
    if len(good) < len(runs):
        failed = next(r for r in runs if r.get("status") != "ok")
        merged["status"] = f"ok in {len(good)} of {len(runs)} runs; {failed.get('status')}"
    return merged


def run(quick: bool = False, peers: list[str] | None = None, runs: int = 1, plan: Plan | None = None) -> list[Row]:
    """Measure every case (or those named) `runs` times and return one row per case, ampipc rows first.

    Keys: peer (the case's name), api, kind ("single", "batch", "zero-copy"), group ("ampipc" or
    "peer"), pair (for peers: the ampipc case of the same kind), status ("ok", "skipped (...)",
    "error: ..."), and when measured rtt_median_us, rtt_p99_us, msgs_per_s_<size>, mb_per_s_<size>
    for sizes 64B, 64KiB, 1MiB (with several runs, each figure is the median over the runs, and
    "runs" counts them).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    plan = plan or Plan.for_mode(quick)
    chosen = CASES if peers is None else [_BY_NAME[name] for name in peers]
    # Cases are interleaved run by run, so a burst of noise on the machine hits them all alike.
    table: list[list[Row]] = [[] for _ in chosen]
    for _ in range(runs):
        for i, case in enumerate(chosen):
            table[i].append(_measure(case, plan))
    return [_median_rows(rows) for rows in table]


def run_spin(quick: bool = False, plan: Plan | None = None) -> list[Row]:
    """ampipc 64-byte round trip, default spin against spin 0, on one CPU and on two (and unpinned).

    Rows: placement ("one CPU (0)", "two CPUs (0, 1)", "unpinned"), spin ("default", "0"),
    rtt_median_us, rtt_p99_us, status; plus one row per placement with ``spin_vs_no_spin``. Each
    setting is measured twice, in the order default, 0, 0, default, and its figures are the mean
    of the two.
    """
    plan = plan or Plan.for_mode(quick)
    usable = sorted(os.sched_getaffinity(0))
    placements: list[tuple[str, tuple[int, int] | None]] = [("unpinned", None)]
    if usable:
        placements.append((f"one CPU ({usable[0]})", (usable[0], usable[0])))
    if len(usable) >= 2:
        placements.append((f"two CPUs ({usable[0]}, {usable[1]})", (usable[0], usable[1])))
    rows: list[Row] = []
    for label, cpus in placements:
        # default, 0, 0, default: the machine's drift during the placement falls on both alike
        runs: dict[str, list[Row]] = {"default": [], "0": []}
        for spin in ("default", "0", "0", "default"):
            runs[spin].append(_measure(_SPIN_CASES[0] if spin == "default" else _SPIN_CASES[1], plan, cpus))
        measured = {}
        for spin, pair in runs.items():
            ok = [r for r in pair if r.get("status") == "ok"]
            row = dict(ok[0] if ok else pair[0])
            for k in ("rtt_median_us", "rtt_p99_us"):
                if ok and all(k in r for r in ok):
                    row[k] = sum(r[k] for r in ok) / len(ok)
            measured[spin] = row
            rows.append({"placement": label, "spin": spin, **{k: row[k] for k in ("rtt_median_us", "rtt_p99_us")
                                                               if k in row}, "status": row["status"]})
        if all(r.get("status") == "ok" for r in measured.values()):
            ratio = measured["default"]["rtt_median_us"] / measured["0"]["rtt_median_us"]
            rows.append({"placement": label, "spin": "default / 0", "spin_vs_no_spin": ratio, "status": "ok"})
    return rows


# ---- pairing and formatting -----------------------------------------------------------------

_SCENARIOS = [
    ("rtt_median_us", "64 B round trip, median", "us", False),
    ("msgs_per_s_64B", "64 B one-way", "msg/s", True),
    ("mb_per_s_64KiB", "64 KiB one-way", "MB/s", True),
    ("mb_per_s_1MiB", "1 MiB one-way", "MB/s", True),
]


def _ok(row: Row | None) -> bool:
    """Measured: "ok", or "ok in k of n runs; ..." (the figures are the median of the k that worked)."""
    return row is not None and str(row.get("status", "")).startswith("ok")


def pairs(rows: list[Row]) -> list[Row]:
    """Every measured peer figure beside the figure of its paired ampipc case (same kind of call).

    Keys: scenario, kind ("single"/"copying", "batch", "zero-copy"), peer, peer_value, ampipc (the
    paired case), ampipc_value, unit, ampipc_advantage (how many times better ampipc is: a rate over
    a rate, or a time's inverse).
    """
    by_name = {r["peer"]: r for r in rows}
    out = []
    for r in rows:
        if r.get("group") != "peer" or not _ok(r) or r.get("pair") is None:
            continue
        mine = by_name.get(r["pair"])
        for key, title, unit, higher_is_better in _SCENARIOS:
            if key not in r:
                continue
            kind = r["kind"]
            if kind == "single" and key.startswith("mb_per_s"):
                kind = "copying"
            entry: Row = {"scenario": title, "key": key, "kind": kind, "peer": r["peer"], "peer_value": r[key],
                          "ampipc": r["pair"], "unit": unit}
            if _ok(mine) and key in mine:  # type: ignore[operator]
                value = float(mine[key])  # type: ignore[index]
                entry["ampipc_value"] = value
                entry["ampipc_advantage"] = value / r[key] if higher_is_better else r[key] / value
            out.append(entry)
    return out


def format_pairs(rows: list[Row]) -> str:
    """The pairs as an aligned table."""
    lines = [f"{'scenario':<24} {'kind':<9} {'peer':<38} {'value':>12} {'ampipc case':<34} {'value':>12} {'ampipc x':>8}"]
    lines.append("-" * len(lines[0]))
    for p in pairs(rows):
        fmt = "{:,.1f}" if p["unit"] == "us" else "{:,.0f}"
        mine = fmt.format(p["ampipc_value"]) if "ampipc_value" in p else "-"
        adv = f"{p['ampipc_advantage']:.2f}" if "ampipc_advantage" in p else "-"
        lines.append(
            f"{p['scenario']:<24} {p['kind']:<9} {p['peer']:<38} {fmt.format(p['peer_value']):>12} "
            f"{p['ampipc']:<34} {mine:>12} {adv:>8}"
        )
    return "\n".join(lines)


_COLUMNS = [
    ("peer", "case", "{}"),
    ("kind", "kind", "{}"),
    ("rtt_median_us", "RTT median us", "{:.1f}"),
    ("rtt_p99_us", "RTT p99 us", "{:.1f}"),
    ("msgs_per_s_64B", "64 B msg/s", "{:,.0f}"),
    ("mb_per_s_64KiB", "64 KiB MB/s", "{:,.0f}"),
    ("mb_per_s_1MiB", "1 MiB MB/s", "{:,.0f}"),
]


def format_table(rows: list[Row], markdown: bool = False) -> str:
    """The cases table, as aligned text or as a Markdown table."""
    header = [title for _, title, _ in _COLUMNS] + ["status"]
    body = []
    for r in rows:
        cells = [fmt.format(r[key]) if key in r else "-" for key, _, fmt in _COLUMNS]
        body.append(cells + [str(r.get("status", ""))])
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|---|---|" + "|".join("---:" for _ in range(len(header) - 3)) + "|---|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    text_columns = (0, 1, len(header) - 1)

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    parser.add_argument("--peer", action="append", choices=CASE_NAMES, help="measure only this case (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="runs to take the median of (default 1)")
    parser.add_argument("--spin", action="store_true", help="also the spin placements (one CPU, two CPUs)")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.peer, args.runs)
    print(format_table(rows))
    print()
    print(format_pairs(rows))
    if args.spin:
        for r in run_spin(args.quick):
            print(r)


if __name__ == "__main__":
    main()
