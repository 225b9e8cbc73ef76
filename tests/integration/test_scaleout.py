"""Scale-out on a real broker and Redis: three ``ocld run --replica`` processes share a
6-partition topic while 60,000 labelled records flow; replicas are started, stopped
(SIGTERM) and SIGKILLed. At the end every record is learned exactly once across the
replicas' surviving states (count per partition), the AnalyticRidge statistics add up to
the statistics of all records, and the global model equals one learner trained on the
whole topic to 1e-8 relative.

Also: the fenced snapshot switch against a real Redis (a replica whose partition was
claimed by another cannot publish), and ``ocld status`` / ``ocld query --global``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
import pytest

from ocld.learners.registry import build_learner
from ocld.stream.client import StateClient
from tests.helpers import wait_until
from tests.scaleout import three_replicas_scenario

pytestmark = pytest.mark.integration

@pytest.mark.slow  # a 31 s schedule of starts and kills, then the catch-up: about 40 s, more on a busy machine
def test_three_replicas_start_stop_and_sigkill_learn_every_record_once(broker, redis_url, name, tmp_path):
    three_replicas_scenario(broker, redis_url, name, tmp_path)


def test_fenced_switch_publishes_nothing(redis_url, name):
    """A replica whose claim on a partition was superseded cannot switch a snapshot that learned from it."""
    from ocld.core.snapshot import Snapshot
    from ocld.stream.store import Fenced, SnapshotStore, connect

    r = connect(redis_url)
    a = SnapshotStore(r, name, replica="a")
    b = SnapshotStore(r, name, replica="b")
    tok_a = a.claim([("t", 0), ("t", 1)])
    assert (tok_a[("t", 0)]["token"], tok_a[("t", 0)]["offset"]) == ("a|1", None)
    learner = build_learner("AnalyticRidge", {"expansion_size": 8, "seed": 0}, [])
    from ocld.core.runtime import LearningCore  # noqa: F401  (state parts come from the learner alone here)

    parts = {"learner": learner.to_state()}
    v1 = a.write(Snapshot(parts, {"t": {0: 10, 1: 5}}, {"samples_seen": 15}),
                 fence={"t:0": "a|1", "t:1": "a|1"}, registry_offsets={"t:0": 10, "t:1": 5})
    assert a.latest_version() == v1
    # b takes partition 0 over (a stalled); it resumes where a's durable snapshot ended.
    tok_b = b.claim([("t", 0)])
    assert (tok_b[("t", 0)]["token"], tok_b[("t", 0)]["offset"]) == ("b|2", 10)
    with pytest.raises(Fenced) as err:
        a.write(Snapshot(parts, {"t": {0: 20, 1: 9}}, {"samples_seen": 29}),
                fence={"t:0": "a|1", "t:1": "a|1"}, registry_offsets={"t:0": 20, "t:1": 9})
    assert err.value.lost == ["t:0"]
    assert a.latest_version() == v1  # nothing switched
    assert a.versions() == [v1]
    assert not list(r.scan_iter(match=f"{a.keys.base}:snap:{err.value.version}:*"))  # its chunks are gone
    assert {tp: e["offset"] for tp, e in a.registry().items()} == {"t:0": 10, "t:1": 5}
    assert a.registry()["t:0"]["owner"] == "b"
    # A snapshot that learned only from partition 1 (still a's) switches.
    v3 = a.write(Snapshot(parts, {"t": {1: 9}}, {"samples_seen": 19}), fence={"t:1": "a|1"},
                 registry_offsets={"t:1": 9})
    assert a.latest_version() == v3 and a.registry()["t:1"]["offset"] == 9


def test_a_replica_whose_partition_was_taken_over_discards_and_reloads(make_config, broker, redis_url):
    """A daemon learns, then another replica claims its partition behind its back (as after a
    stall past the session timeout). Its next snapshot is refused; it reloads its last durable
    state, stops consuming the partition, and the registry still says where the new owner starts."""
    from ocld.stream.daemon import Daemon
    from ocld.stream.store import SnapshotStore, connect
    from tests.helpers import elec_records, encode_rows, produce

    cfg = make_config(drift={"enabled": False}, scale={"replica": "a"},
                      learner={"name": "AnalyticRidge", "params": {"expansion_size": 16, "seed": 0}, "features": []},
                      snapshot={"every_samples": 1000, "every_seconds": 3600})
    X, y = elec_records(3000)
    produce(broker, cfg.kafka.topic, encode_rows(X[:1000], y[:1000]))
    daemon = Daemon(cfg)
    done: dict[str, object] = {}
    thread = threading.Thread(target=lambda: done.update(daemon.run(max_seconds=60, install_signals=False)))
    thread.start()
    client = StateClient(redis_url)
    tp = f"{cfg.kafka.topic}:0"
    wait_until(lambda: (client.partitions(cfg.name).get(tp, {}).get("offset") or 0) >= 1000, 40,
               "a durable snapshot of the first 1,000 records", every=0.1)
    durable = client.snapshot_info(cfg.name, replica="a")["latest"]
    assert durable["info"]["labelled_seen"] == 1000
    # Replica "b" claims partition 0 (epoch 2): it would resume at offset 1000.
    other = SnapshotStore(connect(redis_url), cfg.name, replica="b")
    claimed = other.claim([(cfg.kafka.topic, 0)])[(cfg.kafka.topic, 0)]
    assert (claimed["token"], claimed["offset"]) == ("b|2", 1000)
    produce(broker, cfg.kafka.topic, encode_rows(X[1000:2500], y[1000:2500]))  # "a" learns 1,000 more: due
    wait_until(lambda: daemon.fences > 0, 40, "the next snapshot to be fenced", every=0.1)
    # After the fence the daemon reloads its durable state and pauses the partition it lost.
    wait_until(lambda: daemon.source is not None and daemon.source.owned() == set(), 10,
               "the lost partition to be paused", every=0.1)
    owned = daemon.source.owned() if daemon.source is not None else None
    daemon.stop()
    thread.join(60)
    assert daemon.fences == 1
    # Nothing of what "a" learned after its durable snapshot reached Redis, and it now holds exactly that state.
    assert client.snapshot_info(cfg.name, replica="a")["latest"]["version"] == durable["version"]
    assert daemon.core.labelled_seen == 1000
    assert client.partitions(cfg.name)[tp] == {"offset": 1000, "owner": "b", "epoch": 2}
    assert owned == set()  # the partition is paused, not consumed


def test_a_fenced_partition_that_kafka_keeps_assigning_here_is_claimed_back(make_config, broker, redis_url):
    """As above, but the replica that claimed the partition never runs (it crashed, or was a one-off):
    Kafka keeps the partition assigned to "a", so a pause "until Kafka assigns it again" would last for
    ever while the daemon looked healthy. Readiness says the partition is paused; after the group's
    session timeout and poll interval "a" claims it back and learns every record exactly once."""
    from ocld.stream.daemon import Daemon
    from ocld.stream.store import SnapshotStore, connect
    from tests.helpers import elec_records, encode_rows, produce

    cfg = make_config(drift={"enabled": False}, scale={"replica": "a"},
                      learner={"name": "AnalyticRidge", "params": {"expansion_size": 16, "seed": 0}, "features": []},
                      kafka={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 5000},
                      snapshot={"every_samples": 1000, "every_seconds": 1.0})
    X, y = elec_records(2500)
    produce(broker, cfg.kafka.topic, encode_rows(X[:1000], y[:1000]))
    daemon = Daemon(cfg)
    thread = threading.Thread(target=lambda: daemon.run(max_seconds=90, install_signals=False))
    thread.start()
    client = StateClient(redis_url)
    tp = f"{cfg.kafka.topic}:0"
    try:
        wait_until(lambda: (client.partitions(cfg.name).get(tp, {}).get("offset") or 0) >= 1000, 40,
                   "a durable snapshot of the first 1,000 records", every=0.1)
        SnapshotStore(connect(redis_url), cfg.name, replica="b").claim([(cfg.kafka.topic, 0)])
        produce(broker, cfg.kafka.topic, encode_rows(X[1000:], y[1000:]))
        wait_until(lambda: daemon.fences > 0 and daemon.source is not None and daemon.source.fenced, 40,
                   "the next snapshot to be fenced and the partition paused", every=0.1)
        health = daemon.health()
        assert not health["ready"] and any("paused: another replica claimed them" in r for r in health["reasons"])
        wait_until(lambda: (client.partitions(cfg.name).get(tp, {}).get("offset") or 0) >= 2500, 60,
                   "the partition claimed back and every record covered by a snapshot", every=0.2)
        assert daemon.health()["ready"], daemon.health()
    finally:
        daemon.stop()
        thread.join(60)
    info = client.snapshot_info(cfg.name, replica="a")["latest"]["info"]
    assert info["labelled_seen"] == 2500 and info["partition_records"] == {tp: 2500}
    assert client.partitions(cfg.name)[tp]["owner"] == "a"


def test_a_second_daemon_with_the_same_replica_name_is_refused(make_config, redis_url):
    """Two daemons under one replica name would overwrite each other's `latest`: the second one
    waits one lease TTL for the lease held elsewhere, then refuses with the fix; a lease left by a
    dead process of this host is stale and is taken over."""
    import socket

    from ocld.stream.daemon import Daemon
    from ocld.stream.errors import FatalConfigError
    from ocld.stream.lease import Lease
    from ocld.stream.store import Keys, connect

    cfg = make_config(scale={"replica": "twin"}, redis={"lease_ttl_s": 2})
    r = connect(redis_url)
    key = Keys(cfg.name, replica="twin").lease
    r.set(key, orjson.dumps({"token": "x", "host": "another-host", "pid": 4242}), ex=60)
    daemon = Daemon(cfg)
    t0 = time.monotonic()
    with pytest.raises(FatalConfigError, match="already run by another writer.*own scale.replica"):
        daemon.run(max_seconds=5, install_signals=False)
    assert 2.0 <= time.monotonic() - t0 < 10
    # A lease of a process of this host that has exited is stale: it is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from ocld.stream.lease import _pid_namespace

    r.set(key, orjson.dumps({"token": "y", "host": socket.gethostname(), "pid": dead.pid, "ns": _pid_namespace()}),
          ex=60)
    lease = Lease(r, key, 2.0)
    assert lease.acquire_or_replace_stale()
    assert orjson.loads(r.get(key))["pid"] == lease.pid


@pytest.mark.parametrize("during", [0, 600], ids=["all-durable", "learned-during-the-outage"])
def test_partitions_assigned_while_redis_is_down_are_paused_then_claimed(make_config, broker, own_redis, name,
                                                                        caplog, during):
    """A rebalance during a Redis outage: the replica cannot claim the partitions it is given, so it
    leaves them paused; once Redis is back it claims them, seeks to the registry and learns every
    record exactly once. With ``during`` records learned in memory during the outage (the revocation
    snapshot fails), the claim starts at the last durable snapshot, below what memory holds: the
    replica must discard what it learned since that snapshot, or those records count twice."""
    from kafka import KafkaConsumer

    from ocld.stream.daemon import Daemon
    from tests.helpers import elec_records, encode_rows, produce

    topic = f"{name}.in"
    cfg = make_config(
        scale={"replica": "x"}, drift={"enabled": False}, redis={"url": own_redis.url},
        kafka={"partitions": 2, "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 5000},
        status={"interval_s": 0.2, "metrics_every_s": 5.0},
        learner={"name": "AnalyticRidge", "params": {"expansion_size": 16, "seed": 0}, "features": []},
        snapshot={"every_samples": 500, "every_seconds": 1.0})
    X, y = elec_records(3000)
    produce(broker, topic, encode_rows(X[:2000], y[:2000]), partitions=2)
    caplog.set_level(logging.WARNING, logger="ocld")
    daemon = Daemon(cfg)
    thread = threading.Thread(target=lambda: daemon.run(max_seconds=120, install_signals=False))
    thread.start()
    client = StateClient(own_redis.url)

    def registry_covers() -> int:
        return sum(int(e["offset"] or 0) for e in client.partitions(name).values())

    def failed_claims() -> int:
        return sum(r.getMessage().startswith("could not claim partitions") for r in caplog.records)

    intruder = None
    try:
        wait_until(lambda: daemon.model_version is not None and daemon.records_seen >= 2000, 40,
                   "the first 2,000 records learned", every=0.1)
        wait_until(lambda: registry_covers() >= 2000, 30, "a snapshot covering the 2,000 records")
        own_redis.stop()
        if during:
            produce(broker, topic, encode_rows(X[2000:2000 + during], y[2000:2000 + during]), partitions=2)
            wait_until(lambda: daemon.records_seen >= 2000 + during, 30, "records learned in memory during the outage",
                       every=0.1)
        # A second group member forces a rebalance while Redis is down.
        intruder = KafkaConsumer(topic, bootstrap_servers=broker, group_id=cfg.group_id, enable_auto_commit=False,
                                 session_timeout_ms=3000, heartbeat_interval_ms=500, max_poll_interval_ms=5000)

        def intruder_joined() -> bool:
            assert intruder is not None
            if intruder.assignment() and daemon.source and daemon.source.unclaimed:
                return True
            intruder.poll(timeout_ms=100, max_records=1)  # joins the group; what it reads is not committed
            return False

        wait_until(intruder_joined, 30, "the intruder to take a partition and the replica to leave its own unclaimed",
                   every=0)
        paused = set(daemon.source.unclaimed) if daemon.source else set()
        intruder.close(autocommit=False)  # the partitions come back to "x", Redis still down
        intruder = None
        produce(broker, topic, encode_rows(X[2000 + during:], y[2000 + during:]), partitions=2)
        # The group hands both partitions back (the rejoin can take seconds on a busy machine).
        wait_until(lambda: daemon.source and len(daemon.source.unclaimed) == 2, 30,
                   "both partitions handed back to the replica, unclaimed", every=0.1)
        # Nothing claimed, nothing consumed: the loop polls and retries the claims every ~50 ms, and twenty
        # failed claims after the new records arrived mean twenty polls that could have returned them.
        before = failed_claims()
        wait_until(lambda: failed_claims() >= before + 20, 30, "twenty more failed claims while Redis is down")
        assert daemon.source is not None and len(daemon.source.unclaimed) == 2
        assert daemon.records_seen == 2000 + during
        own_redis.start()
        wait_until(lambda: daemon.source and not daemon.source.unclaimed and registry_covers() >= 3000, 60,
                   "the partitions claimed and every record covered by a snapshot", every=0.2)
    finally:
        if intruder is not None:
            intruder.close(autocommit=False)
        daemon.stop()
        thread.join(60)
    assert paused, "the rebalance during the outage left partitions unclaimed"
    if during:
        assert any(r.getMessage().startswith("incident rewound") for r in caplog.records)
    info = client.snapshot_info(name, replica="x")["latest"]["info"]
    assert info["labelled_seen"] == 3000
    assert sum(info["partition_records"].values()) == 3000
    assert {tp: e["offset"] for tp, e in client.partitions(name).items()} == {f"{topic}:0": 1500, f"{topic}:1": 1500}


def test_a_renewal_answered_after_the_lease_was_taken_again_changes_nothing(redis_url, name):
    """During a Redis failover the lease lapsed, the loop took it again (a fresh value), and only then
    did the renewing thread's call with the old value come back, answering "taken". The daemon then
    stopped as if another writer held its lease, although the holder was itself (seen in a CI run of
    the cluster failover test). The stale answer must change nothing."""
    from ocld.stream.lease import Lease
    from ocld.stream.store import Keys, connect

    r = connect(redis_url)
    lease = Lease(r, Keys(name).lease, ttl_s=5)
    assert lease.try_acquire()
    first = lease.value
    r.delete(lease.key)  # lapsed: a failover lost the key

    class Slow:
        """The renewal is on its way while the loop takes the lease again."""

        def __getattr__(self, attr: str) -> Any:
            return getattr(r, attr)

        def eval(self, *args: Any) -> Any:
            assert lease.try_acquire()  # the loop, meanwhile: a fresh value
            return r.eval(*args)

    lease.r = Slow()  # type: ignore[assignment]
    assert lease.renew() == "held"
    assert lease.state == "held" and lease.value != first
    lease.r = r
    assert r.get(lease.key).decode() == lease.value and lease.renew() == "held"
    # Another writer's value is still "taken".
    r.set(lease.key, b'{"token": "other", "host": "h", "pid": 1}')
    assert lease.renew() == "taken" and b"other" in (lease.taken_by or b"")
