"""Continual evaluation (``ocld evaluate --test --eval-every``) on the class-incremental digits
files: the metrics against an independent computation from the accuracy matrix, a batch
reference for the final accuracy, cut invariance, the CLI's JSON and plot."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ocld.stream.cli import main
from ocld.stream.config import parse_config
from ocld.stream.files import read_table
from ocld.stream.offline import evaluate
from tests.helpers import ROOT

TRAIN = ROOT / "data" / "digits_train.csv"
TEST = ROOT / "data" / "digits_test.csv"
LEARNER = {"name": "AnalyticRidge", "params": {"expansion_size": 64, "seed": 0}}


@pytest.fixture(scope="module")
def cfg():
    return parse_config({"learner": LEARNER, "drift": {"enabled": False}})


@pytest.fixture(scope="module")
def result(cfg):
    return evaluate(cfg, TRAIN, test=TEST, eval_every=100, batch_size=64)


def test_matrix_shape_points_and_task_ends(result):
    train = read_table(TRAIN)
    ends = {}
    for i, t in enumerate(train.task):
        ends[t] = i + 1
    assert result["tasks"] == [0, 1, 2, 3, 4]
    assert result["task_ends"] == {str(t): n for t, n in ends.items()}
    points = result["eval_points"]
    assert points == sorted(set(list(range(100, 1258, 100)) + list(ends.values())))
    M = result["accuracy_matrix"]
    assert len(M) == len(points) and all(len(row) == 5 for row in M)
    for n, row in zip(points, M):
        seen = {t for t in range(5) if any(train.task[i] == t for i in range(n))}
        assert [v is not None for v in row] == [t in seen for t in range(5)]


def test_metrics_match_an_independent_computation(result):
    M = np.array([[np.nan if v is None else v for v in row] for row in result["accuracy_matrix"]])
    points = result["eval_points"]
    end_row = {int(t): points.index(n) for t, n in result["task_ends"].items()}
    assert result["aaa"] == pytest.approx(float(np.mean(np.nanmean(M, axis=1))))
    old = [0, 1, 2, 3]
    forgetting = np.mean([M[end_row[t], t] - M[-1, t] for t in old])
    min_acc = np.mean([M[end_row[t] + 1:, t].min() for t in old])
    assert result["forgetting"] == pytest.approx(forgetting)
    assert result["min_acc"] == pytest.approx(min_acc)
    assert result["wc_acc"] == pytest.approx(M[-1, 4] / 5 + 0.8 * min_acc)
    assert result["min_acc"] <= np.mean([M[-1, t] for t in old]) + 1e-12  # a mean of minima


def test_final_accuracy_equals_a_batch_reference(cfg, result):
    train, test = read_table(TRAIN), read_table(TEST)
    reference = cfg.build_learner()
    reference.learn(train.X, np.array(train.y, dtype=object))  # AnalyticRidge: the joint ridge solution
    expected = float(np.mean(reference.predict(test.X) == np.array(test.y, dtype=object)))
    assert result["final_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert result["accuracy_matrix"][-1] == pytest.approx(
        [float(np.mean((reference.predict(test.X) == np.array(test.y, dtype=object))[np.array(test.task) == t]))
         for t in range(5)])


def test_independent_of_the_batch_cut(cfg, result):
    other = evaluate(cfg, TRAIN, test=TEST, eval_every=100, batch_size=500)
    assert other["eval_points"] == result["eval_points"]
    np.testing.assert_allclose(np.array(other["accuracy_matrix"], dtype=float),
                               np.array(result["accuracy_matrix"], dtype=float), atol=1e-12)


def test_without_task_field_only_final_accuracy(cfg, tmp_path):
    train, test = read_table(TRAIN), read_table(TEST)
    for name, t in (("tr.csv", train), ("te.csv", test)):
        with open(tmp_path / name, "w") as fh:
            fh.write(",".join([f"p{j}" for j in range(64)] + ["y"]) + "\n")
            for row, label in zip(t.X, t.y):
                fh.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    r = evaluate(cfg, tmp_path / "tr.csv", test=tmp_path / "te.csv", eval_every=100)
    assert "final_accuracy" in r and "accuracy_matrix" not in r and "aaa" not in r


def test_cli_writes_json_and_plot(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(orjson.dumps({"learner": LEARNER}).decode())
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["evaluate", str(cfg_path), "--data", str(TRAIN), "--test", str(TEST), "--eval-every", "200",
                 "--json", str(out), "--plot", str(png)])
    assert code == 0
    r = orjson.loads(out.read_bytes())
    for key in ("final_accuracy", "aaa", "forgetting", "min_acc", "wc_acc", "accuracy_matrix", "curve", "drift_events"):
        assert key in r
    assert 10_000 < png.stat().st_size < 200_000
    assert "WC-ACC" in capsys.readouterr().out
    assert main(["evaluate", str(cfg_path), "--data", str(TRAIN), "--eval-every", "10"]) == 2
    assert main(["report", "--from-json", str(out), "--out", str(tmp_path / "again.png")]) == 0
