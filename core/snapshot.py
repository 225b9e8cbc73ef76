"""The snapshot format: a JSON manifest plus raw array bytes in checksummed chunks.

Loading a snapshot never executes code: the manifest is JSON, arrays are rebuilt with
``numpy.frombuffer`` from a whitelisted dtype, and every chunk's sha256 is checked
before anything is used. (A river model's pickled bytes travel as a uint8 array; turning
them back into an object is refused by ``ocld.learners.registry`` unless the config allows it.)

Manifest (format_version 1)::

    {"format": "ocld-snapshot", "format_version": 1, "created_at": ..., "info": {...},
     "offsets": {topic: {partition: next_offset}},
     "tree": {part: {"kind", "params", "meta", "arrays": [name...], "children": {...}}},
     "arrays": [{"path": "learner/head/M", "dtype": "<f8", "shape": [d, c], "start": s, "nbytes": n}],
     "chunks": [{"sha256": hex, "nbytes": n}], "total_bytes": n}
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ocld.learners.base import LearnerState

FORMAT = "ocld-snapshot"
FORMAT_VERSION = 1
_ALLOWED_KINDS = set("biufc")  # bool, signed, unsigned, float, complex: never object


class CorruptSnapshot(ValueError):
    """A manifest or chunk that fails its checksum or does not parse."""


class NewerSnapshotFormat(CorruptSnapshot):
    """A snapshot written by a newer ocld, in a format this one cannot read (not damaged: never skipped)."""


@dataclass
class Snapshot:
    parts: dict[str, LearnerState]
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"snapshot metadata must be JSON-able; got {type(obj).__name__}")


def encode(snapshot: Snapshot, chunk_bytes: int = 64 * 1024 * 1024) -> tuple[bytes, list[bytes]]:
    """-> (manifest bytes, chunks). Each chunk is at most ``chunk_bytes``."""
    blob = bytearray()
    arrays: list[dict[str, Any]] = []

    def node(state: LearnerState, path: str) -> dict[str, Any]:
        names = []
        for name, arr in state.arrays.items():
            a = np.asarray(arr)
            if a.dtype.kind not in _ALLOWED_KINDS:
                raise TypeError(f"array {path}/{name} has dtype {a.dtype}; only numeric arrays go into a snapshot")
            arrays.append({"path": f"{path}/{name}", "dtype": a.dtype.str, "shape": list(a.shape),
                           "start": len(blob), "nbytes": a.nbytes})
            blob.extend(a.tobytes(order="C"))  # shape kept as is (0-d arrays stay 0-d)
            names.append(name)
        return {"kind": state.kind, "params": state.params, "meta": state.meta, "arrays": names,
                "children": {k: node(c, f"{path}/{k}") for k, c in state.children.items()}}

    tree = {name: node(state, name) for name, state in snapshot.parts.items()}
    chunks = [bytes(blob[i:i + chunk_bytes]) for i in range(0, len(blob), chunk_bytes)] or [b""]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": snapshot.info.get("created_at", time.time()),
        "info": snapshot.info,
        "offsets": {t: {str(p): int(o) for p, o in parts.items()} for t, parts in snapshot.offsets.items()},
        "tree": tree,
        "arrays": arrays,
        "chunks": [{"sha256": hashlib.sha256(c).hexdigest(), "nbytes": len(c)} for c in chunks],
        "total_bytes": len(blob),
    }
    return _dumps(manifest), chunks


def parse_manifest(manifest_bytes: bytes) -> dict[str, Any]:
    try:
        manifest = orjson.loads(manifest_bytes)
    except orjson.JSONDecodeError as exc:
        raise CorruptSnapshot(f"manifest is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptSnapshot("not an ocld snapshot manifest")
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise NewerSnapshotFormat(f"snapshot format_version {version} was written by a newer ocld (this one reads "
                                  f"{FORMAT_VERSION})")
    if version != FORMAT_VERSION:
        raise CorruptSnapshot(f"unsupported snapshot format_version {version}")
    return manifest


def decode(manifest_bytes: bytes, chunks: list[bytes | None]) -> Snapshot:
    """Verify every chunk and rebuild the snapshot; raises CorruptSnapshot on any mismatch."""
    manifest = parse_manifest(manifest_bytes)
    expected = manifest["chunks"]
    if len(chunks) != len(expected):
        raise CorruptSnapshot(f"expected {len(expected)} chunks, found {len(chunks)}")
    for i, (chunk, meta) in enumerate(zip(chunks, expected)):
        if chunk is None:
            raise CorruptSnapshot(f"chunk {i} is missing")
        if len(chunk) != meta["nbytes"] or hashlib.sha256(chunk).hexdigest() != meta["sha256"]:
            raise CorruptSnapshot(f"chunk {i} fails its sha256 checksum (truncated or corrupted)")
    blob = b"".join(chunks)  # type: ignore[arg-type]
    if len(blob) != manifest["total_bytes"]:
        raise CorruptSnapshot("snapshot size does not match its manifest")
    by_path: dict[str, np.ndarray] = {}
    for a in manifest["arrays"]:
        dtype = np.dtype(a["dtype"])
        if dtype.kind not in _ALLOWED_KINDS:
            raise CorruptSnapshot(f"array {a['path']} has a forbidden dtype {a['dtype']}")
        raw = blob[a["start"]:a["start"] + a["nbytes"]]
        by_path[a["path"]] = np.frombuffer(raw, dtype=dtype).reshape(a["shape"]).copy()

    def build(n: dict[str, Any], path: str) -> LearnerState:
        return LearnerState(
            kind=n["kind"], params=n["params"], meta=n["meta"],
            arrays={name: by_path[f"{path}/{name}"] for name in n["arrays"]},
            children={k: build(c, f"{path}/{k}") for k, c in n["children"].items()},
        )

    parts = {name: build(n, name) for name, n in manifest["tree"].items()}
    offsets = {t: {int(p): int(o) for p, o in ps.items()} for t, ps in manifest["offsets"].items()}
    return Snapshot(parts, offsets, manifest["info"])


def checksum(manifest_bytes: bytes) -> str:
    """One sha256 over the manifest, which itself holds every chunk's sha256."""
    return hashlib.sha256(manifest_bytes).hexdigest()
