"""The outage, backoff, claim, fence and lease state machines, in milliseconds.

``Checkpointer`` and ``Ownership`` run against the in-memory store of ``tests/memstore.py``,
which has the Redis store's semantics; the store checks at the end run against both it and a
real Redis (the session's redis-server), so the two cannot drift apart. The integration and
adversarial tests exercise the same machines on real servers end to end.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from kafka.errors import KafkaTimeoutError

from ocld.core.snapshot import Snapshot
from ocld.learners.base import LearnerState
from ocld.stream.checkpoint import Checkpointer, Taken
from ocld.stream.config import SnapshotConfig
from ocld.stream.ownership import Incident, Ownership
from ocld.stream.store import Fenced, LeaseLost, RegistryMissing
from tests.memstore import MemoryLease, MemoryRedis, MemorySnapshotStore

T0, T1 = ("t", 0), ("t", 1)


class _Metrics:
    def __init__(self) -> None:
        self.failures = 0
        self.snapshot_duration = self
        self.snapshot_failures = self

    def observe(self, _: float) -> None:
        pass

    def inc(self) -> None:
        self.failures += 1


class _Sink:
    def __init__(self) -> None:
        self.fail = False

    def flush(self, timeout: float) -> None:
        if self.fail:
            raise KafkaTimeoutError("flush timed out")


class _Source:
    """The part of KafkaSource the checkpoint uses: positions, what is held, the group commit."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = dict(offsets)
        self.fingerprints: dict[tuple[str, int], str | None] = {tp: f"fp{o}" for tp, o in offsets.items()}
        self.held = set(offsets)
        self.commits = 0

    def owned(self) -> set[tuple[str, int]]:
        return set(self.held)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        self.offsets = {tp: o for tp, o in self.offsets.items() if tp in keep}

    def commit(self) -> None:
        self.commits += 1


def _parts() -> dict[str, Any]:
    return {"learner": LearnerState("X", {}, {"w": np.arange(3.0)}, {})}


def _take(source: _Source) -> Any:
    return lambda: Taken(_parts(), dict(source.offsets), dict(source.fingerprints), {"samples_seen": 1})


def _machine(db: MemoryRedis, replica: str = "") -> tuple[Ownership, Checkpointer, MemorySnapshotStore, list[Incident]]:
    lease = MemoryLease(db, f"lease:{replica}")
    assert lease.try_acquire()
    store = MemorySnapshotStore(db, replica, lease)
    incidents: list[Incident] = []
    own = Ownership(store, lease, replica, incidents.append)  # type: ignore[arg-type]
    cp = Checkpointer(SnapshotConfig(every_samples=10, every_seconds=60), store, _Metrics())  # type: ignore[arg-type]
    return own, cp, store, incidents


def test_a_snapshot_is_due_by_samples_by_time_when_forced_and_while_degraded() -> None:
    cp = Checkpointer(SnapshotConfig(every_samples=10, every_seconds=5), None, _Metrics())  # type: ignore[arg-type]
    cp.restored(1, time.time(), labelled=100, records=100)
    now = time.monotonic()
    assert not cp.expired(now, labelled=105, records=105)
    assert cp.expired(now, labelled=110, records=110)
    assert not cp.expired(now + 6, labelled=100, records=100), "nothing new: no snapshot, however long"
    assert cp.expired(now + 6, labelled=101, records=101)
    cp.force = True
    assert cp.expired(now, labelled=100, records=100)


def test_an_outage_backs_off_doubling_to_ten_seconds_then_recovers() -> None:
    db = MemoryRedis()
    own, cp, store, _ = _machine(db)
    source, sink = _Source({T0: 5}), _Sink()
    own.claim([T0])
    own.dirty.add(T0)
    db.down = True
    delays = []
    for _ in range(7):
        assert cp.commit(_take(source), sink, source, own, records=5, labelled=5) == "failed"
        delays.append(round(cp._retry_at - time.monotonic(), 1))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert cp.degraded and cp.redis_outages == 1 and cp.degraded_since is not None
    assert source.commits == 0, "offsets are never committed past the last durable snapshot"
    db.down = False
    cp.status_written(retry_in=0.0)  # the first status write that works: try the catch-up soon
    assert cp.commit(_take(source), sink, source, own, records=5, labelled=5) == "durable"
    assert not cp.degraded and cp.last_outage_s is not None and cp.backoff.peek() == 0.5
    assert source.commits == 1 and db.offsets == {"t:0": 5}


def test_unflushed_outputs_postpone_the_snapshot() -> None:
    db = MemoryRedis()
    own, cp, _, _ = _machine(db)
    source, sink = _Source({T0: 5}), _Sink()
    own.claim([T0])
    sink.fail = True
    assert cp.commit(_take(source), sink, source, own, records=5, labelled=5) == "failed"
    assert "" not in db.latest and source.commits == 0


def test_a_claim_starts_where_this_replicas_snapshot_says_and_the_registry_agrees() -> None:
    db = MemoryRedis()
    own, _, _, incidents = _machine(db, "a")
    db.offsets["t:0"] = 900  # a registry that disagrees with the snapshot (its snapshot was rolled back, say)
    own.durable = {T0: (500, "fp500")}
    assert own.claim([T0, T1]) == {T0: (500, "fp500"), T1: (None, None)}
    assert db.offsets == {"t:0": 500} and db.owners == {"t:0": "a|1", "t:1": "a|1"}
    assert [(i.kind, i.partition) for i in incidents] == [("registry_mismatch", "t:0")]
    # Another replica claiming a partition that "a" owned last starts where a's durable snapshot ended.
    own_b, _, _, _ = _machine(db, "b")
    assert own_b.claim([T0]) == {T0: (500, "fp500")}
    assert db.owners["t:0"] == "b|2"


def test_the_registry_offset_belongs_to_the_replica_whose_snapshot_wrote_it() -> None:
    """A replica that took a partition over and has not snapshotted it yet keeps starting where the previous
    owner's snapshot ended, however often it claims it; once its own snapshot covers it, its snapshot rules."""
    db = MemoryRedis()
    own_a, cp_a, _, _ = _machine(db, "a")
    src_a = _Source({T0: 10})
    own_a.claim([T0])
    own_a.dirty.add(T0)
    assert cp_a.commit(_take(src_a), _Sink(), src_a, own_a, records=10, labelled=10) == "durable"
    own_b, cp_b, _, _ = _machine(db, "b")
    assert own_b.claim([T0]) == {T0: (10, "fp10")}
    assert own_b.claim([T0]) == {T0: (10, "fp10")}, "not reset: b's own snapshot has never covered it"
    src_b = _Source({T0: 14})
    own_b.dirty.add(T0)
    assert cp_b.commit(_take(src_b), _Sink(), src_b, own_b, records=4, labelled=4) == "durable"
    assert db.writers == {"t:0": "b"} and own_b.claim([T0]) == {T0: (14, "fp14")}
    assert own_a.claim([T0]) == {T0: (14, "fp14")}, "a's older snapshot does not pull the partition back"


def test_a_switch_fenced_by_another_claim_changes_nothing() -> None:
    db = MemoryRedis()
    own_a, cp_a, store_a, _ = _machine(db, "a")
    source = _Source({T0: 10, T1: 5})
    own_a.claim([T0, T1])
    own_a.dirty |= {T0, T1}
    assert cp_a.commit(_take(source), _Sink(), source, own_a, records=15, labelled=15) == "durable"
    own_b, _, _, _ = _machine(db, "b")
    own_b.claim([T0])
    source.offsets = {T0: 20, T1: 9}
    own_a.dirty |= {T0, T1}
    assert cp_a.commit(_take(source), _Sink(), source, own_a, records=29, labelled=29) == "fenced"
    assert isinstance(cp_a.error, Fenced) and cp_a.error.lost == ["t:0"]
    assert db.offsets == {"t:0": 10, "t:1": 5} and store_a.latest_version() == 1


def test_claims_gone_are_reported_as_data_loss_not_as_a_fence() -> None:
    db = MemoryRedis()
    own, cp, _, _ = _machine(db)
    source = _Source({T0: 10})
    own.claim([T0])
    own.dirty.add(T0)
    db.owners.clear()
    assert cp.commit(_take(source), _Sink(), source, own, records=10, labelled=10) == "missing"
    assert isinstance(cp.error, RegistryMissing)


def test_a_lost_lease_writes_nothing_and_after_a_gap_the_verdict_says_what_happened() -> None:
    db = MemoryRedis()
    own, cp, store, _ = _machine(db)
    source = _Source({T0: 10})
    own.claim([T0])
    own.dirty.add(T0)
    assert cp.commit(_take(source), _Sink(), source, own, records=10, labelled=10) == "durable"
    own.lease_tokens.add(own.lease_token())
    # The lease expired while the daemon stalled, and another writer took it: nothing more is written.
    own.lease.expire()  # type: ignore[attr-defined]
    other = MemoryLease(db, own.lease.key)
    assert other.try_acquire()
    source.offsets = {T0: 20}
    own.dirty.add(T0)
    assert cp.commit(_take(source), _Sink(), source, own, records=20, labelled=20) == "lease"
    assert own.lease.state == "taken" and db.offsets == {"t:0": 10}
    # Gone and taken again: nothing changed meanwhile.
    other.release()
    assert own.retake_lease()
    assert own.after_gap(cp.model_version) == "ok"
    # A rollback (another writer) switched latest during a gap: rewind.
    MemorySnapshotStore(db, "", MemoryLease(db, "x")).db.latest[""] = {"version": "1", "writer": "rollback-token"}
    assert own.after_gap(cp.model_version) == "rewind"
    # Redis lost everything: re-establish from memory.
    db.flushall()
    assert own.retake_lease()
    assert own.after_gap(cp.model_version) == "lost"


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Any:
    """Two replicas' stores and leases on one backend, and how to expire a lease there."""
    if request.param == "memory":
        db = MemoryRedis()
        leases = [MemoryLease(db, f"lease:{r}") for r in "ab"]
        return [MemorySnapshotStore(db, r, lz) for r, lz in zip("ab", leases)], leases, lambda lz: lz.expire()
    import uuid

    from ocld.stream.lease import Lease
    from ocld.stream.store import Keys, SnapshotStore, connect

    url = request.getfixturevalue("redis_url")
    r, name = connect(url), f"sm{uuid.uuid4().hex[:8]}"
    leases = [Lease(r, Keys(name, replica=rep).lease, 30) for rep in "ab"]
    return ([SnapshotStore(r, name, replica=rep, lease=lz) for rep, lz in zip("ab", leases)], leases,
            lambda lz: r.delete(lz.key))


def test_store_claim_fence_and_lease_semantics(stores: Any) -> None:
    (a, b), (lease_a, lease_b), expire = stores
    assert lease_a.try_acquire() and lease_b.try_acquire()
    parts = {"learner": LearnerState("X", {}, {"w": np.zeros(2)}, {})}
    claim = a.claim([T0, T1], mine={T0: (3, "fp3")})
    assert {tp: (c["token"], c["offset"]) for tp, c in claim.items()} == {T0: ("a|1", 3), T1: ("a|1", None)}
    v1 = a.write(Snapshot(parts, {"t": {0: 10, 1: 5}}, {}), fence={"t:0": "a|1", "t:1": "a|1"},
                 registry_offsets={"t:0": 10, "t:1": 5}, fingerprints={"t:0": "f10", "t:1": "f5"})
    assert a.latest_version() == v1
    assert b.claim([T0])[T0]["offset"] == 10
    # claimed again before b switched a snapshot of it: it still starts where a's snapshot ended
    again = b.claim([T0])[T0]
    assert (again["offset"], again["token"]) == (10, "b|3")
    with pytest.raises(Fenced):
        a.write(Snapshot(parts, {"t": {0: 20}}, {}), fence={"t:0": "a|1"}, registry_offsets={"t:0": 20})
    assert {tp: e["offset"] for tp, e in a.registry().items()} == {"t:0": 10, "t:1": 5}
    expire(lease_a)
    with pytest.raises(LeaseLost):
        a.write(Snapshot(parts, {"t": {1: 9}}, {}), fence={"t:1": "a|1"}, registry_offsets={"t:1": 9})
    assert a.latest_version() == v1


def test_a_lease_is_stale_only_when_its_holder_provably_is_gone(redis_url: str) -> None:
    """Same PID namespace and a dead pid, or the same OCLD_INSTANCE: stale. A holder of the same host name
    and pid in another container (two pods named ocld-0, both pid 1) is alive as far as anyone can tell."""
    import os
    import socket
    import subprocess
    import sys
    import uuid

    import orjson

    from ocld.stream.lease import Lease, _pid_namespace
    from ocld.stream.store import connect

    r = connect(redis_url)
    key = f"ocld:{{lease{uuid.uuid4().hex[:6]}}}:lease"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, ns = socket.gethostname(), _pid_namespace()
    for holder, stale in [({"host": host, "pid": dead.pid, "ns": ns}, True),
                          ({"host": host, "pid": os.getpid(), "ns": ns}, True),
                          ({"host": host, "pid": os.getpid(), "ns": "other-boot:123"}, False),
                          ({"host": host, "pid": dead.pid, "ns": "other-boot:123"}, False),
                          ({"host": "elsewhere", "pid": dead.pid, "ns": ns}, False)]:
        r.set(key, orjson.dumps({"token": "t", **holder}), ex=30)
        assert Lease(r, key, 5).acquire_or_replace_stale() is stale, holder
    os.environ["OCLD_INSTANCE"] = "pod-uid-1"
    try:
        r.set(key, orjson.dumps({"token": "t", "host": host, "pid": 1, "ns": "x", "instance": "pod-uid-1"}), ex=30)
        assert Lease(r, key, 5).acquire_or_replace_stale()
        r.set(key, orjson.dumps({"token": "t", "host": host, "pid": 1, "ns": "x", "instance": "pod-uid-2"}), ex=30)
        assert not Lease(r, key, 5).acquire_or_replace_stale()
    finally:
        del os.environ["OCLD_INSTANCE"]
