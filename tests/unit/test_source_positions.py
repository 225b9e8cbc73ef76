"""KafkaSource's position checks against an in-memory consumer that implements the Consumer
Protocol (stream/consumers.py): which records of a poll count as consumed, and when a log is
declared replaced.

The case that matters: librdkafka's ``consume`` can return records it fetched before a rebalance
in the same call that serves the rebalance. When the partition is assigned here again, those
records continue the old position, and the consumer then fetches them again from the claimed
position (one record back, for the fingerprint check). Before this was handled, the second
delivery looked like "the log went back": the partition was learned again from offset 0, a
silent double count (seen once in CI: 16,000 records learned for a 10,000-record partition).
The end-to-end scenario is tests/integration/test_scaleout.py; here each rule is pinned.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ocld.stream.config import parse_config
from ocld.stream.consumers import fingerprint_of
from ocld.stream.source import KafkaSource

TP = ("t", 0)


def record(offset: int, log: str = "a") -> tuple[int, bytes]:
    return offset, f"{log}-{offset}".encode()


def fp(offset: int, log: str = "a") -> str:
    return fingerprint_of(1000 + offset, None, f"{log}-{offset}".encode())


class ListBatch:
    """A Batch of (offset, value) records; timestamps 1000 + offset."""

    def __init__(self, recs: list[tuple[int, bytes]]) -> None:
        self.recs = recs
        self.values: list[bytes | None] = [v for _, v in recs]

    def __len__(self) -> int:
        return len(self.recs)

    @property
    def first_offset(self) -> int:
        return self.recs[0][0]

    @property
    def last_offset(self) -> int:
        return self.recs[-1][0]

    def offsets(self) -> list[int]:
        return [o for o, _ in self.recs]

    def fingerprint(self, i: int) -> str:
        o, v = self.recs[i]
        return fingerprint_of(1000 + o, None, v)

    def drop(self, n: int = 1) -> ListBatch:
        return ListBatch(self.recs[n:])


class ScriptedConsumer:
    """Hands over the batches queued with :meth:`deliver`, one per poll; records every seek."""

    def __init__(self) -> None:
        self.queue: list[dict[tuple[str, int], ListBatch]] = []
        self.seeks: list[tuple[tuple[str, int], int | str]] = []
        self.assigned: set[tuple[str, int]] = set()
        self.on_assign: Callable[[list[tuple[str, int]]], None] | None = None
        self.on_revoke: Callable[[list[tuple[str, int]]], None] = lambda tps: None
        self.hw: int | None = 100_000

    def subscribe(self, topic, on_assign, on_revoke) -> None:  # noqa: ANN001
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def revoke(self, tps: list[tuple[str, int]]) -> None:
        self.on_revoke(tps)
        self.assigned -= set(tps)

    def assign(self, tps: list[tuple[str, int]]) -> None:
        self.assigned = set(tps)
        assert self.on_assign is not None
        self.on_assign(tps)

    def deliver(self, recs: list[tuple[int, bytes]]) -> None:
        self.queue.append({TP: ListBatch(recs)})

    def poll(self, timeout_ms: int, max_records: int) -> dict[tuple[str, int], ListBatch]:
        return self.queue.pop(0) if self.queue else {}

    def seek(self, tp, offset) -> None:  # noqa: ANN001
        self.seeks.append((tp, offset))

    def pause(self, tps) -> None:  # noqa: ANN001
        pass

    def resume(self, tps) -> None:  # noqa: ANN001
        pass

    def assignment(self) -> set[tuple[str, int]]:
        return set(self.assigned)

    def highwater(self, tp) -> int | None:  # noqa: ANN001
        return self.hw

    def log_start(self, tp, timeout_ms) -> int | None:  # noqa: ANN001
        return 0

    def commit(self, offsets) -> None:  # noqa: ANN001
        pass

    def reconnected(self) -> bool:
        return False

    def close(self) -> None:
        pass


@pytest.fixture
def source(monkeypatch):
    consumer = ScriptedConsumer()
    monkeypatch.setattr("ocld.stream.source.make_consumer", lambda *a, **k: consumer)
    claims: dict[tuple[str, int], tuple[int | None, str | None]] = {}
    cfg = parse_config({"name": "p", "kafka": {"topic": "t"}, "messages": {"n_features": 1}})
    src = KafkaSource(cfg, claim=lambda tps: {tp: claims.get(tp, (None, None)) for tp in tps})
    return src, consumer, claims


def consumed(src: KafkaSource) -> tuple[list[bytes | None], dict]:
    """One poll, advanced as the daemon does once it is learned: (values consumed, resets)."""
    polled = src.poll(0)
    src.advance(polled.next_offsets, polled.fingerprints)
    return polled.values, polled.resets


def fetched_to_120(source):  # noqa: ANN001, ANN201
    """A partition claimed at offset 100 (no fingerprint) whose records 100..119 were consumed."""
    src, consumer, claims = source
    claims[TP] = (100, None)
    consumer.assign([TP])
    consumer.deliver([record(o) for o in range(100, 120)])
    consumed(src)
    return src, consumer


def test_records_fetched_before_a_rebalance_then_fetched_again_are_consumed_once(source):
    src, consumer, claims = source
    claims[TP] = (6000, fp(5999))  # where this replica's revocation snapshot ended
    consumer.assign([TP])
    assert consumer.seeks == [(TP, 5999)]  # one record back: the fingerprint check
    # The call that served the rebalance also returned what was fetched before it: 6000..6009.
    consumer.deliver([record(o) for o in range(6000, 6010)])
    values, resets = consumed(src)
    assert values == [record(o)[1] for o in range(6000, 6010)] and not resets
    # Then the fetch from the claimed position: 5999 (checked) and 6000..6019, of which 6000..6009 again.
    consumer.deliver([record(o) for o in range(5999, 6020)])
    values, resets = consumed(src)
    assert not resets, resets
    assert values == [record(o)[1] for o in range(6010, 6020)]
    assert src.offsets[TP] == 6020


def test_a_redelivery_that_stops_short_of_the_position_consumes_nothing(source):
    src, consumer = fetched_to_120(source)
    consumer.deliver([record(o) for o in range(100, 110)])  # all of it already handed over
    values, resets = consumed(src)
    assert values == [] and not resets
    consumer.deliver([record(o) for o in range(110, 125)])  # reaches 119: the same record, then new ones
    values, resets = consumed(src)
    assert values == [record(o)[1] for o in range(120, 125)] and not resets


def test_a_log_that_went_back_with_other_records_is_a_reset(source):
    src, consumer = fetched_to_120(source)
    consumer.deliver([record(o, log="b") for o in range(0, 200)])  # a new log at the same offsets
    values, resets = consumed(src)
    assert values == [] and TP in resets and "not the one fetched there" in resets[TP]


def test_a_log_that_went_back_below_the_position_is_a_reset_through_the_high_watermark(source):
    src, consumer = fetched_to_120(source)
    consumer.hw = 50  # a new, shorter log
    consumer.deliver([record(o, log="b") for o in range(0, 50)])
    values, resets = consumed(src)
    assert values == [] and TP in resets and "below the position" in resets[TP]


def test_a_claim_whose_checked_record_differs_is_a_reset(source):
    src, consumer, claims = source
    claims[TP] = (6000, fp(5999))
    consumer.assign([TP])
    consumer.deliver([record(o, log="b") for o in range(5999, 6010)])
    values, resets = consumed(src)
    assert values == [] and "not the one learned there" in resets[TP]


def test_a_claim_checked_further_into_a_batch_that_starts_lower(source):
    src, consumer, claims = source
    claims[TP] = (6000, fp(5999))
    consumer.assign([TP])
    consumer.deliver([record(o) for o in range(5990, 6005)])  # starts below the checked record, same log
    values, resets = consumed(src)
    assert not resets and values == [record(o)[1] for o in range(6000, 6005)]


def test_a_claim_whose_checked_record_was_deleted_reports_the_gap(source):
    src, consumer, claims = source
    claims[TP] = (6000, fp(5999))
    consumer.assign([TP])
    consumer.deliver([record(o) for o in range(6500, 6510)])  # retention deleted 5999..6499
    polled = src.poll(0)
    assert polled.gaps == {TP: (6000, 6500)} and len(polled.values) == 10


def test_a_watermark_cached_before_the_partition_moved_away_is_not_a_reset(source):
    """librdkafka keeps a partition's cached high watermark across assignments: this replica last
    fetched the partition when its log ended at 4000; another replica learned it up to 6500 since."""
    src, consumer, claims = source
    consumer.hw = 4000
    claims[TP] = (6500, fp(6499))
    consumer.assign([TP])
    values, resets = consumed(src)  # no fetch answered yet: the cached 4000 is all there is
    assert not resets and values == []
    consumer.hw = 6800  # the first fetch answers
    consumer.deliver([record(o) for o in range(6499, 6800)])
    values, resets = consumed(src)
    assert not resets and len(values) == 300


def test_a_fresh_watermark_below_a_claimed_position_is_a_reset(source):
    src, consumer, claims = source
    consumer.hw = 4000
    claims[TP] = (6500, fp(6499))
    consumer.assign([TP])
    consumed(src)
    consumer.hw = 30  # a fetch answered: the log now ends at 30 (the broker lost it)
    values, resets = consumed(src)
    assert values == [] and "the log ends at offset 30, below the position 6500" in resets[TP]


def test_partitions_being_revoked_are_not_owned_during_the_revocation(monkeypatch):
    """The revocation snapshot can be fenced, and the daemon's rewind then claims again what it owns:
    a partition being handed over must not be among them (it would take the claim back from the
    replica it is handed to, which would then pause it: nobody would learn it until the next rebalance)."""
    consumer = ScriptedConsumer()
    monkeypatch.setattr("ocld.stream.source.make_consumer", lambda *a, **k: consumer)
    cfg = parse_config({"name": "p", "kafka": {"topic": "t"}, "messages": {"n_features": 1}})
    seen: list[set] = []
    src = KafkaSource(cfg, claim=lambda tps: {tp: (None, None) for tp in tps},
                      on_revoke=lambda tps: seen.append(src.owned()))
    consumer.assign([("t", 0), ("t", 1)])
    assert src.owned() == {("t", 0), ("t", 1)}
    consumer.revoke([("t", 1)])
    assert seen == [{("t", 0)}]
    assert src.owned() == {("t", 0)}
