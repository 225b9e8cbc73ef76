"""Feature maps that compose in front of a head: running standardization and fixed random expansions.

Pure numpy, float64. ``learn_transform`` is batch-cut invariant: row i of a batch is
transformed with statistics that include rows <= i (prefix sums), exactly as if the
rows had arrived one at a time, so a stream cut into different batches gives the same
features up to rounding. Random maps draw their weights from ``seed`` the first time
they see the input width, so a restored map reproduces them bit for bit.
"""

from __future__ import annotations

import numpy as np

from ocld.learners.base import FeatureMap, LearnerState, check_X


class Standardizer(FeatureMap):
    """Running mean/variance standardization (population variance, Welford-exact by prefix sums).

    A constant feature maps to 0 (no division by zero).
    """

    def __init__(self, with_std: bool = True, clip: float | None = 1e3) -> None:
        self.with_std = with_std
        self.clip = clip
        self.n_features_in: int | None = None
        self.n_features_out: int | None = None
        self.n = 0.0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def _init(self, d: int) -> None:
        self.n_features_in = self.n_features_out = d
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)

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
        if self.mean is None:
            self._init(X.shape[1])
        assert self.mean is not None and self.m2 is not None
        return self._scale(X - self.mean, self.m2, self.n, self.mean)

    def learn_transform(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        if self.mean is None:
            self._init(X.shape[1])
        assert self.mean is not None and self.m2 is not None
        if X.shape[0] == 0:
            return X.copy()
        # Shift by the old mean (or, on the very first rows, by the first row) so the prefix
        # sums stay small and a constant feature gives exactly zero spread.
        shift = self.mean if self.n > 0 else X[0]
        d = X - shift
        if self.n == 0:
            self.mean = shift.copy()
        s1 = np.cumsum(d, axis=0)
        s2 = np.cumsum(d * d, axis=0)
        n_i = self.n + np.arange(1, X.shape[0] + 1, dtype=np.float64)[:, None]
        mean_i = self.mean + s1 / n_i
        m2_i = np.maximum(self.m2 + s2 - s1 * s1 / n_i, 0.0)
        out = self._scale(X - mean_i, m2_i, n_i, mean_i)
        self.n = float(n_i[-1, 0])
        self.mean = mean_i[-1].copy()
        self.m2 = m2_i[-1].copy()
        return out

    def to_state(self) -> LearnerState:
        arrays = {} if self.mean is None else {"mean": self.mean.copy(), "m2": self.m2.copy()}  # type: ignore[union-attr]
        return LearnerState("Standardizer", self._get_params(), arrays, {"n": self.n})

    @classmethod
    def from_state(cls, state: LearnerState) -> "Standardizer":
        obj = cls(**state.params)
        obj.n = float(state.meta.get("n", 0.0))
        if "mean" in state.arrays:
            obj._init(int(state.arrays["mean"].shape[0]))
            obj.mean = np.array(state.arrays["mean"], dtype=np.float64)
            obj.m2 = np.array(state.arrays["m2"], dtype=np.float64)
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
    def from_state(cls, state: LearnerState) -> "_RandomMap":
        obj = cls(**state.params)
        d = state.meta.get("n_features_in")
        if d is not None:
            obj.n_features_in = int(d)
            obj._draw(int(d))
        return obj


class RandomFourierFeatures(_RandomMap):
    """phi(x) = sqrt(2/D) cos(x W + b), W ~ N(0, scale^2), b ~ U[0, 2 pi) (Rahimi & Recht 2007).

    Approximates an RBF kernel with length scale 1/scale; |phi(x)|^2 is about 1.
    ``linear`` > 0 appends ``linear * x`` and the constant ``linear``: a linear part with a
    bias next to the kernel part, so a linear concept needs no kernel approximation
    (``linear`` sets its prior scale relative to the Fourier features, whose squared norm
    is about 1). Output width ``n_components + d + 1`` then; 0 (default) keeps
    ``n_components``.
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
    """phi(x) = max(0, x W + b), W ~ N(0, scale^2 / d), b ~ N(0, scale^2): the AEF-OCL "buffer layer"."""

    def _draw(self, d: int) -> None:
        rng = np.random.default_rng(self.seed)
        self.W = rng.normal(0.0, self.scale / np.sqrt(d), size=(d, self.n_components))
        self.b = rng.normal(0.0, self.scale, size=self.n_components)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.maximum(self._project(X), 0.0)
