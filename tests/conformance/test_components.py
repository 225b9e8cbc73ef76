"""The conformance suite: every property check against every component in the registry.

Cases come from ``learners.registry.COMPONENTS`` (a new learner, feature map or buffer
gets every check for free; the Pipeline entry is exercised as two composed pipelines),
checks from ``tests/conformance/checks.py``. Each case uses the class's own
``_unit_test_params()`` and short seeded streams, so the whole suite stays fast.
"""

from __future__ import annotations

import importlib.util

import pytest

from ocld.learners.registry import COMPONENTS
from tests.conformance import checks

CASES = checks.discover()

# (case id, check name) -> reason: checks that expose a real bug in a component; strict,
# so fixing the bug turns the test red until the mark is removed.
KNOWN_BUGS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {}

# Components whose whole case needs an optional dependency.
NEEDS = {"MomentumKD": "torch"}


def _params() -> list:
    out = []
    for case in CASES:
        for check in checks.CHECKS[case.kind]:
            marks = []
            bug = KNOWN_BUGS.get((case.id, check.__name__))
            if bug:
                marks.append(pytest.mark.xfail(strict=True, reason=bug[0], raises=bug[1]))
            out.append(pytest.param(case, check, id=f"{case.id}::{check.__name__}", marks=marks))
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS / torch thread: the checks are tiny, and on a shared 2-core machine threaded
    BLAS makes a 6x6 solve ~80x slower. Results do not depend on it (tested learners are seeded)."""
    from threadpoolctl import threadpool_limits

    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(1):
        if torch is not None:
            torch.set_num_threads(1)
        yield
    if torch is not None:
        torch.set_num_threads(before)


@pytest.mark.parametrize("case, check", _params())
def test_component(case: checks.Case, check) -> None:
    module = NEEDS.get(case.name)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.importorskip(module)
    check(case)


def test_every_registered_component_is_covered() -> None:
    """Discovery misses nothing: each registry name has a case, each case a non-empty check list."""
    covered = {case.name for case in CASES}
    assert covered == set(COMPONENTS)
    assert {c.id for c in CASES} >= {
        "KalmanHead", "AnalyticRidge", "MomentumKD", "RiverLearner",
        "Standardizer", "RandomFourierFeatures", "RandomReLU",
        "Reservoir", "ClassBalancedReservoir", "ClassStats",
    }
    assert sum(c.name == "Pipeline" for c in CASES) == 2
    for case in CASES:
        assert checks.CHECKS[case.kind]


def test_snapshot_format_keeps_0d_arrays() -> None:
    """Every learner state passes through the snapshot codec, so it must keep shapes exactly
    (a learner may hold scalars as 0-d arrays, e.g. torch optimizer step counters)."""
    import numpy as np

    from ocld.learners.base import LearnerState

    state = LearnerState("KalmanHead", {}, {"scalar": np.array(3.5), "vector": np.arange(3.0)}, {})
    back = checks.through_snapshot(state)
    assert back.arrays["vector"].shape == (3,)
    assert back.arrays["scalar"].shape == (), f"0-d array came back with shape {back.arrays['scalar'].shape}"
