"""Observability: Prometheus metrics, a health endpoint and a live dashboard over HTTP (config ``http.port``).

``DaemonMetrics`` holds one prometheus-client registry per daemon: latency histograms the loop
observes, and the status fields exported at scrape time (``stream.status.StatusCollector``).
``HealthServer`` serves, from a daemon thread:

- ``GET /metrics``: the registry in the Prometheus text format;
- ``GET /healthz``: 200 ``{"ready": true, ...}`` only when the broker and Redis are
  reachable and the state is durable enough (the last snapshot is younger than
  ``http.max_snapshot_age_s``, or nothing was consumed since it); else 503 with the reasons;
- ``GET /``: the dashboard, one static page (``stream/dashboard/``, no build step) that polls
- ``GET /api/status``: the status last built (``Daemon.status_now``) with the health answer, and
- ``GET /api/series?since=CURSOR``: the metric points and drift events this daemon wrote to Redis
  after ``CURSOR`` (``SeriesReader``); the answer carries the next cursor.

The dashboard's history is read back from the daemon's own Redis streams rather than kept in
a second in-memory ring: they already hold every metric point and drift event (the ones
``ocld report`` draws), they outlive a restart, and the daemon needs no new state for them.

Nothing here writes to Kafka or Redis, and nothing here prints a secret: the health
answer names servers by host:port only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("ocld.http")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
# The dashboard's files, by URL path: a fixed list, so no request can name another file.
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}
_JSON = "application/json"
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


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
        self.latest_status = latest_status  # () -> Status | None: the dashboard's /api/status
        self.series: SeriesReader | None = None  # the dashboard's history (attach_series)
        if latest_status is not None:
            from ocld.stream.status import StatusCollector

            r.register(StatusCollector(pipeline, latest_status))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def attach_series(self, client: Any, keys: Any) -> None:
        """Let the dashboard read back the metric and drift streams under ``keys`` (a ``stream.store.Keys``)."""
        self.series = SeriesReader(client, keys.metrics, keys.drift)


class SeriesReader:
    """The dashboard's history: the metric points and drift events a daemon wrote to its Redis streams
    (``ocld:{p}:metrics``, ``ocld:{p}:drift``), read after a cursor so that a page polling every second
    fetches only what is new.

    The cursor is ``"<metrics id>,<drift id>"`` (the last stream ids the caller has; "" for a first
    read, which returns the newest ``limit`` entries of each). Metric points written before anything
    was learned are left out (``stream.report.learned_points``), as ``ocld report`` leaves them out.
    Only reads Redis.
    """

    def __init__(self, client: Any, metrics_key: str, drift_key: str, limit: int = 5000) -> None:
        self.r = client
        self.metrics_key = metrics_key
        self.drift_key = drift_key
        self.limit = limit

    def read(self, cursor: str = "") -> dict[str, Any]:
        from ocld.stream.report import learned_points

        m_since, _, d_since = cursor.partition(",")
        metrics, m_last = self._after(self.metrics_key, m_since)
        drift, d_last = self._after(self.drift_key, d_since)
        return {"metrics": learned_points(metrics), "drift": drift, "cursor": f"{m_last},{d_last}"}

    def _after(self, key: str, since: str) -> tuple[list[dict[str, Any]], str]:
        """Entries after stream id ``since`` (oldest first, at most ``limit``) and the last id read."""
        from ocld.stream.client import decode_field  # the one decoding of stream fields (StateClient's)

        if since:
            _check_stream_id(since)
            entries = self.r.xrange(key, min=f"({since}", max="+", count=self.limit)
        else:
            entries = list(reversed(self.r.xrevrange(key, count=self.limit)))
        out = [{"id": eid.decode(), **{k.decode(): decode_field(v) for k, v in fields.items()}}
               for eid, fields in entries]
        return out, (out[-1]["id"] if out else since)


def _check_stream_id(text: str) -> None:
    ms, _, seq = text.partition("-")
    if not (ms.isdigit() and (seq == "" or seq.isdigit())):
        raise ValueError(f"bad cursor {text[:40]!r}: pass back the cursor the last answer gave")


class HealthServer:
    """A small threaded HTTP server for /metrics, /healthz and the dashboard on ``host:port`` (0 = any
    free port)."""

    def __init__(self, metrics: DaemonMetrics, health: Callable[[], dict[str, Any]], host: str = "127.0.0.1",
                 port: int = 0, before_scrape: Callable[[], None] | None = None,
                 liveness: Callable[[], dict[str, Any]] | None = None) -> None:
        self.metrics = metrics
        self.health = health
        self.liveness = liveness or (lambda: {"alive": True})
        self.before_scrape = before_scrape
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                url = urlsplit(self.path)
                path = url.path
                try:
                    if path == "/metrics":
                        if server.before_scrape is not None:
                            server.before_scrape()
                        self._send(200, server.metrics.render(), CONTENT_TYPE_LATEST)
                    elif path in ("/healthz", "/health", "/readyz"):
                        body = server.health()
                        self._send(200 if body.get("ready") else 503, orjson.dumps(body), _JSON)
                    elif path == "/livez":
                        body = server.liveness()
                        self._send(200 if body.get("alive") else 503, orjson.dumps(body), _JSON)
                    elif path == "/api/status":
                        self._send(*server.api_status())
                    elif path == "/api/series":
                        self._send(*server.api_series(parse_qs(url.query).get("since", [""])[0]))
                    elif path in _STATIC:
                        name, ctype = _STATIC[path]
                        self._send(200, (DASHBOARD_DIR / name).read_bytes(), ctype)
                    else:
                        self._send(404, b'{"error": "not found; try /, /metrics or /healthz"}', _JSON)
                except Exception as exc:  # a scrape must never take the daemon down
                    log.warning("HTTP %s failed: %s", path, type(exc).__name__)
                    self._send(500, orjson.dumps({"error": type(exc).__name__}), _JSON)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")  # a live page: always what the daemon has now
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per scrape is noise
                pass

        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[0], int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ocld-http", daemon=True)

    def api_status(self) -> tuple[int, bytes, str]:
        """The dashboard's /api/status: the status as it is now and the health answer (503 before the
        daemon built its first status)."""
        latest = self.metrics.latest_status
        status = latest() if latest is not None else None
        if status is None:
            return 503, orjson.dumps({"error": "no status yet: the daemon is starting"}), _JSON
        body = {"pipeline": self.metrics.pipeline, "now": time.time(), "status": status.model_dump(),
                "health": self.health(), "history": self.metrics.series is not None}
        return 200, orjson.dumps(body, option=_JSON_OPTS), _JSON

    def api_series(self, since: str) -> tuple[int, bytes, str]:
        """The dashboard's /api/series: metric points and drift events after the cursor ``since``."""
        if self.metrics.series is None:
            return 200, orjson.dumps({"metrics": [], "drift": [], "cursor": since}), _JSON
        try:
            body = self.metrics.series.read(since)
        except ValueError as exc:
            return 400, orjson.dumps({"error": str(exc)}), _JSON
        except redis.RedisError as exc:  # Redis down: the page keeps what it has and says why
            return 503, orjson.dumps({"error": f"Redis unreachable ({type(exc).__name__})"}), _JSON
        return 200, orjson.dumps(body, option=_JSON_OPTS), _JSON

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("HTTP endpoint on http://%s:%d (/ the dashboard, /metrics, /healthz)", self.host, self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
