"""Drift detectors whose whole state is plain numbers and numpy arrays, so a snapshot restores them exactly.

river's detectors are the reference for what each one computes, but their state cannot always be
stored without pickle: river's ``ADWIN`` wraps a Rust object whose buckets can be neither read nor
set. This module holds detectors that give the same detections as river's, each with
``to_state()`` / ``from_state()`` (a :class:`~ocld.learners.base.LearnerState` of numpy arrays and
JSON-able parameters, never pickle), so that a stream fed with a save and restore anywhere gives
bit-identical detections and state to an uninterrupted run.

- :class:`ADWIN`: river's ADWIN (Bifet and Gavalda, 2007; the bucket variant ADWIN2) written
  again over numpy arrays: the same parameters, the same floating-point operations in the same
  order, hence the same ``drift_detected``, ``estimation``, ``width``, ``variance``, ``total`` and
  ``n_detections`` as ``river.drift.ADWIN`` (golden tests in ``tests/unit/test_detectors.py``).
  ``update_many`` inserts a whole batch at once: the insertions between two ``clock`` checks only
  append to the bucket rows, so every row is processed as one vector operation for the batch, and
  the cut checks of all the batch's clock ticks are evaluated as one matrix.
- :class:`PageHinkley` and :class:`DDM`: river's arithmetic, one loop over the batch with the
  state in local variables (a few float operations each; no per-sample method calls). Checked
  against river's detections and attributes.
- :class:`KSWIN`: river's own object (its Kolmogorov-Smirnov p-value comes from scipy, which is
  not worth reproducing); its attributes are plain (a deque of values, counters and a
  ``random.Random`` whose state is stored as an integer array), so they are read and set exactly.

Every detector takes ``update(x)`` like river's (one value; then ``drift_detected``) and
``update_many(values)``, which returns one :class:`Detection` per value at which it fired. As in
river, a detector that fired resets itself at its next update.

Never does I/O; river is imported only when a KSWIN is built.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import LearnerState

__all__ = ["ADWIN", "DDM", "DETECTOR_CLASSES", "KSWIN", "Detection", "Detector", "PageHinkley"]


@dataclass(frozen=True)
class Detection:
    """One detection by a detector fed with ``update_many(values)``.

    index: position in ``values`` of the value at which the detector fired.
    statistic: the detector's estimate after that update (ADWIN: mean of the kept window;
        KSWIN: the test's p-value; None for the others).
    rising: whether the monitored mean rose (ADWIN: mean of the window kept after the cut above
        the mean before the update; a one-sided Page-Hinkley test: its side); None when unknown.
    """

    index: int
    statistic: float | None
    rising: bool | None


class Detector(ABC):
    """A drift detector with river's interface (``update``, ``drift_detected``) plus batch updates
    and an exact state of arrays."""

    name: ClassVar[str]
    _drift_detected: bool

    @property
    def drift_detected(self) -> bool:
        """Whether the last update fired (the next update then starts from a fresh detector)."""
        return self._drift_detected

    def update(self, x: float) -> None:
        """Feed one value (river's interface); read ``drift_detected`` afterwards."""
        self.update_many(np.array([x], dtype=np.float64))

    @abstractmethod
    def update_many(self, values: np.ndarray) -> list[Detection]:
        """Feed ``values`` in order; one Detection per value at which the detector fired."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""

    @abstractmethod
    def to_state(self) -> LearnerState:
        """The exact state: numpy arrays (floats bit for bit) and JSON-able parameters."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: LearnerState) -> Detector:
        """The detector ``to_state`` described, ready to continue bit-identically."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


def _ln(x: float) -> float:
    """Natural log with IEEE results where ``math.log`` raises: -inf at 0, nan below (as Rust's ``ln``)."""
    if x > 0.0:
        return math.log(x)
    return -math.inf if x == 0.0 else math.nan


def _f(state: LearnerState, name: str) -> float:
    return float(np.asarray(state.arrays[name], dtype=np.float64).reshape(-1)[0])


# -- ADWIN ---------------------------------------------------------------------------------------
class ADWIN(Detector):
    """Adaptive windowing (ADWIN2 with exponential buckets), as ``river.drift.ADWIN``.

    The window is summarized by rows of buckets: row ``r`` holds up to ``max_buckets`` buckets of
    ``2**r`` values each (total and sum of squared deviations), oldest first; a row that reaches
    ``max_buckets + 1`` merges its two oldest buckets into one of the next row. Every ``clock``
    updates (once more than ``grace_period`` values are in the window) each cut of the window into
    an older part W0 and a newer part W1 at a bucket boundary is tested:
    ``|mean(W0) - mean(W1)| > sqrt(2 m v d') + 2/3 d' m`` with ``m = 1/(n0 - l + 1) + 1/(n1 - l + 1)``,
    ``v`` the window's variance, ``d' = ln(2 ln(width) / delta)`` and ``l = min_window_length``
    (both parts at least ``l`` long). While a cut holds, the oldest bucket is dropped; the update
    then reports a drift, and the next update starts from an empty window (as river does).

    Parameters
    ----------
    delta : float
        Significance value, in (0, 1); smaller detects less.
    clock : int
        Cuts are tested every ``clock`` updates.
    max_buckets : int
        Buckets of each size kept before two are merged; at least 2 (with 1 river's own ADWIN can
        delete a bucket from an empty row).
    min_window_length : int
        Neither part of a cut may hold fewer values.
    grace_period : int
        No test until the window holds more values.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.5]).astype(float)
    >>> adwin = ADWIN()
    >>> [d.index for d in adwin.update_many(errors)]
    [2047]
    >>> back = ADWIN.from_state(adwin.to_state())
    >>> (back.width, back.estimation) == (adwin.width, adwin.estimation)
    True
    """

    name = "ADWIN"
    # Values inserted per vectorized pass: bounds the work thrown away when a drift is found early
    # in a long batch (the state is then taken at the detection and the rest is inserted again).
    _CHUNK = 2048
    # With 0/1 values every bucket's total is an integer and its variance t (n - t) / n is exactly
    # what river's merges compute while n <= 2**24 (every intermediate value fits in 53 bits), so
    # batches that reach no higher row skip the merge arithmetic.
    _BINARY_ROWS = 25

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5, min_window_length: int = 5,
                 grace_period: int = 10) -> None:
        if not 0.0 < float(delta) < 1.0:
            raise ValueError(f"ADWIN delta must be in (0, 1); got {delta}")
        if int(clock) < 1:
            raise ValueError(f"ADWIN clock must be >= 1; got {clock}")
        if int(max_buckets) < 2:
            raise ValueError(f"ADWIN max_buckets must be >= 2; got {max_buckets}")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._reset()

    def params(self) -> dict[str, Any]:
        return {"delta": self.delta, "clock": self.clock, "max_buckets": self.max_buckets,
                "min_window_length": self.min_window_length, "grace_period": self.grace_period}

    def _reset(self) -> None:
        self._counts: list[int] = []  # buckets per row, row 0 (single values) first; no empty row on top
        # The buckets oldest first. While every value since the reset is 0 or 1 (``_binary``) they are
        # kept as running sums, ``_bounds`` (values) and ``_sums`` (total) of the window up to the
        # end of each bucket: integers, so exact, and what the cut tests need. Otherwise as each
        # bucket's size, total and variance (``_sizes``, ``_totals``, ``_variances``).
        self._binary = True
        self._bounds = np.zeros(0)
        self._sums = np.zeros(0)
        self._sizes = self._totals = self._variances = np.zeros(0)
        self._width = 0.0
        self._total = 0.0
        self._variance = 0.0  # sum of squared deviations from the window's mean (not divided)
        self._tick = 0  # updates since the last reset (cuts are tested when it is a multiple of clock)
        self._n_detections = 0
        self._drift_detected = False

    # -- river's read-only properties ----------------------------------------------------------
    @property
    def width(self) -> float:
        """Number of values in the window."""
        return self._width

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return self._total

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the window's mean (as river's ``variance``)."""
        return self._variance

    @property
    def estimation(self) -> float:
        """Mean of the window (0 when it is empty)."""
        return self._total / self._width if self._width else 0.0

    @property
    def n_detections(self) -> int:
        """Detections since the last reset (river counts per internal window, so this is 0 or 1)."""
        return self._n_detections

    def _buckets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(size, total, variance) of every bucket, oldest first."""
        if not self._binary:
            return self._sizes, self._totals, self._variances
        sizes = np.diff(self._bounds, prepend=0.0)
        totals = np.diff(self._sums, prepend=0.0)
        # A bucket of n values 0/1 with total t: river's merges compute exactly t (n - t) / n (_BINARY_ROWS).
        return sizes, totals, totals * (sizes - totals) / sizes

    def _leave_binary(self) -> None:
        self._sizes, self._totals, self._variances = self._buckets()
        self._binary = False
        self._bounds = self._sums = np.zeros(0)

    # -- updates --------------------------------------------------------------------------------
    def update_many(self, values: np.ndarray) -> list[Detection]:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        found: list[Detection] = []
        pos = 0
        while pos < x.size:
            before = self.estimation  # river's monitor reads it before the update that may reset
            if self._drift_detected:
                self._reset()
            seg = x[pos:pos + self._CHUNK]
            with np.errstate(divide="ignore", invalid="ignore"):  # empty slots in the cut tests (see _test)
                hit = self._advance(seg)
            if hit is None:
                pos += seg.size
                continue
            at, before_at = hit
            after = self.estimation
            found.append(Detection(pos + at, after, after > (before if at == 0 else before_at)))
            pos += at + 1
        return found

    def _advance(self, seg: np.ndarray) -> tuple[int, float] | None:
        """Insert ``seg`` and test the cuts at its clock ticks. Stops at the first detection:
        returns (its position in ``seg``, the estimation just before that value) with the state
        taken right after it (cuts applied), or None with all of ``seg`` inserted."""
        n = seg.size
        w0, tick0 = self._width, self._tick
        # Window statistics after each insertion, as river's sequential updates compute them:
        # variance += (w - 1) * d * d / w with d = x - total / (w - 1); total += x.
        # ``accumulate`` adds strictly left to right, so the sums are bit-identical.
        width = w0 + np.arange(1.0, n + 1.0)
        total = np.add.accumulate(np.concatenate(((self._total,), seg)))
        prev = width - 1.0
        d = seg - total[:-1] / prev
        inc = prev * d * d / width
        if w0 == 0.0:
            inc[0] = 0.0  # the first value of a window adds no variance
        variance = np.add.accumulate(np.concatenate(((self._variance,), inc)))

        lay = self._layout(n, tick0)
        # x * x == x holds for 0 and 1 only (and -0.0, whose bucket totals then read +0.0: no value differs)
        if self._binary and (len(lay.held) > self._BINARY_ROWS or not (seg * seg == seg).all()):
            self._leave_binary()
        keep = (self._bounds.size if self._binary else self._totals.size) - lay.held_total
        if self._binary:
            # the window's running sums at every boundary of the held buckets and of the new values
            queues: Any = (np.concatenate(((0.0,), self._bounds, width)),
                           np.concatenate(((0.0,), self._sums, total[1:])))
        else:
            queues = self._merge(seg, lay)
        ticks = lay.ticks
        k = ticks.size
        rows = np.arange(k)
        if k and width[ticks[0] - 1] <= self.grace_period:  # the window is still short: some ticks test nothing
            rows = np.flatnonzero(width[ticks - 1] > self.grace_period)
        hit = -1
        if rows.size:
            at = ticks[rows]
            fired = self._test(lay, rows, keep, queues, width[at - 1], total[at], variance[at])
            if fired.any():
                hit = int(rows[int(np.argmax(fired))])
        t = int(ticks[hit]) if hit >= 0 else n
        self._take(lay, hit, keep, queues)
        self._width = float(width[t - 1])
        self._total = float(total[t])
        self._variance = float(variance[t])
        self._tick = tick0 + t
        if hit < 0:
            return None
        self._shrink()
        self._n_detections += 1
        self._drift_detected = True
        if t >= 2:
            before = float(total[t - 1] / width[t - 2])
        else:
            before = float(total[0] / w0) if w0 else 0.0
        return t - 1, before

    def _layout(self, n: int, tick0: int) -> _Layout:
        """Where the buckets are after inserting ``n`` values, at each clock tick and at the end.

        Value i arrives in row 0 at time i + 1. A row holding ``c`` buckets merges its two oldest
        at its (max_buckets + 1 - c)-th arrival and then at every second one, and each merge
        arrives in the next row at the same time; so the arrivals in row r come every 2**r
        values from its first one on. The rows reached and when depend only on the buckets those
        rows held, so the layout is cached (and shared by detectors in the same position)."""
        held, first, count = [], [], []
        at, arrivals, r = 1, n, 0
        counts, m = self._counts, self.max_buckets
        while arrivals:
            c = counts[r] if r < len(counts) else 0
            held.append(c)
            first.append(at)
            count.append(arrivals)
            start = m - c  # arrival index of the first merge
            if arrivals <= start:
                break
            at += start << r
            arrivals = 1 + (arrivals - 1 - start) // 2
            r += 1
        key = (m, self.clock, tick0 % self.clock, n, tuple(held))
        lay = _LAYOUTS.get(key)
        if lay is None:
            lay = _Layout(m, held, first, count, np.arange(self.clock - key[2], n + 1, self.clock), n)
            _remember(key, lay)
        return lay

    def _merge(self, seg: np.ndarray, lay: _Layout) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every reached row's queue (totals, variances): the buckets it held, then its arrivals,
        each arrival the merge of two buckets of the row below with river's arithmetic."""
        end = self._totals.size  # flat end of row r
        arr_t, arr_v = seg.copy(), np.zeros(seg.size)
        queues = []
        for r, c in enumerate(lay.held):
            if c:
                q_t = np.concatenate((self._totals[end - c:end], arr_t))
                q_v = np.concatenate((self._variances[end - c:end], arr_v))
            else:
                q_t, q_v = arr_t, arr_v
            queues.append((q_t, q_v))
            end -= c
            if r + 1 < len(lay.held):
                pairs = 2 * lay.count[r + 1]
                t0, t1 = q_t[0:pairs:2], q_t[1:pairs:2]
                size = float(1 << r)
                diff = t0 / size - t1 / size
                # river: v12 = v0 + v1 + n * 0.5 * (mu1 - mu2)^2 (left to right), total12 = t0 + t1
                arr_v = (q_v[0:pairs:2] + q_v[1:pairs:2]) + (size * 0.5) * diff * diff
                arr_t = t0 + t1
        return queues

    def _test(self, lay: _Layout, rows: np.ndarray, keep: int, queues: Any, width: np.ndarray, total: np.ndarray,
              variance: np.ndarray) -> np.ndarray:
        """Whether a cut holds at the ticks ``lay.ticks[rows]`` (``width``, ``total``, ``variance``:
        the window's there). The window at a tick, oldest bucket first: the untouched rows, then the
        reached rows' slots (see _Layout)."""
        k, width_tail = rows.size, lay.ends.shape[1]
        n0 = np.empty((k, keep + width_tail))
        if self._binary:
            bounds, sums = queues
            n0[:, :keep] = self._bounds[:keep]
            np.add(lay.ends[rows], bounds[keep], out=n0[:, keep:])  # + the values in the untouched rows
            u0 = np.empty_like(n0)
            u0[:, :keep] = self._sums[:keep]
            u0[:, keep:] = sums[bounds.searchsorted(n0[:, keep:])]
            u1 = total[:, None] - u0  # integers: exact, as river's running subtraction
        else:
            # u1 starts at the window's total, then river subtracts each bucket's total in turn
            right = np.empty((k, keep + width_tail + 1))
            right[:, 0] = total
            right[:, 1:keep + 1] = self._totals[:keep]
            right[:, keep + 1:] = np.concatenate([np.zeros(1)] + [q for q, _ in queues[::-1]])[lay.gather[rows]]
            u0 = np.add.accumulate(right[:, 1:], axis=1)
            u1 = np.subtract.accumulate(right, axis=1)[:, 1:]
            before = np.add.accumulate(self._sizes[:keep])
            n0[:, :keep] = before
            np.add(lay.ends[rows], before[-1] if keep else 0.0, out=n0[:, keep:])
        return self._cuts(n0, u0, u1, width, variance)

    def _cuts(self, n0: np.ndarray, u0: np.ndarray, u1: np.ndarray, width: np.ndarray,
              variance: np.ndarray) -> np.ndarray:
        """Whether any cut holds, per row: ``n0`` / ``u0`` the values and total of the older part
        W0 for the cut after each bucket, oldest first (the last column, after the newest bucket,
        is not a cut), ``u1`` the total of W1; river's operations in river's order (callers
        silence the divisions by zero of empty slots)."""
        n1 = width[:, None] - n0  # integers below 2**53: exact, as river's running subtraction
        lwin = float(self.min_window_length)
        # ln is libm's (as river's Rust ``f64::ln``), one value per window
        try:
            dprime = np.array([math.log(2.0 * math.log(v) / self.delta) for v in width.tolist()])[:, None]
        except ValueError:  # a window of one value: ln(0); Rust gives -inf (and no cut holds)
            dprime = np.array([_ln(2.0 * _ln(v) / self.delta) for v in width.tolist()])[:, None]
        gap = u0 / n0
        gap -= u1 / n1
        # river: 1 / (n0 - l + 1) + 1 / (n1 - l + 1); integers, so n - (l - 1) is the same number
        m_recip = 1.0 / (n0 - (lwin - 1.0))
        m_recip += 1.0 / (n1 - (lwin - 1.0))
        bound = 2.0 * m_recip
        bound *= (variance / width)[:, None]
        bound *= dprime
        np.sqrt(bound, out=bound)
        bound += 2.0 / 3.0 * dprime * m_recip
        fired = np.abs(gap) > bound
        fired &= np.minimum(n0, n1) >= lwin
        fired[:, -1] = False
        return fired.any(axis=1)

    def _take(self, lay: _Layout, row: int, keep: int, queues: Any) -> None:
        """Set the buckets to those at ``lay.ticks[row]`` (the end of the batch for row -1)."""
        real = lay.real[row]
        new_counts = lay.counts_list[row] + self._counts[len(lay.held):]
        while new_counts and not new_counts[-1]:
            new_counts.pop()
        self._counts = new_counts
        if self._binary:
            bounds, sums = queues
            ends = lay.ends[row][real] + bounds[keep]
            self._sums = np.concatenate((self._sums[:keep], sums[bounds.searchsorted(ends)]))
            self._bounds = np.concatenate((self._bounds[:keep], ends))
            return
        idx = lay.gather[row][real]
        new_totals = np.concatenate([np.zeros(1)] + [q for q, _ in queues[::-1]])[idx]
        new_variances = np.concatenate([np.zeros(1)] + [v for _, v in queues[::-1]])[idx]
        self._totals = np.concatenate((self._totals[:keep], new_totals))
        self._variances = np.concatenate((self._variances[:keep], new_variances))
        self._sizes = np.concatenate((self._sizes[:keep], lay.sizes[row][real]))

    def _shrink(self) -> None:
        """While a cut holds, drop the oldest bucket (river's ``delete_element``) and test again."""
        sizes, totals, variances = self._buckets()
        while self._width > 0.0:
            u1 = np.subtract.accumulate(np.concatenate(((self._total,), totals)))
            if not self._cuts(np.add.accumulate(sizes)[None, :], np.add.accumulate(totals)[None, :], u1[None, 1:],
                              np.array([self._width]), np.array([self._variance]))[0]:
                break
            n, u, var = float(sizes[0]), float(totals[0]), float(variances[0])
            mu = u / n
            self._width -= n
            self._total -= u
            mu_window = self._total / self._width
            self._variance -= var + n * self._width * (mu - mu_window) * (mu - mu_window) / (n + self._width)
            sizes, totals, variances = sizes[1:], totals[1:], variances[1:]
            self._counts[-1] -= 1
            if not self._counts[-1]:
                self._counts.pop()
        if self._binary:  # the window starts after the dropped buckets
            self._bounds = np.add.accumulate(sizes)
            self._sums = np.add.accumulate(totals)
        else:
            self._sizes, self._totals, self._variances = sizes, totals, variances

    # -- state ----------------------------------------------------------------------------------
    def to_state(self) -> LearnerState:
        _, totals, variances = self._buckets()
        return LearnerState("ADWIN", self.params(), {
            "row_counts": np.asarray(self._counts, dtype=np.int64), "totals": np.array(totals),
            "variances": np.array(variances), "stats": np.array([self._width, self._total, self._variance]),
        }, {"tick": self._tick, "n_detections": self._n_detections, "drift_detected": self._drift_detected,
            "binary": self._binary})

    @classmethod
    def from_state(cls, state: LearnerState) -> ADWIN:
        det = cls(**state.params)
        counts = np.asarray(state.arrays["row_counts"], dtype=np.int64).reshape(-1)
        totals = np.asarray(state.arrays["totals"], dtype=np.float64).reshape(-1)
        variances = np.asarray(state.arrays["variances"], dtype=np.float64).reshape(-1)
        if int(counts.sum()) != totals.size or totals.size != variances.size or (counts > det.max_buckets).any():
            raise ValueError("ADWIN state: the bucket counts do not match the bucket arrays")
        det._counts = counts.tolist()
        sizes = np.repeat(np.ldexp(1.0, np.arange(counts.size)), counts)[::-1].copy()
        if state.meta["binary"]:
            det._bounds, det._sums = np.add.accumulate(sizes), np.add.accumulate(totals)
        else:
            det._binary = False
            det._sizes, det._totals, det._variances = sizes, totals.copy(), variances.copy()
        det._width, det._total, det._variance = (float(v) for v in np.asarray(state.arrays["stats"], dtype=np.float64))
        det._tick = int(state.meta["tick"])
        det._n_detections = int(state.meta["n_detections"])
        det._drift_detected = bool(state.meta["drift_detected"])
        return det


# Layouts of batch insertions (ADWIN._layout), shared by every ADWIN. A batch of 100 with clock 32 needs
# about 5 KiB; a long batch with clock 1 can need megabytes, and is not kept.
_LAYOUTS: dict[tuple[Any, ...], _Layout] = {}
_LAYOUTS_BYTES = [0]  # bytes held in _LAYOUTS
_LAYOUTS_MAX_BYTES = 32 << 20
_LAYOUT_MAX_BYTES = 256 << 10


def _remember(key: tuple[Any, ...], lay: _Layout) -> None:
    size = lay.nbytes()
    if size > _LAYOUT_MAX_BYTES:
        return
    if _LAYOUTS_BYTES[0] + size > _LAYOUTS_MAX_BYTES:
        _LAYOUTS.clear()
        _LAYOUTS_BYTES[0] = 0
    _LAYOUTS[key] = lay
    _LAYOUTS_BYTES[0] += size


class _Layout:
    """Where an ADWIN's buckets are while a batch is inserted: a function only of the buckets held by
    the rows the batch reaches, the batch size and the clock phase (so ``ADWIN._layout`` caches it).

    Times: the batch's clock ticks, then its end (the last row of every array). At each time,
    ``max_buckets`` slots per reached row, oldest row first, each row's buckets in its last slots
    (taken from its queue, the buckets it held then its arrivals, from ``starts`` on). ``sizes``:
    each slot's size (0 when empty); ``ends``: their running sum (values from the start of the
    reached rows to the end of each slot); ``real``: whether a slot holds a bucket; ``gather``: the
    index of its bucket in [0.0, queue of the oldest reached row, ..., queue of row 0] (0 if
    empty). An empty slot repeats the running sums before it, so the cut after it repeats the cut
    before it (or has n0 = 0 and a NaN mean, which never fires). Never mutated once built."""

    __slots__ = ("count", "counts_list", "ends", "gather", "held", "held_total", "real", "sizes", "ticks")

    def __init__(self, m: int, held: list[int], first: list[int], count: list[int], ticks: np.ndarray,
                 n: int) -> None:
        self.held, self.count, self.held_total, self.ticks = held, count, sum(held), ticks
        rows = len(held)
        times = np.concatenate((ticks, (n,)))
        h, f, c = (np.asarray(v, dtype=np.int64) for v in (held, first, count))
        arrived = ((times[:, None] - f) >> np.arange(rows)) + 1  # arithmetic shift: floor division by 2**r
        np.clip(arrived, 0, c, out=arrived)
        starts = np.zeros_like(arrived)
        starts[:, :-1] = arrived[:, 1:] * 2  # a row's merges are the next row's arrivals
        counts = h + arrived - starts
        shift = np.arange(m) - (m - counts[:, ::-1, None])  # position among the row's buckets, oldest row first
        real = shift >= 0
        self.sizes = (real * np.ldexp(1.0, np.arange(rows - 1, -1, -1))[:, None]).reshape(times.size, rows * m)
        self.ends = np.add.accumulate(self.sizes, axis=1)
        self.real = real.reshape(times.size, rows * m)
        offsets = 1 + np.concatenate(([0], np.cumsum((h + c)[::-1])[:-1]))  # queue r holds held + arrivals
        self.gather = np.where(real, (offsets + starts[:, ::-1])[:, :, None] + shift, 0).reshape(times.size, rows * m)
        self.counts_list = [row.tolist() for row in counts]

    def nbytes(self) -> int:
        return int(self.sizes.nbytes + self.ends.nbytes + self.real.nbytes + self.gather.nbytes + self.ticks.nbytes
                   + 8 * self.real.shape[0] * (len(self.held) + 2))


# -- Page-Hinkley --------------------------------------------------------------------------------
class PageHinkley(Detector):
    """Page-Hinkley test, as ``river.drift.PageHinkley``.

    With ``mean`` the running mean of the values (river's ``stats.Mean``), every update adds
    ``x - mean - delta`` to a cumulative sum (``x - mean + delta`` to a second one; both faded by
    ``alpha``) and fires when a sum has moved more than ``threshold`` from its extreme: up
    (``mode='up'``), down (``'down'``) or either (``'both'``), once ``min_instances`` values were seen.

    Parameters
    ----------
    min_instances : int
        No detection before this many values.
    delta : float
        Magnitude of change tolerated per value.
    threshold : float
        Detection threshold (lambda).
    alpha : float
        Fading factor of the cumulative sums.
    mode : str
        ``'up'``, ``'down'`` or ``'both'``.

    Examples
    --------
    >>> import numpy as np
    >>> ph = PageHinkley(threshold=20.0, mode="up", delta=0.02)
    >>> errors = np.concatenate([np.zeros(500), np.ones(100)])
    >>> [(d.index, d.rising) for d in ph.update_many(errors)]
    [(520, True)]
    """

    name = "PageHinkley"
    _MODES = ("up", "down", "both")

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both") -> None:
        if mode not in self._MODES:
            raise ValueError(f"Invalid 'mode'. Valid values are: {list(self._MODES)}")
        self.min_instances = min_instances
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self._reset()

    def params(self) -> dict[str, Any]:
        return {"min_instances": self.min_instances, "delta": self.delta, "threshold": self.threshold,
                "alpha": self.alpha, "mode": self.mode}

    def _reset(self) -> None:
        self._n = 0.0  # river's Mean: count (a float) and running mean
        self._mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0  # river starts it at -1
        self._drift_detected = False

    def update_many(self, values: np.ndarray) -> list[Detection]:
        up, down = self.mode in ("up", "both"), self.mode in ("down", "both")
        rising = {"up": True, "down": False}.get(self.mode)
        alpha, delta, threshold, min_n = self.alpha, self.delta, self.threshold, self.min_instances
        n, mean = self._n, self._mean
        s_inc, s_dec, min_inc, max_dec = self._sum_increase, self._sum_decrease, self._min_increase, self._max_decrease
        fired = self._drift_detected
        found = []
        for j, x in enumerate(np.asarray(values, dtype=np.float64).reshape(-1).tolist()):
            if fired:
                n = mean = s_inc = s_dec = 0.0
                min_inc, max_dec, fired = math.inf, -1.0, False
            # the same operations in the same order as river (Mean.update, then the sums)
            n += 1.0
            mean += (1.0 / n) * (x - mean)
            dev = x - mean
            s_inc = alpha * s_inc + dev - delta
            s_dec = alpha * s_dec + dev + delta
            # ``if`` rather than min()/max(): a builtin call per value costs more in this loop
            if s_inc < min_inc:  # noqa: PLR1730
                min_inc = s_inc
            if s_dec > max_dec:  # noqa: PLR1730
                max_dec = s_dec
            if n >= min_n:
                fired = (up and s_inc - min_inc > threshold) or (down and max_dec - s_dec > threshold)
                if fired:
                    found.append(Detection(j, None, rising))
        self._n, self._mean = n, mean
        self._sum_increase, self._sum_decrease, self._min_increase, self._max_decrease = s_inc, s_dec, min_inc, max_dec
        self._drift_detected = bool(fired)
        return found

    def to_state(self) -> LearnerState:
        return LearnerState("PageHinkley", self.params(), {
            "stats": np.array([self._n, self._mean, self._sum_increase, self._sum_decrease, self._min_increase,
                               self._max_decrease]),
        }, {"drift_detected": self._drift_detected})

    @classmethod
    def from_state(cls, state: LearnerState) -> PageHinkley:
        det = cls(**state.params)
        (det._n, det._mean, det._sum_increase, det._sum_decrease, det._min_increase,
         det._max_decrease) = (float(v) for v in np.asarray(state.arrays["stats"], dtype=np.float64))
        det._drift_detected = bool(state.meta["drift_detected"])
        return det


# -- DDM -----------------------------------------------------------------------------------------
class DDM(Detector):
    """Drift Detection Method (Gama et al., 2004), as ``river.drift.binary.DDM``, for 0/1 values.

    With ``p`` the running error rate over ``n`` values and ``s = sqrt(p (1 - p) / n)``, after
    ``warm_start`` values it records the minimum of ``p + s`` and fires when
    ``p + s > p_min + drift_threshold * s_min`` (error increases only).

    Parameters
    ----------
    warm_start : int
        No detection before more values than this.
    warning_threshold : float
        Multiple of ``s_min`` that raises ``warning_detected``.
    drift_threshold : float
        Multiple of ``s_min`` that fires.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> ddm = DDM(warm_start=300)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(1000) < 0.6]).astype(float)
    >>> [d.index for d in ddm.update_many(errors)]
    [2029]
    """

    name = "DDM"

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0) -> None:
        self.warm_start = warm_start
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        self._reset()

    def params(self) -> dict[str, Any]:
        return {"warm_start": self.warm_start, "warning_threshold": self.warning_threshold,
                "drift_threshold": self.drift_threshold}

    def _reset(self) -> None:
        self._n = 0.0
        self._p = 0.0
        self._p_min = math.nan  # river: None until the warm start is over
        self._s_min = math.nan
        self._ps_min = math.inf
        self._drift_detected = False
        self._warning_detected = False

    @property
    def warning_detected(self) -> bool:
        return self._warning_detected

    def update_many(self, values: np.ndarray) -> list[Detection]:
        n, p, p_min, s_min, ps_min = self._n, self._p, self._p_min, self._s_min, self._ps_min
        fired, warning = self._drift_detected, self._warning_detected
        warm, wl, dl = self.warm_start, self.warning_threshold, self.drift_threshold
        sqrt = math.sqrt
        found = []
        for j, x in enumerate(np.asarray(values, dtype=np.float64).reshape(-1).tolist()):
            if fired:
                n = p = 0.0
                p_min, s_min, ps_min, fired, warning = math.nan, math.nan, math.inf, False, False
            n += 1.0
            p += (1.0 / n) * (x - p)
            s = sqrt(p * (1 - p) / n)
            if n > warm:
                if p + s <= ps_min:
                    p_min, s_min = p, s
                    ps_min = p_min + s_min
                warning = p + s > p_min + wl * s_min
                if p + s > p_min + dl * s_min:
                    fired, warning = True, False
                    found.append(Detection(j, None, None))
        self._n, self._p, self._p_min, self._s_min, self._ps_min = n, p, p_min, s_min, ps_min
        self._drift_detected, self._warning_detected = fired, warning
        return found

    def to_state(self) -> LearnerState:
        return LearnerState("DDM", self.params(), {
            "stats": np.array([self._n, self._p, self._p_min, self._s_min, self._ps_min]),
        }, {"drift_detected": self._drift_detected, "warning_detected": self._warning_detected})

    @classmethod
    def from_state(cls, state: LearnerState) -> DDM:
        det = cls(**state.params)
        det._n, det._p, det._p_min, det._s_min, det._ps_min = (
            float(v) for v in np.asarray(state.arrays["stats"], dtype=np.float64))
        det._drift_detected = bool(state.meta["drift_detected"])
        det._warning_detected = bool(state.meta["warning_detected"])
        return det


# -- KSWIN ---------------------------------------------------------------------------------------
class KSWIN(Detector):
    """Kolmogorov-Smirnov windowing: river's ``river.drift.KSWIN`` itself, with its state read and set.

    Every update after the window is full draws ``stat_size`` values of the older part of the
    window at random and compares them with the ``stat_size`` newest by a two-sample KS test
    (scipy); it fires when ``p <= alpha`` and the statistic exceeds 0.1. The state is river's own
    attributes: the window (values), the update count, the last p-value and the state of its
    ``random.Random`` (624 words and a position, as integers).

    Parameters
    ----------
    alpha : float
        Significance of the test.
    window_size : int
        Values in the sliding window.
    stat_size : int
        Values in each of the two compared samples.
    seed : int or None
        Seed of the sampling. None: river seeds from the OS, at the start and again at every reset
        after a detection, so no two runs agree; give a seed where a restart must not change detections.
    window : list or None
        Values to start the window with.
    """

    name = "KSWIN"

    def __init__(self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int | None = None,
                 window: list[float] | None = None) -> None:
        from river.drift import KSWIN as RiverKSWIN

        self._params = {"alpha": alpha, "window_size": window_size, "stat_size": stat_size, "seed": seed,
                        "window": None if window is None else [float(v) for v in window]}
        # river's own object, whose attributes are read and set as plain values (from_state): typed as Any
        self._det: Any = RiverKSWIN(alpha=alpha, window_size=window_size, stat_size=stat_size, seed=seed,
                                    window=window)

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def _drift_detected(self) -> bool:  # type: ignore[override]
        return bool(self._det.drift_detected)

    @property
    def p_value(self) -> float:
        return float(self._det.p_value)

    def update_many(self, values: np.ndarray) -> list[Detection]:
        det = self._det
        found = []
        for j, x in enumerate(np.asarray(values, dtype=np.float64).reshape(-1).tolist()):
            det.update(x)
            if det.drift_detected:
                found.append(Detection(j, float(det.p_value), None))
        return found

    def to_state(self) -> LearnerState:
        det = self._det
        version, words, gauss = det._rng.getstate()
        return LearnerState("KSWIN", self.params(), {
            "window": np.asarray(list(det.window), dtype=np.float64),
            "rng_words": np.asarray(words, dtype=np.int64),
            "p_value": np.array([float(det.p_value)]),
            "gauss_next": np.array([math.nan if gauss is None else float(gauss)]),
        }, {"n": int(det.n), "rng_version": int(version), "gauss_set": gauss is not None,
            "drift_detected": bool(det._drift_detected)})

    @classmethod
    def from_state(cls, state: LearnerState) -> KSWIN:
        import collections

        det = cls(**state.params)
        river_det, a, meta = det._det, state.arrays, state.meta
        river_det.window = collections.deque(np.asarray(a["window"], dtype=np.float64).tolist(),
                                             maxlen=river_det.window_size)
        gauss = _f(state, "gauss_next") if meta["gauss_set"] else None
        words = tuple(int(v) for v in np.asarray(a["rng_words"], dtype=np.int64).tolist())
        river_det._rng.setstate((int(meta["rng_version"]), words, gauss))
        river_det.n = int(meta["n"])
        river_det.p_value = _f(state, "p_value")
        river_det._drift_detected = bool(meta["drift_detected"])
        return det


DETECTOR_CLASSES: dict[str, type[Detector]] = {cls.name: cls for cls in (ADWIN, PageHinkley, KSWIN, DDM)}
