"""The kill -9 campaign in short (CI), its watchdog and Ctrl-C cleanup, and the checker's own tests.

The campaign runs as a subprocess (``python -m tests.stress.kill``, the command the README names),
so its fork-based driver never forks this multi-purpose pytest process. ``AMPIPC_KILL_RUNS``
(default 30) sets the runs per configuration, ``AMPIPC_KILL_JOBS`` (default 2) the worker
drivers, ``AMPIPC_KILL_SEED`` the seed (default: random, shown in every failure).

The checker tests feed `checker.check_run` histories with known defects (built from real
`Pattern` messages where contents matter) and assert each is counted, so a broken checker cannot
let the campaign pass silently.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.stress.checker import PEER_DIED, TORN, Pattern, StreamReassembler, check_run
from tests.stress.kill import CONFIGS, MODES, TRANSPORTS, VICTIMS

REPO = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("AMPIPC_KILL_RUNS", "30"))
JOBS = int(os.environ.get("AMPIPC_KILL_JOBS", "2"))
SEED = int(os.environ["AMPIPC_KILL_SEED"]) if "AMPIPC_KILL_SEED" in os.environ else random.randrange(1 << 32)
CAMPAIGN_TIMEOUT = 900.0


def _campaign(args: list[str], tmp_path: Path, prefix: str, timeout: float = CAMPAIGN_TIMEOUT) -> tuple[int, dict[str, Any], str]:
    """Run the campaign command; return its exit status, its JSON summary and its printed report."""
    out = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "tests.stress.kill", "--name-prefix", prefix, "--json", str(out), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        report, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    summary = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, summary, report


def _segments(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


def _session_processes(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


# ---- the campaign, short ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_kill_campaign_loses_nothing(transport: str, tmp_path: Path, unique_name: Callable[..., str]) -> None:
    """Every configuration of `transport` (both victims, blocking and timed): all counters 0."""
    configs = [f"{transport}-{v}-{m}" for v in VICTIMS for m in MODES]
    prefix = unique_name("k")
    args = ["--runs", str(RUNS), "--jobs", str(JOBS), "--seed", str(SEED)]
    for c in configs:
        args += ["--config", c]
    status, summary, report = _campaign(args, tmp_path, prefix)
    assert summary, f"no summary written (exit status {status}):\n{report}"
    for c in configs:
        totals = summary["configs"][c]
        assert totals["runs"] == RUNS, f"{c}: {totals['runs']} of {RUNS} runs (seed {SEED})\n{report}"
        assert all(v == 0 for v in totals["counts"].values()), f"{c}: {totals['counts']} (seed {SEED})\n{report}"
    assert status == 0, f"exit status {status} (seed {SEED})\n{report}"
    assert summary["clean"] is True
    assert _segments(prefix) == []


def test_every_configuration_is_covered() -> None:
    """The short campaign above runs each of the 24 configurations the issue lists."""
    covered = {f"{t}-{v}-{m}" for t in TRANSPORTS for v in VICTIMS for m in MODES}
    assert covered == set(CONFIGS) and len(CONFIGS) == 24
    assert {c.transport for c in CONFIGS.values()} == {
        "message", "stream", "ipc-direct", "ipc-hsem", "ipc-control", "ipc-toggle"
    }


def test_a_stopped_peer_counts_as_a_hang(tmp_path: Path, unique_name: Callable[..., str]) -> None:
    """SIGSTOP instead of SIGKILL: the peer is alive, so the survivor must wait and the watchdog fire."""
    prefix = unique_name("h")
    configs = ["message-writer-block", "stream-reader-timed", "ipc-control-writer-timed"]
    args = ["--runs", "2", "--signal", "STOP", "--watchdog", "1", "--seed", str(SEED)]
    for c in configs:
        args += ["--config", c]
    status, summary, report = _campaign(args, tmp_path, prefix, timeout=300)
    assert status == 1, report
    for c in configs:
        assert summary["configs"][c]["runs"] == 2
        assert summary["configs"][c]["counts"]["hangs"] == 2, report
    assert "the survivor never returned (watchdog)" in report
    assert _segments(prefix) == []


def test_ctrl_c_stops_the_campaign_cleanly(unique_name: Callable[..., str]) -> None:
    """SIGINT to the whole process group mid-campaign: exit 130, no segment and no process left."""
    prefix = unique_name("c")
    cmd = [sys.executable, "-m", "tests.stress.kill", "--runs", "200", "--jobs", "2", "--verbose", "--name-prefix", prefix]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        for _ in range(6):  # some runs are done: the workers are busy with the next ones
            line = proc.stdout.readline()
            assert line, "the campaign ended before any run"
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, rest
        assert "result: interrupted" in rest
        deadline = time.monotonic() + 30
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # children killed with SIGKILL disappear as they are reaped
        assert _session_processes(proc.pid) == []
        assert _segments(prefix) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        for name in _segments(prefix):
            os.unlink(f"/dev/shm/{name}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "no-such-config"], "unknown configuration"),
        (["--runs", "0"], "at least 1"),
        (["--name-prefix", "ampipc-test-" + "x" * 30], "at most 31"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.stress.kill", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


# ---- the checker: it must see every kind of problem -------------------------------------------

PATTERN = Pattern(seed=12345, min_len=8, max_len=200)


def test_messages_are_self_checking() -> None:
    for seq in range(500):
        msg = PATTERN.message(seq)
        assert PATTERN.min_len <= len(msg) <= PATTERN.max_len
        assert PATTERN.classify(msg) == seq
    a, b = PATTERN.message(7), PATTERN.message(8)
    assert PATTERN.classify(a[: len(a) // 2] + b[len(a) // 2 :]) == TORN  # bytes of two messages
    assert PATTERN.classify(a[:-1]) == TORN  # short copy
    flipped = bytearray(a)
    flipped[-1] ^= 0x01
    assert PATTERN.classify(bytes(flipped)) == TORN  # one bit of the body
    assert PATTERN.classify(bytes(len(a))) == TORN  # stale zeros
    assert PATTERN.classify(b"") == TORN
    assert Pattern(seed=1, min_len=8, max_len=200).classify(a) == TORN  # another run's message


def _classified(messages: list[bytes]) -> list[int]:
    return [PATTERN.classify(m) for m in messages]


def test_a_clean_writer_kill_passes() -> None:
    msgs = [PATTERN.message(s) for s in range(10)]
    assert check_run(victim="writer", acked=10, received=_classified(msgs), survivor_outcome=PEER_DIED).ok
    # the message published but not yet acknowledged may arrive too
    inflight = msgs + [PATTERN.message(10)]
    assert check_run(victim="writer", acked=10, received=_classified(inflight), survivor_outcome=PEER_DIED).ok


def test_a_lost_acknowledged_message_is_reported() -> None:
    msgs = [PATTERN.message(s) for s in range(10) if s != 4]
    v = check_run(victim="writer", acked=10, received=_classified(msgs), survivor_outcome=PEER_DIED)
    assert v.lost == 1 and not v.ok
    tail_lost = check_run(victim="writer", acked=10, received=list(range(8)), survivor_outcome=PEER_DIED)
    assert tail_lost.lost == 2  # the last two acknowledged, never received (death declared too early)


def test_a_torn_message_is_reported() -> None:
    a, b = PATTERN.message(3), PATTERN.message(4)
    spliced = a[:10] + b[10 : len(a)] if len(b) >= len(a) else b[:10] + a[10 : len(b)]
    received = _classified([PATTERN.message(0), PATTERN.message(1), PATTERN.message(2), spliced, PATTERN.message(4)])
    v = check_run(victim="writer", acked=5, received=received, survivor_outcome=PEER_DIED)
    assert v.torn == 1 and v.lost == 1 and not v.ok


def test_duplicates_reordering_and_phantoms_are_reported() -> None:
    dup = check_run(victim="writer", acked=4, received=[0, 1, 1, 2, 3], survivor_outcome=PEER_DIED)
    assert dup.disorder == 1 and dup.lost == 0
    swapped = check_run(victim="writer", acked=4, received=[0, 2, 1, 3], survivor_outcome=PEER_DIED)
    assert swapped.disorder >= 1
    phantom = check_run(victim="writer", acked=4, received=[0, 1, 2, 3, 4, 5], survivor_outcome=PEER_DIED)
    assert phantom.disorder == 1  # message 5 was never sent: 4 may be in flight, 5 cannot be
    reader_dup = check_run(victim="reader", acked=9, received=[0, 1, 2, 2], survivor_outcome=PEER_DIED)
    assert reader_dup.disorder == 1 and reader_dup.lost == 0  # a dead reader loses nothing of its own


def test_wrong_endings_are_reported() -> None:
    timeout = check_run(victim="writer", acked=2, received=[0, 1], survivor_outcome="Timeout: receive timed out")
    assert timeout.wrong_exception == 1
    hang = check_run(victim="reader", acked=2, received=[0], survivor_outcome="", hang=True)
    assert hang.hangs == 1 and hang.wrong_exception == 0
    early = check_run(victim="writer", acked=2, received=[0, 1], survivor_outcome=PEER_DIED, victim_killed=False,
                      victim_outcome="PeerDied: the reader died")
    assert early.wrong_exception == 1 and "before the kill" in early.notes[-1]
    undrained = check_run(victim="writer", acked=2, received=[0, 1], survivor_outcome=PEER_DIED, undrained=1)
    assert undrained.undrained == 1 and not undrained.ok
    with pytest.raises(ValueError):
        check_run(victim="both", acked=0, received=[], survivor_outcome=PEER_DIED)


def test_stream_records_and_partial_tails() -> None:
    pattern = Pattern(seed=99, min_len=13, max_len=13)
    stream = b"".join(pattern.message(s) for s in range(20))
    r = StreamReassembler(pattern)
    got: list[int] = []
    pos = 0
    rng = random.Random(5)
    cut = len(stream) - 6  # the writer died inside the write of record 19
    while pos < cut:
        n = min(rng.randint(1, 30), cut - pos)
        got += r.feed(stream[pos : pos + n])
        pos += n
    assert got == list(range(19)) and r.partial == 7 and r.partial_is_consistent()
    bad = StreamReassembler(pattern)
    list(bad.feed(stream[:13] + b"\0" * 5))
    assert not bad.partial_is_consistent()
    v = check_run(victim="writer", acked=1, received=[0], survivor_outcome=PEER_DIED, partial_ok=False)
    assert v.torn == 1
    corrupt = StreamReassembler(pattern)
    assert list(corrupt.feed(stream[:13] + stream[14:27] + stream[13:14])) == [0, TORN]
    with pytest.raises(ValueError):
        StreamReassembler(PATTERN)


@settings(max_examples=200, deadline=None)
@given(
    acked=st.integers(0, 40),
    inflight=st.booleans(),
    defect=st.sampled_from(["none", "drop", "duplicate", "swap", "tear", "phantom"]),
    where=st.integers(0, 1000),
)
def test_checker_against_a_model(acked: int, inflight: bool, defect: str, where: int) -> None:
    """A history from the model (0..acked-1, maybe the in-flight one) passes; each defect is flagged."""
    history = list(range(acked + (1 if inflight else 0)))
    if defect != "none" and not history and defect != "phantom":
        defect = "none"
    i = where % len(history) if history else 0
    if defect == "drop":
        del history[i]
    elif defect == "duplicate":
        history.insert(i, history[i])
    elif defect == "swap":
        if len(history) < 2:
            defect = "none"
        else:
            j = max(i, 1)
            history[j - 1], history[j] = history[j], history[j - 1]
    elif defect == "tear":
        history[i] = TORN
    elif defect == "phantom":
        history.append(acked + 1 + where % 5)
    if defect == "drop" and inflight and i == acked:
        defect = "none"  # the message in flight may be missing: it was never acknowledged
    v = check_run(victim="writer", acked=acked, received=history, survivor_outcome=PEER_DIED)
    if defect == "none":
        assert v.ok, (history, v.notes)
        return
    assert not v.ok, (defect, history)
    expected = {"drop": "lost", "duplicate": "disorder", "swap": "disorder", "tear": "torn", "phantom": "disorder"}
    assert getattr(v, expected[defect]) >= 1, (defect, history, v.notes)
