"""Prequential (test-then-train) metrics, updated once per batch with array operations.

Tracks accuracy (total and over a sliding window), balanced accuracy (mean per-class
recall), log-loss, the "no change" baseline (predict the previous label, strong on
autocorrelated streams such as elec) and label delay. The accumulators are part of the
snapshot, so a restarted daemon continues the same totals. Never does I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ocld.buffers.ring import Ring
from ocld.learners.base import ClassIndex, LearnerState, labels_to_json

EPS = 1e-15


class PrequentialMetrics:
    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.labels = ClassIndex()
        self.n = 0
        self.correct = 0
        self.log_loss_sum = 0.0
        self.class_n = np.zeros(0, dtype=np.int64)
        self.class_correct = np.zeros(0, dtype=np.int64)
        self.ring = Ring(window, dtype=np.uint8)
        self.last_label = -1
        self.nochange_correct = 0
        self.delay_n = 0
        self.delay_sum = 0.0
        self.delay_max = 0.0

    def update(self, y_true: list[Any], proba: np.ndarray, classes: list[Any]) -> np.ndarray:
        """Score one batch: ``proba`` [n, len(classes)] for the true labels ``y_true``.

        Returns the 0/1 error of each sample (1 = wrong), in order.
        """
        n = len(y_true)
        if n == 0:
            return np.zeros(0, dtype=np.uint8)
        col = {c: j for j, c in enumerate(classes)}
        true_col = np.fromiter((col.get(label, -1) for label in y_true), dtype=np.int64, count=n)
        if proba.shape[1]:
            best = np.argmax(proba, axis=1)
            top = proba[np.arange(n), best]
            p_true = np.where(true_col >= 0, proba[np.arange(n), np.maximum(true_col, 0)], 0.0)
        else:
            best = np.full(n, -1)
            top = np.zeros(n)
            p_true = np.zeros(n)
        hit = (best == true_col) & (top > 0) & (true_col >= 0)
        errors = (~hit).astype(np.uint8)

        idx = self.labels.encode(y_true)
        k = len(self.labels)
        if self.class_n.size < k:
            self.class_n = np.pad(self.class_n, (0, k - self.class_n.size))
            self.class_correct = np.pad(self.class_correct, (0, k - self.class_correct.size))
        self.class_n += np.bincount(idx, minlength=k)
        self.class_correct += np.bincount(idx, weights=hit, minlength=k).astype(np.int64)

        self.n += n
        self.correct += int(hit.sum())
        self.log_loss_sum += float(-np.log(np.clip(p_true, EPS, 1.0)).sum())

        prev = np.concatenate(([self.last_label], idx[:-1]))
        self.nochange_correct += int((prev == idx).sum())
        self.last_label = int(idx[-1])

        self.ring.push(hit.astype(np.uint8))
        return errors

    def add_delays(self, delays: np.ndarray) -> None:
        if delays.size:
            self.delay_n += int(delays.size)
            self.delay_sum += float(delays.sum())
            self.delay_max = max(self.delay_max, float(delays.max()))

    # -- read ------------------------------------------------------------------------
    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def window_accuracy(self) -> float:
        if not self.ring.filled:
            return 0.0
        return float(self.ring.data[: self.ring.filled].mean())  # unfilled slots are at the end

    @property
    def balanced_accuracy(self) -> float:
        seen = self.class_n > 0
        return float((self.class_correct[seen] / self.class_n[seen]).mean()) if seen.any() else 0.0

    @property
    def log_loss(self) -> float:
        return self.log_loss_sum / self.n if self.n else 0.0

    @property
    def nochange_accuracy(self) -> float:
        # The first sample has no previous label: it counts as wrong for the baseline.
        return self.nochange_correct / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "labelled": self.n,
            "accuracy": self.accuracy,
            "accuracy_window": self.window_accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "log_loss": self.log_loss,
            "nochange_accuracy": self.nochange_accuracy,
            "label_delay_mean_s": self.delay_sum / self.delay_n if self.delay_n else 0.0,
            "label_delay_max_s": self.delay_max,
            "delayed_labels": self.delay_n,
        }

    # -- state -----------------------------------------------------------------------
    def to_state(self) -> LearnerState:
        return LearnerState(
            "PrequentialMetrics", {"window": self.window},
            {"class_n": self.class_n.copy(), "class_correct": self.class_correct.copy(), "ring": self.ring.data.copy()},
            {"labels": labels_to_json(self.labels.classes), "n": self.n, "correct": self.correct,
             "log_loss_sum": self.log_loss_sum, "ring_pos": self.ring.pos, "ring_filled": self.ring.filled,
             "last_label": self.last_label, "nochange_correct": self.nochange_correct,
             "delay_n": self.delay_n, "delay_sum": self.delay_sum, "delay_max": self.delay_max},
        )

    @classmethod
    def from_state(cls, state: LearnerState) -> PrequentialMetrics:
        m = cls(**state.params)
        meta = state.meta
        m.labels = ClassIndex(meta["labels"])
        for name in ("n", "correct", "last_label", "nochange_correct", "delay_n"):
            setattr(m, name, int(meta[name]))
        for name in ("log_loss_sum", "delay_sum", "delay_max"):
            setattr(m, name, float(meta[name]))
        m.class_n = state.arrays["class_n"].astype(np.int64)
        m.class_correct = state.arrays["class_correct"].astype(np.int64)
        m.ring.data = state.arrays["ring"].astype(np.uint8)
        m.ring.pos, m.ring.filled = int(meta["ring_pos"]), int(meta["ring_filled"])
        return m
