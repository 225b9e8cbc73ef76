"""The daemon loop: poll -> decode -> learn -> outputs -> checkpoint -> commit.

The parts, each with one job (``docs/architecture.md`` has the picture):

- ``KafkaSource`` (stream/source.py) polls and knows where each partition is; it checks that the
  log did not go backwards.
- ``Intake`` (stream/intake.py) decodes polls, and holds them while an undeclared width settles.
- the learning core (``LearningCore``, or ``RemoteCore`` in a learner process) learns a decoded
  poll (``submit``) and returns its result with the drift events and what it did (``collect``).
- ``Sink`` (stream/sink.py) writes dead letters and predictions.
- ``Checkpointer`` (stream/checkpoint.py) says when a snapshot is due and commits in one order:
  flush outputs -> write and switch -> commit offsets; it keeps the outage state.
- ``Ownership`` (stream/ownership.py) holds the lease, the partition claims and the fence.
- ``Status`` (stream/status.py) is what the daemon reports, written to Redis every interval.
- stream/startup.py waits for Redis and the broker at start-up and words the errors waiting cannot fix.

This module only sequences them, and decides what to do when something is found wrong.

Start-up, in this order: wait for Redis (``redis.start_timeout_s``, then exit non-zero with one
line); take the lease (a live holder is waited out for one TTL, then start-up fails saying who
holds it); load the latest snapshot; wait for the broker (as long as it takes); create the
topics; consume. A SIGTERM during any of these waits stops the daemon within a second. Wrong
credentials, a missing ACL permission or a Kafka security mismatch are fatal: one line, a
non-zero exit, no retry loop.

While running:
- **Redis outage**: learning continues in memory; offsets are never committed beyond the last
  durable snapshot; the snapshot is retried with backoff; the status says ``degraded`` until a
  snapshot catches up.
- **The lease** found *taken* by another writer (a daemon started while this one stalled, a
  forced rollback): the daemon writes nothing more and exits 3. Found *gone*: it is taken again
  and ``Ownership.after_gap`` decides: nothing changed; another writer switched ``latest``
  (reload it); or Redis lost the state, which is re-established at once from memory (the model is
  exact for the offsets consumed), as a ``redis_data_loss`` incident. It never pauses silently.
- **A fenced switch** (another replica claimed a partition learned from since the last snapshot):
  discard what was learned since it, reload it, pause the lost partitions.
- **A log that went backwards**: a ``topic_reset`` incident, and the new log is learned from its
  start; records deleted by retention before they were learned: a ``records_lost`` incident.
- **A learner process that dies** is restarted from the last durable snapshot, unless it keeps
  dying; **a batch that cannot be decompressed** stops the daemon: status ``failed``, exit 3.

SIGTERM/SIGINT: finish the batch in hand, snapshot, commit, mark ``stopped``, release the lease.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from typing import Any

import redis
from kafka.errors import KafkaError

from ocld.core.runtime import LearningCore, limit_threads
from ocld.stream.broker import ensure_topics, kafka_failure
from ocld.stream.checkpoint import Checkpointer, Taken
from ocld.stream.config import Config, redact_url
from ocld.stream.errors import DaemonFailed, FatalConfigError
from ocld.stream.faults import fault_point
from ocld.stream.fold import GlobalFold
from ocld.stream.http import DaemonMetrics, HealthServer
from ocld.stream.intake import Intake
from ocld.stream.lease import Lease, describe
from ocld.stream.ownership import Incident, Ownership, Positions, positions_from_snapshot
from ocld.stream.sink import Sink
from ocld.stream.source import KafkaSource, Polled
from ocld.stream.startup import (
    migrate_old_layout,
    reachable,
    redis_error,
    redis_fatal,
    startup_step,
    wait_for_broker,
    wait_for_redis,
)
from ocld.stream.status import Status
from ocld.stream.store import (
    Keys,
    LeaseLost,
    SnapshotStore,
    StatusStore,
    connect,
    tp_field,
)
from ocld.stream.worker import LearnerProcessError, RemoteCore

log = logging.getLogger("ocld.daemon")

# A learner process that dies this many times within this many seconds is not restarted again.
LEARNER_RESTARTS = (3, 600.0)
# A loop that has not moved for this long is stuck: /livez says so and the lease is no longer renewed.
LOOP_STALL_S = 120.0


class _Interrupted(BaseException):
    """SIGTERM/SIGINT during a blocking start-up step: stop at once (nothing learned yet)."""


class Daemon:
    def __init__(self, cfg: Config) -> None:
        if cfg.kafka.bootstrap == "embedded" or cfg.redis.url.get_secret_value() == "embedded":
            raise ValueError("Daemon needs resolved servers; use ocld.stream.embedded.services() or `ocld run`")
        self.cfg = cfg
        limit_threads()
        r = cfg.redis
        self.redis = connect(r.url.get_secret_value(), r.password.get_secret_value() if r.password else None,
                             r.username, cluster=r.cluster)
        self.replica = cfg.scale.replica_id
        self.lease = Lease(self.redis, Keys(cfg.name, r.namespace, self.replica).lease, r.lease_ttl)
        self.store = SnapshotStore(self.redis, cfg.name, r.namespace, cfg.snapshot.keep, cfg.snapshot.chunk_bytes,
                                   replica=self.replica, max_pinned=cfg.snapshot.max_pinned, lease=self.lease)
        self.status_store = StatusStore(self.redis, cfg.name, r.namespace, r.metrics_maxlen, r.drift_maxlen,
                                        replica=self.replica, lease=self.lease)
        self.ownership = Ownership(self.store, self.lease, self.replica, self._incident)
        self.intake = Intake(cfg)
        self.core: LearningCore | RemoteCore = RemoteCore(cfg) if cfg.learner_process else LearningCore.from_config(cfg)
        # polls submitted to the core and not yet finished, with the records the codec rejected
        self._inflight: deque[tuple[Polled, list[tuple[int, str]]]] = deque()
        self.status: Status | None = None  # the last one built (/metrics reads it)
        self.metrics = DaemonMetrics(cfg.name, self.status_now)
        self.checkpointer = Checkpointer(cfg.snapshot, self.store, self.metrics)
        self.fold = GlobalFold(self.redis, cfg.name, r.namespace, self.replica) \
            if cfg.scale.fold_global_every_s is not None else None
        self.source: KafkaSource | None = None
        self.sink: Sink | None = None
        self.http: HealthServer | None = None
        self.counters = _Counters()
        self.state = "starting"  # starting, running, stopping, stopped, failed (degraded is shown on top)
        self.failure: str | None = None
        self.broker_reachable = True
        self.fences = 0
        self.started_at = time.time()
        self._stop = False
        self._interruptible = False
        self._deferred: BaseException | None = None  # raised inside a Kafka callback; re-raised by the loop
        self._timers = _Timers()
        self._learner_deaths: deque[float] = deque()
        # The dashboard (GET / on the HTTP port) draws the metric and drift streams this daemon writes (issue 18).
        self.metrics.attach_series(self.redis, self.status_store.keys)

    @property
    def records_seen(self) -> int:
        return self.counters.records

    @property
    def dlq_count(self) -> int:
        return self.sink.dlq_count if self.sink is not None else int(self.counters.dlq.get("dlq_count") or 0)

    @property
    def model_version(self) -> int | None:
        return self.checkpointer.model_version

    def _who(self) -> str:
        return (f"replica {self.replica!r} of pipeline {self.cfg.name!r}" if self.replica
                else f"pipeline {self.cfg.name!r}")

    # -- start-up --------------------------------------------------------------------
    def _start(self) -> bool:
        """Everything before the loop; False when stopped meanwhile."""
        cfg = self.cfg
        self._interruptible = True
        wait_for_redis(cfg, self.redis)
        startup_step(cfg, "moving keys to the hash-tagged layout", lambda: migrate_old_layout(cfg, self.redis))
        try:
            if not self.ownership.take_lease(self._who(), cfg.redis.lease_ttl + 1.0, lambda: self._stop):
                return False
        except redis.RedisError as exc:
            redis_fatal(self.cfg, exc, "taking the lease")
            raise
        self.lease.start_renewing(stall_s=LOOP_STALL_S)
        log.info("%s: lease %s taken (expires %.0f s after the last renewal)", self._who(), self.lease.key,
                 cfg.redis.lease_ttl)
        startup_step(cfg, "loading the latest snapshot", self._restore)
        startup_step(cfg, "cleaning incomplete snapshots", self.store.clean_orphans)
        self._publish_status(force=True)
        if cfg.http.port is not None:
            self.http = HealthServer(self.metrics, self.health, cfg.http.host, cfg.http.port,
                                     liveness=self.liveness).start()
        wait_for_broker(cfg.kafka.bootstrap)
        try:
            if cfg.kafka.create_topics:
                topics = {cfg.kafka.topic: cfg.kafka.partitions, cfg.dlq_topic: 1}
                if cfg.kafka.predictions_topic:
                    topics[cfg.kafka.predictions_topic] = 1
                ensure_topics(cfg.kafka, topics)
            self.sink = Sink(cfg.kafka, cfg.dlq_topic, cfg.kafka.predictions_topic, counts=self.counters.dlq)
            self.source = KafkaSource(cfg, claim=self._claim, on_revoke=self._on_revoke)
        except (KafkaError, OSError) as exc:
            raise kafka_failure(exc, cfg.kafka) from None
        log.info("%s consumes %s from broker %s; state in Redis %s", self._who(), cfg.kafka.topic, cfg.kafka.bootstrap,
                 redact_url(cfg.redis.url.get_secret_value()))
        self._interruptible = False
        self.state = "running"
        self._publish_status(force=True)
        return True

    def _restore(self) -> None:
        """Load the latest usable snapshot into the core; where each partition starts comes from it."""
        from ocld.core.snapshot import NewerSnapshotFormat

        try:
            snap = self.store.load_latest()
        except NewerSnapshotFormat as exc:
            raise FatalConfigError(f"the latest snapshot of {self._who()} cannot be read: {exc}. Run the newer ocld "
                                   "that wrote it, or roll back to a version this one can read (ocld query P "
                                   "--snapshot lists them)") from None
        if snap is None:
            self.ownership.durable = {}
            self.checkpointer.restored(None, None, 0, 0)
            log.info("%s: no usable snapshot, starting fresh (the registry is reset for every partition this "
                     "replica claims, and their logs are learned from the start)", self._who())
            return
        info = snap.info
        if info.get("n_features"):
            m = self.cfg.messages
            declared = m.n_features or (len(m.features) if m.features else None)
            if declared is not None and int(info["n_features"]) != declared:
                raise FatalConfigError(
                    f"messages.n_features/features declare {declared} features, but the latest snapshot (version "
                    f"{info['version']}) of {self._who()} was learned with {info['n_features']}: roll back to a "
                    "version learned with the declared width (ocld query P --snapshot lists them), or run under a "
                    "new pipeline name")
            self.intake.restored(int(info["n_features"]), f"from snapshot version {info['version']}"
                                 + (f" ({info['width_source']})" if info.get("width_source") else ""))
        self.core.restore(snap.parts, allow_pickle=self.cfg.allow_pickle)
        if info.get("fell_back_from") is not None:
            # The newer versions are unusable: make this one the latest, so that what they covered is learned again.
            self.store.set_latest(int(info["version"]))
            self._incident(Incident("snapshot_fallback", f"snapshot {info['fell_back_from']} is unusable; "
                                    f"resumed from version {info['version']}"))
        self.counters.restore(info)
        if self.sink is not None:
            self.sink.restore_counts(self.counters.dlq)
        self.ownership.durable = positions_from_snapshot(snap.offsets, info.get("fingerprints"))
        self.checkpointer.restored(int(info["version"]), float(info.get("created_at") or time.time()),
                                   self.core.labelled_seen, self.counters.records)
        log.info("%s: resumed from snapshot version %d (%d labelled samples, offsets %s)", self._who(),
                 info["version"], self.core.labelled_seen, snap.offsets)

    # -- the loop --------------------------------------------------------------------
    def run(self, until_idle_s: float | None = None, max_seconds: float | None = None,
            install_signals: bool = True) -> dict[str, Any]:
        """Run until SIGTERM/SIGINT, or until caught up and idle for ``until_idle_s`` seconds.

        Raises :class:`FatalConfigError` or :class:`DaemonFailed` (one-line messages) when it cannot
        go on; the status then says ``failed`` where the lease still allows writing it."""
        previous = {}
        if install_signals:
            previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        idle_since: float | None = None
        try:
            if not self._start():
                return self.summary()
            t_start = time.monotonic()
            while not self._stop:
                self.lease.tick()
                try:
                    self._check_lease()
                    polled = self._poll(2 if self._inflight else None)  # a poll in flight: finish it soon
                    if polled.values:
                        idle_since = None
                        t_batch = time.perf_counter()
                        for ready in self.intake.offer(polled):
                            self._handle(ready)
                        self.metrics.batch_latency.observe(time.perf_counter() - t_batch)
                        self.metrics.batch_size.observe(len(polled.values))
                        self._timers.records_at = time.monotonic()
                    else:
                        for ready in self.intake.due():
                            self._handle(ready)
                        self._drain()  # nothing new to read: finish what the learner process holds
                        if until_idle_s is not None and self._idle():
                            idle_since = idle_since or time.monotonic()
                            if time.monotonic() - idle_since >= until_idle_s:
                                break
                        else:
                            idle_since = None
                    self._housekeeping()
                except LearnerProcessError as exc:
                    self._restart_learner(exc)
                if max_seconds is not None and time.monotonic() - t_start > max_seconds:
                    break
            self._checkpoint(final=True)
        except _Interrupted:
            log.info("stopped during start-up")
        except (DaemonFailed, FatalConfigError) as exc:
            self._fail(str(exc))
            raise
        except LearnerProcessError as exc:
            self._fail(f"the learner process failed: {exc}")
            raise DaemonFailed(f"the learner process failed: {exc}") from None
        finally:
            self._shutdown()
            for sig, handler in previous.items():  # the caller's handlers again (ocld demo --keep-running: Ctrl-C)
                signal.signal(sig, handler)
        return self.summary()

    def _idle(self) -> bool:
        assert self.source is not None
        return bool(self.source.assignment()) and not self.intake.holding and self.source.lag() == 0

    def _poll(self, timeout_ms: int | None) -> Polled:
        """The next poll; what the source found wrong is dealt with before anything of it is learned."""
        assert self.source is not None
        try:
            polled = self.source.poll(timeout_ms)
        except KafkaError as exc:
            if _undecodable(exc):
                what = exc.args[0] if exc.args else type(exc).__name__
                raise DaemonFailed(f"a record batch cannot be decompressed ({type(exc).__name__}: {what}); the daemon "
                                   "stops rather than skip records: install the codec's library (lz4, zstandard, "
                                   "cramjam/python-snappy ship with ocld) and start it again") from None
            raise
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise deferred
        if polled.reconnected:
            self._drain()
            self.intake.discard()
            self.source.reverify()
        if polled.resets or polled.gaps:
            self._regressions(polled)
        return polled

    def _handle(self, polled: Polled) -> None:
        """Submit a poll to the core; finish the polls that may not stay in flight any longer."""
        dec = self.intake.decode(polled)
        self.core.submit(dec)
        self._inflight.append((polled, dec.bad))
        while len(self._inflight) > self.core.depth:
            self._finish_next()

    def _drain(self) -> None:
        """Finish every poll in flight (before anything that reads or replaces the core's state)."""
        while self._inflight:
            self._finish_next()

    def _finish_next(self) -> None:
        """Outputs, drift records and offsets of the oldest learned poll: only now does it count as consumed."""
        polled, decode_bad = self._inflight.popleft()
        res = self.core.collect()
        sink, source = self.sink, self.source
        assert sink is not None and source is not None
        for i, reason in decode_bad + res.bad:
            topic, part, off = polled.origin[i]
            sink.dead_letter(polled.values[i], topic, part, off, reason)
        if sink.predictions_topic and res.predictions:
            classes = self.core.classes
            for i, rid, label, proba in res.predictions:
                topic, part, off = polled.origin[i]
                sink.prediction(topic, part, off, rid, label, proba.tolist(), classes)
        for event, action in zip(res.events, res.actions):
            self._record_drift(event, action)
        source.advance(polled.next_offsets, polled.fingerprints)
        for topic, part, recs in polled.parts:
            self.ownership.dirty.add((topic, part))
            key = tp_field(topic, part)
            self.counters.partition_records[key] = self.counters.partition_records.get(key, 0) + len(recs)
        self.counters.records += len(polled.values)
        self._timers.rate_n += len(polled.values)
        fault_point("daemon.after_batch")

    # -- housekeeping ----------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.checkpointer.expired(now, self.core.labelled_seen, self.counters.records):
            self._checkpoint(force=self.checkpointer.force)
        if now >= self._timers.status_at:
            self._publish_status()
        if now >= self._timers.probe_at and now - self._timers.records_at > 2.0:
            self._probe_broker()
        if self.source is not None and self.source.unclaimed:
            self.source.retry_claims()
        if self.source is not None and self.source.fenced:
            self.source.reclaim_fenced()
        if self.fold is not None and now >= self._timers.fold_at:
            self._timers.fold_at = now + float(self.cfg.scale.fold_global_every_s or 0)
            self.fold.fold(self.core.learner)  # type: ignore[union-attr]  # no learner process with folding

    def _probe_broker(self) -> None:
        """While no records arrive, check that the broker still accepts connections (log changes once).
        (The positions are checked again by the source itself whenever its connection is made again.)"""
        self._timers.probe_at = time.monotonic() + 2.0
        up = reachable(self.cfg.kafka.bootstrap)
        if up != self.broker_reachable:
            if up:
                log.info("broker %s is reachable again; consuming resumes (positions are checked against its log)",
                         self.cfg.kafka.bootstrap)
            else:
                log.warning("broker %s is unreachable; the Kafka client reconnects with backoff and consuming "
                            "resumes when it returns (learned state and snapshots are unaffected)",
                            self.cfg.kafka.bootstrap)
        self.broker_reachable = up
        self.metrics.up.labels(self.cfg.name, "kafka").set(int(up))

    def _regressions(self, polled: Polled) -> None:
        """Partitions whose log went backwards are learned again from their new start; records that
        retention deleted before they were learned are reported."""
        assert self.source is not None
        self._drain()
        for tp, why in sorted(polled.resets.items()):
            old = self.source.offsets.get(tp)
            start = self.source.reset_partition(tp)
            self.ownership.dirty.add(tp)
            self.checkpointer.force = True
            self._incident(Incident("topic_reset", partition=tp_field(*tp), count=int(old or 0),
                                    detail=f"{why}; the new log is learned from offset {start}"))
        for tp, (expected, start) in sorted(polled.gaps.items()):
            self._incident(Incident("records_lost", partition=tp_field(*tp), count=start - expected,
                                    detail=f"offsets {expected}..{start - 1} were deleted (retention) before they "
                                           "were learned"))

    # -- the lease -------------------------------------------------------------------
    def _check_lease(self) -> None:
        state = self.lease.state
        if state == "held":
            return
        if state == "taken":
            raise DaemonFailed(
                f"{self._who()} lost its lease to {describe(self.lease.taken_by)}: another daemon or a rollback writes "
                "it now (this one stalled past redis.lease_ttl_s, or was forced out). It stops without writing; "
                f"what it learned after snapshot {self.model_version} is left to the new writer")
        try:
            retaken = self.ownership.retake_lease()
        except redis.RedisError as exc:
            redis_fatal(self.cfg, exc, "taking the lease again")
            return  # an outage: writes fail and are retried; the lease is tried again next time
        if not retaken:
            self.lease.state = "taken"
            self.lease.taken_by = self.lease.holder()
            self._check_lease()
            return
        verdict = self.ownership.after_gap(self.model_version)
        log.warning("the lease %s had lapsed and is taken again; %s", self.lease.key,
                    {"ok": "nothing changed meanwhile", "rewind": "another writer switched 'latest' meanwhile",
                     "lost": "Redis lost this pipeline's state"}[verdict])
        if verdict == "rewind":
            self._incident(Incident("lease_gap", "another writer switched 'latest' while this daemon's lease had "
                                    "lapsed; reloading it and learning on from its offsets"))
            self._rewind()
        elif verdict == "lost":
            self._reestablish("the lease, 'latest' or the partition claims vanished")

    def _reestablish(self, why: str) -> None:
        """Redis lost this pipeline's state: the model in memory is exact for what was consumed, so
        claim the partitions again at the in-memory positions and snapshot at once."""
        assert self.source is not None
        self._drain()
        self._incident(Incident("redis_data_loss", f"{why}; re-established from the in-memory model (exact for the "
                                "offsets consumed) with a fresh snapshot"))
        owned = self.source.owned()
        positions: Positions = {tp: (self.source.offsets.get(tp), self.source.fingerprints.get(tp)) for tp in owned}
        self.ownership.reclaim(positions)
        self.ownership.dirty |= owned
        self.checkpointer.force = True

    # -- checkpoint ------------------------------------------------------------------
    def _checkpoint(self, final: bool = False, force: bool = False) -> bool:
        """flush outputs -> snapshot + switch -> commit offsets (``stream.checkpoint``). True when durable."""
        if self.sink is None or self.source is None:
            return False
        for attempt in (1, 2):
            self._drain()  # a snapshot holds exactly what its offsets cover
            outcome = self.checkpointer.commit(self._take, self.sink, self.source, self.ownership,
                                               self.counters.records, self.core.labelled_seen, final, force)
            if outcome == "fenced":
                self._rewind(self.checkpointer.error)
                return False
            if outcome == "missing" and attempt == 1:
                self._reestablish(f"the partition claims vanished ({self.checkpointer.error})")
                force = True
                continue
            if outcome == "missing":
                self.checkpointer.failed(str(self.checkpointer.error), final)
            break
        if outcome == "durable":
            self._publish_status(force=True)
        return outcome in ("durable", "unchanged")

    def _take(self) -> Taken:
        """What a snapshot holds now: the core's parts, every partition's position (also those this
        replica no longer holds: they say what its state has learned), and the counters."""
        assert self.source is not None and self.sink is not None
        offsets = {tp: off for tp, (off, _) in self.ownership.durable.items() if off is not None}
        offsets.update(self.source.offsets)
        fps = {tp: fp for tp, (_, fp) in self.ownership.durable.items()}
        fps.update({tp: self.source.fingerprints.get(tp) for tp in self.source.offsets})
        fps_by_topic: dict[str, dict[str, str]] = {}
        for (t, p), fp in fps.items():
            if fp and (t, p) in offsets:
                fps_by_topic.setdefault(t, {})[str(p)] = str(fp)
        info = {
            "pipeline": self.cfg.name, "samples_seen": self.core.samples_seen, "labelled_seen": self.core.labelled_seen,
            **self.counters.snapshot(), **self.sink.counts(), "n_features": self.intake.codec.n_features,
            "width_source": self.intake.codec.width_source, "learner": self.cfg.learner.name,
            "created_at": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "replica": self.replica,
            "fingerprints": fps_by_topic,
        }
        return Taken(self.core.to_parts(), offsets, fps, info)

    # -- scale-out and recovery -------------------------------------------------------
    def _claim(self, tps: list[tuple[str, int]]) -> Positions:
        """Claim newly assigned partitions (called by the source on assignment, and again for a
        claim that failed). A claim that starts a partition below what the model in memory has
        learned of it (its revocation snapshot failed, e.g. Redis was down across the rebalance)
        would learn those records twice: the model goes back to its last durable snapshot first."""
        assert self.source is not None
        self.intake.discard(set(tps))
        positions = self.ownership.claim(tps)
        learned = {tp: self.source.offsets[tp] for tp in sorted(tps) if tp in self.source.offsets}
        ahead = {tp: (mem, start) for tp, mem in learned.items()
                 if (start := positions[tp][0]) is None or mem > start}
        if ahead:
            self._incident(Incident(
                "rewound", count=len(ahead), detail=(
                    "claimed " + ", ".join(f"{t}[{p}] from {'the start' if start is None else start} while the model "
                                           f"had learned it up to {mem}" for (t, p), (mem, start) in ahead.items())
                    + f" (the snapshot when it was revoked failed); what was learned after snapshot "
                    f"{self.model_version} is discarded and learned again")))
            self._rewind()
            positions = self.ownership.claim(tps)
        return positions

    def _rewind(self, exc: Any = None) -> None:
        """Discard everything learned since the last durable snapshot and reload it.

        ``exc`` (a Fenced switch): another replica claimed partitions learned from meanwhile; they are
        paused until Kafka assigns them again (or claimed back: KafkaSource.reclaim_fenced). Without
        it: another writer switched ``latest`` (a rollback during a lease gap), the learner process
        died, or a claim started a partition below what memory had learned."""
        assert self.source is not None
        self._drain()
        self.intake.discard()
        if exc is not None:
            self.fences += 1
            lost = {(t, int(p)) for t, _, p in (x.rpartition(":") for x in exc.lost)}
            log.warning("%s (this replica stalled past the session timeout, or its revocation snapshot failed). "
                        "Discarding everything learned since snapshot %s and reloading it; partitions %s are paused "
                        "until Kafka assigns them again (still assigned here after the session timeout and poll "
                        "interval, they are claimed back)", exc, self.model_version, sorted(exc.lost))
            self.source.fence(lost)
        if self.fold is not None:
            self.fold.forget()
        self.core.reset()
        self.counters.forget(dlq=self.sink.counts() if self.sink else self.counters.dlq)
        self._restore()
        self.source.rewound(self.ownership.durable)
        owned = self.source.owned()
        self.ownership.keep(owned)
        self.source.reseek(self.ownership.claim(sorted(owned)) if owned else {})
        self.ownership.dirty.clear()

    def _restart_learner(self, exc: LearnerProcessError) -> None:
        """The learner process died: start a new one from the last durable snapshot, unless it keeps dying."""
        now = time.monotonic()
        self._learner_deaths.append(now)
        while self._learner_deaths and now - self._learner_deaths[0] > LEARNER_RESTARTS[1]:
            self._learner_deaths.popleft()
        if len(self._learner_deaths) > LEARNER_RESTARTS[0]:
            raise DaemonFailed(f"the learner process died {len(self._learner_deaths)} times within "
                               f"{LEARNER_RESTARTS[1]:.0f} s (last: {exc}); not restarting it again") from None
        self._incident(Incident("learner_restarted", f"{exc}; a new learner process resumes from snapshot "
                                f"{self.model_version} and learns again what came after it"))
        self.core.close()
        self.core = RemoteCore(self.cfg)
        self._inflight.clear()
        self._rewind()

    def _on_revoke(self, revoked: list[Any]) -> None:
        log.info("partitions revoked: %s; snapshot and commit before giving them up",
                 sorted(f"{t}[{p}]" for t, p in revoked))
        try:
            self.intake.discard()
            self._checkpoint()
        except BaseException as exc:  # noqa: BLE001 (the Kafka client swallows callback errors: re-raised by the loop)
            self._deferred = exc

    # -- drift and incidents ---------------------------------------------------------
    def _record_drift(self, event: Any, action: str) -> None:
        if action == "adapt" and self.model_version is not None:
            # Keep the snapshot taken just before the adaptation, so it can be rolled back to.
            try:
                self.store.pin(self.model_version)
            except (redis.RedisError, LeaseLost) as exc:
                log.warning("could not pin snapshot %s before adaptation: %s", self.model_version, exc)
        record = {"index": event.index, "detector": event.detector, "kind": event.kind,
                  "statistic": event.statistic if event.statistic is not None else "",
                  "action": action, "at": time.time(), "pinned_version": self.model_version or 0}
        log.info("drift detected at labelled sample %d by %s (%s); action: %s", event.index, event.detector,
                 event.kind, action)
        try:
            self.status_store.add_drift(record, self.core.drift_count)
        except (redis.RedisError, LeaseLost) as exc:
            log.warning("could not record drift event in Redis: %s", exc)

    def _incident(self, incident: Incident) -> None:
        """Count, log and publish something the daemon found and repaired."""
        self.counters.incidents[incident.kind] = self.counters.incidents.get(incident.kind, 0) + 1
        log.warning("incident %s%s: %s", incident.kind, f" on {incident.partition}" if incident.partition else "",
                    incident.detail)
        try:
            self.status_store.add_incident(incident.as_record())
        except (redis.RedisError, LeaseLost) as exc:
            log.warning("could not record the incident in Redis (it is counted in the next snapshot): %s", exc)

    # -- status ----------------------------------------------------------------------
    def shown_state(self) -> str:
        return "degraded" if self.state == "running" and self.checkpointer.degraded else self.state

    def status_now(self) -> Status | None:
        """The status as it is now, for a scrape of /metrics (from the HTTP thread: the consumer is not
        touched; lag and partitions are those of the status last built)."""
        last = self.status
        if last is None:
            return None
        return self.build_status(lag=last.lag, partitions=last.partitions)

    def build_status(self, lag: Any = ..., partitions: Any = ...) -> Status:
        cp, sink, source = self.checkpointer, self.sink, self.source
        now = time.monotonic()
        dt = now - self._timers.rate_t
        if lag is ... and dt >= 0.5:  # the loop's build measures throughput (a scrape only reads it)
            self._timers.throughput = self._timers.rate_n / dt
            self._timers.rate_t, self._timers.rate_n = now, 0
        core = self.core.status_fields()
        predict_only = int(core.pop("predicted", 0))
        return Status(
            state=self.shown_state(), failure=self.failure or "", host=socket.gethostname(), pid=os.getpid(),
            started_at=self.started_at, updated_at=time.time(), broker_reachable=self.broker_reachable,
            redis_outages=cp.redis_outages, degraded_since=cp.degraded_since, last_outage_s=cp.last_outage_s,
            incidents=dict(self.counters.incidents), records_seen=self.counters.records,
            predicted=int(core.get("labelled_seen", 0)) + predict_only, predict_only=predict_only,
            throughput=round(self._timers.throughput, 1),
            lag=lag if lag is not ... else (source.lag() if source else None), topic=self.cfg.kafka.topic,
            partitions=partitions if partitions is not ... else (
                [f"{t}[{p}]" for t, p in source.assignment()] if source else []),
            learn_seconds=round(float(getattr(self.core, "learn_seconds", 0.0)), 6), learner=self.cfg.learner.name,
            dlq_count=self.dlq_count,
            dlq_by_reason=dict(sink.dlq_by_reason) if sink else dict(self.counters.dlq.get("dlq_by_reason") or {}),
            dlq_dropped=sink.dlq_dropped if sink else 0, predictions_dropped=sink.predictions_dropped if sink else 0,
            n_features=self.intake.codec.n_features, width_source=self.intake.width_source,
            model_version=self.model_version, last_snapshot_at=cp.last_snapshot_at,
            snapshot_seconds=round(cp.snapshot_seconds, 4), unsnapshotted_s=round(self.unsnapshotted_age(), 3),
            degraded=cp.degraded, replica=self.replica, partition_records=dict(self.counters.partition_records),
            fences=self.fences, folded_replicas=self.fold.folded_replicas if self.fold else [],
            **{k: (None if v == "" else v) for k, v in core.items() if k in Status.model_fields},
            **{k: v for k, v in self.core.learner_metrics().items()},
        )

    def _publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._timers.status_at:
            return
        self._timers.status_at = now + self.cfg.status.interval_s
        self.status = status = self.build_status()
        try:
            self.status_store.update(status.to_redis())
            self.metrics.up.labels(self.cfg.name, "redis").set(1)
            self.checkpointer.status_written(self.cfg.status.interval_s)
            if now >= self._timers.metrics_at and self.state == "running" and self.core.labelled_seen:
                self._timers.metrics_at = now + self.cfg.status.metrics_every_s
                fields = status.model_dump()
                self.status_store.add_metrics({"t": time.time(), **{k: fields[k] for k in (
                    "samples_seen", "labelled_seen", "accuracy", "accuracy_total", "log_loss", "throughput",
                    "drift_count", "drift_count_error", "drift_count_input", "model_version", "dlq_count", "lag")},
                    **self.core.learner_metrics()})
        except LeaseLost:
            return  # the loop decides (_check_lease)
        except redis.RedisError as exc:
            redis_fatal(self.cfg, exc, "writing the status")
            self.metrics.up.labels(self.cfg.name, "redis").set(0)
            self.checkpointer.status_failed(redis_error(exc))

    # -- health ----------------------------------------------------------------------
    def unsnapshotted_age(self) -> float:
        """Seconds that consumed work has waited for a durable snapshot (0 when all of it is durable)."""
        return self.checkpointer.unsnapshotted_age(self.counters.records)

    def liveness(self) -> dict[str, Any]:
        """For /livez: the loop is moving (or the daemon is starting or stopping). A daemon that waits for its
        broker, Redis or lease is alive and doing the right thing; one whose loop is stuck is not."""
        age = time.monotonic() - self.lease.last_tick
        alive = self.state in ("starting", "stopping") or age < LOOP_STALL_S
        return {"alive": alive, "state": self.shown_state(), "loop_age_s": round(age, 3), "limit_s": LOOP_STALL_S}

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: running, holding the lease, broker and Redis reachable, state durable within
        the limit, every assigned partition claimed and none fenced (thread-safe reads)."""
        reasons = []
        if self.state == "failed":
            reasons.append(f"failed: {self.failure}")
        elif self.state != "running":
            reasons.append(self.state)
        if self.lease.state != "held":
            reasons.append(f"lease {self.lease.state}")
        kafka_ok = reachable(self.cfg.kafka.bootstrap)
        if not kafka_ok:
            reasons.append("broker unreachable")
        try:
            self.redis.ping()
            redis_ok = True
        except redis.RedisError:
            redis_ok = False
            reasons.append("Redis unreachable")
        age = self.unsnapshotted_age()
        limit = self.cfg.http.max_snapshot_age_s
        if age > limit:
            reasons.append(f"unsnapshotted work is {age:.0f} s old (limit {limit:g} s)")
        if self.source is not None and self.source.unclaimed:
            reasons.append(f"{len(self.source.unclaimed)} assigned partitions could not be claimed yet")
        if self.source is not None and self.source.fenced:
            reasons.append(f"{len(self.source.fenced)} assigned partitions are paused: another replica claimed them")
        return {"ready": not reasons, "reasons": reasons, "state": self.shown_state(), "kafka": kafka_ok,
                "redis": redis_ok, "snapshot_age_s": round(age, 3), "model_version": self.model_version,
                "degraded": self.checkpointer.degraded, "pipeline": self.cfg.name}

    # -- stopping --------------------------------------------------------------------
    def _signal(self, signum: int, frame: Any) -> None:
        log.info("received %s: finishing the batch in hand, then a final snapshot", signal.Signals(signum).name)
        self._stop = True
        if self._interruptible:
            raise _Interrupted()

    def stop(self) -> None:
        self._stop = True

    def _fail(self, reason: str) -> None:
        """Say ``failed`` with the reason (status, /healthz) before the daemon exits."""
        self.state = "failed"
        self.failure = reason
        log.error("%s", reason)

    def _shutdown(self) -> None:
        self._interruptible = False
        final = self.state if self.state == "failed" else "stopped"
        if self.state != "failed":
            self.state = "stopping"
        if self.source is not None:
            if self.lease.state == "taken":
                # Another writer owns this pipeline now: leave the consumer group by expiry, not by a
                # LeaveGroup. tansu keeps a leader that leaves while the new writer's join is pending,
                # and the group then never completes a rebalance again; expiry works on every broker.
                log.info("not leaving the consumer group explicitly: the new writer takes the partitions once "
                         "this member's session expires (kafka.session_timeout_ms)")
            else:
                self.source.close()  # may call _on_revoke: its snapshot finds nothing new
        if self.sink is not None:
            self.sink.close(timeout_s=2.0)
        self.state = final
        if self.lease.state == "held":
            try:
                self.status_store.update(self.build_status().to_redis())
            except (redis.RedisError, LeaseLost) as exc:
                log.warning("could not mark the pipeline %s in Redis: %s", final, exc)
            self.lease.release()
        else:
            self.lease.stop_renewing()
        if self.http is not None:
            self.http.stop()
        self.core.close()

    def summary(self) -> dict[str, Any]:
        s = self.core.summary()
        return {"pipeline": self.cfg.name, "records_seen": self.counters.records,
                "samples_seen": self.core.samples_seen, "labelled_seen": self.core.labelled_seen,
                "accuracy": s["accuracy"], "nochange_accuracy": s["nochange_accuracy"],
                "balanced_accuracy": s["balanced_accuracy"], "log_loss": s["log_loss"], "dlq_count": self.dlq_count,
                "drift_count": self.core.drift_count, "model_version": self.model_version, "state": self.state,
                "incidents": dict(self.counters.incidents), "elapsed_s": time.time() - self.started_at}


class _Counters:
    """What the daemon counts itself (the core counts samples): restored from a snapshot, added to."""

    def __init__(self) -> None:
        self.records = 0  # Kafka records consumed
        self.partition_records: dict[str, int] = {}  # "topic:partition" -> records this replica consumed
        self.incidents: dict[str, int] = {}  # kind -> count
        self.dlq: dict[str, Any] = {}  # the DLQ totals of the snapshot (the sink adds to them)

    def restore(self, info: dict[str, Any]) -> None:
        self.records = int(info.get("records_seen", 0))
        self.partition_records = {str(k): int(v) for k, v in (info.get("partition_records") or {}).items()}
        self.incidents = {str(k): int(v) for k, v in (info.get("incidents") or {}).items()}
        self.dlq = {k: info.get(k) for k in ("dlq_count", "dlq_by_reason", "dlq_dropped", "predictions_dropped")}

    def forget(self, dlq: dict[str, Any]) -> None:
        """Before a snapshot is reloaded: its counters replace these (the DLQ ones keep counting)."""
        self.records = 0
        self.partition_records = {}
        self.dlq = dict(dlq)

    def snapshot(self) -> dict[str, Any]:
        return {"records_seen": self.records, "partition_records": dict(self.partition_records),
                "incidents": dict(self.incidents)}


class _Timers:
    """When the next status write, broker probe and fold are due, and the throughput measure."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.status_at = self.metrics_at = self.probe_at = self.fold_at = 0.0
        self.records_at = now  # when records last arrived
        self.rate_t, self.rate_n, self.throughput = now, 0, 0.0


def _undecodable(exc: BaseException) -> bool:
    """A record batch the client cannot decompress (a codec library missing or a corrupt batch)."""
    return type(exc).__name__ in ("UnsupportedCodecError", "CorruptRecordError", "CorruptRecordException") or \
        "codec" in str(exc).lower()
