"""Every codec Kafka defines decodes out of the box: elec rows produced with none, gzip, snappy,
lz4 and zstd, by librdkafka (confluent-kafka, the client most Kafka users have) and by
kafka-python's own producer, are each learned exactly once by the daemon on a real broker
(tansu) and Redis.

Each compressed topic is first read in a child process with the codec's module hidden: it must
fail there with kafka-python's ``UnsupportedCodecError``. That proves the batches on the broker
really are compressed with that codec, so a pass is not a producer quietly sending plain batches,
and it pins down the exception the daemon meets when a codec library is missing.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from ocld.stream.client import StateClient
from ocld.stream.daemon import Daemon
from tests.helpers import ROOT, elec_records, encode_rows, produce_librdkafka

pytestmark = pytest.mark.integration

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 2
N = 3000
BATCH = 400  # records per librdkafka batch: several batches per partition, not aligned with kafka.max_batch (500)

# The module kafka.codec imports for each codec, hidden in the child process (gzip is the standard library).
CODEC_MODULES = {"snappy": ["snappy"], "lz4": ["lz4", "lz4.frame"], "zstd": ["zstandard"]}

_READ_WITHOUT = """
import sys
for m in sys.argv[3:]:
    sys.modules[m] = None  # ImportError on import: the library is "not installed"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id=None, enable_auto_commit=False)
tps = [TopicPartition(sys.argv[2], p) for p in sorted(c.partitions_for_topic(sys.argv[2]))]
c.assign(tps)
c.seek_to_beginning(*tps)
for _ in range(60):
    try:
        n = sum(len(v) for v in c.poll(timeout_ms=500).values())
    except Exception as exc:
        # One poll only: a second one after this error spins in kafka-python's fetcher.
        print(f"{type(exc).__module__}.{type(exc).__qualname__}|{exc.args[0] if exc.args else ''}", flush=True)
        import os; os._exit(0)
    if n:
        print("decoded", flush=True)
        import os; os._exit(0)
print("nothing read", flush=True)
"""


def _read_without_codec(bootstrap: str, topic: str, codec: str) -> str:
    out = subprocess.run([sys.executable, "-c", _READ_WITHOUT, bootstrap, topic, *CODEC_MODULES[codec]],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def _produce_kafka_python(bootstrap: str, topic: str, values: list[bytes], codec: str) -> dict[int, int]:
    """kafka-python's producer with ``compression_type`` = codec, round-robin over the partitions."""
    from kafka import KafkaProducer

    from ocld.stream.broker import ensure_topics
    from ocld.stream.config import KafkaConfig

    ensure_topics(KafkaConfig(bootstrap=bootstrap), {topic: PARTITIONS})
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                             linger_ms=200, batch_size=64 * 1024)
    futures = [producer.send(topic, value=v, partition=i % PARTITIONS) for i, v in enumerate(values)]
    producer.flush(30)
    producer.close()
    counts: dict[int, int] = {}
    for f in futures:
        p = f.get(timeout=0).partition  # raises if the record was not delivered
        counts[p] = counts.get(p, 0) + 1
    return counts


def _assert_learned_exactly_once(cfg: Any, redis_url: str, per_partition: dict[int, int]) -> None:
    summary = Daemon(cfg).run(until_idle_s=0.5, max_seconds=120, install_signals=False)
    total = sum(per_partition.values())
    assert summary["labelled_seen"] == total, summary
    assert summary["dlq_count"] == 0, summary
    client = StateClient(redis_url)
    status = client.status(cfg.name)
    assert status["labelled_seen"] == total and status["dlq_count"] == 0 and status["state"] == "stopped", status
    latest = client.snapshot_info(cfg.name)["latest"]
    assert latest["offsets"] == {cfg.kafka.topic: {str(p): n for p, n in per_partition.items()}}
    assert latest["info"]["labelled_seen"] == total


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_batches_of_every_codec_are_learned_exactly_once(codec, make_config, broker, redis_url):
    cfg = make_config(drift={"enabled": False}, kafka={"partitions": PARTITIONS})
    X, y = elec_records(N)
    produced = produce_librdkafka(broker, cfg.kafka.topic, encode_rows(X, y), partitions=PARTITIONS,
                                  compression=codec, linger_ms=200, batch_records=BATCH)
    assert produced["records"] == N
    # Batches hold many records (librdkafka's own count): the consumer must split them across polls.
    assert produced["batches"] <= N // 100, produced
    if codec in CODEC_MODULES:
        assert _read_without_codec(broker, cfg.kafka.topic, codec) == (
            f"kafka.errors.UnsupportedCodecError|Libraries for {codec} compression codec not found")
    _assert_learned_exactly_once(cfg, redis_url, produced["per_partition"])


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_batches_of_every_codec_are_learned_exactly_once(codec, make_config, broker, redis_url):
    cfg = make_config(drift={"enabled": False}, kafka={"partitions": PARTITIONS})
    X, y = elec_records(N)
    per_partition = _produce_kafka_python(broker, cfg.kafka.topic, encode_rows(X, y), codec)
    assert per_partition == {0: N // 2, 1: N // 2}
    if codec in CODEC_MODULES:
        assert _read_without_codec(broker, cfg.kafka.topic, codec) == (
            f"kafka.errors.UnsupportedCodecError|Libraries for {codec} compression codec not found")
    _assert_learned_exactly_once(cfg, redis_url, per_partition)
