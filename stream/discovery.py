"""Where the embedded servers of a running ``ocld run`` are, for the other commands to find.

The embedded broker and Redis listen on free ports. While a daemon runs on them it writes their
addresses to ``servers.json`` in its data folder and to ``~/.ocld/run/{pipeline}.json``
(``OCLD_RUN_DIR`` moves the latter), and removes both when it stops. ``ocld status``, ``query``,
``replay``, ``record``, ``report``, ``rollback`` and ``env`` use them when neither a flag nor
``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` names a server. An entry whose process is gone is ignored
(and removed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson


def run_dir() -> Path:
    return Path(os.environ.get("OCLD_RUN_DIR") or Path.home() / ".ocld" / "run")


def publish(pipeline: str, bootstrap: str, redis_url: str, data_dir: Path) -> list[Path]:
    """Record this process's embedded servers (the files to remove when it stops)."""
    entry = orjson.dumps({"pipeline": pipeline, "bootstrap": bootstrap, "redis": redis_url, "pid": os.getpid(),
                          "data_dir": str(Path(data_dir).resolve()), "started_at": time.time()},
                         option=orjson.OPT_INDENT_2)
    paths = [Path(data_dir) / "servers.json", run_dir() / f"{pipeline}.json"]
    written = []
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(entry)
            written.append(path)
        except OSError:
            continue  # a read-only home: the data folder's copy still serves
    return written


def withdraw(paths: list[Path]) -> None:
    for path in paths:
        try:
            entry = orjson.loads(path.read_bytes())
            if entry.get("pid") == os.getpid():
                path.unlink()
        except (OSError, orjson.JSONDecodeError):
            continue


def running(pipeline: str | None = None, data_dir: str | Path = ".ocld") -> list[dict[str, Any]]:
    """Live entries (their process still runs), for ``pipeline`` if given; newest first."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    candidates = list(run_dir().glob("*.json")) + list(Path(data_dir).glob("*/servers.json"))
    for path in candidates:
        try:
            entry = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(entry, dict) or not _alive(int(entry.get("pid", 0))):
            if path.parent == run_dir():
                path.unlink(missing_ok=True)
            continue
        if pipeline is not None and entry.get("pipeline") != pipeline:
            continue
        found[(str(entry.get("pipeline")), int(entry["pid"]))] = entry
    return sorted(found.values(), key=lambda e: -float(e.get("started_at", 0)))


def find(pipeline: str | None = None, data_dir: str | Path = ".ocld") -> dict[str, Any] | None:
    """The one running daemon's servers (for ``pipeline``, or the only one running); None if none;
    a ``LookupError`` naming them when several run and none was named."""
    entries = running(pipeline, data_dir)
    if len(entries) > 1 and pipeline is None:
        names = ", ".join(sorted({str(e["pipeline"]) for e in entries}))
        raise LookupError(f"several daemons run on embedded servers ({names}): name the pipeline, or give "
                          "--redis / --bootstrap")
    return entries[0] if entries else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
