"""The Kubernetes manifests in deploy/k8s, checked offline (no cluster runs here).

- Every resource validates, strictly (no unknown field), against the Kubernetes JSON schemas carried
  by the ``kubernetes-validate`` package, for each Kubernetes release from 1.27 (the PDB's
  ``unhealthyPodEvictionPolicy``) to the newest the package carries.
- The ConfigMap holds exactly config/docker.yaml, and the generated files are current.
- The container, started as kubelet would start it, gets the config it should: its pod name as the
  replica name, the broker and Redis of the endpoints ConfigMap, the passwords of the Secret.
- Every environment variable the manifests set is one ocld reads; the probes and the scrape
  annotation name the config's ``http.port``; no secret value is written in the manifests.

The manifests are built by a small reading of kustomization.yaml (the fields it uses: resources and
ConfigMap generators); where ``kubectl`` is installed, ``kubectl kustomize`` must build the same.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from ocld.stream import cli
from ocld.stream.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER_YAML = ROOT / "config" / "docker.yaml"
OLDEST_KUBERNETES = "1.27"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
PACKAGES = ("stream", "core", "ocld", "learners", "buffers")


# -- building the manifests -----------------------------------------------------------
def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("ocld_k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


def build(folder: Path = K8S) -> list[dict[str, Any]]:
    """What ``kustomize build folder`` makes of the fields kustomization.yaml uses (ConfigMap names
    without kustomize's content hash). An unknown field fails, so that nothing is silently skipped."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "configMapGenerator"}
    assert set(kustomization) <= known, f"extend build() for {set(kustomization) - known}"
    resources = [doc for path in kustomization.get("resources", [])
                 for doc in yaml.safe_load_all((folder / path).read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files", "envs"}, f"extend build() for {generator}"
        data: dict[str, str] = {}
        for entry in generator.get("files", []):
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (folder / path).read_text()
        for path in generator.get("envs", []):
            data.update(_env_file((folder / path).read_text()))
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                          "data": data})
    return resources


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def config_maps(resources: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(resources, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["ocld"]
    return containers[0]


def kubelet_env(resources: list[dict[str, Any]], pod: str, secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as kubelet builds it for pod ``pod`` (an optional secret key that
    ``secret`` lacks is left out, as kubelet does)."""
    maps, env = config_maps(resources), {}
    for var in container(resources)["env"]:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = var["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            env[var["name"]] = pod
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = maps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == "ocld-credentials", ref
            if ref["key"] in secret:
                env[var["name"]] = secret[ref["key"]]
            else:
                assert ref.get("optional"), f"{var['name']}: a missing secret key would keep the pod from starting"
        else:
            raise AssertionError(f"extend kubelet_env() for {var}")
    return env


def expand(argument: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in a container's args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), argument)


def named_port(ctr: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in ctr["ports"] if p["name"] == port)


def probe_ports(ctr: dict[str, Any]) -> dict[str, int]:
    ports = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = ctr[probe].get("httpGet") or ctr[probe].get("tcpSocket")
        ports[probe] = named_port(ctr, handler["port"])
    return ports


def docker_config() -> Any:
    return parse_config(yaml.safe_load(DOCKER_YAML.read_text()), str(DOCKER_YAML))


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return build()


@pytest.fixture(scope="module")
def secret_template() -> dict[str, Any]:
    return yaml.safe_load((K8S / "secret.template.yaml").read_text())


# -- schemas --------------------------------------------------------------------------
def _releases() -> list[str]:
    def minor(v: str) -> tuple[int, int]:
        major, minor_, *_ = v.split(".")
        return int(major), int(minor_)

    releases = sorted(set(kubernetes_validate.utils.all_versions()), key=minor)
    return [v for v in releases if minor(v) >= minor(OLDEST_KUBERNETES)]


@pytest.mark.parametrize("release", _releases())
def test_every_resource_validates_against_the_kubernetes_schemas(resources, secret_template, release):
    assert {r["kind"] for r in resources} == {"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"}
    for resource in [*resources, secret_template]:
        try:
            kubernetes_validate.validate(resource, release, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} against Kubernetes {release}: "
                        f"{where}: {exc.message}")


def test_the_schemas_catch_a_misspelt_field(resources):
    """Strict validation is what catches a typo that Kubernetes would drop with a warning."""
    statefulset = yaml.safe_load(yaml.safe_dump(one(resources, "StatefulSet")))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError, match="pth"):
        kubernetes_validate.validate(statefulset, _releases()[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
def test_kubectl_kustomize_builds_the_same(resources):
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    built = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    # kustomize names a generated ConfigMap name-<hash of its content> and rewrites every reference to it
    hashed = {r["metadata"]["name"]: re.sub(r"-[a-z0-9]{10}$", "", r["metadata"]["name"])
              for r in built if r["kind"] == "ConfigMap"}
    text = yaml.safe_dump_all(built)
    for name, plain in hashed.items():
        assert name != plain, f"{name}: no content hash, so a changed config would not roll the pods"
        text = text.replace(name, plain)

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    assert sorted(yaml.safe_load_all(text), key=key) == sorted(resources, key=key)


# -- the config -----------------------------------------------------------------------
def test_the_generated_files_are_current():
    assert _render_module().main(["--check"]) == 0, "run: python deploy/k8s/render.py"


def test_the_config_map_holds_exactly_config_docker_yaml(resources):
    ctr = container(resources)
    spec = one(resources, "StatefulSet")["spec"]["template"]["spec"]
    config_arg = ctr["args"][ctr["args"].index("run") + 1]
    mount = next(m for m in ctr["volumeMounts"] if config_arg.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    data = config_maps(resources)[volume["configMap"]["name"]]
    assert data == {Path(config_arg).name: DOCKER_YAML.read_text()}
    assert mount.get("readOnly") is True


def test_the_endpoints_are_the_ones_config_docker_yaml_names(resources):
    cfg = docker_config()
    endpoints = config_maps(resources)["ocld-endpoints"]
    assert endpoints == {"KAFKA_BOOTSTRAP": cfg.kafka.bootstrap, "REDIS_URL": cfg.redis.url.get_secret_value()}


def test_render_refuses_what_a_pod_cannot_use(tmp_path):
    render = _render_module()
    with pytest.raises(render.RenderError, match="OCLD_REDIS_PASSWORD"):
        render.endpoints("kafka: {bootstrap: k:9092}\nredis: {url: 'redis://u:hunter2@r:6379/0'}\n")
    with pytest.raises(render.RenderError, match="embedded"):
        render.endpoints("kafka: {bootstrap: embedded}\nredis: {url: 'redis://r:6379/0'}\n")


def test_the_container_runs_with_its_pod_name_endpoints_and_secret(resources, tmp_path, monkeypatch):
    """``ocld run`` as kubelet starts it in pod ocld-2, with an overlay's endpoints: the config it ends up with."""
    overlay = yaml.safe_load(yaml.safe_dump(resources))
    for r in overlay:
        if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "ocld-endpoints":
            r["data"] = {"KAFKA_BOOTSTRAP": "broker-0.kafka.example:9093", "REDIS_URL": "redis://state.example:6380/1"}
    env = kubelet_env(overlay, "ocld-2", {"OCLD_REDIS_PASSWORD": "redis-pw", "OCLD_KAFKA_SASL_PASSWORD": "kafka-pw"})
    ctr = container(overlay)
    # the ConfigMap volumes, mounted under tmp_path
    spec = one(overlay, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {}
    for mount in ctr["volumeMounts"]:
        if "configMap" in volumes[mount["name"]]:
            folder = tmp_path / mount["name"]
            folder.mkdir()
            for key, text in config_maps(overlay)[volumes[mount["name"]]["configMap"]["name"]].items():
                (folder / key).write_text(text)
            mounts[mount["mountPath"].rstrip("/") + "/"] = f"{folder}/"
    argv = []
    for argument in (expand(a, env) for a in ctr["args"]):
        for mount_path, folder in mounts.items():
            if argument.startswith(mount_path):
                argument = folder + argument[len(mount_path):]
        argv.append(argument)
    for name in ocld_reads():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    args = cli.build_parser().parse_args(argv)
    assert args.func is cli.cmd_run and args.replica is None
    cfg = cli._config(args.config, args)  # the config cmd_run runs the daemon with
    assert cfg.scale.replica_id == "ocld-2"
    assert cfg.kafka.bootstrap == "broker-0.kafka.example:9093"
    assert cfg.redis.url.get_secret_value() == "redis://state.example:6380/1"
    assert cfg.redis.password is not None and cfg.redis.password.get_secret_value() == "redis-pw"
    assert cfg.kafka.sasl_password is not None and cfg.kafka.sasl_password.get_secret_value() == "kafka-pw"
    assert cfg.name == docker_config().name and cfg.learner == docker_config().learner


# -- environment, ports, secrets ------------------------------------------------------
def ocld_reads() -> set[str]:
    """The environment variables ocld's code reads (``os.environ.get("X")``, ``env["X"]``, ...)."""
    read = re.compile(r"""(?:environ|\benv)\s*(?:\.get\(|\.setdefault\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']"""
                      r"""|getenv\(\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= {a or b for a, b in read.findall(path.read_text())}
    return names


def test_every_variable_the_manifests_set_is_one_ocld_reads(resources):
    reads = ocld_reads()
    assert {"OCLD_REPLICA", "REDIS_URL", "KAFKA_BOOTSTRAP", "OCLD_REDIS_PASSWORD"} <= reads, reads  # the scan works
    set_here = {var["name"] for var in container(resources)["env"]}
    assert set_here <= reads, f"set but never read by ocld: {sorted(set_here - reads)}"
    assert "OCLD_FAULT" not in set_here  # fault injection, for tests only
    assert "envFrom" not in container(resources)  # every variable is named here, so this test sees it


def test_broker_and_redis_from_the_environment_reach_the_daemon(resources):
    """KAFKA_BOOTSTRAP / REDIS_URL replace only an ``embedded`` server in a config: where the config names one,
    the variable must reach ``--bootstrap`` / ``--redis``, or the daemon would silently use the config's."""
    cfg, args = docker_config(), container(resources)["args"]
    flags = {"KAFKA_BOOTSTRAP": ("--bootstrap", cfg.kafka.bootstrap),
             "REDIS_URL": ("--redis", cfg.redis.url.get_secret_value())}
    for var in {v["name"] for v in container(resources)["env"]} & set(flags):
        flag, configured = flags[var]
        if configured != "embedded":
            assert args[args.index(flag) + 1] == f"$({var})", f"{var} is set but the config's {configured} wins"


def test_the_replica_name_is_the_pod_name(resources):
    (var,) = [v for v in container(resources)["env"] if v["name"] == "OCLD_REPLICA"]
    assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    statefulset = one(resources, "StatefulSet")
    # ocld-0, ocld-1, ...: names ocld accepts (letters, digits, '_', '.', '-')
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", f"{statefulset['metadata']['name']}-0")


def test_probes_service_and_scrape_annotation_share_one_port(resources):
    ctr = container(resources)
    statefulset, service = one(resources, "StatefulSet"), one(resources, "Service")
    (http,) = [p["containerPort"] for p in ctr["ports"] if p["name"] == "http"]
    assert set(probe_ports(ctr).values()) == {http}
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == http
    assert [named_port(ctr, p["targetPort"]) for p in service["spec"]["ports"]] == [http]


def test_the_probes_use_the_configs_http_endpoint(resources):
    cfg = docker_config()
    assert cfg.http.port is not None, "config/docker.yaml serves no /healthz (http.port)"
    assert set(probe_ports(container(resources)).values()) == {cfg.http.port}
    assert cfg.http.host in ("0.0.0.0", "::"), "kubelet probes the pod's address, not 127.0.0.1"


def test_readiness_asks_healthz_and_liveness_does_not(resources):
    """A daemon waiting for its broker, Redis or lease is not ready, but restarting it would not help."""
    ctr = container(resources)
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["livenessProbe"].get("httpGet", {}).get("path") not in ("/healthz", "/health", "/readyz")
    assert "startupProbe" in ctr  # HTTP opens only after the lease is taken and the snapshot loaded


def test_no_secret_value_is_written_in_the_manifests(resources, secret_template):
    for var in container(resources)["env"]:
        if SECRET_NAME.search(var["name"]):
            assert "value" not in var, f"{var['name']} is written in the manifest"
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secret_template["stringData"], ref
    assert "Secret" not in {r["kind"] for r in resources}, "a Secret applied from this repository holds a password"
    # the template holds placeholders only
    assert secret_template["metadata"]["name"] == "ocld-credentials"
    assert all(re.fullmatch(r"<[^<>]+>", v) for v in secret_template["stringData"].values())
    # the ConfigMaps hold no password either
    cfg = docker_config()
    assert cfg.redis.password is None and cfg.kafka.sasl_password is None
    assert urlsplit(config_maps(resources)["ocld-endpoints"]["REDIS_URL"]).password is None


# -- the StatefulSet's shape ----------------------------------------------------------
def test_statefulset_service_and_budget_select_the_same_pods(resources):
    statefulset, service, budget = (one(resources, k) for k in ("StatefulSet", "Service", "PodDisruptionBudget"))
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for selector in (statefulset["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert budget["spec"]["maxUnavailable"] == 1


def test_replicas_fit_the_partitions_and_sigterm_has_time(resources):
    statefulset = one(resources, "StatefulSet")
    assert statefulset["spec"]["replicas"] <= docker_config().kafka.partitions  # more would sit idle
    # the final snapshot and the lease release happen after SIGTERM, within the grace period
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    resources_ = container(resources)["resources"]
    assert {"cpu", "memory"} <= set(resources_["requests"]) and "memory" in resources_["limits"]
