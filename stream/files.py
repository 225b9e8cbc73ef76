"""Reading recorded streams from files: CSV or JSON lines, optionally gzipped.

CSV: a header row; the label is ``label_column`` (default: the last column that is not
``id``, ``ts`` or ``task``); columns named ``id``, ``ts`` and ``task`` are read as those
message fields, never as features; every other column is a numeric feature. Labels that
parse as integers become ints, others stay strings; an empty label means predict-only.
JSON lines: one message object per line, in the wire format (``x``, ``y``, ...).
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

SPECIAL = ("id", "ts", "task")


class DataFileError(ValueError):
    """A data file that cannot be read; the message says which line and why."""


def _open(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise DataFileError(f"data file {path} does not exist")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".json", ".ndjson"))


def parse_label(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
        if f.is_integer():
            return int(f)
    except ValueError:
        pass
    return text


@dataclass
class CsvLayout:
    features: list[str]
    feature_idx: list[int]
    label_idx: int | None
    special_idx: dict[str, int]


def csv_layout(header: list[str], label_column: str | None) -> CsvLayout:
    special = {name: header.index(name) for name in SPECIAL if name in header}
    if label_column is not None:
        if label_column not in header:
            raise DataFileError(f"label column {label_column!r} not in the header {header}")
        label_idx: int | None = header.index(label_column)
    else:
        candidates = [i for i, h in enumerate(header) if h not in SPECIAL]
        label_idx = candidates[-1] if len(candidates) > 1 else None
    feature_idx = [i for i, h in enumerate(header) if h not in SPECIAL and i != label_idx]
    return CsvLayout([header[i] for i in feature_idx], feature_idx, label_idx, special)


def iter_records(path: str | Path, label_column: str | None = None) -> Iterator[dict[str, Any]]:
    """Messages (dicts in the wire format) from a CSV or JSON-lines file, in file order."""
    path = Path(path)
    with _open(path) as fh:
        if _is_jsonl(path):
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec: dict[str, Any] = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise DataFileError(f"{path}:{lineno}: not valid JSON ({exc})") from None
                yield rec
            return
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataFileError(f"{path} is empty")
        lay = csv_layout([h.strip() for h in header], label_column)
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                rec = {"x": [float(row[i]) for i in lay.feature_idx]}
            except (ValueError, IndexError):
                raise DataFileError(f"{path}:{lineno}: a feature is not a number or the row is short") from None
            if lay.label_idx is not None:
                rec["y"] = parse_label(row[lay.label_idx])
            for name, i in lay.special_idx.items():
                if row[i] != "":
                    rec[name] = float(row[i]) if name == "ts" else (parse_label(row[i]) if name == "task" else row[i])
            yield rec


@dataclass
class Table:
    X: np.ndarray
    y: list[Any]
    ids: list[Any]
    ts: list[Any]
    task: list[Any]
    features: list[str] | None = None


def read_table(path: str | Path, label_column: str | None = None) -> Table:
    """The whole file as arrays (for ``ocld evaluate`` and benchmarks)."""
    xs, ys, ids, tss, tasks = [], [], [], [], []
    for rec in iter_records(path, label_column):
        xs.append(rec.get("x"))
        ys.append(rec.get("y"))
        ids.append(rec.get("id"))
        tss.append(rec.get("ts"))
        tasks.append(rec.get("task"))
    if any(x is None for x in xs):
        raise DataFileError(f"{path}: every row needs features to be evaluated (delayed-label rows are not supported here)")
    try:
        X = np.array(xs, dtype=np.float64)
    except ValueError:
        raise DataFileError(f"{path}: rows have different numbers of features") from None
    if X.ndim != 2:
        raise DataFileError(f"{path}: no rows")
    return Table(X, ys, ids, tss, tasks)
