"""ST's STIPC cm_ipc sample, ported: the CM7 drives a CM4 "firmware" with ``struct ipc_msg`` commands.

Theory of operation
-------------------
The two ``main`` functions below are written with the firmware names only (`ampipc.compat.hal`,
`ampipc.compat.cm_ipc`, `ampipc.compat.freertos`), in the order the C firmware calls them; what
is not firmware (creating the shared region and the chip, starting the second core's process) is
in `run`.

- CM4 (creates the buffers, as in STIPC): ``HAL_Init``, ``ipc_init``; it enables EXTI line 1 on
  its own domain with an ``EXTI1_IRQHandler`` that reports "camera ready" with
  ``ipc_sendmsg_irq``; it signals "buffers ready" to the CM7 by taking and releasing
  ``HSEM_SYNC_ID``; then it serves commands: ``IPC_CTRL_SELECT_FIRMWARE`` (answered with
  ``IPC_CTRL_FIRMWARE_STATUS`` = ``IPC_OK``), ``IPC_COMMAND_RENDER_FRAME`` (it renders one
  fractal point and answers ``IPC_COMMAND_FRAME_ACK`` with the result; every tenth frame it also
  raises its EXTI line 1) and ``IPC_CAMERA_SHUTDOWN``.
- CM7: ``HAL_Init``, notification on ``HSEM_SYNC_ID`` with a ``HAL_HSEM_FreeCallback`` that sets
  a flag, waits for it, ``ipc_init`` (attach) and ``ipc_start``, selects the firmware, sends the
  frames and checks every answer against its own rendering, then collects the ISR messages.

``struct ipc_msg`` is ST's: ``uint32 command, arg1..arg6; int32 MotionX, MotionY`` (36 bytes).
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from ...hw import Hardware
from ...region import Region
from .. import cm_ipc, freertos, hal

__all__ = ["FRAMES", "IPC_MSG", "render_point", "run"]

IPC_COMMAND_RENDER_FRAME = 1
IPC_COMMAND_FRAME_ACK = 2
IPC_CAMERA_READY = 4
IPC_CAMERA_SHUTDOWN = 8
IPC_CTRL_SELECT_FIRMWARE = 10
IPC_CTRL_FIRMWARE_STATUS = 11
IPC_FRACTAL_FIRMWARE_ID = 1 << 16
IPC_OK = 0
HSEM_SYNC_ID = 7
HSEM_PROCESS = 12
CAMERA_CHANNEL = 1

IPC_MSG = struct.Struct("<7I2i")  # struct ipc_msg
FRAMES = 200
_MAX_ITER = 64
_TIMEOUT_MS = 60_000


def render_point(frame: int) -> int:
    """The fractal firmware's work for one frame: escape iterations of a Mandelbrot point."""
    cr = -2.0 + 2.5 * ((frame * 37) % 101) / 100.0
    ci = -1.25 + 2.5 * ((frame * 53) % 97) / 96.0
    zr = zi = 0.0
    for n in range(_MAX_ITER):
        zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
        if zr * zr + zi * zi > 4.0:
            return n
    return _MAX_ITER


def _msg(command: int, *args: int) -> bytes:
    fields = list(args) + [0] * (8 - len(args))
    return IPC_MSG.pack(command, *fields)


def cm4_main(region: Region, hw: Hardware) -> dict[str, int]:
    """The CM4 firmware."""
    counts = {"frames rendered": 0, "camera ready sent": 0, "commands": 0}
    hal.HAL_Init(hw.core("CM4"))
    if cm_ipc.ipc_init(region, "CM4", channels=2) != 0:
        raise RuntimeError("ipc_init failed")
    cm_ipc.ipc_start()

    camera_done = threading.Event()

    def EXTI1_IRQHandler() -> None:
        hal.HAL_EXTI_D2_ClearFlag(hal.EXTI_LINE1)
        if cm_ipc.ipc_sendmsg_irq(CAMERA_CHANNEL, _msg(IPC_CAMERA_READY), IPC_MSG.size) == IPC_MSG.size:
            counts["camera ready sent"] += 1
        camera_done.set()

    hal.EXTI1_IRQHandler = EXTI1_IRQHandler  # overrides the weak handler
    hal.HAL_EXTI_D2_EventInputConfig(hal.EXTI_LINE1, hal.EXTI_MODE_IT, hal.ENABLE)
    hal.HAL_NVIC_SetPriority(hal.EXTI1_IRQn, 5, 0)
    hal.HAL_NVIC_EnableIRQ(hal.EXTI1_IRQn)
    if hal.HAL_HSEM_Take(HSEM_SYNC_ID, HSEM_PROCESS) == hal.HAL_OK:  # "the buffers are ready"
        hal.HAL_HSEM_Release(HSEM_SYNC_ID, HSEM_PROCESS)
    msg = bytearray(IPC_MSG.size)
    try:
        while True:
            if cm_ipc.ipc_recvmsg(msg, IPC_MSG.size, freertos.pdMS_TO_TICKS(_TIMEOUT_MS)) != IPC_MSG.size:
                raise RuntimeError("no command from the CM7")
            counts["commands"] += 1
            command, arg1, *_ = IPC_MSG.unpack(msg)
            if command == IPC_CTRL_SELECT_FIRMWARE:
                status = IPC_OK if arg1 == IPC_FRACTAL_FIRMWARE_ID else 2
                cm_ipc.ipc_sendmsg(_msg(IPC_CTRL_FIRMWARE_STATUS, status), IPC_MSG.size)
            elif command == IPC_COMMAND_RENDER_FRAME:
                cm_ipc.ipc_sendmsg(_msg(IPC_COMMAND_FRAME_ACK, arg1, render_point(arg1)), IPC_MSG.size)
                counts["frames rendered"] += 1
                if arg1 % 10 == 9:
                    # a pending line merges with a new raise (as on the NVIC): one camera event at a time
                    camera_done.clear()
                    hal.HAL_EXTI_GenerateSWInterrupt(hal.EXTI_LINE1)
                    if not camera_done.wait(_TIMEOUT_MS / 1000):
                        raise RuntimeError("the EXTI line 1 handler never ran")
            elif command == IPC_CAMERA_SHUTDOWN:
                cm_ipc.ipc_sendmsg(_msg(IPC_CAMERA_SHUTDOWN), IPC_MSG.size)
                return counts
    finally:
        hal.HAL_DeInit()
        cm_ipc.ipc_deinit()


def cm7_main(region: Region, hw: Hardware, start_cm4: Any, say: Any, frames: int = FRAMES) -> dict[str, int]:
    """The CM7 firmware; `start_cm4` releases the second core, `say` prints a timeline line."""
    counts = {"firmware status": -1, "frames ok": 0, "frames wrong": 0, "camera ready received": 0}
    synced = threading.Event()

    def HAL_HSEM_FreeCallback(SemMask: int) -> None:
        if SemMask & hal.HSEM_SEMID_TO_MASK(HSEM_SYNC_ID):
            synced.set()

    hal.HAL_Init(hw.core("CM7"))
    hal.HAL_HSEM_FreeCallback = HAL_HSEM_FreeCallback  # overrides the weak callback
    hal.HAL_HSEM_ActivateNotification(hal.HSEM_SEMID_TO_MASK(HSEM_SYNC_ID))
    hal.HAL_NVIC_SetPriority(hal.HSEM1_IRQn, 5, 0)
    hal.HAL_NVIC_EnableIRQ(hal.HSEM1_IRQn)
    try:
        start_cm4()
        say("CM4 started; waiting for its HSEM 7 'buffers ready' release")
        if not synced.wait(_TIMEOUT_MS / 1000):
            raise RuntimeError("the CM4 never signalled that its buffers are ready")
        hal.HAL_NVIC_DisableIRQ(hal.HSEM1_IRQn)
        if cm_ipc.ipc_init(region, "CM7") != 0:
            raise RuntimeError("ipc_init found no channels")
        cm_ipc.ipc_start()
        say("attached the CM4's channels; selecting the fractal firmware")
        msg = bytearray(IPC_MSG.size)
        wait = freertos.pdMS_TO_TICKS(_TIMEOUT_MS)
        cm_ipc.ipc_sendmsg(_msg(IPC_CTRL_SELECT_FIRMWARE, IPC_FRACTAL_FIRMWARE_ID), IPC_MSG.size)
        if cm_ipc.ipc_recvmsg(msg, IPC_MSG.size, wait) == IPC_MSG.size:
            command, state, *_ = IPC_MSG.unpack(msg)
            counts["firmware status"] = state if command == IPC_CTRL_FIRMWARE_STATUS else -1
        for frame in range(frames):
            cm_ipc.ipc_sendmsg(_msg(IPC_COMMAND_RENDER_FRAME, frame), IPC_MSG.size)
            got = cm_ipc.ipc_recvmsg(msg, IPC_MSG.size, wait)
            command, arg1, arg2, *_ = IPC_MSG.unpack(msg)
            good = got == IPC_MSG.size and command == IPC_COMMAND_FRAME_ACK and arg1 == frame
            counts["frames ok" if good and arg2 == render_point(frame) else "frames wrong"] += 1
            if frame % 50 == 0:
                say(f"frame {frame}: the CM4 rendered {arg2} iterations")
            while cm_ipc.ipc_receive(CAMERA_CHANNEL, msg, IPC_MSG.size, 0) == IPC_MSG.size:  # poll, no wait
                counts["camera ready received"] += IPC_MSG.unpack(msg)[0] == IPC_CAMERA_READY
        while counts["camera ready received"] < frames // 10:  # the last ones may still be in flight
            if cm_ipc.ipc_receive(CAMERA_CHANNEL, msg, IPC_MSG.size, wait) != IPC_MSG.size:
                break
            counts["camera ready received"] += IPC_MSG.unpack(msg)[0] == IPC_CAMERA_READY
        cm_ipc.ipc_sendmsg(_msg(IPC_CAMERA_SHUTDOWN), IPC_MSG.size)
        cm_ipc.ipc_recvmsg(msg, IPC_MSG.size, wait)
        say(f"shut down; {counts['camera ready received']} camera-ready messages came from the CM4's EXTI handler")
        return counts
    finally:
        hal.HAL_DeInit()
        cm_ipc.ipc_deinit()


# ---- what is not firmware: the chip, the second core's process, the report -----------------------


def _cm4_process(region_name: str, origin: float, quiet: bool, results: Any) -> None:
    counts: dict[str, Any] = {}
    try:
        with Region.attach(region_name) as region:
            hw = Hardware.attach(region)
            try:
                counts.update(cm4_main(region, hw))
            finally:
                hw.close()
    except BaseException as e:  # noqa: BLE001 - reported to the CM7, which prints it
        counts["error"] = repr(e)
    results.put(counts)


def run(*, quiet: bool = False, frames: int = FRAMES) -> int:
    """Run the sample on two processes; 0 if every frame came back right and the ISR messages arrived."""
    from ...demos._common import print_summary, run_pair

    def cm7(region: Region, say: Any, start_cm4: Any) -> dict[str, Any]:
        with Hardware.create(region) as hw:
            return cm7_main(region, hw, start_cm4, say, frames)

    cm7_counts, cm4_counts = run_pair("cmipc", 1 << 16, cm7, _cm4_process, quiet=quiet)
    expected_isr = frames // 10
    ok = (
        cm7_counts["firmware status"] == IPC_OK
        and cm7_counts["frames ok"] == frames
        and cm7_counts["frames wrong"] == 0
        and cm7_counts["camera ready received"] == expected_isr
        and cm4_counts.get("camera ready sent") == expected_isr
        and cm4_counts.get("exit code") == 0
        and "error" not in cm4_counts
    )
    rows: dict[str, object] = {
        "firmware status (IPC_OK = 0)": cm7_counts["firmware status"],
        "frames answered right": f"{cm7_counts['frames ok']} of {frames}",
        "frames answered wrong": cm7_counts["frames wrong"],
        "camera-ready messages (sent from the ISR)": f"{cm7_counts['camera ready received']} of {expected_isr}",
        "CM4 commands served": cm4_counts.get("commands"),
    }
    if "error" in cm4_counts:
        rows["CM4 error"] = cm4_counts["error"]
    print_summary("cm-ipc", rows, ok, quiet=quiet)
    return 0 if ok else 1
