"""The Kafka consumer behind one small interface, with two backends (``kafka.client``).

``KafkaSource`` (stream/source.py) decides where each partition starts and checks that the log
did not go backwards; a backend only does what a Kafka client does:

- ``subscribe`` with assignment and revocation callbacks (called inside ``poll``, on this thread);
- ``poll`` a batch: partition -> :class:`Batch` (the records' values, offsets, and what a
  fingerprint needs of the first and last);
- ``seek``, ``pause`` / ``resume``, ``assignment``, the fetch ``highwater``, the log start;
- ``commit`` offsets to the group (monitoring only);
- ``reconnected``: whether a connection to the broker was made again since the last call.

``kafka-python`` (pure Python, the library the design card names) and ``confluent`` (librdkafka
through confluent-kafka: the client most Kafka users have; it hands a record over for a fraction
of kafka-python's CPU) are both implemented and run by the same exactly-once tests. Partitions are
``(topic, partition)`` tuples on this side of the interface.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol, cast

from ocld.stream.config import KafkaConfig

log = logging.getLogger("ocld.consumers")

# The confluent backend waits for records in consume calls of at most this long (see ConfluentConsumer.poll).
_SLICE_S = 0.002

TP = tuple[str, int]


def fingerprint_of(timestamp_ms: int | None, key: bytes | None, value: bytes | None) -> str:
    """A short identity of one record: its timestamp and the CRC-32 of its key and value (the same for both
    backends, so a pipeline may change its client between runs)."""
    return f"{timestamp_ms}:{zlib.crc32(key or b''):08x}:{zlib.crc32(value or b''):08x}"


class Batch(Protocol):
    """The records one poll returned for one partition, in offset order."""

    values: list[bytes | None]

    def __len__(self) -> int: ...

    @property
    def first_offset(self) -> int: ...

    @property
    def last_offset(self) -> int: ...

    def offsets(self) -> list[int]: ...

    def fingerprint(self, i: int) -> str: ...

    def drop(self, n: int = 1) -> Batch: ...  # without the first n records


class Consumer(Protocol):
    def subscribe(self, topic: str, on_assign: Callable[[list[TP]], None],
                  on_revoke: Callable[[list[TP]], None]) -> None: ...

    def poll(self, timeout_ms: int, max_records: int) -> dict[TP, Batch]: ...

    def seek(self, tp: TP, offset: int | str) -> None: ...  # an offset, "beginning" or "end"

    def pause(self, tps: list[TP]) -> None: ...

    def resume(self, tps: list[TP]) -> None: ...

    def assignment(self) -> set[TP]: ...

    def highwater(self, tp: TP) -> int | None: ...

    def log_start(self, tp: TP, timeout_ms: int) -> int | None: ...

    def commit(self, offsets: dict[TP, int]) -> None: ...

    def reconnected(self) -> bool: ...

    def close(self) -> None: ...


# -- kafka-python --------------------------------------------------------------------------------
class _KpBatch:
    __slots__ = ("records", "values")

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.values = [r.value for r in records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def first_offset(self) -> int:
        return int(self.records[0].offset)

    @property
    def last_offset(self) -> int:
        return int(self.records[-1].offset)

    def offsets(self) -> list[int]:
        return [r.offset for r in self.records]

    def fingerprint(self, i: int) -> str:
        r = self.records[i]
        return fingerprint_of(r.timestamp, r.key, r.value)

    def drop(self, n: int = 1) -> _KpBatch:
        return _KpBatch(self.records[n:])


class KafkaPythonConsumer:
    """kafka-python's KafkaConsumer (the pinned 2.2 series)."""

    def __init__(self, kafka: KafkaConfig, group_id: str, client_id: str, max_batch: int) -> None:
        from kafka import KafkaConsumer

        from ocld.stream.broker import client_kwargs, retry

        k = kafka
        frames: dict[str, Any] = {}
        if "receive_message_max_bytes" in KafkaConsumer.DEFAULT_CONFIG:
            # kafka-python >= 2.2.x refuses a network frame over this (1,000,000 by default), while a fetch
            # answer may hold up to fetch_max_bytes: the fetch then failed and was sent again and again.
            frames["receive_message_max_bytes"] = k.fetch_max_bytes + 1024 * 1024
        self.consumer = retry("connecting to the broker", attempts=3, kafka=k, fn=lambda: KafkaConsumer(
            **client_kwargs(k), group_id=group_id, client_id=client_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=max_batch, fetch_max_wait_ms=max(k.max_wait_ms, 1),
            session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms, fetch_max_bytes=k.fetch_max_bytes,
            max_partition_fetch_bytes=min(k.fetch_max_bytes, 10 * 1024 * 1024), **frames,
        ))
        self._links: frozenset[Any] = frozenset()
        self._connected_once = False  # a link made after this is a connection made again
        from kafka.record import util as record_util

        if getattr(record_util, "crc32c_c", True) is None:
            log.info("kafka-python checks record CRCs in pure Python (about half of the consumer's CPU time on "
                     "small records); `pip install crc32c` makes that check nearly free")

    @staticmethod
    def _tp(tp: TP) -> Any:
        from kafka import TopicPartition

        return TopicPartition(tp[0], tp[1])

    def subscribe(self, topic: str, on_assign: Callable[[list[TP]], None],
                  on_revoke: Callable[[list[TP]], None]) -> None:
        from kafka import ConsumerRebalanceListener

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                on_revoke([(tp.topic, tp.partition) for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                on_assign([(tp.topic, tp.partition) for tp in assigned])

        self.consumer.subscribe([topic], listener=_Listener())

    def poll(self, timeout_ms: int, max_records: int) -> dict[TP, Batch]:
        records = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return {(tp.topic, tp.partition): _KpBatch(recs) for tp, recs in records.items() if recs}

    def seek(self, tp: TP, offset: int | str) -> None:
        ktp = self._tp(tp)
        if offset == "beginning":
            self.consumer.seek_to_beginning(ktp)
        elif offset == "end":
            self.consumer.seek_to_end(ktp)
        else:
            self.consumer.seek(ktp, int(offset))

    def pause(self, tps: list[TP]) -> None:
        if tps:
            self.consumer.pause(*[self._tp(tp) for tp in tps])

    def resume(self, tps: list[TP]) -> None:
        if tps:
            self.consumer.resume(*[self._tp(tp) for tp in tps])

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def highwater(self, tp: TP) -> int | None:
        return self.consumer.highwater(self._tp(tp))

    def log_start(self, tp: TP, timeout_ms: int) -> int | None:
        # The public beginning_offsets() can block for ever on a partition that does not exist yet.
        ktp = self._tp(tp)
        try:
            return int(self.consumer._fetcher.beginning_offsets([ktp], timeout_ms)[ktp])
        except Exception:  # noqa: BLE001 (cannot tell)
            return None

    def commit(self, offsets: dict[TP, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        self.consumer.commit({self._tp(tp): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})

    def reconnected(self) -> bool:
        # kafka-python keeps its connections private; the pinned 2.2 series has _client._conns and
        # BrokerConnection.last_attempt: a new (node, connect time) among the connected links.
        try:
            conns = self.consumer._client._conns
            links = frozenset((node, c.last_attempt) for node, c in list(conns.items()) if c.connected())
        except Exception:  # noqa: BLE001 (another client version: positions are still checked at every claim)
            return False
        new = bool(links - self._links) and self._connected_once
        if links:
            self._connected_once = True
        self._links = links
        return new

    def close(self) -> None:
        self.consumer.close(autocommit=False)


# -- confluent-kafka (librdkafka) ----------------------------------------------------------------
class _CkBatch:
    __slots__ = ("msgs", "values")

    def __init__(self, msgs: list[Any], values: list[bytes | None] | None = None) -> None:
        self.msgs = msgs
        self.values = values if values is not None else [m.value() for m in msgs]

    def __len__(self) -> int:
        return len(self.msgs)

    @property
    def first_offset(self) -> int:
        return int(self.msgs[0].offset())

    @property
    def last_offset(self) -> int:
        return int(self.msgs[-1].offset())

    def offsets(self) -> list[int]:
        return [m.offset() for m in self.msgs]

    def fingerprint(self, i: int) -> str:
        m = self.msgs[i]
        return fingerprint_of(m.timestamp()[1], m.key(), m.value())

    def drop(self, n: int = 1) -> _CkBatch:
        return _CkBatch(self.msgs[n:], self.values[n:])


class ConfluentConsumer:
    """librdkafka's consumer through confluent-kafka."""

    def __init__(self, kafka: KafkaConfig, group_id: str, client_id: str, max_batch: int) -> None:
        from confluent_kafka import Consumer as CkConsumer

        k = kafka
        conf: dict[str, Any] = {
            "bootstrap.servers": k.bootstrap, "group.id": group_id, "client.id": client_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": k.session_timeout_ms, "heartbeat.interval.ms": k.heartbeat_interval_ms,
            "max.poll.interval.ms": k.max_poll_interval_ms, "fetch.wait.max.ms": max(k.max_wait_ms, 1),
            "fetch.max.bytes": k.fetch_max_bytes,
            "max.partition.fetch.bytes": min(k.fetch_max_bytes, 10 * 1024 * 1024),
            "enable.partition.eof": False, "error_cb": self._error, "logger": logging.getLogger("kafka.librdkafka"),
            "partition.assignment.strategy": "range",
        }
        conf.update(confluent_security(k))
        self.kafka = k
        self.consumer = CkConsumer(conf)
        self._breaks = 0  # transport errors seen (the broker went away: its next link is a new one)
        self._assigned: set[TP] = set()
        self._on_assign: Callable[[list[TP]], None] | None = None
        self._on_revoke: Callable[[list[TP]], None] | None = None
        self._starts: dict[TP, int] = {}  # offsets decided in on_assign, applied by assign()
        self._assigning = False
        self.fatal: Exception | None = None

    def _error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            self._breaks += 1
        elif err.fatal() or err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            from ocld.stream.broker import kafka_failure

            self.fatal = kafka_failure(RuntimeError(f"SASL/SSL authentication failed: {err.name()}: {err.str()}"),
                                       self.kafka)

    @staticmethod
    def _tp(tp: TP, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition

        return TopicPartition(tp[0], tp[1]) if offset is None else TopicPartition(tp[0], tp[1], offset)

    def subscribe(self, topic: str, on_assign: Callable[[list[TP]], None],
                  on_revoke: Callable[[list[TP]], None]) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            from confluent_kafka import OFFSET_BEGINNING

            tps = [(p.topic, p.partition) for p in partitions]
            self._assigned = set(tps)
            self._starts, self._assigning = {}, True
            try:
                on_assign(tps)  # its seeks land in self._starts: the assignment starts there
            finally:
                self._assigning = False
            consumer.assign([self._tp(tp, self._starts.get(tp, OFFSET_BEGINNING)) for tp in tps])
            self._starts = {}

        def revoked(consumer: Any, partitions: list[Any]) -> None:
            tps = [(p.topic, p.partition) for p in partitions]
            on_revoke(tps)
            self._assigned -= set(tps)
            consumer.unassign()

        self.consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def poll(self, timeout_ms: int, max_records: int) -> dict[TP, Batch]:
        """Up to ``max_records`` records, returned as soon as any are there (within ``timeout_ms``).

        ``consume(n, timeout)`` alone waits out the whole timeout unless ``n`` records are queued,
        which held every record of a slow stream for ``max_wait_ms``; kafka-python's poll returns as
        soon as records are there. So the wait is cut into short ``consume`` calls. Each poll's
        records come from one ``consume`` call: librdkafka serves a rebalance (the daemon's
        on_assign / on_revoke, which snapshot, commit and seek) at the start of a call, before the
        records it returns, so a record never crosses a rebalance. (Taking a first record with
        ``poll`` and the rest with a second call let a revocation fall between them: a record of a
        partition already handed over was learned anyway.)"""
        consumer = self.consumer
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        while True:
            left = deadline - time.monotonic()
            msgs = consumer.consume(num_messages=max_records, timeout=min(max(left, 0.0), _SLICE_S))
            if msgs or left <= _SLICE_S:
                break
        if self.fatal is not None:
            raise self.fatal
        if not msgs:
            return {}
        by_tp: dict[TP, list[Any]] = defaultdict(list)
        for m in msgs:
            if m.error() is not None:
                self._message_error(m)
                continue
            by_tp[cast(TP, (m.topic(), m.partition()))].append(m)  # both set on a message without an error
        return {tp: _CkBatch(ms) for tp, ms in by_tp.items()}

    def _message_error(self, m: Any) -> None:
        from confluent_kafka import KafkaError, KafkaException

        err = m.error()
        if err.code() in (KafkaError._PARTITION_EOF,):
            return
        if err.fatal() or not err.retriable():
            raise KafkaException(err)
        log.warning("consumer: %s", err.str())

    def seek(self, tp: TP, offset: int | str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

        target = OFFSET_BEGINNING if offset == "beginning" else OFFSET_END if offset == "end" else int(offset)
        if self._assigning:
            self._starts[tp] = target
            return
        try:
            self.consumer.seek(self._tp(tp, target))
        except Exception:  # noqa: BLE001 (not fetching yet: assign again from there)
            current = [self._tp(p, target if p == tp else self._position(p)) for p in sorted(self._assigned)]
            self.consumer.assign(current)

    def _position(self, tp: TP) -> int:
        from confluent_kafka import OFFSET_BEGINNING

        pos = self.consumer.position([self._tp(tp)])[0].offset
        return pos if pos >= 0 else OFFSET_BEGINNING

    def pause(self, tps: list[TP]) -> None:
        if tps:
            self.consumer.pause([self._tp(tp) for tp in tps])

    def resume(self, tps: list[TP]) -> None:
        if tps:
            self.consumer.resume([self._tp(tp) for tp in tps])

    def assignment(self) -> set[TP]:
        return set(self._assigned)

    def highwater(self, tp: TP) -> int | None:
        try:
            _low, high = self.consumer.get_watermark_offsets(self._tp(tp), cached=True)
        except Exception:  # noqa: BLE001 (unknown yet)
            return None
        return int(high) if high is not None and high >= 0 else None

    def log_start(self, tp: TP, timeout_ms: int) -> int | None:
        try:
            low, _high = self.consumer.get_watermark_offsets(self._tp(tp), timeout=timeout_ms / 1000.0, cached=False)
        except Exception:  # noqa: BLE001 (cannot tell)
            return None
        return int(low) if low is not None and low >= 0 else None

    def commit(self, offsets: dict[TP, int]) -> None:
        self.consumer.commit(offsets=[self._tp(tp, o) for tp, o in offsets.items()], asynchronous=False)

    def reconnected(self) -> bool:
        breaks, self._breaks = self._breaks, 0
        return breaks > 0

    def close(self) -> None:
        self.consumer.close()


def confluent_security(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka's names for the security settings (the password taken out of its SecretStr only here)."""
    conf: dict[str, Any] = {}
    if kafka.security_protocol != "PLAINTEXT":
        conf["security.protocol"] = kafka.security_protocol.lower()
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username or ""
        conf["sasl.password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    for name, key in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                      ("ssl_keyfile", "ssl.key.location")):
        value = getattr(kafka, name)
        if value:
            conf[key] = value
    return conf


def make_consumer(kafka: KafkaConfig, group_id: str, client_id: str, max_batch: int) -> Consumer:
    if kafka.client == "confluent":
        return ConfluentConsumer(kafka, group_id, client_id, max_batch)
    return KafkaPythonConsumer(kafka, group_id, client_id, max_batch)
