"""Property checks run against every component discovered from ``learners.registry.COMPONENTS``.

After river's ``river/checks/``: one function per property, each taking a :class:`Case`
(how to build a fresh, seeded instance with small parameters). ``test_components.py``
runs every applicable check on every case. Checks never do I/O; the only ``stream``
import is the pure snapshot codec (``ocld.core.snapshot.encode`` / ``decode``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ocld.learners.base import Component, FeatureCountError, FeatureMap, Learner, LearnerState
from ocld.learners.registry import COMPONENTS, component_from_state, learner_from_state, needs_pickle, resolve

N_FEATURES = 6
NEW_LABEL = "d"  # the string-labelled class that appears mid-stream
LABELS: list[Any] = [0, 1, 2, NEW_LABEL]
CUTS = (1, 7, 64)
TOL = 1e-9

# Feature maps define no _unit_test_params (their defaults are 128 components): these
# small ones keep the Kalman/ridge heads behind them fast.
FALLBACK_PARAMS: dict[str, dict[str, Any]] = {
    "RandomFourierFeatures": {"n_components": 32, "scale": 0.5, "seed": 0, "linear": 0.1},  # as shipped
    "RandomReLU": {"n_components": 32, "scale": 1.0, "seed": 0},
}

# Documented caps on state that grows with the stream until the cap (check_state_size):
# the size check runs with the cap set small, so it is reached within 200 samples.
CAPPED_PARAMS: dict[str, dict[str, Any]] = {
    "KalmanHead": {"history_size": 16},  # forgetting history: one (n, g) point per block
}


# ---------------------------------------------------------------------------------- stream
def make_stream(
    n: int, seed: int = 0, new_class_at: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """3 Gaussian classes (int labels 0, 1, 2) in 6 dims; from ``new_class_at`` on a 4th
    class labelled ``"d"`` joins (its first row is exactly at ``new_class_at``). Labels are
    an object array (mixed int / str). ``new_class_at=0`` gives all 4 classes from the start."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(12345).normal(0.0, 2.0, size=(4, N_FEATURES))
    before_new = np.arange(n) < (n if new_class_at is None else new_class_at)
    k = np.where(before_new, rng.integers(0, 3, n), rng.integers(0, 4, n))
    if new_class_at is not None and 0 <= new_class_at < n:
        k[new_class_at] = 3
    X = (centers[k] + rng.normal(0.0, 1.0, size=(n, N_FEATURES))) * scale
    y = np.empty(n, dtype=object)
    y[:] = [LABELS[i] for i in k]
    return X, y


# ---------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "learner", "feature_map" or "buffer"
    name: str  # registry name of the top-level object
    build: Callable[[dict[str, dict[str, Any]]], Component] = field(compare=False)

    def make(self, **overrides: dict[str, Any]) -> Component:
        """A fresh instance; ``overrides`` maps a registry name to extra constructor args."""
        return self.build(overrides)


def params_for(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    params = dict(resolve(name)._unit_test_params() or FALLBACK_PARAMS.get(name, {}))
    params.update((overrides or {}).get(name, {}))
    return params


def _simple(name: str) -> Callable[[dict[str, dict[str, Any]]], Component]:
    return lambda ov: resolve(name)(**params_for(name, ov))


def _pipeline(steps: list[str], head: str) -> Callable[[dict[str, dict[str, Any]]], Component]:
    def build(ov: dict[str, dict[str, Any]]) -> Component:
        from ocld.learners.pipeline import Pipeline

        return Pipeline([resolve(s)(**params_for(s, ov)) for s in steps], resolve(head)(**params_for(head, ov)))

    return build


PIPELINES = {
    "Pipeline[Standardizer,RandomFourierFeatures]+KalmanHead": (
        ["Standardizer", "RandomFourierFeatures"],
        "KalmanHead",
    ),
    "Pipeline[RandomReLU]+AnalyticRidge": (["RandomReLU"], "AnalyticRidge"),
}


def discover() -> list[Case]:
    """Every registry entry as a case; the Pipeline entry as the composed pipelines above."""
    cases: list[Case] = []
    for name in COMPONENTS:
        cls = resolve(name)
        if name == "Pipeline":
            for cid, (steps, head) in PIPELINES.items():
                cases.append(Case(cid, "learner", name, _pipeline(steps, head)))
        elif issubclass(cls, Learner):
            cases.append(Case(name, "learner", name, _simple(name)))
        elif issubclass(cls, FeatureMap):
            cases.append(Case(name, "feature_map", name, _simple(name)))
        else:
            cases.append(Case(name, "buffer", name, _simple(name)))
    return cases


# ---------------------------------------------------------------------------------- helpers
def is_batch_invariant(obj: Component) -> bool:
    """Declared cut invariance; a Pipeline is invariant when its head is (FeatureMap's
    ``learn_transform`` contract makes every feature map cut-invariant)."""
    head = getattr(obj, "head", None)
    if isinstance(head, Learner):
        return bool(type(head).batch_invariant)
    return bool(type(obj).batch_invariant)


def restore(state: LearnerState) -> Any:
    """Rebuild through the registry, allowing pickle only for kinds that need it."""
    if issubclass(resolve(state.kind), Learner):
        return learner_from_state(state, allow_pickle=needs_pickle(state))
    return component_from_state(state)


def through_snapshot(state: LearnerState) -> LearnerState:
    """Encode the state in the real snapshot format and decode it again (small chunks)."""
    from ocld.core.snapshot import Snapshot, decode, encode

    manifest, chunks = encode(Snapshot({"learner": state}, {"t": {0: 1}}, {}), chunk_bytes=4096)
    return decode(manifest, list(chunks)).parts["learner"]


def opaque_arrays(state: LearnerState) -> set[str]:
    """Pickled-object blobs of ``uses_pickle`` kinds: byte-compared nowhere (pickle bytes of two
    equal river models can differ), judged by behaviour (predictions) instead."""
    if not resolve(state.kind).uses_pickle:
        return set()
    return {k for k, a in state.arrays.items() if np.asarray(a).dtype == np.uint8}


def pickled_bytes(state: LearnerState) -> int:
    own = sum(np.asarray(state.arrays[k]).nbytes for k in opaque_arrays(state))
    return own + sum(pickled_bytes(c) for c in state.children.values())


def state_size(state: LearnerState) -> int:
    """Bytes of every array plus the length of the JSON params/meta (numbers count as one char).

    Pickled blobs are left out (see ``pickled_bytes``)."""

    def squash(v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, (int, float)):
            return 0
        if isinstance(v, dict):
            return {k: squash(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [squash(x) for x in v]
        return v

    opaque = opaque_arrays(state)
    total = sum(np.asarray(a).nbytes for k, a in state.arrays.items() if k not in opaque)
    total += len(json.dumps(squash({"params": state.params, "meta": state.meta}), sort_keys=True))
    return total + sum(state_size(c) for c in state.children.values())


def assert_states_close(a: LearnerState, b: LearnerState, tol: float = 0.0, path: str = "state") -> None:
    """Same kind, params, meta, array names/shapes/dtypes; float arrays within ``tol`` (relative to scale)."""
    assert a.kind == b.kind, f"{path}: kind {a.kind} != {b.kind}"
    assert json.dumps(a.params, sort_keys=True, default=str) == json.dumps(b.params, sort_keys=True, default=str), path
    _assert_json_close(a.meta, b.meta, tol, f"{path}.meta")
    assert sorted(a.arrays) == sorted(b.arrays), f"{path}: arrays {sorted(a.arrays)} != {sorted(b.arrays)}"
    opaque = opaque_arrays(a)
    for k in a.arrays:
        x, y = np.asarray(a.arrays[k]), np.asarray(b.arrays[k])
        if k in opaque:
            same = x.dtype == y.dtype and x.ndim == y.ndim == 1
            assert same, f"{path}.{k}: {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}"
            continue
        assert x.shape == y.shape and x.dtype == y.dtype, f"{path}.{k}: {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}"
        if tol and x.dtype.kind == "f":
            scale = max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
            err = float(np.max(np.abs(x - y))) if x.size else 0.0
            assert err <= tol * scale, f"{path}.{k}: max abs diff {err:.3g} > {tol:g} * {scale:.3g}"
        else:
            assert np.array_equal(x, y), f"{path}.{k} differs"
    assert sorted(a.children) == sorted(b.children), path
    for k in a.children:
        assert_states_close(a.children[k], b.children[k], tol, f"{path}/{k}")


def _assert_json_close(a: Any, b: Any, tol: float, path: str) -> None:
    if isinstance(a, float) and isinstance(b, (int, float)) and tol:
        assert abs(a - b) <= tol * max(1.0, abs(a)), f"{path}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_json_close(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_json_close(x, y, tol, f"{path}[{i}]")
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


def assert_valid_proba(P: np.ndarray, n: int, n_classes: int, what: str) -> None:
    assert P.shape == (n, n_classes), f"{what}: shape {P.shape}, expected {(n, n_classes)}"
    assert P.dtype == np.float64, f"{what}: dtype {P.dtype}"
    assert np.all(np.isfinite(P)), f"{what}: non-finite probabilities"
    assert np.all(P >= 0.0) and np.all(P <= 1.0), f"{what}: probabilities outside [0, 1]: {P.min()}, {P.max()}"
    if n_classes:
        np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9, err_msg=f"{what}: rows do not sum to 1")


def learn_in_cuts(obj: Learner, X: np.ndarray, y: np.ndarray, cut: int, prequential: bool) -> np.ndarray | None:
    """Learn (or learn_predict) the stream in batches of ``cut``; returns stacked probabilities
    padded to the final width when ``prequential``."""
    outs = []
    for a in range(0, len(X), cut):
        if prequential:
            outs.append(obj.learn_predict(X[a : a + cut], y[a : a + cut]))
        else:
            obj.learn(X[a : a + cut], y[a : a + cut])
    if not prequential:
        return None
    C = len(obj.classes_)
    return np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in outs])


def feed(buffer: Component, X: np.ndarray, y: np.ndarray) -> None:
    """Buffers take batches through ``add`` (reservoirs) or ``update`` (statistics)."""
    method = getattr(buffer, "add", None) or buffer.update
    method(X, y)


def buffer_sample(buffer: Component, k: int) -> Any:
    return buffer.sample(k) if hasattr(buffer, "sample") else None


def _wrong_width_raises(call: Callable[[np.ndarray], Any], expected: int, got: int, what: str) -> None:
    with pytest.raises(FeatureCountError) as info:
        call(np.zeros((3, got)))
    msg = str(info.value)
    assert str(expected) in msg and str(got) in msg, f"{what}: unclear message {msg!r}"


# ================================================================================ learners
def check_predict_before_learning(case: Case) -> None:
    model = case.make()
    X, _ = make_stream(5)
    P = model.predict_proba(X)
    assert P.shape[0] == 5
    if P.shape[1] == 0:
        labels = model.predict(X)
        assert labels.shape == (5,) and all(v is None for v in labels), labels
    else:
        assert_valid_proba(P, 5, P.shape[1], "predict_proba before learning")
    assert list(model.classes_) == []
    assert model.predict_proba(np.zeros((0, N_FEATURES))).shape[0] == 0


def check_inputs_not_mutated(case: Case) -> None:
    X, y = make_stream(80, new_class_at=40)
    y_int = np.array([v if isinstance(v, int) else 3 for v in y], dtype=np.int64)
    model = case.make()
    for method, labels in (("learn", y), ("learn_predict", y), ("learn", y_int), ("learn_predict", y_int)):
        Xc, yc = X.copy(), labels.copy()
        getattr(model, method)(Xc, yc)
        assert np.array_equal(Xc, X) and Xc.dtype == X.dtype, f"{method} mutated X"
        assert np.array_equal(yc, labels) and yc.dtype == labels.dtype, f"{method} mutated y"
        Xc = X.copy()
        model.predict_proba(Xc)
        model.predict(Xc)
        assert np.array_equal(Xc, X), "predict mutated X"


def check_state_round_trip(case: Case) -> None:
    X, y = make_stream(150, new_class_at=60)
    Xq, _ = make_stream(20, seed=7)
    model = case.make()
    # a fresh (never-learned) model round-trips too
    fresh = restore(through_snapshot(model.to_state()))
    assert fresh.predict_proba(Xq).shape == (20, 0)
    model.learn(X[:100], y[:100])
    model.learn_predict(X[100:], y[100:])
    P = model.predict_proba(Xq)
    state = model.to_state()
    kept = copy.deepcopy(state)
    if needs_pickle(state):
        from ocld.learners.registry import PickleRefused

        with pytest.raises(PickleRefused):
            learner_from_state(state)
    twin = restore(state)
    assert twin.classes_ == model.classes_
    np.testing.assert_array_equal(twin.predict_proba(Xq), P)
    np.testing.assert_array_equal(twin.predict(Xq), model.predict(Xq))
    twin2 = restore(through_snapshot(state))
    assert twin2.classes_ == model.classes_
    np.testing.assert_array_equal(twin2.predict_proba(Xq), P)
    # the state is a copy, not a view: learning more (on model and twins) leaves it alone
    for m in (model, twin, twin2):
        m.learn(X[:30], y[:30])
    assert_states_close(state, kept)


def check_snapshot_keeps_state_exact(case: Case) -> None:
    """ocld.core.snapshot encode/decode gives back every array with its shape and dtype, and the meta."""
    X, y = make_stream(100, new_class_at=60)
    model = case.make()
    model.learn(X, y)
    state = model.to_state()
    assert_states_close(through_snapshot(state), state)


def check_restored_continues_identically(case: Case) -> None:
    X, y = make_stream(200, new_class_at=120, seed=3)
    Xq, _ = make_stream(20, seed=7)
    model = case.make()
    model.learn(X[:90], y[:90])
    twin = restore(through_snapshot(model.to_state()))
    for a, b in ((90, 97), (97, 150), (150, 151), (151, 200)):
        p1 = model.learn_predict(X[a:b], y[a:b])
        p2 = twin.learn_predict(X[a:b], y[a:b])
        np.testing.assert_allclose(p2, p1, rtol=0, atol=1e-12)
        np.testing.assert_allclose(twin.predict_proba(Xq), model.predict_proba(Xq), rtol=0, atol=1e-12)
        model.learn(X[a:b], y[a:b])
        twin.learn(X[a:b], y[a:b])
    assert twin.classes_ == model.classes_
    np.testing.assert_allclose(twin.predict_proba(Xq), model.predict_proba(Xq), rtol=0, atol=1e-12)
    # and the whole state agrees (counters, statistics, buffers), not only what predictions show
    assert_states_close(twin.to_state(), model.to_state(), 1e-12, "restored vs original")


def check_adapt_round_trip(case: Case) -> None:
    """adapt() works before and after learning, and what it changed is part of the state."""
    from ocld.learners.base import DriftEvent

    X, y = make_stream(160, new_class_at=100, seed=8)
    Xq, _ = make_stream(20, seed=7)
    model = case.make()
    model.adapt(DriftEvent(index=0, detector="test"))
    model.learn(X[:80], y[:80])
    model.adapt(DriftEvent(index=79, detector="test", statistic=0.5))
    twin = restore(through_snapshot(model.to_state()))
    for a, b in ((80, 95), (95, 160)):
        expected = model.learn_predict(X[a:b], y[a:b])
        np.testing.assert_allclose(twin.learn_predict(X[a:b], y[a:b]), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(twin.predict_proba(Xq), model.predict_proba(Xq), rtol=0, atol=1e-12)
    assert_valid_proba(model.predict_proba(Xq), 20, 4, "after adapt")


def check_seeded_reproducibility(case: Case) -> None:
    X, y = make_stream(160, new_class_at=80, seed=5)
    Xq, _ = make_stream(20, seed=7)
    a, b = case.make(), case.make()
    for m in (a, b):
        m.learn(X[:50], y[:50])
    np.testing.assert_array_equal(a.learn_predict(X[50:], y[50:]), b.learn_predict(X[50:], y[50:]))
    np.testing.assert_array_equal(a.predict_proba(Xq), b.predict_proba(Xq))
    assert_states_close(a.to_state(), b.to_state())


def check_state_size_bounded(case: Case) -> None:
    X, y = make_stream(2000, new_class_at=0, seed=11)
    model = case.make(**CAPPED_PARAMS)
    model.learn(X[:200], y[:200])
    small = state_size(model.to_state())
    for a in range(200, 2000, 450):
        model.learn(X[a : a + 450], y[a : a + 450])
    state = model.to_state()
    large = state_size(state)
    assert large == small, f"state grew from {small} to {large} bytes between 200 and 2,000 samples"
    # A pickled river model is the river model's business; it must stay under its own
    # documented cap where it has one (Hoeffding trees: ``max_size`` MiB).
    inner = getattr(model, "_model", None)
    cap_mib = getattr(getattr(inner, "_last_step", inner), "max_size", None) if inner is not None else None
    if pickled_bytes(state) and cap_mib is not None:
        assert pickled_bytes(state) <= float(cap_mib) * 2**20


def check_new_class_mid_stream(case: Case) -> None:
    X, y = make_stream(120, new_class_at=100, seed=2)
    Xq, _ = make_stream(15, seed=7)
    model = case.make()
    model.learn(X[:90], y[:90])
    assert sorted(model.classes_) == [0, 1, 2]
    assert all(type(c) is int for c in model.classes_), model.classes_
    P3 = model.predict_proba(Xq)
    assert_valid_proba(P3, 15, 3, "before the new class")
    Pq = model.learn_predict(X[90:], y[90:])  # "d" first appears at row 10 of this batch
    assert model.classes_[-1] == NEW_LABEL and len(model.classes_) == 4
    assert_valid_proba(Pq, 30, 4, "learn_predict across the new class")
    assert np.all(Pq[:11, 3] == 0.0), "the new class had probability > 0 before it was seen"
    assert model.predict_proba(np.zeros((0, N_FEATURES))).shape == (0, 4)
    P4 = model.predict_proba(Xq)
    assert_valid_proba(P4, 15, 4, "after the new class")
    labels = model.predict(Xq)
    assert all(lab in model.classes_ for lab in labels), labels
    # numpy int labels are normalized to python ints (JSON-able, equal to the originals)
    model.learn(X[:5], np.array([0, 1, 2, 1, 0], dtype=np.int64))
    assert len(model.classes_) == 4 and json.dumps(model.to_state().meta, default=None)


def check_wrong_feature_count(case: Case) -> None:
    X, y = make_stream(40)
    model = case.make()
    model.learn(X, y)
    before = model.to_state()
    for got in (N_FEATURES - 1, N_FEATURES + 2):
        _wrong_width_raises(model.predict_proba, N_FEATURES, got, "predict_proba")
        _wrong_width_raises(model.predict, N_FEATURES, got, "predict")
        _wrong_width_raises(lambda Z: model.learn(Z, y[:3]), N_FEATURES, got, "learn")
        _wrong_width_raises(lambda Z: model.learn_predict(Z, y[:3]), N_FEATURES, got, "learn_predict")
    # a refused call leaves the model unchanged
    assert_states_close(model.to_state(), before)
    twin = restore(through_snapshot(before))
    _wrong_width_raises(twin.predict_proba, N_FEATURES, N_FEATURES - 1, "restored predict_proba")
    _wrong_width_raises(lambda Z: twin.learn(Z, y[:3]), N_FEATURES, N_FEATURES - 1, "restored learn")


def check_batch_cut_invariance(case: Case) -> None:
    model = case.make()
    if not is_batch_invariant(model) and not model.exact_prequential:
        pytest.skip(f"{case.id} declares neither batch_invariant nor exact_prequential")
    X, y = make_stream(192, new_class_at=100, seed=4)
    Xq, _ = make_stream(20, seed=7)
    whole = case.make()
    P_whole = learn_in_cuts(whole, X, y, len(X), prequential=True)
    ref_state, ref_pred = whole.to_state(), whole.predict_proba(Xq)
    # learn_predict at every cut (state, predictions and prequential outputs); plain learn at one
    for cut, prequential in [(c, True) for c in CUTS] + [(7, False)]:
        m = case.make()
        P = learn_in_cuts(m, X, y, cut, prequential)
        if is_batch_invariant(m):
            assert_states_close(m.to_state(), ref_state, TOL, f"cut {cut}")
            np.testing.assert_allclose(m.predict_proba(Xq), ref_pred, rtol=0, atol=TOL, err_msg=f"cut {cut}")
        if prequential and m.exact_prequential:
            np.testing.assert_allclose(P, P_whole, rtol=0, atol=TOL, err_msg=f"learn_predict, cut {cut}")


def check_probabilities_valid_extreme(case: Case) -> None:
    X, y = make_stream(120, new_class_at=60, seed=6)
    model = case.make()
    model.learn(X[:30], y[:30])
    assert_valid_proba(model.learn_predict(X[30:60], y[30:60]), 30, 3, "learn_predict")
    rng = np.random.default_rng(9)
    extreme = np.vstack([X[60:80] * 1e5, rng.uniform(-1e6, 1e6, (10, N_FEATURES)), np.full((2, N_FEATURES), 1e6),
                         np.full((2, N_FEATURES), -1e6), np.zeros((2, N_FEATURES))])
    assert_valid_proba(model.predict_proba(extreme), len(extreme), 3, "predict_proba on |x| <= 1e6")
    y_ext = y[60:96]
    P = model.learn_predict(extreme, y_ext)
    assert_valid_proba(P, len(extreme), len(model.classes_), "learn_predict on |x| <= 1e6")
    model.learn(X[96:], y[96:])
    for Z in (X[:20], extreme):
        assert_valid_proba(model.predict_proba(Z), len(Z), len(model.classes_), "predict_proba after extreme learning")
    assert all(lab in model.classes_ for lab in model.predict(X[:20]))


LEARNER_CHECKS = [
    check_predict_before_learning,
    check_inputs_not_mutated,
    check_state_round_trip,
    check_snapshot_keeps_state_exact,
    check_restored_continues_identically,
    check_adapt_round_trip,
    check_seeded_reproducibility,
    check_state_size_bounded,
    check_new_class_mid_stream,
    check_wrong_feature_count,
    check_batch_cut_invariance,
    check_probabilities_valid_extreme,
]


# ============================================================================ feature maps
def check_fm_transform_before_learning(case: Case) -> None:
    fm = case.make()
    X, _ = make_stream(10)
    Z = fm.transform(X)
    assert Z.shape[0] == 10 and Z.shape[1] == fm.n_features_out and np.all(np.isfinite(Z))
    assert fm.n_features_in == N_FEATURES


def check_fm_inputs_not_mutated(case: Case) -> None:
    fm = case.make()
    X, _ = make_stream(30)
    Xc = X.copy()
    fm.learn_transform(Xc)
    fm.transform(Xc)
    assert np.array_equal(Xc, X)


def check_fm_state_round_trip(case: Case) -> None:
    X, _ = make_stream(100, seed=1)
    Xq, _ = make_stream(20, seed=7)
    fm = case.make()
    restore(through_snapshot(fm.to_state())).transform(Xq)  # fresh state round-trips
    fm.learn_transform(X)
    Z = fm.transform(Xq)
    state = fm.to_state()
    assert_states_close(through_snapshot(state), state)
    for st in (state, through_snapshot(state)):
        twin = restore(st)
        np.testing.assert_array_equal(twin.transform(Xq), Z)
        # and it keeps learning exactly like the original
        np.testing.assert_array_equal(twin.learn_transform(X[:30]), copy.deepcopy(fm).learn_transform(X[:30]))


def check_fm_batch_cut_invariance(case: Case) -> None:
    X, _ = make_stream(200, seed=2, scale=3.0)
    Xq, _ = make_stream(20, seed=7)
    whole = case.make()
    Z_whole = whole.learn_transform(X)
    for cut in CUTS:
        fm = case.make()
        Z = np.vstack([fm.learn_transform(X[a : a + cut]) for a in range(0, len(X), cut)])
        np.testing.assert_allclose(Z, Z_whole, rtol=0, atol=TOL, err_msg=f"cut {cut}")
        assert_states_close(fm.to_state(), whole.to_state(), TOL, f"cut {cut}")
        np.testing.assert_allclose(fm.transform(Xq), whole.transform(Xq), rtol=0, atol=TOL)


def check_fm_seeded_reproducibility(case: Case) -> None:
    X, _ = make_stream(50, seed=3)
    a, b = case.make(), case.make()
    np.testing.assert_array_equal(a.learn_transform(X), b.learn_transform(X))
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert_states_close(a.to_state(), b.to_state())


def check_fm_wrong_width(case: Case) -> None:
    fm = case.make()
    X, _ = make_stream(10)
    fm.learn_transform(X)
    for got in (N_FEATURES - 1, N_FEATURES + 2):
        _wrong_width_raises(fm.transform, N_FEATURES, got, "transform")
        _wrong_width_raises(fm.learn_transform, N_FEATURES, got, "learn_transform")
    _wrong_width_raises(restore(through_snapshot(fm.to_state())).transform, N_FEATURES, 3, "restored transform")


FEATURE_MAP_CHECKS = [
    check_fm_transform_before_learning,
    check_fm_inputs_not_mutated,
    check_fm_state_round_trip,
    check_fm_batch_cut_invariance,
    check_fm_seeded_reproducibility,
    check_fm_wrong_width,
]


# ================================================================================= buffers
def check_buffer_state_round_trip(case: Case) -> None:
    X, y = make_stream(300, new_class_at=150, seed=1)
    buf = case.make()
    restore(through_snapshot(buf.to_state()))  # fresh state round-trips
    feed(buf, X[:200], y[:200])
    state = buf.to_state()
    assert_states_close(through_snapshot(state), state)
    for st in (state, through_snapshot(state)):
        twin = restore(st)
        assert_states_close(twin.to_state(), state)
        ref = copy.deepcopy(buf)  # the original, continuing
        for m in (twin, ref):
            feed(m, X[200:], y[200:])
        assert_states_close(twin.to_state(), ref.to_state())
        s1, s2 = buffer_sample(twin, 5), buffer_sample(ref, 5)
        if s1 is not None:
            np.testing.assert_array_equal(s1[0], s2[0])
            np.testing.assert_array_equal(s1[1], s2[1])


def check_buffer_capacity_bound(case: Case) -> None:
    X, y = make_stream(2000, new_class_at=0, seed=2)
    buf = case.make()
    feed(buf, X[:200], y[:200])
    small = state_size(buf.to_state())
    for a in range(200, 2000, 300):
        feed(buf, X[a : a + 300], y[a : a + 300])
        cap = getattr(buf, "capacity", None)
        if cap is not None:
            assert len(buf) <= cap
            if hasattr(buf, "sample"):
                Xs, ys = buf.sample(10 * int(cap))
                assert len(Xs) == len(ys) <= cap
    assert state_size(buf.to_state()) == small, "buffer state grew beyond its capacity"


def check_buffer_seeded_reproducibility(case: Case) -> None:
    X, y = make_stream(300, new_class_at=100, seed=3)
    a, b = case.make(), case.make()
    for m in (a, b):
        feed(m, X, y)
    assert_states_close(a.to_state(), b.to_state())
    s1, s2 = buffer_sample(a, 6), buffer_sample(b, 6)
    if s1 is not None:
        np.testing.assert_array_equal(s1[0], s2[0])
        np.testing.assert_array_equal(s1[1], s2[1])


def check_buffer_batch_cut_invariance(case: Case) -> None:
    buf = case.make()
    if not type(buf).batch_invariant:
        pytest.skip(f"{case.id} does not declare batch_invariant")
    X, y = make_stream(300, new_class_at=150, seed=4)
    feed(buf, X, y)
    for cut in CUTS:
        m = case.make()
        for a in range(0, len(X), cut):
            feed(m, X[a : a + cut], y[a : a + cut])
        assert_states_close(m.to_state(), buf.to_state(), TOL, f"cut {cut}")


def check_buffer_inputs_not_mutated(case: Case) -> None:
    X, y = make_stream(60, new_class_at=30)
    buf = case.make()
    Xc, yc = X.copy(), y.copy()
    feed(buf, Xc, yc)
    assert np.array_equal(Xc, X) and np.array_equal(yc, y)


BUFFER_CHECKS = [
    check_buffer_state_round_trip,
    check_buffer_capacity_bound,
    check_buffer_seeded_reproducibility,
    check_buffer_batch_cut_invariance,
    check_buffer_inputs_not_mutated,
]

CHECKS = {"learner": LEARNER_CHECKS, "feature_map": FEATURE_MAP_CHECKS, "buffer": BUFFER_CHECKS}
