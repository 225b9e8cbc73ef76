"""Learning a poll's drift.adapt_grid segments in one call (``joint_segments``) against one call per segment.

``LearningCore.process`` cuts every poll at multiples of ``drift.adapt_grid`` labelled samples
(100 by default) so that adaptations take effect at the same sample whatever the poll cut.
Learners with ``joint_segments`` (KalmanHead) learn all the segments of a poll in one call and
go back to a copy when an adaptation falls due inside it (ocld.core.runtime). This measures the
learning core both ways, the flag forced off and on, on elec (data/elec.csv tiled), shipped configs
(config/kalman.yaml, config/logistic.yaml), polls of ``--poll`` records, interleaved repeats,
CPU time of this thread, and prints the accuracy and drift events both ways. KalmanLogistic
ships with the flag off (a loop over samples inside each call: fewer calls save little, the
copies and re-learning after adaptations cost); it is measured to show why.

    python benchmarks/segments.py                 # 40,000 samples, 3 repeats
    python benchmarks/segments.py --repeats 5

BLAS is limited to one thread (threadpoolctl), as ``ocld`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {"KalmanHead": "kalman.yaml", "KalmanLogistic": "logistic.yaml"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=40_000)
    ap.add_argument("--poll", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import ocld.learners.kalman
    import ocld.learners.logistic
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore, limit_threads
    from ocld.stream.config import load_config
    from ocld.stream.files import read_table

    limit_threads()
    classes = {"KalmanHead": ocld.learners.kalman.KalmanHead, "KalmanLogistic": ocld.learners.logistic.KalmanLogistic}
    table = read_table(ROOT / "data" / "elec.csv")
    n, poll = args.samples, args.poll
    reps = -(-n // table.X.shape[0])
    X = np.tile(table.X, (reps, 1))[:n]
    y = (list(table.y) * reps)[:n]

    def run(name: str, together: bool) -> tuple[float, float, int]:
        cls = classes[name]
        had = "joint_segments" in cls.__dict__
        original = cls.__dict__.get("joint_segments")
        cls.joint_segments = property(lambda self: together)  # type: ignore[assignment]
        try:
            core = LearningCore.from_config(load_config(ROOT / "config" / CONFIGS[name]))
            c0 = time.thread_time()
            for a in range(0, n, poll):
                b = min(n, a + poll)
                m = b - a
                core.process(Decoded(np.arange(m), X[a:b], y[a:b], [None] * m, [None] * m, [None] * m))
            rate = n / (time.thread_time() - c0)
            return rate, core.metrics.summary()["accuracy"], core.drift_count
        finally:
            if had:
                cls.joint_segments = original  # type: ignore[assignment]
            else:
                del cls.joint_segments

    results: dict[tuple[str, bool], list[tuple[float, float, int]]] = {}
    for _ in range(args.repeats):
        for name in CONFIGS:
            for together in (False, True):
                results.setdefault((name, together), []).append(run(name, together))

    print(f"\n## Grid segments in one call or one call each ({n:,} elec samples, polls of {poll}, "
          f"{args.repeats} interleaved repeats)\n")
    print("| learner | one call per segment, samples/s | all segments in one call, samples/s | ratio (medians) "
          "| accuracy (one / all) | drift events (one / all) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        one, all_ = results[(name, False)], results[(name, True)]
        m1 = statistics.median(r for r, _, _ in one)
        m2 = statistics.median(r for r, _, _ in all_)
        print(f"| {name} | {m1:,.0f} (best {max(r for r, _, _ in one):,.0f}) | {m2:,.0f} (best "
              f"{max(r for r, _, _ in all_):,.0f}) | {m2 / m1:.2f} | {one[0][1]:.6f} / {all_[0][1]:.6f} | "
              f"{one[0][2]} / {all_[0][2]} |")
    print("\nCPU time of the learning thread (time.thread_time), medians over the repeats. Shipped: on for "
          "KalmanHead (while its arrays take at most 16 MiB), off for KalmanLogistic.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
