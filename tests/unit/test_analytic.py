"""AnalyticRidge against an independent batch ridge solution (numpy.linalg.solve on all the data).

Tolerance: 1e-8 relative (Frobenius norm of W), for every batch cut, class order and merge.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ocld.learners.analytic import AnalyticRidge
from ocld.learners.base import DriftEvent, FeatureCountError
from ocld.learners.features import RandomReLU, Standardizer
from ocld.learners.pipeline import Pipeline
from ocld.learners.registry import build_learner, learner_from_state

D = 24  # expansion size in these tests: small, so batches of 7 and > D both occur
TOL = 1e-8


def make_stream(n: int = 300, d: int = 5, seed: int = 0, labels=("a", "b", "c", "d")) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(labels, dtype=object), size=n, p=[0.45, 0.3, 0.15, 0.1][: len(labels)])
    centres = {lab: rng.normal(size=d) for lab in labels}
    X = np.stack([centres[lab] for lab in y]) + rng.normal(size=(n, d))
    return X, y


def batch_ridge(
    X: np.ndarray, y: np.ndarray, classes: list, gamma: float = 1.0, size: int | None = D, seed: int = 0
) -> np.ndarray:
    """Independent reference: expand with a fresh RandomReLU, one-hot in ``classes`` order, solve."""
    H = RandomReLU(n_components=size, seed=seed).transform(X) if size else X
    Y = np.zeros((len(y), len(classes)))
    Y[np.arange(len(y)), [classes.index(v) for v in y]] = 1.0
    return np.linalg.solve(H.T @ H + gamma * np.eye(H.shape[1]), H.T @ Y)


def rel_err(W: np.ndarray, W_ref: np.ndarray) -> float:
    return float(np.linalg.norm(W - W_ref) / np.linalg.norm(W_ref))


def learn_in_batches(model: AnalyticRidge, X: np.ndarray, y: np.ndarray, sizes) -> None:
    a, i = 0, 0
    while a < len(y):
        b = sizes[i % len(sizes)]
        model.learn(X[a : a + b], y[a : a + b])
        a, i = a + b, i + 1


@pytest.mark.parametrize("sizes", [[1], [7], [D + 13], [300], [1, 7, 40, 2, 100]])
def test_any_batch_cut_equals_joint_ridge(sizes):
    X, y = make_stream()
    model = AnalyticRidge(expansion_size=D, refresh_every=10**9)  # no exact re-solve: pure Woodbury drift
    learn_in_batches(model, X, y, sizes)
    assert rel_err(model.weights, batch_ridge(X, y, model.classes_)) < TOL


def test_class_order_does_not_matter():
    X, y = make_stream()
    W_ref = None
    for perm_seed in range(3):
        order = np.random.default_rng(perm_seed).permutation(len(y))
        model = AnalyticRidge(expansion_size=D)
        learn_in_batches(model, X[order], y[order], [7])
        # Same joint solution up to a column permutation by label.
        cols = [model.classes_.index(c) for c in ("a", "b", "c", "d")]
        W = model.weights[:, cols]
        W_ref = batch_ridge(X, y, ["a", "b", "c", "d"]) if W_ref is None else W_ref
        assert rel_err(W, W_ref) < TOL


def test_identity_expansion_and_gamma():
    X, y = make_stream(d=6)
    model = AnalyticRidge(expansion_size=0, gamma=0.3)
    learn_in_batches(model, X, y, [1, 7, 50])
    assert rel_err(model.weights, batch_ridge(X, y, model.classes_, gamma=0.3, size=None)) < TOL


def test_merge_three_shards_with_different_class_orders():
    X, y = make_stream(n=360)
    shards = []
    for k, (a, b) in enumerate([(0, 100), (100, 250), (250, 360)]):
        order = np.random.default_rng(k).permutation(np.arange(a, b))  # each shard meets classes in its own order
        shard = AnalyticRidge(expansion_size=D)
        learn_in_batches(shard, X[order], y[order], [k * 6 + 1])
        shards.append(shard)
    assert len({tuple(s.classes_) for s in shards}) > 1
    joint = AnalyticRidge.from_state(shards[0].to_state())
    joint.merge(shards[1])
    joint.merge(shards[2])
    W_ref = batch_ridge(X, y, joint.classes_)
    assert rel_err(joint.weights, W_ref) < TOL
    np.testing.assert_allclose(joint.sufficient_statistics()["counts"], [np.sum(y == c) for c in joint.classes_])

    # Absolute aggregation: sum the published statistics (aligned by label), then solve.
    classes = ["d", "c", "b", "a"]
    gram = sum(s.sufficient_statistics()["gram"] for s in shards)
    cross = np.zeros((D, 4))
    counts = np.zeros(4)
    for s in shards:
        st = s.sufficient_statistics()
        cols = [classes.index(c) for c in st["classes"]]
        cross[:, cols] += st["cross"]
        counts[cols] += st["counts"]
    rebuilt = AnalyticRidge.from_statistics(gram, cross, counts, classes, n_features_in=5, expansion_size=D)
    assert rel_err(rebuilt.weights, batch_ridge(X, y, classes)) < TOL
    X_test, _ = make_stream(n=20, seed=9)
    assert list(rebuilt.predict(X_test)) == list(joint.predict(X_test))


def test_merge_refuses_incompatible_models():
    X, y = make_stream(n=40)
    a, b = AnalyticRidge(expansion_size=D), AnalyticRidge(expansion_size=D, seed=1)
    a.learn(X, y)
    b.learn(X, y)
    with pytest.raises(ValueError, match="seed"):
        a.merge(b)


@pytest.mark.parametrize("params", [{}, {"compensate_imbalance": True, "refresh_every": 30}])
def test_exact_prequential_is_independent_of_the_batch_cut(params):
    X, y = make_stream(n=200)
    reference = AnalyticRidge(expansion_size=D, **params)
    rows = []
    for i in range(len(y)):  # predict each sample with the model that has learned all before it
        p = reference.predict_proba(X[i : i + 1])
        reference.learn(X[i : i + 1], y[i : i + 1])
        rows.append(p)
    for size in (1, 7, D + 5, 200):
        model = AnalyticRidge(expansion_size=D, **params)
        for a in range(0, len(y), size):
            P = model.learn_predict(X[a : a + size], y[a : a + size])
            for j in range(P.shape[0]):
                expected = np.zeros(P.shape[1])
                expected[: rows[a + j].shape[1]] = rows[a + j][0]
                np.testing.assert_allclose(P[j], expected, atol=1e-9)
    # Before any class is known the prediction is an empty row (padded with zeros).
    assert AnalyticRidge(expansion_size=D).learn_predict(X[:3], y[:3])[0].sum() == 0.0


def test_predict_before_learning_and_feature_count():
    model = AnalyticRidge(expansion_size=D)
    assert model.predict_proba(np.zeros((3, 5))).shape == (3, 0)
    assert list(model.predict(np.zeros((2, 5)))) == [None, None]
    X, y = make_stream(n=30)
    model.learn(X, y)
    with pytest.raises(FeatureCountError):
        model.predict_proba(np.zeros((2, 4)))
    with pytest.raises(FeatureCountError):
        model.learn(np.zeros((2, 6)), np.array(["a", "b"]))


def test_probabilities_finite_for_extreme_inputs():
    X, y = make_stream(n=50)
    model = AnalyticRidge(expansion_size=D, temperature=0.01)
    model.learn(X, y)
    extreme = np.array([[1e300, -1e300, 0, 1, 2], [np.nan, np.inf, -np.inf, 0, 0], [1e-300] * 5, [1e8] * 5, [0] * 5])
    P = model.predict_proba(extreme)
    assert np.all(np.isfinite(P)) and np.allclose(P.sum(axis=1), 1.0)
    model.learn(np.array([[1e200] * 5]), np.array(["a"]))  # finite but huge: the state must stay finite
    assert np.all(np.isfinite(model.predict_proba(X)))


def test_state_round_trip_continues_identically():
    X, y = make_stream(n=240)
    for params in ({"expansion_size": D}, {"expansion_size": D, "compensate_imbalance": True, "refresh_every": 37}):
        model = AnalyticRidge(**params)
        learn_in_batches(model, X[:120], y[:120], [7, 1])
        state = model.to_state()
        json.dumps(
            {"params": state.params, "meta": state.meta, "children": {k: v.meta for k, v in state.children.items()}}
        )
        copy = learner_from_state(state)
        for m in (model, copy):
            learn_in_batches(m, X[120:], y[120:], [5, 30])
        np.testing.assert_array_equal(model.predict_proba(X), copy.predict_proba(X))
        np.testing.assert_array_equal(model.weights, copy.weights)


def test_compensation_leaves_real_statistics_untouched_and_rebalances():
    rng = np.random.default_rng(3)
    n = 600
    y = np.where(rng.random(n) < 0.04, 1, 0)  # about 1:24
    X = rng.normal(size=(n, 4)) + 1.2 * y[:, None]
    plain = AnalyticRidge(expansion_size=D)
    comp = AnalyticRidge(expansion_size=D, compensate_imbalance=True, refresh_every=100)
    for m in (plain, comp):
        learn_in_batches(m, X, y, [1, 13, 60])
    sp, sc = plain.sufficient_statistics(), comp.sufficient_statistics()
    for key in ("gram", "cross", "counts"):
        np.testing.assert_allclose(sc[key], sp[key], rtol=1e-12, atol=1e-9)
    assert rel_err(comp.weights, batch_ridge(X, y, comp.classes_)) < TOL
    assert not np.allclose(comp.serving_weights, comp.weights)
    # The minority class gets more of the probability mass under compensation.
    minority = X[y == 1]
    col = comp.classes_.index(1)
    assert comp.predict_proba(minority)[:, col].mean() > plain.predict_proba(minority)[:, col].mean()
    # Serving weights are cached: predicting does not change them.
    before = comp.serving_weights
    comp.predict_proba(X)
    np.testing.assert_array_equal(before, comp.serving_weights)


def test_compensated_state_is_batch_invariant():
    X, y = make_stream(n=200)
    a = AnalyticRidge(expansion_size=D, compensate_imbalance=True, refresh_every=45)
    b = AnalyticRidge(expansion_size=D, compensate_imbalance=True, refresh_every=45)
    learn_in_batches(a, X, y, [1])
    learn_in_batches(b, X, y, [7, 60])
    np.testing.assert_allclose(a.serving_weights, b.serving_weights, rtol=1e-8, atol=1e-10)


def test_adapt_discount():
    X, y = make_stream(n=100)
    off = AnalyticRidge(expansion_size=D)
    off.learn(X, y)
    before = off.weights
    off.adapt(DriftEvent(index=99, detector="test"))
    np.testing.assert_array_equal(before, off.weights)  # off by default: exactness is the point

    on = AnalyticRidge(expansion_size=D, adapt_discount=0.5)
    on.learn(X[:60], y[:60])
    on.adapt(DriftEvent(index=59, detector="test"))
    on.learn(X[60:], y[60:])
    # Equals ridge with the pre-drift rows weighted by 0.5.
    H = RandomReLU(n_components=D, seed=0).transform(X)
    Y = np.zeros((100, 4))
    Y[np.arange(100), [on.classes_.index(v) for v in y]] = 1.0
    w = np.where(np.arange(100) < 60, 0.5, 1.0)[:, None]
    W_ref = np.linalg.solve((H * w).T @ H + np.eye(D), (H * w).T @ Y)
    assert rel_err(on.weights, W_ref) < TOL
    with pytest.raises(ValueError):
        AnalyticRidge(adapt_discount=1.5)


def test_registry_pipeline_and_labels():
    model = build_learner("AnalyticRidge", {"expansion_size": D}, [{"name": "Standardizer"}])
    assert isinstance(model, Pipeline) and isinstance(model.steps[0], Standardizer)
    X, y = make_stream(n=60)
    yi = np.array([{"a": 3, "b": 1, "c": 7, "d": 0}[v] for v in y])
    model.learn(X, yi)
    assert set(model.predict(X)) <= {0, 1, 3, 7}
    assert model.predict_proba(X).shape == (60, 4)


@pytest.mark.parametrize("compensate", [False, True])
def test_state_does_not_depend_on_the_batch_cut(compensate):
    X, y = make_stream(n=260)
    states = []
    for sizes in ([1], [7], [D + 30], [260]):
        model = AnalyticRidge(expansion_size=D, refresh_every=50, compensate_imbalance=compensate)
        learn_in_batches(model, X, y, sizes)
        states.append(model.to_state())
    for state in states[1:]:
        assert state.meta == states[0].meta
        assert state.arrays.keys() == states[0].arrays.keys()
        for key, value in state.arrays.items():
            np.testing.assert_allclose(value, states[0].arrays[key], rtol=1e-9, atol=1e-9 * np.abs(value).max())
