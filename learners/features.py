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
            out = centred
        else:
            var = m2 / np.maximum(n, 1.0)
            std = np.sqrt(np.maximum(var, 0.0))
            # A spread below rounding level of the mean is "constant": map to 0, so that
            # rounding noise is never blown up (and batch cuts cannot change the result).
            ok = std > 1e-12 + 1e-7 * np.abs(mean)
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(ok, centred / np.where(ok, std, 1.0), 0.0)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out

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
