"""The kill -9 campaign: kill a writer or a reader at a random moment and check what the survivor sees.

Usage: ``python -m tests.stress.kill [--runs N] [--config NAME ...] [--seed S] [--jobs J] [--verbose]``
(``--list`` names the configurations). Exit status 0 only if every counter of every configuration
is 0; 1 otherwise; 2 for bad arguments; 130 when interrupted.

Theory of operation
-------------------
A *configuration* is a transport (MessageBuffer, StreamBuffer, or `ampipc.Ipc` channel 0 with
one of the strategies direct / hsem / control / toggle), a victim (the writer or the reader) and
a wait mode (``block``: every call with ``timeout=None``; ``timed``: each call draws a short
timeout, after which it is simply retried, or a long one, which must never expire).

A *run* is one fork of two fresh processes from this single-threaded driver (the buffers, the
`Ipc` objects and their dispatcher threads are created only inside the children). One child
creates the region and the transport (the writer or the reader, drawn per run), the other
attaches; both report ready through a pipe and start together. The writer sends messages
``0, 1, 2, ...`` (`checker.Pattern`: random lengths, contents derived from the number) and,
*after* each ``send`` returned, stores the count of acknowledged sends in an anonymous shared
mapping outside the region (it survives the kill: the driver reads it after both children are
reaped). The reader classifies each message it gets (sequence number or torn) into a log in the
same mapping. The driver kills the victim with SIGKILL at a moment drawn per run: after a random
delay, once a random number of messages was acknowledged (or received), or inside the victim's
completion hook (the victim kills itself in ``on_send_completed`` / ``on_receive_completed`` of
message *k*, before the strategy's notification: the window where "published" and "announced"
differ). The survivor then runs on until its blocking call raises; it must be ``PeerDied``
within the watchdog (30 s), and after ``PeerDied`` nothing may be left to read.

`checker.check_run` turns the facts into counts: hangs, torn messages, lost acknowledged
messages, duplicates / out-of-order / phantom messages, messages still readable after
``PeerDied`` (death declared before the ring was drained), and wrong exceptions (anything but
``PeerDied``, a long timeout that expired, a victim that ended before its kill, a survivor that
crashed).

Cleanup: each run's segment name is unlinked by the driver (also on Ctrl-C or SIGTERM) and both
children are killed and reaped in a ``finally``; children ignore SIGINT (the driver decides) and
die with their parent (PR_SET_PDEATHSIG), so an interrupted campaign leaves no process behind.
With ``--jobs J`` the driver forks J single-threaded worker drivers that share out the runs.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import mmap
import os
import random
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from ampipc import Ipc, MessageBuffer, PeerDied, Region, StreamBuffer

from .checker import COUNTERS, PEER_DIED, TORN, Pattern, StreamReassembler, check_run

__all__ = ["CONFIGS", "Config", "RunResult", "Summary", "main", "run_campaign", "run_one"]

TRANSPORTS = ("message", "stream", "ipc-direct", "ipc-hsem", "ipc-control", "ipc-toggle")
VICTIMS = ("writer", "reader")
MODES = ("block", "timed")
MOMENTS = ("delay", "count", "hook")

WATCHDOG = 30.0
"""Seconds the survivor has, after the kill, to end with PeerDied before the run counts as a hang."""
SETUP_TIMEOUT = 30.0
LONG_TIMEOUT = 20.0
"""The long timeout of the timed mode: a call given it must end with data or PeerDied, never expire."""
LOG_CAPACITY = 1 << 16
"""Messages one run may log; a writer that is to be killed stops sending here and waits for the kill."""
REGION_SIZE = 1 << 18
BUFFER_NAME = "kill"
SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class Config:
    transport: str
    victim: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.transport}-{self.victim}-{self.mode}"


CONFIGS: dict[str, Config] = {
    c.name: c for c in (Config(t, v, m) for t in TRANSPORTS for v in VICTIMS for m in MODES)
}


# ---- the shared control block (anonymous MAP_SHARED mapping, inherited across fork) ------------

_W_ACKED = 0  # writer: sends that returned
_W_RECEIVED = 1  # reader: entries in the log
_W_UNDRAINED = 2  # reader: messages (stream: records begun) still readable after PeerDied
_W_PARTIAL = 3  # reader (stream): bytes of an incomplete last record
_W_PARTIAL_BAD = 4  # reader (stream): 1 if that tail is not a prefix of the next record
_W_RETRIES = 5  # either side: short timeouts that expired and were retried
_W_HOOK_CALLS = 6  # victim: completion hooks run (hook moment)
_WORDS = 16
_TEXT_SIZE = 240
_TEXT_OFFSET = {"writer": 256, "reader": 512}
_LOG_OFFSET = 1024
_TORN_WORD = 0xFFFFFFFF


class Control:
    """Words, outcome texts and the reader's log, in a mapping both children inherit."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _LOG_OFFSET + 4 * LOG_CAPACITY)
        self._view = memoryview(self._map)
        self.words = self._view[: 4 * _WORDS].cast("I")
        self.log = self._view[_LOG_OFFSET:].cast("I")

    def reset(self) -> None:
        self._view[:_LOG_OFFSET] = bytes(_LOG_OFFSET)

    def set_outcome(self, role: str, text: str) -> None:
        raw = text.encode("utf-8", "replace")[: _TEXT_SIZE - 1]
        off = _TEXT_OFFSET[role]
        self._view[off : off + _TEXT_SIZE] = raw + bytes(_TEXT_SIZE - len(raw))

    def outcome(self, role: str) -> str:
        off = _TEXT_OFFSET[role]
        return bytes(self._view[off : off + _TEXT_SIZE]).split(b"\0", 1)[0].decode("utf-8", "replace")

    def received(self) -> list[int]:
        n = min(self.words[_W_RECEIVED], LOG_CAPACITY)
        return [TORN if s == _TORN_WORD else s for s in self.log[:n]]

    def close(self) -> None:
        self.words.release()
        self.log.release()
        self._view.release()
        self._map.close()


# ---- what one run draws ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunParams:
    """Everything random about one run, drawn in the driver (both children inherit it by fork)."""

    config: Config
    index: int
    seed: int
    region: str
    creator: str  # "writer" or "reader": who creates the region and the transport
    capacity: int
    pattern: Pattern
    moment: str  # delay | count | hook
    delay: float  # delay: seconds after the start
    count: int  # count: acknowledged (writer victim) or received (reader victim) messages; hook: message index
    pacing: str  # fast | slow | stall: how the reader takes messages
    stall: float
    no_spin: bool
    pause: float  # hook: the victim idles this long before message `count`, so its peer is asleep then
    kill_signal: int = signal.SIGKILL  # what the victim gets; SIGSTOP only for the watchdog's self-test

    @classmethod
    def draw(cls, config: Config, index: int, seed: int, region: str, *, sig: int = signal.SIGKILL) -> RunParams:
        rng = random.Random(seed)
        if config.transport == "stream":
            capacity = rng.choice([24, 48, 100, 256])
            record = rng.randint(8, min(40, capacity))
            pattern = Pattern(seed, record, record)
        else:
            capacity = rng.choice([48, 96, 160, 300])
            pattern = Pattern(seed, 8, rng.randint(8, capacity - 4))
        moment = rng.choice(MOMENTS)
        if sig != signal.SIGKILL and moment == "hook":
            moment = "delay"  # a victim that stops itself in a hook would stall the driver, not the survivor
        return cls(
            config=config,
            index=index,
            seed=seed,
            region=region,
            creator=rng.choice(VICTIMS),
            capacity=capacity,
            pattern=pattern,
            moment=moment,
            delay=rng.uniform(0.0, 0.02),
            count=rng.randint(0, 60) if moment == "hook" else rng.randint(0, 200),
            pacing=rng.choice(["fast", "slow", "stall"]),
            stall=rng.uniform(0.0, 0.02),
            no_spin=rng.random() < 0.5,
            pause=rng.choice([0.0, rng.uniform(0.001, 0.01)]),
            kill_signal=sig,
        )

    def describe(self) -> str:
        at = {"delay": f"{self.delay * 1000:.1f} ms", "count": f"message {self.count}", "hook": f"hook {self.count}" + (f" after a {self.pause * 1000:.1f} ms pause" if self.pause else "")}
        return (
            f"{self.config.name} run {self.index} (seed {self.seed}): kill the {self.config.victim} at "
            f"{at[self.moment]}; capacity {self.capacity}, messages {self.pattern.min_len}..{self.pattern.max_len} B, "
            f"creator {self.creator}, reader {self.pacing}, spin {'0' if self.no_spin else 'default'}"
        )


# ---- the children ---------------------------------------------------------------------------


class _Expired(Exception):
    """A call given the long timeout timed out (or a blocking call came back empty-handed)."""


class _End:
    """One side of the transport, as this process sees it: put / get / try_get over any transport."""

    def __init__(self, params: RunParams, role: str) -> None:
        creator = params.creator == role
        transport = params.config.transport
        self.stream = transport == "stream"
        self.region = Region.create(params.region, REGION_SIZE) if creator else Region.attach(params.region)
        self.ipc: Ipc | None = None
        self.ring: Any
        if transport == "message":
            self.ring = (
                MessageBuffer.create(self.region, BUFFER_NAME, params.capacity)
                if creator
                else MessageBuffer.attach(self.region, BUFFER_NAME)
            )
        elif transport == "stream":
            self.ring = (
                StreamBuffer.create(self.region, BUFFER_NAME, params.capacity)
                if creator
                else StreamBuffer.attach(self.region, BUFFER_NAME)
            )
        else:
            strategy: Any = transport.removeprefix("ipc-")  # one of ampipc.STRATEGIES
            if creator:
                self.ipc = Ipc.init(self.region, channels=1, buffer_size=params.capacity, strategy=strategy)
            else:
                self.ipc = Ipc.attach(self.region)
            self.ipc.start()
            self.ring = self.ipc.tx_buffer(0) if role == "writer" else self.ipc.rx_buffer(0)
        if params.no_spin:
            self.ring.spin = 0

    def put(self, data: bytes, timeout: float | None) -> int:
        if self.ipc is not None:
            self.ipc.send(0, data, timeout=timeout)
            return len(data)
        if self.stream:
            return int(self.ring.write(data, timeout=timeout))
        self.ring.send(data, timeout=timeout)
        return len(data)

    def get(self, max_bytes: int, timeout: float | None) -> bytes:
        if self.ipc is not None:
            return self.ipc.receive(0, timeout=timeout)
        if self.stream:
            return bytes(self.ring.read(max_bytes, timeout=timeout))
        return bytes(self.ring.receive(timeout=timeout))

    def try_get(self, max_bytes: int) -> bytes | None:
        if self.ipc is not None:
            return self.ipc.try_receive(0)
        if self.stream:
            got = bytes(self.ring.try_read(max_bytes))
            return got or None
        got = self.ring.try_receive()
        return None if got is None else bytes(got)


def _install_kill_hook(end: _End, role: str, at: int, ctl: Control) -> None:
    """Die (SIGKILL, by itself) inside completion hook number `at`, before the notification goes out."""
    ring = end.ring
    attr = "on_send_completed" if role == "writer" else "on_receive_completed"
    strategy_hook = getattr(ring, attr)
    default = ring.send_completed_from_isr if role == "writer" else ring.receive_completed_from_isr
    calls = [0]

    def hook(buffer: Any) -> None:
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        ctl.words[_W_HOOK_CALLS] = calls[0]
        if strategy_hook is None:
            default()  # what the core does when no hook is set: wake a blocked peer
        else:
            strategy_hook(buffer)

    setattr(ring, attr, hook)


def _timeouts(mode: str, rng: random.Random) -> Callable[[], float | None]:
    if mode == "block":
        return lambda: None
    return lambda: rng.uniform(0.0005, 0.005) if rng.random() < 0.5 else LONG_TIMEOUT


def _send_all(end: _End, data: bytes, next_timeout: Callable[[], float | None], ctl: Control) -> None:
    """Send one message (stream: all of one record), retrying after short timeouts only."""
    done = 0
    while True:
        timeout = next_timeout()
        try:
            done += end.put(data[done:] if done else data, timeout)
        except TimeoutError:
            if timeout is None or timeout >= LONG_TIMEOUT:
                raise _Expired(f"send timed out with timeout={timeout}") from None
            ctl.words[_W_RETRIES] += 1
            continue
        if done == len(data):
            return
        if timeout is None or timeout >= LONG_TIMEOUT:
            raise _Expired(f"write returned {done} of {len(data)} bytes with timeout={timeout}")
        ctl.words[_W_RETRIES] += 1


def _writer(end: _End, params: RunParams, ctl: Control, rng: random.Random) -> str:
    next_timeout = _timeouts(params.config.mode, rng)
    limit = LOG_CAPACITY if params.config.victim == "writer" else 1 << 32
    pause_at = params.count if params.moment == "hook" and params.config.victim == "writer" and params.pause else -1
    seq = 0
    while seq < limit:
        if seq == pause_at:
            time.sleep(params.pause)  # let the reader drain and go to sleep: the hook's death is then unannounced
        _send_all(end, params.pattern.message(seq), next_timeout, ctl)
        seq += 1
        ctl.words[_W_ACKED] = seq & 0xFFFFFFFF  # after send returned: the acknowledgement
    if params.config.victim == "writer":
        time.sleep(3600)  # everything sent: wait for the kill
    return f"sent all {seq} messages without an error"


def _reader(end: _End, params: RunParams, ctl: Control, rng: random.Random) -> str:
    next_timeout = _timeouts(params.config.mode, rng)
    pattern = params.pattern
    reassembler = StreamReassembler(pattern) if end.stream else None
    max_bytes = params.capacity
    pause_at = params.count if params.moment == "hook" and params.config.victim == "reader" and params.pause else -1
    if params.pacing == "stall":
        time.sleep(params.stall)
    try:
        while True:
            if ctl.words[_W_RECEIVED] == pause_at:
                time.sleep(params.pause)  # let the writer fill the buffer and go to sleep
                pause_at = -1
            timeout = next_timeout()
            if reassembler is not None:
                max_bytes = rng.randint(1, 3 * pattern.max_len)
            try:
                got = end.get(max_bytes, timeout)
            except TimeoutError:
                if timeout is None or timeout >= LONG_TIMEOUT:
                    raise _Expired(f"receive timed out with timeout={timeout}") from None
                ctl.words[_W_RETRIES] += 1
                continue
            if reassembler is not None:
                if not got:
                    if timeout is None or timeout >= LONG_TIMEOUT:
                        raise _Expired(f"read returned nothing with timeout={timeout}")
                    ctl.words[_W_RETRIES] += 1
                    continue
                seqs: Iterator[int] | list[int] = reassembler.feed(got)
            else:
                seqs = [pattern.classify(got)]
            for seq in seqs:
                n = ctl.words[_W_RECEIVED]
                if n < LOG_CAPACITY:
                    ctl.log[n] = _TORN_WORD if seq == TORN else seq
                    ctl.words[_W_RECEIVED] = n + 1
            if params.pacing == "slow" and rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, 0.0005))
    except PeerDied:
        pass
    # Drain before you declare death: after PeerDied nothing may be left.
    left = 0
    while (extra := end.try_get(params.capacity)) is not None:
        left += -(-len(extra) // pattern.max_len) if end.stream else 1
    ctl.words[_W_UNDRAINED] = left
    if reassembler is not None:
        ctl.words[_W_PARTIAL] = reassembler.partial
        ctl.words[_W_PARTIAL_BAD] = 0 if reassembler.partial_is_consistent() else 1
    return PEER_DIED


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(role: str, params: RunParams, ctl: Control, ready_w: int, go_r: int, parent: int) -> NoReturn:
    """The body of a forked child: set up, report ready, wait for go, write or read; never returns."""
    try:
        _die_with_parent()
        if os.getppid() != parent:
            os._exit(1)
        rng = random.Random(params.seed ^ (0x5EED if role == "writer" else 0xFEED))
        try:
            end = _End(params, role)
            if params.moment == "hook" and role == params.config.victim:
                _install_kill_hook(end, role, params.count, ctl)
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            ctl.set_outcome(role, f"setup failed: {type(e).__name__}: {e}")
            os.write(ready_w, b"E")
            os._exit(1)
        os.write(ready_w, b"R")
        if os.read(go_r, 1) != b"G":
            os._exit(1)
        try:
            outcome = _writer(end, params, ctl, rng) if role == "writer" else _reader(end, params, ctl, rng)
        except PeerDied:
            outcome = PEER_DIED
        except _Expired as e:
            outcome = f"Timeout: {e}"
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            outcome = f"{type(e).__name__}: {e}"
        ctl.set_outcome(role, outcome)
    finally:
        os._exit(0)


# ---- the driver -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run found (JSON-serialisable: workers send these to the main driver)."""

    config: str
    index: int
    seed: int
    moment: str
    counts: dict[str, int]
    notes: list[str]
    description: str
    acked: int
    received: int
    drained_after_kill: int
    retries: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())


class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.status: int | None = None

    def exited(self, timeout: float) -> bool:
        if self.status is not None:
            return True
        ready, _, _ = select.select([self.pidfd], [], [], max(timeout, 0.0))
        if ready:
            self.reap()
        return self.status is not None

    def reap(self) -> None:
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.reap()

    def close(self) -> None:
        self.kill()
        os.close(self.pidfd)

    def killed_by_sigkill(self) -> bool:
        return self.status is not None and os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    def death(self) -> str:
        if self.status is None:
            return "still running"
        if os.WIFSIGNALED(self.status):
            return f"killed by {signal.Signals(os.WTERMSIG(self.status)).name}"
        return f"exited with status {os.WEXITSTATUS(self.status)}"


def _sweep_segments(prefix: str) -> None:
    """Unlink every segment of a campaign's runs (names `prefix` + "." or "-" + ...)."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith((prefix + ".", prefix + "-")):
            _unlink_segment(name)


def _unlink_segment(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


def _await_ready(ready_r: int, child: _Child, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        ready, _, _ = select.select([ready_r, child.pidfd], [], [], left)
        if ready_r in ready:
            return os.read(ready_r, 1).decode()
        if child.pidfd in ready:
            return "died"


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _fork(children: dict[str, _Child], role: str, body: Callable[[], NoReturn]) -> _Child:
    """Fork a child running `body` and record it in `children` before any Ctrl-C can intervene."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when a run ends
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            finally:
                body()
        children[role] = child = _Child(pid)
        return child
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _kill_victim(params: RunParams, victim: _Child, ctl: Control) -> list[str]:
    notes: list[str] = []
    if params.moment == "delay":
        time.sleep(params.delay)
    elif params.moment == "count":
        word = _W_ACKED if params.config.victim == "writer" else _W_RECEIVED
        deadline = time.monotonic() + 10.0
        while ctl.words[word] < params.count and time.monotonic() < deadline:
            if victim.exited(0.0002):
                break
        if ctl.words[word] < params.count:
            notes.append(f"the victim reached {ctl.words[word]} messages, not {params.count}, before the kill")
    elif not victim.exited(10.0):
        notes.append(f"the victim never ran completion hook {params.count}: killed from outside")
    if params.kill_signal == signal.SIGKILL:
        victim.kill()
    elif victim.status is None:
        os.kill(victim.pid, params.kill_signal)  # stopped, not dead: the survivor must wait (watchdog self-test)
    return notes


def run_one(params: RunParams, ctl: Control, *, watchdog: float = WATCHDOG) -> RunResult:
    """Fork both sides, kill the victim, wait for the survivor, check. Cleans up whatever happens."""
    started = time.monotonic()
    config = params.config
    ctl.reset()
    children: dict[str, _Child] = {}
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    notes: list[str] = []
    hang = False
    try:
        first = params.creator
        second = "reader" if first == "writer" else "writer"
        parent = os.getpid()
        for role in (first, second):
            _fork(children, role, functools.partial(_child, role, params, ctl, ready_w, go_r, parent))
            state = _await_ready(ready_r, children[role], SETUP_TIMEOUT)
            if state != "R":
                children[role].kill()
                outcome = ctl.outcome(role) or f"{children[role].death()} during setup ({state})"
                raise _SetupFailed(f"the {role} did not start: {outcome}")
        os.write(go_w, b"GG")
        victim = children[config.victim]
        survivor = children["reader" if config.victim == "writer" else "writer"]
        notes += _kill_victim(params, victim, ctl)
        received_at_kill = ctl.words[_W_RECEIVED]
        if not survivor.exited(watchdog):
            hang = True
            survivor.kill()
        survivor_outcome = ctl.outcome("reader" if config.victim == "writer" else "writer")
        if not survivor_outcome and not hang:
            survivor_outcome = f"no outcome ({survivor.death()})"
        verdict = check_run(
            victim=config.victim,
            acked=ctl.words[_W_ACKED],
            received=ctl.received(),
            survivor_outcome=survivor_outcome,
            undrained=ctl.words[_W_UNDRAINED],
            victim_killed=victim.killed_by_sigkill() or (params.kill_signal != signal.SIGKILL and victim.status is None),
            victim_outcome=ctl.outcome(config.victim) or victim.death(),
            hang=hang,
            partial_ok=ctl.words[_W_PARTIAL_BAD] == 0,
        )
        counts = verdict.counts()
        notes = verdict.notes + notes
        received = ctl.words[_W_RECEIVED]
        drained = max(received - received_at_kill, 0) if config.victim == "writer" else 0
    except _SetupFailed as e:
        counts = dict.fromkeys(COUNTERS, 0)
        counts["wrong_exception"] = 1
        notes = [str(e)]
        received = drained = 0
    finally:
        # A second Ctrl-C (or the SIGTERM a parent driver forwards) must not cut the cleanup short:
        # hold the signals until the children are reaped and the segment unlinked.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        try:
            for child in children.values():
                child.close()
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)
            _unlink_segment(params.region)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return RunResult(
        config=config.name,
        index=params.index,
        seed=params.seed,
        moment=params.moment,
        counts=counts,
        notes=notes,
        description=params.describe(),
        acked=ctl.words[_W_ACKED],
        received=received,
        drained_after_kill=drained,
        retries=ctl.words[_W_RETRIES],
        seconds=time.monotonic() - started,
    )


class _SetupFailed(Exception):
    pass


def run_seed(campaign_seed: int, config: str, index: int) -> int:
    """The seed of run `index` of `config`: runs are reproducible one by one (same parameters)."""
    digest = hashlib.blake2b(f"{campaign_seed}:{config}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---- the campaign ---------------------------------------------------------------------------


@dataclass
class ConfigTotals:
    runs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    acked: int = 0
    drained_runs: int = 0
    retries: int = 0
    seconds: float = 0.0


@dataclass
class Summary:
    """Per configuration: runs and counters; the failing runs; the wall time."""

    runs_per_config: int
    seed: int
    jobs: int
    totals: dict[str, ConfigTotals]
    failures: list[RunResult]
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, result: RunResult) -> None:
        t = self.totals[result.config]
        t.runs += 1
        for k, v in result.counts.items():
            t.counts[k] += v
        t.acked += result.acked
        t.drained_runs += 1 if result.drained_after_kill else 0
        t.retries += result.retries
        t.seconds += result.seconds
        if not result.ok:
            self.failures.append(result)

    @property
    def clean(self) -> bool:
        return not self.interrupted and all(not any(t.counts.values()) for t in self.totals.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "runs_per_config": self.runs_per_config,
            "seed": self.seed,
            "jobs": self.jobs,
            "seconds": self.seconds,
            "interrupted": self.interrupted,
            "clean": self.clean,
            "configs": {name: asdict(t) for name, t in self.totals.items()},
            "failures": [asdict(f) for f in self.failures],
        }

    def report(self) -> str:
        head = f"{'configuration':<26}{'runs':>6}" + "".join(f"{_LABELS[c]:>10}" for c in COUNTERS)
        head += f"{'acked/run':>11}{'drained':>9}{'ms/run':>8}"
        lines = [
            f"kill -9 campaign: {self.runs_per_config} runs per configuration, seed {self.seed}, "
            f"{self.jobs} job(s), {self.seconds:.1f} s" + (" (INTERRUPTED)" if self.interrupted else ""),
            head,
        ]
        grand = ConfigTotals()
        for name, t in self.totals.items():
            lines.append(self._row(name, t))
            grand.runs += t.runs
            for k, v in t.counts.items():
                grand.counts[k] += v
            grand.acked += t.acked
            grand.drained_runs += t.drained_runs
            grand.seconds += t.seconds
        lines.append(self._row("TOTAL", grand))
        lines.append("drained: writer-kill runs in which the reader still received messages after the kill")
        for f in self.failures[:20]:
            lines.append(f"FAIL {f.description}")
            lines += [f"     {n}" for n in f.notes]
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failing runs")
        lines.append("result: " + ("all counters 0" if self.clean else "PROBLEMS FOUND" if not self.interrupted else "interrupted"))
        return "\n".join(lines)

    @staticmethod
    def _row(name: str, t: ConfigTotals) -> str:
        per_run = t.acked / t.runs if t.runs else 0.0
        ms = 1000 * t.seconds / t.runs if t.runs else 0.0
        return (
            f"{name:<26}{t.runs:>6}" + "".join(f"{t.counts[c]:>10}" for c in COUNTERS)
            + f"{per_run:>11.1f}{t.drained_runs:>9}{ms:>8.0f}"
        )


_LABELS = {"hangs": "hangs", "torn": "torn", "lost": "lost", "disorder": "disorder", "undrained": "undrained", "wrong_exception": "wrong-exc"}


def _longest_region_name(prefix: str, jobs: int, tasks: int) -> int:
    worker = len(f"-{jobs - 1}") if jobs > 1 else 0
    return len(prefix) + worker + len(f".{max(tasks - 1, 0):x}")


def _tasks(configs: Sequence[str], runs: int) -> list[tuple[str, int]]:
    # interleaved, so every configuration progresses at once and an interrupted campaign still covers all
    return [(c, i) for i in range(runs) for c in configs]


def _run_tasks(
    tasks: Sequence[tuple[str, int]], seed: int, prefix: str, watchdog: float, sig: int, emit: Callable[[RunResult], None]
) -> None:
    ctl = Control()
    try:
        for n, (config, index) in enumerate(tasks):
            params = RunParams.draw(CONFIGS[config], index, run_seed(seed, config, index), f"{prefix}.{n:x}", sig=sig)
            emit(run_one(params, ctl, watchdog=watchdog))
    finally:
        ctl.close()


_interrupted = False


def _raise_interrupt(signum: int, frame: object) -> None:
    """SIGINT / SIGTERM: raise KeyboardInterrupt once; later signals must not cut the cleanup short."""
    global _interrupted
    if not _interrupted:
        _interrupted = True
        raise KeyboardInterrupt


def _write_line(fd: int, result: RunResult) -> None:
    view = memoryview((json.dumps(asdict(result)) + "\n").encode())
    while view:
        view = view[os.write(fd, view) :]


def _worker(tasks: Sequence[tuple[str, int]], seed: int, prefix: str, watchdog: float, sig: int, out_w: int) -> NoReturn:
    """A worker driver: runs its share of the tasks, one JSON line per result to the main driver."""
    status = 0
    try:
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        _die_with_parent()
        _run_tasks(tasks, seed, prefix, watchdog, sig, lambda r: _write_line(out_w, r))
    except (KeyboardInterrupt, BrokenPipeError):
        status = 130  # interrupted, or the main driver stopped listening
    except BaseException:  # noqa: BLE001 - a bug of the campaign itself: show it
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def run_campaign(
    configs: Sequence[str],
    runs: int,
    *,
    seed: int,
    jobs: int = 1,
    prefix: str | None = None,
    watchdog: float = WATCHDOG,
    sig: int = signal.SIGKILL,
    on_result: Callable[[RunResult], None] | None = None,
) -> Summary:
    """Run `runs` runs of each configuration on `jobs` worker drivers; Ctrl-C ends it early (cleanly)."""
    global _interrupted
    _interrupted = False
    prefix = prefix or f"ampipc-kill-{os.getpid()}"
    longest = _longest_region_name(prefix, jobs, runs * len(configs))
    if longest > 31:
        raise ValueError(f"region names would be {longest} characters (at most 31): use a shorter prefix")
    summary = Summary(runs, seed, jobs, {c: ConfigTotals() for c in configs}, [])
    started = time.monotonic()

    def emit(result: RunResult) -> None:
        summary.add(result)
        if on_result is not None:
            on_result(result)

    tasks = _tasks(configs, runs)
    previous = {s: signal.signal(s, _raise_interrupt) for s in _INTERRUPTS}
    try:
        if jobs <= 1:
            _run_tasks(tasks, seed, prefix, watchdog, sig, emit)
        else:
            _run_workers(tasks, jobs, seed, prefix, watchdog, sig, emit)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        # Every run unlinks its own segment, but an interrupt that lands as a run's cleanup begins
        # can cut it short: once every driver is gone, nothing of this campaign's may be left.
        _sweep_segments(prefix)
        for s, handler in previous.items():
            signal.signal(s, handler)
        summary.seconds = time.monotonic() - started
    if summary.interrupted:
        pass
    elif sum(t.runs for t in summary.totals.values()) != len(tasks):
        summary.interrupted = True  # a worker died: its runs are missing
    return summary


def _run_workers(
    tasks: Sequence[tuple[str, int]],
    jobs: int,
    seed: int,
    prefix: str,
    watchdog: float,
    sig: int,
    emit: Callable[[RunResult], None],
) -> None:
    workers: dict[str, _Child] = {}
    pipes: dict[int, bytearray] = {}  # read end -> bytes of a line not yet complete
    try:
        for j in range(jobs):
            out_r, out_w = os.pipe()
            pipes[out_r] = bytearray()

            def body(j: int = j, out_r: int = out_r, out_w: int = out_w) -> NoReturn:
                for fd in pipes:
                    os.close(fd)
                _worker(tasks[j::jobs], seed, f"{prefix}-{j}", watchdog, sig, out_w)

            _fork(workers, str(j), body)
            os.close(out_w)
        while pipes:
            ready, _, _ = select.select(list(pipes), [], [])
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    del pipes[fd]
                    os.close(fd)
                    continue
                pending = pipes[fd]
                pending += chunk
                *lines, rest = bytes(pending).split(b"\n")
                pipes[fd] = bytearray(rest)
                for line in lines:
                    emit(RunResult(**json.loads(line)))
    finally:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        try:
            for fd in pipes:
                os.close(fd)  # a worker still writing gets EPIPE instead of blocking forever
            for worker in workers.values():
                if worker.status is None:
                    os.kill(worker.pid, signal.SIGTERM)  # it cleans up its run, then exits
            for worker in workers.values():
                worker.reap()
                os.close(worker.pidfd)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.stress.kill",
        description="kill -9 a writer or a reader at random moments; check that nothing acknowledged is lost",
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs per configuration (default 1000)")
    parser.add_argument("--config", action="append", metavar="NAME", help="a configuration (repeatable; default all); see --list")
    parser.add_argument("--seed", type=int, default=None, help="campaign seed (default: random, printed)")
    parser.add_argument("--jobs", type=int, default=1, help="worker drivers running at once (default 1)")
    parser.add_argument("--watchdog", type=float, default=WATCHDOG, help=f"seconds before a survivor counts as hung (default {WATCHDOG:g})")
    parser.add_argument(
        "--signal",
        choices=["KILL", "STOP"],
        default="KILL",
        help="what the victim gets (default KILL); STOP is the watchdog's self-test: a stopped peer is alive, so every run must count as a hang",
    )
    parser.add_argument("--name-prefix", default=None, help="prefix of the region names (default ampipc-kill-<pid>)")
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CONFIGS))
        return 0
    configs = args.config or list(CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown configuration(s) {', '.join(unknown)}; --list names them", file=sys.stderr)
        return 2
    if args.runs < 1 or args.jobs < 1 or args.watchdog <= 0:
        print("--runs and --jobs must be at least 1 and --watchdog positive", file=sys.stderr)
        return 2
    longest = _longest_region_name(args.name_prefix or f"ampipc-kill-{os.getpid()}", args.jobs, args.runs * len(configs))
    if longest > 31:
        print(f"region names would be {longest} characters, at most 31 are allowed: shorten --name-prefix", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    progress = {"runs": 0, "shown": time.monotonic()}
    total = args.runs * len(configs)

    def on_result(r: RunResult) -> None:
        progress["runs"] += 1
        if args.verbose:
            state = "ok  " if r.ok else "FAIL"
            print(f"{state} {r.description}: acked {r.acked}, received {r.received}, {1000 * r.seconds:.0f} ms", flush=True)
            for n in r.notes:
                print(f"       {n}", flush=True)
        elif time.monotonic() - progress["shown"] > 5:
            progress["shown"] = time.monotonic()
            print(f"... {progress['runs']}/{total} runs", file=sys.stderr, flush=True)

    summary = run_campaign(
        configs,
        args.runs,
        seed=seed,
        jobs=args.jobs,
        prefix=args.name_prefix,
        watchdog=args.watchdog,
        sig=signal.Signals[f"SIG{args.signal}"],
        on_result=on_result,
    )
    print(summary.report())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary.to_json(), f, indent=1)
    if summary.interrupted:
        return 130
    return 0 if summary.clean else 1


if __name__ == "__main__":
    sys.exit(main())
