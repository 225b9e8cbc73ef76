"""RunningMoments against an independent reference: numpy's two-pass mean and variance of the whole stream.

Tolerances (float64, 20,000 rows cut into 300 random batches): the mean within 1e-13 of the largest
|value|, the variance within 1e-10 relative, for columns whose mean is up to 1e6 standard deviations
from zero. The sum-of-squares form the input drift monitor used before, E[x^2] - E[x]^2, is off by
more than 1e-4 relative on the same stream (checked below, so the test shows why the form matters).
"""

from __future__ import annotations

import numpy as np
import pytest

from ocld.buffers.moments import RunningMoments, batch_moments, merge_moments
from ocld.core.drift import InputDriftMonitor
from ocld.learners.base import LearnerState
from ocld.learners.features import Standardizer

MEAN_TOL = 1e-13  # of the largest |value|
VAR_RTOL = 1e-10


def _stream(offset: float, seed: int = 7, n: int = 20_000) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(offset, 1.0, size=(n, 3)) * np.array([1.0, 1e-3, 1e3])
    cuts = np.sort(rng.choice(np.arange(1, n), 300, replace=False))
    return X, np.split(X, cuts)


def _assert_matches_numpy(count: float, mean: np.ndarray, var: np.ndarray, X: np.ndarray) -> None:
    assert count == X.shape[0]
    assert np.all(np.abs(mean - X.mean(axis=0)) <= MEAN_TOL * np.abs(X).max(axis=0))
    np.testing.assert_allclose(var, X.var(axis=0), rtol=VAR_RTOL, atol=0)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_batches_match_numpy_over_the_whole_stream(offset):
    X, parts = _stream(offset)
    m = RunningMoments()
    for part in parts:
        m.update(part)
    _assert_matches_numpy(m.count, m.mean, m.var(), X)
    np.testing.assert_allclose(m.var(ddof=1), X.var(axis=0, ddof=1), rtol=VAR_RTOL, atol=0)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_row_by_row_matches_numpy_after_every_row(offset):
    X, parts = _stream(offset, n=1500)
    m = RunningMoments()
    counts, means, m2s = zip(*(m.update_prefix(part) for part in parts))
    count, mean, m2 = np.vstack(counts)[:, 0], np.vstack(means), np.vstack(m2s)
    for i in range(X.shape[0]):
        _assert_matches_numpy(count[i], mean[i], m2[i] / count[i], X[: i + 1])
    _assert_matches_numpy(m.count, m.mean, m.var(), X)


def test_the_sum_of_squares_form_fails_where_these_moments_hold():
    X, _ = _stream(1e6)
    n = X.shape[0]
    naive = (X * X).sum(axis=0) / n - (X.sum(axis=0) / n) ** 2
    assert np.max(np.abs(naive / X.var(axis=0) - 1)) > 1e-4


def test_shards_merge_in_any_order_and_discount_keeps_mean_and_variance():
    X, parts = _stream(3.0)
    shards = [RunningMoments() for _ in range(3)]
    for i, part in enumerate(parts):
        shards[i % 3].update(part)
    total = RunningMoments()
    for shard in (shards[2], shards[0], shards[1]):
        total.merge(shard)
    _assert_matches_numpy(total.count, total.mean, total.var(), X)
    mean, var = total.mean.copy(), total.var()
    total.discount(0.25)
    assert total.count == X.shape[0] * 0.25
    np.testing.assert_array_equal(total.mean, mean)
    np.testing.assert_allclose(total.var(), var, rtol=1e-15)
    with pytest.raises(ValueError, match="2 columns into 3"):
        total.merge(_started(2))


def _started(d: int) -> RunningMoments:
    m = RunningMoments()
    m.update(np.ones((2, d)))
    return m


def test_grouped_batch_moments_are_the_moments_of_each_group():
    rng = np.random.default_rng(1)
    X, g = rng.normal(size=(200, 2)), rng.integers(0, 4, 200)
    g[g == 3] = 0  # group 3 has no row
    count, mean, m2 = batch_moments(X, g, 4)
    for k in range(3):
        _assert_matches_numpy(count[k], mean[k], m2[k] / count[k], X[g == k])
    assert count[3] == 0 and not mean[3].any() and not m2[3].any()
    n, mu, s = merge_moments(count[:1], mean[:1], m2[:1], count[1:2], mean[1:2], m2[1:2])
    _assert_matches_numpy(n[0], mu[0], s[0] / n[0], X[(g == 0) | (g == 1)])


def test_state_round_trip_is_exact():
    X, parts = _stream(5.0, n=500)
    m = RunningMoments()
    m.update(parts[0])
    back = RunningMoments.from_state(m.to_state())
    for part in parts[1:]:
        m.update(part)
        back.update(part)
    assert back.count == m.count
    np.testing.assert_array_equal(back.mean, m.mean)
    np.testing.assert_array_equal(back.m2, m.m2)
    assert RunningMoments.from_state(RunningMoments().to_state()).mean is None


def test_standardizer_state_keeps_the_layout_of_states_written_before_running_moments():
    """Arrays ``mean`` and ``m2``, the count in ``meta["n"]``, no children: what every Standardizer state has held,
    so snapshots load in older and newer ocld alike."""
    X = np.random.default_rng(2).normal(4.0, 2.0, size=(300, 3))
    new = Standardizer()
    new.learn_transform(X[:200])
    state = new.to_state()
    assert set(state.arrays) == {"mean", "m2"} and state.meta == {"n": 200.0} and not state.children
    old = LearnerState("Standardizer", {"with_std": True, "clip": 1e3},
                       {"mean": new.mean.copy(), "m2": new.m2.copy()}, {"n": new.n})
    back = Standardizer.from_state(old)
    assert back.n == 200 and back.n_features_in == 3
    np.testing.assert_array_equal(back.learn_transform(X[200:]), new.learn_transform(X[200:]))
    assert Standardizer.from_state(LearnerState("Standardizer", {}, {}, {"n": 0.0})).n_features_in is None


def test_input_monitor_warmup_state_with_sums_still_loads():
    """Snapshots written before RunningMoments held the warm-up as sums of values and of squares."""
    X = np.random.default_rng(3).normal(50.0, 2.0, size=(450, 4))
    m = InputDriftMonitor(block=100, warmup=10)
    m.update(X)
    state = m.to_state()
    ref = m._ref
    arrays = dict(state.arrays, ref_sum=ref.mean * ref.count, ref_sq=ref.m2 + ref.count * ref.mean ** 2)
    meta = dict(state.meta, ref_n=int(ref.count))
    children = {k: v for k, v in state.children.items() if k != "ref"}
    old = InputDriftMonitor.from_state(LearnerState(state.kind, state.params, arrays, meta, children))
    assert old._ref.count == 400
    np.testing.assert_allclose(old._ref.mean, X[:400].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(old._ref.var(), X[:400].var(axis=0), rtol=1e-9)
