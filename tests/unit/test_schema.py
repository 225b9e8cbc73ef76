"""core.schema.WidthInference: one stray record cannot fix the width; refused widths never win."""

from __future__ import annotations

from ocld.core.schema import WidthInference


def test_a_stray_first_record_does_not_fix_the_width() -> None:
    w = WidthInference(samples=100, agree=20, wait_s=60.0)
    assert w.offer([3], now=0.0) is None
    assert w.offer([6] * 98, now=1.0) is None
    assert w.offer([6], now=2.0) == 6
    assert w.reason == "inferred from 99 of the first 100 records"


def test_the_first_records_agreeing_settle_it_at_once() -> None:
    w = WidthInference(samples=100, agree=20, wait_s=60.0)
    assert w.offer([6] * 19, now=0.0) is None
    assert w.offer([6, 3], now=0.0) == 6
    assert "the first 20 records agree" in w.reason


def test_a_slow_stream_settles_after_the_wait_on_what_came() -> None:
    w = WidthInference(samples=100, agree=20, wait_s=10.0)
    assert w.offer([3, 6, 6], now=0.0) is None
    assert w.due(now=9.9) is None
    assert w.due(now=10.0) == 6
    assert "first 10 s" in w.reason


def test_ties_go_to_the_width_seen_first_and_refused_widths_never_win() -> None:
    w = WidthInference(samples=4, agree=10, wait_s=60.0)
    assert w.offer([5, 7, 7, 5], now=0.0) == 5
    w = WidthInference(samples=4, agree=10, wait_s=60.0, max_features=100)
    w.refuse(7, "too big")
    assert w.offer([7, 7, 7, 500, 5], now=0.0) is None  # 7 refused, 500 over max_features
    assert w.offer([5, 5, 5], now=0.0) == 5
