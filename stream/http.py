"""Observability: Prometheus metrics and a health endpoint over HTTP (config ``http.port``).

``DaemonMetrics`` holds one prometheus-client registry per daemon (never the global one,
so several daemons or tests in one process do not collide). The daemon updates it from its
loop; gauges that are cheap to compute at scrape time (snapshot age, lag) are read through
callbacks. ``HealthServer`` serves, from a daemon thread:

- ``GET /metrics``: the registry in the Prometheus text format;
- ``GET /healthz``: 200 ``{"ready": true, ...}`` only when the broker and Redis are
  reachable and the state is durable enough (the last snapshot is younger than
  ``http.max_snapshot_age_s``, or nothing was consumed since it); else 503 with the reasons.

Nothing here writes to Kafka or Redis, and nothing here prints a secret: the health
answer names servers by host:port only.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("ocld.http")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DaemonMetrics:
    """The daemon's Prometheus metrics (names prefixed ``ocld_``, label ``pipeline``)."""

    def __init__(self, pipeline: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, lab = self.registry, ["pipeline"]
        self.pipeline = pipeline
        self.records = Counter("ocld_records", "Kafka records consumed", lab, registry=r).labels(pipeline)
        self.samples = Counter("ocld_samples", "samples accepted (feature rows and delayed labels)", lab,
                               registry=r).labels(pipeline)
        self.labelled = Counter("ocld_labelled_samples", "labelled samples learned", lab, registry=r).labels(pipeline)
        self.errors = Counter("ocld_errors", "records rejected, by reason", ["pipeline", "reason"], registry=r)
        self.dlq = Counter("ocld_dlq_records", "records sent to the dead-letter topic", lab, registry=r).labels(pipeline)
        self.batch_latency = Histogram("ocld_batch_latency_seconds", "time to handle one polled micro-batch", lab,
                                       buckets=_LATENCY_BUCKETS, registry=r).labels(pipeline)
        self.batch_size = Histogram("ocld_batch_records", "records per micro-batch", lab,
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 5000, 20_000, 100_000),
                                    registry=r).labels(pipeline)
        self.learn_seconds = Counter("ocld_learn_seconds", "time spent in learn_predict (test-then-train)", lab,
                                     registry=r).labels(pipeline)
        self.predict_seconds = Counter("ocld_predict_seconds", "time spent predicting predict-only rows", lab,
                                       registry=r).labels(pipeline)
        self.snapshot_duration = Histogram("ocld_snapshot_duration_seconds", "flush + snapshot write + switch", lab,
                                           buckets=_LATENCY_BUCKETS, registry=r).labels(pipeline)
        self.snapshot_failures = Counter("ocld_snapshot_failures", "snapshot attempts that failed (Redis or broker "
                                         "unreachable)", lab, registry=r).labels(pipeline)
        self.snapshot_age = Gauge("ocld_snapshot_age_seconds", "seconds since the last durable snapshot", lab,
                                  registry=r).labels(pipeline)
        self.drift = Counter("ocld_drift_events", "drift detections", lab, registry=r).labels(pipeline)
        self.lag = Gauge("ocld_consumer_lag_records", "records between the position and the high watermark", lab,
                         registry=r).labels(pipeline)
        self.pending = Gauge("ocld_pending_samples", "predict-only samples waiting for a delayed label", lab,
                             registry=r).labels(pipeline)
        self.evictions = Counter("ocld_evictions", "entries dropped by a capacity limit, by table",
                                 ["pipeline", "table"], registry=r)
        self.degraded = Gauge("ocld_degraded", "1 while snapshots cannot be written", lab, registry=r).labels(pipeline)
        self.up = Gauge("ocld_dependency_up", "1 when the dependency answers", ["pipeline", "dependency"], registry=r)
        self._last: dict[str, float] = {}

    def add_total(self, counter: Any, key: str, total: float) -> None:
        """Increase ``counter`` to a running total kept elsewhere (never backwards)."""
        delta = total - self._last.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
            self._last[key] = total

    def sync_from(self, daemon: Any) -> None:
        """Bring the counters up to the daemon's running totals (cheap; called after each batch)."""
        core = daemon.core
        self.add_total(self.records, "records", daemon.records_seen)
        self.add_total(self.samples, "samples", core.samples_seen)
        self.add_total(self.labelled, "labelled", core.labelled_seen)
        self.add_total(self.dlq, "dlq", daemon.dlq_count)
        self.add_total(self.learn_seconds, "learn", float(getattr(core, "learn_seconds", 0.0)))
        self.add_total(self.predict_seconds, "predict", float(getattr(core, "predict_seconds", 0.0)))
        self.add_total(self.drift, "drift", core.drift_count)
        self.add_total(self.evictions.labels(self.pipeline, "pending"), "evict:pending", core.pending_evicted)
        self.pending.set(core.pending_size)
        sink = daemon.sink
        if sink is not None:
            for reason, n in list(sink.dlq_by_reason.items()):
                self.add_total(self.errors.labels(self.pipeline, reason), f"err:{reason}", n)
            self.add_total(self.evictions.labels(self.pipeline, "dlq_queue"), "evict:dlq", sink.dlq_dropped)

    def baseline(self, daemon: Any) -> None:
        """Counters start from what a restored snapshot already counted (they count this process's work)."""
        core = daemon.core
        for key, value in (("records", daemon.records_seen), ("samples", core.samples_seen),
                           ("labelled", core.labelled_seen), ("dlq", daemon.dlq_count), ("drift", core.drift_count),
                           ("evict:pending", core.pending_evicted)):
            self._last[key] = float(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """A small threaded HTTP server for /metrics and /healthz on ``host:port`` (0 = any free port)."""

    def __init__(self, metrics: DaemonMetrics, health: Callable[[], dict[str, Any]], host: str = "127.0.0.1",
                 port: int = 0, before_scrape: Callable[[], None] | None = None) -> None:
        self.metrics = metrics
        self.health = health
        self.before_scrape = before_scrape
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        if server.before_scrape is not None:
                            server.before_scrape()
                        self._send(200, server.metrics.render(), CONTENT_TYPE_LATEST)
                    elif path in ("/healthz", "/health", "/readyz"):
                        body = server.health()
                        self._send(200 if body.get("ready") else 503, orjson.dumps(body), "application/json")
                    else:
                        self._send(404, b'{"error": "not found; try /metrics or /healthz"}', "application/json")
                except Exception as exc:  # a scrape must never take the daemon down
                    log.warning("HTTP %s failed: %s", path, type(exc).__name__)
                    self._send(500, orjson.dumps({"error": type(exc).__name__}), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per scrape is noise
                pass

        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[0], int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ocld-http", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        log.info("HTTP endpoint on http://%s:%d (/metrics, /healthz)", self.host, self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
