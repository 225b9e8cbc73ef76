"""``ocld evaluate``: the daemon's learning core (same learner, metrics, drift monitor and
micro-batching) run over a file, with no Kafka or Redis.

Batches are cut at ``kafka.max_batch`` records, the largest batch the daemon handles. For
learners with exact per-sample prequential predictions (``exact_prequential``, e.g.
KalmanHead) the result does not depend on the cut at all, so it equals what the daemon
reports for the same stream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stream.codec import Decoded
from stream.config import Config
from stream.files import read_table
from stream.runtime import LearningCore


def evaluate(cfg: Config, data: str | Path, label_column: str | None = None, batch_size: int | None = None,
             limit: int | None = None) -> dict[str, Any]:
    table = read_table(data, label_column)
    X, y = table.X, table.y
    if limit is not None:
        X, y = X[:limit], y[:limit]
    n_expected = cfg.messages.n_features or (len(cfg.messages.features) if cfg.messages.features else None)
    if n_expected is not None and X.shape[1] != n_expected:
        raise ValueError(f"{data} has {X.shape[1]} features but the config expects {n_expected}")
    finite = np.isfinite(X).all(axis=1) & (np.abs(np.nan_to_num(X)) <= cfg.messages.max_abs_value).all(axis=1)
    core = LearningCore.from_config(cfg)
    batch = batch_size or cfg.kafka.max_batch
    events: list[dict[str, Any]] = []
    forgetting: list[tuple[int, float]] = []
    head = getattr(core.learner, "head", core.learner)
    t0 = time.perf_counter()
    n = X.shape[0]
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        keep = np.flatnonzero(finite[start:stop])
        idx = start + keep
        dec = Decoded(rows=idx, X=X[idx], y=[y[i] for i in idx], ids=[None] * len(idx), ts=[None] * len(idx),
                      task=[None] * len(idx))
        res = core.process(dec)
        for e in res.events:
            events.append({"index": e.index, "detector": e.detector, "kind": e.kind, "statistic": e.statistic})
        g = getattr(head, "forgetting_", None)
        if isinstance(g, (int, float)):
            forgetting.append((core.labelled_seen, float(g)))
    elapsed = time.perf_counter() - t0
    s = core.metrics.summary()
    return {
        "data": str(data), "learner": cfg.learner.name, "samples": core.labelled_seen,
        "skipped_invalid": int((~finite[:n]).sum()), "batch_size": batch,
        "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"], "log_loss": s["log_loss"],
        "nochange_accuracy": s["nochange_accuracy"], "samples_per_s": core.labelled_seen / elapsed if elapsed else 0.0,
        "elapsed_s": elapsed, "drift_events": events, "classes": [str(c) for c in core.learner.classes_],
        "forgetting_final": forgetting[-1][1] if forgetting else None,
    }
