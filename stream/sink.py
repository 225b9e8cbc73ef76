"""Outputs to Kafka: the dead-letter topic and the optional predictions topic.

A dead-letter record keeps the original bytes as its value; the reason and the source
topic/partition/offset travel in headers (``ocld.reason``, ``ocld.topic``,
``ocld.partition``, ``ocld.offset``), as Kafka Connect does. Sends are asynchronous and
flushed before every snapshot, so outputs are durable before offsets move (after a crash
they may be sent again: at-least-once, while learning is exactly-once).

Bounded memory: kafka-python 3 has no ``buffer_memory``, so the sink caps the bytes of
queued, unacknowledged outputs itself at ``max_buffer_bytes``. When the cap is reached it
flushes (backpressure on the daemon loop, at most ``max_block_ms``); if that does not make
room (broker gone), the record is dropped and counted in ``dlq_dropped`` /
``predictions_dropped`` (status and /metrics), never raised into the loop, and later
records are dropped at once until the queue drains (no second long block). A failed ``flush`` raises
``kafka.errors.KafkaError``: the daemon then postpones the snapshot, so offsets never move past unflushed outputs.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import orjson

from ocld.stream.broker import client_kwargs, retry
from ocld.stream.config import KafkaConfig

log = logging.getLogger("ocld.sink")


class Sink:
    def __init__(self, kafka: KafkaConfig, dlq_topic: str, predictions_topic: str | None = None,
                 max_buffer_bytes: int = 32 * 1024 * 1024, max_block_ms: int = 60_000,
                 counts: dict[str, Any] | None = None) -> None:
        """``counts``: the totals a restored snapshot holds (``dlq_count``, ``dlq_by_reason``,
        ``dlq_dropped``, ``predictions_dropped``); this sink adds to them."""
        from kafka import KafkaProducer

        self.dlq_topic = dlq_topic
        self.predictions_topic = predictions_topic
        self.producer = retry("connecting the output producer to the broker", attempts=3, kafka=kafka,
                              fn=lambda: KafkaProducer(**client_kwargs(kafka), linger_ms=20, max_block_ms=max_block_ms,
                                                       client_id="ocld-sink"))
        self.max_buffer_bytes = max_buffer_bytes
        self.max_block_ms = max_block_ms
        self.queued_bytes = 0  # outputs sent to the producer and not yet acknowledged
        self._lock = threading.Lock()
        self._full_since: float | None = None
        self.dlq_count = self.dlq_dropped = self.predictions_dropped = 0
        self.dlq_by_reason: dict[str, int] = {}
        self.restore_counts(counts or {})

    def dead_letter(self, value: bytes | None, topic: str, partition: int, offset: int, reason: str) -> None:
        headers = [("ocld.reason", reason.encode()), ("ocld.topic", topic.encode()),
                   ("ocld.partition", str(partition).encode()), ("ocld.offset", str(offset).encode())]
        self.dlq_count += 1
        key = reason_key(reason)
        self.dlq_by_reason[key] = self.dlq_by_reason.get(key, 0) + 1
        if not self._send(self.dlq_topic, value or b"", headers):
            self.dlq_dropped += 1

    def prediction(self, topic: str, partition: int, offset: int, rid: Any, label: Any, proba: list[float],
                   classes: list[Any]) -> None:
        if self.predictions_topic is None:
            return
        body = {"topic": topic, "partition": partition, "offset": offset, "id": rid, "y_pred": label,
                "proba": dict(zip(map(str, classes), proba))}
        if not self._send(self.predictions_topic, orjson.dumps(body), None):
            self.predictions_dropped += 1

    def _send(self, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> bool:
        from kafka.errors import KafkaError

        size = len(value) + 64
        if self.queued_bytes + size > self.max_buffer_bytes and not self._make_room(size):
            self._dropped(topic, "the output queue is full and the broker does not take records")
            return False
        try:
            future = self.producer.send(topic, value=value, headers=headers)
        except (KafkaError, AssertionError, ValueError) as exc:  # metadata timeout, record too large
            self._dropped(topic, f"{type(exc).__name__}: {exc}")
            return False
        with self._lock:
            self.queued_bytes += size
        future.add_both(self._acked, size)
        return True

    def _acked(self, size: int, _result: object = None) -> None:
        with self._lock:
            self.queued_bytes -= size

    def _make_room(self, size: int) -> bool:
        from kafka.errors import KafkaError

        now = time.monotonic()
        if self._full_since is not None and now - self._full_since < 5.0:
            return False  # a flush just failed: drop at once instead of blocking again
        try:
            self.producer.flush(self.max_block_ms / 1000)
        except KafkaError:
            pass
        if self.queued_bytes + size > self.max_buffer_bytes:
            self._full_since = now
            return False
        self._full_since = None
        return True

    def _dropped(self, topic: str, why: str) -> None:
        if not (self.dlq_dropped + self.predictions_dropped) % 1000:
            log.warning("dropped an output record for %s (%s); dropped records are counted in the status", topic, why)

    def restore_counts(self, counts: dict[str, Any]) -> None:
        """Take the totals of a reloaded snapshot (what was dead-lettered since is sent again: at-least-once)."""
        self.dlq_count = int(counts.get("dlq_count") or 0)
        self.dlq_by_reason = {str(k): int(v) for k, v in (counts.get("dlq_by_reason") or {}).items()}
        self.dlq_dropped = int(counts.get("dlq_dropped") or 0)
        self.predictions_dropped = int(counts.get("predictions_dropped") or 0)

    def counts(self) -> dict[str, Any]:
        """The running totals, as a snapshot stores them."""
        return {"dlq_count": self.dlq_count, "dlq_by_reason": dict(self.dlq_by_reason),
                "dlq_dropped": self.dlq_dropped, "predictions_dropped": self.predictions_dropped}

    def flush(self, timeout: float | None = 30.0) -> None:
        self.producer.flush(timeout)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (for up to ``timeout_s``), then stop the producer and its network
        thread. Never raises: with the broker gone, the records still queued (dead letters,
        predictions) are reported as lost; the learning state does not depend on them."""
        from kafka.errors import KafkaError

        try:
            self.producer.flush(timeout_s)
        except KafkaError as exc:  # KafkaTimeoutError: the broker did not take them in time
            log.warning("closing the output producer: %s; the dead letters and predictions still queued "
                        "(%d bytes) are not delivered", type(exc).__name__, self.queued_bytes)
            # kafka-python's close() flushes first and would raise the same way, leaving its network
            # thread retrying forever: stop the thread, which drops the queued batches, then close.
            sender = getattr(self.producer, "_sender", None)
            if sender is not None and hasattr(sender, "force_close"):
                sender.force_close()
                sender.join(timeout_s)
        try:
            self.producer.close(0)
        except KafkaError as exc:
            log.warning("closing the output producer: %s", exc)


def reason_key(reason: str) -> str:
    """A short, low-cardinality key for a rejection reason (status ``dlq_by_reason``, metric label)."""
    key = _QUOTED.sub("?", reason.split(": ", 1)[0])
    return _NUMBER.sub("N", key)[:60]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")
