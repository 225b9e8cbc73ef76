"""One model from the states of several replicas that learned disjoint parts of a stream.

Exact for AnalyticRidge: its sufficient statistics (H^T H, H^T Y, class counts) add up to
the statistics of the union of the data, so the merged head is the ridge solution of
everything every replica learned, whatever partition went where and in which order
(columns are aligned by label). The feature maps in front of the heads must be identical
in every replica: fixed random expansions are (same seed), but a ``Standardizer`` learns its
running mean and variance per replica, and then the replicas' statistics live in
different feature spaces and do not add up; that is refused rather than approximated.

Other heads: KalmanHead replicas could be fused in information form (sum the precision
matrices and precision-weighted means, subtracting the shared prior k-1 times), and
networks by weight averaging. Both are approximate (the Kalman heads forget at different
rates, networks are not linear in their weights) and are not offered here.

Pure: no I/O. ``ocld.stream.client`` and the daemon read the states from Redis.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ocld.learners.analytic import AnalyticRidge
from ocld.learners.base import Learner, LearnerState
from ocld.learners.pipeline import Pipeline
from ocld.learners.registry import component_from_state


class MergeError(ValueError):
    """The replicas' models cannot be merged exactly; the message says why and what to change."""


def head_of(learner: Learner) -> Learner:
    return learner.head if isinstance(learner, Pipeline) else learner


def _same_state(a: LearnerState, b: LearnerState) -> bool:
    if a.kind != b.kind or a.params != b.params or a.meta != b.meta or set(a.arrays) != set(b.arrays):
        return False
    if any(not np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays):
        return False
    return set(a.children) == set(b.children) and all(_same_state(a.children[k], b.children[k]) for k in a.children)


def check_mergeable(learners: list[Learner]) -> None:
    """Raise MergeError unless every learner has an AnalyticRidge head behind identical feature maps."""
    for i, learner in enumerate(learners):
        head = head_of(learner)
        if not isinstance(head, AnalyticRidge):
            raise MergeError(
                f"replica model {i} has a {type(head).__name__} head; only AnalyticRidge merges exactly (its "
                "statistics add up). KalmanHead would need information-form fusion and networks weight "
                "averaging, both approximate and not offered")
    steps = [[s.to_state() for s in learner.steps] if isinstance(learner, Pipeline) else [] for learner in learners]
    for i, other in enumerate(steps[1:], start=1):
        if len(other) != len(steps[0]):
            raise MergeError(f"replica model {i} has {len(other)} feature maps, replica model 0 has {len(steps[0])}")
        for j, (a, b) in enumerate(zip(steps[0], other)):
            if not _same_state(a, b):
                raise MergeError(
                    f"feature map {j} ({a.kind}) differs between replica models 0 and {i}: it learns from the data "
                    f"(a Standardizer keeps a running mean per replica), so their statistics are in different feature "
                    f"spaces and do not add up. For an exact global model use feature maps without learned state "
                    f"(drop {a.kind} from learner.features; AnalyticRidge's own random ReLU expansion is fixed by "
                    f"its seed)")


def summed_statistics(heads: list[AnalyticRidge]) -> dict[str, Any] | None:
    """The sufficient statistics of the union of the heads' data (None when none has learned)."""
    learned = [h for h in heads if h.n_features_in is not None]
    if not learned:
        return None
    total = AnalyticRidge(**learned[0]._get_params())
    for h in learned:
        total.merge(h)
    return total.sufficient_statistics()


def merge_global(learners: list[Learner]) -> Learner:
    """The exact joint model of all replicas (a Pipeline when they have feature maps)."""
    if not learners:
        raise MergeError("no replica has a snapshot to merge")
    check_mergeable(learners)
    heads = [head_of(x) for x in learners]
    assert all(isinstance(h, AnalyticRidge) for h in heads)
    params = heads[0]._get_params()
    stats = summed_statistics(heads)  # type: ignore[arg-type]
    if stats is None:
        head = AnalyticRidge(**params)
    else:
        head = AnalyticRidge.from_statistics(
            stats["gram"], stats["cross"], stats["counts"], stats["classes"], stats["n_features_in"],
            class_stats=stats["class_stats"], n_seen=stats["n_seen"], **params)
    first = learners[0]
    if isinstance(first, Pipeline):
        steps = [component_from_state(s.to_state()) for s in first.steps]
        return Pipeline(steps, head)  # type: ignore[arg-type]
    return head


def fold_external(learner: Learner, others: list[Learner]) -> None:
    """Make ``learner`` predict with the model of its own data and the ``others``' (their summed
    statistics are folded into its head; the statistics it learns and snapshots stay its own)."""
    if others:
        check_mergeable([learner] + others)
    # check_mergeable: every head is an AnalyticRidge
    head = cast(AnalyticRidge, head_of(learner))
    head.set_external(summed_statistics([cast(AnalyticRidge, head_of(x)) for x in others]))


__all__ = ["MergeError", "check_mergeable", "fold_external", "head_of", "merge_global", "summed_statistics"]
