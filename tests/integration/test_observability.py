"""The HTTP endpoint on a running daemon (real broker, real Redis): ``/metrics`` in the
Prometheus text format with the documented series, and ``/healthz`` that is ready only
when the broker and Redis answer and the state is durable, and says why when it is not."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ocld.stream.daemon import Daemon
from tests.helpers import elec_records, encode_rows, produce, wait_until

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pipeline") + "}"
                            if len(s.labels) > 1 else "")
            out[key] = s.value
    return out


def _metric(base: str, name: str) -> float:
    return _samples(_get(base + "/metrics")[1].decode())[name]


def test_metrics_and_healthz(make_config, broker, own_redis):
    cfg = make_config(redis={"url": own_redis.url}, http={"port": 0, "max_snapshot_age_s": 30},
                      snapshot={"every_samples": 500, "every_seconds": 60})
    X, y = elec_records(2000)
    values = encode_rows(X, y) + [b"{oops", b'{"x": [1], "y": 0}', b'{"id": "nobody", "y": 1}']
    produce(broker, cfg.kafka.topic, values)
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False, "max_seconds": 120}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http is not None and daemon.core.labelled_seen == 2000 and daemon.dlq_count == 3, 60,
                   "2,000 samples learned and 3 dead letters")
        base = f"http://127.0.0.1:{daemon.http.port}"
        wait_until(lambda: _get(base + "/healthz")[0] == 200, 60, "/healthz ready")
        code, body = _get(base + "/healthz")
        health = orjson.loads(body)
        assert health["ready"] and health["kafka"] and health["redis"] and health["reasons"] == []

        code, body = _get(base + "/metrics")
        assert code == 200
        m = _samples(body.decode())
        assert m["ocld_records_total"] == len(values)
        assert m["ocld_labelled_samples_total"] == 2000
        assert m["ocld_samples_total"] >= 2000
        assert m["ocld_dlq_records_total"] == 3
        errors = {k: v for k, v in m.items() if k.startswith("ocld_errors_total{")}
        assert sum(errors.values()) == 3 and len(errors) == 3, errors
        assert m["ocld_batch_latency_seconds_count"] >= 1 and m["ocld_batch_latency_seconds_sum"] > 0
        # micro-batches are capped at kafka.max_batch (500 here)
        assert m["ocld_batch_records_bucket{le=500.0}"] == m["ocld_batch_records_count"] >= 1
        assert m["ocld_learn_seconds_total"] > 0
        assert m["ocld_snapshot_duration_seconds_count"] >= 1
        assert 0 <= m["ocld_snapshot_age_seconds"] < 60
        assert "ocld_drift_events_total" in m and "ocld_consumer_lag_records" in m
        wait_until(lambda: _metric(base, "ocld_consumer_lag_records") == 0, 10, "no consumer lag")
        assert m["ocld_degraded"] == 0
        assert _get(base + "/nothing")[0] == 404

        # Redis gone: not ready, and the answer says why (within a second: no hanging probe).
        own_redis.stop()
        produce(broker, cfg.kafka.topic, encode_rows(X[:10], y[:10]))  # unsnapshotted work
        t0 = time.monotonic()
        code, body = _get(base + "/healthz")
        assert code == 503 and time.monotonic() - t0 < 10
        health = orjson.loads(body)
        assert not health["ready"] and not health["redis"] and "Redis unreachable" in health["reasons"]
        wait_until(lambda: _metric(base, "ocld_degraded") == 1, 30, "ocld_degraded 1 while Redis is down")
        own_redis.start()
        wait_until(lambda: _get(base + "/healthz")[0] == 200, 60, "/healthz ready again with Redis back")
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()


def test_healthz_not_ready_when_unsnapshotted_work_is_too_old(make_config, broker, redis_url):
    cfg = make_config(http={"port": 0, "max_snapshot_age_s": 1.0},
                      snapshot={"every_samples": 1_000_000, "every_seconds": 3600})
    X, y = elec_records(300)
    produce(broker, cfg.kafka.topic, encode_rows(X, y))
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False, "max_seconds": 60}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http is not None and daemon.core.labelled_seen == 300, 60, "300 samples learned")
        base = f"http://127.0.0.1:{daemon.http.port}"
        wait_until(lambda: _get(base + "/healthz")[0] == 503, 10, "/healthz not ready: unsnapshotted work too old")
        health = orjson.loads(_get(base + "/healthz")[1])
        assert any("unsnapshotted work" in r for r in health["reasons"]), health
        assert health["kafka"] and health["redis"]
    finally:
        daemon.stop()
        thread.join(60)
