"""The record width of a stream that does not declare it: inferred so that one record cannot poison it.

With neither ``messages.n_features`` nor ``messages.features`` in the config, the daemon reads
the width off the stream. Trusting the first record would let one stray record fix the width
for good (it is stored in every snapshot after it). So the daemon learns nothing until the
width is *settled*, and :class:`WidthInference` decides when it is:

- as soon as the first ``agree`` records that carry features all have one width;
- otherwise once ``samples`` records with features have come: the most common width wins
  (ties: the width seen first);
- or once the first of them has waited ``wait_s`` seconds (a slow stream), on the records so far.

Widths over ``max_features``, or whose learner state would pass the memory cap
(``refused``), never win: they are dead-lettered when their records are decoded. Records of
other widths than the settled one are dead-lettered too, with the reason naming the settled
width and how it was inferred.

The daemon holds the polls that arrive before the width is settled, unlearned and with their
offsets not yet counted as consumed, so a crash meanwhile loses nothing: the restart reads
them again. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class WidthInference:
    """Settles the width from the widths of the first records that carry features.

    Parameters
    ----------
    samples: settle on the most common width once this many records are counted.
    agree: settle at once when the first this many records all have one width.
    wait_s: settle on what was counted once the first record has waited this long.
    max_features: widths above this never win.

    >>> w = WidthInference(samples=10, agree=3, wait_s=60.0)
    >>> w.offer([3], now=0.0) is None      # a stray first record does not settle it
    True
    >>> w.offer([6] * 9, now=1.0)          # ten records: the most common width wins
    6
    >>> w.reason
    'inferred from 9 of the first 10 records'
    """

    samples: int = 100
    agree: int = 20
    wait_s: float = 10.0
    max_features: int = 10_000
    refused: dict[int, str] = field(default_factory=dict)  # width -> why it can never win
    counts: Counter = field(default_factory=Counter)
    order: list[int] = field(default_factory=list)  # widths in order of first appearance
    seen: int = 0
    first_at: float | None = None
    width: int | None = None
    reason: str = ""

    def refuse(self, width: int, why: str) -> None:
        """Never settle on ``width`` (its learner state would not fit, say)."""
        self.refused[width] = why
        self.counts.pop(width, None)

    def offer(self, widths: list[int], now: float) -> int | None:
        """Count the widths of records with features, in stream order; the settled width, if any."""
        if self.width is not None:
            return self.width
        for w in widths:
            if w < 1 or w > self.max_features or w in self.refused:
                continue
            if self.first_at is None:
                self.first_at = now
            if w not in self.counts:
                self.order.append(w)
            self.counts[w] += 1
            self.seen += 1
            if self.seen == self.agree and len(self.counts) == 1:
                return self._settle(w, f"the first {self.seen} records agree")
            if self.seen >= self.samples:
                return self._settle_on_mode(f"of the first {self.seen} records")
        return self.due(now)

    def due(self, now: float) -> int | None:
        """Settle on what was counted when the first counted record has waited ``wait_s``."""
        if self.width is None and self.first_at is not None and now - self.first_at >= self.wait_s and self.counts:
            return self._settle_on_mode(f"of the {self.seen} records that came in the first {self.wait_s:g} s")
        return self.width

    def _settle_on_mode(self, of: str) -> int:
        best = max(self.counts.values())
        w = next(w for w in self.order if self.counts.get(w) == best)
        return self._settle(w, f"inferred from {best} {of}")

    def _settle(self, w: int, reason: str) -> int:
        self.width = w
        self.reason = reason if reason.startswith("inferred") else f"inferred: {reason}"
        return w
