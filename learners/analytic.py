"""Analytic (closed-form) online classifier: random ReLU expansion + exact recursive ridge regression.

AEF-OCL / ACIL style (Zhuang et al., "Online Analytic Exemplar-Free Continual Learning with
Large Models for Imbalanced Autonomous Driving Task"; "ACIL: Analytic Class-Incremental
Learning"; "Analytic Federated Learning"). Pure numpy/scipy, float64; never does I/O.

Model. Inputs x [d] (raw, standardized by a Pipeline ``Standardizer``, or features of a
frozen network) pass a fixed random ReLU "buffer layer" h = max(0, x A + a) [D]; the head
is the ridge solution over every labelled sample seen so far (targets one-hot, Y [n, C]):

    W = (sum H^T H + gamma I)^-1 sum H^T Y = R B,          R = (G + gamma I)^-1.

Updates. A batch H [b, D] with b < D updates R and W by the Woodbury identity, with the
innovation form M = I + H R H^T = C C^T (Cholesky), V = C^-1 H R, Z = C^-1 (Y - H W):

    R <- R - V^T V,     W <- W + V^T Z.

A batch with b >= D is added to the sufficient statistics G = sum H^T H, B = sum H^T Y
and solved directly. Either way W equals the joint ridge solution of the stream, whatever
the batch cut and class order (new classes add zero columns to W and B); the Woodbury
rounding drift is bounded by an exact re-solve from (G, B) every ``refresh_every``
samples. The same factor C gives exact prequential predictions inside a batch: row i's
prediction from the model after rows < i is Y_i - C_ii Z_i (innovations of the
lower-triangular factor), so ``learn_predict`` does not depend on how the stream was cut.

Merging. (G, B, per-class counts) add up exactly across workers (the federated "absolute
aggregation"): :meth:`merge` and :meth:`from_statistics` give the joint model of all
shards, with columns aligned by label.

Imbalance. With ``compensate_imbalance`` a pseudo-feature generator keeps per-class mean
and diagonal variance of the inputs (:class:`ocld.buffers.stats.ClassStats`); at refresh
points it draws (max_c n_c - n_c) samples per class from N(mean_c, var_c), expands
them and adds them to a *copy* of the statistics, (P_G, P_B); the compensated head
R_c = (G + P_G + gamma I)^-1, W_c = R_c (B + P_B) serves predictions and is kept up to
date with real data by the same Woodbury step. The real statistics stay exact.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas, lapack

from ocld.buffers.stats import ClassStats
from ocld.learners.base import (
    ClassIndex,
    DriftEvent,
    Label,
    Learner,
    LearnerState,
    check_X,
    labels_to_json,
)
from ocld.learners.features import RandomReLU

# Expanded features are clipped to this magnitude: an extreme (but finite) input cannot
# poison the statistics with inf/NaN. Far above anything a standardized input produces.
_MAX_FEATURE = 1e6
# Logits are clipped before the softmax so probabilities stay finite for any input.
_MAX_LOGIT = 1e6
# Rows of H added to G in one go (the Gram update is deferred: it is needed only for
# exact re-solves, merging and state, so small batches do not pay a D x D update each).
_GRAM_FLUSH_ROWS = 256
# Batch rows per Woodbury step when prequential predictions are wanted for a big batch.
_PREQ_CHUNK = 128


def _clip_finite(a: np.ndarray, bound: float) -> np.ndarray:
    """In place: NaN -> 0, everything else clipped to [-bound, bound] (inf included). Returns ``a``."""
    np.minimum(a, bound, out=a)
    np.maximum(a, -bound, out=a)
    if np.isnan(a.sum()):
        a[np.isnan(a)] = 0.0
    return a


class AnalyticRidge(Learner):
    """Random ReLU expansion + recursive ridge regression equal to the joint batch solution.

    Exact prequential and batch-cut invariant; classes may appear at any time; the statistics
    of several learners (replicas, shards) add up to the joint model (:meth:`merge`).

    Parameters
    ----------
    expansion_size
        D, width of the fixed random ReLU layer (``RandomReLU`` seeded by ``seed``); 0 or None
        means identity (ridge on the inputs themselves). Accuracy levels off as D grows (on
        low-dimensional inputs well below the default) while a single-sample update costs D^2
        (benchmarks/README.md, "Design figures of the learners").
    expansion_scale
        Scale of the random weights (W ~ N(0, scale^2/d), b ~ N(0, scale^2)).
    gamma
        Ridge regularization (> 0).
    temperature
        Softmax temperature on the ridge outputs (> 0).
    compensate_imbalance
        Serve predictions from a head trained on the real statistics plus Gaussian
        pseudo-samples that top every class up to the largest class count.
    max_pseudo_per_class
        At most this many pseudo-samples are drawn per class and refresh; when more are owed
        each is weighted (owed / drawn), an unbiased Monte Carlo stand-in.
    refresh_every
        Every this many learned samples R is re-solved exactly from (G, B) (bounds Woodbury
        rounding drift) and the pseudo-samples are redrawn. Refresh points are at fixed sample
        positions (and right after a class first appears), so the state does not depend on
        how the stream was cut into batches.
    adapt_discount
        On a drift event multiply the old statistics (G, B, counts, class statistics) by this
        factor in (0, 1] and re-solve, so that what comes after the drift outweighs what came
        before. Off (None) by default because it gives up the point of this learner: after a
        discount W is no longer the ridge solution of the stream, it depends on when drifts
        were detected, and merged workers must have discounted at the same moments to add up
        to a meaningful joint model. The win is faster recovery under real concept drift; the
        cost is exactness, mergeability and a D^3 re-solve per drift.
    seed
        Seeds the expansion and the pseudo-sample draws.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 4))
    >>> y = (X[:, 0] * X[:, 1] > 0).astype(int)       # not linear in X: the expansion helps
    >>> whole = AnalyticRidge(expansion_size=64)
    >>> whole.learn(X, y)
    >>> float(np.mean(whole.predict(X) == y)) > 0.85
    True

    Two shards merge into the model of all the data, to rounding:

    >>> a, b = AnalyticRidge(expansion_size=64), AnalyticRidge(expansion_size=64)
    >>> a.learn(X[:200], y[:200])
    >>> b.learn(X[200:], y[200:])
    >>> a.merge(b)
    >>> bool(np.allclose(a.weights, whole.weights, rtol=0, atol=1e-9))
    True
    """

    batch_invariant = True
    exact_prequential = True

    def __init__(
        self,
        expansion_size: int | None = 512,
        expansion_scale: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        compensate_imbalance: bool = False,
        max_pseudo_per_class: int = 1024,
        refresh_every: int = 1024,
        adapt_discount: float | None = None,
        seed: int = 0,
    ) -> None:
        if expansion_size is not None and int(expansion_size) < 0:
            raise ValueError(f"expansion_size must be >= 0 (0 or None: no expansion), got {expansion_size}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if int(max_pseudo_per_class) < 1:
            raise ValueError(f"max_pseudo_per_class must be >= 1, got {max_pseudo_per_class}")
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        if adapt_discount is not None and not 0.0 < adapt_discount <= 1.0:
            raise ValueError(f"adapt_discount must be in (0, 1] or null, got {adapt_discount}")
        self.expansion_size = expansion_size
        self.expansion_scale = expansion_scale
        self.gamma = gamma
        self.temperature = temperature
        self.compensate_imbalance = compensate_imbalance
        self.max_pseudo_per_class = max_pseudo_per_class
        self.refresh_every = refresh_every
        self.adapt_discount = adapt_discount
        self.seed = seed

        self.n_features_in: int | None = None
        self.n_features_out: int | None = None
        self._index = ClassIndex()
        self._expansion: RandomReLU | None = (
            RandomReLU(n_components=int(expansion_size), scale=expansion_scale, seed=seed) if expansion_size else None
        )
        self.n_seen = 0  # samples learned (int; counts below may be discounted floats)
        self._n_refresh = 0  # pseudo-sample draws so far (seeds the next draw)
        self._gram = np.zeros((0, 0))  # G = sum H^T H (minus rows still pending)
        self._pending: list[np.ndarray] = []  # rows of H not yet added to G
        self._n_pending = 0
        self._cross = np.zeros((0, 0))  # B = sum H^T Y   [D, C]
        self._counts = np.zeros(0)  # samples per class [C]
        self._R = np.zeros((0, 0))  # (G + gamma I)^-1
        self._W = np.zeros((0, 0))  # R B             [D, C]
        self._class_stats: ClassStats | None = ClassStats() if compensate_imbalance else None
        # Compensated head (only with compensate_imbalance, after the first refresh).
        self._pseudo_gram: np.ndarray | None = None
        self._pseudo_cross: np.ndarray | None = None
        self._Rc: np.ndarray | None = None
        self._Wc: np.ndarray | None = None
        # Statistics learned elsewhere (other replicas), folded into R and W but never into
        # the own statistics (set_external).
        self._ext_gram: np.ndarray | None = None
        self._ext_cross: np.ndarray | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"expansion_size": 24, "gamma": 1.0, "refresh_every": 50, "seed": 0}

    # ------------------------------------------------------------------ views
    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self._index.classes

    @property
    def weights(self) -> np.ndarray:
        """The exact ridge weights W [D, C] (columns in ``classes_`` order); a copy."""
        return self._W.copy()

    @property
    def serving_weights(self) -> np.ndarray:
        """The weights predictions use: compensated when ``compensate_imbalance`` is on."""
        return (self._Wc if self._Wc is not None else self._W).copy()

    def sufficient_statistics(self) -> dict[str, Any]:
        """(G, B, counts) with labels: what workers publish so that anyone can rebuild the joint model.

        Keys: ``gram`` [D, D], ``cross`` [D, C], ``counts`` [C], ``classes`` (labels in
        column order), ``n_features_in``, ``n_seen``, ``class_stats`` (a ClassStats or None),
        ``params`` (constructor arguments; shards must share expansion and gamma).
        """
        self._flush()
        return {
            "gram": self._gram.copy(),
            "cross": self._cross.copy(),
            "counts": self._counts.copy(),
            "classes": list(self.classes_),
            "n_features_in": self.n_features_in,
            "n_seen": self.n_seen,
            "class_stats": None if self._class_stats is None else ClassStats.from_state(self._class_stats.to_state()),
            "params": self._get_params(),
        }

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """The expansion, G and R [D, D], B and W [D, C]; twice G and R with the imbalance compensator
        or external statistics folded in."""
        d, C = int(n_features), max(int(n_classes), 1)
        D = int(self.expansion_size) if self.expansion_size else d
        square = 2 * D * D * (2 if self.compensate_imbalance else 1)
        return 8 * ((d + 1) * D + square + 2 * D * C)

    # ------------------------------------------------------------------ set-up
    def _init_dims(self, d: int) -> None:
        self.n_features_in = d
        D = int(self.expansion_size) if self.expansion_size else d
        self.n_features_out = D
        C = len(self._index)
        self._gram = np.zeros((D, D))
        self._cross = np.zeros((D, C))
        self._counts = np.zeros(C)
        self._R = np.eye(D) / self.gamma
        self._W = np.zeros((D, C))

    def _grow_classes(self) -> None:
        """Zero columns for classes added to the index since the arrays were sized."""
        C = len(self._index)
        extra = C - self._counts.shape[0]
        if extra <= 0:
            return
        self._cross = np.hstack([self._cross, np.zeros((self._cross.shape[0], extra))])
        self._W = np.hstack([self._W, np.zeros((self._W.shape[0], extra))])
        self._counts = np.concatenate([self._counts, np.zeros(extra)])
        if self._ext_cross is not None:
            self._ext_cross = np.hstack([self._ext_cross, np.zeros((self._ext_cross.shape[0], extra))])
        if self._Wc is not None and self._pseudo_cross is not None:
            self._Wc = np.hstack([self._Wc, np.zeros((self._Wc.shape[0], extra))])
            self._pseudo_cross = np.hstack([self._pseudo_cross, np.zeros((self._pseudo_cross.shape[0], extra))])

    def _expand(self, X: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            H = X.copy() if self._expansion is None else self._expansion.transform(X)
            _clip_finite(H, _MAX_FEATURE)
        return H

    def _flush(self) -> None:
        if self._pending:
            Hp = np.vstack(self._pending)
            self._pending = []
            self._n_pending = 0
            self._gram += Hp.T @ Hp

    # ------------------------------------------------------------------ solving
    def _inverse_and_solve(self, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A^-1, A^-1 B) for a symmetric positive definite A, by Cholesky (eigh if that fails)."""
        c, info = lapack.dpotrf(A, lower=0, clean=1, overwrite_a=0)
        if info == 0:
            # C order, as a restored state has it (matmul rounding depends on the layout).
            W = np.ascontiguousarray(lapack.dpotrs(c, B, lower=0)[0]) if B.shape[1] else np.zeros_like(B)
            inv, info = lapack.dpotri(c, lower=0)
            if info == 0:
                inv = np.triu(inv) + np.triu(inv, 1).T
                return inv, W
        # Numerically indefinite (only with absurd inputs): clip the spectrum at gamma.
        vals, vecs = np.linalg.eigh((A + A.T) / 2.0)
        vals = np.maximum(vals, self.gamma)
        inv = (vecs / vals) @ vecs.T
        return inv, inv @ B

    def _system(self) -> tuple[np.ndarray, np.ndarray]:
        """(G + gamma I, B), with the external statistics added when some are folded in."""
        self._flush()
        A = self._gram + self.gamma * np.eye(self._gram.shape[0])
        B = self._cross
        if self._ext_gram is not None and self._ext_cross is not None:
            A = A + self._ext_gram
            B = B + self._ext_cross
        return A, B

    def _resolve(self, with_compensation: bool = True) -> None:
        """Exact R and W from the sufficient statistics (and the compensated head if any)."""
        A, B = self._system()
        self._R, self._W = self._inverse_and_solve(A, B)
        if with_compensation and self._pseudo_gram is not None and self._pseudo_cross is not None:
            self._Rc, self._Wc = self._inverse_and_solve(A + self._pseudo_gram, B + self._pseudo_cross)

    @staticmethod
    def _woodbury(R: np.ndarray, W: np.ndarray, H: np.ndarray, Y: np.ndarray, want_prior: bool) -> np.ndarray | None:
        """In-place R <- (R^-1 + H^T H)^-1, W <- R_new (R^-1 W + H^T Y); returns row-wise a-priori outputs.

        Row i of the returned [b, C] array is h_i W_{i-1}, the output of the model that has
        learned rows < i of this batch (exact, from the innovations of the Cholesky factor).
        """
        if not (R.flags.c_contiguous and R.flags.writeable):
            raise RuntimeError("internal: R must be a writeable C-contiguous array for the in-place BLAS update")
        E = Y - H @ W  # [b, C] residuals of the pre-batch model
        if H.shape[0] == 1:
            hr = R @ H[0]  # R is symmetric: (h R)^T = R h
            c = np.sqrt(max(1.0 + float(hr @ H[0]), 1.0))
            v = hr / c
            z = E[0] / c
            # In-place rank-1 updates (R.T is an F-ordered view of the symmetric R).
            blas.dger(-1.0, v, v, a=R.T, overwrite_a=1)
            W += np.outer(v, z)
            return Y - c * z[None, :] if want_prior else None
        HR = H @ R  # [b, D]
        M = HR @ H.T
        M += np.eye(H.shape[0])
        M = (M + M.T) / 2.0
        try:
            Cf = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:  # only with absurd inputs: M >= I in exact arithmetic
            vals, vecs = np.linalg.eigh(M)
            Cf = np.linalg.cholesky((vecs * np.maximum(vals, 1.0)) @ vecs.T)
        V = sla.solve_triangular(Cf, HR, lower=True, check_finite=False)
        Z = sla.solve_triangular(Cf, E, lower=True, check_finite=False)
        prior = Y - np.diag(Cf)[:, None] * Z if want_prior else None
        blas.dgemm(-1.0, V, V, beta=1.0, c=R.T, trans_a=1, overwrite_c=1)
        W += V.T @ Z
        return prior

    def _absorb(self, H: np.ndarray, Y: np.ndarray, want_prior: bool) -> tuple[np.ndarray | None, bool]:
        """Learn one segment (no refresh point inside).

        Returns (the serving head's a-priori outputs if ``want_prior``, whether R was re-solved).
        """
        b, D = H.shape
        self._cross += H.T @ Y
        comp = self._Rc is not None and self._Wc is not None
        if not want_prior and b >= D:
            # Big batch: accumulate the statistics and solve (cheaper and exact).
            self._flush()
            self._gram += H.T @ H
            self._resolve()
            return None, True
        self._pending.append(H)
        self._n_pending += b
        if self._n_pending >= _GRAM_FLUSH_ROWS:
            self._flush()
        priors: list[np.ndarray] = []
        chunk = _PREQ_CHUNK if want_prior else b
        for a in range(0, b, chunk):
            Hs, Ys = H[a : a + chunk], Y[a : a + chunk]
            p = self._woodbury(self._R, self._W, Hs, Ys, want_prior and not comp)
            if comp:
                p = self._woodbury(self._Rc, self._Wc, Hs, Ys, want_prior)  # type: ignore[arg-type]
            if want_prior and p is not None:
                priors.append(p)
        return (np.vstack(priors) if want_prior else None), False

    # ------------------------------------------------------------------ imbalance
    def _refresh_compensation(self) -> None:
        """Redraw pseudo-samples up to the largest class count and re-solve the compensated head."""
        stats = self._class_stats
        if stats is None or len(stats) == 0:
            return
        self._flush()
        D, C = self._gram.shape[0], len(self._index)
        rng = np.random.default_rng([int(self.seed), 0x5EED, self._n_refresh])
        self._n_refresh += 1
        pseudo_gram = np.zeros((D, D))
        pseudo_cross = np.zeros((D, C))
        owed = stats.count.max() - stats.count
        std = np.sqrt(stats.var())
        for row, label in enumerate(stats.classes):
            n_draw = min(int(np.rint(owed[row])), int(self.max_pseudo_per_class))
            if n_draw < 1 or stats.count[row] <= 0:
                continue
            Xp = stats.mean[row] + std[row] * rng.standard_normal((n_draw, stats.mean.shape[1]))
            Hp = self._expand(Xp)
            weight = owed[row] / n_draw
            pseudo_gram += weight * (Hp.T @ Hp)
            pseudo_cross[:, self._index.encode([label], grow=False)[0]] += weight * Hp.sum(axis=0)
        self._pseudo_gram, self._pseudo_cross = pseudo_gram, pseudo_cross
        A, B = self._system()
        self._Rc, self._Wc = self._inverse_and_solve(A + pseudo_gram, B + pseudo_cross)

    # ------------------------------------------------------------------ learning
    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y, want_prior=False)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact prequential step: row i is predicted by the model that has learned rows < i."""
        out = self._learn(X, y, want_prior=True)
        assert out is not None
        return out

    def _learn(self, X: np.ndarray, y: np.ndarray, want_prior: bool) -> np.ndarray | None:
        X = check_X(X, self.n_features_in)
        y = np.asarray(y, dtype=object).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        n = X.shape[0]
        if self.n_features_in is None:
            self._init_dims(X.shape[1])
        n_known = len(self._index)
        # first_row[c]: batch row at which class c first appears (-1: known before the batch).
        idx = self._index.encode(y)
        self._grow_classes()
        C = len(self._index)
        first_row = np.full(C, -1, dtype=np.int64)
        for c in range(n_known, C):
            first_row[c] = int(np.argmax(idx == c))
        if n == 0:
            return np.zeros((0, C)) if want_prior else None
        H = self._expand(X)
        Y = np.zeros((n, C))
        Y[np.arange(n), idx] = 1.0

        # Refresh points (compensation only): after a class's first row, and where the
        # running sample count reaches a multiple of refresh_every.
        cuts: list[int] = []
        if self.compensate_imbalance:
            step = int(self.refresh_every)
            start = self.n_seen
            cuts = list(range(step - start % step, n + 1, step))
            cuts += [int(r) + 1 for r in first_row[n_known:]]
            cuts = sorted({c for c in cuts if 0 < c <= n})
        bounds = [0] + cuts + ([n] if not cuts or cuts[-1] != n else [])
        outputs = np.zeros((n, C)) if want_prior else None
        for a, b in itertools.pairwise(bounds):
            if self._class_stats is not None:
                self._class_stats.update(X[a:b], y[a:b])
            prior, solved = self._absorb(H[a:b], Y[a:b], want_prior)
            if outputs is not None and prior is not None:
                outputs[a:b] = prior
            np.add.at(self._counts, idx[a:b], 1.0)
            self.n_seen += b - a
            if b in cuts:
                if self.n_seen % int(self.refresh_every) == 0 and not solved:
                    self._resolve(with_compensation=False)
                self._refresh_compensation()
        # Exact re-solve whenever the count passes a multiple of refresh_every (a function of
        # the stream position only, so the state does not depend on the batch cut).
        step = int(self.refresh_every)
        crossed = (self.n_seen - n) // step != self.n_seen // step
        if not self.compensate_imbalance and crossed and not solved:
            self._resolve()
        if outputs is None:
            return None
        known = first_row[None, :] < np.arange(n)[:, None]
        return self._softmax(outputs, known)

    # ------------------------------------------------------------------ prediction
    def _softmax(self, logits: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        z = _clip_finite(np.array(logits, dtype=np.float64), _MAX_LOGIT)
        z /= float(self.temperature)
        if known is not None:
            z = np.where(known, z, -np.inf)
        m = np.max(z, axis=1, keepdims=True) if z.shape[1] else np.zeros((z.shape[0], 1))
        m[~np.isfinite(m)] = 0.0
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        s[s <= 0] = 1.0
        return e / s

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Ridge outputs H W [n, C] of the serving head (compensated when enabled)."""
        X = check_X(X, self.n_features_in)
        if self.n_features_in is None or len(self._index) == 0:
            return np.zeros((X.shape[0], 0))
        W = self._Wc if self._Wc is not None else self._W
        with np.errstate(over="ignore", invalid="ignore"):
            return self._expand(X) @ W

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._softmax(self.decision_function(X))

    # ------------------------------------------------------------------ drift
    def adapt(self, event: DriftEvent) -> None:
        """Discount old statistics by ``adapt_discount`` (if set) and re-solve; else nothing."""
        if self.adapt_discount is None or self.n_features_in is None:
            return
        f = float(self.adapt_discount)
        self._flush()
        self._gram *= f
        self._cross *= f
        self._counts *= f
        if self._class_stats is not None and len(self._class_stats):
            self._class_stats.discount(f)
        self._resolve_all()

    # ------------------------------------------------------------------ merging
    def _check_compatible(self, params: dict[str, Any], n_features_in: int | None) -> None:
        for key in ("expansion_size", "expansion_scale", "gamma", "seed"):
            mine, theirs = getattr(self, key), params.get(key)
            if (mine or 0) != (theirs or 0):
                raise ValueError(f"cannot merge: {key} differs ({mine!r} here, {theirs!r} in the other model)")
        if self.n_features_in is not None and n_features_in is not None and n_features_in != self.n_features_in:
            raise ValueError(
                f"cannot merge: {n_features_in} input features in the other model, {self.n_features_in} here"
            )

    def merge(self, other: AnalyticRidge) -> None:
        """Add another worker's statistics (disjoint data) and re-solve: the joint model of both.

        Columns are aligned by label, so the workers may have met the classes in any order.
        Both must share expansion_size, expansion_scale, seed and gamma. Mutates; returns None.
        """
        if not isinstance(other, AnalyticRidge):
            raise TypeError(f"can only merge an AnalyticRidge, got {type(other).__name__}")
        self._merge_statistics(other.sufficient_statistics())

    def _aligned(self, stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Another model's (G, B, counts), with B and counts in this model's class columns."""
        self._check_compatible(stats.get("params", self._get_params()), stats["n_features_in"])
        if self.n_features_in is None:
            self._init_dims(int(stats["n_features_in"]))
        self._flush()
        gram = np.asarray(stats["gram"], dtype=np.float64)
        if gram.shape != self._gram.shape:
            raise ValueError(f"cannot merge: Gram matrix of shape {gram.shape}, expected {self._gram.shape}")
        cols = (
            self._index.encode(np.asarray(list(stats["classes"]), dtype=object))
            if stats["classes"]
            else np.zeros(0, np.int64)
        )
        self._grow_classes()
        cross, counts = np.zeros_like(self._cross), np.zeros_like(self._counts)
        cross[:, cols] = np.asarray(stats["cross"], dtype=np.float64)
        counts[cols] = np.asarray(stats["counts"], dtype=np.float64)
        return gram, cross, counts

    def _resolve_all(self) -> None:
        """Exact re-solve of the head, and a fresh compensated head when compensating."""
        self._resolve(with_compensation=not self.compensate_imbalance)
        if self.compensate_imbalance:
            self._refresh_compensation()

    def _merge_statistics(self, stats: dict[str, Any]) -> None:
        if stats["n_features_in"] is None:
            self._check_compatible(stats.get("params", self._get_params()), None)
            return
        gram, cross, counts = self._aligned(stats)
        self._gram += gram
        self._cross += cross
        self._counts += counts
        self.n_seen += int(stats.get("n_seen", 0))
        other_cs = stats.get("class_stats")
        if self._class_stats is not None and other_cs is not None:
            self._class_stats.merge(other_cs)
        self._resolve_all()

    def set_external(self, stats: dict[str, Any] | None) -> None:
        """Fold statistics learned elsewhere (e.g. the sum of the other replicas'
        ``sufficient_statistics()``) into the head: W becomes the ridge solution of own + external
        data, and stays so as own samples arrive (the Woodbury steps and re-solves include them).
        ``sufficient_statistics()``, ``merge`` and ``weights`` of the own data are unaffected
        except that W is the joint head; ``None`` removes the external part. Replaces (does not
        add to) the previous external statistics, so folding the latest others' totals is idempotent.
        """
        if stats is None or stats.get("n_features_in") is None:
            had = self._ext_gram is not None
            self._ext_gram = self._ext_cross = None
            if had and self.n_features_in is not None:
                self._resolve_all()
            return
        gram, cross, _ = self._aligned(stats)
        self._ext_gram, self._ext_cross = gram.copy(), cross
        self._resolve_all()

    @property
    def has_external(self) -> bool:
        """True while statistics from elsewhere are folded in."""
        return self._ext_gram is not None

    @classmethod
    def from_statistics(
        cls,
        gram: np.ndarray,
        cross: np.ndarray,
        counts: np.ndarray,
        classes: list[Label],
        n_features_in: int,
        class_stats: ClassStats | None = None,
        n_seen: int = 0,
        **params: Any,
    ) -> AnalyticRidge:
        """A learner whose head is the ridge solution of the given sufficient statistics.

        To assemble k workers, sum their ``sufficient_statistics()`` (or call :meth:`merge`
        k - 1 times); ``params`` are the shared constructor arguments.
        """
        obj = cls(**params)
        obj._merge_statistics(
            {
                "gram": gram,
                "cross": cross,
                "counts": counts,
                "classes": list(classes),
                "n_features_in": n_features_in,
                "class_stats": class_stats,
                "n_seen": n_seen,
                "params": obj._get_params(),
            }
        )
        return obj

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        self._flush()
        arrays: dict[str, np.ndarray] = {}
        if self.n_features_in is not None:
            arrays = {
                "gram": self._gram.copy(),
                "cross": self._cross.copy(),
                "counts": self._counts.copy(),
                "R": self._R.copy(),
                "W": self._W.copy(),
            }
            for name in ("pseudo_gram", "pseudo_cross", "Rc", "Wc", "ext_gram", "ext_cross"):
                value = getattr(self, "_" + name)
                if value is not None:
                    arrays[name] = value.copy()
        meta = {
            "classes": labels_to_json(self.classes_),
            "n_features_in": self.n_features_in,
            "n_seen": self.n_seen,
            "n_refresh": self._n_refresh,
        }
        children = {} if self._class_stats is None else {"class_stats": self._class_stats.to_state()}
        return LearnerState("AnalyticRidge", self._get_params(), arrays, meta, children)

    @classmethod
    def from_state(cls, state: LearnerState) -> AnalyticRidge:
        obj = cls(**state.params)
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        obj.n_seen = int(state.meta.get("n_seen", 0))
        obj._n_refresh = int(state.meta.get("n_refresh", 0))
        d = state.meta.get("n_features_in")
        if d is not None:
            obj._init_dims(int(d))
            for name in ("gram", "cross", "counts", "R", "W", "pseudo_gram", "pseudo_cross", "Rc", "Wc",
                         "ext_gram", "ext_cross"):
                if name in state.arrays:
                    setattr(obj, "_" + name, np.array(state.arrays[name], dtype=np.float64))
        if "class_stats" in state.children:
            obj._class_stats = ClassStats.from_state(state.children["class_stats"])
        return obj


__all__ = ["AnalyticRidge"]
