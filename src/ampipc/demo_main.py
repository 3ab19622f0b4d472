"""The main demo: two processes, a "CM7" and a "CM4", talking through a pair of message buffers.

The CM7 creates a region holding one message buffer per direction, starts the CM4 as a separate
process, and sends it sensor frames (a sequence number and eight samples); the CM4 answers each
frame with the sequence number and the sum of the samples. Both sides block when their buffer is
empty or full, exactly as FreeRTOS tasks would. The CM7 checks every answer and prints a timeline
and a summary; the exit status is 0 only if every answer arrived, in order and correct.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import time
from collections.abc import Callable

from .buffers import MessageBuffer
from .region import Region

__all__ = ["run"]

_FRAME = struct.Struct("<I8i")  # sequence number, eight samples
_ANSWER = struct.Struct("<Iq")  # sequence number, sum of the samples
_STOP = b""  # a zero-length message ends the exchange
_TIMEOUT = 60.0


def _samples(seq: int) -> list[int]:
    return [(seq * 7919 + k * 104729) % 65536 - 32768 for k in range(8)]


def _cm4_main(region_name: str) -> None:
    """The CM4 side: attach, answer every frame, stop on the zero-length message."""
    with Region.attach(region_name) as region:
        rx = MessageBuffer.attach(region, "cm7_to_cm4")
        tx = MessageBuffer.attach(region, "cm4_to_cm7")
        while True:
            frame = rx.receive(timeout=_TIMEOUT)
            if frame == _STOP:
                tx.send(_STOP, timeout=_TIMEOUT)
                return
            seq, *samples = _FRAME.unpack(frame)
            if seq % 1000 == 0:
                time.sleep(0.02)  # a slow moment: the CM7 fills the buffer and blocks
            tx.send(_ANSWER.pack(seq, sum(samples)), timeout=_TIMEOUT)


def run(*, frames: int = 20_000, quiet: bool = False, out: Callable[[str], None] | None = None) -> int:
    """Run the demo; returns the exit status (0 when every answer was right)."""
    say = out or (lambda line: print(line, flush=True))
    start = time.perf_counter()

    def log(who: str, what: str) -> None:
        if not quiet:
            say(f"[{(time.perf_counter() - start) * 1e3:9.3f} ms] {who}  {what}")

    name = f"ampipc-demo-{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")
    with Region.create(name, 1 << 20, replace_stale=True) as region:
        tx = MessageBuffer.create(region, "cm7_to_cm4", 16 * (_FRAME.size + 4))
        rx = MessageBuffer.create(region, "cm4_to_cm7", 64 * (_ANSWER.size + 4))
        log("CM7", f"region {name!r}: {tx.name} ({tx.capacity} B), {rx.name} ({rx.capacity} B)")
        cm4 = ctx.Process(target=_cm4_main, args=(name,), name="CM4")
        cm4.start()
        log("CM7", f"started the CM4 (pid {cm4.pid})")
        errors = 0
        answered = 0
        rtts: list[float] = []
        try:
            in_flight: dict[int, int] = {}
            next_seq = 0
            while answered < frames:
                # Keep the pipeline full: send while there is room, then collect answers.
                while next_seq < frames and len(in_flight) < 48:
                    samples = _samples(next_seq)
                    tx.send(_FRAME.pack(next_seq, *samples), timeout=_TIMEOUT)
                    in_flight[next_seq] = sum(samples)
                    if next_seq in (0, 1, 2) or next_seq % 5000 == 0:
                        log("CM7", f"sent frame {next_seq}: samples {samples[:3]}...")
                    next_seq += 1
                t0 = time.perf_counter()
                answer = rx.receive(timeout=_TIMEOUT)
                rtts.append(time.perf_counter() - t0)
                seq, total = _ANSWER.unpack(answer)
                expected_seq = answered
                if seq != expected_seq or in_flight.pop(seq, None) != total:
                    errors += 1
                if seq in (0, 1, 2) or seq % 5000 == 0:
                    log("CM4", f"answered frame {seq}: sum {total}")
                answered += 1
            tx.send(_STOP, timeout=_TIMEOUT)
            if rx.receive(timeout=_TIMEOUT) != _STOP:
                errors += 1
            log("CM7", "sent the stop message; the CM4 acknowledged it")
        except BaseException:  # Ctrl-C, SIGTERM, a closed output: stop the CM4 now, not at its timeout
            cm4.kill()
            raise
        finally:
            cm4.join(timeout=_TIMEOUT)
            if cm4.is_alive():
                cm4.kill()
                cm4.join()
        elapsed = time.perf_counter() - start
        out_stats, in_stats = tx.statistics(), rx.statistics()
        rtts.sort()
        ok = errors == 0 and answered == frames and cm4.exitcode == 0
        rows = {
            "frames sent by the CM7": out_stats.messages_sent - 1,
            "answers received by the CM7": in_stats.messages_received - 1,
            "wrong or out-of-order answers": errors,
            "CM7 blocked on a full buffer": f"{out_stats.send_waits} times",
            "CM4 blocked on an empty one": f"{out_stats.receive_waits} times",
            "peak fill cm7_to_cm4": f"{out_stats.peak_fill} of {tx.capacity} bytes",
            "wake-ups CM7->CM4 / CM4->CM7": f"{out_stats.reader_wakeups} / {in_stats.reader_wakeups}",
            "CM4 exit code": cm4.exitcode,
            "elapsed": f"{elapsed:.2f} s ({2 * frames / elapsed:,.0f} messages/s)",
            "result": "OK" if ok else "FAILED",
        }
        width = max(map(len, rows))
        say("")
        say("summary")
        for key, value in rows.items():
            say(f"  {key:<{width}}  {value}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
