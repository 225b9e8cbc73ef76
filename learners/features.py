"""Feature maps that compose in front of a head: running standardization and fixed random expansions.

Pure numpy, float64. ``learn_transform`` is batch-cut invariant: row i of a batch is
transformed with statistics that include rows <= i (prefix sums), exactly as if the
rows had arrived one at a time, so a stream cut into different batches gives the same
features up to rounding. Random maps draw their weights from ``seed`` the first time
they see the input width, so a restored map reproduces them bit for bit.
"""

from __future__ import annotations

import numpy as np

from ocld.buffers.moments import RunningMoments
from ocld.learners.base import FeatureMap, LearnerState, check_X


def _standardized(centred: np.ndarray, spread: np.ndarray, level: np.ndarray, clip: float | None,
                  active: np.ndarray | None = None) -> np.ndarray:
    """``centred / spread``, clipped to +- ``clip``; 0 where the spread is below the rounding level of
    ``level`` (such a column counts as constant, so rounding noise is never blown up and batch cuts
    cannot change the result) or where ``active`` is False."""
    ok = spread > 1e-12 + 1e-7 * np.abs(level)
    if active is not None:
        ok &= active
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, centred / np.where(ok, spread, 1.0), 0.0)
    return out if clip is None else np.clip(out, -clip, clip)


class Standardizer(FeatureMap):
    """Running standardization: each column minus its running mean, over its running standard deviation.

    The moments are those of every row learned so far (population variance), kept by
    :class:`~ocld.buffers.moments.RunningMoments`. ``learn_transform`` standardizes row i
    with the moments of the rows up to and including i, exactly as if the rows had come one
    at a time; ``transform`` uses the current moments and learns nothing. A column whose
    spread is below the rounding level of its mean counts as constant and maps to 0 (no
    division by zero, and rounding noise is never blown up).

    Parameters
    ----------
    with_std
        Divide by the running standard deviation (False: only subtract the running mean).
    clip
        Standardized values are clipped to +- this (None: no clip), so that one extreme row
        cannot produce huge features.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(10.0, 3.0, size=(500, 2))
    >>> std = Standardizer()
    >>> Z = std.learn_transform(X)        # row i uses the mean and spread of rows 0..i
    >>> Z[0].tolist()                     # the first row has no spread yet
    [0.0, 0.0]
    >>> np.round(std.transform([[10.0, 13.0]]), 1)
    array([[0.1, 1. ]])
    """

    def __init__(self, with_std: bool = True, clip: float | None = 1e3) -> None:
        self.with_std = with_std
        self.clip = clip
        self.n_features_in: int | None = None
        self.n_features_out: int | None = None
        self.moments = RunningMoments()

    @property
    def n(self) -> float:
        """Rows learned."""
        return self.moments.count

    @property
    def mean(self) -> np.ndarray | None:
        return self.moments.mean

    @property
    def m2(self) -> np.ndarray | None:
        """Sum of squared deviations from the mean, per column."""
        return self.moments.m2

    def _init(self, d: int) -> None:
        self.n_features_in = self.n_features_out = d
        self.moments.start(d)

    def estimate_state_bytes(self, n_features: int) -> int:
        return 2 * 8 * n_features  # mean and m2

    def _scale(self, centred: np.ndarray, m2: np.ndarray, n: np.ndarray | float, mean: np.ndarray) -> np.ndarray:
        if not self.with_std:
            return centred if self.clip is None else np.clip(centred, -self.clip, self.clip)
        std = np.sqrt(np.maximum(m2 / np.maximum(n, 1.0), 0.0))
        return _standardized(centred, std, mean, self.clip)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        self._init(X.shape[1])
        m = self.moments
        assert m.mean is not None and m.m2 is not None
        return self._scale(X - m.mean, m.m2, m.count, m.mean)

    def learn_transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        self._init(X.shape[1])
        if X.shape[0] == 0:
            return X.copy()
        n_i, mean_i, m2_i = self.moments.update_prefix(X)
        return self._scale(X - mean_i, m2_i, n_i, mean_i)

    def to_state(self) -> LearnerState:
        # The moments' arrays (mean, m2) and count (meta "n"): the layout every Standardizer state has had,
        # so that a state loads in older and newer ocld alike.
        moments = self.moments.to_state()
        return LearnerState("Standardizer", self._get_params(), moments.arrays, {"n": moments.meta["count"]})

    @classmethod
    def from_state(cls, state: LearnerState) -> Standardizer:
        obj = cls(**state.params)
        obj.moments = RunningMoments.from_arrays(state.meta.get("n", 0.0), state.arrays.get("mean"),
                                                 state.arrays.get("m2"))
        d = obj.moments.n_features
        if d is not None:
            obj.n_features_in = obj.n_features_out = d
        return obj


class FixedStandardizer(FeatureMap):
    """Standardization learned over a short warm-up per column, then fixed for good.

    A running :class:`Standardizer` keeps moving, and a learner that keeps what it learned
    (AnalyticRidge's exact statistics) then holds early rows on other features than late
    ones. In class-incremental learning the moves are large: each new task shifts the means
    and lights up pixels that were blank so far, and the final model trails joint training
    by up to 10 points depending on the class order. This map moves only during each
    column's warm-up, so everything learned afterwards sits on one fixed map, whatever the
    order (``benchmarks/class_order.py``).

    Per column, with c its first value:

    - while every value so far equals c, the column maps to 0;
    - a *dense* column (fewer than half of its rows at c) is standardized by the mean and
      standard deviation of its rows; a *sparse* one (at least half at c: a pixel that is
      mostly blank, a sensor that comes online late) keeps c as its offset and takes the
      root mean square of its deviations from c as its scale, so rows at c map to 0 before
      and after, and the spread is that of its other values, not one diluted by the rows at c;
    - the offset and scale are fixed for good once the column has taken ``fix_after`` values
      other than c (``fix_sparse_after`` while it is sparse: a column that comes online with
      a new class must settle within that class's first rows); until then row i uses the
      estimates from rows up to and including i.

    c is the first value, so a mostly blank column that happens to be non-blank in its first
    row counts its blanks as other values and is treated as dense: still fixed, only wider.

    Row i is transformed with statistics of rows <= i only, so ``learn_transform`` is
    batch-cut invariant. The price against a running Standardizer: a fixed map does not
    follow features whose range drifts (``clip`` bounds the damage), and the estimates
    come from ``fix_after`` values, so they are noisier than a long running mean.

    Parameters
    ----------
    fix_after
        Values other than its first that a dense column takes before its offset and scale are fixed.
    fix_sparse_after
        The same for a sparse column.
    clip
        Standardized values are clipped to +- this (None: no clip); a fixed map meets values
        beyond its warm-up range, and this bounds them.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.column_stack([np.arange(100.0), np.r_[np.zeros(60), np.full(40, 8.0)]])
    >>> fs = FixedStandardizer(fix_after=20, fix_sparse_after=10)
    >>> Z = fs.learn_transform(X)
    >>> bool(Z[:60, 1].any())                 # the sparse column maps to 0 while it is at c
    False
    >>> fs.offset.tolist(), np.round(fs.scale, 3).tolist()   # column 0: rows 0-20; column 1: c = 0
    ([10.0, 0.0], [6.055, 8.0])
    >>> fs.varied.tolist()                    # values other than c when fixed: dense 20, sparse 10
    [20.0, 10.0]
    >>> before = fs.transform([[50.0, 8.0]])
    >>> _ = fs.learn_transform(1000.0 * X)    # learning more does not move a fixed map
    >>> np.array_equal(fs.transform([[50.0, 8.0]]), before)
    True
    """

    _ARRAYS = ("first", "varied", "fixed", "offset", "scale")

    def __init__(self, fix_after: int = 100, fix_sparse_after: int = 20, clip: float | None = 10.0) -> None:
        for name, value in (("fix_after", fix_after), ("fix_sparse_after", fix_sparse_after)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or null, got {clip}")
        self.fix_after = int(fix_after)
        self.fix_sparse_after = int(fix_sparse_after)
        self.clip = clip
        self.n_features_in: int | None = None
        self.n_features_out: int | None = None
        # The moments of every row up to the one at which the last column is fixed (not needed
        # after it; stopping there keeps the state independent of the batch cut); per column:
        # first value c, values other than c up to its fixing, fixed (1.0) or not, and the fixed
        # offset and scale.
        self.moments = RunningMoments()
        self.first: np.ndarray | None = None
        self.varied = self.fixed = self.offset = self.scale = np.zeros(0)

    def _init(self, d: int) -> None:
        if self.n_features_in is None:
            self.n_features_in = self.n_features_out = d
            self.varied, self.fixed, self.offset = np.zeros(d), np.zeros(d), np.zeros(d)
            self.scale = np.ones(d)

    def estimate_state_bytes(self, n_features: int) -> int:
        return (len(self._ARRAYS) + 2) * 8 * n_features  # the arrays, and the moments' mean and M2

    @staticmethod
    def _estimates(c: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray,
                   v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offset, scale and sparse (bool) from the moments of ``n`` rows, ``v`` of them other
        than c (arrays broadcast). A sparse column's sum of (x - c)^2 over its other values is
        that over all rows, M2 + n (mean - c)^2, as the rows at c add nothing."""
        sparse = n - v >= v
        dense_scale = np.sqrt(m2 / n)
        sparse_scale = np.sqrt((m2 + n * (mean - c) ** 2) / np.maximum(v, 1.0))
        return np.where(sparse, c, mean), np.where(sparse, sparse_scale, dense_scale), sparse

    def _scale(self, X: np.ndarray, offset: np.ndarray, scale: np.ndarray, active: np.ndarray) -> np.ndarray:
        return _standardized(X - offset, scale, offset, self.clip, active)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        self._init(X.shape[1])
        m = self.moments
        if self.first is None or m.mean is None or m.m2 is None:
            return np.zeros_like(X)
        fixed = self.fixed > 0
        off, sc, _ = self._estimates(self.first, np.asarray(max(m.count, 1.0)), m.mean, m.m2, self.varied)
        return self._scale(X, np.where(fixed, self.offset, off), np.where(fixed, self.scale, sc),
                           fixed | (self.varied > 0))

    def learn_transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        if X.shape[0] == 0:
            return X.copy()
        b, d = X.shape
        self._init(d)
        if self.first is None:
            self.first = X[0].copy()
        fixed = self.fixed > 0
        if fixed.all():
            return self._scale(X, self.offset, self.scale, fixed)
        v = self.varied + np.cumsum(X != self.first, axis=0)
        n, mean, m2 = self.moments.update_prefix(X)  # [b, 1], [b, d], [b, d]: the moments after each row
        off, sc, sparse = self._estimates(self.first, n, mean, m2, v)
        # columns not yet fixed that reach fix_after (fix_sparse_after) values other than c in this batch,
        # and the row where they do
        reach = v >= np.where(sparse, self.fix_sparse_after, self.fix_after)
        fixes = ~fixed & reach[-1]
        at = reach.argmax(axis=0)
        cols = np.flatnonzero(fixes)
        offset, scale = self.offset.copy(), self.scale.copy()
        offset[cols], scale[cols] = off[at[cols], cols], sc[at[cols], cols]
        use_fixed = fixed | (fixes & (np.arange(b)[:, None] >= at))  # [b, d]
        out = self._scale(X, np.where(use_fixed, offset, off), np.where(use_fixed, scale, sc), use_fixed | (v > 0))
        if (fixed | fixes).all():  # the last open column is fixed here: the moments stop at its row
            last = int(at[cols].max())
            m = self.moments
            m.count, m.mean, m.m2 = float(n[last, 0]), mean[last].copy(), m2[last].copy()
        # each column's count of other values stops where it is fixed
        self.varied = np.where(fixed, self.varied, v[np.where(fixes, at, b - 1), np.arange(d)])
        self.fixed = (fixed | fixes).astype(np.float64)
        self.offset, self.scale = offset, scale
        return out

    def to_state(self) -> LearnerState:
        arrays = {} if self.first is None else {k: getattr(self, k).copy() for k in self._ARRAYS}
        moments = self.moments.to_state()
        return LearnerState("FixedStandardizer", self._get_params(), {**arrays, **moments.arrays},
                            {"n": moments.meta["count"]})

    @classmethod
    def from_state(cls, state: LearnerState) -> FixedStandardizer:
        obj = cls(**state.params)
        obj.moments = RunningMoments.from_arrays(state.meta.get("n", 0.0), state.arrays.get("mean"),
                                                 state.arrays.get("m2"))
        if "first" in state.arrays:
            for k in cls._ARRAYS:
                setattr(obj, k, np.array(state.arrays[k], dtype=np.float64))
            obj.n_features_in = obj.n_features_out = int(obj.varied.shape[0])
        return obj


class _RandomMap(FeatureMap):
    """Fixed random projection X @ W + b, weights drawn from ``seed`` at first use."""

    def output_width(self, n_features: int) -> int:
        return int(self.n_components)

    def estimate_state_bytes(self, n_features: int) -> int:
        return 8 * (n_features + 1) * int(self.n_components)  # W [d, k] and b [k]

    def __init__(self, n_components: int = 128, scale: float = 1.0, seed: int = 0) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.scale = scale
        self.seed = seed
        self.n_features_in: int | None = None
        self.n_features_out: int | None = n_components
        self.W: np.ndarray | None = None
        self.b: np.ndarray | None = None

    def _draw(self, d: int) -> None:
        raise NotImplementedError

    def _project(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        if self.W is None:
            self.n_features_in = X.shape[1]
            self._draw(X.shape[1])
        return X @ self.W + self.b

    def to_state(self) -> LearnerState:
        # W and b are re-drawn from the seed, so the state is just the input width.
        return LearnerState(type(self).__name__, self._get_params(), {}, {"n_features_in": self.n_features_in})

    @classmethod
    def from_state(cls, state: LearnerState) -> _RandomMap:
        obj = cls(**state.params)
        d = state.meta.get("n_features_in")
        if d is not None:
            obj.n_features_in = int(d)
            obj._draw(int(d))
        return obj


class RandomFourierFeatures(_RandomMap):
    """phi(x) = sqrt(2/D) cos(x W + b), W ~ N(0, scale^2), b ~ U[0, 2 pi) (Rahimi & Recht 2007).

    Approximates an RBF kernel with length scale 1/scale; |phi(x)|^2 is about 1. Nothing is
    learned: W and b are drawn from ``seed`` when the input width is first seen, and a
    restored map draws them again bit for bit (the state holds only the width).

    Parameters
    ----------
    n_components
        D, the number of Fourier features.
    scale
        Standard deviation of the random frequencies W (the inverse of the kernel's length
        scale, for standardized inputs).
    seed
        Seeds W and b.
    linear
        > 0 appends ``linear * x`` and the constant ``linear``: a linear part with a bias next
        to the kernel part, so a linear concept needs no kernel approximation (``linear`` sets
        its prior scale relative to the Fourier features, whose squared norm is about 1).
        Output width ``n_components + d + 1`` then; 0 (default) keeps ``n_components``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> rff = RandomFourierFeatures(n_components=8, scale=0.5, seed=0, linear=0.1)
    >>> rff.transform(X).shape                    # 8 Fourier features, 0.1 x and a bias 0.1
    (5, 12)
    >>> from ocld.learners.registry import component_from_state
    >>> np.array_equal(component_from_state(rff.to_state()).transform(X), rff.transform(X))
    True
    """

    def output_width(self, n_features: int) -> int:
        return int(self.n_components) + (n_features + 1 if float(self.linear) > 0.0 else 0)

    def __init__(self, n_components: int = 128, scale: float = 1.0, seed: int = 0, linear: float = 0.0) -> None:
        super().__init__(n_components, scale, seed)
        if not linear >= 0.0:
            raise ValueError(f"linear must be >= 0, got {linear}")
        self.linear = float(linear)

    def _draw(self, d: int) -> None:
        rng = np.random.default_rng(self.seed)
        self.W = rng.normal(0.0, self.scale, size=(d, self.n_components))
        self.b = rng.uniform(0.0, 2.0 * np.pi, size=self.n_components)
        if self.linear > 0.0:
            self.n_features_out = self.n_components + d + 1

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)  # once: _project's own check is then a no-copy pass
        Z = np.sqrt(2.0 / self.n_components) * np.cos(self._project(X))
        if self.linear > 0.0:
            Z = np.hstack([Z, self.linear * X, np.full((X.shape[0], 1), self.linear)])
        return Z


class RandomReLU(_RandomMap):
    """phi(x) = max(0, x W + b), W ~ N(0, scale^2 / d), b ~ N(0, scale^2): the AEF-OCL "buffer layer".

    Nothing is learned: W and b are drawn from ``seed`` when the input width is first seen.

    Parameters
    ----------
    n_components
        Width of the layer.
    scale
        Scale of the random weights and biases.
    seed
        Seeds W and b, so that replicas with one seed share the layer (their statistics then
        add up: :class:`~ocld.learners.analytic.AnalyticRidge`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> H = RandomReLU(n_components=16, seed=0).transform(X)
    >>> H.shape, bool((H >= 0).all())
    ((5, 16), True)
    >>> np.array_equal(RandomReLU(n_components=16, seed=0).transform(X), H)   # fixed by the seed
    True
    """

    def _draw(self, d: int) -> None:
        rng = np.random.default_rng(self.seed)
        self.W = rng.normal(0.0, self.scale / np.sqrt(d), size=(d, self.n_components))
        self.b = rng.normal(0.0, self.scale, size=self.n_components)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(self._project(X), 0.0)
