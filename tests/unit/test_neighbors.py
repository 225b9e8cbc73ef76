"""KNeighbors against an independent per-row reference (the k nearest of the last ``window`` rows,
ties to the most recent, distance-weighted votes), the window bound, and drift adaptation.
(Cut invariance, round trips and the rest: tests/conformance.)"""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.base import DriftEvent
from ocld.learners.neighbors import KNeighbors


def reference_row(X: np.ndarray, y: np.ndarray, i: int, classes: list, k: int, window: int, eps: float,
                  smoothing: float) -> np.ndarray:
    lo = max(0, i - window)
    d2 = np.round(((X[lo:i] - X[i]) ** 2).sum(axis=1), 9)
    order = np.lexsort((-np.arange(i - lo), d2))[:k]  # by distance, then the most recent first
    known = [c for c in classes if c in set(y[:i].tolist())]
    votes = np.zeros(len(classes))
    w = 1.0 / (np.sqrt(d2[order]) + eps)
    for j, wj in zip(order, w):
        votes[classes.index(y[lo + j])] += wj
    votes *= len(order) / w.sum()
    p = np.zeros(len(classes))
    for c in known:
        p[classes.index(c)] = votes[classes.index(c)] + smoothing
    return p / p.sum()


@pytest.mark.parametrize("cut", [1, 13, 64, 500])
def test_prequential_matches_the_per_row_reference_with_ties(cut: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    X[200:320] = np.round(X[200:320])  # many exact ties
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    y[::40] = 2
    model = KNeighbors(n_neighbors=5, window=80, eps=0.1, smoothing=0.5)
    parts = [model.learn_predict(X[a:a + cut], y[a:a + cut]) for a in range(0, len(y), cut)]
    C = len(model.classes_)
    P = np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in parts])
    R = np.array([reference_row(X, y, i, model.classes_, 5, 80, 0.1, 0.5) for i in range(1, len(y))])
    np.testing.assert_allclose(P[1:], R, rtol=0, atol=1e-12)


def test_only_the_last_window_samples_vote() -> None:
    X = np.vstack([np.zeros((50, 2)), np.full((50, 2), 5.0)])
    y = np.array([0] * 50 + [1] * 50)
    model = KNeighbors(n_neighbors=3, window=50)
    model.learn(X, y)
    assert model.predict([[0.0, 0.0]]).tolist() == [1]  # the class-0 samples left the window
    assert model.estimate_state_bytes(2) == 8 * 50 * 3


def test_adapt_keeps_the_most_recent_samples() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(100, 2)), rng.integers(0, 2, 100)
    model = KNeighbors(window=100, adapt_keep=10)
    model.learn(X, y)
    assert model.adapt(DriftEvent(index=100, detector="ADWIN", rising=False)) is False
    assert model.adapt(DriftEvent(index=100, detector="ADWIN", rising=True)) is True
    state = model.to_state()
    np.testing.assert_array_equal(state.arrays["X"], X[-10:])


def test_learns_a_concept_no_linear_head_can() -> None:
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(3000, 2))
    y = (np.sin(3 * X[:, 0]) > X[:, 1]).astype(int)
    model = KNeighbors()
    P = model.learn_predict(X, y)
    pred = np.array(model.classes_)[P.argmax(axis=1)]
    assert np.mean(pred[1000:] == y[1000:]) > 0.9


@pytest.mark.parametrize("params", [{"n_neighbors": 0}, {"window": 0}, {"eps": 0}, {"adapt_keep": -1}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        KNeighbors(**params)
