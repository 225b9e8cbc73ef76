"""Kafka input: a consumer-group member that polls micro-batches and owns the offsets.

The next offset of every owned partition comes from the snapshot, not from the group's
committed offsets: on every assignment the daemon claims the partitions in the shared
registry (``claim``), which returns the offset the last durable snapshot of any replica
covers; the consumer seeks there (or to this replica's own snapshot offset for a partition
the registry has never seen, or to the beginning/end). A partition whose claim fails
(Redis unreachable) stays paused and is claimed again by ``retry_claims``; one that the
daemon found taken over by another replica (``fence``) stays paused until Kafka assigns it
again. Offsets are committed
to the group only after a snapshot switch, for monitoring tools. Lag is measured from
the fetch high watermark (tansu misreports end_offsets; see stream.broker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ocld.stream.broker import client_kwargs, retry
from ocld.stream.config import Config

log = logging.getLogger("ocld.source")


@dataclass
class Polled:
    """One poll: the record values in order, and where each came from (built only when asked)."""

    values: list[bytes | None]
    parts: list[tuple[str, int, list[Any]]]  # (topic, partition, ConsumerRecords) in the order of ``values``
    next_offsets: dict[tuple[str, int], int]
    _origin: list[tuple[str, int, int]] | None = field(default=None, repr=False)

    @property
    def origin(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) per value. Built on first use (dead letters, predictions),
        so the common path creates no per-record tuples."""
        if self._origin is None:
            self._origin = [(t, p, r.offset) for t, p, recs in self.parts for r in recs]
        return self._origin


class KafkaSource:
    def __init__(self, cfg: Config, offsets: dict[str, dict[int, int]],
                 on_revoke: Callable[[list[Any]], None] | None = None,
                 on_assign: Callable[[list[Any]], None] | None = None,
                 claim: Callable[[list[tuple[str, int]]], dict[tuple[str, int], int | None]] | None = None) -> None:
        from kafka import KafkaConsumer

        self.cfg = cfg
        self.topic = cfg.kafka.topic
        self.offsets = {(t, int(p)): int(o) for t, ps in offsets.items() for p, o in ps.items()}
        self.on_revoke = on_revoke
        self.on_assign = on_assign
        self.claim = claim
        self.unclaimed: set[Any] = set()  # assigned, claim failed: paused, retried
        self.fenced: set[Any] = set()  # assigned, but another replica holds the claim: paused until reassigned
        k = cfg.kafka
        self.consumer = retry("connecting to the broker", lambda: KafkaConsumer(
            **client_kwargs(k), group_id=cfg.group_id, client_id=f"ocld-{cfg.name}", enable_auto_commit=False,
            auto_offset_reset=k.start_from, max_poll_records=k.max_batch, fetch_max_wait_ms=max(k.max_wait_ms, 1),
            session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms, fetch_max_bytes=k.fetch_max_bytes,
            max_partition_fetch_bytes=min(k.fetch_max_bytes, 10 * 1024 * 1024),
        ))
        from kafka import ConsumerRebalanceListener

        source = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[override]
                if revoked and source.on_revoke is not None:
                    source.on_revoke(list(revoked))
                source.unclaimed -= set(revoked)
                source.fenced -= set(revoked)

            def on_partitions_assigned(self, assigned):  # type: ignore[override]
                source._seek(list(assigned))
                if source.on_assign is not None:
                    source.on_assign(list(assigned))

        self.consumer.subscribe([self.topic], listener=_Listener())
        from kafka.record import util as record_util

        if getattr(record_util, "crc32c_c", True) is None:
            log.info("kafka-python checks record CRCs in pure Python (about half of the consumer's CPU time on "
                     "small records); `pip install crc32c` makes that check nearly free")

    def _seek(self, assigned: list[Any]) -> None:
        registry: dict[tuple[str, int], int | None] = {}
        self.fenced -= set(assigned)
        if self.claim is not None and assigned:
            try:
                registry = self.claim([(tp.topic, tp.partition) for tp in assigned])
            except Exception as exc:  # Redis unreachable: do not consume what we could not claim
                log.warning("could not claim partitions %s (%s: %s); they stay paused and the claim is retried",
                            sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned), type(exc).__name__,
                            str(exc).splitlines()[0][:200] if str(exc) else "")
                self.consumer.pause(*assigned)
                self.unclaimed |= set(assigned)
                return
        for tp in assigned:
            key = (tp.topic, tp.partition)
            stored = registry.get(key)
            self._seek_one(tp, stored if stored is not None else self.offsets.get(key))
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]@{self.offsets.get((tp.topic, tp.partition), self.cfg.kafka.start_from)}" for tp in assigned))

    def _seek_one(self, tp: Any, offset: int | None) -> None:
        """Position ``tp`` at ``offset``, or where ``kafka.start_from`` says when there is none."""
        key = (tp.topic, tp.partition)
        if offset is not None:
            self.consumer.seek(tp, offset)
            self.offsets[key] = offset
            return
        self.offsets.pop(key, None)
        if self.cfg.kafka.start_from == "earliest":
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek_to_end(tp)

    def retry_claims(self) -> None:
        """Claim (and resume) partitions whose claim failed at assignment."""
        if not self.unclaimed:
            return
        pending = sorted(self.unclaimed & set(self.consumer.assignment()), key=lambda tp: (tp.topic, tp.partition))
        self.unclaimed = set()
        if pending:
            self._seek(pending)
            claimed = [tp for tp in pending if tp not in self.unclaimed]
            if claimed:
                self.consumer.resume(*claimed)

    def fence(self, keys: set[tuple[str, int]]) -> None:
        """Stop consuming partitions another replica has claimed (until Kafka assigns them again)."""
        lost = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) in keys]
        if lost:
            self.consumer.pause(*lost)
            self.fenced |= set(lost)

    def reseek(self, offsets: dict[tuple[str, int], int | None]) -> None:
        """Move owned partitions back to the given offsets (after the daemon reloaded its snapshot)."""
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in offsets and tp not in self.fenced and tp not in self.unclaimed:
                self._seek_one(tp, offsets[key])

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop the offsets of partitions outside ``keep`` (no longer owned, and durable)."""
        for key in [k for k in self.offsets if k not in keep]:
            del self.offsets[key]

    def owned(self) -> set[tuple[str, int]]:
        """Assigned partitions this replica holds a claim for (not paused for a failed or lost claim)."""
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()
                if tp not in self.unclaimed and tp not in self.fenced}

    def poll(self, timeout_ms: int | None = None) -> Polled:
        """The next batch (at most ``kafka.max_batch`` records), waiting up to ``timeout_ms`` (default
        ``kafka.max_wait_ms``) for one."""
        k = self.cfg.kafka
        records = self.consumer.poll(timeout_ms=k.max_wait_ms if timeout_ms is None else timeout_ms,
                                     max_records=k.max_batch)
        values: list[bytes | None] = []
        parts: list[tuple[str, int, list[Any]]] = []
        nxt: dict[tuple[str, int], int] = {}
        for tp, recs in records.items():
            if recs:
                values += [r.value for r in recs]
                parts.append((tp.topic, tp.partition, recs))
                nxt[(tp.topic, tp.partition)] = recs[-1].offset + 1
        return Polled(values, parts, nxt)

    def advance(self, next_offsets: dict[tuple[str, int], int]) -> None:
        self.offsets.update(next_offsets)

    def offsets_by_topic(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for (t, p), o in self.offsets.items():
            out.setdefault(t, {})[p] = o
        return out

    def assignment(self) -> list[Any]:
        return sorted(self.consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))

    def lag(self) -> int | None:
        """Records between our position and the high watermark over owned partitions (None if unknown)."""
        total = 0
        for tp in self.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                return None
            pos = self.offsets.get((tp.topic, tp.partition), 0)
            total += max(0, hw - pos)
        return total

    def commit(self, owned_only: bool = True) -> None:
        """Commit the snapshot's offsets to the group (monitoring only); failures are logged, not fatal."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        owned = {(tp.topic, tp.partition) for tp in self.assignment()}
        payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                   for (t, p), o in self.offsets.items() if not owned_only or (t, p) in owned}
        if not payload:
            return
        try:
            self.consumer.commit(payload)
        except Exception as exc:  # CommitFailedError during a rebalance, broker hiccups
            log.warning("offset commit to the group failed (%s); the snapshot holds the offsets", exc)

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:
            log.warning("closing the consumer: %s", exc)
