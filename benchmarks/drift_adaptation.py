"""Does drift adaptation pay? Prequential accuracy with ``drift.adapt`` on versus off.

Streams (``benchmarks/streams.py``, 50,000 samples each, seed 0): SEA with abrupt concept
switches and Agrawal with abrupt function switches (drifts at 12,500 / 25,000 / 37,500),
a rotating hyperplane and RandomRBF with moving centroids (incremental drift, no single
drift position), and elec (45,312 real samples, drift positions unknown). Learners: the
shipped configs ``config/kalman.yaml``, ``config/analytic.yaml``, ``config/logistic.yaml``
and ``config/mkd.yaml``
(their ``drift`` section: ADWIN on the 0/1 error, adapt_grid 100), run through
``stream.offline.evaluate_arrays``, i.e. the daemon's own ``LearningCore``, in batches of
``drift.adapt_grid`` (100) samples in both runs of a pair: with adaptation on the core cuts
its batches there anyway, and MomentumKD (not batch-invariant) would otherwise learn from
500-sample batches with adaptation off. Adaptation on/off is then the only difference
between the two runs; the drift monitor runs in both (with adaptation off events are only
recorded).

Reported per stream and learner: overall prequential accuracy, and the mean accuracy over
the 1,000 samples after each known drift ("post-drift"; only where positions are known),
on and off, and the number of drift events. ``--discounts`` adds AnalyticRidge rows with
``adapt_discount`` set (its adapt is a no-op while that is null). ``--seeds`` runs the
learners named by ``--seeded`` (default: MomentumKD, whose result varies most with its
seed) once per learner seed (``learner.params.seed``; the streams keep ``--seed``) and
reports the mean over those seeds; the others run once with their configured seed.

    nice python benchmarks/drift_adaptation.py                 # all (3 min on 2 quiet cores, 10+ busy)
    nice python benchmarks/drift_adaptation.py --n 20000 --streams sea agrawal --learners kalman

A script that prints Markdown tables, not a test. Never touches Kafka or Redis.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.streams import make_stream  # noqa: E402
from ocld.stream.config import Config, load_config  # noqa: E402
from ocld.stream.files import Table, read_table  # noqa: E402
from ocld.stream.offline import evaluate_arrays  # noqa: E402

LEARNERS = {"kalman": "KalmanHead", "analytic": "AnalyticRidge", "logistic": "KalmanLogistic", "mkd": "MomentumKD"}
STREAMS = ("sea", "agrawal", "hyperplane", "rbf", "elec")
ABRUPT = ("sea", "agrawal")
POST = 1000


def load_stream(name: str, n: int, seed: int) -> tuple[Table, list[int]]:
    if name == "elec":
        t = read_table(ROOT / "data" / "elec.csv")
        return t, []
    X, y, drifts = make_stream(name, n, seed)
    none = [None] * len(y)
    return Table(X, y.tolist(), none, none, none), drifts


def with_params(cfg: Config, adapt: bool, learner_params: dict[str, Any] | None = None) -> Config:
    update: dict[str, Any] = {"drift": cfg.drift.model_copy(update={"adapt": adapt})}
    if learner_params:
        update["learner"] = cfg.learner.model_copy(update={"params": {**cfg.learner.params, **learner_params}})
    return cfg.model_copy(update=update)


def run(cfg: Config, table: Table, drifts: list[int]) -> dict[str, Any]:
    # Both runs of a pair learn in the same batches. With adaptation on, the core cuts every
    # batch at the multiples of drift.adapt_grid (100); without this the "off" run of a learner
    # that is not batch-invariant (MomentumKD: 3 gradient steps per batch) would learn from
    # batches of kafka.max_batch (500), and on - off would measure the batch size as well.
    batch = min(cfg.kafka.max_batch, cfg.drift.adapt_grid)
    r = evaluate_arrays(cfg, table, batch_size=batch, keep_errors=True)
    e = r["errors"]
    post = [1.0 - float(e[p:p + POST].mean()) for p in drifts if p < e.size]
    return {"acc": r["accuracy"], "post": float(np.mean(post)) if post else None, "events": len(r["drift_events"]),
            "first": [ev["index"] for ev in r["drift_events"]], "s": r["elapsed_s"]}


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def mean_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy, post-drift accuracy and event count over the runs of several learner seeds."""
    posts = [r["post"] for r in runs if r["post"] is not None]
    return {"acc": float(np.mean([r["acc"] for r in runs])), "post": float(np.mean(posts)) if posts else None,
            "events": float(np.mean([r["events"] for r in runs])), "n": len(runs),
            "acc_runs": [r["acc"] for r in runs], "post_runs": [r["post"] for r in runs]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    ap.add_argument("--discounts", nargs="*", type=float, default=[],
                    help="extra AnalyticRidge rows with adapt_discount set to each value")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                    help="learner seeds for the --seeded learners (mean reported)")
    ap.add_argument("--seeded", nargs="*", default=["mkd"], choices=list(LEARNERS),
                    help="learners run once per --seeds value (the others: once, configured seed)")
    args = ap.parse_args(argv)
    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS, and torch
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    rows = []
    t_all = time.perf_counter()
    for stream in args.streams:
        table, drifts = load_stream(stream, args.n, args.seed)
        variants: list[tuple[str, str, Config]] = []
        for key in args.learners:
            variants.append((key, LEARNERS[key], load_config(ROOT / "config" / f"{key}.yaml")))
        if "analytic" in args.learners:
            base = load_config(ROOT / "config" / "analytic.yaml")
            for d in args.discounts:
                variants.append(("analytic", f"AnalyticRidge (adapt_discount={d:g})",
                                 with_params(base, True, {"adapt_discount": d})))
        for key, label, cfg in variants:
            seeds: list[int | None] = list(args.seeds) if key in args.seeded else [None]
            ons, offs = [], []
            for s in seeds:
                c = cfg if s is None else with_params(cfg, cfg.drift.adapt, {"seed": s})
                on = run(with_params(c, True), table, drifts)
                off = run(with_params(c, False), table, drifts)
                ons.append(on)
                offs.append(off)
                tag = "" if s is None else f" seed {s}"
                print(f"# {stream:10s} {label + tag:38s} acc on {on['acc']:.4f} off {off['acc']:.4f} | "
                      f"post on {fmt(on['post'])} off {fmt(off['post'])} | events {on['events']}/{off['events']} "
                      f"first {on['first'][:6]} | {on['s'] + off['s']:.0f} s", flush=True)
            rows.append((stream, label, mean_runs(ons), mean_runs(offs), "-" if seeds == [None] else
                         ",".join(str(s) for s in seeds)))

    seeded = ", ".join(LEARNERS[k] for k in args.seeded if k in args.learners)
    print(f"\n{args.n:,} samples per synthetic stream (elec: 45,312), stream seed {args.seed}; each config's error "
          "monitor on the 0/1 error (ADWIN; KalmanHead also a one-sided Page-Hinkley test); "
          f"post-drift = mean accuracy over the {POST:,} samples after each known drift"
          + (f"; {seeded}: mean over learner seeds {', '.join(map(str, args.seeds))}" if seeded else "") + ".\n")
    print("| stream | learner | learner seeds | accuracy adapt on | accuracy adapt off | post-drift on "
          "| post-drift off | drift events (on; mean over seeds) |")
    print("|---|---|---|---|---|---|---|---|")
    for stream, label, on, off, seeds_txt in rows:
        d_acc = on["acc"] - off["acc"]
        d_post = (on["post"] - off["post"]) if on["post"] is not None and off["post"] is not None else None
        post_on = f"{fmt(on['post'])} ({d_post:+.4f})" if d_post is not None else "-"
        print(f"| {stream} | {label} | {seeds_txt} | {on['acc']:.4f} ({d_acc:+.4f}) | {off['acc']:.4f} | {post_on} | "
              f"{fmt(off['post'])} | {on['events']:.1f} |")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
