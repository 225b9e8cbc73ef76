"""Class-incremental digits in several class orders against joint training (issue 21, item 3).

Each config learns ``data/digits_train.csv`` through the daemon's LearningCore (polls of
``--poll`` records, the config's drift monitor and adaptation) in 5 tasks of 2 classes, for each
class order, and once shuffled (seed 0: "joint"); the final model is scored on
``data/digits_test.csv``. A config whose feature maps do not move with the data (or that has
none) ends at its joint accuracy in every order; a running ``Standardizer`` moves as new classes
arrive, so what the ridge learned early sits on other features than what it learns late.

    python benchmarks/class_order.py       # analytic.yaml, with and without its Standardizer
    python benchmarks/class_order.py --configs config/analytic.yaml --orders 0123456789

Prints a Markdown table. No assertions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORDERS = ["3805917264", "9876543210", "4160295738"]


def final_accuracy(data: dict[str, Any], order: str | None, poll: int, train: Any, test: Any) -> float:
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore
    from ocld.stream.config import parse_config

    y = np.array([int(v) for v in train.y])
    if order is None:
        idx = np.random.default_rng(0).permutation(len(y))
    else:
        classes = [int(c) for c in order]
        idx = np.concatenate([np.flatnonzero(np.isin(y, classes[2 * t:2 * t + 2])) for t in range(5)])
    X, y = train.X[idx], y[idx]
    core = LearningCore.from_config(parse_config(copy.deepcopy(data), "class_order"))
    for a in range(0, len(y), poll):
        b = min(len(y), a + poll)
        n = b - a
        core.process(Decoded(rows=np.arange(a, b), X=X[a:b], y=[int(v) for v in y[a:b]], ids=[None] * n,
                             ts=[None] * n, task=[None] * n))
    pred = core.learner.predict(test.X)
    return float(np.mean([int(p) == int(t) for p, t in zip(pred, test.y)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", type=Path, default=[ROOT / "config" / "analytic.yaml"])
    ap.add_argument("--orders", nargs="+", default=ORDERS)
    ap.add_argument("--poll", type=int, default=100)
    ap.add_argument("--no-standardizer-too", action=argparse.BooleanOptionalAction, default=True,
                    help="also run each config with its feature maps removed")
    args = ap.parse_args(argv)
    from ocld.stream.files import read_table

    t0 = time.time()
    train, test = read_table(ROOT / "data" / "digits_train.csv"), read_table(ROOT / "data" / "digits_test.csv")
    rows = []
    for path in args.configs:
        data = yaml.safe_load(path.read_text())
        variants = [(path.name, data)]
        if args.no_standardizer_too and data.get("learner", {}).get("features"):
            bare = copy.deepcopy(data)
            bare["learner"]["features"] = []
            variants.append((f"{path.name}, no feature maps", bare))
        for name, d in variants:
            joint = final_accuracy(d, None, args.poll, train, test)
            accs = [final_accuracy(d, o, args.poll, train, test) for o in args.orders]
            rows.append((name, joint, accs))
            print(f"{name}: joint {joint:.4f}, orders {[round(a, 4) for a in accs]}", file=sys.stderr, flush=True)
    lines = [f"Class-incremental digits (5 tasks of 2 classes), final test accuracy; polls of {args.poll}.", "",
             "| config | joint (shuffled) | " + " | ".join(f"order {o}" for o in args.orders)
             + " | worst - joint |", "|---|---|" + "---|" * len(args.orders) + "---|"]
    for name, joint, accs in rows:
        lines.append(f"| {name} | {joint:.4f} | " + " | ".join(f"{a:.4f}" for a in accs)
                     + f" | {100 * (min(accs) - joint):+.1f} pts |")
    lines += ["", f"Run took {time.time() - t0:.0f} s."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
