"""Gaussian naive Bayes with exact test-then-train inside a block.

A cheap, low-variance head for small and noisy sets, where a linear or kernel head has not
yet seen enough samples to beat a per-class density (the naive-Bayes leaves of a Hoeffding
tree win there early on). Pure numpy, float64; no I/O.

Model. Per class c: a count n_c and per feature j a mean mu_cj and a sum of squared
deviations M2_cj (:class:`ocld.buffers.stats.ClassStats`, Chan's parallel update). The
variance used is shrunk towards the pooled variance v_j of all samples::

    var_cj = (M2_cj + k0 v_j) / (n_c + k0) + floor_j,    floor_j = var_smoothing * max_j v_j + 1e-12

so a class seen once has the pooled variance instead of 0 (``prior_strength`` k0 is that
prior's weight in samples). Probabilities are the posterior over the known classes with
Laplace-smoothed priors (n_c + 1) / (N + C)::

    log p(c | x) = log(n_c + 1) - 1/2 sum_j [log var_cj + (x_j - mu_cj)^2 / var_cj] + const

Test-then-train. ``learn_predict`` predicts row i with the statistics of every row before it:
inside a block, each class's sums of (x - shift) and (x - shift)^2 over the rows before i
are exclusive prefix sums, combined with the running moments, so the result does not depend
on how the stream was cut (to rounding). Blocks are cut into chunks of at most
``_CHUNK_CELLS`` row x class x feature cells to bound the temporaries.

``adapt(event)``: on rising error, every count and M2 is multiplied by ``adapt_discount``
(means and variances kept): the old concept's statistics weigh as a few samples, and the
new concept takes over after about that many. 1 disables it.

Merging: statistics of shards add exactly (:meth:`merge`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ocld.buffers.moments import RunningMoments
from ocld.buffers.stats import ClassStats
from ocld.learners.base import (
    DriftEvent,
    Label,
    Learner,
    LearnerState,
    encode_batch,
    finite_features,
)

# Largest rows x classes x features block of temporaries in one prequential chunk.
_CHUNK_CELLS = 1 << 18


class GaussianNB(Learner):
    """Gaussian naive Bayes (diagonal, per class), variances shrunk to the pooled variance.

    Exact prequential and batch-cut invariant; classes may appear at any time. Scale
    invariant per feature (no ``Standardizer`` needed).

    Parameters
    ----------
    prior_strength
        Weight, in samples, of the pooled variance in each class's variance (> 0).
    var_smoothing
        Added to every variance, as a share of the largest pooled variance.
    adapt_discount
        On a drift event with rising error, counts and M2 are multiplied by this, in (0, 1].
    feature_clip
        Features are clipped to +- this value.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(3, 1, (100, 2))])
    >>> y = np.array([0] * 100 + [1] * 100)
    >>> order = rng.permutation(200)
    >>> model = GaussianNB()
    >>> proba = model.learn_predict(X[order], y[order])   # row i predicted before it is learned
    >>> model.predict([[0.0, 0.0], [3.0, 3.0]]).tolist()
    [0, 1]
    """

    batch_invariant: ClassVar[bool] = True
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        prior_strength: float = 1.0,
        var_smoothing: float = 1e-9,
        adapt_discount: float = 0.01,
        feature_clip: float = 1e9,
    ) -> None:
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0; got {prior_strength}")
        if not var_smoothing >= 0:
            raise ValueError(f"var_smoothing must be >= 0; got {var_smoothing}")
        if not 0.0 < adapt_discount <= 1.0:
            raise ValueError(f"adapt_discount must be in (0, 1]; got {adapt_discount}")
        if not feature_clip > 0:
            raise ValueError(f"feature_clip must be > 0; got {feature_clip}")
        self.prior_strength = float(prior_strength)
        self.var_smoothing = float(var_smoothing)
        self.adapt_discount = float(adapt_discount)
        self.feature_clip = float(feature_clip)
        self.stats = ClassStats()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"adapt_discount": 0.5}

    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self.stats.classes

    @property
    def n_features_in(self) -> int | None:
        return self.stats.n_features_in

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """Per class a count, a mean and an M2 per feature."""
        return 8 * max(int(n_classes), 1) * (2 * int(n_features) + 1)

    # ------------------------------------------------------------------ the model
    def _pooled(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(count, mean [d], M2 [d]) of all classes together."""
        s = self.stats
        n = float(s.count.sum())
        if n <= 0:
            d = s.mean.shape[1]
            return 0.0, np.zeros(d), np.zeros(d)
        mean = (s.count[:, None] * s.mean).sum(axis=0) / n
        m2 = s.m2.sum(axis=0) + (s.count[:, None] * (s.mean - mean) ** 2).sum(axis=0)
        return n, mean, m2

    def _log_joint(self, X: np.ndarray, count: np.ndarray, mean: np.ndarray, m2: np.ndarray,
                   pooled_var: np.ndarray) -> np.ndarray:
        """Unnormalized log posteriors [n, C] from per-row statistics (count [n, C], mean and
        m2 [n, C, d], pooled_var [n, d]); rows of classes with no count get -inf."""
        k0 = self.prior_strength
        floor = self.var_smoothing * pooled_var.max(axis=1, keepdims=True) + 1e-12  # [n, 1]
        var = (m2 + k0 * pooled_var[:, None, :]) / (count[:, :, None] + k0) + floor[:, :, None]
        ll = -0.5 * (np.log(var) + (X[:, None, :] - mean) ** 2 / var).sum(axis=2)
        with np.errstate(divide="ignore"):
            prior = np.log(np.where(count > 0, count + 1.0, 0.0))
        return ll + prior

    @staticmethod
    def _softmax(scores: np.ndarray) -> np.ndarray:
        out = np.zeros_like(scores)
        rows = np.isfinite(scores).any(axis=1)
        if rows.any():
            s = scores[rows]
            e = np.exp(s - s.max(axis=1, keepdims=True))
            out[rows] = e / e.sum(axis=1, keepdims=True)
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=False)
        n, C = X.shape[0], len(self.stats)
        if C == 0 or n == 0:
            return np.zeros((n, C))
        s = self.stats
        N, _, pm2 = self._pooled()
        pooled_var = np.broadcast_to(pm2 / max(N, 1e-300), (n, pm2.shape[0]))
        count = np.broadcast_to(s.count, (n, C))
        mean = np.broadcast_to(s.mean, (n,) + s.mean.shape)
        m2 = np.broadcast_to(s.m2, (n,) + s.m2.shape)
        return self._softmax(self._log_joint(X, count, mean, m2, pooled_var))

    # ------------------------------------------------------------------ learning
    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=True)
        self.stats.update(X, np.asarray(y, dtype=object).reshape(-1))

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X = finite_features(X, self.n_features_in, self.feature_clip, learning=True)
        y = np.asarray(y, dtype=object).reshape(-1)
        n = X.shape[0]
        if n == 0:
            self.stats.update(X, y)
            return np.zeros((0, len(self.stats)))
        C_most = len(self.stats) + len(set(y.tolist()))  # at least the classes known after this block
        step = max(1, _CHUNK_CELLS // max(1, C_most * X.shape[1]))
        parts = []
        for a in range(0, n, step):
            parts.append(self._chunk(X[a:a + step], y[a:a + step]))
        C = len(self.stats)
        return np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in parts])

    def _chunk(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact prequential probabilities of one chunk [n, C after], then learn it."""
        s = self.stats
        idx, n_before, _ = encode_batch(s._index, y, X.shape[0])
        C, (n, d) = len(s._index), X.shape
        s._grow(C, d)
        # Statistics before the chunk: per class (count0, shift = mean0, m2_0) and pooled.
        count0, m2_0 = s.count.copy(), s.m2.copy()
        shift = s.mean.copy()
        seen, first = np.unique(idx, return_index=True)
        fresh = count0[seen] <= 0  # classes with no sample yet: shift by their first row in the chunk
        shift[seen[fresh]] = X[first[fresh]]
        N0, pmean0, pm2_0 = self._pooled()
        onehot = np.zeros((n, C))
        onehot[np.arange(n), idx] = 1.0
        dev = (X[:, None, :] - shift[None, :, :]) * onehot[:, :, None]  # [n, C, d]; 0 off the row's class
        S = np.cumsum(dev, axis=0) - dev  # exclusive prefix sums
        Q = np.cumsum(dev * dev, axis=0) - dev * dev
        K = np.cumsum(onehot, axis=0) - onehot
        cnt = count0[None, :] + K  # [n, C]
        safe = np.where(cnt > 0, cnt, 1.0)[:, :, None]
        mean = shift[None, :, :] + S / safe
        m2 = np.maximum(m2_0[None, :, :] + Q - S * S / safe, 0.0)
        # Pooled moments of the rows before each row: the running prefix, shifted down by one row.
        n_i, _, m2_i = RunningMoments.from_arrays(N0, pmean0, pm2_0).update_prefix(X)
        pn = np.concatenate([[[N0]], n_i[:-1]])
        pooled_var = np.concatenate([pm2_0[None, :], m2_i[:-1]]) / np.maximum(pn, 1.0)
        known = np.arange(C)[None, :] < n_before[:, None]
        cnt = np.where(known, cnt, 0.0)
        proba = self._softmax(self._log_joint(X, cnt, mean, m2, pooled_var))
        s.update(X, y)
        return proba

    def adapt(self, event: DriftEvent) -> bool:
        """A rising-error drift: counts and M2 times ``adapt_discount``. False when nothing changed."""
        if self.adapt_discount >= 1.0 or event.rising is False or not len(self.stats):
            return False
        self.stats.discount(self.adapt_discount)
        return True

    def merge(self, other: GaussianNB) -> None:
        """Add another shard's statistics (classes aligned by label)."""
        if not isinstance(other, GaussianNB):
            raise TypeError(f"can only merge a GaussianNB, got {type(other).__name__}")
        self.stats.merge(other.stats)

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        return LearnerState("GaussianNB", self._get_params(), children={"stats": self.stats.to_state()})

    @classmethod
    def from_state(cls, state: LearnerState) -> GaussianNB:
        obj = cls(**dict(state.params))
        obj.stats = ClassStats.from_state(state.children["stats"])
        return obj


__all__ = ["GaussianNB"]
