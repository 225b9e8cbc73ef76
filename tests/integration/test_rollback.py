"""Drift history and rollback on a real broker and Redis.

Rule under test (stream/client.py): ``ocld rollback P --to V`` switches ``latest`` to V
and takes effect at the daemon's next start, which seeks to V's offsets and learns every
record after them again, exactly once; it refuses while the heartbeat says a daemon runs.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ocld.stream.client import RollbackRefused, StateClient
from ocld.stream.daemon import Daemon
from ocld.stream.store import Keys
from tests.helpers import ROOT, elec_records, encode_rows, produce

pytestmark = pytest.mark.integration


def _run(cfg):
    return Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)


class _Out:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, redis_url):
    """Run ``ocld ARGS --redis URL`` in-process (the same main() as the console script)."""
    from ocld.stream.cli import main

    def _call(*args: str) -> _Out:
        capsys.readouterr()
        code = main([*args, "--redis", redis_url])
        out = capsys.readouterr()
        return _Out(code, out.out, out.err)

    return _call


def test_rollback_then_restart_relearns_after_the_old_offsets(make_config, broker, redis_url, cli):
    cfg = make_config(drift={"enabled": False}, snapshot={"every_samples": 1000, "every_seconds": 60, "keep": 5},
                      kafka={"max_batch": 250})
    X, y = elec_records(4000)
    produce(broker, cfg.kafka.topic, encode_rows(X[:3000], y[:3000]))
    assert _run(cfg)["labelled_seen"] == 3000
    client = StateClient(redis_url)
    info = client.snapshot_info(cfg.name)
    older = [v for v in info["versions"] if v != info["latest"]["version"]]
    assert older, info
    target = min(older)
    meta = client.store(cfg.name).manifest_info(target)
    v_count = meta["info"]["labelled_seen"]
    v_offset = meta["offsets"][cfg.kafka.topic]["0"]
    assert 0 < v_count < 3000 and v_offset == v_count

    # Refused while a daemon holds the pipeline's lease; --force takes it.
    keys = Keys(cfg.name)
    client.r.set(keys.lease, b'{"token": "t", "host": "h", "pid": 1, "role": "daemon"}', ex=30)
    with pytest.raises(RollbackRefused, match="running daemon"):
        client.rollback(cfg.name, target)
    refused = cli("rollback", cfg.name, "--to", str(target))
    assert refused.returncode == 2 and "Stop it" in refused.stderr
    client.r.delete(keys.lease)
    with pytest.raises(RollbackRefused, match="no complete snapshot version 999"):
        client.rollback(cfg.name, 999)

    done = cli("rollback", cfg.name, "--to", str(target))
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert out["version"] == target and out["offsets"] == {cfg.kafka.topic: {"0": v_offset}}
    assert client.store(cfg.name).latest_version() == target

    # Restart: resumes from the rolled-back version and re-learns everything after its offsets.
    produce(broker, cfg.kafka.topic, encode_rows(X[3000:], y[3000:]))
    daemon = Daemon(cfg)
    summary = daemon.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == v_count + (4000 - v_offset) == 4000
    reference = cfg.build_learner()
    reference.learn_predict(X, np.array(y, dtype=object))
    np.testing.assert_allclose(daemon.core.learner.predict_proba(X[:300]), reference.predict_proba(X[:300]), atol=1e-9)
    assert client.store(cfg.name).latest_version() > info["latest"]["version"], "new versions continue the counter"


def _flip_records(n: int, flip_at: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(0)
    X = rng.random((n, 6))
    y = (X[:, 0] + X[:, 1] > 1.0).astype(int)
    y[flip_at:] = 1 - y[flip_at:]
    return X, y.tolist()


def test_drift_is_recorded_published_pinned_and_listed(make_config, broker, redis_url, cli):
    cfg = make_config(snapshot={"every_samples": 500, "every_seconds": 60, "keep": 1},
                      drift={"enabled": True, "adapt": True, "input": {"enabled": True}}, kafka={"max_batch": 250})
    X, y = _flip_records(4000, 2000)
    X[2000:, 5] += 0.5  # an input shift at the same point
    client = StateClient(redis_url)
    pubsub = client.r.pubsub()
    pubsub.subscribe(Keys(cfg.name).events)
    produce(broker, cfg.kafka.topic, encode_rows(X, y))
    summary = _run(cfg)
    assert summary["labelled_seen"] == 4000

    events = client.drift_events(cfg.name)
    kinds = {e["kind"] for e in events}
    assert kinds == {"error", "input"}, events
    error = [e for e in events if e["kind"] == "error"]
    assert any(2000 <= e["index"] <= 2500 for e in error), error
    assert all(e["action"] == "adapt" for e in error)
    assert all(e["action"] == "none" for e in events if e["kind"] == "input")  # input adaptation is off by default
    status = client.status(cfg.name)
    assert status["drift_count"] == len(events)
    assert status["drift_count_error"] == len(error) and status["drift_count_input"] == len(events) - len(error)

    messages = []
    while (m := pubsub.get_message(timeout=0.2)) is not None or not messages:
        if m is None:
            break
        if m["type"] == "message":
            messages.append(m["data"].decode())
    assert any(msg.startswith("drift ") for msg in messages), messages

    # The snapshot taken just before each adaptation is kept although keep=1.
    info = client.snapshot_info(cfg.name)
    pinned = {int(e["pinned_version"]) for e in error if e["pinned_version"] != ""}
    assert pinned and pinned <= set(info["pinned"]) and pinned <= set(info["versions"])

    listed = cli("query", cfg.name, "--drift")
    assert listed.returncode == 0
    assert [e["index"] for e in orjson.loads(listed.stdout)] == [e["index"] for e in events]

    # Roll back to the pinned pre-adaptation snapshot; the next start resumes there.
    target = min(pinned)
    back = client.rollback(cfg.name, target)
    assert back["labelled_seen"] < 2500
    again = Daemon(cfg)
    again.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert again.core.labelled_seen == 4000  # V's count + every record after V's offsets, once

    png = ROOT / ".pytest_report.png"
    try:
        drawn = cli("report", cfg.name, "--out", str(png))
        assert drawn.returncode == 0, drawn.stderr
        assert png.stat().st_size > 10_000
    finally:
        png.unlink(missing_ok=True)
