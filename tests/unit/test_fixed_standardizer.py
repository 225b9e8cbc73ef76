"""FixedStandardizer: against an independent row-by-row reference, fixed for good after its
warm-up, batch-cut invariant through a snapshot, and clear errors for bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.features import FixedStandardizer
from ocld.learners.registry import component_from_state
from ocld.stream.config import ConfigError, parse_config


def reference(X: np.ndarray, fix_after: int, fix_sparse_after: int, clip: float) -> np.ndarray:
    """The docstring's rule, one row at a time, from the raw values seen so far (no running sums)."""
    n, d = X.shape
    out = np.zeros_like(X)
    fixed: dict[int, tuple[float, float]] = {}
    for i in range(n):
        for j in range(d):
            if j in fixed:
                off, sc = fixed[j]
            else:
                col = X[: i + 1, j]
                c = col[0]
                other = col[col != c]
                if other.size == 0:
                    continue  # still at its first value: 0
                sparse = col.size - other.size >= other.size
                if sparse:  # offset c, RMS of deviations from c
                    off, sc = c, float(np.sqrt(np.mean((other - c) ** 2)))
                else:  # dense: mean and standard deviation
                    off, sc = float(col.mean()), float(col.std())
                if other.size >= (fix_sparse_after if sparse else fix_after):
                    fixed[j] = (off, sc)
            if sc > 1e-12 + 1e-7 * abs(off):
                out[i, j] = np.clip((X[i, j] - off) / sc, -clip, clip)
    return out


def stream(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = rng.normal(50.0, 7.0, n)                       # varies from the start
    sparse = np.where(rng.random(n) < 0.2, rng.integers(1, 17, n), 0).astype(float)  # mostly blank
    sparse[0] = 0.0
    lit_first = sparse.copy()                               # mostly blank, but lit in its first row:
    lit_first[0] = 9.0                                      # "other than c" then counts the blanks (dense)
    late = np.r_[np.zeros(n // 2), rng.integers(0, 17, n - n // 2)].astype(float)    # comes online late
    constant = np.full(n, 3.5)
    levels = rng.integers(0, 3, n).astype(float)           # a few discrete levels
    salary = rng.uniform(2e4, 1.5e5, n)                     # raw scale
    return np.column_stack([dense, sparse, late, constant, levels, salary, lit_first])


@pytest.mark.parametrize("fix_after, fix_sparse_after", [(1, 1), (5, 3), (100, 20), (20, 50)])
def test_matches_the_row_by_row_reference(fix_after, fix_sparse_after):
    X = stream()
    fs = FixedStandardizer(fix_after=fix_after, fix_sparse_after=fix_sparse_after, clip=10.0)
    Z = fs.learn_transform(X)
    np.testing.assert_allclose(Z, reference(X, fix_after, fix_sparse_after, 10.0), rtol=0, atol=1e-9)
    assert fs.fixed.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # all but the constant column
    assert not Z[:, 3].any()
    assert not Z[:200, 2].any()  # the late column maps to 0 while blank, before and after it is fixed
    assert fs.offset[2] == 0.0 and fs.offset[1] == 0.0  # sparse columns keep their blank value
    if fix_after > 1:
        assert 0.0 < fs.offset[6] < 9.0                  # the dense estimate (a mean)


def test_a_fixed_map_does_not_move_whatever_it_learns_next():
    X = stream()
    fs = FixedStandardizer()
    fs.learn_transform(X)
    assert fs.fixed[[0, 1, 2, 4, 5, 6]].all()
    probe = stream(50, seed=5)
    before = fs.transform(probe)
    state = fs.to_state()
    fs.learn_transform(-100.0 * stream(300, seed=1) + 7.0)  # another distribution altogether
    fixed = [0, 1, 2, 4, 5, 6]  # column 3 was constant, so it was never fixed: it is fixed now
    np.testing.assert_array_equal(fs.transform(probe)[:, fixed], before[:, fixed])
    for k in ("offset", "scale", "fixed"):
        np.testing.assert_array_equal(fs.to_state().arrays[k][fixed], state.arrays[k][fixed])
    assert fs.fixed[3] == 1.0


def test_any_batch_cut_and_a_snapshot_mid_warm_up_give_the_same_features_and_state():
    X = stream(600, seed=3)
    whole = FixedStandardizer(fix_after=50)
    Z_whole = whole.learn_transform(X)
    rng = np.random.default_rng(7)
    fs, parts, a = FixedStandardizer(fix_after=50), [], 0
    while a < len(X):
        b = min(len(X), a + int(rng.integers(1, 40)))
        parts.append(fs.learn_transform(X[a:b]))
        fs = component_from_state(fs.to_state())  # restore after every batch, as after a crash
        a = b
    np.testing.assert_allclose(np.vstack(parts), Z_whole, rtol=0, atol=1e-12)
    for k, v in whole.to_state().arrays.items():
        np.testing.assert_allclose(fs.to_state().arrays[k], v, rtol=1e-12, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(fs.transform(X[:30]), whole.transform(X[:30]), rtol=0, atol=1e-12)


def test_before_anything_is_learned_features_are_zero_and_state_is_empty():
    fs = FixedStandardizer()
    assert not fs.transform(np.ones((3, 4))).any()
    restored = component_from_state(FixedStandardizer().to_state())
    assert isinstance(restored, FixedStandardizer) and restored.first is None


@pytest.mark.parametrize("params, field", [({"fix_after": 0}, "fix_after"),
                                           ({"fix_sparse_after": 0}, "fix_sparse_after"),
                                           ({"clip": 0.0}, "clip"), ({"clip": -1.0}, "clip")])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        FixedStandardizer(**params)
    cfg = {"name": "x", "learner": {"name": "AnalyticRidge", "features": [{"name": "FixedStandardizer",
                                                                         "params": params}]}}
    with pytest.raises(ConfigError, match=field):
        parse_config(cfg, "x")
