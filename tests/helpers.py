"""Small helpers for tests: wait for a condition, produce raw records, read a topic to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s
    naming ``what``. The one way tests wait: never a bare sleep, never "nothing happened after a
    fixed sleep". An exception in the predicate counts as not yet (servers starting, keys absent)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 (not ready yet)
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(every)


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> None:
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=i % partitions)
    producer.flush()
    producer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of every partition, read until the high watermark (not end_offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for recs in batch.values():
                out.extend(recs)
            hws = [consumer.highwater(tp) for tp in tps]
            if all(hw is not None and consumer.position(tp) >= hw for tp, hw in zip(tps, hws)):
                break
            if not batch and all(hw is None for hw in hws) and time.monotonic() > deadline - timeout + 3:
                break  # nothing was ever written
        return out
    finally:
        consumer.close()


def elec_records(n: int, start: int = 0) -> tuple[np.ndarray, list[int]]:
    from ocld.stream.files import read_table
    from tests.conftest import ROOT

    table = read_table(ROOT / "data" / "elec.csv")
    return table.X[start:start + n], table.y[start:start + n]


def encode_rows(X: np.ndarray, y: list[Any]) -> list[bytes]:
    import orjson

    return [orjson.dumps({"x": X[i].tolist(), "y": y[i]}) for i in range(len(y))]


def produce_librdkafka(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1,
                       compression: str = "none", linger_ms: int = 200, batch_records: int = 10_000) -> dict[str, Any]:
    """Produce ``values`` round-robin over ``partitions`` with confluent-kafka (librdkafka), the
    client most Kafka users have, compressing each batch with ``compression`` (none, gzip,
    snappy, lz4, zstd). ``linger_ms`` lets a batch fill with up to ``batch_records`` records, as a
    busy producer's batches do.

    Returns what librdkafka counted: ``records`` delivered, ``batches`` sent (from its
    statistics), and ``per_partition`` record counts (the partitions' end offsets on a new topic)."""
    import orjson
    from confluent_kafka import Producer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    windows: list[dict[str, Any]] = []  # librdkafka's statistics: batch histograms per interval
    delivered: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.partition()] = delivered.get(msg.partition(), 0) + 1

    producer = Producer({
        "bootstrap.servers": bootstrap, "compression.type": compression, "linger.ms": linger_ms,
        "batch.size": 1_000_000, "batch.num.messages": batch_records, "statistics.interval.ms": 100,
        "stats_cb": lambda raw: windows.append(orjson.loads(raw)), "log.connection.close": False,
    })
    try:
        for i, v in enumerate(values):
            while True:
                try:
                    producer.produce(topic, value=v, partition=i % partitions, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka send, then retry this record
                    producer.poll(0.05)
        remaining = producer.flush(30)
        assert remaining == 0 and not errors, f"{remaining} records undelivered, errors {errors[:3]}"

        def batched() -> int:
            producer.poll(0.05)  # serves stats_cb
            return sum(w.get("topics", {}).get(topic, {}).get("batchcnt", {}).get("sum", 0) for w in windows)

        wait_until(lambda: batched() >= len(values), 10, "librdkafka's statistics to count every record")
    finally:
        producer.close()
    batches = sum(w.get("topics", {}).get(topic, {}).get("batchcnt", {}).get("cnt", 0) for w in windows)
    return {"records": sum(delivered.values()), "batches": batches,
            "per_partition": {p: delivered.get(p, 0) for p in range(partitions)}}
