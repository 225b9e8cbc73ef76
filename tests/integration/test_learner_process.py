"""``learner_process: true`` end to end on a real broker and Redis: the daemon reads while a child
process learns, and ends in the same state, outputs and records as a daemon that learns itself."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ocld.stream.client import StateClient
from ocld.stream.daemon import Daemon
from ocld.stream.store import SnapshotStore, connect
from ocld.stream.worker import RemoteCore
from tests.helpers import elec_records, encode_rows, produce, read_topic

pytestmark = pytest.mark.integration


def _stream() -> list[bytes]:
    """elec rows with a concept flip (labels swapped from 2,500 on), malformed records, predict-only
    records with ids whose labels arrive later, and a label for an id nobody sent."""
    X, y = elec_records(4000)
    y = [lab if i < 2500 else 1 - lab for i, lab in enumerate(y)]
    values = []
    for i, v in enumerate(encode_rows(X[:3600], y[:3600])):
        values.append(v)
        if i % 450 == 0:
            values.append(b'{"x": [1, 2], "y": 1}')
    values += [orjson.dumps({"x": X[3600 + i].tolist(), "id": f"s{i}", "ts": 100.0 + i}) for i in range(400)]
    values += [orjson.dumps({"id": f"s{i}", "y": y[3600 + i], "ts": 105.0 + i}) for i in range(400)]
    values.append(orjson.dumps({"id": "nobody", "y": 1}))
    return values


def _arrays(state, prefix=""):
    out = {f"{prefix}{k}": np.asarray(v) for k, v in state.arrays.items()}
    for k, child in state.children.items():
        out.update(_arrays(child, f"{prefix}{k}/"))
    return out


def test_learning_in_a_child_process_gives_the_same_pipeline(make_config, broker, redis_url):
    values = _stream()
    base = make_config()
    topic = base.kafka.topic
    produce(broker, topic, values)
    runs = {}
    for on in (False, True):
        name = f"{base.name}-{'child' if on else 'self'}"
        cfg = make_config(name=name, learner_process=on,
                          kafka={"topic": topic, "predictions_topic": f"{name}.pred", "dlq_topic": f"{name}.dlq"},
                          snapshot={"every_samples": 700, "every_seconds": 60})
        daemon = Daemon(cfg)
        assert isinstance(daemon.core, RemoteCore) == on
        summary = daemon.run(until_idle_s=0.5, max_seconds=120, install_signals=False)
        if on:
            assert not daemon.core._proc.is_alive()  # stopped with the daemon
        snap = SnapshotStore(connect(redis_url), name).load_latest()
        assert snap is not None
        runs[on] = {
            "summary": summary, "snap": snap, "status": StateClient(redis_url).status(name),
            "drift": [(e["index"], e["detector"], e["action"]) for e in StateClient(redis_url).drift_events(name)],
            "dlq": [(dict(r.headers)["ocld.reason"], r.value) for r in read_topic(broker, cfg.dlq_topic)],
            "pred": [orjson.loads(r.value) for r in read_topic(broker, f"{name}.pred")],
        }
    a, b = runs[False], runs[True]
    assert a["summary"]["labelled_seen"] == b["summary"]["labelled_seen"] == 4000
    for key in ("samples_seen", "accuracy", "log_loss", "dlq_count", "drift_count", "records_seen"):
        assert a["summary"][key] == b["summary"][key], key
    assert a["snap"].offsets == b["snap"].offsets == {topic: {0: len(values)}}
    assert any(action == "adapt" for *_, action in a["drift"]), "the flip must trigger an adaptation"
    assert a["drift"] == b["drift"]
    assert len(a["dlq"]) == 9 and a["dlq"] == b["dlq"]  # 8 malformed, 1 unknown id
    assert len(a["pred"]) == 400 and a["pred"] == b["pred"]
    for key in ("predicted", "delayed_labels", "pending", "accuracy_total", "balanced_accuracy", "forgetting"):
        assert a["status"].get(key) == b["status"].get(key), key
    for part in a["snap"].parts:
        left, right = _arrays(a["snap"].parts[part]), _arrays(b["snap"].parts[part])
        assert left.keys() == right.keys(), part
        for k in left:
            np.testing.assert_array_equal(left[k], right[k], err_msg=f"{part}:{k}")
