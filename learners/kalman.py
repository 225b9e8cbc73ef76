"""Kalman filter over the weights of a linear classification head, with learned forgetting.

After Titsias et al., "Kalman Filter for Online Classification of Non-Stationary Data"
(ICLR 2024). The head receives features ``phi`` (from a feature Pipeline) and regresses
one-hot targets. Pure numpy/scipy, float64; this module never does I/O and never
imports ``ocld.stream``.

Model (one sub-head; ``H`` sub-heads with different forgetting run side by side)::

    w_0 ~ N(0, s0 I)                                      prior, per class column
    w_t = g_t w_{t-1} + e_t,   e_t ~ N(0, (1 - g_t^2) s0 I)   one transition per labelled sample
    y_t = phi_t^T w_t + n_t,   n_t ~ N(0, s2)               y_t: one-hot row, C columns
    g_t = exp(-delta_t / 2),   delta_t >= 0

State: mean ``M`` [D, C] and ONE covariance ``A`` [D, D] shared by all class columns
(the columns are a-posteriori independent with identical covariance, because every
column sees the same features and the same noise).

Block update (exact, batch-cut invariant). For a chunk of B samples with prior (m, A)
and per-sample factors g_j, let G_j = prod_{k<=j} g_k and
P_j = G_j^2 A + s0 (1 - G_j^2) I (the prior covariance of w_j). Then::

    cov(y_i, y_j) = (G_max(i,j) / G_min(i,j)) phi_i^T P_min(i,j) phi_j + s2 [i = j]
                  = G_i G_j phi_i^T A phi_j + s0 (G_max/G_min - G_i G_j) phi_i^T phi_j + s2 [i = j]
    E[y_j]        = G_j phi_j^T m
    cov(w_B, y_j) = (G_B / G_j) P_j phi_j,   E[w_B] = G_B m,   cov(w_B) = P_B

and w_B | Y follows from one B x B Cholesky factor K = L L^T shared by all C columns:
``Wt = L^-1 cov(w_B, Y)^T``, ``z = L^-1 (Y - E[Y])``, ``m_B = G_B m + Wt^T z``,
``A_B = P_B - Wt^T Wt``. Cost O(B D^2 + B^2 D + B^3) in matrix products; chunks are at
most ``max_chunk`` rows. This is algebraically the same as B sequential Kalman steps
(tests check it to 1e-10), so any cut of the stream gives the same weights.

Prequential predictions come from the same factor: ``z`` are the normalized innovations,
so the one-step-ahead predictive of y_j given y_<j is mean ``Y_j - L_jj z_j`` and
variance ``L_jj^2`` (shared by all columns): exactly what predict-then-learn one sample
at a time gives, whatever the batch cut.

Probabilities ("probit" mode, the default): each column's noisy target is Gaussian,
y_c ~ N(mu_c, v) with v = g^2 phi^T A phi + (1 - g^2) s0 |phi|^2 + s2, independent across
columns. The probability that class c has the largest target is, for two classes,
Phi((mu_c - mu_o) / sqrt(2 v)); with the usual probit/logistic match
Phi(x) ~ sigmoid(sqrt(8/pi) x) this is ``softmax(mu * 2 / sqrt(pi v))``, which we use
for any number of classes. Logit differences are clipped at -30 (no probability below
~1e-13, never NaN). ``proba="mean"`` gives softmax(mu) for comparison. (The MacKay form
softmax(mu / sqrt(1 + pi v / 8)) treats mu as a logit, which a one-hot regression mean is
not, and its log-loss is no better than softmax(mu); the form above roughly halves it:
benchmarks/README.md, "Design figures of the learners".)

Forgetting learned online (Titsias et al.): treating the previous posterior (m, A) as
fixed, the one-step predictive is y_c ~ N(g mu_c, S) with mu = phi^T m,
a = phi^T A phi, q = |phi|^2, S = g^2 a + (1 - g^2) s0 q + s2, so per column

    d log p / d g = -S'/(2S) + r mu / S + r^2 S' / (2 S^2),   S' = 2 g (a - s0 q),
    d log p / d delta = -(g / 2) d log p / d g,                r = y_c - g mu_c,

averaged over the classes known at that sample. mu and a come back out of the block
(mu = yhat / g, a = (L_jj^2 - s2 - (1 - g^2) s0 q) / g^2). To stay batch-cut invariant,
delta is constant within blocks of ``block_size`` labelled samples aligned to the
learner's own counter; the gradient accumulates in the state across partial blocks and
one ascent step ``delta += lr * grad`` (projected to [0, delta_max]) is taken at each
aligned boundary.

Variance calibration (``scale_rate`` > 0): one-hot targets are not Gaussian, so the
modelled predictive variance S is off by a stream-dependent factor (the squared residuals
can be far smaller than S). Scaling s0 and s2 together by tau leaves the posterior
mean unchanged and scales every covariance by tau, so tau is a free noise scale of the
same model; each sub-head keeps a running estimate tau (mean of r^2 / S over the known
columns, folded in at each aligned boundary with weight ``scale_rate``) and uses tau * S
in the delta gradient above (the r terms are divided by tau) and in the probabilities.

Several sub-heads (``g`` a list of initial forgetting factors), each learning its own
delta by the gradient above, are combined by exponential weights on their squared
prequential error (``weights ∝ exp(-eta * cumulative sum_c r_c^2)``). The Gaussian
one-hot likelihood alone ranks forgetting factors badly across streams (on some it asks
for more forgetting than classifies best, on others for none at all without calibration),
so each sub-head's delta is confined to its own band (``delta_bounds``):
the exponential weights choose the band (the order of magnitude of the forgetting), the
likelihood gradient chooses g inside it. ``forgetting_`` reports the weight-averaged g.

``adapt(event)``: with ``adapt_restart``, the sub-heads whose delta is below that of the
sub-head with the lowest recent squared error (an exponential moving average over about
``recent_window`` samples, exact whatever the batch cut, part of the state) restart from
its posterior (M and A; each keeps its own delta, tau and mixture loss): after an abrupt
change the long-memory heads then continue from the new concept instead of averaging it
with the old one, and nothing happens when the slowest sub-head is the best lately. Then,
for the next ``adapt_samples`` labelled samples every sub-head uses
delta_eff = max(delta, adapt_delta) (g at most exp(-adapt_delta/2)), so it re-learns
fast; delta learning pauses in that window; afterwards the learned g applies again. The
window end is part of the state.

Numerical care: A is symmetrized after every update; solves use Cholesky / triangular
solves, never inverses; K >= s2 I in theory, and if the Cholesky still fails (extreme
inputs) it is retried once with jitter 1e-10 * max(diag K) on the diagonal. Features are
clipped to +-``feature_clip`` before use; non-finite features are refused when learning
and treated as 0 when predicting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.linalg.blas import dgemm, dtrsm
from scipy.linalg.lapack import dpotrf

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

_LOGIT_FLOOR = -30.0


def _softmax_masked(logits: np.ndarray, n_known: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the first ``n_known[i]`` columns; other columns get 0.

    logits: [..., n, C]; n_known: [n] -> probabilities [..., n, C] (all-zero rows where n_known = 0).
    """
    C = logits.shape[-1]
    if C and n_known.size and int(n_known.min()) >= C:  # every class known: a plain softmax
        z = logits - np.max(logits, axis=-1, keepdims=True)
        np.maximum(z, _LOGIT_FLOOR, out=z)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        return z
    known = np.arange(C)[None, :] < n_known[:, None]  # [n, C]
    z = np.where(known, logits, -np.inf)
    zmax = np.max(z, axis=-1, keepdims=True) if C else z
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    z = np.where(known, np.maximum(z - zmax, _LOGIT_FLOOR), -np.inf)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


class _Factors:
    """A cache entry of ``KalmanHead._pair_factors``: read-only arrays, so a deep copy of the learner
    (the runtime copies it before learning several segments at once) shares it instead of copying it."""

    __slots__ = ("key", "values")

    def __init__(self, key: Any, values: tuple[np.ndarray, ...]) -> None:
        self.key = key
        self.values = values

    def __deepcopy__(self, memo: dict[int, Any]) -> _Factors:
        return self


def _auto_bounds(delta0: list[float], delta_max: float) -> list[list[float]]:
    """Bands of delta, one per sub-head, so the sub-heads stay distinct (see ``delta_bounds``).

    One head: [0, delta_max]. Several: sorted by initial delta d_1 <= ... <= d_H, the edge
    between neighbours is their geometric mean sqrt(d_k d_k+1) (a d = 0 counts as d_2 / 25),
    the lowest edge is 0 and the highest min(delta_max, 2.5 d_H).
    """
    H = len(delta0)
    if H == 1:
        return [[0.0, delta_max]]
    order = sorted(range(H), key=lambda k: delta0[k])
    d = [delta0[k] for k in order]
    positive = [v for v in d if v > 0]
    floor = (min(positive) / 25.0) if positive else 1e-6
    d = [max(v, floor) for v in d]
    edges = [0.0] + [math.sqrt(d[k] * d[k + 1]) for k in range(H - 1)] + [max(d[-1], min(delta_max, 2.5 * d[-1]))]
    bounds: list[list[float]] = [[0.0, 0.0]] * H
    for rank, k in enumerate(order):
        bounds[k] = [edges[rank], edges[rank + 1]]
    return bounds


class KalmanHead(Learner):
    """Linear head whose weights are tracked by a Kalman filter with learned forgetting.

    Learns one-hot targets of the features it is given (put feature maps in front with a
    Pipeline); classes may appear at any time. Exact prequential and batch-cut invariant.

    Parameters
    ----------
    g
        Initial forgetting factor in (0, 1], or a list of them: one sub-head each, mixed by
        exponential weights. 1.0 = no forgetting.
    learn_g
        Learn each sub-head's delta = -2 log g online (False: g stays fixed).
    lr
        Gradient-ascent step on delta per unit of summed per-sample gradient.
    block_size
        delta and tau are constant within aligned blocks of this many labelled samples.
    delta_max
        Upper bound of delta (g >= exp(-delta_max / 2)).
    delta_bounds
        One [lo, hi] band for each sub-head's delta, or "auto" (see ``_auto_bounds``).
    s0
        Prior variance of each weight (and stationary variance of the drift process).
    s2
        Observation noise variance on the one-hot targets.
    eta
        Exponential-weights rate of the sub-head mixture (on squared error).
    scale_rate
        How fast the predictive-variance calibration tau follows (0: tau stays 1).
    max_log_weight_gap
        At each aligned block boundary (``block_size``) a sub-head's log-weight is raised to at
        least the best one's minus this (there, not per chunk, so the mixture weights do not
        depend on the batch cut).
    proba
        "probit" (see the module docstring) or "mean" (softmax of the predictive mean).
    adapt_delta
        On ``adapt``, every sub-head forgets with delta >= this for ``adapt_samples`` samples.
    adapt_samples
        Labelled samples of that forced forgetting (0: none).
    adapt_restart
        On ``adapt``, restart the slower sub-heads from the recently best one.
    recent_window
        Samples (about) in the moving average of squared error that picks the best sub-head.
    max_chunk
        Largest block solved at once. Per sample a chunk of B rows costs about
        4 D^2 + 3 B D + B^2 / 3 flops per sub-head, so small chunks avoid the B^2 terms, while
        very small ones pay numpy's per-call overhead more often (the default was the fastest
        at the shipped size: benchmarks/README.md, "Learner speed").
    feature_clip
        Features are clipped to +- this value.
    history_size
        How many (sample, g) points of the forgetting history are kept.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3))
    >>> y = np.where(X[:, 0] - X[:, 1] > 0, "up", "down")
    >>> head = KalmanHead(g=[1.0, 0.999])               # two sub-heads, forgetting learned
    >>> proba = head.learn_predict(X, y)                # row i predicted before row i is learned
    >>> head.classes_                                   # columns of proba, in order of appearance
    ['up', 'down']
    >>> predicted = np.array(head.classes_)[proba.argmax(axis=1)]
    >>> float(np.mean(predicted[100:] == y[100:])) > 0.9
    True
    >>> head.predict([[2.0, -2.0, 0.0]])
    array(['up'], dtype=object)
    >>> bool(np.all(head.forgetting_heads_ <= 1.0))     # g of each sub-head for the next sample
    True
    """

    batch_invariant: ClassVar[bool] = True
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        g: float | Sequence[float] = (1.0, 0.9995, 0.998),
        learn_g: bool = True,
        lr: float = 1e-6,
        block_size: int = 256,
        delta_max: float = 0.2,
        delta_bounds: Sequence[Sequence[float]] | str = "auto",
        s0: float = 1.0,
        s2: float = 0.1,
        eta: float = 0.05,
        scale_rate: float = 0.1,
        max_log_weight_gap: float = 10.0,
        proba: str = "probit",
        adapt_delta: float = 0.02,
        adapt_samples: int = 500,
        adapt_restart: bool = False,
        recent_window: int = 500,
        max_chunk: int = 64,
        feature_clip: float = 1e4,
        history_size: int = 1024,
    ) -> None:
        g_list = [float(g)] if isinstance(g, (int, float)) else [float(v) for v in g]
        if not g_list or any(not (0.0 < v <= 1.0) for v in g_list):
            raise ValueError(f"g must be a forgetting factor in (0, 1] or a non-empty list of them; got {g!r}")
        if s0 <= 0 or s2 <= 0:
            raise ValueError(f"s0 and s2 must be > 0; got s0={s0}, s2={s2}")
        if block_size < 1 or max_chunk < 1:
            raise ValueError("block_size and max_chunk must be >= 1")
        if proba not in ("probit", "mean"):
            raise ValueError(f"proba must be 'probit' or 'mean'; got {proba!r}")
        if delta_max < 0 or adapt_delta < 0 or adapt_samples < 0 or lr < 0 or eta < 0:
            raise ValueError("delta_max, adapt_delta, adapt_samples, lr and eta must be >= 0")
        if recent_window < 1:
            raise ValueError(f"recent_window must be >= 1; got {recent_window}")
        self.g = g if isinstance(g, (int, float)) else list(g_list)
        self.learn_g = bool(learn_g)
        self.lr = float(lr)
        self.block_size = int(block_size)
        self.delta_max = float(delta_max)
        delta0 = [-2.0 * math.log(v) for v in g_list]
        if isinstance(delta_bounds, str):
            if delta_bounds != "auto":
                raise ValueError(f"delta_bounds must be 'auto' or one [lo, hi] per entry of g; got {delta_bounds!r}")
            bounds = _auto_bounds(delta0, self.delta_max)
            self.delta_bounds: Any = "auto"
        else:
            bounds = [[float(lo), float(hi)] for lo, hi in delta_bounds]
            if len(bounds) != len(g_list) or any(not (0.0 <= lo <= hi) for lo, hi in bounds):
                raise ValueError("delta_bounds must give one [lo, hi] with 0 <= lo <= hi per entry of g")
            self.delta_bounds = bounds
        self._lo = np.array([b[0] for b in bounds])
        self._hi = np.array([b[1] for b in bounds])
        self.s0 = float(s0)
        self.s2 = float(s2)
        self.eta = float(eta)
        self.scale_rate = float(scale_rate)
        self.max_log_weight_gap = float(max_log_weight_gap)
        self.proba = proba
        self.adapt_delta = float(adapt_delta)
        self.adapt_samples = int(adapt_samples)
        self.adapt_restart = bool(adapt_restart)
        self.recent_window = int(recent_window)
        self.max_chunk = int(max_chunk)
        self.feature_clip = float(feature_clip)
        self.history_size = int(history_size)

        self._index = ClassIndex()
        self.n_features_in: int | None = None
        self.n_seen = 0  # labelled samples learned
        self.adapt_until = 0  # adapt window: samples with counter < adapt_until
        H = len(g_list)
        self._delta = np.array(delta0, dtype=np.float64)
        self._delta = np.clip(self._delta, self._lo, self._hi)
        self._grad = np.zeros(H)
        self._tau = np.ones(H)  # calibration scale of the predictive variance (learned)
        self._tau_acc = np.zeros(H)
        self._tau_cnt = 0.0
        self._loss = np.zeros(H)  # cumulative squared error per sub-head (min subtracted)
        self._recent = np.zeros(H)  # exponential moving average of each sub-head's squared error
        self._M: np.ndarray | None = None  # [H, D, C]
        self._A: np.ndarray | None = None  # [H, D, D]
        self._hist_n: list[int] = []
        self._hist_g: list[float] = []
        self._factors: _Factors | None = None  # see _pair_factors

    # ------------------------------------------------------------------ properties
    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self._index.classes

    @property
    def joint_segments(self) -> bool:  # type: ignore[override]
        """See ``Learner.joint_segments``: true while its covariances and means take at most 16 MiB (a copy
        then costs far less than learning a poll, and fewer calls save numpy's per-call overhead)."""
        return sum(a.nbytes for a in (self._A, self._M) if a is not None) <= 16 * 2**20

    @property
    def n_heads(self) -> int:
        return int(self._delta.shape[0])

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """H covariances [D, D] and means [D, C], twice (the copy the core keeps while learning a poll
        in one call), plus the per-chunk temporaries of the block update."""
        H, D, C = self.n_heads, int(n_features), max(int(n_classes), 1)
        return 8 * H * D * (D + C) * 2 + 8 * H * 64 * D * 4

    def _delta_at(self, t: np.ndarray) -> np.ndarray:
        """delta used by each sub-head for the samples with counters t: [H, len(t)]."""
        if not t.shape[0] or self.adapt_until <= int(t[0]):
            return np.repeat(self._delta[:, None], t.shape[0], axis=1)
        d = np.broadcast_to(self._delta[:, None], (self.n_heads, t.shape[0])).copy()
        in_adapt = t < self.adapt_until
        d[:, in_adapt] = np.maximum(d[:, in_adapt], self.adapt_delta)
        return d

    @property
    def weights_(self) -> np.ndarray:
        """Current mixture weights of the sub-heads [H]."""
        lw = -self.eta * self._loss
        w = np.exp(lw - lw.max())
        return w / w.sum()

    @property
    def forgetting_heads_(self) -> np.ndarray:
        """Forgetting factor each sub-head applies to the next labelled sample [H]."""
        return np.exp(-0.5 * self._delta_at(np.array([self.n_seen]))[:, 0])

    @property
    def forgetting_(self) -> float:
        """Effective forgetting factor: the mixture-weighted g of the sub-heads."""
        return float(self.weights_ @ self.forgetting_heads_)

    @property
    def forgetting_history_(self) -> tuple[np.ndarray, np.ndarray]:
        """(labelled-sample counter, effective g) at the last ``history_size`` block boundaries."""
        return np.array(self._hist_n, dtype=np.int64), np.array(self._hist_g, dtype=np.float64)

    @property
    def coef_(self) -> np.ndarray | None:
        """Mixture-weighted posterior mean [D, C] (None before learning)."""
        return None if self._M is None else np.einsum("h,hdc->dc", self.weights_, self._M)

    def posterior(self, head: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(M [D, C], A [D, D]) of one sub-head, columns in ``classes_`` order (copies)."""
        if self._M is None or self._A is None:
            raise RuntimeError("no posterior yet: learn at least one sample first")
        return self._M[head].copy(), self._A[head].copy()

    @property
    def noise_scale_(self) -> np.ndarray:
        """Learned calibration factor of each sub-head's predictive variance [H] (1 = as modelled)."""
        return self._tau.copy()

    # ------------------------------------------------------------------ helpers
    def _features(self, X: Any, learning: bool) -> np.ndarray:
        return finite_features(X, self.n_features_in, self.feature_clip, learning)

    def _ensure(self, D: int, C: int) -> None:
        H = self.n_heads
        if self._M is None:
            self.n_features_in = D
            self._M = np.zeros((H, D, 0))
            self._A = np.broadcast_to(self.s0 * np.eye(D), (H, D, D)).copy()
        if self._M.shape[2] < C:
            grown = np.zeros((H, D, C))
            grown[:, :, : self._M.shape[2]] = self._M
            self._M = grown

    def _to_proba(self, mean: np.ndarray, var: np.ndarray, n_known: np.ndarray) -> np.ndarray:
        """mean [H, n, C], var [H, n] -> per-head probabilities [H, n, C]."""
        mean = np.clip(mean, -1e6, 1e6)
        if self.proba == "probit":
            logits = mean * (2.0 / np.sqrt(np.pi * var))[:, :, None]
        else:
            logits = mean
        return _softmax_masked(logits, n_known)

    # ------------------------------------------------------------------ protocol
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        Phi = self._features(X, learning=False)
        n = Phi.shape[0]
        C = len(self._index)
        if self._M is None or C == 0:
            return np.zeros((n, C))
        assert self._A is not None
        g = self.forgetting_heads_  # [H]
        q = np.einsum("nd,nd->n", Phi, Phi)
        mean = g[:, None, None] * (Phi @ self._M[:, :, :C])  # [H, n, C]
        quad = np.einsum("hnd,nd->hn", Phi @ self._A, Phi)
        var = (g**2)[:, None] * quad + ((1.0 - g**2) * self.s0)[:, None] * q + self.s2
        var = self._tau[:, None] * np.maximum(var, self.s2)
        p = self._to_proba(mean, var, np.full(n, C))
        return np.einsum("h,hnc->nc", self.weights_, p)

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y, want_proba=False)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = self._learn(X, y, want_proba=True)
        assert out is not None
        return out

    @property
    def recent_error_(self) -> np.ndarray:
        """Each sub-head's squared prequential error, averaged over about ``recent_window`` samples [H]."""
        return self._recent.copy()

    def adapt(self, event: DriftEvent) -> bool:
        """React to a drift: restart slower sub-heads from the recently best one (``adapt_restart``),
        then use delta >= adapt_delta for the next ``adapt_samples`` labelled samples. False when
        nothing changed (the slowest sub-head is the best lately and ``adapt_samples`` is 0)."""
        acted = False
        if self.adapt_restart and self._M is not None and self._A is not None:
            best = int(np.argmin(self._recent))
            for h in np.flatnonzero(self._delta < self._delta[best]):
                self._M[h] = self._M[best]
                self._A[h] = self._A[best]
                acted = True
        self.adapt_until = max(self.adapt_until, self.n_seen + self.adapt_samples)
        return acted or self.adapt_samples > 0

    # ------------------------------------------------------------------ learning
    def _learn(self, X: np.ndarray, y: np.ndarray, want_proba: bool) -> np.ndarray | None:
        Phi = self._features(X, learning=True)
        # classes known before each sample (for its prediction) and after it (for its gradient)
        idx, n_before, n_after = encode_batch(self._index, y, Phi.shape[0])
        n = Phi.shape[0]
        C = len(self._index)
        if n == 0:
            return np.zeros((0, C)) if want_proba else None
        self._ensure(Phi.shape[1], C)
        Y = np.zeros((n, C))
        Y[np.arange(n), idx] = 1.0
        out = np.zeros((n, C)) if want_proba else None
        start = 0
        while start < n:
            stop = min(n, start + self.max_chunk)
            # delta, tau and the history change at aligned boundaries: never solve across one
            stop = min(stop, start + self.block_size - self.n_seen % self.block_size)
            p = self._chunk(Phi[start:stop], Y[start:stop], n_before[start:stop], n_after[start:stop], want_proba)
            if out is not None and p is not None:
                out[start:stop] = p
            start = stop
        return out

    def _chunk_factors(self, delta: np.ndarray) -> dict[str, np.ndarray]:
        """What a chunk's update needs that depends only on its deltas [H, B] (see ``_pair_factors``)."""
        B = delta.shape[1]
        g, logG, G, E, RmE, decay_pow = self._pair_factors(delta)
        GB = G[:, -1]
        GBG = GB[:, None] * G  # G_B G_j
        ratio = np.exp(logG[:, -1:] - logG)  # G_B / G_j
        return {"g": g, "G": G, "GB": GB, "GB2": GB**2, "E": E, "RmE": RmE, "GBG": GBG,
                "ct_s0": self.s0 * (ratio - GBG), "decay_pow": decay_pow[decay_pow.shape[0] - B:]}

    def _pair_factors(self, delta: np.ndarray) -> tuple[np.ndarray, ...]:
        """g, log G, G [H, B], G_i G_j and s0 (G_max(i,j)/G_min(i,j) - G_i G_j) [H, B, B], and the moving
        average's decay powers, for deltas [H, B]. delta changes only at aligned block boundaries and is
        usually the same for every sample of a chunk: then these are the leading B x B corner of the ones
        for ``max_chunk`` samples, which are cached (bit for bit what computing them again gives: the
        cumulative sums of a prefix are the prefix of the cumulative sums), so results do not depend on
        the cache."""
        B = delta.shape[1]
        d0 = delta[:, 0]
        uniform = B <= self.max_chunk and bool(np.all(delta == d0[:, None]))
        key = (d0.tobytes(), self.s0, self.recent_window, self.max_chunk)
        hit = self._factors
        if uniform and hit is not None and hit.key == key:
            g, logG, G, E, RmE, decay_pow = hit.values
            return g[:, :B], logG[:, :B], G[:, :B], E[:, :B, :B], RmE[:, :B, :B], decay_pow
        n = self.max_chunk if uniform else B
        logg = -0.5 * (np.repeat(d0[:, None], n, axis=1) if uniform else delta)
        logG = np.cumsum(logg, axis=1)  # log prod_{k<=j} g_k
        G = np.exp(logG)
        E = G[:, :, None] * G[:, None, :]  # G_i G_j
        R = np.exp(-np.abs(logG[:, :, None] - logG[:, None, :]))  # G_max(i,j) / G_min(i,j)
        decay = 1.0 - 1.0 / self.recent_window
        values = (np.exp(logg), logG, G, E, self.s0 * (R - E), decay ** np.arange(n - 1, -1, -1))
        if not uniform:
            return values
        for v in values:
            v.flags.writeable = False  # shared by copies of the learner (see _Factors)
        self._factors = _Factors(key, values)
        return self._pair_factors(delta)

    def _cholesky(self, K: np.ndarray) -> np.ndarray:
        """Lower Cholesky factors of the SPD matrices K [H, B, B] (LAPACK potrf per matrix: on these small
        sizes cheaper than numpy's batched call)."""
        L = K.copy()
        for h in range(L.shape[0]):
            # L[h] is symmetric, so its column-major view L[h].T is the same matrix; the upper factor U
            # (K = U^T U) written there in column-major order is L = U^T in row-major order.
            u, info = dpotrf(L[h].T, lower=0, clean=1, overwrite_a=1)
            if info != 0:
                return self._cholesky_jitter(K)
            if not np.may_share_memory(u, L):  # the wrapper had to copy: keep its result
                L[h] = u.T
        return L

    def _cholesky_jitter(self, K: np.ndarray) -> np.ndarray:
        try:
            return np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            # Only reachable with extreme inputs: K >= s2 I in exact arithmetic.
            diag = np.einsum("hii->hi", K)
            jitter = 1e-10 * np.max(np.abs(diag), axis=1)
            eye = np.eye(K.shape[1])
            return np.linalg.cholesky(K + jitter[:, None, None] * eye)

    def _chunk(
        self, Phi: np.ndarray, Y: np.ndarray, n_before: np.ndarray, n_after: np.ndarray, want_proba: bool
    ) -> np.ndarray | None:
        assert self._M is not None and self._A is not None
        B, D = Phi.shape
        s0, s2 = self.s0, self.s2
        t = self.n_seen + np.arange(B)
        delta = self._delta_at(t)  # [H, B]
        c = self._chunk_factors(delta)
        g, G, GB, GB2 = c["g"], c["G"], c["GB"], c["GB2"]

        q = np.einsum("bd,bd->b", Phi, Phi)
        GI = Phi @ Phi.T  # [B, B]
        H = self._A.shape[0]
        # APt[h] = Phi A[h] (A is symmetric), laid out [H, B, D] so every product below is contiguous
        APt = np.empty((H, B, D))
        for h in range(H):
            np.matmul(Phi, self._A[h], out=APt[h])
        K = APt @ Phi.T  # [H, B, B]: Phi A Phi^T, then in place
        K *= c["E"]  # G_i G_j Phi A Phi^T
        K += c["RmE"] * GI  # + s0 (G_max/G_min - G_i G_j) phi_i^T phi_j
        diag = np.arange(B)
        K[:, diag, diag] += s2
        L = self._cholesky(K)

        M = self._M
        EY = G[:, :, None] * (Phi @ M)  # [H, B, C]
        Ct = APt  # cov(w_B, y_j)^T, built in place: G_B G_j A phi_j + s0 (G_B / G_j - G_B G_j) phi_j
        Ct *= c["GBG"][:, :, None]
        Ct += c["ct_s0"][:, :, None] * Phi[None]
        r = Y[None, :, :] - EY  # [H, B, C], becomes z in place
        for h in range(H):
            # Row-major [B, n] is column-major [n, B]: solve X L^T = RHS^T in place (BLAS trsm,
            # right side, with L^T = L[h].T upper triangular), i.e. L X^T = RHS.
            U = L[h].T
            for rhs in (Ct[h], r[h]):
                x = dtrsm(1.0, U, rhs.T, side=1, lower=0, overwrite_b=1)
                if not np.may_share_memory(x, rhs):  # the wrapper had to copy: keep its result
                    rhs[...] = x.T
        Wt = Ct
        z = r
        dL = np.einsum("hii->hi", L)  # [H, B]
        innov = dL[:, :, None] * z  # y_j - yhat_j
        var = dL**2  # one-step predictive variance

        # posterior at the end of the chunk: M_B = G_B M + Wt^T z, A_B = G_B^2 A - Wt^T Wt + s0 (1 - G_B^2) I
        self._M = GB[:, None, None] * M + Wt.transpose(0, 2, 1) @ z
        A = self._A
        for h in range(H):
            # A[h] is symmetric, so its column-major view A[h].T is the same matrix; BLAS gemm
            # updates it in place (no D x D temporaries): A <- G_B^2 A - Wt^T Wt.
            x = dgemm(-1.0, Wt[h].T, Wt[h].T, beta=GB2[h], c=A[h].T, trans_b=1, overwrite_c=1)
            if not np.may_share_memory(x, A):
                A[h] = x.T
            A[h].flat[:: D + 1] += s0 * (1.0 - GB2[h])

        # prequential probabilities (mixture weights from losses before each sample)
        sq = np.sum(innov**2, axis=2)  # [H, B]
        csum = np.cumsum(sq, axis=1)
        proba = None
        if want_proba:
            yhat = Y[None, :, :] - innov
            p = self._to_proba(yhat, self._tau[:, None] * var, n_before)
            lw = -self.eta * (self._loss[:, None] + csum - sq)  # [H, B]
            w = np.exp(lw - lw.max(axis=0, keepdims=True))
            w /= w.sum(axis=0, keepdims=True)
            proba = np.einsum("hb,hbc->bc", w, p)
        loss = self._loss + csum[:, -1]
        decay = 1.0 - 1.0 / self.recent_window  # per-sample EMA, exact whatever the cut
        self._recent = decay**B * self._recent + (1.0 - decay) * (sq @ c["decay_pow"])
        self._loss = loss - loss.min()  # a common shift: the weights are unchanged

        # gradient of the one-step log predictive wrt delta (previous posterior fixed), and the
        # running calibration tau of the predictive variance (mean over known columns of r^2 / S)
        C = Y.shape[1]
        dS = None
        if self.learn_g and self.lr > 0:
            a = (var - s2 - (1.0 - g**2) * s0 * q[None]) / g**2
            dS = 2.0 * g * (a - s0 * q[None])  # [H, B]: d S / d g
        # the fast path needs every column known and the chunk wholly inside or outside an adapt window
        if int(n_before.min()) >= C and (int(t[0]) >= self.adapt_until or int(t[-1]) < self.adapt_until):
            # Every column known for every sample (the usual case): sums over the known columns are
            # sums over all C of them; with one-hot Y, sum_c r_c mu_c = (r_true - sum_c r_c^2) / g.
            if self.scale_rate > 0:
                self._tau_acc += np.sum(sq / var, axis=1) / C
                self._tau_cnt += float(B)
            if dS is not None and int(t[0]) >= self.adapt_until:
                r_true = np.sum(innov * Y[None], axis=2)
                tau = self._tau[:, None]
                per_col = ((r_true - sq) / g + 0.5 * sq * dS / var) / (tau * var)
                dll_dg = -0.5 * dS / var + per_col / C
                self._grad += np.sum(-0.5 * g * dll_dg, axis=1)
        else:
            self._slow_stats(Y, innov, var, g, dS, t, n_after)

        self.n_seen += B
        bs = self.block_size
        if self.n_seen % bs == 0:  # reached an aligned boundary (chunks never cross one)
            # the in-place BLAS update can leave A a hair off symmetric; restore it once per block
            self._A += self._A.transpose(0, 2, 1).copy()
            self._A *= 0.5
            # a lagging sub-head keeps weight >= exp(-max_log_weight_gap) of the leader's, so a
            # long-running daemon can still switch heads when the stream changes character
            self._loss = np.minimum(self._loss, self.max_log_weight_gap / max(self.eta, 1e-300))
            if self.learn_g:
                self._delta = np.clip(self._delta + self.lr * self._grad, self._lo, self._hi)
                self._grad = np.zeros_like(self._grad)
            if self.scale_rate > 0 and self._tau_cnt > 0:
                rate = min(1.0, self.scale_rate * self._tau_cnt / bs)
                self._tau = (1.0 - rate) * self._tau + rate * (self._tau_acc / self._tau_cnt)
                self._tau_acc = np.zeros_like(self._tau_acc)
                self._tau_cnt = 0.0
            self._hist_n.append(self.n_seen)
            self._hist_g.append(self.forgetting_)
            if len(self._hist_n) > self.history_size:
                del self._hist_n[: len(self._hist_n) - self.history_size]
                del self._hist_g[: len(self._hist_g) - self.history_size]
        return proba

    def _slow_stats(self, Y: np.ndarray, innov: np.ndarray, var: np.ndarray, g: np.ndarray,
                    dS: np.ndarray | None, t: np.ndarray, n_after: np.ndarray) -> None:
        """Calibration and delta-gradient sums, masked per sample: for a chunk in which some samples
        know fewer columns than the chunk has, or which an adapt window cuts."""
        C = Y.shape[1]
        known = n_after > 0
        nk = np.maximum(n_after, 1)[None, :]
        col = (np.arange(C)[None, :] < n_after[:, None]).astype(np.float64)  # [B, C]
        if self.scale_rate > 0:
            z2 = np.sum(innov**2 * col[None], axis=2) / (var * nk)  # [H, B]
            self._tau_acc += np.sum(z2 * known[None, :], axis=1)
            self._tau_cnt += float(np.sum(known))
        if dS is not None:
            active = (t >= self.adapt_until) & known
            if np.any(active):
                mu = (Y[None] - innov) / g[:, :, None]
                tau = self._tau[:, None, None]
                per_col = (innov * mu) / (tau * var[:, :, None]) + 0.5 * innov**2 * (dS / var**2)[:, :, None] / tau
                dll_dg = -0.5 * dS / var + np.sum(per_col * col[None], axis=2) / nk
                self._grad += np.sum((-0.5 * g * dll_dg) * active[None, :], axis=1)

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        arrays: dict[str, np.ndarray] = {
            "delta": self._delta.copy(),
            "grad": self._grad.copy(),
            "loss": self._loss.copy(),
            "recent": self._recent.copy(),
            "tau": self._tau.copy(),
            "tau_acc": self._tau_acc.copy(),
            "tau_cnt": np.array([self._tau_cnt]),
            "hist_n": np.array(self._hist_n, dtype=np.int64),
            "hist_g": np.array(self._hist_g, dtype=np.float64),
        }
        if self._M is not None and self._A is not None:
            arrays["M"] = self._M.copy()
            arrays["A"] = self._A.copy()
        meta = {
            "classes": labels_to_json(self._index.classes),
            "n_seen": self.n_seen,
            "adapt_until": self.adapt_until,
            "n_features_in": self.n_features_in,
        }
        return LearnerState("KalmanHead", self._get_params(), arrays, meta)

    @classmethod
    def from_state(cls, state: LearnerState) -> KalmanHead:
        params = dict(state.params)
        obj = cls(**params)
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        obj.n_seen = int(state.meta.get("n_seen", 0))
        obj.adapt_until = int(state.meta.get("adapt_until", 0))
        d = state.meta.get("n_features_in")
        obj.n_features_in = None if d is None else int(d)
        obj._delta = np.array(state.arrays["delta"], dtype=np.float64)
        obj._grad = np.array(state.arrays["grad"], dtype=np.float64)
        obj._loss = np.array(state.arrays["loss"], dtype=np.float64)
        obj._recent = np.array(state.arrays.get("recent", np.zeros_like(obj._loss)), dtype=np.float64)
        obj._tau = np.array(state.arrays["tau"], dtype=np.float64)
        obj._tau_acc = np.array(state.arrays["tau_acc"], dtype=np.float64)
        obj._tau_cnt = float(state.arrays["tau_cnt"][0])
        obj._hist_n = [int(v) for v in state.arrays.get("hist_n", np.zeros(0, np.int64))]
        obj._hist_g = [float(v) for v in state.arrays.get("hist_g", np.zeros(0))]
        if "M" in state.arrays:
            obj._M = np.array(state.arrays["M"], dtype=np.float64)
            obj._A = np.array(state.arrays["A"], dtype=np.float64)
        return obj

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"g": [1.0, 0.99], "lr": 1e-3, "block_size": 8, "adapt_samples": 20, "max_chunk": 16}


__all__ = ["KalmanHead"]
