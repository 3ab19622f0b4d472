"""Gap detection on import routes (sans-I/O).

Theory of operation
-------------------
Every export route numbers its messages 1, 2, 3... within an *epoch* (a random 64-bit value it
draws when it starts; see `ampipc.bridge._wire.SAMPLE_HEADER`). An import route feeds each
sample's (epoch, sequence) to a `SequenceTracker`, which remembers the last number per epoch:

- the first sample of an epoch starts it (numbers before it went to earlier subscribers: the
  exporter publishes only while someone matches, so they are not counted as lost);
- a number above last + 1 means ``number - last - 1`` messages were lost on the way (a Zenoh
  drop under congestion control DROP, a link that closed with messages queued);
- a number at or below the last one is out of order (counted; Zenoh's reliable channel keeps
  a publisher's order, so this is a protocol error upstream).

At most `max_epochs` epochs are remembered (the oldest forgotten first), so a peer that restarts
forever cannot grow the table.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SequenceTracker"]


class SequenceTracker:
    def __init__(self, max_epochs: int = 64) -> None:
        if max_epochs < 1:
            raise ValueError("max_epochs must be at least 1")
        self.max_epochs = max_epochs
        self._last: OrderedDict[int, int] = OrderedDict()
        self.lost = 0
        self.out_of_order = 0
        self.epochs_seen = 0

    def observe(self, epoch: int, sequence: int) -> int:
        """Account for one sample; returns how many messages of its epoch went missing just before it."""
        last = self._last.get(epoch)
        if last is None:
            self.epochs_seen += 1
            self._last[epoch] = sequence
            while len(self._last) > self.max_epochs:
                self._last.popitem(last=False)
            return 0
        self._last.move_to_end(epoch)
        if sequence <= last:
            self.out_of_order += 1
            return 0
        self._last[epoch] = sequence
        missing = sequence - last - 1
        self.lost += missing
        return missing

    def observe_batch(self, epoch: int, first: int, count: int) -> int:
        """Account for `count` consecutive messages numbered from `first` (a packed sample)."""
        missing = self.observe(epoch, first)
        if count > 1 and self._last.get(epoch, 0) < first + count - 1:
            self._last[epoch] = first + count - 1
        return missing
