"""Replay a recorded file into a topic, and record a topic's history back to a file.

``replay``: records in file order; ``rate`` paces to N records/s, ``speed`` paces by the
``ts`` field (speed 2 = twice real time); partitions are chosen by ``id`` when present
(all records of one id land together), otherwise round-robin, so one partition keeps the
file order exactly. ``record``: reads every partition from the beginning until it reaches
the high watermark (not ``end_offsets``, which tansu misreports) and writes JSON lines.
"""

from __future__ import annotations

import base64
import logging
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from ocld.stream.broker import client_kwargs, ensure_topics, retry
from ocld.core.codec import Codec
from ocld.stream.config import KafkaConfig
from ocld.stream.files import iter_records

log = logging.getLogger("ocld.replay")


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not enabled, mininterval=0.5, leave=enabled)


def _count_lines(path: Path) -> int | None:
    if path.suffix == ".gz":
        return None
    with open(path, "rb") as fh:
        n = sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))
    return n - (0 if path.name.endswith((".jsonl", ".ndjson", ".json")) else 1)


def replay(path: str | Path, topic: str, kafka: KafkaConfig, *, rate: float | None = None, speed: float | None = None,
           limit: int | None = None, label_column: str | None = None, partitions: int = 1,
           codec: Codec | None = None, progress: bool = True) -> int:
    """Produce the file's records to ``topic``; returns the number sent."""
    from kafka import KafkaProducer

    path = Path(path)
    if rate is not None and speed is not None:
        raise ValueError("give --rate or --speed, not both")
    ensure_topics(kafka, {topic: partitions})
    codec = codec or Codec()
    producer = retry("connecting the replay producer", lambda: KafkaProducer(
        **client_kwargs(kafka), linger_ms=10, batch_size=256 * 1024, client_id="ocld-replay"))
    n_parts = len(producer.partitions_for(topic) or [0])
    total = _count_lines(path)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    sent = 0
    t0 = time.monotonic()
    ts0: float | None = None
    bar = _progress(total, f"replay -> {topic}", progress)
    try:
        for rec in iter_records(path, label_column):
            if limit is not None and sent >= limit:
                break
            if rate:
                wait = t0 + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            elif speed and rec.get("ts") is not None:
                ts0 = rec["ts"] if ts0 is None else ts0
                wait = t0 + (rec["ts"] - ts0) / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            rid = rec.get("id")
            part = (zlib.crc32(str(rid).encode()) if rid is not None else sent) % n_parts
            producer.send(topic, value=codec.encode(rec), partition=part)
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
        bar.update(sent % 1000)
        producer.flush()
    finally:
        bar.close()
        producer.close()
    return sent


def record(topic: str, out: str | Path, kafka: KafkaConfig, *, limit: int | None = None, progress: bool = True,
           idle_timeout_s: float = 5.0) -> int:
    """Write the topic's history (all partitions, from the beginning) to a JSON-lines file."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = retry("connecting the recorder", lambda: KafkaConsumer(
        **client_kwargs(kafka), enable_auto_commit=False, group_id=None, client_id="ocld-record"))
    written = 0
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        if not parts:
            raise ValueError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        done: set[Any] = set()
        last_data = time.monotonic()
        bar = _progress(None, f"record <- {topic}", progress)
        with open(out, "wb") as fh:
            while len(done) < len(tps) and (limit is None or written < limit):
                batch = consumer.poll(timeout_ms=500)
                for tp, recs in batch.items():
                    for r in recs:
                        if limit is not None and written >= limit:
                            break
                        fh.write(_as_json_line(r.value))
                        written += 1
                    bar.update(len(recs))
                if batch:
                    last_data = time.monotonic()
                for tp in tps:
                    hw = consumer.highwater(tp)
                    if hw is not None and consumer.position(tp) >= hw:
                        done.add(tp)
                if not batch and time.monotonic() - last_data > idle_timeout_s:
                    break  # empty partitions never report a high watermark
        bar.close()
    finally:
        consumer.close()
    return written


def _as_json_line(value: bytes | None) -> bytes:
    try:
        return orjson.dumps(orjson.loads(value or b"")) + b"\n"
    except orjson.JSONDecodeError:
        return orjson.dumps({"_raw_b64": base64.b64encode(value or b"").decode()}) + b"\n"
