"""Type stubs for the C engine `ampipc._dma` (hand-written; keep in step with _dma.c)."""

from typing import Final

from typing_extensions import Buffer

MAX_CHANNELS: Final[int]
REGS_STRIDE: Final[int]
STATE_QUEUED: Final[int]
STATE_RUNNING: Final[int]
STATE_DONE: Final[int]
STATE_ERROR: Final[int]
ERROR_NONE: Final[int]
ERROR_SOURCE_BOUNDS: Final[int]
ERROR_DESTINATION_BOUNDS: Final[int]
ERROR_ABORTED: Final[int]

class Transfer:
    """One queued transfer; finished when `state` is STATE_DONE or STATE_ERROR."""

    @property
    def state(self) -> int: ...
    @property
    def error(self) -> int | None: ...
    @property
    def channel(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def times_ns(self) -> tuple[int, int, int] | None: ...
    def wait(self, timeout: float | None = None) -> bool: ...

class Engine:
    """A worker thread that copies without the GIL, confined to a window of a region."""

    def __init__(self, region: Buffer, window_lo: int, window_hi: int, regs: int, channels: int) -> None: ...
    @property
    def queued(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def configure(
        self, channel: int, pending_off: int, raised_off: int, tc_line: int, te_line: int, ht_line: int = -1, /
    ) -> None: ...
    def submit(
        self, channel: int, priority: int, src: Buffer | None, src_off: int, dst: Buffer | None, dst_off: int,
        length: int, /,
    ) -> Transfer: ...
    def suspend(self, on: bool, /) -> None: ...
    def reap(self) -> int: ...
    def close(self) -> None: ...
