"""ocld on a real Redis Cluster (3 masters, a replica each, on loopback): the pipeline, crash
equivalence (the harness of test_crash.py), scale-out (the scenario of test_scaleout.py), and a
master failover in the middle of a run.

Every key of a pipeline carries the pipeline in braces (one hash slot), so the Lua scripts that
claim partitions and switch ``latest`` run on a cluster as on one Redis. A failover can lose the
last writes (replication is asynchronous): the daemon then finds its lease, claims or ``latest``
gone or older than its own and re-establishes them from memory, so nothing is lost or learned
twice either way (checked on the learner's statistics against a one-pass reference).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ocld.learners.registry import build_learner
from ocld.stream.client import StateClient
from ocld.stream.store import Keys
from tests.cluster import RedisClusterProcs, wait_for_failover
from tests.crash import (
    final_state,
    make_stream,
    pipeline_config,
    reference_run,
    run_with_kills,
    shipped_drift,
    state_max_diff,
    weights_max_diff,
)
from tests.helpers import elec_records, encode_rows, produce, wait_until, write_config
from tests.scaleout import three_replicas_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIDGE = {"name": "AnalyticRidge", "params": {"expansion_size": 32, "seed": 0, "adapt_discount": None}, "features": []}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    with RedisClusterProcs(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def _exact(url: str, name: str, X: np.ndarray, y: list[int]) -> None:
    """The durable state learned exactly the records (X, y): statistics equal a one-pass reference."""
    got = StateClient(url).load_learner(name).sufficient_statistics()  # type: ignore[attr-defined]
    ref = build_learner(RIDGE["name"], RIDGE["params"], [])
    ref.learn(X, np.array(y, dtype=object))
    want = ref.sufficient_statistics()  # type: ignore[attr-defined]
    assert dict(zip(got["classes"], got["counts"].tolist())) == dict(zip(want["classes"], want["counts"].tolist()))
    order = [got["classes"].index(c) for c in want["classes"]]
    scale = float(np.abs(want["gram"]).max())
    assert float(np.abs(got["gram"] - want["gram"]).max()) / scale <= 1e-9
    assert float(np.abs(got["cross"][:, order] - want["cross"]).max()) / scale <= 1e-9


def test_the_pipeline_runs_on_a_cluster(cluster: RedisClusterProcs, make_config: Any, broker: str) -> None:
    from ocld.stream.daemon import Daemon

    cfg = make_config(redis={"url": cluster.url}, learner=RIDGE, drift={"enabled": False},
                      kafka={"partitions": 2}, snapshot={"every_samples": 500})
    X, y = elec_records(3000)
    produce(broker, cfg.kafka.topic, encode_rows(X, y), partitions=2)
    summary = Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 3000
    client = StateClient(cluster.url)
    assert client.status(cfg.name)["state"] == "stopped" and cfg.name in client.pipelines()
    info = client.snapshot_info(cfg.name)
    assert info["latest"]["offsets"] == {cfg.kafka.topic: {"0": 1500, "1": 1500}} and len(info["versions"]) >= 2
    assert {tp: e["offset"] for tp, e in client.partitions(cfg.name).items()} == {
        f"{cfg.kafka.topic}:0": 1500, f"{cfg.kafka.topic}:1": 1500}
    _exact(cluster.url, cfg.name, X, y)
    # a second run resumes from the cluster's snapshot: nothing learned twice
    X2, y2 = elec_records(1000, start=3000)
    produce(broker, cfg.kafka.topic, encode_rows(X2, y2), partitions=2)
    assert Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)["labelled_seen"] == 4000
    _exact(cluster.url, cfg.name, np.vstack([X, X2]), y + y2)


def test_sigkills_on_a_cluster_end_in_the_uninterrupted_state(cluster: RedisClusterProcs, broker: str, name: str,
                                                             tmp_path: Any) -> None:
    """test_crash.py's AnalyticRidge case (drift adaptation on, kills from outside and inside the
    snapshot protocol) with the state on the cluster: weights to 1e-9, labelled_seen exact."""
    spec = {**RIDGE, "params": {**RIDGE["params"], "adapt_discount": 0.01}}
    values, X, y = make_stream(8_000, 5)
    drift = shipped_drift("analytic")
    reference, events = reference_run(spec, X, y, drift)
    assert [a for _, _, a in events].count("adapt") >= 1, events
    topic = f"{name}.in"
    produce(broker, topic, values)
    cfg_path = write_config(tmp_path / "cfg.yaml", pipeline_config(name, topic, spec, every_samples=800, drift=drift))
    runs = run_with_kills(cfg_path, name, broker, cluster.url, len(y), 4, 5, tmp_path / "logs", run_timeout=90)
    assert sum(r["rc"] == -9 for r in runs) >= 3, [r["mode"] for r in runs]
    state, info = final_state(cluster.url, name)
    assert info["labelled_seen"] == len(y)
    assert StateClient(cluster.url).status(name)["drift_count_error"] == len(events)
    assert weights_max_diff(state, reference) <= 1e-9
    assert state_max_diff(state, reference) <= 1e-9


def test_three_replicas_on_a_cluster_learn_every_record_once(cluster: RedisClusterProcs, broker: str, name: str,
                                                            tmp_path: Any) -> None:
    three_replicas_scenario(broker, cluster.url, name, tmp_path)


def test_a_master_failover_mid_run_loses_nothing_and_learns_nothing_twice(cluster: RedisClusterProcs,
                                                                          make_config: Any, broker: str) -> None:
    from ocld.stream.daemon import Daemon

    cfg = make_config(redis={"url": cluster.url, "lease_ttl_s": 5}, learner=RIDGE, drift={"enabled": False},
                      snapshot={"every_samples": 500, "every_seconds": 1})
    X, y = elec_records(6000)
    values = encode_rows(X, y)
    produce(broker, cfg.kafka.topic, values[:2000])
    daemon = Daemon(cfg)
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(daemon.run(max_seconds=240, install_signals=False)))
    thread.start()
    try:
        wait_until(lambda: daemon.core.labelled_seen >= 2000 and daemon.model_version, 60, "2000 learned")
        master = cluster.master_of(Keys(cfg.name).latest)
        master.kill()  # SIGKILL: its replica takes over, maybe without the last writes
        produce(broker, cfg.kafka.topic, values[2000:4000])
        wait_for_failover(cluster, Keys(cfg.name).latest, master.port)
        produce(broker, cfg.kafka.topic, values[4000:])
        client = StateClient(cluster.url_starting_at(master))  # the first seed is the dead master
        wait_until(lambda: client.status(cfg.name).get("labelled_seen") == 6000
                   and client.status(cfg.name).get("state") == "running", 90,
                   "all 6000 learned and a durable snapshot after the failover")
    finally:
        daemon.stop()
        thread.join(120)
        master.start()  # back as a replica of the new master
    assert done["labelled_seen"] == 6000
    _exact(cluster.url, cfg.name, X, y)
    cluster.wait_ok()
