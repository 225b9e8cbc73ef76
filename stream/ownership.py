"""Who may write, and where each partition starts: the lease, the partition claims, the fence.

One ``Ownership`` per daemon. It owns these Redis keys (through ``stream.store``): the lease,
``partitions:owner`` (claims), and, with the snapshot switch, ``partitions:offset`` and
``partitions:fingerprint``.

- **The lease** (``stream.lease``) is taken before the daemon waits for anything. A lease held
  by a live daemon is waited out for one TTL, then start-up fails with what to do. A lease that
  is *gone* later (it expired while nobody took it, or Redis lost its data) is taken again, and
  :meth:`Ownership.after_gap` tells the daemon what happened meanwhile: nothing, another writer
  switched ``latest`` (rewind to it), or Redis lost the state (re-establish it from memory).
  A lease *taken* by another writer stops the daemon: it writes nothing more.
- **Claims.** On every assignment the partitions are claimed with the positions of this
  replica's own last durable snapshot (:attr:`durable`). A partition nobody owned, or this
  replica owned last, starts exactly where that snapshot says and the registry is made to
  agree (no snapshot: the registry is reset and the log is learned from its start); one that
  another replica owned last starts where that replica's durable snapshot ended. Every
  disagreement is reported as a ``registry_mismatch`` incident.
- **The fence.** A snapshot switch carries the claim token of every partition learned from
  since the last durable snapshot (:attr:`dirty`); if another replica claimed one meanwhile,
  the switch changes nothing (``stream.store.Fenced``).

Nothing here learns, reads Kafka or keeps time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from ocld.stream.errors import FatalConfigError
from ocld.stream.lease import Lease, describe
from ocld.stream.store import SnapshotStore, parse_token, tp_field

log = logging.getLogger("ocld.ownership")

TP = tuple[str, int]
Positions = dict[TP, tuple[int | None, str | None]]


@dataclass
class Incident:
    """Something the daemon found and repaired (or could not): recorded in ``ocld:{p}:incidents``."""

    kind: str  # topic_reset, records_lost, registry_mismatch, redis_data_loss, lease_gap, learner_restarted, rewound
    detail: str
    partition: str = ""
    count: int = 0
    at: float = field(default_factory=time.time)

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "partition": self.partition, "count": self.count,
                "at": self.at}


GapVerdict = Literal["ok", "lost", "rewind"]


class Ownership:
    def __init__(self, store: SnapshotStore, lease: Lease, replica: str,
                 report: Callable[[Incident], None]) -> None:
        self.store = store
        self.lease = lease
        self.replica = replica
        self.report = report
        self.tokens: dict[TP, str] = {}  # partition -> "replica|epoch" claimed
        self.dirty: set[TP] = set()  # partitions learned from since the last durable snapshot
        self.durable: Positions = {}  # positions of this replica's last durable snapshot
        self.lease_tokens: set[str] = set()  # every lease token this process has held

    # -- the lease ---------------------------------------------------------------------
    def take_lease(self, who: str, wait_s: float, stopping: Callable[[], bool]) -> bool:
        """Take the lease before anything else. Waits up to ``wait_s`` for a live holder's lease
        to lapse; then raises :class:`FatalConfigError` saying who holds it. False if stopped."""
        deadline = time.monotonic() + wait_s
        announced = False
        while not stopping():
            if self.lease.acquire_or_replace_stale():
                self.lease_tokens.add(self.lease_token())
                return True
            holder = self.lease.holder()
            if time.monotonic() >= deadline:
                raise FatalConfigError(
                    f"{who} is already run by another writer ({describe(holder)}, which holds the lease "
                    f"{self.lease.key}). Two daemons with one name would overwrite each other's state: stop the "
                    "other one, or give each daemon its own scale.replica (ocld run --replica NAME, or OCLD_REPLICA)")
            if not announced:
                log.warning("the lease %s is held by %s; waiting up to %.0f s for it to lapse", self.lease.key,
                            describe(holder), wait_s)
                announced = True
            time.sleep(0.2)
        return False

    def lease_token(self) -> str:
        from ocld.stream.store import _token

        return _token(self.lease.value)

    def retake_lease(self) -> bool:
        """Take the lease again after it was found gone; False if another writer got it first."""
        if self.lease.try_acquire():
            self.lease_tokens.add(self.lease_token())
            return True
        return False

    def after_gap(self, model_version: int | None) -> GapVerdict:
        """After the lease was gone and taken again: did anything change in Redis meanwhile?

        ``ok``: ``latest`` is still this daemon's and its claims stand. ``rewind``: another writer
        (a rollback, or a daemon that ran while this one stalled) switched ``latest``: reload it.
        ``lost``: ``latest`` or the claims are gone or older than what this daemon wrote: Redis
        lost data; the in-memory state is exact for what was consumed, so re-establish it.
        """
        info = self.store.latest_info()
        version = int(info["version"]) if info.get("version") else None
        writer = info.get("writer")
        if version is None:
            return "ok" if model_version is None and not self.tokens else "lost"
        if writer and writer not in self.lease_tokens:
            return "rewind"
        if model_version is not None and version < model_version:
            return "lost"
        owners = self.store.owners()
        if any(tp_field(*tp) not in owners for tp in self.tokens):
            return "lost"
        return "ok"

    # -- claims ------------------------------------------------------------------------
    def claim(self, tps: list[TP]) -> Positions:
        """Claim ``tps`` (the source calls this on assignment); where each starts."""
        claimed = self.store.claim(tps, mine=self.durable)
        out: Positions = {}
        for tp, c in sorted(claimed.items()):
            self.tokens[tp] = c["token"]
            out[tp] = (c["offset"], c["fingerprint"])
            owner, _ = parse_token(c["owner"]) if c["owner"] else ("", 0)
            mine = not c["owner"] or owner == self.replica
            if mine and c["registry"] != c["offset"]:
                self.report(Incident(
                    "registry_mismatch", partition=tp_field(*tp),
                    detail=(f"the registry said offset {c['registry']} but this replica's last durable snapshot "
                            f"covers {'nothing' if c['offset'] is None else 'up to ' + str(c['offset'])}; "
                            "starting where the snapshot says (the registry now agrees)")))
        log.info("replica %r claimed %s", self.replica, ", ".join(
            f"{t}[{p}] (epoch {parse_token(self.tokens[(t, p)])[1]}, from "
            f"{'the start' if out[(t, p)][0] is None else out[(t, p)][0]})" for t, p in sorted(out)))
        return out

    def reclaim(self, positions: Positions) -> None:
        """Claim owned partitions again at the given (in-memory) positions, without moving the
        consumer: after Redis lost the registry, the state in memory is the truth."""
        if not positions:
            return
        claimed = self.store.claim(sorted(positions), mine=positions)
        for tp, c in claimed.items():
            self.tokens[tp] = c["token"]

    def switch_args(self, offsets: dict[TP, int],
                    fingerprints: dict[TP, str | None]) -> tuple[dict[str, str], dict[str, int], dict[str, str | None]]:
        """(fence, registry offsets, registry fingerprints) for a switch that covers ``offsets``."""
        dirty = sorted(self.dirty)
        fence = {tp_field(*tp): self.tokens[tp] for tp in dirty if tp in self.tokens}
        registry = {tp_field(*tp): offsets[tp] for tp in dirty if tp in offsets}
        fps = {tp_field(*tp): fingerprints.get(tp) for tp in dirty if tp in offsets}
        return fence, registry, fps

    def switched(self, positions: Positions) -> None:
        """A snapshot covering ``positions`` is durable."""
        self.dirty.clear()
        self.durable.update(positions)

    def keep(self, owned: set[TP]) -> None:
        """Forget the claims of partitions no longer held (their durable positions stay: they say
        what this replica's state has learned)."""
        self.tokens = {tp: tok for tp, tok in self.tokens.items() if tp in owned}


def positions_from_snapshot(offsets: dict[str, dict[Any, int]], fingerprints: dict[str, dict[str, str]] | None
                            ) -> Positions:
    """A snapshot's offsets and fingerprints as positions."""
    fps = fingerprints or {}
    return {(t, int(p)): (int(o), (fps.get(t) or {}).get(str(p))) for t, ps in offsets.items() for p, o in ps.items()}


def is_permission_error(exc: BaseException) -> bool:
    """Errors that retrying cannot fix: wrong credentials, a missing ACL permission."""
    return isinstance(exc, (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError,
                            redis.exceptions.NoPermissionError)) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")))
