"""The snapshot format: exact round trip, chunking, checksums, and no code execution on load."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ocld.core import snapshot as fmt
from ocld.learners.base import LearnerState


def _snap() -> fmt.Snapshot:
    rng = np.random.default_rng(0)
    child = LearnerState("Standardizer", {"with_std": True}, {"mean": rng.normal(size=6)}, {"n": 3.0})
    learner = LearnerState("Pipeline", {}, {"M": rng.normal(size=(128, 3)), "idx": np.arange(5, dtype=np.int32),
                                            "flags": np.array([True, False])},
                           {"classes": [0, "b", 2]}, {"step0": child})
    return fmt.Snapshot({"learner": learner}, {"topic": {0: 10, 3: 7}}, {"samples_seen": 10})


def test_round_trip_is_exact_across_chunk_sizes():
    snap = _snap()
    for chunk in (1024, 4096, 64 * 1024 * 1024):
        manifest, chunks = fmt.encode(snap, chunk)
        assert all(len(c) <= chunk for c in chunks)
        back = fmt.decode(manifest, chunks)
        assert back.offsets == {"topic": {0: 10, 3: 7}}
        a, b = snap.parts["learner"], back.parts["learner"]
        for k in a.arrays:
            assert a.arrays[k].dtype == b.arrays[k].dtype
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
        np.testing.assert_array_equal(a.children["step0"].arrays["mean"], b.children["step0"].arrays["mean"])
        assert b.meta == {"classes": [0, "b", 2]}


def test_corrupted_or_truncated_chunk_is_detected():
    manifest, chunks = fmt.encode(_snap(), 1024)
    bad = list(chunks)
    bad[1] = bad[1][:-1] + bytes([bad[1][-1] ^ 1])
    with pytest.raises(fmt.CorruptSnapshot, match="chunk 1 fails its sha256"):
        fmt.decode(manifest, bad)
    with pytest.raises(fmt.CorruptSnapshot):
        fmt.decode(manifest, chunks[:-1] + [chunks[-1][:-3]])
    with pytest.raises(fmt.CorruptSnapshot, match="missing"):
        fmt.decode(manifest, chunks[:-1] + [None])
    with pytest.raises(fmt.CorruptSnapshot):
        fmt.decode(b"not json", chunks)


def test_object_arrays_are_refused_and_pickles_are_never_loaded():
    with pytest.raises(TypeError, match="only numeric arrays"):
        fmt.encode(fmt.Snapshot({"x": LearnerState("K", {}, {"o": np.array([object()], dtype=object)})}))
    # A manifest that claims an object dtype is refused before anything is read.
    payload = np.frombuffer(pickle.dumps({"evil": 1}), dtype=np.uint8)
    manifest, chunks = fmt.encode(fmt.Snapshot({"x": LearnerState("K", {}, {"p": payload})}))
    forged = manifest.replace(b'"|u1"', b'"|O"')
    with pytest.raises(fmt.CorruptSnapshot, match="forbidden dtype"):
        fmt.decode(forged, chunks)
