"""Demo: event notification (AN5617's first use case): the CM4 watches sensor events and wakes the CM7.

The CM4 reads a generated "voice activity" signal, one energy value per frame, and runs a
detector on it: an *activation* is `ATTACK_FRAMES` loud frames in a row after silence (isolated
clicks do not count), and the detector re-arms after `RELEASE_FRAMES` quiet frames. At each
activation the CM4 sends a command to the CM7 through a message buffer and wakes it with a
notification: an HSEM free interrupt ("take + release" of semaphore `WAKE_SEMAPHORE`), a SEV whose
interrupt is unmasked on the CM7, or an EXTI software interrupt (line 1, CM4 -> CM7, as the
FreeRTOS AMP demo). Before notifying it stamps the event time in the CM7's power record, so the
CM7's wake-up handler measures the latency from event to handler.

The CM7 spends the time between commands asleep: in SLEEP for `FOLLOW_UP_WINDOW` after a
command (another may follow soon, and SLEEP wakes faster), then in STOP (`ampipc.hw.power`: ``core.state`` is visible
to every process, the time in RUN / SLEEP / STOP is counted). Its wake-up handler (ISR context)
only switches the core to RUN and wakes the main task, which drains every command, logs each to a
file and goes back to STOP. At the end the CM4 sends RESET: the CM7 flushes its log, closes its
files (a safe state), acknowledges with the number of lines it wrote, and both exit 0.

The signal is generated from a seed with `BURSTS` bursts of speech, each long enough to trigger
and separated by more than the release time, and clicks that never last two frames, so the
number of activations is known in advance: the summary checks it against what the CM4 detected, the commands the CM7 handled, its wake-ups, the
latencies measured and the lines in the log file after it was closed.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..buffers import MessageBuffer
from ..hw import IRQ_EXTI1, IRQ_SEV, Core, Hardware
from ..hw.boot import cm7_release_boot
from ..hw.power import PowerState
from ..region import Region
from ._common import CHILD_TIMEOUT, Timeline, cm4_booted, print_summary, run_pair

__all__ = ["NOTIFICATIONS", "ActivationDetector", "run", "voice_activity"]

NOTIFICATIONS = ("hsem", "sev", "exti")
WAKE_SEMAPHORE = 9  # ST's multi-buffer example: RX semaphore 9 on the CM7
EXTI_LINE = 1  # FreeRTOS AMP demo: line 1 is CM4 -> CM7
BURSTS = 8
SEED = 0x5EED
FRAME_PERIOD = 0.002  # seconds between sensor frames
THRESHOLD = 0.5
ATTACK_FRAMES = 3
RELEASE_FRAMES = 6
FOLLOW_UP_WINDOW = 0.02  # seconds the CM7 stays in light SLEEP after a command before going to STOP

_COMMAND = struct.Struct("<BIQ")  # kind, sequence number, frame index
_ACTIVATE, _RESET = 1, 2
_ACK = struct.Struct("<II")  # commands handled, log lines flushed


# ---- the sensor and the detector (pure) ------------------------------------------------------


def voice_activity(seed: int = SEED, bursts: int = BURSTS) -> Iterator[float]:
    """Frame energies: background noise with isolated clicks, and `bursts` bursts of speech."""
    rng = random.Random(seed)
    for _ in range(bursts):
        click = False
        for i in range(rng.randint(RELEASE_FRAMES + 14, 35)):
            # silence: quiet long enough for the detector to re-arm, then clicks never two frames long
            click = i > RELEASE_FRAMES and not click and rng.random() < 0.08
            yield rng.uniform(0.7, 1.0) if click else rng.uniform(0.0, 0.3)
        for _ in range(ATTACK_FRAMES + 1):  # speech onset: loud enough to trigger
            yield rng.uniform(0.6, 1.0)
        for _ in range(rng.randint(1, 10)):  # the rest of the word, with dips shorter than the release
            yield rng.uniform(0.3, 0.45) if rng.random() < 0.15 else rng.uniform(0.6, 1.0)
    for _ in range(RELEASE_FRAMES + 4):
        yield rng.uniform(0.0, 0.3)


@dataclass
class ActivationDetector:
    """Activation = `attack` loud frames in a row while idle; idle again after `release` quiet frames."""

    threshold: float = THRESHOLD
    attack: int = ATTACK_FRAMES
    release: int = RELEASE_FRAMES
    active: bool = False
    _loud: int = 0
    _quiet: int = 0

    def feed(self, energy: float) -> bool:
        """One frame; True on the frame that completes an activation."""
        if energy >= self.threshold:
            self._loud += 1
            self._quiet = 0
            if not self.active and self._loud >= self.attack:
                self.active = True
                return True
        else:
            self._loud = 0
            self._quiet += 1
            if self.active and self._quiet >= self.release:
                self.active = False
        return False


# ---- the CM4: sensor watcher ---------------------------------------------------------------------


def _notify(core: Core, notification: str) -> None:
    if notification == "hsem":
        if core.hsem.fast_take(WAKE_SEMAPHORE):
            core.hsem.release(WAKE_SEMAPHORE, 0)
    elif notification == "sev":
        core.sev()
    else:
        core.generate_sw_interrupt(EXTI_LINE)


def _cm4(region_name: str, origin: float, quiet: bool, results: Any, notification: str = "hsem") -> None:
    say = Timeline("CM4", origin, quiet)
    counts: dict[str, Any] = {"frames": 0, "activations": 0, "acknowledged": None}
    with cm4_booted(region_name, counts, results) as hw:
        region = hw.region
        core = hw.core("CM4")
        cm7_power = hw.core("CM7").power
        commands = MessageBuffer.attach(region, "events.cmd")
        acks = MessageBuffer.attach(region, "events.ack")
        detector = ActivationDetector()
        say(f"watching the voice-activity sensor ({FRAME_PERIOD * 1000:.0f} ms frames), CM7 is {cm7_power.state.name}")
        next_frame = time.monotonic()
        for frame, energy in enumerate(voice_activity()):
            counts["frames"] += 1
            if detector.feed(energy):
                counts["activations"] += 1
                seq = counts["activations"]
                _wait_until_taken(cm7_power)
                cm7_power.stamp_event()
                commands.send(_COMMAND.pack(_ACTIVATE, seq, frame), timeout=CHILD_TIMEOUT)
                _notify(core, notification)
                say(f"activation #{seq} at frame {frame}: command sent, waking the CM7 ({notification})")
            next_frame += FRAME_PERIOD
            delay = next_frame - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        say(f"{counts['frames']} frames watched; sending RESET")
        _wait_until_taken(cm7_power)
        cm7_power.stamp_event()
        commands.send(_COMMAND.pack(_RESET, counts["activations"] + 1, counts["frames"]), timeout=CHILD_TIMEOUT)
        _notify(core, notification)
        handled, lines = _ACK.unpack(acks.receive(timeout=CHILD_TIMEOUT))
        counts["acknowledged"] = (handled, lines)
        say(f"CM7 acknowledged the reset: {handled} commands handled, {lines} log lines flushed, safe state")


def _wait_until_taken(cm7_power: Any) -> None:
    """The previous wake-up reached the CM7's handler: a second one raised before it would merge with
    it, as a pending interrupt does, and the CM7 would count one wake-up for two events."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while cm7_power.event_pending and time.monotonic() < deadline:
        time.sleep(0.0005)


# ---- the CM7: sleeps in STOP between commands ----------------------------------------------------


def _install_wake(core: Core, notification: str, on_wake: Callable[[], None]) -> None:
    if notification == "hsem":
        def free_callback(mask: int) -> None:
            if mask & (1 << WAKE_SEMAPHORE):
                core.hsem.activate_notification(1 << WAKE_SEMAPHORE)  # the HAL handler disabled it
                on_wake()

        core.hsem.set_free_callback(free_callback)
        core.hsem.activate_notification(1 << WAKE_SEMAPHORE)
        core.hsem.enable_irq()
    elif notification == "sev":
        core.set_sev_interrupt_mask(True)
        core.attach_handler(IRQ_SEV, lambda _line: on_wake(), priority=4)
    else:
        core.exti_enable(EXTI_LINE)
        core.attach_handler(IRQ_EXTI1, lambda _line: on_wake(), priority=4)


def _cm7(notification: str) -> Callable[[Region, Timeline, Callable[[], None]], dict[str, Any]]:
    def cm7(region: Region, say: Timeline, start_cm4: Callable[[], None]) -> dict[str, Any]:
        start_cm4()
        counts: dict[str, Any] = {"handled": 0, "log lines": 0, "latencies": [], "wake handlers": 0}
        hw = Hardware.create(region)
        try:
            commands = MessageBuffer.create(region, "events.cmd", 1024)
            acks = MessageBuffer.create(region, "events.ack", 64)
            core = hw.core("CM7")
            power = core.power

            def on_wake() -> None:  # ISR context: no blocking, no I/O
                counts["wake handlers"] += 1
                latency = power.wake()
                if latency is not None:
                    counts["latencies"].append(latency)

            _install_wake(core, notification, on_wake)
            core.start()
            with tempfile.TemporaryDirectory(prefix="ampipc-events-") as tmp:
                log_path = os.path.join(tmp, "cm7.log")
                log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in the safe state below
                try:
                    cm7_release_boot(hw)
                    say(f"initialised; waking by {notification}; entering STOP")
                    reset = False
                    mode = PowerState.STOP
                    light_until = 0.0
                    deadline = time.monotonic() + CHILD_TIMEOUT
                    while not reset:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the CM4 never sent RESET")
                        since = power.wake_sequence
                        while (raw := commands.try_receive()) is not None:
                            kind, seq, frame = _COMMAND.unpack(raw)
                            if kind == _RESET:
                                reset = True
                                break
                            counts["handled"] += 1
                            latency = counts["latencies"][-1] if counts["latencies"] else 0.0
                            log.write(f"activation {seq} frame {frame} wake latency {latency * 1e6:.0f} us\n")
                            say(f"woken from {mode.name} for activation #{seq}, frame {frame}, "
                                f"latency {latency * 1e6:.0f} us; logged; SLEEP, then STOP")
                            light_until = time.monotonic() + FOLLOW_UP_WINDOW
                        if reset:
                            break
                        left = light_until - time.monotonic()
                        mode = PowerState.SLEEP if left > 0 else PowerState.STOP
                        power.sleep(mode, timeout=left if left > 0 else 1.0, since=since)
                    log.flush()
                    os.fsync(log.fileno())
                finally:
                    log.close()
                with open(log_path, encoding="utf-8") as f:
                    counts["log lines"] = sum(1 for _ in f)
                say(f"RESET: log flushed ({counts['log lines']} lines), files closed: safe state; acknowledging")
                acks.send(_ACK.pack(counts["handled"], counts["log lines"]), timeout=CHILD_TIMEOUT)
            stats = power.statistics()
            counts["power"] = stats
            counts["state at end"] = core.state.name
            return counts
        finally:
            hw.close()

    return cm7


def _cm4_entry(notification: str) -> Callable[[str, float, bool, Any], None]:
    return _Cm4Entry(notification)


class _Cm4Entry:
    """A picklable CM4 entry point carrying the notification choice (spawn pickles the target)."""

    def __init__(self, notification: str) -> None:
        self.notification = notification

    def __call__(self, region_name: str, origin: float, quiet: bool, results: Any) -> None:
        _cm4(region_name, origin, quiet, results, self.notification)


def run(*, quiet: bool = False, notification: str = "hsem") -> int:
    """Run the demo (`notification`: "hsem", "sev" or "exti"); 0 if every count checks out."""
    if notification not in NOTIFICATIONS:
        raise ValueError(f"notification must be one of {', '.join(NOTIFICATIONS)}, not {notification!r}")
    expected = BURSTS
    cm7, cm4 = run_pair("events", 1 << 16, _cm7(notification), _cm4_entry(notification), quiet=quiet)
    power = cm7.get("power")
    latencies: list[float] = cm7["latencies"]
    ok = (
        "error" not in cm4
        and cm4.get("exit code") == 0
        and cm4.get("activations") == expected
        and cm7["handled"] == expected
        and cm7["log lines"] == expected
        and cm4.get("acknowledged") == (expected, expected)
        and len(latencies) == expected + 1  # every activation and the reset
        and power is not None
        and power.time_in_stop > 0
        and power.time_in_sleep > 0
        and cm7["state at end"] == "RUN"
    )
    rows: dict[str, object] = {
        "notification": {"hsem": f"HSEM {WAKE_SEMAPHORE} free interrupt", "sev": "SEV interrupt",
                         "exti": f"EXTI line {EXTI_LINE} software interrupt"}[notification],
        "sensor frames watched": cm4.get("frames"),
        "activations expected / detected": f"{expected} / {cm4.get('activations')}",
        "commands handled by the CM7": cm7["handled"],
        "CM7 wake-up handlers run": cm7["wake handlers"],
        "log lines flushed before reset": cm7["log lines"],
        "reset acknowledged (handled, lines)": cm4.get("acknowledged"),
    }
    if power is not None:
        rows["CM7 time in RUN / SLEEP / STOP"] = (
            f"{power.time_in_run * 1000:.1f} / {power.time_in_sleep * 1000:.1f} / {power.time_in_stop * 1000:.1f} ms"
        )
        rows["CM7 wake-ups (power record)"] = power.wakeups
    if latencies:
        rows["wake latency event->handler"] = (
            f"mean {sum(latencies) / len(latencies) * 1e6:.0f} us, max {max(latencies) * 1e6:.0f} us "
            f"({len(latencies)} measured)"
        )
    rows["CM7 state at the end"] = cm7["state at end"]
    if "error" in cm4:
        rows["CM4 error"] = cm4["error"]
    print_summary("events", rows, ok, quiet=quiet)
    return 0 if ok else 1


def run_sev(*, quiet: bool = False) -> int:
    """The demo woken by SEV (its interrupt unmasked on the CM7)."""
    return run(quiet=quiet, notification="sev")


def run_exti(*, quiet: bool = False) -> int:
    """The demo woken by an EXTI software interrupt (line 1)."""
    return run(quiet=quiet, notification="exti")
