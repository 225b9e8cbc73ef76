"""ClassIndex: label -> column mapping, its fast path for known labels against the per-label loop."""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.base import ClassIndex, normalize_label


def _slow(index: ClassIndex, labels: list) -> list[int]:
    return [index._index[normalize_label(v)] for v in labels]


def test_known_labels_map_the_same_whatever_their_python_or_numpy_type():
    idx = ClassIndex()
    first = idx.encode(np.array([1, "a", 0, 2.5], dtype=object))
    assert first.tolist() == [0, 1, 2, 3]
    assert idx.classes == [1, "a", 0, 2.5]
    mixed = [np.int64(1), 1.0, np.float64(0.0), np.str_("a"), "a", 2.5, np.float32(2.5), 0]
    got = idx.encode(np.array(mixed, dtype=object))  # every label known: the fast path
    assert got.dtype == np.int64
    assert got.tolist() == _slow(idx, mixed) == [0, 0, 2, 1, 1, 3, 3, 2]
    assert idx.classes == [1, "a", 0, 2.5]  # nothing added
    assert idx.encode(np.array([1, 0, 1])).tolist() == [0, 2, 0]  # a plain int array too


def test_a_new_label_in_a_batch_falls_back_and_grows_in_order_of_appearance():
    idx = ClassIndex([0, 1])
    got = idx.encode([1, np.int64(7), 0, 7.0, "x"])
    assert got.tolist() == [1, 2, 0, 2, 3]
    assert idx.classes == [0, 1, 7, "x"]
    assert all(type(c) in (int, str) for c in idx.classes)  # stored normalized
    with pytest.raises(KeyError, match="unknown label"):
        idx.encode(["y"], grow=False)
    assert idx.encode([], grow=False).tolist() == []
