"""GaussianNB against an independent per-row reference (the posterior written out from the
samples before each row), drift discounting, merging shards, and new classes mid-stream.
(Cut invariance, round trips and the rest: tests/conformance.)"""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.base import DriftEvent
from ocld.learners.naive_bayes import GaussianNB


def stream(n: int, seed: int = 0, classes: int = 3, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.normal(size=(n, d)) * (1.0 + y[:, None]) + y[:, None]
    return X, y


def reference_row(X: np.ndarray, y: np.ndarray, i: int, classes: list, k0: float, smoothing: float) -> np.ndarray:
    """p(c | x_i) from rows < i: per-class mean and sum of squares from scratch, the variance shrunk
    to the pooled one with weight k0, Laplace priors (n_c + 1)."""
    Xp, yp = X[:i], y[:i]
    pooled = Xp.var(axis=0)
    floor = smoothing * pooled.max() + 1e-12
    scores = []
    for c in classes:
        Z = Xp[yp == c]
        if len(Z) == 0:
            scores.append(-np.inf)
            continue
        var = (((Z - Z.mean(axis=0)) ** 2).sum(axis=0) + k0 * pooled) / (len(Z) + k0) + floor
        scores.append(np.log(len(Z) + 1.0) - 0.5 * np.sum(np.log(var) + (X[i] - Z.mean(axis=0)) ** 2 / var))
    s = np.array(scores)
    e = np.exp(s - s.max())
    return e / e.sum()


@pytest.mark.parametrize("cut", [1, 7, 64, 400])
@pytest.mark.parametrize("k0", [1.0, 5.0])
def test_prequential_matches_the_per_row_reference(cut: int, k0: float) -> None:
    X, y = stream(400)
    model = GaussianNB(prior_strength=k0, var_smoothing=1e-6)
    parts = [model.learn_predict(X[a:a + cut], y[a:a + cut]) for a in range(0, len(y), cut)]
    C = len(model.classes_)
    P = np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in parts])
    R = np.array([reference_row(X, y, i, model.classes_, k0, 1e-6) for i in range(2, len(y))])
    np.testing.assert_allclose(P[2:], R, rtol=0, atol=1e-10)
    assert not P[0].any()  # nothing known before the first row


def test_a_class_gets_probability_only_after_its_first_sample() -> None:
    X, y = stream(300, classes=3)
    y = y.copy()
    y[:150] = np.minimum(y[:150], 1)  # class 2 first appears after row 150
    first = int(np.argmax(y == 2))
    model = GaussianNB()
    P = model.learn_predict(X, y)
    col = model.classes_.index(2)
    assert not P[:first + 1, col].any()
    later, labels = P[first + 1:, col], y[first + 1:]
    assert later[labels == 2].mean() > 2 * later[labels != 2].mean()


def test_adapt_discounts_counts_and_keeps_the_means() -> None:
    X, y = stream(500)
    model = GaussianNB(adapt_discount=0.1)
    model.learn(X, y)
    count, mean = model.stats.count.copy(), model.stats.mean.copy()
    assert model.adapt(DriftEvent(index=500, detector="ADWIN", rising=False)) is False
    assert model.adapt(DriftEvent(index=500, detector="ADWIN", rising=True)) is True
    np.testing.assert_allclose(model.stats.count, 0.1 * count)
    np.testing.assert_allclose(model.stats.mean, mean)


def test_merged_shards_equal_one_learner_on_everything() -> None:
    X, y = stream(600)
    whole = GaussianNB()
    whole.learn(X, y)
    a, b = GaussianNB(), GaussianNB()
    a.learn(X[:250], y[:250])
    b.learn(X[250:][::-1], y[250:][::-1])
    a.merge(b)
    Xq = np.random.default_rng(5).normal(size=(50, 4)) * 2
    np.testing.assert_allclose(a.predict_proba(Xq)[:, [a.classes_.index(c) for c in whole.classes_]],
                               whole.predict_proba(Xq), rtol=0, atol=1e-9)


def test_separates_gaussian_classes_nearly_as_well_as_the_bayes_rule() -> None:
    X, y = stream(3000, classes=2, d=2)  # class c: N(c, (1 + c)^2) per feature, equal priors
    model = GaussianNB()
    P = model.learn_predict(X, y)
    pred = np.array(model.classes_)[P.argmax(axis=1)]
    sd = np.array([1.0, 2.0])
    loglik = -np.log(sd)[None, :] * 2 - 0.5 * (((X[:, :, None] - np.arange(2)) / sd) ** 2).sum(axis=1)
    bayes = np.mean(loglik.argmax(axis=1)[500:] == y[500:])
    assert np.mean(pred[500:] == y[500:]) > bayes - 0.02


@pytest.mark.parametrize("params, field", [({"prior_strength": 0}, "prior_strength"),
                                           ({"adapt_discount": 0}, "adapt_discount"),
                                           ({"var_smoothing": -1}, "var_smoothing")])
def test_bad_parameters_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GaussianNB(**params)
