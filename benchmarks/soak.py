"""Soak: 1,000,000 records through the daemon; resident memory must stay flat.

Starts an embedded broker and Redis, runs ``ocld run`` as a child process, and feeds it a
hostile-but-realistic mix from a producer thread that stays ahead of the daemon:
85 % labelled records, 10 % predict-only records with ids whose labels never come (they
fill the delayed-label pending table, capped at ``messages.max_pending``, and force
evictions), 5 % bad records (dead-lettered). The child's resident memory (VmRSS from
/proc) is sampled every half second with its progress from the status hash.

Promise: RSS at the end is at most 10 % above RSS after the first 100,000 records.

    python benchmarks/soak.py                    # 1,000,000 records (a few minutes)
    python benchmarks/soak.py --records 200000   # quick check
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

D = 8


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def records(start: int, n: int, rng: np.random.Generator) -> list[bytes]:
    X = rng.normal(size=(n, D))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1.0)
    kind = rng.random(n)
    out = []
    for i in range(n):
        if kind[i] < 0.05:
            out.append(b'{"x": [1, 2, 3], "y": 0}' if i % 2 else b"{broken")
        elif kind[i] < 0.15:
            out.append(orjson.dumps({"x": X[i].tolist(), "id": f"p{start + i}"}))
        else:
            out.append(orjson.dumps({"x": X[i].tolist(), "y": int(y[i])}))
    return out


def feed(bootstrap: str, topic: str, total: int, progress: dict[str, Any], stop: threading.Event,
         ahead: int = 200_000, chunk: int = 20_000) -> None:
    """Produce ``total`` records, at most ``ahead`` beyond what the daemon has consumed."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    rng = np.random.default_rng(0)
    sent = 0
    while sent < total and not stop.is_set():
        if sent - progress.get("records_seen", 0) > ahead:
            time.sleep(0.2)
            continue
        n = min(chunk, total - sent)
        for v in records(sent, n, rng):
            producer.send(topic, value=v)
        producer.flush()
        sent += n
        progress["produced"] = sent
    producer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--baseline", type=int, default=100_000, help="RSS reference point (records consumed)")
    p.add_argument("--max-pending", type=int, default=10_000,
                   help="pending-table cap; 10 %% of records are never-labelled ids, so it fills by the baseline")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)

    from ocld.stream.broker import ensure_topics
    from ocld.stream.client import StateClient
    from ocld.stream.config import KafkaConfig
    from ocld.stream.embedded import EmbeddedBroker, EmbeddedRedis

    name, topic = "soak", "soak.in"
    cfg = {
        "name": name,
        "learner": {"name": "KalmanHead", "params": {"g": 0.9995, "learn_g": False},
                    "features": [{"name": "Standardizer"}]},
        "kafka": {"topic": topic, "max_batch": 1000, "max_wait_ms": 100},
        "snapshot": {"every_samples": 20_000, "every_seconds": 30, "keep": 3},
        "messages": {"n_features": D, "max_pending": args.max_pending},
        "drift": {"enabled": True, "adapt": True},
        "status": {"interval_s": 0.5, "metrics_every_s": 5},
    }
    samples: list[tuple[float, int, int, int, int]] = []  # (t, records, labelled, rss KiB, pending)
    with tempfile.TemporaryDirectory(prefix="ocld-soak-") as tmp:
        work = Path(tmp)
        cfg_path = work / "soak.yaml"
        cfg_path.write_text(orjson.dumps(cfg).decode())
        with EmbeddedBroker(work / "broker") as broker, EmbeddedRedis(work / "redis") as rds:
            ensure_topics(KafkaConfig(bootstrap=broker.bootstrap), {topic: 1})
            progress: dict[str, Any] = {"records_seen": 0, "produced": 0}
            stop = threading.Event()
            feeder = threading.Thread(target=feed, args=(broker.bootstrap, topic, args.records, progress, stop),
                                      daemon=True)
            log_path = work / "daemon.log"
            with open(log_path, "wb") as log_fh:
                proc = subprocess.Popen([sys.executable, "-m", "ocld.stream.cli", "run", str(cfg_path), "--bootstrap",
                                         broker.bootstrap, "--redis", rds.url], cwd=ROOT, stdout=log_fh,
                                        stderr=subprocess.STDOUT)
                feeder.start()
                client = StateClient(rds.url)
                t0 = time.monotonic()
                status: dict[str, Any] = {}
                try:
                    while time.monotonic() - t0 < args.timeout and proc.poll() is None:
                        time.sleep(0.5)
                        try:
                            status = client.status(name)
                        except Exception:
                            continue
                        seen = int(status.get("records_seen") or 0)
                        progress["records_seen"] = seen
                        rss = rss_kib(proc.pid)
                        if rss is not None and status.get("pid") == proc.pid:
                            samples.append((time.monotonic() - t0, seen, int(status.get("labelled_seen") or 0), rss,
                                            int(status.get("pending") or 0)))
                        if seen >= args.records:
                            break
                finally:
                    stop.set()
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            final = client.status(name)
            if proc.returncode != 0 or not samples:
                print(log_path.read_text()[-3000:])
                print(f"daemon exited with {proc.returncode}")
                return 1

    base = next((s for s in samples if s[1] >= args.baseline), samples[0])
    end = samples[-1]
    peak_after = max(s[3] for s in samples if s[1] >= base[1])
    print(f"soak: {end[1]:,} records in {end[0]:.0f} s ({end[1] / max(end[0], 1e-9):,.0f} records/s incl. start-up)")
    print()
    print("records | labelled | RSS MiB | pending | s")
    print("---|---|---|---|---")
    step = max(args.records // 10, 1)
    shown = set()
    for s in samples:
        bucket = s[1] // step
        if bucket not in shown or s is end:
            shown.add(bucket)
            print(f"{s[1]:,} | {s[2]:,} | {s[3] / 1024:.1f} | {s[4]:,} | {s[0]:.0f}")
    growth = end[3] / base[3] - 1
    growth_peak = peak_after / base[3] - 1
    print()
    print(f"RSS after {base[1]:,} records: {base[3] / 1024:.1f} MiB; at the end: {end[3] / 1024:.1f} MiB "
          f"({growth:+.1%}); peak after the baseline {peak_after / 1024:.1f} MiB ({growth_peak:+.1%})")
    print(f"pending table: {final.get('pending')} entries (cap {args.max_pending}), "
          f"{final.get('pending_evicted')} evicted; dead-lettered: {final.get('dlq_count')}, "
          f"dropped outputs: {final.get('dlq_dropped')}")
    ok = growth <= 0.10
    print("PASS: RSS grew at most 10 %" if ok else "FAIL: RSS grew more than 10 %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
