"""Type stubs for `ampipc._waitv` (hand-written; keep in step with _waitv.c)."""

from collections.abc import Sequence
from typing import Any, Final

KERNEL_MAX_WORDS: Final[int]
MAX_WORDS: Final[int]

def wait(words: Sequence[tuple[Any, int, int]], timeout: float | None = None, fallback: bool = False) -> int | None:
    """Sleep until a word is woken (its index), one differs from its expected value (-1), or the timeout (None)."""

def wake(buffer: Any, offset: int, /) -> int: ...
def load(buffer: Any, offset: int, /) -> int: ...
def fetch_add(buffer: Any, offset: int, value: int, /) -> int: ...
def available() -> bool: ...
