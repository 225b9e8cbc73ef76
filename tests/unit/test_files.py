"""``ocld evaluate`` accounts for every row it does not learn, with the reason.

Each test writes a small CSV (or JSON-lines) file and checks the counts by reason, the
column named, the first line, and that ``samples + not_learned == rows``. Rules checked
here: an empty cell and ``nan`` both make the row a "missing value" (skipped and counted,
never a stop); a byte-order mark is read; a continuous-looking label column warns.
"""

from __future__ import annotations

import gzip
import logging

import orjson
import pytest

from ocld.stream.cli import main
from ocld.stream.config import parse_config
from ocld.stream.files import DataFileError, iter_records, iter_rows, label_warning, read_table
from ocld.stream.offline import evaluate

LEARNER = {"name": "AnalyticRidge", "params": {"expansion_size": 16, "seed": 0}}


def _cfg(**messages):
    return parse_config({"learner": LEARNER, "drift": {"enabled": False}, "messages": messages})


def _reasons(result) -> dict[str, dict]:
    return {e["reason"]: e for e in result["not_learned_by_reason"]}


def _write_csv(path, header: str, rows: list[str], encoding: str = "utf-8") -> None:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding=encoding)


def test_labels_beyond_max_classes_are_counted_not_dropped(tmp_path):
    path = tmp_path / "many.csv"
    _write_csv(path, "a,b,label", [f"{i * 0.1:.1f},{i % 7},{i % 10}" for i in range(200)])
    result = evaluate(_cfg(max_classes=4), path)
    entry = _reasons(result)["label beyond messages.max_classes=4 (a new class after the first 4)"]
    assert entry["kind"] == "max_classes" and entry["rows"] == 120  # labels 4..9: 6 of every 10 rows
    assert entry["first_line"] == 6  # the row with label 4 (header is line 1)
    assert result["samples"] == 80 and result["rows"] == 200
    assert result["samples"] + result["not_learned"] == result["rows"]
    assert result["skipped_invalid"] == 120


def test_empty_cell_and_nan_are_both_missing_values_named_by_column(tmp_path):
    """Decision: an empty cell skips the row exactly like ``nan``; neither stops the run."""
    path = tmp_path / "gaps.csv"
    rows = [f"{i},{i % 3},{i % 2}" for i in range(50)]
    rows[3] = "3,,1"  # line 5
    rows[10] = "nan,1,0"  # line 12
    rows[20] = "20,NA,0"  # line 22
    _write_csv(path, "width,height,label", rows)
    result = evaluate(_cfg(), path)
    reasons = _reasons(result)
    assert reasons["missing value in column 'height'"]["rows"] == 2
    assert reasons["missing value in column 'height'"]["first_line"] == 5
    assert reasons["missing value in column 'width'"] == {**reasons["missing value in column 'width'"],
                                                           "rows": 1, "first_line": 12, "column": "width",
                                                           "kind": "missing_value"}
    assert result["samples"] == 47 and result["not_learned"] == 3


def test_non_numeric_value_names_the_column_header(tmp_path):
    path = tmp_path / "words.csv"
    rows = [f"{i},{i * 2},{i % 2}" for i in range(30)]
    rows[4] = "4,lots,0"  # line 6
    _write_csv(path, "count,price,label", rows)
    entry = _reasons(evaluate(_cfg(), path))["non-numeric value in column 'price'"]
    assert entry["kind"] == "non_numeric" and entry["column"] == "price"
    assert entry["rows"] == 1 and entry["first_line"] == 6 and entry["example"] == "lots"
    with pytest.raises(DataFileError, match=r"words.csv:6: non-numeric value in column 'price' \('lots'\)"):
        list(iter_records(path))


def test_short_rows_unlabelled_rows_and_large_values_are_counted(tmp_path):
    path = tmp_path / "mixed.csv"
    rows = [f"{i},{i % 4},{i % 2}" for i in range(40)]
    rows[2] = "2,1"  # line 4: a cell short
    rows[5] = "5,1,"  # line 7: no label, predicted only
    rows[8] = "8,inf,1"  # line 10
    rows[9] = "1e12,1,1"  # line 11: above max_abs_value
    rows[12] = "12,1,0,,"  # trailing separators are tolerated
    _write_csv(path, "a,b,label", rows)
    result = evaluate(_cfg(max_abs_value=1e9), path)
    kinds = {e["kind"]: e for e in result["not_learned_by_reason"]}
    assert kinds["wrong_width"]["first_line"] == 4 and "2 cells, the header has 3" in kinds["wrong_width"]["reason"]
    assert kinds["unlabelled"]["first_line"] == 7 and kinds["unlabelled"]["rows"] == 1
    assert kinds["not_finite"]["column"] == "b" and kinds["not_finite"]["first_line"] == 10
    assert kinds["above_max_abs_value"]["column"] == "a" and kinds["above_max_abs_value"]["first_line"] == 11
    assert result["samples"] == 36 and result["not_learned"] == 4
    assert result["skipped_invalid"] == 3  # the unlabelled row is predicted, by design


def test_byte_order_mark_does_not_break_the_label_column(tmp_path):
    path = tmp_path / "bom.csv"
    _write_csv(path, "species,a,b", [f"s{i % 3},{i},{i % 5}" for i in range(30)], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    table = read_table(path, label_column="species")
    assert table.label == "species" and table.features == ["a", "b"] and table.y[:3] == ["s0", "s1", "s2"]
    gz = tmp_path / "bom.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_table(gz, label_column="species").y == table.y
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"x": [1, 2], "y": 0}\n{"x": [3, 4], "y": 1}\n')
    assert read_table(jsonl).y == [0, 1]


def test_continuous_label_column_warns(tmp_path, caplog):
    path = tmp_path / "iris.csv"  # the class (an int) in the middle, a float width last
    _write_csv(path, "sepal_length,species,petal_width",
               [f"{4 + i % 30 / 10:.1f},{i % 3},{(i * 7) % 25 / 10:.1f}" for i in range(150)])
    with caplog.at_level(logging.WARNING, logger="ocld.evaluate"):
        result = evaluate(_cfg(), path)
    assert len(result["warnings"]) == 1
    warning = result["warnings"][0]
    assert "'petal_width'" in warning and "last column" in warning and "--label-column" in warning
    assert "25 distinct" in warning
    assert any("looks continuous" in r.getMessage() for r in caplog.records)
    assert evaluate(_cfg(), path, label_column="species")["warnings"] == []


@pytest.mark.parametrize("labels, warns", [
    ([0.5 * i for i in range(40)], True),  # fractional, many values
    ([str(i / 10) for i in range(12)], True),  # the same as parsed from a CSV ("1.2" stays a string)
    ([i % 10 for i in range(1000)], False),  # digits: ten integer classes
    (["up", "down"] * 50, False),
    ([0.5, 1.5, 2.5] * 10, False),  # few distinct values: could be classes
    (list(range(500)), True),  # over 200 distinct integers
    ([None, None], False),
])
def test_label_warning_rule(labels, warns):
    assert (label_warning(labels, "y", False) is not None) is warns


def test_jsonl_records_are_checked_by_the_daemons_codec(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [orjson.dumps({"x": [i, i % 3], "y": i % 2}).decode() for i in range(20)]
    lines[3] = '{"x": [1, 2], "y": 0'  # line 4: cut short
    lines[6] = orjson.dumps({"x": [1, None], "y": 1}).decode()  # line 7
    lines[9] = orjson.dumps({"x": [1, 2, 3], "y": 1}).decode()  # line 10: wrong width
    path.write_text("\n".join(lines) + "\n")
    result = evaluate(_cfg(), path)
    by_line = {e["first_line"]: e for e in result["not_learned_by_reason"]}
    assert by_line[4]["kind"] == "invalid_json" and by_line[4]["reason"] == "not valid JSON"
    assert by_line[7]["kind"] == "invalid_record" and "NaN, Inf or null" in by_line[7]["reason"]
    assert by_line[10]["kind"] == "invalid_record"
    assert "expected 2 features" in by_line[10]["reason"] and "got 3" in by_line[10]["reason"]
    assert result["samples"] == 17 and result["rows"] == 20


def test_limit_counts_only_the_rows_it_reaches(tmp_path):
    path = tmp_path / "l.csv"
    rows = [f"{i},{i % 2}" for i in range(100)]
    rows[5] = ",1"  # before the limit
    rows[80] = ",0"  # after it
    _write_csv(path, "a,label", rows)
    result = evaluate(_cfg(), path, limit=50)
    assert result["samples"] == 50 and result["not_learned"] == 1 and result["rows"] == 51


@pytest.mark.parametrize("make, match", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"a,b,y\n1,2,0\n1,\xff,1\n"), r":3: not UTF-8 text \(byte 0xff\)"),
])
def test_unreadable_files_raise_one_clear_error(tmp_path, make, match):
    path = tmp_path / "data.csv"
    make(path)
    with pytest.raises(DataFileError, match=match):
        read_table(path)


def test_a_gz_name_on_a_plain_file_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.csv.gz"
    path.write_text("a,y\n1,0\n")
    with pytest.raises(DataFileError, match="not a complete gzip file"):
        read_table(path)


def test_iter_rows_yields_problems_in_file_order(tmp_path):
    path = tmp_path / "o.csv"
    _write_csv(path, "a,y", ["1,0", "x,1", "3,1"])
    items = list(iter_rows(path))
    assert [line for line, _ in items] == [2, 3, 4]
    assert items[1][1].kind == "non_numeric" and items[2][1] == {"x": [3.0], "y": 1}


def test_cli_table_and_json_show_every_reason(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rows = [f"{i},{i % 5}" for i in range(60)]
    rows[1] = ",0"
    _write_csv(data, "a,label", rows)
    config = tmp_path / "c.yaml"
    config.write_text("learner:\n  name: AnalyticRidge\n  params: {expansion_size: 8}\nmessages:\n  max_classes: 3\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", str(config), "--data", str(data), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rows not learned" in printed and "missing value in column 'a'" in printed and "max_classes=3" in printed
    result = orjson.loads(out.read_bytes())
    assert {e["kind"] for e in result["not_learned_by_reason"]} == {"missing_value", "max_classes"}
    assert result["samples"] + result["not_learned"] == result["rows"] == 60


def test_cli_fails_in_one_line_when_no_row_is_learned(tmp_path, capsys):
    data = tmp_path / "w.csv"
    _write_csv(data, "colour,size,label", [f"red,{i},{i % 2}" for i in range(10)])
    config = tmp_path / "c.yaml"
    config.write_text("learner:\n  name: AnalyticRidge\n")
    assert main(["evaluate", str(config), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or all("WARNING" in line for line in err[:-1])
    assert err[-1].startswith("ocld: no row of") and "column 'colour'" in err[-1] and "--label-column colour" in err[-1]
