"""Hardware semaphores contended from two processes: exactly one taker wins each time."""

from __future__ import annotations

from typing import Any

import pytest

from ampipc import Region
from ampipc.hw import Hardware

from ._support import READY, START, VIOLATIONS, Words, contention_worker

ITERATIONS = 4000
SEMS = [1, 2, 3]


@pytest.mark.parametrize(
    ("mode", "takers"),
    [
        ("2-step, two cores", [("CM7", 12), ("CM4", 12)]),
        ("2-step, one core, two process ids", [("CM7", 1), ("CM7", 2)]),
        ("1-step, two cores", [("CM7", 0), ("CM4", 0)]),
    ],
)
def test_two_processes_hammering_the_same_semaphores(
    region: Region, spawn: Any, mode: str, takers: list[tuple[str, int]]
) -> None:
    hw = Hardware.create(region)
    words = Words.create(region)
    fast = mode.startswith("1-step")
    children = [
        spawn(contention_worker, region.name, core, proc, ITERATIONS, SEMS, fast) for core, proc in takers
    ]
    words.wait_for(READY, len(children))
    words.set_and_wake(START, 1)
    for child in children:
        assert spawn.join(child) == 0
    assert words.load(VIOLATIONS) == 0, "two takers were inside the same semaphore at once"
    total = sum(words.load(8 * sem) for sem in SEMS)
    assert total == ITERATIONS * len(children), "a protected increment was lost"
    for sem in SEMS:
        expected = sum(1 for i in range(ITERATIONS) if SEMS[(i // 64) % len(SEMS)] == sem) * len(children)
        assert words.load(8 * sem) == expected, f"HSEM {sem}: a protected increment was lost"
        assert not hw.core("CM7").hsem.is_taken(sem)
    assert hw.core("CM4").hsem.isr == sum(1 << s for s in SEMS), "every release was a free event"
    hw.close()
