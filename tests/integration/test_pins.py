"""Pinned snapshot versions (kept for rollback before each adaptation) are capped by
``snapshot.max_pinned``: the oldest are unpinned and pruned, the latest never. Real Redis."""

from __future__ import annotations

import numpy as np
import pytest

from ocld.core.snapshot import Snapshot
from ocld.learners.base import LearnerState
from ocld.stream.config import parse_config
from ocld.stream.store import SnapshotStore, connect

pytestmark = pytest.mark.integration


def _snap(i: int) -> Snapshot:
    return Snapshot({"learner": LearnerState("KalmanHead", {}, {"M": np.full(3, float(i))}, {})}, {}, {"i": i})


def test_max_pinned_unpins_the_oldest_and_keeps_the_rest(redis_url, name):
    r = connect(redis_url)
    store = SnapshotStore(r, name, keep=2, max_pinned=3)
    versions = []
    for i in range(8):
        v = store.write(_snap(i))
        versions.append(v)
        store.pin(v)  # as the daemon does before every adaptation
    store.prune()
    pinned = sorted(int(v) for v in r.smembers(store.keys.pinned))
    assert pinned == versions[-3:]
    complete = sorted(int(v) for v in r.zrange(store.keys.versions, 0, -1))
    assert complete == versions[-3:]  # the 3 pinned (the 2 newest among them): older versions are gone
    assert store.read(versions[-3]).info["i"] == 5  # a pinned version still reads back whole
    unlimited = SnapshotStore(r, name + "-all", keep=2)
    for i in range(5):
        unlimited.pin(unlimited.write(_snap(i)))
    unlimited.prune()
    assert len(r.smembers(unlimited.keys.pinned)) == 5


def test_max_pinned_config_default_and_null():
    assert parse_config({}).snapshot.max_pinned == 50
    assert parse_config({"snapshot": {"max_pinned": None}}).snapshot.max_pinned is None
