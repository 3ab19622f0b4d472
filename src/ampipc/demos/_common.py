"""What every demo shares: a timeline printer, unique region names, and running the CM4 as a child.

Theory of operation
-------------------
The calling process is the CM7; the CM4 is a child started with the multiprocessing *spawn*
context (a fresh interpreter, as a core runs its own image). Both print timeline lines stamped with
milliseconds since a common origin (CLOCK_MONOTONIC is system-wide, so the origin is passed to the
child). The child reports its counts through a queue; `run_pair` always closes the region and
terminates, kills and joins the child, whatever happens.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..hw import Hardware
from ..hw.boot import cm4_wait_for_boot
from ..region import Region

__all__ = ["CHILD_TIMEOUT", "Timeline", "cm4_booted", "print_summary", "region_name", "run_pair"]

CHILD_TIMEOUT = 60.0
_counter = itertools.count()


class Timeline:
    """Prints ``[  12.345 ms] CM7  what happened`` lines (nothing when quiet)."""

    def __init__(self, core: str, origin: float, quiet: bool) -> None:
        self.core = core
        self.origin = origin
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            ms = (time.monotonic() - self.origin) * 1000.0
            try:
                sys.stdout.write(f"[{ms:10.3f} ms] {self.core:<4} {message}\n")
                sys.stdout.flush()
            except BrokenPipeError:
                # the reader of the output went away (``| head``): the cores go on, the timeline stops;
                # the summary's own write then reports the closed pipe once, in the CM7
                self.quiet = True


def region_name(demo: str) -> str:
    """A region name no other run uses."""
    return f"ampipc-demo-{demo}-{os.getpid()}-{next(_counter)}"


ChildEntry = Callable[[str, float, bool, Any], None]


def run_pair(
    demo: str,
    size: int,
    cm7: Callable[[Region, Timeline, Callable[[], None]], dict[str, Any]],
    cm4: ChildEntry,
    *,
    quiet: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create the region, run `cm7` here and `cm4` in a spawned child; return both sides' counts.

    `cm7(region, timeline, start_cm4)` must call ``start_cm4()`` when the CM4 should start.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    origin = time.monotonic()
    timeline = Timeline("CM7", origin, quiet)
    region = Region.create(region_name(demo), size)
    child = ctx.Process(target=cm4, args=(region.name, origin, quiet, results), name=f"{demo}-CM4", daemon=True)
    try:
        cm7_counts = cm7(region, timeline, child.start)
        if child.pid is None:
            raise RuntimeError("the CM7 side never started the CM4")
        cm4_counts: dict[str, Any] = results.get(timeout=CHILD_TIMEOUT)
        child.join(CHILD_TIMEOUT)
        cm4_counts["exit code"] = child.exitcode
        return cm7_counts, cm4_counts
    finally:
        if child.pid is not None:
            if child.is_alive():
                child.terminate()
                child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)
        results.close()
        results.join_thread()
        region.close()


@contextmanager
def cm4_booted(region_name: str, counts: dict[str, Any], results: Any) -> Iterator[Hardware]:
    """The CM4's frame: wait for the CM7's boot release and attach; always report `counts` at the end.

    An error in the body is recorded as ``counts["error"]`` for the CM7 to print, not raised: the
    child's exit code stays meaningful and the CM7 never waits for a report that does not come.
    """
    try:
        hw = cm4_wait_for_boot(region_name, timeout=CHILD_TIMEOUT)
        try:
            yield hw
        finally:
            hw.close()
            hw.region.close()
    except BaseException as e:  # noqa: BLE001 - reported to the CM7, which prints it
        counts["error"] = repr(e)
    results.put(counts)


def print_summary(title: str, rows: Mapping[str, object], ok: bool, *, quiet: bool) -> None:
    """The closing table of counts, and the verdict: printed quiet or not (quiet drops only the timeline)."""
    width = max(len(k) for k in rows)
    print(f"{'' if quiet else chr(10)}{title} summary")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")
    print(f"  {'result':<{width}}  {'OK' if ok else 'FAILED'}")
    sys.stdout.flush()
