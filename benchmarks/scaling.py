"""How the daemon's speed grows with partitions and record size (issue 17, item 4).

One embedded tansu broker and one embedded Redis in a temporary folder (127.0.0.1 only). For
every cell of partitions (``--partitions``, default 1, 6, 24) x features per record
(``--features``, default 6, 64, 512), a topic of its own holds ``--records`` synthetic labelled
records (JSON ``{"x": [d numbers], "y": 0 or 1}``; x standard normal rounded to 4 decimals, y the
sign of a fixed random linear function plus noise; seeded, so every run has the same data),
written round-robin over the partitions. Then, interleaved over ``--rounds`` rounds (the cells'
order rotated by one each round), each cell runs:

- the bare kafka-python reference of benchmarks/peers.py (a group consumer that polls and
  ``orjson.loads`` each value: what reading the topic costs), and
- ``ocld run config/kalman.yaml`` (the shipped file, unchanged but for name, topic and
  ``data_dir``; snapshots to Redis as configured), one daemon reading all the cell's partitions.

Each in a child process of its own, timed as benchmarks/peers.py times every pipeline: from the
first record handed to its code to the last one learned; CPU per record is the user + system time
of the whole process tree over that window (``psutil``). Learner cost and memory alone, against D,
C and batch size, are in benchmarks/learners.py; replicas sharing partitions in
benchmarks/scaleout.py.

    nice -n 19 python benchmarks/scaling.py                 # 9 cells x 2 rounds, about 10 minutes on 2 cores
    python benchmarks/scaling.py --rounds 1 --records 10000 --partitions 1 6 --features 6 64   # quick
    python benchmarks/scaling.py --set kafka.client=confluent

Needs psutil (the ``bench`` extra). Writes the table to benchmarks/out/scaling.md.
A script that prints a table, not a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import load_average, produce, revision, spawn, versions  # noqa: E402


def synthetic_values(n: int, d: int, seed: int = 0) -> list[bytes]:
    """``n`` JSON records of ``d`` features: x ~ N(0, 1) (4 decimals), y = [w . x + noise > 0], seeded.

    >>> a, b = synthetic_values(3, 4), synthetic_values(3, 4)
    >>> a == b and len(orjson.loads(a[0])["x"]) == 4 and orjson.loads(a[0])["y"] in (0, 1)
    True
    """
    rng = np.random.default_rng([seed, d])
    X = np.round(rng.standard_normal((n, d)), 4)
    w = rng.standard_normal(d)
    y = (X @ w / np.sqrt(d) + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return [orjson.dumps({"x": row, "y": label}) for row, label in zip(X.tolist(), y.tolist())]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=40_000, help="records per cell")
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 6, 24])
    ap.add_argument("--features", type=int, nargs="+", default=[6, 64, 512])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the ocld config (e.g. kafka.client=confluent); repeatable")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each run may take")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "scaling.md"))
    args = ap.parse_args(argv)
    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

    started = dt.datetime.now(dt.timezone.utc)
    t_run = time.monotonic()
    load_before = load_average()
    cells = [(p, d) for p in args.partitions for d in args.features]
    results: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = {c: {"bare": [], "ocld": []} for c in cells}
    sizes: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="ocld-scaling-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker") as broker, EmbeddedRedis(Path(tmp) / "redis") as rds:
        for d in args.features:
            values = synthetic_values(args.records, d)
            sizes[d] = sum(map(len, values)) / len(values)
            for p in args.partitions:
                produce(broker.bootstrap, f"scaling.p{p}.d{d}", values, partitions=p)
            del values
        server_pids = [proc.pid for proc in (broker.proc, rds.proc) if proc is not None]
        for r in range(args.rounds):
            order = cells[r % len(cells):] + cells[:r % len(cells)]
            for p, d in order:
                for what, key in (("bare", "bare-kafka-python"), ("ocld", "ocld-kalman")):
                    res = spawn(key, bootstrap=broker.bootstrap, redis_url=rds.url, topic=f"scaling.p{p}.d{d}",
                                records=args.records, server_pids=server_pids, workdir=Path(tmp) / "runs",
                                timeout=args.timeout, overrides=args.set if what == "ocld" else None)
                    results[(p, d)][what].append(res)
                    shown = res.get("error") or f"{res['rate']:,.0f} records/s, {res['cpu_us']:.1f} us/record"
                    print(f"round {r + 1}, {p} partitions, {d} features, {what}: {shown}", file=sys.stderr,
                          flush=True)

    def med(runs: list[dict[str, Any]], field: str) -> float | None:
        vals = [x[field] for x in runs if field in x]
        return statistics.median(vals) if vals else None

    lines = ["| partitions | features | bytes/record | ocld records/s | ocld CPU µs/record | ocld accuracy | "
             "bare kafka-python records/s | bare CPU µs/record | ocld × bare | ocld records/s per round | failures |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    clients = set()
    for p, d in cells:
        o, b = results[(p, d)]["ocld"], results[(p, d)]["bare"]
        clients |= {str(x["client"]) for x in o if x.get("client")}
        ratios = [x["rate"] / y["rate"] for x, y in zip(o, b) if "rate" in x and "rate" in y]
        errors = [f"{w} round {i}: {x['error']}" for w, runs in (("ocld", o), ("bare", b))
                  for i, x in enumerate(runs, 1) if "error" in x]

        def cell(v: float | None, fmt: str) -> str:
            return format(v, fmt) if v is not None else "failed"

        accs = [x["accuracy"] for x in o if x.get("accuracy") is not None]
        per_round = " / ".join(f"{x['rate']:,.0f}" for x in o if "rate" in x)
        lines.append(
            f"| {p} | {d} | {sizes[d]:,.0f} | {cell(med(o, 'rate'), ',.0f')} | {cell(med(o, 'cpu_us'), '.1f')} | "
            f"{(f'{min(accs):.4f}' if accs else '–')} | {cell(med(b, 'rate'), ',.0f')} | "
            f"{cell(med(b, 'cpu_us'), '.1f')} | {cell(statistics.median(ratios) if ratios else None, '.2f')} | "
            f"{per_round} | {'; '.join(errors)[:300]} |")

    command = "python benchmarks/scaling.py" + (f" {' '.join(argv if argv is not None else sys.argv[1:])}"
                                                if (argv or sys.argv[1:]) else "")
    text = "\n".join([
        f"## Daemon speed against partitions and record size (`config/kalman.yaml`, {args.records:,} "
        "records per cell, embedded tansu + Redis)",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, `{command}`; {args.rounds} rounds, run took {time.monotonic() - t_run:.0f} s; "
        f"load average before {load_before}, after {load_average()}. Code: {revision()}. Versions: {versions()}. "
        f"ocld's Kafka client: {', '.join(sorted(clients)) or 'n/a'}.",
        "",
        *lines,
        "",
        "Medians over rounds. Each run is a fresh process with a consumer group of its own; time from the first "
        "record handed to its code to the last one learned (decoded, for the bare consumer); CPU: user + system "
        "time of its whole process tree over that window. 'ocld × bare' is the median over rounds of the ratio "
        "to the same round's bare consumer of the same topic. Synthetic linear data, so accuracy only shows that "
        "the daemon learned. Compare within one run only: the machine is shared.",
    ]) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
