"""ocld against the pipelines a user would build instead, with the same model, in the same run.

One embedded tansu broker and one embedded Redis in a temporary folder (127.0.0.1 only). The
topic holds ``--copies`` x data/elec.csv (4 x 45,312 = 181,248 JSON records ``{"x": [6 numbers],
"y": label}``), produced once. Every pipeline reads it from the start with a consumer group of its
own, in a child process of its own (a fresh interpreter, killed at ``--timeout``; a failure is a
row with its error, not the end of the table):

- bare references: a kafka-python poll + ``orjson.loads`` loop, a confluent-kafka consume +
  ``orjson.loads`` loop (what reading the topic costs, nothing learned);
- peers, each with river ``preprocessing.StandardScaler() | linear_model.LogisticRegression()``,
  test-then-train per record (``predict_proba_one``, then ``learn_one``): a plain confluent-kafka
  loop, a plain kafka-python loop, Quix Streams (``sdf.apply``) and Bytewax (``map`` over
  ``bytewax.connectors.kafka``). Quix Streams' stateful operations fail on tansu (its changelog
  topics need ``retention.ms``, which tansu's DescribeConfigs does not return), so every peer
  keeps its model in memory only: nothing of it survives a crash. ocld snapshots its state to
  Redis as it runs;
- ocld: ``ocld run`` of config/river-lr.yaml (the same river model), config/kalman.yaml and
  config/default.yaml, each shipped file unchanged but for the pipeline name, the topic and
  ``data_dir`` (snapshots to Redis as configured, status writes, offset commits).

Run order: ``--rounds`` rounds (default 2); each round runs every pipeline once, the order
rotated by one each round, so that machine noise falls on all of them alike, and each round has
its own bare kafka-python reference.

Measured, for every pipeline in the same way: the time from the first record handed to the
pipeline's own code (a non-empty poll, the first call of the user function in Quix and Bytewax)
to the last record learned (decoded, for the bare loops); start-up, imports and the group join
are not counted, and neither is ocld's final snapshot. CPU per record: user + system time of the
pipeline's whole process tree over that window (``psutil``: every thread, and every child
process such as ocld's ``learner_process``), not the broker's or Redis's (shown apart).
Accuracy: prequential, counted as ``ocld.core.metrics`` counts it (a record is right when the
class of highest probability among the classes seen before it is its label).

    nice -n 19 python benchmarks/peers.py               # 2 rounds, about 10 minutes on 2 busy cores
    python benchmarks/peers.py --rounds 1 --copies 1    # quick
    python benchmarks/peers.py --pipelines bare-kafka-python,ocld-kalman --set kafka.client=confluent
    python benchmarks/peers.py --extra kalman.yaml:kafka.client=kafka-python   # one more ocld row

Needs the ``bench`` extra (``pip install -e '.[bench]'``, in a virtual environment of its own:
Quix Streams pins an older confluent-kafka). Writes the table to benchmarks/out/peers.md.
A script that prints a table, not a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"

# librdkafka and kafka-python settings every group consumer here uses: tansu forms a group in about
# 3 s with these, about 23 s with the clients' defaults (../shared/DESIGN.md, "tansu quirks"). They
# only shorten the wait before the first record, which is not timed.
KAFKA_PYTHON_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10_000}
LIBRDKAFKA_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 10_000}


@dataclass(frozen=True)
class Pipeline:
    key: str
    label: str
    kind: str  # "bare", "peer" or "ocld"
    config: str | None = None  # ocld: the shipped config file under config/
    overrides: tuple[str, ...] = ()  # ocld: KEY=VALUE changes to it (``--extra``)


PIPELINES: dict[str, Pipeline] = {p.key: p for p in (
    Pipeline("bare-kafka-python", "bare kafka-python: poll + orjson.loads (reference)", "bare"),
    Pipeline("bare-confluent", "bare confluent-kafka: consume + orjson.loads", "bare"),
    Pipeline("loop-confluent", "confluent-kafka + river, a plain loop", "peer"),
    Pipeline("loop-kafka-python", "kafka-python + river, a plain loop", "peer"),
    Pipeline("quix", "Quix Streams (sdf.apply) + river", "peer"),
    Pipeline("bytewax", "Bytewax (map) + river", "peer"),
    Pipeline("ocld-river-lr", "ocld run, config/river-lr.yaml (the same river model)", "ocld", "river-lr.yaml"),
    Pipeline("ocld-kalman", "ocld run, config/kalman.yaml", "ocld", "kalman.yaml"),
    Pipeline("ocld-default", "ocld run, config/default.yaml", "ocld", "default.yaml"),
)}
REFERENCE = "bare-kafka-python"


def add_extra(spec: str) -> str:
    """Register an ``--extra CONFIG[:KEY=VALUE,...]`` ocld row; its key.

    >>> key = add_extra("kalman.yaml:kafka.client=kafka-python,learner_process=true")
    >>> PIPELINES[key].label
    'ocld run, config/kalman.yaml, kafka.client=kafka-python, learner_process=true'
    >>> PIPELINES[key].overrides
    ('kafka.client=kafka-python', 'learner_process=true')
    >>> del PIPELINES[key]
    """
    config, _, rest = spec.partition(":")
    if not (ROOT / "config" / config).is_file():
        raise ValueError(f"--extra {spec!r}: no config/{config}")
    overrides = tuple(item.strip() for item in rest.split(",") if item.strip())
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ValueError(f"--extra {spec!r}: {bad} is not KEY=VALUE")
    key = f"ocld-extra-{sum(k.startswith('ocld-extra-') for k in PIPELINES) + 1}"
    PIPELINES[key] = Pipeline(key, ", ".join([f"ocld run, config/{config}", *overrides]), "ocld", config, overrides)
    return key


# -- what every pipeline shares -----------------------------------------------------------------------
def river_model() -> Any:
    """The model every peer and config/river-lr.yaml learn: river's defaults, scaled inputs."""
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Prequential:
    """Test-then-train accuracy as ``ocld.core.metrics`` counts it.

    A record is right when, among the classes seen before it (in order of first appearance), the
    one of highest probability (the first on a tie; the first when every probability is 0) is its
    label. The very first record, with no class seen, is wrong.

    >>> p = Prequential()
    >>> p.score({}, 1)                     # nothing seen yet: wrong
    >>> p.score({True: 0.2, False: 0.8}, 1)  # only class 1 seen: it is the answer
    >>> p.score({True: 0.5, False: 0.5}, 0)  # 0 is new: wrong
    >>> p.score({True: 0.5, False: 0.5}, 1)  # a tie goes to the class seen first (1)
    >>> p.score({True: 0.3, False: 0.7}, 0)
    >>> (p.correct, p.n)
    (3, 5)
    """

    def __init__(self) -> None:
        self.classes: list[Any] = []
        self.n = 0
        self.correct = 0

    def score(self, proba: dict[Any, float], label: Any) -> None:
        classes = self.classes
        if classes:
            best, top = classes[0], -1.0
            for c in classes:
                p = proba.get(c, 0.0)
                if p > top:
                    best, top = c, p
            self.correct += best == label
        if label not in classes:
            classes.append(label)
        self.n += 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


class RiverLoop:
    """The user code of every peer: one record in, predicted, scored, learned."""

    def __init__(self) -> None:
        self.model = river_model()
        self.metric = Prequential()
        self._names: list[str] = []

    def __call__(self, record: dict[str, Any]) -> None:
        xs = record["x"]
        if len(self._names) != len(xs):
            self._names = [f"x{j}" for j in range(len(xs))]
        x = dict(zip(self._names, xs))
        y = record["y"]
        self.metric.score(self.model.predict_proba_one(x), y)
        self.model.learn_one(x, y)


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process and all its descendants (live ones, and those reaped)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes (the broker and Redis)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Window:
    """From the first record handed to the pipeline's code to the last one learned: wall time and
    the CPU of the process tree (and, apart, of the servers) over it."""

    def __init__(self, n: int, server_pids: list[int]) -> None:
        self.n = n
        self.server_pids = server_pids
        self.t0: float | None = None
        self.result: dict[str, Any] | None = None

    def start(self) -> None:
        if self.t0 is None:
            self.c0, self.s0 = tree_cpu_seconds(), cpu_seconds(self.server_pids)
            self.t0 = time.perf_counter()

    def finish(self, count: int, accuracy: float | None = None, **extra: Any) -> dict[str, Any]:
        t1 = time.perf_counter()
        c1, s1 = tree_cpu_seconds(), cpu_seconds(self.server_pids)
        assert self.t0 is not None
        seconds = t1 - self.t0
        self.result = {"records": count, "seconds": seconds, "rate": count / seconds,
                       "cpu_us": 1e6 * (c1 - self.c0) / count, "server_cpu_us": 1e6 * (s1 - self.s0) / count,
                       "accuracy": accuracy, **extra}
        return self.result


# -- the pipelines (each runs in a worker process: ``peers.py --worker KEY``) -----------------------------
def run_bare_kafka_python(a: argparse.Namespace, w: Window) -> None:
    import orjson
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group, auto_offset_reset="earliest",
                             client_id=a.group, **KAFKA_PYTHON_GROUP)
    loads, count = orjson.loads, 0
    deadline = time.monotonic() + a.timeout
    while count < w.n and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        if polled:
            w.start()
            for records in polled.values():
                for r in records:
                    loads(r.value)
                count += len(records)
    w.finish(count)
    consumer.close()


def run_loop_kafka_python(a: argparse.Namespace, w: Window) -> None:
    import orjson
    from kafka import KafkaConsumer

    learn = RiverLoop()
    consumer = KafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group, auto_offset_reset="earliest",
                             client_id=a.group, **KAFKA_PYTHON_GROUP)
    loads, count = orjson.loads, 0
    deadline = time.monotonic() + a.timeout
    while count < w.n and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        if polled:
            w.start()
            for records in polled.values():
                for r in records:
                    learn(loads(r.value))
                count += len(records)
    w.finish(count, learn.metric.accuracy)
    consumer.close()


# consume() waits until it has num_messages or its timeout has passed: with a long timeout the topic's last,
# short batch would wait it out, and that wait would count as the loop's time. The daemon's own poll
# (kafka.max_batch 500, kafka.max_wait_ms 20) is used instead.
CONSUME = {"num_messages": 500, "timeout": 0.02}


def _confluent_consumer(a: argparse.Namespace) -> Any:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group, "client.id": a.group,
                         "auto.offset.reset": "earliest", **LIBRDKAFKA_GROUP})
    consumer.subscribe([a.topic])
    return consumer


def run_bare_confluent(a: argparse.Namespace, w: Window) -> None:
    import orjson

    consumer = _confluent_consumer(a)
    loads, count = orjson.loads, 0
    deadline = time.monotonic() + a.timeout
    while count < w.n and time.monotonic() < deadline:
        msgs = consumer.consume(**CONSUME)
        if msgs:
            w.start()
            for m in msgs:
                if m.error() is None:
                    loads(m.value())
                    count += 1
    w.finish(count)
    consumer.close()


def run_loop_confluent(a: argparse.Namespace, w: Window) -> None:
    import orjson

    learn = RiverLoop()
    consumer = _confluent_consumer(a)
    loads, count = orjson.loads, 0
    deadline = time.monotonic() + a.timeout
    while count < w.n and time.monotonic() < deadline:
        msgs = consumer.consume(**CONSUME)
        if msgs:
            w.start()
            for m in msgs:
                if m.error() is None:
                    learn(loads(m.value()))
                    count += 1
    w.finish(count, learn.metric.accuracy)
    consumer.close()


def run_quix(a: argparse.Namespace, w: Window) -> None:
    import quixstreams
    from quixstreams import Application

    learn = RiverLoop()
    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      consumer_extra_config=dict(LIBRDKAFKA_GROUP), state_dir=str(Path(a.workdir) / "quix-state"),
                      loglevel="WARNING")
    sdf = app.dataframe(app.topic(a.topic, value_deserializer="json"))
    count = 0

    def apply(record: dict[str, Any]) -> None:
        nonlocal count
        w.start()
        learn(record)
        count += 1
        if count == w.n:
            w.finish(count, learn.metric.accuracy)
            app.stop()

    sdf.apply(apply)
    app.run(timeout=a.timeout)  # ``timeout``: stop when nothing new arrives for that long
    if w.result is None:
        w.finish(count, learn.metric.accuracy)
    w.result["version"] = f"quixstreams {quixstreams.__version__}"  # type: ignore[index]


def run_bytewax(a: argparse.Namespace, w: Window) -> None:
    from importlib.metadata import version

    import bytewax.operators as op
    import orjson
    from bytewax._bytewax import cli_main
    from bytewax.connectors.kafka import operators as kop
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Discard(DynamicSink[Any]):
        class _Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                pass

        def build(self, step_id: str, worker_index: int, worker_count: int) -> Discard._Part:
            return Discard._Part()

    learn = RiverLoop()
    loads = orjson.loads
    count = 0

    def apply(msg: Any) -> None:
        nonlocal count
        w.start()
        learn(loads(msg.value))
        count += 1
        if count == w.n:
            w.finish(count, learn.metric.accuracy)

    flow = Dataflow("peers")
    # tail=False: the flow ends at the end of the topic (librdkafka's partition EOF). Bytewax assigns the
    # partitions itself and keeps offsets in its own recovery store, so group.id is only a label here.
    source = kop.input("kafka", flow, brokers=[a.bootstrap], topics=[a.topic], tail=False,
                       add_config={"group.id": a.group, "client.id": a.group})
    op.output("discard", op.map("learn", source.oks, apply), Discard())
    cli_main(flow, workers_per_process=1)
    if w.result is None:
        w.finish(count, learn.metric.accuracy)
    w.result["version"] = f"bytewax {version('bytewax')}"  # type: ignore[index]


def ocld_config_file(a: argparse.Namespace, config: str, overrides: list[str]) -> Path:
    """The shipped config, unchanged but for name, topic, data_dir and ``--set KEY=VALUE`` overrides."""
    import yaml

    doc = yaml.safe_load((ROOT / "config" / config).read_text(encoding="utf-8"))
    doc["name"] = a.group
    doc.setdefault("kafka", {})["topic"] = a.topic
    doc["data_dir"] = str(Path(a.workdir) / "ocld")
    for item in overrides:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = doc
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    out = Path(a.workdir) / f"{a.group}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def run_ocld(a: argparse.Namespace, w: Window, config: str) -> None:
    """``ocld run CONFIG --until-idle 5`` through the CLI's own ``main``, with two of ``Daemon``'s methods
    wrapped (as benchmarks/throughput.py does: no timing hook in the product code): the first non-empty
    poll starts the window; the poll after which ``records_seen`` reaches the topic's size ends it, and
    stops the daemon (its final snapshot is not timed)."""
    from ocld.stream import cli
    from ocld.stream.daemon import Daemon

    missing = [m for m in ("_poll", "_finish_next") if not callable(getattr(Daemon, m, None))]
    if missing:
        raise RuntimeError(f"Daemon has no {missing}: benchmarks/peers.py times the daemon by wrapping them; "
                           "update run_ocld to the daemon's current loop")
    poll_fn, finish_fn = Daemon._poll, Daemon._finish_next

    def poll(self: Daemon, *args: Any, **kwargs: Any) -> Any:
        polled = poll_fn(self, *args, **kwargs)
        if polled.values:
            w.start()
        return polled

    def finish(self: Daemon, *args: Any, **kwargs: Any) -> Any:
        out = finish_fn(self, *args, **kwargs)
        if w.result is None and self.records_seen >= w.n:
            w.finish(self.records_seen, float(self.core.summary()["accuracy"]),
                     client=getattr(self.cfg.kafka, "client", "kafka-python"))
            self.stop()
        return out

    Daemon._poll = poll  # type: ignore[method-assign]
    Daemon._finish_next = finish  # type: ignore[method-assign]
    path = ocld_config_file(a, config, a.set or [])
    code = cli.main(["run", str(path), "--bootstrap", a.bootstrap, "--redis", a.redis, "--until-idle", "5",
                     "--max-seconds", str(a.timeout)])
    if code != 0:
        raise RuntimeError(f"ocld run exited {code}")
    if w.result is None:
        raise TimeoutError(f"ocld run stopped before the topic's {w.n} records were learned")


RUNNERS: dict[str, Callable[[argparse.Namespace, Window], None]] = {
    "bare-kafka-python": run_bare_kafka_python,
    "bare-confluent": run_bare_confluent,
    "loop-confluent": run_loop_confluent,
    "loop-kafka-python": run_loop_kafka_python,
    "quix": run_quix,
    "bytewax": run_bytewax,
}


def worker(a: argparse.Namespace) -> int:
    """One pipeline in this process; its result (or error) as JSON in ``--result``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    w = Window(a.records, [int(p) for p in a.server_pids.split(",") if p])
    try:
        shipped = PIPELINES[a.worker].config if a.worker in PIPELINES else None
        if a.ocld_config or shipped:
            run_ocld(a, w, a.ocld_config or str(shipped))
        elif a.worker in RUNNERS:
            RUNNERS[a.worker](a, w)
        else:
            raise ValueError(f"no pipeline {a.worker!r}")
        result = dict(w.result or {})
        if result.get("records", 0) < a.records:
            raise TimeoutError(f"learned {result.get('records', 0)} of {a.records} records in {a.timeout:.0f} s")
    except BaseException as exc:  # noqa: BLE001 (a failure is a row of the table)
        Path(a.result).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    Path(a.result).write_text(json.dumps(result))
    return 0


# -- the harness ---------------------------------------------------------------------------------------
def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> float:
    """Write ``values`` to a new topic, record i to partition i mod ``partitions``; records/s."""
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: partitions})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, client_id="producer")
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=i % partitions)
    producer.flush(timeout=600)
    producer.close()
    return len(values) / (time.perf_counter() - t0)


def elec_values(copies: int) -> list[bytes]:
    """data/elec.csv ``copies`` times over as JSON records ``{"x": [...], "y": label}``."""
    import orjson

    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    one = [orjson.dumps({"x": row, "y": label}) for row, label in zip(table.X.tolist(), list(table.y))]
    return one * copies


def spawn(key: str, *, bootstrap: str, redis_url: str, topic: str, records: int, server_pids: list[int],
          workdir: Path, timeout: float, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one pipeline in a child process (this interpreter, this niceness); its result, or
    ``{"error": ...}`` when it failed, timed out or said nothing."""
    group = f"{key}-{uuid.uuid4().hex[:8]}"
    run_dir = workdir / group
    run_dir.mkdir(parents=True)
    result = run_dir / "result.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", key, "--bootstrap", bootstrap,
            "--redis", redis_url, "--topic", topic, "--records", str(records), "--group", group,
            "--result", str(result), "--workdir", str(run_dir), "--timeout", str(timeout),
            "--server-pids", ",".join(map(str, server_pids))]
    pipeline = PIPELINES[key]
    if pipeline.kind == "ocld":
        assert pipeline.config is not None
        argv += ["--ocld-config", pipeline.config]
        for item in [*(overrides or []), *pipeline.overrides]:
            argv += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    log_path = run_dir / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=run_dir, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout + 60)  # the worker bounds its own loops; this is the backstop
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
    if code is None:
        out = {"error": f"killed after {timeout + 60:.0f} s"}
    elif "error" not in out and (code != 0 or not out):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        out = {"error": f"exit {code}: {tail[0][:300]}"}
    out["log"] = str(log_path)
    return out


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("kafka-python", "confluent-kafka", "river", "quixstreams", "bytewax", "orjson"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    try:
        import confluent_kafka

        parts.append(f"librdkafka {confluent_kafka.libversion()[0]}")
    except ImportError:
        pass
    return ", ".join(parts)


def revision() -> str:
    """The commit measured, ``-dirty`` when the working tree had changes (other engineers' work in progress)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(keys: list[str], rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per pipeline: medians over the rounds it succeeded in; ratios to the same round's
    bare kafka-python reference.

    >>> r1 = {"bare-kafka-python": {"rate": 100.0, "cpu_us": 5.0}, "quix": {"rate": 30.0, "cpu_us": 20.0,
    ...       "server_cpu_us": 1.0, "accuracy": 0.8}}
    >>> r2 = {"bare-kafka-python": {"rate": 50.0, "cpu_us": 6.0}, "quix": {"error": "boom"}}
    >>> rows = summarize(["bare-kafka-python", "quix"], [r1, r2])
    >>> rows[1]["rate"], rows[1]["ratio"], rows[1]["ok"], rows[1]["errors"]
    (30.0, 0.3, 1, ['round 2: boom'])
    >>> rows[0]["rate"], rows[0]["ratio"]
    (75.0, 1.0)
    """
    rows = []
    for key in keys:
        rates, ratios, cpus, servers, accs, errors = [], [], [], [], [], []
        for i, rnd in enumerate(rounds, 1):
            res = rnd.get(key)
            if res is None:
                continue
            if "error" in res:
                errors.append(f"round {i}: {res['error']}")
                continue
            rates.append(res["rate"])
            cpus.append(res["cpu_us"])
            if res.get("server_cpu_us") is not None:
                servers.append(res["server_cpu_us"])
            if res.get("accuracy") is not None:
                accs.append(res["accuracy"])
            ref = rnd.get(REFERENCE, {})
            if "rate" in ref:
                ratios.append(res["rate"] / ref["rate"])
        rows.append({"key": key, "rate": median_or_none(rates), "rates": rates, "ratio": median_or_none(ratios),
                     "cpu_us": median_or_none(cpus), "server_cpu_us": median_or_none(servers),
                     "accuracy": accs, "ok": len(rates), "errors": errors})
    return rows


def _accuracy_cell(accs: list[float]) -> str:
    if not accs:
        return "–"
    lo, hi = min(accs), max(accs)
    return f"{lo:.4f}" if round(lo, 4) == round(hi, 4) else f"{lo:.4f}–{hi:.4f}"


def table(rows: list[dict[str, Any]], n_rounds: int) -> str:
    lines = ["| pipeline | records/s (median) | × bare kafka-python (median) | records/s per round | "
             "CPU µs/record | broker + Redis CPU µs/record | accuracy | rounds ok |",
             "|---|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        p = PIPELINES[r["key"]]
        label = f"**{p.label}**" if p.kind == "ocld" else p.label
        if r["rate"] is None:
            lines.append(f"| {label} | failed | | | | | | 0 of {n_rounds}: {'; '.join(r['errors'])[:400]} |")
            continue
        ok = f"{r['ok']} of {n_rounds}" + (f" ({'; '.join(r['errors'])[:300]})" if r["errors"] else "")
        server = f"{r['server_cpu_us']:.1f}" if r["server_cpu_us"] is not None else ""
        lines.append(f"| {label} | {r['rate']:,.0f} | {r['ratio']:.2f} | "
                     f"{' / '.join(f'{x:,.0f}' for x in r['rates'])} | {r['cpu_us']:.1f} | {server} | "
                     f"{_accuracy_cell(r['accuracy'])} | {ok} |")
    return "\n".join(lines)


def targets(rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Issue 17's targets as ratios within each round (medians over rounds where both sides ran)."""
    def ratio(a: str, bs: list[str]) -> tuple[float | None, str]:
        vals, names = [], []
        for rnd in rounds:
            mine = rnd.get(a, {}).get("rate")
            theirs = [(rnd[b]["rate"], b) for b in bs if "rate" in rnd.get(b, {})]
            if mine and theirs:
                best, who = max(theirs)
                vals.append(mine / best)
                names.append(who)
        return median_or_none(vals), ", ".join(sorted(set(names)))

    out = []
    peers = [k for k, p in PIPELINES.items() if p.kind == "peer"]
    v, who = ratio("ocld-river-lr", peers)
    if v is not None:
        out.append(f"- ocld with river LogisticRegression ≥ 1.0× the fastest peer with that model: **{v:.2f}×** "
                   f"(fastest peer per round: {who})")
    v, _ = ratio("ocld-kalman", ["quix"])
    if v is not None:
        out.append(f"- ocld with config/kalman.yaml ≥ 1.0× Quix Streams + river LogisticRegression: **{v:.2f}×**")
    cpus = [rnd["ocld-kalman"]["cpu_us"] for rnd in rounds if "cpu_us" in rnd.get("ocld-kalman", {})]
    if cpus:
        out.append(f"- CPU per record with KalmanHead ≤ 15 µs: **{statistics.median(cpus):.1f} µs**")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--copies", type=int, default=4, help="data/elec.csv copies in the topic (45,312 records each)")
    ap.add_argument("--pipelines", default=",".join(PIPELINES),
                    help="comma-separated subset of: " + ", ".join(PIPELINES) + f" ({REFERENCE} is always run)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of every ocld config (e.g. kafka.client=confluent); repeatable")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each pipeline may take")
    ap.add_argument("--out", default=str(OUT / "peers.md"))
    # worker mode (one pipeline in this process; used by the harness itself)
    ap.add_argument("--extra", action="append", default=[], metavar="CONFIG[:KEY=VALUE,...]",
                    help="one more ocld row: a config under config/ with changes, e.g. "
                         "kalman.yaml:kafka.client=kafka-python; repeatable")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    for flag in ("--bootstrap", "--ocld-config", "--redis", "--topic", "--group", "--result", "--workdir",
                 "--server-pids"):
        ap.add_argument(flag, default="", help=argparse.SUPPRESS)
    ap.add_argument("--records", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.worker:
        return worker(args)

    keys = [k.strip() for k in args.pipelines.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PIPELINES]
    if unknown:
        ap.error(f"unknown pipeline(s) {unknown}; choose from {list(PIPELINES)}")
    keys = [REFERENCE] + [k for k in keys if k != REFERENCE]
    try:
        keys += [add_extra(spec) for spec in args.extra]
    except ValueError as exc:
        ap.error(str(exc))

    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

    started = dt.datetime.now(dt.timezone.utc)
    t_run = time.monotonic()
    load_before = load_average()
    values = elec_values(args.copies)
    n = len(values)
    rounds: list[dict[str, dict[str, Any]]] = []
    orders: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ocld-peers-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker") as broker, EmbeddedRedis(Path(tmp) / "redis") as rds:
        topic = "peers.elec"
        produced = produce(broker.bootstrap, topic, values)
        del values
        server_pids = [p.pid for p in (broker.proc, rds.proc) if p is not None]
        for r in range(args.rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            orders.append(order)
            results: dict[str, dict[str, Any]] = {}
            for key in order:
                res = spawn(key, bootstrap=broker.bootstrap, redis_url=rds.url, topic=topic, records=n,
                            server_pids=server_pids, workdir=Path(tmp) / "runs", timeout=args.timeout,
                            overrides=args.set)
                results[key] = res
                shown = res.get("error") or (f"{res['rate']:,.0f} records/s, {res['cpu_us']:.1f} us/record"
                                             + (f", accuracy {res['accuracy']:.4f}" if res.get("accuracy") else ""))
                print(f"round {r + 1}, {key}: {shown}", file=sys.stderr, flush=True)
            rounds.append(results)

    rows = summarize(keys, rounds)
    command = "python benchmarks/peers.py" + (f" {' '.join(argv)}" if argv else
                                              (f" {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""))
    clients = sorted({str(res["client"]) for rnd in rounds for res in rnd.values() if res.get("client")})
    head = [
        f"## Against the pipelines a user would build instead ({n:,} elec records, embedded tansu + Redis)",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, `{command}`; {args.rounds} rounds, run took {time.monotonic() - t_run:.0f} s; "
        f"load average before {load_before}, after {load_average()}; {os.cpu_count()} CPUs; produced at "
        f"{produced:,.0f} records/s; order of round 1: {', '.join(orders[0]) if orders else ''} (rotated by one "
        "each round).",
        "",
        f"Code: {revision()}. Versions: {versions()}. ocld's Kafka client: {', '.join(clients) or 'n/a'}"
        + (f" (--set {' '.join(args.set)})" if args.set else "") + ".",
        "",
        table(rows, args.rounds),
        "",
        "Every pipeline reads the same topic from the start with a consumer group of its own, in a fresh process. "
        "Time: from the first record handed to the pipeline's code to the last record learned (decoded, for the "
        "bare loops). CPU µs/record: user + system time of the pipeline's whole process tree over that window "
        "(every thread, and child processes such as a learner process), median over rounds; the broker's and "
        "Redis's over the same window are shown apart. Peers: river StandardScaler | LogisticRegression, "
        "test-then-train per record, the model kept in memory only (Quix Streams' stateful operations fail on "
        "tansu: its changelog topics need `retention.ms`, which tansu's DescribeConfigs does not return), so "
        "nothing of a peer's model survives a crash. ocld runs its shipped configs, snapshotting its state to "
        "Redis and committing offsets as configured. Compare within one run only (ratios): the machine is shared.",
    ]
    goals = targets(rounds)
    if goals:
        head += ["", "Issue 17's targets, as ratios within each round (median over rounds):", "", *goals]
    text = "\n".join(head) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
