"""RiverLearner: any river classifier behind the ocld learner protocol (for baselines).

The river model is named by dotted path (``river.`` only) plus constructor parameters,
or by a pipeline spec (a list of such steps joined with river's ``|``). A parameter
value of the form ``{"model": "river....", "params": {...}}`` is built the same way,
so nested estimators (``OneVsRestClassifier(classifier=...)``, a drift detector) can be
written in YAML.

Rows go through ``learn_one`` / ``predict_proba_one`` as dicts with features named
``x0 .. x{d-1}``: river's ``*_many`` methods take dataframes (narwhals over pandas,
polars or pyarrow), none of which ocld depends on, and most river classifiers (ARF,
Hoeffding trees) have no ``*_many`` at all.

The river model is handed class *indices* (0, 1, 2, ... in order of first appearance),
not the raw labels, so any hashable label works and a binary-only river model (e.g.
``LogisticRegression``) sees 0/1 exactly as it expects (False/True). A third class on a
binary-only model raises a ``ValueError`` saying to wrap it in
``river.multiclass.OneVsRestClassifier``.

State: river models can only be pickled, so ``uses_pickle = True`` and the model is
stored as pickle bytes in a uint8 array; ``ocld.learners.registry.learner_from_state``
refuses such a state unless ``allow_pickle`` is set. This module never imports
``ocld.stream``, files or sockets; river is imported lazily.
"""

from __future__ import annotations

import importlib
import math
import pickle
from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import ClassIndex, DriftEvent, Learner, LearnerState, check_X, labels_to_json


def _import_river(path: str) -> Any:
    if not isinstance(path, str) or not path.startswith("river."):
        raise ValueError(f"river model path must start with 'river.' (e.g. 'river.forest.ARFClassifier'), got {path!r}")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from None


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("model"), str) and set(value) <= {"model", "params"}


def _build_value(value: Any) -> Any:
    if _is_spec(value):
        return _build_one(value["model"], value.get("params"))
    if isinstance(value, list):
        return [_build_value(v) for v in value]
    return value


def _build_one(path: str, params: dict[str, Any] | None) -> Any:
    cls = _import_river(path)
    kwargs = {k: _build_value(v) for k, v in (params or {}).items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad parameters for {path}: {exc}") from None


def build_river_model(model: str | list[dict[str, Any]], params: dict[str, Any] | None, scale: bool) -> Any:
    """A fresh river estimator from a dotted path + params, or a list of ``{model, params}`` steps."""
    if isinstance(model, str):
        est = _build_one(model, params)
    elif isinstance(model, list) and model and all(_is_spec(s) for s in model):
        if params:
            raise ValueError("with a pipeline spec (a list of steps), give params inside each step, not in params")
        steps = [_build_one(s["model"], s.get("params")) for s in model]
        est = steps[0]
        for step in steps[1:]:
            est = est | step
    else:
        raise ValueError(
            "model must be a dotted path such as 'river.forest.ARFClassifier' or a list of "
            "{model: 'river....', params: {...}} steps"
        )
    if scale:
        from river.preprocessing import StandardScaler

        est = StandardScaler() | est
    return est


class RiverLearner(Learner):
    """Any river classifier behind the ocld learner protocol, one sample at a time (for baselines).

    Parameters
    ----------
    model
        Dotted path under ``river.`` (``"river.forest.ARFClassifier"``) or a pipeline spec
        ``[{model, params}, ...]``.
    params
        Constructor arguments of ``model`` (nested ``{model, params}`` values are built).
    scale
        Put ``river.preprocessing.StandardScaler`` in front.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> y = np.where(X[:, 0] > 0, "a", "b")
    >>> model = RiverLearner("river.linear_model.LogisticRegression", scale=True)
    >>> proba = model.learn_predict(X, y)     # learn_one / predict_proba_one per row
    >>> model.classes_
    ['a', 'b']
    >>> model.predict([[2.0, 0.0], [-2.0, 0.0]])
    array(['a', 'b'], dtype=object)

    Its state holds the pickled river model, so restoring it needs ``allow_pickle``:

    >>> from ocld.learners.registry import PickleRefused, learner_from_state
    >>> try:
    ...     learner_from_state(model.to_state())
    ... except PickleRefused:
    ...     print("refused")
    refused
    >>> learner_from_state(model.to_state(), allow_pickle=True).predict([[2.0, 0.0]])
    array(['a'], dtype=object)
    """

    uses_pickle: ClassVar[bool] = True
    batch_invariant: ClassVar[bool] = True  # one sample at a time whatever the batch cut
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        model: str | list[dict[str, Any]] = "river.linear_model.LogisticRegression",
        params: dict[str, Any] | None = None,
        scale: bool = False,
    ) -> None:
        self.model = model
        self.params = dict(params or {})
        self.scale = bool(scale)
        self._model = build_river_model(model, self.params, self.scale)
        self._index = ClassIndex()
        self.n_features: int | None = None
        self._names: list[str] = []
        self.n_learned = 0
        self._known_before = 0

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        # Deterministic end to end (a Hoeffding tree's Gaussian estimators carry unseeded RNGs,
        # so their pickles differ between identical runs although predictions agree).
        return {
            "model": "river.multiclass.OneVsRestClassifier",
            "params": {"classifier": {"model": "river.linear_model.LogisticRegression"}},
            "scale": True,
        }

    @property
    def classes_(self) -> list[Any]:  # type: ignore[override]
        return self._index.classes

    def _set_width(self, d: int) -> None:
        self.n_features = d
        self._names = [f"x{j}" for j in range(d)]

    def _proba(self, features: dict[str, float], k: int) -> list[float]:
        """river's probabilities for one row over the first ``k`` classes, normalized (uniform if
        empty). Python floats throughout: for the handful of classes of a row, numpy's per-call cost
        would be most of the adapter's."""
        p = [0.0] * k
        for j, v in self._model.predict_proba_one(features).items():
            j = int(j)  # binary models answer with False/True
            if 0 <= j < k and v is not None and math.isfinite(v):
                p[j] = float(v)
        total = sum(p)
        if total > 0:
            return [v / total for v in p]
        return [1.0 / k] * k  # the model knows nothing yet: uniform

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features)
        k = len(self._index)
        out = np.zeros((X.shape[0], k), dtype=np.float64)
        if k == 0:
            return out
        names = self._names
        for i, row in enumerate(X.tolist()):
            out[i] = self._proba(dict(zip(names, row)), k)
        return out

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """River's own test-then-train, one sample at a time: row i is predicted by the model
        that has learned rows < i (exact prequential, whatever the batch cut)."""
        X = check_X(X, self.n_features)
        y_idx = self._encode(X, y)
        k = len(self._index)
        known = self._known_before  # classes seen before this batch; new ones appear in index order
        names, model, proba = self._names, self._model, self._proba
        rows: list[list[float]] = []
        pad = [0.0] * k
        for row, j in zip(X.tolist(), y_idx.tolist()):
            features = dict(zip(names, row))
            rows.append(proba(features, known) + pad[known:] if known else pad)
            model.learn_one(features, j)
            if j >= known:
                known = j + 1
        self.n_learned += X.shape[0]
        return np.array(rows, dtype=np.float64).reshape(X.shape[0], k)

    def _encode(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        y_arr = np.asarray(y, dtype=object).reshape(-1)
        if y_arr.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y_arr.shape[0]} labels")
        if self.n_features is None and X.shape[0]:
            self._set_width(X.shape[1])
        self._known_before = len(self._index)
        y_idx = self._index.encode(y_arr)
        if len(self._index) > 2 and not getattr(self._model, "_multiclass", True):
            raise ValueError(
                f"{self.model!r} is a binary classifier but the stream has a third class; wrap it: "
                "model: river.multiclass.OneVsRestClassifier, params: {classifier: {model: ...}}"
            )
        return y_idx

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        X = check_X(X, self.n_features)
        y_idx = self._encode(X, y)
        names = self._names
        for row, j in zip(X.tolist(), y_idx.tolist()):
            self._model.learn_one(dict(zip(names, row)), j)
        self.n_learned += X.shape[0]

    def adapt(self, event: DriftEvent) -> None:
        """Start over with a fresh model built from the same parameters (classes are kept).

        river's drift-aware models (ARF, adaptive Hoeffding trees) also reset parts of
        themselves internally, from their own detectors.
        """
        self._model = build_river_model(self.model, self.params, self.scale)

    def to_state(self) -> LearnerState:
        blob = np.frombuffer(pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8).copy()
        params = {"model": self.model, "params": self.params, "scale": self.scale}
        meta = {"classes": labels_to_json(self.classes_), "n_features": self.n_features, "n_learned": self.n_learned}
        return LearnerState("RiverLearner", params, {"model_pickle": blob}, meta)

    @classmethod
    def from_state(cls, state: LearnerState) -> RiverLearner:
        """Unpickles: reach this only through ``learner_from_state(..., allow_pickle=True)``."""
        obj = cls(**state.params)
        obj._model = pickle.loads(np.asarray(state.arrays["model_pickle"], dtype=np.uint8).tobytes())  # noqa: S301
        obj._index = ClassIndex(list(state.meta.get("classes", [])))
        if state.meta.get("n_features") is not None:
            obj._set_width(int(state.meta["n_features"]))
        obj.n_learned = int(state.meta.get("n_learned", 0))
        return obj
