"""The ``ocld`` command line: run, demo, replay, record, evaluate, status, query, rollback, report.

Every command that needs a broker or Redis takes ``--bootstrap`` / ``--redis`` (or the
config's values, or ``KAFKA_BOOTSTRAP`` / ``REDIS_URL``); ``embedded`` starts local ones.

Expected failures never print a traceback. :func:`main` turns each of them, in one place
(:func:`expected_failure`), into one line ``ocld: <what failed and what to check>`` on
stderr and a non-zero exit: ``OcldError`` (with its ``exit_code``), a config or data file
that cannot be used, a Redis that cannot be reached or refuses the credentials or the
command (``redis.exceptions``), a Kafka broker that cannot be reached or refuses
(``kafka.errors``), a corrupt snapshot, a pipeline that does not exist. Servers are named
through ``redact_url`` and every known secret is scrubbed from the line, so no message
shows a password. ``--log-level debug`` adds the traceback for those who want it. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
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
    cfg = cfg.with_services(getattr(args, "bootstrap", None), getattr(args, "redis", None))
    args.config_secrets = [s.get_secret_value() for s in (cfg.redis.password, cfg.kafka.sasl_password) if s is not None]
    args.config_urls = [cfg.redis.url.get_secret_value()]
    return cfg


def _name_targets(args: argparse.Namespace, cfg: Config) -> None:
    """Remember the servers a command talks to, so that a failure can name them (redacted)."""
    args.kafka_target = cfg.kafka.bootstrap
    args.redis_target = cfg.redis.url.get_secret_value()


def _running(args: argparse.Namespace) -> dict[str, Any] | None:
    """The embedded servers of a running ``ocld run`` (``stream.discovery``), for the pipeline named if any."""
    from ocld.stream import discovery

    return discovery.find(getattr(args, "pipeline", None) or None)


def _redis_url(args: argparse.Namespace) -> str:
    """--redis, else REDIS_URL, else the embedded Redis of a running daemon, else (with --config of an
    embedded pipeline whose daemon is stopped) its Redis started from its data folder for this command."""
    url = args.redis or os.environ.get("REDIS_URL")
    if not url:
        found = _running(args)
        url = found["redis"] if found else None
    if not url and getattr(args, "config", None):
        cfg = load_config(args.config)
        if cfg.redis.url.get_secret_value() == "embedded":
            from ocld.stream.embedded import EmbeddedRedis

            data = Path(cfg.data_dir) / cfg.name / "redis"
            if not data.exists():
                raise ConfigError(f"pipeline {cfg.name!r} has never run on its embedded Redis here ({data} does not "
                                  "exist): run the command in the folder `ocld run` ran in")
            url = args.servers.enter_context(EmbeddedRedis(data)).url
        else:
            url = cfg.redis.url.get_secret_value()
    if not url:
        raise ConfigError("give --redis URL (or set REDIS_URL) to say which Redis holds the state: no daemon runs "
                          "on embedded servers here (`ocld env` prints the addresses of one that does)")
    args.redis_target = url  # named (redacted) in the message if Redis fails
    return url


def _state_client(args: argparse.Namespace) -> Any:
    """A ``StateClient`` on ``--redis`` / ``REDIS_URL`` (Redis errors surface at the first command)."""
    from ocld.stream.client import StateClient

    return StateClient(_redis_url(args), password=os.environ.get("OCLD_REDIS_PASSWORD") or None)


def _kafka_config(args: argparse.Namespace, command: str) -> KafkaConfig:
    """--bootstrap, else KAFKA_BOOTSTRAP, else the embedded broker of a running daemon."""
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        found = _running(args)
        bootstrap = found["bootstrap"] if found else None
    kafka = KafkaConfig(bootstrap=bootstrap or "embedded")
    if kafka.bootstrap == "embedded":
        raise ConfigError(f"{command} needs a running broker: give --bootstrap HOST:PORT (or set KAFKA_BOOTSTRAP); "
                          "no daemon runs on embedded servers here")
    args.kafka_target = kafka.bootstrap
    return kafka


# -- commands ------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from ocld.stream.daemon import Daemon
    from ocld.stream.embedded import services

    cfg = _config(args.config, args)
    _name_targets(args, cfg)
    if args.replica is not None:
        from ocld.stream.config import with_replica

        cfg = with_replica(cfg, args.replica, f"--replica {args.replica!r}")
    if cfg.log_format == "json" and not args.json_logs:
        _setup_logging(args.log_level, json_logs=True)
    with services(cfg.kafka.bootstrap, cfg.redis.url.get_secret_value(), Path(cfg.data_dir) / cfg.name,
                  pipeline=cfg.name) as (bs, url):
        args.kafka_target, args.redis_target = bs, url
        if cfg.kafka.bootstrap == "embedded" or cfg.redis.url.get_secret_value() == "embedded":
            log.info("embedded servers: broker %s, Redis %s", bs, redact_url(url))
        summary = Daemon(cfg.with_services(bs, url)).run(until_idle_s=args.until_idle, max_seconds=args.max_seconds)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a file; skipped lines are counted in the summary, undelivered records are an error."""
    from ocld.stream.errors import OcldError
    from ocld.stream.replay import replay_file

    kafka = _kafka_config(args, "replay")
    summary = replay_file(args.file, args.topic, kafka, rate=args.rate, speed=args.speed, limit=args.limit,
                          label_column=args.label_column, partitions=args.partitions, progress=not args.quiet)
    print(summary.describe(args.topic))
    if summary.failed:
        raise OcldError(f"{summary.failed} of {summary.sent} records were not delivered to {args.topic} "
                        f"({summary.first_failure}); check the broker's limits and logs, then replay again")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from ocld.stream.replay import record

    kafka = _kafka_config(args, "record")
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
        ("detections where the error fell (not drift)", f"{result['error_fell']}"),
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
    """Every pipeline's status (or one's), grouped for a person, or as JSON; ``--watch`` refreshes it."""
    client = _state_client(args)
    if args.pipeline:
        client.require(args.pipeline)

    def statuses() -> dict[str, Any]:
        names = [args.pipeline] if args.pipeline else client.pipelines()
        out: dict[str, Any] = {}
        for name in names:
            replicas = client.replica_names(name)
            if replicas and replicas != [""]:
                out[name] = {"replicas": client.replicas(name), "partitions": client.partitions(name)}
            else:
                out[name] = client.status(name)
        return out

    if args.json:
        print(orjson.dumps(statuses(), option=orjson.OPT_INDENT_2).decode())
        return 0
    from rich.console import Console, Group

    console = Console()
    if not args.watch:
        current = statuses()
        if not current:
            print("no pipelines found in this Redis")
        console.print(Group(*_status_views(current)))
        return 0
    from rich.live import Live

    with Live(console=console, refresh_per_second=2, screen=False) as live:
        try:
            while True:
                live.update(Group(*_status_views(statuses()), f"[dim]every {args.watch:g} s; Ctrl-C stops[/dim]"))
                time.sleep(args.watch)
        except KeyboardInterrupt:
            pass
    return 0


def _status_views(statuses: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    from ocld.stream.status import display_rows

    views: list[Any] = []
    for name, st in statuses.items():
        if "replicas" in st:
            views.append(_replicas_table(name, st["replicas"], st["partitions"]))
            continue
        if not st or list(st) == ["alive"]:
            views.append(f"pipeline {name!r}: no status in this Redis")
            continue
        table = Table(title=f"pipeline {name}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for group, rows in display_rows(st).items():
            table.add_row(f"[cyan]{group}[/cyan]", "")
            for field, text in rows:
                table.add_row(f"  {field}", text)
        views.append(table)
    return views


def cmd_env(args: argparse.Namespace) -> int:
    """``export KAFKA_BOOTSTRAP=... REDIS_URL=...`` for the embedded servers of a running daemon."""
    from ocld.stream import discovery

    found = discovery.find(args.pipeline)
    if found is None:
        raise ConfigError("no daemon runs on embedded servers here" + (f" for pipeline {args.pipeline!r}"
                          if args.pipeline else "") + ": start one with `ocld run CONFIG` (kafka.bootstrap and "
                          "redis.url embedded), or name your servers with --bootstrap / --redis")
    print(f"export KAFKA_BOOTSTRAP={found['bootstrap']} REDIS_URL={found['redis']}"
          f"  # pipeline {found['pipeline']}, pid {found['pid']}")
    return 0


def _partition_list(parts: list[Any], topic: str) -> str:
    """"topic[3]" entries as "3,4,5" when they are all of the pipeline's topic."""
    prefix = f"{topic}["
    if parts and all(isinstance(p, str) and p.startswith(prefix) for p in parts):
        return ",".join(p[len(prefix):-1] for p in parts)
    return ",".join(str(p) for p in parts) or "-"


def _replicas_table(name: str, replicas: list[dict[str, Any]], partitions: dict[str, dict[str, Any]]) -> Any:
    """One row per replica (read from Redis), then the partition registry."""
    from rich.table import Table

    from ocld.stream.status import when

    table = Table(title=f"pipeline {name}: {len(replicas)} replicas", title_justify="left")
    for col in ("replica", "state", "host", "pid", "partitions", "lag", "samples", "accuracy", "snapshot", "at"):
        table.add_column(col)
    for st in replicas:
        acc = st.get("accuracy_total")
        table.add_row(st["replica"] or "(default)", str(st.get("state", "-")), str(st.get("host", "-")),
                      str(st.get("pid", "-")), _partition_list(st.get("partitions") or [], str(st.get("topic", ""))),
                      str(st.get("lag", "-")), str(st.get("labelled_seen", "-")),
                      f"{acc:.4f}" if isinstance(acc, float) else "-", str(st.get("model_version", "-")),
                      when(st.get("last_snapshot_at")))
    if partitions:
        reg = Table(title="partition registry (offset covered by a durable snapshot, owner, epoch)",
                    title_justify="left", show_header=False)
        for tp, e in partitions.items():
            reg.add_row(tp, str(e["offset"]), e["owner"] or "(default)", str(e["epoch"]))
        from rich.console import Group

        return Group(table, reg)
    return table


def cmd_query(args: argparse.Namespace) -> int:
    client = _state_client(args)
    client.require(args.pipeline, "" if args.global_model or args.partitions else args.replica)
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


def cmd_migrate(args: argparse.Namespace) -> int:
    """Move a pipeline's keys to the layout with hash tags (``ocld:{p}:*``), atomically; a daemon does it
    by itself at start-up, this is for clients that read a pipeline whose daemon is not running."""
    client = _state_client(args)
    if not client.old_layout(args.pipeline):
        print(f"pipeline {args.pipeline!r} has no keys in the old layout here: nothing to move")
        return 0
    moved = client.migrate(args.pipeline)
    print(f"moved {moved} keys of pipeline {args.pipeline!r} to the hash-tagged layout (ocld:{{{args.pipeline}}}:*)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Make an older snapshot the latest; the daemon resumes from it at its next start."""
    client = _state_client(args)
    client.require(args.pipeline, args.replica)
    out = client.rollback(args.pipeline, args.to, force=args.force, replica=args.replica)  # RollbackRefused: main
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    print(f"latest is now version {out['version']} (was {out['previous']}): the next start of the daemon loads it "
          f"and re-learns every record after offsets {orjson.dumps(out['offsets']).decode()}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A PNG of prequential accuracy with drift events (and the Kalman forgetting factor)."""
    from ocld.stream.report import plot_run, run_from_redis

    if args.from_json:
        try:
            result = orjson.loads(Path(args.from_json).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{args.from_json} is not JSON ({exc}); give a file written by "
                              "ocld evaluate --json") from None
        if not isinstance(result, dict) or "curve" not in result:
            raise ConfigError(f"{args.from_json} is not an ocld evaluate --json result (it has no 'curve')")
    elif args.pipeline:
        client = _state_client(args)
        client.require(args.pipeline)
        result = run_from_redis(client, args.pipeline, count=args.count)
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
    _name_targets(args, cfg)
    with services(cfg.kafka.bootstrap, cfg.redis.url.get_secret_value(), data_dir,
                  pipeline=cfg.name if args.keep_running else None) as (bs, url):
        args.kafka_target, args.redis_target = bs, url
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
            ("throughput",
             f"{summary['records_seen'] / max(summary['elapsed_s'], 1e-9):,.0f} records/s (incl. start-up)"),
            ("snapshot version", summary["model_version"]), ("status in Redis", status.get("state")),
        ])
        if not args.keep_running:
            print("\nThe servers stop now. To look at the state with them running: ocld demo --keep-running, then in "
                  "another shell ocld status / ocld query / ocld report")
        if args.keep_running:
            print("\nThe servers keep running (Ctrl-C stops them). In another shell, in this folder:")
            print(f"  ocld status {cfg.name}            # found through the running servers (ocld env prints them)")
            print(f"  ocld query {cfg.name} --metrics")
            print(f"  redis-cli -p {port} HGETALL 'ocld:{{{cfg.name}}}:status'")
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
    sp.add_argument("--config", help="the pipeline's config: its Redis (an embedded one is started from its data "
                    "folder while the daemon is stopped)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--watch", type=float, nargs="?", const=1.0, default=None, metavar="S",
                    help="refresh every S seconds (default 1) until Ctrl-C")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("env", help="export lines for the embedded servers of a running daemon (eval $(ocld env))")
    sp.add_argument("pipeline", nargs="?")
    sp.set_defaults(func=cmd_env)

    sp = sub.add_parser("query", help="metrics, drift history or snapshot info, from Redis")
    sp.add_argument("pipeline")
    sp.add_argument("--redis")
    sp.add_argument("--config", help="the pipeline's config: its Redis (an embedded one is started from its data "
                    "folder while the daemon is stopped)")
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
    sp.add_argument("--config", help="the pipeline's config: its Redis (an embedded one is started from its data "
                    "folder while the daemon is stopped)")
    sp.add_argument("--force", action="store_true", help="roll back although the heartbeat says a daemon runs")
    sp.add_argument("--replica", default="", help="a named replica (scale.replica); default: the single-daemon keys")
    sp.set_defaults(func=cmd_rollback)

    sp = sub.add_parser("report", help="PNG: accuracy over time, drift events, forgetting factor")
    sp.add_argument("pipeline", nargs="?", help="read metric and drift streams from Redis")
    sp.add_argument("--redis")
    sp.add_argument("--config", help="the pipeline's config: its Redis (an embedded one is started from its data "
                    "folder while the daemon is stopped)")
    sp.add_argument("--from-json", metavar="FILE", help="an `ocld evaluate --json` result instead of Redis")
    sp.add_argument("--out", required=True, metavar="FILE.png")
    sp.add_argument("--count", type=int, default=10_000, help="newest metric points / drift events read")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("migrate", help="move a pipeline's keys written by an older ocld to the hash-tagged layout")
    sp.add_argument("pipeline")
    sp.add_argument("--redis")
    sp.set_defaults(func=cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.json_logs)
    from ocld.core.runtime import limit_threads

    limit_threads()
    args.servers = contextlib.ExitStack()  # servers a command starts for itself (an embedded Redis at rest)
    try:
        with args.servers:
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = expected_failure(exc, args)
        if failure is None:
            raise  # a bug: its traceback is what a report needs
        message, code = failure
        log.debug("the failure in full", exc_info=True)
        print(f"ocld: {message}", file=sys.stderr)
        return code


# -- expected failures ---------------------------------------------------------------
def expected_failure(exc: BaseException, args: argparse.Namespace | None = None) -> tuple[str, int] | None:
    """(message, exit code) for a failure a user or an operator can cause; None for a bug.

    The one place the CLI decides what is expected. The message is one line (a config file's
    list of mistakes keeps its lines), names the server or file, says what to check, and has
    every secret known to this process scrubbed (see :func:`scrub`).
    """
    from ocld.core.snapshot import CorruptSnapshot
    from ocld.learners.merge import MergeError
    from ocld.stream.embedded import EmbeddedError
    from ocld.stream.errors import OcldError
    from ocld.stream.files import DataFileError

    redis_target = getattr(args, "redis_target", None)
    kafka_target = getattr(args, "kafka_target", None)
    message: str | None = None
    code = 2
    if isinstance(exc, OcldError):
        message, code = str(exc), int(exc.exit_code)
    elif isinstance(exc, ConfigError):
        return scrub(str(exc), args, one_line=False), 2
    elif _is_redis_error(exc):
        message = redis_failure(exc, redis_target)
    elif type(exc).__module__.startswith("kafka.") and _is_kafka_error(exc):
        message = kafka_failure(exc, kafka_target)
    elif isinstance(exc, CorruptSnapshot):
        message = f"a snapshot is unusable: {exc}; `ocld query PIPELINE --snapshot` lists the versions stored"
    elif isinstance(exc, (DataFileError, MergeError, EmbeddedError)) or type(exc) is ValueError or (
            isinstance(exc, LookupError) and not isinstance(exc, (KeyError, IndexError))):  # those two are bugs
        message = str(exc)
    elif isinstance(exc, UnicodeDecodeError):
        message = f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    elif isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        message = f"{exc.strerror or type(exc).__name__}:{where}" if where else f"{type(exc).__name__}: {exc}"
    if message is None:
        return None
    return scrub(message, args), code


def _is_redis_error(exc: BaseException) -> bool:
    rx = sys.modules.get("redis.exceptions")
    return rx is not None and isinstance(exc, (rx.RedisError, rx.RedisClusterException))


def _is_kafka_error(exc: BaseException) -> bool:
    ke = sys.modules.get("kafka.errors")
    return ke is not None and isinstance(exc, ke.KafkaError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _redis_user(url: str | None) -> str:
    from urllib.parse import unquote

    if not url or "@" not in url:
        return ""
    creds = url.partition("://")[2].rsplit("@", 1)[0]
    return unquote(creds.split(":", 1)[0]) if ":" in creds else unquote(creds)


def redis_failure(exc: BaseException, url: str | None) -> str:
    """What a Redis error means for the operator, naming the server (redacted) and what to check."""
    from redis import exceptions as rx

    where = f"Redis at {redact_url(url)}" if url else "Redis"
    detail = _first_line(exc)
    user = _redis_user(url) or "default"
    if isinstance(exc, (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError)) or \
            detail.upper().startswith(("WRONGPASS", "NOAUTH", "AUTH")):
        return (f"{where} refused the credentials ({detail}); check the user and password: in the URL "
                "(redis://USER:PASSWORD@HOST:PORT/DB), or redis.username / redis.password / OCLD_REDIS_PASSWORD")
    if isinstance(exc, (rx.NoPermissionError, rx.AuthorizationError)) or detail.upper().startswith("NOPERM"):
        return (f"{where} refused a command to user {user!r} (NOPERM {detail}); grant it, e.g. "
                f"ACL SETUSER {user} ~ocld:* &ocld:* +@read +@write +@scripting +@pubsub (status, query and "
                "report need only +@read)")
    if isinstance(exc, rx.ReadOnlyError):
        return f"{where} is a read-only replica ({detail}); give the primary's URL"
    if isinstance(exc, rx.BusyLoadingError):
        return f"{where} is still loading its data ({detail}); try again when it has started"
    if isinstance(exc, rx.TimeoutError):
        return f"{where} did not answer in time ({detail}); check that it runs and is not overloaded"
    if isinstance(exc, (rx.ConnectionError, getattr(rx, "RedisClusterException", rx.ConnectionError))):
        return (f"cannot reach {where} ({detail}); check that it runs and that --redis, REDIS_URL or redis.url "
                "names it")
    if isinstance(exc, rx.OutOfMemoryError):
        return f"{where} is out of memory ({detail}); raise its maxmemory or free space"
    return f"{where} answered an error ({type(exc).__name__}: {detail})"


def kafka_failure(exc: BaseException, bootstrap: str | None) -> str:
    """What a Kafka client error means for the operator, naming the broker and what to check."""
    from kafka import errors as ke

    where = f"the Kafka broker at {bootstrap}" if bootstrap else "the Kafka broker"
    detail = _first_line(exc)
    name = type(exc).__name__
    # kafka-python 2.x raises NoBrokersAvailable; 3.x raises KafkaTimeoutError "Unable to bootstrap from [...]".
    no_brokers = getattr(ke, "NoBrokersAvailable", ())
    if isinstance(exc, no_brokers) or "bootstrap" in detail.lower():
        return (f"no answer from {where} ({name}: {detail}); check that it runs and that --bootstrap, "
                "KAFKA_BOOTSTRAP or kafka.bootstrap names it (HOST:PORT)")
    if isinstance(exc, ke.SaslAuthenticationFailedError) or "authentication" in detail.lower():
        return (f"{where} refused the credentials ({name}: {detail}); check kafka.sasl_mechanism, "
                "kafka.sasl_username and kafka.sasl_password / OCLD_KAFKA_SASL_PASSWORD")
    if isinstance(exc, (ke.TopicAuthorizationFailedError, ke.GroupAuthorizationFailedError,
                        ke.ClusterAuthorizationFailedError)):
        return f"{where} does not allow this ({name}: {detail}); grant the principal the ACLs it needs"
    if isinstance(exc, ke.KafkaTimeoutError):
        return f"{where} did not answer in time ({name}: {detail}); check that it runs and is reachable"
    return f"{where} failed: {name}: {detail}"


def _secrets(args: argparse.Namespace | None) -> list[str]:
    """Every secret this process knows: passwords in the Redis URLs given, the config's secrets, the
    password environment variables."""
    from urllib.parse import unquote

    found: list[str] = list(getattr(args, "config_secrets", None) or [])
    urls = [getattr(args, "redis", None), getattr(args, "redis_target", None), os.environ.get("REDIS_URL"),
            *(getattr(args, "config_urls", None) or [])]
    for url in urls:
        if isinstance(url, str) and "@" in url:
            creds = url.partition("://")[2].rsplit("@", 1)[0] if "://" in url else url.rsplit("@", 1)[0]
            if ":" in creds:
                pw = creds.split(":", 1)[1]
                found += [pw, unquote(pw)]
    found += [os.environ.get(k, "") for k in ("OCLD_REDIS_PASSWORD", "OCLD_KAFKA_SASL_PASSWORD")]
    return sorted({s for s in found if s and "://" not in s}, key=len, reverse=True)


def scrub(message: str, args: argparse.Namespace | None, one_line: bool = True) -> str:
    """``message`` with every known secret replaced by ``***`` (and on one line unless told)."""
    for secret in _secrets(args):
        message = message.replace(secret, "***")
    if one_line:
        message = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    return message


if __name__ == "__main__":
    sys.exit(main())
