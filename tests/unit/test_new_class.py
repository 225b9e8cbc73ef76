"""A new class is not concept drift, for every learner (issue 21, item 3).

The learning core records an error-drift event within ``new_class_guard`` labelled samples
of a new class's first sample with action ``new_class`` and does not adapt to it. Checked
on class-incremental digits with the shipped ``config/analytic.yaml`` in six class orders
(it must end within 1 point of the same config trained jointly), on the rule itself with a
recording learner, and for the core's invariances: the same events and actions whatever the
batch cut, and through a snapshot taken mid-stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ocld.core.codec import Decoded
from ocld.core.drift import DriftMonitor
from ocld.core.metrics import PrequentialMetrics
from ocld.core.runtime import LearningCore, PendingTable
from ocld.learners.base import ClassIndex, DriftEvent, Learner, LearnerState, encode_batch
from ocld.stream.config import load_config
from ocld.stream.files import Table, read_table
from ocld.stream.offline import evaluate_arrays

ROOT = Path(__file__).resolve().parents[2]
ORDERS = [(3, 8, 0, 5, 9, 1, 7, 2, 6, 4), (9, 8, 7, 6, 5, 4, 3, 2, 1, 0), (4, 1, 6, 0, 2, 9, 5, 7, 3, 8)]
MORE_ORDERS = [(5, 2, 6, 9, 0, 7, 4, 1, 3, 8), (0, 1, 6, 3, 9, 8, 5, 2, 4, 7), (8, 6, 5, 3, 4, 9, 2, 1, 0, 7)]


def _table(X: np.ndarray, y: list[Any], task: list[Any] | None = None) -> Table:
    n = len(y)
    return Table(X=X, y=list(y), ids=[None] * n, ts=[None] * n, task=task or [None] * n)


def class_incremental(train: Table, order: tuple[int, ...], seed: int) -> Table:
    """Tasks of two classes in ``order`` (classes 0-1 of the order first, ...), shuffled within each task."""
    y = np.array(train.y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows, tasks = [], []
    for t in range(5):
        idx = np.flatnonzero(np.isin(y, order[2 * t:2 * t + 2]))
        rows.append(idx[rng.permutation(len(idx))])
        tasks += [t] * len(idx)
    idx = np.concatenate(rows)
    return _table(train.X[idx], [int(v) for v in y[idx]], tasks)


def _digits() -> tuple[Table, Table]:
    train = read_table(ROOT / "data" / "digits_train.csv")
    test = read_table(ROOT / "data" / "digits_test.csv")
    return train, _table(test.X, [int(v) for v in test.y])


def _without_adapt(cfg: Any) -> Any:
    return cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"adapt": False})})


def _with_features(cfg: Any, features: list[dict[str, Any]]) -> Any:
    specs = [cfg.learner.features[0].model_copy(update=f) for f in features] if features else []
    return cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"features": specs})})


def _joint(cfg: Any, train: Table, test: Table, seeds: range) -> float:
    """Mean final accuracy of ``cfg`` trained on the shuffled stream, over ``seeds``."""
    accs = []
    for s in seeds:
        perm = np.random.default_rng(s).permutation(len(train.y))
        accs.append(evaluate_arrays(cfg, _table(train.X[perm], [int(train.y[i]) for i in perm]),
                                    test=test)["final_accuracy"])
    return float(np.mean(accs))


def test_analytic_config_on_class_incremental_digits_never_adapts_to_new_classes():
    """The shipped config/analytic.yaml (ADWIN, adapt_discount 0.01) in three class orders: every
    error event is recognized as new classes, so the run ends exactly where the same config with
    adaptation off ends."""
    cfg = load_config(ROOT / "config" / "analytic.yaml")
    train, test = _digits()
    for k, order in enumerate(ORDERS):
        stream = class_incremental(train, order, seed=k)
        res = evaluate_arrays(cfg, stream, test=test)
        assert all(e["action"] == "new_class" for e in res["drift_events"]), res["drift_events"]
        assert res["final_accuracy"] == evaluate_arrays(_without_adapt(cfg), stream, test=test)["final_accuracy"]
        assert res["final_accuracy"] > 0.97


def test_analytic_config_on_class_incremental_digits_ends_within_a_point_of_joint_training():
    """Item 3's bar: the shipped config/analytic.yaml (FixedStandardizer, 512 ReLU units, ridge,
    ADWIN with adaptation) in six class orders ends within 1 point of the same config trained on
    the shuffled stream (mean of three shuffles, about 0.987). The FixedStandardizer stops moving
    after a short warm-up per column, so the exact ridge sees one map whatever the order."""
    cfg = load_config(ROOT / "config" / "analytic.yaml")
    assert [f.name for f in cfg.learner.features] == ["FixedStandardizer"]
    train, test = _digits()
    joint = _joint(cfg, train, test, range(3))
    assert joint > 0.98
    for k, order in enumerate(ORDERS + MORE_ORDERS):
        res = evaluate_arrays(cfg, class_incremental(train, order, seed=k), test=test)
        assert res["final_accuracy"] >= joint - 0.01, (order, res["final_accuracy"], joint, res["drift_events"])


def test_a_running_standardizer_makes_the_final_model_depend_on_the_class_order():
    """Why analytic.yaml has a FixedStandardizer: with a running Standardizer in its place, the
    same orders end up to several points under joint training, because the moments move as each
    task's classes arrive and the ridge keeps rows standardized with old moments."""
    cfg = _with_features(load_config(ROOT / "config" / "analytic.yaml"), [{"name": "Standardizer", "params": {}}])
    train, test = _digits()
    joint = _joint(cfg, train, test, range(1))
    worst = min(evaluate_arrays(cfg, class_incremental(train, order, seed=k), test=test)["final_accuracy"]
                for k, order in enumerate(ORDERS))
    assert worst < joint - 0.02, (worst, joint)


def test_analytic_head_without_feature_maps_equals_joint_training_in_every_order():
    """config/analytic.yaml's AnalyticRidge and drift section with no feature maps at all: the
    exact ridge ends at its joint accuracy (about 0.98) in three class orders; without the core's
    new-class rule ADWIN's events on the arriving classes would discount the old ones."""
    cfg = _with_features(load_config(ROOT / "config" / "analytic.yaml"), [])
    train, test = _digits()
    joint = _joint(cfg, train, test, range(1))
    assert joint > 0.97
    for k, order in enumerate(ORDERS):
        res = evaluate_arrays(cfg, class_incremental(train, order, seed=k), test=test)
        assert abs(res["final_accuracy"] - joint) < 0.005, (order, res["final_accuracy"], joint)
        assert res["drift_events"] and {e["action"] for e in res["drift_events"]} == {"new_class"}


class Recorder(Learner):
    """Predicts uniformly over the known classes; records every adapt call."""

    exact_prequential = True

    def __init__(self) -> None:
        self.index = ClassIndex()
        self.calls: list[int] = []

    @property
    def classes_(self) -> list[Any]:  # type: ignore[override]
        return self.index.classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        C = len(self.index)
        return np.full((len(X), C), 1.0 / C) if C else np.zeros((len(X), 0))

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        encode_batch(self.index, y, len(X))

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        _, before, after = encode_batch(self.index, y, len(X))
        C = len(self.index)
        known = np.arange(C)[None, :] < before[:, None]
        return np.where(known, 1.0 / np.maximum(before, 1)[:, None], 0.0)

    def adapt(self, event: DriftEvent) -> bool:
        self.calls.append(event.index)
        return True

    def to_state(self) -> LearnerState:
        return LearnerState("Recorder", {}, {}, {"classes": list(self.index.classes), "calls": list(self.calls)})

    @classmethod
    def from_state(cls, state: LearnerState) -> Recorder:
        obj = cls()
        obj.index = ClassIndex(list(state.meta["classes"]))
        obj.calls = list(state.meta["calls"])
        return obj


class Scripted(DriftMonitor):
    """Fires an error event (rising) at fixed labelled positions."""

    def __init__(self, at: list[int]) -> None:
        self.at = sorted(at)
        self.n_seen = 0

    def update(self, errors: np.ndarray) -> list[DriftEvent]:
        lo, self.n_seen = self.n_seen, self.n_seen + len(errors)
        return [DriftEvent(i, "scripted", "error", None, True) for i in self.at if lo <= i < self.n_seen]

    def to_state(self) -> LearnerState:
        return LearnerState("Scripted", {}, {}, {"at": self.at, "n_seen": self.n_seen})


def _core(guard: int, at: list[int]) -> LearningCore:
    return LearningCore(Recorder(), PrequentialMetrics(100), Scripted(at), PendingTable(10), adapt=True,
                        adapt_grid=10, new_class_guard=guard)


def _labels(n: int) -> list[Any]:
    """Class "a" and "b" from the start, "c" first at 300, "d" first at 1,000."""
    y: list[Any] = ["a" if i % 2 else "b" for i in range(n)]
    for i in range(300, n, 3):
        y[i] = "c"
    for i in range(1000, n, 5):
        y[i] = "d"
    return y


def _drive(core: LearningCore, y: list[Any], cut: int, start: int = 0,
           stop: int | None = None) -> list[tuple[int, str]]:
    out = []
    stop = len(y) if stop is None else stop
    for a in range(start, stop, cut):
        b = min(stop, a + cut)
        rows = np.arange(a, b)
        dec = Decoded(rows=rows, X=np.zeros((b - a, 2)), y=y[a:b], ids=[None] * (b - a), ts=[None] * (b - a),
                      task=[None] * (b - a))
        res = core.process(dec)
        out += [(e.index, core.action_for(e)) for e in res.events]
    return out


EVENTS = [150, 310, 550, 700, 999, 1000, 1199, 1200, 1700]


def test_error_events_right_after_a_new_class_are_not_adapted_to():
    y = _labels(2000)
    core = _core(guard=200, at=EVENTS)
    got = _drive(core, y, 97)
    assert got == [(150, "new_class"),  # 150 samples after "a"/"b" started: the second class is news too
                   (310, "new_class"), (550, "adapt"), (700, "adapt"), (999, "adapt"),
                   (1000, "new_class"), (1199, "new_class"), (1200, "adapt"), (1700, "adapt")]
    assert core.learner.calls == [550, 700, 999, 1200, 1700]
    off = _core(guard=0, at=EVENTS)
    assert {a for _, a in _drive(off, y, 97)} == {"adapt"}


@pytest.mark.parametrize("cut", [1, 13, 500])
def test_the_guard_is_cut_invariant_and_survives_a_snapshot(cut: int):
    from ocld.core import snapshot as fmt

    y = _labels(2000)
    ref = _drive(_core(200, EVENTS), y, 2000)
    core = _core(200, EVENTS)
    first = _drive(core, y, cut, 0, 1100)  # stop inside the guard of "d" (first at 1,000)
    parts = core.to_parts()
    manifest, chunks = fmt.encode(fmt.Snapshot(parts, {}, {}))
    back = fmt.decode(manifest, chunks).parts
    assert back["counters"].meta["new_class_at"] == [1000]
    restored = _core(200, EVENTS)
    back.pop("monitor")  # the scripted monitor only counts: set below
    from ocld.learners import registry

    registry.COMPONENTS.setdefault("Recorder", f"{__name__}:Recorder")
    try:
        restored.restore(back)
    finally:
        registry.COMPONENTS.pop("Recorder", None)
    restored.monitor.n_seen = core.monitor.n_seen  # type: ignore[union-attr]
    rest = _drive(restored, y, cut, 1100)
    assert first + rest == ref
