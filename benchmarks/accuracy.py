"""Accuracy and speed of ocld's learners against river, all through ``ocld evaluate``.

Every cell is one run of ``stream.offline.evaluate(cfg, csv)`` (the code path of
``ocld evaluate``: the daemon's LearningCore with its prequential metrics, ADWIN drift
monitor and micro-batches of ``kafka.max_batch`` = 500 records), so accuracy is
test-then-train over a single pass and samples/s includes the core's bookkeeping.

Streams: ``elec`` and ``weather`` (data/, full length), river's synthetic drifting
streams from ``benchmarks/streams.py`` (``sea`` with concept switches, ``agrawal`` with
function switches, rotating ``hyperplane``, ``rbf`` with moving centroids; seed 42,
50,000 samples each; written once to CSV in a cache folder) and the class-incremental
``digits`` stream (data/digits_train.csv, 5 tasks of 2 digits, in task order).

Models, one config each and the SAME config on every stream (no per-stream tuning):
- ``kalman``, ``analytic``, ``logistic``, ``mkd``: config/kalman.yaml, config/analytic.yaml,
  config/logistic.yaml, config/mkd.yaml unchanged (their drift section is the default: ADWIN, adapt on);
- ``lr``: river ``StandardScaler | LogisticRegression`` (``RiverLearner`` scale=True;
  on a stream with more than two classes wrapped in ``OneVsRestClassifier``, which a
  binary-only model needs);
- ``hat``: river ``HoeffdingAdaptiveTreeClassifier(seed=42)`` (defaults otherwise, no scaler; its
  bootstrap sampling is random, and unseeded its agrawal accuracy ranged 0.864-0.892 between runs);
- ``arf``: river ``ARFClassifier(n_models=10, seed=42)`` (no scaler);
- ``arf_yaml`` (not in the default set): config/river-arf.yaml unchanged (scaler in front,
  and the default drift section, so the model is started over on every ADWIN detection).
The other river baselines run with ``drift.adapt: false``: the ADWIN monitor still runs (same
bookkeeping cost as for ocld's learners) but never resets the river model, which keeps
its own internal drift handling; that is how river evaluates its models
(``RiverLearner.adapt`` would start the model over on every detection).
"no change" (predict the previous label) is evaluate's ``nochange_accuracy``.

Speed is compared only as ratios within one run (the machine is shared and noisy): the
KalmanHead / ARF(10) samples/s ratio per stream is printed beside the table.

    nice python benchmarks/accuracy.py --quick          # smoke run, 5,000 samples per stream
    nice python benchmarks/accuracy.py                  # full run (~10-15 min on 2 cores)
    python benchmarks/accuracy.py --streams elec sea --models kalman arf

Writes the Markdown tables to stdout and to benchmarks/out/accuracy.md. BLAS and torch
are pinned to one thread. Never touches Kafka or Redis; no assertions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ROOT first: this folder holds a ``learners.py`` that must not shadow the ``learners`` package.
sys.path.insert(0, str(ROOT))

SEED = 42
SYNTHETIC = ("sea", "agrawal", "hyperplane", "rbf")
REAL = ("elec", "weather")
STREAMS = REAL + SYNTHETIC + ("digits",)
DRIFTING = REAL + SYNTHETIC  # digits is class-incremental, not a drifting stream
MULTICLASS = ("digits",)
RIVER_MODELS = ("lr", "hat", "arf", "arf_yaml")
OCLD_MODELS = ("kalman", "analytic", "logistic", "mkd")
MODELS = ("lr", "hat", "arf", "kalman", "analytic", "logistic", "mkd")  # default set, in column order
ALL_MODELS = MODELS + ("arf_yaml",)
TITLES = {
    "lr": "river LogReg", "hat": "river HAT", "arf": "river ARF(10)", "arf_yaml": "river-arf.yaml",
    "kalman": "ocld KalmanHead", "analytic": "ocld AnalyticRidge", "logistic": "ocld KalmanLogistic",
    "mkd": "ocld MomentumKD",
}
DEFAULT_SAMPLES = 50_000
QUICK_SAMPLES = 5_000


# ---------------------------------------------------------------------- streams
def cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "ocld-bench-streams"
    d.mkdir(parents=True, exist_ok=True)
    return d


def stream_file(name: str, samples: int | None) -> tuple[Path, int | None]:
    """(CSV path, row limit for evaluate) for a stream; synthetic streams are generated once."""
    if name in REAL:
        return ROOT / "data" / f"{name}.csv", samples
    if name == "digits":
        return ROOT / "data" / "digits_train.csv", samples
    import importlib.util

    spec = importlib.util.spec_from_file_location("ocld_bench_streams", ROOT / "benchmarks" / "streams.py")
    assert spec is not None and spec.loader is not None
    streams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(streams)
    make_stream, write_csv = streams.make_stream, streams.write_csv

    n = samples or DEFAULT_SAMPLES
    path = cache_dir() / f"{name}_{n}_{SEED}.csv"
    if not path.exists():
        X, y, _ = make_stream(name, n, SEED)
        tmp = path.with_suffix(".tmp")
        write_csv(tmp, X, y)
        tmp.replace(path)
    return path, None


# ---------------------------------------------------------------------- configs
def shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())


# --extra PATH: more ocld columns, each a YAML config used unchanged on every stream.
EXTRA: dict[str, Path] = {}


def is_ocld(model: str) -> bool:
    return model in OCLD_MODELS or model in EXTRA


def config_for(model: str, stream: str) -> Any:
    from ocld.stream.config import parse_config

    if model in EXTRA:
        data = yaml.safe_load(EXTRA[model].read_text())
    elif model in OCLD_MODELS:
        data = shipped(model)
    elif model == "arf_yaml":
        data = shipped("river-arf")
    else:
        if model == "lr":
            if stream in MULTICLASS:
                params = {"model": "river.multiclass.OneVsRestClassifier",
                          "params": {"classifier": {"model": "river.linear_model.LogisticRegression"}}, "scale": True}
            else:
                params = {"model": "river.linear_model.LogisticRegression", "scale": True}
        elif model == "hat":
            params = {"model": "river.tree.HoeffdingAdaptiveTreeClassifier", "params": {"seed": 42}, "scale": False}
        elif model == "arf":
            params = {"model": "river.forest.ARFClassifier", "params": {"n_models": 10, "seed": 42}, "scale": False}
        else:
            raise ValueError(f"unknown model {model!r}; choose from {list(ALL_MODELS)}")
        data = {"name": f"bench-{model}", "allow_pickle": True, "learner": {"name": "RiverLearner", "params": params}}
    data = copy.deepcopy(data)
    if model in RIVER_MODELS and model != "arf_yaml":
        data["drift"] = dict(data.get("drift") or {}, adapt=False)
    return parse_config(data, f"benchmark config {model}")


# ---------------------------------------------------------------------- running
def read_cpu_seconds(path: Path) -> float:
    """CPU seconds of reading the whole file (evaluate reads it all, then applies ``limit``);
    subtracted from each run's CPU time."""
    from ocld.stream.files import read_table

    best = float("inf")
    for _ in range(2):
        c0 = time.process_time()
        read_table(path)
        best = min(best, time.process_time() - c0)
    return best


def run_cell(model: str, stream: str, path: Path, limit: int | None, read_cpu: float = 0.0) -> dict[str, Any]:
    """One evaluate run; adds wall_s and cpu_samples_per_s (samples per CPU second of this
    process, file reading subtracted): CPU time hardly depends on what else the machine runs."""
    from ocld.stream.offline import evaluate

    cfg = config_for(model, stream)
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = evaluate(cfg, path, limit=limit)
    cpu = max(time.process_time() - c0 - read_cpu, 1e-9)
    res["wall_s"] = time.perf_counter() - t0
    res["cpu_s"] = cpu
    res["cpu_samples_per_s"] = res["samples"] / cpu
    return res


def fmt_speed(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}"


def tables(results: dict[str, dict[str, dict[str, Any]]], streams: list[str], models: list[str],
           header: str) -> str:
    river = [m for m in models if m in RIVER_MODELS]
    ocld = [m for m in models if m in OCLD_MODELS]  # the targets are judged on the shipped configs
    extra = [m for m in models if m in EXTRA]
    lines = [header, ""]
    lines.append("Cells: prequential accuracy / samples/s (each cell one `evaluate` run; samples/s includes "
                 "the LearningCore's metrics and ADWIN monitor).")
    lines.append("")
    cols = ["stream", "samples", '"no change"'] + [TITLES[m] for m in models]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for s in streams:
        row = results.get(s, {})
        if not row:
            continue
        any_res = next(iter(row.values()))
        accs = {m: row[m]["accuracy"] for m in models if m in row}
        best = max(accs.values()) if accs else None
        cells = [s, f"{any_res['samples']:,}", f"{any_res['nochange_accuracy']:.3f}"]
        for m in models:
            if m not in row:
                cells.append("-")
                continue
            a = row[m]["accuracy"]
            txt = f"{a:.3f} / {fmt_speed(row[m]['samples_per_s'])}"
            cells.append(f"**{txt}**" if best is not None and a == best else txt)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Bold: best accuracy in the row (river or ocld; \"no change\" is not a model).")
    lines.append("")

    if ocld and river:
        lines.append("| stream | best ocld (acc) | best river (acc) | ocld - river | ocld beats river | "
                     "KalmanHead / ARF(10) samples/s, CPU time | same, wall clock |")
        lines.append("|---|---|---|---|---|---|---|")
        for s in streams:
            row = results.get(s, {})
            o = [(row[m]["accuracy"], m) for m in ocld if m in row]
            r = [(row[m]["accuracy"], m) for m in river if m in row]
            if not o or not r:
                continue
            (ao, mo), (ar, mr) = max(o), max(r)
            kind = "drifting" if s in DRIFTING else "class-incremental"
            verdict = ("yes" if ao > ar else "**no**") + f" ({kind})"
            ratio = wall = "-"
            if "kalman" in row and "arf" in row and row["arf"]["samples_per_s"] > 0:
                ratio = f"{row['kalman']['cpu_samples_per_s'] / row['arf']['cpu_samples_per_s']:.1f}x"
                wall = f"{row['kalman']['samples_per_s'] / row['arf']['samples_per_s']:.1f}x"
            lines.append(f"| {s} | {TITLES[mo]} ({ao:.3f}) | {TITLES[mr]} ({ar:.3f}) | {100 * (ao - ar):+.1f} pts | "
                         f"{verdict} | {ratio} | {wall} |")
        lines.append("")
        drifting = [s for s in streams if s in DRIFTING and results.get(s)]
        wins = []
        for s in drifting:
            row = results[s]
            o = [row[m]["accuracy"] for m in ocld if m in row]
            r = [row[m]["accuracy"] for m in river if m in row]
            if o and r:
                wins.append(max(o) > max(r))
        ratios = [results[s]["kalman"]["cpu_samples_per_s"] / results[s]["arf"]["cpu_samples_per_s"]
                  for s in streams if "kalman" in results.get(s, {}) and "arf" in results.get(s, {})]
        if wins:
            lines.append(f"Target 1 (ocld's best shipped config beats river's best on every drifting stream): "
                         f"{'met' if all(wins) else 'NOT met'} ({sum(wins)}/{len(wins)} drifting streams).")
        for m in extra:
            w = [results[s][m]["accuracy"] > max(results[s][r]["accuracy"] for r in river if r in results[s])
                 for s in drifting if m in results[s]]
            lines.append(f"Extra config {TITLES[m]} (same file on every stream) beats river's best on "
                         f"{sum(w)}/{len(w)} drifting streams.")
        if ratios:
            lines.append(f"Target 2 (KalmanHead >= 20x faster than ARF(10), CPU-time ratio): "
                         f"{'met' if min(ratios) >= 20 else 'NOT met'} on every stream "
                         f"(min {min(ratios):.1f}x, median {float(np.median(ratios)):.1f}x, max {max(ratios):.1f}x)."
                         if min(ratios) >= 20 else
                         f"Target 2 (KalmanHead >= 20x faster than ARF(10), CPU-time ratio): NOT met on "
                         f"{sum(r < 20 for r in ratios)}/{len(ratios)} streams "
                         f"(min {min(ratios):.1f}x, median {float(np.median(ratios)):.1f}x, max {max(ratios):.1f}x).")
        lines.append("")

    drift_rows = [(s, m, len(results[s][m]["drift_events"])) for s in streams for m in models
                  if m in results.get(s, {})]
    if drift_rows:
        lines.append("Error drift events per run (each config's monitor: ADWIN, plus a one-sided Page-Hinkley test for "
                     "KalmanHead; ocld learners adapt on them; river models ignore them): "
                     + "; ".join(f"{s}: " + ", ".join(f"{m} {n}" for s2, m, n in drift_rows if s2 == s)
                                 for s in streams if results.get(s)))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=None,
                    help=f"samples per stream (default: {DEFAULT_SAMPLES:,} for synthetic, full elec/weather/digits)")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SAMPLES:,} samples per stream")
    ap.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=ALL_MODELS)
    ap.add_argument("--extra", nargs="+", type=Path, default=[],
                    help="more ocld configs (YAML), each run unchanged on every stream as an extra column")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "accuracy.md")
    args = ap.parse_args(argv)
    for path in args.extra:
        key = f"cfg:{path.stem}"
        EXTRA[key] = path
        TITLES[key] = f"ocld {path.name}"
    samples = args.samples if args.samples is not None else (QUICK_SAMPLES if args.quick else None)
    models = [m for m in ALL_MODELS if m in args.models] + list(EXTRA)

    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS; torch reads OMP_NUM_THREADS=1 set by `import stream`
    started = time.time()
    load0 = os.getloadavg()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for s in args.streams:
        path, limit = stream_file(s, samples)
        read_cpu = read_cpu_seconds(path)
        results[s] = {}
        for m in models:
            print(f"[{time.time() - started:6.0f}s] {s:10s} {m:9s} ...", end="", file=sys.stderr, flush=True)
            res = run_cell(m, s, path, limit, read_cpu)
            results[s][m] = res
            print(f" acc {res['accuracy']:.4f}  {res['samples_per_s']:9,.0f} samples/s "
                  f"({res['cpu_samples_per_s']:,.0f} per CPU s)  "
                  f"({res['samples']:,} samples, {res['wall_s']:.1f}s)", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    total = time.time() - started

    n_txt = (f"{samples:,} samples per stream" if samples is not None
             else f"synthetic streams {DEFAULT_SAMPLES:,} samples (seed {SEED}), elec/weather/digits full")
    header = (f"## Accuracy and speed against river ({n_txt})\n\n"
              f"One config per model on every stream (config/kalman.yaml, config/analytic.yaml, config/logistic.yaml, "
              f"config/mkd.yaml "
              f"unchanged). Run took {total:.0f} s; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end "
              f"({os.cpu_count()} CPUs); BLAS and torch on one thread.")
    text = tables(results, args.streams, models, header)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
