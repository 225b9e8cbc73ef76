"""The scale-out harness: labelled records on a topic with several partitions, ``ocld run --replica``
child processes, and what the registry and the replicas' snapshots say afterwards.

Used by ``tests/integration/test_scaleout.py`` and ``test_group_commit.py``, and by
``benchmarks/scaleout.py``. Test support only: it never imports ``benchmarks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.crash import make_stream
from tests.helpers import DaemonProcess

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
