"""Drift monitors: detectors fed in stream order, producing DriftEvents, with an exact state.

Two monitors, distinguished by ``DriftEvent.kind``:

``DriftMonitor`` (kind ``error``): one detector (plus optional ``also`` detectors, each with its
own state) fed with the 0/1 error of every labelled sample, in labelled-sample order. ``index`` =
0-based labelled-sample position at which a detector fired.

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
sample position of the block's last sample. Cost: vectorized block sums plus one batch
update per monitored feature and poll (at most ``max_features`` features, evenly spaced):
never a per-sample-per-feature Python loop.

Detectors come from ``ocld.core.detectors``: ADWIN (default; river's algorithm on plain
arrays), PageHinkley and DDM (river's arithmetic), KSWIN (river's own object), each giving the
same detections as river's detector of that name with the same parameters. A monitor's state
(``to_state``) holds every detector's exact state as arrays, so ``from_state`` continues
bit-identically: detections, adaptations and hence the learner are those of an uninterrupted
run. Snapshots from before this format hold only a window of recent values; those still load by
feeding that window to fresh detectors (an approximation: the rebuilt detector has seen the
recent past, not the whole history). Never does I/O, never pickles.

Choosing a detector: ADWIN (default) and PageHinkley suit the 0/1 error; DDM only sees
error *increases* (a drift that lowers the error is not detected) and raises more false
alarms on a stationary error; KSWIN runs a Kolmogorov-Smirnov test on every update (costly,
and meaningless on 0/1 values): use it for the input monitor, not for the error. Their
measured false alarms and costs: docs/drift.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ocld.buffers.moments import RunningMoments
from ocld.buffers.ring import Ring
from ocld.core.detectors import DETECTOR_CLASSES, Detection, Detector
from ocld.learners.base import DriftEvent, LearnerState

DETECTORS = {name: f"ocld.core.detectors:{name}" for name in DETECTOR_CLASSES}


def make_detector(name: str, params: dict[str, Any]) -> Detector:
    """A fresh detector (``ocld.core.detectors``); errors name the field to change."""
    try:
        cls = DETECTOR_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown drift detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad drift params for {name}: {exc}") from None


def _restore_detector(name: str, state: LearnerState) -> Detector:
    if state.kind != name:
        raise ValueError(f"drift monitor state: detector {state.kind!r} where {name!r} was configured")
    return DETECTOR_CLASSES[name].from_state(state)


class DriftMonitor:
    """Error monitor: feed 0/1 errors in labelled-sample order; returns a DriftEvent per detection.

    Parameters
    ----------
    detector, params: the detector (``DETECTORS``) and its constructor arguments.
    window: recent values kept: the reference of ``rising`` for detectors without a mean
        estimate, and what an old-format snapshot is restored from.
    kind: ``DriftEvent.kind`` of the events.
    also: more detectors on the same values, ``[{"detector": name, "params": {...}}, ...]``; a
        value where several fire raises one event, named after the first (main, then ``also``).

    Examples
    --------
    >>> import numpy as np
    >>> errors = np.concatenate([np.zeros(3000), np.ones(300)])
    >>> monitor = DriftMonitor("ADWIN")
    >>> [(e.index, e.detector, e.rising) for e in monitor.update(errors[:3100])]
    [(3039, 'ADWIN', True)]
    >>> again = DriftMonitor.from_state(monitor.to_state())
    >>> again.update(errors[3100:]) == monitor.update(errors[3100:])
    True
    """

    def __init__(self, detector: str = "ADWIN", params: dict[str, Any] | None = None, window: int = 2000,
                 kind: str = "error", also: list[dict[str, Any]] | None = None) -> None:
        self.detector_name = detector
        self.params = dict(params or {})
        self.window = window
        self.kind = kind
        # More detectors on the same values (``drift.also``), each with its own state.
        self.also: list[dict[str, Any]] = [{"detector": str(a["detector"]), "params": dict(a.get("params") or {})}
                                           for a in also or []]
        self.detector = make_detector(detector, self.params)
        self.others = [make_detector(a["detector"], a["params"]) for a in self.also]
        self._ring = Ring(window, 1)
        self.n_seen = 0
        self.n_events = 0

    def _names(self) -> list[str]:
        return [self.detector_name] + [a["detector"] for a in self.also]

    def _feed_all(self, values: np.ndarray) -> list[tuple[int, str, Detection]]:
        """Every detector over ``values``; one (position, detector, detection) per position where
        any fired, from the first detector in order (main, then ``also``)."""
        fired: dict[int, tuple[int, str, Detection]] = {}
        for name, det in zip(self._names(), [self.detector, *self.others]):
            for d in det.update_many(values):
                fired.setdefault(d.index, (d.index, name, d))
        return [fired[j] for j in sorted(fired)]

    def update(self, values: np.ndarray) -> list[DriftEvent]:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        events = []
        for j, name, d in self._feed_all(values):
            rose = d.rising
            if rose is None:  # detectors without a mean estimate: compare recent errors with older ones
                # the last ``window`` values up to the detection, whatever the batch cut
                history = np.concatenate([self.recent_values(), values[:j + 1]])[-self.window:]
                rose = _rose(history, history.size - 1)
            events.append(DriftEvent(index=self.n_seen + j, detector=name, kind=self.kind,
                                     statistic=d.statistic, rising=rose))
        self.n_seen += len(values)
        self.n_events += len(events)
        self._ring.push(values.reshape(-1, 1))
        return events

    def recent_values(self) -> np.ndarray:
        return self._ring.values()[:, 0]

    def to_state(self) -> LearnerState:
        children = {"detector": self.detector.to_state()}
        children.update({f"also{i}": det.to_state() for i, det in enumerate(self.others)})
        return LearnerState("DriftMonitor", {"detector": self.detector_name, "params": self.params,
                                             "window": self.window, "kind": self.kind, "also": self.also},
                            {"recent": self.recent_values()}, {"n_seen": self.n_seen, "n_events": self.n_events},
                            children)

    @classmethod
    def from_state(cls, state: LearnerState) -> DriftMonitor:
        """The monitor ``to_state`` described: each detector's exact state when the snapshot has it
        (one child per detector); from an old snapshot (no children), fresh detectors fed the
        recent window again (detections in that replay are not raised)."""
        m = cls(**state.params)
        recent = np.asarray(state.arrays["recent"], dtype=np.float64)
        if state.children:
            m.detector = _restore_detector(m.detector_name, state.children["detector"])
            m.others = [_restore_detector(a["detector"], state.children[f"also{i}"]) for i, a in enumerate(m.also)]
        else:
            m._feed_all(recent)
        m._ring.push(recent.reshape(-1, 1))
        m.n_seen = int(state.meta["n_seen"])
        m.n_events = int(state.meta["n_events"])
        return m


class InputDriftMonitor:
    """Label-free monitor on block means of the features (see the module docstring).

    Parameters
    ----------
    detector, params: the detector run on each monitored feature's standardized block means.
    block: samples per block (blocks aligned to the monitor's sample counter).
    warmup: blocks used to fix each feature's scale; no detection before they are complete.
    max_features: at most this many features are monitored (evenly spaced indices).
    window: recent block values kept: the reference of an event's ``statistic``, and what an
        old-format snapshot is restored from.
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
        self.detectors: list[Detector] = []
        self._ring: Ring | None = None
        # The block in progress: its rows (monitored columns), kept until the block is complete so that
        # its sums come from one array whatever the poll cut, and ``_count`` rows in it. ``_carry``:
        # the sums of rows a snapshot of the old format held only as sums (zeros otherwise).
        self._rows: list[np.ndarray] = []
        self._carry = np.zeros(0)
        self._count = 0
        self._ref = RunningMoments()  # warm-up: mean and spread of the rows of the complete blocks
        self.scale: np.ndarray | None = None  # sd / sqrt(block) per monitored feature, once warm
        self.n_seen = 0
        self.n_blocks = 0
        self.n_events = 0

    # -- feeding -----------------------------------------------------------------------
    def _start(self, d: int) -> None:
        k = min(d, self.max_features)
        self.features = np.unique(np.linspace(0, d - 1, k).round().astype(np.int64))
        k = self.features.size
        self._carry = np.zeros(k)
        self._ref.start(k)
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
        blocks: list[tuple[np.ndarray, int]] = []  # (z, index of the block's last sample) of warm blocks
        start = 0
        for end in ends:
            # one C-ordered array per block: its column sums do not depend on how polls cut it
            rows = np.vstack(self._rows + [Xm[start:end]])
            sums = rows.sum(axis=0)
            total = self._carry + sums
            if self.scale is None:
                self._ref.update(rows)
            self._rows = []
            self._carry = np.zeros_like(self._carry)
            self._count = 0
            self.n_seen += end - start
            start = end
            z = self._close_block(total / self.block)
            if z is not None:
                blocks.append((z, self.n_seen - 1))
        if start < n:
            self._rows.append(np.array(Xm[start:], dtype=np.float64))  # a copy: the caller's array may change
            self._count += n - start
            self.n_seen += n - start
        return self._detect(blocks) if blocks else []

    def _close_block(self, means: np.ndarray) -> np.ndarray | None:
        """Count a completed block; its standardized means once the scale is fixed (else None)."""
        self.n_blocks += 1
        if self.scale is None:
            if self.n_blocks < self.warmup:
                return None
            mu = self._ref.mean
            assert mu is not None
            sd = self._ref.std()
            sd[sd <= 1e-12 * np.maximum(1.0, np.abs(mu))] = 1.0  # constant feature: any scale
            self.scale = sd / np.sqrt(self.block)
            self.detectors = [make_detector(self.detector_name, self.params) for _ in range(self.features.size)]  # type: ignore[union-attr]
            return None
        return means / self.scale

    def _detect(self, blocks: list[tuple[np.ndarray, int]]) -> list[DriftEvent]:
        """Feed each feature's detector its column of the blocks' z values (one batch each), then
        one event per block where any fired."""
        Z = np.vstack([z for z, _ in blocks])
        fired: dict[int, list[int]] = {}
        for j, det in enumerate(self.detectors):
            for d in det.update_many(Z[:, j]):
                fired.setdefault(d.index, []).append(j)
        assert self._ring is not None
        events = []
        for b, (z, index) in enumerate(blocks):
            recent = self._ring.values()
            self._ring.push(z.reshape(1, -1))
            if b not in fired:
                continue
            self.n_events += 1
            ref = recent.mean(axis=0) if recent.shape[0] else np.zeros_like(z)
            stat = max(abs(float(z[j] - ref[j])) for j in fired[b])
            names = ",".join(f"x{int(self.features[j])}" for j in fired[b])  # type: ignore[index]
            events.append(DriftEvent(index=index, detector=f"{self.detector_name}[{names}]", kind="input",
                                     statistic=stat))
        return events

    # -- state -------------------------------------------------------------------------
    def to_state(self) -> LearnerState:
        k = 0 if self.features is None else int(self.features.size)
        arrays = {
            "features": self.features if self.features is not None else np.zeros(0, dtype=np.int64),
            "recent": self._ring.values() if self._ring is not None else np.zeros((0, 0)),
            "partial": np.vstack(self._rows) if self._rows else np.zeros((0, k)),
            "sum": self._carry.copy(),
            "scale": self.scale.copy() if self.scale is not None else np.zeros(0),
        }
        return LearnerState("InputDriftMonitor", {
            "detector": self.detector_name, "params": self.params, "block": self.block, "warmup": self.warmup,
            "max_features": self.max_features, "window": self.window,
        }, arrays, {"k": k, "count": self._count, "n_seen": self.n_seen,
                    "n_blocks": self.n_blocks, "n_events": self.n_events, "warm": self.scale is not None,
                    "exact": True},
            {"ref": self._ref.to_state(), **{f"d{j}": det.to_state() for j, det in enumerate(self.detectors)}})

    @classmethod
    def from_state(cls, state: LearnerState) -> InputDriftMonitor:
        """The monitor ``to_state`` described: each feature's detector exactly when the snapshot has
        their states; from an old snapshot, fresh detectors fed the recent block values again."""
        m = cls(**state.params)
        a, meta = state.arrays, state.meta
        if int(meta["k"]):
            m.features = np.asarray(a["features"], dtype=np.int64)
            m._ring = Ring(m.window, m.features.size)
            # the old format kept the block in progress as sums only (and in the warm-up sums already)
            m._carry = np.asarray(a["sum"], dtype=np.float64).copy()
            partial = np.asarray(a["partial"], dtype=np.float64) if "partial" in a else np.zeros((0, m.features.size))
            m._rows = [partial.reshape(-1, m.features.size).copy()] if partial.size else []
            m._ref = _warmup_moments(state)
            if meta["warm"]:
                m.scale = np.asarray(a["scale"], dtype=np.float64).copy()
                recent = np.asarray(a["recent"], dtype=np.float64).reshape(-1, m.features.size)
                if meta.get("exact"):
                    m.detectors = [_restore_detector(m.detector_name, state.children[f"d{j}"])
                                   for j in range(m.features.size)]
                else:
                    m.detectors = [make_detector(m.detector_name, m.params) for _ in range(m.features.size)]
                    for j, det in enumerate(m.detectors):
                        det.update_many(recent[:, j])
                m._ring.push(recent)
        m._count = int(meta["count"])
        m.n_seen = int(meta["n_seen"])
        m.n_blocks = int(meta["n_blocks"])
        m.n_events = int(meta["n_events"])
        return m


def _warmup_moments(state: LearnerState) -> RunningMoments:
    """The warm-up moments of an input monitor's state. Snapshots written before RunningMoments
    held them as sums of the values and of their squares (arrays ``ref_sum``, ``ref_sq``, count in
    ``meta["ref_n"]``): those are turned into moments here (to the precision the sums had)."""
    if "ref" in state.children:
        return RunningMoments.from_state(state.children["ref"])
    k = int(state.meta["k"])
    n = float(state.meta.get("ref_n", 0))
    if "ref_sum" not in state.arrays or n <= 0:
        moments = RunningMoments()
        moments.start(k)
        return moments
    total = np.asarray(state.arrays["ref_sum"], dtype=np.float64)
    mean = total / n
    m2 = np.maximum(np.asarray(state.arrays["ref_sq"], dtype=np.float64) - total * mean, 0.0)
    return RunningMoments.from_arrays(n, mean, m2)


def _rose(history: np.ndarray, at: int, recent: int = 200, older: int = 1000) -> bool | None:
    """Whether the mean of the ``recent`` values up to ``at`` is above that of the ``older`` ones before them."""
    new = history[max(0, at + 1 - recent):at + 1]
    old = history[max(0, at + 1 - recent - older):max(0, at + 1 - recent)]
    if new.size == 0 or old.size == 0:
        return None
    return bool(new.mean() > old.mean())
