"""ocld: a streaming online continual-learning daemon.

Kafka records feed online learners (test-then-train); a drift monitor tells them to adapt;
Redis holds versioned snapshots of the whole learning state with the Kafka offsets they
cover, and the live status, metrics and drift history. The package has four parts, each a
folder of the repository installed under this namespace:

- ``ocld.learners`` and ``ocld.buffers``: online learners, feature maps, replay buffers and
  running statistics, pure numerical code (no I/O);
- ``ocld.core``: the pure runtime (learning core, drift monitors, metrics, record codec,
  snapshot format);
- ``ocld.stream``: everything that touches Kafka, Redis, files and HTTP (the daemon, the CLI,
  the state client).

The public API is re-exported here (imported on first use, so ``import ocld`` stays light):

>>> import numpy as np
>>> import ocld
>>> cfg = ocld.parse_config({"name": "example", "messages": {"n_features": 2}})
>>> cfg.learner.name                          # the default: an online mixture of five heads
'OnlineMixture'
>>> model = ocld.build_learner("KalmanLogistic", features=[{"name": "Standardizer"}])
>>> X = np.random.default_rng(0).normal(size=(200, 2))
>>> y = (X[:, 0] > 0).astype(int)
>>> proba = model.learn_predict(X, y)         # test-then-train: row i predicted, then learned
>>> model.predict([[3.0, 0.0], [-3.0, 0.0]]).tolist()
[1, 0]

One BLAS/OpenMP thread by default (set before numpy loads): the learners' matrices are
small, and on a busy machine a multi-threaded OpenBLAS spins and runs many times slower.
Set ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` yourself to override.
"""

from __future__ import annotations

import importlib
import os as _os
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

# public name -> "module:attribute"
_EXPORTS = {
    "StateClient": "ocld.stream.client:StateClient",
    "Config": "ocld.stream.config:Config",
    "ConfigError": "ocld.stream.config:ConfigError",
    "load_config": "ocld.stream.config:load_config",
    "parse_config": "ocld.stream.config:parse_config",
    "evaluate": "ocld.stream.offline:evaluate",
    "evaluate_arrays": "ocld.stream.offline:evaluate_arrays",
    "LearningCore": "ocld.core.runtime:LearningCore",
    "build_learner": "ocld.learners.registry:build_learner",
    "learner_from_state": "ocld.learners.registry:learner_from_state",
    "KalmanHead": "ocld.learners.kalman:KalmanHead",
    "KalmanLogistic": "ocld.learners.logistic:KalmanLogistic",
    "AnalyticRidge": "ocld.learners.analytic:AnalyticRidge",
    "MomentumKD": "ocld.learners.mkd:MomentumKD",
    "RiverLearner": "ocld.learners.river_adapter:RiverLearner",
    "Standardizer": "ocld.learners.features:Standardizer",
    "RandomFourierFeatures": "ocld.learners.features:RandomFourierFeatures",
    "RandomReLU": "ocld.learners.features:RandomReLU",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ocld' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
