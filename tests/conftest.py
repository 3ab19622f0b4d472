"""Shared fixtures and the leak guard of the whole ampipc test suite.

Leak guard
----------
The run fails (exit status 1, with a report naming the test that created the leak) if, at the end
of the session, this pytest process left behind

* a shared-memory segment in ``/dev/shm`` whose name starts with ``ampipc-test-<pytest pid>-``,
  or any new ``ampipc*`` segment whose region header names as its creator this process or one of
  the child processes seen during the run (several suites may run at the same time on one
  machine: segments of other sessions are left alone);
* a child process (``multiprocessing.active_children()`` and ``/proc/<pid>/task/*/children``; the
  multiprocessing resource tracker and forkserver, which live as long as the interpreter, are
  allowed).

Whatever leaked is reported, then cleaned up (unlinked, killed), so one bad run does not poison
the next.

Fixtures for every test folder
------------------------------
``unique_name``
    A callable: ``unique_name()`` returns a fresh ``ampipc-test-<pid>-<counter>`` name (at most
    31 characters), unique in this process; ``unique_name("x")`` adds a short tag.
``make_region``
    A factory: ``make_region(size=1 << 20, **create_kwargs)`` creates a `Region` with a unique
    name; every region it made is closed and unlinked at teardown, even if the test failed.
``region``
    One 1 MiB region made by ``make_region``.
``spawn``
    A `Spawner`: ``spawn(target, *args, **kwargs)`` starts ``target`` (a function importable at
    module level) in a ``multiprocessing.get_context("spawn")`` process and returns the
    `multiprocessing.Process`. ``spawn.ctx`` is the spawn context (for queues and events),
    ``spawn.join(proc, timeout=60)`` joins one child and returns its exit code (failing the test
    if it is still running). At teardown every child is terminated, then killed, and joined.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ampipc import Region

__all__ = ["Spawner", "make_unique_name"]

SHM_DIR = "/dev/shm"
TEST_PREFIX = "ampipc-test-"
_REGION_MAGIC = 0x52504D41
_SESSION_PID = os.getpid()
_name_counter = itertools.count()

# Every child pid observed during the run: a segment created by one of them belongs to this run.
_session_pids: set[int] = {_SESSION_PID}
# Segment name -> the test during which it first appeared (to name the culprit of a leak).
_first_seen_in: dict[str, str] = {}
_segments_at_start: set[str] = set()


def make_unique_name(tag: str = "") -> str:
    """A fresh region name ``ampipc-test-<pid>-<tag><counter>``, unique within this process."""
    name = f"{TEST_PREFIX}{os.getpid()}-{tag}{next(_name_counter)}"
    if len(name) > 31:
        raise ValueError(f"test region name {name!r} is longer than 31 characters: use a shorter tag")
    return name


# ---- leak detection -------------------------------------------------------------------------


def _ampipc_segments() -> set[str]:
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith("ampipc")}
    except FileNotFoundError:
        return set()


def _creator_pid(name: str) -> int | None:
    """The creator pid recorded in the segment's region header, or None if it has none."""
    try:
        with open(os.path.join(SHM_DIR, name), "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20:
        return None
    magic, _version, _size, creator = struct.unpack("<IIQI", head)
    return creator if magic == _REGION_MAGIC else None


def _owned_by_this_run(name: str) -> bool:
    if name.startswith(f"{TEST_PREFIX}{_SESSION_PID}-"):
        return True
    return name not in _segments_at_start and _creator_pid(name) in _session_pids


def _tolerated_children() -> set[int]:
    """Helper processes multiprocessing keeps for the interpreter's lifetime."""
    pids: set[int] = set()
    try:
        from multiprocessing import resource_tracker

        pid = getattr(resource_tracker._resource_tracker, "_pid", None)
        if pid:
            pids.add(pid)
    except ImportError:
        pass
    try:
        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid:
            pids.add(pid)
    except ImportError:
        pass
    return pids


def _child_pids() -> set[int]:
    pids = {p.pid for p in multiprocessing.active_children() if p.pid is not None}
    task_dir = f"/proc/{os.getpid()}/task"
    try:
        tasks = os.listdir(task_dir)
    except FileNotFoundError:
        tasks = []
    for tid in tasks:
        try:
            with open(f"{task_dir}/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids - _tolerated_children()


def _describe_process(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"pid {pid}: {cmd[:160]}"


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


def pytest_sessionstart(session: pytest.Session) -> None:
    _segments_at_start.update(_ampipc_segments())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    before = _ampipc_segments()
    yield
    _session_pids.update(_child_pids())
    for name in _ampipc_segments() - before:
        _first_seen_in.setdefault(name, item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems: list[str] = []
    children = _child_pids()
    for pid in sorted(children):
        problems.append(f"child process left running: {_describe_process(pid)}")
    # A child killed only now may still be creating a segment: reap children first.
    for pid in children:
        _kill_and_reap(pid)
    for name in sorted(_ampipc_segments()):
        if _owned_by_this_run(name):
            origin = _first_seen_in.get(name, "unknown test")
            problems.append(f"shared-memory segment left behind: /dev/shm/{name} (created during {origin})")
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except OSError:
                pass
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "\n".join(["", "ampipc leak guard: the run left resources behind:", *problems, ""])
        if reporter is not None:
            reporter.write_line(text, red=True, bold=True)
        else:
            print(text)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """``unique_name(tag="")`` -> a fresh ``ampipc-test-<pid>-<tag><n>`` region name."""
    return make_unique_name


@pytest.fixture
def make_region() -> Iterator[Callable[..., Region]]:
    """A factory of regions with unique names, all closed and unlinked at teardown."""
    made: list[Region] = []

    def factory(size: int = 1 << 20, **kwargs: Any) -> Region:
        region = Region.create(make_unique_name(), size, **kwargs)
        made.append(region)
        return region

    try:
        yield factory
    finally:
        for region in made:
            try:
                region.close()
            finally:
                region.unlink()


@pytest.fixture
def region(make_region: Callable[..., Region]) -> Region:
    """A fresh 1 MiB region (closed and unlinked at teardown)."""
    return make_region()


class Spawner:
    """Starts functions in spawn-context processes and always reaps them (see the module doc)."""

    def __init__(self) -> None:
        self.ctx: multiprocessing.context.SpawnContext = multiprocessing.get_context("spawn")
        self.children: list[multiprocessing.process.BaseProcess] = []

    def __call__(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:
        proc = self.ctx.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        proc.start()
        self.children.append(proc)
        if proc.pid is not None:
            _session_pids.add(proc.pid)
        return proc

    def join(self, proc: multiprocessing.process.BaseProcess, timeout: float = 60.0) -> int:
        """Join `proc`; fail the test if it is still running after `timeout` seconds."""
        proc.join(timeout)
        if proc.exitcode is None:
            pytest.fail(f"child process {proc.name} (pid {proc.pid}) still runs after {timeout} s")
        return proc.exitcode

    def reap(self) -> None:
        for proc in self.children:
            if proc.exitcode is None:
                proc.terminate()
        for proc in self.children:
            proc.join(5)
            if proc.exitcode is None:
                proc.kill()
                proc.join(10)
        for proc in self.children:
            try:
                proc.close()
            except ValueError:
                pass  # still running after SIGKILL: the session leak guard reports it


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """A `Spawner` whose children are terminated, killed and joined at teardown."""
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.reap()
