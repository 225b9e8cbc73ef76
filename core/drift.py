"""Drift monitors: river.drift detectors fed in stream order, producing DriftEvents.

Two monitors, distinguished by ``DriftEvent.kind``:

``DriftMonitor`` (kind ``error``): one detector fed with the 0/1 error of every labelled
sample, in labelled-sample order. ``index`` = 0-based labelled-sample position at which
the detector fired.

``InputDriftMonitor`` (kind ``input``): label-free, for streams whose labels are rare or
late. The feature rows (labelled or not) are cut into blocks of ``block`` samples aligned
to the monitor's own sample counter (so the result does not depend on how the stream was
cut into polls); at the end of each block the mean of every monitored feature is
standardized, z_j = mean_j / (sd_j / sqrt(block)), with sd_j the per-feature standard
deviation of the first ``warmup`` blocks (frozen afterwards, so a drift cannot hide by
moving the scale), and fed to one detector per feature. Detectors are shift-invariant,
so only the scale matters: under a stationary stream z_j has unit variance, and a shift
of the feature's mean by s standard deviations moves z_j by s * sqrt(block). At most one
event per block; ``detector`` names the features that fired (``ADWIN[x0,x3]``),
``statistic`` is the largest |z - mean of recent z| among them, ``index`` is the 0-based
sample position of the block's last sample. Cost: vectorized block sums plus
``len(features) / block`` detector updates per sample (at most ``max_features`` features,
evenly spaced, are monitored): never a per-sample-per-feature Python loop.

Detectors are river's own (ADWIN by default; PageHinkley, KSWIN, DDM selectable), never
re-implemented here. Their internals are Cython objects that can only be pickled, so a
monitor's state is a bounded window of the values it was fed plus counters: on restore,
fresh detectors are fed that window again (documented approximation: the rebuilt
detector has seen the recent past, not the whole history; detections during the replay
are not raised again). Never does I/O.

Choosing a detector: ADWIN (default) and PageHinkley suit the 0/1 error; DDM only sees
error *increases* (a drift that lowers the error is not detected) and gives about one
false alarm per 20,000 stationary samples; KSWIN runs a Kolmogorov-Smirnov test on every
update (about 1 ms each, and meaningless on 0/1 values): use it for the input monitor,
not for the error.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ocld.buffers.ring import Ring
from ocld.learners.base import DriftEvent, LearnerState

DETECTORS = {
    "ADWIN": "river.drift:ADWIN",
    "PageHinkley": "river.drift:PageHinkley",
    "KSWIN": "river.drift:KSWIN",
    "DDM": "river.drift.binary:DDM",
}


def make_detector(name: str, params: dict[str, Any]) -> Any:
    """A fresh river detector; errors name the field to change."""
    try:
        module, _, cls = DETECTORS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown drift detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    try:
        return getattr(importlib.import_module(module), cls)(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad drift params for {name}: {exc}") from None


class DriftMonitor:
    """Error monitor: feed 0/1 errors in labelled-sample order; returns a DriftEvent per detection."""

    def __init__(self, detector: str = "ADWIN", params: dict[str, Any] | None = None, window: int = 2000,
                 kind: str = "error", also: list[dict[str, Any]] | None = None) -> None:
        self.detector_name = detector
        self.params = dict(params or {})
        self.window = window
        self.kind = kind
        # More detectors on the same values (``drift.also``), each with its own state.
        self.also = [{"detector": str(a["detector"]), "params": dict(a.get("params") or {})} for a in also or []]
        self.detector = make_detector(detector, self.params)
        self.others = [make_detector(a["detector"], a["params"]) for a in self.also]
        self._ring = Ring(window, 1)
        self.n_seen = 0
        self.n_events = 0

    def _feed_all(self, values: np.ndarray) -> list[tuple[int, str, float | None, bool | None]]:
        """Every detector over ``values``; one (position, detector, statistic, rising) per position
        where any fired, from the first detector in order (main, then ``also``)."""
        fired: dict[int, tuple[int, str, float | None, bool | None]] = {}
        names = [self.detector_name] + [a["detector"] for a in self.also]
        for name, det in zip(names, [self.detector, *self.others]):
            for j, stat, rose in _feed(det, values):
                fired.setdefault(j, (j, name, stat, rose))
        return [fired[j] for j in sorted(fired)]

    def update(self, values: np.ndarray) -> list[DriftEvent]:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        events = []
        for j, name, stat, rose in self._feed_all(values):
            if rose is None:  # detectors without a mean estimate: compare recent errors with older ones
                history = np.concatenate([self.recent_values(), values])
                rose = _rose(history, history.size - values.size + j)
            events.append(DriftEvent(index=self.n_seen + j, detector=name, kind=self.kind,
                                     statistic=stat, rising=rose))
        self.n_seen += len(values)
        self.n_events += len(events)
        self._ring.push(np.asarray(values, dtype=np.float64).reshape(-1, 1))
        return events

    def recent_values(self) -> np.ndarray:
        return self._ring.values()[:, 0]

    def to_state(self) -> LearnerState:
        return LearnerState("DriftMonitor", {"detector": self.detector_name, "params": self.params,
                                             "window": self.window, "kind": self.kind, "also": self.also},
                            {"recent": self.recent_values()}, {"n_seen": self.n_seen, "n_events": self.n_events})

    @classmethod
    def from_state(cls, state: LearnerState) -> "DriftMonitor":
        m = cls(**state.params)
        recent = np.asarray(state.arrays["recent"], dtype=np.float64)
        m._feed_all(recent)  # rebuild the detectors; detections in the replay are not re-raised
        m._ring.push(recent.reshape(-1, 1))
        m.n_seen = int(state.meta["n_seen"])
        m.n_events = int(state.meta["n_events"])
        return m


class InputDriftMonitor:
    """Label-free monitor on block means of the features (see the module docstring).

    Parameters
    ----------
    detector, params: the river detector run on each monitored feature's standardized block means.
    block: samples per block (blocks aligned to the monitor's sample counter).
    warmup: blocks used to fix each feature's scale; no detection before they are complete.
    max_features: at most this many features are monitored (evenly spaced indices).
    window: block values kept to rebuild the detectors after a restart.
    """

    def __init__(self, detector: str = "ADWIN", params: dict[str, Any] | None = None, block: int = 100,
                 warmup: int = 10, max_features: int = 16, window: int = 200) -> None:
        if block < 2 or warmup < 1 or max_features < 1 or window < 1:
            raise ValueError("drift.input: block must be >= 2, warmup, max_features and window >= 1")
        self.detector_name = detector
        self.params = dict(params or {})
        self.block = int(block)
        self.warmup = int(warmup)
        self.max_features = int(max_features)
        self.window = int(window)
        make_detector(detector, self.params)  # fail early on bad params
        self.features: np.ndarray | None = None  # monitored column indices
        self.detectors: list[Any] = []
        self._ring: Ring | None = None
        self._sum = np.zeros(0)  # partial block: sums of the monitored columns
        self._count = 0
        self._ref_sum = np.zeros(0)  # warm-up: sums of block means and squared sample values
        self._ref_sq = np.zeros(0)
        self._ref_n = 0  # samples in the warm-up statistics
        self.scale: np.ndarray | None = None  # sd / sqrt(block) per monitored feature, once warm
        self.n_seen = 0
        self.n_blocks = 0
        self.n_events = 0

    # -- feeding -----------------------------------------------------------------------
    def _start(self, d: int) -> None:
        k = min(d, self.max_features)
        self.features = np.unique(np.linspace(0, d - 1, k).round().astype(np.int64))
        k = self.features.size
        self._sum = np.zeros(k)
        self._ref_sum = np.zeros(k)
        self._ref_sq = np.zeros(k)
        self._ring = Ring(self.window, k)

    def update(self, X: np.ndarray) -> list[DriftEvent]:
        """Feed feature rows [n, d] in stream order; events for blocks completed by them."""
        n = X.shape[0]
        if n == 0:
            return []
        if self.features is None:
            self._start(X.shape[1])
        assert self.features is not None
        Xm = X[:, self.features] if self.features.size < X.shape[1] else X
        # cut points: where the global counter reaches a multiple of ``block``
        first = self.block - self._count
        ends = list(range(first, n + 1, self.block))
        events: list[DriftEvent] = []
        start = 0
        for end in ends:
            part = Xm[start:end]
            total = self._sum + part.sum(axis=0)
            self._warm(part)
            self._sum = np.zeros_like(self._sum)
            self._count = 0
            self.n_seen += end - start
            start = end
            event = self._close_block(total / self.block)
            if event is not None:
                events.append(event)
        if start < n:
            part = Xm[start:]
            self._sum = self._sum + part.sum(axis=0)
            self._count += n - start
            self._warm(part)
            self.n_seen += n - start
        return events

    def _warm(self, part: np.ndarray) -> None:
        if self.scale is None:
            self._ref_sum += part.sum(axis=0)
            self._ref_sq += np.square(part).sum(axis=0)
            self._ref_n += part.shape[0]

    def _close_block(self, means: np.ndarray) -> DriftEvent | None:
        self.n_blocks += 1
        if self.scale is None:
            if self.n_blocks < self.warmup:
                return None
            mu = self._ref_sum / self._ref_n
            var = np.maximum(self._ref_sq / self._ref_n - mu * mu, 0.0)
            sd = np.sqrt(var)
            sd[sd <= 1e-12 * np.maximum(1.0, np.abs(mu))] = 1.0  # constant feature: any scale
            self.scale = sd / np.sqrt(self.block)
            self.detectors = [make_detector(self.detector_name, self.params) for _ in range(self.features.size)]  # type: ignore[union-attr]
            return None
        z = means / self.scale
        assert self._ring is not None
        fired = [j for j, det in enumerate(self.detectors) if _update_one(det, float(z[j]))]
        recent = self._ring.values()
        self._ring.push(z.reshape(1, -1))
        if not fired:
            return None
        self.n_events += 1
        ref = recent.mean(axis=0) if recent.shape[0] else np.zeros_like(z)
        stat = max(abs(float(z[j] - ref[j])) for j in fired)
        names = ",".join(f"x{int(self.features[j])}" for j in fired)  # type: ignore[index]
        return DriftEvent(index=self.n_seen - 1, detector=f"{self.detector_name}[{names}]", kind="input",
                          statistic=stat)

    # -- state -------------------------------------------------------------------------
    def to_state(self) -> LearnerState:
        k = 0 if self.features is None else int(self.features.size)
        arrays = {
            "features": self.features if self.features is not None else np.zeros(0, dtype=np.int64),
            "recent": self._ring.values() if self._ring is not None else np.zeros((0, 0)),
            "sum": self._sum.copy(), "ref_sum": self._ref_sum.copy(), "ref_sq": self._ref_sq.copy(),
            "scale": self.scale.copy() if self.scale is not None else np.zeros(0),
        }
        return LearnerState("InputDriftMonitor", {
            "detector": self.detector_name, "params": self.params, "block": self.block, "warmup": self.warmup,
            "max_features": self.max_features, "window": self.window,
        }, arrays, {"k": k, "count": self._count, "ref_n": self._ref_n, "n_seen": self.n_seen,
                    "n_blocks": self.n_blocks, "n_events": self.n_events, "warm": self.scale is not None})

    @classmethod
    def from_state(cls, state: LearnerState) -> "InputDriftMonitor":
        m = cls(**state.params)
        a, meta = state.arrays, state.meta
        if int(meta["k"]):
            m.features = np.asarray(a["features"], dtype=np.int64)
            m._ring = Ring(m.window, m.features.size)
            m._sum = np.asarray(a["sum"], dtype=np.float64).copy()
            m._ref_sum = np.asarray(a["ref_sum"], dtype=np.float64).copy()
            m._ref_sq = np.asarray(a["ref_sq"], dtype=np.float64).copy()
            if meta["warm"]:
                m.scale = np.asarray(a["scale"], dtype=np.float64).copy()
                m.detectors = [make_detector(m.detector_name, m.params) for _ in range(m.features.size)]
                recent = np.asarray(a["recent"], dtype=np.float64).reshape(-1, m.features.size)
                for j, det in enumerate(m.detectors):
                    for v in recent[:, j].tolist():
                        det.update(v)
                m._ring.push(recent)
        m._count = int(meta["count"])
        m._ref_n = int(meta["ref_n"])
        m.n_seen = int(meta["n_seen"])
        m.n_blocks = int(meta["n_blocks"])
        m.n_events = int(meta["n_events"])
        return m


def _feed(det: Any, values: np.ndarray) -> list[tuple[int, float | None, bool | None]]:
    """Update ``det`` with every value in order; (position, statistic, rising) of each detection.

    ``rising``: for a one-sided Page-Hinkley test, its side; for detectors with an ``estimation``
    of the mean (ADWIN), whether the mean of the window kept after the detection is above the
    mean before it; otherwise None.
    """
    out = []
    has_mean = isinstance(getattr(det, "estimation", None), (int, float))
    # A one-sided Page-Hinkley test only fires on a rise (mode "up") or only on a fall ("down").
    mode = getattr(det, "mode", None)
    one_sided = {"up": True, "down": False}.get(mode) if isinstance(mode, str) else None
    for j, v in enumerate(np.asarray(values, dtype=np.float64).tolist()):
        before = det.estimation if has_mean else None
        det.update(v)
        if det.drift_detected:
            if one_sided is not None:
                rising: bool | None = one_sided
            else:
                rising = bool(det.estimation > before) if has_mean and before is not None else None
            out.append((j, _statistic(det), rising))
    return out


def _rose(history: np.ndarray, at: int, recent: int = 200, older: int = 1000) -> bool | None:
    """Whether the mean of the ``recent`` values up to ``at`` is above that of the ``older`` ones before them."""
    new = history[max(0, at + 1 - recent):at + 1]
    old = history[max(0, at + 1 - recent - older):max(0, at + 1 - recent)]
    if new.size == 0 or old.size == 0:
        return None
    return bool(new.mean() > old.mean())


def _update_one(det: Any, value: float) -> bool:
    det.update(value)
    return bool(det.drift_detected)


def _statistic(det: Any) -> float | None:
    for name in ("estimation", "_mean", "p_value"):
        value = getattr(det, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None
