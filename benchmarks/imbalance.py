"""AnalyticRidge: pseudo-feature compensation on imbalanced streams, and speed/accuracy on elec.

Prints Markdown tables. Not a test: run it by hand.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.imbalance            # imbalance table
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.imbalance --elec     # speed + accuracy on elec

Imbalance: every stream is learned once, test-then-train with the learner's exact
prequential step (``learn_predict``: each sample is predicted by the model that has
learned every sample before it, independent of the batch size). Balanced accuracy is the
mean per-class recall. Streams (all seeded):
  - synth-20 / synth-50: 3 Gaussian classes in 8-D (random means, unit noise), class
    priors 20:5:1 and 50:12.5:1, 20,000 samples; "holdout" is a balanced 6,000-sample
    test set from the same classes, predicted by the final model.
  - elec-1:20: data/elec.csv in time order with the "up" class (1) kept with probability
    chosen so that up:down is about 1:20.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ocld.learners.analytic import AnalyticRidge
from ocld.learners.base import DriftEvent
from ocld.learners.features import Standardizer
from ocld.learners.pipeline import Pipeline

DATA = Path(__file__).resolve().parent.parent / "data"


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def synth(n: int, priors: list[float], d: int = 8, seed: int = 0, sep: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes; the class means depend only on ``seed`` (so test sets match)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(priors), d)) * sep
    draw = np.random.default_rng([seed, n, len(priors), int(1000 * priors[0])])
    y = draw.choice(len(priors), size=n, p=np.asarray(priors) / np.sum(priors))
    return means[y] + draw.normal(size=(n, d)), y


def load_elec() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(DATA / "elec.csv", delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(np.int64)


def imbalanced_elec(ratio: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_elec()
    n_down, n_up = np.sum(y == 0), np.sum(y == 1)
    keep = (y == 0) | (np.random.default_rng(seed).random(len(y)) < n_down / (ratio * n_up))
    return X[keep], y[keep]


def prequential(model: Pipeline, X: np.ndarray, y: np.ndarray, batch: int = 100) -> tuple[np.ndarray, float]:
    preds = []
    start = time.perf_counter()
    for a in range(0, len(y), batch):
        P = model.learn_predict(X[a : a + batch], y[a : a + batch])
        preds.append(np.asarray(model.classes_)[P.argmax(axis=1)])
    return np.concatenate(preds), len(y) / (time.perf_counter() - start)


def imbalance_table(expansion_size: int) -> None:
    streams = {
        "synth-20": (synth(20000, [20, 5, 1], seed=1), synth(6000, [1, 1, 1], seed=1)),
        "synth-50": (synth(20000, [50, 12.5, 1], seed=2), synth(6000, [1, 1, 1], seed=2)),
        "elec-1:20": (imbalanced_elec(20.0), None),
    }
    print(f"AnalyticRidge(expansion_size={expansion_size}) behind a Standardizer, exact prequential, batches of 100\n")
    print(
        "| stream | samples | minority share | compensation | accuracy | balanced accuracy | holdout balanced acc. "
        "| samples/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, ((X, y), test) in streams.items():
        share = np.bincount(y).min() / len(y)
        for comp in (False, True):
            model = Pipeline([Standardizer()], AnalyticRidge(expansion_size=expansion_size, compensate_imbalance=comp))
            pred, speed = prequential(model, X, y)
            holdout = "-"
            if test is not None:
                holdout = f"{balanced_accuracy(test[1], model.predict(test[0]).astype(np.int64)):.4f}"
            print(
                f"| {name} | {len(y)} | {share:.3f} | {'on' if comp else 'off'} | {np.mean(pred == y):.4f} "
                f"| {balanced_accuracy(y, pred):.4f} | {holdout} | {speed:,.0f} |",
                flush=True,
            )


def elec_table(expansion_size: int) -> None:
    X, y = load_elec()
    n = len(y)
    print(f"elec ({n} samples), Pipeline([Standardizer()], AnalyticRidge(expansion_size={expansion_size}))\n")
    print(f'"no change" baseline accuracy: {np.mean(y[1:] == y[:-1]):.4f}\n')
    print(
        "| batch | predict-then-learn accuracy | samples/s | exact prequential (learn_predict) accuracy | samples/s |"
    )
    print("|---|---|---|---|---|")
    for batch in (1, 10, 100):
        model = Pipeline([Standardizer()], AnalyticRidge(expansion_size=expansion_size))
        correct = 0
        start = time.perf_counter()
        for a in range(0, n, batch):
            Xb, yb = X[a : a + batch], y[a : a + batch]
            P = model.predict_proba(Xb)
            if P.shape[1]:
                correct += int(np.sum(np.asarray(model.classes_)[P.argmax(axis=1)] == yb))
            model.learn(Xb, yb)
        speed = n / (time.perf_counter() - start)
        model = Pipeline([Standardizer()], AnalyticRidge(expansion_size=expansion_size))
        exact, exact_speed = prequential(model, X, y, batch=batch)
        print(
            f"| {batch} | {correct / n:.4f} | {speed:,.0f} | {np.mean(exact == y):.4f} | {exact_speed:,.0f} |",
            flush=True,
        )
    try:
        from river.drift import ADWIN
    except ImportError:  # pragma: no cover
        return

    print("\nWith drift adaptation (river ADWIN on the 0/1 error, then adapt(): discount old statistics), batch 100:\n")
    print("| adapt_discount | drifts | exact prequential accuracy |")
    print("|---|---|---|")
    for discount in (None, 0.5, 0.1, 0.01):
        model = Pipeline([Standardizer()], AnalyticRidge(expansion_size=expansion_size, adapt_discount=discount))
        detector, drifts, correct = ADWIN(), 0, 0
        for a in range(0, n, 100):
            P = model.learn_predict(X[a : a + 100], y[a : a + 100])
            errors = np.asarray(model.classes_)[P.argmax(axis=1)] != y[a : a + 100]
            correct += int(np.sum(~errors))
            fired = False
            for e in errors:
                detector.update(float(e))
                fired = fired or detector.drift_detected
            if fired:
                drifts += 1
                model.adapt(DriftEvent(index=a + len(errors) - 1, detector="ADWIN"))  # the batch's last sample
        print(f"| {discount} | {drifts} | {correct / n:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elec", action="store_true", help="speed and accuracy on elec instead of the imbalance table")
    parser.add_argument("--expansion-size", type=int, default=512)
    args = parser.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") is None:
        print("(tip: OPENBLAS_NUM_THREADS=1 is much faster on a shared 2-core machine)\n")
    if args.elec:
        elec_table(args.expansion_size)
    else:
        imbalance_table(args.expansion_size)


if __name__ == "__main__":
    main()
