"""Redis: versioned snapshot store, live status, metric and drift streams, notifications.

Keys (namespace ``{ns}:{pipeline}``, ``ns`` = ``ocld`` by default; a named replica keeps the
keys of this first table under ``{ns}:{pipeline}:replica:{name}`` instead):

    status            hash    live status (state, host, pid, counters, accuracy, ...)
    alive             string  heartbeat, expires after heartbeat_ttl_s
    version           string  counter of snapshot versions (INCR)
    snap:{v}:chunk:{i} string one chunk of raw array bytes (<= 64 MiB)
    snap:{v}:manifest string  JSON manifest (ocld.core.snapshot)
    latest            hash    version, offsets (JSON), checksum, created_at, samples_seen
    versions          zset    complete versions (score = version)
    pinned            set     versions kept for rollback (taken just before an adaptation)
    metrics           stream  periodic metric points (MAXLEN ~)
    drift             stream  drift events (MAXLEN ~)
    events            pub/sub "snapshot {v}", "drift {n}"

Shared by every replica of a pipeline (always under ``{ns}:{pipeline}``):

    partitions:offset hash    "topic:partition" -> next offset covered by a durable snapshot
    partitions:owner  hash    "topic:partition" -> "replica|epoch" of its last claimant
    replicas          set     replica names that have published a status

Snapshot write order (a crash at any step leaves ``latest`` at a complete version):
    1. v = INCR version
    2. SET every chunk, then the manifest
    3. one Lua script: if every partition learned from since the last snapshot is still
       owned under this replica's claim (its epoch), HSET latest ..., ZADD versions v and
       HSET partitions:offset for those partitions; else change nothing   <- the switch
    4. delete versions beyond ``keep`` that are not pinned
    5. PUBLISH events "snapshot v"
The daemon commits Kafka offsets only after step 3 returned.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import orjson
import redis

from ocld.core import snapshot as fmt
from ocld.stream.config import redact_url
from ocld.stream.faults import fault_point

log = logging.getLogger("ocld.state")


def connect(url: str, password: str | None = None, username: str | None = None, timeout: float = 5.0) -> redis.Redis:
    """A redis-py client; ``rediss://`` gives TLS. Errors never show the password."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "health_check_interval": 30}
    if password:
        kwargs["password"] = password
    if username:
        kwargs["username"] = username
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {redact_url(url)}: {exc}") from None


class Keys:
    """Key names. ``replica`` "" gives the single-daemon layout ``{ns}:{pipeline}:*``; a named
    replica keeps its own state under ``{ns}:{pipeline}:replica:{replica}:*``. The partition
    registry and the replica set are shared by all replicas of the pipeline."""

    def __init__(self, pipeline: str, namespace: str = "ocld", replica: str = "") -> None:
        self.root = f"{namespace}:{pipeline}"
        self.replica = replica
        self.base = f"{self.root}:replica:{replica}" if replica else self.root

    def __getattr__(self, name: str) -> str:  # status, alive, latest, versions, ...
        return f"{self.base}:{name}"

    def chunk(self, version: int, i: int) -> str:
        return f"{self.base}:snap:{version}:chunk:{i}"

    def manifest(self, version: int) -> str:
        return f"{self.base}:snap:{version}:manifest"

    @property
    def partition_offsets(self) -> str:
        """hash "topic:partition" -> next offset covered by the owner's latest durable snapshot."""
        return f"{self.root}:partitions:offset"

    @property
    def partition_owners(self) -> str:
        """hash "topic:partition" -> "replica|epoch" of the last replica that claimed it."""
        return f"{self.root}:partitions:owner"

    @property
    def replicas(self) -> str:
        """set of replica names that have run this pipeline ("" is the single-daemon layout)."""
        return f"{self.root}:replicas"


def tp_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


# Claim partitions for a replica: bump each partition's epoch, name the replica as owner,
# and return [epoch, offset-or-""] per partition. Atomic (a Lua script runs alone).
_CLAIM = """
local out = {}
for i = 2, #ARGV do
  local tp = ARGV[i]
  local old = redis.call('HGET', KEYS[1], tp)
  local epoch = 0
  if old then epoch = tonumber(string.match(old, '|(%d+)$')) or 0 end
  epoch = epoch + 1
  redis.call('HSET', KEYS[1], tp, ARGV[1] .. '|' .. epoch)
  local off = redis.call('HGET', KEYS[2], tp)
  table.insert(out, epoch)
  table.insert(out, off or '')
end
return out
"""

# The snapshot switch: if every fenced partition is still owned by the writer's claim, move
# ``latest``, add the version and advance the registry offsets, all at once; else change
# nothing and return the partitions that another replica has claimed since.
_SWITCH = """
local a = cjson.decode(ARGV[1])
local lost = {}
for tp, token in pairs(a.fence) do
  if redis.call('HGET', KEYS[3], tp) ~= token then table.insert(lost, tp) end
end
if #lost > 0 then return lost end
for k, v in pairs(a.latest) do redis.call('HSET', KEYS[1], k, v) end
redis.call('ZADD', KEYS[2], a.version, a.version_s)
for tp, off in pairs(a.offsets) do redis.call('HSET', KEYS[4], tp, off) end
return {}
"""


class Fenced(RuntimeError):
    """Another replica claimed partitions this replica learned from since its last durable snapshot."""

    def __init__(self, version: int, lost: list[str]) -> None:
        super().__init__(f"snapshot {version} not switched: partitions {sorted(lost)} were claimed by another replica")
        self.version = version
        self.lost = sorted(lost)


def replica_names(client: redis.Redis, pipeline: str, namespace: str = "ocld") -> list[str]:
    """Replicas that have published a status ("" is the single-daemon layout)."""
    keys = Keys(pipeline, namespace)
    names = {m.decode() if isinstance(m, bytes) else str(m) for m in client.smembers(keys.replicas)}
    if not names and client.exists(keys.status):
        names = {""}  # written before the replica set existed
    return sorted(names)


class SnapshotStore:
    def __init__(self, client: redis.Redis, pipeline: str, namespace: str = "ocld", keep: int = 3,
                 chunk_bytes: int = 64 * 1024 * 1024, replica: str = "", max_pinned: int | None = None) -> None:
        self.r = client
        self.pipeline = pipeline
        self.replica = replica
        self.keys = Keys(pipeline, namespace, replica)
        self.keep = keep
        self.max_pinned = max_pinned
        self.chunk_bytes = chunk_bytes

    # -- write -----------------------------------------------------------------------
    def write(self, snap: fmt.Snapshot, fence: dict[str, str] | None = None,
              registry_offsets: dict[str, int] | None = None) -> int:
        """Write a new complete version and switch ``latest`` to it; return the version.

        ``fence``: "topic:partition" -> the "replica|epoch" token this writer claimed; the switch
        happens only if every one still holds, else the chunks are deleted and :class:`Fenced`
        is raised. ``registry_offsets``: the partitions' next offsets to publish in the shared
        registry with the switch (default: every offset in the snapshot).
        """
        snap.info.setdefault("created_at", time.time())
        manifest, chunks = fmt.encode(snap, self.chunk_bytes)
        k = self.keys
        version = int(self.r.incr(k.version))
        for i, chunk in enumerate(chunks):
            self.r.set(k.chunk(version, i), chunk)
            fault_point("snapshot.after_chunk")
        self.r.set(k.manifest(version), manifest)
        fault_point("snapshot.before_switch")
        if registry_offsets is None:
            registry_offsets = {tp_field(t, int(p)): int(o) for t, ps in snap.offsets.items() for p, o in ps.items()}
        args = orjson.dumps({
            "version": version, "version_s": str(version), "fence": fence or {},
            "offsets": {tp: str(o) for tp, o in registry_offsets.items()},
            "latest": {
                "version": str(version),
                "offsets": orjson.dumps({t: {str(p): o for p, o in ps.items()} for t, ps in snap.offsets.items()}).decode(),
                "checksum": fmt.checksum(manifest),
                "created_at": repr(float(snap.info["created_at"])),
                "samples_seen": str(snap.info.get("samples_seen", 0)),
            },
        })
        lost = self.r.eval(_SWITCH, 4, k.latest, k.versions, k.partition_owners, k.partition_offsets, args)
        if lost:
            self._delete(version)
            raise Fenced(version, [x.decode() if isinstance(x, bytes) else str(x) for x in lost])
        fault_point("snapshot.after_switch")
        self.prune()
        self.r.publish(k.events, f"snapshot {version}")
        return version

    # -- partition registry -------------------------------------------------------------
    def claim(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, int | None]]:
        """Claim partitions for this replica: (topic, partition) -> (fence token, registry offset or None)."""
        if not tps:
            return {}
        fields = [tp_field(t, p) for t, p in tps]
        out = self.r.eval(_CLAIM, 2, self.keys.partition_owners, self.keys.partition_offsets, self.replica, *fields)
        result: dict[tuple[str, int], tuple[str, int | None]] = {}
        for i, tp in enumerate(tps):
            epoch, off = int(out[2 * i]), out[2 * i + 1]
            result[tp] = (f"{self.replica}|{epoch}", int(off) if off not in (b"", "", None) else None)
        return result

    def registry(self) -> dict[str, dict[str, Any]]:
        """"topic:partition" -> {"offset", "owner", "epoch"} for every partition any replica claimed."""
        offsets = {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.partition_offsets).items()}
        owners = {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.partition_owners).items()}
        out: dict[str, dict[str, Any]] = {}
        for tp in sorted(set(offsets) | set(owners)):
            owner, _, epoch = owners.get(tp, "|0").rpartition("|")
            out[tp] = {"offset": offsets.get(tp), "owner": owner, "epoch": int(epoch or 0)}
        return out

    def prune(self) -> None:
        k = self.keys
        versions = [int(v) for v in self.r.zrevrange(k.versions, 0, -1)]
        pinned = {int(v) for v in self.r.smembers(k.pinned)}
        if self.max_pinned is not None and len(pinned) > self.max_pinned:
            # A daemon that adapts often (false alarms included) would otherwise pin without bound.
            latest = self.latest_version()
            oldest = [v for v in sorted(pinned) if v != latest][: len(pinned) - self.max_pinned]
            if oldest:
                self.r.srem(k.pinned, *oldest)
                pinned -= set(oldest)
        for v in versions[self.keep:]:
            if v not in pinned:
                self._delete(v)

    def clean_orphans(self) -> int:
        """Delete chunks of versions that never became complete (crash before the switch)."""
        k = self.keys
        complete = {int(v) for v in self.r.zrange(k.versions, 0, -1)}
        latest = self.latest_version() or 0
        current = int(self.r.get(k.version) or 0)
        orphans: set[int] = set()
        prefix = f"{k.base}:snap:"
        for key in self.r.scan_iter(match=f"{prefix}*", count=1000):
            v = int(key.decode()[len(prefix):].split(":", 1)[0])
            if v not in complete and v <= current and v != latest:
                orphans.add(v)
        for v in orphans:
            self._delete(v)
        return len(orphans)

    def _delete(self, version: int) -> None:
        k = self.keys
        keys = list(self.r.scan_iter(match=f"{k.base}:snap:{version}:*", count=1000))
        pipe = self.r.pipeline(transaction=True)
        if keys:
            pipe.delete(*keys)
        pipe.zrem(k.versions, str(version))
        pipe.execute()

    def pin(self, version: int) -> None:
        self.r.sadd(self.keys.pinned, version)

    # -- read ------------------------------------------------------------------------
    def latest_version(self) -> int | None:
        v = self.r.hget(self.keys.latest, "version")
        return int(v) if v is not None else None

    def versions(self) -> list[int]:
        return [int(v) for v in self.r.zrevrange(self.keys.versions, 0, -1)]

    def read(self, version: int) -> fmt.Snapshot:
        k = self.keys
        manifest = self.r.get(k.manifest(version))
        if manifest is None:
            raise fmt.CorruptSnapshot(f"version {version} has no manifest")
        try:
            n = len(fmt.parse_manifest(manifest)["chunks"])
            chunks = self.r.mget([k.chunk(version, i) for i in range(n)]) if n else []
            snap = fmt.decode(manifest, chunks)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, fmt.CorruptSnapshot):
                raise
            # A manifest that parses but lacks or mistypes a field (crafted or cut short).
            raise fmt.CorruptSnapshot(f"version {version} has a malformed manifest ({type(exc).__name__}: "
                                      f"{str(exc)[:80]})") from None
        snap.info["version"] = version
        return snap

    def load_latest(self) -> fmt.Snapshot | None:
        """The latest complete snapshot; on a checksum failure, the newest older one that verifies."""
        latest = self.latest_version()
        if latest is None:
            return None
        candidates = [latest] + [v for v in self.versions() if v < latest]
        for v in candidates:
            try:
                snap = self.read(v)
            except fmt.CorruptSnapshot as exc:
                log.error("snapshot version %d of pipeline %r is unusable (%s); trying an older version", v, self.pipeline, exc)
                continue
            if v != latest:
                log.warning("fell back from snapshot version %d to %d", latest, v)
                snap.info["fell_back_from"] = latest
            return snap
        log.error("no usable snapshot for pipeline %r; starting fresh", self.pipeline)
        return None

    def manifest_info(self, version: int) -> dict[str, Any]:
        manifest = self.r.get(self.keys.manifest(version))
        if manifest is None:
            raise fmt.CorruptSnapshot(f"version {version} has no manifest")
        m = fmt.parse_manifest(manifest)
        return {"version": version, "created_at": m["created_at"], "info": m["info"], "offsets": m["offsets"],
                "total_bytes": m["total_bytes"], "chunks": len(m["chunks"]),
                "learner": m["tree"].get("learner", {}).get("kind")}

    def set_latest(self, version: int) -> None:
        """Make an existing complete version the latest (rollback)."""
        info = self.manifest_info(version)
        self.read(version)  # verify checksums before switching
        owners = {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.partition_owners).items()}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.latest, mapping={
            "version": version, "offsets": orjson.dumps(info["offsets"]), "created_at": info["created_at"],
            "samples_seen": info["info"].get("samples_seen", 0),
            "checksum": fmt.checksum(self.r.get(self.keys.manifest(version))),
        })
        # The registry's offsets move back too, for the partitions this replica owns (or nobody
        # does): the daemon resumes there. A partition another replica has claimed since stays.
        for t, ps in info["offsets"].items():
            for p, o in ps.items():
                tp = tp_field(t, int(p))
                owner = owners.get(tp)
                if owner is None or owner.rpartition("|")[0] == self.replica:
                    pipe.hset(self.keys.partition_offsets, tp, int(o))
        pipe.execute()


class StatusStore:
    """Live status hash, heartbeat, metric and drift streams, event notifications."""

    def __init__(self, client: redis.Redis, pipeline: str, namespace: str = "ocld", heartbeat_ttl_s: int = 15,
                 metrics_maxlen: int = 10_000, drift_maxlen: int = 10_000, replica: str = "") -> None:
        self.r = client
        self.keys = Keys(pipeline, namespace, replica)
        self.replica = replica
        self.ttl = heartbeat_ttl_s
        self.metrics_maxlen = metrics_maxlen
        self.drift_maxlen = drift_maxlen
        self.identity = {"host": socket.gethostname(), "pid": os.getpid()}

    def update(self, fields: dict[str, Any]) -> None:
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(k.status, mapping={key: _scalar(v) for key, v in fields.items()})
        pipe.sadd(k.replicas, self.replica)
        pipe.set(k.alive, orjson.dumps({**self.identity, "at": time.time()}), ex=self.ttl)
        pipe.execute()

    def add_metrics(self, point: dict[str, Any]) -> None:
        self.r.xadd(self.keys.metrics, {k: _scalar(v) for k, v in point.items()}, maxlen=self.metrics_maxlen, approximate=True)

    def add_drift(self, event: dict[str, Any], n: int) -> None:
        self.r.xadd(self.keys.drift, {k: _scalar(v) for k, v in event.items()}, maxlen=self.drift_maxlen, approximate=True)
        self.r.publish(self.keys.events, f"drift {n}")

    def stopped(self, fields: dict[str, Any]) -> None:
        self.update({**fields, "state": "stopped"})
        self.r.delete(self.keys.alive)


def _scalar(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float, str, bytes)):
        return v
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
