"""Child-process targets of test_reliability (module level, so the spawn start method imports them)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from ampipc import CorruptRegion, MessageBuffer, Region, StreamBuffer
from ampipc import _layout as L

from . import _support as S


def die_inside_send_hook(region_name: str, buf_name: str, stream: bool, payload: bytes) -> None:
    """Publish one message, then die with SIGKILL inside the send hook, before waking the reader.

    The message is complete in the ring (the core publishes head before it calls the hook): a
    reader must receive it before it is told that the writer died.
    """
    region = Region.attach(region_name)
    buf: MessageBuffer | StreamBuffer = (StreamBuffer if stream else MessageBuffer).attach(region, buf_name)
    S.wait_for_flag(region, buf, L.RING_OFF_RX_WAITING)
    buf.on_send_completed = lambda b: os.kill(os.getpid(), signal.SIGKILL)
    if stream:
        assert isinstance(buf, StreamBuffer)
        buf.write(payload, timeout=S.GENEROUS)
    else:
        assert isinstance(buf, MessageBuffer)
        buf.send(payload, timeout=S.GENEROUS)
    time.sleep(S.GENEROUS)  # not reached


def send_and_vanish(region_name: str, buf_name: str, payload: bytes) -> None:
    """Writer A: send one message, then exit without closing anything (as a crashing task would)."""
    region = Region.attach(region_name)
    MessageBuffer.attach(region, buf_name).send(payload, timeout=S.GENEROUS)
    os._exit(0)


def send_when_told(region_name: str, buf_name: str, payload: bytes, go: Any, attached: Any) -> None:
    """Writer B: attach, say so, wait (alive, idle) until told, then take the writer role and send."""
    with Region.attach(region_name) as region:
        mb = MessageBuffer.attach(region, buf_name)
        attached.set()
        if not go.wait(S.GENEROUS):
            raise SystemExit(3)
        mb.send(payload, timeout=S.GENEROUS)


def receive_after_shrink(region_name: str, results: Any) -> None:
    """Attach, watch another process shrink the segment, then use the buffer: CorruptRegion, no SIGBUS."""
    region = Region.attach(region_name)
    mb = MessageBuffer.attach(region, "mb")
    assert mb.receive(timeout=S.GENEROUS) == b"before"
    results.put("ready")
    deadline = time.monotonic() + S.GENEROUS
    while os.stat(f"/dev/shm/{region_name}").st_size == region.size:
        if time.monotonic() > deadline:
            results.put("never shrunk")
            return
        time.sleep(0.005)
    outcome: list[str] = []
    for attempt in (lambda: mb.receive(timeout=0.5), lambda: mb.send(b"x" * 100), lambda: region.objects()):
        try:
            attempt()
            outcome.append("no error")
        except CorruptRegion as e:
            outcome.append("CorruptRegion" if "shrunk" in str(e) else f"CorruptRegion? {e}")
        except Exception as e:  # noqa: BLE001 - reported to the test
            outcome.append(f"{type(e).__name__}: {e}")
    region.close()
    results.put(outcome)


def create_and_exit_without_close(region_name: str) -> None:
    """A creator that forgets close(): its segment must still go at interpreter exit."""
    region = Region.create(region_name, 1 << 16)
    MessageBuffer.create(region, "mb", 64)
    sys.exit(0)


def exit_at_once() -> None:
    """A process that lives only to leave a dead pid behind."""


def attach_buffer_and_idle(region_name: str, buf_name: str, ready: Any) -> None:
    """A live process that attached one buffer of the region and does nothing with it."""
    with Region.attach(region_name) as region:
        MessageBuffer.attach(region, buf_name)
        ready.set()
        time.sleep(S.GENEROUS * 4)


def send_one_then_idle(region_name: str, buf_name: str, payload: bytes, ready: Any) -> None:
    """Writer of one buffer: one message, then alive and idle until killed."""
    region = Region.attach(region_name)
    MessageBuffer.attach(region, buf_name).send(payload, timeout=S.GENEROUS)
    ready.set()
    time.sleep(S.GENEROUS * 4)
