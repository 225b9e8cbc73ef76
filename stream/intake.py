"""Polls in, decoded batches out: the record codec and, for a stream that does not declare its
width, the hold that keeps one stray record from fixing it (``core.schema``).

While the width is not settled, polls are held here unlearned and their offsets are not counted
as consumed (a crash loses nothing: the restart reads them again). Once it is settled, or when
nothing can settle because every width seen is refused, the held polls come out in order.
A width whose learner state would pass ``learner.max_state_bytes`` is refused before anything
is allocated, and its records are dead-lettered with that reason.

Never touches Kafka or Redis: the daemon hands polls in and takes decoded batches out.
"""

from __future__ import annotations

import logging
import time

from ocld.core.codec import Codec, Decoded
from ocld.core.schema import WidthInference
from ocld.stream.config import Config
from ocld.stream.source import Polled

log = logging.getLogger("ocld.intake")


class Intake:
    def __init__(self, cfg: Config) -> None:
        m = cfg.messages
        self.cfg = cfg
        self.codec = Codec(m.format, m.features, m.n_features, m.max_record_bytes, m.max_abs_value, m.max_features)
        self.width: WidthInference | None = None if self.codec.n_features else self._inference()
        self.held: list[Polled] = []

    def _inference(self) -> WidthInference:
        m = self.cfg.messages
        return WidthInference(samples=m.infer_width_samples, agree=min(20, m.infer_width_samples),
                              wait_s=m.infer_width_wait_s, max_features=m.max_features)

    @property
    def holding(self) -> bool:
        return bool(self.held)

    @property
    def width_source(self) -> str:
        return self.codec.width_source or ("inferring" if self.width is not None else "")

    def restored(self, n_features: int, source: str) -> None:
        """The width a snapshot was learned with (the inference, if any, is over)."""
        self.codec.n_features = n_features
        self.codec.width_source = source
        self.width = None

    def offer(self, polled: Polled) -> list[Polled]:
        """The polls ready to learn, in order: this one, or the held ones once the width settles."""
        if self.width is None or self.codec.n_features is not None:
            return [polled]
        self.held.append(polled)
        widths = self.codec.widths(polled.values)
        while True:
            w = self.width.offer(widths, time.time())
            widths = []  # counted once; after a refusal only what is counted already can settle
            if w is None:
                break
            why = self._refused(w)
            if why is None:
                return self.release()
            self.width.refuse(w, why)
            self.width.width = None
            self.codec.refused_widths[w] = why
            log.warning("records with %d features cannot be learned: %s", w, why)
        if sum(len(p.values) for p in self.held) > 10 * self.cfg.kafka.max_batch:
            return self.release()  # nothing settles (every width seen is refused): dead-letter, do not hold for ever
        return []

    def due(self) -> list[Polled]:
        """The held polls, once the first of them has waited ``messages.infer_width_wait_s``."""
        if self.held and self.width is not None and self.width.due(time.time()) is not None:
            return self.release()
        return []

    def release(self) -> list[Polled]:
        assert self.width is not None
        held, self.held = self.held, []
        if self.width.width is not None:
            self.codec.n_features = self.width.width
            self.codec.width_source = self.width.reason
            log.info("record width %d, %s", self.width.width, self.width.reason)
            self.width = None
        return held

    def discard(self, tps: set[tuple[str, int]] | None = None) -> None:
        """Forget the held records (not consumed: they are read again from the claimed positions), of
        every partition or of ``tps`` only (the others keep their place: they are not read again)."""
        if not self.held:
            return
        if tps is None:
            self.held = []
        else:
            self.held = [kept for kept in (p.without(tps) for p in self.held) if kept.values]
            if self.held:
                return  # what was counted toward the width stays counted
        self.width = self._inference()

    def decode(self, polled: Polled) -> Decoded:
        return self.codec.decode(polled.values)

    def _refused(self, w: int) -> str | None:
        limit = self.cfg.learner.max_state_bytes
        need = self.cfg.build_learner().estimate_state_bytes(w, 2)
        if need is not None and need > limit:
            return (f"x has {w} features: {self.cfg.learner.name} would need {need / 2**30:.1f} GiB of state, over "
                    f"learner.max_state_bytes={limit / 2**30:.1f} GiB")
        return None


__all__ = ["Intake"]
