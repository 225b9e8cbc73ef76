"""MomentumKD: state round-trip, class growth, seeding, input hygiene (small and fast)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ocld.learners.base import DriftEvent, FeatureCountError, LearnerState  # noqa: E402
from ocld.learners.mkd import MomentumKD  # noqa: E402
from ocld.learners.registry import build_learner, learner_from_state  # noqa: E402

D = 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():  # tiny networks: threads only add contention on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(**kw: object) -> MomentumKD:
    params = MomentumKD._unit_test_params()
    params.update(kw)
    return MomentumKD(**params)  # type: ignore[arg-type]


def blobs(n: int, classes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n)
    centres = np.random.default_rng(99).normal(0, 2, size=(10, D))
    return centres[y] + rng.normal(0, 1, size=(n, D)), y


def feed(learner: MomentumKD, X: np.ndarray, y: np.ndarray, batch: int = 7) -> None:
    for i in range(0, len(y), batch):
        learner.learn(X[i : i + batch], y[i : i + batch])


def json_roundtrip(state: LearnerState) -> LearnerState:
    """What a snapshot does: params/meta through JSON, arrays through raw bytes."""
    arrays = {k: np.frombuffer(v.tobytes(), dtype=v.dtype).reshape(v.shape).copy() for k, v in state.arrays.items()}
    children = {k: json_roundtrip(v) for k, v in state.children.items()}
    params, meta = json.loads(json.dumps(state.params)), json.loads(json.dumps(state.meta))
    return LearnerState(state.kind, params, arrays, meta, children)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"mkd": False},
        {"batchnorm": True, "optimizer": "sgd", "momentum": 0.9, "buffer_kind": "class_balanced"},
        {"buffer_size": 0},
    ],
)
def test_state_round_trip_continues_identically(kw: dict) -> None:
    X, y = blobs(120, [0, 1, 2], seed=0)
    a = small(**kw)
    feed(a, X[:60], y[:60])
    b = learner_from_state(json_roundtrip(a.to_state()))
    assert isinstance(b, MomentumKD)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    X2, y2 = blobs(80, [0, 1, 2, 3], seed=1)  # including a class new to both
    feed(a, X2, y2)
    feed(b, X2, y2)
    assert a.classes_ == b.classes_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    sa, sb = a.to_state(), b.to_state()
    assert sa.arrays.keys() == sb.arrays.keys() and sa.children.keys() == sb.children.keys()
    for k in sa.arrays:
        np.testing.assert_array_equal(sa.arrays[k], sb.arrays[k], err_msg=k)
    if "buffer" in sa.children:
        assert sa.children["buffer"].meta == sb.children["buffer"].meta
        np.testing.assert_array_equal(sa.children["buffer"].arrays["X"], sb.children["buffer"].arrays["X"])


def test_unbuilt_state_round_trip() -> None:
    a = small()
    b = MomentumKD.from_state(json_roundtrip(a.to_state()))
    assert b.predict_proba(np.zeros((3, D))).shape == (3, 0)
    X, y = blobs(30, [0, 1], seed=2)
    feed(a, X, y)
    feed(b, X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_new_class_mid_stream_grows_output_and_keeps_old_rows() -> None:
    a = small()
    X, y = blobs(60, [0, 1], seed=3)
    feed(a, X, y)
    assert a.classes_ == [0, 1] or a.classes_ == [1, 0]
    w_old = a._student["head"].weight.detach().clone()
    t_old = a._teacher["head"].weight.detach().clone()
    a._grow(3)  # what learn does on a new label, checked in isolation
    assert a._student["head"].out_features == 3 and a._teacher["head"].out_features == 3
    torch.testing.assert_close(a._student["head"].weight[:2], w_old)
    torch.testing.assert_close(a._teacher["head"].weight[:2], t_old)
    assert a._student["head"].weight[2].abs().max() < 0.1  # new rows start small
    # Adam moments were carried over (zero-padded), not dropped
    st = a._opt.state[a._student["head"].weight]
    assert st["exp_avg"].shape == (3, a._student["head"].in_features)
    assert torch.all(st["exp_avg"][2] == 0)

    b = small()
    feed(b, X, y)
    X3, y3 = blobs(40, [7], seed=4)
    b.learn(X3[:5], np.array(["seven"] * 5, dtype=object))
    assert b.classes_[-1] == "seven"
    p = b.predict_proba(X)
    assert p.shape == (len(X), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert set(b.predict(X)) <= set(b.classes_)


def test_seeded_runs_reproduce_and_seeds_differ() -> None:
    X, y = blobs(100, [0, 1, 2], seed=5)
    runs = []
    for seed in (1, 1, 2):
        m = small(seed=seed)
        feed(m, X, y)
        runs.append(m.predict_proba(X))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_global_torch_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    m = small(dropout=0.2)
    X, y = blobs(40, [0, 1], seed=6)
    feed(m, X, y)
    m.predict_proba(X)
    torch.testing.assert_close(torch.rand(3), expected)


def test_learn_does_not_mutate_input() -> None:
    X, y = blobs(40, [0, 1], seed=7)
    X[0, 0] = np.nan
    X[1, 1] = np.inf
    X_copy, y_copy = X.copy(), y.copy()
    m = small()
    m.learn(X, y)
    m.predict_proba(X)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)


def test_never_nan_on_wild_inputs() -> None:
    m = small(lr=0.5)
    rng = np.random.default_rng(8)
    for _ in range(20):
        X = rng.normal(0, 1e6, size=(6, D))
        X[rng.random(X.shape) < 0.1] = np.nan
        m.learn(X, rng.integers(0, 3, size=6))
    p = m.predict_proba(rng.normal(0, 1e8, size=(10, D)))
    assert np.all(np.isfinite(p))
    for t in m._student.state_dict().values():
        assert torch.all(torch.isfinite(t))


def test_wrong_feature_count() -> None:
    m = small()
    X, y = blobs(10, [0, 1], seed=9)
    m.learn(X, y)
    with pytest.raises(FeatureCountError):
        m.predict_proba(np.zeros((2, D + 1)))
    with pytest.raises(FeatureCountError):
        m.learn(np.zeros((2, D - 1)), np.array([0, 1]))


def test_predict_before_learn_and_single_rows() -> None:
    m = small(batchnorm=True, buffer_size=0)
    assert m.predict_proba(np.zeros((2, D))).shape == (2, 0)
    assert list(m.predict(np.zeros((2, D)))) == [None, None]
    X, y = blobs(5, [0, 1], seed=10)
    for i in range(5):  # batch of one with BatchNorm and no replay
        m.learn(X[i], y[i : i + 1])
    assert m.predict_proba(X).shape[0] == 5


def _same_nets(a: object, b: object) -> bool:
    return all(torch.equal(s, t) for (_, s), (_, t) in zip(a.state_dict().items(), b.state_dict().items()))


def test_adapt_refreshes_teacher_pauses_distillation_and_clears_replay() -> None:
    m = small(adapt_samples=21)
    X, y = blobs(120, [0, 1], seed=11)
    feed(m, X[:63], y[:63])
    assert len(m._buffer) == 50 and not _same_nets(m._student, m._teacher)
    m.adapt(DriftEvent(index=63, detector="ADWIN"))
    assert _same_nets(m._student, m._teacher)
    assert len(m._opt.state) == 0
    assert len(m._buffer) == 0  # old-concept samples dropped
    assert m.kd_paused and m.kd_paused_until == 63 + 21
    b = learner_from_state(json_roundtrip(m.to_state()))  # the pause survives a snapshot
    feed(m, X[63:77], y[63:77])  # inside the pause: the teacher copies the student after every step
    assert m.kd_paused and _same_nets(m._student, m._teacher)
    assert len(m._buffer) == 14  # refilled from the new samples only
    np.testing.assert_array_equal(m._buffer.X, X[63:77].astype(np.float32))
    feed(m, X[77:84], y[77:84])  # reaches 84: the pause is over
    assert not m.kd_paused
    feed(m, X[84:91], y[84:91])  # the EMA teacher lags the student again
    assert not _same_nets(m._student, m._teacher)
    feed(b, X[63:91], y[63:91])
    np.testing.assert_array_equal(m.predict_proba(X), b.predict_proba(X))
    assert np.all(np.isfinite(m.predict_proba(X)))


def test_adapt_guard_new_class_is_deprecated() -> None:
    """The new-class rule lives in the learning core now (tests/unit/test_new_class.py): the old
    parameter is accepted with a warning that says what to do, and ignored."""
    with pytest.warns(FutureWarning, match="remove adapt_guard_new_class"):
        m = small(adapt_samples=50, adapt_guard_new_class=True)
    X, y = blobs(100, [0, 1], seed=12)
    X3, y3 = blobs(30, [2], seed=13)
    feed(m, X[:70], y[:70])
    feed(m, X3[:14], y3[:14])  # class 2 first seen at labelled position 70
    m.adapt(DriftEvent(index=84, detector="ADWIN"))
    assert m.kd_paused and len(m._buffer) == 0  # adapts: the core decides whether to call adapt
    m = small()
    m.adapt(DriftEvent(index=0, detector="ADWIN"))  # before the first learn: no-op
    assert m._student is None and not m.kd_paused


def _preq_reference(m: MomentumKD, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Predict one row, then learn it: the definition of test-then-train."""
    out = []
    for i in range(len(y)):
        out.append(m.predict_proba(X[i : i + 1])[0])
        m.learn(X[i : i + 1], y[i : i + 1])
    return out


@pytest.mark.parametrize("cut", [1, 9, 200])
def test_learn_predict_is_sample_by_sample(cut: int) -> None:
    """Each row is predicted by the network that has learned every row before it (learn_every=1),
    whatever the batch cut: the same as predict-then-learn one row at a time."""
    X, y = blobs(90, [0, 1, 2], seed=20)
    y = y.astype(object)
    y[50] = "new"
    ref = _preq_reference(small(), X, y)
    m = small()
    rows = []
    for a in range(0, len(y), cut):
        P = m.learn_predict(X[a : a + cut], y[a : a + cut])
        rows.extend(list(P))
    C = len(m.classes_)
    for i, (got, want) in enumerate(zip(rows, ref)):
        np.testing.assert_allclose(np.pad(got, (0, C - len(got))), np.pad(want, (0, C - len(want))),
                                   rtol=0, atol=1e-9, err_msg=f"row {i}")
    assert rows[50][m.classes_.index("new")] == 0.0  # a class is unknown at its first row


def test_learn_every_groups_wait_in_the_state() -> None:
    """With learn_every=4 the network changes only after every 4th sample; the unfinished group is
    part of the state, so a restored copy finishes it exactly as the original does."""
    X, y = blobs(30, [0, 1], seed=21)
    m = small(learn_every=4)
    m.learn(X[:6], y[:6])
    assert m.n_pending == 2 and m.n_steps == 2  # one group of 4 learned (2 iterations)
    before = m.predict_proba(X[6:8])
    P = m.learn_predict(X[6:8], y[6:8])  # rows 6 and 7 share the network (group 4..7 unfinished)
    np.testing.assert_allclose(P, before, rtol=0, atol=1e-12)
    assert m.n_steps == 4
    twin = learner_from_state(json_roundtrip(m.to_state()))
    assert twin.n_pending == 0 and m.n_pending == 0
    m.learn(X[8:11], y[8:11])
    twin = learner_from_state(json_roundtrip(m.to_state()))
    m.learn(X[11:30], y[11:30])
    twin.learn(X[11:30], y[11:30])
    np.testing.assert_array_equal(m.predict_proba(X), twin.predict_proba(X))


def test_mkd_beats_er_on_a_small_class_incremental_stream() -> None:
    """Smoke version of benchmarks/digits_cl.py: 3 tasks of 2 blob classes, overlapping."""
    rng = np.random.default_rng(12)
    centres = rng.normal(0, 1.2, size=(6, D))
    accs = {}
    for mkd in (False, True):
        total = 0.0
        for seed in (0, 1):
            # one update per 10 samples, as benchmarks/digits_cl.py learns (batch 10)
            m = MomentumKD(hidden=(32,), buffer_size=40, iterations=2, learn_every=10, mkd=mkd, seed=seed)
            for task in range(3):
                yt = np.repeat([2 * task, 2 * task + 1], 60)
                yt = yt[np.random.default_rng(seed + task).permutation(len(yt))]
                Xt = centres[yt] + np.random.default_rng(100 + task).normal(0, 1, size=(len(yt), D))
                feed(m, Xt, yt, batch=10)
            yte = np.repeat(np.arange(6), 50)
            Xte = centres[yte] + np.random.default_rng(7).normal(0, 1, size=(len(yte), D))
            total += float(np.mean(m.predict(Xte).astype(int) == yte))
        accs[mkd] = total / 2
    assert accs[True] >= accs[False] - 0.02, accs


def test_registry_builds_in_a_pipeline() -> None:
    learner = build_learner("MomentumKD", {"hidden": [8], "buffer_size": 20}, [{"name": "Standardizer"}])
    X, y = blobs(30, [0, 1], seed=13)
    learner.learn(X, y)
    restored = learner_from_state(json_roundtrip(learner.to_state()))
    np.testing.assert_array_equal(learner.predict_proba(X), restored.predict_proba(X))


def test_registry_import_does_not_import_torch() -> None:
    code = "import sys, ocld.learners.registry, ocld.learners.mkd; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_factory_dotted_path() -> None:
    m = small(model_factory="ocld.learners.mkd.identity_body")  # softmax regression
    X, y = blobs(60, [0, 1, 2], seed=14)
    feed(m, X, y)
    assert m._student["head"].in_features == D
    assert m.predict_proba(X).shape == (60, 3)
    b = MomentumKD.from_state(json_roundtrip(m.to_state()))
    np.testing.assert_array_equal(m.predict_proba(X), b.predict_proba(X))
    with pytest.raises(ValueError, match="model_factory"):
        small(model_factory="no_such_module.make").learn(X, y)
    with pytest.raises(ValueError, match="body_factory"):  # not marked: refused, never called
        small(model_factory="os._exit").learn(X, y)
