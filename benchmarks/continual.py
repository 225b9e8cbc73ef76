"""Continual evaluation on class-incremental digits: the stability gap, measured.

``data/digits_train.csv`` (5 tasks of 2 digits, in task order) is learned once, in
batches of 10, by MomentumKD (replay + momentum knowledge distillation,
``config/mkd.yaml``), the same network with replay only (``mkd: false``, "ER") and
AnalyticRidge (``config/analytic.yaml``); every 10 training samples (and at each task end)
the model is scored on the held-out rows (``data/digits_test.csv``) of every task seen so
far, through ``stream.offline.evaluate`` (what ``ocld evaluate --test --eval-every 10``
runs). Drift adaptation is off here: task switches are announced by the stream, not
detected. Reported: final accuracy, average anytime accuracy (AAA), forgetting, min-ACC,
WC-ACC (De Lange et al., ICLR 2023) and the stability gap: the largest drop of the mean
accuracy on earlier tasks within 100 samples after a task switch, below its value at the
switch, averaged over the 4 switches.

    nice python benchmarks/continual.py            # about 1-2 min on 2 busy cores

Writes ``benchmarks/out/continual_digits.png`` (per-task curves, one panel per learner)
and prints a Markdown table. Never touches Kafka or Redis.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocld.stream.config import Config, load_config  # noqa: E402
from ocld.stream.offline import evaluate  # noqa: E402
from ocld.stream.report import plot_task_curves  # noqa: E402

GAP_WINDOW = 100


def stability_gap(res: dict[str, Any]) -> float:
    pts = np.array(res["eval_points"])
    M = np.array([[np.nan if v is None else v for v in row] for row in res["accuracy_matrix"]])
    ends = sorted(res["task_ends"].values())[:-1]
    gaps = []
    for k, end in enumerate(ends):
        old = list(range(k + 1))  # tasks 0..k are the earlier tasks at switch k
        at = int(np.flatnonzero(pts == end)[0])
        base = np.nanmean(M[at, old])
        after = (pts > end) & (pts <= end + GAP_WINDOW)
        gaps.append(max(0.0, base - float(np.nanmin(np.nanmean(M[after][:, old], axis=1)))))
    return float(np.mean(gaps))


def variant(path: str, **params: Any) -> Config:
    cfg = load_config(ROOT / "config" / path)
    cfg = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"adapt": False})})
    if params:
        learner = cfg.learner.model_copy(update={"params": {**cfg.learner.params, **params}})
        cfg = cfg.model_copy(update={"learner": learner})
    return cfg


def main() -> None:
    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS, and torch
    import torch

    torch.set_num_threads(1)
    runs = {
        "MomentumKD (ER + MKD)": variant("mkd.yaml"),
        "ER (mkd: false)": variant("mkd.yaml", mkd=False),
        "AnalyticRidge": variant("analytic.yaml"),
    }
    results = {}
    for name, cfg in runs.items():
        res = evaluate(cfg, ROOT / "data" / "digits_train.csv", test=ROOT / "data" / "digits_test.csv",
                       eval_every=10, batch_size=10)
        res["stability_gap"] = stability_gap(res)
        results[name] = res
        print(f"# {name}: final {res['final_accuracy']:.4f} ({res['elapsed_s']:.0f} s)", flush=True)
    out = ROOT / "benchmarks" / "out" / "continual_digits.png"
    plot_task_curves(results, out, "class-incremental digits, test accuracy per task every 10 samples (batch 10)")
    print("\n| learner | final accuracy | AAA | forgetting | min-ACC | WC-ACC | stability gap |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['final_accuracy']:.4f} | {r['aaa']:.4f} | {r['forgetting']:.4f} | {r['min_acc']:.4f} | "
              f"{r['wc_acc']:.4f} | {r['stability_gap']:.4f} |")
    print(f"\nwrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
