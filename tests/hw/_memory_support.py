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


def custom_chip(name: str) -> Any:
    """A small dual-core part for the register_chip tests: one shared SRAM both cores reach."""
    from ampipc.hw import memory as M

    both = {"CM7": M.Access.CACHEABLE, "CM4": M.Access.DIRECT}
    return M.ChipInfo(name, ("CM7", "CM4"), (M.MemoryInfo("SHARED", 0x10000000, 32 * 1024, M.Domain.D3, both),))


def attach_custom_chip(region_name: str, chip: str, register: bool, results: Any) -> None:
    """Attach as the CM4 to a region on the custom chip `chip`, registering its table first or not."""
    from ampipc.errors import IncompatibleRegion
    from ampipc.hw import memory as M

    if register:
        M.register_chip(custom_chip(chip))
    try:
        with Region.attach(region_name, core="CM4") as region:
            placement = region.placement
            assert placement is not None
            results.put(("ok", placement.chip, placement.memory, region.chip_address(0)))
    except IncompatibleRegion as e:
        results.put(("incompatible", str(e)))
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(("error", repr(e)))
