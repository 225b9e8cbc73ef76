"""KalmanHead against independent references: exact Bayesian linear regression (g = 1), a
plain sequential Kalman filter (fixed g < 1), sample-by-sample predict-then-learn, plus
learned forgetting on seeded synthetic streams, state round-trips, class growth, adapt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ocld.learners.base import DriftEvent, FeatureCountError, pad_columns
from ocld.learners.kalman import KalmanHead
from ocld.learners.registry import build_learner, learner_from_state

ROOT = Path(__file__).resolve().parents[2]


def _data(n: int = 400, D: int = 6, C: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(D, C))
    Phi = rng.normal(size=(n, D)) / np.sqrt(D)
    y = np.argmax(Phi @ W + 0.5 * rng.normal(size=(n, C)), axis=1)
    return Phi, y


def _cuts(n: int, size: int | str, seed: int = 0) -> list[tuple[int, int]]:
    if size == "random":
        rng = np.random.default_rng(seed)
        edges = np.unique(np.concatenate([[0, n], rng.integers(1, n, size=n // 20)]))
        return list(zip(edges[:-1], edges[1:]))
    assert isinstance(size, int)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _learn(head: KalmanHead, Phi: np.ndarray, y: np.ndarray, size: int | str) -> list[np.ndarray]:
    out = []
    for a, b in _cuts(len(y), size):
        out.append(head.learn_predict(Phi[a:b], y[a:b]))
    return out


def _ordered(head: KalmanHead, labels: list) -> list[int]:
    return [head.classes_.index(c) for c in labels]


def _onehot(y: np.ndarray, labels: list) -> np.ndarray:
    return (y[:, None] == np.array(labels)[None, :]).astype(float)


@pytest.mark.parametrize("size", [1, 7, 300, "random"])
def test_no_forgetting_equals_bayesian_linear_regression(size):
    Phi, y = _data()
    s0, s2 = 1.0, 0.1
    head = KalmanHead(g=1.0, learn_g=False, s0=s0, s2=s2, scale_rate=0.0)
    _learn(head, Phi, y, size)
    D = Phi.shape[1]
    A_ref = np.linalg.inv(np.eye(D) / s0 + Phi.T @ Phi / s2)
    M_ref = A_ref @ Phi.T @ _onehot(y, [0, 1, 2]) / s2
    M, A = head.posterior()
    M = M[:, _ordered(head, [0, 1, 2])]
    assert np.linalg.norm(A - A_ref) <= 1e-8 * np.linalg.norm(A_ref)
    assert np.linalg.norm(M - M_ref) <= 1e-8 * np.linalg.norm(M_ref)


def _sequential_kalman(Phi, y, labels, g, s0, s2):
    """Textbook per-sample Kalman filter, written independently of the block form."""
    D, C = Phi.shape[1], len(labels)
    m, A = np.zeros((D, C)), s0 * np.eye(D)
    Y = _onehot(y, labels)
    for phi, target in zip(Phi, Y):
        m = g * m
        A = g * g * A + (1 - g * g) * s0 * np.eye(D)
        S = phi @ A @ phi + s2
        k = A @ phi / S
        m = m + np.outer(k, target - phi @ m)
        A = A - np.outer(k, phi @ A)
    return m, A


@pytest.mark.parametrize("size", [1, 7, 300, "random"])
def test_fixed_forgetting_equals_sequential_kalman(size):
    Phi, y = _data(n=500, seed=1)
    g, s0, s2 = 0.99, 1.3, 0.2
    head = KalmanHead(g=g, learn_g=False, s0=s0, s2=s2, scale_rate=0.0, max_chunk=64)
    _learn(head, Phi, y, size)
    m_ref, A_ref = _sequential_kalman(Phi, y, [0, 1, 2], g, s0, s2)
    M, A = head.posterior()
    np.testing.assert_allclose(M[:, _ordered(head, [0, 1, 2])], m_ref, rtol=0, atol=1e-10 * np.abs(m_ref).max())
    np.testing.assert_allclose(A, A_ref, rtol=0, atol=1e-10 * np.abs(A_ref).max())


def _one_at_a_time(head: KalmanHead, Phi, y, adapt_at: int | None = None) -> np.ndarray:
    rows = []
    for i in range(len(y)):
        if adapt_at is not None and i == adapt_at:
            head.adapt(DriftEvent(index=i, detector="test"))
        p = head.predict_proba(Phi[i : i + 1])
        head.learn(Phi[i : i + 1], y[i : i + 1])
        rows.append(pad_columns(p, 3)[0])
    return np.array(rows)


PARAMS = dict(g=[1.0, 0.98], lr=1e-3, block_size=16, scale_rate=0.2, adapt_samples=40, adapt_delta=0.1, max_chunk=50,
              adapt_restart=True, recent_window=30)


# a loss-gap cap that binds all the time (0.1 in squared-error units): the mixture weights too
# must not depend on the cut
BINDING_GAP = dict(eta=2.0, max_log_weight_gap=0.2)


@pytest.mark.parametrize("cap", [{}, BINDING_GAP], ids=["gap-default", "gap-binding"])
@pytest.mark.parametrize("size", [7, 33, 300])
def test_learn_predict_is_exact_prequential_and_cut_invariant(size, cap):
    # two sub-heads, learned delta, calibration, an adapt window and a class first seen mid-batch
    Phi, y = _data(n=300, seed=2)
    y = np.where(np.arange(300) < 140, y % 2, y)  # class 2 first appears after sample 140
    ref = KalmanHead(**PARAMS, **cap)
    p_ref = _one_at_a_time(ref, Phi, y, adapt_at=210)
    if cap:  # the cap binds: at an aligned boundary (288 = 18 blocks of 16) the lagging head sits on it
        probe = KalmanHead(**PARAMS, **cap)
        probe.learn(Phi[:288], y[:288])
        assert probe._loss.max() == pytest.approx(0.1)

    head = KalmanHead(**PARAMS, **cap)
    out = []
    for a, b in _cuts(300, size):
        if a <= 210 < b:  # adapt lands between batches: split the batch at 210
            out.append(pad_columns(head.learn_predict(Phi[a:210], y[a:210]), 3))
            head.adapt(DriftEvent(index=210, detector="test"))
            out.append(head.learn_predict(Phi[210:b], y[210:b]))
        else:
            out.append(pad_columns(head.learn_predict(Phi[a:b], y[a:b]), 3))
    p = np.vstack(out)
    assert head.classes_ == ref.classes_
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-10)
    # a new class gets probability 0 before its first sample
    first2 = int(np.argmax(y == 2))
    assert np.all(p[:first2, head.classes_.index(2)] == 0.0)
    assert np.allclose(p.sum(axis=1)[1:], 1.0)
    # same end state, whatever the cut
    for k in range(2):
        np.testing.assert_allclose(head.posterior(k)[0], ref.posterior(k)[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(head.posterior(k)[1], ref.posterior(k)[1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(head.forgetting_heads_, ref.forgetting_heads_, rtol=0, atol=1e-12)
    assert head.forgetting_heads_[1] != 0.98  # delta did move
    np.testing.assert_allclose(head.noise_scale_, ref.noise_scale_, rtol=1e-10)
    np.testing.assert_allclose(head.recent_error_, ref.recent_error_, rtol=1e-10)
    assert not np.allclose(head.noise_scale_, 1.0)  # tau did move
    for got, want in zip(head.forgetting_history_, ref.forgetting_history_):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(head.weights_, ref.weights_, rtol=0, atol=1e-12)


def _class_stream(n: int, jump_every: int | None, seed: int = 0, D: int = 8, C: int = 3):
    """Class-conditional Gaussians (plus a bias feature); every ``jump_every`` samples the
    class means are redrawn, so the best linear head jumps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = np.ones((n, D + 1))
    step = jump_every or n
    for s in range(0, n, step):
        mu = rng.normal(size=(C, D))
        X[s : s + step, :D] = mu[y[s : s + step]] + 0.5 * rng.normal(size=(min(step, n - s), D))
    return X, y


LEARNED = dict(g=1.0, lr=1e-3, block_size=32, scale_rate=0.0)


def _g_trace(X, y, batch=50):
    head = KalmanHead(**LEARNED)
    gs = []
    for s in range(0, len(y), batch):
        head.learn(X[s : s + batch], y[s : s + batch])
        gs.append(head.forgetting_)
    return head, np.array(gs)


def test_learned_forgetting_stays_near_one_when_stationary():
    X, y = _class_stream(6000, None, seed=3)
    head, gs = _g_trace(X, y)
    assert gs[-1] >= 0.999
    assert gs[20:].min() >= 0.99  # never over-forgets after the first 1,000 samples


def test_learned_forgetting_drops_at_jumps_and_recovers():
    # Criterion: for every jump at t (every 2,000 samples), g < 0.99 at some batch end in
    # (t, t + 300], and g >= 0.999 again at t + 1,900 (just before the next jump).
    X, y = _class_stream(8000, 2000, seed=4)
    head, gs = _g_trace(X, y)  # gs[k] is g after 50 (k + 1) samples
    for t in (2000, 4000, 6000):
        assert gs[t // 50 - 1] >= 0.999, f"g not recovered before jump at {t}"
        assert gs[t // 50 : (t + 300) // 50].min() < 0.99, f"g did not drop within 300 samples of {t}"
    assert gs[-1] >= 0.999
    n_hist, g_hist = head.forgetting_history_
    assert len(n_hist) == len(g_hist) > 0 and n_hist[-1] == 8000


def test_state_round_trip_continues_identically():
    Phi, y = _data(n=400, seed=5)
    head = KalmanHead(**PARAMS)
    head.learn(Phi[:150], y[:150])
    head.adapt(DriftEvent(index=150, detector="test"))
    head.learn(Phi[150:171], y[150:171])  # stops inside a block and inside the adapt window
    state = head.to_state()
    json.dumps({"params": state.params, "meta": state.meta})  # JSON-able
    clone = learner_from_state(state)
    assert isinstance(clone, KalmanHead)
    for a, b in [(171, 200), (200, 333), (333, 400)]:
        np.testing.assert_array_equal(head.learn_predict(Phi[a:b], y[a:b]), clone.learn_predict(Phi[a:b], y[a:b]))
    np.testing.assert_array_equal(head.posterior(1)[1], clone.posterior(1)[1])
    np.testing.assert_array_equal(head.predict_proba(Phi[:5]), clone.predict_proba(Phi[:5]))
    assert head.forgetting_ == clone.forgetting_


def test_in_place_update_leaves_snapshots_alone_and_keeps_the_covariance_symmetric():
    # The covariance is updated in place by BLAS: what to_state() and posterior() handed out
    # earlier must not change, and at every aligned block boundary A is exactly symmetric.
    Phi, y = _data(n=600, seed=8)
    head = KalmanHead(g=[1.0, 0.99], lr=1e-3, block_size=64, max_chunk=24)
    head.learn(Phi[:100], y[:100])
    state = head.to_state()
    A_before = head.posterior(1)[1]
    saved = {k: v.copy() for k, v in state.arrays.items()}
    head.learn(Phi[100:600], y[100:600])
    for k, v in state.arrays.items():
        np.testing.assert_array_equal(v, saved[k])
    assert not np.array_equal(head.posterior(1)[1], A_before)  # the head itself did move on
    head.learn(Phi[:40], y[:40])  # 640 samples: an aligned boundary
    for k in range(2):
        A = head.posterior(k)[1]
        assert np.array_equal(A, A.T)
        assert np.all(np.linalg.eigvalsh(A) > 0)


def test_new_class_mid_stream_and_string_labels():
    Phi, _ = _data(n=60, seed=6)
    head = KalmanHead()
    assert head.predict_proba(Phi[:2]).shape == (2, 0)
    assert list(head.predict(Phi[:1])) == [None]
    head.learn(Phi[:20], np.array(["a", "b"] * 10, dtype=object))
    assert head.predict_proba(Phi[:3]).shape == (3, 2)
    y = np.array(["a"] * 5 + ["c"] + ["b"] * 4, dtype=object)
    p = head.learn_predict(Phi[20:30], y)
    assert head.classes_ == ["a", "b", "c"] and p.shape == (10, 3)
    assert np.all(p[:6, 2] == 0.0) and np.all(p[6:, 2] > 0.0)
    assert set(head.predict(Phi[30:40])) <= {"a", "b", "c"}


def test_adapt_lowers_forgetting_then_it_recovers():
    Phi, y = _data(n=300, seed=7)
    head = KalmanHead(g=1.0, learn_g=False, adapt_delta=0.05, adapt_samples=100)
    head.learn(Phi[:50], y[:50])
    assert head.forgetting_ == 1.0
    head.adapt(DriftEvent(index=50, detector="test"))
    assert head.forgetting_ == pytest.approx(math.exp(-0.025))
    head.learn(Phi[50:149], y[50:149])
    assert head.forgetting_ < 1.0  # still inside the window (sample 149 is the 100th)
    head.learn(Phi[149:150], y[149:150])
    assert head.forgetting_ == 1.0
    assert head.to_state().meta["adapt_until"] == 150


def test_adapt_restarts_slower_sub_heads_from_the_recently_best_one():
    # three fixed sub-heads (no forgetting, medium, fast); the class means jump at 1,500
    X, y = _class_stream(1800, 1500, seed=9)
    kw = dict(g=[1.0, 0.995, 0.97], learn_g=False, adapt_restart=True, adapt_samples=0, recent_window=100)
    head = KalmanHead(**kw)
    head.learn(X[:1500], y[:1500])
    before = [head.posterior(h) for h in range(3)]
    head.adapt(DriftEvent(index=1500, detector="test"))  # stationary so far: g = 1 is best, nothing to do
    assert int(np.argmin(head.recent_error_)) == 0
    for h in range(3):
        np.testing.assert_array_equal(head.posterior(h)[0], before[h][0])
    head.learn(X[1500:1600], y[1500:1600])
    err = head.recent_error_
    assert err[1] < err[2] < err[0]  # after the jump the medium sub-head predicts best, g = 1 worst
    best_M, best_A = head.posterior(1)
    fast = head.posterior(2)
    head.adapt(DriftEvent(index=1600, detector="test"))
    # the slower one restarts from the best one's posterior (keeping its own g); the faster one is kept
    np.testing.assert_array_equal(head.posterior(0)[0], best_M)
    np.testing.assert_array_equal(head.posterior(0)[1], best_A)
    np.testing.assert_array_equal(head.posterior(2)[0], fast[0])
    np.testing.assert_array_equal(head.posterior(2)[1], fast[1])
    np.testing.assert_allclose(head.forgetting_heads_, [1.0, 0.995, 0.97])
    # and it pays: over the next 200 samples the restarted mixture beats one that was not restarted
    plain = KalmanHead(**{**kw, "adapt_restart": False})
    plain.learn(X[:1600], y[:1600])
    def acc(h: KalmanHead) -> float:
        p = h.learn_predict(X[1600:], y[1600:])
        return float(np.mean(np.array(h.classes_)[np.argmax(p, axis=1)] == y[1600:]))

    a_restart, a_plain = acc(head), acc(plain)
    assert a_restart > a_plain + 0.05, (a_restart, a_plain)
    clone = KalmanHead.from_state(head.to_state())
    np.testing.assert_array_equal(clone.recent_error_, head.recent_error_)


def test_validation_and_extreme_inputs():
    Phi, y = _data(n=50, seed=8)
    head = KalmanHead(**KalmanHead._unit_test_params())
    head.learn(Phi, y)
    with pytest.raises(FeatureCountError):
        head.learn_predict(np.zeros((3, Phi.shape[1] + 1)), y[:3])
    with pytest.raises(FeatureCountError):
        head.predict_proba(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        head.learn(np.full((2, Phi.shape[1]), np.nan), y[:2])
    with pytest.raises(ValueError):
        head.learn(Phi[:3], y[:2])
    huge = np.full((4, Phi.shape[1]), 1e300)
    huge[1] *= -1
    p = head.learn_predict(huge, y[:4])
    assert np.all(np.isfinite(p))
    p = head.predict_proba(np.vstack([huge, np.full((1, Phi.shape[1]), np.inf)]))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    M, A = head.posterior()
    assert np.all(np.isfinite(M)) and np.all(np.isfinite(A))
    assert np.allclose(A, A.T) and np.linalg.eigvalsh(A).min() > -1e-8
    with pytest.raises(ValueError):
        KalmanHead(g=1.5)
    with pytest.raises(ValueError):
        KalmanHead(g=[1.0, 0.99], delta_bounds=[[0, 1]])


def test_shipped_config_builds_a_pipeline():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "config" / "kalman.yaml").read_text())["learner"]
    learner = build_learner(spec["name"], spec.get("params"), spec.get("features"))
    rng = np.random.default_rng(9)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(int)
    p = learner.learn_predict(X, y)
    assert p.shape == (300, 2) and learner.exact_prequential
    assert 0.99 < learner.head.forgetting_ <= 1.0  # type: ignore[attr-defined]


def test_adapt_reports_whether_it_changed_anything():
    from ocld.learners.base import DriftEvent

    rng = np.random.default_rng(0)
    head = KalmanHead(g=[1.0, 0.99], adapt_restart=True, adapt_samples=0, learn_g=False)
    head.learn(rng.normal(size=(200, 4)), rng.integers(0, 2, 200))
    event = DriftEvent(index=200, detector="ADWIN", rising=True)
    M_before = head.posterior(0)[0]
    head._recent = np.array([0.1, 0.2])  # the slowest sub-head is the best lately: nothing to restart
    assert head.adapt(event) is False
    np.testing.assert_array_equal(head.posterior(0)[0], M_before)
    head._recent = np.array([0.2, 0.1])  # the faster one is better: the slow one restarts from it
    assert head.adapt(event) is True
    np.testing.assert_array_equal(head.posterior(0)[0], head.posterior(1)[0])
    assert KalmanHead(g=[1.0, 0.99], adapt_samples=10).adapt(event) is True  # forced forgetting window


def test_cholesky_matches_numpy_and_falls_back_with_jitter():
    """The per-head LAPACK factor equals numpy's (upper triangle zero, input untouched); a matrix that is
    not numerically positive definite takes the jitter path instead of failing."""
    rng = np.random.default_rng(3)
    head = KalmanHead(**KalmanHead._unit_test_params())
    F = rng.normal(size=(2, 12, 12))
    K = F @ F.transpose(0, 2, 1) + 0.1 * np.eye(12)
    before = K.copy()
    L = head._cholesky(K)
    np.testing.assert_allclose(L, np.linalg.cholesky(before), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(K, before)
    bad = K.copy()
    bad[1] = np.outer(F[1, 0], F[1, 0])  # rank one: singular, so potrf fails on this head
    L = head._cholesky(bad)
    assert np.all(np.isfinite(L))
    np.testing.assert_allclose(L @ L.transpose(0, 2, 1), bad, rtol=0, atol=1e-6 * np.abs(bad).max())
