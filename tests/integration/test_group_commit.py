"""The commit on revocation reaches the consumer group, on the kafka-python versions ocld supports.

Two ``ocld run --replica`` processes (r0, r1) of one pipeline share a 4-partition topic on a real
broker (tansu) and Redis. Snapshots are due only on revocation and at shutdown, so the group's
committed offsets after r1 joins can only come from r0's commit on revocation. After each rebalance
the group's committed offsets (read by a separate consumer's ``committed()``) must equal the
offsets of each partition in the replicas' latest snapshots. A clean SIGTERM exits 0, and no log
contains "offset commit to the group failed" or a traceback.

kafka-python 3.x runs the rebalance listener on its IO thread, where the daemon's blocking commit
fails ("Cannot block on net.run() from the IO thread itself"), so this test fails there at the first
rebalance; pyproject.toml pins the 2.2 series, and this test is what that pin rests on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ocld.stream.client import StateClient
from tests.helpers import committed, wait_until, write_config
from tests.scaleout import LEARNERS, Replica, labelled_stream, pipeline_config, produce_partitioned

pytestmark = pytest.mark.integration

PARTITIONS = 4
N1 = 4000  # learned by r0 alone before r1 joins
N2 = 4000  # learned by both after the rebalance


def _committed(broker: str, group: str, topic: str) -> dict[str, int | None]:
    """The group's committed offset per partition, keyed as a snapshot's offsets are."""
    return {str(p): offset for p, offset in committed(broker, group, topic, PARTITIONS).items()}


def _snapshot_offsets(client: StateClient, name: str, replica: str, topic: str) -> dict[str, int]:
    latest = client.snapshot_info(name, replica=replica)["latest"]
    return {p: int(o) for p, o in (latest["offsets"].get(topic) or {}).items()} if latest else {}


def _statuses(client: StateClient, name: str) -> dict[str, dict[str, Any]]:
    return {s["replica"]: s for s in client.replicas(name)}


def _assigned(client: StateClient, name: str, replica: Replica) -> int:
    """Partitions the running process of ``replica`` reports as assigned (0 if not running yet)."""
    s = _statuses(client, name).get(replica.replica, {})
    if replica.pid is None or s.get("pid") != replica.pid or s.get("state") != "running":
        return 0
    return len(s.get("partitions") or [])


def _logs(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(log_dir.glob("*.log")))


def test_rebalance_commits_the_snapshot_offsets_to_the_group(broker, redis_url, name, tmp_path):
    topic = f"{name}.in"
    group = f"ocld-{name}"
    values, _, _ = labelled_stream(N1 + N2, seed=3)
    produce_partitioned(broker, topic, values[:N1], PARTITIONS)
    cfg = pipeline_config(name, topic, LEARNERS["analytic"], PARTITIONS, every_samples=1_000_000)
    cfg["snapshot"]["every_seconds"] = 3600.0  # snapshots (and commits) only on revocation and at shutdown
    cfg_path = write_config(tmp_path / "cfg.json", cfg)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    r0, r1 = (Replica(f"r{i}", cfg_path, broker, redis_url, log_dir) for i in range(2))
    client = StateClient(redis_url)
    per_partition = N1 // PARTITIONS
    try:
        r0.start()
        wait_until(lambda: _assigned(client, name, r0) == PARTITIONS and int(
            _statuses(client, name)["r0"].get("labelled_seen") or 0) == N1, 90, f"r0 to learn the first {N1} records")
        assert _snapshot_offsets(client, name, "r0", topic) == {}, "no snapshot was due before the rebalance"
        assert _committed(broker, group, topic) == {str(p): None for p in range(PARTITIONS)}

        # r1 joins: r0's partitions are revoked, and r0 snapshots and commits before giving them up.
        r1.start()
        wait_until(lambda: _assigned(client, name, r0) == 2 and _assigned(client, name, r1) == 2, 90,
                   "the group to split the partitions 2 + 2")
        expected = {str(p): per_partition for p in range(PARTITIONS)}
        assert _snapshot_offsets(client, name, "r0", topic) == expected, _logs(log_dir)[-4000:]
        wait_until(lambda: _committed(broker, group, topic) == expected, 30,
                   f"the group's committed offsets to equal r0's revocation snapshot {expected}")

        # Both learn their half of N2; then r1 stops (r0 is revoked again and takes all four), then r0.
        produce_partitioned(broker, topic, values[N1:], PARTITIONS)
        wait_until(lambda: sum(int(s.get("labelled_seen") or 0) for s in _statuses(client, name).values())
                   == N1 + N2, 90, f"the replicas to learn all {N1 + N2} records")
        assert r1.term() == 0, _logs(log_dir)[-4000:]
        wait_until(lambda: _assigned(client, name, r0) == PARTITIONS, 90, "r0 to take all four partitions back")
        assert r0.term() == 0, _logs(log_dir)[-4000:]
    finally:
        r0.kill()
        r1.kill()

    # Every partition ends at its log end in the registry, in the group, and in the replicas' latest
    # snapshots. A replica's snapshot keeps the offset up to which its own learner covers a partition:
    # r0 took partitions 0 and 1 back from r1 with nothing new to learn, so its latest snapshot still
    # says 1,000 for them and r1's says 2,000. The newest offset over the replicas is the covered one.
    end = {str(p): (N1 + N2) // PARTITIONS for p in range(PARTITIONS)}
    registry = client.partitions(name)
    assert {tp.rpartition(":")[2]: e["offset"] for tp, e in registry.items()} == end
    snapshots = [_snapshot_offsets(client, name, r, topic) for r in ("r0", "r1")]
    newest = {p: max(s[p] for s in snapshots if p in s) for p in end}
    assert newest == end, snapshots
    assert _committed(broker, group, topic) == newest
    # Exactly once across the two replicas.
    states = client.replica_snapshots(name)
    assert sum(int(s.info["labelled_seen"]) for s in states.values()) == N1 + N2
    logs = _logs(log_dir)
    assert "partitions revoked" in logs  # the revocation path ran
    assert "offset commit to the group failed" not in logs, logs[-6000:]
    assert "Traceback" not in logs, logs[-6000:]
