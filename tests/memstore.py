"""An in-memory store with the Redis store's semantics, for unit tests of the state machines.

``MemoryRedis`` holds what the Redis keys of a pipeline hold (lease, latest, versions, snapshots,
the shared registry) in dicts, and can be made to fail (``down``) or lose everything
(``flushall``). ``MemoryLease``, ``MemorySnapshotStore`` and ``MemoryStatusStore`` implement the
same interfaces as ``stream.lease.Lease``, ``stream.store.SnapshotStore`` and
``stream.store.StatusStore`` (``tests/unit/test_state_machines.py`` runs the same store checks
against both), with the lease checked on every write as the Lua scripts do. Used only by tests:
integration tests always talk to a real Redis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import redis

from ocld.core import snapshot as fmt
from ocld.stream.store import Fenced, LeaseLost, RegistryMissing, parse_tp, tp_field

_tokens = itertools.count(1)


@dataclass
class MemoryRedis:
    lease: dict[str, str] = field(default_factory=dict)  # lease key -> holder value
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # replica -> latest fields
    snapshots: dict[str, dict[int, fmt.Snapshot]] = field(default_factory=dict)  # replica -> version -> snapshot
    counter: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    writers: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    pinned: dict[str, set[int]] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    def check(self) -> None:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to memory. Connection refused.")

    def flushall(self) -> None:
        for name in ("lease", "latest", "snapshots", "counter", "offsets", "fingerprints", "writers", "owners",
                     "pinned", "status"):
            getattr(self, name).clear()
        self.incidents.clear()


class MemoryLease:
    """``stream.lease.Lease`` over :class:`MemoryRedis` (expiry is explicit: :meth:`expire`)."""

    def __init__(self, db: MemoryRedis, key: str, role: str = "daemon") -> None:
        self.db = db
        self.key = key
        self.role = role
        self.value = ""
        self.state = "gone"
        self.taken_by: Any = None

    def try_acquire(self) -> bool:
        self.db.check()
        if self.key in self.db.lease:
            return False
        self.value = f'{{"token": "t{next(_tokens)}", "host": "mem", "pid": 1, "role": "{self.role}"}}'
        self.db.lease[self.key] = self.value
        self.state = "held"
        return True

    def acquire_or_replace_stale(self) -> bool:
        return self.try_acquire()

    def holder(self) -> Any:
        return self.db.lease.get(self.key)

    def renew(self) -> str:
        held = self.db.lease.get(self.key)
        self.state = "held" if held == self.value else ("gone" if held is None else "taken")
        self.taken_by = held if self.state == "taken" else None
        return self.state

    def expire(self) -> None:
        """The TTL ran out (the holder stalled)."""
        self.db.lease.pop(self.key, None)

    def release(self) -> None:
        if self.db.lease.get(self.key) == self.value:
            del self.db.lease[self.key]
        self.state = "gone"

    def start_renewing(self, stall_s: float = 120.0) -> None:
        pass

    def stop_renewing(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def guard(self) -> None:
        """What every Lua write script checks first."""
        self.db.check()
        held = self.db.lease.get(self.key)
        if held != self.value:
            self.state = "taken" if held else "gone"
            self.taken_by = held
            raise LeaseLost(self.state, held.encode() if held else None)


class MemorySnapshotStore:
    """``stream.store.SnapshotStore`` over :class:`MemoryRedis`."""

    def __init__(self, db: MemoryRedis, replica: str = "", lease: MemoryLease | None = None, keep: int = 3) -> None:
        self.db = db
        self.replica = replica
        self.lease = lease or MemoryLease(db, f"lease:{replica}")
        self.keep = keep

    # -- write -------------------------------------------------------------------------
    def write(self, snap: fmt.Snapshot, fence: dict[str, str] | None = None,
              registry_offsets: dict[str, int] | None = None,
              fingerprints: dict[str, str | None] | None = None) -> int:
        self.db.check()
        version = self.db.counter[self.replica] = self.db.counter.get(self.replica, 0) + 1
        self.lease.guard()
        lost = [tp for tp, tok in (fence or {}).items() if self.db.owners.get(tp) not in (None, tok)]
        missing = [tp for tp in (fence or {}) if tp not in self.db.owners]
        if lost:
            raise Fenced(version, lost)
        if missing:
            raise RegistryMissing(version, missing)
        if registry_offsets is None:
            registry_offsets = {tp_field(t, int(p)): int(o) for t, ps in snap.offsets.items() for p, o in ps.items()}
        self.db.snapshots.setdefault(self.replica, {})[version] = snap
        self.db.latest[self.replica] = {"version": str(version), "writer": _token(self.lease.value)}
        for tp, off in registry_offsets.items():
            self.db.offsets[tp] = int(off)
            self.db.writers[tp] = self.replica
            fp = (fingerprints or {}).get(tp)
            if fp:
                self.db.fingerprints[tp] = fp
            else:
                self.db.fingerprints.pop(tp, None)
        kept = sorted(self.db.snapshots[self.replica])[-self.keep:]
        pinned = self.db.pinned.get(self.replica, set())
        for v in list(self.db.snapshots[self.replica]):
            if v not in kept and v not in pinned:
                del self.db.snapshots[self.replica][v]
        return version

    def claim(self, tps: list[tuple[str, int]],
              mine: dict[tuple[str, int], tuple[int | None, str | None]] | None = None) -> dict[Any, dict[str, Any]]:
        self.lease.guard()
        out = {}
        for t, p in tps:
            tp = tp_field(t, p)
            old = self.db.owners.get(tp)
            owner, _, epoch = (old or "|0").rpartition("|")
            reg = self.db.offsets.get(tp)
            writer = self.db.writers.get(tp)
            ours = (writer == self.replica if writer is not None
                    else (reg is None or old is None or owner == self.replica))
            if ours:
                pos, fp = (mine or {}).get((t, p), (None, None))
                if pos is None:
                    self.db.offsets.pop(tp, None)
                    self.db.writers.pop(tp, None)
                else:
                    self.db.offsets[tp] = int(pos)
                    self.db.writers[tp] = self.replica
                if fp:
                    self.db.fingerprints[tp] = fp
                else:
                    self.db.fingerprints.pop(tp, None)
            else:
                pos, fp = reg, self.db.fingerprints.get(tp)
            token = f"{self.replica}|{int(epoch or 0) + 1}"
            self.db.owners[tp] = token
            out[(t, p)] = {"token": token, "offset": pos, "fingerprint": fp, "registry": reg, "owner": old or ""}
        return out

    def pin(self, version: int) -> None:
        self.lease.guard()
        self.db.pinned.setdefault(self.replica, set()).add(version)

    def set_latest(self, version: int) -> list[str]:
        self.lease.guard()
        snap = self.db.snapshots[self.replica][version]
        self.db.latest[self.replica] = {"version": str(version), "writer": _token(self.lease.value)}
        moved = []
        for t, ps in snap.offsets.items():
            for p, o in ps.items():
                tp = tp_field(t, int(p))
                owner = self.db.owners.get(tp, "|").rpartition("|")[0]
                if tp not in self.db.owners or owner == self.replica:
                    self.db.offsets[tp] = int(o)
                    self.db.writers[tp] = self.replica
                    moved.append(tp)
        return moved

    def clean_orphans(self) -> int:
        self.db.check()
        return 0

    # -- read --------------------------------------------------------------------------
    def latest_info(self) -> dict[str, str]:
        self.db.check()
        return dict(self.db.latest.get(self.replica, {}))

    def latest_version(self) -> int | None:
        info = self.latest_info()
        return int(info["version"]) if info else None

    def versions(self) -> list[int]:
        return sorted(self.db.snapshots.get(self.replica, {}), reverse=True)

    def load_latest(self) -> fmt.Snapshot | None:
        v = self.latest_version()
        snap = self.db.snapshots.get(self.replica, {}).get(v) if v is not None else None
        if snap is not None:
            snap.info["version"] = v
        return snap

    def owners(self) -> dict[str, str]:
        self.db.check()
        return dict(self.db.owners)

    def registry(self) -> dict[str, dict[str, Any]]:
        out = {}
        for tp in sorted(set(self.db.offsets) | set(self.db.owners)):
            owner, _, epoch = self.db.owners.get(tp, "|0").rpartition("|")
            out[tp] = {"offset": self.db.offsets.get(tp), "owner": owner, "epoch": int(epoch or 0)}
        return out


def _token(value: str) -> str:
    import orjson

    try:
        return str(orjson.loads(value)["token"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return value


__all__ = ["MemoryLease", "MemoryRedis", "MemorySnapshotStore", "parse_tp"]
