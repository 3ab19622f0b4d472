"""Regression tests from a review of the C core (`_native/`).

Cases that crashed the interpreter run in a spawned child, so that a segfault is a test failure
with its signal number instead of the end of the test run.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any

import pytest

from ampipc import MessageBuffer, Region, RegionClosed

from . import _support as S

pytestmark = pytest.mark.timeout(120)


def _run_in_child(spawn: Any, fn: Any) -> None:
    results = spawn.ctx.Queue()
    child = spawn(S.run_callable, fn, results)
    code = spawn.join(child)
    assert code >= 0, f"the child died of signal {-code} (the C core crashed)"
    assert code == 0, results.get(timeout=5)


# ---- a send whose wait ends at the deadline after the region was closed ------------------------


def send_times_out_after_peer_check_closed_region() -> None:
    """The last send attempt at the deadline must not touch a region unmapped during the wait."""
    region = Region.create(S.new_name("r"), 1 << 16)
    mb = MessageBuffer.create(region, "mb", 16)
    mb.send(bytes(8))  # 12 of 16 bytes used: another 8-byte message does not fit
    mb.spin = 0
    mb._peer_check = lambda role: region.close()
    try:
        mb.send(bytes(8), timeout=0.05)
    except RegionClosed:
        return
    raise AssertionError("send into a full buffer of a closed region did not raise RegionClosed")


def test_send_deadline_after_region_closed_in_wait(spawn: Any) -> None:
    _run_in_child(spawn, send_times_out_after_peer_check_closed_region)


# ---- a hook that drops the last reference to itself --------------------------------------------


def hook_drops_itself_then_raises() -> None:
    """The core must keep a hook alive until it has reported the hook's error."""
    log: list[str] = []
    sys.unraisablehook = lambda unraisable: log.append("unraisable")

    def fail(buf: Any) -> None:
        buf.on_send_completed = None  # the buffer held the only reference to the partial
        raise ValueError("hook failed")

    class Hook(functools.partial):  # a C-level callable: no Python frame keeps it alive
        def __del__(self) -> None:
            log.append("del")

    region = Region.create(S.new_name("h"), 1 << 16)
    try:
        mb = MessageBuffer.create(region, "mb", 64)
        mb.on_send_completed = Hook(fail)
        mb.send(b"x")
        assert log == ["unraisable", "del"], f"the hook was freed before its error was reported: {log}"
    finally:
        region.close()


def test_hook_error_reported_while_hook_alive(spawn: Any) -> None:
    _run_in_child(spawn, hook_drops_itself_then_raises)


# ---- the receive hook while another thread runs the send hook -----------------------------------


def test_receive_hook_fires_while_send_hook_runs_in_another_thread(region: Region) -> None:
    mb = MessageBuffer.create(region, "mb", 64)
    entered, release = threading.Event(), threading.Event()
    fired: list[str] = []

    def send_hook(buf: Any) -> None:
        entered.set()
        release.wait(S.GENEROUS)

    mb.on_send_completed = send_hook
    mb.on_receive_completed = lambda buf: fired.append("receive")
    writer = threading.Thread(target=mb.send, args=(b"x",))
    writer.start()
    try:
        assert entered.wait(S.GENEROUS)
        assert mb.receive(timeout=S.GENEROUS) == b"x"
    finally:
        release.set()
        writer.join(S.GENEROUS)
    assert fired == ["receive"], "sbRECEIVE_COMPLETED was skipped because another thread was in sbSEND_COMPLETED"


# ---- a Mapping cannot be re-initialised after close ---------------------------------------------


def ring_after_mapping_reinit() -> None:
    """Re-running Mapping.__init__ after close must not give old rings a new, smaller mapping."""
    region = Region.create(S.new_name("m"), 1 << 20)
    mb = MessageBuffer.create(region, "mb", 64)
    assert mb.offset >= 4096
    mapping = region.mapping
    region.close()
    fd = os.memfd_create("ampipc-review")
    try:
        os.ftruncate(fd, 4096)
        try:
            mapping.__init__(fd, 4096)
        except RuntimeError:
            pass
    finally:
        os.close(fd)
    try:
        mb.try_send(b"x")
    except RegionClosed:
        return
    raise AssertionError("a buffer of a closed region worked after its Mapping was re-initialised")


def test_mapping_reinit_after_close_is_refused(spawn: Any) -> None:
    _run_in_child(spawn, ring_after_mapping_reinit)


# ---- futex_wait checks its expected value like the other u32 operations --------------------------


def test_futex_wait_expected_out_of_range(region: Region) -> None:
    off = region.allocate("w", "word", 8)
    with pytest.raises(OverflowError):
        region.mapping.futex_wait(off, 1 << 32, timeout=0)


# ---- Ctrl-C inside a hook ------------------------------------------------------------------------


def ctrl_c_in_send_hook() -> None:
    """A KeyboardInterrupt raised in a hook is not swallowed: it reaches the caller after the send."""
    region = Region.create(S.new_name("k"), 1 << 16)
    try:
        mb = MessageBuffer.create(region, "mb", 64)

        def hook(buf: Any) -> None:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the hook ran (e.g. blocked in a send)

        mb.on_send_completed = hook
        interrupted = False
        try:
            mb.send(b"x")
            for _ in range(10_000):  # the interrupt, if pending, is raised at the latest here
                pass
        except KeyboardInterrupt:
            interrupted = True
        assert interrupted, "Ctrl-C during sbSEND_COMPLETED was swallowed"
        assert mb.try_receive() == b"x", "the completed send was lost"
    finally:
        region.close()


def test_ctrl_c_in_hook_reaches_the_caller(spawn: Any) -> None:
    _run_in_child(spawn, ctrl_c_in_send_hook)
