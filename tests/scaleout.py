"""The scale-out harness: labelled records on a topic with several partitions, ``ocld run --replica``
child processes, and what the registry and the replicas' snapshots say afterwards.

Used by ``tests/integration/test_scaleout.py``, ``test_group_commit.py`` and ``test_redis_cluster.py``, and by
``benchmarks/scaleout.py``. Test support only: it never imports ``benchmarks``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ocld.learners.registry import build_learner
from ocld.stream.client import StateClient
from tests.crash import make_stream
from tests.helpers import ROOT, DaemonProcess, wait_until, write_config

LEARNERS: dict[str, dict[str, Any]] = {
    # No Standardizer: every replica's feature map must be identical for the statistics to add up.
    "analytic": {"name": "AnalyticRidge", "params": {"expansion_size": 64, "seed": 0}, "features": []},
    "kalman": {"name": "KalmanHead", "params": {},
               "features": [{"name": "RandomFourierFeatures",
                             "params": {"n_components": 128, "scale": 0.5, "seed": 0}}]},
}


def labelled_stream(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """n labelled records (8 features, 3 classes): values, X, y."""
    return make_stream(n, seed, unlabelled=0.0, bad=0.0)


def produce_partitioned(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> list[int]:
    """Round-robin over the partitions; returns the record count of each partition."""
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=i % partitions)
    producer.flush()
    producer.close()
    return [len(range(p, len(values), partitions)) for p in range(partitions)]


def pipeline_config(name: str, topic: str, learner: dict[str, Any], partitions: int, every_samples: int = 2000,
                    fold_every_s: float | None = None) -> dict[str, Any]:
    """A config for the scale-out runs: short session timeouts (a group re-forms in seconds), drift off,
    a snapshot every ``every_samples`` labelled samples or every second; replicas fold the others'
    statistics every ``fold_every_s`` s when given."""
    cfg: dict[str, Any] = {
        "name": name,
        "learner": learner,
        "kafka": {"topic": topic, "partitions": partitions, "max_batch": 500, "max_wait_ms": 50,
                  "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 5000},
        "snapshot": {"every_samples": every_samples, "every_seconds": 1.0, "keep": 2},
        "messages": {"n_features": 8},
        "drift": {"enabled": False},
        "status": {"interval_s": 0.2, "metrics_every_s": 5.0},
    }
    if fold_every_s:
        cfg["scale"] = {"fold_global_every_s": fold_every_s}
    return cfg


class Replica(DaemonProcess):
    """One ``ocld run CONFIG --replica NAME`` child process (started by :meth:`start`)."""

    def __init__(self, replica: str, cfg_path: Path, bootstrap: str, redis_url: str, log_dir: Path) -> None:
        super().__init__(cfg_path, bootstrap, redis_url, log_dir, replica=replica)


def covered(redis_url: str, name: str, topic: str) -> int:
    """Records covered by durable snapshots: the sum of the registry's offsets for the topic."""
    from ocld.stream.client import StateClient

    reg = StateClient(redis_url).partitions(name)
    return sum(int(e["offset"] or 0) for tp, e in reg.items() if tp.rpartition(":")[0] == topic)


def replica_states(redis_url: str, name: str) -> dict[str, Any]:
    """replica -> (latest snapshot info, learner) for every replica with a snapshot."""
    from ocld.learners.registry import learner_from_state
    from ocld.stream.client import StateClient

    client = StateClient(redis_url)
    return {r: (s.info, learner_from_state(s.parts["learner"])) for r, s in client.replica_snapshots(name).items()}
PARTITIONS = 6
N = 60_000


def _produce_flowing(bootstrap: str, topic: str, values: list[bytes], seconds: float) -> threading.Thread:
    """Produce ``values`` round-robin over the partitions, spread over ``seconds``."""
    from kafka import KafkaProducer

    def run() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        step = 1000
        t0 = time.monotonic()
        for start in range(0, len(values), step):
            for i in range(start, min(len(values), start + step)):
                producer.send(topic, value=values[i], partition=i % PARTITIONS)
            producer.flush()
            lag = t0 + seconds * (start + step) / len(values) - time.monotonic()
            if lag > 0:
                time.sleep(lag)  # on purpose: records keep flowing over ``seconds``
        producer.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-300, float(np.max(np.abs(b)))))


def _story(states: dict[str, Any], logs: Path) -> str:
    """What a failed count needs: each replica's records per partition, and every warning its runs logged."""
    lines = [f"{r}: {info['partition_records']}" for r, (info, _) in sorted(states.items())]
    for path in sorted(logs.glob("*.log")):
        lines += [f"{path.name}: {line.rstrip()[:400]}" for line in path.read_text(errors="replace").splitlines()
                  if " WARNING " in line or " ERROR " in line or "claimed" in line]
    return "\n".join(lines)


def three_replicas_scenario(broker: str, redis_url: str, name: str, tmp_path: Path) -> None:
    """Three replicas share a 6-partition topic while 60,000 labelled records flow; they are
    started, stopped (SIGTERM) and SIGKILLed on a fixed schedule. Then: every record learned
    exactly once across the surviving states, the AnalyticRidge statistics add up, the global
    model equals one learner on the whole topic to 1e-8, and the CLI shows it all. Run on one
    Redis (test_scaleout.py) and on a Redis Cluster (test_redis_cluster.py)."""
    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    values, X, y = labelled_stream(N, seed=11)
    topic = f"{name}.in"
    ensure_topics(KafkaConfig(bootstrap=broker), {topic: PARTITIONS})
    spec = LEARNERS["analytic"]
    cfg_path = write_config(tmp_path / "cfg.json", pipeline_config(name, topic, spec, PARTITIONS, every_samples=1500,
                                                                   fold_every_s=1.0))
    logs = tmp_path / "logs"
    logs.mkdir()
    r0, r1, r2 = (Replica(f"r{i}", cfg_path, broker, redis_url, logs) for i in range(3))

    producer = _produce_flowing(broker, topic, values, seconds=24.0)
    steps = [(0, r0.start), (3, r1.start), (6, r2.start), (10, r1.kill), (13, r1.start), (16, r2.term),
             (20, r0.kill), (22, r0.start), (25, r2.start), (29, r1.kill), (31, r1.start)]
    t0 = time.monotonic()
    for at, action in steps:
        time.sleep(max(0.0, t0 + at - time.monotonic()))  # on purpose: each step at its second of the scenario
        action()
    producer.join(60)
    assert not producer.is_alive()
    client = StateClient(redis_url)

    def ready_to_stop() -> bool:
        """Each replica runs its loop (a SIGTERM during start-up would just kill it) and has folded
        the others' statistics once (scale.fold_global_every_s)."""
        running = {s["replica"]: s for s in client.replicas(name)}
        return all(running.get(r.replica, {}).get("pid") == r.pid and running[r.replica].get("state") == "running"
                   and len(running[r.replica].get("folded_replicas") or []) == 2 for r in (r0, r1, r2))

    try:
        wait_until(lambda: covered(redis_url, name, topic) >= N, 150,
                   f"the registry to cover all {N} records (logs in {logs})", every=0.1)
        wait_until(ready_to_stop, 60, "every replica running and folded", every=0.2)
        replicas_status = client.replicas(name)
        codes = [r.term() for r in (r0, r1, r2)]
    finally:
        for r in (r0, r1, r2):
            r.kill()
    assert codes == [0, 0, 0], codes  # clean SIGTERM exits
    assert sorted(s["replica"] for s in replicas_status) == ["r0", "r1", "r2"]
    # scale.fold_global_every_s: replicas fold the others' statistics into their heads.
    folded = {s["replica"]: s["folded_replicas"] for s in replicas_status}
    assert all(sorted(f) == sorted({"r0", "r1", "r2"} - {r}) for r, f in folded.items()), folded

    states = replica_states(redis_url, name)
    assert sorted(states) == ["r0", "r1", "r2"]
    # Exactly once, per partition: the surviving states' record counts add up to what was produced.
    per_partition = {f"{topic}:{p}": len(range(p, N, PARTITIONS)) for p in range(PARTITIONS)}
    summed: dict[str, int] = {}
    for info, _ in states.values():
        for tp, n in info["partition_records"].items():
            summed[tp] = summed.get(tp, 0) + int(n)
    assert summed == per_partition, _story(states, logs)
    registry = client.partitions(name)
    assert {tp: e["offset"] for tp, e in registry.items()} == per_partition
    assert sum(int(info["labelled_seen"]) for info, _ in states.values()) == N
    # Every partition moved at least once (SIGKILL / SIGTERM / restarts): epochs above 1.
    assert max(e["epoch"] for e in registry.values()) >= 3

    # AnalyticRidge statistics: the replicas' (H^T H, H^T Y, counts) add up to those of all records.
    ref = build_learner(spec["name"], spec["params"], spec["features"])
    y_obj = np.empty(N, dtype=object)
    y_obj[:] = [int(v) for v in y]
    ref.learn(X, y_obj)
    ref_stats = ref.sufficient_statistics()
    heads = [learner.head if hasattr(learner, "head") else learner for _, learner in states.values()]
    gram = sum(h.sufficient_statistics()["gram"] for h in heads)
    assert _rel(gram, ref_stats["gram"]) <= 1e-10
    counts = {c: 0.0 for c in ref_stats["classes"]}
    for h in heads:
        st = h.sufficient_statistics()
        for c, n in zip(st["classes"], st["counts"]):
            counts[c] += n
    assert counts == dict(zip(ref_stats["classes"], ref_stats["counts"]))

    # The global model of all partitions equals one learner trained on the whole topic.
    merged = client.load_global_learner(name)
    head = merged.head if hasattr(merged, "head") else merged
    cols = [head.classes_.index(c) for c in ref.classes_]
    err = _rel(head.weights[:, cols], ref.weights)
    print(f"\nglobal model of 3 replicas vs one learner on all {N} records: W relative difference {err:.1e}")
    assert err <= 1e-8
    assert head.n_seen == N
    Xq = X[:500]
    assert np.max(np.abs(merged.predict_proba(Xq)[:, cols] - ref.predict_proba(Xq))) <= 1e-8

    # The CLI shows every replica and the global model.
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "status", name, "--redis", redis_url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "3 replicas" in out.stdout and all(f"r{i} " in out.stdout for i in range(3)), out.stdout
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "query", name, "--global", "--redis", redis_url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = orjson.loads(out.stdout)
    assert info["labelled_seen"] == N and info["partition_records"] == per_partition
