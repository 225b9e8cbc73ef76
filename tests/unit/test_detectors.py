"""Detectors with an exact state (ocld.core.detectors): golden tests against river's detectors as the
independent reference, and save/restore anywhere giving a bit-identical continuation.

river 0.26's detectors are fed one value at a time; ours are fed the same values in random batches
(exercising the vectorized paths). Detections must fall on exactly the same indices, and at every
batch end the readable state must agree: ADWIN's width, total, variance and n_detections exactly and
its estimation to 1e-12; Page-Hinkley's and DDM's running mean, sums and extremes exactly.
"""

from __future__ import annotations

import doctest
import itertools
import random

import numpy as np
import pytest
from river import drift as river_drift
from river.drift import binary as river_binary

import ocld.core.detectors as detectors_module
from ocld.core import snapshot as fmt
from ocld.core.detectors import ADWIN, DDM, KSWIN, Detector, PageHinkley
from ocld.learners.base import LearnerState


# -- streams ---------------------------------------------------------------------------------------
def _bernoulli(seed: int, rates: list[float], per: int) -> np.ndarray:
    """0/1 values whose rate changes abruptly every ``per`` samples."""
    rng = np.random.default_rng(seed)
    return (rng.random(len(rates) * per) < np.repeat(rates, per)).astype(np.float64)


def _gradual(seed: int, n: int = 30_000) -> np.ndarray:
    """0/1 values whose rate climbs from 0.1 to 0.4 over the middle third, then falls back abruptly."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([np.full(n // 3, 0.1), np.linspace(0.1, 0.4, n // 3), np.full(n - 2 * (n // 3), 0.1)])
    return (rng.random(n) < p).astype(np.float64)


def _gaussian(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, 6000), rng.normal(0.6, 1.0, 6000), rng.normal(0.6, 3.0, 6000),
                           rng.normal(-1.0, 0.5, 6000)])


STREAMS = {
    "abrupt01": lambda: _bernoulli(0, [0.1, 0.35, 0.1, 0.3, 0.05], 6000),
    "gradual01": lambda: _gradual(1),
    "gaussian": lambda: _gaussian(2),
    # 0/1 values, then real values in the same window (ADWIN leaves its 0/1 fast path mid-window)
    # a short stream with two shifts, for KSWIN's one KS test per update
    "short": lambda: np.concatenate([_gaussian(6)[:1000], _gaussian(6)[:800] + 1.5, _gaussian(7)[:700] * 3.0]),
    "mixed": lambda: np.concatenate([_bernoulli(3, [0.2, 0.5], 4000), _gaussian(4)[:8000] * 0.1 + 0.3,
                                     _bernoulli(5, [0.2], 4000)]),
}

ADWIN_PARAMS = [
    {},
    {"clock": 1},
    {"delta": 0.1, "clock": 7},
    {"clock": 5, "max_buckets": 2, "min_window_length": 2, "grace_period": 3},
    {"clock": 1, "min_window_length": 2, "grace_period": 5},  # the input monitor's default
    {"delta": 0.0005, "clock": 16, "max_buckets": 9, "min_window_length": 0, "grace_period": 0},
]


def _cuts(n: int, seed: int, largest: int) -> list[int]:
    """Random batch boundaries in [0, n] (batches of 1 to ``largest`` values)."""
    rng = random.Random(seed)
    out, pos = [0], 0
    while pos < n:
        pos = min(n, pos + rng.randint(1, largest))
        out.append(pos)
    return out


def _river_run(river_det, values: np.ndarray, bounds: list[int], read) -> tuple[list[int], list[tuple]]:
    """river fed one value at a time: detection indices and ``read(det)`` at every batch end."""
    found, states = [], []
    ends = set(bounds[1:])
    for i, v in enumerate(values.tolist()):
        river_det.update(v)
        if river_det.drift_detected:
            found.append(i)
        if i + 1 in ends:
            states.append(read(river_det))
    return found, states


def _ours_run(det: Detector, values: np.ndarray, bounds: list[int], read) -> tuple[list[int], list[tuple]]:
    found, states = [], []
    for a, b in itertools.pairwise(bounds):
        found += [a + d.index for d in det.update_many(values[a:b])]
        states.append(read(det))
    return found, states


def _adwin_read(det) -> tuple:
    return det.width, det.total, det.variance, det.estimation, det.n_detections, det.drift_detected


def _assert_adwin_states_equal(ours: list[tuple], theirs: list[tuple]) -> None:
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        width, total, variance, estimation, n_det, fired = a
        assert (width, total, variance, n_det, fired) == (b[0], b[1], b[2], b[4], b[5]), (k, a, b)
        assert abs(estimation - b[3]) <= 1e-12, (k, a, b)


# -- ADWIN against river ---------------------------------------------------------------------------
@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("params", ADWIN_PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_adwin_detects_at_river_indices_with_river_state(stream, params):
    values = STREAMS[stream]()
    bounds = _cuts(values.size, seed=len(stream) + len(params), largest=700)
    expected, theirs = _river_run(river_drift.ADWIN(**params), values, bounds, _adwin_read)
    found, ours = _ours_run(ADWIN(**params), values, bounds, _adwin_read)
    assert found == expected
    _assert_adwin_states_equal(ours, theirs)
    if stream != "gaussian":
        assert expected, "the stream must drift for this test to mean anything"


@pytest.mark.parametrize("seed", [0, 1])
def test_adwin_long_stationary_run_matches_river(seed):
    """120,000 stationary 0/1 values (a window that keeps growing: many bucket rows), fed in polls of
    100 and 500 as the core does, then 10,000 more after a rise."""
    values = np.concatenate([_bernoulli(10 + seed, [0.15], 120_000), _bernoulli(20 + seed, [0.3], 10_000)])
    bounds = sorted(set(range(0, 120_000, 100)) | set(range(120_000, values.size, 500)) | {values.size})
    expected, theirs = _river_run(river_drift.ADWIN(), values, bounds, _adwin_read)
    found, ours = _ours_run(ADWIN(), values, bounds, _adwin_read)
    assert found == expected
    _assert_adwin_states_equal(ours, theirs)
    assert theirs[1199][0] > 50_000  # the stationary window grew wide before the rise
    assert [i for i in expected if i >= 120_000], "the rise after the stationary run is detected"


def test_adwin_leaves_the_01_fast_path_for_high_rows_exactly(monkeypatch):
    """On 0/1 values ADWIN takes bucket totals from one prefix sum while the buckets stay small
    (``_BINARY_ROWS``); lowered here so that a short stream crosses the limit mid-window."""
    monkeypatch.setattr(ADWIN, "_BINARY_ROWS", 6)
    values = _bernoulli(7, [0.2, 0.2, 0.45, 0.1], 5000)
    bounds = _cuts(values.size, seed=3, largest=400)
    expected, theirs = _river_run(river_drift.ADWIN(clock=8), values, bounds, _adwin_read)
    det = ADWIN(clock=8)
    found, ours = _ours_run(det, values, bounds, _adwin_read)
    assert found == expected and expected
    _assert_adwin_states_equal(ours, theirs)


def test_adwin_single_updates_match_river_value_by_value():
    values = np.concatenate([_bernoulli(8, [0.1, 0.6], 1500), _gaussian(9)[:1500]])
    ours, theirs = ADWIN(clock=4), river_drift.ADWIN(clock=4)
    fired = 0
    for v in values.tolist():
        ours.update(v)
        theirs.update(v)
        assert _adwin_read(ours)[:3] == _adwin_read(theirs)[:3] and ours.drift_detected == theirs.drift_detected
        fired += ours.drift_detected
    assert fired >= 2


def test_adwin_detection_reports_river_estimation_and_direction():
    """``statistic`` is the estimation after the cut; ``rising`` compares it with the estimation before
    the update (what the monitor reported with river's detector)."""
    values = _bernoulli(11, [0.1, 0.5, 0.05], 4000)
    river_det = river_drift.ADWIN()
    expected = []
    for i, v in enumerate(values.tolist()):
        prior = river_det.estimation
        river_det.update(v)
        if river_det.drift_detected:
            expected.append((i, river_det.estimation, river_det.estimation > prior))
    got = [(d.index, d.statistic, d.rising) for d in ADWIN().update_many(values)]
    assert got == expected
    assert {r for _, _, r in got} == {True, False}


@pytest.mark.parametrize("params, message", [({"max_buckets": 1}, "max_buckets"), ({"clock": 0}, "clock"),
                                             ({"delta": 0.0}, "delta"), ({"delta": 1.5}, "delta")])
def test_adwin_refuses_parameters_that_break_it(params, message):
    with pytest.raises(ValueError, match=message):
        ADWIN(**params)


# -- Page-Hinkley and DDM against river ------------------------------------------------------------
def _ph_river(det) -> tuple:
    return (det._x_mean.n, det._x_mean.get(), det._sum_increase, det._sum_decrease, det._min_increase,
            float(det._max_decrease), det.drift_detected)


def _ph_ours(det) -> tuple:
    return (det._n, det._mean, det._sum_increase, det._sum_decrease, det._min_increase, det._max_decrease,
            det.drift_detected)


@pytest.mark.parametrize("params", [{}, {"threshold": 20.0, "mode": "up", "delta": 0.02}, {"mode": "down"},
                                    {"threshold": 5.0, "alpha": 0.99, "min_instances": 100}])
@pytest.mark.parametrize("stream", ["abrupt01", "gaussian"])
def test_page_hinkley_matches_river(params, stream):
    values = STREAMS[stream]()
    bounds = _cuts(values.size, seed=5, largest=600)
    expected, theirs = _river_run(river_drift.PageHinkley(**params), values, bounds, _ph_river)
    found, ours = _ours_run(PageHinkley(**params), values, bounds, _ph_ours)
    assert found == expected and expected
    assert ours == theirs


def _ddm_river(det) -> tuple:
    pmin = np.nan if det._p_min is None else det._p_min
    smin = np.nan if det._s_min is None else det._s_min
    return (det._p.n, det._p.get(), pmin, smin, det._ps_min, det.drift_detected, det.warning_detected)


def _ddm_ours(det) -> tuple:
    return (det._n, det._p, det._p_min, det._s_min, det._ps_min, det.drift_detected, det.warning_detected)


@pytest.mark.parametrize("params", [{}, {"warm_start": 1000}, {"warning_threshold": 1.5, "drift_threshold": 2.5}])
@pytest.mark.parametrize("stream", ["abrupt01", "gradual01"])
def test_ddm_matches_river(params, stream):
    values = STREAMS[stream]()
    bounds = _cuts(values.size, seed=6, largest=600)
    expected, theirs = _river_run(river_binary.DDM(**params), values, bounds, _ddm_river)
    found, ours = _ours_run(DDM(**params), values, bounds, _ddm_ours)
    assert found == expected and expected
    np.testing.assert_array_equal(np.array(ours, dtype=float), np.array(theirs, dtype=float))


def test_kswin_is_rivers_detector():
    values = STREAMS["short"]()
    bounds = _cuts(values.size, seed=7, largest=300)
    def read(d):
        return (float(d.p_value),)

    expected, theirs = _river_run(river_drift.KSWIN(alpha=1e-4, seed=3), values, bounds, read)
    found, ours = _ours_run(KSWIN(alpha=1e-4, seed=3), values, bounds, read)
    assert found == expected and expected
    assert ours == theirs


# -- save and restore anywhere ---------------------------------------------------------------------
def _state_bits(state: LearnerState) -> tuple:
    """A detector state as comparable bits: params, meta and every array's dtype, shape and bytes."""
    return (state.kind, state.params, state.meta,
            {k: (np.asarray(a).dtype.str, np.asarray(a).shape, np.asarray(a).tobytes())
             for k, a in state.arrays.items()})


def _through_snapshot(state: LearnerState) -> LearnerState:
    manifest, chunks = fmt.encode(fmt.Snapshot({"det": state}, {}, {}))
    assert b"pickle" not in manifest.lower()
    return fmt.decode(manifest, chunks).parts["det"]


RESTORE_CASES = [
    (ADWIN, {}, "abrupt01"), (ADWIN, {"clock": 1, "min_window_length": 2, "grace_period": 5}, "gaussian"),
    (ADWIN, {"clock": 3}, "mixed"), (PageHinkley, {"threshold": 20.0, "mode": "up", "delta": 0.02}, "abrupt01"),
    (PageHinkley, {}, "gaussian"), (DDM, {}, "gradual01"), (KSWIN, {"alpha": 1e-4, "seed": 1}, "short"),
]


@pytest.mark.parametrize("cls, params, stream", RESTORE_CASES,
                         ids=[f"{c.__name__}-{s}-{i}" for i, (c, _, s) in enumerate(RESTORE_CASES)])
def test_save_and_restore_at_random_points_is_bit_identical(cls, params, stream):
    values = STREAMS[stream]()
    uninterrupted = cls(**params)
    fresh = uninterrupted.to_state()  # the interrupted run starts from it
    bounds = _cuts(values.size, seed=11, largest=900)
    reference = []
    states = {}
    for a, b in itertools.pairwise(bounds):
        reference += [(a + d.index, d.statistic, d.rising) for d in uninterrupted.update_many(values[a:b])]
        states[b] = _state_bits(uninterrupted.to_state())
    assert reference, "the stream must fire for this test to mean anything"

    rng = random.Random(12)
    restarts = sorted(rng.sample(range(1, values.size), 6))
    det = cls.from_state(_through_snapshot(fresh))
    got = []
    pos = 0
    for stop in restarts + [values.size]:
        other = _cuts(stop - pos, seed=stop, largest=333)  # other batch cuts than the uninterrupted run
        for a, b in itertools.pairwise(other):
            got += [(pos + a + d.index, d.statistic, d.rising) for d in det.update_many(values[pos + a:pos + b])]
        pos = stop
        det = cls.from_state(_through_snapshot(det.to_state()))
    assert got == reference
    assert _state_bits(det.to_state()) == states[values.size]


def test_unseeded_kswin_restored_continues_the_same_draws():
    """Without a seed, river's KSWIN draws from an OS-seeded generator (and draws a new one at every
    reset after a detection, so only a seed makes a run reproducible); until then a restored
    detector continues the very same random samples."""
    values = np.random.default_rng(8).normal(size=900)
    first = KSWIN(alpha=1e-12)  # no detection here: one would re-seed from the OS (the case above)
    restored = KSWIN.from_state(_through_snapshot(first.to_state()))
    kept, again = [], []
    for a in range(0, 900, 150):
        first.update_many(values[a:a + 150])
        kept.append(first.p_value)
        restored.update_many(values[a:a + 150])
        again.append(restored.p_value)
        restored = KSWIN.from_state(_through_snapshot(restored.to_state()))
    assert again == kept
    assert restored._det._rng.getstate() == first._det._rng.getstate()  # every KS test drew the same sample


def test_adwin_state_is_plain_numbers_and_arrays():
    det = ADWIN()
    det.update_many(STREAMS["abrupt01"]()[:9000])
    state = det.to_state()
    assert set(state.arrays) == {"row_counts", "totals", "variances", "stats"}
    assert all(np.asarray(a).dtype.kind in "if" for a in state.arrays.values())
    assert state.arrays["totals"].size == state.arrays["row_counts"].sum() > 10
    back = ADWIN.from_state(_through_snapshot(state))
    assert _adwin_read(back) == _adwin_read(det)
    with pytest.raises(ValueError, match="bucket counts"):
        ADWIN.from_state(LearnerState("ADWIN", state.params, {**state.arrays, "totals": state.arrays["totals"][1:]},
                                      state.meta))


def test_module_examples_run():
    import ocld.core.drift as drift_module

    for module in (detectors_module, drift_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
