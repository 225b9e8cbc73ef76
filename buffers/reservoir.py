"""Bounded replay buffers of labelled samples: uniform reservoir sampling and a class-balanced variant.

Pure numpy; never does I/O. Items live in preallocated arrays (``capacity`` rows), labels
as indices into a label list (any hashable label), so the state is plain arrays plus
JSON-able metadata.

Randomness is counter-based: the random numbers used for the t-th item of the stream
are a hash of (seed, t), so a buffer fed the same stream in any split into batches ends
up with the same content, and a restored buffer continues exactly where it stopped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ocld.learners.base import ClassIndex, Component, Label, LearnerState, check_X, labels_to_json


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wraps mod 2^64 by design)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(seed: int, t: np.ndarray, stream: int) -> np.ndarray:
    """U[0, 1) numbers for item positions ``t`` (int array), one independent ``stream`` per use."""
    key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    x = (np.asarray(t, dtype=np.uint64) << np.uint64(2)) | np.uint64(stream)
    with np.errstate(over="ignore"):
        z = _splitmix64(_splitmix64(x ^ key) + key)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _labels_array(labels: list[Label]) -> np.ndarray:
    """Labels as an int array when they are all ints, else an object array."""
    if labels and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        return np.asarray(labels, dtype=np.int64)
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


class Reservoir(Component):
    """Uniform reservoir sample (Vitter's Algorithm R) of at most ``capacity`` (x, y) items.

    After n items every item is in the buffer with probability min(1, capacity / n).
    ``add(X, y)`` takes a batch; ``sample(k)`` draws k stored items without replacement
    (seeded, reproducible across a state round-trip).
    """

    batch_invariant = True

    def __init__(self, capacity: int = 1000, seed: int = 0) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.seed = seed
        self.n_features_in: int | None = None
        self.n_seen = 0
        self.size = 0
        self._n_samples_drawn = 0  # calls to sample(), seeds the next one
        self._index = ClassIndex()
        self._X = np.zeros((0, 0))
        self._y = np.zeros(int(capacity), dtype=np.int64)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"capacity": 16, "seed": 0}

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.size

    @property
    def classes(self) -> list[Label]:
        return self._index.classes

    @property
    def X(self) -> np.ndarray:
        """Stored inputs [len, d] (a read-only view)."""
        view = self._X[: self.size]
        view.flags.writeable = False
        return view

    @property
    def label_indices(self) -> np.ndarray:
        """Stored labels as indices into ``classes`` [len] (a copy)."""
        return self._y[: self.size].copy()

    @property
    def y(self) -> np.ndarray:
        """Stored labels [len] (int array for int labels, else object)."""
        return _labels_array([self._index.classes[i] for i in self._y[: self.size]])

    def class_counts(self) -> np.ndarray:
        """Stored items per class [len(classes)]."""
        return np.bincount(self._y[: self.size], minlength=len(self._index))

    # ------------------------------------------------------------------ updates
    def _prepare(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = check_X(X, self.n_features_in)
        y = np.asarray(y, dtype=object).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if self.n_features_in is None:
            self.n_features_in = X.shape[1]
            self._X = np.zeros((int(self.capacity), X.shape[1]))
        return X, self._index.encode(y)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        """Offer a batch of items (X: [n, d], y: [n] labels). Mutates; returns None."""
        X, idx = self._prepare(X, y)
        n, M = X.shape[0], int(self.capacity)
        if n == 0:
            return
        t = self.n_seen + np.arange(n, dtype=np.int64)
        slots = np.where(t < M, t, np.floor(_uniform(self.seed, t, 0) * (t + 1)).astype(np.int64))
        keep = slots < M
        rows, slots = np.flatnonzero(keep), slots[keep]
        # Within a batch a later item overwrites an earlier one in the same slot.
        _, last_rev = np.unique(slots[::-1], return_index=True)
        pick = len(slots) - 1 - last_rev
        rows, slots = rows[pick], slots[pick]
        self._X[slots] = X[rows]
        self._y[slots] = idx[rows]
        self.n_seen += n
        self.size = min(M, self.n_seen)

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` stored items drawn without replacement: (X [k, d], y [k])."""
        rng = np.random.default_rng([int(self.seed), 0x5A3B1E, self._n_samples_drawn])
        self._n_samples_drawn += 1
        k = max(0, min(int(k), self.size))
        pick = rng.choice(self.size, size=k, replace=False) if k else np.zeros(0, dtype=np.int64)
        d = self.n_features_in or 0
        X = self._X[pick].copy() if self.size else np.zeros((0, d))
        return X, _labels_array([self._index.classes[i] for i in self._y[pick]])

    # ------------------------------------------------------------------ state
    def _meta(self) -> dict[str, Any]:
        return {
            "classes": labels_to_json(self.classes),
            "n_features_in": self.n_features_in,
            "n_seen": self.n_seen,
            "size": self.size,
            "n_samples_drawn": self._n_samples_drawn,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.n_features_in is None:
            return {}
        return {"X": self._X[: self.size].copy(), "y": self._y[: self.size].copy()}

    def to_state(self) -> LearnerState:
        return LearnerState(type(self).__name__, self._get_params(), self._arrays(), self._meta())

    def _restore(self, state: LearnerState) -> None:
        meta = state.meta
        self._index = ClassIndex(list(meta.get("classes", [])))
        self.n_seen = int(meta.get("n_seen", 0))
        self.size = int(meta.get("size", 0))
        self._n_samples_drawn = int(meta.get("n_samples_drawn", 0))
        d = meta.get("n_features_in")
        if d is not None:
            self.n_features_in = int(d)
            self._X = np.zeros((int(self.capacity), int(d)))
            self._X[: self.size] = np.asarray(state.arrays["X"], dtype=np.float64).reshape(self.size, int(d))
            self._y[: self.size] = np.asarray(state.arrays["y"], dtype=np.int64)

    @classmethod
    def from_state(cls, state: LearnerState) -> Reservoir:
        obj = cls(**state.params)
        obj._restore(state)
        return obj


class ClassBalancedReservoir(Reservoir):
    """Reservoir that keeps classes balanced (class-balancing reservoir sampling, Chrysakis & Moens 2020).

    While not full every item is stored. When full, an item of class c:
      - if c holds fewer slots than the largest class, replaces a random item of a largest
        class (ties between largest classes broken at random);
      - else (c is a largest class) it replaces a random item of c with probability
        m_c / n_c (stored / seen of class c): reservoir sampling within the class.
    A minority class therefore keeps every item it ever had until it is as large as the others.
    """

    def __init__(self, capacity: int = 1000, seed: int = 0) -> None:
        super().__init__(capacity=capacity, seed=seed)
        self._class_seen = np.zeros(0, dtype=np.int64)  # items seen per class
        self._class_held = np.zeros(0, dtype=np.int64)  # items stored per class

    def _grow(self) -> None:
        extra = len(self._index) - self._class_seen.shape[0]
        if extra > 0:
            self._class_seen = np.concatenate([self._class_seen, np.zeros(extra, dtype=np.int64)])
            self._class_held = np.concatenate([self._class_held, np.zeros(extra, dtype=np.int64)])

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        X, idx = self._prepare(X, y)
        self._grow()
        n, M = X.shape[0], int(self.capacity)
        if n == 0:
            return
        t = self.n_seen + np.arange(n, dtype=np.int64)
        u1, u2 = _uniform(self.seed, t, 1), _uniform(self.seed, t, 2)
        held, seen, labels = self._class_held, self._class_seen, self._y
        for i in range(n):
            c = int(idx[i])
            seen[c] += 1
            if self.size < M:
                slot = self.size
                self.size += 1
                held[c] += 1
            else:
                largest = held.max()
                if held[c] < largest:
                    candidates = np.flatnonzero(held == largest)
                    victim = int(candidates[min(int(u1[i] * len(candidates)), len(candidates) - 1)])
                    held[victim] -= 1
                    held[c] += 1
                elif u1[i] < held[c] / seen[c]:
                    victim = c
                else:
                    continue
                victim_slots = np.flatnonzero(labels[:M] == victim)
                slot = int(victim_slots[min(int(u2[i] * len(victim_slots)), len(victim_slots) - 1)])
            self._X[slot] = X[i]
            labels[slot] = c
        self.n_seen += n

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._arrays()
        if arrays:
            arrays["class_seen"] = self._class_seen.copy()
        return arrays

    @classmethod
    def from_state(cls, state: LearnerState) -> ClassBalancedReservoir:
        obj = cls(**state.params)
        obj._restore(state)
        obj._grow()
        if "class_seen" in state.arrays:
            obj._class_seen = np.asarray(state.arrays["class_seen"], dtype=np.int64).copy()
            obj._class_held = np.bincount(obj._y[: obj.size], minlength=len(obj._index)).astype(np.int64)
        return obj


__all__ = ["ClassBalancedReservoir", "Reservoir"]
