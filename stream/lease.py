"""One writer per pipeline (or replica): a lease in Redis, not a heartbeat's absence.

The lease is one key, ``{base}:lease``, set with ``SET key value NX PX ttl`` where the value
names its holder (a random token, host and pid). A daemon takes it before it waits for anything
(the broker included), renews it from a thread every third of its TTL, and releases it when it
stops. Every write the daemon makes to Redis is a Lua script that first checks that the lease
still holds this value (:data:`GUARD`), so a daemon that lost its lease, because it stalled
past the TTL (SIGSTOP, a long GC, a network partition) and another daemon or a rollback took it,
writes nothing more. It learns so from the script's answer and stops, or, when the key is
simply gone (expired with nobody taking it, or Redis lost its data), takes it again and checks
that nobody wrote in between.

The renewing thread only renews (it never takes the lease again by itself), so every decision
about a lost lease is made by the daemon's loop, between two writes. It stops renewing when the
loop has not ticked for ``stall_s``: a loop stuck for minutes should let another daemon take
over rather than look alive.

This module never learns and never reads snapshots; it only knows the lease key.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, cast

import orjson
import redis

log = logging.getLogger("ocld.lease")

LeaseState = Literal["held", "gone", "taken"]

# KEYS[1] lease; ARGV[1] our value; ARGV[2] ttl ms. 1: renewed; 0: no lease; -1: another holder.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then return 0 end
return -1
"""

# KEYS[1] lease; ARGV[1] our value. Deletes the key only if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] lease; ARGV[1] the value seen; ARGV[2] ours; ARGV[3] ttl ms. Replaces a stale holder's value
# only if it is still the one we judged stale (compare-and-set).
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""

# The check at the top of every guarded write script: the Lua snippet returns the reason as the
# script's first element when the lease is not ours. Scripts using it take the lease key as
# KEYS[1] and our value as ARGV[1].
GUARD = """
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then
  if held then return {'taken', held} end
  return {'gone', ''}
end
"""


def describe(value: bytes | str | None) -> str:
    """'host H pid P' for a lease value (or what it is, if it is not ours to parse)."""
    if value is None:
        return "nobody"
    try:
        v = orjson.loads(value)
        return f"host {v['host']} pid {v['pid']}" + (f" ({v['role']})" if v.get("role") else "")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return repr(text[:80])


class Lease:
    """The lease of one writer (a daemon, or a rollback) on ``key``.

    Parameters
    ----------
    client: the Redis client (thread-safe; the renewing thread shares it).
    key: the lease key (``ocld:{p}:lease`` or ``ocld:{p}:replica:{name}:lease``).
    ttl_s: seconds the lease lives without renewal.
    role: what holds it ("daemon", "rollback"), shown to whoever finds it held.
    """

    def __init__(self, client: redis.Redis, key: str, ttl_s: float, role: str = "daemon") -> None:
        self.r = client
        self.key = key
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.role = role
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.value = self._new_value()
        self.state: LeaseState = "gone"  # as last seen by the renewing thread or a guarded write
        self.taken_by: bytes | None = None  # the other holder's value when state is "taken"
        self._tick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # value and state change together: the loop takes the lease again while the renewing thread's answer
        # about the previous value may still be on its way (see renew)
        self._lock = threading.Lock()

    def _new_value(self) -> str:
        return orjson.dumps({"token": uuid.uuid4().hex, "host": self.host, "pid": self.pid, "role": self.role,
                             "ns": _pid_namespace(), "instance": os.environ.get("OCLD_INSTANCE", ""),
                             "since": round(time.time(), 3)}).decode()

    # -- taking it ---------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (a fresh value each time: writes made under an older
        value, by this process or another, are refused from now on)."""
        value = self._new_value()
        if self.r.set(self.key, value, nx=True, px=self.ttl_ms):
            self._held(value)
            return True
        return False

    def holder(self) -> bytes | None:
        return cast("bytes | None", self.r.get(self.key))  # the client is built without decode_responses

    def acquire_or_replace_stale(self) -> bool:
        """Take the lease, or replace it when its holder is provably dead: a process of this very
        PID namespace (same machine boot, same container) that no longer runs, or an earlier run of
        this same instance (``OCLD_INSTANCE``, e.g. a Kubernetes pod's uid, which survives a restart of
        its container). A host name alone proves nothing: two pods of one StatefulSet name in two
        namespaces, or a compose service and a pod, share it, and each runs as pid 1."""
        if self.try_acquire():
            return True
        seen = self.holder()
        if seen is None:
            return self.try_acquire()
        try:
            v = orjson.loads(seen)
            instance = os.environ.get("OCLD_INSTANCE", "")
            same_ns = v.get("host") == self.host and v.get("ns") == _pid_namespace() and v.get("ns")
            stale = bool((same_ns and (int(v["pid"]) == self.pid or not _pid_alive(int(v["pid"]))))
                         or (instance and v.get("instance") == instance))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            stale = False
        if not stale:
            return False
        value = self._new_value()
        if self.r.eval(_REPLACE, 1, self.key, seen, value, self.ttl_ms):
            log.info("took over the lease %s from %s, an earlier run of this daemon that no longer runs", self.key,
                     describe(seen))
            self._held(value)
            return True
        return False

    def _held(self, value: str) -> None:
        """The lease is now held under ``value`` (one step for the renewing thread: see renew)."""
        with self._lock:
            self.value = value
            self.state = "held"
            self.taken_by = None

    # -- keeping it --------------------------------------------------------------------
    def renew(self) -> LeaseState:
        """Extend the lease if it still holds this value. A renewal whose answer comes back after the
        loop took the lease again (a fresh value; during a Redis failover the call can take seconds)
        speaks of the old value: it changes nothing. Before this, such an answer said "taken" by this
        very process, and the daemon stopped as if another writer had taken over."""
        value = self.value
        out = int(self.r.eval(_RENEW, 1, self.key, value, self.ttl_ms))
        holder = self.holder() if out not in (0, 1) else None
        with self._lock:
            if value != self.value:
                return self.state
            if out == 1:
                self.state = "held"
            elif out == 0:
                self.state = "gone"
            else:
                self.state = "taken"
                self.taken_by = holder
            return self.state

    def tick(self) -> None:
        """The daemon's loop is alive (called every iteration)."""
        self._tick = time.monotonic()

    @property
    def last_tick(self) -> float:
        """When the loop last ticked (``time.monotonic``)."""
        return self._tick

    def start_renewing(self, stall_s: float = 120.0) -> None:
        """Renew every third of the TTL from a daemon thread while the loop keeps ticking."""
        self._stop.clear()
        self.tick()

        def run() -> None:
            every = self.ttl_ms / 3000.0
            warned = False
            while not self._stop.wait(every):
                if time.monotonic() - self._tick > stall_s:
                    if not warned:
                        log.error("the daemon's loop has not moved for %.0f s; no longer renewing the lease %s, "
                                  "so that another daemon can take over", stall_s, self.key)
                        warned = True
                    continue
                warned = False
                if self.state != "held":
                    continue  # the loop decides what to do about a lost lease
                try:
                    if self.renew() != "held":
                        log.warning("lease %s is %s (holder now: %s)", self.key, self.state, describe(self.taken_by))
                except redis.RedisError as exc:
                    log.debug("renewing the lease failed: %s", exc)  # an outage: the loop reports it

        self._thread = threading.Thread(target=run, name="ocld-lease", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def release(self) -> None:
        """Give the lease up (only if it is still ours); never raises."""
        self.stop_renewing()
        try:
            self.r.eval(_RELEASE, 1, self.key, self.value)
        except redis.RedisError as exc:
            log.warning("could not release the lease %s (it expires by itself): %s", self.key, exc)
        self.state = "gone"

    def lost(self, reply: Any) -> LeaseState | None:
        """The state a guarded script's reply reports: None when the write went through."""
        if isinstance(reply, list) and reply and reply[0] in (b"taken", b"gone", "taken", "gone"):
            first = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            self.state = "taken" if first == "taken" else "gone"
            if self.state == "taken":
                self.taken_by = reply[1] if len(reply) > 1 else None
            return self.state
        return None


class LeaseHeld(Exception):
    """The lease is held by another writer; ``holder`` is its value."""

    def __init__(self, key: str, holder: bytes | None) -> None:
        super().__init__(f"{key} is held by {describe(holder)}")
        self.holder = holder


def _pid_namespace() -> str:
    """This process's PID namespace on this boot of the machine ("" where /proc cannot tell): two
    processes compare pids meaningfully only when this is the same."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
