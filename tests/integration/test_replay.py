"""Replay files into a topic and record a topic back to a file, on the real broker."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time

import orjson
import pytest

from ocld.stream.config import KafkaConfig
from ocld.stream.daemon import Daemon
from ocld.stream.replay import record, replay
from tests.helpers import ROOT, read_topic

pytestmark = pytest.mark.integration


def test_replay_gzipped_csv_then_record_round_trips(broker, name, tmp_path):
    src = tmp_path / "s.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("id,a,b,ts,label\n")
        for i in range(300):
            fh.write(f"r{i},{i * 0.5},{-i},{1000 + i},{'up' if i % 3 else 'down'}\n")
    kafka = KafkaConfig(bootstrap=broker)
    assert replay(src, f"{name}.in", kafka, limit=250, progress=False) == 250
    out = tmp_path / "rec.jsonl"
    assert record(f"{name}.in", out, kafka, progress=False) == 250
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert lines[0] == {"x": [0.0, 0.0], "y": "down", "id": "r0", "ts": 1000.0}
    assert lines[249]["id"] == "r249" and lines[249]["y"] == "down" and lines[248]["y"] == "up"

    # The recorded JSON lines replay again unchanged (the CLI path, with a rate limit).
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ocld.stream.cli", "replay", str(out), "--topic", f"{name}.again",
                    "--bootstrap", broker, "--rate", "2000", "--quiet"], check=True, cwd=ROOT, capture_output=True)
    assert time.monotonic() - t0 >= 250 / 2000 * 0.9
    again = [orjson.loads(r.value) for r in read_topic(broker, f"{name}.again")]
    assert again == lines


def test_replay_speed_follows_the_time_column(broker, name, tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"x": [i], "y": 0, "ts": 100.0 + i * 0.5}) + b"\n" for i in range(5)))
    t0 = time.monotonic()
    assert replay(src, f"{name}.in", KafkaConfig(bootstrap=broker), speed=4.0, progress=False) == 5
    assert time.monotonic() - t0 >= 2.0 / 4.0 * 0.9  # 2 s of event time at 4x


def test_predictions_topic_gets_every_predict_only_record(make_config, broker, name):
    from tests.helpers import elec_records, encode_rows, produce

    # Predict-only rows use the model as it was before their batch: keep them out of the first batches.
    cfg = make_config(kafka={"predictions_topic": f"{name}.pred", "max_batch": 100})
    X, y = elec_records(300)
    values = encode_rows(X[:200], y[:200]) + [orjson.dumps({"x": X[i].tolist(), "id": f"q{i}"})
                                               for i in range(200, 300)]
    produce(broker, cfg.kafka.topic, values)
    summary = Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    assert summary["labelled_seen"] == 200
    preds = [orjson.loads(r.value) for r in read_topic(broker, f"{name}.pred")]
    assert len(preds) == 100
    assert sorted(p["offset"] for p in preds) == list(range(200, 300))
    assert all(p["id"] == f"q{p['offset']}" for p in preds), "predictions carry the record's id"
    assert all(p["y_pred"] in (0, 1) and abs(sum(p["proba"].values()) - 1) < 1e-9 for p in preds)
