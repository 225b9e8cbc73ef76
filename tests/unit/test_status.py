"""stream.status: the status is defined once; the Redis hash, the client's typed read, /metrics and the
README's table all come from it."""

from __future__ import annotations

from pathlib import Path

from ocld.stream.status import GROUPS, Status, StatusCollector, fields_by_group, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_holds_the_generated_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- status-fields:start -->\n", "\n<!-- status-fields:end -->"
    assert start in readme and end in readme, "README.md needs the status-fields markers"
    shown = readme[readme.index(start) + len(start):readme.index(end)]
    assert shown == markdown_table(), "regenerate the README's table: python -m ocld.stream.status"


def test_every_field_has_a_group_and_a_meaning() -> None:
    groups = fields_by_group()
    assert set(groups) == set(GROUPS) and all(groups.values())
    for name, info in Status.model_fields.items():
        assert info.description, name


def test_redis_round_trip_is_typed() -> None:
    st = Status(state="running", pid=12, accuracy=0.91, lag=None, partitions=["t[0]", "t[1]"],
                dlq_by_reason={"cannot decode json": 3}, incidents={"topic_reset": 1}, n_features=6,
                degraded=True, last_snapshot_at=1.5, forgetting=0.99)
    raw = {k.encode(): str(v).encode() for k, v in st.to_redis().items()}
    back = Status.from_redis(raw)
    assert back == st
    assert isinstance(back.pid, int) and isinstance(back.accuracy, float) and back.lag is None
    assert back.partitions == ["t[0]", "t[1]"] and back.degraded is True
    assert back.model_extra == {"forgetting": 0.99}
    assert Status.from_redis({b"width_source": b"12", b"host": b"007"}).host == "007"  # strings stay strings


def test_metrics_are_read_from_the_status() -> None:
    st = Status(records_seen=10, labelled_seen=8, dlq_by_reason={"x": 2}, lag=3, last_snapshot_at=None)
    families = {f.name: f for f in StatusCollector("p", lambda: st).collect()}
    assert families["ocld_records"].type == "counter" and families["ocld_records"].samples[0].value == 10
    assert families["ocld_consumer_lag_records"].samples[0].value == 3
    errors = families["ocld_errors"].samples
    assert [(s.labels["reason"], s.value) for s in errors] == [("x", 2.0)]
    assert list(StatusCollector("p", lambda: None).collect()) == []
