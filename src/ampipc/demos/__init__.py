"""The seed examples as demos: each runs the CM7 here and the CM4 in a child process.

`DEMOS` maps a demo's command-line name to its ``run(*, quiet=False) -> int`` (0 when its counts
prove it worked).
"""

from __future__ import annotations

from collections.abc import Callable

from . import boot_sync, message_buffer, multi, sev, toggle

__all__ = ["DEMOS"]

DEMOS: dict[str, Callable[..., int]] = {
    "boot-sync": boot_sync.run,
    "message-buffer": message_buffer.run,
    "multi": multi.run,
    "toggle": toggle.run,
    "sev": sev.run,
}
