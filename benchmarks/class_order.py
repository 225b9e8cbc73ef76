"""Class-incremental digits in many class orders against joint training (issue 21, item 3).

Each config learns ``data/digits_train.csv`` through the daemon's LearningCore (polls of
``--poll`` records, the config's drift monitor and adaptation) in 5 tasks of 2 classes, for each
class order, and shuffled ("joint", the mean over ``--joint-seeds`` shuffles); the final model is
scored on ``data/digits_test.csv``. The orders: the named ``--orders`` and ``--random-orders``
more drawn with ``--seed``. A config whose feature maps stop moving (``FixedStandardizer``) or
that has none ends near its joint accuracy in every order; a running ``Standardizer`` moves as
new classes arrive, so what the ridge learned early sits on other features than what it learns
late (``--compare``: the same config with a running Standardizer, and with no feature maps).

    python benchmarks/class_order.py                  # analytic.yaml, 9 named + 40 random orders
    python benchmarks/class_order.py --compare        # also the running Standardizer, no feature maps
    python benchmarks/class_order.py --configs config/analytic.yaml --orders 0123456789 --random-orders 0

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

ORDERS = ["3805917264", "9876543210", "4160295738", "5269074138", "0163985247", "9135640287", "0123456789",
          "1357924680", "8653492107"]


def final_accuracy(data: dict[str, Any], order: str | None, poll: int, train: Any, test: Any, seed: int = 0) -> float:
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore
    from ocld.stream.config import parse_config

    y = np.array([int(v) for v in train.y])
    if order is None:
        idx = np.random.default_rng(seed).permutation(len(y))
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
    ap.add_argument("--orders", nargs="*", default=ORDERS, help="named class orders (10 distinct digits each)")
    ap.add_argument("--random-orders", type=int, default=40, help="this many more orders, drawn with --seed")
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--joint-seeds", type=int, default=5, help="shuffles averaged for the joint accuracy")
    ap.add_argument("--poll", type=int, default=100)
    ap.add_argument("--compare", action="store_true",
                    help="also each config with a running Standardizer as its feature maps, and with none")
    args = ap.parse_args(argv)
    from ocld.stream.files import read_table

    for o in args.orders:
        if sorted(o) != list("0123456789"):
            ap.error(f"order {o!r} must list the ten digits 0-9 once each")
    rng = np.random.default_rng(args.seed)
    orders = list(args.orders) + ["".join(map(str, rng.permutation(10))) for _ in range(args.random_orders)]
    t0 = time.time()
    train, test = read_table(ROOT / "data" / "digits_train.csv"), read_table(ROOT / "data" / "digits_test.csv")
    rows = []
    for path in args.configs:
        data = yaml.safe_load(path.read_text())
        variants = [(f"`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`", data)]
        if args.compare:
            running = copy.deepcopy(data)
            running["learner"]["features"] = [{"name": "Standardizer"}]
            bare = copy.deepcopy(data)
            bare["learner"]["features"] = []
            variants += [("the same, running Standardizer", running), ("the same, no feature maps", bare)]
        for name, d in variants:
            joints = [final_accuracy(d, None, args.poll, train, test, seed=s) for s in range(args.joint_seeds)]
            accs = [final_accuracy(d, o, args.poll, train, test) for o in orders]
            rows.append((name, joints, accs))
            worst = int(np.argmin(accs))
            print(f"{name}: joint {np.mean(joints):.4f}, orders {min(accs):.4f}-{max(accs):.4f} "
                  f"(worst {orders[worst]})", file=sys.stderr, flush=True)
    lines = [f"Class-incremental digits (5 tasks of 2 classes), final test accuracy ({len(test.y)} test digits); "
             f"polls of {args.poll}; {len(args.orders)} named orders and {args.random_orders} drawn with seed "
             f"{args.seed}; joint: mean of {args.joint_seeds} shuffles (seeds 0-{args.joint_seeds - 1}).", "",
             "| config | joint (mean; range) | orders | worst order | median | best | worst - joint |",
             "|---|---|---|---|---|---|---|"]
    for name, joints, accs in rows:
        jm = float(np.mean(joints))
        worst = int(np.argmin(accs))
        lines.append(f"| {name} | {jm:.4f} ({min(joints):.4f}-{max(joints):.4f}) | {len(accs)} | "
                     f"{accs[worst]:.4f} ({orders[worst]}) | {np.median(accs):.4f} | {max(accs):.4f} | "
                     f"{100 * (accs[worst] - jm):+.1f} pts |")
    if args.orders:
        lines += ["", "Named orders:", "", "| config | " + " | ".join(args.orders) + " |",
                  "|---|" + "---|" * len(args.orders)]
        for name, _, accs in rows:
            lines.append(f"| {name} | " + " | ".join(f"{a:.4f}" for a in accs[:len(args.orders)]) + " |")
    lines += ["", f"Run took {time.time() - t0:.0f} s."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
