"""The CLI never prints a traceback for an expected failure, and never a secret.

Every case runs ``ocld`` as a subprocess against real servers (the session's tansu broker and
redis-server, a second redis-server with ``--requirepass``, ACL users made with ``ACL
SETUSER``, a port nothing listens on) and checks: a non-zero exit, exactly one stderr line
for the error (``ocld: ...``), no "Traceback", and no password in stdout or stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml

from ocld.stream.embedded import EmbeddedRedis, free_port
from ocld.stream.store import Keys
from tests.helpers import ROOT, read_topic, wait_until

pytestmark = pytest.mark.integration

SECRET = "Pw-" + uuid.uuid4().hex[:12]  # the real password of the authenticated Redis
WRONG = "Wrong-" + uuid.uuid4().hex[:12]  # a password that is refused
REDIS_COMMANDS = [
    ["status"],
    ["status", "somepipe"],
    ["query", "somepipe", "--snapshot"],
    ["query", "somepipe", "--metrics"],
    ["rollback", "somepipe", "--to", "1"],
    ["report", "somepipe", "--out", "never-written.png"],
]


def ocld(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP") and not k.startswith("OCLD_")}
    return subprocess.run([sys.executable, "-m", "ocld.stream.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_failure(proc: subprocess.CompletedProcess, *secrets: str, only_line: bool = True) -> str:
    """Non-zero exit, one ``ocld:`` line on stderr (and nothing else there when ``only_line``), no
    traceback, no secret anywhere. Returns the line."""
    both = proc.stdout + proc.stderr
    assert proc.returncode != 0, both
    assert "Traceback" not in both, both
    for secret in secrets:
        assert secret not in both, both
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ocld: ")]
    assert len(errors) == 1, proc.stderr
    if only_line:
        assert lines == errors, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("auth-redis"), appendonly=False,
                       extra_args=["--requirepass", SECRET]) as server:
        yield server


@pytest.fixture
def acl_user(redis_url: str) -> Iterator[tuple[str, str]]:
    """A user of the session Redis that may run no command at all (NOPERM for everything)."""
    user, password = f"nobody-{uuid.uuid4().hex[:6]}", "Acl-" + uuid.uuid4().hex[:12]
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "-@all")
    yield user, password
    admin.execute_command("ACL", "DELUSER", user)
    admin.close()


def _with_credentials(url: str, user: str, password: str) -> str:
    return url.replace("redis://", f"redis://{user}:{password}@", 1)


# -- Redis unreachable, refusing the password, refusing the command -------------------
@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_naming_the_server(command):
    url = f"redis://ocld:{SECRET}@127.0.0.1:{free_port()}/0"
    line = assert_one_line_failure(ocld(*command, "--redis", url), SECRET)
    assert "cannot reach Redis at redis://ocld:***@127.0.0.1:" in line and "--redis" in line


@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=" ".join)
def test_wrong_or_missing_password_is_one_line(auth_redis, command):
    wrong = _with_credentials(auth_redis.url, "", WRONG)
    line = assert_one_line_failure(ocld(*command, "--redis", wrong), SECRET, WRONG)
    assert "refused the credentials" in line and f"redis://:***@127.0.0.1:{auth_redis.port}" in line
    line = assert_one_line_failure(ocld(*command, "--redis", auth_redis.url), SECRET)
    assert "refused the credentials" in line and "password" in line


def test_right_password_works(auth_redis):
    proc = ocld("status", "--redis", _with_credentials(auth_redis.url, "", SECRET))
    assert proc.returncode == 0, proc.stderr
    assert "no pipelines found" in proc.stdout and SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=" ".join)
def test_acl_user_without_permission_is_one_line(redis_url, acl_user, command):
    user, password = acl_user
    line = assert_one_line_failure(ocld(*command, "--redis", _with_credentials(redis_url, user, password)), password)
    assert f"refused a command to user {user!r}" in line and "NOPERM" in line and "ACL SETUSER" in line


def test_secret_in_the_environment_is_never_shown():
    """REDIS_URL from the environment (no --redis) fails the same way, without the password."""
    env = {**os.environ, "REDIS_URL": f"redis://u:{SECRET}@127.0.0.1:{free_port()}/0"}
    proc = subprocess.run([sys.executable, "-m", "ocld.stream.cli", "status"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "cannot reach Redis at redis://u:***@" in assert_one_line_failure(proc, SECRET)


# -- pipelines that do not exist, corrupt snapshots ------------------------------------
@pytest.mark.parametrize("command", [
    ["status", "{p}"], ["status", "{p}", "--json"], ["query", "{p}", "--metrics"], ["query", "{p}", "--snapshot"],
    ["query", "{p}", "--drift"], ["rollback", "{p}", "--to", "1"], ["report", "{p}", "--out", "x.png"],
], ids=lambda c: " ".join(c[:1] + c[2:]))
def test_missing_pipeline_exits_non_zero(redis_url, name, command):
    line = assert_one_line_failure(ocld(*[c.format(p=name) for c in command], "--redis", redis_url))
    assert f"pipeline {name!r} does not exist in Redis at {redis_url}" in line


def test_missing_pipeline_suggests_a_close_name(redis_url, name):
    r = redis.Redis.from_url(redis_url)
    r.hset(Keys(name).status, mapping={"state": "stopped"})
    try:
        line = assert_one_line_failure(ocld("status", name + "x", "--redis", redis_url))
        assert f"did you mean {name!r}?" in line
        assert ocld("status", name, "--redis", redis_url).returncode == 0
    finally:
        r.delete(Keys(name).status)


def test_corrupt_manifest_is_one_line_naming_the_version(redis_url, name):
    r = redis.Redis.from_url(redis_url)
    k = Keys(name)
    r.hset(k.latest, mapping={"version": 7})
    r.zadd(k.versions, {"7": 7, "6": 6})
    r.set(k.manifest(7), b"\x00garbage{")
    try:
        line = assert_one_line_failure(ocld("query", name, "--snapshot", "--redis", redis_url))
        assert "version 7" in line and "unreadable manifest" in line and f"ocld rollback {name} --to 6" in line
        line = assert_one_line_failure(ocld("rollback", name, "--to", "7", "--redis", redis_url))
        assert "version 7" in line and "fails verification" in line
    finally:
        r.delete(k.latest, k.versions, k.manifest(7))


# -- config and data paths --------------------------------------------------------------
@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "latin1.csv").write_bytes("a,b,y\n1,2,0\n1,2,\xe9t\xe9\n".encode("latin-1"))
    (tmp_path / "ok.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    (tmp_path / "ok.yaml").write_text("learner:\n  name: AnalyticRidge\n")
    return {p.name: p for p in tmp_path.iterdir()} | {"missing": tmp_path / "missing.csv"}


@pytest.mark.parametrize("config, data, expect", [
    ("a-directory", "ok.csv", "is a directory"),
    ("missing", "ok.csv", "does not exist"),
    ("latin1.yaml", "ok.csv", "not UTF-8"),
    ("ok.yaml", "a-directory", "is a directory"),
    ("ok.yaml", "missing", "does not exist"),
    ("ok.yaml", "latin1.csv", "latin1.csv:3: not UTF-8"),
])
def test_unusable_config_or_data_path_is_one_line(paths, config, data, expect):
    line = assert_one_line_failure(ocld("evaluate", str(paths[config]), "--data", str(paths[data])))
    assert expect in line


@pytest.mark.parametrize("data, expect", [
    ("a-directory", "is a directory"), ("missing", "does not exist"), ("latin1.csv", "latin1.csv:3: not UTF-8"),
])
def test_unusable_replay_file_fails_before_any_broker_is_asked(paths, data, expect):
    """The file is checked first: the broker named here does not exist, and is never waited for."""
    line = assert_one_line_failure(ocld("replay", str(paths[data]), "--topic", "t",
                                        "--bootstrap", f"127.0.0.1:{free_port()}", "--quiet", timeout=30))
    assert expect in line


def test_config_with_a_url_where_the_mapping_belongs_hides_the_password(paths, tmp_path):
    config = tmp_path / "leaky.yaml"
    config.write_text(yaml.safe_dump({"redis": f"redis://user:{SECRET}@db.example.com:6379/0"}))
    line = assert_one_line_failure(ocld("evaluate", str(config), "--data", str(paths["ok.csv"])), SECRET,
                                   only_line=False)
    assert str(config) in line
    assert ocld("evaluate", str(config), "--data", str(paths["ok.csv"])).stderr.count("redis: expected a mapping") == 1


# -- Kafka ------------------------------------------------------------------------------
def test_replay_skips_a_line_over_the_record_limit_and_replays_the_rest(broker, name, tmp_path):
    """Decision: an oversized line is skipped with a warning naming it, the rest is replayed, and the
    summary counts it (exit 0: every other record was delivered)."""
    src = tmp_path / "big.jsonl"
    records: list[dict[str, Any]] = [{"x": [float(i), 1.0], "y": i % 2} for i in range(7)]
    lines = [orjson.dumps(r) for r in records]
    lines[3] = orjson.dumps({"x": [0.125] * 250_000, "y": 0})  # line 4: about 1.5 MB
    assert len(lines[3]) > 1_100_000
    src.write_bytes(b"\n".join(lines) + b"\n")
    proc = ocld("replay", str(src), "--topic", f"{name}.in", "--bootstrap", broker, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{src}:4:" in proc.stderr and "max_request_size" in proc.stderr
    assert "replayed 6 records" in proc.stdout and "skipped 1 lines (too_large: 1; lines 4)" in proc.stdout
    got = wait_until(lambda: [orjson.loads(r.value) for r in read_topic(broker, f"{name}.in")], 30, "replayed records")
    assert got == [r for i, r in enumerate(records) if i != 3]


def test_replay_to_an_unreachable_broker_is_one_line(tmp_path):
    """No broker: one line naming it after the retries, never a traceback."""
    src = tmp_path / "a.jsonl"
    src.write_text('{"x": [1.0], "y": 0}\n')
    bootstrap = f"127.0.0.1:{free_port()}"
    line = assert_one_line_failure(ocld("replay", str(src), "--topic", "t", "--bootstrap", bootstrap, "--quiet",
                                        timeout=400), only_line=False)
    assert f"no answer from the Kafka broker at {bootstrap}" in line and "--bootstrap" in line
