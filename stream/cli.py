"""The ``ocld`` command line: run, demo, replay, record, evaluate, status, query, rollback, report.

Every command that needs a broker or Redis takes ``--bootstrap`` / ``--redis`` (or the
config's values, or ``KAFKA_BOOTSTRAP`` / ``REDIS_URL``); ``embedded`` starts local ones.
Errors a user can cause (config, data file, unreachable server) print one clear message
and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from ocld.stream.config import Config, ConfigError, KafkaConfig, load_config, parse_config, redact_url

log = logging.getLogger("ocld")
ROOT = Path(__file__).resolve().parent.parent


def _setup_logging(level: str, json_logs: bool = False) -> None:
    if json_logs:
        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return orjson.dumps({"t": record.created, "level": record.levelname, "logger": record.name,
                                     "msg": record.getMessage()}).decode()
        handler = logging.StreamHandler()
        handler.setFormatter(_Json())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True)
    logging.getLogger("kafka").setLevel(logging.ERROR)


def _config(path: str | None, args: argparse.Namespace) -> Config:
    cfg = load_config(path) if path else parse_config({})
    return cfg.with_services(getattr(args, "bootstrap", None), getattr(args, "redis", None))


def _redis_url(args: argparse.Namespace) -> str:
    url = args.redis or os.environ.get("REDIS_URL")
    if not url:
        raise ConfigError("give --redis URL (or set REDIS_URL) to say which Redis holds the state")
    return url


# -- commands ------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from ocld.stream.daemon import Daemon
    from ocld.stream.embedded import services

    cfg = _config(args.config, args)
    if args.replica is not None:
        from ocld.stream.config import with_replica

        cfg = with_replica(cfg, args.replica, f"--replica {args.replica!r}")
    if cfg.log_format == "json" and not args.json_logs:
        _setup_logging(args.log_level, json_logs=True)
    with services(cfg.kafka.bootstrap, cfg.redis.url.get_secret_value(), Path(cfg.data_dir) / cfg.name) as (bs, url):
        if cfg.kafka.bootstrap == "embedded" or cfg.redis.url.get_secret_value() == "embedded":
            log.info("embedded servers: broker %s, Redis %s", bs, redact_url(url))
        summary = Daemon(cfg.with_services(bs, url)).run(until_idle_s=args.until_idle, max_seconds=args.max_seconds)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ocld.stream.replay import replay

    kafka = KafkaConfig(bootstrap=args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP") or "embedded")
    if kafka.bootstrap == "embedded":
        raise ConfigError("replay needs a running broker: give --bootstrap HOST:PORT (or set KAFKA_BOOTSTRAP)")
    n = replay(args.file, args.topic, kafka, rate=args.rate, speed=args.speed, limit=args.limit,
               label_column=args.label_column, partitions=args.partitions, progress=not args.quiet)
    print(f"replayed {n} records to {args.topic}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from ocld.stream.replay import record

    kafka = KafkaConfig(bootstrap=args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP") or "embedded")
    if kafka.bootstrap == "embedded":
        raise ConfigError("record needs a running broker: give --bootstrap HOST:PORT (or set KAFKA_BOOTSTRAP)")
    n = record(args.topic, args.out, kafka, limit=args.limit, progress=not args.quiet)
    print(f"recorded {n} records from {args.topic} to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ocld.stream.offline import evaluate

    cfg = _config(args.config, args)
    if args.eval_every is not None and not args.test:
        raise ConfigError("--eval-every needs --test FILE (the held-out samples to evaluate on)")
    if args.no_adapt:
        cfg = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"adapt": False})})
    result = evaluate(cfg, args.data, args.label_column, batch_size=args.batch_size, limit=args.limit,
                      test=args.test, eval_every=args.eval_every)
    rows: list[tuple[str, Any]] = [
        ("data", result["data"]), ("learner", result["learner"]), ("label column", result.get("label_column") or "y"),
        ("rows", f"{result['rows']:,}"), ("samples learned", f"{result['samples']:,}"),
        ("rows not learned", f"{result['not_learned']:,}"),
    ]
    for e in result["not_learned_by_reason"]:
        first = f" (first on line {e['first_line']})" if e["first_line"] is not None else ""
        rows.append((f"  {e['reason']}", f"{e['rows']:,}{first}"))
    rows += [
        ("accuracy", f"{result['accuracy']:.4f}"), ("no-change baseline", f"{result['nochange_accuracy']:.4f}"),
        ("balanced accuracy", f"{result['balanced_accuracy']:.4f}"), ("log-loss", f"{result['log_loss']:.4f}"),
        ("samples/s", f"{result['samples_per_s']:,.0f}"),
        ("drift events (error / input)", f"{result['drift_count_error']} / {result['drift_count_input']}"
                                         f"{'' if cfg.drift.adapt else ' (adaptation off)'}"),
    ]
    if "final_accuracy" in result:
        rows.append(("test: final accuracy", f"{result['final_accuracy']:.4f}"))
    for key, label in (("aaa", "test: average anytime accuracy"), ("forgetting", "test: forgetting"),
                       ("min_acc", "test: min-ACC"), ("wc_acc", "test: WC-ACC")):
        if result.get(key) is not None:
            rows.append((label, f"{result[key]:.4f}"))
    if result.get("test_rows_not_scored"):
        rows.append(("test: rows not scored", f"{result['test_rows_not_scored']:,}"))
    _print_table("ocld evaluate", rows)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"wrote {args.json}")
    if not result["samples"]:
        from ocld.stream.files import DataFileError

        why = "; ".join(f"{e['reason']}: {e['rows']:,} rows (first on line {e['first_line']}); {e['fix']}"
                        for e in result["not_learned_by_reason"][:2]) or "the file has no data rows"
        raise DataFileError(f"no row of {result['data']} was learned: {why}")
    if args.plot:
        from ocld.stream.report import plot_run

        print(f"wrote {plot_run(result, args.plot)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ocld.stream.client import StateClient

    client = StateClient(_redis_url(args))
    names = [args.pipeline] if args.pipeline else client.pipelines()
    replicas = {name: client.replica_names(name) for name in names}
    statuses: dict[str, Any] = {}
    for name in names:
        if replicas[name] and replicas[name] != [""]:
            statuses[name] = {"replicas": client.replicas(name), "partitions": client.partitions(name)}
        else:
            statuses[name] = client.status(name)
    if args.json:
        print(orjson.dumps(statuses, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not names:
        print("no pipelines found in this Redis")
    for name, st in statuses.items():
        if "replicas" in st:
            _print_replicas(name, st["replicas"], st["partitions"])
            continue
        if not st or list(st) == ["alive"]:
            print(f"pipeline {name!r}: no status in this Redis")
            continue
        _print_table(f"pipeline {name}", [(k, st[k]) for k in sorted(st)])
    return 0


def _partition_list(parts: list[Any], topic: str) -> str:
    """"topic[3]" entries as "3,4,5" when they are all of the pipeline's topic."""
    prefix = f"{topic}["
    if parts and all(isinstance(p, str) and p.startswith(prefix) for p in parts):
        return ",".join(p[len(prefix):-1] for p in parts)
    return ",".join(str(p) for p in parts) or "-"


def _print_replicas(name: str, replicas: list[dict[str, Any]], partitions: dict[str, dict[str, Any]]) -> None:
    """One row per replica (read from Redis), then the partition registry."""
    import datetime

    def when(t: Any) -> str:
        return datetime.datetime.fromtimestamp(float(t)).strftime("%H:%M:%S") if t not in ("", None) else "-"

    rows = [("replica", "state", "host", "pid", "partitions", "lag", "samples", "accuracy", "snapshot", "at")]
    for st in replicas:
        acc = st.get("accuracy_total")
        rows.append((st["replica"] or "(default)", str(st.get("state", "-")), str(st.get("host", "-")),
                     str(st.get("pid", "-")), _partition_list(st.get("partitions") or [], str(st.get("topic", ""))),
                     str(st.get("lag", "-")), str(st.get("labelled_seen", "-")),
                     f"{acc:.4f}" if isinstance(acc, float) else "-", str(st.get("model_version", "-")),
                     when(st.get("last_snapshot_at"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"pipeline {name}: {len(replicas)} replicas")
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if partitions:
        print("  partition registry (offset covered by a durable snapshot, owner, epoch):")
        for tp, e in partitions.items():
            print(f"    {tp:<24} {str(e['offset']):>10}  {e['owner'] or '(default)'}  {e['epoch']}")


def cmd_query(args: argparse.Namespace) -> int:
    from ocld.stream.client import StateClient

    client = StateClient(_redis_url(args))
    if args.metrics:
        out: Any = client.metrics(args.pipeline, count=args.count, replica=args.replica)
    elif args.drift:
        out = client.drift_events(args.pipeline, count=args.count, replica=args.replica)
    elif args.global_model:
        out = client.global_info(args.pipeline)
    elif args.partitions:
        out = client.partitions(args.pipeline)
    else:
        out = client.snapshot_info(args.pipeline, replica=args.replica)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Make an older snapshot the latest; the daemon resumes from it at its next start."""
    from ocld.stream.client import RollbackRefused, StateClient

    client = StateClient(_redis_url(args))
    try:
        out = client.rollback(args.pipeline, args.to, force=args.force, replica=args.replica)
    except RollbackRefused as exc:
        print(f"ocld: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    print(f"latest is now version {out['version']} (was {out['previous']}): the next start of the daemon loads it "
          f"and re-learns every record after offsets {orjson.dumps(out['offsets']).decode()}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A PNG of prequential accuracy with drift events (and the Kalman forgetting factor)."""
    from ocld.stream.report import plot_run, run_from_redis

    if args.from_json:
        result = orjson.loads(Path(args.from_json).read_bytes())
    elif args.pipeline:
        from ocld.stream.client import StateClient

        result = run_from_redis(StateClient(_redis_url(args)), args.pipeline, count=args.count)
        if not result["curve"]["n"]:
            raise LookupError(f"pipeline {args.pipeline!r} has no metric points in this Redis")
    else:
        raise ConfigError("give a PIPELINE (read from Redis) or --from-json FILE (written by ocld evaluate --json)")
    print(f"wrote {plot_run(result, args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded broker + Redis, replay data/elec.csv, learn until consumed, summarize, shut down."""
    from ocld.stream.client import StateClient
    from ocld.stream.daemon import Daemon
    from ocld.stream.embedded import services
    from ocld.stream.replay import replay

    cfg = _config(args.config or str(ROOT / "config" / "demo.yaml"), args)
    data_dir = Path(cfg.data_dir) / f"{cfg.name}-demo"
    shutil.rmtree(data_dir, ignore_errors=True)  # the broker is memory-only: start Redis clean too
    data = Path(args.data or ROOT / "data" / "elec.csv")
    t0 = time.monotonic()
    with services(cfg.kafka.bootstrap, cfg.redis.url.get_secret_value(), data_dir) as (bs, url):
        cfg = cfg.with_services(bs, url)
        print(f"broker {bs}, Redis {redact_url(url)}")
        n = replay(data, cfg.kafka.topic, cfg.kafka, partitions=cfg.kafka.partitions, limit=args.limit, progress=True)
        daemon = Daemon(cfg)
        print(f"replayed {n} records; the daemon now learns until the topic is consumed ...")
        summary = daemon.run(until_idle_s=1.0)
        status = StateClient(url).status(cfg.name)
        port = url.rsplit(":", 1)[1].split("/")[0]
        _print_table("ocld demo: summary", [
            ("records", summary["records_seen"]), ("labelled samples learned", summary["labelled_seen"]),
            ("prequential accuracy", f"{summary['accuracy']:.4f}"),
            ("'no change' baseline", f"{summary['nochange_accuracy']:.4f}"),
            ("log-loss", f"{summary['log_loss']:.4f}"), ("drift events", summary["drift_count"]),
            ("dead-lettered", summary["dlq_count"]),
            ("learning time", f"{summary['elapsed_s']:.1f} s"),
            ("throughput", f"{summary['records_seen'] / max(summary['elapsed_s'], 1e-9):,.0f} records/s (incl. start-up)"),
            ("snapshot version", summary["model_version"]), ("status in Redis", status.get("state")),
        ])
        print("\nInspect the state while servers run (ocld demo --keep-running), e.g.:")
        print(f"  ocld status {cfg.name} --redis {url}")
        print(f"  ocld query {cfg.name} --metrics --redis {url}")
        print(f"  redis-cli -p {port} HGETALL ocld:{cfg.name}:status")
        print(f"  redis-cli -p {port} HGETALL ocld:{cfg.name}:latest")
        if args.keep_running:
            print("\nservers keep running; Ctrl-C to stop them")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print(f"\nservers stopped; demo took {time.monotonic() - t0:.1f} s")
    return 0


def _print_table(title: str, rows: list[tuple[str, Any]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for k, v in rows:
            table.add_row(str(k), str(v))
        Console().print(table)
    except ImportError:  # rich is a dependency; this only guards broken installs
        print(title)
        for k, v in rows:
            print(f"  {k}: {v}")


# -- parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocld", description="streaming online continual-learning daemon")
    p.add_argument("--log-level", default="info")
    p.add_argument("--json-logs", action="store_true", help="structured JSON log lines")
    sub = p.add_subparsers(dest="command", required=True)

    def services_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the config)")
        sp.add_argument("--redis", help="Redis URL (overrides the config)")

    sp = sub.add_parser("run", help="run the daemon (long-lived service)")
    sp.add_argument("config")
    services_args(sp)
    sp.add_argument("--until-idle", type=float, default=None, metavar="S",
                    help="exit once caught up and idle for S seconds (batch jobs, tests)")
    sp.add_argument("--max-seconds", type=float, default=None)
    sp.add_argument("--replica", default=None, metavar="NAME",
                    help="run as this named replica of the pipeline (overrides scale.replica and OCLD_REPLICA)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("demo", help="embedded broker + Redis, replay elec, learn, summarize")
    sp.add_argument("--config", default=None)
    sp.add_argument("--data", default=None)
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--keep-running", action="store_true")
    services_args(sp)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("replay", help="replay a CSV / JSON-lines file (optionally .gz) into a topic")
    sp.add_argument("file")
    sp.add_argument("--topic", required=True)
    sp.add_argument("--bootstrap")
    sp.add_argument("--rate", type=float, help="records per second")
    sp.add_argument("--speed", type=float, help="pace by the ts column; 2 = twice real time")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--label-column")
    sp.add_argument("--partitions", type=int, default=1, help="partitions if the topic is created")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("record", help="write a topic's history to a JSON-lines file")
    sp.add_argument("--topic", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--bootstrap")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_record)

    sp = sub.add_parser("evaluate", help="run the learner over a file (no Kafka, no Redis)")
    sp.add_argument("config")
    sp.add_argument("--data", required=True)
    sp.add_argument("--label-column")
    sp.add_argument("--json", help="write the results as JSON to this file")
    sp.add_argument("--batch-size", type=int, help="micro-batch size (default: kafka.max_batch)")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--test", help="held-out file for continual evaluation (rows with a task column)")
    sp.add_argument("--eval-every", type=int, metavar="N",
                    help="evaluate on the test rows of every task seen so far every N training samples")
    sp.add_argument("--plot", metavar="FILE.png", help="draw accuracy, drift events (and per-task curves)")
    sp.add_argument("--no-adapt", action="store_true", help="record drift events but do not adapt (to compare)")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("status", help="status of one or all pipelines, from Redis")
    sp.add_argument("pipeline", nargs="?")
    sp.add_argument("--redis")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("query", help="metrics, drift history or snapshot info, from Redis")
    sp.add_argument("pipeline")
    sp.add_argument("--redis")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--metrics", action="store_true")
    g.add_argument("--drift", action="store_true")
    g.add_argument("--snapshot", action="store_true")
    g.add_argument("--global", dest="global_model", action="store_true",
                   help="the exact AnalyticRidge model of all replicas' partitions (summed statistics)")
    g.add_argument("--partitions", action="store_true", help="the partition registry: offset, owner, epoch")
    sp.add_argument("--replica", default="", help="a named replica (scale.replica); default: the single-daemon keys")
    sp.add_argument("--count", type=int, default=100)
    sp.set_defaults(func=cmd_query)

    sp = sub.add_parser("rollback", help="make an older snapshot the latest (takes effect at the daemon's next start)")
    sp.add_argument("pipeline")
    sp.add_argument("--to", type=int, required=True, metavar="VERSION", help="see `ocld query P --snapshot`")
    sp.add_argument("--redis")
    sp.add_argument("--force", action="store_true", help="roll back although the heartbeat says a daemon runs")
    sp.add_argument("--replica", default="", help="a named replica (scale.replica); default: the single-daemon keys")
    sp.set_defaults(func=cmd_rollback)

    sp = sub.add_parser("report", help="PNG: accuracy over time, drift events, forgetting factor")
    sp.add_argument("pipeline", nargs="?", help="read metric and drift streams from Redis")
    sp.add_argument("--redis")
    sp.add_argument("--from-json", metavar="FILE", help="an `ocld evaluate --json` result instead of Redis")
    sp.add_argument("--out", required=True, metavar="FILE.png")
    sp.add_argument("--count", type=int, default=10_000, help="newest metric points / drift events read")
    sp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.json_logs)
    from ocld.core.runtime import limit_threads

    limit_threads()
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ocld: {exc}", file=sys.stderr)
        return 2
    except (ValueError, LookupError, OSError) as exc:
        from ocld.learners.merge import MergeError
        from ocld.stream.files import DataFileError

        if isinstance(exc, (DataFileError, LookupError, FileNotFoundError, MergeError)) or type(exc) is ValueError:
            print(f"ocld: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
