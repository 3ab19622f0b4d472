"""Type stubs for `ampipc._waitv` (hand-written; keep in step with _waitv.c)."""

from collections.abc import Sequence
from typing import Any, Final

KERNEL_MAX_WORDS: Final[int]
MAX_WORDS: Final[int]

def wait(words: Sequence[tuple[Any, int, int]], timeout: float | None = None, fallback: bool = False) -> int | None:
    """Sleep until a word is woken (its index), one differs from its expected value (-1), or the timeout (None)."""

def wait_rings(
    mapping: Any,
    rings: Sequence[tuple[int, int]],
    extra: Sequence[tuple[Any, int, int]] = (),
    timeout: float | None = None,
    fallback: bool = False,
    enabled: Any = None,
) -> list[tuple[int, int]]:
    """Announce, re-check and sleep (one slice) on many ring buffers of one mapping; the ready (index, mask)."""

def wake(buffer: Any, offset: int, /) -> int: ...
def load(buffer: Any, offset: int, /) -> int: ...
def fetch_add(buffer: Any, offset: int, value: int, /) -> int: ...
def available() -> bool: ...
