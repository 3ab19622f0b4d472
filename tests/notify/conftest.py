from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ampipc import Region

_counter = itertools.count()


@pytest.fixture
def region_name() -> str:
    return f"ampipc-test-notify-{os.getpid()}-{next(_counter)}"


@pytest.fixture
def region(region_name: str) -> Iterator[Region]:
    r = Region.create(region_name, 1 << 20)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Start a spawned child; returns (process, results queue). Children are always reaped."""
    ctx = multiprocessing.get_context("spawn")
    children: list[Any] = []
    queues: list[Any] = []

    def start(target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
        q = ctx.Queue()
        p = ctx.Process(target=target, args=(*args, q), daemon=True)
        p.start()
        children.append(p)
        queues.append(q)
        return p, q

    try:
        yield start
    finally:
        for p in children:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
            p.join(5)
        for q in queues:
            q.close()
            q.join_thread()
