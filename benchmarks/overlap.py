"""Can a reading thread overlap with learning in one process? KalmanHead next to a pure-Python loop.

The daemon reads and learns one after the other in one thread. A second thread could
poll and parse the next records while the learner works, if the learner released the
GIL long enough (numpy and OpenBLAS release it inside their calls). This measures it
without Kafka, in one run:
1. the shipped KalmanHead (config/kalman.yaml, features included) learning elec rows in
   batches of 100, alone;
2. a pure-Python loop standing in for kafka-python's record parsing (``orjson.loads`` of
   elec records and a list of floats per record), alone;
3. both at once, each in its own thread, for as long as the learner runs.

    python benchmarks/overlap.py                       # 30,000 samples, default switch interval
    python benchmarks/overlap.py --switch-ms 0.5       # a shorter GIL switch interval

BLAS is limited to one thread (threadpoolctl), as ``ocld`` does.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=30_000)
    ap.add_argument("--switch-ms", type=float, default=None, help="sys.setswitchinterval in ms (default: Python's 5)")
    args = ap.parse_args(argv)

    from ocld.core.runtime import limit_threads
    from ocld.stream.config import load_config
    from ocld.stream.files import read_table

    limit_threads()
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000.0)
    table = read_table(ROOT / "data" / "elec.csv")
    n = args.samples
    reps = -(-n // table.X.shape[0])
    X = np.tile(table.X, (reps, 1))[:n]
    y = np.empty(n, dtype=object)
    y[:] = (list(table.y) * reps)[:n]
    values = [orjson.dumps({"x": X[i].tolist(), "y": y[i]}) for i in range(2000)]
    cfg = load_config(ROOT / "config" / "kalman.yaml")

    def learn() -> float:
        learner = cfg.build_learner()
        t0 = time.perf_counter()
        for a in range(0, n, 100):
            learner.learn_predict(X[a:a + 100], y[a:a + 100])
        return n / (time.perf_counter() - t0)

    stop = threading.Event()
    parsed = [0]

    def parse() -> None:
        loads = orjson.loads
        while not stop.is_set():
            for v in values:
                [float(a) for a in loads(v)["x"]]
            parsed[0] += len(values)

    def parse_alone(seconds: float) -> float:
        parsed[0] = 0
        stop.clear()
        th = threading.Thread(target=parse)
        t0 = time.perf_counter()
        th.start()
        time.sleep(seconds)
        stop.set()
        th.join()
        return parsed[0] / (time.perf_counter() - t0)

    learn_alone = learn()
    parse_rate = parse_alone(3.0)
    parsed[0] = 0
    stop.clear()
    th = threading.Thread(target=parse)
    t0 = time.perf_counter()
    th.start()
    learn_both = learn()
    stop.set()
    th.join()
    parse_both = parsed[0] / (time.perf_counter() - t0)

    print(f"\n## Reading thread next to the learner ({n:,} samples, GIL switch interval "
          f"{1000 * sys.getswitchinterval():.1f} ms)\n")
    print("| | learner, samples/s | parsing loop, records/s |")
    print("|---|---:|---:|")
    print(f"| each alone | {learn_alone:,.0f} | {parse_rate:,.0f} |")
    print(f"| both, two threads | {learn_both:,.0f} ({learn_both / learn_alone:.2f}x) | "
          f"{parse_both:,.0f} ({parse_both / parse_rate:.2f}x) |")
    print("\nWith perfect overlap both would keep their rate. A pure-Python thread holds the GIL except at "
          "switch intervals, so the learner's thread waits to re-acquire it after every numpy call.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
