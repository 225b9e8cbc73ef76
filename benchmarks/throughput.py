"""Daemon throughput against the cost of only reading the topic, on the embedded broker.

One run, one embedded broker (tansu) and one embedded Redis in a temporary folder, all
traffic on 127.0.0.1:
1. produce ``--records`` elec-shaped records (JSON ``{"x": [6 numbers], "y": label}``,
   data/elec.csv tiled) to one topic;
2. raw: a kafka-python consumer with the daemon's fetch settings that only polls and
   decodes each value with orjson (the ceiling for anything that reads the topic);
3. the daemon end to end (decode, validate, predict, metrics, learn, drift monitor,
   status writes, snapshots every 10,000 samples, offset commits), one fresh pipeline
   name and consumer group per learner, all reading the same topic: KalmanHead
   (config/kalman.yaml), AnalyticRidge (config/analytic.yaml), KalmanLogistic
   (config/logistic.yaml) and RiverLearner around river.linear_model.LogisticRegression;
4. core only: ``LearningCore.process`` on the same records already decoded into arrays,
   in batches of ``max_batch`` (no Kafka, no Redis): the cost of learning itself.

The daemon's rate is reported as a ratio to raw, and to the serial ceiling
``1 / (1/raw + 1/core)`` (what a loop that reads and then learns, with zero overhead,
could reach on one core); the difference to 1 is what the daemon adds on its own. Timings
go from the first batch handed over to the last record handled (group join and start-up
excluded). Figures are only comparable as ratios within one run: the machines are shared.

    python benchmarks/throughput.py                  # 200,000 records, about 3.5 minutes at load 3-5
    python benchmarks/throughput.py --repeats 2      # best of 2 interleaved runs, about 7 minutes
    python benchmarks/throughput.py --records 20000  # quick

BLAS is limited to one thread (threadpoolctl), as ``ocld`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocld.stream.config import Config, load_config, parse_config  # noqa: E402

LEARNERS: dict[str, Callable[[], dict[str, Any]]] = {
    "KalmanHead": lambda: _yaml_learner("kalman.yaml"),
    "AnalyticRidge": lambda: _yaml_learner("analytic.yaml"),
    "KalmanHead (learner process)": lambda: {**_yaml_learner("kalman.yaml"), "learner_process": True},
    "KalmanLogistic": lambda: _yaml_learner("logistic.yaml"),
    "RiverLearner (LogisticRegression)": lambda: {
        "learner": {"name": "RiverLearner", "params": {"model": "river.linear_model.LogisticRegression"}},
        "allow_pickle": True},
}


def _yaml_learner(name: str) -> dict[str, Any]:
    cfg = load_config(ROOT / "config" / name)
    return {"learner": cfg.learner.model_dump(), "allow_pickle": cfg.allow_pickle}


def elec_records(n: int) -> tuple[np.ndarray, list[int], list[bytes]]:
    """``n`` rows of data/elec.csv, tiled, and their JSON records."""
    from ocld.stream.files import read_table

    table = read_table(ROOT / "data" / "elec.csv")
    reps = -(-n // table.X.shape[0])
    X = np.tile(table.X, (reps, 1))[:n]
    y = (list(table.y) * reps)[:n]
    values = [orjson.dumps({"x": X[i].tolist(), "y": y[i]}) for i in range(n)]
    return X, y, values


def produce(bootstrap: str, topic: str, values: list[bytes], timeout_s: float) -> float:
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: 1})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             client_id="bench-producer")
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    for i, v in enumerate(values):
        producer.send(topic, value=v, partition=0)
        if i % 10_000 == 0 and time.monotonic() > deadline:
            raise TimeoutError(f"producing took over {timeout_s:.0f} s")
    producer.flush(timeout=timeout_s)
    producer.close()
    return len(values) / (time.perf_counter() - t0)


def kafka_settings(cfg: Config) -> dict[str, Any]:
    """The consumer settings KafkaSource uses (so raw and daemon fetch alike)."""
    from kafka import KafkaConsumer

    k = cfg.kafka
    out = {"max_poll_records": k.max_batch, "fetch_max_wait_ms": max(k.max_wait_ms, 1),
           "fetch_max_bytes": k.fetch_max_bytes, "max_partition_fetch_bytes": min(k.fetch_max_bytes, 10 * 1024 * 1024)}
    if "receive_message_max_bytes" in KafkaConsumer.DEFAULT_CONFIG:
        out["receive_message_max_bytes"] = k.fetch_max_bytes + 1024 * 1024
    return out


def raw_rate(bootstrap: str, topic: str, n: int, settings: dict[str, Any], poll_ms: int,
             timeout_s: float) -> tuple[float, float]:
    """(records/s, CPU microseconds per record) of a consumer that only polls and decodes with orjson."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             client_id="bench-raw", **settings)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        loads = orjson.loads
        count = 0
        t0: float | None = None
        c0 = 0.0
        deadline = time.monotonic() + timeout_s
        while count < n and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=poll_ms, max_records=settings["max_poll_records"])
            if not batch:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), time.thread_time()
            for recs in batch.values():
                for r in recs:
                    loads(r.value)
                count += len(recs)
        if count < n or t0 is None:
            raise TimeoutError(f"raw consumer read {count} of {n} records in {timeout_s:.0f} s")
        return count / (time.perf_counter() - t0), 1e6 * (time.thread_time() - c0) / count
    finally:
        consumer.close()


def pipeline_config(bootstrap: str, redis_url: str, topic: str, data_dir: str, learner: dict[str, Any],
                    kafka: dict[str, Any] | None = None, **sections: Any) -> Config:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    base: dict[str, Any] = {
        "name": name,
        "kafka": {"bootstrap": bootstrap, "topic": topic, **(kafka or {})},
        "redis": {"url": redis_url},
        "messages": {"n_features": 6},
        "snapshot": {"every_samples": 10_000, "every_seconds": 30},
        "data_dir": data_dir,
        **learner,
        **sections,
    }
    return parse_config(base)


class Timed:
    """Wraps a bound method on an instance and accumulates its wall time."""

    def __init__(self, obj: Any, name: str) -> None:
        self.seconds = 0.0
        self.calls = 0
        fn = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        setattr(obj, name, wrapper)


def daemon_rate(cfg: Config, n: int, timeout_s: float) -> dict[str, Any]:
    """Run a Daemon in-process until it has handled ``n`` records; rate and time split."""
    from ocld.stream.daemon import Daemon

    daemon = Daemon(cfg)
    decode = Timed(daemon.intake.codec, "decode")
    # learner_process: the time spent waiting for the child's results
    process = Timed(daemon.core, "collect" if cfg.learner_process else "process")
    checkpoint = Timed(daemon, "_checkpoint")
    housekeeping = Timed(daemon, "_housekeeping")
    timers = {"decode": decode, "process": process, "housekeeping": housekeeping, "checkpoint": checkpoint}
    handle_fn, finish_fn = daemon._handle, daemon._finish_next
    marks: dict[str, float] = {}
    at_start: dict[str, tuple[float, int]] = {}
    at_end: dict[str, tuple[float, int]] = {}

    def handle(polled: Any) -> None:
        if "t0" not in marks:
            marks["t0"], marks["c0"] = time.perf_counter(), time.thread_time()
            at_start.update({k: (t.seconds, t.calls) for k, t in timers.items()})
        handle_fn(polled)

    def finish(*args: Any) -> None:  # a poll counts once learned (with learner_process, a poll after it is read)
        finish_fn(*args)
        if daemon.records_seen >= n and "t1" not in marks:
            marks["t1"], marks["c1"] = time.perf_counter(), time.thread_time()
            at_end.update({k: (t.seconds, t.calls) for k, t in timers.items()})
            daemon.stop()

    daemon._handle = handle  # type: ignore[method-assign]
    daemon._finish_next = finish  # type: ignore[method-assign]
    summary = daemon.run(max_seconds=timeout_s, install_signals=False)
    if "t1" not in marks:
        raise TimeoutError(f"daemon handled {daemon.records_seen} of {n} records in {timeout_s:.0f} s")
    elapsed = marks["t1"] - marks["t0"]
    # only what happened between the first and the last batch (not start-up, not the final snapshot)
    spent = {k: at_end[k][0] - at_start[k][0] for k in timers}
    calls = {k: at_end[k][1] - at_start[k][1] for k in timers}
    cpu_us = 1e6 * (marks["c1"] - marks["c0"]) / daemon.records_seen
    return {"rate": daemon.records_seen / elapsed, "elapsed": elapsed, "cpu_us": cpu_us, **spent,
            "checkpoints": calls["checkpoint"],
            "batches": calls["process"], "accuracy": summary["accuracy"]}


def core_rate(cfg: Config, X: np.ndarray, y: list[Any], batch: int) -> tuple[float, float]:
    """LearningCore.process alone on pre-decoded batches of ``batch`` records."""
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore

    core = LearningCore.from_config(cfg)
    n = X.shape[0]
    t0, c0 = time.perf_counter(), time.thread_time()
    for a in range(0, n, batch):
        b = min(n, a + batch)
        m = b - a
        core.process(Decoded(np.arange(m), X[a:b], y[a:b], [None] * m, [None] * m, [None] * m))
    return n / (time.perf_counter() - t0), 1e6 * (time.thread_time() - c0) / n


def linalg_rate(cfg: Config, X: np.ndarray, y: list[Any], poll: int, grid: int) -> dict[str, Any] | None:
    """Samples/s of a KalmanHead's linear algebra alone, replayed on its real shapes (H sub-heads, D features,
    C classes, chunks of at most ``max_chunk`` rows of each call: a ``poll`` with ``joint_segments``, else an
    adapt_grid segment of ``grid`` rows; the block-boundary cuts, which only add chunks, are ignored), with
    no Python arithmetic around it.

    ``products``: only the two D x D products per sub-head (``Phi A`` and the in-place update
    ``A <- A - Wt^T Wt``). ``linalg``: every BLAS/LAPACK call of a chunk (those two, ``Phi Phi^T``,
    ``Phi A Phi^T``, the batched Cholesky factor, the two triangular solves per sub-head, ``Phi M`` and
    ``Wt^T z``). An exact block update does all of them, so no daemon with this head can learn faster than
    ``linalg`` on one core, even with reading, features, prediction, metrics and Python free. None when the
    learner is not a KalmanHead."""
    from scipy.linalg.blas import dgemm, dtrsm

    from ocld.learners.kalman import KalmanHead

    learner = cfg.build_learner()
    head = getattr(learner, "head", learner)
    if not isinstance(head, KalmanHead):
        return None
    n = X.shape[0]
    batch = poll if head.joint_segments else grid
    learner.learn(X[:batch], np.asarray(y[:batch], dtype=object))  # fixes D (the features' output size) and C
    assert head._A is not None and head._M is not None
    H, D, C = head.n_heads, head._A.shape[1], max(2, head._M.shape[2])
    A = head._A.copy()
    M = np.zeros((H, D, C))
    rng = np.random.default_rng(0)
    chunk = head.max_chunk
    sizes: list[int] = []
    for start in range(0, n, batch):
        end = min(n, start + batch)
        sizes += [min(chunk, end - a) for a in range(start, end, chunk)]
    shapes = sorted(set(sizes))
    Phis = {m: rng.standard_normal((m, D)) / np.sqrt(D) for m in shapes}
    Ks = {m: np.broadcast_to(Phis[m] @ Phis[m].T + np.eye(m), (H, m, m)).copy() for m in shapes}  # SPD, as K is
    APts = {m: np.empty((H, m, D)) for m in shapes}
    Wfix = {m: 1e-3 * rng.standard_normal((H, m, D)) for m in shapes}

    def products() -> float:
        t0 = time.perf_counter()
        for m in sizes:
            Phi, APt, Wt = Phis[m], APts[m], Wfix[m]
            for h in range(H):
                np.matmul(Phi, A[h], out=APt[h])
                dgemm(-1e-6, Wt[h].T, Wt[h].T, beta=1.0, c=A[h].T, trans_b=1, overwrite_c=1)
        return n / (time.perf_counter() - t0)

    def everything() -> float:
        t0 = time.perf_counter()
        for m in sizes:
            Phi, APt = Phis[m], APts[m]
            Phi @ Phi.T
            for h in range(H):
                np.matmul(Phi, A[h], out=APt[h])
            APt @ Phi.T
            L = np.linalg.cholesky(Ks[m])
            r = Phi @ M  # [H, m, C]
            for h in range(H):
                U = L[h].T
                for rhs in (APt[h], r[h]):
                    dtrsm(1.0, U, rhs.T, side=1, lower=0, overwrite_b=1)
            APt.transpose(0, 2, 1) @ r
            for h in range(H):
                dgemm(-1e-6, APt[h].T, APt[h].T, beta=1.0, c=A[h].T, trans_b=1, overwrite_c=1)
        return n / (time.perf_counter() - t0)

    return {"products": products(), "linalg": everything(), "H": H, "D": D, "chunk": chunk, "call": batch}


def monitor_rate(cfg: Config, n: int) -> float:
    """Samples/s of the config's drift monitor alone (river detectors, ``drift.also`` included), fed 0/1
    errors at rate 0.1 (seeded) in segments of ``drift.adapt_grid``, as the core feeds it."""
    from ocld.core.runtime import LearningCore

    monitor = LearningCore.from_config(cfg).monitor  # the error monitor the daemon builds from the config
    assert monitor is not None
    errors = (np.random.default_rng(0).random(n) < 0.1).astype(np.float64)
    g = cfg.drift.adapt_grid
    t0 = time.perf_counter()
    for a in range(0, n, g):
        monitor.update(errors[a:a + g])
    return n / (time.perf_counter() - t0)


def _crc32c_c() -> str:
    """kafka-python checks record CRCs in pure Python unless the ``crc32c`` package is installed."""
    from kafka.record import util

    return "yes" if util.crc32c_c is not None else "no (pure-Python CRC checks)"


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--core-records", type=int, default=None,
                    help="records for the core-only measurement (default: min(records, 50,000))")
    ap.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated subset of: " + ", ".join(LEARNERS))
    ap.add_argument("--max-batch", type=int, default=None, help="kafka.max_batch (default: the config default)")
    ap.add_argument("--max-wait-ms", type=int, default=None)
    ap.add_argument("--adapt-grid", type=int, default=None, help="drift.adapt_grid (default: the config default)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the best of each is reported")
    ap.add_argument("--timeout", type=float, default=240.0, help="upper bound in seconds for each phase")
    args = ap.parse_args(argv)

    from ocld.core.runtime import limit_threads

    limit_threads()  # numpy's and scipy's OpenBLAS, and torch
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

    n = args.records
    kafka_over = {k: v for k, v in (("max_batch", args.max_batch), ("max_wait_ms", args.max_wait_ms)) if v is not None}
    chosen = [s.strip() for s in args.learners.split(",") if s.strip()]
    unknown = [c for c in chosen if c not in LEARNERS]
    if unknown:
        ap.error(f"unknown learner(s) {unknown}; choose from {list(LEARNERS)}")

    t_run = time.monotonic()
    load_before = load_average()
    X, y, values = elec_records(n)
    sections = {"drift": {"adapt_grid": args.adapt_grid}} if args.adapt_grid else {}
    raws: list[tuple[float, float]] = []
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in chosen}
    cores: dict[str, list[tuple[float, float]]] = {label: [] for label in chosen}
    floors: dict[str, list[dict[str, Any]]] = {label: [] for label in chosen}
    n_core = args.core_records or min(n, 50_000)
    with tempfile.TemporaryDirectory(prefix="ocld-bench-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker") as broker, EmbeddedRedis(Path(tmp) / "redis", appendonly=True) as rds:
        topic = "bench.elec"
        produce_rate = produce(broker.bootstrap, topic, values, args.timeout)

        def config(label: str) -> Config:
            return pipeline_config(broker.bootstrap, rds.url, topic, tmp, LEARNERS[label](), kafka_over, **sections)

        default_cfg = config(chosen[0])
        settings = kafka_settings(default_cfg)
        # interleaved repeats: raw before every daemon run, best of each kept (noise only slows things down)
        for _ in range(args.repeats):
            for label in chosen:
                raws.append(raw_rate(broker.bootstrap, topic, n, settings, default_cfg.kafka.max_wait_ms, args.timeout))
                runs[label].append(daemon_rate(config(label), n, args.timeout))
                cores[label].append(core_rate(config(label), X[:n_core], y[:n_core], default_cfg.kafka.max_batch))
                floor = None if config(label).learner_process else linalg_rate(
                    config(label), X[:n_core], y[:n_core], default_cfg.kafka.max_batch, default_cfg.drift.adapt_grid)
                if floor is not None:
                    floor["monitor"] = monitor_rate(config(label), n_core)
                    floors[label].append(floor)
        raws.append(raw_rate(broker.bootstrap, topic, n, settings, default_cfg.kafka.max_wait_ms, args.timeout))

    k = default_cfg.kafka
    print(f"\n## Daemon throughput ({n:,} elec records, embedded tansu + Redis)\n")
    print(f"load average before: {load_before}; after: {load_average()}; run took {time.monotonic() - t_run:.0f} s; "
          f"max_batch={k.max_batch}, max_wait_ms={k.max_wait_ms}, fetch_max_bytes={k.fetch_max_bytes:,}, "
          f"adapt_grid={default_cfg.drift.adapt_grid}, C crc32c: {_crc32c_c()}; "
          f"produced at {produce_rate:,.0f} records/s\n")
    print(f"best of {args.repeats} interleaved repeats (raw: best of {len(raws)}: "
          f"{', '.join(f'{r:,.0f}' for r, _ in raws)} records/s)\n")
    raw_best = max(r for r, _ in raws)
    raw_cpu = min(c for _, c in raws)
    config_flags = {label: bool(LEARNERS[label]().get("learner_process")) for label in chosen}
    rows = [(label, max(runs[label], key=lambda d: d["rate"]), max(r for r, _ in cores[label]),
             min(d["cpu_us"] for d in runs[label]), min(c for _, c in cores[label])) for label in chosen]
    print("| pipeline | records/s | x raw | core only, records/s | serial ceiling | x ceiling | "
          "CPU us/record | CPU: daemon - core - raw | decode | learn (process) | snapshots + status | poll + rest "
          "| batches | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| raw: poll + orjson.loads | {raw_best:,.0f} | 1.00 | | | | {raw_cpu:.1f} | | | | | | | |")
    for label, d, core, cpu, core_cpu in rows:
        child = config_flags[label]
        # reading and learning overlap in two processes: the ceiling is the slower of the two
        ceiling = min(raw_best, core) if child else 1.0 / (1.0 / raw_best + 1.0 / core)
        el = d["elapsed"]
        rest = el - d["decode"] - d["process"] - d["housekeeping"]
        share = lambda s, el=el: f"{100 * s / el:.0f}%"  # noqa: E731
        cpu_cells = (f"{cpu:.1f} (daemon's thread only) | | " if child else
                     f"{cpu:.1f} (core {core_cpu:.1f}) | {cpu - core_cpu - raw_cpu:+.1f} | ")
        print(f"| daemon, {label} | {d['rate']:,.0f} | {d['rate'] / raw_best:.2f} | {core:,.0f} | "
              f"{ceiling:,.0f}{' (overlapped)' if child else ''} | {d['rate'] / ceiling:.2f} | {cpu_cells}"
              f"{share(d['decode'])} | {share(d['process'])} | "
              f"{share(d['housekeeping'])} ({d['checkpoints']} snapshots) | {share(rest)} | {d['batches']} | "
              f"{d['accuracy']:.4f} |")
    print("\nShares are of the daemon's wall time between its first and last batch. 'snapshots + status' is the "
          "housekeeping step: snapshot writes with their offset commits, and status/metrics writes. 'poll + rest' "
          "is polling, dead-letter bookkeeping and the loop itself. 'core only' runs LearningCore.process on "
          "pre-decoded arrays; 'serial ceiling' = 1 / (1/raw + 1/core). CPU columns: the consuming thread's CPU "
          "time per record (time.thread_time, best run), steadier than wall time on a shared machine; "
          "'daemon - core - raw' is what the daemon adds beyond reading and learning. 'learner process' rows run "
          "with learner_process: true (stream/worker.py): the daemon reads and decodes the next poll while a child "
          "process learns the last, so their ceiling is min(raw, core) ('overlapped'), their 'learn' share is "
          "the time the daemon waited for the child, and their CPU column counts the daemon's thread only.")
    bounds = [(label, max(floors[label], key=lambda d: d["linalg"])) for label in chosen if floors[label]]
    if bounds:
        print("\n### Upper bound for a KalmanHead daemon on this machine\n")
        print("| learner | D x D products alone, samples/s | x raw | all its linear algebra, samples/s | x raw "
              "| drift monitor alone, samples/s | linear algebra + drift monitor | x raw "
              "| learner core, samples/s | x raw |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, f in bounds:
            core = max(r for r, _ in cores[label])
            both = 1.0 / (1.0 / f["linalg"] + 1.0 / f["monitor"])
            print(f"| {label} ({f['H']} sub-heads, D = {f['D']}, chunks of <= {f['chunk']} rows of "
                  f"{f['call']}-record calls) | {f['products']:,.0f} | "
                  f"{f['products'] / raw_best:.2f} | {f['linalg']:,.0f} | {f['linalg'] / raw_best:.2f} | "
                  f"{f['monitor']:,.0f} | {both:,.0f} | {both / raw_best:.2f} | {core:,.0f} | {core / raw_best:.2f} |")
        print("\nThe linear algebra of the head's exact block update is replayed alone on its real shapes (OpenBLAS, "
              "one thread): the two D x D products per sub-head, then every BLAS/LAPACK call of a chunk (the "
              "products, Phi Phi^T, Phi A Phi^T, the Cholesky factor, the triangular solves, Phi M, Wt^T z). "
              "With reading on another core and every other step free, a daemon with this head could not learn "
              "faster than 'all its linear algebra'. 'drift monitor alone' feeds the config's river detectors "
              "the 0/1 errors the core would (rate 0.1); 'linear algebra + drift monitor' = 1 / (1/linalg + "
              "1/monitor), both of which the learner's core must do. 'learner core' is LearningCore.process "
              "above (features, prediction, update, metrics, drift).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
