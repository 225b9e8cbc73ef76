"""The daemon loop: poll -> decode -> dead-letter bad records -> predict/learn -> drift -> snapshot -> commit.

Order at every checkpoint (never changed): flush outputs (DLQ, predictions) -> write the
snapshot and switch ``latest`` -> commit offsets to the group. Because every partition starts
where the last durable snapshot's offsets say (``stream.ownership``), a crash anywhere
re-learns exactly the records the last snapshot does not cover: every sample is learned
exactly once in the surviving state.

Start-up, in this order: wait for Redis (``redis.start_timeout_s``, then exit non-zero with one
line); take the lease (``stream.lease``; a live holder is waited out for one TTL, then start-up
fails saying who holds it); load the latest snapshot; wait for the broker (as long as it takes);
create the topics; consume. A SIGTERM during any of these waits stops the daemon within a
second. Wrong credentials, a missing ACL permission or a Kafka security mismatch are fatal:
one line, a non-zero exit, no retry loop.

Failures while running:
- **Redis outage** (refused, timeout, loading, read-only, out of memory): learning continues in
  memory and offsets are never committed beyond the last durable snapshot. A failed snapshot is
  retried with exponential backoff (0.5 s doubling to 10 s); the first status write that works
  again says ``degraded`` until a snapshot catches up.
- **The lease** is renewed from a thread. Found *taken* by another writer (a daemon started
  while this one stalled, or a forced rollback): the daemon writes nothing more and exits
  non-zero. Found *gone* (expired with nobody taking it, or Redis lost its data): it is taken
  again and ``Ownership.after_gap`` decides: nothing changed; another writer switched
  ``latest`` (reload it, like a fence); or Redis lost the state, which the daemon re-establishes
  at once from memory (its model is exact for the offsets it consumed), with a
  ``redis_data_loss`` incident. It never pauses silently.
- **A log that went backwards** (topic recreated, embedded broker restarted): a ``topic_reset``
  incident, and the new log is learned from its start (``stream.source``). Records deleted by
  retention before they were learned: a ``records_lost`` incident with their number.
- **Broker outage**: kafka-python reconnects by itself; the daemon logs one line when the broker
  becomes unreachable and one when it is back, then checks every partition's position against
  the broker again (it may have come back with a new log).
- **A batch that cannot be decompressed**, a learner process that keeps dying, a lost lease:
  the status says ``failed`` with the reason, ``/healthz`` answers 503, the daemon exits non-zero.
  A learner process that dies is otherwise restarted from the last durable snapshot.

SIGTERM/SIGINT: finish the batch in hand, snapshot, commit, mark ``stopped``, release the lease,
exit 0.

Scale-out (several daemons, one pipeline name, one consumer group; Kafka assigns the
partitions): each replica has its own learner, snapshots, status and lease under
``ocld:{p}:replica:{name}``; the shared registry holds each partition's covered offset and
claim. See ``stream.ownership`` for claims and the fence. Outputs (dead letters, predictions)
are at-least-once across a fence or a restart. With AnalyticRidge, ``scale.fold_global_every_s``
folds the other replicas' latest statistics into this replica's head.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from typing import Any, Callable

import redis
from kafka.errors import KafkaError

from ocld.core.codec import Codec
from ocld.core.runtime import LearningCore, limit_threads
from ocld.core.schema import WidthInference
from ocld.core.snapshot import Snapshot
from ocld.stream.broker import ensure_topics, kafka_failure
from ocld.stream.config import Config, redact_url
from ocld.stream.errors import DaemonFailed, FatalConfigError
from ocld.stream.faults import fault_point
from ocld.stream.http import DaemonMetrics, HealthServer
from ocld.stream.lease import Lease, describe
from ocld.stream.ownership import Incident, Ownership, Positions, is_permission_error, positions_from_snapshot
from ocld.stream.sink import Sink
from ocld.stream.source import KafkaSource, Polled
from ocld.stream.store import (Fenced, Keys, LeaseLost, RegistryMissing, SnapshotStore, StatusStore, connect,
                               replica_names, tp_field)
from ocld.stream.worker import LearnerProcessError, RemoteCore

log = logging.getLogger("ocld.daemon")

# A learner process that dies this many times within this many seconds is not restarted again.
LEARNER_RESTARTS = (3, 600.0)


class _Interrupted(BaseException):
    """SIGTERM/SIGINT during a blocking start-up step: stop at once (nothing learned yet)."""


class Daemon:
    def __init__(self, cfg: Config) -> None:
        if cfg.kafka.bootstrap == "embedded" or cfg.redis.url.get_secret_value() == "embedded":
            raise ValueError("Daemon needs resolved servers; use ocld.stream.embedded.services() or `ocld run`")
        self.cfg = cfg
        limit_threads()
        r = cfg.redis
        self.redis = connect(r.url.get_secret_value(), r.password.get_secret_value() if r.password else None, r.username)
        self.replica = cfg.scale.replica_id
        self.keys = Keys(cfg.name, r.namespace, self.replica)
        self.lease = Lease(self.redis, self.keys.lease, r.lease_ttl)
        self.store = SnapshotStore(self.redis, cfg.name, r.namespace, cfg.snapshot.keep, cfg.snapshot.chunk_bytes,
                                   replica=self.replica, max_pinned=cfg.snapshot.max_pinned, lease=self.lease)
        self.status = StatusStore(self.redis, cfg.name, r.namespace, r.metrics_maxlen, r.drift_maxlen,
                                  replica=self.replica, lease=self.lease)
        self.ownership = Ownership(self.store, self.lease, self.replica, self._incident)
        m = cfg.messages
        self.codec = Codec(m.format, m.features, m.n_features, m.max_record_bytes, m.max_abs_value, m.max_features)
        self.width: WidthInference | None = None if self.codec.n_features else self._new_inference()
        self._held: list[Polled] = []  # polls read before the width was settled: not yet consumed
        self.core: LearningCore | RemoteCore = RemoteCore(cfg) if cfg.learner_process else LearningCore.from_config(cfg)
        self._inflight: deque[Any] = deque()
        self.model_version: int | None = None
        self.started_at = time.time()
        self.records_seen = 0
        self._counts: dict[str, Any] = {}  # DLQ totals restored from the snapshot (the sink adds to them)
        self.state = "starting"  # starting, running, stopping, stopped, failed (degraded is shown on top)
        self.failure: str | None = None
        self.degraded = False
        self._stop = False
        self._interruptible = False
        self._deferred: BaseException | None = None  # raised inside a Kafka callback; re-raised by the loop
        self._force_checkpoint = False
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
        self.partition_records: dict[str, int] = {}  # "topic:partition" -> records this replica consumed
        self.fences = 0
        self.incidents: dict[str, int] = {}  # kind -> count (this process and the restored snapshot)
        self._learner_deaths: deque[float] = deque()
        self._next_fold_t = 0.0
        self.folded_replicas: list[str] = []
        # other replica -> (snapshot version, its learner) as last folded; None: the head's folded part is unknown
        self._others: dict[str, tuple[int, Any]] | None = None

    @property
    def dlq_count(self) -> int:
        return self.sink.dlq_count if self.sink is not None else int(self._counts.get("dlq_count") or 0)

    def _new_inference(self) -> WidthInference:
        m = self.cfg.messages
        return WidthInference(samples=m.infer_width_samples, agree=min(20, m.infer_width_samples),
                              wait_s=m.infer_width_wait_s, max_features=m.max_features)

    def _who(self) -> str:
        return (f"replica {self.replica!r} of pipeline {self.cfg.name!r}" if self.replica
                else f"pipeline {self.cfg.name!r}")

    # -- start-up --------------------------------------------------------------------
    def _start(self) -> bool:
        """Everything before the loop; False when stopped meanwhile."""
        cfg = self.cfg
        self._interruptible = True
        self._wait_for_redis()
        try:
            if not self.ownership.take_lease(self._who(), cfg.redis.lease_ttl + 1.0, lambda: self._stop):
                return False
        except redis.RedisError as exc:
            self._redis_fatal(exc, "taking the lease")
            raise
        self.lease.start_renewing()
        log.info("%s: lease %s taken (expires %.0f s after the last renewal)", self._who(), self.lease.key,
                 cfg.redis.lease_ttl)
        self._startup_redis("loading the latest snapshot", self._restore)
        self._startup_redis("cleaning incomplete snapshots", self.store.clean_orphans)
        self.metrics.baseline(self)
        self._publish_status(force=True)
        if cfg.http.port is not None:
            self.http = HealthServer(self.metrics, self.health, cfg.http.host, cfg.http.port,
                                     before_scrape=self._scrape_gauges).start()
        self._wait_for_broker()
        if self._stop:
            return False
        try:
            if cfg.kafka.create_topics:
                topics = {cfg.kafka.topic: cfg.kafka.partitions, cfg.dlq_topic: 1}
                if cfg.kafka.predictions_topic:
                    topics[cfg.kafka.predictions_topic] = 1
                ensure_topics(cfg.kafka, topics)
            self.sink = Sink(cfg.kafka, cfg.dlq_topic, cfg.kafka.predictions_topic, counts=self._counts)
            self.source = KafkaSource(cfg, claim=self._claim, on_revoke=self._on_revoke)
        except (KafkaError, OSError) as exc:
            raise kafka_failure(exc, cfg.kafka) from None
        log.info("%s consumes %s from broker %s; state in Redis %s", self._who(), cfg.kafka.topic, cfg.kafka.bootstrap,
                 redact_url(cfg.redis.url.get_secret_value()))
        self._interruptible = False
        self.state = "running"
        self._publish_status(force=True)
        return True

    def _wait_for_redis(self) -> None:
        """Wait up to ``redis.start_timeout_s`` for Redis to answer; then one clear error."""
        limit = self.cfg.redis.start_timeout_s
        deadline = time.monotonic() + limit
        delay, attempt = 0.5, 0
        url = redact_url(self.cfg.redis.url.get_secret_value())
        while True:
            try:
                self.redis.ping()
                if attempt:
                    log.info("Redis %s answers; starting", url)
                return
            except redis.RedisError as exc:
                self._redis_fatal(exc, "connecting")
                attempt += 1
                if time.monotonic() + delay > deadline:
                    raise FatalConfigError(
                        f"Redis {url} did not answer within {limit:g} s ({_redis_error(exc)}); check redis.url "
                        "(or REDIS_URL) and that Redis runs (redis.start_timeout_s sets how long to wait)") from None
                log.warning("Redis %s unreachable at start-up (%s); retry %d in %.1f s", url, _redis_error(exc),
                            attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _startup_redis(self, what: str, fn: Callable[[], Any]) -> Any:
        """A Redis step of start-up: retried on an outage until ``redis.start_timeout_s``."""
        deadline = time.monotonic() + self.cfg.redis.start_timeout_s
        delay = 0.5
        while True:
            try:
                return fn()
            except redis.RedisError as exc:
                self._redis_fatal(exc, what)
                if isinstance(exc, redis.ResponseError) or time.monotonic() + delay > deadline:
                    raise FatalConfigError(f"{what}: Redis failed ({_redis_error(exc)})") from None
                log.warning("%s: Redis unreachable (%s); retry in %.1f s", what, _redis_error(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _redis_fatal(self, exc: BaseException, what: str) -> None:
        """Raise a one-line FatalConfigError for errors retrying cannot fix (credentials, ACL)."""
        if is_permission_error(exc):
            from urllib.parse import urlsplit

            url_user = urlsplit(self.cfg.redis.url.get_secret_value()).username
            user = self.cfg.redis.username or url_user or "default"
            raise FatalConfigError(
                f"{what}: Redis {redact_url(self.cfg.redis.url.get_secret_value())} refused the credentials or a "
                f"command of user {user!r} ({_redis_error(exc)}); check redis.username and redis.password (or OCLD_REDIS_PASSWORD) and the "
                "user's ACL: the daemon needs read, write and scripting (EVAL) on its keys") from None

    def _restore(self) -> None:
        """Load the latest usable snapshot into the core; where each partition starts comes from it."""
        snap = self.store.load_latest()
        if snap is None:
            self.ownership.durable = {}
            log.info("%s: no usable snapshot, starting fresh (the registry is reset for every partition this "
                     "replica claims, and their logs are learned from the start)", self._who())
            return
        n_features = snap.info.get("n_features")
        if n_features:
            declared = self.cfg.messages.n_features or (len(self.cfg.messages.features or []) or None)
            if declared is not None and int(n_features) != declared:
                raise FatalConfigError(
                    f"messages.n_features/features declare {declared} features, but the latest snapshot (version "
                    f"{snap.info['version']}) of {self._who()} was learned with {n_features}: roll back to a version "
                    "learned with the declared width (ocld query P --snapshot lists them), or run under a new "
                    "pipeline name")
            self.codec.n_features = int(n_features)
            self.codec.width_source = (f"from snapshot version {snap.info['version']}"
                                       + (f" ({snap.info['width_source']})" if snap.info.get("width_source") else ""))
            self.width = None
        self.core.restore(snap.parts, allow_pickle=self.cfg.allow_pickle)
        if snap.info.get("fell_back_from") is not None:
            # The newer versions are unusable: make this one the latest, so that what they covered is learned again.
            self.store.set_latest(int(snap.info["version"]))
            self._incident(Incident("snapshot_fallback", f"snapshot {snap.info['fell_back_from']} is unusable; "
                                    f"resumed from version {snap.info['version']}"))
        self.model_version = int(snap.info["version"])
        self.last_snapshot_at = float(snap.info.get("created_at") or time.time())
        self.records_seen = int(snap.info.get("records_seen", 0))
        self._counts = {k: snap.info.get(k) for k in ("dlq_count", "dlq_by_reason", "dlq_dropped", "predictions_dropped")}
        if self.sink is not None:
            self.sink.dlq_count = int(self._counts.get("dlq_count") or 0)
            self.sink.dlq_by_reason = {str(k): int(v) for k, v in (self._counts.get("dlq_by_reason") or {}).items()}
        self.incidents = {str(k): int(v) for k, v in (snap.info.get("incidents") or {}).items()}
        self.partition_records = {str(k): int(v) for k, v in (snap.info.get("partition_records") or {}).items()}
        self.ownership.durable = positions_from_snapshot(snap.offsets, snap.info.get("fingerprints"))
        self._labelled_at_snapshot = self.core.labelled_seen
        self._records_at_snapshot = self.records_seen
        log.info("%s: resumed from snapshot version %d (%d labelled samples, offsets %s)", self._who(),
                 self.model_version, self.core.labelled_seen, snap.offsets)

    # -- the loop --------------------------------------------------------------------
    def run(self, until_idle_s: float | None = None, max_seconds: float | None = None,
            install_signals: bool = True) -> dict[str, Any]:
        """Run until SIGTERM/SIGINT, or until caught up and idle for ``until_idle_s`` seconds.

        Raises :class:`FatalConfigError` or :class:`DaemonFailed` (one-line messages) when it cannot
        go on; the status then says ``failed`` where the lease still allows writing it."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._signal)
            signal.signal(signal.SIGINT, self._signal)
        idle_since: float | None = None
        try:
            if not self._start():
                return self.summary()
            t_start = time.monotonic()
            assert self.source is not None
            while not self._stop:
                self.lease.tick()
                try:
                    self._check_lease()
                    # With a poll in the learner process, wait for records only briefly: an empty poll then
                    # finishes it (_drain), so its outputs and status do not wait out a whole max_wait_ms.
                    polled = self._poll(2 if self._inflight else None)
                    if polled.reconnected:
                        self._drain()
                        self._discard_held()
                        self.source.reverify()
                    if polled.resets or polled.gaps:
                        self._regressions(polled)
                    if polled.values:
                        idle_since = None
                        t_batch = time.perf_counter()
                        if self.codec.n_features is None and self.width is not None:
                            self._hold(polled)
                        else:
                            self._handle(polled)
                        self.metrics.batch_latency.observe(time.perf_counter() - t_batch)
                        self.metrics.batch_size.observe(len(polled.values))
                        self.metrics.sync_from(self)
                        self._last_records_t = time.monotonic()
                    else:
                        if self._held and self.width is not None and self.width.due(time.time()) is not None:
                            self._release_held()
                        self._drain()  # nothing new to read: finish what the learner process holds
                        now = time.monotonic()
                        if until_idle_s is not None and self.source.assignment() and not self._held:
                            if self.source.lag() == 0:
                                idle_since = idle_since or now
                                if now - idle_since >= until_idle_s:
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
        return self.summary()

    def _poll(self, timeout_ms: int | None) -> Polled:
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
            exc, self._deferred = self._deferred, None
            raise exc
        return polled

    def _handle(self, polled: Polled) -> None:
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
        self._finish(polled, dec, self.core.collect())

    def _drain(self) -> None:
        """Finish every poll the learner process holds (before anything that reads or replaces its state)."""
        while self._inflight:
            self._finish_next()

    def _finish(self, polled: Polled, dec: Any, res: Any) -> None:
        """Outputs, drift records and offsets of a learned poll: only now does it count as consumed."""
        sink = self.sink
        assert sink is not None and self.source is not None
        for i, reason in dec.bad + res.bad:
            topic, part, off = polled.origin[i]
            sink.dead_letter(polled.values[i], topic, part, off, reason)
        if sink.predictions_topic and res.predictions:
            classes = self.core.classes
            for i, rid, label, proba in res.predictions:
                topic, part, off = polled.origin[i]
                sink.prediction(topic, part, off, rid, label, proba.tolist(), classes)
        for event in res.events:
            self._record_drift(event)
        self.source.advance(polled.next_offsets, polled.fingerprints)
        for topic, part, recs in polled.parts:
            self.ownership.dirty.add((topic, part))
            key = tp_field(topic, part)
            self.partition_records[key] = self.partition_records.get(key, 0) + len(recs)
        self.records_seen += len(polled.values)
        self._rate_n += len(polled.values)
        fault_point("daemon.after_batch")

    # -- the width of a stream that does not declare it ----------------------------------
    def _hold(self, polled: Polled) -> None:
        """Keep a poll unlearned (its offsets not consumed) until the width is settled."""
        assert self.width is not None
        self._held.append(polled)
        while True:
            w = self.width.offer(self.codec.widths(polled.values), time.time())
            polled = Polled([], [], {})  # counted once; a refused width re-offers nothing new
            if w is None:
                break
            why = self._width_refused(w)
            if why is None:
                self._release_held()
                return
            self.width.refuse(w, why)
            self.width.width = None
            self.codec.refused_widths[w] = why
            log.warning("records with %d features cannot be learned: %s", w, why)
        held_records = sum(len(p.values) for p in self._held)
        if held_records > 10 * self.cfg.kafka.max_batch:
            # Nothing settles (every width seen is refused): dead-letter what is held rather than hold it forever.
            self._release_held()

    def _width_refused(self, w: int) -> str | None:
        limit = self.cfg.learner.max_state_bytes
        need = self.cfg.build_learner().estimate_state_bytes(w, 2)
        if need is not None and need > limit:
            return (f"x has {w} features: {self.cfg.learner.name} would need {need / 2**30:.1f} GiB of state, over "
                    f"learner.max_state_bytes={limit / 2**30:.1f} GiB")
        return None

    def _release_held(self) -> None:
        """The width is settled (or cannot be): decode and learn the held polls in order."""
        assert self.width is not None
        held, self._held = self._held, []
        if self.width.width is not None:
            self.codec.n_features = self.width.width
            self.codec.width_source = self.width.reason
            log.info("record width %d, %s", self.width.width, self.width.reason)
            self.width = None
        for polled in held:
            self._handle(polled)

    def _discard_held(self) -> None:
        """Held polls are not consumed: forget them (they are read again from the claimed positions)."""
        if self._held:
            self._held = []
            self.width = self._new_inference()

    # -- housekeeping ----------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        snap = self.cfg.snapshot
        due = (self.core.labelled_seen - self._labelled_at_snapshot >= snap.every_samples
               or (now - self._last_snapshot_t >= snap.every_seconds and self.records_seen != self._records_at_snapshot)
               or self.degraded or self._force_checkpoint)  # catch up as soon as Redis takes writes again
        if due and now >= self._retry_at:
            self._checkpoint(force=self._force_checkpoint)
        if now >= self._next_status_t:
            self._publish_status()
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
            time.sleep(delay)  # a SIGTERM interrupts it (start-up)
            delay = min(delay * 2, 10.0)
        if attempt:
            log.info("broker %s is reachable; starting to consume", bootstrap)

    def _probe_broker(self) -> None:
        """While no records arrive, check that the broker still accepts connections (log changes once).
        (The positions are checked again by the source itself whenever its connection is made again.)"""
        self._next_probe_t = time.monotonic() + 2.0
        reachable = _reachable(self.cfg.kafka.bootstrap)
        if reachable != self.broker_reachable:
            if reachable:
                log.info("broker %s is reachable again; consuming resumes (positions are checked against its log)",
                         self.cfg.kafka.bootstrap)
            else:
                log.warning("broker %s is unreachable; the Kafka client reconnects with backoff and consuming "
                            "resumes when it returns (learned state and snapshots are unaffected)",
                            self.cfg.kafka.bootstrap)
        self.broker_reachable = reachable
        self.metrics.up.labels(self.cfg.name, "kafka").set(int(reachable))

    def _regressions(self, polled: Polled) -> None:
        """Partitions whose log went backwards are learned again from their new start; records that
        retention deleted before they were learned are reported."""
        assert self.source is not None
        self._drain()
        for tp, why in sorted(polled.resets.items()):
            old = self.source.offsets.get(tp)
            start = self.source.reset_partition(tp)
            self.ownership.dirty.add(tp)
            self._force_checkpoint = True
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
            self._redis_fatal(exc, "taking the lease again")
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
        self._force_checkpoint = True

    # -- checkpoint ------------------------------------------------------------------
    def _checkpoint(self, final: bool = False, force: bool = False) -> bool:
        """flush outputs -> snapshot + switch -> commit offsets. Returns True when durable."""
        if self.sink is None or self.source is None:
            return False
        self._drain()  # a snapshot holds exactly what its offsets cover
        if (not force and self.records_seen == self._records_at_snapshot
                and (self.model_version is not None or not final)):
            if self.degraded and not self._redis_down:
                self._recovered(self.model_version)  # an outage with nothing to catch up on
            return True  # nothing new since the last durable snapshot
        t0 = time.perf_counter()
        try:
            self.sink.flush(2.0 if self._stop else 10.0)  # stopping: SIGTERM must not wait out a dead broker
        except KafkaError as exc:
            # Outputs (DLQ, predictions) must be durable before offsets move: postpone.
            self._snapshot_failed(f"outputs could not be flushed to the broker ({type(exc).__name__})", final)
            return False
        offsets = {tp: off for tp, (off, _) in self.ownership.durable.items() if off is not None}
        offsets.update(self.source.offsets)
        fps = {tp: fp for tp, (_, fp) in self.ownership.durable.items()}
        fps.update({tp: self.source.fingerprints.get(tp) for tp in self.source.offsets})
        by_topic: dict[str, dict[int, int]] = {}
        fps_by_topic: dict[str, dict[str, str]] = {}
        for (t, p), o in offsets.items():
            by_topic.setdefault(t, {})[p] = o
            if fps.get((t, p)):
                fps_by_topic.setdefault(t, {})[str(p)] = str(fps[(t, p)])
        for attempt in (1, 2):
            try:
                snap = Snapshot(self.core.to_parts(), by_topic, {
                    "pipeline": self.cfg.name, "samples_seen": self.core.samples_seen,
                    "labelled_seen": self.core.labelled_seen, "records_seen": self.records_seen,
                    **self.sink.counts(), "n_features": self.codec.n_features, "width_source": self.codec.width_source,
                    "learner": self.cfg.learner.name, "created_at": time.time(), "host": socket.gethostname(),
                    "pid": os.getpid(), "replica": self.replica, "partition_records": dict(self.partition_records),
                    "fingerprints": fps_by_topic, "incidents": dict(self.incidents),
                })
                fence, registry, reg_fps = self.ownership.switch_args(self.source.offsets, self.source.fingerprints)
                version = self.store.write(snap, fence=fence, registry_offsets=registry, fingerprints=reg_fps)
                break
            except Fenced as exc:
                self._rewind(exc)
                return False
            except RegistryMissing as exc:
                if attempt == 2:
                    self._snapshot_failed(str(exc), final)
                    return False
                self._reestablish(f"the partition claims vanished ({exc})")
            except LeaseLost as exc:
                log.warning("snapshot not switched: %s", exc)
                if final:
                    log.error("final snapshot not written: the lease is not this daemon's; the next writer "
                              "re-learns from the last durable snapshot")
                return False
            except redis.RedisError as exc:
                self._redis_fatal(exc, "writing a snapshot")
                self._redis_down = True
                self._snapshot_failed(f"Redis unreachable or refusing writes ({_redis_error(exc)})", final)
                return False
        fault_point("daemon.before_commit")
        owned = self.source.owned()
        self.ownership.switched({tp: (offsets[tp], fps.get(tp)) for tp in offsets})
        self.ownership.keep(owned)
        self.source.forget(owned)
        self.source.commit()
        self.model_version = version
        self._force_checkpoint = False
        self._last_snapshot_t = time.monotonic()
        self.last_snapshot_at = time.time()
        self._labelled_at_snapshot = self.core.labelled_seen
        self._records_at_snapshot = self.records_seen
        self._backoff = 0.5
        self.snapshot_seconds = time.perf_counter() - t0
        self.metrics.snapshot_duration.observe(self.snapshot_seconds)
        if self.degraded:
            self._recovered(version)
        self._publish_status(force=True)
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
        self._publish_status(force=True)

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

    # -- scale-out and recovery -------------------------------------------------------
    def _claim(self, tps: list[tuple[str, int]]) -> Positions:
        """Claim newly assigned partitions (called by the source on assignment)."""
        self._discard_held()
        return self.ownership.claim(tps)

    def _rewind(self, exc: Fenced | None = None) -> None:
        """Discard everything learned since the last durable snapshot and reload it.

        ``exc``: another replica claimed partitions learned from meanwhile; they are paused until
        Kafka assigns them here again. Without it: another writer switched ``latest`` (a rollback
        during a lease gap), or the learner process died."""
        assert self.source is not None
        self._drain()
        self._discard_held()
        if exc is not None:
            self.fences += 1
            lost = {(t, int(p)) for t, _, p in (x.rpartition(":") for x in exc.lost)}
            log.warning("%s (this replica stalled past the session timeout, or its revocation snapshot failed). "
                        "Discarding everything learned since snapshot %s and reloading it; partitions %s are paused "
                        "until Kafka assigns them here again", exc, self.model_version, sorted(exc.lost))
            self.source.fence(lost)
        self._others = None  # the reloaded head holds the statistics folded when its snapshot was taken
        self._reset_core()
        self.model_version = None
        self.records_seen = 0
        self._counts = {"dlq_count": self.dlq_count, "dlq_by_reason": dict(self.sink.dlq_by_reason) if self.sink else {}}
        self._labelled_at_snapshot = self._records_at_snapshot = 0
        self.partition_records = {}
        self._restore()
        owned = self.source.owned()
        self.ownership.tokens = {tp: t for tp, t in self.ownership.tokens.items() if tp in owned}
        positions = self.ownership.claim(sorted(owned)) if owned else {}
        self.source.reseek(positions)
        self.ownership.dirty.clear()

    def _reset_core(self) -> None:
        if isinstance(self.core, RemoteCore):
            self._inflight.clear()
            try:
                self.core.reset()
                return
            except LearnerProcessError:
                self.core.close()
                self.core = RemoteCore(self.cfg)
                return
        self.core = LearningCore.from_config(self.cfg)

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
        if isinstance(self.core, RemoteCore):
            self.core.close()
            self.core = RemoteCore(self.cfg)
        self._inflight.clear()
        self._rewind()

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
                check_mergeable([self.core.learner] + learners)  # type: ignore[union-attr]
            head_of(self.core.learner).set_external(summed_statistics([head_of(x) for x in learners]))  # type: ignore[union-attr,attr-defined,misc]
        except (MergeError, ValueError) as exc:
            log.warning("cannot fold the other replicas' statistics: %s", exc)
            return
        self._others = others
        self.folded_replicas = sorted(others)

    def _on_revoke(self, revoked: list[Any]) -> None:
        log.info("partitions revoked: %s; snapshot and commit before giving them up",
                 sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))
        try:
            self._discard_held()
            self._checkpoint()
        except BaseException as exc:  # noqa: BLE001 (the Kafka client swallows callback errors: re-raised by the loop)
            self._deferred = exc

    # -- drift and incidents ---------------------------------------------------------
    def _record_drift(self, event: Any) -> None:
        action = self.core.action_for(event)
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
                 event.kind, record["action"])
        try:
            self.status.add_drift(record, self.core.drift_count)
        except (redis.RedisError, LeaseLost) as exc:
            log.warning("could not record drift event in Redis: %s", exc)

    def _incident(self, incident: Incident) -> None:
        """Count, log and publish something the daemon found and repaired."""
        self.incidents[incident.kind] = self.incidents.get(incident.kind, 0) + 1
        log.warning("incident %s%s: %s", incident.kind, f" on {incident.partition}" if incident.partition else "",
                    incident.detail)
        try:
            self.status.add_incident(incident.as_record())
        except (redis.RedisError, LeaseLost) as exc:
            log.warning("could not record the incident in Redis (it is counted in the next snapshot): %s", exc)

    # -- status ----------------------------------------------------------------------
    def shown_state(self) -> str:
        return "degraded" if self.state == "running" and self.degraded else self.state

    def _publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_status_t:
            return
        self._next_status_t = now + self.cfg.status.interval_s
        dt = now - self._rate_t
        if dt >= 0.5:
            self.throughput = self._rate_n / dt
            self._rate_t, self._rate_n = now, 0
        fields = self.status_fields()
        try:
            self.status.update(fields)
            self.metrics.up.labels(self.cfg.name, "redis").set(1)
            if self._redis_down:
                # Redis answers again: status says degraded until a snapshot catches up; try it now.
                log.info("Redis answers again; status degraded until a snapshot covers the outage")
                self._redis_down = False
                self._retry_at = now + self.cfg.status.interval_s
                self._backoff = 0.5
            if now >= self._next_metrics_t and self.state == "running" and self.core.labelled_seen:
                self._next_metrics_t = now + self.cfg.status.metrics_every_s
                self.status.add_metrics({"t": time.time(), **{k: fields[k] for k in (
                    "samples_seen", "labelled_seen", "accuracy", "accuracy_total", "log_loss", "throughput",
                    "drift_count", "drift_count_error", "drift_count_input", "model_version", "dlq_count")},
                    **self.core.learner_metrics()})
        except LeaseLost:
            return  # the loop decides (_check_lease)
        except redis.RedisError as exc:
            self._redis_fatal(exc, "writing the status")
            self.metrics.up.labels(self.cfg.name, "redis").set(0)
            self._redis_down = True
            if not self.degraded:
                log.warning("status update failed, Redis unreachable (%s); learning continues", _redis_error(exc))
                self.redis_outages += 1
                self.degraded_since = time.time()
                self.metrics.degraded.set(1)
            self.degraded = True

    def status_fields(self) -> dict[str, Any]:
        lag = self.source.lag() if self.source else None
        self._last_lag = lag
        parts = [f"{tp.topic}[{tp.partition}]" for tp in self.source.assignment()] if self.source else []
        return {
            "state": self.shown_state(), "failure": self.failure or "", "host": socket.gethostname(),
            "pid": os.getpid(), "started_at": self.started_at, "updated_at": time.time(),
            "records_seen": self.records_seen, **self.core.status_fields(),
            "throughput": round(self.throughput, 1), "model_version": self.model_version or "",
            "learner": self.cfg.learner.name, "dlq_count": self.dlq_count,
            "dlq_by_reason": self.sink.dlq_by_reason if self.sink else (self._counts.get("dlq_by_reason") or {}),
            "lag": lag if lag is not None else "", "partitions": parts, "topic": self.cfg.kafka.topic,
            "dlq_dropped": self.sink.dlq_dropped if self.sink else 0,
            "predictions_dropped": self.sink.predictions_dropped if self.sink else 0,
            "redis_outages": self.redis_outages, "degraded_since": self.degraded_since or "",
            "last_outage_s": self.last_outage_s if self.last_outage_s is not None else "",
            "broker_reachable": int(self.broker_reachable), "last_snapshot_at": self.last_snapshot_at or "",
            "snapshot_seconds": round(self.snapshot_seconds, 4),
            "replica": self.replica, "partition_records": self.partition_records, "fences": self.fences,
            "folded_replicas": self.folded_replicas, "n_features": self.codec.n_features or "",
            "width_source": self.codec.width_source or ("inferring" if self.width is not None else ""),
            "incidents": dict(self.incidents),
        }

    # -- health ----------------------------------------------------------------------
    def unsnapshotted_age(self) -> float:
        """Seconds that consumed work has waited for a durable snapshot (0 when all of it is durable)."""
        if self.records_seen == self._records_at_snapshot:
            return 0.0
        return time.monotonic() - self._last_snapshot_t

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: running, holding the lease, broker and Redis reachable, state durable within
        the limit (thread-safe reads)."""
        reasons = []
        if self.state == "failed":
            reasons.append(f"failed: {self.failure}")
        elif self.state != "running":
            reasons.append(self.state)
        if self.lease.state != "held":
            reasons.append(f"lease {self.lease.state}")
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
        if self.source is not None and self.source.unclaimed:
            reasons.append(f"{len(self.source.unclaimed)} assigned partitions could not be claimed yet")
        return {"ready": not reasons, "reasons": reasons, "state": self.shown_state(), "kafka": kafka_ok,
                "redis": redis_ok, "snapshot_age_s": round(age, 3), "model_version": self.model_version,
                "degraded": self.degraded, "pipeline": self.cfg.name}

    def _scrape_gauges(self) -> None:
        self.metrics.snapshot_age.set(time.time() - self.last_snapshot_at if self.last_snapshot_at else 0.0)
        lag = self._last_lag
        if lag is not None:
            self.metrics.lag.set(lag)

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
                self.status.update(self.status_fields())
            except (redis.RedisError, LeaseLost) as exc:
                log.warning("could not mark the pipeline %s in Redis: %s", final, exc)
        if self.lease.state == "held":
            self.lease.release()
        else:
            self.lease.stop_renewing()
        if self.http is not None:
            self.http.stop()
        if isinstance(self.core, RemoteCore):
            self.core.close()

    def summary(self) -> dict[str, Any]:
        s = self.core.summary()
        return {"pipeline": self.cfg.name, "records_seen": self.records_seen, "samples_seen": self.core.samples_seen,
                "labelled_seen": self.core.labelled_seen, "accuracy": s["accuracy"],
                "nochange_accuracy": s["nochange_accuracy"], "balanced_accuracy": s["balanced_accuracy"],
                "log_loss": s["log_loss"], "dlq_count": self.dlq_count, "drift_count": self.core.drift_count,
                "model_version": self.model_version, "state": self.state, "incidents": dict(self.incidents),
                "elapsed_s": time.time() - self.started_at}


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


def _undecodable(exc: BaseException) -> bool:
    """A record batch the client cannot decompress (a codec library missing or a corrupt batch)."""
    return type(exc).__name__ in ("UnsupportedCodecError", "CorruptRecordError", "CorruptRecordException") or \
        "codec" in str(exc).lower()


def _redis_error(exc: BaseException) -> str:
    """A one-line description of a Redis error (redis-py messages name host:port, never credentials)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
