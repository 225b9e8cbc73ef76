"""Every failure of issue 20 as a case: the daemon against real producers, operators and accidents.

Each case is a scenario of ``tests/scenarios.py`` on its own tansu broker and redis-server, with
``ocld run`` as child processes: compressed batches from librdkafka, a stray or huge first
record, two daemons at once, a stalled daemon replaced, a rollback during a stall, garbage
snapshots, a broker that forgets its log, Redis losing its data, missing permissions, a SASL
mismatch, a killed learner process, Redis down at start, counters across restarts, the state
after a crash. After each, one clean daemon catches up and the durable state is compared with
a one-pass reference (AnalyticRidge statistics, exact to 1e-9).

Prints one Markdown table (and writes it to ``benchmarks/out/adversarial.md``): case, records
produced, learned exactly once, lost, learned twice, the daemons' exit codes (in the order they
ran; the last is the catch-up run), and whether any printed a traceback. Target: 0 lost, 0 twice
and no traceback in every row.

    python benchmarks/adversarial.py                 # every case (~5 min on 2 cores)
    python benchmarks/adversarial.py --cases stray-first-record redis-flushall
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.scenarios

from tests.scenarios import SCENARIOS, Result  # noqa: E402

HEADER = ["case", "produced", "learned exactly once", "lost", "learned twice", "exit codes", "traceback", "notes"]


def table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in results:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in r.row()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS), metavar="CASE")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "adversarial.md")
    args = ap.parse_args(argv)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    results: list[Result] = []
    t0 = time.time()
    for name in args.cases:
        work = Path(tempfile.mkdtemp(prefix=f"ocld-adv-{name}-"))
        t = time.time()
        try:
            res = SCENARIOS[name](work)
        except Exception as exc:  # noqa: BLE001 (a case that cannot run is a row, not the end of the table)
            res = Result(name, produced=0, notes=f"scenario failed: {type(exc).__name__}: {str(exc)[:120]}")
        res.notes = (res.notes + f" ({time.time() - t:.0f} s)").strip()
        results.append(res)
        print(f"{name}: {res.row()}", file=sys.stderr, flush=True)
    out = table(results)
    bad = [r.case for r in results if r.lost or r.twice or r.traceback or not r.exact]
    summary = (f"\n{len(results)} cases in {time.time() - t0:.0f} s; "
               + ("every case: 0 lost, 0 twice, no traceback" if not bad else f"FAILED: {', '.join(bad)}"))
    print(out + summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.write_text(f"# benchmarks/adversarial.py, {stamp}\n\n{out}\n{summary}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
