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
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAULT_POINTS = ("snapshot.after_chunk", "snapshot.before_switch", "snapshot.after_switch",
                "daemon.before_commit", "daemon.after_batch")

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
ADAPT_OFF: dict[str, Any] = {"enabled": True, "adapt": False}


def shipped_drift(config: str) -> dict[str, Any]:
    """The ``drift`` block of ``config/{config}.yaml`` as shipped (every field, defaults included)."""
    from ocld.stream.config import load_config

    return load_config(ROOT / "config" / f"{config}.yaml").drift.model_dump()


def make_stream(n: int, seed: int = 0, d: int = 8, n_classes: int = 3, unlabelled: float = 0.05,
                bad: float = 0.005, switches: int = 0) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """-> (record values, X of the labelled records, their labels). A slowly rotating
    linear concept, some predict-only records (no y) and some undecodable ones. ``switches``:
    abrupt concept changes at evenly spaced records, each shifting every label by one class
    (the same draws otherwise, so ``switches=0`` is the stream without them)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W0, W1 = rng.normal(size=(d, n_classes)), rng.normal(size=(d, n_classes))
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    W = (1 - t) * W0 + t * W1
    y = np.argmax(np.einsum("nd,ndc->nc", X, W) + 0.3 * rng.normal(size=(n, n_classes)), axis=1)
    y = (y + np.arange(n) * (switches + 1) // n) % n_classes
    kind = rng.random(n)
    values: list[bytes] = []
    lab_idx: list[int] = []
    for i in range(n):
        if kind[i] < bad:
            values.append(b'{"x": [1, 2], "y": 0}' if i % 2 else b"\xff not json")
        elif kind[i] < bad + unlabelled:
            values.append(orjson.dumps({"x": X[i].tolist()}))
        else:
            values.append(orjson.dumps({"x": X[i].tolist(), "y": int(y[i])}))
            lab_idx.append(i)
    return values, X[lab_idx], y[lab_idx]


def pipeline_config(name: str, topic: str, learner: dict[str, Any], every_samples: int,
                    chunk_bytes: int = 4096, learner_process: bool = False,
                    drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config for the crash runs. Short session/poll timeouts let the group re-form in
    about a second after a SIGKILLed member (the defaults take ~10 s on tansu). ``drift``: the
    drift block (default: the monitor runs, adaptation off)."""
    cfg: dict[str, Any] = {
        "name": name,
        "learner": learner,
        "kafka": {"topic": topic, "max_batch": 500, "max_wait_ms": 50, "create_topics": True,
                  "session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 2000},
        "snapshot": {"every_samples": every_samples, "every_seconds": 3600, "keep": 3, "chunk_bytes": chunk_bytes},
        "messages": {"n_features": 8},
        "drift": drift or ADAPT_OFF,
        "status": {"interval_s": 0.1, "metrics_every_s": 1.0},
        "learner_process": learner_process,
    }
    return cfg


def learner_arrays(state: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Every float array of a LearnerState tree, by path."""
    out = {}
    for k, a in state.arrays.items():
        if np.asarray(a).dtype.kind == "f":
            out[f"{prefix}{k}"] = np.asarray(a)
    for k, child in state.children.items():
        out.update(learner_arrays(child, f"{prefix}{k}/"))
    return out


def state_max_diff(a: Any, b: Any, path: str | None = None) -> float:
    """max |a - b| / max(1, |b|) over every float array of two learner states (inf if shapes differ).

    Absolute for entries up to 1 in magnitude (the weights), relative above: running sums
    such as the standardizer's sum of squares reach ~1e5 after 100,000 samples, where the
    summation order of a different batch cut moves the last bits by ~3e-9 absolutely
    (3e-14 relatively); the weights themselves agree to ~1e-13. ``path`` restricts the
    comparison to the arrays whose path ends with it (e.g. ``"/M"``).
    """
    fa, fb = learner_arrays(a), learner_arrays(b)
    if fa.keys() != fb.keys():
        return float("inf")
    worst = 0.0
    for k in fa:
        if path is not None and not k.endswith(path):
            continue
        if fa[k].shape != fb[k].shape:
            return float("inf")
        if fa[k].size:
            worst = max(worst, float(np.max(np.abs(fa[k] - fb[k]) / np.maximum(1.0, np.abs(fb[k])))))
    return worst


def weights_max_diff(a: Any, b: Any) -> float:
    """max |w - w_ref| over the weight arrays (KalmanHead ``M``, AnalyticRidge ``W``)."""
    fa, fb = learner_arrays(a), learner_arrays(b)
    keys = [k for k in fa if k.rsplit("/", 1)[-1] in ("M", "W")]
    assert keys, "no weight array found"
    return max(float(np.max(np.abs(fa[k] - fb[k]))) if fa[k].size else 0.0 for k in keys)


def reference_run(spec: dict[str, Any], X: np.ndarray, y: np.ndarray,
                  drift: dict[str, Any] | None = None) -> tuple[Any, list[tuple[int, str, str]]]:
    """One uninterrupted pass of the learning core (``LearningCore.from_config`` with this learner and
    drift block) over all labelled records, in one batch: (the learner's state, every drift event as
    (labelled index, detector, action))."""
    from ocld.core.codec import Decoded
    from ocld.core.runtime import LearningCore
    from ocld.stream.config import parse_config

    core = LearningCore.from_config(parse_config({"learner": spec, "drift": drift or ADAPT_OFF,
                                                  "messages": {"n_features": X.shape[1]}}))
    n = len(y)
    res = core.process(Decoded(rows=np.arange(n), X=X, y=[int(v) for v in y], ids=[None] * n, ts=[None] * n,
                               task=[None] * n))
    assert res.learned == n
    return core.learner.to_state(), [(e.index, e.detector, core.action_for(e)) for e in res.events]


def reference_state(spec: dict[str, Any], X: np.ndarray, y: np.ndarray, drift: dict[str, Any] | None = None) -> Any:
    """The learner after ``reference_run``."""
    return reference_run(spec, X, y, drift)[0]


def _status(redis_url: str, name: str) -> dict[str, Any]:
    from ocld.stream.client import StateClient

    try:
        return StateClient(redis_url).status(name)
    except Exception:
        return {}


def run_with_kills(cfg_path: Path, name: str, bootstrap: str, redis_url: str, n_labelled: int, kills: int,
                   seed: int, log_dir: Path, max_runs: int | None = None, run_timeout: float = 300.0,
                   verbose: bool = False) -> list[dict[str, Any]]:
    """Run the daemon until the topic is consumed, SIGKILLing it ``kills`` times first.

    Returns one row per run: mode, return code, labelled samples in the latest snapshot
    after the run. Bounded: at most ``max_runs`` runs (default 3 * kills + 3)."""
    rng = random.Random(seed)
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = orjson.loads(cfg_path.read_bytes())
    every_samples = int(cfg["snapshot"]["every_samples"])
    max_batch = int(cfg["kafka"]["max_batch"])
    cmd = [sys.executable, "-m", "ocld.stream.cli", "run", str(cfg_path), "--bootstrap", bootstrap, "--redis",
           redis_url, "--until-idle", "1.0", "--max-seconds", str(run_timeout)]
    runs: list[dict[str, Any]] = []
    killed = 0
    # Every fault point and the external kill come once, in a random order; further kills are drawn at random.
    plan = [f"fault:{p}" for p in FAULT_POINTS] + ["external", "external"]
    rng.shuffle(plan)
    max_runs = max_runs or 3 * kills + 3
    for attempt in range(max_runs):
        done = _status(redis_url, name).get("labelled_seen", 0) or 0
        remaining = max(0, n_labelled - int(done))
        env = {k: v for k, v in os.environ.items() if k != "OCLD_FAULT"}
        mode = "final"
        target = None
        # Spread the kills over what is left: each lands within ``span`` samples of the restart.
        span = max(1, remaining // (kills - killed + 1)) if killed < kills else 0
        if killed < kills and remaining > every_samples:
            mode = (plan[killed] if killed < len(plan)
                    else rng.choice(["external"] + [f"fault:{p}" for p in FAULT_POINTS]))
            if mode.startswith("fault:"):
                # the k-th hit of the point (snapshots come every ``every_samples`` labelled samples)
                point = mode.split(":", 1)[1]
                if point == "daemon.after_batch":
                    count = rng.randint(1, max(1, span // max_batch))
                elif point == "snapshot.after_chunk":
                    count = rng.randint(1, 3)
                else:
                    count = rng.randint(1, max(1, span // every_samples))
                env["OCLD_FAULT"] = f"{point}:{count}"
                mode = f"{mode}:{count}"
            else:
                # a random number of samples into what is left
                target = int(done) + rng.randint(1, max(2, span))
        log_path = log_dir / f"run{attempt:02d}.log"
        t0 = time.monotonic()
        with open(log_path, "wb") as log_fh:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT)
            try:
                if target is not None:
                    deadline = time.monotonic() + run_timeout
                    while proc.poll() is None and time.monotonic() < deadline:
                        st = _status(redis_url, name)
                        if st.get("pid") == proc.pid and int(st.get("labelled_seen") or 0) >= target:
                            time.sleep(rng.random() * 0.05)
                            proc.send_signal(signal.SIGKILL)
                            break
                        time.sleep(0.01)
                rc = proc.wait(timeout=run_timeout + 30)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        after = _latest_labelled(redis_url, name)
        row = {"run": attempt, "mode": mode, "rc": rc, "seconds": round(time.monotonic() - t0, 2),
               "labelled_in_snapshot": after, "log": str(log_path)}
        runs.append(row)
        if verbose:
            print(f"  run {attempt:2d}  {mode:36s} rc={rc:4d}  {row['seconds']:6.1f} s  snapshot covers {after}",
                  flush=True)
        if rc == -signal.SIGKILL:
            killed += 1
            continue
        if rc != 0:
            raise RuntimeError(f"daemon exited with {rc}; see {log_path}:\n{log_path.read_text()[-3000:]}")
        if mode == "final" or (after or 0) >= n_labelled:
            if (after or 0) >= n_labelled and killed >= kills:
                break
            if mode == "final":
                break
    return runs


def _latest_labelled(redis_url: str, name: str) -> int | None:
    from ocld.stream.store import SnapshotStore, connect

    r = connect(redis_url)
    v = SnapshotStore(r, name).latest_version()
    if v is None:
        return None
    return int(SnapshotStore(r, name).manifest_info(v)["info"].get("labelled_seen", 0))


def final_state(redis_url: str, name: str) -> tuple[Any, dict[str, Any]]:
    """(learner state of the latest snapshot, its info)."""
    from ocld.stream.store import SnapshotStore, connect

    snap = SnapshotStore(connect(redis_url), name).load_latest()
    assert snap is not None, f"pipeline {name} has no snapshot"
    return snap.parts["learner"], snap.info


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
