"""The benchmark harness itself, in its tiniest mode: every case runs, the document has every key,
the plots are written, the targets are ratios of the run's own figures. Nothing here looks at speed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bench_peers, run_all  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE_KEYS = {64: "64B", 64 * 1024: "64KiB", 1024 * 1024: "1MiB"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Path], Path]:
    out = tmp_path_factory.mktemp("bench")
    document = run_all.collect(tiny=True, others=False, command="smoke")
    written = run_all.write_results(document, out)
    return document, written, out


def test_every_case_ran_and_has_its_figures(tiny_run: tuple[dict[str, Any], list[Path], Path]) -> None:
    document, _, out = tiny_run
    loaded = json.loads((out / "latest.json").read_text())
    assert {"command", "mode", "machine", "versions", "limits", "peers", "pairs", "spin", "targets",
            "total_seconds"} <= set(loaded)
    assert loaded["mode"] == "tiny"
    assert {"load_average_start", "load_average_end", "cpus"} <= set(loaded["machine"])
    rows = {r["peer"]: r for r in loaded["peers"]}
    assert list(rows) == bench_peers.CASE_NAMES
    for case in bench_peers.CASES:
        row = rows[case.name]
        if case.name == "iceoryx2" and "the rest were lost" in row["status"]:
            continue  # iceoryx2 itself lost samples (seen with 0.10 on a loaded machine): reported, not hidden
        assert row["status"] == "ok", (case.name, row["status"])
        assert row["kind"] == case.kind and row["pair"] == case.pair
        expected = {f"msgs_per_s_{SIZE_KEYS[s]}" for s in case.sizes} | {f"mb_per_s_{SIZE_KEYS[s]}" for s in case.sizes}
        if case.rtt:
            expected |= {"rtt_median_us", "rtt_p99_us"}
        measured = {k for k in row if k.startswith(("rtt_", "msgs_per_s_", "mb_per_s_"))}
        assert measured == expected, case.name
        assert all(row[k] > 0 for k in expected)


def test_every_peer_is_paired_with_an_ampipc_case_of_its_kind(
    tiny_run: tuple[dict[str, Any], list[Path], Path],
) -> None:
    document, _, _ = tiny_run
    by_name = {c.name: c for c in bench_peers.CASES}
    measured = {r["peer"] for r in document["peers"] if r["status"] == "ok"}
    seen = set()
    for p in document["pairs"]:
        peer, mine = by_name[p["peer"]], by_name[p["ampipc"]]
        assert mine.group == "ampipc" and peer.group == "peer"
        assert mine.kind == peer.kind
        assert p["kind"] in {peer.kind, "copying"}
        assert p["ampipc_advantage"] > 0
        seen.add(p["peer"])
    assert seen == {c.name for c in bench_peers.CASES if c.group == "peer" and c.name in measured}
    assert len(seen) >= len([c for c in bench_peers.CASES if c.group == "peer"]) - 1


def test_limits_spin_and_targets_are_present(tiny_run: tuple[dict[str, Any], list[Path], Path]) -> None:
    document, _, _ = tiny_run
    limits = {r["measure"]: r for r in document["limits"]}
    for measure in ("memcpy_hot_1MiB", "memcpy_cold_1MiB", "futex_rtt", "spin_rtt", "futex_rtt_one_cpu", "spin_rtt_one_cpu"):
        assert limits[measure]["status"] == "ok" and limits[measure]["value"] > 0, measure
    placements = {r["placement"] for r in document["spin"]}
    assert "unpinned" in placements and any(p.startswith("one CPU") for p in placements)
    if len(os.sched_getaffinity(0)) >= 2:
        assert any(p.startswith("two CPUs") for p in placements)
        assert limits["futex_rtt_two_cpus"]["status"] == "ok" and limits["spin_rtt_two_cpus"]["value"] > 0
    ratios = [r for r in document["spin"] if "spin_vs_no_spin" in r]
    assert len(ratios) == len(placements)
    names = [t["target"] for t in document["targets"]]
    assert len(names) == len(set(names))
    for t in document["targets"]:
        assert t["verdict"] in {"PASS", "MISS", "n/a"}
        assert (t["ratio"] is None) == (t["verdict"] == "n/a")
    # The other modules did not run: their targets say so instead of inventing a figure.
    rpmsg = next(t for t in document["targets"] if t["target"].startswith("RPMsg"))
    assert rpmsg["verdict"] == "n/a"


def test_a_target_is_the_ratio_of_two_figures_of_the_run(tiny_run: tuple[dict[str, Any], list[Path], Path]) -> None:
    document, _, _ = tiny_run
    rows = [r for r in document["peers"] if r["status"] == "ok"]
    batch = max((r for r in rows if r["group"] == "ampipc" and r["kind"] == "batch"), key=lambda r: r["msgs_per_s_64B"])
    peer = max((r for r in rows if r["group"] == "peer" and "msgs_per_s_64B" in r), key=lambda r: r["msgs_per_s_64B"])
    target = next(t for t in document["targets"] if t["target"] == "64 B one-way: ampipc batch vs the best peer call")
    assert target["ratio"] == pytest.approx(batch["msgs_per_s_64B"] / peer["msgs_per_s_64B"])
    assert target["verdict"] == ("PASS" if target["ratio"] >= 20 else "MISS")


def test_targets_from_a_hand_made_document() -> None:
    document: dict[str, Any] = {
        "peers": [
            {"peer": "ampipc", "group": "ampipc", "kind": "single", "status": "ok", "msgs_per_s_64B": 1000.0,
             "rtt_median_us": 2.0, "mb_per_s_1MiB": 900.0},
            {"peer": "ampipc (batch)", "group": "ampipc", "kind": "batch", "status": "ok", "msgs_per_s_64B": 4000.0},
            {"peer": "other", "group": "peer", "kind": "single", "status": "ok", "msgs_per_s_64B": 100.0},
            {"peer": "broken", "group": "peer", "kind": "batch", "status": "error: x", "msgs_per_s_64B": 1e9},
        ],
        "limits": [{"measure": "memcpy_hot_1MiB", "value": 1000.0, "status": "ok"}],
        "spin": [{"placement": "one CPU (0)", "spin": "default / 0", "spin_vs_no_spin": 1.2, "status": "ok"}],
        "others": {"benchmarks.bench_rpmsg": {"rows": [
            # the floor row (bare ring calls) is not the link's round trip, wherever it stands
            {"transport": "region, ring calls only (floor)", "payload_bytes": 64, "round_trip_us_median": 0.5},
            {"transport": "region (futex doorbell)", "payload_bytes": 64, "round_trip_us_median": 3.0}]}},
    }
    got = {t["target"]: t for t in run_all.targets(document)}
    assert got["64 B one-way: ampipc batch vs the best peer call"]["ratio"] == pytest.approx(40.0)
    assert got["64 B one-way: ampipc batch vs the best peer call"]["verdict"] == "PASS"
    assert got["64 B one-way: ampipc batch vs ampipc single calls"]["ratio"] == pytest.approx(4.0)
    assert got["64 B one-way: ampipc single call vs the best peer single call"]["ratio"] == pytest.approx(10.0)
    assert got["1 MiB one-way copying vs memcpy (1 MiB, hot)"]["ratio"] == pytest.approx(0.9)
    assert got["1 MiB one-way copying vs memcpy (1 MiB, cold)"]["verdict"] == "n/a"
    assert got["default spin vs spin 0, 64 B round trip, one CPU (0)"]["verdict"] == "MISS"
    assert got["RPMsg over a Region vs a MessageBuffer, 64 B round trip"]["ratio"] == pytest.approx(1.5)
    assert got["hsem 64 B round trip vs direct (1 channel, default spin)"]["verdict"] == "n/a"
    # bench_rpmsg's own MessageBuffer pair, measured like the RPMsg link, is preferred when present.
    document["others"]["benchmarks.bench_rpmsg"]["rows"].append(
        {"transport": "MessageBuffer pair (reference)", "payload_bytes": 64, "round_trip_us_median": 1.0})
    rpmsg = next(t for t in run_all.targets(document) if t["target"].startswith("RPMsg"))
    assert rpmsg["ratio"] == pytest.approx(3.0) and rpmsg["verdict"] == "MISS"


def test_plots_are_png_files(tiny_run: tuple[dict[str, Any], list[Path], Path]) -> None:
    _, written, out = tiny_run
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {"peers.png", "paths.png"}
    for p in pngs:
        assert p.parent == out and p.read_bytes()[:8] == PNG_SIGNATURE and p.stat().st_size > 10_000


def test_no_segment_is_left_behind(tiny_run: tuple[dict[str, Any], list[Path], Path]) -> None:
    prefix = f"ampipc-bench-{os.getpid()}-"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
