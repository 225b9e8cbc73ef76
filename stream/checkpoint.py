"""When a snapshot is due, and the commit in its one written-down order.

The order, never changed: flush the outputs (dead letters, predictions) -> write the snapshot
and switch ``latest`` (one fenced, lease-checked Lua script, with the partitions' registry
offsets) -> commit the offsets to the consumer group (for monitoring only). Every partition
starts where the last durable snapshot says, so a crash anywhere in between re-learns exactly
what that snapshot does not cover.

A snapshot is due after ``snapshot.every_samples`` labelled samples, after
``snapshot.every_seconds`` with anything new, at once when forced (a log reset, Redis data
loss), and while degraded. Outage rule: a failed snapshot (Redis unreachable or refusing writes,
outputs not flushed) is retried on the :class:`~ocld.stream.backoff.Backoff` schedule
(0.5 s doubling to 10 s) while learning continues in memory and no offset is committed beyond
the last durable snapshot; the state is ``degraded`` until a snapshot is durable again
(``redis_outages``, ``degraded_since``, ``last_outage_s`` tell the story).

Owns no keys of its own: it writes through ``stream.store`` and claims nothing. The daemon
decides what to do when a switch is fenced, finds the claims gone, or the lease lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis
from kafka.errors import KafkaError

from ocld.core.snapshot import Snapshot
from ocld.stream.backoff import Backoff
from ocld.stream.config import SnapshotConfig
from ocld.stream.faults import fault_point
from ocld.stream.store import Fenced, LeaseLost, RegistryMissing, SnapshotStore

log = logging.getLogger("ocld.checkpoint")

TP = tuple[str, int]
Outcome = Literal["durable", "unchanged", "failed", "fenced", "missing", "lease"]


@dataclass
class Taken:
    """What a snapshot holds: the core's parts, where each partition is, and its counters."""

    parts: dict[str, Any]
    offsets: dict[TP, int]
    fingerprints: dict[TP, str | None]
    info: dict[str, Any]


class Checkpointer:
    def __init__(self, cfg: SnapshotConfig, store: SnapshotStore, metrics: Any) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.model_version: int | None = None
        self.last_snapshot_at: float | None = None  # wall time of the last durable snapshot
        self.snapshot_seconds = 0.0
        self.error: Exception | None = None  # the Fenced / RegistryMissing of the last commit
        self.force = False
        self._last_t = time.monotonic()
        self._labelled_at = 0
        self._records_at = 0
        self._retry_at = 0.0
        self.backoff = Backoff(0.5, 10.0)
        self.degraded = False
        self.degraded_since: float | None = None
        self.redis_outages = 0
        self.last_outage_s: float | None = None
        self.redis_down = False

    # -- when ----------------------------------------------------------------------------
    def restored(self, version: int | None, created_at: float | None, labelled: int, records: int) -> None:
        """The state now is snapshot ``version``'s (none: a fresh start)."""
        self.model_version = version
        self.last_snapshot_at = created_at
        self._labelled_at = labelled
        self._records_at = records
        self._last_t = time.monotonic()

    def expired(self, now: float, labelled: int, records: int) -> bool:
        """A snapshot is due and its retry time has come."""
        due = (labelled - self._labelled_at >= self.cfg.every_samples
               or (now - self._last_t >= self.cfg.every_seconds and records != self._records_at)
               or self.degraded or self.force)
        return due and now >= self._retry_at

    def unsnapshotted_age(self, records: int) -> float:
        """Seconds that consumed work has waited for a durable snapshot (0 when all of it is durable)."""
        return 0.0 if records == self._records_at else time.monotonic() - self._last_t

    # -- the commit ----------------------------------------------------------------------
    def commit(self, take: Callable[[], Taken], sink: Any, source: Any, ownership: Any, records: int,
               labelled: int, final: bool = False, force: bool = False) -> Outcome:
        """flush outputs -> write + switch -> commit offsets (the caller has finished every poll in flight)."""
        self.error = None
        if not force and records == self._records_at and (self.model_version is not None or not final):
            if self.degraded and not self.redis_down:
                self._recovered()  # an outage with nothing to catch up on
            return "unchanged"
        t0 = time.perf_counter()
        try:
            sink.flush(2.0 if final else 10.0)  # stopping: SIGTERM must not wait out a dead broker
        except KafkaError as exc:
            # Outputs (DLQ, predictions) must be durable before offsets move: postpone.
            self.failed(f"outputs could not be flushed to the broker ({type(exc).__name__})", final)
            return "failed"
        taken = take()
        by_topic: dict[str, dict[int, int]] = {}
        for (t, p), o in taken.offsets.items():
            by_topic.setdefault(t, {})[p] = o
        fence, registry, reg_fps = ownership.switch_args(source.offsets, source.fingerprints)
        try:
            version = self.store.write(Snapshot(taken.parts, by_topic, taken.info), fence=fence,
                                       registry_offsets=registry, fingerprints=reg_fps)
        except (Fenced, RegistryMissing) as exc:
            self.error = exc
            return "fenced" if isinstance(exc, Fenced) else "missing"
        except LeaseLost as exc:
            log.warning("snapshot not switched: %s", exc)
            if final:
                log.error("final snapshot not written: the lease is not this daemon's; the next writer re-learns "
                          "from the last durable snapshot")
            return "lease"
        except redis.RedisError as exc:
            from ocld.stream.ownership import is_permission_error

            if is_permission_error(exc):
                raise
            self.redis_down = True
            self.failed(f"Redis unreachable or refusing writes ({type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]})", final)
            return "failed"
        fault_point("daemon.before_commit")
        owned = source.owned()
        ownership.switched({tp: (taken.offsets[tp], taken.fingerprints.get(tp)) for tp in taken.offsets})
        ownership.keep(owned)
        source.commit()  # before forget: a revocation's snapshot commits the partitions being handed over too
        source.forget(owned)
        self.model_version = version
        self.force = False
        self._last_t = time.monotonic()
        self.last_snapshot_at = time.time()
        self._labelled_at = labelled
        self._records_at = records
        self.backoff.reset()
        self.snapshot_seconds = time.perf_counter() - t0
        self.metrics.snapshot_duration.observe(self.snapshot_seconds)
        if self.degraded:
            self._recovered()
        return "durable"

    # -- outages -------------------------------------------------------------------------
    def failed(self, why: str, final: bool = False) -> None:
        if not self.degraded:
            self.redis_outages += 1 if self.redis_down else 0
            self.degraded_since = time.time()
        self.degraded = True
        self.metrics.snapshot_failures.inc()
        delay = self.backoff.next()
        self._retry_at = time.monotonic() + delay
        log.warning("snapshot failed: %s; learning continues, offsets not committed past snapshot %s; retry in %.1f s",
                    why, self.model_version, delay)
        if final:
            log.error("final snapshot could not be written; the next start re-learns from the last durable one")

    def status_failed(self, why: str) -> None:
        """A status write failed: Redis is down (the snapshot, when due, will say so too)."""
        self.redis_down = True
        if not self.degraded:
            log.warning("status update failed, Redis unreachable (%s); learning continues", why)
            self.redis_outages += 1
            self.degraded_since = time.time()
            self.degraded = True

    def status_written(self, retry_in: float) -> None:
        """A status write worked: after an outage, try the catch-up snapshot soon."""
        if self.redis_down:
            log.info("Redis answers again; status degraded until a snapshot covers the outage")
            self.redis_down = False
            self._retry_at = time.monotonic() + retry_in
            self.backoff.reset()

    def _recovered(self) -> None:
        log.info("snapshot %s is durable and covers everything learned during the outage; status running",
                 self.model_version)
        self.degraded = False
        self.last_outage_s = round(time.time() - self.degraded_since, 3) if self.degraded_since else None
        self.degraded_since = None
        try:
            self.store.clean_orphans()  # chunks of snapshots that the outage cut short
        except redis.RedisError:
            pass
