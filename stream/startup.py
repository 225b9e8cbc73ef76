"""Start-up waits for the servers, and the one-line errors when waiting cannot help.

Redis is waited for up to ``redis.start_timeout_s`` (then one clear error); each Redis step of
start-up is retried on an outage within the same limit; the broker is waited for as long as it
takes (a SIGTERM stops the daemon meanwhile). Wrong credentials or a missing ACL permission are
fatal at once: retrying cannot fix them. Never learns or keeps state: the daemon calls these.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import redis

from ocld.stream.backoff import retry_call
from ocld.stream.config import Config, redact_url
from ocld.stream.errors import FatalConfigError
from ocld.stream.ownership import is_permission_error
from ocld.stream.store import migrate_layout, old_layout_keys

log = logging.getLogger("ocld.daemon")


def wait_for_redis(cfg: Config, client: Any) -> None:
    """Wait up to ``redis.start_timeout_s`` for Redis to answer; then one clear error."""
    limit = cfg.redis.start_timeout_s
    url = redact_url(cfg.redis.url.get_secret_value())

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, redis.RedisError) and not is_permission_error(exc)

    try:
        retry_call(client.ping, f"reaching Redis {url} at start-up", transient, log, deadline_s=limit, cap=5.0)
    except redis.RedisError as exc:
        redis_fatal(cfg, exc, "connecting")
        raise FatalConfigError(
            f"Redis {url} did not answer within {limit:g} s ({redis_error(exc)}); check redis.url "
            "(or REDIS_URL) and that Redis runs (redis.start_timeout_s sets how long to wait)") from None


def startup_step(cfg: Config, what: str, fn: Callable[[], Any]) -> Any:
    """A Redis step of start-up: retried on an outage until ``redis.start_timeout_s``."""
    def transient(exc: BaseException) -> bool:
        return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))

    try:
        return retry_call(fn, what, transient, log, deadline_s=cfg.redis.start_timeout_s, cap=5.0)
    except redis.RedisError as exc:
        redis_fatal(cfg, exc, what)
        raise FatalConfigError(f"{what}: Redis failed ({redis_error(exc)})") from None


def migrate_old_layout(cfg: Config, client: Any) -> None:
    """Keys written by an older ocld (no hash tags) move to the current layout, once, atomically."""
    if old_layout_keys(client, cfg.name, cfg.redis.namespace):
        moved = migrate_layout(client, cfg.name, cfg.redis.namespace)
        log.info("pipeline %r: moved %d keys to the hash-tagged layout (ocld:{%s}:*)", cfg.name, moved, cfg.name)


def wait_for_broker(bootstrap: str) -> None:
    """Wait (backoff 0.5 s doubling to 10 s, as long as it takes; SIGTERM stops it) for the broker."""
    def check() -> None:
        if not reachable(bootstrap):
            raise ConnectionError(f"broker {bootstrap} refuses connections")

    if reachable(bootstrap):
        return
    retry_call(check, f"reaching broker {bootstrap} at start-up", lambda e: isinstance(e, ConnectionError), log,
               attempts=10**9, message=lambda e, n, delay: (
                   f"broker {bootstrap} unreachable at start-up (attempt {n}); retry in {delay:.1f} s"))
    log.info("broker %s is reachable; starting to consume", bootstrap)


def redis_fatal(cfg: Config, exc: BaseException, what: str) -> None:
    """Raise a one-line FatalConfigError for errors retrying cannot fix (credentials, ACL)."""
    if is_permission_error(exc):
        from urllib.parse import urlsplit

        url_user = urlsplit(cfg.redis.url.get_secret_value()).username
        user = cfg.redis.username or url_user or "default"
        raise FatalConfigError(
            f"{what}: Redis {redact_url(cfg.redis.url.get_secret_value())} refused the credentials or a "
            f"command of user {user!r} ({redis_error(exc)}); check redis.username and redis.password (or "
            "OCLD_REDIS_PASSWORD) and the user's ACL: the daemon needs read, write and scripting (EVAL) on its "
            "keys") from None


def reachable(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when any bootstrap address accepts a TCP connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def redis_error(exc: BaseException) -> str:
    """A one-line description of a Redis error (redis-py messages name host:port, never credentials)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
