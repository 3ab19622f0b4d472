"""Type stubs for `ampipc._pool` (hand-written; keep in step with _pool.c)."""

from typing import Final

from typing_extensions import Buffer

OK: Final[int]
SHORT: Final[int]
MAGIC: Final[int]
NONCE: Final[int]
SLOT: Final[int]
LENGTH: Final[int]
SIZE: Final[int]
GENERATION: Final[int]
STATE: Final[int]
MISMATCH: Final[int]
RACE: Final[int]

class PoolCore:
    """The slot-ownership steps of one payload pool (see ampipc/services/pool.py for the protocol)."""

    def __init__(self, region: Buffer, base: int, table: int, slots: int, slot_size: int, data: int, nonce: int) -> None: ...
    def try_loan(self, pid: int, start: int, /) -> tuple[int, int] | None: ...
    def commit(self, slot: int, generation: int, pid: int, length: int, crc: int, /) -> bool: ...
    def uncommit(self, slot: int, generation: int, pid: int, start: int, /) -> bool: ...
    def free(self, slot: int, generation: int, pid: int, state: int, /) -> bool: ...
    def accept(
        self, descriptor: Buffer, crc: int, pid: int, start: int, /
    ) -> tuple[int, int, int, int, int, int, int]: ...
    def unaccept(self, slot: int, generation: int, pid: int, /) -> bool: ...
    def close(self) -> None: ...
