"""Kafka input: a consumer-group member that polls micro-batches and knows where each partition is.

Where a partition starts is decided by the claim (``stream.ownership``), never by the group's
committed offsets: on every assignment the daemon claims the partitions in the shared registry,
which answers with the offset to start from and the fingerprint of the record just before it
(timestamp and CRC of key and value). The consumer seeks there, or to the log's start (or end,
with ``kafka.start_from: latest``) when there is none. Offsets are committed to the group only
after a snapshot switch, for monitoring tools.

A log that went backwards is detected, never trusted: a topic deleted and recreated, or an
embedded broker restarted (its log lives in memory), can hold new records at the offsets the
daemon had reached. Four checks, each cheap:

- **fingerprint**: after a claim with a known fingerprint the consumer seeks one record back and
  compares the record there with the fingerprint; a different record (or none: the log is
  shorter) means the log was replaced;
- **high watermark**: a partition whose log end is below the position already fetched was
  replaced (tansu answers a fetch past the end with nothing and the new, lower watermark);
- **offsets**: a record at an offset below the position fetched means the client reset to a new
  log's start (a Kafka broker answers OFFSET_OUT_OF_RANGE, and the client resets);
- **reconnection**: when the consumer connects to the broker again (a restart, a healed network
  cut), what that poll fetched is dropped (not consumed) and every position is checked against
  its fingerprint again before anything more is learned: a restarted broker may already hold a
  new log longer than the old position, which no offset check can tell from the old one.

Each finding is handed to the daemon in :attr:`Polled.resets` (the partition's records of that
poll are withheld); the daemon records a ``topic_reset`` incident and calls
:meth:`KafkaSource.reset_partition`, so the new log is learned from its start. A jump forward
whose log start lies past the position (retention deleted records before they were learned) is
handed over in :attr:`Polled.gaps` with the number of records lost.

A partition whose claim fails (Redis unreachable) stays paused and is claimed again by
``retry_claims``; one that the daemon found taken over by another replica (``fence``) stays
paused until Kafka assigns it again. Lag is measured from the fetch high watermark (tansu
misreports end_offsets; see stream.broker).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocld.stream.broker import client_kwargs, retry
from ocld.stream.config import Config

log = logging.getLogger("ocld.source")

TP = tuple[str, int]
# (topic, partition) -> (offset to start at or None, fingerprint of the record before it or None)
Positions = dict[TP, tuple[int | None, str | None]]


def fingerprint(record: Any) -> str:
    """A short identity of one record: its timestamp and the CRC-32 of its key and value."""
    key = record.key or b""
    value = record.value or b""
    return f"{record.timestamp}:{zlib.crc32(key):08x}:{zlib.crc32(value):08x}"


@dataclass
class Polled:
    """One poll: the record values in order, and where each came from (built only when asked)."""

    values: list[bytes | None]
    parts: list[tuple[str, int, list[Any]]]  # (topic, partition, ConsumerRecords) in the order of ``values``
    next_offsets: dict[TP, int]
    fingerprints: dict[TP, str] = field(default_factory=dict)  # of each partition's last record in this poll
    resets: dict[TP, str] = field(default_factory=dict)  # partitions whose log was replaced: why
    gaps: dict[TP, tuple[int, int]] = field(default_factory=dict)  # records lost: (expected offset, log start)
    reconnected: bool = False  # a connection to the broker was (re)made: positions must be checked again
    _origin: list[tuple[str, int, int]] | None = field(default=None, repr=False)

    @property
    def origin(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) per value. Built on first use (dead letters, predictions),
        so the common path creates no per-record tuples."""
        if self._origin is None:
            self._origin = [(t, p, r.offset) for t, p, recs in self.parts for r in recs]
        return self._origin


class KafkaSource:
    def __init__(self, cfg: Config, claim: Callable[[list[TP]], Positions],
                 on_revoke: Callable[[list[Any]], None] | None = None) -> None:
        from kafka import KafkaConsumer

        self.cfg = cfg
        self.topic = cfg.kafka.topic
        self.claim = claim
        self.on_revoke = on_revoke
        self.offsets: dict[TP, int] = {}  # next offset of each partition consumed (counted as learned)
        self.fingerprints: dict[TP, str | None] = {}  # of the record before ``offsets`` (None: unknown)
        self._fetched: dict[TP, int] = {}  # next offset the consumer will hand over (>= offsets)
        self._verify: dict[TP, tuple[int, str]] = {}  # claimed position and fingerprint still to check
        self.unclaimed: set[Any] = set()  # assigned, claim failed: paused, retried
        self.fenced: set[Any] = set()  # assigned, but another replica holds the claim: paused until reassigned
        self._links: frozenset[Any] = frozenset()  # the consumer's connected broker links (see _link_marker)
        k = cfg.kafka
        self.consumer = retry("connecting to the broker", attempts=3, kafka=k, fn=lambda: KafkaConsumer(
            **client_kwargs(k), group_id=cfg.group_id, client_id=f"ocld-{cfg.name}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=k.max_batch, fetch_max_wait_ms=max(k.max_wait_ms, 1),
            session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms, fetch_max_bytes=k.fetch_max_bytes,
            max_partition_fetch_bytes=min(k.fetch_max_bytes, 10 * 1024 * 1024),
        ))
        from kafka import ConsumerRebalanceListener

        source = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked and source.on_revoke is not None:
                    source.on_revoke(list(revoked))
                source.unclaimed -= set(revoked)
                source.fenced -= set(revoked)
                for tp in revoked:
                    source._verify.pop((tp.topic, tp.partition), None)

            def on_partitions_assigned(self, assigned: Any) -> None:
                source._seek(list(assigned))

        self.consumer.subscribe([self.topic], listener=_Listener())
        from kafka.record import util as record_util

        if getattr(record_util, "crc32c_c", True) is None:
            log.info("kafka-python checks record CRCs in pure Python (about half of the consumer's CPU time on "
                     "small records); `pip install crc32c` makes that check nearly free")

    # -- positions ---------------------------------------------------------------------
    def _seek(self, assigned: list[Any]) -> None:
        self.fenced -= set(assigned)
        if not assigned:
            return
        try:
            positions = self.claim([(tp.topic, tp.partition) for tp in assigned])
        except Exception as exc:  # Redis unreachable: do not consume what we could not claim
            log.warning("could not claim partitions %s (%s: %s); they stay paused and the claim is retried",
                        sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned), type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            self.consumer.pause(*assigned)
            self.unclaimed |= set(assigned)
            return
        for tp in assigned:
            offset, fp = positions.get((tp.topic, tp.partition), (None, None))
            self._position(tp, offset, fp)
        log.info("assigned %s", ", ".join(sorted(
            f"{tp.topic}[{tp.partition}]@{self.offsets.get((tp.topic, tp.partition), self.cfg.kafka.start_from)}"
            for tp in assigned)))

    def _position(self, tp: Any, offset: int | None, fp: str | None) -> None:
        """Start ``tp`` at ``offset`` (checking the record before it against ``fp``), or where
        ``kafka.start_from`` says when there is no offset."""
        key = (tp.topic, tp.partition)
        self._verify.pop(key, None)
        if offset is None:
            self.offsets.pop(key, None)
            self.fingerprints.pop(key, None)
            self._fetched.pop(key, None)
            if self.cfg.kafka.start_from == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            return
        self.offsets[key] = offset
        self.fingerprints[key] = fp
        if fp and offset > 0:
            self._verify[key] = (offset, fp)
            self.consumer.seek(tp, offset - 1)
            self._fetched[key] = offset - 1
        else:
            self.consumer.seek(tp, offset)
            self._fetched[key] = offset

    def reset_partition(self, key: TP) -> int:
        """The partition's log was replaced: learn the new one from its start. Returns the position
        now held (0 until the first record of the new log says where it starts)."""
        tp = self._tp(key)
        self._verify.pop(key, None)
        self.consumer.seek_to_beginning(tp)  # resolved by the next fetch (no blocking request here)
        self.offsets[key] = 0
        self.fingerprints[key] = None
        self._fetched.pop(key, None)  # unknown until the first record: no regression or gap check before it
        return 0

    def _log_start(self, key: TP, timeout_ms: int = 2000) -> int | None:
        """The first offset of the partition's log, or None when the broker does not say in time
        (kafka-python's public call can block for ever on a partition that does not exist yet)."""
        tp = self._tp(key)
        try:
            return int(self.consumer._fetcher.beginning_offsets([tp], timeout_ms)[tp])
        except Exception:  # noqa: BLE001 (cannot tell)
            return None

    def reverify(self) -> None:
        """Check every owned partition's position against its fingerprint again (after the broker
        came back: it may have come back with a new log)."""
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if tp in self.unclaimed or tp in self.fenced or key not in self.offsets:
                continue
            self._position(tp, self.offsets[key], self.fingerprints.get(key))

    def _tp(self, key: TP) -> Any:
        from kafka import TopicPartition

        return TopicPartition(key[0], key[1])

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

    def fence(self, keys: set[TP]) -> None:
        """Stop consuming partitions another replica has claimed (until Kafka assigns them again)."""
        lost = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) in keys]
        if lost:
            self.consumer.pause(*lost)
            self.fenced |= set(lost)

    def reseek(self, positions: Positions) -> None:
        """Move owned partitions to the given positions (after the daemon reloaded its snapshot)."""
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in positions and tp not in self.fenced and tp not in self.unclaimed:
                self._position(tp, *positions[key])

    def forget(self, keep: set[TP]) -> None:
        """Drop the positions of partitions outside ``keep`` (no longer owned, and durable)."""
        for key in [k for k in self.offsets if k not in keep]:
            del self.offsets[key]
            self.fingerprints.pop(key, None)
            self._fetched.pop(key, None)

    def owned(self) -> set[TP]:
        """Assigned partitions this replica holds a claim for (not paused for a failed or lost claim)."""
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()
                if tp not in self.unclaimed and tp not in self.fenced}

    # -- reading -----------------------------------------------------------------------
    def poll(self, timeout_ms: int | None = None) -> Polled:
        """The next batch (at most ``kafka.max_batch`` records), waiting up to ``timeout_ms`` (default
        ``kafka.max_wait_ms``) for one. Records of a partition found replaced are withheld."""
        k = self.cfg.kafka
        records = self.consumer.poll(timeout_ms=k.max_wait_ms if timeout_ms is None else timeout_ms,
                                     max_records=k.max_batch)
        out = Polled([], [], {})
        links = self._link_marker()
        if links != self._links:
            new_link = bool(links - self._links)
            self._links = links
            if new_link and self.offsets:
                # A connection was made again (the broker restarted, or a network cut healed): what this
                # poll fetched may come from a new log at the old position. It is dropped (not consumed)
                # and every position is checked against its fingerprint first (reverify).
                out.reconnected = True
                return out
        for tp, recs in records.items():
            key = (tp.topic, tp.partition)
            if key in out.resets or not recs:
                continue
            expected = self._fetched.get(key)
            if key in self._verify:
                recs = self._check_fingerprint(key, recs, out)
                if not recs:
                    continue
            elif expected is not None and recs[0].offset < expected:
                out.resets[key] = (f"the log went back: offset {recs[0].offset} arrived after offset "
                                   f"{expected - 1} (the topic was recreated or the broker lost its log)")
                continue
            elif expected is not None and recs[0].offset > expected:
                self._check_gap(key, expected, out)
            out.values += [r.value for r in recs]
            out.parts.append((tp.topic, tp.partition, recs))
            out.next_offsets[key] = self._fetched[key] = recs[-1].offset + 1
            out.fingerprints[key] = fingerprint(recs[-1])
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            hw = self.consumer.highwater(tp)
            # the position already read; while a claim is checked, the claimed position itself
            reached = self._verify[key][0] if key in self._verify else self._fetched.get(key)
            if hw is not None and reached is not None and hw < reached and key not in out.resets:
                out.resets[key] = (f"the log ends at offset {hw}, below the position {reached} already learned "
                                   "(the topic was recreated or the broker lost its log)")
        if out.resets:
            keep = [i for i, (t, p, _) in enumerate(out.parts) if (t, p) not in out.resets]
            if len(keep) < len(out.parts):
                out.parts = [out.parts[i] for i in keep]
                out.values = [r.value for _, _, recs in out.parts for r in recs]
                for key in out.resets:
                    out.next_offsets.pop(key, None)
                    out.fingerprints.pop(key, None)
        return out

    def _link_marker(self) -> frozenset[Any]:
        """(node, connect time) of every connected broker link of the consumer: a new element means a
        connection was made again. (kafka-python keeps its connections private; the pinned 2.2 series
        has ``_client._conns`` and ``BrokerConnection.last_attempt``.)"""
        try:
            conns = self.consumer._client._conns
            return frozenset((node, c.last_attempt) for node, c in list(conns.items()) if c.connected())
        except Exception:  # noqa: BLE001 (another client version: positions are still checked at every claim)
            return frozenset()

    def _check_fingerprint(self, key: TP, recs: list[Any], out: Polled) -> list[Any]:
        """The first records after a claim: the one before the claimed position must be the record
        the fingerprint names. Returns the records to learn (the checked one dropped)."""
        position, fp = self._verify.pop(key)
        first = recs[0]
        if first.offset == position - 1:
            if fingerprint(first) != fp:
                out.resets[key] = (f"the record at offset {first.offset} is not the one learned there (the topic "
                                   "was recreated or the broker lost its log)")
                return []
            return recs[1:]
        if first.offset < position - 1:
            out.resets[key] = (f"the log ends below offset {position - 1}, the last record learned (the topic "
                               "was recreated or the broker lost its log)")
            return []
        # The record before the position is gone: retention deleted it, and maybe more.
        if first.offset > position:
            out.gaps[key] = (position, first.offset)
        return recs

    def _check_gap(self, key: TP, expected: int, out: Polled) -> None:
        """Offsets jumped forward: records lost to retention if the log now starts past ``expected``
        (gaps from transaction markers or compaction are not losses)."""
        start = self._log_start(key)
        if start is not None and start > expected:
            out.gaps[key] = (expected, start)

    def advance(self, next_offsets: dict[TP, int], fingerprints: dict[TP, str] | None = None) -> None:
        self.offsets.update(next_offsets)
        if fingerprints:
            self.fingerprints.update(fingerprints)

    def offsets_by_topic(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for (t, p), o in self.offsets.items():
            out.setdefault(t, {})[p] = o
        return out

    def fingerprints_by_topic(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for (t, p), fp in self.fingerprints.items():
            if fp and (t, p) in self.offsets:
                out.setdefault(t, {})[str(p)] = fp
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
