"""The machine's physical limits, measured in the same run as everything else.

Theory of operation
-------------------
``benchmarks/limits.c`` is compiled at run time (``cc -O2`` into a temporary directory, never
committed as a binary) and run as a separate program, one measurement per invocation, each printing
one JSON object:

- ``memcpy`` of 1 MiB: "hot" between the same two buffers (cache-resident when they fit), "cold"
  walking 64 MiB (memory bound). A copying one-way transfer moves every byte at least twice (into
  the ring, out of it), so the hot figure is a ceiling it cannot beat on one core;
- a ping-pong between two processes over one shared word: ``futex`` (flip the word,
  FUTEX_WAKE, FUTEX_WAIT until it flips back: the kernel's round trip, what any blocking channel pays)
  and ``spin`` (busy-waiting on the word: a cache line's round trip). Each also with both processes
  pinned to one CPU, and with one process on each of two CPUs (a wake-up then crosses CPUs).

Rows: ``measure``, ``value``, ``unit`` and ``status``; a missing compiler makes every row
"not available" with the reason, never an exception.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["LIMITS_SOURCE", "compile_limits", "run"]

LIMITS_SOURCE = Path(__file__).resolve().parent / "limits.c"
LARGE = 1024 * 1024


def compile_limits(directory: str) -> str:
    """Build limits.c into `directory`; return the program's path (CalledProcessError, FileNotFoundError)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH")
    program = os.path.join(directory, "limits")
    subprocess.run([compiler, "-O2", "-std=gnu11", "-o", program, str(LIMITS_SOURCE)], check=True,
                   capture_output=True, text=True, timeout=120)
    return program


def _run_program(program: str, args: list[str], cpus: set[int] | None, timeout: float) -> dict[str, Any]:
    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run([program, *args], check=True, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=pin)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False, tiny: bool = False) -> list[dict[str, Any]]:
    """memcpy MB/s (1 MiB, hot and cold) and the C futex / spin round trips (two CPUs, one CPU)."""
    copies = 50 if tiny else (500 if quick else 5_000)
    rounds = 200 if tiny else (5_000 if quick else 50_000)
    usable = sorted(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ampipc-bench-limits-") as directory:
        try:
            program = compile_limits(directory)
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            reason = f"not available (compiling limits.c failed: {str(detail).strip().splitlines()[-1:]})"
            return [{"measure": m, "status": reason} for m in ("memcpy_hot_1MiB", "memcpy_cold_1MiB",
                                                              "futex_rtt", "spin_rtt")]
        try:
            copy = _run_program(program, ["memcpy", str(LARGE), str(copies)], None, 300)
            rows.append({"measure": "memcpy_hot_1MiB", "value": copy["hot_mb_per_s"], "unit": "MB/s", "status": "ok"})
            rows.append({"measure": "memcpy_cold_1MiB", "value": copy["cold_mb_per_s"], "unit": "MB/s",
                         "status": "ok"})
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            for m in ("memcpy_hot_1MiB", "memcpy_cold_1MiB"):
                rows.append({"measure": m, "status": f"error: {e!r}"})
        placements: list[tuple[str, set[int] | None, list[str]]] = [("", None, [])]
        if usable:
            placements.append(("_one_cpu", {usable[0]}, []))
        if len(usable) >= 2:
            placements.append(("_two_cpus", None, [str(usable[0]), str(usable[1])]))
        for mode in ("futex", "spin"):
            for suffix, cpus, pair in placements:
                # Spinning on one CPU progresses only when the spinner yields: fewer rounds there.
                n = max(100, rounds // 20) if mode == "spin" and suffix == "_one_cpu" else rounds
                name = f"{mode}_rtt{suffix}"
                try:
                    pong = _run_program(program, [mode, str(n), *pair], cpus, 300)
                    rows.append({"measure": name, "value": pong["rtt_median_us"], "p99": pong["rtt_p99_us"],
                                 "unit": "us", "status": "ok"})
                except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                    rows.append({"measure": name, "status": f"error: {e!r}"})
    return rows


def main(argv: list[str]) -> int:
    for row in run(quick="--quick" in argv):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
