"""The learning core in a child process (``learner_process: true``, stream/worker.py): the same
results and state as the core in the daemon's process, its state calls, its errors, its signals,
and no learner left behind when the daemon is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from ocld.core.codec import Decoded
from ocld.core.runtime import LearningCore
from ocld.stream.config import parse_config
from ocld.stream.embedded import pid_alive
from ocld.stream.worker import LearnerProcessError, RemoteCore
from tests.helpers import ROOT, wait_until

CFG = {"learner": {"name": "KalmanHead", "params": {"g": [1.0, 0.99], "lr": 1e-4, "block_size": 64,
                                                   "adapt_restart": True, "adapt_samples": 50},
                   "features": [{"name": "Standardizer"}]},
       "drift": {"detector": "PageHinkley", "params": {"threshold": 5.0}, "adapt_grid": 50}}


def _polls(n: int = 3000, cut: int = 250) -> list[Decoded]:
    """Polls of a stream whose concept flips at 1,500 and gains a class at 900; every 7th row comes
    unlabelled with an id (label in the next poll), and each poll brings one label for an unknown id."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 4))
    w = [np.array([1.0, -1.0, 0.5, 0.0]), np.array([-1.0, 1.0, 0.0, 0.5])]
    y = ["c" if i >= 900 and X[i, 3] > 1.2 else ("a" if X[i] @ w[i >= 1500] > 0 else "b") for i in range(n)]
    polls, late = [], []
    for a in range(0, n, cut):
        b = min(n, a + cut)
        ys = [None if i % 7 == 3 else y[i] for i in range(a, b)]
        ids = [f"id{i}" if i % 7 == 3 else None for i in range(a, b)]
        ts = [float(i) for i in range(a, b)]
        polls.append(Decoded(rows=np.arange(b - a), X=X[a:b], y=ys, ids=ids, ts=ts, task=[None] * (b - a),
                             labels_only=late + [(b - a, "nobody", "a", float(b))]))
        late = [(b - a + 1 + k, f"id{i}", y[i], float(i + 5)) for k, i in enumerate(range(a, b)) if i % 7 == 3]
    return polls


def _summary(res) -> tuple:
    return ([(r, i, lab, p.tolist()) for r, i, lab, p in res.predictions], res.bad,
            [(e.index, e.detector, e.kind) for e in res.events], res.learned, res.errors.tolist())


def _clockless(d: dict) -> dict:
    """Without ``last_drift_at``, the wall-clock time of the last drift event."""
    assert d.get("last_drift_at", 1.0)  # when present, it is set
    return {k: v for k, v in d.items() if k != "last_drift_at"}


def _assert_same_parts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, sa in a.items():
        sb = b[key]
        assert _clockless(sa.meta) == _clockless(sb.meta), key
        assert sa.arrays.keys() == sb.arrays.keys(), key
        for name in sa.arrays:
            np.testing.assert_array_equal(sa.arrays[name], sb.arrays[name], err_msg=f"{key}.{name}")


def test_remote_core_learns_exactly_what_the_local_core_learns():
    cfg = parse_config(CFG)
    polls = _polls()
    local = LearningCore.from_config(cfg)
    expected = []
    for dec in polls:
        res = local.process(dec)
        expected.append((_summary(res), list(res.actions), list(local.learner.classes_)))
        assert res.actions == [local.action_for(e) for e in res.events]
    assert any(exp[0][2] for exp in expected), "the stream must raise drift events for this test to mean anything"
    assert any("adapt" in exp[1] for exp in expected)
    assert all(exp[0][1] for exp in expected)  # the unknown ids come back as bad records

    remote = RemoteCore(cfg)
    try:
        got = []
        for k, dec in enumerate(polls):  # pipelined as the daemon does: submit k, then collect k - 1
            remote.submit(dec)
            if k:
                res = remote.collect()
                got.append((_summary(res), list(res.actions), remote.classes))
        res = remote.collect()
        got.append((_summary(res), list(res.actions), remote.classes))
        assert remote.inflight == 0
        assert got == expected
        assert remote.labelled_seen == local.labelled_seen and remote.samples_seen == local.samples_seen
        assert remote.drift_count == local.drift_count
        assert _clockless(remote.status_fields()) == _clockless(local.status_fields())
        assert remote.summary() == local.metrics.summary()
        assert remote.learner_metrics() == {"forgetting": local.learner.head.forgetting_}
        parts = remote.to_parts()
        _assert_same_parts(parts, local.to_parts())

        # restore into a fresh core, then both continue on the same polls
        remote.reset()
        assert remote.labelled_seen == 0
        remote.restore(parts)
        assert remote.labelled_seen == local.labelled_seen
        for dec in polls[:3]:
            remote.submit(dec)
            assert _summary(remote.collect()) == _summary(local.process(dec))
        _assert_same_parts(remote.to_parts(), local.to_parts())
        with pytest.raises(RuntimeError, match="collect every submitted poll"):
            remote.submit(polls[0])
            remote.to_parts()
        remote.collect()
    finally:
        remote.close()
    assert not remote._proc.is_alive()


def test_an_error_in_the_learner_process_reaches_the_daemon():
    remote = RemoteCore(parse_config(CFG))
    try:
        dec = _polls()[0]
        remote.submit(dec)
        remote.collect()
        # SIGINT sent to the whole process group (Ctrl-C in a terminal) leaves the child serving: the daemon
        # still needs it for its final snapshot. The signal is pending from os.kill on, and the child takes
        # it before it can read the next poll, so a poll answered after it proves the child survived it.
        os.kill(remote._proc.pid, signal.SIGINT)
        remote.submit(dec)
        assert remote.collect().learned > 0
        assert remote._proc.is_alive()
        bad = Decoded(rows=np.arange(2), X=np.zeros((2, 5)), y=["a", "b"], ids=[None, None], ts=[None, None],
                      task=[None, None])
        remote.submit(bad)  # 5 features after 4: the learner refuses them
        with pytest.raises(LearnerProcessError, match="FeatureCountError"):
            remote.collect()
        assert remote.inflight == 0
        remote.submit(dec)  # the child goes on serving
        assert remote.collect().learned > 0
        remote.submit(dec)
    finally:
        remote.close()  # with a poll in flight: the child is stopped all the same
    assert not remote._proc.is_alive()


def test_a_sigkilled_daemon_leaves_no_learner_process():
    code = ("import os, signal\n"
            "from ocld.stream.config import parse_config\nfrom ocld.stream.worker import RemoteCore\n"
            "core = RemoteCore(parse_config({}))\nprint(core.labelled_seen, core._proc.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == -signal.SIGKILL, out.stderr
    seen, pid = (int(v) for v in out.stdout.split())
    assert seen == 0
    try:
        wait_until(lambda: not pid_alive(pid), 15, "the learner process to exit after its daemon was SIGKILLed",
                   every=0.2)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
