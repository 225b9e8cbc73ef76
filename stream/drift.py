"""Drift monitor: river.drift detectors fed with the 0/1 error of every labelled sample.

Detectors are river's own (ADWIN by default; PageHinkley, KSWIN, DDM selectable), never
re-implemented here. Their internals are Cython objects that can only be pickled, so the
monitor's state is the last ``window`` errors plus counters: on restore, a fresh detector
is fed that window again (documented approximation: the rebuilt detector has seen the
recent past, not the whole history; events already raised are not raised again).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from learners.base import DriftEvent, LearnerState

DETECTORS = {
    "ADWIN": "river.drift:ADWIN",
    "PageHinkley": "river.drift:PageHinkley",
    "KSWIN": "river.drift:KSWIN",
    "DDM": "river.drift.binary:DDM",
}


def make_detector(name: str, params: dict[str, Any]) -> Any:
    import importlib

    try:
        module, _, cls = DETECTORS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown drift detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    try:
        return getattr(importlib.import_module(module), cls)(**params)
    except TypeError as exc:
        raise ValueError(f"bad drift.params for {name}: {exc}") from None


class DriftMonitor:
    """Feeds errors in stream order; returns a DriftEvent for every detection."""

    def __init__(self, detector: str = "ADWIN", params: dict[str, Any] | None = None, window: int = 2000,
                 kind: str = "error") -> None:
        self.detector_name = detector
        self.params = dict(params or {})
        self.window = window
        self.kind = kind
        self.detector = make_detector(detector, self.params)
        self.recent = np.zeros(window, dtype=np.float64)
        self.recent_pos = 0
        self.recent_filled = 0
        self.n_seen = 0
        self.n_events = 0
        self._replaying = False

    def update(self, values: np.ndarray) -> list[DriftEvent]:
        events: list[DriftEvent] = []
        det = self.detector
        base = self.n_seen
        for j, v in enumerate(values.tolist()):
            det.update(v)
            if det.drift_detected and not self._replaying:
                events.append(DriftEvent(index=base + j, detector=self.detector_name, kind=self.kind,
                                         statistic=_statistic(det)))
        if not self._replaying:
            self.n_seen += len(values)
            self.n_events += len(events)
            self._remember(np.asarray(values, dtype=np.float64))
        return events

    def _remember(self, values: np.ndarray) -> None:
        w = self.window
        values = values[-w:]
        end = self.recent_pos + values.size
        if end <= w:
            self.recent[self.recent_pos:end] = values
        else:
            cut = w - self.recent_pos
            self.recent[self.recent_pos:] = values[:cut]
            self.recent[: end - w] = values[cut:]
        self.recent_pos = end % w
        self.recent_filled = min(w, self.recent_filled + values.size)

    def recent_values(self) -> np.ndarray:
        if self.recent_filled < self.window:
            return self.recent[: self.recent_filled].copy()
        return np.concatenate((self.recent[self.recent_pos:], self.recent[: self.recent_pos]))

    def to_state(self) -> LearnerState:
        return LearnerState("DriftMonitor", {"detector": self.detector_name, "params": self.params,
                                             "window": self.window, "kind": self.kind},
                            {"recent": self.recent_values()}, {"n_seen": self.n_seen, "n_events": self.n_events})

    @classmethod
    def from_state(cls, state: LearnerState) -> "DriftMonitor":
        m = cls(**state.params)
        m._replaying = True
        try:
            m.update(state.arrays["recent"])
        finally:
            m._replaying = False
        m._remember(state.arrays["recent"])
        m.n_seen = int(state.meta["n_seen"])
        m.n_events = int(state.meta["n_events"])
        return m


def _statistic(det: Any) -> float | None:
    for name in ("estimation", "_mean", "p_value"):
        value = getattr(det, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None
