"""The learning core in a child process (``learner_process: true``).

One Python process cannot read and learn at the same time: numpy releases the GIL only inside
each call, and a reading thread next to the learner starves it (``benchmarks/overlap.py``). With
this option the daemon's process polls, decodes, writes outputs and runs the snapshot protocol,
while a child process (``multiprocessing`` spawn) owns the :class:`~ocld.core.runtime.LearningCore`
and learns one poll while the daemon reads the next.

Nothing about exactly-once changes: the daemon advances its offsets (and counts a poll as
consumed) only when the child's result for that poll has come back, and before every snapshot
it collects every poll in flight, so a snapshot holds the state after exactly the records its
offsets cover. The child is a pure function of the messages it gets, so a pipeline learns the
same state in either mode (tests check it).

Requests go through a ``multiprocessing.Queue`` (its feeder thread never blocks the daemon),
results come back on a pipe in request order. The child ignores SIGINT (a terminal's Ctrl-C
signals the whole process group, and the daemon still needs the child for its final snapshot); it
exits when the daemon asks it to, on SIGTERM, or when the daemon's process is gone (a SIGKILLed
daemon leaves no learner behind). A service manager that sends SIGTERM to every process of the
unit (systemd's default KillMode) ends the child before the daemon's final snapshot: use
KillMode=mixed, or the restart learns again from the last snapshot (nothing is lost). An exception
in the child comes back as :class:`LearnerProcessError` and stops the daemon, as it would
without the option.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import traceback
from typing import Any

from ocld.core.codec import Decoded
from ocld.core.runtime import BatchResult, LearningCore, limit_threads
from ocld.learners.base import LearnerState

log = logging.getLogger(__name__)


class LearnerProcessError(RuntimeError):
    """The learner process failed or is gone."""


def _view(core: LearningCore, res: BatchResult | None) -> dict[str, Any]:
    """What the daemon reads from the core between snapshots, sent with every reply."""
    return {
        "labelled_seen": core.labelled_seen, "samples_seen": core.samples_seen, "drift_count": core.drift_count,
        "pending_size": core.pending_size, "pending_evicted": core.pending_evicted, "learn_seconds": core.learn_seconds,
        "status_fields": core.status_fields(), "summary": core.summary(), "learner_metrics": core.learner_metrics(),
        "classes": list(core.classes) if res is not None and res.predictions else None,
    }


def _viewed(name: str, kind: type) -> property:
    """A RemoteCore property: ``LearningCore.<name>`` as of the child's last reply."""

    def get(self: RemoteCore) -> Any:
        return kind(self._field(name))

    return property(get, doc=f"``LearningCore.{name}`` as of the last reply")


def _serve(cfg: Any, requests: Any, results: Any) -> None:
    """The child's loop: one reply on ``results`` per request, in order."""
    # Ctrl-C in a terminal signals the whole process group: the daemon then finishes its batch and takes
    # a final snapshot, for which it needs this process alive. It exits when the daemon asks, or when the
    # daemon is gone. SIGTERM keeps its default: multiprocessing stops children with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()
    parent = mp.parent_process()
    core = LearningCore.from_config(cfg)
    results.send(("ok", _view(core, None)))
    while True:
        try:
            msg = requests.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return  # the daemon died (SIGKILL): nothing to hand back
            continue
        op = msg[0]
        try:
            if op == "process":
                res = core.process(msg[1])
                out: Any = (res, _view(core, res))
            elif op == "to_parts":
                out = core.to_parts()
            elif op == "restore":
                core.restore(msg[1], allow_pickle=msg[2])
                out = _view(core, None)
            elif op == "reset":
                core = LearningCore.from_config(cfg)
                out = _view(core, None)
            elif op == "stop":
                results.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001 (handed back to the daemon, which stops as it would without the option)
            results.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            continue
        results.send(("ok", out))


class RemoteCore:
    """A LearningCore in a child process, with the parts of its interface the daemon uses.

    ``submit`` sends a decoded poll and returns at once; ``collect`` returns the result of the
    oldest one submitted (blocking until it is ready). ``to_parts``, ``restore`` and ``reset``
    need nothing in flight. Counters, status fields and metrics are those of the last reply.
    """

    def __init__(self, cfg: Any, start_timeout_s: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        self._requests = ctx.Queue()
        self._results, child_end = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve, args=(cfg, self._requests, child_end), name="ocld-learner",
                                 daemon=True)
        self._proc.start()
        child_end.close()
        self._inflight = 0
        self._classes: list[Any] = []
        self._view: dict[str, Any] = {}
        self._start_timeout_s = start_timeout_s
        self._started = False

    # -- messages --------------------------------------------------------------------
    def _recv(self, timeout_s: float | None = None) -> Any:
        try:
            while not self._results.poll(1.0 if timeout_s is None else min(1.0, timeout_s)):
                if not self._proc.is_alive():
                    raise LearnerProcessError(f"the learner process exited (code {self._proc.exitcode})")
                if timeout_s is not None:
                    timeout_s -= 1.0
                    if timeout_s <= 0:
                        raise LearnerProcessError("the learner process did not answer in time")
            msg = self._results.recv()
        except (EOFError, OSError) as exc:
            raise LearnerProcessError(f"the learner process is gone ({type(exc).__name__})") from None
        if msg[0] == "error":
            log.error("learner process: %s", msg[2])
            raise LearnerProcessError(f"the learner process failed: {msg[1]}")
        return msg[1]

    def _ensure_started(self) -> None:
        if not self._started:
            self._view = self._recv(self._start_timeout_s)  # the child's first message: it is ready
            self._started = True

    def _call(self, *msg: Any) -> Any:
        if self._inflight:
            raise RuntimeError("collect every submitted poll before calling the learner process")
        self._ensure_started()
        self._requests.put(msg)
        return self._recv()

    # -- learning --------------------------------------------------------------------
    depth = 1  # one poll learns in the child while the daemon reads the next

    def submit(self, dec: Decoded) -> None:
        self._ensure_started()
        self._requests.put(("process", dec))
        self._inflight += 1

    @property
    def inflight(self) -> int:
        return self._inflight

    def collect(self) -> BatchResult:
        if not self._inflight:
            raise RuntimeError("no poll in flight")
        try:
            res, view = self._recv()
        finally:
            self._inflight -= 1  # answered (or failed): either way no longer in flight
        self._take(view)
        return res

    def _take(self, view: dict[str, Any]) -> None:
        self._view = view
        if view.get("classes") is not None:
            self._classes = view["classes"]

    # -- what the daemon reads -------------------------------------------------------
    def _field(self, name: str) -> Any:
        self._ensure_started()
        return self._view[name]

    labelled_seen = _viewed("labelled_seen", int)
    samples_seen = _viewed("samples_seen", int)
    drift_count = _viewed("drift_count", int)
    pending_size = _viewed("pending_size", int)
    pending_evicted = _viewed("pending_evicted", int)
    learn_seconds = _viewed("learn_seconds", float)  # seconds the child spent learning

    def status_fields(self) -> dict[str, Any]:
        return dict(self._field("status_fields"))

    def summary(self) -> dict[str, Any]:
        return dict(self._field("summary"))

    def learner_metrics(self) -> dict[str, Any]:
        return dict(self._field("learner_metrics"))

    @property
    def classes(self) -> list[Any]:
        """The learner's classes as of the last result that carried predictions."""
        return self._classes

    # -- state -----------------------------------------------------------------------
    def to_parts(self) -> dict[str, LearnerState]:
        return self._call("to_parts")

    def restore(self, parts: dict[str, LearnerState], allow_pickle: bool = False) -> None:
        self._take(self._call("restore", parts, allow_pickle))

    def reset(self) -> None:
        """Start again from a fresh core (the daemon's rewind after a fence)."""
        self._take(self._call("reset"))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the child (it has nothing to save: snapshots come from the daemon)."""
        if self._proc.is_alive() and not self._inflight:  # polls still in flight are not needed: not snapshotted
            try:
                self._requests.put(("stop",))
                self._proc.join(timeout_s)
            except (OSError, ValueError):
                pass
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5.0)
        self._requests.close()
        self._requests.join_thread()
        self._results.close()


__all__ = ["LearnerProcessError", "RemoteCore"]
