"""Does the default config catch small abrupt switches, and stay quiet on a stationary stream?

Issue 21, item 4, measured with ``config/default.yaml`` unchanged through ``ocld.stream.offline.
evaluate_arrays`` (the code path of ``ocld evaluate``: the daemon's LearningCore, micro-batches of
``kafka.max_batch`` records, the config's drift monitor and adaptation):

- SEA with three abrupt switches (river ``synth.SEA`` variants 0 -> 1 -> 2 -> 3, noise 0.1,
  40,000 samples). The switch positions are drawn per stream seed (uniform in [4,000, 36,000],
  at least 6,000 apart, from ``numpy.random.default_rng(1000 + seed)``), so nothing is tuned to
  fixed positions. A switch counts as detected when an error event (any action) falls within
  ``--within`` samples after it; the table gives each delay and what the core did.
- Stationary river ``synth.RandomRBF`` (2 classes, 10 features, 50 centroids, seed_model s,
  seed_sample s + 1), 20,000 samples: the alarms raised, i.e. error events (the drift history,
  ``drift_count`` in the status). Where the monitor also reported the error rate falling (ADWIN
  fires in both directions), that is counted in its own column.

    python benchmarks/detection.py                          # seeds 0-10 each, about 1 min on 2 cores
    python benchmarks/detection.py --seeds 0 1 2 --config config/kalman.yaml

Prints Markdown tables and writes them to benchmarks/out/detection.md. No assertions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEA_SAMPLES = 40_000
RBF_SAMPLES = 20_000


def switch_positions(seed: int, n: int = SEA_SAMPLES, k: int = 3, gap: int = 6000, margin: int = 4000) -> list[int]:
    """``k`` sorted positions in [margin, n - margin], at least ``gap`` apart (rejection sampling)."""
    rng = np.random.default_rng(1000 + seed)
    while True:
        pos = np.sort(rng.integers(margin, n - margin + 1, size=k))
        if np.all(np.diff(pos) >= gap):
            return [int(p) for p in pos]


def _take(gen: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, ys = [], []
    for x, y in gen.take(n):
        rows.append(list(x.values()))
        ys.append(int(y))
    return np.asarray(rows, dtype=np.float64), np.asarray(ys, dtype=np.int64)


def sea(seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from river.datasets import synth

    switches = switch_positions(seed)
    bounds = [0, *switches, SEA_SAMPLES]
    parts = [_take(synth.SEA(variant=k, noise=0.1, seed=seed + k), bounds[k + 1] - bounds[k]) for k in range(4)]
    return np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), switches


def rbf(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from river.datasets import synth

    gen = synth.RandomRBF(seed_model=seed, seed_sample=seed + 1, n_classes=2, n_features=10, n_centroids=50)
    return _take(gen, RBF_SAMPLES)


def evaluate(cfg: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from ocld.stream.files import Table
    from ocld.stream.offline import evaluate_arrays

    n = len(y)
    table = Table(X=X, y=y.tolist(), ids=[None] * n, ts=[None] * n, task=[None] * n)
    return evaluate_arrays(cfg, table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "default.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(11)))
    ap.add_argument("--within", type=int, default=1500, help="a switch is detected by an event this soon after it")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "detection.md")
    args = ap.parse_args(argv)
    from ocld.stream.config import parse_config

    cfg = parse_config(yaml.safe_load(args.config.read_text()), str(args.config))
    t0 = time.time()
    lines = [f"## Drift detection with {args.config.name}: SEA switches and a stationary RandomRBF", ""]

    lines += [f"SEA, {SEA_SAMPLES:,} samples, three abrupt switches at positions drawn per seed; a switch is "
              f"detected when an error event falls within {args.within:,} samples after it.", "",
              "| seed | switches at | delay to the first event after each (action) | detected | "
              "events elsewhere | accuracy |", "|---|---|---|---|---|---|"]
    detected = total = 0
    for s in args.seeds:
        X, y, switches = sea(s)
        res = evaluate(cfg, X, y)
        ev = [e for e in res["drift_events"] if e["kind"] == "error"]
        cells, hits, near = [], 0, set()
        for p in switches:
            after = [e for e in ev if p <= e["index"] < p + args.within]
            if after:
                hits += 1
                cells.append(f"{after[0]['index'] - p:,} ({after[0]['action']})")
                near.update(id(e) for e in after)
            else:
                later = [e for e in ev if e["index"] >= p]
                cells.append("none" + (f" (next at +{later[0]['index'] - p:,})" if later else ""))
        other = [e for e in ev if id(e) not in near]
        detected += hits
        total += len(switches)
        other_s = ", ".join(f"{e['index']:,} {e['detector']} ({e['action']})" for e in other) or "none"
        lines.append(f"| {s} | {', '.join(f'{p:,}' for p in switches)} | {' / '.join(cells)} | {hits}/{len(switches)} "
                     f"| {other_s} | {res['accuracy']:.4f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Switches detected within {args.within:,} samples: {detected} of {total}.", ""]

    lines += [f"Stationary RandomRBF, {RBF_SAMPLES:,} samples: alarms are the error events (the drift history and "
              "`drift_count`).", "",
              "| seed | alarms | at (detector, action) | error-fell reports (not alarms) | accuracy |",
              "|---|---|---|---|---|"]
    worst = 0
    for s in args.seeds:
        X, y = rbf(s)
        res = evaluate(cfg, X, y)
        ev = [e for e in res["drift_events"] if e["kind"] == "error"]
        worst = max(worst, len(ev))
        at = ", ".join(f"{e['index']:,} ({e['detector']}, {e['action']})" for e in ev) or "none"
        lines.append(f"| {s} | {len(ev)} | {at} | {res.get('error_fell', 0)} | {res['accuracy']:.4f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Most alarms on one stationary stream: {worst}.", "",
              f"Run took {time.time() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
