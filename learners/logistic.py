"""Kalman-filtered logistic regression whose per-feature drift is learned online.

A linear tracker for concepts that drift slowly and unevenly: an extended Kalman filter
(assumed-density / Laplace step, the online Bayesian logistic regression of Spiegelhalter
& Lauritzen 1990 and MacKay 1992) over the weights of a logistic regression, with a
random-walk transition whose variance is learned per feature. It sits next to the
Titsias-style ``KalmanHead`` (learners/kalman.py), which uses a Gaussian likelihood on
one-hot targets and one forgetting factor for all weights; where only some weights drift
(river's rotating Hyperplane: 2 of 10), that costs accuracy against a plain SGD logistic
regression, while this filter learns which weights move and how fast.
Pure numpy, float64; no I/O.

Model, one filter per class (one-vs-rest; a binary stream gives two mirror-image
filters), features ``phi = [x, 1]`` (a bias is appended)::

    w_0 ~ N(0, p0 I)
    w_t = w_{t-1} + e_t,        e_t ~ N(0, diag(q))       q: one variance per feature (learned)
    P(y_t = 1 | w_t) = sigmoid(phi_t^T w_t)

One step, for each labelled sample (prior mean m, covariance P)::

    P- = P + diag(q),  a = phi^T m,  u = P- phi,  v = phi^T u
    predictive  p = sigmoid(a / sqrt(1 + pi v / 8))               (MacKay's probit match)
    s = sigmoid(a),  h = s (1 - s),  k = h / (1 + h v)
    P = P- - k u u^T,  m = m + P phi (y - s) = m + (1 - k v) u (y - s)

i.e. one Newton step on the log posterior from the prior mean (the information form
(P-^-1 + h phi phi^T)^-1 of the same update is the test reference). The update is
sequential by nature (each step linearizes at the mean the previous one left), so a
batch is a loop over its samples, vectorized over classes (for large C D^2 the rank-1
downdate is an in-place BLAS ``dger`` per class, and P is symmetrized every ``q_step``);
learning a stream in any cut gives the same state, and ``learn_predict`` returns exact
test-then-train probabilities. Class probabilities are the one-vs-rest predictives
normalized over the known classes (for two classes that is exactly the binary filter).

Learning the drift variances (method of moments on the random walk). If feature i's
weight moves by a random walk of variance q_i per sample, its filtered mean moves by
about ``L q_i`` over ``L`` samples, plus the filter's own estimation noise, whose
variance is about P_ii at each end. Every ``q_step`` labelled samples the filter stores
(m, diag P); at each such point it compares with the copy ``q_lag`` samples older::

    q_hat = max((m - m_old)^2 - q_noise (diag P + diag P_old), 0) / q_lag
    q     = clip((1 - q_rate) q + q_rate q_hat, q_min, q_max)

so weights that keep moving get a larger q (a faster, per-feature learning rate) and
stable ones fall to ``q_min``. A class's estimates start ``q_lag`` samples after it first
appeared (its jump away from the prior is not drift). The counters are the learner's own,
so the result does not depend on how batches were cut. ``learn_q=False`` keeps q fixed
at ``q0`` (a random-walk EKF with isotropic drift).

``adapt(event)``: a drift event with rising error adds ``adapt_inflation * p0`` to every
filter's covariance diagonal: the weights get more uncertainty at once, so the next
samples move them fast, while the means are kept. 0 disables it. The default is small:
it recovers after an abrupt switch about as well as a large one, while a false alarm
costs less (docs/drift.md, "Adaptation").
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.linalg.blas import dger
from scipy.special import expit

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

# From this many covariance entries (C * D * D) on, the rank-1 downdate runs as one in-place
# BLAS dger per class instead of one numpy expression with [C, D, D] temporaries, which cost
# far more once they leave the cache (benchmarks/README.md, "Learner speed"). Below it the
# numpy form is faster.
_DGER_MIN = 4096


# Up to this many classes (and while C D^2 < _DGER_MIN) the sample loop is _loop_small's.
_SCALAR_MAX_CLASSES = 4


class KalmanLogistic(Learner):
    """Extended-Kalman logistic regression (one-vs-rest) with per-feature drift learned online.

    A linear tracker for low-dimensional inputs (each class keeps a D x D covariance).
    Exact prequential and batch-cut invariant; classes may appear at any time.

    Parameters
    ----------
    p0
        Prior variance of every weight (features should be standardized: put a
        ``Standardizer`` in front).
    q0
        Initial drift variance per feature and sample (the bias included).
    learn_q
        Learn the drift variances by the moment estimate in the module docstring.
    q_lag
        Lag (labelled samples) of the moment estimate; a multiple of ``q_step``.
    q_step
        Spacing (labelled samples) of the moment estimate.
    q_rate
        Weight of each new estimate in the running q.
    q_noise
        How much of the filter's own variance (diag P now and ``q_lag`` ago) is taken off the
        squared move. 1 is right if the estimation errors at the two ends were independent;
        they are positively correlated when the gain is small, so the noise in the move is
        smaller, hence the default below 1 (benchmarks/README.md, "Design figures of the
        learners").
    q_min, q_max
        Bounds on each learned variance.
    adapt_inflation
        On a drift event with rising error, P += adapt_inflation * p0 * I.
    fit_intercept
        Append a constant feature 1.
    feature_clip
        Features are clipped to +- this value.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3))
    >>> y = (X[:, 0] + 0.5 * X[:, 2] > 0).astype(int)
    >>> model = KalmanLogistic()
    >>> proba = model.learn_predict(X, y)         # row i predicted before row i is learned
    >>> model.classes_                            # columns of proba, in order of appearance
    [1, 0]
    >>> predicted = np.array(model.classes_)[proba.argmax(axis=1)]
    >>> float(np.mean(predicted[100:] == y[100:])) > 0.95
    True
    >>> model.drift_variance_.shape               # learned per class and feature (last: the bias)
    (2, 4)
    """

    batch_invariant: ClassVar[bool] = True
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        p0: float = 1.0,
        q0: float = 1e-5,
        learn_q: bool = True,
        q_lag: int = 1000,
        q_step: int = 100,
        q_rate: float = 0.01,
        q_noise: float = 0.5,
        q_min: float = 1e-8,
        q_max: float = 1e-2,
        adapt_inflation: float = 0.1,
        fit_intercept: bool = True,
        feature_clip: float = 1e4,
    ) -> None:
        if p0 <= 0:
            raise ValueError(f"p0 must be > 0; got {p0}")
        if not (0.0 <= q_min <= q_max):
            raise ValueError(f"need 0 <= q_min <= q_max; got q_min={q_min}, q_max={q_max}")
        if q0 < 0:
            raise ValueError(f"q0 must be >= 0; got {q0}")
        if q_step < 1 or q_lag < q_step or q_lag % q_step:
            raise ValueError(f"q_lag must be a positive multiple of q_step >= 1; got q_lag={q_lag}, q_step={q_step}")
        if not (0.0 <= q_rate <= 1.0):
            raise ValueError(f"q_rate must be in [0, 1]; got {q_rate}")
        if q_noise < 0 or adapt_inflation < 0 or feature_clip <= 0:
            raise ValueError("q_noise and adapt_inflation must be >= 0 and feature_clip > 0")
        self.p0 = float(p0)
        self.q0 = float(q0)
        self.learn_q = bool(learn_q)
        self.q_lag = int(q_lag)
        self.q_step = int(q_step)
        self.q_rate = float(q_rate)
        self.q_noise = float(q_noise)
        self.q_min = float(q_min)
        self.q_max = float(q_max)
        self.adapt_inflation = float(adapt_inflation)
        self.fit_intercept = bool(fit_intercept)
        self.feature_clip = float(feature_clip)

        self._index = ClassIndex()
        self.n_features_in: int | None = None
        self.n_seen = 0
        self._M: np.ndarray | None = None  # [C, D] means
        self._P: np.ndarray | None = None  # [C, D, D] covariances
        self._q: np.ndarray | None = None  # [C, D] drift variances
        self._born = np.zeros(0, dtype=np.int64)  # [C] n_seen when each class first appeared
        self._ring_m: np.ndarray | None = None  # [K, C, D] means every q_step samples
        self._ring_p: np.ndarray | None = None  # [K, C, D] diag P at the same points

    # ------------------------------------------------------------------ properties
    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self._index.classes

    @property
    def drift_variance_(self) -> np.ndarray:
        """Learned drift variance per class and feature [C, D] (last column: the bias)."""
        return np.zeros((0, 0)) if self._q is None else self._q.copy()

    @property
    def coef_(self) -> np.ndarray | None:
        """Posterior means [C, D] (last column: the bias), None before learning."""
        return None if self._M is None else self._M.copy()

    def posterior(self, cls: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], covariance [D, D]) of one class's filter (copies)."""
        if self._M is None or self._P is None:
            raise RuntimeError("no posterior yet: learn at least one sample first")
        return self._M[cls].copy(), self._P[cls].copy()

    # ------------------------------------------------------------------ helpers
    def _features(self, X: Any, learning: bool) -> np.ndarray:
        Phi = finite_features(X, self.n_features_in, self.feature_clip, learning)
        if self.fit_intercept:
            Phi = np.hstack([Phi, np.ones((Phi.shape[0], 1))])
        return Phi

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """Per class a covariance [D, D], a mean, drift variances and the q_lag ring of (m, diag P)."""
        D = int(n_features) + (1 if self.fit_intercept else 0)
        C = max(int(n_classes), 1)
        K = max(1, self.q_lag // self.q_step)
        return 8 * C * D * (D + 2 + 2 * K)

    def _grow(self, d_in: int, C: int) -> None:
        D = d_in + (1 if self.fit_intercept else 0)
        if self._M is None:
            self.n_features_in = d_in
            self._M = np.zeros((0, D))
            self._P = np.zeros((0, D, D))
            self._q = np.zeros((0, D))
            K = self.q_lag // self.q_step
            self._ring_m = np.zeros((K, 0, D))
            self._ring_p = np.zeros((K, 0, D))
        assert self._P is not None and self._q is not None and self._ring_m is not None and self._ring_p is not None
        old = self._M.shape[0]
        if C <= old:
            return
        new = C - old
        self._M = np.concatenate([self._M, np.zeros((new, D))])
        self._P = np.concatenate([self._P, np.broadcast_to(self.p0 * np.eye(D), (new, D, D))])
        self._q = np.concatenate([self._q, np.full((new, D), self.q0)])
        self._born = np.concatenate([self._born, np.full(new, self.n_seen, dtype=np.int64)])
        K = self._ring_m.shape[0]
        self._ring_m = np.concatenate([self._ring_m, np.zeros((K, new, D))], axis=1)
        self._ring_p = np.concatenate([self._ring_p, np.full((K, new, D), self.p0)], axis=1)

    @staticmethod
    def _normalize(p: np.ndarray) -> np.ndarray:
        """One-vs-rest probabilities [n, C] -> rows summing to 1 (all-zero rows stay zero)."""
        total = p.sum(axis=1, keepdims=True)
        return p / np.maximum(total, 1e-300)

    # ------------------------------------------------------------------ protocol
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        Phi = self._features(X, learning=False)
        n = Phi.shape[0]
        C = len(self._index)
        if self._M is None or C == 0:
            return np.zeros((n, C))
        assert self._P is not None and self._q is not None
        a = Phi @ self._M.T  # [n, C]
        quad = np.einsum("cne,ne->nc", Phi @ self._P, Phi)  # phi^T P phi per class (BLAS for Phi @ P)
        v = np.maximum(quad, 0.0) + (Phi * Phi) @ self._q.T
        return self._normalize(expit(a / np.sqrt(1.0 + (math.pi / 8.0) * v)))

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y, want_proba=False)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = self._learn(X, y, want_proba=True)
        assert out is not None
        return out

    def adapt(self, event: DriftEvent) -> bool:
        """A rising-error drift: P += adapt_inflation * p0 * I for every class (means kept).
        False when nothing changed."""
        if self.adapt_inflation <= 0 or self._P is None or event.rising is False:
            return False
        D = self._P.shape[1]
        self._P[:, np.arange(D), np.arange(D)] += self.adapt_inflation * self.p0
        return True

    # ------------------------------------------------------------------ learning
    def _learn(self, X: np.ndarray, y: np.ndarray, want_proba: bool) -> np.ndarray | None:
        Phi = self._features(X, learning=True)
        idx, n_before, _ = encode_batch(self._index, y, Phi.shape[0])
        n = Phi.shape[0]
        C = len(self._index)
        if n == 0:
            return np.zeros((0, C)) if want_proba else None
        d_in = Phi.shape[1] - (1 if self.fit_intercept else 0)
        if self._M is None:
            self._grow(d_in, 0)
        # predictive logit and variance of each sample under the filter before it, for every
        # class (known classes only are used): probabilities are computed after the loop
        a_pre = np.zeros((n, C)) if want_proba else None
        v_pre = np.zeros((n, C)) if want_proba else None
        if C <= _SCALAR_MAX_CLASSES and C * Phi.shape[1] ** 2 < _DGER_MIN:
            self._loop_small(Phi, idx.tolist(), a_pre, v_pre, d_in)
        else:
            self._loop_general(Phi, idx, a_pre, v_pre, d_in)
        if a_pre is None or v_pre is None:
            return None
        p = expit(a_pre / np.sqrt(1.0 + (math.pi / 8.0) * v_pre))
        p[np.arange(C)[None, :] >= n_before[:, None]] = 0.0
        return self._normalize(p)

    def _loop_general(self, Phi: np.ndarray, idx: np.ndarray, a_pre: np.ndarray | None, v_pre: np.ndarray | None,
                      d_in: int) -> None:
        """The sample loop, vectorized over classes (many classes, or large filters: BLAS dger)."""
        M, P, q, pdiag, onehot = self._loop_views()
        for i in range(Phi.shape[0]):
            c = int(idx[i])
            if c >= M.shape[0]:
                self._grow(d_in, c + 1)
                M, P, q, pdiag, onehot = self._loop_views()
            phi = Phi[i]
            pdiag += q  # P- = P + diag(q)
            u = P @ phi  # [C, D]
            a = M @ phi  # [C]
            v = np.maximum(u @ phi, 0.0)  # [C]; >= 0 in exact arithmetic
            if a_pre is not None and v_pre is not None:
                a_pre[i, : a.shape[0]] = a
                v_pre[i, : a.shape[0]] = v
            s = expit(a)
            h = s * (1.0 - s)
            k = h / (1.0 + h * v)
            coef = (1.0 - k * v) * (onehot[c] - s)
            if P.size >= _DGER_MIN:
                for j in range(P.shape[0]):
                    # P[j].T is P[j]'s memory in Fortran order, so dger updates it in place
                    # (u u^T is symmetric, so the transpose does not matter)
                    r = dger(-float(k[j]), u[j], u[j], a=P[j].T, overwrite_a=True)
                    if not np.may_share_memory(r, P):
                        P[j] = r.T
            else:
                P -= k[:, None, None] * (u[:, :, None] * u[:, None, :])
            M += coef[:, None] * u
            self.n_seen += 1
            if self.n_seen % self.q_step == 0:
                self._moment_step()  # updates q and P in place: the loop's views stay valid

    def _loop_small(self, Phi: np.ndarray, labels: list[int], a_pre: np.ndarray | None, v_pre: np.ndarray | None,
                    d_in: int) -> None:
        """The sample loop for a few classes of small filters (the usual binary stream), the same steps
        as the general loop with fewer numpy calls per sample, which is what such a step costs: each
        class's mean is stacked under its covariance, S = [P; m^T] [C, D + 1, D], so one product gives
        P- phi and m^T phi, one rank-1 update moves both (rows of -coef u^T under k u u^T), and the
        per-class scalars are Python floats."""
        n = Phi.shape[0]
        i = 0
        while i < n:
            assert self._M is not None and self._P is not None and self._q is not None
            C, D = self._M.shape
            S = np.empty((C, D + 1, D))
            S[:, :D] = self._P
            S[:, D] = self._M
            self._P, self._M = S[:, :D], S[:, D]  # views while the loop runs (_moment_step updates them)
            pdiag = S.reshape(C, (D + 1) * D)[:, : D * D : D + 1]  # P's diagonals, a view
            q = self._q
            w = np.empty((C, D + 1))
            wk, wm = w[:, :D], w[:, D]
            a_rows: list[list[float]] = []
            v_rows: list[list[float]] = []
            start = i
            while i < n and labels[i] < C:
                c = labels[i]
                phi = Phi[i]
                pdiag += q  # P- = P + diag(q)
                r = S @ phi  # [C, D + 1]: P- phi, then m^T phi
                u = r[:, :D]
                a = r[:, D].tolist()
                v = [max(x, 0.0) for x in (u @ phi).tolist()]  # >= 0 in exact arithmetic
                a_rows.append(a)
                v_rows.append(v)
                k = []
                for j in range(C):
                    aj = a[j]
                    if aj >= 0.0:
                        sj = 1.0 / (1.0 + math.exp(-aj))
                    else:
                        e = math.exp(aj)
                        sj = e / (1.0 + e)
                    hj = sj * (1.0 - sj)
                    kj = hj / (1.0 + hj * v[j])
                    k.append(kj)
                    wm[j] = -(1.0 - kj * v[j]) * ((1.0 if j == c else 0.0) - sj)
                np.multiply(u, np.array(k)[:, None], out=wk)
                S -= w[:, :, None] * u[:, None, :]  # P -= k u u^T, m += coef u
                self.n_seen += 1
                if self.n_seen % self.q_step == 0:
                    self._moment_step()
                i += 1
            self._P, self._M = np.ascontiguousarray(S[:, :D]), S[:, D].copy()
            if a_pre is not None and v_pre is not None and i > start:
                a_pre[start:i, :C] = a_rows
                v_pre[start:i, :C] = v_rows
            if i < n:
                self._grow(d_in, labels[i] + 1)

    def _loop_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(M, P, q, a writable view of P's diagonals [C, D], one-hot rows [C, C]) for the sample loop."""
        assert self._M is not None and self._P is not None and self._q is not None
        C, D = self._M.shape
        if not self._P.flags.c_contiguous:
            self._P = np.ascontiguousarray(self._P)
        pdiag = self._P.reshape(C, D * D)[:, :: D + 1]  # a view, since P is C-contiguous
        return self._M, self._P, self._q, pdiag, np.eye(C)

    def _moment_step(self) -> None:
        """At every q_step-th labelled sample: update q from the move over q_lag, store (m, diag P)."""
        assert self._M is not None and self._P is not None and self._q is not None
        assert self._ring_m is not None and self._ring_p is not None
        K = self._ring_m.shape[0]
        slot = (self.n_seen // self.q_step) % K
        pdiag = np.einsum("cii->ci", self._P)
        t_old = self.n_seen - self.q_lag
        if self.learn_q and t_old >= 0:
            ready = t_old >= self._born + self.q_lag  # the old copy was taken after a warm-up
            if np.any(ready):
                move = (self._M - self._ring_m[slot]) ** 2 - self.q_noise * (pdiag + self._ring_p[slot])
                est = np.maximum(move, 0.0) / self.q_lag
                new_q = np.clip((1.0 - self.q_rate) * self._q + self.q_rate * est, self.q_min, self.q_max)
                self._q[ready] = new_q[ready]
        self._ring_m[slot] = self._M
        self._ring_p[slot] = pdiag
        if self._P.size >= _DGER_MIN:  # dger's rounding is not exactly symmetric: symmetrize in place
            self._P += self._P.transpose(0, 2, 1).copy()
            self._P *= 0.5

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        arrays: dict[str, np.ndarray] = {"born": self._born.copy()}
        if self._M is not None:
            assert self._P is not None and self._q is not None and self._ring_m is not None and self._ring_p is not None
            arrays.update(M=self._M.copy(), P=self._P.copy(), q=self._q.copy(),
                          ring_m=self._ring_m.copy(), ring_p=self._ring_p.copy())
        meta = {
            "classes": labels_to_json(self._index.classes),
            "n_seen": self.n_seen,
            "n_features_in": self.n_features_in,
        }
        return LearnerState("KalmanLogistic", self._get_params(), arrays, meta)

    @classmethod
    def from_state(cls, state: LearnerState) -> KalmanLogistic:
        obj = cls(**dict(state.params))
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        obj.n_seen = int(state.meta.get("n_seen", 0))
        d = state.meta.get("n_features_in")
        obj.n_features_in = None if d is None else int(d)
        obj._born = np.array(state.arrays["born"], dtype=np.int64)
        if "M" in state.arrays:
            obj._M = np.array(state.arrays["M"], dtype=np.float64)
            obj._P = np.array(state.arrays["P"], dtype=np.float64)
            obj._q = np.array(state.arrays["q"], dtype=np.float64)
            obj._ring_m = np.array(state.arrays["ring_m"], dtype=np.float64)
            obj._ring_p = np.array(state.arrays["ring_p"], dtype=np.float64)
        return obj

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"q_lag": 20, "q_step": 5, "q_rate": 0.2, "adapt_inflation": 0.1}


__all__ = ["KalmanLogistic"]
