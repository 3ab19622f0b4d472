"""The direct strategy: the writer wakes the reader's futex itself, with no interrupt hop.

Theory of operation
-------------------
Both cores are processes on one host, so the side that completes a send or receive can wake its
peer's futex in shared memory directly: this is the buffers' default behaviour (hook None), and the
fastest path (no system call when nobody waits). ``install`` only makes sure the local hooks are the
default; there is no shared state and no interrupt handler. It is the host-native baseline the other
strategies' hop costs are measured against.
"""

from __future__ import annotations

from .base import Strategy

__all__ = ["DirectStrategy"]


class DirectStrategy(Strategy):
    """Notification by direct futex wake (the buffers' default hooks)."""

    name = "direct"

    def install(self) -> None:
        self._restore_default_hooks()
        self.installed = True

