"""k nearest neighbours over a sliding window, with exact test-then-train inside a block.

A local, non-parametric head: where the classes are not separated by any smooth function of
the inputs the other heads can fit (noisy high-dimensional sets such as yeast), the labels
of the most similar recent samples are a different, complementary guess. Pure numpy,
float64; no I/O.

Model. The last ``window`` labelled samples (features as they arrive: put a
``Standardizer`` in front) and their labels. Sample x is predicted from its ``n_neighbors``
nearest samples in the window (squared Euclidean distance), each voting with weight
1 / (distance + ``eps``), the votes rescaled to sum to k and smoothed::

    p(c | x) = (votes_c + smoothing) / (k + smoothing C),    C: the classes known

Ties. Distances are rounded to ``_TIE_DECIMALS`` decimals before the neighbours are chosen,
and among equal distances the most recent sample wins, so the choice does not depend on the
rounding of the matrix product (hence on how the stream was cut) or on the order of a sort.

Test-then-train. ``learn_predict`` predicts row i from the ``window`` samples before it: the
window before the block followed by the block's earlier rows (a band mask over one distance
matrix per chunk).

``adapt(event)``: on rising error, only the ``adapt_keep`` most recent samples stay in the
window.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import (
    ClassIndex,
    DriftEvent,
    Label,
    Learner,
    LearnerState,
    encode_batch,
    finite_features,
    labels_to_json,
)

# Rows of one prequential chunk are capped so that the distance matrix stays small.
_CHUNK_ROWS = 64
_TIE_DECIMALS = 9


class KNeighbors(Learner):
    """Distance-weighted k nearest neighbours over the last ``window`` samples.

    Exact prequential and batch-cut invariant; classes may appear at any time.

    Parameters
    ----------
    n_neighbors
        k, the neighbours that vote.
    window
        Samples kept (the most recent).
    eps
        Added to each distance in the vote weights 1 / (distance + eps).
    smoothing
        Added to every known class's votes (out of k).
    adapt_keep
        On a drift event with rising error, the samples kept (the most recent); at least
        ``window`` disables it.
    feature_clip
        Features are clipped to +- this value.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 2))
    >>> y = (X[:, 0] * X[:, 1] > 0).astype(int)            # XOR: no linear head gets it
    >>> model = KNeighbors(window=400)
    >>> proba = model.learn_predict(X, y)                   # row i predicted before it is learned
    >>> model.predict([[1.0, 1.0], [1.0, -1.0]]).tolist()
    [1, 0]
    """

    batch_invariant: ClassVar[bool] = True
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        n_neighbors: int = 5,
        window: int = 1000,
        eps: float = 0.1,
        smoothing: float = 0.5,
        adapt_keep: int = 200,
        feature_clip: float = 1e4,
    ) -> None:
        if n_neighbors < 1 or window < 1:
            raise ValueError(f"n_neighbors and window must be >= 1; got {n_neighbors}, {window}")
        if not eps > 0 or not smoothing > 0 or not feature_clip > 0:
            raise ValueError("eps, smoothing and feature_clip must be > 0")
        if adapt_keep < 0:
            raise ValueError(f"adapt_keep must be >= 0; got {adapt_keep}")
        self.n_neighbors = int(n_neighbors)
        self.window = int(window)
        self.eps = float(eps)
        self.smoothing = float(smoothing)
        self.adapt_keep = int(adapt_keep)
        self.feature_clip = float(feature_clip)
        self._index = ClassIndex()
        self.n_features_in: int | None = None
        self._X = np.zeros((0, 0))  # [m, d] the window, oldest first
        self._y = np.zeros(0, dtype=np.int64)  # [m] class columns

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 50, "n_neighbors": 3, "adapt_keep": 10}

    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self._index.classes

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """The window: features and a label per sample."""
        return 8 * self.window * (int(n_features) + 1)

    # ------------------------------------------------------------------ the model
    def _votes(self, d2: np.ndarray, labels: np.ndarray, n_known: np.ndarray, C: int) -> np.ndarray:
        """Probabilities [n, C] from squared distances [n, M] (inf: not a candidate; rounded in
        place), the candidates' labels [M] and the classes known for each row [n]."""
        n, M = d2.shape
        if M == 0 or C == 0 or n == 0:
            return np.zeros((n, C))
        k = min(self.n_neighbors, M)
        dq = np.round(d2, _TIE_DECIMALS, out=d2)
        kth = np.partition(dq, k - 1, axis=1)[:, k - 1 : k]  # [n, 1] the k-th smallest distance
        chosen = dq <= kth
        # Rows with more candidates at the k-th distance than places left: the most recent win.
        tied = np.flatnonzero(chosen.sum(axis=1) > k)
        if tied.size:
            sub, t = dq[tied], kth[tied]
            strict = sub < t
            ties = sub == t
            need = k - strict.sum(axis=1, keepdims=True)
            recent_rank = np.cumsum(ties[:, ::-1], axis=1)[:, ::-1]  # 1 for the most recent tie
            chosen[tied] = strict | (ties & (recent_rank <= need))  # exactly k per row
        rows, cols = np.nonzero(chosen)
        dist = dq[rows, cols]
        finite = np.isfinite(dist)
        w = np.where(finite, 1.0 / (np.sqrt(np.where(finite, dist, 0.0)) + self.eps), 0.0)
        votes: np.ndarray = np.bincount(rows * C + labels[cols], weights=w, minlength=n * C).reshape(n, C)
        total = np.bincount(rows, weights=w, minlength=n)[:, None]
        got = np.bincount(rows, weights=finite.astype(np.float64), minlength=n)[:, None]
        votes = votes * (got / np.where(total > 0, total, 1.0))
        known = np.arange(C)[None, :] < n_known[:, None]
        p = np.where(known, votes + self.smoothing, 0.0)
        s = p.sum(axis=1, keepdims=True)
        return np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)

    @staticmethod
    def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        d2 = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * (A @ B.T)
        return np.maximum(d2, 0.0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=False)
        n, C = X.shape[0], len(self._index)
        if C == 0 or self._y.size == 0:
            return np.zeros((n, C))
        d2 = self._sqdist(X, self._X)
        return self._votes(d2, self._y, np.full(n, C), C)

    # ------------------------------------------------------------------ learning
    def _append(self, X: np.ndarray, idx: np.ndarray) -> None:
        if self.n_features_in is None:
            self.n_features_in = X.shape[1]
            self._X = np.zeros((0, X.shape[1]))
        self._X = np.vstack([self._X, X])[-self.window :]
        self._y = np.concatenate([self._y, idx.astype(np.int64)])[-self.window :]

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=True)
        idx, _, _ = encode_batch(self._index, y, X.shape[0])
        if X.shape[0] or self.n_features_in is None:
            self._append(X, idx)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=True)
        idx, n_before, _ = encode_batch(self._index, y, X.shape[0])
        n, C = X.shape[0], len(self._index)
        out = np.zeros((n, C))
        if self.n_features_in is None:
            self._append(X[:0], idx[:0])  # the first call fixes the width
        for a in range(0, n, _CHUNK_ROWS):
            b = min(n, a + _CHUNK_ROWS)
            Xc = X[a:b]
            m = self._y.size
            H = np.vstack([self._X, Xc])  # the window, then this chunk: the history its rows see
            labels = np.concatenate([self._y, idx[a:b]])
            d2 = self._sqdist(Xc, H)
            # row r (history position m + r) sees positions [m + r - window, m + r)
            pos = np.arange(H.shape[0])[None, :]
            row = (m + np.arange(b - a))[:, None]
            d2[(pos >= row) | (pos < row - self.window)] = np.inf
            out[a:b] = self._votes(d2, labels, n_before[a:b], C)
            self._X, self._y = H[-self.window :], labels[-self.window :]
        return out

    def adapt(self, event: DriftEvent) -> bool:
        """A rising-error drift: keep only the ``adapt_keep`` most recent samples. False when nothing changed."""
        if event.rising is False or self._y.size <= self.adapt_keep:
            return False
        keep = self._y.size - self.adapt_keep
        self._X = self._X[keep:]
        self._y = self._y[keep:]
        return True

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        arrays = {} if self.n_features_in is None else {"X": self._X.copy(), "y": self._y.copy()}
        meta = {"classes": labels_to_json(self._index.classes), "n_features_in": self.n_features_in}
        return LearnerState("KNeighbors", self._get_params(), arrays, meta)

    @classmethod
    def from_state(cls, state: LearnerState) -> KNeighbors:
        obj = cls(**dict(state.params))
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        d = state.meta.get("n_features_in")
        if d is not None:
            obj.n_features_in = int(d)
            obj._X = np.array(state.arrays["X"], dtype=np.float64).reshape(-1, int(d))
            obj._y = np.array(state.arrays["y"], dtype=np.int64)
        return obj


__all__ = ["KNeighbors"]
