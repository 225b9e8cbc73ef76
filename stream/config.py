"""Pipeline configuration: one frozen, validated pydantic model read from YAML.

Environment variables are read here and nowhere else (``KAFKA_BOOTSTRAP``, ``REDIS_URL``,
``OCLD_KAFKA_SASL_PASSWORD``, ``OCLD_REDIS_PASSWORD``, ``OCLD_REPLICA``). Secrets are ``SecretStr`` and
never printed. A mistake in a config file fails at load time with a message that names
the field and says what to change.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from ocld.learners.base import Learner


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureMapSpec(_Model):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class LearnerSpec(_Model):
    name: str = "OnlineMixture"  # the default needs no choosing (config/default.yaml)
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[FeatureMapSpec] = Field(default_factory=list)
    max_state_bytes: int = Field(2 * 1024**3, ge=1024, description=(
        "the learner's state for the stream's width may take at most this many bytes, checked before "
        "anything is allocated (a wider record is dead-lettered; a declared width over it is a config error)"))


class KafkaConfig(_Model):
    bootstrap: str = "embedded"
    client: Literal["confluent", "kafka-python"] = Field("confluent", description=(
        "the consumer: confluent (librdkafka through confluent-kafka, the default: it hands a record over for a "
        "fraction of kafka-python's CPU) or kafka-python (pure Python); the same exactly-once behaviour"))
    topic: str = "ocld.samples"
    partitions: int = Field(1, ge=1, description="partitions to create when the topic does not exist")
    group_id: str | None = None  # default: ocld-{pipeline}
    dlq_topic: str | None = None  # default: {topic}.dlq
    predictions_topic: str | None = None  # publish predictions when set
    create_topics: bool = True
    start_from: Literal["earliest", "latest"] = "earliest"
    max_batch: int = Field(500, ge=1, le=100_000)
    max_wait_ms: int = Field(20, ge=0, le=60_000, description="poll and fetch wait: the broker may hold an empty fetch "
                             "this long (lower: less latency, more CPU per record; benchmarks/latency.py)")
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_poll_interval_ms: int = Field(10_000, ge=1000)
    fetch_max_bytes: int = Field(52_428_800, ge=1024)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be at most a third of "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        return self


class RedisConfig(_Model):
    url: SecretStr = SecretStr("embedded")
    password: SecretStr | None = None
    username: str | None = None
    namespace: str = "ocld"
    cluster: bool = Field(False, description="url names one node of a Redis Cluster (same as a redis+cluster:// url)")
    lease_ttl_s: float = Field(15.0, ge=2, description=(
        "the writer's lease expires this long after its daemon stopped renewing it (crashed, stalled, or cut "
        "off from Redis); another daemon, or a rollback, can take over after that"))
    heartbeat_ttl_s: float | None = Field(None, ge=2, description="deprecated name of lease_ttl_s")
    start_timeout_s: float = Field(30.0, gt=0, description=(
        "at start-up, wait this long for Redis to answer, then exit non-zero with one line"))
    metrics_maxlen: int = Field(10_000, ge=10)
    drift_maxlen: int = Field(10_000, ge=10)

    @property
    def lease_ttl(self) -> float:
        return self.heartbeat_ttl_s if self.heartbeat_ttl_s is not None else self.lease_ttl_s


class SnapshotConfig(_Model):
    every_samples: int = Field(10_000, ge=1)
    every_seconds: float = Field(30.0, gt=0)
    keep: int = Field(3, ge=1, description="complete versions kept besides pinned ones")
    max_pinned: int | None = Field(50, ge=1, description="at most this many versions stay pinned for rollback (the "
                                   "oldest are unpinned, then pruned like the others); null: no limit")
    chunk_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class MessagesConfig(_Model):
    format: Literal["json", "msgpack"] = "json"
    features: list[str] | None = None  # order for object-valued x; also fixes the width
    n_features: int | None = Field(None, ge=1)
    max_record_bytes: int = Field(1_048_576, ge=16)
    max_abs_value: float = Field(1e9, gt=0, description="larger |x| is rejected as poison")
    max_classes: int = Field(1000, ge=2)
    max_pending: int = Field(100_000, ge=0, description="unlabelled samples kept for delayed labels")
    max_features: int = Field(10_000, ge=1, description=(
        "a record with more features is dead-lettered before anything is allocated for it"))
    infer_width_samples: int = Field(100, ge=1, description=(
        "with neither n_features nor features, the width is inferred from the first this many records that "
        "carry x: the most common width wins (the first 20 agreeing settle it at once), the others are "
        "dead-lettered; nothing is learned before it is settled"))
    infer_width_wait_s: float = Field(10.0, gt=0, description=(
        "settle an inferred width after this long even if fewer records came (a slow stream)"))

    @model_validator(mode="after")
    def _width_consistent(self) -> MessagesConfig:
        if self.features is not None and self.n_features is not None and len(self.features) != self.n_features:
            raise ValueError(f"n_features ({self.n_features}) disagrees with the {len(self.features)} names in "
                             "features")
        return self


DetectorName = Literal["ADWIN", "PageHinkley", "KSWIN", "DDM"]  # ocld.core.detectors (exact, array state)


class InputDriftConfig(_Model):
    """Label-free drift monitor on block means of the features (ocld.core.drift.InputDriftMonitor)."""

    enabled: bool = False
    detector: DetectorName = "ADWIN"
    params: dict[str, Any] = Field(default_factory=lambda: {"clock": 1, "min_window_length": 2, "grace_period": 5})
    block: int = Field(100, ge=2, description="samples per block; each feature's block mean feeds its detector")
    warmup: int = Field(10, ge=1, description="blocks that fix each feature's scale before detection starts")
    max_features: int = Field(16, ge=1, description="at most this many features (evenly spaced) are monitored")
    window: int = Field(200, ge=1, description=(
        "recent block values kept: the reference of an input event's statistic, and what a snapshot written "
        "before detectors had an exact state is restored from"))
    adapt: bool = Field(False, description="call learner.adapt on input drift events too (they are always recorded)")


class DetectorConfig(_Model):
    """One more error detector (``drift.also``)."""

    detector: DetectorName
    params: dict[str, Any] = Field(default_factory=dict)


class DriftConfig(_Model):
    enabled: bool = True
    detector: DetectorName = "ADWIN"
    params: dict[str, Any] = Field(default_factory=dict)
    also: list[DetectorConfig] = Field(default_factory=list, description=(
        "more detectors on the same 0/1 errors, each with its own state; a sample where any of them fires "
        "raises one error event (named after the first in the order detector, also[0], also[1], ...)"))
    adapt: bool = Field(True, description="call learner.adapt on error drift events (false: record them only)")
    window: int = Field(2000, ge=10, description=(
        "recent errors kept: the reference of an event's direction (rising) for detectors without a mean estimate, "
        "and what a snapshot written before detectors had an exact state is restored from"))
    adapt_grid: int = Field(100, ge=1, description="adaptation takes effect at the next multiple of this many labelled "
                                                   "samples")
    cooldown: int = Field(0, ge=0, description="error events within this many labelled samples after an adapting one "
                                               "are recorded but not adapted to (breaks detect-forget-detect cascades)")
    adapt_on_fall: bool = Field(False, description="also treat detections where the error rate fell as drift events "
                                "and adapt to them (ADWIN fires in both directions; by default those are only counted, "
                                "as error_fell in the status)")
    new_class_guard: int = Field(500, ge=0, description=(
        "error events within this many labelled samples after a new class's first sample are recorded with action "
        "'new_class' and not adapted to: a new class raises the error without any concept drift (0: off)"))
    input: InputDriftConfig = Field(default_factory=InputDriftConfig)

    @model_validator(mode="after")
    def _detectors_build(self) -> DriftConfig:
        from ocld.core.drift import make_detector

        make_detector(self.detector, self.params)
        for a in self.also:
            make_detector(a.detector, a.params)
        make_detector(self.input.detector, self.input.params)
        return self


class EvaluationConfig(_Model):
    window: int = Field(1000, ge=1, description="samples in the windowed accuracy")


class StatusConfig(_Model):
    interval_s: float = Field(1.0, gt=0)
    metrics_every_s: float = Field(5.0, gt=0)


class HttpConfig(_Model):
    """Optional HTTP endpoint: ``/metrics`` (Prometheus) and ``/healthz`` (readiness)."""

    port: int | None = Field(None, ge=0, le=65535, description="serve /metrics and /healthz here (0: any free port)")
    host: str = "127.0.0.1"
    max_snapshot_age_s: float = Field(120.0, gt=0, description="/healthz is not ready when unsnapshotted work is older")


class ScaleConfig(_Model):
    """Several daemons on one topic (one Kafka consumer group; see stream.daemon "Scale-out")."""

    replica: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$", description=(
        "this daemon's name among the replicas of the pipeline: its own state, snapshots and status live under "
        "ocld:{pipeline}:replica:{replica}; empty: the single-daemon keys ocld:{pipeline}:*. The value 'hostname' "
        "uses the host name (docker compose --scale). OCLD_REPLICA overrides it"))
    fold_global_every_s: float | None = Field(None, gt=0, description=(
        "AnalyticRidge only: every this many seconds, fold the other replicas' published statistics into this "
        "replica's predictions, so that it predicts with the model of all partitions (its own statistics, which it "
        "snapshots, stay its own)"))

    @property
    def replica_id(self) -> str:
        if self.replica != "hostname":
            return self.replica
        import re
        import socket

        return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())


class Config(_Model):
    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$")
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    messages: MessagesConfig = Field(default_factory=MessagesConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    allow_pickle: bool = False
    data_dir: str = ".ocld"
    http: HttpConfig = Field(default_factory=HttpConfig)
    log_format: Literal["text", "json"] = "text"
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    learner_process: bool = Field(False, description=(
        "learn in a child process while the daemon reads and decodes the next poll (stream/worker.py): faster "
        "when learning costs about as much as reading or more; one more process and a copy of each poll"))

    @field_validator("learner")
    @classmethod
    def _learner_builds(cls, spec: LearnerSpec) -> LearnerSpec:
        from ocld.learners.registry import build_learner

        build_learner(spec.name, spec.params, [f.model_dump() for f in spec.features])
        return spec

    @model_validator(mode="after")
    def _declared_width_fits(self) -> Config:
        width = self.messages.n_features or (len(self.messages.features) if self.messages.features else None)
        if width is None:
            return self
        if width > self.messages.max_features:
            raise ValueError(f"messages.n_features ({width}) is over messages.max_features "
                             f"({self.messages.max_features}); raise messages.max_features or declare fewer features")
        need = self.build_learner().estimate_state_bytes(width, 2)
        if need is not None and need > self.learner.max_state_bytes:
            raise ValueError(
                f"with {width} features (messages.n_features) {self.learner.name} would need {need / 2**30:.1f} GiB "
                f"of state, over learner.max_state_bytes ({self.learner.max_state_bytes / 2**30:.1f} GiB): raise "
                "learner.max_state_bytes, or shrink the learner (fewer random features or sub-heads)")
        return self

    @model_validator(mode="after")
    def _fold_needs_analytic(self) -> Config:
        if self.scale.fold_global_every_s is not None and self.learner.name != "AnalyticRidge":
            raise ValueError(f"scale.fold_global_every_s needs learner AnalyticRidge (its statistics add up exactly), "
                             f"not {self.learner.name}; remove scale.fold_global_every_s")
        if self.scale.fold_global_every_s is not None and self.learner_process:
            raise ValueError("scale.fold_global_every_s folds the other replicas' statistics into the learner in the "
                             "daemon's process, so it cannot be combined with learner_process: true; set "
                             "learner_process: false or remove scale.fold_global_every_s")
        return self

    # -- derived names ---------------------------------------------------------------
    @property
    def group_id(self) -> str:
        return self.kafka.group_id or f"ocld-{self.name}"

    @property
    def dlq_topic(self) -> str:
        return self.kafka.dlq_topic or f"{self.kafka.topic}.dlq"

    @property
    def uses_pickle(self) -> bool:
        return self.learner.name == "RiverLearner"

    def build_learner(self) -> Learner:
        from ocld.learners.registry import build_learner

        return build_learner(self.learner.name, self.learner.params, [f.model_dump() for f in self.learner.features])

    def with_services(self, bootstrap: str | None = None, redis_url: str | None = None) -> Config:
        """A copy with the broker and/or Redis replaced (CLI flags, test fixtures)."""
        update: dict[str, Any] = {}
        if bootstrap:
            update["kafka"] = self.kafka.model_copy(update={"bootstrap": bootstrap})
        if redis_url:
            update["redis"] = self.redis.model_copy(update={"url": SecretStr(redis_url)})
        return self.model_copy(update=update)


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (for did-you-mean hints)."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def _format_errors(exc: ValidationError, source: str) -> str:
    """One line per mistake: the field, what is wrong and the fix; never a value that may be a secret.

    The input value is echoed (``(got 5)``) only when it is a short scalar that cannot hold a
    secret: never under a key that names a password, URL, SASL setting, token or secret; never
    a string that looks like a URL with credentials; never where a mapping or a list was
    expected (``redis: "redis://user:PASSWORD@host"`` is a URL written where the ``redis``
    section belongs); never a dict or a list. Keys are shown through ``redact_url`` too, since a
    URL written as a key (``redis: {redis://u:pw@h: ...}``) lands in the error's location.
    """
    secret_words = ("password", "passwd", "secret", "token", "sasl", "url", "credential", "auth")
    container_types = {"model_type", "model_attributes_type", "dict_type", "mapping_type", "list_type",
                       "tuple_type", "set_type", "frozen_set_type", "iterable_type", "dataclass_type"}

    def looks_secret(text: str) -> bool:
        return "@" in text or "://" in text or any(w in text.lower() for w in secret_words)

    def shown_key(part: Any) -> str:
        text = str(part)
        return redact_url(text) if "@" in text else text

    def kind(value: Any) -> str:
        return {str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
            type(value), "null" if value is None else f"a {type(value).__name__}")

    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(shown_key(p) for p in loc) or "(top level)"
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            known = _known_fields(Config, loc)
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"valid fields here: {', '.join(known)}"
            lines.append(f"  {where}: unknown field; {fix}")
        elif err["type"] in container_types:
            fields = _known_fields(Config, loc + ("",))
            expected = "a list" if err["type"] in {"list_type", "tuple_type", "set_type", "frozen_set_type",
                                                   "iterable_type"} else "a mapping of fields"
            fix = f"; fields here: {', '.join(fields)}" if fields else ""
            if isinstance(got, str) and "url" in fields:
                fix = f"; to give a URL, write it under {where}.url (indented on the next line)"
            lines.append(f"  {where}: expected {expected}, got {kind(got)} (value not shown){fix}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            hidden = (isinstance(got, (dict, list, tuple, set)) or any(looks_secret(str(p)) for p in loc)
                      or (isinstance(got, str) and (looks_secret(got) or len(got) > 80)))
            shown = "" if hidden else f" (got {got!r})"
            lines.append(f"  {where}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path) -> Config:
    """Read a YAML file, apply environment overrides, validate.

    Every way the file can be unusable (missing, a directory, unreadable, not UTF-8, not YAML)
    is a ``ConfigError`` naming the path and the fix. A YAML syntax error names the line and
    column but never quotes the line, which may hold a password.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; give the path of a YAML file such as config/kalman.yaml")
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory; give the path of a YAML file such as config/kalman.yaml")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is allowed
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML: {problem}{at}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping at the top level")
    return apply_environment(parse_config(data, str(path)))


def apply_environment(cfg: Config) -> Config:
    """The one place environment variables are read."""
    env = os.environ
    # KAFKA_BOOTSTRAP / REDIS_URL replace the embedded servers only, never an explicit one.
    cfg = cfg.with_services(
        env.get("KAFKA_BOOTSTRAP") if cfg.kafka.bootstrap == "embedded" else None,
        env.get("REDIS_URL") if cfg.redis.url.get_secret_value() == "embedded" else None,
    )
    if env.get("OCLD_REPLICA") is not None:
        cfg = with_replica(cfg, env["OCLD_REPLICA"], f"OCLD_REPLICA={env['OCLD_REPLICA']!r}")
    if env.get("OCLD_KAFKA_SASL_PASSWORD"):
        cfg = cfg.model_copy(
            update={"kafka": cfg.kafka.model_copy(update={"sasl_password": SecretStr(env["OCLD_KAFKA_SASL_PASSWORD"])})}
        )
    if env.get("OCLD_REDIS_PASSWORD"):
        redis_password = SecretStr(env["OCLD_REDIS_PASSWORD"])
        cfg = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"password": redis_password})})
    return cfg


def with_replica(cfg: Config, replica: str, source: str) -> Config:
    """A copy running as replica ``replica`` (``source`` names where the value came from, for the error)."""
    try:
        return cfg.model_copy(update={"scale": ScaleConfig(**{**cfg.scale.model_dump(), "replica": replica})})
    except ValidationError:
        raise ConfigError(f"{source}: a replica name uses only letters, digits, '_', '.' and '-' "
                          "(or 'hostname')") from None


def redact_url(url: str) -> str:
    """A URL with its password replaced by ``***``, for logs and errors.

    Any scheme (``redis://``, ``rediss://``, ``redis+cluster://``, ``unix://``, ...). The
    password is everything between the user's ``:`` and the *last* ``@``, so a password that
    itself holds ``@``, ``/``, ``:`` or ``,`` is hidden whole; with several hosts
    (``redis+cluster://u:pw@h1:1,h2:2``) the hosts stay visible. A user without a password is
    not a secret and stays. Query parameters that name a password, secret or token
    (``?password=...``) are hidden too.

    >>> redact_url("redis://u:pw@h:6379/0"), redact_url("redis://:pw@h"), redact_url("redis://u@h")
    ('redis://u:***@h:6379/0', 'redis://:***@h', 'redis://u@h')
    """
    import re

    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        creds, hosts = rest.rsplit("@", 1)
        if ":" in creds:
            rest = f"{creds.split(':', 1)[0]}:***@{hosts}"
    rest = re.sub(r"(?i)([?&;][^=&#]*(?:pass|pwd|secret|token)[^=&#]*=)[^&#]*", r"\1***", rest)
    return f"{scheme}{sep}{rest}"
