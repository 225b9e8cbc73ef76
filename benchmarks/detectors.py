"""Per-sample cost of the drift monitors: river's detectors (the monitor before its state became exact)
against ``ocld.core.detectors`` (the monitor now), in the same run.

The error monitor is the one ``config/kalman.yaml`` ships: ADWIN (river's defaults) plus a one-sided
Page-Hinkley test (``drift.also``: threshold 20, mode up, delta 0.02) on the same 0/1 errors. The
stream: 200,000 seeded 0/1 errors whose rate moves between 0.08 and 0.30 every 20,000 samples (so
both detectors fire). Each monitor is fed in batches of ``--batch`` errors (100: what the learning
core feeds with adaptation on, one ``drift.adapt_grid`` segment at a time; 500: a poll). The old
monitor is a copy of ``ocld.core.drift.DriftMonitor.update`` as of commit b260c60: a Python loop over
the samples calling each river detector's ``update`` and reading its estimation before and its
``drift_detected`` after. Both must raise the same events (checked, printed).

The input monitor (``drift.input``, off in every shipped config) is measured too: its default ADWIN
(clock 1) on the block means of 16 of 32 Gaussian features, blocks of 100 rows, one mean shift.

CPU time of this thread, repeats interleaved (old, new, old, new, ...), the minimum per cell.

    python benchmarks/detectors.py                     # batches of 100 and 500, 5 repeats
    python benchmarks/detectors.py --batch 100 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KALMAN_ALSO = [{"detector": "PageHinkley", "params": {"threshold": 20.0, "mode": "up", "delta": 0.02}}]


def error_stream(n: int = 200_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.resize([0.08, 0.30, 0.10, 0.20, 0.08], n // 20_000 + 1)
    return (rng.random(n) < np.repeat(rates, 20_000)[:n]).astype(np.float64)


class RiverErrorMonitor:
    """The error monitor before its state became exact (ocld.core.drift at b260c60): river detectors,
    one Python-level update per sample and detector."""

    def __init__(self, detector: str, params: dict[str, Any], also: list[dict[str, Any]]) -> None:
        from river import drift

        classes = {"ADWIN": drift.ADWIN, "PageHinkley": drift.PageHinkley}
        self.names = [detector] + [a["detector"] for a in also]
        self.detectors: list[Any] = ([classes[detector](**params)]
                                     + [classes[a["detector"]](**a["params"]) for a in also])
        self.n_seen = 0

    def update(self, values: np.ndarray) -> list[tuple[int, str, bool | None]]:
        fired: dict[int, tuple[int, str, bool | None]] = {}
        for name, det in zip(self.names, self.detectors):
            has_mean = isinstance(getattr(det, "estimation", None), (int, float))
            mode = getattr(det, "mode", None)
            one_sided = {"up": True, "down": False}.get(mode) if isinstance(mode, str) else None
            for j, v in enumerate(np.asarray(values, dtype=np.float64).tolist()):
                before = det.estimation if has_mean else None
                det.update(v)
                if det.drift_detected:
                    rising = one_sided if one_sided is not None else (
                        bool(det.estimation > before) if has_mean and before is not None else None)
                    fired.setdefault(j, (self.n_seen + j, name, rising))
        self.n_seen += len(values)
        return [fired[j] for j in sorted(fired)]


class RiverInputDetectors:
    """The input monitor's detector feeding before: one river ADWIN per feature, one ``update`` per block."""

    def __init__(self, k: int, params: dict[str, Any]) -> None:
        from river import drift

        self.detectors = [drift.ADWIN(**params) for _ in range(k)]

    def feed(self, Z: np.ndarray) -> list[tuple[int, int]]:
        out = []
        for b, z in enumerate(Z.tolist()):
            for j, det in enumerate(self.detectors):
                det.update(z[j])
                if det.drift_detected:
                    out.append((b, j))
        return out


INPUT_PARAMS = {"clock": 1, "min_window_length": 2, "grace_period": 5}  # drift.input's default


def _old_error_monitor(errors: np.ndarray, batch: int) -> list:
    m = RiverErrorMonitor("ADWIN", {}, KALMAN_ALSO)
    return [e for a in range(0, errors.size, batch) for e in m.update(errors[a:a + batch])]


def _new_error_monitor(errors: np.ndarray, batch: int) -> list:
    from ocld.core.drift import DriftMonitor

    m = DriftMonitor("ADWIN", {}, also=KALMAN_ALSO)
    return [(e.index, e.detector, e.rising) for a in range(0, errors.size, batch)
            for e in m.update(errors[a:a + batch])]


def _old_input_detectors(Z: np.ndarray, per_poll: int) -> list:
    d = RiverInputDetectors(Z.shape[1], INPUT_PARAMS)
    return [(a + b, j) for a in range(0, Z.shape[0], per_poll) for b, j in d.feed(Z[a:a + per_poll])]


def _new_input_detectors(Z: np.ndarray, per_poll: int) -> list:
    from ocld.core.detectors import ADWIN

    dets = [ADWIN(**INPUT_PARAMS) for _ in range(Z.shape[1])]
    out = []
    for a in range(0, Z.shape[0], per_poll):
        out += [(a + d.index, j) for j, det in enumerate(dets) for d in det.update_many(Z[a:a + per_poll, j])]
    return sorted(out)


def _race(runs: dict[str, Callable[[], list]], repeats: int) -> tuple[dict[str, float], dict[str, list]]:
    """Minimum CPU seconds (this thread) of each run over ``repeats`` interleaved rounds, and its output."""
    best = dict.fromkeys(runs, float("inf"))
    out: dict[str, list] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.thread_time()
            out[name] = fn()
            best[name] = min(best[name], time.thread_time() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    errors = error_stream(args.samples)
    rows = []
    for batch in args.batch:
        best, events = _race({"old": partial(_old_error_monitor, errors, batch),
                              "new": partial(_new_error_monitor, errors, batch)}, args.repeats)
        rows.append((f"error monitor, kalman.yaml (ADWIN + PageHinkley up), batches of {batch}",
                     best["old"] / errors.size * 1e6, best["new"] / errors.size * 1e6, len(events["new"]),
                     events["old"] == events["new"]))

    # input monitor: 16 monitored features, blocks of 100 rows, polls of 500 rows: 5 block means per
    # feature and poll, one ADWIN(clock=1) per feature
    rng = np.random.default_rng(1)
    n_blocks = 2_000
    Z = rng.normal(size=(n_blocks, 16))
    Z[n_blocks // 2:, 3] += 1.0
    best, events = _race({"old": partial(_old_input_detectors, Z, 5), "new": partial(_new_input_detectors, Z, 5)},
                         args.repeats)
    samples = n_blocks * 100
    rows.append(("input monitor detectors, 16 features x ADWIN(clock=1), blocks of 100, polls of 500",
                 best["old"] / samples * 1e6, best["new"] / samples * 1e6, len(events["new"]),
                 sorted(events["old"]) == events["new"]))

    print(f"{args.samples:,} errors; CPU time of this thread, minimum of {args.repeats} interleaved repeats\n")
    print("| monitor | river-based (before), µs/sample | ocld.core.detectors (now), µs/sample | now / before "
          "| events | same events |")
    print("|---|---:|---:|---:|---:|---|")
    for name, before, now, n_events, same in rows:
        print(f"| {name} | {before:.3f} | {now:.3f} | {now / before:.2f} | {n_events} | {'yes' if same else 'NO'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
