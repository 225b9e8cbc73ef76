"""The learner protocol every online learner and feature map in ocld follows.

Batch-first on numpy arrays: a single sample is a batch of one. Learners are pure
numerical objects: this package never imports ``ocld.stream``, Kafka, Redis, files or
sockets (a test enforces it). Randomness only through a ``seed`` argument.

State goes out through :meth:`Learner.to_state` as a :class:`LearnerState`: arrays plus
JSON-able parameters and metadata, nested through ``children``. Nothing in a state
executes code when it is loaded; a learner that can only be pickled (river models)
says so with ``uses_pickle = True`` and is refused by
:func:`ocld.learners.registry.learner_from_state` unless pickle is explicitly allowed.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

Label = Hashable


class FeatureCountError(ValueError):
    """Raised when X has a different number of columns than the learner was built for."""


@dataclass(frozen=True)
class DriftEvent:
    """A detected change, passed to :meth:`Learner.adapt`.

    ``index`` is the 0-based position (in labelled-sample order for ``kind='error'``,
    in sample order for ``kind='input'``) at which the detector fired.
    """

    index: int
    detector: str
    kind: str = "error"  # "error" (concept drift seen in the 0/1 error) or "input"
    statistic: float | None = None
    # For kind="error": True when the monitored error rate rose at the detection, False when it
    # fell (the model got better: nothing to adapt to), None when unknown.
    rising: bool | None = None


@dataclass
class LearnerState:
    """Everything needed to rebuild a learner: no code, no pickle (except ``uses_pickle`` kinds).

    kind:     registry name of the class (``ocld.learners.registry``)
    params:   constructor arguments, JSON-able
    arrays:   named numpy arrays (any dtype numpy can round-trip from raw bytes)
    meta:     JSON-able extras (class labels, counters, learned scalars)
    children: nested states (pipeline steps, sub-heads)
    """

    kind: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    children: dict[str, LearnerState] = field(default_factory=dict)


class Component(ABC):
    """Shared plumbing: hyperparameters are constructor arguments stored under the same name."""

    uses_pickle: ClassVar[bool] = False
    # True when learning a stream in any split into batches gives the same state (to
    # rounding) as learning it one sample at a time; the conformance suite checks it.
    batch_invariant: ClassVar[bool] = False

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small constructor arguments for the conformance suite (fast, seeded)."""
        return {}

    def _get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name in sig.parameters
            if name != "self" and sig.parameters[name].kind is not inspect.Parameter.VAR_KEYWORD
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"

    @abstractmethod
    def to_state(self) -> LearnerState: ...

    @classmethod
    @abstractmethod
    def from_state(cls, state: LearnerState) -> Component: ...


def check_X(X: Any, n_features: int | None) -> np.ndarray:
    """Return X as a 2-D float64 array and check its width against ``n_features``."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2:
        raise FeatureCountError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise FeatureCountError(
            f"expected {n_features} features per sample, got {X.shape[1]}; "
            "send the same feature list the learner was trained on"
        )
    return X


def finite_features(X: Any, n_features: int | None, clip: float, learning: bool) -> np.ndarray:
    """``check_X``, then non-finite values: refused when learning, set to 0 / +-clip when
    predicting; finally every value clipped to +-clip."""
    Phi = check_X(X, n_features)
    if not np.all(np.isfinite(Phi)):
        if learning:
            raise ValueError("features contain NaN or Inf; drop or repair such samples before learning")
        Phi = np.nan_to_num(Phi, nan=0.0, posinf=clip, neginf=-clip)
    return np.clip(Phi, -clip, clip)


def encode_batch(index: ClassIndex, y: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column index of every label, classes known before each sample, classes known after it),
    growing ``index`` (class-incremental); checks there is one label per row."""
    y = np.asarray(y, dtype=object).reshape(-1)
    if y.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {y.shape[0]} labels")
    n0 = len(index)
    idx = index.encode(y)
    n_after = np.maximum(np.maximum.accumulate(idx) + 1, n0) if idx.size else idx
    n_before = np.concatenate([[n0], n_after[:-1]]).astype(np.int64)[: idx.size]
    return idx, n_before, n_after


class Learner(Component):
    """Online classifier protocol (class-incremental: labels may appear at any time).

    Subclasses implement ``predict_proba``, ``learn``, ``to_state``, ``from_state`` and
    usually ``adapt``. ``learn_predict`` is the prequential (test-then-train) step.
    """

    classes_: list[Label]

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """X: [n, d] -> probabilities [n, len(classes_)] (columns in ``classes_`` order)."""

    @abstractmethod
    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        """Learn a batch (X: [n, d], y: [n] labels). Mutates; returns None."""

    def adapt(self, event: DriftEvent) -> bool | None:
        """React to a detected drift. Default: nothing.

        Returns False when it changed nothing (the drift monitor then does not start its
        ``drift.cooldown`` from this event), True or None otherwise."""
        return None

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        """Bytes of state this learner will hold for inputs of ``n_features`` columns and
        ``n_classes`` classes, computed from its hyperparameters alone, before anything is
        allocated (the daemon refuses a width whose state would pass ``learner.max_state_bytes``).
        None: unknown (the check is skipped)."""
        return None

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels (not column indices), shape [n]; ``None`` before any class is known."""
        proba = self.predict_proba(X)
        n = proba.shape[0]
        out = np.empty(n, dtype=object)
        if proba.shape[1] == 0:
            out[:] = None
            return out
        idx = np.argmax(proba, axis=1)
        classes = self.classes_
        for i in range(n):
            out[i] = classes[idx[i]]
        return out

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Prequential step: probabilities for each sample, then learn the batch.

        Returns [n, len(classes_)] with columns in ``classes_`` order *after* learning
        (a class first seen in this batch has probability 0 for samples before it).

        Default: every sample is predicted by the model as it was before the batch.
        Learners that can do better (exact per-sample test-then-train computed in a
        block, independent of how the stream was cut) override this and set
        ``exact_prequential = True``.
        """
        proba = self.predict_proba(X)
        self.learn(X, y)
        return pad_columns(proba, len(self.classes_))

    exact_prequential: ClassVar[bool] = False
    # True when the runtime may learn several ``drift.adapt_grid`` segments of a poll in one call:
    # the learner is ``batch_invariant`` and ``exact_prequential``, ``copy.deepcopy`` of it costs
    # little, and it gains from fewer, larger calls (KalmanHead). When a drift adaptation falls due
    # inside such a call, the core goes back to the copy and learns only up to that point
    # (``ocld.core.runtime.LearningCore``). Same results, fewer calls.
    joint_segments: ClassVar[bool] = False


class FeatureMap(Component):
    """A transform in front of a head. ``learn_transform`` is the training path.

    learn_transform(X): features for learning each row, then update any running
        statistics; row i may use statistics that include rows <= i of this batch
        (never labels), so the result does not depend on how batches were cut.
    transform(X): features for prediction with the current statistics (no update).
    """

    n_features_in: int | None
    n_features_out: int | None

    @abstractmethod
    def transform(self, X: np.ndarray) -> np.ndarray: ...

    def learn_transform(self, X: np.ndarray) -> np.ndarray:
        return self.transform(X)

    def output_width(self, n_features: int) -> int:
        """Columns this map gives for inputs of ``n_features`` columns (from its hyperparameters)."""
        return n_features

    def estimate_state_bytes(self, n_features: int) -> int:
        """Bytes of state for inputs of ``n_features`` columns (before anything is allocated)."""
        return 0


class ClassIndex:
    """Maps labels to column indices in order of first appearance (class-incremental)."""

    def __init__(self, classes: list[Label] | None = None) -> None:
        self.classes: list[Label] = list(classes or [])
        self._index: dict[Label, int] = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, y: Any, grow: bool = True) -> np.ndarray:
        """Labels -> int64 column indices; unseen labels are appended when ``grow``."""
        y = np.asarray(y, dtype=object).reshape(-1)
        index = self._index
        try:
            # Fast path, every label already known. A dict lookup finds the normalized key
            # for numpy scalars and integral floats too (equal values hash equal), so this
            # agrees with the loop below.
            return np.fromiter((index[label] for label in y.tolist()), dtype=np.int64, count=len(y))
        except (KeyError, TypeError):
            pass
        out = np.empty(len(y), dtype=np.int64)
        for i, label in enumerate(y):
            label = normalize_label(label)
            j = index.get(label)
            if j is None:
                if not grow:
                    raise KeyError(f"unknown label {label!r}")
                j = len(self.classes)
                index[label] = j
                self.classes.append(label)
            out[i] = j
        return out


def normalize_label(label: Any) -> Label:
    """numpy scalars -> python scalars, so labels compare and serialize the same everywhere."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return label


def pad_columns(proba: np.ndarray, n_columns: int) -> np.ndarray:
    """Right-pad probability columns with zeros up to ``n_columns``."""
    if proba.shape[1] == n_columns:
        return proba
    out = np.zeros((proba.shape[0], n_columns), dtype=np.float64)
    out[:, : proba.shape[1]] = proba
    return out


def labels_to_json(classes: list[Label]) -> list[Any]:
    """Class labels as JSON-able values (int and str survive; others become str)."""
    return [c if isinstance(c, (int, str)) else str(c) for c in classes]
