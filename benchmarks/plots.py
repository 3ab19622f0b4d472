"""PNG plots of a benchmark result document (``benchmarks/results/latest.json``).

Theory of operation
-------------------
`write_plots` reads only the document that ``run_all.py`` built (or a saved ``latest.json``: run
``python benchmarks/plots.py [PATH]`` to redraw it) and writes two figures with matplotlib's
non-interactive Agg backend:

- ``peers.png``: three panels, one bar per case (ampipc cases in one colour, peers in another, the
  kind of call in the label): 64 B round trip (with the C futex ping-pong as a line), 64 B one-way
  messages/s (log scale) and 1 MiB one-way MB/s (with memcpy hot and cold as lines);
- ``paths.png``: the 64 B round trip with the default spin and with spin 0 per CPU placement, and
  the notification strategies' round trip at 1 channel (when that module ran).

A figure without data shows "not measured" rather than failing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

_AMPIPC, _PEER = "#1f77b4", "#b0b0b0"


def _bars(ax: Any, rows: list[dict[str, Any]], key: str, title: str, unit: str, log: bool = False) -> None:
    chosen = [r for r in rows if str(r.get("status", "")).startswith("ok") and key in r]
    ax.set_title(title, fontsize=10)
    if not chosen:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    # "*": measured in only some of the runs (the status says why the others failed).
    labels = [f"{r['peer']} [{r['kind']}]" + ("" if r.get("status") == "ok" else " *") for r in chosen]
    values = [float(r[key]) for r in chosen]
    colours = [_AMPIPC if r.get("group") == "ampipc" else _PEER for r in chosen]
    positions = list(range(len(chosen)))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    if log:
        ax.set_xscale("log")


def _limit_line(ax: Any, document: dict[str, Any], measure: str, label: str, style: str) -> None:
    for r in document.get("limits", []):
        if r.get("measure") == measure and r.get("status") == "ok":
            ax.axvline(float(r["value"]), color="#d62728", linestyle=style, linewidth=1, label=label)
            ax.legend(fontsize=7, loc="lower right")


def write_plots(document: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write peers.png and paths.png into `out_dir`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    peers = document.get("peers", [])
    machine = document.get("machine", {})
    caption = (f"{document.get('mode', '?')} run, {machine.get('cpus', '?')} CPUs, load average "
               f"{machine.get('load_average_start', '?')} -> {machine.get('load_average_end', '?')}")
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(16, 6.5))
    _bars(axes[0], peers, "rtt_median_us", "64 B round trip, median (lower is better)", "µs")
    _limit_line(axes[0], document, "futex_rtt", "C futex ping-pong", "--")
    _bars(axes[1], peers, "msgs_per_s_64B", "64 B one-way (higher is better)", "messages/s", log=True)
    _bars(axes[2], peers, "mb_per_s_1MiB", "1 MiB one-way (higher is better)", "MB/s")
    _limit_line(axes[2], document, "memcpy_hot_1MiB", "memcpy 1 MiB (hot)", "--")
    _limit_line(axes[2], document, "memcpy_cold_1MiB", "memcpy 1 MiB (cold)", ":")
    fig.suptitle(f"ampipc (blue) against its peers (grey), same run; {caption}", fontsize=10)
    fig.tight_layout()
    path = out_dir / "peers.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    spin = [r for r in document.get("spin", []) if r.get("status") == "ok" and "rtt_median_us" in r]
    ax = axes[0]
    ax.set_title("ampipc 64 B round trip by CPU placement", fontsize=10)
    if spin:
        placements = list(dict.fromkeys(r["placement"] for r in spin))
        width = 0.38
        for offset, (spin_value, colour) in enumerate((("default", _AMPIPC), ("0", "#ff7f0e"))):
            values = [next((float(r["rtt_median_us"]) for r in spin if r["placement"] == p and r["spin"] == spin_value),
                           0.0) for p in placements]
            ax.bar([i + (offset - 0.5) * width for i in range(len(placements))], values, width, color=colour,
                   label=f"spin {spin_value}")
        ax.set_xticks(range(len(placements)), placements, fontsize=8)
        ax.set_ylabel("µs (median)", fontsize=8)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax = axes[1]
    ax.set_title("notification strategies, 64 B round trip, 1 channel", fontsize=10)
    strategies = document.get("others", {}).get("benchmarks.bench_strategies", {}).get("rows", [])
    single = [r for r in strategies if r.get("channels") == 1 and "round_trip_us_median" in r]
    if single:
        ax.bar([r["strategy"] for r in single], [float(r["round_trip_us_median"]) for r in single], color=_AMPIPC)
        ax.set_ylabel("µs (median)", fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    path = out_dir / "paths.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(path)
    return written


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "latest.json"
    for path in write_plots(json.loads(source.read_text()), source.parent):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
