"""Secrets never shown: ``redact_url`` and config validation errors, for any password.

The examples pin the documented forms; the properties draw random passwords (any printable
character, ``@``, ``/``, ``:`` and ``,`` included) and check that neither a redacted URL nor
a config error ever contains one.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ocld.stream.config import ConfigError, load_config, parse_config, redact_url


@pytest.mark.parametrize("url, shown", [
    ("redis://user@host", "redis://user@host"),
    ("redis://:pw@host", "redis://:***@host"),
    ("redis://u:pw@host", "redis://u:***@host"),
    ("redis://u:pw@host:6379/0", "redis://u:***@host:6379/0"),
    ("rediss://u:pw@host:6380/1", "rediss://u:***@host:6380/1"),
    ("redis+cluster://u:pw@h1:7000,h2:7001,h3:7002", "redis+cluster://u:***@h1:7000,h2:7001,h3:7002"),
    ("redis://u:p@ss/w:rd@host/0", "redis://u:***@host/0"),
    ("unix://:pw@/var/run/redis.sock?db=2", "unix://:***@/var/run/redis.sock?db=2"),
    ("redis://host:6379/0?password=pw&db=1", "redis://host:6379/0?password=***&db=1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("embedded", "embedded"),
    ("u:pw@host:6379", "u:***@host:6379"),
])
def test_redact_url_forms(url, shown):
    assert redact_url(url) == shown


passwords = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=6, max_size=40)
users = st.sampled_from(["", "alice", "ocld-reader", "u.1"])
schemes = st.sampled_from(["redis", "rediss", "redis+cluster", "redis+sentinel"])
hosts = st.sampled_from(["localhost", "10.0.0.7:6379", "[::1]:6380", "h1:7000,h2:7001", "redis.example.com/3"])


@settings(max_examples=300, deadline=None)
@given(scheme=schemes, user=users, password=passwords, host=hosts)
def test_redact_url_never_shows_the_password(scheme, user, password, host):
    out = redact_url(f"{scheme}://{user}:{password}@{host}")
    assert out == f"{scheme}://{user}:***@{host}"
    assert password not in out


def _config_error(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


SHAPES = [
    lambda url, pw: {"redis": url},  # a URL where the redis mapping belongs
    lambda url, pw: {"kafka": url},
    lambda url, pw: {"redis": {"url": url, "heartbeat_ttl_s": 0}},
    lambda url, pw: {"redis": {"url": url, "password": 12345, "nope": 1}},
    lambda url, pw: {"redis": {url: "x"}},  # a URL as a key lands in the error's location
    lambda url, pw: {"redis": {"password": [pw]}},
    lambda url, pw: {"redis": {"username": {"a": pw}}},
    lambda url, pw: {"kafka": {"sasl_password": [pw], "sasl_mechanism": "PLAIN"}},
    lambda url, pw: {"kafka": {"sasl_mechanism": pw}},
    lambda url, pw: {"kafka": {"bootstrap": url}, "learner": pw},
    lambda url, pw: {"name": url},
    lambda url, pw: {"drift": {"also": url}},
]


@settings(max_examples=300, deadline=None)
@given(password=passwords, user=users, shape=st.integers(0, len(SHAPES) - 1))
def test_config_errors_never_show_the_password(password, user, shape):
    def message(pw: str) -> str:
        return _config_error(SHAPES[shape](f"redis://{user}:{pw}@db.example.com:6379/0", pw))

    # A password that is a substring of the error text itself (say "invalid") proves nothing.
    assume(password not in message("PLACEHOLDER-PW"))
    assert password not in message(password)


def test_url_where_a_mapping_belongs_names_the_fix():
    msg = _config_error({"redis": "redis://user:PASSWORD@host"})
    assert "PASSWORD" not in msg
    assert "redis: expected a mapping" in msg and "redis.url" in msg


def test_harmless_values_are_still_shown():
    """Redaction must not cost the helpful part: a plain number or word is echoed."""
    assert "(got 0)" in _config_error({"kafka": {"max_batch": 0}})
    assert "(got 'xml')" in _config_error({"messages": {"format": "xml"}})


def test_yaml_syntax_error_names_the_line_but_does_not_quote_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('name: x\nredis:\n  url: "redis://u:S3cr3t-Pw@h\n  password: [S3cr3t-Pw\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "S3cr3t-Pw" not in str(err.value) and "line" in str(err.value)


def test_loaded_file_error_hides_the_password(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": "redis://user:Hunter2-pw@host:6379/0"}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "Hunter2-pw" not in str(err.value) and str(path) in str(err.value)


def test_cli_failures_scrub_every_known_secret():
    """Whatever a server library puts in its message, the CLI's line has no secret it knows of."""
    import argparse

    from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError
    from redis.exceptions import AuthenticationError

    from ocld.stream.cli import expected_failure

    args = argparse.Namespace(redis="redis://u:Url-Pw-1@h:6379/0", redis_target="redis://u:Url-Pw-1@h:6379/0",
                              config_secrets=["Sasl-Pw-2"], config_urls=["redis://v:Cfg%2FPw@h"],
                              kafka_target="broker:9092")
    cases = [
        (AuthenticationError("WRONGPASS for Url-Pw-1"), "refused the credentials"),
        (SaslAuthenticationFailedError("bad secret Sasl-Pw-2"), "refused the credentials"),
        (KafkaTimeoutError("Unable to bootstrap from ['broker:9092']"),
         "no answer from the Kafka broker at broker:9092"),
        (ValueError("echoed Cfg/Pw and Cfg%2FPw"), "echoed *** and ***"),
    ]
    for exc, expected in cases:
        message, code = expected_failure(exc, args)
        assert code == 2 and expected in message and "\n" not in message
        for secret in ("Url-Pw-1", "Sasl-Pw-2", "Cfg/Pw", "Cfg%2FPw"):
            assert secret not in message
    assert expected_failure(KeyError("a bug"), args) is None  # bugs keep their traceback


def test_cluster_seeds_split_without_showing_the_password() -> None:
    from ocld.stream.store import _seed_nodes, connect

    assert _seed_nodes("u:pw@h1:7000,h2:7001,[::1]:7002/0") == ("u:pw@h1:7000/0", [("h2", 7001), ("::1", 7002)])
    assert _seed_nodes("h1:7000/0") == ("h1:7000/0", [])
    with pytest.raises(ValueError, match="h2:x") as err:
        connect("redis+cluster://u:hunter2@h1:7000,h2:x/0")
    assert "hunter2" not in str(err.value)
