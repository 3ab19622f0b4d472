"""The HAL names against the native HSEM model, cm_ipc's return codes, and ST's ported sample program."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ampipc import Region
from ampipc.compat import cm_ipc, freertos, hal
from ampipc.compat.examples import cm_ipc_sample
from ampipc.hw import Hardware

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def hw(region: Region) -> Iterator[Hardware]:
    with Hardware.create(region) as hardware:
        yield hardware
    hal.HAL_DeInit()


def test_hal_needs_a_core() -> None:
    hal.HAL_DeInit()
    with pytest.raises(RuntimeError, match="HAL_Init"):
        hal.HAL_HSEM_FastTake(0)


@pytest.mark.parametrize("api", ["native", "hal"])
def test_hsem_take_and_release(api: str, hw: Hardware) -> None:
    """The same lock sequence, through the native Hsem and through the HAL, gives the same states."""
    cm7, cm4 = hw.core("CM7").hsem, hw.core("CM4").hsem
    hal.HAL_Init(hw.core("CM7"))
    if api == "hal":
        take: Any = lambda sem, proc: hal.HAL_HSEM_Take(sem, proc) == hal.HAL_OK  # noqa: E731
        fast: Any = lambda sem: hal.HAL_HSEM_FastTake(sem) == hal.HAL_OK  # noqa: E731
        release: Any = hal.HAL_HSEM_Release
        taken: Any = lambda sem: hal.HAL_HSEM_IsSemTaken(sem) == 1  # noqa: E731
    else:
        take, fast, release, taken = cm7.take, cm7.fast_take, cm7.release, cm7.is_taken
    assert take(3, 12)
    assert take(3, 12)  # the owner takes again: the read-back matches
    assert not take(3, 13)
    assert not cm4.take(3, 12)
    release(3, 13)  # not the owner: nothing happens
    assert taken(3) and cm7.owner(3) == (3, 12)
    release(3, 12)
    assert not taken(3)
    assert fast(4) and cm7.owner(4) == (3, 0)
    assert not cm4.fast_take(4)


def test_hal_release_all_and_keys(hw: Hardware) -> None:
    hal.HAL_Init(hw.core("CM4"))
    assert hal.HAL_HSEM_Take(1, 1) == hal.HAL_OK and hal.HAL_HSEM_Take(2, 9) == hal.HAL_OK
    hal.HAL_HSEM_SetClearKey(0x1234)
    assert hal.HAL_HSEM_GetClearKey() == 0x1234
    hal.HAL_HSEM_ReleaseAll(0x9999, 1)  # wrong key
    assert hal.HAL_HSEM_IsSemTaken(1) == 1
    hal.HAL_HSEM_ReleaseAll(0x1234, 1)
    assert hal.HAL_HSEM_IsSemTaken(1) == 0 and hal.HAL_HSEM_IsSemTaken(2) == 0
    assert hal.__HAL_HSEM_GET_FLAG(0b110) == 0b110  # both frees set the status bits
    hal.__HAL_HSEM_CLEAR_FLAG(0b110)
    assert hal.__HAL_HSEM_GET_FLAG(0b110) == 0
    with pytest.raises(ValueError):
        hal.HAL_HSEM_Take(32, 0)


def test_free_callback_override_runs_in_the_isr(hw: Hardware) -> None:
    hal.HAL_Init(hw.core("CM7"))
    masks: list[tuple[int, bool]] = []
    seen = threading.Event()

    def HAL_HSEM_FreeCallback(SemMask: int) -> None:
        masks.append((SemMask, hw.core("CM7").in_isr()))
        seen.set()

    weak = hal.HAL_HSEM_FreeCallback
    hal.HAL_HSEM_FreeCallback = HAL_HSEM_FreeCallback
    try:
        hal.HAL_HSEM_ActivateNotification(hal.HSEM_SEMID_TO_MASK(9))
        hal.HAL_NVIC_SetPriority(hal.HSEM1_IRQn, 5, 0)
        hal.HAL_NVIC_EnableIRQ(hal.HSEM1_IRQn)
        cm4 = hw.core("CM4").hsem
        assert cm4.take(9, 12)
        cm4.release(9, 12)  # the other core's "take then release" pulse
        assert seen.wait(30)
        assert masks == [(1 << 9, True)]
        assert hw.core("CM7").hsem.ier & (1 << 9) == 0  # the IRQ handler disabled it, as the HAL does
    finally:
        hal.HAL_HSEM_FreeCallback = weak


def test_exti_software_interrupt_reaches_the_enabled_core(hw: Hardware) -> None:
    hal.HAL_Init(hw.core("CM4"))
    fired = threading.Event()
    weak = hal.EXTI0_IRQHandler
    hal.EXTI0_IRQHandler = fired.set
    try:
        hal.HAL_EXTI_D2_EventInputConfig(hal.EXTI_LINE0, hal.EXTI_MODE_IT, hal.ENABLE)
        assert hw.core("CM4").exti_enabled(0) and not hw.core("CM7").exti_enabled(0)
        hal.HAL_NVIC_EnableIRQ(hal.EXTI0_IRQn)
        hal.HAL_EXTI_GenerateSWInterrupt(hal.EXTI_LINE0)
        assert fired.wait(30)
        hal.HAL_EXTI_D2_EventInputConfig(hal.EXTI_LINE0, hal.EXTI_MODE_IT, hal.DISABLE)
        assert not hw.core("CM4").exti_enabled(0)
        with pytest.raises(ValueError):
            hal.HAL_EXTI_D1_EventInputConfig(hal.EXTI_LINE0, 7, hal.ENABLE)
    finally:
        hal.EXTI0_IRQHandler = weak


def test_cm_ipc_return_codes(region: Region) -> None:
    cm4, cm7 = cm_ipc.CmIpc(), cm_ipc.CmIpc()
    with Hardware.create(region) as hw:
        assert cm7.ipc_init(region, "CM7", hardware=hw, open_timeout=0.05) == -1  # nothing laid out yet
        assert cm4.ipc_init(region, "CM4", channels=2, hardware=hw) == 0
        assert cm7.ipc_init(region, "CM7", hardware=hw) == 0
        try:
            assert cm4.ipc_start() == 0 and cm7.ipc_start() == 0
            msg = bytearray(36)
            assert cm7.ipc_recvmsg(msg, 36, 0) == 0  # nothing there: 0 at the timeout
            assert cm4.ipc_sendmsg(b"hello from the CM4", 18) == 18
            assert cm7.ipc_recvmsg(msg, 4, freertos.portMAX_DELAY) == 0  # too small: it stays queued
            assert cm7.ipc_recvmsg(msg, 36, -1) == 18 and msg[:18] == b"hello from the CM4"
            assert cm7.ipc_send(1, b"x" * 700, 700, 0) == 0  # can never fit a 640-byte buffer
            sent = 0
            while cm7.ipc_sendmsg_irq(1, b"y" * 36, 36) == 36:
                sent += 1
            assert sent == 16  # ST's TASK_MSG_BUFFER_SIZE: exactly 16 messages of 36 bytes
            assert cm4.ipc_receive(1, msg, 36, 0) == 36 and msg == b"y" * 36
        finally:
            cm7.ipc_deinit()
            cm4.ipc_deinit()


def test_the_ported_cm_ipc_sample_runs_on_two_processes(capfd: pytest.CaptureFixture[str]) -> None:
    assert cm_ipc_sample.run(quiet=True, frames=100) == 0
    out = capfd.readouterr().out
    assert re.search(r"frames answered right\s+100 of 100", out)
    assert re.search(r"camera-ready messages \(sent from the ISR\)\s+10 of 10", out)
    assert re.search(r"CM4 commands served\s+102", out)


def test_the_sample_uses_only_the_firmware_names() -> None:
    """In the two main functions every ``hal.X``/``cm_ipc.X``/``freertos.X`` is a firmware name of that
    module, and the chip is used only to pick the core (``hw.core``)."""
    import ast
    import inspect

    exported = {"hal": set(hal.__all__),
                "cm_ipc": set(cm_ipc.__all__), "freertos": set(freertos.__all__)}
    for function in (cm_ipc_sample.cm4_main, cm_ipc_sample.cm7_main):
        used: dict[str, set[str]] = {}
        for node in ast.walk(ast.parse(inspect.getsource(function))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                used.setdefault(node.value.id, set()).add(node.attr)
        assert used.get("hw") == {"core"}
        assert used.get("hal") and used.get("cm_ipc")
        for module, names in exported.items():
            assert used.get(module, set()) <= names, (module, used.get(module, set()) - names)


def test_cmsis_irq_masking_and_events(hw: Hardware) -> None:
    hal.HAL_Init(hw.core("CM4"))
    ran = threading.Event()
    weak = hal.CM4_SEV_IRQHandler
    hal.CM4_SEV_IRQHandler = ran.set
    try:
        hw.core("CM4").set_sev_interrupt_mask(True)
        hal.HAL_NVIC_EnableIRQ(hal.CM4_SEV_IRQn)
        hal.__disable_irq()
        hal.__disable_irq()  # nested
        hw.core("CM7").sev()  # the other core's SEV: an event and, unmasked, the SEV interrupt
        assert hal.HAL_NVIC_GetPendingIRQ(hal.CM4_SEV_IRQn) == 1  # stays pending while masked
        assert not ran.is_set()  # masked: the handler cannot run while the section is held
        hal.__enable_irq()
        assert not ran.is_set()  # still one level of masking
        hal.__enable_irq()
        assert ran.wait(30)
        assert hal.__WFE(timeout=30) is True  # the event latched by the same SEV
        assert hal.__WFE(timeout=0) is False
        hal.__SEV()  # from the CM4 to the CM7
        assert hw.core("CM7").wfe(30)
    finally:
        hal.CM4_SEV_IRQHandler = weak
