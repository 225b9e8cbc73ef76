"""Every ``>>>`` example in the package's docstrings runs as a test (river's habit: a reader learns
the API from the example, so the example must work).

The modules are imported by their installed names (``ocld.learners.kalman``, not the folder's
``learners.kalman``), so the examples run against the same objects as everything else; pytest's
``--doctest-modules`` would import the folders a second time under their generic top-level names.
Importing a module starts nothing (no server, no thread): ``ocld.stream`` is included.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ("ocld.core", "ocld.learners", "ocld.buffers", "ocld.stream")
# Modules whose examples need an optional dependency: skipped (not failed) where it is missing.
NEEDS = {"ocld.learners.mkd": "torch"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = ["ocld"]
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(path) if m.name != "__main__")
    return names


def _examples() -> list:
    out = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _modules():
        module: ModuleType = importlib.import_module(name)
        for test in finder.find(module, name):
            if test.examples:
                out.append(pytest.param(name, test, id=test.name))
    return out


EXAMPLES = _examples()


def test_the_public_learners_have_examples():
    """The learners a config names, and the public entry points, each show how they are used."""
    names = {p.id for p in EXAMPLES}
    for expected in ("ocld", "ocld.learners.kalman.KalmanHead", "ocld.learners.logistic.KalmanLogistic",
                     "ocld.learners.analytic.AnalyticRidge", "ocld.learners.mkd.MomentumKD",
                     "ocld.learners.mixture.OnlineMixture", "ocld.learners.river_adapter.RiverLearner",
                     "ocld.learners.features.Standardizer", "ocld.learners.features.RandomFourierFeatures",
                     "ocld.learners.features.RandomReLU", "ocld.buffers.moments.RunningMoments",
                     "ocld.core.schema.WidthInference", "ocld.stream.backoff.Backoff"):
        assert expected in names, f"{expected} has no >>> example"


@pytest.mark.parametrize("module, test", EXAMPLES)
def test_example(module: str, test: doctest.DocTest) -> None:
    needed = NEEDS.get(module)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"the example needs {needed}")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    lines: list[str] = []
    result = runner.run(test, out=lines.append, clear_globs=True)
    assert result.failed == 0, "".join(lines)
