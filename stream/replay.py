"""Replay a recorded file into a topic, and record a topic's history back to a file.

``replay``: records in file order; ``rate`` paces to N records/s, ``speed`` paces by the
``ts`` field (speed 2 = twice real time); partitions are chosen by ``id`` when present
(all records of one id land together), otherwise round-robin, so one partition keeps the
file order exactly. ``record``: reads every partition from the beginning until it reaches
the high watermark (not ``end_offsets``, which tansu misreports) and writes JSON lines.

What replay does with a line that cannot be sent (decided for ``ocld replay``): a file that
cannot be read at all (missing, a directory, not UTF-8) fails before anything is sent. A
single line that is not a sample (a missing or non-numeric cell, invalid JSON: the
``files.RowProblem`` rules) or whose record is larger than the producer accepts
(``max_request_size``, 1 MiB by default, the size a broker takes by default) is skipped
with a warning naming its line, and the rest of the file is replayed: one bad line in a
recording must not cost the rest of it, and the daemon would dead-letter such a record
anyway. :class:`ReplaySummary` counts the skipped lines by reason, and records the broker
refused after they were sent (``failed``), which the CLI reports as an error.
"""

from __future__ import annotations

import base64
import codecs
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ocld.core.codec import Codec
from ocld.stream.broker import client_kwargs, ensure_topics, retry
from ocld.stream.config import KafkaConfig
from ocld.stream.files import DataFileError, RowProblem, check_readable, iter_rows

log = logging.getLogger("ocld.replay")

WARN_LINES = 10  # skipped lines logged one by one; later ones are only counted


@dataclass
class ReplaySummary:
    """What a replay did: records sent, lines skipped (by reason, first lines), deliveries refused."""

    sent: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_lines: list[int] = field(default_factory=list)  # the first WARN_LINES
    failed: int = 0
    first_failure: str | None = None

    def skip(self, path: Path, line: int, kind: str, reason: str) -> None:
        self.skipped += 1
        self.skipped_by_reason[kind] = self.skipped_by_reason.get(kind, 0) + 1
        if len(self.skipped_lines) < WARN_LINES:
            self.skipped_lines.append(line)
            log.warning("%s:%d: %s; line skipped", path, line, reason)
            if len(self.skipped_lines) == WARN_LINES:
                log.warning("%s: further skipped lines are counted, not logged", path)

    def delivery_failed(self, exc: BaseException) -> None:
        """Errback of a send (kafka-python's sender thread)."""
        self.failed += 1
        if self.first_failure is None:
            self.first_failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"

    def describe(self, topic: str) -> str:
        text = f"replayed {self.sent} records to {topic}"
        if self.skipped:
            reasons = ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]))
            more = ", ..." if self.skipped > len(self.skipped_lines) else ""
            text += (f"; skipped {self.skipped} lines ({reasons}; lines "
                     f"{', '.join(map(str, self.skipped_lines))}{more})")
        if self.failed:
            text += f"; {self.failed} not delivered ({self.first_failure})"
        return text


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not enabled, mininterval=0.5, leave=enabled)


def _count_lines(path: Path) -> int | None:
    """Records in a plain file (None for .gz), checking on the way that it is UTF-8 text, so that
    a file that cannot be read fails before anything is sent."""
    check_readable(path)
    if path.suffix == ".gz":
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    n = 0
    try:
        with open(path, "rb") as fh:
            for buf in iter(lambda: fh.read(1 << 20), b""):
                try:
                    decoder.decode(buf)
                except UnicodeDecodeError as exc:
                    line = n + buf[:max(0, exc.start)].count(b"\n") + 1
                    raise DataFileError(f"{path}:{line}: not UTF-8 text (byte 0x{buf[max(0, exc.start)]:02x}); "
                                        "save the file as UTF-8; nothing was sent") from None
                n += buf.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not UTF-8 text (the file ends inside a character); nothing was sent") from None
    except OSError as exc:
        raise DataFileError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    return n - (0 if path.name.endswith((".jsonl", ".ndjson", ".json")) else 1)


def replay(path: str | Path, topic: str, kafka: KafkaConfig, *, rate: float | None = None, speed: float | None = None,
           limit: int | None = None, label_column: str | None = None, partitions: int = 1,
           codec: Codec | None = None, progress: bool = True) -> int:
    """Produce the file's records to ``topic``; returns the number sent (see :func:`replay_file`)."""
    return replay_file(path, topic, kafka, rate=rate, speed=speed, limit=limit, label_column=label_column,
                       partitions=partitions, codec=codec, progress=progress).sent


def replay_file(path: str | Path, topic: str, kafka: KafkaConfig, *, rate: float | None = None,
                speed: float | None = None, limit: int | None = None, label_column: str | None = None,
                partitions: int = 1, codec: Codec | None = None, progress: bool = True) -> ReplaySummary:
    """Produce the file's records to ``topic``; lines that cannot be sent are skipped and counted
    (see the module docstring). ``limit`` counts records sent."""
    from kafka import KafkaProducer
    from kafka.errors import MessageSizeTooLargeError
    from kafka.record.default_records import DefaultRecordBatchBuilder

    path = Path(path)
    if rate is not None and speed is not None:
        raise ValueError("give --rate or --speed, not both")
    total = _count_lines(path)
    ensure_topics(kafka, {topic: partitions})
    codec = codec or Codec()
    producer = retry("connecting the replay producer", lambda: KafkaProducer(
        **client_kwargs(kafka), linger_ms=10, batch_size=256 * 1024, client_id="ocld-replay"))
    max_bytes = int(producer.config["max_request_size"])
    n_parts = len(producer.partitions_for(topic) or [0])
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    summary = ReplaySummary()
    t0 = time.monotonic()
    ts0: float | None = None
    bar = _progress(total, f"replay -> {topic}", progress)
    try:
        for line, rec in iter_rows(path, label_column):
            if limit is not None and summary.sent >= limit:
                break
            if isinstance(rec, RowProblem):
                summary.skip(path, line, rec.kind, rec.reason)
                continue
            value = codec.encode(rec)
            if rate:
                wait = t0 + summary.sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            elif speed and isinstance(rec.get("ts"), (int, float)):
                ts0 = rec["ts"] if ts0 is None else ts0
                wait = t0 + (rec["ts"] - ts0) / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            rid = rec.get("id")
            part = (zlib.crc32(str(rid).encode()) if rid is not None else summary.sent) % n_parts
            # Checked here, not left to send(): kafka-python 2.x reports an oversized record through
            # its future (a lost record) where 3.x raises; both would end the replay otherwise.
            try:
                if DefaultRecordBatchBuilder.estimate_size_in_bytes(None, value, []) > max_bytes:
                    raise MessageSizeTooLargeError()
                future = producer.send(topic, value=value, partition=part)
            except MessageSizeTooLargeError:
                summary.skip(path, line, "too_large", f"the record is {len(value):,} bytes, over the producer's "
                             f"max_request_size of {max_bytes:,} bytes")
                continue
            future.add_errback(summary.delivery_failed)
            summary.sent += 1
            if summary.sent % 1000 == 0:
                bar.update(1000)
        bar.update(summary.sent % 1000)
        producer.flush()
    finally:
        bar.close()
        producer.close()
    return summary


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
                for recs in batch.values():
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
