"""Prequential metrics against hand computation; CSV reading rules."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from ocld.core.metrics import PrequentialMetrics
from ocld.stream.files import DataFileError, iter_records, read_table


def test_metrics_match_hand_computation_and_round_trip():
    m = PrequentialMetrics(window=3)
    classes = ["a", "b"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = ["a", "a", "b", "b"]
    errors = m.update(y[:2], proba[:2], classes)
    errors2 = m.update(y[2:], proba[2:], classes)
    assert list(errors) + list(errors2) == [0, 1, 1, 0]
    assert m.accuracy == 0.5
    assert m.window_accuracy == pytest.approx(1 / 3)
    assert m.balanced_accuracy == pytest.approx(0.5)
    assert m.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.4, 0.7])))
    assert m.nochange_accuracy == pytest.approx(2 / 4)
    back = PrequentialMetrics.from_state(m.to_state())
    assert back.summary() == m.summary()


def test_unseen_class_counts_as_wrong_with_finite_loss():
    m = PrequentialMetrics()
    errors = m.update(["new"], np.zeros((1, 0)), [])
    assert errors.tolist() == [1] and np.isfinite(m.log_loss)


def test_csv_special_columns_and_labels(tmp_path):
    path = tmp_path / "s.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("id,a,ts,b,task,label\n")
        fh.write("r1,1.5,10,2,0,cat\nr2,3,11,4,1,7\nr3,5,12,6,1,\n")
    recs = list(iter_records(path))
    assert recs[0] == {"x": [1.5, 2.0], "y": "cat", "id": "r1", "ts": 10.0, "task": 0}
    assert recs[1]["y"] == 7 and recs[2]["y"] is None
    table = read_table(path)
    assert table.X.shape == (3, 2)
    with pytest.raises(DataFileError, match="label column"):
        list(iter_records(path, label_column="nope"))


def test_bad_csv_row_names_the_line(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("a,b,y\n1,2,0\n1,x,1\n")
    with pytest.raises(DataFileError, match=r"b.csv:3"):
        list(iter_records(path))
