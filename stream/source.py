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
  replaced (tansu answers a fetch past the end with nothing and the new, lower watermark). Only a
  watermark fetched since the partition was last positioned counts: librdkafka keeps a
  partition's cached watermark across assignments, and one from before the partition moved to
  another replica and back is far below the position claimed now (seen once in CI: partitions
  learned again from offset 0, 16,500 records for 10,000);
- **offsets**: a record at an offset below the position fetched is either the same record handed
  over again (librdkafka can return records fetched before a rebalance in the same call that serves
  it, and then fetches them again from the new assignment's start) or a new log's (a Kafka broker
  answers OFFSET_OUT_OF_RANGE, and the client resets to the new log's start). The record just
  before the position tells which: the fingerprint it had means a re-delivery, whose records up to
  the position are dropped; any other, a replaced log. Nothing of a batch that has not reached that
  record yet is consumed;
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
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from ocld.stream.config import Config
from ocld.stream.consumers import Batch, make_consumer

log = logging.getLogger("ocld.source")

TP = tuple[str, int]
# (topic, partition) -> (offset to start at or None, fingerprint of the record before it or None)
Positions = dict[TP, tuple[int | None, str | None]]


@dataclass
class Polled:
    """One poll: the record values in order, and where each came from (built only when asked)."""

    values: list[bytes | None]
    parts: list[tuple[str, int, Batch]]  # (topic, partition, records) in the order of ``values``
    next_offsets: dict[TP, int]
    fingerprints: dict[TP, str] = field(default_factory=dict)  # of each partition's last record in this poll
    resets: dict[TP, str] = field(default_factory=dict)  # partitions whose log was replaced: why
    gaps: dict[TP, tuple[int, int]] = field(default_factory=dict)  # records lost: (expected offset, log start)
    reconnected: bool = False  # a connection to the broker was (re)made: positions must be checked again
    _origin: list[tuple[str, int, int]] | None = field(default=None, repr=False)

    def without(self, tps: set[TP]) -> Polled:
        """This poll without the records of ``tps``."""
        parts = [(t, p, batch) for t, p, batch in self.parts if (t, p) not in tps]
        if len(parts) == len(self.parts):
            return self
        return Polled([v for _, _, batch in parts for v in batch.values], parts,
                      {tp: o for tp, o in self.next_offsets.items() if tp not in tps},
                      {tp: f for tp, f in self.fingerprints.items() if tp not in tps})

    @property
    def origin(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) per value. Built on first use (dead letters, predictions),
        so the common path creates no per-record tuples."""
        if self._origin is None:
            self._origin = [(t, p, off) for t, p, batch in self.parts for off in batch.offsets()]
        return self._origin


class KafkaSource:
    def __init__(self, cfg: Config, claim: Callable[[list[TP]], Positions],
                 on_revoke: Callable[[list[TP]], None] | None = None) -> None:
        self.cfg = cfg
        self.topic = cfg.kafka.topic
        self.claim = claim
        self.on_revoke = on_revoke
        self.offsets: dict[TP, int] = {}  # next offset of each partition consumed (counted as learned)
        self.fingerprints: dict[TP, str | None] = {}  # of the record before ``offsets`` (None: unknown)
        self._fetched: dict[TP, int] = {}  # next offset the consumer will hand over (>= offsets)
        self._fetched_fp: dict[TP, str] = {}  # fingerprint of the record at _fetched - 1, when known
        # partitions not fetched since they were positioned -> the cached high watermark then (maybe stale)
        self._hw_stale: dict[TP, int | None] = {}
        self._verify: dict[TP, tuple[int, str]] = {}  # claimed position and fingerprint still to check
        self.unclaimed: set[TP] = set()  # assigned, claim failed: paused, retried
        # assigned, but another replica holds the claim: paused (since this monotonic time) until reassigned
        self.fenced: dict[TP, float] = {}
        self._revoking: set[TP] = set()  # being revoked (during the revocation callback)
        self.consumer = make_consumer(cfg.kafka, cfg.group_id, f"ocld-{cfg.name}", cfg.kafka.max_batch)
        self.consumer.subscribe(self.topic, on_assign=self._seek, on_revoke=self._revoked)

    def _revoked(self, revoked: list[TP]) -> None:
        self._revoking = set(revoked)  # no longer owned, also for what the callback does (a rewind claims owned ones)
        try:
            if revoked and self.on_revoke is not None:
                self.on_revoke(revoked)
        finally:
            self._revoking = set()
        self.unclaimed -= set(revoked)
        for tp in revoked:
            self.fenced.pop(tp, None)
        for tp in revoked:
            self._verify.pop(tp, None)

    # -- positions ---------------------------------------------------------------------
    def _seek(self, assigned: list[TP]) -> None:
        for tp in assigned:
            self.fenced.pop(tp, None)
        if not assigned:
            return
        try:
            positions = self.claim(list(assigned))
        except Exception as exc:  # Redis unreachable: do not consume what we could not claim
            log.warning("could not claim partitions %s (%s: %s); they stay paused and the claim is retried",
                        sorted(f"{t}[{p}]" for t, p in assigned), type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            self.consumer.pause(list(assigned))
            self.unclaimed |= set(assigned)
            return
        for tp in assigned:
            offset, fp = positions.get(tp, (None, None))
            self._position(tp, offset, fp)
        log.info("assigned %s", ", ".join(sorted(
            f"{t}[{p}]@{self.offsets.get((t, p), self.cfg.kafka.start_from)}" for t, p in assigned)))

    def _position(self, tp: TP, offset: int | None, fp: str | None) -> None:
        """Start ``tp`` at ``offset`` (checking the record before it against ``fp``), or where
        ``kafka.start_from`` says when there is no offset."""
        self._verify.pop(tp, None)
        self._fetched_fp.pop(tp, None)
        self._positioned(tp)
        if offset is None:
            self.offsets.pop(tp, None)
            self.fingerprints.pop(tp, None)
            self._fetched.pop(tp, None)
            self.consumer.seek(tp, "beginning" if self.cfg.kafka.start_from == "earliest" else "end")
            return
        self.offsets[tp] = offset
        self.fingerprints[tp] = fp
        if fp and offset > 0:
            self._verify[tp] = (offset, fp)
            self.consumer.seek(tp, offset - 1)
            self._fetched[tp] = offset - 1
        else:
            self.consumer.seek(tp, offset)
            self._fetched[tp] = offset
            if fp:
                self._fetched_fp[tp] = fp

    def reset_partition(self, tp: TP) -> int:
        """The partition's log was replaced: learn the new one from its start. Returns the position
        now held (0 until the first record of the new log says where it starts)."""
        self._verify.pop(tp, None)
        self._positioned(tp)
        self.consumer.seek(tp, "beginning")  # resolved by the next fetch (no blocking request here)
        self.offsets[tp] = 0
        self.fingerprints[tp] = None
        self._fetched.pop(tp, None)  # unknown until the first record: no regression or gap check before it
        self._fetched_fp.pop(tp, None)
        return 0

    def _positioned(self, tp: TP) -> None:
        """``tp`` is fetched from a new position: its cached high watermark may be from an earlier fetch."""
        self._hw_stale[tp] = self.consumer.highwater(tp)

    def _fresh_highwater(self, tp: TP) -> int | None:
        """The high watermark, once a fetch since the last positioning has updated it (a batch came, or
        the value changed); None before."""
        hw = self.consumer.highwater(tp)
        if tp in self._hw_stale:
            if hw is None or hw == self._hw_stale[tp]:
                return None
            del self._hw_stale[tp]
        return hw

    def reverify(self) -> None:
        """Put every owned partition back at its consumed position and check it against its fingerprint
        again (after the broker came back: it may have come back with a new log). A partition with nothing
        consumed yet goes back to where it started, so what was fetched and not consumed is read again."""
        for tp in self.owned():
            self._position(tp, self.offsets.get(tp), self.fingerprints.get(tp))

    def retry_claims(self) -> None:
        """Claim (and resume) partitions whose claim failed at assignment."""
        if not self.unclaimed:
            return
        pending = sorted(self.unclaimed & self.consumer.assignment())
        self.unclaimed = set()
        self._claim_and_resume(pending)

    def _claim_and_resume(self, tps: list[TP]) -> None:
        """Claim paused partitions outside a rebalance and resume those whose claim held."""
        if tps:
            self._seek(tps)
            self.consumer.resume([tp for tp in tps if tp not in self.unclaimed and tp not in self.fenced])

    def fence(self, keys: set[TP]) -> None:
        """Stop consuming partitions another replica has claimed (until Kafka assigns them again)."""
        lost = sorted(self.consumer.assignment() & keys)
        if lost:
            self.consumer.pause(lost)
            now = time.monotonic()
            self.fenced.update((tp, now) for tp in lost)

    def reclaim_fenced(self) -> list[TP]:
        """Claim again (and resume) the fenced partitions Kafka still assigns here once the group's
        session timeout plus poll interval has passed since they were paused. A replica that claimed
        one while the group moved it has been assigned it by then, or dropped from the group;
        otherwise nobody learns the partition. Claiming is safe either way: the claim starts where
        the last durable snapshot of any replica ends, and a replica that learned from it meanwhile
        has its next snapshot fenced."""
        k = self.cfg.kafka
        after_s = (k.session_timeout_ms + k.max_poll_interval_ms) / 1000.0
        now = time.monotonic()
        assigned = self.consumer.assignment()
        due = sorted(tp for tp, since in self.fenced.items() if tp in assigned and now - since >= after_s)
        if not due:
            return []
        log.warning("partitions %s have been paused for %.0f s since another replica claimed them, and Kafka still "
                    "assigns them here: claiming them back", sorted(f"{t}[{p}]" for t, p in due), after_s)
        for tp in due:
            del self.fenced[tp]
        self._claim_and_resume(due)
        return due

    def reseek(self, positions: Positions) -> None:
        """Move owned partitions to the given positions (after the daemon reloaded its snapshot)."""
        for tp in self.owned():
            if tp in positions:
                self._position(tp, *positions[tp])

    def forget(self, keep: set[TP]) -> None:
        """Drop the positions of partitions outside ``keep`` (no longer owned, and durable)."""
        for key in [k for k in self.offsets if k not in keep]:
            del self.offsets[key]
            self.fingerprints.pop(key, None)
            self._fetched.pop(key, None)
            self._fetched_fp.pop(key, None)

    def rewound(self, durable: Positions) -> None:
        """The model went back to a snapshot: what it has learned of each partition is what that
        snapshot's positions say (the owned partitions are then positioned by their claims)."""
        for tp in list(self.offsets):
            offset, fp = durable.get(tp, (None, None))
            if offset is None:
                del self.offsets[tp]
                self.fingerprints.pop(tp, None)
            else:
                self.offsets[tp], self.fingerprints[tp] = offset, fp

    def owned(self) -> set[TP]:
        """Assigned partitions this replica holds a claim for (not paused for a failed or lost claim,
        not being revoked)."""
        return {tp for tp in self.consumer.assignment()
                if tp not in self.unclaimed and tp not in self.fenced and tp not in self._revoking}

    # -- reading -----------------------------------------------------------------------
    def poll(self, timeout_ms: int | None = None) -> Polled:
        """The next batch (at most ``kafka.max_batch`` records), waiting up to ``timeout_ms`` (default
        ``kafka.max_wait_ms``) for one. Records of a partition found replaced are withheld."""
        k = self.cfg.kafka
        batches = self.consumer.poll(k.max_wait_ms if timeout_ms is None else timeout_ms, k.max_batch)
        out = Polled([], [], {})
        if self.consumer.reconnected() and self.offsets:
            # A connection was made again (the broker restarted, or a network cut healed): what this poll
            # fetched may come from a new log at the old position. It is dropped (not consumed) and every
            # position is checked against its fingerprint first (reverify).
            out.reconnected = True
            return out
        assigned = set(self.consumer.assignment())
        for tp in batches:
            self._hw_stale.pop(tp, None)  # the fetch that brought these records also brought the watermark
        for tp, batch in batches.items():
            if tp in out.resets:
                continue
            if tp not in assigned:
                # fetched before a revocation that this poll's client call served: the partition is another
                # replica's now (or starts again from its claim), so nothing of it is consumed here
                log.warning("dropped %d records of %s:%d, fetched before it was revoked", len(batch), tp[0], tp[1])
                continue
            expected = self._fetched.get(tp)
            if tp in self._verify:
                checked = self._check_fingerprint(tp, batch, out)
                if checked is None:
                    continue
                batch = checked
            elif expected is not None and batch.first_offset < expected:
                rest = self._check_redelivery(tp, batch, expected, out)
                if rest is None:
                    continue
                batch = rest
            elif expected is not None and batch.first_offset > expected:
                self._check_gap(tp, expected, out)
            out.values += batch.values
            out.parts.append((tp[0], tp[1], batch))
            out.next_offsets[tp] = self._fetched[tp] = batch.last_offset + 1
            out.fingerprints[tp] = self._fetched_fp[tp] = batch.fingerprint(len(batch) - 1)
        for tp in assigned:
            hw = self._fresh_highwater(tp)
            # the position already read; while a claim is checked, the claimed position itself
            reached = self._verify[tp][0] if tp in self._verify else self._fetched.get(tp)
            if hw is not None and reached is not None and hw < reached and tp not in out.resets:
                out.resets[tp] = (f"the log ends at offset {hw}, below the position {reached} already learned "
                                  "(the topic was recreated or the broker lost its log)")
        if out.resets:
            keep = [i for i, (t, p, _) in enumerate(out.parts) if (t, p) not in out.resets]
            if len(keep) < len(out.parts):
                out.parts = [out.parts[i] for i in keep]
                out.values = [v for _, _, batch in out.parts for v in batch.values]
                for tp in out.resets:
                    out.next_offsets.pop(tp, None)
                    out.fingerprints.pop(tp, None)
        return out

    def _check_fingerprint(self, tp: TP, batch: Batch, out: Polled) -> Batch | None:
        """The first records after a claim: the one before the claimed position must be the record
        the fingerprint names. Returns the records to learn (the checked one dropped), None for none."""
        position, fp = self._verify[tp]
        first = batch.first_offset
        if first <= position - 1:
            found, rest = _after(batch, position - 1, fp)
            if found == "short":
                return None  # not yet at the record to check (a log that ends below it: the high watermark says so)
            del self._verify[tp]
            if found == "differs":
                out.resets[tp] = (f"the record at offset {position - 1} is not the one learned there (the topic "
                                  "was recreated or the broker lost its log)")
                return None
            self._fetched[tp], self._fetched_fp[tp] = position, fp
            return rest
        del self._verify[tp]
        # The record before the position is gone: retention deleted it, and maybe more.
        if first > position:
            out.gaps[tp] = (position, first)
        return batch

    def _check_redelivery(self, tp: TP, batch: Batch, expected: int, out: Polled) -> Batch | None:
        """A batch that starts below the position already fetched: its records past that position
        when it hands over again what was fetched (the record before the position has the
        fingerprint it had); None when it holds nothing new, or the log was replaced (a reset)."""
        known = self._fetched_fp.get(tp)
        found, rest = _after(batch, expected - 1, known) if known else ("differs", None)
        if found == "short":
            return None  # not yet at the record that tells: nothing of it is consumed
        if found == "differs":
            out.resets[tp] = (f"the log went back: offset {batch.first_offset} arrived after offset {expected - 1}, "
                              f"and the record at {expected - 1} is not the one fetched there (the topic was "
                              "recreated or the broker lost its log)")
            return None
        log.info("%s:%d: offsets %d..%d handed over again (fetched before a rebalance or a seek); dropped",
                 tp[0], tp[1], batch.first_offset, expected - 1)
        return rest

    def _check_gap(self, tp: TP, expected: int, out: Polled) -> None:
        """Offsets jumped forward: records lost to retention if the log now starts past ``expected``
        (gaps from transaction markers or compaction are not losses)."""
        start = self.consumer.log_start(tp, 2000)
        if start is not None and start > expected:
            out.gaps[tp] = (expected, start)

    def advance(self, next_offsets: dict[TP, int], fingerprints: dict[TP, str] | None = None) -> None:
        self.offsets.update(next_offsets)
        if fingerprints:
            self.fingerprints.update(fingerprints)

    def offsets_by_topic(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for (t, p), o in self.offsets.items():
            out.setdefault(t, {})[p] = o
        return out

    def assignment(self) -> list[TP]:
        return sorted(self.consumer.assignment())

    def lag(self) -> int | None:
        """Records between our position and the high watermark over owned partitions (None if unknown)."""
        total = 0
        for tp in self.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                return None
            total += max(0, hw - self.offsets.get(tp, 0))
        return total

    def commit(self, owned_only: bool = True) -> None:
        """Commit the snapshot's offsets to the group (monitoring only); failures are logged, not fatal."""
        owned = set(self.assignment())
        payload = {tp: o for tp, o in self.offsets.items() if not owned_only or tp in owned}
        if not payload:
            return
        try:
            self.consumer.commit(payload)
        except Exception as exc:  # CommitFailedError during a rebalance, broker hiccups
            log.warning("offset commit to the group failed (%s); the snapshot holds the offsets", exc)

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as exc:
            log.warning("closing the consumer: %s", exc)


def _after(batch: Batch, offset: int, fp: str) -> tuple[str, Batch | None]:
    """Find the record at ``offset`` in a batch that starts at or below it: ("short", None) when the
    batch ends before it, ("differs", None) when it is missing or another record, ("same", the
    records after it, None for none) when its fingerprint is ``fp``."""
    if batch.last_offset < offset:
        return "short", None
    offsets = batch.offsets()
    i = bisect_left(offsets, offset)
    if offsets[i] != offset or batch.fingerprint(i) != fp:
        return "differs", None
    rest = batch.drop(i + 1)
    return "same", (rest if len(rest) else None)
