"""Child-process targets of the chip memory map tests (module level, so spawn can import them).

Each target attaches to a chip region by name as one core and puts one tuple on the result
queue saying what happened; it never raises (a failure is a result the test checks).
"""

from __future__ import annotations

from typing import Any

from ampipc import MessageBuffer, Region
from ampipc.errors import MemoryUnreachable

__all__ = ["attach_as_core"]

GENEROUS = 60.0


def attach_as_core(region_name: str, core: str, results: Any) -> None:
    """Attach as `core`. On success, read the object ``tx`` and report the placement and the chip
    address of ``tx`` as this process computes it; on refusal, report the exception's fields."""
    try:
        region = Region.attach(region_name, core=core)
    except MemoryUnreachable as e:
        results.put(("unreachable", e.core, e.memory, e.reason, str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(("error", repr(e)))
        return
    try:
        placement = region.placement
        assert placement is not None
        entry = region.lookup("tx")
        message = MessageBuffer.attach(region, "tx").receive(timeout=GENEROUS)
        results.put(("ok", placement.memory, region.core, region.chip_address(entry.offset), entry.offset,
                     region.slot_index is not None, message))
    except Exception as e:  # noqa: BLE001
        results.put(("error", repr(e)))
    finally:
        region.close()
