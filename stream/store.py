"""Redis: versioned snapshot store, live status, metric, drift and incident streams.

Keys (namespace ``{ns}:{pipeline}``, ``ns`` = ``ocld`` by default; a named replica keeps the
keys of this first table under ``{ns}:{pipeline}:replica:{name}`` instead):

    lease             string  the writer's lease (stream.lease): token, host, pid; expires after lease_ttl_s
    status            hash    live status (state, host, pid, counters, accuracy, ...)
    version           string  counter of snapshot versions (INCR)
    snap:{v}:chunk:{i} string one chunk of raw array bytes (<= 64 MiB)
    snap:{v}:manifest string  JSON manifest (ocld.core.snapshot)
    latest            hash    version, offsets (JSON), fingerprints (JSON), checksum, created_at,
                              samples_seen, writer (the lease token of the daemon that wrote it)
    versions          zset    complete versions (score = version)
    pinned            set     versions kept for rollback (taken just before an adaptation)
    metrics           stream  periodic metric points (MAXLEN ~)
    drift             stream  drift events (MAXLEN ~)
    incidents         stream  what the daemon found and repaired: topic_reset, records_lost,
                              redis_data_loss, registry_mismatch, lease_gap, learner_restarted, ...
    events            pub/sub "snapshot {v}", "drift {n}", "rollback {v}", "incident {kind}"

Shared by every replica of a pipeline (always under ``{ns}:{pipeline}``):

    partitions:offset      hash "topic:partition" -> next offset covered by a durable snapshot
    partitions:fingerprint hash "topic:partition" -> fingerprint of the record just before that offset
    partitions:writer      hash "topic:partition" -> the replica whose durable snapshot that offset is
    partitions:owner       hash "topic:partition" -> "replica|epoch" of its last claimant
    replicas               set  replica names that have published a status

Every write a daemon makes is a Lua script that first checks its lease (``stream.lease.GUARD``):
a daemon that lost its lease writes nothing more. The exceptions are writes that cannot
matter: INCR of the version counter and the chunks and manifest of a version that no switch
has made complete (orphans, deleted later).

Snapshot write order (a crash at any step leaves ``latest`` at a complete version):
    1. v = INCR version
    2. SET every chunk, then the manifest
    3. one Lua script: if the lease is ours and every partition learned from since the last
       snapshot is still owned under this replica's claim (its epoch), HSET latest ..., ZADD
       versions v and HSET partitions:offset / :fingerprint for those partitions; else change
       nothing                                                                   <- the switch
    4. delete versions beyond ``keep`` that are not pinned
    5. PUBLISH events "snapshot v"
The daemon commits Kafka offsets only after step 3 returned.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
import redis

from ocld.core import snapshot as fmt
from ocld.stream.config import redact_url
from ocld.stream.faults import fault_point
from ocld.stream.lease import GUARD, Lease

log = logging.getLogger("ocld.store")


# Every client here is built without decode_responses, so replies are bytes; redis-py's annotations also cover
# str replies and the asyncio client, so these say to mypy what a reply here is (no conversion).
def _hash(reply: Any) -> dict[bytes, bytes]:
    return cast("dict[bytes, bytes]", reply)


def _members(reply: Any) -> list[bytes]:
    return cast("list[bytes]", reply)


def _value(reply: Any) -> bytes | None:
    return cast("bytes | None", reply)


def connect(url: str, password: str | None = None, username: str | None = None, timeout: float = 5.0,
            cluster: bool = False) -> Any:
    """A redis-py client: ``redis://`` and ``rediss://`` (TLS) give one server; ``redis+cluster://``
    and ``rediss+cluster://`` (or ``cluster=True``) give a ``RedisCluster`` that finds the other
    nodes from the one named. Every key of a pipeline shares one hash slot (``Keys``), so the Lua
    scripts run the same on both. Errors never show the password."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if password:
        kwargs["password"] = password
    if username:
        kwargs["username"] = username
    scheme, sep, rest = url.partition("://")
    if scheme.endswith("+cluster"):
        scheme, cluster = scheme[: -len("+cluster")], True
    try:
        if cluster:
            from redis.cluster import ClusterNode, RedisCluster

            first, others = _seed_nodes(rest)
            if others:
                kwargs["startup_nodes"] = [ClusterNode(host, port) for host, port in others]
            return RedisCluster.from_url(f"{scheme}{sep}{first}", **kwargs)
        return redis.Redis.from_url(url, health_check_interval=30, **kwargs)
    except (ValueError, redis.RedisError) as exc:
        if isinstance(exc, redis.RedisError) and not isinstance(exc, redis.exceptions.RedisClusterException):
            raise
        raise ValueError(f"bad Redis URL {redact_url(url)}: {exc}") from None


def _seed_nodes(rest: str) -> tuple[str, list[tuple[str, int]]]:
    """Split ``[user:pw@]host1:port1,host2:port2/0`` into the URL tail with the first node only and
    the other seed nodes. A cluster client needs one reachable seed to find the rest, so naming
    several keeps new clients (``ocld status``, a restarted daemon) working while any one is down."""
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    seeds = [h.strip() for h in hosts.split(",") if h.strip()]
    if len(seeds) <= 1:
        return rest, []
    others = []
    for seed in seeds[1:]:
        host, colon, port = seed.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"cluster seed {seed!r} is not host:port")
        others.append((host.strip("[]"), int(port)))
    return f"{userinfo}{at}{seeds[0]}{slash}{tail}", others


class Keys:
    """Key names. Every key of a pipeline carries the pipeline's name in braces, ``{ns}:{{pipeline}}:*``
    (a Redis Cluster hash tag): all of them hash to one slot, so each Lua script touches one slot and
    one Redis and a cluster share one layout. ``replica`` "" gives the single-daemon keys; a named
    replica keeps its own state under ``{ns}:{{pipeline}}:replica:{replica}:*``. The partition registry
    and the replica set are shared by all replicas of the pipeline."""

    def __init__(self, pipeline: str, namespace: str = "ocld", replica: str = "") -> None:
        self.pipeline = pipeline
        self.namespace = namespace
        self.root = f"{namespace}:{{{pipeline}}}"
        self.replica = replica
        self.base = f"{self.root}:replica:{replica}" if replica else self.root

    def __getattr__(self, name: str) -> str:  # status, lease, latest, versions, ...
        if name.startswith("__"):
            raise AttributeError(name)
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
    def partition_fingerprints(self) -> str:
        """hash "topic:partition" -> fingerprint of the last record before that offset (log-reset check)."""
        return f"{self.root}:partitions:fingerprint"

    @property
    def partition_writers(self) -> str:
        """hash "topic:partition" -> the replica whose durable snapshot the registry's offset comes from."""
        return f"{self.root}:partitions:writer"

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


def parse_tp(field: str) -> tuple[str, int]:
    """"topic:partition" -> (topic, partition) (topics may contain ':')."""
    topic, _, part = field.rpartition(":")
    return topic, int(part)


def parse_token(token: str) -> tuple[str, int]:
    """A claim "replica|epoch" -> (replica, epoch)."""
    replica, _, epoch = token.rpartition("|")
    return replica, int(epoch or 0)


class LeaseLost(RuntimeError):
    """A guarded write was refused: the lease is ``gone`` (expired, or Redis lost it) or ``taken``."""

    def __init__(self, state: str, holder: bytes | None = None) -> None:
        from ocld.stream.lease import describe

        super().__init__(f"the lease is {state}" + (f" (held by {describe(holder)})" if state == "taken" else ""))
        self.state = state
        self.holder = holder


class Fenced(RuntimeError):
    """Another replica claimed partitions this replica learned from since its last durable snapshot."""

    def __init__(self, version: int, lost: list[str]) -> None:
        super().__init__(f"snapshot {version} not switched: partitions {sorted(lost)} were claimed by another replica")
        self.version = version
        self.lost = sorted(lost)


class RegistryMissing(RuntimeError):
    """The registry has no claim for partitions this replica learned from: Redis lost its data."""

    def __init__(self, version: int, missing: list[str]) -> None:
        super().__init__(f"snapshot {version} not switched: the registry has no claim for partitions "
                         f"{sorted(missing)} (Redis lost data)")
        self.version = version
        self.missing = sorted(missing)


# Every script below takes the lease key as KEYS[1] and the writer's lease value as ARGV[1].

# Generic guarded commands. ARGV[2]: JSON [[command, key index or 0, arg, ...], ...]; every value
# is a string (Lua would print large numbers in exponent form).
_EXEC = GUARD + """
local cmds = cjson.decode(ARGV[2])
for _, c in ipairs(cmds) do
  local args = {c[1]}
  if c[2] > 0 then table.insert(args, KEYS[c[2]]) end
  for i = 3, #c do table.insert(args, c[i]) end
  redis.call(unpack(args))
end
return {'ok'}
"""

# Claim partitions. KEYS: lease, owners, offsets, fingerprints, writers. ARGV[2]: replica; ARGV[3]: JSON
# [[tp, offset or "", fingerprint or ""], ...] where the offsets are those of this replica's own latest
# snapshot. Where the registry's offset comes from this replica's own snapshots (or nobody's: no entry,
# or Redis lost it), the partition starts where this replica's latest snapshot says and the registry is
# made to agree (no position: the entry is removed and the log is learned from its start). Where it comes
# from another replica's snapshot, the partition starts there. Each claim bumps the epoch. Returns 'ok'
# then, per partition: tp, epoch, start, fingerprint, registry offset before, owner before.
_CLAIM = GUARD + """
local items = cjson.decode(ARGV[3])
local out = {'ok'}
for _, it in ipairs(items) do
  local tp, mine, myfp = it[1], it[2], it[3]
  local old = redis.call('HGET', KEYS[2], tp)
  local reg = redis.call('HGET', KEYS[3], tp)
  local regfp = redis.call('HGET', KEYS[4], tp)
  local writer = redis.call('HGET', KEYS[5], tp)
  local owner, epoch = nil, 0
  if old then
    owner = string.match(old, '^(.*)|%d+$')
    epoch = tonumber(string.match(old, '|(%d+)$')) or 0
  end
  local ours
  if writer then ours = (writer == ARGV[2]) else ours = (not reg) or (not old) or owner == ARGV[2] end
  local pos, fp
  if ours then
    pos, fp = mine, myfp
    if pos ~= '' then
      redis.call('HSET', KEYS[3], tp, pos)
      redis.call('HSET', KEYS[5], tp, ARGV[2])
    else
      redis.call('HDEL', KEYS[3], tp)
      redis.call('HDEL', KEYS[5], tp)
    end
    if fp ~= '' then redis.call('HSET', KEYS[4], tp, fp) else redis.call('HDEL', KEYS[4], tp) end
  else
    pos, fp = reg or '', regfp or ''
  end
  epoch = epoch + 1
  redis.call('HSET', KEYS[2], tp, ARGV[2] .. '|' .. epoch)
  for _, v in ipairs({tp, tostring(epoch), pos, fp, reg or '', old or ''}) do table.insert(out, v) end
end
return out
"""

# The snapshot switch. KEYS: lease, latest, versions, owners, offsets, fingerprints, writers. ARGV[2]:
# JSON {version, replica, fence: {tp: token}, offsets: {tp: offset}, fps: {tp: fingerprint or ""},
# latest: {...}}. If every fenced partition is still owned under its token, move ``latest``, add the
# version and advance the registry (now this replica's), all at once; else change nothing and say why.
_SWITCH = GUARD + """
local a = cjson.decode(ARGV[2])
local lost, missing = {'fenced'}, {'missing'}
for tp, token in pairs(a.fence) do
  local cur = redis.call('HGET', KEYS[4], tp)
  if not cur then table.insert(missing, tp) elseif cur ~= token then table.insert(lost, tp) end
end
if #lost > 1 then return lost end
if #missing > 1 then return missing end
for k, v in pairs(a.latest) do redis.call('HSET', KEYS[2], k, v) end
redis.call('ZADD', KEYS[3], a.version, a.version)
for tp, off in pairs(a.offsets) do
  redis.call('HSET', KEYS[5], tp, off)
  redis.call('HSET', KEYS[7], tp, a.replica)
end
for tp, fp in pairs(a.fps) do
  if fp == '' then redis.call('HDEL', KEYS[6], tp) else redis.call('HSET', KEYS[6], tp, fp) end
end
return {'ok'}
"""

# Rollback: make a complete version the latest. KEYS: lease, latest, owners, offsets, fingerprints, writers.
# ARGV[2]: replica; ARGV[3]: JSON {latest: {...}, offsets: {tp: offset}, fps: {tp: fp}}. The registry moves
# back for the partitions this replica owns, or nobody does; a partition another replica has claimed since
# stays where that replica's snapshots put it.
_SET_LATEST = GUARD + """
local a = cjson.decode(ARGV[3])
for k, v in pairs(a.latest) do redis.call('HSET', KEYS[2], k, v) end
local out = {'ok'}
for tp, off in pairs(a.offsets) do
  local old = redis.call('HGET', KEYS[3], tp)
  local owner = old and string.match(old, '^(.*)|%d+$')
  if (not old) or owner == ARGV[2] then
    redis.call('HSET', KEYS[4], tp, off)
    redis.call('HSET', KEYS[6], tp, ARGV[2])
    local fp = a.fps[tp]
    if fp and fp ~= '' then redis.call('HSET', KEYS[5], tp, fp) else redis.call('HDEL', KEYS[5], tp) end
    table.insert(out, tp)
  end
end
return out
"""


# Move every key of the layout before hash tags (``{ns}:{pipeline}:*``) to the tagged one
# (``{ns}:{{pipeline}}:*``), in one script (atomic). Only a single Redis ever held the old layout:
# KEYS and RENAME across slots are fine there. ARGV: old pattern, old prefix, new prefix. A key
# that exists in both layouts is left (the new one wins). Returns the number of keys moved.
_MIGRATE = """
local moved = 0
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  local new = ARGV[3] .. string.sub(k, string.len(ARGV[2]) + 1)
  if redis.call('EXISTS', new) == 0 then
    redis.call('RENAME', k, new)
    moved = moved + 1
  end
end
return moved
"""


def old_layout_keys(client: Any, pipeline: str, namespace: str = "ocld") -> list[str]:
    """Keys of ``pipeline`` written before keys were hash-tagged (empty on a cluster: it never held them)."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        return []
    return [k.decode() for k in client.scan_iter(match=f"{_glob(namespace)}:{_glob(pipeline)}:*", count=1000)]


def migrate_layout(client: Any, pipeline: str, namespace: str = "ocld") -> int:
    """Move ``pipeline``'s keys to the hash-tagged layout at once (``ocld migrate`` and the daemon's
    start-up). Refused while a daemon of the old layout still runs (its heartbeat key lives)."""
    old_prefix, new_prefix = f"{namespace}:{pipeline}:", f"{namespace}:{{{pipeline}}}:"
    alive = [k for k in old_layout_keys(client, pipeline, namespace) if k.endswith(":alive")]
    if alive:
        from ocld.stream.errors import FatalConfigError

        raise FatalConfigError(
            f"a daemon of an older ocld still runs pipeline {pipeline!r} on the key layout without hash tags (its "
            f"heartbeat {alive[0]} is alive): stop it, then start this one (it moves the keys to the new layout)")
    return int(client.eval(_MIGRATE, 0, f"{_glob(namespace)}:{_glob(pipeline)}:*", old_prefix, new_prefix))


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def replica_names(client: redis.Redis, pipeline: str, namespace: str = "ocld") -> list[str]:
    """Replicas that have published a status ("" is the single-daemon layout)."""
    keys = Keys(pipeline, namespace)
    names = {m.decode() if isinstance(m, bytes) else str(m) for m in client.smembers(keys.replicas)}
    if not names and client.exists(keys.status):
        names = {""}  # written before the replica set existed
    return sorted(names)


class Guarded:
    """Runs write scripts under a lease: every one checks that the lease still holds our value.

    ``lease`` None: each write takes a short-lived lease of its own (role "tool": tests, admin
    commands), and fails with :class:`LeaseLost` ("taken") while a daemon holds it.
    """

    def __init__(self, client: redis.Redis, lease_key: str, lease: Lease | None = None) -> None:
        self.r = client
        self.lease_key = lease_key
        self.lease = lease

    @contextlib.contextmanager
    def _held(self) -> Iterator[Lease]:
        if self.lease is not None:
            yield self.lease
            return
        tool = Lease(self.r, self.lease_key, 30.0, role="tool")
        if not tool.try_acquire():
            raise LeaseLost("taken", tool.holder())
        try:
            yield tool
        finally:
            tool.release()

    def script(self, source: str, keys: list[str], args: list[Any]) -> list[Any]:
        """Run ``source`` with the lease key in front of ``keys`` and our value in front of ``args``;
        raise :class:`LeaseLost` when the lease is not ours. Returns the reply after its status."""
        with self._held() as lease:
            reply = self.r.eval(source, 1 + len(keys), self.lease_key, *keys, lease.value, *args)
            state = lease.lost(reply)
            if state is not None:
                raise LeaseLost(state, lease.taken_by)
        return [x.decode() if isinstance(x, bytes) else x for x in reply]

    def execute(self, commands: list[list[Any]], keys: list[str]) -> None:
        """Run ``commands`` ([name, key index (1-based into ``keys``, 0: none), args...]) atomically."""
        body = [[str(c[0]), (int(c[1]) + 1 if c[1] else 0), *[_arg(a) for a in c[2:]]] for c in commands]
        self.script(_EXEC, keys, [orjson.dumps(body)])


def _arg(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, float):
        return repr(v)
    return str(v)


class SnapshotStore:
    def __init__(self, client: redis.Redis, pipeline: str, namespace: str = "ocld", keep: int = 3,
                 chunk_bytes: int = 64 * 1024 * 1024, replica: str = "", max_pinned: int | None = None,
                 lease: Lease | None = None) -> None:
        self.r = client
        self.pipeline = pipeline
        self.replica = replica
        self.keys = Keys(pipeline, namespace, replica)
        self.keep = keep
        self.max_pinned = max_pinned
        self.chunk_bytes = chunk_bytes
        self.guard = Guarded(client, self.keys.lease, lease)

    # -- write -----------------------------------------------------------------------
    def write(self, snap: fmt.Snapshot, fence: dict[str, str] | None = None,
              registry_offsets: dict[str, int] | None = None,
              fingerprints: dict[str, str | None] | None = None) -> int:
        """Write a new complete version and switch ``latest`` to it; return the version.

        ``fence``: "topic:partition" -> the "replica|epoch" token this writer claimed; the switch
        happens only if every one still holds, else the chunks are deleted and :class:`Fenced`
        (another replica claimed one) or :class:`RegistryMissing` (the claim is gone: Redis lost
        data) is raised; :class:`LeaseLost` when the lease is no longer ours. ``registry_offsets``:
        the partitions' next offsets to publish in the shared registry with the switch (default:
        every offset in the snapshot), with ``fingerprints`` of the record before each (default:
        the snapshot's ``info["fingerprints"]``).
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
        snap_fps = snap.info.get("fingerprints") or {}
        if fingerprints is None:
            fingerprints = {tp: (snap_fps.get(parse_tp(tp)[0]) or {}).get(str(parse_tp(tp)[1]))
                            for tp in registry_offsets}
        latest = {
            "version": str(version),
            "offsets": orjson.dumps({t: {str(p): o for p, o in ps.items()} for t, ps in snap.offsets.items()}).decode(),
            "fingerprints": orjson.dumps(snap_fps).decode(),
            "checksum": fmt.checksum(manifest),
            "created_at": repr(float(snap.info["created_at"])),
            "samples_seen": str(snap.info.get("samples_seen", 0)),
        }
        try:
            with self.guard._held() as lease:
                latest["writer"] = _token(lease.value)
                args = orjson.dumps({
                    "version": str(version), "replica": self.replica, "fence": fence or {}, "latest": latest,
                    "offsets": {tp: str(o) for tp, o in registry_offsets.items()},
                    "fps": {tp: fingerprints.get(tp) or "" for tp in registry_offsets},
                })
                reply = self.r.eval(_SWITCH, 7, k.lease, k.latest, k.versions, k.partition_owners,
                                    k.partition_offsets, k.partition_fingerprints, k.partition_writers,
                                    lease.value, args)
                state = lease.lost(reply)
                if state is not None:
                    raise LeaseLost(state, lease.taken_by)
        except (LeaseLost, redis.RedisError):
            self._delete_quietly(version)
            raise
        reply = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
        if reply[0] == "fenced":
            self._delete_quietly(version)
            raise Fenced(version, reply[1:])
        if reply[0] == "missing":
            self._delete_quietly(version)
            raise RegistryMissing(version, reply[1:])
        fault_point("snapshot.after_switch")
        self.prune()
        self.r.publish(k.events, f"snapshot {version}")
        return version

    def _delete_quietly(self, version: int) -> None:
        try:
            self._delete(version)
        except redis.RedisError:
            pass  # orphans are cleaned at the next start (clean_orphans)

    # -- partition registry -------------------------------------------------------------
    def claim(self, tps: list[tuple[str, int]],
              mine: dict[tuple[str, int], tuple[int | None, str | None]] | None = None
              ) -> dict[tuple[str, int], dict[str, Any]]:
        """Claim partitions for this replica.

        ``mine``: (topic, partition) -> (offset, fingerprint) from this replica's own latest
        snapshot (absent: none). Returns (topic, partition) -> {"token": "replica|epoch",
        "offset": where to start (None: the log's start or ``kafka.start_from``), "fingerprint":
        of the record before it (None: unknown), "registry": the registry's offset before the
        claim, "owner": the claim before this one ("" if none)}.
        """
        if not tps:
            return {}
        mine = mine or {}
        items = []
        for t, p in tps:
            off, fp = mine.get((t, p), (None, None))
            items.append([tp_field(t, p), "" if off is None else str(int(off)), fp or ""])
        k = self.keys
        out = self.guard.script(_CLAIM, [k.partition_owners, k.partition_offsets, k.partition_fingerprints,
                                         k.partition_writers], [self.replica, orjson.dumps(items)])
        result: dict[tuple[str, int], dict[str, Any]] = {}
        body = out[1:]
        for i in range(0, len(body), 6):
            tp, epoch, pos, fp, reg, old = body[i:i + 6]
            result[parse_tp(tp)] = {"token": f"{self.replica}|{int(epoch)}", "offset": int(pos) if pos != "" else None,
                                    "fingerprint": fp or None, "registry": int(reg) if reg != "" else None,
                                    "owner": old}
        return result

    def registry(self) -> dict[str, dict[str, Any]]:
        """"topic:partition" -> {"offset", "owner", "epoch"} for every partition any replica claimed."""
        offsets = {k.decode(): int(v) for k, v in _hash(self.r.hgetall(self.keys.partition_offsets)).items()}
        owners = {k.decode(): v.decode() for k, v in _hash(self.r.hgetall(self.keys.partition_owners)).items()}
        out: dict[str, dict[str, Any]] = {}
        for tp in sorted(set(offsets) | set(owners)):
            owner, epoch = parse_token(owners.get(tp, "|0"))
            out[tp] = {"offset": offsets.get(tp), "owner": owner, "epoch": epoch}
        return out

    def owners(self) -> dict[str, str]:
        """"topic:partition" -> "replica|epoch" claims."""
        return {k.decode(): v.decode() for k, v in _hash(self.r.hgetall(self.keys.partition_owners)).items()}

    def prune(self) -> None:
        k = self.keys
        versions = [int(v) for v in _members(self.r.zrevrange(k.versions, 0, -1))]
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
        complete = {int(v) for v in _members(self.r.zrange(k.versions, 0, -1))}
        latest = self.latest_version() or 0
        current = int(self.r.get(k.version) or 0)
        orphans: set[int] = set()
        prefix = f"{k.base}:snap:"
        for key in self.r.scan_iter(match=f"{prefix}*", count=1000):
            try:
                v = int(key.decode()[len(prefix):].split(":", 1)[0])
            except ValueError:
                continue
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
        self.guard.execute([["SADD", 1, version]], [self.keys.pinned])

    # -- read ------------------------------------------------------------------------
    def latest_version(self) -> int | None:
        v = self.r.hget(self.keys.latest, "version")
        return int(v) if v is not None else None

    def latest_info(self) -> dict[str, str]:
        """The ``latest`` hash (version, writer, offsets, ...), empty when there is none."""
        return {k.decode(): v.decode() for k, v in _hash(self.r.hgetall(self.keys.latest)).items()}

    def versions(self) -> list[int]:
        return [int(v) for v in _members(self.r.zrevrange(self.keys.versions, 0, -1))]

    def read(self, version: int) -> fmt.Snapshot:
        k = self.keys
        manifest = _value(self.r.get(k.manifest(version)))
        if manifest is None:
            raise fmt.CorruptSnapshot(f"version {version} has no manifest")
        try:
            n = len(fmt.parse_manifest(manifest)["chunks"])
            chunks = cast("list[bytes | None]", self.r.mget([k.chunk(version, i) for i in range(n)])) if n else []
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
            except fmt.NewerSnapshotFormat:
                raise  # not damage: falling back (or starting fresh) would re-learn what a newer ocld learned
            except fmt.CorruptSnapshot as exc:
                log.error("snapshot version %d of pipeline %r is unusable (%s); trying an older version", v,
                          self.pipeline, exc)
                continue
            if v != latest:
                log.warning("fell back from snapshot version %d to %d", latest, v)
                snap.info["fell_back_from"] = latest
            return snap
        log.error("no usable snapshot for pipeline %r", self.pipeline)
        return None

    def manifest_info(self, version: int) -> dict[str, Any]:
        manifest = _value(self.r.get(self.keys.manifest(version)))
        if manifest is None:
            raise fmt.CorruptSnapshot(f"version {version} has no manifest")
        m = fmt.parse_manifest(manifest)
        return {"version": version, "created_at": m["created_at"], "info": m["info"], "offsets": m["offsets"],
                "total_bytes": m["total_bytes"], "chunks": len(m["chunks"]),
                "learner": m["tree"].get("learner", {}).get("kind")}

    def set_latest(self, version: int) -> list[str]:
        """Make an existing complete version the latest (rollback) under the lease; the registry's
        offsets move back for the partitions this replica owns (or nobody does). Returns those."""
        info = self.manifest_info(version)
        self.read(version)  # verify checksums before switching
        fps = info["info"].get("fingerprints") or {}
        k = self.keys
        with self.guard._held() as lease:
            manifest = _value(self.r.get(k.manifest(version)))
            if manifest is None:  # deleted since it was read
                raise fmt.CorruptSnapshot(f"version {version} has no manifest")
            latest = {
                "version": str(version), "offsets": orjson.dumps(info["offsets"]).decode(),
                "fingerprints": orjson.dumps(fps).decode(), "created_at": repr(float(info["created_at"])),
                "samples_seen": str(info["info"].get("samples_seen", 0)),
                "checksum": fmt.checksum(manifest), "writer": _token(lease.value),
            }
            offsets = {tp_field(t, int(p)): str(int(o)) for t, ps in info["offsets"].items() for p, o in ps.items()}
            reply = self.r.eval(_SET_LATEST, 6, k.lease, k.latest, k.partition_owners, k.partition_offsets,
                                k.partition_fingerprints, k.partition_writers, lease.value, self.replica, orjson.dumps({
                                    "latest": latest, "offsets": offsets,
                                    "fps": {tp: (fps.get(parse_tp(tp)[0]) or {}).get(str(parse_tp(tp)[1])) or ""
                                            for tp in offsets}}))
            state = lease.lost(reply)
            if state is not None:
                raise LeaseLost(state, lease.taken_by)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply[1:]]


class StatusStore:
    """Live status hash, metric, drift and incident streams, event notifications (all lease-guarded)."""

    def __init__(self, client: redis.Redis, pipeline: str, namespace: str = "ocld", metrics_maxlen: int = 10_000,
                 drift_maxlen: int = 10_000, replica: str = "", lease: Lease | None = None) -> None:
        self.r = client
        self.keys = Keys(pipeline, namespace, replica)
        self.replica = replica
        self.metrics_maxlen = metrics_maxlen
        self.drift_maxlen = drift_maxlen
        self.guard = Guarded(client, self.keys.lease, lease)

    def update(self, fields: dict[str, Any]) -> None:
        flat: list[Any] = []
        for key, v in fields.items():
            flat += [key, _scalar(v)]
        self.guard.execute([["HSET", 1, *flat], ["SADD", 2, self.replica]], [self.keys.status, self.keys.replicas])

    def _xadd(self, key: str, maxlen: int, fields: dict[str, Any], publish: str | None = None) -> None:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, _scalar(v)]
        cmds: list[list[Any]] = [["XADD", 1, "MAXLEN", "~", maxlen, "*", *flat]]
        if publish is not None:
            cmds.append(["PUBLISH", 0, self.keys.events, publish])
        self.guard.execute(cmds, [key])

    def add_metrics(self, point: dict[str, Any]) -> None:
        self._xadd(self.keys.metrics, self.metrics_maxlen, point)

    def add_drift(self, event: dict[str, Any], n: int) -> None:
        self._xadd(self.keys.drift, self.drift_maxlen, event, publish=f"drift {n}")

    def add_incident(self, incident: dict[str, Any]) -> None:
        self._xadd(self.keys.incidents, self.drift_maxlen, incident, publish=f"incident {incident.get('kind', '')}")


def _token(lease_value: str) -> str:
    try:
        return str(orjson.loads(lease_value)["token"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return lease_value


def _scalar(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float, str, bytes)):
        return v
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
