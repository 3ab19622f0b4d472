"""The one benchmark command: ``python benchmarks/run_all.py [--quick] [--runs N] [--out DIR]``.

Prints, in one run: the machine, its load and the versions; the physical limits
(``bench_limits.py``: memcpy bandwidth, a C futex ping-pong); the peers table (``bench_peers.py``:
every peer with its own best calls, each paired with the ampipc case of the same kind of call) and
the pairs; the spin placements; then the tables of the other benchmark modules (``OTHER_MODULES``).
Each of those exposes ``run(quick: bool) -> list[dict]``; it is imported only when its turn comes,
and a module that is missing or fails prints "not available" with the reason instead of stopping
the run. Last, one line per target with the ratio measured in this run (PASS / MISS / n/a).

Everything also goes to ``DIR/latest.json`` and PNG plots in ``DIR`` (``benchmarks/plots.py``;
matplotlib, from the ``bench`` extra). DIR defaults to ``benchmarks/results`` for a full run and to
``benchmarks/results/quick`` with ``--quick``.

Every measurement runs in processes of the multiprocessing *spawn* context; the repository root
is put on ``sys.path`` so that those processes can import the ``benchmarks`` package.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
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

__all__ = ["collect", "format_rows", "main", "targets", "write_results"]

OTHER_MODULES = (
    ("notification strategies", "benchmarks.bench_strategies"),
    ("RPMsg", "benchmarks.bench_rpmsg"),
    ("asyncio against blocking calls", "benchmarks.bench_aio"),
    ("Zenoh bridge against Zenoh's own pub->sub", "benchmarks.bench_bridge"),
    ("payload pool, descriptors and DMA", "benchmarks.bench_payload"),
    ("remote calls (ampipc.services) against raw buffers and multiprocessing", "benchmarks.bench_services"),
    ("the chip memory model (ampipc.hw.memory / cache) against a plain region", "benchmarks.bench_cache"),
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


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for module, label in (("ampipc", "ampipc"), ("zmq", "pyzmq"), ("faster_fifo", "faster-fifo"),
                          ("iceoryx2", "iceoryx2"), ("matplotlib", "matplotlib")):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            found[label] = "missing"
            continue
        version = getattr(imported, "__version__", None)
        if version is None:
            try:
                from importlib.metadata import version as dist_version

                version = dist_version(label)
            except Exception:  # noqa: BLE001  (a version is decoration; never fail the run over it)
                version = "?"
        found[label] = str(version)
    return found


def _title(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 78 - len(text)))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())




def _run_other(title: str, module_name: str, quick: bool) -> dict[str, Any]:
    """One other module's rows, printed; ``{"title", "rows"}`` or ``{"title", "unavailable"}``."""
    _title(title)
    entry: dict[str, Any] = {"title": title}
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            entry["unavailable"] = f"{module_name.replace('.', '/')}.py does not exist yet"
        else:
            entry["unavailable"] = f"it needs the missing module {e.name!r}"
        print(f"not available ({entry['unavailable']})")
        return entry
    except Exception:  # noqa: BLE001  (another module's failure must not stop this command)
        entry["unavailable"] = f"importing {module_name} failed: {traceback.format_exc(limit=3).strip().splitlines()[-1]}"
        print(f"not available (importing {module_name} failed):\n{_indent(traceback.format_exc(limit=3))}")
        return entry
    try:
        rows = list(module.run(quick))
    except Exception:  # noqa: BLE001  (same: report it and go on)
        entry["unavailable"] = f"{module_name}.run failed: {traceback.format_exc(limit=3).strip().splitlines()[-1]}"
        print(f"not available ({module_name}.run failed):\n{_indent(traceback.format_exc(limit=3))}")
        return entry
    print(format_rows(rows))
    entry["rows"] = rows
    return entry


# ---- targets --------------------------------------------------------------------------------------


def _ok_rows(rows: list[dict[str, Any]], key: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if str(r.get("status", "")).startswith("ok") and key in r
            and all(r.get(k) == v for k, v in match.items())]


def _best(rows: list[dict[str, Any]], key: str, **match: Any) -> dict[str, Any] | None:
    found = _ok_rows(rows, key, **match)
    return max(found, key=lambda r: float(r[key])) if found else None


def _target(name: str, goal: str, ratio: float | None, passed: bool | None, detail: str) -> dict[str, Any]:
    verdict = "n/a" if ratio is None or passed is None else ("PASS" if passed else "MISS")
    return {"target": name, "goal": goal, "ratio": ratio, "verdict": verdict, "detail": detail}


def _ratio_target(name: str, goal: str, top: tuple[str, float] | None, bottom: tuple[str, float] | None,
                  at_least: float | None = None, at_most: float | None = None, unit: str = "") -> dict[str, Any]:
    if top is None or bottom is None or bottom[1] == 0:
        missing = "numerator" if top is None else "denominator"
        return _target(name, goal, None, None, f"not measured ({missing} missing)")
    ratio = top[1] / bottom[1]
    passed = (at_least is None or ratio >= at_least) and (at_most is None or ratio <= at_most)
    return _target(name, goal, ratio, passed, f"{top[0]} {top[1]:,.3g} {unit} / {bottom[0]} {bottom[1]:,.3g} {unit}")


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each the ratio of two figures of this run (never a constant)."""
    peers: list[dict[str, Any]] = document.get("peers", [])
    limits = {r["measure"]: r for r in document.get("limits", []) if r.get("status") == "ok"}
    out: list[dict[str, Any]] = []
    key = "msgs_per_s_64B"

    def named(row: dict[str, Any] | None, k: str) -> tuple[str, float] | None:
        return None if row is None else (str(row.get("peer", row.get("measure"))), float(row[k]))

    batch = _best(peers, key, group="ampipc", kind="batch")
    single = _best(peers, key, group="ampipc", kind="single")
    best_peer = _best(peers, key, group="peer")
    best_peer_single = _best(peers, key, group="peer", kind="single")
    out.append(_ratio_target("64 B one-way: ampipc batch vs the best peer call", ">= 20x", named(batch, key),
                             named(best_peer, key), at_least=20, unit="msg/s"))
    out.append(_ratio_target("64 B one-way: ampipc batch vs ampipc single calls", ">= 3x", named(batch, key),
                             named(single, key), at_least=3, unit="msg/s"))
    out.append(_ratio_target("64 B one-way: ampipc single call vs the best peer single call", ">= 5x",
                             named(single, key), named(best_peer_single, key), at_least=5, unit="msg/s"))
    big = "mb_per_s_1MiB"
    copying = _best(peers, big, group="ampipc", kind="single")
    for measure, label in (("memcpy_hot_1MiB", "memcpy (1 MiB, hot)"), ("memcpy_cold_1MiB", "memcpy (1 MiB, cold)")):
        row = limits.get(measure)
        out.append(_ratio_target(f"1 MiB one-way copying vs {label}", ">= 0.8x", named(copying, big),
                                 None if row is None else (measure, float(row["value"])), at_least=0.8, unit="MB/s"))
    for r in document.get("spin", []):
        if "spin_vs_no_spin" not in r:
            continue
        two = r["placement"].startswith("two CPUs")
        goal = "<= 0.2x (two idle CPUs)" if two else "<= 1.1x"
        ratio = float(r["spin_vs_no_spin"])
        passed = ratio <= (0.2 if two else 1.1)
        out.append(_target(f"default spin vs spin 0, 64 B round trip, {r['placement']}", goal, ratio, passed,
                           "median round trips of the same run"))
    others = document.get("others", {})
    strategies = others.get("benchmarks.bench_strategies", {}).get("rows", [])
    for channels, what in ((1, "round trip"), (16, "throughput")):
        group = [r for r in strategies if r.get("channels") == channels or (channels == 16 and r.get("channels", 0) > 1)]
        direct = next((r for r in group if r.get("strategy") == "direct"), None)
        for name in ("hsem", "control", "toggle"):
            row = next((r for r in group if r.get("strategy") == name), None)
            if what == "round trip":
                out.append(_ratio_target(f"{name} 64 B round trip vs direct (1 channel, default spin)", "<= 1.5x",
                                         None if row is None else (name, row["round_trip_us_median"]),
                                         None if direct is None else ("direct", direct["round_trip_us_median"]),
                                         at_most=1.5, unit="us"))
            else:
                label = f"{row['channels']} channels" if row else "16 channels"
                out.append(_ratio_target(f"{name} throughput vs direct ({label})", ">= 0.7x",
                                         None if row is None else (name, row["msgs_per_s"]),
                                         None if direct is None else ("direct", direct["msgs_per_s"]),
                                         at_least=0.7, unit="msg/s"))
    rpmsg = others.get("benchmarks.bench_rpmsg", {}).get("rows", [])
    region = next((r for r in rpmsg if r.get("transport") == "region (futex doorbell)" and r.get("payload_bytes") == 64),
                  None)
    # bench_rpmsg measures its own MessageBuffer pair the same way as the RPMsg link; else the peers' row.
    reference = next((r for r in rpmsg if str(r.get("transport", "")).startswith("MessageBuffer")
                      and r.get("payload_bytes") == 64 and "round_trip_us_median" in r), None)
    buffer_rtt = next((r for r in peers if r.get("peer") == "ampipc" and r.get("status") == "ok" and "rtt_median_us" in r),
                      None)
    bottom = (("MessageBuffer pair", float(reference["round_trip_us_median"])) if reference is not None
              else named(buffer_rtt, "rtt_median_us"))
    out.append(_ratio_target("RPMsg over a Region vs a MessageBuffer, 64 B round trip", "<= 2x",
                             None if region is None else ("RPMsg region", region["round_trip_us_median"]),
                             bottom, at_most=2, unit="us"))
    return out


def format_targets(rows: list[dict[str, Any]]) -> str:
    lines = []
    for t in rows:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        lines.append(f"  {t['verdict']:<4} {t['target']}: {ratio} (target {t['goal']}; {t['detail']})")
    return "\n".join(lines)


# ---- the run --------------------------------------------------------------------------------------


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def collect(quick: bool = False, runs: int = 1, *, tiny: bool = False, others: bool = True,
            command: str = "") -> dict[str, Any]:
    """Run every part, print it, and return the whole result document (what latest.json holds)."""
    from benchmarks import bench_limits, bench_peers

    started = time.monotonic()
    plan = bench_peers.Plan.tiny() if tiny else None
    doc: dict[str, Any] = {
        "command": command,
        "mode": "tiny" if tiny else ("quick" if quick else "full"),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "usable_cpus": sorted(os.sched_getaffinity(0)),
            "system": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "load_average_start": _load(),
        },
        "versions": _versions(),
        "runs": runs,
    }
    print(f"command : {command}")
    m = doc["machine"]
    print(f"machine : {m['arch']}, {m['cpus']} CPUs, {m['system']}; load average {m['load_average_start']}")
    print(f"python  : {m['python']}; " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()))

    _title("physical limits (limits.c, same run)")
    doc["limits"] = bench_limits.run(quick, tiny=tiny)
    print(format_rows(doc["limits"]))

    _title(f"peers: every case, median of {runs} run{'s' * (runs > 1)}")
    doc["peers"] = bench_peers.run(quick, runs=runs, plan=plan)
    print(bench_peers.format_table(doc["peers"]))
    _title("pairs: each peer figure beside the ampipc case of the same kind of call")
    doc["pairs"] = bench_peers.pairs(doc["peers"])
    print(bench_peers.format_pairs(doc["peers"]))

    _title("spin: 64 B round trip, default spin against spin 0, by CPU placement")
    doc["spin"] = bench_peers.run_spin(quick, plan=plan)
    print(format_rows(doc["spin"]))

    doc["others"] = {}
    if others:
        for title, module_name in OTHER_MODULES:
            doc["others"][module_name] = _run_other(title, module_name, quick)

    doc["targets"] = targets(doc)
    _title("targets (ratios of this run)")
    print(format_targets(doc["targets"]))
    doc["machine"]["load_average_end"] = _load()
    doc["total_seconds"] = round(time.monotonic() - started, 1)
    print(f"\nload average at the end {doc['machine']['load_average_end']}; total time {doc['total_seconds']} s")
    return doc


def write_results(document: dict[str, Any], out_dir: Path) -> list[Path]:
    """latest.json and the PNG plots (when matplotlib is installed) in `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "latest.json"
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    written = [path]
    try:
        from benchmarks import plots
    except ImportError as e:
        print(f"plots not written ({e}); pip install 'ampipc[bench]'")
        return written
    written += plots.write_plots(document, out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every ampipc benchmark, print the tables, write JSON and plots.")
    parser.add_argument("--quick", action="store_true", help="a short run (fewer messages, one run): a few minutes")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of the peers benchmark to take the median of (default 3; 1 with --quick)",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="where latest.json and the plots go (default benchmarks/results; .../quick with --quick)")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    out = args.out or (REPO_ROOT / "benchmarks" / "results" / ("quick" if args.quick else ""))
    words = sys.argv[1:] if argv is None else argv
    document = collect(args.quick, runs, command=f"python benchmarks/run_all.py {' '.join(words)}".rstrip())
    for path in write_results(document, out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
