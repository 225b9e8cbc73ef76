"""Config validation: every mistake names the field and what to change."""

from __future__ import annotations

import pytest
import yaml

from ocld.stream.config import ConfigError, load_config, parse_config, redact_url
from tests.helpers import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    cfg.build_learner()


def test_unknown_field_suggests_the_right_name():
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"max_bach": 10}})
    assert "kafka.max_bach" in str(err.value) and "did you mean 'max_batch'" in str(err.value)


def test_out_of_range_value_names_field_and_value():
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"max_batch": 0}})
    msg = str(err.value)
    assert "kafka.max_batch" in msg and "greater than or equal to 1" in msg and "(got 0)" in msg


def test_learner_process_cannot_fold_other_replicas():
    """Folding writes the other replicas' statistics into the learner in the daemon's process: the error names
    both fields and how to fix it; each alone is accepted."""
    base = {"learner": {"name": "AnalyticRidge"}, "scale": {"fold_global_every_s": 5}}
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "learner_process": True})
    msg = str(err.value)
    assert "scale.fold_global_every_s" in msg and "learner_process" in msg and "set learner_process: false" in msg
    assert parse_config(base).scale.fold_global_every_s == 5
    assert parse_config({"learner_process": True}).learner_process


def test_unknown_learner_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        parse_config({"learner": {"name": "KalmanHed"}})
    assert "learner" in str(err.value) and "KalmanHead" in str(err.value)


def test_bad_learner_parameter_is_reported():
    with pytest.raises(ConfigError) as err:
        parse_config({"learner": {"name": "KalmanHead", "params": {"gg": 1}}})
    assert "KalmanHead" in str(err.value) and "gg" in str(err.value)


def test_bad_feature_map_is_reported():
    with pytest.raises(ConfigError) as err:
        parse_config({"learner": {"name": "KalmanHead", "features": [{"name": "Scaler"}]}})
    assert "features[0]" in str(err.value) and "Standardizer" in str(err.value)


def test_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_secrets_are_not_echoed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": "redis://u:hunter2@h:6379/0", "password": 12345678}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "12345678" not in str(err.value)
    assert "hunter2" not in repr(parse_config({"redis": {"url": "redis://u:hunter2@h:6379/0"}}))
    assert redact_url("redis://u:hunter2@h:6379/0") == "redis://u:***@h:6379/0"


def test_environment_replaces_embedded_only(monkeypatch):
    from ocld.stream.config import apply_environment

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:2")
    cfg = apply_environment(parse_config({}))
    assert cfg.kafka.bootstrap == "127.0.0.1:2" and cfg.redis.url.get_secret_value() == "redis://127.0.0.1:1/0"
    explicit = apply_environment(parse_config({"kafka": {"bootstrap": "k:9092"}, "redis": {"url": "redis://r/0"}}))
    assert explicit.kafka.bootstrap == "k:9092" and explicit.redis.url.get_secret_value() == "redis://r/0"


def test_unusable_config_paths_are_one_clear_error(tmp_path):
    """A directory, a non-UTF-8 file: one line naming the path and the fix; a byte-order mark is fine."""
    with pytest.raises(ConfigError, match="is a directory; give the path of a YAML file"):
        load_config(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: demo\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_config(latin1)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfname: with-bom\n")
    assert load_config(bom).name == "with-bom"
