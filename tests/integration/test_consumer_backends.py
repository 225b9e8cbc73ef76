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
