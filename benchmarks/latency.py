"""Time from a record's production to the moment the daemon has learned it, at a steady rate.

One embedded broker (tansu) and one embedded Redis in a temporary folder, all traffic on
127.0.0.1. For each micro-batch setting, a fresh topic and pipeline: the daemon runs
in-process (default snapshot and status settings, the learner of config/kalman.yaml unless
``--learner``) and, once it owns its partition, a producer thread sends elec-shaped JSON
records at a steady ``--rate`` (records due are sent in small bursts, ``linger_ms=1``), each
carrying its production time in ``ts``. The producer is a separate process (no GIL contention with the daemon).
``LearningCore.process`` is wrapped on the daemon
instance: when it returns, every record of the batch has been learned, and
``now - ts`` is its latency. The first second is dropped as warm-up.

Besides p50/p95/p99/max latency, each row gives the mean batch size, the rate at which
records were learned, and the daemon thread's CPU time per record and share of one core:
the cost of small batches, and how much headroom a setting leaves (capacity = 1 / CPU per
record).

    python benchmarks/latency.py                       # default settings, then max_wait_ms 5, 20, 100, 500
    python benchmarks/latency.py --seconds 4 --waits 20,100

No timing is asserted anywhere; figures depend on the machine's load (printed).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import LEARNERS, load_average, pipeline_config  # noqa: E402
from ocld.stream.config import Config, KafkaConfig  # noqa: E402


def paced_producer(bootstrap: str, topic: str, rows: np.ndarray, labels: list[Any], rate: float,
                   ready: Any, done: Any) -> None:
    """Send ``len(labels)`` records at ``rate``/s once ``ready`` is set; each carries ``ts`` = send time.

    Runs in its own process, so that it never competes with the daemon for the GIL."""
    from kafka import KafkaProducer

    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, client_id="bench-latency")
        try:
            if not ready.wait(60):
                raise TimeoutError("the daemon did not get its partition within 60 s")
            n = len(labels)
            t0 = time.monotonic()
            i = 0
            deadline = t0 + n / rate + 60
            while i < n and time.monotonic() < deadline:
                due = min(n, int((time.monotonic() - t0) * rate) + 1)
                while i < due:
                    producer.send(topic, orjson.dumps({"x": rows[i].tolist(), "y": labels[i], "ts": time.time()}),
                                  partition=0)
                    i += 1
                time.sleep(0.0005)
            producer.flush(30)
            if i < n:
                raise TimeoutError(f"sent only {i} of {n} records in time")
        finally:
            producer.close()
    finally:
        done.set()


def measure_floor(bootstrap: str, topic: str, rows: np.ndarray, labels: list[Any], rate: float, warmup_s: float,
                  timeout_s: float, max_wait_ms: int) -> dict[str, Any]:
    """The same producer and broker read by a bare confluent-kafka loop that only decodes (no ocld,
    nothing learned): what the producer, the broker and the machine alone add to a record's latency.
    It takes the first record to arrive within ``max_wait_ms`` and whatever came with it (one
    partition, assigned: no rebalance can fall between its two calls), with ocld's fetch settings."""
    from confluent_kafka import Consumer, TopicPartition

    from ocld.stream.broker import ensure_topics

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: 1})
    n = len(labels)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": max(max_wait_ms, 1)})
    consumer.assign([TopicPartition(topic, 0, 0)])
    mp = multiprocessing.get_context("spawn")
    ready, done = mp.Event(), mp.Event()
    producer = mp.Process(target=paced_producer, daemon=True, args=(bootstrap, topic, rows, labels, rate, ready, done))
    producer.start()
    consumer.consume(1, timeout=0.5)  # the first fetch goes out
    t_start = time.time()
    ready.set()
    latencies: list[float] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < n and time.monotonic() < deadline:
            first = consumer.poll(max_wait_ms / 1000.0)
            if first is None:
                continue
            msgs = [first, *consumer.consume(499, timeout=0)]
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                seen += 1
                ts = orjson.loads(m.value())["ts"]
                if ts >= t_start + warmup_s:
                    latencies.append(now - ts)
    finally:
        consumer.close()
        producer.join(10)
    lat = np.asarray(latencies) * 1000.0
    return {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}


def measure(cfg: Config, rows: np.ndarray, labels: list[Any], rate: float, warmup_s: float,
            timeout_s: float) -> dict[str, Any]:
    from ocld.stream.broker import ensure_topics
    from ocld.stream.daemon import Daemon

    n = len(labels)
    ensure_topics(cfg.kafka, {cfg.kafka.topic: 1})
    daemon = Daemon(cfg)
    latencies: list[np.ndarray] = []
    batch_sizes: list[int] = []
    marks: dict[str, tuple[float, float, int]] = {}  # (wall, daemon thread CPU, steady records so far)
    steady_count = [0]
    mp = multiprocessing.get_context("spawn")
    ready, done = mp.Event(), mp.Event()
    t_start: list[float] = []
    remote = cfg.learner_process

    def learned(dec: Any) -> None:
        now = time.time()
        ts = np.asarray([t for t in dec.ts if t is not None], dtype=np.float64)
        if t_start and ts.size:
            steady = ts >= t_start[0] + warmup_s
            if steady.any():
                latencies.append(now - ts[steady])
                batch_sizes.append(len(dec.ts))
                steady_count[0] += int(steady.sum())
                point = (time.monotonic(), time.thread_time(), steady_count[0])
                marks.setdefault("first", point)
                marks["last"] = point

    if remote:  # learner_process: a poll is learned when the daemon gets its result back (and finishes it)
        finish_fn = daemon._finish_next

        def finish() -> None:
            polled = daemon._inflight[0][0]
            finish_fn()
            learned(daemon.intake.decode(polled))

        daemon._finish_next = finish  # type: ignore[method-assign]
    else:
        process_fn = daemon.core.process

        def process(dec: Any) -> Any:
            res = process_fn(dec)
            learned(dec)
            return res

        daemon.core.process = process  # type: ignore[method-assign]

    def supervise() -> None:
        """Start the producer once the daemon owns its partition; stop the daemon when all is learned."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (daemon.source is not None and daemon.source.assignment()):
            time.sleep(0.05)
        time.sleep(0.5)  # let the first fetch go out
        t_start.append(time.time())
        ready.set()
        while time.monotonic() < deadline and not (done.is_set() and daemon.records_seen >= n):
            time.sleep(0.05)
        daemon.stop()

    producer = mp.Process(target=paced_producer, daemon=True,
                          args=(cfg.kafka.bootstrap, cfg.kafka.topic, rows, labels, rate, ready, done))
    watcher = threading.Thread(target=supervise, daemon=True)
    producer.start()
    watcher.start()
    daemon.run(max_seconds=timeout_s + 5, install_signals=False)
    producer.join(10)
    watcher.join(5)
    if producer.exitcode != 0:
        raise RuntimeError(f"the producer process failed (exit code {producer.exitcode})")
    if not latencies:
        raise RuntimeError("no steady-state latencies recorded")
    lat = np.concatenate(latencies) * 1000.0
    (w0, c0, k0), (w1, c1, k1) = marks["first"], marks["last"]
    counted = k1 - k0
    cpu_share = (c1 - c0) / (w1 - w0) if w1 > w0 else float("nan")
    return {"n": lat.size, "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "max": float(lat.max()), "batch": float(np.mean(batch_sizes)),
            "cpu_us": 1e6 * (c1 - c0) / counted if counted else float("nan"), "cpu_share": cpu_share,
            "learned_rate": counted / (w1 - w0) if w1 > w0 else float("nan"),
            "learned": daemon.core.labelled_seen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="records per second")
    ap.add_argument("--seconds", type=float, default=6.0, help="production time per setting")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds dropped at the start")
    ap.add_argument("--waits", default="5,20,100,500", help="max_wait_ms values for the trade-off table")
    ap.add_argument("--learner", default="KalmanHead", help="one of: " + ", ".join(LEARNERS))
    ap.add_argument("--timeout", type=float, default=90.0, help="upper bound in seconds for each setting")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the two bare confluent-kafka rows (the producer's, broker's and machine's own latency)")
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default=None,
                    help="kafka.client for every row (default: the config's default)")
    ap.add_argument("--learner-process", action="store_true",
                    help="learner_process: true (a record counts as learned when the daemon has its poll's result)")
    args = ap.parse_args(argv)
    if args.learner not in LEARNERS:
        ap.error(f"unknown learner {args.learner!r}; choose from {list(LEARNERS)}")

    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS, and torch
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis
    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    n = int(args.rate * args.seconds)
    reps = -(-n // table.X.shape[0])
    rows = np.tile(table.X, (reps, 1))[:n]
    labels = (list(table.y) * reps)[:n]
    defaults = KafkaConfig()
    settings: list[tuple[str, dict[str, Any]]] = [("defaults", {})]
    settings += [(f"max_wait_ms={w}", {"max_wait_ms": int(w)}) for w in args.waits.split(",") if w.strip()]
    if args.client:
        settings = [(label, {**kafka, "client": args.client}) for label, kafka in settings]

    load_before = load_average()
    t_run = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="ocld-latency-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker") as broker, EmbeddedRedis(Path(tmp) / "redis") as rds:
        for label, kafka in settings:
            topic = f"lat.{uuid.uuid4().hex[:8]}"
            spec = {**LEARNERS[args.learner](), "learner_process": args.learner_process}
            cfg = pipeline_config(broker.bootstrap, rds.url, topic, tmp, spec, kafka)
            results.append((label, cfg, measure(cfg, rows, labels, args.rate, args.warmup, args.timeout)))
        floors = [] if args.no_floor else [
            measure_floor(broker.bootstrap, f"lat.{uuid.uuid4().hex[:8]}", rows, labels, args.rate, args.warmup,
                          args.timeout, defaults.max_wait_ms) for _ in range(2)]

    mode = ", learner_process: true (CPU: the daemon's thread only)" if args.learner_process else ""
    print(f"\n## Latency: production -> learned, {args.rate:,.0f} records/s, {args.learner}{mode}\n")
    print(f"load average before: {load_before}; after: {load_average()}; run took {time.monotonic() - t_run:.0f} s; "
          f"{args.seconds:g} s per setting, first {args.warmup:g} s dropped; defaults: max_batch={defaults.max_batch}, "
          f"max_wait_ms={defaults.max_wait_ms}, client={results[0][1].kafka.client}; "
          f"snapshots every {results[0][1].snapshot.every_samples:,} samples\n")
    print("| setting | p50 ms | p95 ms | p99 ms | max ms | mean batch | learned rec/s | CPU us/record | "
          "CPU share | capacity rec/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, cfg, r in results:
        k = cfg.kafka
        name = f"{label} (max_batch {k.max_batch}, max_wait_ms {k.max_wait_ms})" if label == "defaults" else label
        capacity = 1e6 / r["cpu_us"] if r["cpu_us"] > 0 else float("nan")
        print(f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['batch']:.1f} | "
              f"{r['learned_rate']:,.0f} | {r['cpu_us']:.0f} | {100 * r['cpu_share']:.0f}% | {capacity:,.0f} |")
    for i, r in enumerate(floors):
        print(f"| floor {i + 1}: a bare confluent-kafka loop, decode only, no ocld (max_wait_ms "
              f"{defaults.max_wait_ms}) | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
              "- | - | - | - | - |")
    if args.learner_process:
        print("\nWith --learner-process a record counts as learned when the daemon has its poll's result back; CPU, "
              "CPU share and capacity are the daemon thread's alone (the learning is in the child process).")
    print("\nCPU is the daemon thread's own (poll, decode, learn, snapshots), from time.thread_time; 'CPU share' is "
          "the part of one core it got while learning (below 100 % and learned < offered rate: the machine, not "
          "the daemon, was the limit); capacity = 1 / CPU per record, the rate one free core would sustain. "
          "Latency only means something while learned rec/s keeps up with the offered rate. The floor rows: the "
          "same producer and broker read by a loop that only decodes, twice after the ocld rows; what is left of "
          "their latency is the producer's, the broker's and the machine's.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
