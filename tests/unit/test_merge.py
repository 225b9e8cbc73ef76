"""Merging replicas (learners.merge) and folding other replicas' statistics into a head
(AnalyticRidge.set_external), checked against the batch ridge solution of all the data."""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.analytic import AnalyticRidge
from ocld.learners.merge import MergeError, merge_global, summed_statistics
from ocld.learners.registry import build_learner

PARAMS = {"expansion_size": 40, "gamma": 0.5, "seed": 3}


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = np.empty(n, dtype=object)
    y[:] = np.argmax(X @ rng.normal(size=(5, 4)), axis=1).tolist()
    return X, y


def _batch_ridge(model: AnalyticRidge, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent reference: W = (H^T H + gamma I)^-1 H^T Y, columns in ``model.classes_`` order."""
    H = model._expand(X)
    Y = np.zeros((len(y), len(model.classes_)))
    for i, label in enumerate(y):
        Y[i, model.classes_.index(label)] = 1.0
    return np.linalg.solve(H.T @ H + PARAMS["gamma"] * np.eye(H.shape[1]), H.T @ Y)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_merge_global_equals_batch_ridge_of_all_shards():
    X, y = _data(900, 0)
    shards = [build_learner("AnalyticRidge", PARAMS, [{"name": "RandomReLU", "params": {"n_components": 30,
                                                                                       "seed": 1}}]) for _ in range(3)]
    order = [np.arange(0, 900, 3), np.arange(1, 900, 3)[::-1], np.arange(2, 900, 3)]  # any order per shard
    for shard, idx in zip(shards, order):
        for a in range(0, len(idx), 37):
            shard.learn(X[idx[a:a + 37]], y[idx[a:a + 37]])
    merged = merge_global(shards)
    assert merged.head.n_seen == 900
    features = shards[0].steps[0].transform(X)
    assert _rel(merged.head.weights, _batch_ridge(merged.head, features, y)) <= 1e-8


def test_merge_refuses_a_standardizer_and_non_analytic_heads():
    X, y = _data(200, 1)
    a = build_learner("AnalyticRidge", PARAMS, [{"name": "Standardizer"}])
    b = build_learner("AnalyticRidge", PARAMS, [{"name": "Standardizer"}])
    a.learn(X[:100], y[:100])
    b.learn(X[100:], y[100:])
    with pytest.raises(MergeError, match="Standardizer"):
        merge_global([a, b])
    k = build_learner("KalmanHead", {}, [])
    with pytest.raises(MergeError, match="only AnalyticRidge merges exactly"):
        merge_global([k])


def test_set_external_gives_the_joint_head_and_keeps_own_statistics():
    X, y = _data(1200, 2)
    own, other1, other2 = AnalyticRidge(**PARAMS), AnalyticRidge(**PARAMS), AnalyticRidge(**PARAMS)
    other1.learn(X[400:800], y[400:800])
    other2.learn(X[800:], y[800:])
    own.learn(X[:200], y[:200])
    own_stats_before = own.sufficient_statistics()
    own.set_external(summed_statistics([other1, other2]))
    assert own.has_external
    # Own statistics are untouched; the head is the ridge solution of own + external data.
    assert np.array_equal(own.sufficient_statistics()["gram"], own_stats_before["gram"])
    idx = np.r_[0:200, 400:1200]
    assert _rel(own.weights, _batch_ridge(own, X[idx], y[idx])) <= 1e-8
    # Own samples learned afterwards (Woodbury steps) keep it the joint solution.
    for a in range(200, 400, 17):
        own.learn_predict(X[a:min(a + 17, 400)], y[a:min(a + 17, 400)])
    assert own.sufficient_statistics()["n_seen"] == 400
    assert _rel(own.weights, _batch_ridge(own, X, y)) <= 1e-8
    # Folding again replaces (does not add); None removes the external part.
    own.set_external(summed_statistics([other1, other2]))
    assert _rel(own.weights, _batch_ridge(own, X, y)) <= 1e-8
    own.set_external(None)
    assert not own.has_external
    assert _rel(own.weights, _batch_ridge(own, X[:400], y[:400])) <= 1e-8
    # The state round-trips with the external part.
    own.set_external(summed_statistics([other1]))
    twin = AnalyticRidge.from_state(own.to_state())
    np.testing.assert_array_equal(twin.predict_proba(X[:50]), own.predict_proba(X[:50]))
