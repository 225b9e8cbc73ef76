"""Learner speed and how its cost grows with feature dimension, classes and batch size.

Each learner head (no feature maps in front) runs ``learn_predict`` (the prequential
step: predict each row, then learn the batch) on synthetic class-conditional Gaussian
data, for every combination of

    D (feature dimension)  64, 128, 256, 512, 1024
    C (classes)            2, 10, 100
    B (batch size)         1, 10, 100

Heads:
- ``kalman1``: KalmanHead with a single g (config/kalman.yaml parameters with g = 0.9995,
  delta band "auto"), input dimension D;
- ``kalman3``: KalmanHead with the shipped three sub-heads (config/kalman.yaml), input D;
- ``analytic``: AnalyticRidge (config/analytic.yaml parameters), D = expansion_size (the
  random ReLU layer, i.e. the ridge dimension); raw input dimension fixed at 32;
- ``logistic``: KalmanLogistic (config/logistic.yaml parameters), input D: one
  extended-Kalman filter per class (one-vs-rest), so state and cost per sample grow as C D^2;
- ``mkd``: MomentumKD (config/mkd.yaml parameters: MLP 256-256, replay 32, 3 steps), input D;
- ``river_lr``: RiverLearner(river LogisticRegression, scale=True), input D; for C > 2
  wrapped in OneVsRestClassifier (C binary models).

Per cell: a warm-up batch that shows every class once (and builds the state), then
timed ``learn_predict`` calls on consecutive batches until ``--min-time`` seconds
(default 0.5 s) or ``--max-samples`` (default 20,000) samples, at least one batch.
AnalyticRidge re-solves its ridge system exactly every ``refresh_every`` = 1,024 samples
(O(D^3)), so its timed window always spans at least 1,100 samples to include one
re-solve in the amortized rate.

Memory, per (learner, D, C): "state" = bytes of all arrays in ``to_state()`` (children
included; for river, the pickled model), after the largest-batch run; "learn peak" =
tracemalloc peak of one ``learn_predict`` of a batch of the largest B (numpy buffers
only: torch's allocator is invisible to tracemalloc, so for MomentumKD it undercounts;
skipped, "-", where one batch took over 2 s).

    nice python benchmarks/learners.py --quick      # smoke run (seconds)
    nice python benchmarks/learners.py              # full grid (~5-10 min on 2 cores)
    python benchmarks/learners.py --learners kalman3 analytic --dims 128 1024

Writes Markdown tables to stdout and to benchmarks/out/learners.md. BLAS and torch are
pinned to one thread. Speeds are comparable only within one run (shared machines are
noisy); there are no assertions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocld.learners.base import Learner, LearnerState  # noqa: E402
from ocld.learners.registry import build_learner  # noqa: E402

DIMS = (64, 128, 256, 512, 1024)
CLASSES = (2, 10, 100)
BATCHES = (1, 10, 100)
ANALYTIC_INPUT = 32
POOL = 4096  # rows of synthetic data per (D, C), reused cyclically
LEARNERS = ("kalman1", "kalman3", "analytic", "logistic", "mkd", "river_lr")
TITLES = {
    "kalman1": "KalmanHead, single g (0.9995, learned)",
    "kalman3": "KalmanHead, shipped 3 sub-heads (config/kalman.yaml)",
    "logistic": "KalmanLogistic (config/logistic.yaml)",
    "analytic": "AnalyticRidge (config/analytic.yaml; D = expansion_size, raw input 32)",
    "mkd": "MomentumKD (config/mkd.yaml: MLP 256-256, replay 32, 3 steps/batch)",
    "river_lr": "river LogisticRegression via RiverLearner (scale=True; one-vs-rest for C > 2)",
}
SHORT = {"kalman1": "Kalman x1", "kalman3": "Kalman x3", "analytic": "AnalyticRidge", "logistic": "KalmanLogistic",
         "mkd": "MomentumKD",
         "river_lr": "river LogReg"}


def shipped_params(name: str) -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())["learner"]["params"])


def factory(learner: str, D: int, C: int) -> tuple[Callable[[], Learner], int]:
    """(builder, input dimension) for one cell."""
    if learner in ("kalman1", "kalman3"):
        params = shipped_params("kalman")
        if learner == "kalman1":
            params["g"] = 0.9995
            params["delta_bounds"] = "auto"
        return (lambda: build_learner("KalmanHead", params)), D
    if learner == "analytic":
        params = shipped_params("analytic")
        params["expansion_size"] = D
        return (lambda: build_learner("AnalyticRidge", params)), ANALYTIC_INPUT
    if learner == "logistic":
        params = shipped_params("logistic")
        return (lambda: build_learner("KalmanLogistic", params)), D
    if learner == "mkd":
        params = shipped_params("mkd")
        return (lambda: build_learner("MomentumKD", params)), D
    if learner == "river_lr":
        if C > 2:
            rparams = {"model": "river.multiclass.OneVsRestClassifier",
                       "params": {"classifier": {"model": "river.linear_model.LogisticRegression"}}, "scale": True}
        else:
            rparams = {"model": "river.linear_model.LogisticRegression", "scale": True}
        return (lambda: build_learner("RiverLearner", rparams)), D
    raise ValueError(f"unknown learner {learner!r}; choose from {list(LEARNERS)}")


def make_data(d: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional Gaussians; the first C rows hold classes 0..C-1 once each."""
    rng = np.random.default_rng([seed, d, C])
    mu = rng.normal(scale=1.0, size=(C, d))
    y = np.concatenate([np.arange(C), rng.integers(0, C, POOL - C)])
    X = mu[y] + rng.normal(size=(POOL, d))
    return X, y


def state_bytes(state: LearnerState) -> int:
    total = sum(int(np.asarray(a).nbytes) for a in state.arrays.values())
    return total + sum(state_bytes(child) for child in state.children.values())


def run_cell(make: Callable[[], Learner], X: np.ndarray, y: np.ndarray, C: int, B: int, min_time: float,
             max_samples: int, min_samples: int) -> tuple[float, Learner, float]:
    """(samples/s, learner, seconds per batch) of timed learn_predict calls after a warm-up."""
    learner = make()
    learner.learn_predict(X[:C], y[:C])  # every class once; builds the state
    pos = C
    learner.learn_predict(X[pos : pos + B], y[pos : pos + B])  # untimed batch of the cell's size
    pos += B
    n = 0
    batches = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while True:
        if pos + B > len(y):
            pos = C
        learner.learn_predict(X[pos : pos + B], y[pos : pos + B])
        pos += B
        n += B
        batches += 1
        elapsed = time.perf_counter() - t0
        if n >= max_samples or (elapsed >= min_time and n >= min_samples):
            break
    return n / elapsed, learner, elapsed / batches


def learn_peak(learner: Learner, X: np.ndarray, y: np.ndarray, B: int) -> int:
    Xb, yb = X[-B:], y[-B:]
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    learner.learn_predict(Xb, yb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return max(0, peak - base)


def fmt_speed(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.1f}"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    return f"{b / 1024:.0f} KiB"


def growth(sps: dict[int, float], lo: int, hi: int) -> str:
    """Exponent k in cost-per-sample ~ D^k between two dimensions (from samples/s)."""
    if lo not in sps or hi not in sps or sps[lo] <= 0 or sps[hi] <= 0:
        return "-"
    return f"{math.log(sps[lo] / sps[hi]) / math.log(hi / lo):.2f}"


def report(res: dict[tuple[str, int, int, int], float], mem: dict[tuple[str, int, int], tuple[int, int | None]],
           learners: list[str], dims: list[int], classes: list[int], batches: list[int], header: str) -> str:
    lines = [header, ""]
    Bmax = max(batches)
    for ln in learners:
        lines.append(f"### {TITLES[ln]}")
        lines.append("")
        cols = ["D", "C"] + [f"B={b} samples/s" for b in batches] + ["state", f"learn peak (B={Bmax})"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for D in dims:
            for C in classes:
                if (ln, D, C, batches[0]) not in res:
                    continue
                cells = [str(D), str(C)] + [fmt_speed(res[(ln, D, C, b)]) if (ln, D, C, b) in res else "-"
                                            for b in batches]
                sb, pk = mem.get((ln, D, C), (None, None))
                cells += [fmt_bytes(sb), fmt_bytes(pk)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    # Summary: how cost grows with D (C = middle value, each batch size)
    Cmid = 10 if 10 in classes else classes[len(classes) // 2]
    lo, hi = (256, 1024) if 256 in dims and 1024 in dims else (dims[0], dims[-1])
    lines.append(f"### How cost grows with D (C = {Cmid}): samples/s, and exponent k in cost per sample ~ D^k "
                 f"between D = {lo} and {hi}")
    lines.append("")
    cols = ["learner", "B"] + [f"D={D}" for D in dims] + [f"k ({lo}->{hi})"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for ln in learners:
        for b in batches:
            sps = {D: res[(ln, D, Cmid, b)] for D in dims if (ln, D, Cmid, b) in res}
            if not sps:
                continue
            lines.append("| " + " | ".join([SHORT[ln], str(b)] + [fmt_speed(sps[D]) if D in sps else "-" for D in dims]
                                           + [growth(sps, lo, hi)]) + " |")
    lines.append("")
    # Summary: classes
    Dmid = 256 if 256 in dims else dims[len(dims) // 2]
    lines.append(f"### How cost grows with the number of classes (D = {Dmid}, B = {Bmax}): samples/s")
    lines.append("")
    cols = ["learner"] + [f"C={C}" for C in classes] + [f"C={classes[0]} / C={classes[-1]}"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for ln in learners:
        sps = {C: res[(ln, Dmid, C, Bmax)] for C in classes if (ln, Dmid, C, Bmax) in res}
        if not sps:
            continue
        ratio = f"{sps[classes[0]] / sps[classes[-1]]:.1f}x" if classes[0] in sps and classes[-1] in sps else "-"
        lines.append("| " + " | ".join([SHORT[ln]] + [fmt_speed(sps[C]) if C in sps else "-" for C in classes]
                                       + [ratio]) + " |")
    lines.append("")
    lines.append(
        "Block updates (checked by reading the code): KalmanHead learns a batch in chunks of at most "
        "`max_chunk` = 64 rows (cut also at `block_size` boundaries), each with ONE B x B Cholesky factor "
        "of the predictive covariance per sub-head shared by all classes (`_chunk`: K = E*(Phi A Phi^T) + "
        "s0 (R - E)*(Phi Phi^T) + s2 I, triangular solves for cov(w, Y) and Y - E[Y], A <- G^2 A - Wt^T Wt "
        "in place by BLAS gemm); the only Python loops are over chunks and over the sub-heads' BLAS calls, "
        "never over samples. "
        "AnalyticRidge learns a batch by one Woodbury step per chunk of at most 128 rows (b x b Cholesky of "
        "I + H R H^T, R <- R - V^T V, W <- W + V^T Z; a batch of one is an in-place BLAS rank-1 update), adds "
        "H^T H to its statistics in deferred blocks of 256 rows, and re-solves exactly every 1,024 samples; "
        "no per-sample loop. Per-sample Python work left in both: label encoding (`ClassIndex.encode`). "
        "KalmanLogistic is a loop over samples by nature (each extended-Kalman step linearizes at the mean "
        "the previous step left), vectorized over classes: about 12 numpy calls per sample plus O(C D^2) "
        "arithmetic, meant for low-dimensional raw inputs. "
        "MomentumKD takes `iterations` = 3 optimizer steps per incoming batch (whatever its size), so its "
        "samples/s grows almost linearly with B; RiverLearner is one `learn_one`/`predict_proba_one` per "
        "sample by construction."
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: D 64/256, C 2/10, B 1/100, 0.1 s per cell")
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    ap.add_argument("--dims", nargs="+", type=int, default=None)
    ap.add_argument("--classes", nargs="+", type=int, default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--min-time", type=float, default=None, help="seconds timed per cell (default 0.5; quick 0.1)")
    ap.add_argument("--max-samples", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "learners.md")
    args = ap.parse_args(argv)
    dims = args.dims or ([64, 256] if args.quick else list(DIMS))
    classes = args.classes or ([2, 10] if args.quick else list(CLASSES))
    batches = sorted(args.batches or ([1, 100] if args.quick else list(BATCHES)))
    min_time = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.5)

    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS; torch reads OMP_NUM_THREADS=1 set by `import stream`
    started = time.time()
    load0 = os.getloadavg()
    res: dict[tuple[str, int, int, int], float] = {}
    mem: dict[tuple[str, int, int], tuple[int, int | None]] = {}
    for ln in args.learners:
        for D in dims:
            for C in classes:
                make, d_in = factory(ln, D, C)
                X, y = make_data(d_in, C)
                learner = None
                per_batch = 0.0
                for B in batches:
                    min_samples = 1100 if ln == "analytic" else 0
                    sps, learner, per_batch = run_cell(make, X, y, C, B, min_time, args.max_samples, min_samples)
                    res[(ln, D, C, B)] = sps
                    print(f"[{time.time() - started:6.0f}s] {ln:9s} D={D:5d} C={C:4d} B={B:4d}: {sps:10,.0f} samples/s",
                          file=sys.stderr, flush=True)
                assert learner is not None
                sb = state_bytes(learner.to_state())
                pk = learn_peak(learner, X, y, max(batches)) if per_batch <= 2.0 else None
                mem[(ln, D, C)] = (sb, pk)
    load1 = os.getloadavg()
    total = time.time() - started
    header = (f"## Learner speed and memory (learn_predict on synthetic Gaussian data)\n\n"
              f"Heads alone (no feature maps), float64, BLAS and torch on one thread; {min_time:g} s "
              f"(at most {args.max_samples:,} samples) timed per cell after a warm-up batch. Run took {total:.0f} s; "
              f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs). Speeds are "
              f"comparable within this run only.")
    text = report(res, mem, args.learners, dims, classes, batches, header)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
