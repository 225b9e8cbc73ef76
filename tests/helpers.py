"""Small helpers for tests: wait for a condition, produce raw records, read a topic to its end,
run ``ocld run`` as a child process. Test support only: nothing here is imported by ``ocld``, and
nothing here imports ``benchmarks`` (benchmarks may import it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class GiveUp(Exception):
    """Raised by a ``wait_until`` predicate when what it waits for can no longer happen (the child
    process it watches has exited): the wait fails at once, with this message."""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s
    naming ``what``. The one way tests wait: never a bare sleep, never "nothing happened after a
    fixed sleep". An exception in the predicate counts as not yet (servers starting, keys absent),
    except :class:`GiveUp`, which fails the wait at once."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except GiveUp as exc:
            raise AssertionError(f"gave up waiting for {what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 (not ready yet)
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(every)


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> None:
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=i % partitions)
    producer.flush()
    producer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of every partition, read until each partition's high watermark (not
    end_offsets, which tansu reports as the last batch's base offset + 1). An empty partition's
    high watermark (0) arrives with the first fetch; a topic not read to its end in ``timeout`` s
    fails."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []

        def at_end() -> bool:
            for recs in consumer.poll(timeout_ms=300).values():
                out.extend(recs)
            hws = [consumer.highwater(tp) for tp in tps]
            return all(hw is not None and consumer.position(tp) >= hw for tp, hw in zip(tps, hws))

        wait_until(at_end, timeout, f"topic {topic} read to its high watermark", every=0)
        return out
    finally:
        consumer.close()


def elec_records(n: int, start: int = 0) -> tuple[np.ndarray, list[int]]:
    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    return table.X[start:start + n], table.y[start:start + n]


def encode_rows(X: np.ndarray, y: list[Any]) -> list[bytes]:
    import orjson

    return [orjson.dumps({"x": X[i].tolist(), "y": y[i]}) for i in range(len(y))]


def produce_librdkafka(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1,
                       compression: str = "none", linger_ms: int = 200, batch_records: int = 10_000) -> dict[str, Any]:
    """Produce ``values`` round-robin over ``partitions`` with confluent-kafka (librdkafka), the
    client most Kafka users have, compressing each batch with ``compression`` (none, gzip,
    snappy, lz4, zstd). ``linger_ms`` lets a batch fill with up to ``batch_records`` records, as a
    busy producer's batches do.

    Returns what librdkafka counted: ``records`` delivered, ``batches`` sent (from its
    statistics), and ``per_partition`` record counts (the partitions' end offsets on a new topic)."""
    import orjson
    from confluent_kafka import Producer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    windows: list[dict[str, Any]] = []  # librdkafka's statistics: batch histograms per interval
    delivered: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.partition()] = delivered.get(msg.partition(), 0) + 1

    producer = Producer({
        "bootstrap.servers": bootstrap, "compression.type": compression, "linger.ms": linger_ms,
        "batch.size": 1_000_000, "batch.num.messages": batch_records, "statistics.interval.ms": 100,
        "stats_cb": lambda raw: windows.append(orjson.loads(raw)), "log.connection.close": False,
    })
    try:
        for i, v in enumerate(values):
            while True:
                try:
                    producer.produce(topic, value=v, partition=i % partitions, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka send, then retry this record
                    producer.poll(0.05)
        remaining = producer.flush(30)
        assert remaining == 0 and not errors, f"{remaining} records undelivered, errors {errors[:3]}"

        def batched() -> int:
            producer.poll(0.05)  # serves stats_cb
            return sum(w.get("topics", {}).get(topic, {}).get("batchcnt", {}).get("sum", 0) for w in windows)

        wait_until(lambda: batched() >= len(values), 10, "librdkafka's statistics to count every record")
    finally:
        close = getattr(producer, "close", None)  # Producer.close() exists from confluent-kafka 2.13 (flushed above)
        if close is not None:
            close()
    batches = sum(w.get("topics", {}).get(topic, {}).get("batchcnt", {}).get("cnt", 0) for w in windows)
    return {"records": sum(delivered.values()), "batches": batches,
            "per_partition": {p: delivered.get(p, 0) for p in range(partitions)}}


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    """Write a config dict where ``ocld run`` reads it (JSON is YAML); returns ``path``."""
    import orjson

    path.write_bytes(orjson.dumps(cfg))
    return path


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int | None]:
    """The group's committed offset of each partition, as a monitoring tool reads it (no group join)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()


class DaemonProcess:
    """``ocld run CONFIG`` as a child process, against the given broker and Redis; a replica of its
    pipeline when ``replica`` is given; ``args`` go to ``ocld run`` (``--until-idle``, ...).

    Each :meth:`start` writes the child's stdout and stderr (its log) to files of their own under
    ``log_dir`` (``{label}.{n}.out`` and ``{label}.{n}.log``), so a restarted daemon keeps the logs
    of the runs before. The child never inherits ``OCLD_FAULT`` or ``OCLD_REPLICA`` from the tests'
    environment; ``start(env=...)`` sets what a run needs."""

    def __init__(self, cfg_path: Path, bootstrap: str, redis_url: str, log_dir: Path, *,
                 replica: str | None = None, args: Sequence[str] = (), label: str | None = None) -> None:
        self.replica = replica
        self.label = label or replica or cfg_path.stem
        self.cmd = [sys.executable, "-m", "ocld.stream.cli", "run", str(cfg_path), "--bootstrap", bootstrap,
                    "--redis", redis_url, *(["--replica", replica] if replica else []), *args]
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, env: Mapping[str, str] | None = None) -> DaemonProcess:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child_env = {k: v for k, v in os.environ.items() if k not in ("OCLD_FAULT", "OCLD_REPLICA")}
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:  # the child keeps its own copies
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=err, env={**child_env, **(env or {})})
        return self

    @property
    def out_path(self) -> Path:
        return self.log_dir / f"{self.label}.{self.starts}.out"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.label}.{self.starts}.log"

    @property
    def log(self) -> str:
        """What the latest run wrote to stderr (its log lines)."""
        return self.log_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self) -> bool:
        """True while the child runs; raises :class:`GiveUp` (with its log's end) once it has exited.
        For ``wait_until`` predicates: ``lambda: daemon.alive() and <the condition>``."""
        if self.running():
            return True
        rc = self.proc.returncode if self.proc is not None else None
        raise GiveUp(f"the daemon exited ({rc}); the end of {self.log_path}:\n{self.log[-3000:]}")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, if it runs."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def term(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then the exit code; SIGKILL and None if it has not exited after ``timeout`` s."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
