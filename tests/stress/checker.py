"""The kill campaign's pure part: self-checking messages and the verdict on one run.

Theory of operation
-------------------
A `Pattern` turns a sequence number into one message whose every byte depends on the number and
on the run's seed: ``seq`` (u32 LE), ``length`` (u32 LE, the whole message's length, itself
derived from ``seq``), then a body that repeats the BLAKE2b digest of (seed, seq). `classify`
recomputes the message a header claims to be and compares every byte, so a torn message (bytes
of two messages, a short copy, stale ring contents) is never mistaken for a good one; it returns
the sequence number or `TORN`.

A stream buffer carries the same messages back to back with a fixed length (``min_len ==
max_len``): `StreamReassembler` cuts the byte stream at record boundaries and classifies each
record; what is left at the end is a partial record, legitimate only as a prefix of the record
that follows the last good one (the writer died inside that write).

`check_run` is the verdict on one run, from plain facts: how many sends the writer saw return
(``acked``: it stores the count only after ``send`` returned), the sequence numbers the reader
classified, in arrival order, how the survivor's blocking call ended, how many messages were
still readable after the survivor was told ``PeerDied``, and how the victim ended. It has no
I/O, so the tests feed it made-up histories (lost, torn, duplicated, reordered) and check that
each is reported: the campaign cannot pass silently.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "HEADER",
    "PEER_DIED",
    "TORN",
    "COUNTERS",
    "Pattern",
    "StreamReassembler",
    "Verdict",
    "check_run",
]

TORN = -1
"""What `Pattern.classify` returns for bytes that are not exactly one of the run's messages."""

PEER_DIED = "PeerDied"
"""The survivor's outcome when its blocking call raised `ampipc.PeerDied` (the only right one)."""

HEADER = struct.Struct("<II")  # seq, whole length
COUNTERS = ("hangs", "torn", "lost", "disorder", "undrained", "wrong_exception")
"""The problem counters of a `Verdict`, in report order; a clean run has all of them 0."""


@dataclass(frozen=True)
class Pattern:
    """The run's messages: lengths in ``[min_len, max_len]``, contents derived from (seed, seq)."""

    seed: int
    min_len: int
    max_len: int

    def __post_init__(self) -> None:
        if not HEADER.size <= self.min_len <= self.max_len:
            raise ValueError(f"message lengths must satisfy {HEADER.size} <= min_len <= max_len")

    def _digest(self, seq: int) -> bytes:
        return hashlib.blake2b(struct.pack("<QI", self.seed & (1 << 64) - 1, seq & 0xFFFFFFFF), digest_size=32).digest()

    def message(self, seq: int) -> bytes:
        """Message number `seq`: header, then a body derived from the digest of (seed, seq)."""
        digest = self._digest(seq)
        length = self.min_len + int.from_bytes(digest[:4], "little") % (self.max_len - self.min_len + 1)
        body_len = length - HEADER.size
        body = (digest * (body_len // len(digest) + 1))[:body_len]
        return HEADER.pack(seq & 0xFFFFFFFF, length) + body

    def classify(self, data: bytes | bytearray | memoryview) -> int:
        """The sequence number of `data` if it is exactly that message, else `TORN`."""
        data = bytes(data)
        if len(data) < HEADER.size:
            return TORN
        seq, length = HEADER.unpack_from(data)
        if length != len(data) or not self.min_len <= length <= self.max_len:
            return TORN
        return seq if data == self.message(seq) else TORN


class StreamReassembler:
    """Cuts a stream of fixed-length records (`Pattern` with min_len == max_len) into records."""

    def __init__(self, pattern: Pattern) -> None:
        if pattern.min_len != pattern.max_len:
            raise ValueError("stream records have one fixed length: min_len must equal max_len")
        self.pattern = pattern
        self.record = pattern.min_len
        self._pending = bytearray()
        self._last_good = -1

    def feed(self, chunk: bytes) -> Iterator[int]:
        """Classify every record `chunk` completes (sequence numbers or `TORN`)."""
        self._pending += chunk
        while len(self._pending) >= self.record:
            seq = self.pattern.classify(self._pending[: self.record])
            del self._pending[: self.record]
            if seq != TORN:
                self._last_good = seq
            yield seq

    @property
    def partial(self) -> int:
        """Bytes of an incomplete record received so far."""
        return len(self._pending)

    def partial_is_consistent(self) -> bool:
        """True if the incomplete tail is a prefix of the record after the last good one."""
        if not self._pending:
            return True
        expected = self.pattern.message(self._last_good + 1)
        return expected.startswith(bytes(self._pending))


@dataclass
class Verdict:
    """The problems found in one run (all 0 in a clean run), with a line per problem."""

    hangs: int = 0
    torn: int = 0
    lost: int = 0
    disorder: int = 0
    undrained: int = 0
    wrong_exception: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in COUNTERS)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


def _order_problems(received: Iterable[int]) -> tuple[int, list[str]]:
    """Duplicates and out-of-order arrivals among the good sequence numbers."""
    expected = 0
    bad = 0
    notes: list[str] = []
    for position, seq in enumerate(received):
        if seq == TORN:
            continue
        if seq == expected:
            expected += 1
            continue
        bad += 1
        kind = "duplicate or late" if seq < expected else "early (skipped ahead)"
        if len(notes) < 3:
            notes.append(f"arrival {position}: message {seq} where {expected} was due ({kind})")
        if seq > expected:
            expected = seq + 1
    return bad, notes


def check_run(
    *,
    victim: str,
    acked: int,
    received: Sequence[int],
    survivor_outcome: str,
    undrained: int = 0,
    victim_killed: bool = True,
    victim_outcome: str = "",
    hang: bool = False,
    partial_ok: bool = True,
) -> Verdict:
    """The verdict on one run (see the module docstring for what each fact means).

    Writer killed: every acknowledged message (``0 .. acked-1``) must have arrived exactly once, in
    order, before ``PeerDied``; message ``acked`` may also have arrived (published, killed before
    the acknowledgement); nothing may be readable after ``PeerDied``. Reader killed: what it got
    must be whole and in order and no more than was sent; the writer must end with ``PeerDied``.
    """
    if victim not in ("writer", "reader"):
        raise ValueError(f"victim must be 'writer' or 'reader', not {victim!r}")
    v = Verdict()
    torn = sum(1 for s in received if s == TORN)
    if not partial_ok:
        torn += 1
        v.notes.append("the incomplete last record is not a prefix of the next record")
    if torn:
        v.torn = torn
        v.notes.append(f"{torn} torn message(s)")
    v.disorder, order_notes = _order_problems(received)
    v.notes += order_notes
    phantoms = sorted({s for s in received if s != TORN and s > acked})
    if phantoms:
        v.disorder += len(phantoms)
        v.notes.append(f"received message(s) {phantoms[:5]} beyond the last acknowledged {acked - 1} + 1 in flight")
    if victim == "writer":
        delivered = {s for s in received if s != TORN}
        missing = [s for s in range(acked) if s not in delivered]
        if missing:
            v.lost = len(missing)
            v.notes.append(f"{len(missing)} acknowledged message(s) never received, first {missing[:5]}")
    if undrained:
        v.undrained = undrained
        v.notes.append(f"{undrained} message(s) still readable after PeerDied (declared dead before draining)")
    if hang:
        v.hangs = 1
        v.notes.append("the survivor never returned (watchdog)")
    elif survivor_outcome != PEER_DIED:
        v.wrong_exception += 1
        v.notes.append(f"the surviving {'reader' if victim == 'writer' else 'writer'} ended with {survivor_outcome!r}, not PeerDied")
    if not victim_killed:
        v.wrong_exception += 1
        v.notes.append(f"the {victim} ended before the kill: {victim_outcome or 'no outcome recorded'}")
    return v
