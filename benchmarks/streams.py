"""Seeded synthetic drift streams for benchmarks (river.datasets.synth), as numpy arrays.

``make_stream(name, n, seed) -> (X float64 [n, d], y int64 [n], drift_positions)``:

| name | d | classes | drift | ``drift_positions`` |
|---|---|---|---|---|
| ``sea`` | 3 | 2 | abrupt: SEA variant 0 -> 1 -> 2 -> 3 (thresholds 8, 9, 7, 9.5), 10 % label noise | ``[n//4, n//2, 3n//4]`` |
| ``agrawal`` | 9 | 2 | abrupt: Agrawal classification function 0 -> 2 -> 4 -> 6, perturbation 0.05 | ``[n//4, n//2, 3n//4]`` |
| ``hyperplane`` | 10 | 2 | incremental: 2 of 10 weights rotate by 0.001 per sample, 5 % noise | ``[]`` (drift at every sample) |
| ``rbf`` | 10 | 2 | incremental: all 50 centroids move at speed 0.001 per sample | ``[]`` (drift at every sample) |

For ``sea`` and ``agrawal`` the concept switches abruptly (width 1): segment k (rows
``k*n//4 .. (k+1)*n//4 - 1``) is drawn from its own generator seeded ``seed + k``, and
the first row of segment k (k = 1, 2, 3) is the drift position. Agrawal's categorical
attributes (elevel, car, zipcode) come out as integer codes. Labels are 0/1 ints.

Pure generators (no Kafka, no Redis); ``write_csv`` is the one helper that writes a file.

    python benchmarks/streams.py sea 10000 0 --csv /tmp/sea.csv
"""  # noqa: E501 (the Markdown table above cannot wrap)

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

STREAMS = ("sea", "agrawal", "hyperplane", "rbf")
_AGRAWAL_FUNCTIONS = (0, 2, 4, 6)


def _take(gen: Iterable[tuple[dict[Any, Any], Any]], k: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    for x, label in itertools.islice(gen, k):
        rows.append(list(x.values()))
        labels.append(int(label))
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    return X, np.asarray(labels, dtype=np.int64)


def _quarters(n: int) -> list[int]:
    return [k * n // 4 for k in range(5)]


def make_stream(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """X float64 [n, d], y int64 [n] (0/1), and the abrupt drift positions (see module docstring)."""
    from river.datasets import synth

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen: Any
    if name in ("sea", "agrawal"):
        bounds = _quarters(n)
        parts = []
        width = 3 if name == "sea" else 9
        for k in range(4):
            if name == "sea":
                gen = synth.SEA(variant=k, noise=0.1, seed=seed + k)
            else:
                gen = synth.Agrawal(classification_function=_AGRAWAL_FUNCTIONS[k], seed=seed + k, perturbation=0.05)
            parts.append(_take(gen, bounds[k + 1] - bounds[k], width))
        X = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        drifts = [b for b in bounds[1:4] if 0 < b < n]
        return X, y, drifts
    if name == "hyperplane":
        gen = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=2, mag_change=0.001, noise_percentage=0.05)
        X, y = _take(gen, n, 10)
        return X, y, []
    if name == "rbf":
        gen = synth.RandomRBFDrift(
            seed_model=seed, seed_sample=seed + 1, n_classes=2, n_features=10,
            n_centroids=50, change_speed=0.001, n_drift_centroids=50,
        )
        X, y = _take(gen, n, 10)
        return X, y, []
    raise ValueError(f"unknown stream {name!r}; choose one of {list(STREAMS)}")


def write_csv(path: str | Path, X: np.ndarray, y: np.ndarray) -> None:
    """CSV with header ``x0..x{d-1},y`` (the last column is the label), full float precision."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).reshape(-1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    with open(path, "w") as f:
        f.write(",".join([f"x{j}" for j in range(X.shape[1])] + ["y"]) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate a seeded synthetic drift stream.")
    ap.add_argument("name", choices=STREAMS)
    ap.add_argument("n", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args(argv)
    X, y, drifts = make_stream(args.name, args.n, args.seed)
    print(f"{args.name}: X {X.shape}, class balance {np.bincount(y, minlength=2) / max(len(y), 1)}, drifts at {drifts}")
    if args.csv is not None:
        write_csv(args.csv, X, y)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
