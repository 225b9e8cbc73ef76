"""Redis key layout: every key of a pipeline in one hash slot, and a pipeline written by an older ocld
(keys without hash tags) moved once, atomically, by its next daemon or by ``ocld migrate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis.crc import key_slot

from ocld.stream.client import StateClient
from ocld.stream.store import Keys, connect
from tests.helpers import elec_records, encode_rows, produce

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_every_key_of_a_pipeline_hashes_to_one_slot() -> None:
    flat = []
    for k in (Keys("kalman"), Keys("kalman", replica="r0"), Keys("kalman", replica="r1")):
        flat += [k.status, k.lease, k.latest, k.versions, k.pinned, k.metrics, k.drift, k.incidents, k.version,
                 k.chunk(3, 0), k.manifest(3), k.partition_offsets, k.partition_owners, k.partition_fingerprints,
                 k.partition_writers, k.replicas]
    assert all("{kalman}" in n for n in flat)
    assert len({key_slot(n.encode()) for n in flat}) == 1


def _to_old_layout(r, name: str) -> int:
    new_prefix, old_prefix = f"ocld:{{{name}}}:", f"ocld:{name}:"
    moved = 0
    for key in list(r.scan_iter(match=f"ocld:{{{name}}}:*")):
        r.rename(key, old_prefix + key.decode()[len(new_prefix):])
        moved += 1
    return moved


def test_a_pipeline_in_the_old_layout_is_moved_by_its_next_daemon(make_config, broker, redis_url):
    from ocld.stream.daemon import Daemon

    cfg = make_config(drift={"enabled": False})
    X, y = elec_records(2000)
    produce(broker, cfg.kafka.topic, encode_rows(X[:1000], y[:1000]))
    Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    r = connect(redis_url)
    client = StateClient(redis_url)
    version = client.snapshot_info(cfg.name)["latest"]["version"]
    assert _to_old_layout(r, cfg.name) > 5
    assert client.old_layout(cfg.name) and cfg.name not in client.pipelines()
    refused = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "status", cfg.name, "--redis", redis_url],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and f"ocld migrate {cfg.name}" in refused.stderr
    # The next daemon moves the keys, resumes from the old snapshot and learns only the new records.
    produce(broker, cfg.kafka.topic, encode_rows(X[1000:], y[1000:]))
    summary = Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 2000 and summary["model_version"] > version
    assert not client.old_layout(cfg.name) and cfg.name in client.pipelines()


def test_ocld_migrate_moves_the_keys_at_once(make_config, broker, redis_url):
    from ocld.stream.daemon import Daemon

    cfg = make_config(drift={"enabled": False})
    X, y = elec_records(500)
    produce(broker, cfg.kafka.topic, encode_rows(X, y))
    Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    r = connect(redis_url)
    n = _to_old_layout(r, cfg.name)
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "migrate", cfg.name, "--redis", redis_url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"moved {n} keys" in out.stdout, out.stderr
    assert StateClient(redis_url).status(cfg.name)["labelled_seen"] == 500
    # An older daemon still running (its heartbeat key alive): refused, nothing moved.
    _to_old_layout(r, cfg.name)
    r.set(f"ocld:{cfg.name}:alive", b'{"host": "h", "pid": 1}', ex=30)
    out = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "migrate", cfg.name, "--redis", redis_url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "older ocld still runs" in out.stderr
    assert StateClient(redis_url).old_layout(cfg.name)
