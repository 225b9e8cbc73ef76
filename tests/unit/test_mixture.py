"""OnlineMixture: the fixed-share weights and the calibration against an independent
per-sample reference, test-then-train inside a block, drift events reaching every member,
the state holding members and weights, the state-size estimate, and the shipped default
config. (Cut invariance, round trips and the rest: tests/conformance.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ocld.learners.base import DriftEvent
from ocld.learners.mixture import OnlineMixture
from ocld.learners.registry import build_learner, learner_from_state

ROOT = Path(__file__).resolve().parents[2]

MEMBERS = [
    {"name": "KalmanHead", "params": {"g": [1.0, 0.99], "block_size": 8, "max_chunk": 16},
     "features": [{"name": "Standardizer"},
                  {"name": "RandomFourierFeatures", "params": {"n_components": 16, "scale": 0.5, "seed": 0}}]},
    {"name": "KalmanLogistic", "params": {"q_lag": 20, "q_step": 5}, "features": [{"name": "Standardizer"}]},
    {"name": "AnalyticRidge", "params": {"expansion_size": 24, "refresh_every": 50, "adapt_discount": 0.5}},
]


def stream(n: int, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0.0, 1.5, size=(classes, 4))
    k = rng.integers(0, classes, n)
    X = centers[k] + rng.normal(size=(n, 4))
    y = np.empty(n, dtype=object)
    y[:] = [int(v) for v in k]
    return X, y


def reference(X: np.ndarray, y: np.ndarray, eta: float, share: float, horizon: float | None, min_proba: float,
              block: int, memory: float, bounds: tuple[float, float]) -> np.ndarray:
    """The mixture's predictions computed sample by sample from separately built members: each
    member predicts row i (learn_predict on that row alone), the calibration and the weights
    follow the formulas of the module docstring, written out plainly."""
    members = [build_learner(m["name"], m["params"], m.get("features")) for m in MEMBERS]
    K = len(members)
    w = np.full(K, 1.0 / K)
    L = np.zeros(K)  # discounted losses (horizon mode)
    beta = np.ones(K)
    eps = np.full(K, 0.01)
    grad, hess, g_run, h_run, r_sum, r_run = (np.zeros(K) for _ in range(6))
    r_cnt = n_run = 0.0
    out = []
    for i in range(len(y)):
        known_before = list(members[0].classes_)
        P = [m.learn_predict(X[i:i + 1], y[i:i + 1])[0] for m in members]
        classes = members[0].classes_
        C = len(classes)
        c = classes.index(y[i])
        known = [j < len(known_before) for j in range(C)]
        q = np.zeros((K, C))
        n_known = sum(known)
        informative = n_known >= 2 and known[c]
        r_cnt += informative
        for k in range(K):
            z = np.log(np.maximum(np.pad(P[k], (0, C - len(P[k]))), min_proba))
            e = np.array([math.exp(beta[k] * z[j]) if known[j] else 0.0 for j in range(C)])
            soft = e / e.sum() if e.sum() > 0 else e
            q[k] = [(1 - eps[k]) * soft[j] + eps[k] / max(n_known, 1) if known[j] else 0.0 for j in range(C)]
            if informative:
                r = (eps[k] / n_known) / q[k, c]  # share of the uniform part in q_y
                mean = sum(soft[j] * z[j] for j in range(C) if known[j])
                grad[k] += (1 - r) * (mean - z[c])
                hess[k] += (1 - r) * (sum(soft[j] * z[j] ** 2 for j in range(C) if known[j]) - mean**2)
                r_sum[k] += r
        out.append(w @ q)
        loss = -np.log(np.maximum(q[:, c], min_proba))
        if share > 0:
            v = w * np.exp(-eta * loss)
            v /= v.sum()
            w = (1 - share) * v + share / K
        else:
            L = (1.0 if horizon is None else 1.0 - 1.0 / horizon) * L + loss
            w = np.exp(-eta * (L - L.min()))
            w /= w.sum()
        if (i + 1) % block == 0:
            g_run = memory * g_run + grad
            h_run = memory * h_run + hess
            new = np.clip(beta - g_run / (h_run + 1.0), *bounds)
            g_run = g_run + h_run * (new - beta)
            beta = new
            grad, hess = np.zeros(K), np.zeros(K)
            r_run = memory * r_run + r_sum
            n_run = memory * n_run + r_cnt
            if n_run > 0:
                eps = np.clip(r_run / n_run, 1e-4, 0.5)
            r_sum, r_cnt = np.zeros(K), 0.0
    C = len(members[0].classes_)
    return np.vstack([np.pad(p, (0, C - len(p))) for p in out])


@pytest.mark.parametrize("cut", [1, 13, 300])
@pytest.mark.parametrize("share, horizon", [(0.01, None), (0.0, 40.0), (0.0, 1.5), (0.0, None)])
def test_matches_per_sample_reference(cut: int, share: float, horizon: float | None) -> None:
    """Row i's prediction uses the weights and calibration from rows < i only (to 1e-9), whatever the
    cut, for fixed share, discounted losses and the Bayesian mixture."""
    X, y = stream(300, seed=1)
    y[70] = "new"  # a class first seen mid-stream
    params = {"eta": 0.7, "share": share, "horizon": horizon, "min_proba": 1e-3, "calibration_block": 8,
              "calibration_memory": 0.9}
    ref = reference(X, y, 0.7, share, horizon, 1e-3, 8, 0.9, (0.05, 20.0))
    model = OnlineMixture(members=MEMBERS, **params)
    got = [model.learn_predict(X[a:a + cut], y[a:a + cut]) for a in range(0, len(y), cut)]
    C = len(model.classes_)
    P = np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in got])
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-9)
    assert P[70, model.classes_.index("new")] == 0.0
    np.testing.assert_allclose(P.sum(axis=1)[1:], 1.0, atol=1e-12)


def test_weights_follow_the_better_member_and_switch_after_a_change() -> None:
    """A member that is right gains the weight; after the concept flips, the other one takes over
    (fixed share keeps the loser's weight from vanishing)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 2))
    y = np.where(X[:, 0] > 0, 1, 0).astype(object)
    y[1500:] = np.where(X[1500:, 0] > 0, 0, 1)  # the concept flips
    members = [
        {"name": "KalmanLogistic", "params": {"learn_q": False, "q0": 0.0}},  # never forgets: slow after the flip
        {"name": "KalmanLogistic", "params": {"learn_q": False, "q0": 1e-2}},  # forgets fast
    ]
    model = OnlineMixture(members=members, horizon=200, names=["slow", "fast"])
    model.learn_predict(X[:1500], y[:1500])
    model.learn_predict(X[1500:1700], y[1500:1700])
    assert model.weights_["fast"] > 0.9, model.weights_
    assert math.isclose(sum(model.weights_.values()), 1.0)
    assert set(model.losses_) == {"slow", "fast"}


def test_adapt_reaches_every_member() -> None:
    X, y = stream(200)
    model = OnlineMixture(members=MEMBERS)
    model.learn(X, y)
    logistic = model.member(1).head  # type: ignore[attr-defined]
    ridge = model.member(2)
    P_before = logistic._P.copy()
    gram_before = ridge.sufficient_statistics()["gram"]
    assert model.adapt(DriftEvent(index=199, detector="test", rising=True)) is True
    assert np.all(np.diag(logistic._P[0]) > np.diag(P_before[0]))  # covariance inflated
    np.testing.assert_allclose(ridge.sufficient_statistics()["gram"], 0.5 * gram_before)  # statistics discounted
    # nothing to do anywhere: False (the core then keeps its cooldown)
    quiet = OnlineMixture(members=[{"name": "KalmanLogistic", "params": {"adapt_inflation": 0.0}}])
    quiet.learn(X, y)
    assert quiet.adapt(DriftEvent(index=1, detector="test", rising=True)) is False


def test_state_holds_members_and_weights() -> None:
    X, y = stream(300, seed=2)
    model = OnlineMixture(members=MEMBERS, share=0.05, horizon=None)
    model.learn(X[:250], y[:250])
    state = model.to_state()
    assert sorted(state.children) == ["member0", "member1", "member2"]
    assert [c.kind for c in state.children.values()] == ["Pipeline", "Pipeline", "AnalyticRidge"]
    assert {"score", "beta"} <= set(state.arrays)
    twin = learner_from_state(state)
    assert twin.weights_ == model.weights_  # type: ignore[attr-defined]
    np.testing.assert_array_equal(twin.learn_predict(X[250:], y[250:]), model.learn_predict(X[250:], y[250:]))


def test_estimate_state_bytes_sums_the_members() -> None:
    model = OnlineMixture(members=MEMBERS)
    parts = [model.member(i).estimate_state_bytes(6, 3) for i in range(3)]
    got = model.estimate_state_bytes(6, 3)
    if any(p is None for p in parts):
        assert got is None
    else:
        assert got == sum(parts) + 6 * 8 * 3  # type: ignore[arg-type]


def test_bad_members_are_refused_with_the_index() -> None:
    with pytest.raises(ValueError, match=r"members\[1\]"):
        OnlineMixture(members=[{"name": "KalmanLogistic"}, {"name": "NoSuchHead"}])
    with pytest.raises(ValueError, match="members\\[0\\] has unknown keys"):
        OnlineMixture(members=[{"name": "KalmanLogistic", "param": {}}])
    with pytest.raises(ValueError, match="must be heads"):
        OnlineMixture(members=[{"name": "OnlineMixture"}])
    with pytest.raises(ValueError, match="share"):
        OnlineMixture(members=[{"name": "KalmanLogistic"}], share=1.0, horizon=None)
    with pytest.raises(ValueError, match="choose one"):
        OnlineMixture(members=[{"name": "KalmanLogistic"}], share=0.01, horizon=100)


def test_default_config_builds_the_mixture() -> None:
    from ocld.stream.config import load_config

    cfg = load_config(ROOT / "config" / "default.yaml")
    learner = cfg.build_learner()
    assert isinstance(learner, OnlineMixture)
    assert learner.member_names == ["KalmanHead", "KalmanLogistic", "AnalyticRidge", "GaussianNB", "KNeighbors"]
    from ocld.learners.mixture import DEFAULT_MEMBERS, _spec

    # one definition of the shipped members: the class default is the shipped config
    assert learner.members == [_spec(m, i) for i, m in enumerate(DEFAULT_MEMBERS)]
    assert learner._get_params() == {**OnlineMixture()._get_params(), **cfg.learner.params,
                                     "members": learner.members}


def test_weights_reach_the_metrics_stream_and_the_report(tmp_path: Path) -> None:
    """LearningCore.learner_metrics() carries the member weights (what the daemon writes to the
    metrics stream); ocld report's picture reads them back from those points and draws them."""
    from ocld.core.codec import Decoded
    from ocld.core.metrics import PrequentialMetrics
    from ocld.core.runtime import LearningCore, PendingTable
    from ocld.stream import report

    X, y = stream(600, seed=4)
    core = LearningCore(OnlineMixture(members=MEMBERS, horizon=100), PrequentialMetrics(100), None, PendingTable(10))
    points = []
    for a in range(0, 600, 100):
        rows = np.arange(a, a + 100)
        core.process(Decoded(rows=rows, X=X[a:a + 100], y=list(y[a:a + 100]), ids=[None] * 100, ts=[None] * 100,
                             task=[None] * 100))
        points.append({"labelled_seen": core.labelled_seen, "accuracy": core.metrics.window_accuracy,
                       **core.learner_metrics()})
    weights = points[-1]["mixture_weights"]
    assert list(weights) == ["KalmanHead", "KalmanLogistic", "AnalyticRidge"]
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-5)

    class Client:  # what run_from_redis reads, as the Redis client decodes it
        def metrics(self, pipeline: str, count: int) -> list[dict]:
            return points

        def status(self, pipeline: str) -> dict:
            return {"learner": "OnlineMixture", "accuracy_total": 0.9, "labelled_seen": 600}

        def drift_events(self, pipeline: str, count: int) -> list[dict]:
            return []

    run = report.run_from_redis(Client(), "p")
    assert run["curve"]["weights"]["KalmanLogistic"] == [p["mixture_weights"]["KalmanLogistic"] for p in points]
    path = report.plot_run(run, tmp_path / "run.png")
    assert path.stat().st_size > 10_000
    without = report.plot_run({**run, "curve": {**run["curve"], "weights": None}}, tmp_path / "plain.png")
    from PIL import Image

    assert Image.open(path).size[1] > Image.open(without).size[1]  # a second panel for the weights


def test_learning_a_poll_in_one_call_changes_nothing(monkeypatch) -> None:
    """With adaptation on, the core learns a mixture (every member exact prequential and batch invariant)
    one poll per call (``joint_segments``) and goes back to a copy when an adaptation falls due inside
    it: the same errors, drift events, adaptations and state as one ``adapt_grid`` segment per call."""
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore
    from ocld.stream.config import parse_config
    from tests.conformance.checks import assert_states_close

    members = MEMBERS + [{"name": "GaussianNB", "params": {"adapt_discount": 0.5}},
                         {"name": "KNeighbors", "params": {"window": 60, "adapt_keep": 20},
                          "features": [{"name": "Standardizer"}]}]
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.normal(size=(n, 4))
    flip = np.where(np.arange(n) < 1500, 1.0, -1.0)
    y = np.where(X[:, 0] * flip + 0.3 * X[:, 1] > 0, "a", "b").astype(object)
    y[(np.arange(n) > 800) & (X[:, 3] > 1.2)] = "c"  # a third class from sample 800 on

    def run(joint: bool) -> tuple[LearningCore, list, list, int]:
        monkeypatch.setattr(OnlineMixture, "joint_segments", property(lambda self: joint))
        cfg = parse_config({"learner": {"name": "OnlineMixture", "params": {"members": members, "horizon": 100}},
                            "drift": {"detector": "PageHinkley", "params": {"threshold": 5.0}, "adapt_grid": 50}})
        core = LearningCore.from_config(cfg)
        calls = 0
        inner = OnlineMixture.learn_predict

        def counted(self, Xb, yb):
            nonlocal calls
            calls += 1
            return inner(self, Xb, yb)

        monkeypatch.setattr(OnlineMixture, "learn_predict", counted)
        events, errors = [], []
        for a in range(0, n, 400):
            b = min(n, a + 400)
            res = core.process(Decoded(rows=np.arange(a, b), X=X[a:b], y=list(y[a:b]), ids=[None] * (b - a),
                                       ts=[None] * (b - a), task=[None] * (b - a)))
            events += [(e.index, e.detector, core.action_for(e)) for e in res.events]
            errors += res.errors.tolist()
        monkeypatch.setattr(OnlineMixture, "learn_predict", inner)
        return core, events, errors, calls

    fast, ev_fast, err_fast, calls_fast = run(True)
    slow, ev_slow, err_slow, calls_slow = run(False)
    assert [e for e in ev_slow if e[2] == "adapt"], "the stream must trigger adaptations for this test to mean anything"
    assert calls_fast < calls_slow
    assert ev_fast == ev_slow
    assert err_fast == err_slow
    assert_states_close(fast.learner.to_state(), slow.learner.to_state(), tol=1e-9)


def test_joint_segments_only_when_every_member_allows_it() -> None:
    X, y = stream(50)
    model = OnlineMixture(members=MEMBERS)
    assert not model.joint_segments  # nothing learned yet: the state size is unknown
    model.learn_predict(X, y)
    assert model.joint_segments
    river_nb = {"name": "RiverLearner", "params": {"model": "river.naive_bayes.GaussianNB"}}
    river = OnlineMixture(members=[MEMBERS[1], river_nb])
    river.learn_predict(X, y)
    assert not river.joint_segments
