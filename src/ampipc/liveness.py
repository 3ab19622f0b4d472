"""Process liveness tokens.

A token is ``(pid, start_time)``: the pid and the process's start time in clock ticks since boot
(field 22 of ``/proc/<pid>/stat``). The pair survives pid reuse: a new process with the same pid
has another start time. A zombie (a dead child not yet reaped) counts as dead, which
``kill(pid, 0)`` would not tell.
"""

from __future__ import annotations

import os

__all__ = ["Token", "process_start_time", "is_alive", "current_token"]

Token = tuple[int, int]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    end = raw.rfind(b")")
    if end < 0:
        return None
    return raw[end + 2 :].decode("ascii", "replace").split()


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot, or None if there is no such process."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int = 0) -> bool:
    """True if `pid` runs (not a zombie) and, when `start_time` is given, started then."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return False
    if fields[0] in ("Z", "X", "x"):
        return False
    return start_time == 0 or int(fields[19]) == start_time


_current: Token | None = None


def current_token() -> Token:
    """This process's token (recomputed after a fork)."""
    global _current
    pid = os.getpid()
    if _current is None or _current[0] != pid:
        _current = (pid, process_start_time(pid) or 0)
    return _current
