"""The daemon against real producers, operators and accidents (issue 20): one test per failure.

Each test runs a scenario of ``tests/scenarios.py`` on its own real tansu broker and redis-server,
with ``ocld run`` as child processes, and checks that every produced record was learned exactly
once in the durable state (the learner's statistics equal a one-pass reference to 1e-9), that
no daemon printed a traceback, and what the scenario is about (exit codes, incidents, status).
``python benchmarks/adversarial.py`` runs the same scenarios and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import scenarios
from tests.scenarios import Result

pytestmark = pytest.mark.integration


def _exactly_once(res: Result) -> None:
    assert (res.lost, res.twice) == (0, 0), f"{res.case}: {res.lost} lost, {res.twice} learned twice"
    assert res.learned == res.produced and res.exact, f"{res.case}: the learned set is not the produced one"
    assert not res.traceback, f"{res.case}: a daemon printed a traceback"


def _one_line_error(log: str, must: str) -> None:
    errors = [ln for ln in log.splitlines() if ln.startswith("ocld: ")]
    assert len(errors) == 1 and must in errors[0], log[-3000:]
    assert "Traceback" not in log


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_item1_every_codec_from_librdkafka(codec: str, tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    res = scenarios.codec_from_librdkafka(tmp_path, codec)
    _exactly_once(res)
    assert res.exit_codes == [0]


def test_item1_an_undecodable_batch_stops_the_daemon_cleanly_and_skips_nothing(tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    res = scenarios.codec_library_missing(tmp_path)
    _exactly_once(res)
    assert res.checks["rc"] == 3 and res.checks["state"] == "failed"
    assert "cannot be decompressed" in res.checks["failure"]
    _one_line_error(res.checks["log"], "Libraries for lz4 compression codec not found")


def test_item2_a_stray_first_record_does_not_fix_the_width(tmp_path: Path) -> None:
    res = scenarios.stray_first_record(tmp_path)
    _exactly_once(res)
    assert res.checks["dlq_count"] == 1
    assert res.checks["n_features"] == 6 and "inferred" in res.checks["width_source"]


def test_item3_wide_records_are_dead_lettered_before_any_allocation(tmp_path: Path) -> None:
    res = scenarios.wide_first_record(tmp_path)
    _exactly_once(res)
    assert res.exit_codes == [0]
    assert res.checks["dlq_count"] == 25 and list(res.checks["dlq_by_reason"]) == ["x has N features"]


@pytest.mark.slow
def test_item4_two_daemons_started_while_the_broker_is_down(tmp_path: Path) -> None:
    res = scenarios.two_daemons_while_broker_down(tmp_path)
    _exactly_once(res)
    assert res.checks["second_rc"] == 2 and res.checks["first_rc"] == 0
    _one_line_error(res.checks["second_log"], "is already run by another writer")


@pytest.mark.slow
def test_item4_a_stalled_daemon_writes_nothing_once_replaced(tmp_path: Path) -> None:
    res = scenarios.stalled_daemon_replaced(tmp_path)
    _exactly_once(res)
    assert res.checks["stalled_rc"] == 3
    _one_line_error(res.checks["stalled_log"], "lost its lease")


@pytest.mark.slow
def test_item5_rollback_while_the_daemon_is_stalled(tmp_path: Path) -> None:
    res = scenarios.rollback_while_stalled(tmp_path)
    _exactly_once(res)
    assert "incident lease_gap" in res.checks["log"], res.checks["log"][-3000:]


def test_item6_no_usable_snapshot_resets_the_registry(tmp_path: Path) -> None:
    res = scenarios.garbage_manifests(tmp_path)
    _exactly_once(res)
    assert "no usable snapshot" in res.checks["log"] and "incident registry_mismatch" in res.checks["log"]


def test_item7_embedded_broker_restarted_between_runs(tmp_path: Path) -> None:
    res = scenarios.broker_restarted_between_runs(tmp_path)
    _exactly_once(res)
    assert res.checks["incidents"].get("topic_reset", 0) >= 1


@pytest.mark.slow
def test_item7_broker_restarted_while_the_daemon_runs(tmp_path: Path) -> None:
    res = scenarios.broker_restarted_mid_run(tmp_path)
    _exactly_once(res)
    assert res.checks["incidents"].get("topic_reset", 0) >= 1


@pytest.mark.parametrize("how", ["flushall", "restart"])
def test_item8_redis_loses_its_data_while_the_daemon_runs(how: str, tmp_path: Path) -> None:
    res = scenarios.redis_flushed(tmp_path, how)
    _exactly_once(res)
    assert res.checks["state"] == "running" and res.checks["incidents"].get("redis_data_loss") == 1


def test_item9_a_user_without_write_permission_is_fatal_at_once(tmp_path: Path) -> None:
    res = scenarios.acl_without_write(tmp_path)
    _exactly_once(res)  # learned by the daemon with proper credentials afterwards
    assert res.checks["rc"] == 2 and res.checks["seconds"] < 15
    _one_line_error(res.checks["log"], "check redis.username and redis.password")
    assert "'reader'" in res.checks["log"] and "readerpw" not in res.checks["log"]


@pytest.mark.slow
def test_item10_sasl_mismatch_fails_fast_and_honours_sigterm(tmp_path: Path) -> None:
    res = scenarios.sasl_mismatch(tmp_path)
    _exactly_once(res)
    assert res.checks["rc"] == 2 and res.checks["seconds"] < 30
    _one_line_error(res.checks["log"], "security_protocol=SASL_PLAINTEXT")
    assert "sasl-secret-pw" not in res.checks["log"]
    assert res.checks["term_rc"] == 0 and res.checks["term_s"] < 2.0


@pytest.mark.slow
def test_item11_a_killed_learner_process_is_restarted(tmp_path: Path) -> None:
    res = scenarios.learner_child_killed(tmp_path)
    _exactly_once(res)
    assert res.checks["children_killed"] == 1 and res.checks["alive_after"]
    assert "incident learner_restarted" in res.checks["log"]


def test_item12_redis_unreachable_at_start_is_one_line(tmp_path: Path) -> None:
    res = scenarios.redis_down_at_start(tmp_path)
    _exactly_once(res)
    assert res.checks["rc"] == 2 and res.checks["seconds"] < 15
    _one_line_error(res.checks["log"], "did not answer within 5 s")
    assert res.checks["term_rc"] == 0 and res.checks["term_s"] < 2.0


@pytest.mark.slow
def test_item15_dead_letter_counts_add_up_across_restarts(tmp_path: Path) -> None:
    res = scenarios.dlq_counts_across_restarts(tmp_path)
    _exactly_once(res)
    assert res.checks["dlq_count"] == 15 and res.checks["dlq_by_reason"] == {"cannot decode json": 15}


@pytest.mark.slow
def test_item16_the_state_is_what_it_is(tmp_path: Path) -> None:
    res = scenarios.status_after_stop_and_crash(tmp_path)
    _exactly_once(res)
    assert res.checks["after_stop"] == "stopped"
    assert res.checks["after_crash"] == "dead" and res.checks["reported"] == "running"
    assert res.checks["final"] == "stopped"
