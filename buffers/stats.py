"""Running per-class statistics (count, mean, diagonal variance), class-incremental and mergeable.

Used by :class:`ocld.learners.analytic.AnalyticRidge` to draw pseudo-samples for minority
classes, and by anything that needs per-class input summaries. Pure numpy, float64;
never does I/O.

The moments come from :mod:`ocld.buffers.moments`: within a batch each class's count, mean
and sum of squared deviations (M2) in two passes, combined with the running ones (and with
other workers') by Chan et al.'s parallel update, which is exact in exact arithmetic, so any
split of a stream and any order of merging shards give the same statistics up to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ocld.buffers.moments import batch_moments, merge_moments
from ocld.learners.base import ClassIndex, Component, Label, LearnerState, check_X, labels_to_json


class ClassStats(Component):
    """Per-class running count / mean / population variance over inputs ``X`` [n, d].

    Arrays (rows in ``classes`` order, i.e. order of first appearance):
      count [C]      float64 (float so that :meth:`discount` can scale it)
      mean  [C, d]
      m2    [C, d]   sum of squared deviations from the mean
    """

    batch_invariant = True

    def __init__(self) -> None:
        self.n_features_in: int | None = None
        self._index = ClassIndex()
        self.count = np.zeros(0)
        self.mean = np.zeros((0, 0))
        self.m2 = np.zeros((0, 0))

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ views
    @property
    def classes(self) -> list[Label]:
        return self._index.classes

    def __len__(self) -> int:
        return len(self._index)

    def var(self, ddof: int = 0) -> np.ndarray:
        """Diagonal variance per class [C, d] (0 where a class has too few samples)."""
        denom = self.count[:, None] - ddof
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(denom > 0, self.m2 / np.where(denom > 0, denom, 1.0), 0.0)
        return np.maximum(out, 0.0)

    def row(self, label: Label) -> int:
        """Row index of ``label``; KeyError for an unseen label."""
        return int(self._index.encode([label], grow=False)[0])

    # ------------------------------------------------------------------ updates
    def _grow(self, n_classes: int, d: int) -> None:
        if self.n_features_in is None:
            self.n_features_in = d
            self.mean = np.zeros((0, d))
            self.m2 = np.zeros((0, d))
        extra = n_classes - self.count.shape[0]
        if extra > 0:
            self.count = np.concatenate([self.count, np.zeros(extra)])
            self.mean = np.vstack([self.mean, np.zeros((extra, d))])
            self.m2 = np.vstack([self.m2, np.zeros((extra, d))])

    def update(self, X: np.ndarray, y: np.ndarray) -> None:
        """Add a batch (X: [n, d], y: [n] labels). Mutates; returns None."""
        X = check_X(X, self.n_features_in)
        y = np.asarray(y, dtype=object).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if X.shape[0] == 0:
            if self.n_features_in is None:
                self._grow(0, X.shape[1])
            return
        idx = self._index.encode(y)
        self._grow(len(self._index), X.shape[1])
        self._merge_arrays(*batch_moments(X, idx, len(self._index)))

    def _merge_arrays(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Chan's parallel update of every row with (n_b, mean_b, m2_b) (same row order)."""
        self.count, self.mean, self.m2 = merge_moments(self.count, self.mean, self.m2, n_b, mean_b, m2_b)

    def merge(self, other: ClassStats) -> None:
        """Add another ClassStats (e.g. from another shard); classes are aligned by label."""
        if not isinstance(other, ClassStats):
            raise TypeError(f"can only merge a ClassStats, got {type(other).__name__}")
        if other.n_features_in is None:
            return
        if self.n_features_in is not None and other.n_features_in != self.n_features_in:
            raise ValueError(f"cannot merge statistics over {other.n_features_in} features into {self.n_features_in}")
        rows = self._index.encode(np.asarray(other.classes, dtype=object)) if len(other) else np.zeros(0, np.int64)
        self._grow(len(self._index), int(other.n_features_in))
        C, d = len(self._index), int(other.n_features_in)
        n_b, mean_b, m2_b = np.zeros(C), np.zeros((C, d)), np.zeros((C, d))
        n_b[rows] = other.count
        mean_b[rows] = other.mean
        m2_b[rows] = other.m2
        self._merge_arrays(n_b, mean_b, m2_b)

    def discount(self, factor: float) -> None:
        """Scale every class's weight by ``factor`` in (0, 1]: means and variances stay, counts shrink."""
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"discount factor must be in (0, 1], got {factor}")
        self.count = self.count * factor
        self.m2 = self.m2 * factor

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        arrays = (
            {}
            if self.n_features_in is None
            else {"count": self.count.copy(), "mean": self.mean.copy(), "m2": self.m2.copy()}
        )
        meta = {"classes": labels_to_json(self.classes), "n_features_in": self.n_features_in}
        return LearnerState("ClassStats", self._get_params(), arrays, meta)

    @classmethod
    def from_state(cls, state: LearnerState) -> ClassStats:
        obj = cls(**state.params)
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        d = state.meta.get("n_features_in")
        if d is not None:
            obj.n_features_in = int(d)
            obj.count = np.array(state.arrays["count"], dtype=np.float64)
            obj.mean = np.array(state.arrays["mean"], dtype=np.float64).reshape(-1, int(d))
            obj.m2 = np.array(state.arrays["m2"], dtype=np.float64).reshape(-1, int(d))
        return obj


__all__ = ["ClassStats"]
