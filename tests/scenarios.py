"""Adversarial scenarios: the daemon against real producers, operators and accidents (issue 20).

Each scenario starts its own embedded tansu broker and redis-server (some restart or wipe them),
runs ``ocld run`` as child processes, does what a producer, an operator or an accident would,
then lets one clean daemon catch up (``--until-idle``) and measures the durable state in Redis.
It returns a :class:`Result`: labelled records produced, learned (in the durable state), lost,
learned twice, whether the learned set is exactly the produced one, the daemons' exit codes and
whether any of them printed a traceback.

"Exactly once" is checked on the learner's own statistics: the scenarios learn with an
AnalyticRidge without feature maps, whose statistics (sum of h h^T, sum of h y^T, per-class
counts) are sums over the learned samples in any order. They equal a one-pass reference on the
produced records (to 1e-9 relative) only if every record was learned exactly once; the
per-class counts say how many were lost or learned twice.

Used by ``tests/integration/test_adversarial.py`` (which asserts) and
``benchmarks/adversarial.py`` (which prints the table). Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ocld.stream.store import Keys

ROOT = Path(__file__).resolve().parent.parent
CLIENT = os.environ.get("OCLD_KAFKA_CLIENT", "confluent")  # the consumer backend the daemons use
LEARNER = {"name": "AnalyticRidge", "params": {"expansion_size": 32, "seed": 0, "adapt_discount": None}, "features": []}


@dataclass
class Result:
    case: str
    produced: int  # labelled records that should be learned
    learned: int = 0  # labelled samples in the durable state
    exact: bool = False  # the learned set equals the produced one (statistics to 1e-9)
    lost: int = 0
    twice: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    traceback: bool = False
    notes: str = ""
    checks: dict[str, Any] = field(default_factory=dict)  # what each scenario's own test asserts on

    def row(self) -> list[str]:
        once = self.learned if self.exact else min(self.learned, self.produced) - self.twice
        return [self.case, str(self.produced), str(max(once, 0)), str(self.lost), str(self.twice),
                ",".join("-" if c is None else str(c) for c in self.exit_codes), "yes" if self.traceback else "no",
                self.notes]


def elec(n: int, start: int = 0) -> tuple[np.ndarray, list[int]]:
    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    reps = -(-(start + n) // table.X.shape[0])
    X = np.tile(table.X, (reps, 1))[start:start + n]
    y = (list(table.y) * reps)[start:start + n]
    return X, [int(v) for v in y]


def encode(X: np.ndarray, y: list[int]) -> list[bytes]:
    return [orjson.dumps({"x": X[i].tolist(), "y": y[i]}) for i in range(len(y))]


class DaemonProc:
    """``ocld run`` as a child process, its output in a log file."""

    def __init__(self, env: Env, cfg: dict[str, Any], *args: str, tag: str = "") -> None:
        self.env = env
        n = len(env.daemons)
        self.cfg_path = env.work / f"cfg{n}.yaml"
        self.cfg_path.write_text(orjson.dumps(cfg).decode())
        self.log_path = env.work / f"daemon{n}{tag}.log"
        self.fh = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "ocld.stream.cli", "run", str(self.cfg_path), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT)
        env.daemons.append(self)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 120.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.proc.kill()
            rc = self.proc.wait()
        return rc


class Env:
    """One scenario's servers (restartable on fixed ports), topic, config and daemons."""

    def __init__(self, work: Path, name: str, partitions: int = 2) -> None:
        from ocld.stream.embedded import free_port

        self.work = work
        self.name = name
        self.topic = f"{name}.in"
        self.partitions = partitions
        self.broker_port = free_port()
        self.redis_port = free_port()
        self.broker: Any = None
        self.redis: Any = None
        self.daemons: list[DaemonProc] = []
        self.redis_args: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_broker(self) -> None:
        from ocld.stream.embedded import EmbeddedBroker

        self.broker = EmbeddedBroker(self.work / "broker", port=self.broker_port)
        self.broker.start()

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def start_redis(self, fresh: bool = False) -> None:
        import shutil

        from ocld.stream.embedded import EmbeddedRedis

        if fresh:
            shutil.rmtree(self.work / "redis", ignore_errors=True)
        self.redis = EmbeddedRedis(self.work / "redis", port=self.redis_port, extra_args=self.redis_args)
        self.redis.start()

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def client(self) -> Any:
        from ocld.stream.store import connect

        return connect(self.redis_url)

    def config(self, **overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "name": self.name,
            "kafka": {"bootstrap": self.bootstrap, "topic": self.topic, "partitions": self.partitions,
                      "max_batch": 500, "max_wait_ms": 50, "client": CLIENT},
            "redis": {"url": self.redis_url, "lease_ttl_s": 3, "start_timeout_s": 5},
            "snapshot": {"every_samples": 1000, "every_seconds": 2, "keep": 50},
            "messages": {"n_features": 6},
            "learner": LEARNER,
            "drift": {"enabled": False},
            "status": {"interval_s": 0.2, "metrics_every_s": 1},
            "data_dir": str(self.work / "data"),
        }
        for section, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **value}
            else:
                cfg[section] = value
        return cfg

    def daemon(self, cfg: dict[str, Any] | None = None, *args: str, tag: str = "") -> DaemonProc:
        return DaemonProc(self, cfg or self.config(), *args, tag=tag)

    def produce(self, values: list[bytes], compression: str | None = None, start: int = 0) -> None:
        """kafka-python producer, records spread over the partitions in turn."""
        from kafka import KafkaProducer

        from ocld.stream.broker import ensure_topics
        from ocld.stream.config import KafkaConfig

        ensure_topics(KafkaConfig(bootstrap=self.bootstrap), {self.topic: self.partitions})
        kw = {"compression_type": compression} if compression else {}
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, **kw)
        for i, v in enumerate(values):
            producer.send(self.topic, value=v, partition=(start + i) % self.partitions)
        producer.flush()
        producer.close()

    def status(self) -> dict[str, Any]:
        from ocld.stream.client import StateClient

        return StateClient(self.redis_url).status(self.name)

    def wait_learned(self, n: int, timeout: float = 60.0, daemon: DaemonProc | None = None) -> None:
        from tests.helpers import wait_until

        def done() -> bool:
            if daemon is not None and daemon.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({daemon.proc.returncode}):\n{daemon.log[-3000:]}")
            return int(self.status().get("labelled_seen") or 0) >= n

        wait_until(done, timeout, f"{n} samples learned")

    def catch_up(self, timeout: float = 120.0) -> DaemonProc:
        """One clean daemon that learns whatever the durable state does not cover yet, then stops."""
        d = self.daemon(self.config(), "--until-idle", "1.5", tag="-catch-up")
        d.wait(timeout)
        return d

    def close(self) -> None:
        for d in self.daemons:
            if d.proc.poll() is None:
                d.signal(signal.SIGCONT)
                d.proc.kill()
                d.proc.wait()
            d.fh.close()
        self.stop_broker()
        self.stop_redis()


@contextlib.contextmanager
def environment(work: Path, name: str, partitions: int = 2, broker: bool = True,
                redis_args: list[str] | None = None) -> Iterator[Env]:
    env = Env(work, name, partitions)
    env.redis_args = list(redis_args or [])
    try:
        env.start_redis()
        if broker:
            env.start_broker()
        yield env
    finally:
        env.close()


def measure(env: Env, case: str, X: np.ndarray, y: list[int], notes: str = "") -> Result:
    """Compare the durable state's statistics with a one-pass reference on (X, y)."""
    from ocld.learners.registry import build_learner
    from ocld.stream.client import StateClient

    res = Result(case, produced=len(y), notes=notes)
    res.exit_codes = [d.proc.poll() for d in env.daemons]
    res.traceback = any("Traceback" in d.log for d in env.daemons)
    client = StateClient(env.redis_url)
    try:
        model = client.load_learner(env.name)
    except LookupError:
        res.lost = len(y)
        return res
    got = model.sufficient_statistics()  # type: ignore[attr-defined]
    ref = build_learner(LEARNER["name"], LEARNER["params"], [])
    if len(y):
        ref.learn(X, np.array(y, dtype=object))
    want = ref.sufficient_statistics()  # type: ignore[attr-defined]
    counts = {c: float(n) for c, n in zip(got["classes"], got["counts"])}
    expected = {c: float(n) for c, n in zip(want["classes"], want["counts"])}
    res.learned = int(round(sum(counts.values())))
    for c in set(counts) | set(expected):
        diff = counts.get(c, 0.0) - expected.get(c, 0.0)
        res.lost += int(round(max(0.0, -diff)))
        res.twice += int(round(max(0.0, diff)))
    if set(counts) == set(expected) and got["gram"].shape == want["gram"].shape:
        order = [got["classes"].index(c) for c in want["classes"]]
        scale = max(1.0, float(np.abs(want["gram"]).max()))
        gram = float(np.abs(got["gram"] - want["gram"]).max()) / scale
        cross = float(np.abs(got["cross"][:, order] - want["cross"]).max()) / scale
        res.exact = max(gram, cross) <= 1e-9 and res.lost == 0 and res.twice == 0
    return res


def _dlq_count(env: Env) -> int:
    return int(env.status().get("dlq_count") or 0)


def _wait(pred: Callable[[], Any], timeout: float, what: str, env: Env | None = None) -> Any:
    from tests.helpers import wait_until

    try:
        return wait_until(pred, timeout, what)
    except AssertionError as exc:
        if env is None:
            raise
        st = env.status()
        tail = "".join(f"\n--- {d.log_path.name}:\n{d.log[-2000:]}" for d in env.daemons)
        raise AssertionError(f"{exc}; status: labelled_seen {st.get('labelled_seen')}, state {st.get('state')}, "
                             f"partitions {st.get('partitions')}, lag {st.get('lag')}{tail}") from None


# -- the scenarios ---------------------------------------------------------------------------
def codec_from_librdkafka(work: Path, codec: str) -> Result:
    """Item 1: records produced by librdkafka with every compression codec."""
    from confluent_kafka import Producer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    with environment(work, f"codec{codec}") as env:
        X, y = elec(3000)
        ensure_topics(KafkaConfig(bootstrap=env.bootstrap), {env.topic: env.partitions})
        p = Producer({"bootstrap.servers": env.bootstrap, "compression.type": codec, "linger.ms": 50})
        for i, v in enumerate(encode(X, y)):
            p.produce(env.topic, value=v, partition=i % env.partitions)
        p.flush(30)
        env.catch_up()
        return measure(env, f"librdkafka producer, compression {codec}", X, y)


def codec_library_missing(work: Path) -> Result:
    """Item 1: a batch that cannot be decompressed (the codec's library hidden from the daemon): one line,
    status ``failed``, exit 3, nothing skipped; once the library is back, every record is learned."""
    from confluent_kafka import Producer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    with environment(work, "nocodec", partitions=1) as env:
        X, y = elec(2000)
        ensure_topics(KafkaConfig(bootstrap=env.bootstrap), {env.topic: 1})
        p = Producer({"bootstrap.servers": env.bootstrap, "compression.type": "lz4", "linger.ms": 50})
        for v in encode(X, y):
            p.produce(env.topic, value=v)
        p.flush(30)
        cfg_path = env.work / "nocodec.yaml"  # kafka-python decodes in Python (librdkafka has every codec built in)
        cfg_path.write_text(orjson.dumps(env.config(kafka={"client": "kafka-python"})).decode())
        hide = ("import sys\nfor m in ('lz4', 'lz4.frame'):\n    sys.modules[m] = None\n"
                "from ocld.stream.cli import main\nsys.exit(main(['run', sys.argv[1]]))")
        log_path = env.work / "nocodec.log"
        with open(log_path, "wb") as fh:
            rc = subprocess.run([sys.executable, "-c", hide, str(cfg_path)], cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, timeout=120).returncode
        log = log_path.read_text(errors="replace")
        st = env.status()
        env.catch_up()
        res = measure(env, "lz4 batch without the lz4 library, then with it", X, y)
        res.exit_codes = [rc] + res.exit_codes
        res.traceback = res.traceback or "Traceback" in log
        res.checks = {"rc": rc, "log": log, "state": st.get("state"), "failure": st.get("failure")}
        res.notes = f"exits {rc}, status {st.get('state')}; nothing skipped"
        return res


def stray_first_record(work: Path) -> Result:
    """Item 2: one record of another width arrives first, alone, while the daemon already runs."""
    with environment(work, "stray") as env:
        cfg = env.config(messages={"n_features": None, "infer_width_wait_s": 60})
        d = env.daemon(cfg)
        env.produce([orjson.dumps({"x": [1, 2, 3], "y": 0})])
        time.sleep(1.5)
        X, y = elec(1000)
        env.produce(encode(X, y), start=1)
        _wait(lambda: int(env.status().get("labelled_seen") or 0) >= 1000, 60, "1000 learned")
        d.stop()
        env.daemons.append(env.catch_up())  # a restart keeps the inferred width
        res = measure(env, "stray first record (3 features, then 1000 rows of 6)", X, y)
        st = env.status()
        res.checks = {"dlq_count": int(st.get("dlq_count") or 0), "width_source": st.get("width_source"),
                      "n_features": st.get("n_features")}
        res.notes = f"1 dead-lettered; width {st.get('n_features')}, {st.get('width_source')}"
        return res


def wide_first_record(work: Path) -> Result:
    """Item 3: records of 50,000 features come first (under max_record_bytes): never allocated, dead-lettered."""
    with environment(work, "wide", partitions=1) as env:
        cfg = env.config(messages={"n_features": None, "max_features": 100_000},
                         learner={"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False},
                                  "features": [{"name": "RandomFourierFeatures",
                                                "params": {"n_components": 32, "seed": 0, "linear": 0.1}}]})
        X, y = elec(1000)
        wide = orjson.dumps({"x": [0.5] * 50_000, "y": 1})  # 250 KB, under max_record_bytes
        env.produce([wide] * 25 + encode(X, y))
        d = env.daemon(cfg, "--until-idle", "1.5")
        rc = d.wait(120)
        st = env.status()
        res = Result("wide first records (50,000 features, KalmanHead)", produced=1000,
                     learned=int(st.get("labelled_seen") or 0), exit_codes=[rc], traceback="Traceback" in d.log)
        res.lost = max(0, 1000 - res.learned)
        res.twice = max(0, res.learned - 1000)
        res.exact = res.learned == 1000
        res.checks = {"dlq_by_reason": st.get("dlq_by_reason"), "dlq_count": int(st.get("dlq_count") or 0)}
        res.notes = "25 dead-lettered before any allocation (learner.max_state_bytes)"
        return res


def two_daemons_while_broker_down(work: Path) -> Result:
    """Item 4: two daemons of one config start while the broker is down."""
    with environment(work, "twins", broker=False) as env:
        a = env.daemon()
        _wait(lambda: env.client().get(Keys(env.name).lease), 30, "the first daemon's lease")
        b = env.daemon()
        rc_b = b.wait(30)
        env.start_broker()
        X, y = elec(8000)
        env.produce(encode(X, y))
        env.wait_learned(8000, daemon=a)
        rc_a = a.stop()
        env.catch_up()
        res = measure(env, "two daemons started while the broker is down", X, y)
        res.checks = {"second_rc": rc_b, "second_log": b.log, "first_rc": rc_a}
        res.notes = "the second refuses (lease held) and exits 2"
        return res


def stalled_daemon_replaced(work: Path) -> Result:
    """Item 4: a daemon stalled (SIGSTOP) past its lease; a second starts; the first resumes."""
    with environment(work, "stalled") as env:
        X, y = elec(8000)
        values = encode(X, y)
        a = env.daemon()
        env.produce(values[:4000])
        env.wait_learned(2000, daemon=a)
        a.signal(signal.SIGSTOP)
        time.sleep(4.0)  # past the lease TTL (3 s)
        b = env.daemon()
        _wait(lambda: "lease" in b.log and "taken" in b.log, 30, "the second daemon's lease")
        env.produce(values[4000:], start=4000)
        a.signal(signal.SIGCONT)
        rc_a = a.wait(60)
        env.wait_learned(8000, timeout=90, daemon=b)
        b.stop()
        env.catch_up()
        res = measure(env, "daemon stalled past its lease, a second one starts", X, y)
        res.checks = {"stalled_rc": rc_a, "stalled_log": a.log}
        res.notes = "the stalled one exits 3 without writing"
        return res


def rollback_while_stalled(work: Path) -> Result:
    """Item 5: ``ocld rollback`` while the daemon is stalled; it resumes afterwards."""
    from ocld.stream.client import StateClient

    with environment(work, "rollstall") as env:
        X, y = elec(9000)
        values = encode(X, y)
        a = env.daemon()
        env.produce(values[:5000])
        env.wait_learned(5000, daemon=a)
        client = StateClient(env.redis_url)
        versions = client.snapshot_info(env.name)["versions"]
        a.signal(signal.SIGSTOP)
        time.sleep(4.0)
        target = sorted(versions)[len(versions) // 2]
        out = client.rollback(env.name, target)
        a.signal(signal.SIGCONT)
        env.produce(values[5000:], start=5000)
        _wait(lambda: "rewind" in a.log.lower() or "reloading it" in a.log or a.proc.poll() is not None, 30,
              "the resumed daemon to find the rollback")
        _wait(lambda: int(env.status().get("labelled_seen") or 0) >= 9000 or a.proc.poll() is not None, 90,
              "9000 learned")
        a.stop()
        env.catch_up()
        res = measure(env, "rollback while the daemon is stalled", X, y)
        res.checks = {"rolled_back_to": out["version"], "log": a.log}
        res.notes = f"rolled back to version {target}; the daemon reloads it when it resumes"
        return res


def garbage_manifests(work: Path) -> Result:
    """Item 6: every manifest key overwritten (or every chunk evicted), then a restart."""
    with environment(work, "garbage") as env:
        X, y = elec(5000)
        env.produce(encode(X, y))
        env.catch_up()
        r = env.client()
        for key in r.scan_iter(match=f"{Keys(env.name).base}:snap:*:manifest"):
            r.set(key, b"\x00garbage")
        d = env.catch_up()
        res = measure(env, "garbage in every manifest, then a restart", X, y)
        res.checks = {"log": d.log}
        res.notes = "no usable snapshot: the registry is reset and the log learned again"
        return res


def broker_restarted_between_runs(work: Path) -> Result:
    """Item 7: the embedded broker forgets its log between two runs; new records are produced."""
    with environment(work, "bounce") as env:
        X1, y1 = elec(5000)
        env.produce(encode(X1, y1))
        env.catch_up()
        env.stop_broker()
        env.start_broker()
        X2, y2 = elec(8000, start=5000)
        env.produce(encode(X2, y2))
        d = env.catch_up()
        res = measure(env, "broker restarted empty between runs, 8000 new records", np.vstack([X1, X2]), y1 + y2)
        st = env.status()
        res.checks = {"incidents": st.get("incidents"), "log": d.log}
        res.notes = f"topic_reset incidents: {(st.get('incidents') or {}).get('topic_reset', 0)}"
        return res


def broker_restarted_mid_run(work: Path) -> Result:
    """Item 7: the embedded broker restarts (empty) while the daemon runs."""
    with environment(work, "bouncerun") as env:
        X1, y1 = elec(3000)
        a = env.daemon()
        env.produce(encode(X1, y1))
        env.wait_learned(3000, daemon=a)
        env.stop_broker()
        time.sleep(2.0)
        env.start_broker()
        X2, y2 = elec(5000, start=3000)
        env.produce(encode(X2, y2))
        _wait(lambda: int(env.status().get("labelled_seen") or 0) >= 8000 or a.proc.poll() is not None, 120,
              "8000 learned", env)
        a.stop()
        env.catch_up()
        res = measure(env, "broker restarted empty while the daemon runs", np.vstack([X1, X2]), y1 + y2)
        st = env.status()
        res.checks = {"incidents": st.get("incidents")}
        return res


def redis_flushed(work: Path, how: str = "flushall") -> Result:
    """Item 8: Redis loses its data while the daemon runs (FLUSHALL, or a restart without persistence)."""
    with environment(work, f"redis{how}") as env:
        X, y = elec(6000)
        values = encode(X, y)
        a = env.daemon()
        env.produce(values[:3000])
        env.wait_learned(3000, daemon=a)
        if how == "flushall":
            env.client().flushall()
        else:
            env.redis.kill()
            env.start_redis(fresh=True)
        env.produce(values[3000:], start=3000)
        _wait(lambda: (int(env.status().get("labelled_seen") or 0) >= 6000 and env.status().get("state") == "running")
              or a.proc.poll() is not None, 90, "the daemon to re-establish its state and learn on")
        st = env.status()
        a.stop()
        env.catch_up()
        res = measure(env, "Redis FLUSHALL while running" if how == "flushall" else
                      "Redis restarted empty while running", X, y)
        res.checks = {"state": st.get("state"), "incidents": st.get("incidents"), "log": a.log}
        res.notes = "re-established from memory (redis_data_loss incident)"
        return res


def acl_without_write(work: Path) -> Result:
    """Item 9: a Redis user that may read but not write."""
    with environment(work, "acl") as env:
        r = env.client()
        r.execute_command("ACL", "SETUSER", "reader", "on", ">readerpw", "~*", "+@read", "+ping")
        X, y = elec(1000)
        env.produce(encode(X, y))
        cfg = env.config(redis={"url": f"redis://reader:readerpw@127.0.0.1:{env.redis_port}/0"})
        t0 = time.monotonic()
        d = env.daemon(cfg)
        rc = d.wait(60)
        took = time.monotonic() - t0
        env.catch_up()
        res = measure(env, "Redis user without write permission", X, y)
        lines = [ln for ln in d.log.splitlines() if "WARNING" in ln]
        res.checks = {"rc": rc, "seconds": took, "log": d.log, "warnings": len(lines)}
        res.notes = f"exits {rc} after {took:.1f} s with one line; a user with write access learns all"
        return res


def sasl_mismatch(work: Path) -> Result:
    """Item 10: SASL configured against a PLAINTEXT broker; and SIGTERM while it tries."""
    with environment(work, "sasl") as env:
        X, y = elec(1000)
        env.produce(encode(X, y))
        cfg = env.config(kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                "sasl_username": "u", "sasl_password": "sasl-secret-pw"})
        t0 = time.monotonic()
        d = env.daemon(cfg)
        rc = d.wait(120)
        took = time.monotonic() - t0
        d2 = env.daemon(cfg)
        _wait(lambda: "lease" in d2.log, 60, "the second daemon to start (its lease taken)")
        t1 = time.monotonic()
        d2.signal(signal.SIGTERM)
        rc2 = d2.wait(30)
        term_s = time.monotonic() - t1
        env.catch_up()
        res = measure(env, "Kafka SASL against a PLAINTEXT listener", X, y)
        res.checks = {"rc": rc, "seconds": took, "log": d.log, "term_rc": rc2, "term_s": term_s}
        res.notes = f"exits {rc} after {took:.0f} s with one line; SIGTERM honoured in {term_s:.1f} s"
        return res


def learner_child_killed(work: Path) -> Result:
    """Item 11: the learner process (``learner_process: true``) is SIGKILLed mid-run."""
    with environment(work, "child") as env:
        X, y = elec(8000)
        values = encode(X, y)
        a = env.daemon(env.config(learner_process=True))
        env.produce(values[:4000])
        env.wait_learned(2000, daemon=a)
        child = _child_pids(a.proc.pid)
        for pid in child:
            os.kill(pid, signal.SIGKILL)
        env.produce(values[4000:], start=4000)
        _wait(lambda: int(env.status().get("labelled_seen") or 0) >= 8000 or a.proc.poll() is not None, 90,
              "8000 learned after the restart")
        alive = a.proc.poll() is None
        a.stop()
        env.catch_up()
        res = measure(env, "learner process SIGKILLed mid-run", X, y)
        res.checks = {"children_killed": len(child), "alive_after": alive, "log": a.log}
        res.notes = "restarted from the last durable snapshot (learner_restarted incident)"
        return res


def redis_down_at_start(work: Path) -> Result:
    """Item 12: no Redis at start-up."""
    with environment(work, "noredis") as env:
        X, y = elec(1000)
        env.produce(encode(X, y))
        env.stop_redis()
        t0 = time.monotonic()
        d = env.daemon()
        rc = d.wait(60)
        took = time.monotonic() - t0
        waiting = env.daemon(env.config(redis={"start_timeout_s": 60}))  # SIGTERM while it waits for Redis
        _wait(lambda: "at start-up failed" in waiting.log, 30, "the daemon to wait for Redis")
        t1 = time.monotonic()
        waiting.signal(signal.SIGTERM)
        term_rc = waiting.wait(30)
        term_s = time.monotonic() - t1
        env.start_redis()
        env.catch_up()
        res = measure(env, "Redis unreachable at start", X, y)
        res.checks = {"rc": rc, "seconds": took, "log": d.log, "term_rc": term_rc, "term_s": term_s}
        res.notes = (f"exits {rc} after {took:.0f} s (redis.start_timeout_s 5) with one line; SIGTERM while waiting "
                     f"honoured in {term_s:.1f} s")
        return res


def dlq_counts_across_restarts(work: Path) -> Result:
    """Item 15: dead-letter counts survive restarts and add up."""
    with environment(work, "dlqcount") as env:
        Xs, ys = [], []
        for run in range(3):
            X, y = elec(500, start=500 * run)
            Xs.append(X)
            ys += y
            env.produce(encode(X, y) + [b"not json"] * 5, start=0)
            env.catch_up()
        res = measure(env, "dead-letter counts across 3 restarts", np.vstack(Xs), ys)
        st = env.status()
        res.checks = {"dlq_count": int(st.get("dlq_count") or 0), "dlq_by_reason": st.get("dlq_by_reason")}
        res.notes = f"dlq_count {st.get('dlq_count')} (15 expected)"
        return res


def status_after_stop_and_crash(work: Path) -> Result:
    """Item 16: the state after a clean stop and after a crash."""
    with environment(work, "states") as env:
        X, y = elec(2000)
        values = encode(X, y)
        a = env.daemon()
        env.produce(values[:1000])
        env.wait_learned(1000, daemon=a)
        a.stop()
        after_stop = env.status().get("state")
        b = env.daemon()
        env.produce(values[1000:], start=1000)
        env.wait_learned(2000, daemon=b)
        b.proc.kill()
        b.proc.wait()
        _wait(lambda: env.status().get("state") == "dead", 10, "the crashed daemon's lease to lapse")
        after_crash = env.status()
        env.catch_up()
        res = measure(env, "status after a clean stop and after SIGKILL", X, y)
        res.checks = {"after_stop": after_stop, "after_crash": after_crash.get("state"),
                      "reported": after_crash.get("state_reported"), "final": env.status().get("state")}
        res.notes = f"{after_stop} after SIGTERM; {after_crash.get('state')} after SIGKILL"
        return res


def _child_pids(pid: int) -> list[int]:
    """The learner processes of daemon ``pid`` (multiprocessing spawn children; not its resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    pids = []
    for p in out.stdout.split():
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(int(p))
    return pids


SCENARIOS: dict[str, Callable[[Path], Result]] = {
    "codec-lz4": lambda w: codec_from_librdkafka(w, "lz4"),
    "codec-zstd": lambda w: codec_from_librdkafka(w, "zstd"),
    "codec-snappy": lambda w: codec_from_librdkafka(w, "snappy"),
    "codec-gzip": lambda w: codec_from_librdkafka(w, "gzip"),
    "codec-library-missing": codec_library_missing,
    "stray-first-record": stray_first_record,
    "wide-first-record": wide_first_record,
    "two-daemons-broker-down": two_daemons_while_broker_down,
    "stalled-daemon-replaced": stalled_daemon_replaced,
    "rollback-while-stalled": rollback_while_stalled,
    "garbage-manifests": garbage_manifests,
    "broker-restarted-between-runs": broker_restarted_between_runs,
    "broker-restarted-mid-run": broker_restarted_mid_run,
    "redis-flushall": lambda w: redis_flushed(w, "flushall"),
    "redis-restarted-empty": lambda w: redis_flushed(w, "restart"),
    "acl-without-write": acl_without_write,
    "sasl-mismatch": sasl_mismatch,
    "learner-child-killed": learner_child_killed,
    "redis-down-at-start": redis_down_at_start,
    "dlq-counts-across-restarts": dlq_counts_across_restarts,
    "status-after-stop-and-crash": status_after_stop_and_crash,
}
