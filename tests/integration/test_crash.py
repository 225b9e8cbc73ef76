"""Crash equivalence on a real broker and Redis: the daemon runs as a child process and is
SIGKILLed at random moments (from outside, and from inside the snapshot protocol through
the ``OCLD_FAULT`` hook), restarted each time, and must end in the state of one
uninterrupted pass: weights within 1e-9, ``labelled_seen`` exact. A SIGTERM stops it
cleanly with a final snapshot that covers everything it consumed.

Drift adaptation is on, with the drift block of the shipped config of each learner
(config/kalman.yaml, analytic.yaml, logistic.yaml), and each learner changes when it adapts; the
uninterrupted pass is the learning core over all labelled records, so it adapts too. A
restarted daemon must adapt at the same samples: the drift monitor's exact state is in the
snapshot. Each stream is chosen so that the uninterrupted pass adapts (checked).

The harness is ``tests/crash.py``. The long version (100,000 records, 12 kills, three learners,
compared with an uninterrupted daemon run as well) is ``python benchmarks/crash_equivalence.py``.
"""

from __future__ import annotations

import signal
import subprocess

import orjson
import pytest

from ocld.stream.client import StateClient
from tests.crash import (
    FAULT_POINTS,
    final_state,
    make_stream,
    pipeline_config,
    reference_run,
    reference_state,
    run_with_kills,
    shipped_drift,
    state_max_diff,
    weights_max_diff,
)
from tests.helpers import ROOT, DaemonProcess, produce, wait_until, write_config

pytestmark = pytest.mark.integration

# Each learner adapts: KalmanHead forgets faster for 500 samples (its default adapt_samples),
# AnalyticRidge discounts its statistics (adapt_discount 0.01, as config/analytic.yaml),
# KalmanLogistic inflates its covariances (its default adapt_inflation).
KALMAN = {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False}, "features": [{"name": "Standardizer"}]}
RIDGE = {"name": "AnalyticRidge", "params": {"expansion_size": 32, "seed": 0, "adapt_discount": 0.01}, "features": []}
LOGISTIC = {"name": "KalmanLogistic", "params": {}, "features": [{"name": "Standardizer"}]}


# Streams (``switches``: abrupt concept changes): in the first three a detection depends on the detector's
# history (Page-Hinkley's running sums; ADWIN's long window on the slow rotation); KalmanLogistic's adapts
# right after a switch, then records cooldown events and counts detections where the error fell.
# Together the four take about a minute and a half: a plain ./scripts/test runs the quickest (about 15 s),
# ./scripts/test --all (CI) all four.
SLOW = pytest.mark.slow


@pytest.mark.parametrize("spec, config, n, switches, kills, seed, child", [
    pytest.param(KALMAN, "kalman", 12_000, 0, 5, 3, False, id="KalmanHead", marks=SLOW),
    pytest.param(RIDGE, "analytic", 8_000, 0, 4, 5, False, id="AnalyticRidge", marks=SLOW),
    pytest.param(KALMAN, "kalman", 8_000, 4, 4, 11, True, id="KalmanHead-learner-process"),
    pytest.param(LOGISTIC, "logistic", 8_000, 3, 4, 7, False, id="KalmanLogistic", marks=SLOW),
])
def test_sigkill_at_random_moments_ends_in_the_uninterrupted_state(spec, config, n, switches, kills, seed, child,
                                                                   broker, redis_url, name, tmp_path):
    """With adaptation on (the drift block of ``config``). ``child``: with ``learner_process: true``
    (the SIGKILL hits the daemon; its learner process must not matter)."""
    values, X, y = make_stream(n, seed, switches=switches)
    drift = shipped_drift(config)
    reference, events = reference_run(spec, X, y, drift)
    assert [a for _, _, a in events].count("adapt") >= 1, events  # the crash runs must adapt to mean anything
    topic = f"{name}.in"
    produce(broker, topic, values)
    cfg = pipeline_config(name, topic, spec, every_samples=n // 10, drift=drift)
    cfg["learner_process"] = child
    cfg_path = write_config(tmp_path / "cfg.yaml", cfg)

    runs = run_with_kills(cfg_path, name, broker, redis_url, len(y), kills, seed, tmp_path / "logs", run_timeout=90)
    modes = [r["mode"] for r in runs]
    assert sum(r["rc"] == -signal.SIGKILL for r in runs) >= kills - 1, modes
    assert any(m.startswith("fault:snapshot.") or m.startswith("fault:daemon.before_commit") for m in modes) or \
        kills < 3, modes

    state, info = final_state(redis_url, name)
    assert info["labelled_seen"] == len(y)  # exactly once: none lost, none twice
    status = StateClient(redis_url).status(name)
    assert status["labelled_seen"] == len(y)
    assert status["drift_count_error"] == len(events)  # the same detections as the uninterrupted pass
    assert weights_max_diff(state, reference) <= 1e-9
    assert state_max_diff(state, reference) <= 1e-9  # every array, relative for large running sums


def test_fault_points_cover_the_snapshot_protocol():
    assert {"snapshot.after_chunk", "snapshot.before_switch", "snapshot.after_switch",
            "daemon.before_commit"} <= set(FAULT_POINTS)


def test_sigterm_stops_cleanly_with_a_final_snapshot(broker, redis_url, name, tmp_path):
    # 50,000 records: on a fast machine the daemon learned all of 5,000 before its first status write showed
    # 1,000 (status every 0.1 s), so the SIGTERM came after the end of the stream.
    values, X, y = make_stream(50_000, 11)
    topic = f"{name}.in"
    produce(broker, topic, values)
    drift = shipped_drift("kalman")
    cfg_path = write_config(tmp_path / "cfg.yaml", pipeline_config(name, topic, KALMAN, every_samples=1_000_000,
                                                                   drift=drift))
    daemon = DaemonProcess(cfg_path, broker, redis_url, tmp_path / "logs",
                           args=["--until-idle", "1.0", "--max-seconds", "90"])
    client = StateClient(redis_url)

    def learned_1000() -> bool:
        st = client.status(name)
        return daemon.alive() and st.get("pid") == daemon.pid and (st.get("labelled_seen") or 0) >= 1000

    daemon.start()
    try:
        wait_until(learned_1000, 90, "the daemon to learn 1,000 samples", every=0.01)
        rc = daemon.term(timeout=60)
    finally:
        daemon.kill()
    assert rc == 0, daemon.log[-2000:]
    assert "received SIGTERM" in daemon.log
    status = client.status(name)
    assert status["state"] == "stopped"
    assert 1000 <= status["labelled_seen"] < len(y), "stopped mid-stream"
    # The final snapshot covers everything consumed: nothing learned in memory was lost.
    _, info = final_state(redis_url, name)
    assert info["labelled_seen"] == status["labelled_seen"] == orjson.loads(daemon.stdout)["labelled_seen"]
    offsets = client.snapshot_info(name)["latest"]["offsets"]
    assert int(offsets[topic]["0"]) == info["records_seen"]
    assert status["model_version"] == info["version"]

    done = subprocess.run(daemon.cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    state, info = final_state(redis_url, name)
    assert info["labelled_seen"] == len(y)
    assert state_max_diff(state, reference_state(KALMAN, X, y, drift)) <= 1e-9
