"""benchmarks/peers.py's own helpers count what they say they count (no timing here).

- its accuracy is ocld's: ``Prequential`` agrees with ``ocld.core.metrics`` fed the way
  ``RiverLearner`` feeds it, and the peers' river loop scores exactly what ocld's
  config/river-lr.yaml learner scores on the same records;
- the table's medians and ratios are per round, and a failed round is a note, not a crash;
- an ocld config is the shipped file with only name, topic, data_dir and ``--set`` changed;
- the ``>>>`` examples of the module run, and benchmarks/scaling.py's data is seeded.
"""

from __future__ import annotations

import doctest
import importlib.util
import sys
from argparse import Namespace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module
    spec.loader.exec_module(module)
    return module


def test_examples(peers: ModuleType) -> None:
    result = doctest.testmod(peers, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


def test_prequential_counts_as_ocld_metrics(peers: ModuleType) -> None:
    """Random labels and probabilities (ties and all-zero rows included) scored one at a time."""
    from ocld.core.metrics import PrequentialMetrics

    rng = np.random.default_rng(0)
    labels = ["b", "a", "c"]
    mine, theirs = peers.Prequential(), PrequentialMetrics()
    known: list[str] = []
    for _ in range(2000):
        label = labels[int(rng.integers(0, 3))]
        proba = {c: float(v) for c, v in zip(labels, rng.choice([0.0, 0.25, 0.5], size=3))}
        mine.score(proba, label)
        row = np.array([[proba[c] for c in known]])
        if known:  # RiverLearner's rows: normalized over the classes seen, uniform when all are 0
            row = row / row.sum() if row.sum() > 0 else np.full_like(row, 1.0 / len(known))
        theirs.update([label], row, list(known))
        if label not in known:
            known.append(label)
    assert (mine.n, mine.correct) == (theirs.n, theirs.correct)


def test_river_loop_scores_as_ocld_river_lr(peers: ModuleType) -> None:
    """The peers' per-record code and ocld's config/river-lr.yaml learner: same model, same accuracy."""
    from ocld.core.metrics import PrequentialMetrics
    from ocld.stream.config import load_config
    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    X, y = table.X[:3000], list(table.y)[:3000]
    loop = peers.RiverLoop()
    for row, label in zip(X.tolist(), y):
        loop({"x": row, "y": label})

    cfg = load_config(ROOT / "config" / "river-lr.yaml")
    assert cfg.drift.adapt is False  # a restart on a drift event would make it another model
    learner = cfg.build_learner()
    metrics = PrequentialMetrics()
    for a in range(0, len(y), 500):  # the daemon's batches: predicted before learned, in order
        before = list(learner.classes_)
        proba = learner.learn_predict(X[a:a + 500], np.asarray(y[a:a + 500], dtype=object))
        classes = list(learner.classes_)
        # a class first seen in this batch gets its column from that sample on (learn_predict's rule)
        for i in range(proba.shape[0]):
            k = len(before)
            metrics.update([y[a + i]], proba[i:i + 1, :k], before[:k])
            if y[a + i] not in before:
                before.append(y[a + i])
        assert before == classes
    assert loop.metric.n == metrics.n == 3000
    assert loop.metric.correct == metrics.correct


def test_summary_is_per_round_and_keeps_failures(peers: ModuleType) -> None:
    rounds = [
        {"bare-kafka-python": {"rate": 200.0, "cpu_us": 5.0}, "quix": {"rate": 50.0, "cpu_us": 20.0},
         "ocld-kalman": {"rate": 60.0, "cpu_us": 30.0, "accuracy": 0.91}},
        {"bare-kafka-python": {"rate": 100.0, "cpu_us": 6.0}, "quix": {"rate": 40.0, "cpu_us": 22.0},
         "ocld-kalman": {"error": "TimeoutError: learned 10 of 20 records"}},
        {"bare-kafka-python": {"rate": 150.0, "cpu_us": 5.5}, "quix": {"rate": 45.0, "cpu_us": 21.0},
         "ocld-kalman": {"rate": 30.0, "cpu_us": 34.0, "accuracy": 0.91}},
    ]
    rows = {r["key"]: r for r in peers.summarize(["bare-kafka-python", "quix", "ocld-kalman"], rounds)}
    assert rows["quix"]["rate"] == 45.0
    assert rows["quix"]["ratio"] == pytest.approx(0.3)  # median of 0.25, 0.4, 0.3: each round's own reference
    assert rows["ocld-kalman"]["ok"] == 2 and rows["ocld-kalman"]["errors"] == [
        "round 2: TimeoutError: learned 10 of 20 records"]
    text = peers.table(list(rows.values()), 3)
    assert "2 of 3 (round 2: TimeoutError" in text and "0.9100" in text
    # ocld kalman / quix per round where both ran: 60/50 = 1.2 and 30/45 = 0.67 -> median 0.93
    assert any("0.93×" in line for line in peers.targets(rounds))


def test_ocld_config_is_the_shipped_file_with_overrides(peers: ModuleType, tmp_path: Path) -> None:
    import yaml

    from ocld.stream.config import load_config

    args = Namespace(group="ocld-kalman-1234", topic="peers.elec", workdir=str(tmp_path))
    path = peers.ocld_config_file(args, "kalman.yaml", ["kafka.max_batch=1000", "learner_process=true"])
    shipped = yaml.safe_load((ROOT / "config" / "kalman.yaml").read_text())
    written = yaml.safe_load(path.read_text())
    assert written["learner"] == shipped["learner"] and written["drift"] == shipped["drift"]
    cfg = load_config(path)
    assert (cfg.name, cfg.kafka.topic, cfg.kafka.max_batch, cfg.learner_process) == (
        "ocld-kalman-1234", "peers.elec", 1000, True)
    assert cfg.data_dir == str(tmp_path / "ocld")


def test_scaling_data_is_seeded() -> None:
    """benchmarks/scaling.py's synthetic records: the same every run, the width asked for, both labels."""
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "benchmarks" / "scaling.py")
    assert spec is not None and spec.loader is not None
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    assert doctest.testmod(scaling).failed == 0
    import orjson

    records = [orjson.loads(v) for v in scaling.synthetic_values(500, 64)]
    assert records == [orjson.loads(v) for v in scaling.synthetic_values(500, 64)]
    assert {len(r["x"]) for r in records} == {64} and {r["y"] for r in records} == {0, 1}
