"""A panel of real data sets: the one default config (config/default.yaml) against river.

Every cell is one run of ``ocld.stream.offline.evaluate_arrays`` (the code path of ``ocld
evaluate``: the daemon's LearningCore, prequential test-then-train over a single pass,
micro-batches of ``kafka.max_batch`` records), so figures are prequential accuracy.

Data sets, all real and all shipped inside wheels (nothing is downloaded):
- static sets, shuffled once with a fixed seed (``SHUFFLE_SEED``): scikit-learn's bundled
  iris, wine, breast_cancer and digits; river's bundled Bananas, Phishing, ImageSegments,
  Shuttle and Yeast (one of its 14 labels: ``Class2``, the most balanced); mlxtend's
  ``mnist_5k`` (5,000 MNIST digits, 784 pixels); palmerpenguins' penguins (species, rows
  with a missing value dropped); vega_datasets' cars (origin from the other columns, rows
  with a missing value dropped);
- real streams in their natural order: elec and weather (data/), vega_datasets'
  seattle-weather (the day's weather type from precipitation, temperatures, wind and the
  day of the year, 2012-2015), and class-incremental digits (data/digits_train.csv, 5
  tasks of 2 classes in task order).
mlxtend, vega_datasets and palmerpenguins are read from their installed folders without
importing them (``pip install --no-deps mlxtend vega_datasets palmerpenguins``: only the
data files are needed); a set whose package is missing is skipped and named.

Models: ``ocld`` is config/default.yaml unchanged; river's defaults as in
benchmarks/accuracy.py: ``lr`` ``StandardScaler | LogisticRegression`` (one-vs-rest on
more than two classes), ``hat`` ``HoeffdingAdaptiveTreeClassifier(seed=42)``, ``arf``
``ARFClassifier(n_models=10, seed=42)``, run with ``drift.adapt: false`` (river models keep
their own drift handling). A set counts as a win when ocld's accuracy is above the best of
the three.

    nice -n 19 python benchmarks/panel.py                   # all sets, then the cost rounds (about 9 min)
    python benchmarks/panel.py --sets iris wine --models ocld lr
    python benchmarks/panel.py --models ocld --config config/kalman.yaml --out /tmp/kalman-panel.md

Prints a Markdown table and writes it to benchmarks/out/panel.md. BLAS and torch pinned
to one thread. Never touches Kafka or Redis; no assertions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import gzip  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHUFFLE_SEED = 0
RIVER_SEED = 42
MODELS = ("lr", "hat", "arf", "ocld")
RIVER = ("lr", "hat", "arf")
TITLES = {"lr": "river LogReg", "hat": "river HAT", "arf": "river ARF(10)", "ocld": "ocld default.yaml"}


@dataclass
class DataSet:
    X: np.ndarray
    y: list[Any]
    kind: str  # "static (shuffled)" or "stream (natural order)"
    source: str


class Missing(Exception):
    """The package that ships a data set is not installed."""


# ---------------------------------------------------------------------- loaders
def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise Missing(f"pip install --no-deps {name.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def _shuffled(X: np.ndarray, y: list[Any], source: str) -> DataSet:
    perm = np.random.default_rng(SHUFFLE_SEED).permutation(len(y))
    return DataSet(np.asarray(X, dtype=np.float64)[perm], [y[i] for i in perm], "static (shuffled)", source)


def _sklearn(name: str) -> Callable[[], DataSet]:
    def load() -> DataSet:
        import sklearn.datasets as skd

        d = getattr(skd, f"load_{name}")()
        return _shuffled(d.data, [int(v) for v in d.target], "scikit-learn")

    return load


def _river(name: str, label: Callable[[Any], Any] = lambda v: v) -> Callable[[], DataSet]:
    def load() -> DataSet:
        import river.datasets as rd

        rows, ys = [], []
        for x, y in getattr(rd, name)():
            rows.append([float(v) for v in x.values()])
            ys.append(label(y))
        ys = [v if isinstance(v, (int, str)) else str(v) for v in ys]
        return _shuffled(np.asarray(rows), ys, "river")

    return load


def _mnist() -> DataSet:
    path = _package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    data = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
    return _shuffled(data[:, :-1], [int(v) for v in data[:, -1]], "mlxtend")


def _penguins() -> DataSet:
    path = _package_dir("palmerpenguins") / "data" / "penguins.csv"
    islands = ["Biscoe", "Dream", "Torgersen"]
    X, y = [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            nums = [r["bill_length_mm"], r["bill_depth_mm"], r["flipper_length_mm"], r["body_mass_g"], r["year"]]
            if "NA" in nums or r["sex"] not in ("male", "female"):
                continue
            X.append([float(v) for v in nums] + [float(r["island"] == i) for i in islands]
                     + [float(r["sex"] == "male")])
            y.append(r["species"])
    return _shuffled(np.asarray(X), y, "palmerpenguins")


def _cars() -> DataSet:
    rows = json.loads((_package_dir("vega_datasets") / "_data" / "cars.json").read_text())
    cols = ["Miles_per_Gallon", "Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"]
    X, y = [], []
    for r in rows:
        if any(r.get(c) is None for c in cols):
            continue
        X.append([float(r[c]) for c in cols] + [float(str(r["Year"])[:4])])
        y.append(r["Origin"])
    return _shuffled(np.asarray(X), y, "vega_datasets")


def _seattle() -> DataSet:
    path = _package_dir("vega_datasets") / "_data" / "seattle-weather.csv"
    X, y = [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            yy, mm, dd = (int(v) for v in r["date"].split("/"))
            day = time.strptime(f"{yy}-{mm}-{dd}", "%Y-%m-%d").tm_yday
            X.append([float(r["precipitation"]), float(r["temp_max"]), float(r["temp_min"]), float(r["wind"]),
                      math.sin(2 * math.pi * day / 365.25), math.cos(2 * math.pi * day / 365.25)])
            y.append(r["weather"])
    return DataSet(np.asarray(X), y, "stream (natural order)", "vega_datasets")


def _csv_stream(name: str, what: str) -> Callable[[], DataSet]:
    def load() -> DataSet:
        from ocld.stream.files import read_table

        t = read_table(ROOT / "data" / name)
        return DataSet(t.X, list(t.y), what, "data/")

    return load


SETS: dict[str, Callable[[], DataSet]] = {
    "iris": _sklearn("iris"),
    "wine": _sklearn("wine"),
    "breast_cancer": _sklearn("breast_cancer"),
    "digits": _sklearn("digits"),
    "mnist_5k": _mnist,
    "penguins": _penguins,
    "cars": _cars,
    "bananas": _river("Bananas"),
    "phishing": _river("Phishing"),
    "image_segments": _river("ImageSegments"),
    "shuttle": _river("Shuttle"),
    "yeast_class2": lambda: _yeast(),
    "elec": _csv_stream("elec.csv", "stream (natural order)"),
    "weather": _csv_stream("weather.csv", "stream (natural order)"),
    "seattle_weather": _seattle,
    "digits_class_incremental": _csv_stream("digits_train.csv", "stream (class-incremental)"),
}


def _yeast() -> DataSet:
    import river.datasets as rd

    rows, ys = [], []
    for x, y in rd.Yeast():
        rows.append([float(v) for v in x.values()])
        ys.append(int(bool(y["Class2"])))
    return _shuffled(np.asarray(rows), ys, "river")


# ---------------------------------------------------------------------- configs
OCLD_CONFIG = ROOT / "config" / "default.yaml"  # --config replaces it


def config_for(model: str, n_classes: int) -> Any:
    from ocld.stream.config import parse_config

    if model == "ocld":
        return parse_config(yaml.safe_load(OCLD_CONFIG.read_text()), str(OCLD_CONFIG))
    if model == "lr":
        if n_classes > 2:
            params = {"model": "river.multiclass.OneVsRestClassifier",
                      "params": {"classifier": {"model": "river.linear_model.LogisticRegression"}}, "scale": True}
        else:
            params = {"model": "river.linear_model.LogisticRegression", "scale": True}
    elif model == "hat":
        params = {"model": "river.tree.HoeffdingAdaptiveTreeClassifier", "params": {"seed": RIVER_SEED}, "scale": False}
    elif model == "arf":
        params = {"model": "river.forest.ARFClassifier", "params": {"n_models": 10, "seed": RIVER_SEED}, "scale": False}
    else:
        raise ValueError(f"unknown model {model!r}; choose from {list(MODELS)}")
    data = {"name": f"panel-{model}", "allow_pickle": True, "learner": {"name": "RiverLearner", "params": params},
            "drift": {"adapt": False}}
    return parse_config(data, f"panel config {model}")


def run_cell(model: str, ds: DataSet) -> dict[str, Any]:
    from ocld.stream.files import Table
    from ocld.stream.offline import evaluate_arrays

    n = len(ds.y)
    table = Table(X=ds.X, y=ds.y, ids=[None] * n, ts=[None] * n, task=[None] * n)
    cfg = config_for(model, len(set(ds.y)))
    c0 = time.process_time()
    res = evaluate_arrays(cfg, table)
    res["cpu_samples_per_s"] = res["samples"] / max(time.process_time() - c0, 1e-9)
    return res


# ---------------------------------------------------------------------- table
def table(results: dict[str, dict[str, dict[str, Any]]], info: dict[str, DataSet], models: list[str],
          skipped: dict[str, str], header: str) -> str:
    lines = [header, ""]
    cols = ["data set", "kind", "samples", "features", "classes"] + [TITLES[m] for m in models]
    river = [m for m in models if m in RIVER]
    judge = "ocld" in models and bool(river)
    if judge:
        cols += ["ocld - best river", "ocld beats river"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    margins = []
    for name, row in results.items():
        ds = info[name]
        accs = {m: row[m]["accuracy"] for m in models if m in row}
        best = max(accs.values())
        cells = [name, ds.kind, f"{len(ds.y):,}", str(ds.X.shape[1]), str(len(set(ds.y)))]
        cells += [(f"**{accs[m]:.3f}**" if accs[m] == best else f"{accs[m]:.3f}") if m in accs else "-" for m in models]
        if judge and "ocld" in accs:
            br = max(accs[m] for m in river if m in accs)
            margin = accs["ocld"] - br
            margins.append((name, margin))
            cells += [f"{100 * margin:+.1f} pts", "yes" if margin > 0 else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: prequential accuracy (single pass, test-then-train). Bold: best in the row.")
    if margins:
        wins = sum(m > 0 for _, m in margins)
        worst = min(margins, key=lambda t: t[1])
        lines.append("")
        lines.append(f"{TITLES['ocld']} beats river's best default model on {wins}/{len(margins)} sets "
                     f"({100 * wins / len(margins):.0f} %); "
                     f"median margin {100 * float(np.median([m for _, m in margins])):+.1f} "
                     f"points; worst {worst[0]} {100 * worst[1]:+.1f} points.")
    speed = [(name, row["ocld"]["cpu_samples_per_s"] / row["arf"]["cpu_samples_per_s"])
             for name, row in results.items() if "ocld" in row and "arf" in row]
    if speed:
        lines.append("")
        lines.append(f"{TITLES['ocld']} / ARF(10) samples per CPU second: "
                     + ", ".join(f"{n} {r:.1f}x" for n, r in speed) + ".")
    if skipped:
        lines.append("")
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".")
    return "\n".join(lines)


def cost_rounds(ds: DataSet, rounds: int) -> str:
    """ARF(10) and ocld on the same set, alternating ``rounds`` times in this process: one ratio per
    round (ocld's samples per CPU second over ARF's) and their median, since a single pair moves by
    10-20 % on a shared machine."""
    ratios, arf, ours = [], [], []
    for r in range(rounds):
        a = run_cell("arf", ds)["cpu_samples_per_s"]
        o = run_cell("ocld", ds)["cpu_samples_per_s"]
        arf.append(a)
        ours.append(o)
        ratios.append(o / a)
        print(f"cost round {r + 1}/{rounds}: ARF(10) {a:,.0f}, ocld {o:,.0f} samples per CPU s ({o / a:.1f}x)",
              file=sys.stderr, flush=True)
    return (f"Cost on elec, {rounds} rounds of ARF(10) then {TITLES['ocld']} in this process: "
            f"median {float(np.median(ratios)):.1f}x ARF(10)'s samples per CPU second (rounds: "
            + ", ".join(f"{x:.1f}x" for x in ratios)
            + f"; ARF(10) {min(arf):,.0f}-{max(arf):,.0f}, ocld {min(ours):,.0f}-{max(ours):,.0f} samples per CPU s).")


def main(argv: list[str] | None = None) -> int:
    global OCLD_CONFIG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--config", type=Path, default=OCLD_CONFIG, help="the ocld config to judge (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "panel.md")
    ap.add_argument("--cost-rounds", type=int, default=5,
                    help="rounds of ARF(10) then ocld on elec for the cost ratio (0: none; default: %(default)s)")
    args = ap.parse_args(argv)
    OCLD_CONFIG = args.config
    TITLES["ocld"] = f"ocld {args.config.name}"

    from ocld.core.runtime import limit_threads

    limit_threads()
    started = time.time()
    load0 = os.getloadavg()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    info: dict[str, DataSet] = {}
    skipped: dict[str, str] = {}
    for name in args.sets:
        try:
            ds = SETS[name]()
        except Missing as exc:
            skipped[name] = str(exc)
            print(f"skip {name}: {exc}", file=sys.stderr)
            continue
        info[name] = ds
        results[name] = {}
        for m in args.models:
            print(f"[{time.time() - started:6.0f}s] {name:26s} {m:5s} ...", end="", file=sys.stderr, flush=True)
            res = run_cell(m, ds)
            results[name][m] = res
            print(f" acc {res['accuracy']:.4f} ({res['cpu_samples_per_s']:,.0f} samples per CPU s)",
                  file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    header = (f"## Panel: {OCLD_CONFIG.name} against river's default models on {len(results)} real data sets\n\n"
              f"Static sets shuffled with seed {SHUFFLE_SEED}, streams in their natural order; river models seeded "
              f"{RIVER_SEED}. Run took {time.time() - started:.0f} s; load average {load0[0]:.2f} at start, "
              f"{load1[0]:.2f} at end ({os.cpu_count()} CPUs); BLAS and torch on one thread.")
    text = table(results, info, list(args.models), skipped, header)
    if args.cost_rounds > 0 and "elec" in info:
        text += "\n\n" + cost_rounds(info["elec"], args.cost_rounds)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
