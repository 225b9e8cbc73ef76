"""The learning core shared by the daemon and ``ocld evaluate``: decoded samples in, state out.

One batch (what one poll returned, in stream order) is processed as:
  1. predict-only rows are predicted by the model as it was before the batch; those with an
     ``id`` are kept in a bounded pending table (features + prediction) for a delayed label;
  2. delayed labels (id + y, no x) are joined with their pending row;
  3. labelled rows and joined delayed labels are learned in stream order by
     ``learner.learn_predict`` (exact per-sample test-then-train for learners that support
     it); delayed ones are scored against the prediction made when their features came;
  4. the 0/1 errors feed the drift monitor; each detection is returned with what the core
     decided (``BatchResult.events`` and ``actions``; the daemon pins the last snapshot for an
     ``adapt``), and ``learner.adapt`` is called (when ``drift.adapt``). Adaptation is due at the first multiple of
     ``drift.adapt_grid`` labelled samples after the detection: the learn set is cut at
     those multiples and due adaptations are applied there (pending ones wait across
     batches and are part of the snapshot), so an adaptation takes effect at the same
     sample whatever the poll cut, in the daemon and in ``ocld evaluate`` alike. A learner
     with ``joint_segments`` (KalmanHead) learns all of a poll's segments in one call; the
     core keeps a ``copy.deepcopy`` from before it and, when an adaptation falls due inside
     the call, goes back to the copy and learns only up to that multiple (same results).
A new class is not concept drift: the first sample of a class that arrives while other
classes are known raises the error for a while (class-incremental learning: the model has
never seen it), so error-drift events within ``new_class_guard`` labelled samples of such
a first sample are recorded with action ``new_class`` and not adapted to, whatever the
learner (forgetting on such an event would discount exactly the old classes the model must
keep). The positions of recent first samples are part of the snapshot.
Before step 3, every feature row (labelled or not) feeds the optional label-free input
monitor (``drift.input``); its events (kind ``input``) go through the same hook at once and
adapt the learner only when ``drift.input.adapt`` is true, due at the first grid multiple
after the labelled rows that preceded the event's block end (cut-invariant too, except that
delayed labels are not counted in that mapping).
No I/O here: the daemon and the file evaluator wrap it.
"""

from __future__ import annotations

import copy
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ocld.core.codec import Decoded
from ocld.core.drift import DriftMonitor, InputDriftMonitor
from ocld.core.metrics import PrequentialMetrics
from ocld.learners.base import DriftEvent, Learner, LearnerState, normalize_label, pad_columns
from ocld.learners.registry import learner_from_state


def limit_threads(n: int = 1) -> None:
    """Pin numpy's and scipy's OpenBLAS (two separate libraries) and torch to ``n`` threads."""
    import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS so the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


@dataclass
class BatchResult:
    # (record index, id, label, proba)
    predictions: list[tuple[int, Any, Any, np.ndarray]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # rejected by the core (e.g. unknown id)
    events: list[DriftEvent] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # what the core did on each event (LearningCore.action_for)
    learned: int = 0
    # 0/1 error of each learned sample, in order
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))


class PendingTable:
    """id -> (features, prediction, time); oldest evicted beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict[str, tuple[np.ndarray, np.ndarray, float]] = OrderedDict()
        self.evicted = 0

    def put(self, key: str, x: np.ndarray, proba: np.ndarray, at: float) -> None:
        if self.capacity <= 0:
            self.evicted += 1
            return
        self.items.pop(key, None)
        self.items[key] = (x, proba, at)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)
            self.evicted += 1

    def pop(self, key: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        return self.items.pop(key, None)

    def to_state(self) -> LearnerState:
        keys = list(self.items)
        if keys:
            d = self.items[keys[0]][0].size
            c = max(v[1].size for v in self.items.values())
            X = np.vstack([v[0] for v in self.items.values()])
            P = np.vstack([pad_columns(v[1].reshape(1, -1), c) for v in self.items.values()])
            T = np.array([v[2] for v in self.items.values()])
            widths = np.array([v[1].size for v in self.items.values()], dtype=np.int64)
        else:
            d = c = 0
            X, P, T, widths = np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0), np.zeros(0, dtype=np.int64)
        return LearnerState("PendingTable", {"capacity": self.capacity}, {"X": X, "P": P, "T": T, "widths": widths},
                            {"ids": keys, "evicted": self.evicted, "d": d, "c": c})

    @classmethod
    def from_state(cls, state: LearnerState) -> PendingTable:
        t = cls(**state.params)
        a = state.arrays
        for i, key in enumerate(state.meta["ids"]):
            t.items[key] = (a["X"][i].copy(), a["P"][i, : int(a["widths"][i])].copy(), float(a["T"][i]))
        t.evicted = int(state.meta["evicted"])
        return t


# Labelled samples after a new class's first sample during which error-drift events are not adapted
# to (``drift.new_class_guard`` where the config has it). Long enough for ADWIN or Page-Hinkley to
# report the rise a new class causes (tests/unit/test_new_class.py), short enough that a real
# concept change soon after a class arrived is still adapted to.
DEFAULT_NEW_CLASS_GUARD = 500


class LearningCore:
    def __init__(self, learner: Learner, metrics: PrequentialMetrics, monitor: DriftMonitor | None,
                 pending: PendingTable, adapt: bool = True, max_classes: int = 1000, adapt_grid: int = 100,
                 input_monitor: InputDriftMonitor | None = None, adapt_input: bool = False,
                 cooldown: int = 0, adapt_on_fall: bool = False,
                 new_class_guard: int = DEFAULT_NEW_CLASS_GUARD) -> None:
        if new_class_guard < 0:
            raise ValueError(f"new_class_guard must be >= 0 labelled samples, got {new_class_guard}")
        self.learner = learner
        self.new_class_guard = new_class_guard
        # labelled positions of recent first samples of a class that arrived while others were known
        self.new_class_at: list[int] = []
        self.adapt_on_fall = adapt_on_fall
        self.metrics = metrics
        self.monitor = monitor
        self.input_monitor = input_monitor
        self.adapt_input = adapt_input
        self.cooldown = cooldown
        self.last_adapt_index: int | None = None  # labelled index of the last error event adapted to
        self.cooldown_prev: dict[int, int | None] = {}  # pending error adaptation -> last_adapt_index before it
        self._actions: dict[DriftEvent, str] = {}  # action decided for each event of the current batch
        self.pending = pending
        self.adapt = adapt
        self.max_classes = max_classes
        self.adapt_grid = adapt_grid
        self.samples_seen = 0  # feature rows + delayed labels accepted
        self.labelled_seen = 0  # samples learned
        self.predicted = 0  # predict-only rows
        self.drift_count = 0
        self.drift_counts: dict[str, int] = {"error": 0, "input": 0}
        self.error_fell = 0  # detections where the error rate fell (counted, not raised: see _drift)
        self.pending_adapt: list[tuple[int, DriftEvent]] = []  # (due labelled count, event), due ascending
        self.last_drift_at: float | None = None
        self.learn_seconds = 0.0
        self.clock: Callable[[], float] = time.time
        self._done: deque[BatchResult] = deque()  # results submitted and not yet collected
        self._cfg: Any = None  # the config it was built from (from_config), for reset()

    @classmethod
    def from_config(cls, cfg: Any) -> LearningCore:
        d = cfg.drift
        also = [a.model_dump() for a in d.also]
        monitor = DriftMonitor(d.detector, d.params, d.window, also=also) if d.enabled else None
        inp = d.input
        input_monitor = (InputDriftMonitor(inp.detector, inp.params, inp.block, inp.warmup, inp.max_features,
                                           inp.window) if inp.enabled else None)
        core = cls(cfg.build_learner(), PrequentialMetrics(cfg.evaluation.window), monitor,
                   PendingTable(cfg.messages.max_pending), d.adapt, cfg.messages.max_classes,
                   d.adapt_grid, input_monitor, inp.adapt, d.cooldown, d.adapt_on_fall,
                   getattr(d, "new_class_guard", DEFAULT_NEW_CLASS_GUARD))
        core._cfg = cfg
        return core

    @property
    def pending_size(self) -> int:
        """Unlabelled samples waiting for a delayed label."""
        return len(self.pending.items)

    @property
    def pending_evicted(self) -> int:
        return self.pending.evicted

    @property
    def classes(self) -> list[Any]:
        """The learner's classes (the columns of its probabilities)."""
        return self.learner.classes_

    def summary(self) -> dict[str, Any]:
        """The prequential metrics' totals (``PrequentialMetrics.summary``)."""
        return self.metrics.summary()

    def learner_metrics(self) -> dict[str, Any]:
        """Learner figures for the status and the metrics stream: the effective forgetting factor where
        the head has one, and a mixture's member weights (``mixture_weights``: member name -> weight)."""
        head = getattr(self.learner, "head", self.learner)
        out: dict[str, Any] = {}
        g = getattr(head, "forgetting_", None)
        if isinstance(g, (int, float)):
            out["forgetting"] = float(g)
        weights = getattr(head, "weights_", None)
        if isinstance(weights, dict) and weights:
            out["mixture_weights"] = {str(k): round(float(v), 6) for k, v in weights.items()}
        return out

    def action_for(self, event: DriftEvent) -> str:
        """What the core did on ``event`` of the last batch: ``adapt`` (learner.adapt is called),
        ``none`` (adaptation off for this kind: recorded only), ``cooldown`` (an error event within
        ``drift.cooldown`` labelled samples of the last adapting one: recorded only) or
        ``new_class`` (an error event within ``new_class_guard`` labelled samples after a new class's
        first sample: the error rose because a class arrived, not because a concept changed)."""
        decided = self._actions.get(event)
        if decided is not None:
            return decided
        return "adapt" if (self.adapt_input if event.kind == "input" else self.adapt) else "none"

    def _decide(self, event: DriftEvent) -> str:
        if event.kind == "input":
            return "adapt" if self.adapt_input else "none"
        if not self.adapt:
            return "none"
        if self._after_new_class(event.index):
            return "new_class"
        if self.cooldown and self.last_adapt_index is not None and event.index < self.last_adapt_index + self.cooldown:
            return "cooldown"
        # The cooldown starts here; if the learner's adapt then changes nothing (returns False),
        # _apply_due puts the previous start back, so a no-op adaptation does not block the next event.
        self.cooldown_prev[event.index] = self.last_adapt_index
        self.last_adapt_index = event.index
        return "adapt"

    def _after_new_class(self, index: int) -> bool:
        """True when labelled sample ``index`` lies within ``new_class_guard`` samples from (and
        including) the first sample of a class that arrived while other classes were known."""
        return any(j <= index < j + self.new_class_guard for j in self.new_class_at)

    def _note_new_classes(self, y: list[Any]) -> None:
        """Record where classes first appear in the learn set ``y`` (stream order, about to be learned
        from labelled count ``labelled_seen``) and forget first samples older than the guard."""
        now = self.labelled_seen
        self.new_class_at = [j for j in self.new_class_at if j + self.new_class_guard > now]
        known = set(self.learner.classes_)
        for r, label in enumerate(y):
            if label in known:
                continue
            label = normalize_label(label)
            if label in known:
                continue
            if known and self.new_class_guard:  # the very first class is no news
                self.new_class_at.append(now + r)
            known.add(label)

    def _drift(self, event: DriftEvent, res: BatchResult, labelled_at: int) -> None:
        """Record ``event``; when it calls for adaptation, schedule it for the first grid
        multiple after labelled sample ``labelled_at`` (0-based).

        A detection at which the error rate fell (ADWIN fires in both directions) is not a drift
        alarm: a learner getting better has nothing to adapt to, and announcing it as drift would
        cry wolf on every stream that is still being learned. It is only counted (``error_fell``),
        unless ``drift.adapt_on_fall`` asks to adapt to it as well."""
        if event.kind == "error" and event.rising is False and not self.adapt_on_fall:
            self.error_fell += 1
            return
        res.events.append(event)
        self.drift_count += 1
        self.drift_counts[event.kind] = self.drift_counts.get(event.kind, 0) + 1
        self.last_drift_at = self.clock()
        action = self._actions[event] = self._decide(event)
        res.actions.append(action)
        if action == "adapt":
            g = self.adapt_grid
            self.pending_adapt.append(((labelled_at // g + 1) * g, event))

    def _apply_due(self) -> None:
        if self.pending_adapt and self.pending_adapt[0][0] <= self.labelled_seen:
            due = [e for d, e in self.pending_adapt if d <= self.labelled_seen]
            self.pending_adapt = [(d, e) for d, e in self.pending_adapt if d > self.labelled_seen]
            for event in due:
                acted = self.learner.adapt(event)
                if event.kind == "error":
                    prev = self.cooldown_prev.pop(event.index, self.last_adapt_index)
                    if acted is False and self.last_adapt_index == event.index:
                        self.last_adapt_index = prev

    # -- the interface the daemon uses (the same as the learner process's) ---------------
    depth: int = 0  # polls that may stay submitted while the next one is read (a learner process: 1)

    def submit(self, dec: Decoded) -> None:
        """Learn a decoded poll; its result is returned by the next :meth:`collect`."""
        self._done.append(self.process(dec))

    def collect(self) -> BatchResult:
        """The result of the oldest poll submitted."""
        return self._done.popleft()

    @property
    def inflight(self) -> int:
        return len(self._done)

    def reset(self) -> None:
        """Start again from a fresh core with the same settings (before a snapshot is reloaded into it).
        Only for a core built by :meth:`from_config`, which knows its settings."""
        cfg = self._cfg
        if cfg is None:
            raise RuntimeError("reset() needs a core built by LearningCore.from_config")
        self.__dict__.update(LearningCore.from_config(cfg).__dict__)

    def close(self) -> None:
        """Nothing to stop (a learner process has a child to stop)."""

    # -- processing ------------------------------------------------------------------
    def process(self, dec: Decoded) -> BatchResult:
        res = BatchResult()
        self._actions.clear()
        labelled = [j for j, y in enumerate(dec.y) if y is not None]
        unlabelled = [j for j, y in enumerate(dec.y) if y is None] if len(labelled) < len(dec.y) else []
        now = self.clock()

        if unlabelled:
            Xu = dec.X[unlabelled]
            proba = self.learner.predict_proba(Xu)
            preds = self.learner.predict(Xu) if proba.shape[1] else [None] * len(unlabelled)
            for k, j in enumerate(unlabelled):
                res.predictions.append((int(dec.rows[j]), dec.ids[j], preds[k], proba[k]))
                rid = dec.ids[j]
                if rid is not None:
                    ts = dec.ts[j]
                    self.pending.put(rid, dec.X[j], proba[k], float(ts) if ts is not None else now)
            self.predicted += len(unlabelled)

        if self.input_monitor is not None and len(dec.y):
            seen_before = self.input_monitor.n_seen
            input_events = self.input_monitor.update(dec.X)
            if input_events:
                is_lab = np.fromiter((v is not None for v in dec.y), dtype=bool, count=len(dec.y))
                lab_upto = np.cumsum(is_lab)
                for event in input_events:
                    before = self.labelled_seen + int(lab_upto[event.index - seen_before])
                    self._drift(event, res, labelled_at=before - 1)
                self._apply_due()  # due at a grid point already reached: before this batch is learned

        # Learn set in stream order: (record index, x, y, stored proba or None, delay)
        rows = dec.rows.tolist()
        order: list[tuple[int, int]] = [(rows[j], j) for j in labelled]
        delayed: dict[int, tuple[np.ndarray, Any, np.ndarray, float]] = {}
        for rec, rid, y, ts in dec.labels_only:
            hit = self.pending.pop(rid)
            if hit is None:
                res.bad.append((rec, f"delayed label for unknown or expired id {rid[:64]!r}"))
                continue
            x, proba, at = hit
            arrival = float(ts) if ts is not None else now
            delayed[rec] = (x, y, proba, max(0.0, arrival - at))
            order.append((rec, -1))

        # Cap the number of classes: a flood of new labels must not grow the state without bound.
        known = set(self.learner.classes_)
        if len(known) + len(order) > self.max_classes and len(
                known.union(dec.y[j] if j >= 0 else delayed[rec][1] for rec, j in order)) > self.max_classes:
            kept = []
            for rec, j in order:
                y = dec.y[j] if j >= 0 else delayed[rec][1]
                if y not in known and len(known) >= self.max_classes:
                    res.bad.append((rec, f"label {str(y)[:40]!r} would exceed messages.max_classes={self.max_classes}"))
                    continue
                known.add(y)
                kept.append((rec, j))
            order = kept

        self.samples_seen += len(dec.y) + len(delayed)
        if not order:
            return res
        if delayed:
            order.sort()
            X = np.vstack([dec.X[j] if j >= 0 else delayed[rec][0] for rec, j in order])
            y = [dec.y[j] if j >= 0 else delayed[rec][1] for rec, j in order]
        else:
            idx = [j for _, j in order]
            X = dec.X[idx] if len(idx) < len(dec.y) else dec.X
            y = [dec.y[j] for j in idx]

        self._note_new_classes(y)
        t0 = time.perf_counter()
        y_arr = np.empty(len(y), dtype=object)
        y_arr[:] = y
        errors_all = []
        segs = self._segments(len(y))
        i = 0
        while i < len(segs):
            # Learn segments i..last in one call (several only for learners with ``joint_segments``);
            # if an adaptation falls due inside them, go back to ``saved`` and learn up to there.
            last = self._run_end(segs, i)
            a, end = segs[i][0], segs[last][1]
            saved = copy.deepcopy(self.learner) if last > i else None
            known = set(self.learner.classes_) if saved is not None else set()
            proba_run = self.learner.learn_predict(X[a:end], y_arr[a:end])
            classes = self.learner.classes_
            k = i
            while k <= last:
                sa, sb = segs[k]
                proba = proba_run[sa - a:sb - a]
                if saved is not None:  # columns of the classes known after this segment (first-seen order)
                    known.update(y[sa:sb])
                    proba = proba[:, :len(known)]
                if delayed:
                    proba = proba.copy()
                    for r in range(sa, sb):
                        rec, j = order[r]
                        if j < 0:
                            proba[r - sa] = pad_columns(delayed[rec][2].reshape(1, -1), proba.shape[1])[0]
                errors = self.metrics.update(y[sa:sb], proba, classes[:proba.shape[1]])
                errors_all.append(errors)
                self.labelled_seen += sb - sa
                if self.monitor is not None:
                    for event in self.monitor.update(errors):
                        self._drift(event, res, labelled_at=event.index)
                k += 1
                if k <= last and saved is not None and self._due_at() <= self.labelled_seen:
                    self.learner = saved
                    self.learner.learn_predict(X[a:sb], y_arr[a:sb])  # the same predictions, already used
                    self._apply_due()
                    break
                self._apply_due()
            i = k
        self.learn_seconds += time.perf_counter() - t0
        if delayed:
            self.metrics.add_delays(np.asarray([delayed[rec][3] for rec, j in order if j < 0]))
        res.learned = len(y)
        res.errors = errors_all[0] if len(errors_all) == 1 else np.concatenate(errors_all)
        return res

    def _due_at(self) -> float:
        """The labelled count at which the earliest pending adaptation is due (inf: none)."""
        return min((d for d, _ in self.pending_adapt), default=float("inf"))

    def _run_end(self, segs: list[tuple[int, int]], i: int) -> int:
        """Index of the last segment to learn in the same call as segment ``i``: more than ``i``
        only for a learner with ``joint_segments``, and never past the end of the segment where a
        pending adaptation is due (it must be applied before the next one)."""
        if len(segs) - i < 2 or not getattr(self.learner, "joint_segments", False):
            return i
        base = self.labelled_seen - segs[i][0]  # labelled count before the learn set
        due = self._due_at()
        last = i
        while last + 1 < len(segs) and base + segs[last][1] < due:
            last += 1
        return last

    def _segments(self, n: int) -> list[tuple[int, int]]:
        """Cut the learn set at global multiples of ``adapt_grid`` labelled samples.

        With adaptation on, a drift detected inside a segment is acted on before the next
        segment, so when an adaptation takes effect depends only on the sample count, never
        on how the stream was cut into polls (the daemon and ``ocld evaluate`` agree).
        """
        can_adapt = (self.monitor is not None and self.adapt) or (self.input_monitor is not None and self.adapt_input)
        if not can_adapt or n == 0:
            return [(0, n)]
        g = self.adapt_grid
        first = g - (self.labelled_seen % g)
        cuts = [0] + list(range(first, n, g)) + [n]
        return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]

    # -- state -----------------------------------------------------------------------
    def to_parts(self) -> dict[str, LearnerState]:
        parts = {
            "learner": self.learner.to_state(),
            "metrics": self.metrics.to_state(),
            "pending": self.pending.to_state(),
            "counters": LearnerState("Counters", {}, {}, {
                "samples_seen": self.samples_seen, "labelled_seen": self.labelled_seen, "predicted": self.predicted,
                "drift_count": self.drift_count, "drift_counts": dict(self.drift_counts),
                "error_fell": self.error_fell,
                "last_drift_at": self.last_drift_at,
                "pending_adapt": [[d, e.index, e.detector, e.kind, e.statistic, e.rising]
                                  for d, e in self.pending_adapt],
                "last_adapt_index": self.last_adapt_index,
                "cooldown_prev": [[i, p] for i, p in self.cooldown_prev.items()],
                "new_class_at": list(self.new_class_at)}),
        }
        if self.monitor is not None:
            parts["monitor"] = self.monitor.to_state()
        if self.input_monitor is not None:
            parts["input_monitor"] = self.input_monitor.to_state()
        return parts

    def restore(self, parts: dict[str, LearnerState], allow_pickle: bool = False) -> None:
        self.learner = learner_from_state(parts["learner"], allow_pickle=allow_pickle)
        self.metrics = PrequentialMetrics.from_state(parts["metrics"])
        self.pending = PendingTable.from_state(parts["pending"])
        if "monitor" in parts and self.monitor is not None:
            self.monitor = DriftMonitor.from_state(parts["monitor"])
        if "input_monitor" in parts and self.input_monitor is not None:
            self.input_monitor = InputDriftMonitor.from_state(parts["input_monitor"])
        c = parts["counters"].meta
        self.samples_seen = int(c["samples_seen"])
        self.labelled_seen = int(c["labelled_seen"])
        self.predicted = int(c["predicted"])
        self.drift_count = int(c["drift_count"])
        self.error_fell = int(c.get("error_fell", 0))
        self.drift_counts = {"error": 0, "input": 0, **{k: int(v) for k, v in (c.get("drift_counts") or {}).items()}}
        if "drift_counts" not in c:  # snapshots written before kinds were counted: all were error events
            self.drift_counts["error"] = self.drift_count
        self.pending_adapt = [(int(row[0]), DriftEvent(int(row[1]), str(row[2]), str(row[3]), row[4],
                                                       rising=row[5] if len(row) > 5 else None))
                              for row in c.get("pending_adapt") or []]
        self.last_adapt_index = c.get("last_adapt_index")
        self.cooldown_prev = {int(i): (None if p is None else int(p)) for i, p in c.get("cooldown_prev") or []}
        self.last_drift_at = c.get("last_drift_at")
        self.new_class_at = [int(j) for j in c.get("new_class_at") or []]

    def status_fields(self) -> dict[str, Any]:
        s = self.metrics.summary()
        return {
            "samples_seen": self.samples_seen, "labelled_seen": self.labelled_seen, "predicted": self.predicted,
            "accuracy": round(s["accuracy_window"], 6), "accuracy_total": round(s["accuracy"], 6),
            "balanced_accuracy": round(s["balanced_accuracy"], 6), "log_loss": round(s["log_loss"], 6),
            "nochange_accuracy": round(s["nochange_accuracy"], 6), "drift_count": self.drift_count,
            "drift_count_error": self.drift_counts.get("error", 0),
            "drift_count_input": self.drift_counts.get("input", 0), "error_fell": self.error_fell,
            "last_drift_at": self.last_drift_at or "", "pending": len(self.pending.items),
            "pending_evicted": self.pending.evicted, "label_delay_mean_s": round(s["label_delay_mean_s"], 6),
            "delayed_labels": s["delayed_labels"],
        }
