"""Outputs to Kafka: the dead-letter topic and the optional predictions topic.

A dead-letter record keeps the original bytes as its value; the reason and the source
topic/partition/offset travel in headers (``ocld.reason``, ``ocld.topic``,
``ocld.partition``, ``ocld.offset``), as Kafka Connect does. Sends are asynchronous and
flushed before every snapshot, so outputs are durable before offsets move (after a crash
they may be sent again: at-least-once, while learning is exactly-once).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from stream.broker import client_kwargs
from stream.config import KafkaConfig

log = logging.getLogger("ocld.sink")


class Sink:
    def __init__(self, kafka: KafkaConfig, dlq_topic: str, predictions_topic: str | None = None,
                 max_buffer_bytes: int = 32 * 1024 * 1024) -> None:
        from kafka import KafkaProducer

        self.dlq_topic = dlq_topic
        self.predictions_topic = predictions_topic
        # buffer_memory caps the producer queue: when full, send() blocks (backpressure)
        # instead of growing without bound.
        self.producer = KafkaProducer(**client_kwargs(kafka), linger_ms=20,
                                      max_block_ms=60_000, client_id="ocld-sink")
        self.max_buffer_bytes = max_buffer_bytes
        self.dlq_count = 0
        self.dlq_by_reason: dict[str, int] = {}

    def dead_letter(self, value: bytes | None, topic: str, partition: int, offset: int, reason: str) -> None:
        headers = [("ocld.reason", reason.encode()), ("ocld.topic", topic.encode()),
                   ("ocld.partition", str(partition).encode()), ("ocld.offset", str(offset).encode())]
        self.producer.send(self.dlq_topic, value=value or b"", headers=headers)
        self.dlq_count += 1
        key = reason.split(":", 1)[0].split(" got ")[0][:60]
        self.dlq_by_reason[key] = self.dlq_by_reason.get(key, 0) + 1

    def prediction(self, topic: str, partition: int, offset: int, rid: Any, label: Any, proba: list[float],
                   classes: list[Any]) -> None:
        if self.predictions_topic is None:
            return
        body = {"topic": topic, "partition": partition, "offset": offset, "id": rid, "y_pred": label,
                "proba": dict(zip(map(str, classes), proba))}
        self.producer.send(self.predictions_topic, value=orjson.dumps(body))

    def flush(self, timeout: float | None = 30.0) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        try:
            self.producer.flush(10)
        finally:
            self.producer.close(5)
