"""Running moments of a stream of rows: count, mean and sum of squared deviations, mergeable.

The one running mean/variance of ocld. The Standardizer (:mod:`ocld.learners.features`), the
per-class statistics (:class:`ocld.buffers.stats.ClassStats`) and the input drift monitor's
warm-up (:mod:`ocld.core.drift`) all keep their statistics with it. Pure numpy, float64; never
does I/O.

The moments of n rows are ``(n, mean, M2)``, with M2 the sum of squared deviations from the
mean (the population variance is M2 / n). They are never kept as sums of values and squared
values: E[x^2] - E[x]^2 cancels catastrophically when the mean is large against the spread.
Two ways to add rows, both exact in exact arithmetic:

- a whole batch (:meth:`RunningMoments.update`, :func:`batch_moments` + :func:`merge_moments`):
  the batch's moments in two passes (mean, then squared deviations from it), combined with
  the running ones by the parallel update of Chan, Golub & LeVeque (1979)::

      n = n_a + n_b,   delta = mean_b - mean_a,
      mean = mean_a + delta n_b / n,
      M2 = M2_a + M2_b + delta^2 n_a n_b / n

  Any split of a stream into batches, and any order of merging shards, gives the same
  moments up to rounding.
- row by row, with the moments after every row (:meth:`RunningMoments.update_prefix`), for
  exact prequential standardization: with s1 and s2 the cumulative sums of ``x - c`` and
  ``(x - c)^2`` over the batch's first i rows, c the running mean (the first row when there
  is none yet), the moments after row i are::

      n_i = n + i,   mean_i = c + s1 / n_i,   M2_i = M2 + s2 - s1^2 / n_i

  which is Chan's update of the first i rows, computed about the running mean (the shifted
  data form: the sums stay small, and a constant feature has exactly zero spread).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import Component, LearnerState, check_X


def batch_moments(X: np.ndarray, groups: np.ndarray | None = None,
                  n_groups: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and M2 of the rows of ``X`` [n, d], in two passes.

    Without ``groups``: count [] (a 0-d array), mean [d], M2 [d]. With ``groups`` (an int
    array [n] of group indices below ``n_groups``): count [G], mean [G, d], M2 [G, d], with
    zeros for a group that has no row.
    """
    if groups is None:
        n = X.shape[0]
        mean = X.sum(axis=0) / max(n, 1)
        dev = X - mean
        return np.asarray(float(n)), mean, np.einsum("ij,ij->j", dev, dev)
    count = np.bincount(groups, minlength=n_groups).astype(np.float64)
    sums = np.zeros((n_groups, X.shape[1]))
    np.add.at(sums, groups, X)
    mean = sums / np.where(count > 0, count, 1.0)[:, None]
    dev = X - mean[groups]
    m2 = np.zeros_like(sums)
    np.add.at(m2, groups, dev * dev)
    return count, mean, m2


def merge_moments(n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray, n_b: np.ndarray, mean_b: np.ndarray,
                  m2_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan's parallel update: the moments of the union of two sets of rows.

    Counts have the shape of the means without their last axis (0-d, or [G] for groups);
    a pair with a total count of 0 stays at zero.
    """
    n_a, n_b = np.asarray(n_a, dtype=np.float64), np.asarray(n_b, dtype=np.float64)
    n = n_a + n_b
    safe_n = np.where(n > 0, n, 1.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe_n)[..., None]
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / safe_n)[..., None]
    return n, mean, m2


class RunningMoments(Component):
    """Count, mean and sum of squared deviations (M2) of every column of a stream of rows [n, d].

    The width is fixed by the first rows (or by :meth:`start`). ``count`` is a float so that
    :meth:`discount` can scale it. A registered component (``learners.registry``), so that the
    states holding it (a Standardizer's, say) name it, and the conformance suite checks it.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(5.0, 2.0, size=(1000, 3))
    >>> m = RunningMoments()
    >>> for batch in np.array_split(X, 7):
    ...     m.update(batch)
    >>> m.count
    1000.0
    >>> bool(np.allclose(m.mean, X.mean(axis=0)) and np.allclose(m.var(), X.var(axis=0)))
    True
    >>> np.array_equal(RunningMoments.from_state(m.to_state()).m2, m.m2)
    True
    """

    batch_invariant: ClassVar[bool] = True

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: np.ndarray | None = None  # [d]
        self.m2: np.ndarray | None = None  # [d]

    @property
    def n_features(self) -> int | None:
        return None if self.mean is None else int(self.mean.shape[0])

    def start(self, d: int) -> None:
        """Fix the width at ``d`` columns (zero moments) if it is not fixed yet."""
        if self.mean is None:
            self.mean = np.zeros(d)
            self.m2 = np.zeros(d)

    def var(self, ddof: int = 0) -> np.ndarray:
        """Variance of each column, M2 / (count - ddof); 0 where count <= ddof (never negative)."""
        if self.m2 is None:
            return np.zeros(0)
        denom = self.count - ddof
        return np.maximum(self.m2 / denom, 0.0) if denom > 0 else np.zeros_like(self.m2)

    def std(self, ddof: int = 0) -> np.ndarray:
        return np.sqrt(self.var(ddof))

    # ------------------------------------------------------------------ updates
    def update(self, X: np.ndarray, y: Any = None) -> None:
        """Add the rows of ``X`` [n, d] as one batch (two passes, then Chan's update). ``y`` is
        ignored: the moments are those of the inputs (buffers are fed ``(X, y)``)."""
        X = check_X(X, self.n_features)
        self.start(X.shape[1])
        if X.shape[0]:
            self._merge(*batch_moments(X))

    def merge(self, other: RunningMoments) -> None:
        """Add the rows another RunningMoments has seen (another shard, say)."""
        if other.mean is None or other.m2 is None:
            return
        if self.mean is not None and other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of {other.mean.shape[0]} columns into {self.mean.shape[0]}")
        self.start(other.mean.shape[0])
        self._merge(np.asarray(other.count), other.mean, other.m2)

    def _merge(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        assert self.mean is not None and self.m2 is not None
        n, self.mean, self.m2 = merge_moments(np.asarray(self.count), self.mean, self.m2, n_b, mean_b, m2_b)
        self.count = float(n)

    def update_prefix(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add the rows of ``X`` [n, d] one at a time; the moments after each row.

        Returns count [n, 1], mean [n, d] and M2 [n, d]: row i holds the moments of everything
        before this batch plus its rows <= i (see the module docstring), so the result does not
        depend on how a stream is cut into batches.
        """
        X = check_X(X, self.n_features)
        self.start(X.shape[1])
        assert self.mean is not None and self.m2 is not None
        if X.shape[0] == 0:
            return np.zeros((0, 1)), np.zeros((0, X.shape[1])), np.zeros((0, X.shape[1]))
        shift = self.mean if self.count > 0 else X[0]
        d = X - shift
        if self.count == 0:
            self.mean = shift.copy()
        s1 = np.cumsum(d, axis=0)
        s2 = np.cumsum(d * d, axis=0)
        n_i = self.count + np.arange(1, X.shape[0] + 1, dtype=np.float64)[:, None]
        mean_i = self.mean + s1 / n_i
        m2_i = np.maximum(self.m2 + s2 - s1 * s1 / n_i, 0.0)
        self.count = float(n_i[-1, 0])
        self.mean = mean_i[-1].copy()
        self.m2 = m2_i[-1].copy()
        return n_i, mean_i, m2_i

    def discount(self, factor: float) -> None:
        """Scale the weight of everything seen by ``factor`` in (0, 1]: the mean and variance stay."""
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"discount factor must be in (0, 1], got {factor}")
        self.count *= factor
        if self.m2 is not None:
            self.m2 = self.m2 * factor

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        arrays = {} if self.mean is None or self.m2 is None else {"mean": self.mean.copy(), "m2": self.m2.copy()}
        return LearnerState("RunningMoments", {}, arrays, {"count": self.count})

    @classmethod
    def from_state(cls, state: LearnerState) -> RunningMoments:
        return cls.from_arrays(state.meta.get("count", 0.0), state.arrays.get("mean"), state.arrays.get("m2"))

    @classmethod
    def from_arrays(cls, count: float, mean: np.ndarray | None, m2: np.ndarray | None) -> RunningMoments:
        """Moments from stored arrays (also how the states written before this class are read)."""
        obj = cls()
        obj.count = float(count)
        if mean is not None and m2 is not None:
            obj.mean = np.array(mean, dtype=np.float64).reshape(-1)
            obj.m2 = np.array(m2, dtype=np.float64).reshape(-1)
        return obj


__all__ = ["RunningMoments", "batch_moments", "merge_moments"]
