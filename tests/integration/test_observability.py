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
from ocld.stream.embedded import EmbeddedRedis
from tests.helpers import elec_records, encode_rows, produce

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


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_metrics_and_healthz(make_config, broker, tmp_path):
    rds = EmbeddedRedis(tmp_path / "redis")
    rds.start()
    cfg = make_config(redis={"url": rds.url}, http={"port": 0, "max_snapshot_age_s": 30},
                      snapshot={"every_samples": 500, "every_seconds": 60})
    X, y = elec_records(2000)
    values = encode_rows(X, y) + [b"{oops", b'{"x": [1], "y": 0}', b'{"id": "nobody", "y": 1}']
    produce(broker, cfg.kafka.topic, values)
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False, "max_seconds": 120}, daemon=True)
    thread.start()
    try:
        _wait(lambda: daemon.http is not None and daemon.core.labelled_seen == 2000 and daemon.dlq_count == 3)
        base = f"http://127.0.0.1:{daemon.http.port}"
        _wait(lambda: _get(base + "/healthz")[0] == 200)
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
        _wait(lambda: _samples(_get(base + "/metrics")[1].decode())["ocld_consumer_lag_records"] == 0, timeout=10)
        assert m["ocld_degraded"] == 0
        assert _get(base + "/nothing")[0] == 404

        # Redis gone: not ready, and the answer says why (within a second: no hanging probe).
        rds.stop()
        produce(broker, cfg.kafka.topic, encode_rows(X[:10], y[:10]))  # unsnapshotted work
        t0 = time.monotonic()
        code, body = _get(base + "/healthz")
        assert code == 503 and time.monotonic() - t0 < 10
        health = orjson.loads(body)
        assert not health["ready"] and not health["redis"] and "Redis unreachable" in health["reasons"]
        _wait(lambda: _samples(_get(base + "/metrics")[1].decode())["ocld_degraded"] == 1, timeout=30)
        rds = EmbeddedRedis(tmp_path / "redis", port=rds.port)
        rds.start()
        _wait(lambda: _get(base + "/healthz")[0] == 200, timeout=60)
    finally:
        daemon.stop()
        thread.join(60)
        rds.stop()
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
        _wait(lambda: daemon.http is not None and daemon.core.labelled_seen == 300)
        base = f"http://127.0.0.1:{daemon.http.port}"
        _wait(lambda: _get(base + "/healthz")[0] == 503, timeout=10)
        health = orjson.loads(_get(base + "/healthz")[1])
        assert any("unsnapshotted work" in r for r in health["reasons"]), health
        assert health["kafka"] and health["redis"]
    finally:
        daemon.stop()
        thread.join(60)
