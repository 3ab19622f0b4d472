"""STM32H7 HAL and CMSIS names (HSEM, EXTI, NVIC, SEV/WFE) over the virtual hardware `ampipc.hw`.

Theory of operation
-------------------
On the chip each core's firmware calls the HAL without saying which core it is: the core is the
one executing. Here a process acts as a core, so `HAL_Init` binds this process (all its threads)
to one `ampipc.hw.Core`; every other call acts as that core. The HAL's return codes are kept
(``HAL_OK``, ``HAL_ERROR``), and so is the *weak function* convention: the interrupt handlers and
callbacks (``HAL_HSEM_FreeCallback``, ``HSEM1_IRQHandler``, ``EXTI0_IRQHandler``...) are module
attributes looked up when the interrupt runs, so ported code overrides them by assignment::

    from ampipc.compat import hal
    def HAL_HSEM_FreeCallback(SemMask: int) -> None: ...
    hal.HAL_HSEM_FreeCallback = HAL_HSEM_FreeCallback

``HAL_NVIC_EnableIRQ(HSEM1_IRQn)`` attaches the line's handler (running ``HSEM1_IRQHandler``, whose
default calls ``HAL_HSEM_IRQHandler``) with the priority given by ``HAL_NVIC_SetPriority`` and
starts this core's dispatcher (ISR context). Both ``HSEM1_IRQn`` (CM7) and ``HSEM2_IRQn`` (CM4)
name the HSEM line of the bound core, as each is only reachable from its own core on the chip.

Differences: an out-of-range id, mask or line raises ValueError instead of being masked into
range; ``__WFE`` takes an optional timeout in seconds (None: forever) and returns whether an event
was consumed; ``__disable_irq``/``__enable_irq`` nest (a per-core critical section).
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Final

from ..hw import IRQ_EXTI0, IRQ_EXTI1, IRQ_HSEM, IRQ_SEV, Core

__all__ = [
    "CM4_SEV_IRQHandler",
    "CM4_SEV_IRQn",
    "CM7_SEV_IRQHandler",
    "EXTI0_IRQHandler",
    "EXTI1_IRQHandler",
    "HSEM1_IRQHandler",
    "HSEM2_IRQHandler",
    "CM7_SEV_IRQn",
    "DISABLE",
    "ENABLE",
    "EXTI0_IRQn",
    "EXTI1_IRQn",
    "EXTI_LINE0",
    "EXTI_LINE1",
    "EXTI_MODE_EVT",
    "EXTI_MODE_IT",
    "HAL_BUSY",
    "HAL_ERROR",
    "HAL_EXTI_D1_ClearFlag",
    "HAL_EXTI_D1_EventInputConfig",
    "HAL_EXTI_D2_ClearFlag",
    "HAL_EXTI_D2_EventInputConfig",
    "HAL_EXTI_GenerateSWInterrupt",
    "HAL_HSEM_ActivateNotification",
    "HAL_HSEM_DeactivateNotification",
    "HAL_HSEM_FastTake",
    "HAL_HSEM_FreeCallback",
    "HAL_HSEM_GetClearKey",
    "HAL_HSEM_IRQHandler",
    "HAL_HSEM_IsSemTaken",
    "HAL_HSEM_Release",
    "HAL_HSEM_ReleaseAll",
    "HAL_HSEM_SetClearKey",
    "HAL_HSEM_Take",
    "HAL_Init",
    "HAL_NVIC_ClearPendingIRQ",
    "HAL_NVIC_DisableIRQ",
    "HAL_NVIC_EnableIRQ",
    "HAL_NVIC_GetPendingIRQ",
    "HAL_NVIC_SetPendingIRQ",
    "HAL_NVIC_SetPriority",
    "HAL_OK",
    "HAL_TIMEOUT",
    "HSEM1_IRQn",
    "HSEM2_IRQn",
    "HSEM_SEMID_TO_MASK",
    "HAL_DeInit",
    "__HAL_HSEM_CLEAR_FLAG",
    "__HAL_HSEM_GET_FLAG",
    "__SEV",
    "__WFE",
    "__disable_irq",
    "__enable_irq",
    "current_core",
]

HAL_OK: Final = 0
HAL_ERROR: Final = 1
HAL_BUSY: Final = 2
HAL_TIMEOUT: Final = 3
ENABLE: Final = 1
DISABLE: Final = 0

# IRQn_Type: the interrupt lines of ampipc.hw (each core has its own set of lines)
HSEM1_IRQn: Final = IRQ_HSEM
HSEM2_IRQn: Final = IRQ_HSEM
EXTI0_IRQn: Final = IRQ_EXTI0
EXTI1_IRQn: Final = IRQ_EXTI1
CM7_SEV_IRQn: Final = IRQ_SEV
CM4_SEV_IRQn: Final = IRQ_SEV

EXTI_LINE0: Final = 0
EXTI_LINE1: Final = 1
EXTI_MODE_IT: Final = 0x01
EXTI_MODE_EVT: Final = 0x02

_bound: Core | None = None
_priorities: dict[int, int] = {}
_masked = threading.local()  # per thread: the ExitStack of nested __disable_irq calls


def HSEM_SEMID_TO_MASK(SemID: int) -> int:
    """``__HAL_HSEM_SEMID_TO_MASK``: the notification mask bit of semaphore `SemID`."""
    if isinstance(SemID, bool) or not isinstance(SemID, int) or not 0 <= SemID < 32:
        raise ValueError(f"HSEM semaphore id must be 0..31, not {SemID!r}")
    return 1 << SemID


def HAL_Init(core: Core) -> int:
    """Bind this process to `core` (the core that runs this firmware); returns ``HAL_OK``."""
    global _bound
    if not isinstance(core, Core):
        raise TypeError(f"HAL_Init takes the ampipc.hw.Core this process plays, not {type(core).__name__}")
    _bound = core
    _priorities.clear()
    return HAL_OK


def HAL_DeInit() -> int:
    """Detach every handler `HAL_NVIC_EnableIRQ` attached and unbind the core; returns ``HAL_OK``."""
    global _bound
    core = _bound
    if core is not None:
        for line in (IRQ_HSEM, IRQ_EXTI0, IRQ_EXTI1, IRQ_SEV):
            if core._handler_for(line) is not None:
                core.detach_handler(line)
        core.hsem.set_free_callback(None)
    _bound = None
    return HAL_OK


def current_core() -> Core:
    """The core `HAL_Init` bound (RuntimeError before it)."""
    if _bound is None:
        raise RuntimeError("call HAL_Init(core) first: the HAL acts as the core this process plays")
    return _bound


# ---- HSEM -------------------------------------------------------------------------------------


def HAL_HSEM_Take(SemID: int, ProcessID: int) -> int:
    """2-step lock: ``HAL_OK`` if this core and `ProcessID` now hold the semaphore, else ``HAL_ERROR``."""
    return HAL_OK if current_core().hsem.take(SemID, ProcessID) else HAL_ERROR


def HAL_HSEM_FastTake(SemID: int) -> int:
    """1-step lock (process id 0): ``HAL_OK`` or ``HAL_ERROR``."""
    return HAL_OK if current_core().hsem.fast_take(SemID) else HAL_ERROR


def HAL_HSEM_IsSemTaken(SemID: int) -> int:
    """1 if the semaphore is locked (by anyone), else 0."""
    return 1 if current_core().hsem.is_taken(SemID) else 0


def HAL_HSEM_Release(SemID: int, ProcessID: int) -> None:
    """Unlock if this core and `ProcessID` own it (a free event), else nothing."""
    current_core().hsem.release(SemID, ProcessID)


def HAL_HSEM_ReleaseAll(Key: int, CoreID: int) -> None:
    """Free every semaphore of `CoreID` if `Key` matches the clear key."""
    current_core().hsem.release_all(Key, CoreID)


def HAL_HSEM_SetClearKey(Key: int) -> None:
    current_core().hsem.set_key(Key)


def HAL_HSEM_GetClearKey() -> int:
    return int(current_core().hsem.get_key())


def HAL_HSEM_ActivateNotification(SemMask: int) -> None:
    """Enable the free interrupt of the semaphores in `SemMask` on this core."""
    current_core().hsem.activate_notification(SemMask)


def HAL_HSEM_DeactivateNotification(SemMask: int) -> None:
    current_core().hsem.deactivate_notification(SemMask)


def __HAL_HSEM_CLEAR_FLAG(SemMask: int) -> None:
    current_core().hsem.clear_flag(SemMask)


def __HAL_HSEM_GET_FLAG(SemMask: int) -> int:
    """The raw free status (``CnISR``) bits of `SemMask`."""
    return int(current_core().hsem.isr) & SemMask


def HAL_HSEM_FreeCallback(SemMask: int) -> None:
    """Weak: called by `HAL_HSEM_IRQHandler` with the freed semaphores. Override by assignment."""


def HAL_HSEM_IRQHandler() -> None:
    """Take ``MISR``, disable those notifications, clear them, call ``HAL_HSEM_FreeCallback(mask)``."""
    hsem = current_core().hsem
    hsem.set_free_callback(_call_free_callback)
    hsem.irq_handler()


def _call_free_callback(mask: int) -> None:
    globals()["HAL_HSEM_FreeCallback"](mask)


# ---- EXTI and SEV -------------------------------------------------------------------------------


def _exti_config(target: str, EXTI_Line: int, EXTI_Mode: int, EXTI_EventInputConfig: int) -> None:
    if EXTI_Mode not in (EXTI_MODE_IT, EXTI_MODE_EVT, EXTI_MODE_IT | EXTI_MODE_EVT):
        raise ValueError(f"EXTI_Mode must be EXTI_MODE_IT or EXTI_MODE_EVT, not {EXTI_Mode!r}")
    if EXTI_EventInputConfig not in (ENABLE, DISABLE):
        raise ValueError(f"EXTI_EventInputConfig must be ENABLE or DISABLE, not {EXTI_EventInputConfig!r}")
    current_core().exti_enable(EXTI_Line, EXTI_EventInputConfig == ENABLE, target=target)


def HAL_EXTI_D1_EventInputConfig(EXTI_Line: int, EXTI_Mode: int, EXTI_EventInputConfig: int) -> None:
    """Enable or disable line `EXTI_Line` towards domain D1 (the CM7)."""
    _exti_config(current_core().hardware.cores[0].name, EXTI_Line, EXTI_Mode, EXTI_EventInputConfig)


def HAL_EXTI_D2_EventInputConfig(EXTI_Line: int, EXTI_Mode: int, EXTI_EventInputConfig: int) -> None:
    """Enable or disable line `EXTI_Line` towards domain D2 (the CM4)."""
    cores = current_core().hardware.cores
    _exti_config(cores[1 if len(cores) > 1 else 0].name, EXTI_Line, EXTI_Mode, EXTI_EventInputConfig)


def HAL_EXTI_GenerateSWInterrupt(EXTI_Line: int) -> None:
    """Raise line `EXTI_Line`'s interrupt on every core whose input for it is enabled."""
    current_core().generate_sw_interrupt(EXTI_Line)


def _exti_clear(EXTI_Line: int) -> None:
    if EXTI_Line not in (EXTI_LINE0, EXTI_LINE1):
        raise ValueError(f"EXTI_Line must be EXTI_LINE0 or EXTI_LINE1, not {EXTI_Line!r}")
    current_core().clear_pending((IRQ_EXTI0, IRQ_EXTI1)[EXTI_Line])


HAL_EXTI_D1_ClearFlag = _exti_clear
HAL_EXTI_D2_ClearFlag = _exti_clear


def __SEV() -> None:
    """CMSIS send-event: an event (and IRQ_SEV where unmasked) on every other core."""
    current_core().sev()


def __WFE(timeout: float | None = None) -> bool:
    """CMSIS wait-for-event; True if an event was consumed (False only at `timeout`)."""
    return bool(current_core().wfe(timeout))


def __disable_irq() -> None:
    """Mask this core's interrupts in this process (nestable; undone by `__enable_irq`)."""
    stack: list[ExitStack] = getattr(_masked, "stack", None) or []
    section = ExitStack()
    section.enter_context(current_core().critical_section())
    stack.append(section)
    _masked.stack = stack


def __enable_irq() -> None:
    """Undo the innermost `__disable_irq` of this thread (nothing if none)."""
    stack: list[ExitStack] | None = getattr(_masked, "stack", None)
    if stack:
        stack.pop().close()


# ---- NVIC -------------------------------------------------------------------------------------


def HSEM1_IRQHandler() -> None:
    """Weak: the CM7's HSEM interrupt; calls `HAL_HSEM_IRQHandler`."""
    HAL_HSEM_IRQHandler()


def HSEM2_IRQHandler() -> None:
    """Weak: the CM4's HSEM interrupt; calls `HAL_HSEM_IRQHandler`."""
    HAL_HSEM_IRQHandler()


def EXTI0_IRQHandler() -> None:
    """Weak: EXTI line 0's interrupt (override it)."""


def EXTI1_IRQHandler() -> None:
    """Weak: EXTI line 1's interrupt (override it)."""


def CM7_SEV_IRQHandler() -> None:
    """Weak: a SEV from another core (override it)."""


def CM4_SEV_IRQHandler() -> None:
    """Weak: a SEV from another core (override it)."""


def _handler_name(line: int) -> str:
    first = current_core().index == 0
    names = {
        IRQ_HSEM: "HSEM1_IRQHandler" if first else "HSEM2_IRQHandler",
        IRQ_EXTI0: "EXTI0_IRQHandler",
        IRQ_EXTI1: "EXTI1_IRQHandler",
        IRQ_SEV: "CM7_SEV_IRQHandler" if first else "CM4_SEV_IRQHandler",
    }
    if line not in names:
        raise ValueError(f"IRQn must be one of HSEM1_IRQn, HSEM2_IRQn, EXTI0_IRQn, EXTI1_IRQn, CMx_SEV_IRQn, not {line!r}")
    return names[line]


def HAL_NVIC_SetPriority(IRQn: int, PreemptPriority: int, SubPriority: int) -> None:
    """Priority of `IRQn` (lower runs first) for the next `HAL_NVIC_EnableIRQ`."""
    _handler_name(IRQn)
    for value in (PreemptPriority, SubPriority):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 15:
            raise ValueError(f"NVIC priorities are 0..15, not {value!r}")
    _priorities[IRQn] = PreemptPriority * 16 + SubPriority


def HAL_NVIC_EnableIRQ(IRQn: int) -> None:
    """Run the line's weak handler (``HSEM1_IRQHandler``...) in ISR context; starts the dispatcher."""
    name = _handler_name(IRQn)
    core = current_core()

    def run(line: int) -> None:
        globals()[name]()

    core.attach_handler(IRQn, run, priority=_priorities.get(IRQn, 15 * 16))
    core.start()


def HAL_NVIC_DisableIRQ(IRQn: int) -> None:
    _handler_name(IRQn)
    current_core().detach_handler(IRQn)


def HAL_NVIC_SetPendingIRQ(IRQn: int) -> None:
    current_core().raise_interrupt(IRQn)


def HAL_NVIC_GetPendingIRQ(IRQn: int) -> int:
    return 1 if current_core().is_pending(IRQn) else 0


def HAL_NVIC_ClearPendingIRQ(IRQn: int) -> None:
    current_core().clear_pending(IRQn)
