"""The one benchmark command: ``python benchmarks/run_all.py [--quick] [--runs N]``.

Prints, in one run: the machine and versions; the peers table (ampipc MessageBuffer against
multiprocessing.Pipe, multiprocessing.Queue, faster-fifo and pyzmq) with one verdict line per
target; then the tables of the other benchmark modules, ``benchmarks/bench_strategies.py`` and
``benchmarks/bench_rpmsg.py``. Each of those exposes ``run(quick: bool) -> list[dict]``; it is
imported only when its turn comes, and a module that is missing or fails prints "not available"
with the reason instead of stopping the run.

Every measurement runs in processes of the multiprocessing *spawn* context; the repository root
is put on ``sys.path`` so that those processes can import the ``benchmarks`` package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["format_rows", "main"]

OTHER_MODULES = (
    ("notification strategies", "benchmarks.bench_strategies"),
    ("RPMsg", "benchmarks.bench_rpmsg"),
    ("asyncio against blocking calls", "benchmarks.bench_aio"),
    ("Zenoh bridge against Zenoh's own pub->sub", "benchmarks.bench_bridge"),
    ("payload pool, descriptors and DMA", "benchmarks.bench_payload"),
)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Any list of dicts as an aligned table: one column per key, in order of first appearance."""
    if not rows:
        return "(no rows)"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    body = [[_cell(row[k]) if k in row else "-" for k in keys] for row in rows]
    widths = [max(len(k), *(len(cells[i]) for cells in body)) for i, k in enumerate(keys)]
    numeric = [all(isinstance(r.get(k), (int, float)) or k not in r for r in rows) for k in keys]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(keys), line(["-" * w for w in widths])] + [line(cells) for cells in body])


def _versions() -> str:
    found = []
    for module, label in (("ampipc", "ampipc"), ("zmq", "pyzmq"), ("faster_fifo", "faster-fifo")):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            found.append(f"{label} missing")
            continue
        version = getattr(imported, "__version__", None)
        if version is None:
            try:
                from importlib.metadata import version as dist_version

                version = dist_version(label)
            except Exception:  # noqa: BLE001  (a version is decoration; never fail the run over it)
                version = "?"
        found.append(f"{label} {version}")
    return ", ".join(found)


def _title(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 78 - len(text)))


def _run_peers(quick: bool, runs: int) -> None:
    from benchmarks import bench_peers

    _title(f"peers: 64 B round trip, 64 B / 64 KiB / 1 MiB one-way (median of {runs} run{'s' * (runs > 1)})")
    rows = bench_peers.run(quick, runs=runs)
    print(bench_peers.format_table(rows))
    print()
    print("targets (same run):")
    for line in bench_peers.verdicts(rows):
        print("  " + line)


def _run_other(title: str, module_name: str, quick: bool) -> None:
    _title(title)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            print(f"not available ({module_name.replace('.', '/')}.py does not exist yet)")
        else:
            print(f"not available (it needs the missing module {e.name!r})")
        return
    except Exception:  # noqa: BLE001  (another module's failure must not stop this command)
        print(f"not available (importing {module_name} failed):\n{_indent(traceback.format_exc(limit=3))}")
        return
    try:
        rows = module.run(quick)
    except Exception:  # noqa: BLE001  (same: report it and go on)
        print(f"not available ({module_name}.run failed):\n{_indent(traceback.format_exc(limit=3))}")
        return
    print(format_rows(list(rows)))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every ampipc benchmark and print the tables.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer messages, one run)")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of the peers benchmark to take the median of (default 3; 1 with --quick)",
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    started = time.monotonic()
    print(f"command : python benchmarks/run_all.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"machine : {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"python  : {platform.python_implementation()} {platform.python_version()}; {_versions()}")
    _run_peers(args.quick, runs)
    for title, module_name in OTHER_MODULES:
        _run_other(title, module_name, args.quick)
    print(f"\ntotal time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
