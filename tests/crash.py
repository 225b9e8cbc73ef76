"""The crash-equivalence harness: a seeded stream, its one-pass reference, and ``ocld run``
SIGKILLed again and again until the stream is consumed.

Used by ``tests/integration/test_crash.py`` and ``test_outages.py`` (short runs) and by
``benchmarks/crash_equivalence.py`` (the long version, which describes the method in full).
Test support only: it never imports ``benchmarks``.

- ``make_stream``: labelled records on a slowly rotating linear concept, some predict-only and
  some undecodable records, optionally abrupt label switches (so that drift monitors fire);
- ``reference_run`` / ``reference_state``: ``LearningCore.from_config`` over every labelled record
  in stream order, in one batch;
- ``run_with_kills``: runs the daemon until the topic is consumed, SIGKILLing it first from outside
  (at a random ``labelled_seen``) and from inside the snapshot protocol (``OCLD_FAULT``, each of
  ``FAULT_POINTS``), restarting it after each kill;
- ``final_state``, ``state_max_diff``, ``weights_max_diff``: the end state and how far it is from
  the reference.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.helpers import ROOT, DaemonProcess, wait_until

FAULT_POINTS = ("snapshot.after_chunk", "snapshot.before_switch", "snapshot.after_switch",
                "daemon.before_commit", "daemon.after_batch")


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


def status_of(redis_url: str, name: str) -> dict[str, Any]:
    """The pipeline's status hash ({} while it cannot be read)."""
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
    cfg = orjson.loads(cfg_path.read_bytes())
    every_samples = int(cfg["snapshot"]["every_samples"])
    max_batch = int(cfg["kafka"]["max_batch"])
    daemon = DaemonProcess(cfg_path, bootstrap, redis_url, log_dir, label="run",
                           args=["--until-idle", "1.0", "--max-seconds", str(run_timeout)])
    runs: list[dict[str, Any]] = []
    killed = 0
    # Every fault point and the external kill come once, in a random order; further kills are drawn at random.
    plan = [f"fault:{p}" for p in FAULT_POINTS] + ["external", "external"]
    rng.shuffle(plan)
    max_runs = max_runs or 3 * kills + 3
    for attempt in range(max_runs):
        done = status_of(redis_url, name).get("labelled_seen", 0) or 0
        remaining = max(0, n_labelled - int(done))
        env: dict[str, str] = {}
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
        t0 = time.monotonic()
        daemon.start(env)
        try:
            if target is not None:
                def reached(target: int = target) -> bool:
                    st = status_of(redis_url, name)
                    return st.get("pid") == daemon.pid and int(st.get("labelled_seen") or 0) >= target

                # --max-seconds ends the run by run_timeout: the wait ends with the target or with the run
                wait_until(lambda: not daemon.running() or reached(), run_timeout + 30,
                           f"run {attempt} to learn {target} samples", every=0.01)
                if daemon.running():
                    time.sleep(rng.random() * 0.05)  # on purpose: the kill lands a random moment after the target
                    daemon.kill()
            rc = daemon.wait(timeout=run_timeout + 30)
        except BaseException:
            daemon.kill()
            raise
        after = _latest_labelled(redis_url, name)
        row = {"run": attempt, "mode": mode, "rc": rc, "seconds": round(time.monotonic() - t0, 2),
               "labelled_in_snapshot": after, "log": str(daemon.log_path)}
        runs.append(row)
        if verbose:
            print(f"  run {attempt:2d}  {mode:36s} rc={rc:4d}  {row['seconds']:6.1f} s  snapshot covers {after}",
                  flush=True)
        if rc == -signal.SIGKILL:
            killed += 1
            continue
        if rc != 0:
            raise RuntimeError(f"daemon exited with {rc}; see {daemon.log_path}:\n{daemon.log[-3000:]}")
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
