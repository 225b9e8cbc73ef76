"""Message decoding and validation (the one place records are parsed), and encoding.

A record is one JSON (or msgpack) object: ``x`` (list of numbers, or object ordered by the
configured feature names), ``y`` (int, string or null), optional ``id``, ``ts``, ``task``.
A record with ``id`` and ``y`` but no ``x`` is a delayed label. Extra keys are ignored.

Decoding works on a whole poll at once: one parse call per record, then one float64
array for the batch and vectorized checks (width, NaN/Inf, magnitude). Records that fail
are returned with a one-line reason and never reach a learner. JSON booleans in ``x`` are
read as 1/0; ``null`` in ``x`` is rejected like NaN.

One code path: the per-record parse is small next to what the Kafka client spends handing a
record over (benchmarks/README.md, "Daemon hot path").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

MAX_LABEL_CHARS = 256
MAX_ID_CHARS = 512


@dataclass
class Decoded:
    """A decoded poll. Indices refer to positions in the list of values given to decode()."""

    rows: np.ndarray  # int64 [n]: record index of each feature row
    X: np.ndarray  # float64 [n, d]
    y: list[Any]  # [n] label or None (predict only)
    ids: list[Any]  # [n] id or None
    ts: list[Any]  # [n] event time or None
    task: list[Any]  # [n]
    labels_only: list[tuple[int, str, Any, Any]] = field(default_factory=list)  # (record index, id, y, ts)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (record index, reason)


class Codec:
    def __init__(
        self,
        format: Literal["json", "msgpack"] = "json",
        features: list[str] | None = None,
        n_features: int | None = None,
        max_record_bytes: int = 1_048_576,
        max_abs_value: float = 1e9,
        max_features: int = 10_000,
    ) -> None:
        self.format = format
        self.features = list(features) if features else None
        self.n_features = len(self.features) if self.features else n_features
        # where the width came from, for dead-letter reasons and the status
        self.width_source = ("declared by messages.features" if self.features else
                             "declared by messages.n_features" if n_features else "")
        self.max_record_bytes = max_record_bytes
        self.max_abs_value = max_abs_value
        self.max_features = max_features
        self.refused_widths: dict[int, str] = {}  # width -> why no learner may take it (state memory cap)
        if format == "msgpack":
            import msgpack

            self._loads = lambda b: msgpack.unpackb(b, raw=False, strict_map_key=False)
        else:
            self._loads = orjson.loads

    # -- encoding (replay, tests) ----------------------------------------------------
    def encode(self, record: dict[str, Any]) -> bytes:
        if self.format == "msgpack":
            import msgpack

            return msgpack.packb(record, use_bin_type=True)
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)

    # -- decoding --------------------------------------------------------------------
    def widths(self, values: Sequence[bytes | None]) -> list[int]:
        """The number of features of every record that carries a list of them (or an object, when
        the config names the features), in order; for inferring the width (``ocld.core.schema``)."""
        out = []
        for value in values:
            if not value or len(value) > self.max_record_bytes:
                continue
            try:
                rec = self._loads(value)
            except Exception:  # noqa: BLE001 (dead-lettered when decoded)
                continue
            x = rec.get("x") if type(rec) is dict else None
            if type(x) is list:
                out.append(len(x))
            elif type(x) is dict and self.features:
                out.append(len(self.features))
        return out

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        rows: list[int] = []
        xs: list[Any] = []
        ys: list[Any] = []
        ids: list[Any] = []
        tss: list[Any] = []
        tasks: list[Any] = []
        labels_only: list[tuple[int, str, Any, Any]] = []
        bad: list[tuple[int, str]] = []
        loads = self._loads
        features = self.features
        limit = self.max_record_bytes

        for i, value in enumerate(values):
            if not value:
                bad.append((i, "empty record"))
                continue
            if len(value) > limit:
                bad.append((i, f"record is {len(value)} bytes, over max_record_bytes={limit}"))
                continue
            try:
                rec = loads(value)
            except Exception as exc:  # orjson.JSONDecodeError, msgpack errors, UnicodeDecodeError
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]  # some msgpack errors have no text
                bad.append((i, f"cannot decode {self.format}: {first_line[:120]}"))
                continue
            if type(rec) is not dict:
                bad.append((i, f"record must be an object, got {type(rec).__name__}"))
                continue
            x = rec.get("x")
            y = rec.get("y")
            if y is not None and type(y) is not int and type(y) is not str:
                y, reason = _label(y)
                if reason:
                    bad.append((i, reason))
                    continue
            elif type(y) is str and len(y) > MAX_LABEL_CHARS:
                bad.append((i, f"y is longer than {MAX_LABEL_CHARS} characters"))
                continue
            rid = rec.get("id")
            if rid is not None and type(rid) is not str:
                if type(rid) is int:
                    rid = str(rid)
                else:
                    bad.append((i, f"id must be a string, got {type(rid).__name__}"))
                    continue
            if rid is not None and len(rid) > MAX_ID_CHARS:
                bad.append((i, f"id is longer than {MAX_ID_CHARS} characters"))
                continue
            ts = rec.get("ts")
            if ts is not None and (type(ts) not in (int, float) or ts != ts):
                bad.append((i, f"ts must be a number, got {type(ts).__name__}"))
                continue
            if x is None:
                if y is None:
                    bad.append((i, "record has neither x nor y"))
                elif rid is None:
                    bad.append((i, "a label without x needs an id (delayed label)"))
                else:
                    labels_only.append((i, rid, y, ts))
                continue
            if type(x) is dict:
                if features is None:
                    bad.append((i, "x is an object but the config names no messages.features"))
                    continue
                try:
                    x = [x[f] for f in features]
                except KeyError as exc:
                    bad.append((i, f"x is missing feature {exc.args[0]!r}"))
                    continue
            elif type(x) is not list:
                bad.append((i, f"x must be a list or an object, got {type(x).__name__}"))
                continue
            task = rec.get("task")
            if task is not None and type(task) is not int and type(task) is not str:
                bad.append((i, f"task must be an int or a string, got {type(task).__name__}"))
                continue
            rows.append(i)
            xs.append(x)
            ys.append(y)
            ids.append(rid)
            tss.append(ts)
            tasks.append(task)

        X, keep, reasons = self._to_array(xs)
        if reasons:
            bad.extend((rows[j], r) for j, r in reasons)
            bad.sort()
            rows = [rows[j] for j in keep]
            ys = [ys[j] for j in keep]
            ids = [ids[j] for j in keep]
            tss = [tss[j] for j in keep]
            tasks = [tasks[j] for j in keep]
        return Decoded(np.asarray(rows, dtype=np.int64), X, ys, ids, tss, tasks, labels_only, bad)

    def _to_array(self, xs: list[Any]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """One float64 array for all rows; per-row fallback only when the fast path fails."""
        d = self.n_features
        if not xs:
            return np.empty((0, d or 0)), [], []
        if self.refused_widths or any(len(x) > self.max_features for x in xs):
            return self._rows_one_by_one(xs)
        try:
            X = np.array(xs)
            # Strings (even numeric ones like "6"), nulls and nested lists leave the fast path.
            ok_shape = X.dtype.kind in "fiub" and X.ndim == 2 and (d is None or X.shape[1] == d)
            if ok_shape:
                X = X.astype(np.float64, copy=False)
        except (ValueError, TypeError, OverflowError):
            ok_shape = False
        if not ok_shape:
            return self._rows_one_by_one(xs)
        if d is None:
            self.n_features = d = X.shape[1]
            self.width_source = "taken from the first records"
            if d == 0:
                self.n_features = None
                return np.empty((0, 0)), [], [(j, "x is empty") for j in range(len(xs))]
        finite = np.isfinite(X).all(axis=1)
        small = (np.abs(np.where(np.isfinite(X), X, 0.0)) <= self.max_abs_value).all(axis=1)
        good = finite & small
        if good.all():
            return X, list(range(len(xs))), []
        reasons = []
        for j in np.flatnonzero(~good):
            reasons.append((int(j), self._value_reason(X[j])))
        keep = np.flatnonzero(good)
        return X[keep], keep.tolist(), reasons

    def _value_reason(self, row: np.ndarray) -> str:
        j = int(np.flatnonzero(~np.isfinite(row) | (np.abs(np.nan_to_num(row)) > self.max_abs_value))[0])
        if not np.isfinite(row[j]):
            return f"x[{j}] is NaN, Inf or null"
        return f"x[{j}]={row[j]:.3g} exceeds max_abs_value={self.max_abs_value:g}"

    def _rows_one_by_one(self, xs: list[Any]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        rows: list[np.ndarray] = []
        keep: list[int] = []
        reasons: list[tuple[int, str]] = []
        for j, x in enumerate(xs):
            if len(x) > self.max_features:
                reasons.append((j, f"x has {len(x)} features, over messages.max_features={self.max_features}"))
                continue
            if not x or any(type(v) in (list, dict) for v in x):
                reasons.append((j, "x must be a flat, non-empty list of numbers"))
                continue
            if not all(v is None or type(v) in (int, float, bool) for v in x):
                reasons.append((j, "x contains a value that is not a number"))
                continue
            try:
                r = np.array([np.nan if v is None else v for v in x], dtype=np.float64)
            except (OverflowError, ValueError, TypeError):
                reasons.append((j, "x contains a number too large for float64"))
                continue
            if r.ndim != 1 or r.size == 0:
                reasons.append((j, "x must be a flat, non-empty list of numbers"))
                continue
            if self.n_features is None:
                self.n_features = r.size
                self.width_source = "taken from the first records"
            if r.size in self.refused_widths:
                reasons.append((j, self.refused_widths[r.size]))
                continue
            if r.size != self.n_features:
                where = f" ({self.width_source})" if self.width_source else ""
                reasons.append((j, f"expected {self.n_features} features{where}, got {r.size}"))
                continue
            if not np.isfinite(r).all() or (np.abs(r) > self.max_abs_value).any():
                reasons.append((j, self._value_reason(r)))
                continue
            rows.append(r)
            keep.append(j)
        X = np.vstack(rows) if rows else np.empty((0, self.n_features or 0))
        return X, keep, reasons


def _label(y: Any) -> tuple[Any, str | None]:
    """Normalize a label that is not already int or str; return (label, reason-if-bad)."""
    if type(y) is float and y.is_integer() and abs(y) < 2**53:
        return int(y), None
    return None, f"y must be an int, a string or null, got {type(y).__name__} {str(y)[:40]!r}"
