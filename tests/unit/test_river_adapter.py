"""RiverLearner: pickle round-trip, pickle refusal, class order, specs (small and fast)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("river")

from ocld.learners.base import DriftEvent, FeatureCountError  # noqa: E402
from ocld.learners.registry import PickleRefused, build_learner, learner_from_state  # noqa: E402
from ocld.learners.river_adapter import RiverLearner  # noqa: E402


def stream(n: int, seed: int, labels: tuple = ("b", "a", "c")) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(labels), size=n)
    X = rng.normal(0, 1, size=(n, 4)) + idx[:, None] * 1.5
    return X, np.array([labels[i] for i in idx], dtype=object)


def feed(learner: RiverLearner, X: np.ndarray, y: np.ndarray, batch: int = 16) -> None:
    for i in range(0, len(y), batch):
        learner.learn(X[i : i + batch], y[i : i + batch])


@pytest.mark.parametrize(
    "kw",
    [
        {"model": "river.forest.ARFClassifier", "params": {"n_models": 3, "seed": 42}, "scale": True},
        RiverLearner._unit_test_params(),
    ],
)
def test_round_trip_with_pickle_continues_identically(kw: dict) -> None:
    X, y = stream(300, seed=0)
    a = RiverLearner(**kw)
    feed(a, X[:150], y[:150])
    b = learner_from_state(a.to_state(), allow_pickle=True)
    assert isinstance(b, RiverLearner)
    assert b.classes_ == a.classes_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    feed(a, X[150:], y[150:])
    feed(b, X[150:], y[150:])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert (a.predict(X) == y).mean() > 0.6


def test_registry_refuses_river_state_without_allow_pickle() -> None:
    a = RiverLearner(**RiverLearner._unit_test_params())
    X, y = stream(20, seed=1)
    a.learn(X, y)
    state = a.to_state()
    assert state.arrays["model_pickle"].dtype == np.uint8
    with pytest.raises(PickleRefused):
        learner_from_state(state)
    piped = build_learner("RiverLearner", RiverLearner._unit_test_params(), [{"name": "Standardizer"}])
    piped.learn(X, y)
    with pytest.raises(PickleRefused):  # nested inside a pipeline too
        learner_from_state(piped.to_state())


def test_class_order_is_first_appearance_and_proba_columns_match() -> None:
    m = RiverLearner(model="river.naive_bayes.GaussianNB")
    assert m.predict_proba(np.zeros((2, 4))).shape == (2, 0)
    X, y = stream(200, seed=2, labels=("z", "y", "x"))
    feed(m, X, y)
    first = list(dict.fromkeys(y.tolist()))
    assert m.classes_ == first
    p = m.predict_proba(X)
    assert p.shape == (200, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (m.predict(X) == y).mean() > 0.8


def test_binary_model_and_pipeline_spec() -> None:
    X, y = stream(200, seed=3, labels=(0, 1))
    spec: list[dict] = [
        {"model": "river.preprocessing.StandardScaler"},
        {"model": "river.linear_model.LogisticRegression", "params": {"l2": 0.0}},
    ]
    m = RiverLearner(model=spec)
    feed(m, X, y)
    assert (m.predict(X).astype(int) == y.astype(int)).mean() > 0.8
    X3, y3 = stream(10, seed=4, labels=(0, 1, 2))
    with pytest.raises(ValueError, match="OneVsRestClassifier"):
        m.learn(X3, np.full(10, 2))
    ovr = RiverLearner(
        model="river.multiclass.OneVsRestClassifier",
        params={"classifier": {"model": "river.linear_model.LogisticRegression"}},
        scale=True,
    )
    X, y = stream(150, seed=5)
    feed(ovr, X, y)
    assert ovr.predict_proba(X).shape == (150, 3)


def test_bad_specs_and_feature_count() -> None:
    with pytest.raises(ValueError, match="river"):
        RiverLearner(model="os.system")
    with pytest.raises(ValueError, match="bad parameters"):
        RiverLearner(model="river.forest.ARFClassifier", params={"no_such_param": 1})
    m = RiverLearner(**RiverLearner._unit_test_params())
    X, y = stream(10, seed=6)
    m.learn(X, y)
    with pytest.raises(FeatureCountError):
        m.predict_proba(np.zeros((1, 5)))


def test_learn_does_not_mutate_input_and_adapt_resets() -> None:
    X, y = stream(100, seed=7)
    Xc, yc = X.copy(), y.copy()
    m = RiverLearner(**RiverLearner._unit_test_params())
    feed(m, X, y)
    np.testing.assert_array_equal(X, Xc)
    assert list(y) == list(yc)
    m.adapt(DriftEvent(index=100, detector="ADWIN"))
    assert m.classes_ == list(dict.fromkeys(y.tolist()))
    p = m.predict_proba(X)  # fresh model: knows nothing, uniform
    np.testing.assert_allclose(p, 1.0 / 3)
    feed(m, X, y)
    assert (m.predict(X) == y).mean() > 0.6
