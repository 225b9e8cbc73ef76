"""Real outages: Redis stopped for 10 s mid-run, the broker absent at start-up or restarted
mid-run, a corrupted or truncated snapshot chunk. Servers are real processes that the
tests stop and start; the daemon runs as a child process (or in-process for the chunk test).

Documented rules checked here (see stream/daemon.py):
- Redis outage: learning continues in memory; offsets are never committed beyond the last
  durable snapshot; snapshots are retried with backoff; the first status write that works
  again says ``degraded``, then a snapshot catches up and the status says ``running``.
- Broker: start-up waits with backoff and a clear log line; a broker that returns is
  reconnected to. tansu keeps topics in memory: after its restart the topic is empty and
  its offsets start again at 0, so only records past the daemon's old position are seen
  (a real Kafka keeps its log; this is the embedded broker's caveat, not the daemon's).
"""

from __future__ import annotations

import threading
import time

import pytest

from ocld.stream.client import StateClient
from ocld.stream.embedded import EmbeddedBroker, free_port
from tests.crash import final_state, make_stream, pipeline_config, reference_state, state_max_diff
from tests.helpers import DaemonProcess, committed, produce, wait_until, write_config

pytestmark = pytest.mark.integration

KALMAN = {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False}, "features": [{"name": "Standardizer"}]}


def _daemon(cfg: dict, tmp_path, bootstrap: str, redis_url: str) -> DaemonProcess:
    """``ocld run`` of ``cfg`` as a child process, started (at most 150 s)."""
    cfg_path = write_config(tmp_path / f"{cfg['name']}.yaml", cfg)
    return DaemonProcess(cfg_path, bootstrap, redis_url, tmp_path, args=["--max-seconds", "150"]).start()


def _status(url: str, name: str) -> dict:
    return StateClient(url).status(name)


def test_redis_stopped_for_10s_mid_run(broker, own_redis, name, tmp_path):
    n = 4000
    values, X, y = make_stream(n, 21, bad=0.0)
    topic = f"{name}.in"
    produce(broker, topic, values[:600])
    cfg = pipeline_config(name, topic, KALMAN, every_samples=300)
    cfg["snapshot"]["keep"] = 100  # keep every version: the test reads the one before the outage
    cfg["status"]["interval_s"] = 0.5  # "degraded" stays visible at least this long after Redis returns
    url = own_redis.url
    daemon = _daemon(cfg, tmp_path, broker, url)
    feeder_stop = threading.Event()

    def feed() -> None:  # records keep flowing during the outage: 100 every 0.25 s
        for start in range(600, n, 100):
            if feeder_stop.wait(0.25):
                return
            produce(broker, topic, values[start:start + 100])

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        wait_until(lambda: daemon.alive() and _status(url, name)["labelled_seen"] >= 500, 60, "500 samples learned")
        feeder.start()
        t_stop = time.time()
        own_redis.stop()  # a real stop (SIGTERM, append-only file flushed)
        # The outage itself: Redis stays down for 10 s on purpose (the offsets committed meanwhile are read
        # half-way through).
        time.sleep(5)
        committed_during = committed(broker, f"ocld-{name}", topic)[0]
        time.sleep(5)
        assert daemon.proc.poll() is None, "the daemon survives a 10 s Redis outage"
        own_redis.start()
        t_back = time.time()
        states: list[str] = []
        watcher = StateClient(url)

        def caught_up() -> bool:
            daemon.alive()
            st = watcher.status(name)
            if not states or states[-1] != st.get("state"):
                states.append(st.get("state"))
            return st.get("state") == "running" and st["labelled_seen"] == len(y)

        feeder.join(60)
        wait_until(caught_up, 90, "catching up after the outage", every=0.005)
        status = _status(url, name)
        rc = daemon.term()
    finally:
        feeder_stop.set()
        daemon.kill()
    # Read what Redis kept on disk: stopped and started again, it loads its append-only file.
    own_redis.stop()
    own_redis.start()
    log = daemon.log
    assert rc == 0, log[-3000:]
    assert "snapshot failed: Redis unreachable" in log or "status update failed, Redis unreachable" in log
    assert "Redis answers again" in log and "covers everything learned during the outage" in log
    assert "degraded" in states and states.index("degraded") < len(states) - 1 - states[::-1].index("running"), states
    print(f"\nRedis outage: states seen after restart {states}, last_outage_s={status['last_outage_s']}, "
          f"committed offset during outage {committed_during}")
    assert status["redis_outages"] == 1
    assert 9.0 < status["last_outage_s"] < 60, status  # first failed write -> durable catch-up snapshot
    # Offsets committed during the outage never pass the last snapshot made before it.
    client = StateClient(url)
    store = client.store(name)
    before = [v for v in store.versions() if store.manifest_info(v)["created_at"] < t_stop]
    assert before, "a snapshot was made before the outage"
    snap_offset = int(store.manifest_info(max(before))["offsets"][topic]["0"])
    assert committed_during is None or committed_during <= snap_offset
    after = [v for v in store.versions() if store.manifest_info(v)["created_at"] > t_back]
    assert after, "snapshots resumed after the outage"
    # No sample lost or learned twice.
    state, info = final_state(url, name)
    assert info["labelled_seen"] == len(y)
    assert state_max_diff(state, reference_state(KALMAN, X, y)) <= 1e-9


def test_broker_unreachable_at_start_up_then_appears(redis_url, name, tmp_path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    values, X, y = make_stream(1500, 22, bad=0.0)
    topic = f"{name}.in"
    daemon = _daemon(pipeline_config(name, topic, KALMAN, every_samples=500), tmp_path, bootstrap, redis_url)
    try:
        wait_until(lambda: daemon.alive() and "unreachable at start-up (attempt 2)" in daemon.log, 60,
                   "the start-up wait")
        with EmbeddedBroker(tmp_path / "broker", port=port):
            produce(bootstrap, topic, values)
            wait_until(lambda: daemon.alive() and _status(redis_url, name)["labelled_seen"] == len(y), 90,
                       "all samples learned")
            rc = daemon.term()
    finally:
        daemon.kill()
    log = daemon.log
    assert rc == 0, log[-3000:]
    assert "unreachable at start-up (attempt 1); retry in 0.5 s" in log, log[-3000:]
    assert "is reachable; starting to consume" in log
    _, info = final_state(redis_url, name)
    assert info["labelled_seen"] == len(y)


def test_broker_restarted_mid_run(redis_url, own_broker, name, tmp_path):
    bootstrap = own_broker.bootstrap
    values, X, y = make_stream(3000, 23, bad=0.0, unlabelled=0.0)
    topic = f"{name}.in"
    daemon = _daemon(pipeline_config(name, topic, KALMAN, every_samples=500), tmp_path, bootstrap, redis_url)
    assigned = f"assigned {topic}[0]"  # the source's log line on each assignment of the partition
    try:
        produce(bootstrap, topic, values[:1000])
        wait_until(lambda: daemon.alive() and _status(redis_url, name)["labelled_seen"] == 1000, 90,
                   "first 1000 learned")
        assignments = daemon.log.count(assigned)
        own_broker.stop()
        wait_until(lambda: daemon.alive() and "is unreachable" in daemon.log, 30, "the unreachable-broker log line")
        own_broker.start()
        # Memory storage: the topic is gone. Recreate it, let the consumer rejoin, then send new
        # records. The daemon keeps its position (1000, from its state): the new topic's offsets
        # 0..999 lie below it and are not seen; 1000.. are (measured: 1000 of the 2000 new ones).
        produce(bootstrap, topic, [])
        wait_until(lambda: daemon.alive() and "reachable again" in daemon.log, 60, "the reachable-again log line")
        wait_until(lambda: daemon.alive() and daemon.log.count(assigned) > assignments, 60,
                   "the consumer to rejoin the group on the restarted broker")
        produce(bootstrap, topic, values[1000:])
        wait_until(lambda: daemon.alive() and _status(redis_url, name)["labelled_seen"] >= 2000, 90,
                   "records after the restart learned")
        rc = daemon.term()
    finally:
        daemon.kill()
    log = daemon.log
    assert rc == 0, log[-3000:]
    status = _status(redis_url, name)
    print(f"\nbroker restart: labelled_seen {status['labelled_seen']} of 1000 before + 2000 after the restart")
    assert "is unreachable" in log and "reachable again" in log
    assert status["state"] == "stopped"
    assert 2000 <= status["labelled_seen"] <= 3000


def test_corrupted_or_truncated_chunk_falls_back_to_the_previous_version(make_config, broker, redis_url, caplog):
    import logging

    from ocld.stream.daemon import Daemon
    from ocld.stream.store import SnapshotStore, connect
    from tests.helpers import elec_records, encode_rows

    cfg = make_config(drift={"enabled": False}, snapshot={"every_samples": 500, "keep": 5, "chunk_bytes": 4096},
                      kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 2000})
    X, y = elec_records(3000)
    produce(broker, cfg.kafka.topic, encode_rows(X[:2000], y[:2000]))
    Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)

    r = connect(redis_url)
    store = SnapshotStore(r, cfg.name)
    versions = store.versions()
    assert len(versions) >= 3
    latest, previous, older = versions[:3]
    k0 = store.keys.chunk(latest, 0)
    raw = bytearray(r.get(k0))
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit pattern: same length, wrong checksum
    r.set(k0, bytes(raw))
    k1 = store.keys.chunk(previous, 0)
    r.set(k1, r.get(k1)[:100])  # truncated
    expected = store.manifest_info(older)["info"]["labelled_seen"]

    produce(broker, cfg.kafka.topic, encode_rows(X[2000:], y[2000:]))
    caplog.set_level(logging.INFO, logger="ocld")
    second = Daemon(cfg)
    second.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    text = caplog.text
    assert f"snapshot version {latest} of pipeline {cfg.name!r} is unusable (chunk 0 fails its sha256 checksum" in text
    assert f"snapshot version {previous} of pipeline {cfg.name!r} is unusable" in text
    assert f"fell back from snapshot version {latest} to {older}" in text
    assert f"resumed from snapshot version {older} ({expected} labelled samples" in text
    # Falling back re-learns from the older version's offsets: still every sample exactly once.
    assert second.core.labelled_seen == 3000
    import numpy as np

    reference = cfg.build_learner()
    reference.learn_predict(X, np.array(y, dtype=object))
    np.testing.assert_allclose(second.core.learner.predict_proba(X[:300]), reference.predict_proba(X[:300]), atol=1e-9)
