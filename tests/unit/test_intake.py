"""Intake's hold while the record width is not settled: what a claim discards, and what it keeps."""

from __future__ import annotations

import orjson

from ocld.stream.config import parse_config
from ocld.stream.intake import Intake
from ocld.stream.source import Polled
from tests.unit.test_source_positions import ListBatch

A, B = ("t", 0), ("t", 1)


def poll(*parts: tuple[tuple[str, int], list[int]]) -> Polled:
    """A poll with records of three features at the given offsets of each partition."""
    batches = [(tp, ListBatch([(o, orjson.dumps({"x": [1.0, 2.0, 3.0], "y": 0})) for o in offs])) for tp, offs in parts]
    return Polled([v for _, b in batches for v in b.values], [(t, p, b) for (t, p), b in batches],
                  {tp: b.last_offset + 1 for tp, b in batches})


def test_a_claim_discards_the_held_records_of_its_partitions_only():
    """A claim retried outside a rebalance repositions only the partitions it claims: the records held
    for the others are not read again, so they must stay held (dropping them lost them)."""
    intake = Intake(parse_config({"name": "p", "kafka": {"topic": "t"}}))  # no declared width: polls are held
    assert intake.offer(poll((A, [0, 1]), (B, [0, 1, 2]))) == []
    assert intake.offer(poll((B, [3]))) == []
    intake.discard({A})
    assert [[(t, p, b.offsets()) for t, p, b in held.parts] for held in intake.held] == [[("t", 1, [0, 1, 2])],
                                                                                       [("t", 1, [3])]]
    assert [len(held.values) for held in intake.held] == [3, 1]
    assert intake.held[0].next_offsets == {B: 3}
    intake.discard({B})
    assert intake.held == []
    intake.offer(poll((A, [5])))
    intake.discard()
    assert intake.held == []
