"""Both consumer backends under the same exactly-once checks. The whole suite runs the default
(``kafka.client: confluent``, librdkafka); here the other one, kafka-python, runs the adversarial
scenarios that exercise the consumer (rebalances after a stalled daemon, a broker that restarts empty
between runs and while running, Redis losing its data, dead-letter counts, a killed learner process),
each checked on the learner's statistics against a one-pass reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import scenarios
from tests.integration.test_adversarial import _exactly_once

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def kafka_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenarios, "CLIENT", "kafka-python")


@pytest.mark.parametrize("case", [
    "garbage-manifests", "redis-flushall", "dlq-counts-across-restarts", "broker-restarted-between-runs",
    pytest.param("broker-restarted-mid-run", marks=pytest.mark.slow),
    pytest.param("stalled-daemon-replaced", marks=pytest.mark.slow),
    pytest.param("learner-child-killed", marks=pytest.mark.slow),
])
def test_scenario_with_the_kafka_python_consumer(case: str, tmp_path: Path) -> None:
    res: Any = scenarios.SCENARIOS[case](tmp_path)
    _exactly_once(res)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_backlog_in_large_batches_is_read_without_refused_frames(client: str, make_config: Any, broker: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A fetch answer holds up to ``max_partition_fetch_bytes`` (10 MB) of one partition's backlog.
    kafka-python 2.2.21 refuses any network frame over its ``receive_message_max_bytes`` (1,000,000 by
    default): each such fetch failed with ``Invalid frame length``, the connection was dropped and the
    fetch sent again (a bare consumer with these settings never got past it)."""
    import logging

    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.daemon import Daemon
    from tests.helpers import elec_records, encode_rows

    X, y = elec_records(40_000)
    values = encode_rows(X, y)
    cfg = make_config(kafka={"client": client, "max_batch": 5000}, learner={"name": "AnalyticRidge",
                      "params": {"expansion_size": 16, "seed": 0}, "features": []},
                      drift={"enabled": False}, snapshot={"every_samples": 20_000})
    ensure_topics(cfg.kafka, {cfg.kafka.topic: 1})
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, batch_size=512 * 1024)  # batches of 512 KB
    for v in values:
        producer.send(cfg.kafka.topic, value=v, partition=0)
    producer.flush()
    producer.close()
    caplog.set_level(logging.ERROR, logger="kafka")
    summary = Daemon(cfg).run(until_idle_s=1.0, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 40_000
    assert not [r for r in caplog.records if "Invalid frame length" in r.getMessage()]
