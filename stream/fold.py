"""The other replicas' statistics folded into this replica's head (``scale.fold_global_every_s``).

AnalyticRidge's statistics add up exactly, so a replica can predict with the model of all
partitions: it reads the other replicas' latest snapshots from Redis and hands their summed
statistics to its own head (``learners.merge.fold_external``), while the statistics it snapshots
stay its own. A replica's snapshot is read again only when its version changed.

Reads Redis through the stores; writes nothing. The learner API is ``learners.merge``'s.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from ocld.learners.merge import MergeError, fold_external
from ocld.learners.registry import learner_from_state
from ocld.stream.store import SnapshotStore, replica_names

log = logging.getLogger("ocld.fold")


class GlobalFold:
    def __init__(self, client: redis.Redis, pipeline: str, namespace: str, replica: str) -> None:
        self.r = client
        self.pipeline = pipeline
        self.namespace = namespace
        self.replica = replica
        self.folded_replicas: list[str] = []
        # other replica -> (snapshot version, its learner) as last folded; None: the head's folded part is unknown
        self._others: dict[str, tuple[int, Any]] | None = None

    def forget(self) -> None:
        """The head was reloaded from a snapshot: what it holds folded is what that snapshot held."""
        self._others = None

    def fold(self, learner: Any) -> None:
        """Fold the other replicas' latest statistics into ``learner`` (when any changed)."""
        try:
            others: dict[str, tuple[int, Any]] = {}
            for name in replica_names(self.r, self.pipeline, self.namespace):
                if name == self.replica:
                    continue
                store = SnapshotStore(self.r, self.pipeline, self.namespace, replica=name)
                version = store.latest_version()
                if version is None:
                    continue
                if self._others and name in self._others and self._others[name][0] == version:
                    others[name] = self._others[name]  # unchanged since the last fold: not read again
                    continue
                snap = store.load_latest()
                if snap is not None:
                    others[name] = (version, learner_from_state(snap.parts["learner"], allow_pickle=False))
        except redis.RedisError as exc:
            log.warning("folding the other replicas' statistics skipped: %s", exc)
            return
        if self._others is not None and {n: v for n, (v, _) in others.items()} == \
                {n: v for n, (v, _) in self._others.items()}:
            return  # nothing new to fold (the head already holds exactly these statistics)
        try:
            fold_external(learner, [x for _, x in others.values()])
        except (MergeError, ValueError) as exc:
            log.warning("cannot fold the other replicas' statistics: %s", exc)
            return
        self._others = others
        self.folded_replicas = sorted(others)
