"""Kafka client settings and topic administration shared by the consumer, producers and replay.

All kafka-python clients are built from :func:`client_kwargs`, so security options
(SASL PLAIN/SCRAM, SSL) are passed through in one place; the password is taken out of its
``SecretStr`` only here, at the call into kafka-python.

Note on tansu (the embedded broker): ``end_offsets()`` reports the base offset of the
last record batch plus one, not the true end; lag and "caught up" are measured from the
fetch high watermark (``consumer.highwater``) or by consuming, never from end_offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ocld.stream.config import KafkaConfig

log = logging.getLogger("ocld.broker")
T = TypeVar("T")


def client_kwargs(kafka: KafkaConfig, bootstrap: str | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {"bootstrap_servers": (bootstrap or kafka.bootstrap).split(",")}
    if kafka.security_protocol != "PLAINTEXT":
        kw["security_protocol"] = kafka.security_protocol
    if kafka.sasl_mechanism:
        kw["sasl_mechanism"] = kafka.sasl_mechanism
        kw["sasl_plain_username"] = kafka.sasl_username
        kw["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(kafka, name)
        if value:
            kw[name] = value
    return kw


def retry(what: str, fn: Callable[[], T], attempts: int = 8, first_delay: float = 0.5, max_delay: float = 8.0,
          kafka: KafkaConfig | None = None) -> T:
    """Call ``fn`` with backoff on connection errors (``stream.backoff``); one log line per retry.

    Errors retrying cannot fix (authentication, a security-protocol mismatch) are raised at
    once as :class:`~ocld.stream.errors.FatalConfigError` when ``kafka`` is given."""
    from kafka.errors import KafkaError

    from ocld.stream.backoff import retry_call

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, (KafkaError, OSError)) and not (kafka is not None and _auth_failure(exc))

    try:
        return retry_call(fn, what, transient, log, attempts=attempts, first=first_delay, cap=max_delay)
    except (KafkaError, OSError) as exc:
        if kafka is not None and _auth_failure(exc):
            raise kafka_failure(exc, kafka) from None
        raise


def _auth_failure(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Authentication" in name or "Sasl" in name or "SASL" in str(exc)


def kafka_failure(exc: BaseException, kafka: KafkaConfig) -> Exception:
    """A one-line error for a broker the daemon cannot work with (never shows a password)."""
    from ocld.stream.errors import FatalConfigError

    security = f"security_protocol={kafka.security_protocol}" + (
        f", sasl_mechanism={kafka.sasl_mechanism}, sasl_username={kafka.sasl_username!r}"
        if kafka.sasl_mechanism else "")
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)  # kafka-python's str() repeats the class
    first = text.splitlines()[0][:200] if text else ""
    if _auth_failure(exc):
        return FatalConfigError(f"broker {kafka.bootstrap} refused the credentials ({type(exc).__name__}: {first}); "
                                f"check kafka.sasl_username / sasl_password (or OCLD_KAFKA_SASL_PASSWORD) ({security})")
    return FatalConfigError(
        f"broker {kafka.bootstrap} accepts connections but the Kafka handshake fails ({type(exc).__name__}: {first}); "
        f"check that kafka.security_protocol and the SASL/SSL settings match the broker's listener ({security})")


def ensure_topics(kafka: KafkaConfig, topics: dict[str, int], bootstrap: str | None = None) -> None:
    """Create the topics that do not exist yet (name -> partitions). Existing ones are left alone."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    def _create() -> None:
        admin = KafkaAdminClient(**client_kwargs(kafka, bootstrap), client_id="ocld-admin")
        try:
            existing = set(admin.list_topics())
            new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()
                   if name not in existing]
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                log.info("created topics %s", [t.name for t in new])
        finally:
            admin.close()

    retry("creating topics", _create, attempts=3, kafka=kafka)


def topic_partitions(kafka: KafkaConfig, topic: str, bootstrap: str | None = None) -> list[int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**client_kwargs(kafka, bootstrap), enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        return sorted(parts or [])
    finally:
        consumer.close()
