"""Class-incremental digits: experience replay vs replay + momentum knowledge distillation.

scikit-learn's bundled digits (1,797 8x8 images, pixels 0..16, scaled here to [0, 1] by
/16), 5 tasks of 2 classes (0-1, 2-3, 4-5, 6-7, 8-9), a 70/30 stratified split per class
with a fixed seed (0), single pass over the training stream in task order (shuffled
within each task by the run's seed), stream batch 10, replay buffer 200. Reported: final
accuracy on the whole test set after the last task, per seed and mean.

Also, when ``learners/analytic.py`` exists: AnalyticRidge on the same stream, and its
joint-training accuracy (one batch ``learn`` on all training data).

    python benchmarks/digits_cl.py                 # table (about a minute on 2 cores)
    python benchmarks/digits_cl.py --export data   # also writes data/digits_{train,test}.csv

This is a script that prints a table, not a test. It never touches Kafka or Redis.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPLIT_SEED = 0
N_TASKS = 5
BATCH = 10
BUFFER = 200


def digits_split(split_seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """70/30 split per class (stratified), pixels / 16. Returns X_train, y_train, X_test, y_test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    tr, te = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(0.7 * len(idx)))
        tr.append(idx[:n_train])
        te.append(idx[n_train:])
    tr_idx = np.concatenate(tr)
    te_idx = np.sort(np.concatenate(te))
    return X[tr_idx], y[tr_idx], X[te_idx], y[te_idx]


def task_of(y: np.ndarray) -> np.ndarray:
    return (np.asarray(y) // 2).astype(np.int64)


def task_stream(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in task order 0..4, shuffled within each task by ``seed``. Returns X, y, task."""
    rng = np.random.default_rng(seed)
    t = task_of(y)
    order = []
    for k in range(N_TASKS):
        idx = np.flatnonzero(t == k)
        order.append(idx[rng.permutation(len(idx))])
    o = np.concatenate(order)
    return X[o], y[o], t[o]


def run_stream(learner: Any, X: np.ndarray, y: np.ndarray, batch: int = BATCH) -> float:
    """Single pass, batches of ``batch``; returns seconds spent learning."""
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        learner.learn(X[i : i + batch], y[i : i + batch])
    return time.perf_counter() - t0


def accuracy(learner: Any, X: np.ndarray, y: np.ndarray) -> float:
    pred = learner.predict(X)
    return float(np.mean(pred.astype(np.int64) == y))


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, task: np.ndarray) -> None:
    header = ",".join([f"p{j}" for j in range(X.shape[1])] + ["task", "y"])
    with open(path, "w") as f:
        f.write(header + "\n")
        for row, t, label in zip(X, task, y):
            # pixels / 16 are exact binary fractions: short, lossless decimal text
            f.write(",".join(repr(float(v)) for v in row) + f",{int(t)},{int(label)}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--export", type=Path, default=None, help="folder for digits_train.csv / digits_test.csv")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ocld.learners.mkd import MomentumKD

    Xtr, ytr, Xte, yte = digits_split()
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        Xs, ys, ts = task_stream(Xtr, ytr, seed=0)
        write_csv(args.export / "digits_train.csv", Xs, ys, ts)
        Xt, yt, tt = task_stream(Xte, yte, seed=0)
        write_csv(args.export / "digits_test.csv", Xt, yt, tt)
        print(f"wrote {args.export}/digits_train.csv ({len(ys)} rows), digits_test.csv ({len(yt)} rows)\n")

    have_analytic = importlib.util.find_spec("learners.analytic") is not None and os.path.exists(
        Path(__file__).resolve().parents[1] / "learners" / "analytic.py"
    )
    makers: dict[str, Callable[[int], Any]] = {
        "ER": lambda s: MomentumKD(mkd=False, buffer_size=BUFFER, seed=s),
        "ER+MKD": lambda s: MomentumKD(mkd=True, buffer_size=BUFFER, seed=s),
    }
    if have_analytic:
        from ocld.learners.analytic import AnalyticRidge

        makers["AnalyticRidge"] = lambda s: AnalyticRidge(seed=s)

    rows: list[dict[str, float]] = []
    speeds: dict[str, list[float]] = {k: [] for k in makers}
    for seed in args.seeds:
        Xs, ys, _ = task_stream(Xtr, ytr, seed)
        row: dict[str, float] = {}
        for name, make in makers.items():
            learner = make(seed)
            secs = run_stream(learner, Xs, ys)
            speeds[name].append(len(ys) / secs)
            row[name] = accuracy(learner, Xte, yte)
        if have_analytic:
            joint = makers["AnalyticRidge"](seed)
            joint.learn(Xs, ys)
            row["AnalyticRidge joint"] = accuracy(joint, Xte, yte)
        rows.append(row)

    cols = list(rows[0])
    print(f"Class-incremental digits, {N_TASKS} tasks x 2 classes, batch {BATCH}, buffer {BUFFER}, "
          f"{len(ytr)} train / {len(yte)} test; final test accuracy\n")
    print("| seed | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for seed, row in zip(args.seeds, rows):
        print(f"| {seed} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean([r[c] for r in rows]):.3f}**" for c in cols) + " |")
    gain = np.mean([r["ER+MKD"] - r["ER"] for r in rows])
    print(f"\nER+MKD - ER: {100 * gain:+.1f} points (mean over {len(rows)} seeds)")
    print(f"learning speed (samples/s, torch threads = {args.threads:d}): "
          + ", ".join(f"{k} {np.mean(v):,.0f}" for k, v in speeds.items()))


if __name__ == "__main__":
    main()
