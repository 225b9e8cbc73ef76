"""Reading recorded streams from files: CSV or JSON lines, optionally gzipped.

CSV: a header row; the label is ``label_column`` (default: the last column that is not
``id``, ``ts`` or ``task``); columns named ``id``, ``ts`` and ``task`` are read as those
message fields, never as features; every other column is a numeric feature. Labels that
parse as integers become ints, others stay strings; an empty label means predict-only.
JSON lines: one message object per line, in the wire format (``x``, ``y``, ...).

Files are UTF-8 (a byte-order mark is allowed). A file that cannot be read at all (missing,
a directory, not UTF-8, not gzip) raises ``DataFileError`` naming the file (and line).

A row that cannot be a sample is a :class:`RowProblem`, never a silent drop. Rule: a
missing value (an empty cell, or ``nan``, ``NA``, ``N/A``, ``null``, ``None``, ``?``) in a
feature column makes the row a problem, exactly like a non-numeric one; both name the
column. :func:`iter_rows` yields the problems in file order so that each reader decides:
:func:`read_table` (``ocld evaluate``) and ``replay`` skip and count them, and the strict
:func:`iter_records` raises on the first. The same missing markers in the label column
mean "no label" (predict-only). This module never decides what a model learns.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

SPECIAL = ("id", "ts", "task")
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})  # compared lower-cased and stripped


class DataFileError(ValueError):
    """A data file that cannot be read; the message says which line and why."""


@dataclass(frozen=True)
class RowProblem:
    """A row that is not a sample. ``kind`` is stable (``missing_value``, ``non_numeric``,
    ``wrong_width``, ``invalid_json``, ``invalid_record``); ``column`` names the header cell
    (CSV) when one column is at fault; ``reason`` is the one-line text shown to users."""

    line: int
    kind: str
    reason: str
    column: str | None = None
    value: str | None = None  # the offending cell, shortened (not part of ``reason``, so that reasons group)

    def message(self, path: str | Path) -> str:
        shown = f" ({self.value!r})" if self.value is not None else ""
        return f"{path}:{self.line}: {self.reason}{shown}"


def check_readable(path: Path) -> None:
    """Raise ``DataFileError`` for a path that is missing or a directory (before any server is contacted)."""
    if not path.exists():
        raise DataFileError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataFileError(f"data path {path} is a directory; give a CSV or JSON-lines file (optionally .gz)")


def _open(path: Path) -> io.TextIOBase:
    check_readable(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataFileError(f"cannot read data file {path}: {exc.strerror or exc}") from None


def _raw_bytes(path: Path) -> bytes:
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
        return fh.read()


def _read_error(path: Path, exc: Exception) -> DataFileError:
    """The one-line error for a file that fails while being read (encoding, gzip)."""
    if isinstance(exc, UnicodeDecodeError):
        try:
            data = _raw_bytes(path)
            data.decode("utf-8-sig")
        except UnicodeDecodeError as inner:
            line = data[:inner.start].count(b"\n") + 1
            return DataFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[inner.start]:02x}); "
                                 "save the file as UTF-8")
        except (OSError, EOFError, zlib.error):
            pass
        return DataFileError(f"{path} is not UTF-8 text; save the file as UTF-8")
    if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
        return DataFileError(f"{path} is not a complete gzip file ({exc}); give a .gz file only when it is gzipped")
    return DataFileError(f"cannot read data file {path}: {getattr(exc, 'strerror', None) or exc}")


def is_jsonl(path: str | Path) -> bool:
    name = Path(path).name.removesuffix(".gz")
    return name.endswith((".jsonl", ".json", ".ndjson"))


def is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING


def parse_label(text: str) -> Any:
    if is_missing(text):
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
    label: str | None = None  # the label column's header
    label_by_default: bool = False  # chosen as the last column, not named by --label-column


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
    return CsvLayout([header[i] for i in feature_idx], feature_idx, label_idx, special,
                     header[label_idx] if label_idx is not None else None,
                     label_column is None and label_idx is not None)


def _cell_problem(row: list[str], lay: CsvLayout, header: list[str], line: int) -> RowProblem:
    """Why a row's feature cells do not all parse as finite-or-infinite numbers: the first bad column."""
    for i in lay.feature_idx:
        text = row[i]
        if is_missing(text):
            return RowProblem(line, "missing_value", f"missing value in column {header[i]!r}", header[i])
        try:
            float(text)
        except ValueError:
            return RowProblem(line, "non_numeric", f"non-numeric value in column {header[i]!r}", header[i],
                              text.strip()[:24])
    return RowProblem(line, "invalid_record", "a feature cell does not parse as a number")


def _csv_rows(path: Path, fh: Any, label_column: str | None,
              layout_out: list[CsvLayout] | None) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise DataFileError(f"{path} is empty")
    header = [h.strip() for h in header]
    lay = csv_layout(header, label_column)
    if layout_out is not None:
        layout_out.append(lay)
    width = len(header)
    fidx = lay.feature_idx
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over the csv module's field size limit: the line is consumed
            yield reader.line_num, RowProblem(reader.line_num, "invalid_record", f"not a readable CSV row ({exc})")
            continue
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            if len(row) > width and not any(c.strip() for c in row[width:]):
                row = row[:width]  # trailing separators
            else:
                yield line, RowProblem(line, "wrong_width", f"row has {len(row)} cells, the header has {width}")
                continue
        try:
            x = [float(row[i]) for i in fidx]
        except ValueError:
            yield line, _cell_problem(row, lay, header, line)
            continue
        total = sum(x)
        if total != total and any(v != v for v in x):  # a nan cell (the sum is nan then: one cheap test per row)
            j = next(k for k, v in enumerate(x) if v != v)
            column = header[fidx[j]]
            yield line, RowProblem(line, "missing_value", f"missing value in column {column!r}", column)
            continue
        rec: dict[str, Any] = {"x": x}
        if lay.label_idx is not None:
            rec["y"] = parse_label(row[lay.label_idx])
        bad_ts = False
        for name, i in lay.special_idx.items():
            if is_missing(row[i]):
                continue
            if name == "ts":
                try:
                    rec["ts"] = float(row[i])
                except ValueError:
                    bad_ts = True
            else:
                rec[name] = parse_label(row[i]) if name == "task" else row[i]
        if bad_ts:
            yield line, RowProblem(line, "non_numeric", "non-numeric value in column 'ts'", "ts",
                                   row[lay.special_idx["ts"]].strip()[:24])
            continue
        yield line, rec


def _jsonl_rows(fh: Any) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    for line, text in enumerate(fh, 1):
        if not text.strip():
            continue
        try:
            rec = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield line, RowProblem(line, "invalid_json", "not valid JSON", None, str(exc).splitlines()[0][:80])
            continue
        if not isinstance(rec, dict):
            yield line, RowProblem(line, "invalid_record", f"a record must be a JSON object, got {type(rec).__name__}")
            continue
        yield line, rec


def iter_rows(path: str | Path, label_column: str | None = None,
              layout_out: list[CsvLayout] | None = None) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """(line number, message or ``RowProblem``) for every data row of a CSV or JSON-lines file, in
    file order. A CSV's layout is appended to ``layout_out`` when given. Raises ``DataFileError``
    only for a file that cannot be read at all."""
    path = Path(path)
    with _open(path) as fh:
        rows = _jsonl_rows(fh) if is_jsonl(path) else _csv_rows(path, fh, label_column, layout_out)
        while True:
            try:
                item = next(rows)
            except StopIteration:
                return
            except (UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
                raise _read_error(path, exc) from None
            yield item


def iter_records(path: str | Path, label_column: str | None = None) -> Iterator[dict[str, Any]]:
    """Messages (dicts in the wire format) from a CSV or JSON-lines file, in file order.
    Strict: the first row that is not a sample raises ``DataFileError`` naming its line."""
    for _, item in iter_rows(path, label_column):
        if isinstance(item, RowProblem):
            raise DataFileError(item.message(path))
        yield item


def label_warning(labels: list[Any], name: str | None, by_default: bool) -> str | None:
    """A warning when the label column looks like a measurement rather than a class.

    ocld learns one class per distinct label, so a continuous column (iris with its class in
    the middle, whose last column is a width) trains on dozens of float "classes". The rule:
    at least 95% of the labels are numbers, there are at least 10 distinct values, and some
    value has a fractional part, or there are over 200 distinct integers.
    """
    given = [v for v in labels if v is not None]
    if not given:
        return None
    numeric: list[float] = []
    for v in given:
        if isinstance(v, int):
            numeric.append(float(v))
        else:
            try:
                numeric.append(float(v))
            except (TypeError, ValueError):
                pass
    if len(numeric) < 0.95 * len(given):
        return None
    distinct = sorted(set(numeric))
    fractional = any(not v.is_integer() for v in distinct)
    if not ((fractional and len(distinct) >= 10) or len(distinct) > 200):
        return None
    examples = ", ".join(f"{v:g}" for v in distinct[:: max(1, len(distinct) // 3)][:3])
    column = f"label column {name!r}" if name else "label"
    why = " (taken as the label because it is the last column)" if by_default else ""
    return (f"the {column}{why} looks continuous: {len(distinct)} distinct numeric values (e.g. {examples}); "
            "ocld learns one class per distinct value: if the class is another column, give --label-column NAME")


@dataclass
class Table:
    X: np.ndarray
    y: list[Any]
    ids: list[Any]
    ts: list[Any]
    task: list[Any]
    features: list[str] | None = None
    lines: list[int] | None = None  # file line of each row of X
    skipped: list[tuple[int, RowProblem]] = field(default_factory=list)  # (rows of X before it, problem)
    label: str | None = None  # the label column (CSV)
    warnings: list[str] = field(default_factory=list)


def read_table(path: str | Path, label_column: str | None = None) -> Table:
    """The whole file as arrays (for ``ocld evaluate`` and benchmarks).

    Rows that are not samples are left out of ``X`` and kept in ``skipped`` with their line and
    reason; JSON-lines records are checked by the daemon's own ``Codec`` (the same reasons it
    dead-letters them for). ``warnings`` holds :func:`label_warning`'s verdict.
    """
    path = Path(path)
    if is_jsonl(path):
        return _read_jsonl_table(path)
    xs: list[Any] = []
    ys, ids, tss, tasks, lines = [], [], [], [], []
    skipped: list[tuple[int, RowProblem]] = []
    layout: list[CsvLayout] = []
    for line, item in iter_rows(path, label_column, layout):
        if isinstance(item, RowProblem):
            skipped.append((len(xs), item))
            continue
        xs.append(item["x"])
        ys.append(item.get("y"))
        ids.append(item.get("id"))
        tss.append(item.get("ts"))
        tasks.append(item.get("task"))
        lines.append(line)
    lay = layout[0]
    X = np.array(xs, dtype=np.float64) if xs else np.empty((0, len(lay.features)))
    warning = label_warning(ys, lay.label, lay.label_by_default)
    return Table(X, ys, ids, tss, tasks, lay.features, lines, skipped, lay.label, [warning] if warning else [])


def _read_jsonl_table(path: Path) -> Table:
    from ocld.core.codec import Codec

    values: list[bytes] = []
    lines: list[int] = []
    problems: list[RowProblem] = []
    for line, item in iter_rows(path):
        if isinstance(item, RowProblem):
            problems.append(item)
        else:
            values.append(orjson.dumps(item))
            lines.append(line)
    dec = Codec(max_record_bytes=1 << 62, max_abs_value=float("inf")).decode(values)
    for i, reason in dec.bad:
        problems.append(RowProblem(lines[i], "invalid_record", reason))
    for i, *_ in dec.labels_only:
        problems.append(RowProblem(lines[i], "invalid_record", "a label without x (delayed labels are not "
                                   "supported by ocld evaluate)"))
    kept_lines = [lines[i] for i in dec.rows.tolist()]
    problems.sort(key=lambda p: p.line)
    skipped = [(int(np.searchsorted(kept_lines, p.line)), p) for p in problems]
    warning = label_warning(dec.y, None, False)
    return Table(dec.X, dec.y, dec.ids, dec.ts, dec.task, None, kept_lines, skipped, None, [warning] if warning else [])
