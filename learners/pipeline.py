"""A head behind a chain of feature maps, itself a Learner (what configs build)."""

from __future__ import annotations

import numpy as np

from ocld.learners.base import DriftEvent, FeatureMap, Label, Learner, LearnerState


class Pipeline(Learner):
    """steps[0] -> ... -> steps[-1] -> head. Prediction uses ``transform``; learning uses
    ``learn_transform`` (which updates running statistics such as the Standardizer's)."""

    def __init__(self, steps: list[FeatureMap], head: Learner) -> None:
        self.steps = list(steps)
        self.head = head

    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self.head.classes_

    @property
    def exact_prequential(self) -> bool:  # type: ignore[override]
        return self.head.exact_prequential

    @property
    def joint_segments(self) -> bool:  # type: ignore[override]
        return self.head.joint_segments  # the feature maps' states are a few vectors

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        total, d = 0, n_features
        for step in self.steps:
            total += step.estimate_state_bytes(d)
            d = step.output_width(d)
        head = self.head.estimate_state_bytes(d, n_classes)
        return None if head is None else total + head

    def _transform(self, X: np.ndarray) -> np.ndarray:
        for step in self.steps:
            X = step.transform(X)
        return X

    def _learn_transform(self, X: np.ndarray) -> np.ndarray:
        for step in self.steps:
            X = step.learn_transform(X)
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.head.predict_proba(self._transform(X))

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self.head.learn(self._learn_transform(X), y)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.head.learn_predict(self._learn_transform(X), y)

    def adapt(self, event: DriftEvent) -> bool | None:
        return self.head.adapt(event)

    def to_state(self) -> LearnerState:
        children = {f"step{i}": s.to_state() for i, s in enumerate(self.steps)}
        children["head"] = self.head.to_state()
        return LearnerState("Pipeline", {}, {}, {"n_steps": len(self.steps)}, children)

    @classmethod
    def from_state(cls, state: LearnerState) -> Pipeline:
        from ocld.learners.registry import component_from_state

        steps = [component_from_state(state.children[f"step{i}"]) for i in range(int(state.meta["n_steps"]))]
        head = component_from_state(state.children["head"])
        return cls(steps, head)  # type: ignore[arg-type]

    def _get_params(self) -> dict:
        return {"steps": self.steps, "head": self.head}
