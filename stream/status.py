"""The daemon's status, defined once.

:class:`Status` is the one typed record of what a daemon reports. Every view is derived from it:

- the Redis hash ``ocld:{p}:status`` (:meth:`Status.to_redis`, read back typed by
  :meth:`Status.from_redis`: no guessing of types on the client's side);
- the Prometheus metrics served at ``/metrics`` (:class:`StatusCollector`, read at scrape time from
  the status last built, for the fields that name a ``metric``);
- the CLI's grouped table (``ocld status``) and the README's field table
  (``python -m ocld.stream.status`` prints it; a test checks that the README holds exactly that).

Learner-specific figures (the forgetting factor, a mixture's weights) travel as extra fields.
Nothing here does I/O: the daemon builds a Status and publishes it through ``stream.store``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

GROUPS = ("health", "progress", "model quality", "data quality", "durability", "scale-out")


def _f(default: Any, group: str, doc: str, metric: str | None = None, kind: str = "", unit: str = "") -> Any:
    """A status field: its group (``ocld status`` sections), what it means, and, when it is exported to
    Prometheus, the metric's name and kind ("counter" or "gauge")."""
    extra: JsonDict = {"group": group}
    if metric:
        extra["metric"] = metric
        extra["kind"] = kind or "gauge"
    if unit:
        extra["unit"] = unit
    return Field(default, description=doc, json_schema_extra=extra)


class Status(BaseModel):
    """What one daemon (or replica) reports, every ``status.interval_s``."""

    model_config = ConfigDict(extra="allow")  # learner figures: forgetting, weight.<member>, ...

    # health
    state: str = _f("starting", "health", "starting, running, degraded (snapshots cannot be written), stopping, "
                    "stopped or failed; readers show dead when it says running but nobody holds the lease")
    failure: str = _f("", "health", "why the daemon stopped, when state is failed")
    host: str = _f("", "health", "host name of the daemon")
    pid: int = _f(0, "health", "process id of the daemon", unit="id")
    started_at: float = _f(0.0, "health", "when the daemon started", unit="time")
    updated_at: float = _f(0.0, "health", "when this status was written", unit="time")
    broker_reachable: bool = _f(True, "health", "the broker accepts connections", "ocld_broker_reachable")
    redis_outages: int = _f(0, "health", "Redis outages this process lived through", "ocld_redis_outages", "counter")
    degraded_since: float | None = _f(None, "health", "start of the current outage (snapshots failing)", unit="time")
    last_outage_s: float | None = _f(None, "health", "how long the last outage left learning without a durable "
                                     "snapshot", unit="s")
    incidents: dict[str, int] = _f({}, "health", "what the daemon found and repaired, by kind (topic_reset, "
                                   "records_lost, redis_data_loss, registry_mismatch, lease_gap, learner_restarted, "
                                   "snapshot_fallback, rewound); details in ocld:{p}:incidents", "ocld_incidents",
                                   "counter")
    # progress
    records_seen: int = _f(0, "progress", "Kafka records consumed (every record, bad ones included)",
                           "ocld_records", "counter")
    samples_seen: int = _f(0, "progress", "samples accepted: feature rows and delayed labels", "ocld_samples",
                           "counter")
    labelled_seen: int = _f(0, "progress", "labelled samples learned", "ocld_labelled_samples", "counter")
    predicted: int = _f(0, "progress", "samples predicted: every labelled one (first predicted, then learned) and "
                        "every predict-only one", "ocld_predicted_samples", "counter")
    predict_only: int = _f(0, "progress", "predict-only rows (no label yet)")
    throughput: float = _f(0.0, "progress", "records per second over the last status interval",
                           "ocld_throughput_records_per_second", unit="1/s")
    lag: int | None = _f(None, "progress", "records between the position and the log end over the partitions held",
                         "ocld_consumer_lag_records")
    topic: str = _f("", "progress", "the topic consumed")
    partitions: list[str] = _f([], "progress", "partitions held, as topic[partition]")
    pending: int = _f(0, "progress", "predict-only samples waiting for a delayed label", "ocld_pending_samples")
    pending_evicted: int = _f(0, "progress", "pending samples dropped by messages.max_pending",
                              "ocld_pending_evicted", "counter")
    delayed_labels: int = _f(0, "progress", "delayed labels joined with their pending sample")
    label_delay_mean_s: float = _f(0.0, "progress", "mean delay of the delayed labels", unit="s")
    learn_seconds: float = _f(0.0, "progress", "time spent learning (test-then-train)", "ocld_learn_seconds",
                              "counter", unit="s")
    # model quality
    learner: str = _f("", "model quality", "the learner's name (learner.name)")
    accuracy: float = _f(0.0, "model quality", "prequential accuracy over the last evaluation.window samples",
                         "ocld_accuracy")
    accuracy_total: float = _f(0.0, "model quality", "prequential accuracy since the start")
    balanced_accuracy: float = _f(0.0, "model quality", "prequential balanced accuracy since the start")
    log_loss: float = _f(0.0, "model quality", "prequential log-loss since the start", "ocld_log_loss")
    nochange_accuracy: float = _f(0.0, "model quality", "accuracy of predicting the previous label (a baseline)")
    drift_count: int = _f(0, "model quality", "drift events", "ocld_drift_events", "counter")
    drift_count_error: int = _f(0, "model quality", "drift events on the error (concept drift)")
    drift_count_input: int = _f(0, "model quality", "drift events on the inputs (label-free)")
    error_fell: int = _f(0, "model quality", "detections where the error rate fell (not drift: counted, not raised)")
    last_drift_at: float | None = _f(None, "model quality", "when the last drift event fired", unit="time")
    # data quality
    dlq_count: int = _f(0, "data quality", "records sent to the dead-letter topic (all restarts)",
                        "ocld_dlq_records", "counter")
    dlq_by_reason: dict[str, int] = _f({}, "data quality", "dead-lettered records by reason",
                                       "ocld_errors", "counter")
    dlq_dropped: int = _f(0, "data quality", "dead letters the broker did not take (output queue full)")
    predictions_dropped: int = _f(0, "data quality", "predictions the broker did not take (output queue full)")
    n_features: int | None = _f(None, "data quality", "the record width")
    width_source: str = _f("", "data quality", "where the width came from: declared, inferred (and how), or a "
                           "snapshot")
    # durability
    model_version: int | None = _f(None, "durability", "the latest durable snapshot's version")
    last_snapshot_at: float | None = _f(None, "durability", "when the latest durable snapshot was written",
                                        unit="time")
    snapshot_seconds: float = _f(0.0, "durability", "how long the last snapshot took (flush, write, switch)",
                                 unit="s")
    unsnapshotted_s: float = _f(0.0, "durability", "how long consumed work has waited for a durable snapshot",
                                "ocld_unsnapshotted_seconds", unit="s")
    degraded: bool = _f(False, "durability", "snapshots cannot be written now", "ocld_degraded")
    # scale-out
    replica: str = _f("", "scale-out", "this daemon's replica name (empty: the single-daemon keys)")
    partition_records: dict[str, int] = _f({}, "scale-out", "records this replica consumed, by partition")
    fences: int = _f(0, "scale-out", "snapshots refused because another replica claimed a partition meanwhile",
                     "ocld_fences", "counter")
    folded_replicas: list[str] = _f([], "scale-out", "replicas whose statistics are folded into this one's head")

    # -- the Redis hash ------------------------------------------------------------------
    def to_redis(self) -> dict[str, Any]:
        """Field -> value for HSET: numbers as numbers, None as "", lists and dicts as JSON."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if value is None:
                out[name] = ""
            elif isinstance(value, bool):
                out[name] = int(value)
            elif isinstance(value, (int, float, str)):
                out[name] = value
            else:
                out[name] = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
        return out

    @classmethod
    def from_redis(cls, raw: dict[Any, Any]) -> Status:
        """The typed status from a Redis hash (fields it does not know are kept as extras)."""
        data: dict[str, Any] = {}
        for key, value in raw.items():
            k = key.decode() if isinstance(key, bytes) else str(key)
            v = value.decode() if isinstance(value, bytes) else value
            field = cls.model_fields.get(k)
            data[k] = _parse(v, field.annotation if field is not None else None)
        return cls.model_validate(data)


def _parse(text: Any, annotation: Any) -> Any:
    if not isinstance(text, str):
        return text
    kind = str(annotation)
    if text == "" and ("None" in kind or annotation is None):
        return None
    if text[:1] in "[{" and ("list" in kind or "dict" in kind or annotation is None):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    if annotation is str:
        return text
    if annotation is bool:
        return text not in ("0", "", "false", "False")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def fields_by_group() -> dict[str, list[tuple[str, Any]]]:
    """group -> [(field name, pydantic FieldInfo)] in declaration order."""
    out: dict[str, list[tuple[str, Any]]] = {g: [] for g in GROUPS}
    for name, info in Status.model_fields.items():
        out[(info.json_schema_extra or {})["group"]].append((name, info))  # type: ignore[index]
    return out


def markdown_table() -> str:
    """The README's table of status fields (generated: the README must hold exactly this)."""
    lines = ["| group | field | meaning | Prometheus |", "|---|---|---|---|"]
    for group, fields in fields_by_group().items():
        for name, info in fields:
            extra = info.json_schema_extra or {}
            metric = (f"`{extra['metric']}`" + (" (counter)" if extra.get("kind") == "counter" else "")
                      if extra.get("metric") else "")
            lines.append(f"| {group} | `{name}` | {info.description} | {metric} |")
    lines.append("| model quality | `forgetting`, `mixture_weights` | learner figures: KalmanHead's effective "
                 "forgetting factor, an online mixture's member weights | |")
    return "\n".join(lines)


def when(t: Any, now: float | None = None) -> str:
    """A time as ISO (local, seconds) and relative: ``2026-12-06 04:12:03 (12 s ago)``; "-" if none."""
    import datetime

    if t in (None, "", 0, 0.0):
        return "-"
    t = float(t)
    ago = (time.time() if now is None else now) - t
    rel = f"{ago:.0f} s" if abs(ago) < 120 else f"{ago / 60:.0f} min" if abs(ago) < 7200 else f"{ago / 3600:.1f} h"
    stamp = datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} ({rel} ago)" if ago >= 0 else f"{stamp} (in {rel[1:] if rel.startswith('-') else rel})"


def _show(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "-"
    if unit == "time":
        return when(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
        return f"{text} s" if unit == "s" else f"{text} /s" if unit == "1/s" else text
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 and unit != "id" else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value) or "-"
    return str(value)


def display_rows(status: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """A status (as ``StateClient.status`` returns it) for a person: group -> [(field, text)], in the
    model's order; learner figures under "model quality"; fields the hash lacks are left out."""
    out: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}
    for group, fields in fields_by_group().items():
        for name, info in fields:
            if name in status:
                out[group].append((name, _show(status[name], (info.json_schema_extra or {}).get("unit", ""))))
    if "state_reported" in status:
        out["health"].insert(1, ("reported", f"{status['state_reported']} (nobody holds the lease: the daemon died "
                                 "without saying so)"))
    if "alive" in status:
        out["health"].insert(1, ("lease", "held" if status["alive"] else "not held"))
    known = set(Status.model_fields) | {"alive", "state_reported"}
    for name in sorted(k for k in status if k not in known):
        out["model quality"].append((name, _show(status[name])))
    return {g: rows for g, rows in out.items() if rows}


class StatusCollector:
    """Prometheus metrics from the status last built (read at scrape time: nothing is synced).

    A counter is exported as ``<metric>_total``; a dict field gives one sample per key (label
    ``reason`` for ``dlq_by_reason``, ``kind`` for ``incidents``)."""

    def __init__(self, pipeline: str, latest: Any) -> None:
        self.pipeline = pipeline
        self.latest = latest  # () -> Status | None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.latest()
        if status is None:
            return
        for name, info in Status.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            metric = str(extra.get("metric") or "")
            if not metric:
                continue
            value = getattr(status, name)
            counter = extra.get("kind") == "counter"
            family = CounterMetricFamily if counter else GaugeMetricFamily
            if isinstance(value, dict):
                label = {"dlq_by_reason": "reason", "incidents": "kind"}.get(name, "key")
                fam = family(metric, str(info.description), labels=["pipeline", label])
                for key, v in sorted(value.items()):
                    fam.add_metric([self.pipeline, str(key)], float(v))
                yield fam
                continue
            if value is None:
                continue
            fam = family(metric, str(info.description), labels=["pipeline"])
            fam.add_metric([self.pipeline], float(value))
            yield fam
        age = time.time() - status.last_snapshot_at if status.last_snapshot_at else 0.0
        fam = GaugeMetricFamily("ocld_snapshot_age_seconds", "seconds since the last durable snapshot",
                                labels=["pipeline"])
        fam.add_metric([self.pipeline], age)
        yield fam


if __name__ == "__main__":
    print(markdown_table())
