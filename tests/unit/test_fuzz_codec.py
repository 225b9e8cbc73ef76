"""Hostile input: a fuzz test (hypothesis) and a corpus of 10,000 bad records mixed into a
valid stream, through the real decoder and learning core (the same code the daemon runs).

Promises: no exception ever escapes; every bad record is rejected with a one-line reason
(the daemon dead-letters exactly these, see tests/integration/test_security.py for the
end-to-end run through Kafka); every valid record is learned; the model stays finite.
Numeric poison: values that pass validation but are extreme (up to ``max_abs_value``, tiny
denormals, constant columns) never make a learner produce NaN or Inf.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocld.core.codec import Codec
from ocld.core.runtime import LearningCore
from ocld.stream.config import parse_config

D = 6
MAX_BYTES = 4096


def _cfg(learner: dict | None = None, **messages):
    return parse_config({
        "learner": learner or {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False},
                               "features": [{"name": "Standardizer"}]},
        "messages": {"n_features": D, "max_record_bytes": MAX_BYTES, "max_pending": 1000, **messages},
        "drift": {"enabled": True, "adapt": True},
    })


def valid_record(rng: np.random.Generator, i: int) -> bytes:
    x = rng.normal(size=D) * rng.choice([1e-3, 1.0, 1e3])
    return orjson.dumps({"x": x.tolist(), "y": int(x[0] + x[1] > 0) + (i % 7 == 0)})


# -- the corpus: every generator returns a record that must be rejected -----------------
def _json(obj) -> bytes:
    return orjson.dumps(obj)


CORPUS = [
    lambda r, i: b"{not json",
    lambda r, i: b'{"x": [1, 2, 3',
    lambda r, i: bytes(r.integers(0, 256, size=int(r.integers(1, 64)), dtype=np.uint8)).replace(b"{", b"(") or b"\xff",
    lambda r, i: b"\xff\xfe\xfa" + b'{"x": [1,2,3,4,5,6], "y": 1}',
    lambda r, i: b'{"x": [1,2,3,4,5,6], "y": "\xff\xfe"}',
    lambda r, i: b"",
    lambda r, i: b" ",
    lambda r, i: b"null",
    lambda r, i: b"[1, 2, 3, 4, 5, 6]",
    lambda r, i: b'"a string"',
    lambda r, i: b"12345",
    lambda r, i: _json({"x": "1,2,3,4,5,6", "y": 1}),
    lambda r, i: _json({"x": {"a": 1}, "y": 1}),
    lambda r, i: _json({"x": [[1, 2, 3], [4, 5, 6]], "y": 1}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, "six"], "y": 1}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, "6"], "y": 1}),  # numeric strings are strings, not numbers
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, None], "y": 0}),
    lambda r, i: _json({"x": [1.0] * int(r.choice([0, 1, 5, 7, 100])), "y": 1}),
    lambda r, i: b'{"x": [1, 2, 3, 4, 5, NaN], "y": 1}',
    lambda r, i: b'{"x": [1, 2, 3, 4, 5, Infinity], "y": 1}',
    lambda r, i: b'{"x": [1, 2, 3, 4, 5, 1e999], "y": 1}',
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, float(r.choice([1e308, -1e308, 1.0000001e9, -5e12]))], "y": 1}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": 1.5}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": [1]}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": {"label": 1}}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": True}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": "z" * 300}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": 1, "id": [1]}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": 1, "ts": "yesterday"}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": 1, "task": [2]}),
    lambda r, i: _json({"id": f"never-seen-{i}", "y": 1}),
    lambda r, i: _json({"y": 1}),
    lambda r, i: _json({"id": "x"}),
    lambda r, i: _json({}),
    lambda r, i: _json({"x": [1, 2, 3, 4, 5, 6], "y": 1, "pad": "p" * MAX_BYTES}),
]


def bad_stream(n_bad: int, n_good: int, seed: int = 0) -> tuple[list[bytes], set[int]]:
    rng = np.random.default_rng(seed)
    values: list[bytes] = []
    bad_at: set[int] = set()
    kinds = rng.integers(0, len(CORPUS), size=n_bad)
    order = rng.permutation(n_bad + n_good) < n_bad
    b = g = 0
    for is_bad in order:
        if is_bad:
            bad_at.add(len(values))
            values.append(CORPUS[kinds[b]](rng, b))
            b += 1
        else:
            values.append(valid_record(rng, g))
            g += 1
    return values, bad_at


def run_stream(values: list[bytes], cfg, batch: int = 500) -> tuple[LearningCore, dict[int, str]]:
    m = cfg.messages
    codec = Codec(m.format, m.features, m.n_features, m.max_record_bytes, m.max_abs_value)
    core = LearningCore.from_config(cfg)
    rejected: dict[int, str] = {}
    for start in range(0, len(values), batch):
        chunk = values[start:start + batch]
        dec = codec.decode(chunk)
        res = core.process(dec)
        for i, reason in dec.bad + res.bad:
            assert start + i not in rejected, "a record is rejected once"
            rejected[start + i] = reason
    return core, rejected


def assert_finite(core: LearningCore) -> None:
    def walk(state) -> None:
        for name, a in state.arrays.items():
            a = np.asarray(a)
            if a.dtype.kind in "fc":
                assert np.isfinite(a).all(), f"{state.kind}.{name} is not finite"
        for child in state.children.values():
            walk(child)

    walk(core.learner.to_state())
    probe = np.random.default_rng(9).normal(size=(50, D)) * 1e3
    assert np.isfinite(core.learner.predict_proba(probe)).all()
    assert math.isfinite(core.metrics.summary()["log_loss"])


def test_every_corpus_entry_is_rejected_with_a_reason():
    rng = np.random.default_rng(1)
    values = [valid_record(rng, i) for i in range(20)] + [make(rng, i) for i, make in enumerate(CORPUS)]
    _, rejected = run_stream(values, _cfg())
    assert sorted(rejected) == list(range(20, 20 + len(CORPUS)))
    assert all(reason and "\n" not in reason and len(reason) < 300 for reason in rejected.values())


@pytest.mark.parametrize("learner", [
    {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False}, "features": [{"name": "Standardizer"}]},
    {"name": "AnalyticRidge", "params": {"expansion_size": 32}, "features": []},
    {"name": "KalmanLogistic", "params": {}, "features": [{"name": "Standardizer"}]},
], ids=["KalmanHead", "AnalyticRidge", "KalmanLogistic"])
def test_ten_thousand_bad_records_in_a_valid_stream(learner):
    values, bad_at = bad_stream(10_000, 5_000, seed=2)
    core, rejected = run_stream(values, _cfg(learner))
    assert set(rejected) == bad_at, "exactly the bad records are rejected"
    assert all(rejected.values())
    assert core.labelled_seen == 5_000, "every valid record is learned"
    assert_finite(core)


# -- hypothesis: arbitrary bytes and arbitrary JSON never crash the decoder --------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)
record_like = st.fixed_dictionaries({}, optional={
    "x": st.one_of(st.lists(st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.none(),
                                      st.text(max_size=3), st.booleans()), max_size=9), json_values),
    "y": st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=300),
                   json_values),
    "id": st.one_of(st.text(max_size=600), st.integers(), json_values),
    "ts": st.one_of(st.floats(), st.integers(), json_values),
    "task": json_values,
})


def _encode(obj) -> bytes:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, NaN: hand-written JSON
        import json

        return json.dumps(obj).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), json_values.map(_encode), record_like.map(_encode)),
                min_size=1, max_size=30))
def test_fuzz_decode_and_learn_never_crash(raw):
    rng = np.random.default_rng(len(raw))
    values = [valid_record(rng, i) for i in range(10)] + list(raw)
    cfg = _cfg(max_classes=50)
    core, rejected = run_stream(values, cfg, batch=17)
    # Each record is either rejected with a reason or accepted; the valid ones are learned.
    assert all(isinstance(r, str) and r for r in rejected.values())
    assert not set(range(10)) & set(rejected)
    assert core.labelled_seen >= 10
    assert core.samples_seen + len(rejected) >= len(values)
    assert_finite(core)


# -- numeric poison ------------------------------------------------------------------
LEARNERS = {
    "KalmanHead": ("KalmanHead", {}, []),
    "KalmanHead+Standardizer+RFF": ("KalmanHead", {}, [{"name": "Standardizer"},
                                                       {"name": "RandomFourierFeatures",
                                                        "params": {"n_components": 16}}]),
    "AnalyticRidge": ("AnalyticRidge", {"expansion_size": 32}, []),
    "AnalyticRidge+imbalance": ("AnalyticRidge", {"expansion_size": 32, "compensate_imbalance": True},
                                [{"name": "Standardizer"}]),
    "KalmanLogistic": ("KalmanLogistic", {}, []),
    "KalmanLogistic+Standardizer": ("KalmanLogistic", {"q_lag": 50, "q_step": 10}, [{"name": "Standardizer"}]),
}


def _poison_streams(rng: np.random.Generator):
    big = 1e9  # the default messages.max_abs_value: the largest value validation lets through
    yield "max magnitude", rng.choice([-big, big], size=(300, D)), rng.integers(0, 3, 300)
    yield "mixed scales", rng.normal(size=(300, D)) * np.array([1e-300, big, 1, 1e-9, 1e5, 1]), rng.integers(0, 3, 300)
    yield "constant", np.full((300, D), big), rng.integers(0, 3, 300)
    yield "normal then huge", np.vstack([rng.normal(size=(200, D)), rng.normal(size=(100, D)) * big]), \
        rng.integers(0, 3, 300)
    yield "denormal", rng.normal(size=(300, D)) * 1e-310, rng.integers(0, 3, 300)
    yield "alternating extremes", np.tile([[big], [-big]], (150, D)), np.tile([0, 1], 150)


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_extreme_values_that_pass_validation_never_produce_nan(learner):
    from ocld.learners.registry import build_learner

    name, params, features = LEARNERS[learner]
    codec = Codec(n_features=D)
    for tag, X, y in _poison_streams(np.random.default_rng(4)):
        X = np.clip(X, -1e9, 1e9)
        records = [orjson.dumps({"x": X[i].tolist(), "y": int(y[i])}) for i in range(len(y))]
        dec = codec.decode(records)
        assert not dec.bad, f"{tag}: these values pass validation"
        model = build_learner(name, params, features)
        labels = np.empty(len(y), dtype=object)
        labels[:] = [int(v) for v in y]
        for a in range(0, len(y), 37):
            proba = model.learn_predict(dec.X[a:a + 37], labels[a:a + 37])
            assert np.isfinite(proba).all(), f"{learner} on {tag}: non-finite prediction at {a}"
        assert np.isfinite(model.predict_proba(dec.X[:50])).all(), f"{learner} on {tag}"


def test_bounds_reject_values_beyond_max_abs_value():
    codec = Codec(n_features=2, max_abs_value=1e6)
    dec = codec.decode([b'{"x": [1, 1e6], "y": 0}', b'{"x": [1, 1.5e6], "y": 0}', b'{"x": [1, -1e300], "y": 0}'])
    assert [i for i, _ in dec.bad] == [1, 2]
    assert all("exceeds max_abs_value" in r for _, r in dec.bad)
