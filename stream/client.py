"""Query API over Redis: status, metrics, drift history, snapshots, and the learner itself.

Any process can read what a running (or stopped) daemon published, with no access to the
daemon. ``load_learner`` rebuilds a working learner from the latest complete snapshot;
it refuses pickled (river) states unless ``allow_pickle=True``.

Replicas (several daemons of one pipeline, ``scale.replica``): every method takes
``replica`` (default "", the single-daemon keys); ``replicas`` lists them with their
status, and ``load_global_learner`` merges every replica's latest AnalyticRidge state into
the exact model of all partitions (``learners.merge``).

``rollback`` makes an older complete snapshot the latest. Rule: it takes effect when the
daemon next *starts* (it loads ``latest`` and seeks to that snapshot's offsets, so every
record after them is learned again, once). A running daemon would overwrite ``latest`` with
its own next snapshot, so ``rollback`` takes the pipeline's lease (``stream.lease``) and is
refused while a daemon holds it (stop the daemon, roll back, start it again); ``force=True``
takes the lease anyway: the running daemon's next write is refused and it stops without
writing more (a daemon that merely stalled finds the rollback when it resumes and reloads
it). The newer versions are kept (rolling forward is another rollback) until pruning
removes them.
"""

from __future__ import annotations

import difflib
from typing import Any

import orjson

from ocld.core.snapshot import CorruptSnapshot
from ocld.learners.base import Learner
from ocld.learners.merge import merge_global
from ocld.learners.registry import learner_from_state
from ocld.stream.config import redact_url
from ocld.stream.errors import OcldError
from ocld.stream.store import Keys, SnapshotStore, connect, replica_names


class RollbackRefused(OcldError, LookupError):
    """A rollback that cannot be done as asked; the message says what to do instead."""


class PipelineNotFound(OcldError, LookupError):
    """The pipeline (or replica) named has left nothing in this Redis; the message lists those that have."""


class SnapshotUnreadable(OcldError, LookupError):
    """A stored snapshot's manifest cannot be read; the message names the version and the way out."""


def decode_field(value: bytes) -> Any:
    text = value.decode()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return text


class StateClient:
    def __init__(self, redis_url: str, namespace: str = "ocld", password: str | None = None,
                 username: str | None = None, cluster: bool = False) -> None:
        self.r = connect(redis_url, password, username, cluster=cluster)
        self.namespace = namespace
        self.server = redact_url(redis_url)  # for messages: never the password

    def exists(self, pipeline: str, replica: str = "") -> bool:
        """Whether the pipeline (or one of its replicas) has left any state here: a status, a
        snapshot, metrics, a heartbeat or, for the pipeline, a replica or partition registry."""
        k = Keys(pipeline, self.namespace, replica)
        keys = [k.status, k.latest, k.versions, k.lease, k.alive, k.metrics, k.drift]
        if not replica:
            keys += [k.replicas, k.partition_offsets]
        return any(self.r.exists(key) for key in keys)

    def require(self, pipeline: str, replica: str = "") -> None:
        """Raise ``PipelineNotFound`` unless :meth:`exists`; the message lists what this Redis holds."""
        if self.exists(pipeline, replica):
            return
        if self.old_layout(pipeline):
            raise PipelineNotFound(
                f"pipeline {pipeline!r} is stored in the key layout of an older ocld (without hash tags) in Redis at "
                f"{self.server}: run `ocld migrate {pipeline}` (or start its daemon, which moves the keys itself)")
        if replica:
            known = [n for n in self.replica_names(pipeline) if n]
            what, choices = f"replica {replica!r} of pipeline {pipeline!r}", known
            fix = f"replicas here: {', '.join(known)}" if known else "this pipeline has no named replicas here"
        else:
            known = self.pipelines()
            what, choices = f"pipeline {pipeline!r}", known
            fix = (f"pipelines here: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}" if known else
                   "no pipeline has run against it: check --redis / REDIS_URL and the pipeline's name")
        hint = difflib.get_close_matches(replica or pipeline, choices, n=1)
        if hint:
            fix = f"did you mean {hint[0]!r}? {fix}"
        raise PipelineNotFound(f"{what} does not exist in Redis at {self.server} (namespace {self.namespace!r}); {fix}")

    def pipelines(self) -> list[str]:
        """Pipelines with a status here (those still in the layout of an older ocld: ``old_layout``)."""
        names = set()
        for key in self.r.scan_iter(match=f"{self.namespace}:*:status", count=1000):
            name = key.decode()[len(self.namespace) + 1:-len(":status")].split(":replica:", 1)[0]
            if name.startswith("{") and name.endswith("}"):
                names.add(name[1:-1])
        return sorted(names)

    def old_layout(self, pipeline: str) -> bool:
        """Whether ``pipeline``'s keys are still in the layout before hash tags (``ocld migrate`` moves them)."""
        from ocld.stream.store import old_layout_keys

        return bool(old_layout_keys(self.r, pipeline, self.namespace))

    def migrate(self, pipeline: str) -> int:
        """Move ``pipeline``'s keys to the hash-tagged layout (atomic); the number of keys moved."""
        from ocld.stream.store import migrate_layout

        return migrate_layout(self.r, pipeline, self.namespace)

    def replica_names(self, pipeline: str) -> list[str]:
        """Replicas that have published a status ("" is the single-daemon layout)."""
        return replica_names(self.r, pipeline, self.namespace)

    def replicas(self, pipeline: str) -> list[dict[str, Any]]:
        """Every replica's status (host, pid, partitions, lag, samples, last snapshot, ...)."""
        return [{"replica": name, **self.status(pipeline, name)} for name in self.replica_names(pipeline)]

    def partitions(self, pipeline: str) -> dict[str, dict[str, Any]]:
        """The shared partition registry: "topic:partition" -> offset covered, owner, epoch."""
        return self.store(pipeline).registry()

    def status(self, pipeline: str, replica: str = "") -> dict[str, Any]:
        """The status hash. ``alive``: a daemon holds the lease; ``state`` is shown as ``dead`` when the
        hash says the daemon runs but nobody holds the lease (it died without saying so)."""
        from ocld.stream.status import Status

        k = Keys(pipeline, self.namespace, replica)
        raw = self.r.hgetall(k.status)
        written = {key.decode() for key in raw}
        out = {name: v for name, v in Status.from_redis(raw).model_dump().items() if name in written}
        holder = self.r.get(k.lease)
        out["alive"] = holder is not None
        if out.get("state") in ("starting", "running", "degraded", "stopping") and holder is None:
            out["state_reported"] = out["state"]
            out["state"] = "dead"
        return out

    def metrics(self, pipeline: str, count: int = 100, replica: str = "") -> list[dict[str, Any]]:
        """The newest ``count`` metric points, oldest first."""
        entries = self.r.xrevrange(Keys(pipeline, self.namespace, replica).metrics, count=count)
        return [{"id": eid.decode(), **{k.decode(): decode_field(v) for k, v in fields.items()}}
                for eid, fields in reversed(entries)]

    def drift_events(self, pipeline: str, count: int = 1000, replica: str = "") -> list[dict[str, Any]]:
        entries = self.r.xrevrange(Keys(pipeline, self.namespace, replica).drift, count=count)
        return [{"id": eid.decode(), **{k.decode(): decode_field(v) for k, v in fields.items()}}
                for eid, fields in reversed(entries)]

    def store(self, pipeline: str, replica: str = "") -> SnapshotStore:
        return SnapshotStore(self.r, pipeline, self.namespace, replica=replica)

    def snapshot_info(self, pipeline: str, replica: str = "") -> dict[str, Any]:
        store = self.store(pipeline, replica)
        latest = store.latest_version()
        if latest is None:
            return {"latest": None, "versions": []}
        pinned = sorted(int(v) for v in self.r.smembers(store.keys.pinned))
        try:
            info = store.manifest_info(latest)
        except (CorruptSnapshot, KeyError, TypeError, AttributeError) as exc:
            detail = str(exc) if isinstance(exc, CorruptSnapshot) else f"{type(exc).__name__}: {exc}"
            others = [v for v in store.versions() if v != latest]
            way_out = (f"versions also stored: {others}; with the daemon stopped, `ocld rollback {pipeline} --to "
                       f"{others[0]}` makes one of them the latest" if others else
                       "no other version is stored, so a daemon started now finds no usable snapshot")
            raise SnapshotUnreadable(f"the latest snapshot (version {latest}) of pipeline {pipeline!r} has an "
                                     f"unreadable manifest ({detail[:160]}); {way_out}") from None
        return {"latest": info, "versions": store.versions(), "pinned": pinned}

    def load_learner(self, pipeline: str, allow_pickle: bool = False, replica: str = "") -> Learner:
        snap = self.store(pipeline, replica).load_latest()
        if snap is None:
            who = f"replica {replica!r} of pipeline {pipeline!r}" if replica else f"pipeline {pipeline!r}"
            raise LookupError(f"{who} has no snapshot in Redis")
        return learner_from_state(snap.parts["learner"], allow_pickle=allow_pickle)

    def replica_snapshots(self, pipeline: str) -> dict[str, Any]:
        """replica -> its latest complete snapshot (replicas without one are left out)."""
        out = {}
        for name in self.replica_names(pipeline):
            snap = self.store(pipeline, name).load_latest()
            if snap is not None:
                out[name] = snap
        return out

    def load_global_learner(self, pipeline: str) -> Learner:
        """The exact model of all partitions: every replica's latest AnalyticRidge statistics added up.

        Raises ``learners.merge.MergeError`` for heads that do not merge exactly (see there)
        and LookupError when no replica has a snapshot. Never unpickles.
        """
        return self._merged(pipeline, self.replica_snapshots(pipeline))

    @staticmethod
    def _merged(pipeline: str, snaps: dict[str, Any]) -> Learner:
        if not snaps:
            raise LookupError(f"pipeline {pipeline!r} has no replica with a snapshot in Redis")
        return merge_global([learner_from_state(s.parts["learner"], allow_pickle=False) for s in snaps.values()])

    def global_info(self, pipeline: str) -> dict[str, Any]:
        """What ``ocld query --global`` prints: the replicas merged and the joint model's counts."""
        snaps = self.replica_snapshots(pipeline)
        model = self._merged(pipeline, snaps)
        head = getattr(model, "head", model)
        stats = head.sufficient_statistics()  # type: ignore[union-attr]
        records: dict[str, int] = {}
        for s in snaps.values():
            for tp, n in (s.info.get("partition_records") or {}).items():
                records[tp] = records.get(tp, 0) + int(n)
        return {"pipeline": pipeline, "replicas": {name: {"version": s.info.get("version"),
                                                           "labelled_seen": s.info.get("labelled_seen"),
                                                           "partition_records": s.info.get("partition_records")}
                                                    for name, s in snaps.items()},
                "labelled_seen": stats["n_seen"], "classes": stats["classes"],
                "class_counts": [float(c) for c in stats["counts"]], "partition_records": dict(sorted(records.items())),
                "registry": self.partitions(pipeline)}

    def rollback(self, pipeline: str, version: int, force: bool = False, replica: str = "") -> dict[str, Any]:
        """Make complete snapshot ``version`` the latest (see the module docstring for the rule).

        Verifies every chunk's checksum first. Returns the previous and new latest version and
        the offsets (topic -> partition -> next offset) the daemon will resume from.
        """
        store = self.store(pipeline, replica)
        k = Keys(pipeline, self.namespace, replica)
        versions = store.versions()
        if version not in versions:
            raise RollbackRefused(f"pipeline {pipeline!r} has no complete snapshot version {version}; "
                                  f"stored versions: {sorted(versions)} (pinned ones are kept for rollback)")
        from ocld.stream.lease import Lease, describe
        from ocld.stream.store import LeaseLost

        # Rollback takes the pipeline's lease, like a daemon: refused while a daemon holds it, unless
        # forced, in which case the daemon finds its lease taken at its next write and stops, writing
        # nothing more (so nothing it learned after the rolled-back version can land on top of it).
        lease = Lease(self.r, k.lease, 30.0, role="rollback")
        holder = lease.holder()
        if not lease.try_acquire():
            if not force:
                raise RollbackRefused(
                    f"pipeline {pipeline!r} has a running daemon ({describe(holder)} holds its lease): it would "
                    "overwrite 'latest' with its next snapshot. Stop it (SIGTERM), run the rollback, then start it "
                    "again; or pass --force to take the lease from it (it then stops without writing more)")
            lease.value = lease._new_value()
            self.r.set(k.lease, lease.value, px=lease.ttl_ms)
            lease.state = "held"
        previous = store.latest_version()
        try:
            store.guard.lease = lease
            store.set_latest(version)
        except (CorruptSnapshot, KeyError, TypeError, AttributeError) as exc:
            raise RollbackRefused(f"snapshot version {version} of {pipeline!r} fails verification ({exc}); "
                                  "choose another version") from None
        except LeaseLost as exc:
            raise RollbackRefused(f"pipeline {pipeline!r}: a daemon took the lease during the rollback ({exc}); "
                                  "nothing was changed: stop it and run the rollback again") from None
        finally:
            lease.release()
        alive = holder
        info = store.manifest_info(version)
        self.r.publish(k.events, f"rollback {version}")
        return {"pipeline": pipeline, "previous": previous, "version": version, "offsets": info["offsets"],
                "labelled_seen": info["info"].get("labelled_seen"), "samples_seen": info["info"].get("samples_seen"),
                "created_at": info["created_at"], "forced": bool(force and alive is not None)}
