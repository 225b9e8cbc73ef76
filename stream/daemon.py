"""The daemon loop: poll -> decode -> dead-letter bad records -> predict/learn -> drift -> snapshot -> commit.

Order at every checkpoint (never changed): flush outputs (DLQ, predictions) -> write the
snapshot and switch ``latest`` -> commit offsets to the group. Because the consumer seeks
to the snapshot's offsets on every assignment, a crash anywhere re-learns exactly the
records the last snapshot does not cover: every sample is learned exactly once in the
surviving state.

Redis outages (the rule): learning continues in memory, and offsets are never committed
beyond the last durable snapshot. A failed snapshot is retried with exponential backoff
(0.5 s doubling to 10 s); status writes are retried every ``status.interval_s``. The
first status write that succeeds again marks the status ``degraded`` (with
``redis_outages`` and ``degraded_since``) and schedules a catch-up snapshot one status
interval later (so a client polling the status sees ``degraded``); once that snapshot is
durable the status returns to ``running`` and ``last_outage_s`` records how long the state
was not durable. A crash during the outage loses
nothing: the restart re-learns from the last durable snapshot. Any Redis error (refused,
timeout, loading, read-only, out of memory) is handled this way; none stops the daemon.

Broker outages: kafka-python reconnects by itself with backoff; the daemon probes the
bootstrap address while no records arrive and logs one line when the broker becomes
unreachable and one when it is back. Start-up waits for the broker with backoff. A flush of
the outputs that fails postpones the snapshot (outputs are flushed before offsets move).

SIGTERM/SIGINT: finish the batch in hand, snapshot, commit, mark ``stopped``, exit 0.

Scale-out (several daemons, one pipeline name, one consumer group; Kafka assigns the
partitions). Design: per-replica learner state with per-partition offsets.
- Each replica (``scale.replica``) has its own learner, snapshots and status under
  ``ocld:{p}:replica:{name}``. A shared registry holds, per partition, the next offset that
  a durable snapshot covers and the "replica|epoch" claim of its current owner.
- On assignment the replica claims the partitions (a new epoch each time) and seeks to the
  registry's offsets, so it continues exactly where the previous owner's last durable
  snapshot ended. On revocation it finishes the batch in hand, snapshots and commits
  before Kafka hands the partitions on.
- The snapshot switch is fenced: it succeeds only if every partition learned from since
  the last snapshot is still held under this replica's claim, and it advances those
  partitions' registry offsets in the same atomic step. If another replica claimed one
  meanwhile (this one stalled past the session timeout, or its revocation snapshot failed),
  the switch changes nothing; the replica discards its unsnapshotted learning, reloads its
  last durable snapshot, pauses the lost partitions and re-reads its own from the registry.
So every record is learned exactly once across the replicas' surviving states (a
replica that stops for good leaves its state in Redis, where ``ocld query --global`` still
counts it). Outputs (dead letters, predictions) are at-least-once across a fence.
With AnalyticRidge, ``scale.fold_global_every_s`` folds the other replicas' latest
statistics into this replica's head, so it predicts with the model of all partitions.
"""

from __future__ import annotations

import logging
import signal
import socket
import os
import time
from collections import deque
from typing import Any

import orjson
import redis
from kafka.errors import KafkaError

from ocld.stream.broker import ensure_topics
from ocld.core.codec import Codec
from ocld.stream.config import Config
from ocld.stream.faults import fault_point
from ocld.stream.http import DaemonMetrics, HealthServer
from ocld.core.runtime import LearningCore, limit_threads
from ocld.stream.sink import Sink
from ocld.core.snapshot import Snapshot
from ocld.stream.source import KafkaSource
from ocld.stream.store import Fenced, SnapshotStore, StatusStore, connect, replica_names, tp_field
from ocld.stream.worker import RemoteCore

log = logging.getLogger("ocld.daemon")


class Daemon:
    def __init__(self, cfg: Config) -> None:
        if cfg.kafka.bootstrap == "embedded" or cfg.redis.url.get_secret_value() == "embedded":
            raise ValueError("Daemon needs resolved servers; use stream.embedded.services() or `ocld run`")
        self.cfg = cfg
        limit_threads()
        r = cfg.redis
        self.redis = connect(r.url.get_secret_value(), r.password.get_secret_value() if r.password else None, r.username)
        self.replica = cfg.scale.replica_id
        self.store = SnapshotStore(self.redis, cfg.name, r.namespace, cfg.snapshot.keep, cfg.snapshot.chunk_bytes,
                                   replica=self.replica, max_pinned=cfg.snapshot.max_pinned)
        self.status = StatusStore(self.redis, cfg.name, r.namespace, r.heartbeat_ttl_s, r.metrics_maxlen, r.drift_maxlen,
                                  replica=self.replica)
        self.codec = Codec(cfg.messages.format, cfg.messages.features, cfg.messages.n_features,
                           cfg.messages.max_record_bytes, cfg.messages.max_abs_value)
        # learner_process: the core runs in a child process and polls in flight wait in _inflight
        self.core: LearningCore | RemoteCore = RemoteCore(cfg) if cfg.learner_process else LearningCore.from_config(cfg)
        if isinstance(self.core, LearningCore):
            self.core.on_drift = self._on_drift
        self._inflight: deque[Any] = deque()
        self.model_version: int | None = None
        self.started_at = time.time()
        self.dlq_count = 0
        self.records_seen = 0
        self.degraded = False
        self._stop = False
        self._last_snapshot_t = time.monotonic()
        self._labelled_at_snapshot = 0
        self._records_at_snapshot = 0
        self._next_status_t = 0.0
        self._next_metrics_t = 0.0
        self._retry_at = 0.0
        self._backoff = 0.5
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.throughput = 0.0
        self.source: KafkaSource | None = None
        self.sink: Sink | None = None
        self.snapshot_seconds = 0.0
        self.last_snapshot_at: float | None = None  # wall time of the last durable snapshot
        self.redis_outages = 0
        self.degraded_since: float | None = None
        self.last_outage_s: float | None = None
        self.broker_reachable = True
        self._last_records_t = time.monotonic()
        self._next_probe_t = 0.0
        self._redis_down = False
        self._last_lag: int | None = None
        self.metrics = DaemonMetrics(cfg.name)
        self.http: HealthServer | None = None
        self._tokens: dict[tuple[str, int], str] = {}  # partition -> "replica|epoch" claimed
        self._dirty: set[tuple[str, int]] = set()  # partitions learned from since the last durable snapshot
        self.partition_records: dict[str, int] = {}  # "topic:partition" -> records this replica consumed
        self.fences = 0
        self._next_fold_t = 0.0
        self.folded_replicas: list[str] = []
        # other replica -> (snapshot version, its learner) as last folded; None: the head's folded part is unknown
        self._others: dict[str, tuple[int, Any]] | None = None

    # -- start-up --------------------------------------------------------------------
    def _restore(self) -> dict[str, dict[int, int]]:
        snap = self._redis_retry("loading the latest snapshot", self.store.load_latest)
        self._redis_retry("cleaning incomplete snapshots", self.store.clean_orphans)
        if snap is None:
            log.info("pipeline %r: no snapshot, starting fresh", self.cfg.name)
            return {}
        self.core.restore(snap.parts, allow_pickle=self.cfg.allow_pickle)
        if snap.info.get("fell_back_from") is not None:
            # The newer versions are unusable: make this one the latest, and move the registry's
            # offsets of the partitions this replica last owned back to it, so that what the
            # unusable versions covered is learned again.
            self._redis_retry("switching to the usable snapshot", lambda: self.store.set_latest(int(snap.info["version"])))
        n_features = snap.info.get("n_features")
        if n_features and self.codec.n_features is None:
            self.codec.n_features = int(n_features)
        self.model_version = int(snap.info["version"])
        self.last_snapshot_at = float(snap.info.get("created_at") or time.time())
        self.dlq_count = int(snap.info.get("dlq_count", 0))
        self.records_seen = int(snap.info.get("records_seen", 0))
        self.partition_records = {str(k): int(v) for k, v in (snap.info.get("partition_records") or {}).items()}
        self._labelled_at_snapshot = self.core.labelled_seen
        self._records_at_snapshot = self.records_seen
        log.info("pipeline %r: resumed from snapshot version %d (%d labelled samples, offsets %s)",
                 self.cfg.name, self.model_version, self.core.labelled_seen, snap.offsets)
        return snap.offsets

    def _redis_retry(self, what: str, fn, attempts: int = 10):
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError,
                    redis.exceptions.NoPermissionError) as exc:
                # Retrying cannot help; say what to change, never what the password was.
                user = self.cfg.redis.username or "default"
                raise ValueError(
                    f"{what}: Redis refused the credentials of user {user!r} ({type(exc).__name__}); check "
                    "redis.username and redis.password (or OCLD_REDIS_PASSWORD), and the user's ACL") from None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == attempts:
                    raise
                log.warning("%s: Redis unreachable (%s); retry %d in %.1f s", what, _redis_error(exc), attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- the loop --------------------------------------------------------------------
    def run(self, until_idle_s: float | None = None, max_seconds: float | None = None,
            install_signals: bool = True) -> dict[str, Any]:
        """Run until SIGTERM/SIGINT, or until caught up and idle for ``until_idle_s`` seconds."""
        cfg = self.cfg
        if install_signals:
            signal.signal(signal.SIGTERM, self._signal)
            signal.signal(signal.SIGINT, self._signal)
        self._redis_retry("checking that no other daemon runs this replica", self._check_unique)
        offsets = self._restore()
        self.metrics.baseline(self)
        if cfg.http.port is not None:
            self.http = HealthServer(self.metrics, self.health, cfg.http.host, cfg.http.port,
                                     before_scrape=self._scrape_gauges).start()
        t_start = time.monotonic()
        idle_since: float | None = None
        try:
            self._wait_for_broker()
            if self._stop:
                return self.summary()  # stopped while waiting for the broker (``finally`` marks it stopped)
            if cfg.kafka.create_topics:
                topics = {cfg.kafka.topic: cfg.kafka.partitions, cfg.dlq_topic: 1}
                if cfg.kafka.predictions_topic:
                    topics[cfg.kafka.predictions_topic] = 1
                ensure_topics(cfg.kafka, topics)
            self.sink = Sink(cfg.kafka, cfg.dlq_topic, cfg.kafka.predictions_topic)
            self.source = KafkaSource(cfg, offsets, on_revoke=self._on_revoke, claim=self._claim)
            self._publish_status("running", force=True)
            t_start = time.monotonic()
            while not self._stop:
                # With a poll in the learner process, wait for records only briefly: an empty poll then
                # finishes it (_drain), so its outputs and status do not wait out a whole max_wait_ms.
                polled = self.source.poll(min(cfg.kafka.max_wait_ms, 2) if self._inflight else None)
                if polled.values:
                    idle_since = None
                    t_batch = time.perf_counter()
                    self._handle(polled)
                    self.metrics.batch_latency.observe(time.perf_counter() - t_batch)
                    self.metrics.batch_size.observe(len(polled.values))
                    self.metrics.sync_from(self)
                    self._last_records_t = time.monotonic()
                else:
                    self._drain()  # nothing new to read: finish what the learner process holds
                    now = time.monotonic()
                    if until_idle_s is not None and self.source.assignment():
                        lag = self.source.lag()
                        if lag == 0:
                            idle_since = idle_since or now
                            if now - idle_since >= until_idle_s:
                                break
                        else:
                            idle_since = None
                self._housekeeping()
                if max_seconds is not None and time.monotonic() - t_start > max_seconds:
                    break
            if self.sink is not None and self.source is not None:
                self._checkpoint(final=True)
        finally:
            self._shutdown()
        return self.summary()

    def _handle(self, polled) -> None:
        dec = self.codec.decode(polled.values)
        if isinstance(self.core, RemoteCore):
            # learn this poll in the child while the next one is read; finish the previous one meanwhile
            self.core.submit(dec)
            self._inflight.append((polled, dec))
            while len(self._inflight) > 1:
                self._finish_next()
            return
        self._finish(polled, dec, self.core.process(dec))

    def _finish_next(self) -> None:
        assert isinstance(self.core, RemoteCore)
        polled, dec = self._inflight.popleft()
        res = self.core.collect()
        for event in res.events:
            if self.core.action_for(event) == "adapt":
                self._on_drift(event)  # as LearningCore calls it, before the event is recorded
        self._finish(polled, dec, res)

    def _drain(self) -> None:
        """Finish every poll the learner process holds (before anything that reads or replaces its state)."""
        while self._inflight:
            self._finish_next()

    def _finish(self, polled, dec, res) -> None:
        """Outputs, drift records and offsets of a learned poll: only now does it count as consumed."""
        sink = self.sink
        assert sink is not None and self.source is not None
        for i, reason in dec.bad + res.bad:
            topic, part, off = polled.origin[i]
            sink.dead_letter(polled.values[i], topic, part, off, reason)
        self.dlq_count = sink.dlq_count
        if sink.predictions_topic and res.predictions:
            classes = self.core.classes
            for i, rid, label, proba in res.predictions:
                topic, part, off = polled.origin[i]
                sink.prediction(topic, part, off, rid, label, proba.tolist(), classes)
        for event in res.events:
            self._record_drift(event)
        self.source.advance(polled.next_offsets)
        for topic, part, recs in polled.parts:
            self._dirty.add((topic, part))
            key = tp_field(topic, part)
            self.partition_records[key] = self.partition_records.get(key, 0) + len(recs)
        self.records_seen += len(polled.values)
        self._rate_n += len(polled.values)
        fault_point("daemon.after_batch")

    def _housekeeping(self) -> None:
        now = time.monotonic()
        snap = self.cfg.snapshot
        due = (self.core.labelled_seen - self._labelled_at_snapshot >= snap.every_samples
               or (now - self._last_snapshot_t >= snap.every_seconds and self.records_seen != self._records_at_snapshot)
               or self.degraded)  # catch up as soon as Redis takes writes again
        if due and now >= self._retry_at:
            self._checkpoint()
        if now >= self._next_status_t:
            self._publish_status("degraded" if self.degraded else "running")
        if now >= self._next_probe_t and now - self._last_records_t > 2.0:
            self._probe_broker()
        if self.source is not None and self.source.unclaimed:
            self.source.retry_claims()
        fold = self.cfg.scale.fold_global_every_s
        if fold is not None and now >= self._next_fold_t:
            self._next_fold_t = now + fold
            self._fold_global()

    def _wait_for_broker(self) -> None:
        """At start-up, wait (backoff 0.5 s doubling to 10 s, until SIGTERM) for the broker to accept connections."""
        delay, attempt = 0.5, 0
        bootstrap = self.cfg.kafka.bootstrap
        while not _reachable(bootstrap):
            attempt += 1
            log.warning("broker %s unreachable at start-up (attempt %d); retry in %.1f s", bootstrap, attempt, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self._stop:
                    return  # SIGTERM while waiting: the loop does not start, nothing to snapshot
                time.sleep(0.1)
            delay = min(delay * 2, 10.0)
        if attempt:
            log.info("broker %s is reachable; starting to consume", bootstrap)

    def _probe_broker(self) -> None:
        """While no records arrive, check that the broker still accepts connections (log changes once)."""
        self._next_probe_t = time.monotonic() + 2.0
        reachable = _reachable(self.cfg.kafka.bootstrap)
        if reachable != self.broker_reachable:
            if reachable:
                log.info("broker %s is reachable again; consuming resumes", self.cfg.kafka.bootstrap)
            else:
                log.warning("broker %s is unreachable; the Kafka client reconnects with backoff and consuming "
                            "resumes when it returns (learned state and snapshots are unaffected)",
                            self.cfg.kafka.bootstrap)
        self.broker_reachable = reachable
        self.metrics.up.labels(self.cfg.name, "kafka").set(int(reachable))

    # -- checkpoint ------------------------------------------------------------------
    def _checkpoint(self, final: bool = False) -> bool:
        """flush outputs -> snapshot + switch -> commit offsets. Returns True when durable."""
        assert self.sink is not None and self.source is not None
        self._drain()  # a snapshot holds exactly what its offsets cover
        if self.records_seen == self._records_at_snapshot and (self.model_version is not None or not final):
            if self.degraded and not self._redis_down:
                self._recovered(self.model_version)  # an outage with nothing to catch up on
            return True  # nothing new since the last durable snapshot
        t0 = time.perf_counter()
        try:
            self.sink.flush(10.0)
        except KafkaError as exc:
            # Outputs (DLQ, predictions) must be durable before offsets move: postpone.
            self._snapshot_failed(f"outputs could not be flushed to the broker ({type(exc).__name__})", final)
            return False
        try:
            snap = Snapshot(self.core.to_parts(), self.source.offsets_by_topic(), {
                "pipeline": self.cfg.name, "samples_seen": self.core.samples_seen,
                "labelled_seen": self.core.labelled_seen, "records_seen": self.records_seen,
                "dlq_count": self.dlq_count, "n_features": self.codec.n_features, "learner": self.cfg.learner.name,
                "created_at": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
                "replica": self.replica, "partition_records": dict(self.partition_records),
            })
            dirty = sorted(self._dirty)
            fence = {tp_field(*tp): self._tokens[tp] for tp in dirty if tp in self._tokens}
            registry = {tp_field(*tp): self.source.offsets[tp] for tp in dirty if tp in self.source.offsets}
            version = self.store.write(snap, fence=fence, registry_offsets=registry)
        except Fenced as exc:
            self._rewind(exc)
            return False
        except redis.RedisError as exc:
            self._redis_down = True
            self._snapshot_failed(f"Redis unreachable or refusing writes ({_redis_error(exc)})", final)
            return False
        fault_point("daemon.before_commit")
        self._dirty.clear()
        self._keep_owned()
        self.source.commit()
        self.model_version = version
        self._last_snapshot_t = time.monotonic()
        self.last_snapshot_at = time.time()
        self._labelled_at_snapshot = self.core.labelled_seen
        self._records_at_snapshot = self.records_seen
        self._backoff = 0.5
        self.snapshot_seconds = time.perf_counter() - t0
        self.metrics.snapshot_duration.observe(self.snapshot_seconds)
        if self.degraded:
            self._recovered(version)
        self._publish_status("running", force=True)
        return True

    def _recovered(self, version: int | None) -> None:
        log.info("snapshot %s is durable and covers everything learned during the outage; status running", version)
        self.degraded = False
        self.last_outage_s = round(time.time() - self.degraded_since, 3) if self.degraded_since else None
        self.degraded_since = None
        self.metrics.degraded.set(0)
        try:
            self.store.clean_orphans()  # chunks of snapshots that the outage cut short
        except redis.RedisError:
            pass
        self._publish_status("running", force=True)

    def _snapshot_failed(self, why: str, final: bool) -> None:
        if not self.degraded:
            self.redis_outages += 1 if self._redis_down else 0
            self.degraded_since = time.time()
        self.degraded = True
        self.metrics.degraded.set(1)
        self.metrics.snapshot_failures.inc()
        self._retry_at = time.monotonic() + self._backoff
        log.warning("snapshot failed: %s; learning continues, offsets not committed past snapshot %s; retry in %.1f s",
                    why, self.model_version, self._backoff)
        self._backoff = min(self._backoff * 2, 10.0)
        if final:
            log.error("final snapshot could not be written; the next start re-learns from the last durable one")

    # -- scale-out -------------------------------------------------------------------
    def _check_unique(self, poll_s: float = 0.5) -> None:
        """Refuse to run a replica that another live daemon runs: both would write one ``latest``.

        A heartbeat left by this host's dead process (or by this very pid: a restarted
        container) is stale. One from another host, or a live local process, is waited out
        for one heartbeat TTL; if it is still being renewed, start-up fails with what to do.
        """
        from ocld.stream.embedded import pid_alive

        me = socket.gethostname()
        deadline = time.monotonic() + self.cfg.redis.heartbeat_ttl_s + 1.0
        while True:
            raw = self.redis.get(self.status.keys.alive)
            if raw is None:
                return
            try:
                beat = orjson.loads(raw)
                host, pid = beat.get("host"), int(beat.get("pid"))
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                return  # not ours to interpret; it expires by itself
            if host == me and (pid == os.getpid() or not pid_alive(pid)):
                return
            if time.monotonic() >= deadline:
                who = f"replica {self.replica!r} of pipeline {self.cfg.name!r}" if self.replica else \
                    f"pipeline {self.cfg.name!r}"
                raise ValueError(
                    f"{who} is already run by another daemon (host {host}, pid {pid}; its heartbeat is alive). Two "
                    "daemons with one replica name would overwrite each other's state: give each its own "
                    "scale.replica (ocld run --replica NAME, or OCLD_REPLICA)")
            if self._stop:
                return
            time.sleep(poll_s)

    
    def _claim(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        claimed = self.store.claim(tps)
        self._tokens.update({tp: token for tp, (token, _) in claimed.items()})
        log.info("replica %r claimed %s", self.replica, ", ".join(f"{t}[{p}] (epoch {tok.rpartition('|')[2]})"
                                                               for (t, p), (tok, _) in sorted(claimed.items())))
        return {tp: off for tp, (_, off) in claimed.items()}

    def _rewind(self, exc: Fenced) -> None:
        """Another replica claimed partitions learned from since the last snapshot: discard that learning."""
        assert self.source is not None
        self.fences += 1
        lost = {(t, int(p)) for t, _, p in (x.rpartition(":") for x in exc.lost)}
        log.warning("%s (this replica stalled past the session timeout, or its revocation snapshot failed). "
                    "Discarding everything learned since snapshot %s and reloading it; partitions %s are paused "
                    "until Kafka assigns them here again", exc, self.model_version, sorted(exc.lost))
        self.source.fence(lost)
        self._others = None  # the reloaded head holds the statistics folded when its snapshot was taken
        self._drain()
        if isinstance(self.core, RemoteCore):
            self.core.reset()
        else:
            self.core = LearningCore.from_config(self.cfg)
            self.core.on_drift = self._on_drift
        self.model_version = None
        self.records_seen = self.dlq_count = 0
        self._labelled_at_snapshot = self._records_at_snapshot = 0
        self.partition_records = {}
        self._restore()
        registry = self.store.registry()
        owned = self._keep_owned()
        self.source.reseek({tp: registry.get(tp_field(*tp), {}).get("offset") for tp in owned})
        self._dirty.clear()

    def _keep_owned(self) -> set[tuple[str, int]]:
        """Forget the offsets and claims of partitions no longer held (once nothing of theirs is unsnapshotted)."""
        assert self.source is not None
        owned = self.source.owned()
        self.source.forget(owned)
        self._tokens = {tp: tok for tp, tok in self._tokens.items() if tp in owned}
        return owned

    def _fold_global(self) -> None:
        """Fold the other replicas' latest AnalyticRidge statistics into this replica's head."""
        from ocld.learners.merge import MergeError, check_mergeable, head_of, summed_statistics
        from ocld.learners.registry import learner_from_state

        ns = self.cfg.redis.namespace
        try:
            others: dict[str, tuple[int, Any]] = {}
            for name in replica_names(self.redis, self.cfg.name, ns):
                if name == self.replica:
                    continue
                store = SnapshotStore(self.redis, self.cfg.name, ns, replica=name)
                version = store.latest_version()
                if version is None:
                    continue
                if self._others and name in self._others and self._others[name][0] == version:
                    others[name] = self._others[name]  # unchanged since the last fold: not read again
                    continue
                snap = store.load_latest()
                if snap is not None:
                    others[name] = (version, learner_from_state(snap.parts["learner"], allow_pickle=False))
        except redis.RedisError as exc:
            log.warning("folding the other replicas' statistics skipped: %s", _redis_error(exc))
            return
        if self._others is not None and {n: v for n, (v, _) in others.items()} == \
                {n: v for n, (v, _) in self._others.items()}:
            return  # nothing new to fold (the head already holds exactly these statistics)
        learners = [x for _, x in others.values()]
        try:
            if learners:
                check_mergeable([self.core.learner] + learners)
            head_of(self.core.learner).set_external(summed_statistics([head_of(x) for x in learners]))  # type: ignore[attr-defined,misc]
        except (MergeError, ValueError) as exc:
            log.warning("cannot fold the other replicas' statistics: %s", exc)
            return
        self._others = others
        self.folded_replicas = sorted(others)

    def _on_revoke(self, revoked: list[Any]) -> None:
        log.info("partitions revoked: %s; snapshot and commit before giving them up",
                 sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))
        self._checkpoint()

    # -- drift -----------------------------------------------------------------------
    def _on_drift(self, event) -> None:
        # Keep the snapshot taken just before the adaptation, so it can be rolled back to.
        if self.model_version is not None:
            try:
                self.store.pin(self.model_version)
            except redis.RedisError as exc:
                log.warning("could not pin snapshot %s before adaptation: %s", self.model_version, exc)

    def _record_drift(self, event) -> None:
        record = {"index": event.index, "detector": event.detector, "kind": event.kind,
                  "statistic": event.statistic if event.statistic is not None else "",
                  "action": self.core.action_for(event), "at": time.time(),
                  "pinned_version": self.model_version or ""}
        log.info("drift detected at labelled sample %d by %s (%s); action: %s", event.index, event.detector,
                 event.kind, record["action"])
        try:
            self.status.add_drift(record, self.core.drift_count)
        except redis.RedisError as exc:
            log.warning("could not record drift event in Redis: %s", exc)

    # -- status ----------------------------------------------------------------------
    def _publish_status(self, state: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_status_t:
            return
        self._next_status_t = now + self.cfg.status.interval_s
        dt = now - self._rate_t
        if dt >= 0.5:
            self.throughput = self._rate_n / dt
            self._rate_t, self._rate_n = now, 0
        fields = self.status_fields(state)
        try:
            self.status.update(fields)
            self.metrics.up.labels(self.cfg.name, "redis").set(1)
            if self._redis_down:
                # Redis answers again: status says degraded until a snapshot catches up; try it now.
                log.info("Redis answers again; status degraded until a snapshot covers the outage")
                self._redis_down = False
                self._retry_at = now + self.cfg.status.interval_s
                self._backoff = 0.5
            if now >= self._next_metrics_t:
                self._next_metrics_t = now + self.cfg.status.metrics_every_s
                self.status.add_metrics({"t": time.time(), **{k: fields[k] for k in (
                    "samples_seen", "labelled_seen", "accuracy", "accuracy_total", "log_loss", "throughput",
                    "drift_count", "drift_count_error", "drift_count_input", "model_version", "dlq_count")},
                    **self.core.learner_metrics()})
        except redis.RedisError as exc:
            self.metrics.up.labels(self.cfg.name, "redis").set(0)
            self._redis_down = True
            if not self.degraded:
                log.warning("status update failed, Redis unreachable (%s); learning continues", _redis_error(exc))
                self.redis_outages += 1
                self.degraded_since = time.time()
                self.metrics.degraded.set(1)
            self.degraded = True

    def status_fields(self, state: str) -> dict[str, Any]:
        lag = self.source.lag() if self.source else None
        self._last_lag = lag
        parts = [f"{tp.topic}[{tp.partition}]" for tp in self.source.assignment()] if self.source else []
        return {
            "state": state, "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
            "updated_at": time.time(), "records_seen": self.records_seen, **self.core.status_fields(),
            "throughput": round(self.throughput, 1), "model_version": self.model_version or "",
            "learner": self.cfg.learner.name, "dlq_count": self.dlq_count,
            "dlq_by_reason": self.sink.dlq_by_reason if self.sink else {}, "lag": lag if lag is not None else "",
            "partitions": parts, "topic": self.cfg.kafka.topic,
            "dlq_dropped": self.sink.dlq_dropped if self.sink else 0,
            "predictions_dropped": self.sink.predictions_dropped if self.sink else 0,
            "redis_outages": self.redis_outages, "degraded_since": self.degraded_since or "",
            "last_outage_s": self.last_outage_s if self.last_outage_s is not None else "",
            "broker_reachable": int(self.broker_reachable), "last_snapshot_at": self.last_snapshot_at or "",
            "snapshot_seconds": round(self.snapshot_seconds, 4),
            "replica": self.replica, "partition_records": self.partition_records, "fences": self.fences,
            "folded_replicas": self.folded_replicas,
        }

    # -- health ----------------------------------------------------------------------
    def unsnapshotted_age(self) -> float:
        """Seconds that consumed work has waited for a durable snapshot (0 when all of it is durable)."""
        if self.records_seen == self._records_at_snapshot:
            return 0.0
        return time.monotonic() - self._last_snapshot_t

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: broker and Redis reachable, state durable within the limit (thread-safe reads)."""
        reasons = []
        kafka_ok = _reachable(self.cfg.kafka.bootstrap)
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
        if self.source is None:
            reasons.append("starting")
        return {"ready": not reasons, "reasons": reasons, "kafka": kafka_ok, "redis": redis_ok,
                "snapshot_age_s": round(age, 3), "model_version": self.model_version,
                "degraded": self.degraded, "pipeline": self.cfg.name}

    def _scrape_gauges(self) -> None:
        self.metrics.snapshot_age.set(time.time() - self.last_snapshot_at if self.last_snapshot_at else 0.0)
        lag = self._last_lag
        if lag is not None:
            self.metrics.lag.set(lag)

    def _signal(self, signum: int, frame: Any) -> None:
        log.info("received %s: finishing the batch in hand, then a final snapshot", signal.Signals(signum).name)
        self._stop = True

    def stop(self) -> None:
        self._stop = True

    def _shutdown(self) -> None:
        if self.http is not None:
            self.http.stop()
        try:
            self.status.stopped(self.status_fields("stopped"))
        except redis.RedisError as exc:
            log.warning("could not mark the pipeline stopped in Redis: %s", exc)
        if self.sink is not None:
            self.sink.close()
        if self.source is not None:
            self.source.close()
        if isinstance(self.core, RemoteCore):
            self.core.close()

    def summary(self) -> dict[str, Any]:
        s = self.core.summary()
        return {"pipeline": self.cfg.name, "records_seen": self.records_seen, "samples_seen": self.core.samples_seen,
                "labelled_seen": self.core.labelled_seen, "accuracy": s["accuracy"],
                "nochange_accuracy": s["nochange_accuracy"], "balanced_accuracy": s["balanced_accuracy"],
                "log_loss": s["log_loss"], "dlq_count": self.dlq_count, "drift_count": self.core.drift_count,
                "model_version": self.model_version, "elapsed_s": time.time() - self.started_at}


def _reachable(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when any bootstrap address accepts a TCP connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def _redis_error(exc: Exception) -> str:
    """A one-line description of a Redis error (redis-py messages name host:port, never credentials)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
