"""Observability: Prometheus metrics and a health endpoint over HTTP (config ``http.port``).

``DaemonMetrics`` holds one prometheus-client registry per daemon: latency histograms the loop
observes, and the status fields exported at scrape time (``stream.status.StatusCollector``).
``HealthServer`` serves, from a daemon thread:

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
    """The daemon's Prometheus registry (never the global one, so several daemons or tests in one
    process do not collide). What the status holds (counters, lag, accuracy, DLQ by reason, ...)
    is exported by ``stream.status.StatusCollector`` at scrape time, from the status last built;
    here are only the measurements the status does not carry: latency histograms and dependency
    checks."""

    def __init__(self, pipeline: str, latest_status: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, lab = self.registry, ["pipeline"]
        self.pipeline = pipeline
        self.batch_latency = Histogram("ocld_batch_latency_seconds", "time to handle one polled micro-batch", lab,
                                       buckets=_LATENCY_BUCKETS, registry=r).labels(pipeline)
        self.batch_size = Histogram("ocld_batch_records", "records per micro-batch", lab,
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 5000, 20_000, 100_000),
                                    registry=r).labels(pipeline)
        self.snapshot_duration = Histogram("ocld_snapshot_duration_seconds", "flush + snapshot write + switch", lab,
                                           buckets=_LATENCY_BUCKETS, registry=r).labels(pipeline)
        self.snapshot_failures = Counter("ocld_snapshot_failures", "snapshot attempts that failed (Redis or broker "
                                         "unreachable)", lab, registry=r).labels(pipeline)
        self.up = Gauge("ocld_dependency_up", "1 when the dependency answers", ["pipeline", "dependency"], registry=r)
        if latest_status is not None:
            from ocld.stream.status import StatusCollector

            r.register(StatusCollector(pipeline, latest_status))  # type: ignore[arg-type]

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
