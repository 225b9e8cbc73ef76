"""End to end on a real broker (tansu) and a real Redis: replay, run, status, restart, DLQ, query."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from ocld.stream.client import StateClient
from ocld.stream.daemon import Daemon
from ocld.stream.offline import evaluate
from ocld.stream.replay import replay
from tests.helpers import ROOT, elec_records, encode_rows, produce, read_topic

pytestmark = pytest.mark.integration


def _run(cfg, idle: float = 0.5):
    return Daemon(cfg).run(until_idle_s=idle, max_seconds=120, install_signals=False)


def _write_csv(path, X, y):
    with open(path, "w") as fh:
        fh.write("a,b,c,d,e,f,class\n")
        for row, label in zip(X, y):
            fh.write(",".join(repr(float(v)) for v in row) + f",{label}\n")


def test_replay_run_status_query_and_load_learner(make_config, broker, redis_url, tmp_path):
    cfg = make_config()
    X, y = elec_records(3000)
    data = tmp_path / "elec3k.csv"
    _write_csv(data, X, y)
    assert replay(data, cfg.kafka.topic, cfg.kafka, progress=False) == 3000

    daemon = Daemon(cfg)
    summary = daemon.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 3000

    client = StateClient(redis_url)
    status = client.status(cfg.name)
    assert status["state"] == "stopped"
    assert status["samples_seen"] == 3000 and status["labelled_seen"] == 3000
    assert status["model_version"] == summary["model_version"] >= 1
    assert 0.5 < status["accuracy_total"] <= 1.0
    assert cfg.name in client.pipelines()
    assert client.metrics(cfg.name), "metric points were written to the stream"
    info = client.snapshot_info(cfg.name)
    assert info["latest"]["offsets"] == {cfg.kafka.topic: {"0": 3000}}
    assert info["latest"]["info"]["labelled_seen"] == 3000

    restored = client.load_learner(cfg.name)
    probe = X[:200] + 0.01
    np.testing.assert_allclose(restored.predict_proba(probe), daemon.core.learner.predict_proba(probe), rtol=0,
                               atol=1e-12)
    assert list(restored.predict(probe)) == list(daemon.core.learner.predict(probe))

    # The offline evaluator runs the same core: the same accuracy as the daemon reported.
    ev = evaluate(cfg, data)
    assert ev["samples"] == 3000
    assert ev["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-12)
    assert len(ev["drift_events"]) == summary["drift_count"]

    # The CLI reads the same state.
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "status", cfg.name, "--json", "--redis", redis_url],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert orjson.loads(out.stdout)[cfg.name]["labelled_seen"] == 3000


def test_restart_resumes_from_snapshot_without_relearning(make_config, broker, tmp_path):
    cfg = make_config(drift={"enabled": False})
    X, y = elec_records(5000)
    produce(broker, cfg.kafka.topic, encode_rows(X[:3000], y[:3000]))
    assert _run(cfg)["labelled_seen"] == 3000

    produce(broker, cfg.kafka.topic, encode_rows(X[3000:], y[3000:]))
    second = Daemon(cfg)
    summary = second.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 5000  # 3000 restored + 2000 new, none twice

    # Same model as one uninterrupted pass over the 5000 samples.
    reference = cfg.build_learner()
    reference.learn_predict(X, np.array(y, dtype=object))
    np.testing.assert_allclose(second.core.learner.predict_proba(X[:500]), reference.predict_proba(X[:500]), atol=1e-9)


def test_crash_between_snapshot_and_commit_learns_each_sample_once(make_config, broker, redis_url, tmp_path):
    """SIGKILL right after a snapshot switch, before the offset commit: the restart seeks to
    the snapshot's offsets (not the group's), so nothing is learned twice or lost."""
    cfg = make_config(drift={"enabled": False}, snapshot={"every_samples": 1000, "every_seconds": 60})
    X, y = elec_records(4000)
    produce(broker, cfg.kafka.topic, encode_rows(X, y))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(orjson.dumps(cfg.model_dump(mode="json", exclude={"redis"})).decode())
    env = {**os.environ, "OCLD_FAULT": "daemon.before_commit:2"}
    cmd = [sys.executable, "-m", "ocld.stream.cli", "run", str(cfg_path), "--redis", redis_url, "--until-idle", "0.5",
           "--max-seconds", "60"]
    crashed = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    mid = StateClient(redis_url).snapshot_info(cfg.name)["latest"]["info"]["labelled_seen"]
    assert 0 < mid < 4000

    env.pop("OCLD_FAULT")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    status = StateClient(redis_url).status(cfg.name)
    assert status["labelled_seen"] == 4000

    reference = cfg.build_learner()
    reference.learn_predict(X, np.array(y, dtype=object))
    restored = StateClient(redis_url).load_learner(cfg.name)
    np.testing.assert_allclose(restored.predict_proba(X[:500]), reference.predict_proba(X[:500]), atol=1e-9)


def test_malformed_records_go_to_dlq_and_good_ones_are_learned(make_config, broker, redis_url):
    cfg = make_config()
    X, y = elec_records(400)
    good = encode_rows(X, y)
    bad = [
        b"{not json", b"\xff\xfe\x00", b"[1,2,3]", b'{"x": [1,2,3], "y": 1}', b'{"x": [1,2,3,4,5,"a"], "y": 1}',
        b'{"x": [1,2,3,4,5,1e308], "y": 1}', b'{"x": [1,2,3,4,5,null], "y": 0}', b"", b'{"y": 1}',
        b'{"x": [1,2,3,4,5,6], "y": [1]}', b'{"x": [1,2,3,4,5,6], "y": true}', b'{"id": "nope", "y": 1}',
        b'{"x": "123456", "y": 1}', b'{"x": [1,2,3,4,5,6], "y": 1, "ts": "yesterday"}',
        b'{"x": [' + b"1," * 300_000 + b"1]}",
    ]
    values = []
    for i, v in enumerate(good):
        values.append(v)
        if i % 25 == 0 and bad:
            values.append(bad.pop())
    values.extend(bad)
    n_bad = len(values) - len(good)
    produce(broker, cfg.kafka.topic, values)

    summary = _run(cfg)
    assert summary["labelled_seen"] == 400
    assert summary["dlq_count"] == n_bad

    dlq = read_topic(broker, cfg.dlq_topic)
    assert len(dlq) == n_bad
    for rec in dlq:
        headers = dict(rec.headers)
        assert headers["ocld.reason"], "every dead letter carries a reason"
        assert headers["ocld.topic"].decode() == cfg.kafka.topic
        assert int(headers["ocld.offset"]) >= 0
        assert rec.value in values, "the original bytes are kept"
    reasons = {dict(r.headers)["ocld.reason"].decode() for r in dlq}
    assert any("expected 6 features" in r for r in reasons)
    assert any("exceeds max_abs_value" in r for r in reasons)
    assert any("unknown or expired id" in r for r in reasons)
    status = StateClient(redis_url).status(cfg.name)
    assert status["dlq_count"] == n_bad
    assert np.isfinite(status["log_loss"])


def test_predict_only_and_delayed_labels(make_config, broker, redis_url):
    cfg = make_config(drift={"enabled": False}, kafka={"predictions_topic": None})
    X, y = elec_records(600)
    values = encode_rows(X[:500], y[:500])
    # 100 predict-only records with ids, then their labels arrive later (no x).
    values += [orjson.dumps({"x": X[500 + i].tolist(), "id": f"s{i}", "ts": 1000.0 + i}) for i in range(100)]
    values += [orjson.dumps({"id": f"s{i}", "y": y[500 + i], "ts": 1010.0 + i}) for i in range(100)]
    produce(broker, cfg.kafka.topic, values)
    summary = _run(cfg)
    assert summary["labelled_seen"] == 600
    status = StateClient(redis_url).status(cfg.name)
    assert status["predict_only"] == 100 and status["predicted"] == status["labelled_seen"] + 100
    assert status["delayed_labels"] == 100
    assert status["label_delay_mean_s"] == pytest.approx(10.0)
    assert status["pending"] == 0
