"""Learned forgetting of the Kalman head: a plot of g over time and a Markdown table.

Runs only ``learners/`` (no Kafka, no Redis):
1. a seeded synthetic stream whose class means jump every 2,000 samples, learned by a
   single-head KalmanHead with learned g; and the shipped config (config/kalman.yaml) on
   elec and weather. g over time goes to benchmarks/out/forgetting.png, jumps marked;
2. prequential (test-then-train, exact per sample) accuracy of the shipped config on
   elec and weather, log-loss of the probit probabilities against softmax-of-mean,
   samples/s of the head alone (on the config's features, 135 wide on elec; batches of 100)
   and of the whole pipeline, and
   river's ARFClassifier(n_models=10) samples/s on the same data, with the ratio.

    nice python benchmarks/forgetting.py            # about a minute on 2 cores

BLAS threads are pinned to 1 (set before numpy loads) unless the environment says
otherwise: on a small shared machine, multi-threaded BLAS on 128 x 128 matrices is
many times slower than one thread.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocld.learners.kalman import KalmanHead  # noqa: E402
from ocld.learners.registry import build_learner  # noqa: E402


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.genfromtxt(path, delimiter=",", skip_header=1)
    return raw[:, :-1], raw[:, -1].astype(np.int64)


def load_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "config" / "kalman.yaml").read_text())["learner"]


def jump_stream(n: int = 10_000, every: int = 2_000, seed: int = 0, D: int = 8, C: int = 3):
    """Class-conditional Gaussians (+ bias feature); class means redrawn every ``every`` samples."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = np.ones((n, D + 1))
    for s in range(0, n, every):
        mu = rng.normal(size=(C, D))
        X[s : s + every, :D] = mu[y[s : s + every]] + 0.5 * rng.normal(size=(min(every, n - s), D))
    return X, y


def prequential(learner: Any, X: np.ndarray, y: np.ndarray, batch: int = 100) -> dict[str, Any]:
    """Exact test-then-train through ``learn_predict``; accuracy, log-loss, g trace, samples/s."""
    probs, gs, ns = [], [], []
    t0 = time.perf_counter()
    for s in range(0, len(y), batch):
        probs.append(learner.learn_predict(X[s : s + batch], y[s : s + batch]))
        head = getattr(learner, "head", learner)
        gs.append(head.forgetting_)
        ns.append(min(len(y), s + batch))
    elapsed = time.perf_counter() - t0
    C = len(learner.classes_)
    P = np.vstack([np.pad(p, ((0, 0), (0, C - p.shape[1]))) for p in probs])
    cols = np.array([learner.classes_.index(v) for v in y.tolist()])
    p_true = P[np.arange(len(y)), cols]
    return {
        "accuracy": float(np.mean(np.argmax(P, axis=1) == cols)),
        "log_loss": float(-np.mean(np.log(np.clip(p_true, 1e-15, 1.0)))),
        "samples_per_s": len(y) / elapsed,
        "n": np.array(ns),
        "g": np.array(gs),
        "learner": learner,
    }


def head_speed(spec: dict[str, Any], X: np.ndarray, y: np.ndarray, batch: int = 100,
               repeat: int = 2) -> tuple[float, int]:
    """(samples/s of KalmanHead.learn_predict alone, feature width D) on the precomputed features of ``spec``."""
    features = build_learner(spec["name"], spec.get("params"), spec.get("features"))
    Phi = features._learn_transform(X)  # type: ignore[attr-defined]
    best = 0.0
    for _ in range(repeat):
        head = KalmanHead(**spec.get("params", {}))
        t0 = time.perf_counter()
        for s in range(0, len(y), batch):
            head.learn_predict(Phi[s : s + batch], y[s : s + batch])
        best = max(best, len(y) / (time.perf_counter() - t0))
    return best, int(Phi.shape[1])


def arf_speed(X: np.ndarray, y: np.ndarray, n: int) -> tuple[float, float]:
    """river ARFClassifier(n_models=10): (samples/s, prequential accuracy) on the first n samples."""
    from river import forest

    model = forest.ARFClassifier(n_models=10, seed=0)
    names = [f"x{i}" for i in range(X.shape[1])]
    rows = [dict(zip(names, r)) for r in X[:n].tolist()]
    labels = y[:n].tolist()
    correct = 0
    t0 = time.perf_counter()
    for x, label in zip(rows, labels):
        correct += model.predict_one(x) == label
        model.learn_one(x, label)
    return n / (time.perf_counter() - t0), correct / n


def plot(jump: dict[str, Any], jumps: list[int], streams: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), dpi=90)
    ax = axes[0]
    ax.plot(jump["n"], jump["g"], lw=1.2, label="learned g (single head)")
    for j in jumps:
        ax.axvline(j, color="red", ls="--", lw=0.8)
    ax.set_title("Synthetic stream, class means jump every 2,000 samples (red)")
    ax.set_ylabel("forgetting g")
    ax.set_xlabel("labelled samples")
    ax.legend(loc="lower right")
    ax = axes[1]
    for name, res in streams.items():
        ax.plot(res["n"], res["g"], lw=1.0, label=f"{name} (effective g, shipped config)")
    lowest = min(float(res["g"].min()) for res in streams.values())
    ax.set_ylim(lowest - 0.6 * (1.0 - lowest), 1.0 + 0.05 * (1.0 - lowest))
    ax.set_ylabel("forgetting g")
    ax.set_xlabel("labelled samples")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arf-samples", type=int, default=5000, help="elec samples to time ARF on")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "forgetting.png")
    args = parser.parse_args()

    spec = load_config()
    jump_params = dict(g=1.0, lr=1e-3, block_size=32, scale_rate=0.0)
    Xj, yj = jump_stream()
    jump = prequential(KalmanHead(**jump_params), Xj, yj, batch=50)
    jumps = list(range(2000, len(yj), 2000))

    rows, streams = [], {}
    for name in ("elec", "weather"):
        X, y = load_csv(ROOT / "data" / f"{name}.csv")
        res = prequential(build_learner(spec["name"], spec["params"], spec["features"]), X, y)
        mean_params = dict(spec["params"], proba="mean")
        res_mean = prequential(build_learner(spec["name"], mean_params, spec["features"]), X, y)
        streams[name] = res
        head = res["learner"].head
        rows.append((name, X, y, res, res_mean, head))

    plot(jump, jumps, streams, args.out)

    X_elec, y_elec = rows[0][1], rows[0][2]
    speed_head, width = head_speed(spec, X_elec, y_elec)
    arf_sps, arf_acc = arf_speed(X_elec, y_elec, args.arf_samples)

    print("## Kalman head, shipped config (config/kalman.yaml), exact prequential, batches of 100\n")
    print("| stream | accuracy | log-loss probit | log-loss softmax(mean) | accuracy softmax(mean) "
          "| final g (per head) | mixture weights | pipeline samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _X, _y, res, res_mean, head in rows:
        gh = ", ".join(f"{v:.5f}" for v in head.forgetting_heads_)
        w = ", ".join(f"{v:.2f}" for v in head.weights_)
        print(
            f"| {name} | {res['accuracy']:.4f} | {res['log_loss']:.4f} | {res_mean['log_loss']:.4f} | "
            f"{res_mean['accuracy']:.4f} | {gh} | {w} | {res['samples_per_s']:,.0f} |"
        )
    no_change = float(np.mean(y_elec[1:] == y_elec[:-1]))
    print(f"\nelec \"no change\" baseline (predict the previous label): {no_change:.4f}\n")
    print("| speed on elec | samples/s |")
    print("|---|---|")
    print(f"| KalmanHead.learn_predict alone, D={width}, 3 sub-heads, batch 100 | {speed_head:,.0f} |")
    print(f"| river ARFClassifier(n_models=10), first {args.arf_samples} samples (accuracy {arf_acc:.3f}) "
          f"| {arf_sps:,.0f} |")
    print(f"| ratio head / ARF | {speed_head / arf_sps:.0f}x |")
    print(f"| ratio full pipeline (Standardizer + RFF + head) / ARF | {rows[0][3]['samples_per_s'] / arf_sps:.0f}x |")

    gmin = [float(jump["g"][(j // 50) : (j + 300) // 50].min()) for j in jumps]
    gpre = [float(jump["g"][j // 50 - 1]) for j in jumps]
    print("\n## Jump stream (single head, learned g, lr 1e-3, block 32)\n")
    print("| jump at | g just before | min g within 300 samples |")
    print("|---|---|---|")
    for j, a, b in zip(jumps, gpre, gmin):
        print(f"| {j} | {a:.5f} | {b:.5f} |")
    print(f"\naccuracy {jump['accuracy']:.4f}; plot: {args.out}")


if __name__ == "__main__":
    main()
