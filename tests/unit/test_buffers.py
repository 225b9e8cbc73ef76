"""Replay buffers and running class statistics: exactness, statistics of inclusion, bounds, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from ocld.buffers.reservoir import ClassBalancedReservoir, Reservoir
from ocld.buffers.stats import ClassStats
from ocld.learners.registry import component_from_state


def _json_ok(state) -> None:
    json.dumps({"params": state.params, "meta": state.meta})


# ---------------------------------------------------------------------- ClassStats
def test_class_stats_matches_numpy_for_any_split_and_merge():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=5.0, scale=3.0, size=(500, 4))
    y = rng.choice(np.array(["x", "y", 3], dtype=object), size=500, p=[0.7, 0.25, 0.05])
    whole, pieces = ClassStats(), ClassStats()
    whole.update(X, y)
    for a, b in [(0, 1), (1, 8), (8, 200), (200, 500)]:
        pieces.update(X[a:b], y[a:b])
    shards = [ClassStats() for _ in range(3)]
    for k, (a, b) in enumerate([(300, 500), (0, 120), (120, 300)]):  # shards meet classes in other orders
        shards[k].update(X[a:b], y[a:b])
    shards[0].merge(shards[1])
    shards[0].merge(shards[2])
    for s in (whole, pieces, shards[0]):
        for label in ("x", "y", 3):
            r = s.row(label)
            Xc = X[y == label]
            assert s.count[r] == len(Xc)
            np.testing.assert_allclose(s.mean[r], Xc.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(s.var()[r], Xc.var(axis=0), rtol=1e-10)
            np.testing.assert_allclose(s.var(ddof=1)[r], Xc.var(axis=0, ddof=1), rtol=1e-10)


def test_class_stats_state_and_discount():
    rng = np.random.default_rng(1)
    s = ClassStats()
    s.update(rng.normal(size=(50, 3)), rng.integers(0, 3, size=50))
    state = s.to_state()
    _json_ok(state)
    t = component_from_state(state)
    assert isinstance(t, ClassStats) and t.classes == s.classes
    np.testing.assert_array_equal(t.mean, s.mean)
    var = s.var()
    s.discount(0.5)
    np.testing.assert_allclose(s.var(), var)
    np.testing.assert_allclose(s.count, t.count * 0.5)
    with pytest.raises(ValueError):
        s.discount(0.0)
    assert ClassStats.from_state(ClassStats().to_state()).n_features_in is None


# ---------------------------------------------------------------------- Reservoir
def test_reservoir_inclusion_probability_is_capacity_over_n():
    """Each of n items kept with probability M/n: binomial bound per item, chi-square across items."""
    n, M, runs = 120, 12, 1500
    X = np.arange(n, dtype=np.float64)[:, None]
    y = np.zeros(n, dtype=np.int64)
    kept = np.zeros(n)
    for seed in range(runs):
        r = Reservoir(capacity=M, seed=seed)
        r.add(X[:50], y[:50])
        r.add(X[50:], y[50:])
        assert len(r) == M
        kept[r.X[:, 0].astype(int)] += 1
    p = M / n
    # Every item: within the two-sided 1e-4 binomial interval (union bound over 120 items: ~1e-2).
    lo, hi = sps.binom.ppf([0.5e-4, 1 - 0.5e-4], runs, p)
    assert np.all((kept >= lo) & (kept <= hi)), (kept.min(), kept.max(), lo, hi)
    # Jointly: the counts look uniform (chi-square, seeded so the test is deterministic).
    chi2 = ((kept - runs * p) ** 2 / (runs * p)).sum()
    assert sps.chi2.sf(chi2, df=n - 1) > 1e-3


def test_reservoir_is_batch_invariant_bounded_and_round_trips():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    y = rng.choice(np.array(["cat", "dog", (1, 2)], dtype=object), size=300)
    a, b = Reservoir(capacity=40, seed=5), Reservoir(capacity=40, seed=5)
    a.add(X, y)
    for i in range(0, 300, 7):
        b.add(X[i : i + 7], y[i : i + 7])
    np.testing.assert_array_equal(a.X, b.X)
    assert list(a.y) == list(b.y)
    assert len(a) == 40 and a._X.shape[0] == 40 and a.n_seen == 300
    state = a.to_state()
    _json_ok(state)
    c = component_from_state(state)
    assert isinstance(c, Reservoir)
    Xs1, _ys1 = a.sample(10)
    Xs2, _ys2 = c.sample(10)
    np.testing.assert_array_equal(Xs1, Xs2)
    assert len(Xs1) == 10 and len(set(map(tuple, Xs1))) == 10  # without replacement
    a.add(X[:50], y[:50])
    c.add(X[:50], y[:50])
    np.testing.assert_array_equal(a.X, c.X)
    assert a.sample(500)[0].shape == (40, 3)
    empty = Reservoir(capacity=3)
    assert len(empty) == 0 and empty.sample(2)[0].shape == (0, 0)
    ints = Reservoir(capacity=5)
    ints.add(X[:8], np.arange(8) % 2)
    assert ints.y.dtype == np.int64


def test_class_balanced_reservoir_keeps_minorities():
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.choice(3, size=n, p=[0.9, 0.08, 0.02])
    X = np.column_stack([np.arange(n), y]).astype(np.float64)
    cb = ClassBalancedReservoir(capacity=60, seed=1)
    for i in range(0, n, 11):
        cb.add(X[i : i + 11], y[i : i + 11])
    counts = dict(zip(cb.classes, cb.class_counts()))
    assert len(cb) == 60
    assert counts[2] == min(int((y == 2).sum()), 20)  # the rarest class keeps everything it had
    assert max(counts.values()) - min(counts.values()) <= max(0, 60 - 3 * int((y == 2).sum())) + 1
    np.testing.assert_array_equal(cb.X[:, 1], cb.y)  # items stay paired with their labels
    # Same stream in one batch: same content (counter-based randomness).
    one = ClassBalancedReservoir(capacity=60, seed=1)
    one.add(X, y)
    np.testing.assert_array_equal(one.X, cb.X)
    state = cb.to_state()
    _json_ok(state)
    again = component_from_state(state)
    for r in (cb, again):
        r.add(X[:100], y[:100])
    np.testing.assert_array_equal(cb.X, again.X)
    # A plain reservoir on the same stream mostly loses the minority.
    plain = Reservoir(capacity=60, seed=1)
    plain.add(X, y)
    assert np.sum(plain.y == 2) < counts[2]


def test_buffers_reject_bad_input():
    r = Reservoir(capacity=4)
    r.add(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError):
        r.add(np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError):
        r.add(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError):
        Reservoir(capacity=0)
