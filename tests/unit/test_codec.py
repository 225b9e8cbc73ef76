"""ocld.core.codec: every rejection reason, accepted forms, and that a record is judged alone (batch invariance)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest

from ocld.core.codec import MAX_ID_CHARS, MAX_LABEL_CHARS, Codec

GOOD = orjson.dumps({"x": [1.0, 2.0, 3.0], "y": 1})


def _j(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _reason(value: bytes | None, codec: Codec | None = None) -> str:
    """Decode ``value`` between two good records; return the one reason it was rejected for."""
    codec = codec or Codec(n_features=3)
    dec = codec.decode([GOOD, value, GOOD])
    assert [i for i, _ in dec.bad] == [1], dec.bad
    assert dec.rows.tolist() == [0, 2] and dec.X.shape == (2, 3)
    return dec.bad[0][1]


# -- rejection reasons ------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (None, "empty record"),
    (b"", "empty record"),
    (b"{not json", "cannot decode json"),
    (b"\xff\xfe", "cannot decode json"),
    (_j([1, 2, 3]), "record must be an object, got list"),
    (_j("x"), "record must be an object, got str"),
    (_j({"x": [1, 2, 3], "y": 1.5}), "y must be an int, a string or null, got float"),
    (_j({"x": [1, 2, 3], "y": True}), "y must be an int, a string or null, got bool"),
    (_j({"x": [1, 2, 3], "y": [1]}), "y must be an int, a string or null, got list"),
    (_j({"x": [1, 2, 3], "y": "a" * (MAX_LABEL_CHARS + 1)}), f"y is longer than {MAX_LABEL_CHARS} characters"),
    (_j({"x": [1, 2, 3], "y": 1, "id": 1.5}), "id must be a string, got float"),
    (_j({"x": [1, 2, 3], "y": 1, "id": "i" * (MAX_ID_CHARS + 1)}), f"id is longer than {MAX_ID_CHARS} characters"),
    (_j({"x": [1, 2, 3], "y": 1, "ts": "now"}), "ts must be a number, got str"),
    (_j({"x": [1, 2, 3], "y": 1, "ts": True}), "ts must be a number, got bool"),
    (_j({"z": 1}), "record has neither x nor y"),
    (_j({"y": 1}), "a label without x needs an id"),
    (_j({"x": {"a": 1}, "y": 1}), "x is an object but the config names no messages.features"),
    (_j({"x": "1,2,3", "y": 1}), "x must be a list or an object, got str"),
    (_j({"x": [1, 2, 3], "y": 1, "task": 1.5}), "task must be an int or a string, got float"),
    (_j({"x": [1, "a", 3], "y": 1}), "x contains a value that is not a number"),
    (_j({"x": [[1, 2, 3]], "y": 1}), "x must be a flat, non-empty list of numbers"),
    (_j({"x": [], "y": 1}), "x must be a flat, non-empty list of numbers"),
    (_j({"x": [1, 2], "y": 1}), "expected 3 features (declared by messages.n_features), got 2"),
    (_j({"x": [1, None, 3], "y": 1}), "x[1] is NaN, Inf or null"),
    (_j({"x": [1, 2, 1e300], "y": 1}), "x[2]=1e+300 exceeds max_abs_value=1e+09"),
])
def test_every_rejection_reason(value: bytes | None, expected: str) -> None:
    assert _reason(value).startswith(expected)


def test_oversized_record() -> None:
    codec = Codec(n_features=3, max_record_bytes=64)
    big = _j({"x": [1, 2, 3], "y": 1, "pad": "p" * 100})
    assert _reason(big, codec) == f"record is {len(big)} bytes, over max_record_bytes=64"


def test_object_x_needs_every_feature() -> None:
    codec = Codec(features=["a", "b", "c"])
    assert _reason(_j({"x": {"a": 1, "b": 2}, "y": 1}), codec) == "x is missing feature 'c'"
    dec = codec.decode([_j({"x": {"c": 3, "a": 1, "b": 2}, "y": 0})])
    assert dec.X.tolist() == [[1.0, 2.0, 3.0]] and not dec.bad


def test_nan_ts_rejected_in_msgpack() -> None:
    codec = Codec("msgpack", n_features=3)
    good = msgpack.packb({"x": [1.0, 2.0, 3.0], "y": 1})
    dec = codec.decode([good, msgpack.packb({"x": [1.0, 2.0, 3.0], "y": 1, "ts": math.nan}), good])
    assert dec.bad == [(1, "ts must be a number, got float")]
    assert codec.decode([msgpack.packb([1])]).bad == [(0, "record must be an object, got list")]
    assert codec.decode([b"\xc1"]).bad[0][1].startswith("cannot decode msgpack")


def test_nan_and_inf_in_x_rejected_in_msgpack() -> None:
    codec = Codec("msgpack", n_features=3)
    dec = codec.decode([msgpack.packb({"x": [1.0, math.inf, 0.0], "y": 1}),
                        msgpack.packb({"x": [math.nan, 1.0, 0.0], "y": 1})])
    assert dec.bad == [(0, "x[1] is NaN, Inf or null"), (1, "x[0] is NaN, Inf or null")]
    assert dec.X.shape == (0, 3)


def test_empty_x_sets_no_width() -> None:
    codec = Codec()
    dec = codec.decode([_j({"x": [], "y": 1}), _j({"x": [], "y": 0})])
    assert dec.bad == [(0, "x is empty"), (1, "x is empty")] and codec.n_features is None


# -- accepted forms ---------------------------------------------------------------------
def test_normalizations_and_delayed_label() -> None:
    codec = Codec(n_features=3)
    dec = codec.decode([
        _j({"x": [1, True, 3], "y": 2.0, "id": 7, "ts": 1.5, "task": "t"}),
        _j({"id": "a", "y": "late", "ts": 2}),
        _j({"x": [1, 2, 3]}),
    ])
    assert not dec.bad
    assert dec.rows.tolist() == [0, 2] and dec.X.tolist() == [[1.0, 1.0, 3.0], [1.0, 2.0, 3.0]]
    assert dec.y == [2, None] and type(dec.y[0]) is int
    assert dec.ids == ["7", None] and dec.ts == [1.5, None] and dec.task == ["t", None]
    assert dec.labels_only == [(1, "a", "late", 2)]


def test_width_learned_from_first_batch() -> None:
    codec = Codec()
    assert codec.decode([_j({"x": [1, 2], "y": 0})]).X.shape == (1, 2) and codec.n_features == 2
    assert codec.decode([_j({"x": [1, 2, 3], "y": 0})]).bad == [
        (0, "expected 2 features (taken from the first records), got 3")]


def test_widths_and_caps() -> None:
    """``widths`` reads the width of every record with features (for inferring it); a record over
    ``max_features``, or of a width refused for its state size, is dead-lettered with the reason."""
    codec = Codec(max_features=4)
    values = [_j({"x": [1, 2, 3], "y": 0}), b"not json", _j({"id": "a", "y": 1}), _j({"x": list(range(9)), "y": 1})]
    assert codec.widths(values) == [3, 9]
    codec.n_features = 3
    assert codec.decode(values[3:]).bad == [(0, "x has 9 features, over messages.max_features=4")]
    codec.refused_widths[2] = "too big"
    assert codec.decode([_j({"x": [1, 2], "y": 0})]).bad == [(0, "too big")]


def test_empty_batch() -> None:
    dec = Codec(n_features=3).decode([])
    assert dec.X.shape == (0, 3) and dec.rows.size == 0 and not dec.bad


# -- batch invariance ---------------------------------------------------------------------
def _clean_batch(n: int, rng: np.random.Generator) -> list[bytes]:
    out = []
    for i in range(n):
        rec: dict[str, Any] = {"x": rng.normal(size=3).tolist(), "y": ["a", "b", 3, None][i % 4]}
        if i % 3 == 0:
            rec.update(id=f"r{i}", ts=float(i), task=i % 2)
        if i % 5 == 0:
            rec.update(ts=i, task="t", extra={"ignored": True})
        out.append(_j(rec))
    return out


def test_a_record_is_judged_alone() -> None:
    """Random batches of good and bad records decode exactly as their records one at a time."""
    rng = np.random.default_rng(3)
    pool = [None, b"", b"[]", b"{bad", _j({"x": [1, 2], "y": 1}), _j({"x": [1, 2, 3], "y": 2.5}),
            _j({"id": "p", "y": 1}), _j({"x": [1e12, 0, 0], "y": 1}), _j({"x": [1, None, 3], "y": 1}),
            _j({"x": [1, 2, 3], "y": 1, "id": "k", "ts": 3}), _j({"x": [1, 2, 3], "y": "l" * 300})]
    for _ in range(50):
        values = _clean_batch(int(rng.integers(1, 30)), rng)
        for _ in range(int(rng.integers(0, 4))):
            values[int(rng.integers(0, len(values)))] = pool[int(rng.integers(0, len(pool)))]
        whole = Codec(n_features=3).decode(values)
        one = Codec(n_features=3)
        parts = [one.decode([v]) for v in values]
        assert whole.bad == [(i, r) for i, p in enumerate(parts) for _, r in p.bad]
        assert whole.rows.tolist() == [i for i, p in enumerate(parts) if p.rows.size]
        assert whole.labels_only == [(i, *p.labels_only[0][1:]) for i, p in enumerate(parts) if p.labels_only]
        kept = [p for p in parts if p.rows.size]
        assert whole.X.shape == (len(kept), 3)
        if kept:
            assert np.array_equal(whole.X, np.vstack([p.X for p in kept]))
        assert whole.y == [p.y[0] for p in kept] and whole.ids == [p.ids[0] for p in kept]
        assert whole.ts == [p.ts[0] for p in kept] and whole.task == [p.task[0] for p in kept]


def test_numeric_strings_and_huge_integers_are_rejected_not_coerced():
    from ocld.core.codec import Codec

    codec = Codec(n_features=3)
    dec = codec.decode([b'{"x":[1,2,"6"],"y":1}', b'{"x":[1,2,3],"y":1}', b'{"x":[1,2,3],"y":1,"id":5}'])
    assert dec.rows.tolist() == [1, 2]
    assert dec.bad == [(0, "x contains a value that is not a number")]
    big = Codec(format="msgpack", n_features=2)
    import msgpack

    dec = big.decode([msgpack.packb({"x": [1, 2**64 - 1], "y": 0}), msgpack.packb({"x": [1.5, 2], "y": 0})])
    assert dec.rows.tolist() == [1]
    assert "exceeds max_abs_value" in dec.bad[0][1]
