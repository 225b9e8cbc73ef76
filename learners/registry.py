"""Names -> classes for every learner, feature map and buffer, so configs and snapshots
refer to them by name. Imports are lazy: torch and river load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from ocld.learners.base import Component, FeatureMap, Learner, LearnerState

# name -> "module:Class". The conformance suite discovers everything from here.
COMPONENTS: dict[str, str] = {
    "Standardizer": "ocld.learners.features:Standardizer",
    "FixedStandardizer": "ocld.learners.features:FixedStandardizer",
    "RandomFourierFeatures": "ocld.learners.features:RandomFourierFeatures",
    "RandomReLU": "ocld.learners.features:RandomReLU",
    "Pipeline": "ocld.learners.pipeline:Pipeline",
    "KalmanHead": "ocld.learners.kalman:KalmanHead",
    "AnalyticRidge": "ocld.learners.analytic:AnalyticRidge",
    "KalmanLogistic": "ocld.learners.logistic:KalmanLogistic",
    "MomentumKD": "ocld.learners.mkd:MomentumKD",
    "RiverLearner": "ocld.learners.river_adapter:RiverLearner",
    "OnlineMixture": "ocld.learners.mixture:OnlineMixture",
    "GaussianNB": "ocld.learners.naive_bayes:GaussianNB",
    "KNeighbors": "ocld.learners.neighbors:KNeighbors",
    "Reservoir": "ocld.buffers.reservoir:Reservoir",
    "ClassBalancedReservoir": "ocld.buffers.reservoir:ClassBalancedReservoir",
    "ClassStats": "ocld.buffers.stats:ClassStats",
    "RunningMoments": "ocld.buffers.moments:RunningMoments",
}

HEADS = ("KalmanHead", "AnalyticRidge", "KalmanLogistic", "MomentumKD", "RiverLearner", "OnlineMixture", "GaussianNB",
         "KNeighbors")
FEATURE_MAPS = ("Standardizer", "FixedStandardizer", "RandomFourierFeatures", "RandomReLU")


class PickleRefused(PermissionError):
    """A state needs unpickling (river model) and the config does not allow it."""


def resolve(name: str) -> type[Component]:
    """Class for a registry name; a clear error lists the valid names."""
    try:
        target = COMPONENTS[name]
    except KeyError:
        raise ValueError(f"unknown component {name!r}; choose one of {sorted(COMPONENTS)}") from None
    module, _, cls = target.partition(":")
    found: type[Component] = getattr(importlib.import_module(module), cls)
    return found


def build_component(name: str, params: dict[str, Any] | None = None) -> Component:
    cls = resolve(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for {name}: {exc}") from None


def build_learner(name: str, params: dict[str, Any] | None = None,
                  features: list[dict[str, Any]] | None = None) -> Learner:
    """A head (by name, with params) behind optional feature maps ``[{name, params}, ...]``."""
    if name not in HEADS:
        raise ValueError(f"learner.name {name!r} is not a learner; choose one of {list(HEADS)}")
    head = build_component(name, params)
    if not features:
        return head  # type: ignore[return-value]
    steps = []
    for i, spec in enumerate(features):
        fname = spec.get("name")
        if fname not in FEATURE_MAPS:
            raise ValueError(f"learner.features[{i}].name {fname!r} is not a feature map; "
                             f"choose one of {list(FEATURE_MAPS)}")
        steps.append(build_component(fname, spec.get("params")))
    from ocld.learners.pipeline import Pipeline

    return Pipeline(steps, head)  # type: ignore[arg-type]


def needs_pickle(state: LearnerState) -> bool:
    if resolve(state.kind).uses_pickle:
        return True
    return any(needs_pickle(child) for child in state.children.values())


def component_from_state(state: LearnerState) -> Component:
    return resolve(state.kind).from_state(state)


def learner_from_state(state: LearnerState, allow_pickle: bool = False) -> Learner:
    """Rebuild a learner; refuses any state that would unpickle unless ``allow_pickle``."""
    if needs_pickle(state) and not allow_pickle:
        raise PickleRefused(
            f"state of kind {state.kind!r} contains a pickled river model; "
            "set allow_pickle: true in the config only if you trust whoever writes this state"
        )
    obj = component_from_state(state)
    if not isinstance(obj, Learner):
        raise TypeError(f"state of kind {state.kind!r} is not a learner")
    return obj


__all__ = ["COMPONENTS", "HEADS", "FEATURE_MAPS", "PickleRefused", "build_learner", "learner_from_state", "resolve",
           "FeatureMap"]
