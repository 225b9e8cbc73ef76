"""What an operator does: start the embedded default, find it, read its status, stop it.

``ocld run`` on the embedded servers publishes their addresses (``stream.discovery``) while it runs;
``ocld env``, ``ocld status`` and the other commands find them without flags, and the entries are
gone once it stops. ``ocld status`` groups its fields and shows times as ISO and relative."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocld.stream.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_embedded_servers_are_found_while_the_daemon_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")}
    env["OCLD_RUN_DIR"] = str(tmp_path / "run")
    cfg = {"name": "opdemo", "messages": {"n_features": 6}, "kafka": {"topic": "ocld.opdemo"},
           "learner": {"name": "KalmanHead", "params": {"g": 0.999, "learn_g": False}}}
    (tmp_path / "op.yaml").write_text(orjson.dumps(cfg).decode())
    log = open(tmp_path / "run.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "ocld.stream.cli", "run", "op.yaml"], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        out = wait_until(lambda: (r := _cli(tmp_path, env, "env")).returncode == 0 and r, 60,
                         "ocld env to find the running daemon's servers")
        line = out.stdout.strip()
        assert line.startswith("export KAFKA_BOOTSTRAP=127.0.0.1:") and " REDIS_URL=redis://127.0.0.1:" in line
        assert "# pipeline opdemo" in line
        # status without --redis: found through the running daemon
        wait_until(lambda: "running" in _cli(tmp_path, env, "status", "opdemo", "--json").stdout, 60, "running")
        shown = _cli(tmp_path, env, "status", "opdemo")
        assert shown.returncode == 0, shown.stderr
        for group in ("health", "progress", "model quality", "data quality", "durability", "scale-out"):
            assert group in shown.stdout
        assert " s ago)" in shown.stdout and "lease" in shown.stdout
        # replay finds the broker too
        data = tmp_path / "rows.csv"
        data.write_text("a,b,c,d,e,f,y\n" + "".join(f"{i},{i},{i},{i},{i},{i},{i % 2}\n" for i in range(50)))
        rep = _cli(tmp_path, env, "replay", str(data), "--topic", "ocld.opdemo", "--quiet")
        assert rep.returncode == 0, rep.stderr
        wait_until(lambda: orjson.loads(_cli(tmp_path, env, "status", "opdemo", "--json").stdout)["opdemo"][
            "labelled_seen"] == 50, 60, "50 samples learned")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        log.close()
    assert daemon.returncode == 0
    assert not list((tmp_path / "run").glob("*.json")) and not (tmp_path / ".ocld" / "opdemo" / "servers.json").exists()
    gone = _cli(tmp_path, env, "env")
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "no daemon runs on embedded servers" in gone.stderr


def test_livez_says_whether_the_loop_moves(make_config, broker) -> None:
    """/livez: 200 while the loop moves (waiting for servers counts), 503 once it has been stuck for
    LOOP_STALL_S; /healthz (readiness) is another question."""
    import threading
    import time
    import urllib.error
    import urllib.request

    from ocld.stream.daemon import LOOP_STALL_S, Daemon

    def get(url: str) -> int:
        try:
            return urllib.request.urlopen(url, timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code

    daemon = Daemon(make_config(http={"port": 0}))
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False, "max_seconds": 60}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http is not None and daemon.state == "running", 60, "the daemon running")
        base = f"http://127.0.0.1:{daemon.http.port}"
        assert get(base + "/livez") == 200
    finally:
        daemon.stop()
        thread.join(60)
    assert daemon.state == "stopped" and daemon.liveness()["alive"]  # its loop ticked moments ago
    daemon.lease._tick = time.monotonic() - LOOP_STALL_S - 1  # as if the loop had hung that long
    assert not daemon.liveness()["alive"] and daemon.liveness()["loop_age_s"] > LOOP_STALL_S
    daemon.state = "starting"  # start-up waits (broker, Redis, lease) count as progress
    assert daemon.liveness()["alive"]
