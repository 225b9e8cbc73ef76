"""``ocld evaluate``: the daemon's learning core (same learner, metrics, drift monitors and
micro-batching) run over a file or arrays, with no Kafka or Redis; plus continual
evaluation on a held-out test file.

Batches are cut at ``kafka.max_batch`` records, the largest batch the daemon handles. For
learners with exact per-sample prequential predictions (``exact_prequential``, e.g.
KalmanHead) the result does not depend on the cut at all, so it equals what the daemon
reports for the same stream. Drift adaptation takes effect at multiples of
``drift.adapt_grid`` labelled samples in both.

Continual evaluation (De Lange et al., "Continual evaluation for lifelong learning:
identifying the stability gap", ICLR 2023; Avalanche conventions), when a ``test`` file
is given and the training records carry ``task``: every ``eval_every`` labelled training
samples (global multiples), at the end of every task's training and after the stream, the
model (predict only, never learning) is scored on the held-out test rows of every task
seen so far. With ``a(k, n)`` the accuracy on task k's test rows after n training samples,
``n_k`` the training count at which task k's training ended, tasks k = 1..T in order of
first appearance and E the evaluation points:

    accuracy_matrix  rows = evaluation points, columns = tasks (None before a task is seen)
    aaa              average anytime accuracy: mean over E of the mean a(k, n) over seen tasks
    final_accuracy   accuracy on the whole test file after the stream
    forgetting       mean over k < T of a(k, n_k) - a(k, final)     (Avalanche's forgetting)
    min_acc          mean over k < T of min over n > n_k of a(k, n)  (worst accuracy after learning k)
    wc_acc           1/T a(T, final) + (1 - 1/T) min_acc            (worst-case accuracy)

Without ``task`` fields only ``final_accuracy`` is reported. Never writes files (the CLI
does).

Every row that is not learned is counted with its reason, never dropped silently:
``not_learned_by_reason`` lists, largest first, each reason with its ``kind`` (``max_classes``,
``missing_value``, ``non_numeric``, ``wrong_width``, ``not_finite``, ``above_max_abs_value``,
``unlabelled``, ``invalid_json``, ``invalid_record``), the column at fault where one is, the
number of rows, the first line and the fix. ``rows`` = ``samples`` + ``not_learned``.
``warnings`` says when the label column looks continuous (``files.label_warning``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ocld.core.codec import Decoded
from ocld.core.runtime import LearningCore, limit_threads
from ocld.stream.config import Config
from ocld.stream.files import RowProblem, Table, read_table

log = logging.getLogger("ocld.evaluate")

MAX_CURVE_POINTS = 2000

FIXES = {
    "max_classes": "raise messages.max_classes if these are real classes, or check the label column",
    "missing_value": "fill the cells or drop those rows (a missing value is never guessed)",
    "non_numeric": "every feature column must hold numbers: encode or remove column {column!r}, or give "
                   "--label-column {column} if it is the class",
    "wrong_width": "give every row as many cells as the header",
    "not_finite": "replace the infinite values",
    "above_max_abs_value": "rescale that column or raise messages.max_abs_value",
    "unlabelled": "rows with an empty label are predicted, never learned (by design)",
    "invalid_json": "fix or remove those lines",
    "invalid_record": "fix or remove those rows",
}


class NotLearned:
    """Counts the rows that were not learned by reason, keeping the first line of each."""

    def __init__(self) -> None:
        self.by_reason: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, kind: str, reason: str, line: int | None, column: str | None = None, rows: int = 1,
            example: str | None = None) -> None:
        entry = self.by_reason.get((kind, reason))
        if entry is None:
            self.by_reason[(kind, reason)] = {"kind": kind, "reason": reason, "column": column, "rows": rows,
                                              "first_line": line, "example": example,
                                              "fix": FIXES.get(kind, "").format(column=column)}
        else:
            entry["rows"] += rows

    def add_problem(self, problem: RowProblem) -> None:
        self.add(problem.kind, problem.reason, problem.line, problem.column, example=problem.value)

    @property
    def total(self) -> int:
        return sum(e["rows"] for e in self.by_reason.values())

    def entries(self) -> list[dict[str, Any]]:
        return sorted(self.by_reason.values(), key=lambda e: (-e["rows"], e["first_line"] or 0))


def evaluate(cfg: Config, data: str | Path, label_column: str | None = None, batch_size: int | None = None,
             limit: int | None = None, test: str | Path | None = None, eval_every: int | None = None) -> dict[str, Any]:
    """Prequential evaluation of ``cfg``'s pipeline over a data file (see the module docstring)."""
    limit_threads()
    table = read_table(data, label_column)
    test_table = read_table(test, label_column) if test is not None else None
    result = evaluate_arrays(cfg, table, batch_size=batch_size, limit=limit, test=test_table, eval_every=eval_every)
    result["data"] = str(data)
    if test is not None:
        result["test"] = str(test)
        if test_table is not None and test_table.skipped:
            result["test_rows_not_scored"] = len(test_table.skipped)
    for warning in result["warnings"]:
        log.warning("%s: %s", data, warning)
    if result["skipped_invalid"]:
        top = next(e for e in result["not_learned_by_reason"] if e["kind"] != "unlabelled")
        log.warning("%s: %d of %d rows were not learned; most often: %s (%d rows, first on line %s)", data,
                    result["not_learned"], result["rows"], top["reason"], top["rows"], top["first_line"])
    return result


def evaluate_arrays(cfg: Config, table: Table, batch_size: int | None = None, limit: int | None = None,
                    test: Table | None = None, eval_every: int | None = None,
                    keep_errors: bool = False) -> dict[str, Any]:
    """The same as :func:`evaluate` on an in-memory table (benchmarks). ``keep_errors`` adds
    ``errors``: the 0/1 error of every learned sample in stream order (numpy, not JSON)."""
    X, y, task = table.X, table.y, table.task
    if limit is not None:
        X, y, task = X[:limit], y[:limit], task[:limit]
    not_learned = NotLearned()
    for before, problem in table.skipped:
        if limit is None or before < limit:
            not_learned.add_problem(problem)
    lines = table.lines
    n_expected = cfg.messages.n_features or (len(cfg.messages.features) if cfg.messages.features else None)
    if n_expected is not None and X.shape[1] != n_expected:
        raise ValueError(f"the data has {X.shape[1]} features but the config expects {n_expected}")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1, got {eval_every}")
    finite = np.isfinite(X).all(axis=1) & (np.abs(np.nan_to_num(X)) <= cfg.messages.max_abs_value).all(axis=1)
    _count_invalid(X, finite, table, cfg.messages.max_abs_value, not_learned)
    core = LearningCore.from_config(cfg)
    batch = batch_size or cfg.kafka.max_batch
    n = X.shape[0]
    continual = _Continual(core, test, task, eval_every) if test is not None else None
    cuts = continual.cuts(finite, y) if continual is not None else set()

    events: list[dict[str, Any]] = []
    curve_n: list[int] = []
    curve_acc: list[float] = []
    curve_g: list[float] = []
    errors: list[np.ndarray] = []
    head = getattr(core.learner, "head", core.learner)
    t0 = time.perf_counter()
    start = 0
    while start < n:
        stop = min(n, start + batch)
        nxt = [c for c in cuts if start < c < stop]
        if nxt:
            stop = min(nxt)
        keep = np.flatnonzero(finite[start:stop])
        idx = start + keep
        dec = Decoded(rows=idx, X=X[idx], y=[y[i] for i in idx], ids=[None] * len(idx), ts=[None] * len(idx),
                      task=[task[i] for i in idx])
        res = core.process(dec)
        for rec, reason in res.bad:
            kind = "max_classes" if "max_classes" in reason else "invalid_record"
            shown = (f"label beyond messages.max_classes={cfg.messages.max_classes} (a new class after the first "
                     f"{cfg.messages.max_classes})" if kind == "max_classes" else reason)
            not_learned.add(kind, shown, lines[rec] if lines else None)
        for i in idx.tolist():
            if y[i] is None:
                not_learned.add("unlabelled", "no label (predicted, not learned)", lines[i] if lines else None,
                                table.label)
        if keep_errors and res.errors.size:
            errors.append(res.errors)
        for e in res.events:
            events.append({"index": e.index, "detector": e.detector, "kind": e.kind, "statistic": e.statistic,
                           "action": core.action_for(e)})
        if res.learned:
            curve_n.append(core.labelled_seen)
            curve_acc.append(core.metrics.window_accuracy)
            g = getattr(head, "forgetting_", None)
            if isinstance(g, (int, float)):
                curve_g.append(float(g))
        if continual is not None:
            continual.after(stop, [task[i] for i in idx if y[i] is not None])
        start = stop
    elapsed = time.perf_counter() - t0
    s = core.metrics.summary()
    counts = core.drift_counts
    by_reason = not_learned.entries()
    result: dict[str, Any] = {
        "data": "<arrays>", "learner": cfg.learner.name, "samples": core.labelled_seen,
        "rows": core.labelled_seen + not_learned.total, "not_learned": not_learned.total,
        "not_learned_by_reason": by_reason,
        "skipped_invalid": sum(e["rows"] for e in by_reason if e["kind"] != "unlabelled"),
        "warnings": list(table.warnings), "label_column": table.label, "batch_size": batch,
        "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"], "log_loss": s["log_loss"],
        "nochange_accuracy": s["nochange_accuracy"], "samples_per_s": core.labelled_seen / elapsed if elapsed else 0.0,
        "elapsed_s": elapsed, "drift_events": events,
        "drift_count_error": counts.get("error", 0), "drift_count_input": counts.get("input", 0),
        "error_fell": core.error_fell,
        "adapt": cfg.drift.adapt, "classes": [str(c) for c in core.learner.classes_],
        "forgetting_final": curve_g[-1] if curve_g else None,
        "curve": _thin({"n": curve_n, "accuracy_window": curve_acc, "forgetting": curve_g or None},
                       cfg.evaluation.window),
    }
    if continual is not None:
        result.update(continual.summary())
    if keep_errors:
        result["errors"] = np.concatenate(errors) if errors else np.zeros(0, dtype=np.uint8)
    return result


def _count_invalid(X: np.ndarray, ok: np.ndarray, table: Table, max_abs: float, not_learned: NotLearned) -> None:
    """Count the rows with an infinite value or one above ``max_abs``, by their first such column."""
    for i in np.flatnonzero(~ok).tolist():
        row = X[i]
        bad_finite = ~np.isfinite(row)
        j = int(np.flatnonzero(bad_finite | (np.abs(np.nan_to_num(row)) > max_abs))[0])
        column = table.features[j] if table.features and j < len(table.features) else f"x[{j}]"
        line = table.lines[i] if table.lines else None
        if bad_finite[j]:
            not_learned.add("not_finite", f"value that is not finite in column {column!r}", line, column)
        else:
            not_learned.add("above_max_abs_value", f"value above messages.max_abs_value={max_abs:g} in column "
                            f"{column!r}", line, column)


def _thin(curve: dict[str, Any], window: int) -> dict[str, Any]:
    """At most MAX_CURVE_POINTS points (every k-th), so a JSON result stays small."""
    n = len(curve["n"])
    step = max(1, -(-n // MAX_CURVE_POINTS))
    out: dict[str, Any] = {k: (v[step - 1::step] if v is not None else None) for k, v in curve.items()}
    if n and out["n"][-1] != curve["n"][-1]:  # always keep the last point
        for k, v in curve.items():
            if v is not None:
                out[k].append(v[-1])
    out["window"] = window
    return out


class _Continual:
    """Scores the model on held-out test rows of every task seen so far (see the module docstring)."""

    def __init__(self, core: LearningCore, test: Table, train_task: list[Any], eval_every: int | None) -> None:
        self.core = core
        self.test = test
        self.eval_every = eval_every
        ok = np.isfinite(test.X).all(axis=1)
        self.X_test = test.X[ok]
        self.y_test = np.array([test.y[i] for i in np.flatnonzero(ok)], dtype=object)
        self.task_test = [test.task[i] for i in np.flatnonzero(ok)]
        self.has_tasks = any(t is not None for t in train_task)
        order: list[Any] = []
        for t in list(train_task) + self.task_test:
            if t is not None and t not in order:
                order.append(t)
        self.tasks = order
        self.masks = {t: np.array([tt == t for tt in self.task_test], dtype=bool) for t in order}
        self.train_task = train_task
        self.seen: list[Any] = []
        self.current: Any = None
        self.points: list[int] = []
        self.matrix: list[list[float | None]] = []
        self.current_at: list[Any] = []
        self.task_end: dict[Any, int] = {}  # task -> row in matrix where its training (last) ended
        self.last_n = -1

    def cuts(self, finite: np.ndarray, y: list[Any]) -> set[int]:
        """Record positions (exclusive ends) where an evaluation happens: every ``eval_every``
        labelled samples and at every task change."""
        if not self.has_tasks:
            return set()
        labelled = np.array([yy is not None for yy in y], dtype=bool) & finite
        cum = np.cumsum(labelled)
        cuts: set[int] = set()
        if self.eval_every:
            hit = labelled & (cum % self.eval_every == 0)
            cuts.update((np.flatnonzero(hit) + 1).tolist())
        t = self.train_task
        prev = None
        for i in np.flatnonzero(labelled).tolist():
            if prev is not None and t[i] != t[prev]:
                cuts.add(prev + 1)
            prev = i
        self._task_changes = cuts
        return cuts

    def after(self, stop: int, tasks_learned: list[Any]) -> None:
        if not self.has_tasks:
            return
        for t in tasks_learned:
            if t is not None:
                if t not in self.seen:
                    self.seen.append(t)
                self.current = t
        n = self.core.labelled_seen
        at_cut = stop in self._task_changes or stop >= len(self.train_task)
        if n == self.last_n or not at_cut:
            return
        self._score(n)
        if self.current is not None:
            self.task_end[self.current] = len(self.matrix) - 1

    def _score(self, n: int) -> None:
        acc = self._per_task()
        self.points.append(n)
        self.matrix.append([acc[t] if t in self.seen else None for t in self.tasks])
        self.current_at.append(self.current)
        self.last_n = n

    def _per_task(self) -> dict[Any, float]:
        learner = self.core.learner
        if not len(self.y_test) or not learner.classes_:
            return {t: 0.0 for t in self.tasks}
        hit = np.asarray(learner.predict(self.X_test) == self.y_test, dtype=bool)
        self._last_hit = hit
        return {t: float(hit[m].mean()) if m.any() else float("nan") for t, m in self.masks.items()}

    def summary(self) -> dict[str, Any]:
        learner = self.core.learner
        if len(self.y_test) and learner.classes_:
            final = float(np.mean(learner.predict(self.X_test) == self.y_test))
        else:
            final = 0.0
        out: dict[str, Any] = {"final_accuracy": final}
        if not self.has_tasks or not self.matrix:
            return out
        if self.points[-1] != self.core.labelled_seen:
            self._score(self.core.labelled_seen)
        M = self.matrix
        seen_means = [float(np.mean([v for v in row if v is not None])) for row in M if any(v is not None for v in row)]
        col = {t: j for j, t in enumerate(self.tasks)}
        trained = [t for t in self.seen]
        T = len(trained)
        last = self.current
        old = [t for t in trained if t != last]
        final_row = M[-1]
        forgetting = [M[self.task_end[t]][col[t]] - final_row[col[t]] for t in old]  # type: ignore[operator]
        mins: list[Any] = []
        for t in old:
            after: list[Any] = [M[r][col[t]] for r in range(self.task_end[t] + 1, len(M))]
            mins.append(min(after) if after else final_row[col[t]])
        min_acc = float(np.mean(mins)) if mins else None
        last_acc = final_row[col[last]] if last is not None else None
        if T <= 1 or min_acc is None:
            wc_acc = last_acc
        else:
            wc_acc = last_acc / T + (1 - 1 / T) * min_acc  # type: ignore[operator]
        out.update({
            "aaa": float(np.mean(seen_means)) if seen_means else None,
            "forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
            "min_acc": min_acc, "wc_acc": wc_acc,
            "accuracy_matrix": M, "eval_points": self.points, "tasks": [_jsonable(t) for t in self.tasks],
            "task_ends": {str(_jsonable(t)): self.points[r] for t, r in self.task_end.items()},
            "eval_every": self.eval_every, "current_task": [_jsonable(t) for t in self.current_at],
        })
        return out


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, str)) or v is None else str(v)
