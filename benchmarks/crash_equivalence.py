"""Crash equivalence: a daemon killed with SIGKILL at random moments ends in the same state
as one uninterrupted run.

The harness writes a seeded stream (labelled records, predict-only records and a few bad
ones) to a topic, then runs ``ocld run`` as a child process and kills it again and again:

- ``external``: the harness watches the status hash in Redis and sends SIGKILL when the
  child has learned a random number of samples (a random point of the hot path);
- ``fault:<point>``: the child kills itself through the fault-injection hook
  (``OCLD_FAULT``, inert in production) inside the snapshot protocol: between two chunk
  writes (``snapshot.after_chunk``), after the chunks and before the switch of ``latest``
  (``snapshot.before_switch``), after the switch (``snapshot.after_switch``), before the
  offset commit (``daemon.before_commit``), or after a batch (``daemon.after_batch``).

After every kill it restarts the daemon; the last run goes until the topic is consumed.
Drift adaptation is on, with each learner's shipped drift block (``drift`` of config/kalman.yaml
for KalmanHead: ADWIN plus a one-sided Page-Hinkley test; config/analytic.yaml for AnalyticRidge
and config/logistic.yaml for KalmanLogistic: ADWIN; all with a cooldown of 5,000 samples), and
every learner changes its state when it adapts (KalmanHead forgets faster for 500 samples, its
default; AnalyticRidge discounts its statistics by 0.01, as config/analytic.yaml;
KalmanLogistic inflates its covariances, its default). The stream's labels switch abruptly
(``switches``) so that the monitor fires. A restarted daemon restores the drift monitor's
exact state from the snapshot (ocld.core.detectors), so it adapts at the same samples as an
uninterrupted run.

The end state (the learner in the latest snapshot) is compared with

- the reference: ``LearningCore.from_config`` of the same config (learner and drift block) over
  all labelled records in stream order, in one batch, so adapting where the daemon must (the
  core adapts at multiples of ``drift.adapt_grid`` whatever the poll cut, and KalmanHead with
  fixed forgetting, AnalyticRidge and KalmanLogistic are batch-cut invariant), and
- in the long version, one uninterrupted daemon run of the same config;

the weights (KalmanHead ``M``, AnalyticRidge ``W``) must agree to 1e-9 absolutely, every
other float array of the learner state to 1e-9 absolutely or relatively for entries above 1
(running sums such as a standardizer's sum of squares reach ~1e5), and ``labelled_seen``
must equal the number of labelled records exactly.

Kill plan (seeded): each fault point and two external kills once, in random order, then
random ones; each kill lands within ``remaining / (kills left + 1)`` samples of the restart,
so kills are spread over the whole stream. The group re-forms in ~1 s after a SIGKILL
thanks to short session/poll timeouts in the crash config.

    python benchmarks/crash_equivalence.py                   # 100,000 records, 9 switches, 12 kills, 3 learners
    python benchmarks/crash_equivalence.py --records 20000 --kills 5 --learners KalmanHead
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The harness is test support (tests/crash.py), shared with tests/integration/test_crash.py.
from tests.crash import (  # noqa: E402
    final_state,
    make_stream,
    pipeline_config,
    reference_run,
    run_with_kills,
    shipped_drift,
    state_max_diff,
    weights_max_diff,
)
from tests.crash import status_of as _status  # noqa: E402

LEARNERS: dict[str, dict[str, Any]] = {
    "KalmanHead": {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False},
                   "features": [{"name": "Standardizer"},
                                {"name": "RandomFourierFeatures",
                                 "params": {"n_components": 48, "scale": 0.5, "seed": 0}}]},
    "AnalyticRidge": {"name": "AnalyticRidge", "params": {"expansion_size": 64, "seed": 0, "adapt_discount": 0.01},
                      "features": []},
    "KalmanLogistic": {"name": "KalmanLogistic", "params": {}, "features": [{"name": "Standardizer"}]},
}
# The shipped config whose drift block each learner runs with.
SHIPPED_DRIFT = {"KalmanHead": "kalman", "AnalyticRidge": "analytic", "KalmanLogistic": "logistic"}


def run_case(learner: str, spec: dict[str, Any], n: int, kills: int, seed: int, bootstrap: str, redis_url: str,
             work: Path, every_samples: int, uninterrupted: bool, verbose: bool = False,
             learner_process: bool = False, switches: int = 0) -> dict[str, Any]:
    """``learner_process``: the killed daemons learn in a child process (the uninterrupted one in-process).
    The learner runs with its shipped config's drift block (``SHIPPED_DRIFT``), adaptation on."""
    from tests.helpers import produce

    tag = f"c{seed}{learner[:2].lower()}{int(time.time() * 1000) % 10_000_000}"
    topic = f"{tag}.in"
    values, X, y = make_stream(n, seed, switches=switches)
    t0 = time.monotonic()
    produce(bootstrap, topic, values)
    produced_s = time.monotonic() - t0
    drift = shipped_drift(SHIPPED_DRIFT[learner])
    ref, events = reference_run(spec, X, y, drift)
    result: dict[str, Any] = {"learner": learner, "records": n, "labelled": len(y), "produce_s": round(produced_s, 1),
                              "drift_events": len(events), "adaptations": sum(a == "adapt" for _, _, a in events)}

    cfg_path = work / f"{tag}.yaml"
    cfg_path.write_text(orjson.dumps(pipeline_config(tag, topic, spec, every_samples, learner_process=learner_process,
                                                     drift=drift)).decode())
    t0 = time.monotonic()
    runs = run_with_kills(cfg_path, tag, bootstrap, redis_url, len(y), kills, seed, work / tag, verbose=verbose)
    state, info = final_state(redis_url, tag)
    result.update(runs=runs, kills=sum(r["rc"] == -signal.SIGKILL for r in runs),
                  killed_seconds=round(time.monotonic() - t0, 1), labelled_seen=int(info["labelled_seen"]),
                  status_labelled=_status(redis_url, tag).get("labelled_seen"),
                  max_diff_vs_reference=state_max_diff(state, ref),
                  weights_diff_vs_reference=weights_max_diff(state, ref))
    if uninterrupted:
        clean = f"{tag}u"
        cfg_u = work / f"{clean}.yaml"
        cfg_u.write_text(orjson.dumps(pipeline_config(clean, topic, spec, every_samples, drift=drift)).decode())
        t0 = time.monotonic()
        runs_u = run_with_kills(cfg_u, clean, bootstrap, redis_url, len(y), 0, seed, work / clean)
        assert runs_u[-1]["rc"] == 0
        state_u, info_u = final_state(redis_url, clean)
        result.update(uninterrupted_seconds=round(time.monotonic() - t0, 1),
                      uninterrupted_labelled=int(info_u["labelled_seen"]),
                      max_diff_vs_uninterrupted=state_max_diff(state, state_u),
                      uninterrupted_vs_reference=state_max_diff(state_u, ref))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--every-samples", type=int, default=5000)
    p.add_argument("--switches", type=int, default=9,
                   help="abrupt concept switches in the stream (every label shifts by one class at each)")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    p.add_argument("--no-uninterrupted", action="store_true", help="skip the uninterrupted daemon run")
    p.add_argument("--learner-process", action="store_true",
                   help="the killed daemons run with learner_process: true (the uninterrupted one learns in-process)")
    args = p.parse_args(argv)

    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

    def _interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds the context managers: servers and children stop

    signal.signal(signal.SIGTERM, _interrupted)

    rows = []
    with tempfile.TemporaryDirectory(prefix="ocld-crash-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(work / "broker") as broker, EmbeddedRedis(work / "redis") as redis_srv:
            for learner in args.learners:
                print(f"{learner}: {args.records:,} records, {args.switches} concept switches, {args.kills} kills "
                      f"(seed {args.seed}), drift block of config/{SHIPPED_DRIFT[learner]}.yaml", flush=True)
                res = run_case(learner, LEARNERS[learner], args.records, args.kills, args.seed, broker.bootstrap,
                               redis_srv.url, work,
                               args.every_samples, not args.no_uninterrupted, verbose=True,
                               learner_process=args.learner_process, switches=args.switches)
                rows.append(res)
    print()
    header = ("learner", "records", "labelled", "drift events (adapted)", "kills", "labelled_seen",
              "weights max|w-w_ref|",
              "state max diff vs ref*", "state max diff vs uninterrupted*", "killed runs s", "clean run s", "ok")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    ok_all = True
    for r in rows:
        ok = (r["labelled_seen"] == r["labelled"] and r["max_diff_vs_reference"] <= 1e-9 and r["adaptations"] > 0
              and r["weights_diff_vs_reference"] <= 1e-9
              and r.get("max_diff_vs_uninterrupted", 0.0) <= 1e-9 and r["kills"] >= args.kills)
        ok_all &= ok
        print(" | ".join(str(v) for v in (
            r["learner"], f"{r['records']:,}", f"{r['labelled']:,}", f"{r['drift_events']} ({r['adaptations']})",
            r["kills"],
            f"{r['labelled_seen']:,}",
            f"{r['weights_diff_vs_reference']:.2e}", f"{r['max_diff_vs_reference']:.2e}",
            f"{r.get('max_diff_vs_uninterrupted', float('nan')):.2e}",
            r["killed_seconds"], r.get("uninterrupted_seconds", "-"), "yes" if ok else "NO")))
    print("\n* every float array of the learner state; |a-b| / max(1, |b|): absolute for entries up to 1, relative "
          "for large running sums")
    print("kill modes:", ", ".join(sorted({run["mode"].split(":")[0] + ":" + run["mode"].split(":")[1]
                                             if run["mode"].startswith("fault") else run["mode"]
                                             for r in rows for run in r["runs"]})))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
