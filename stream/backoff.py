"""The one backoff of ocld: delays doubling from a first value to a cap.

- :class:`Backoff` is the schedule, for a step the daemon's loop retries without blocking
  (a failed snapshot: try again after ``next()`` seconds, ``reset()`` once it worked).
- :func:`retry_call` blocks: it calls ``fn`` until it returns, retrying the errors it is told
  to retry on that schedule, with one log line per retry (tenacity does the looping). It gives up
  after ``attempts`` tries or ``deadline_s`` seconds, raising the last error.

Nothing here knows Kafka or Redis; callers say which errors are worth another try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

T = TypeVar("T")


class Backoff:
    """Delays ``first``, 2 * ``first``, ... up to ``cap`` seconds.

    >>> b = Backoff(0.5, 2.0)
    >>> [b.next() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def peek(self) -> float:
        return self._next

    def reset(self) -> None:
        self._next = self.first


def retry_call(fn: Callable[[], T], what: str, retry_on: Callable[[BaseException], bool], log: logging.Logger,
               attempts: int | None = None, deadline_s: float | None = None, first: float = 0.5,
               cap: float = 10.0, message: Callable[[BaseException, int, float], str] | None = None) -> T:
    """``fn()``, retried on errors for which ``retry_on`` is true (others are raised at once).
    ``message(error, attempt, delay)`` words the log line of a retry (default: what failed, and why)."""

    def before_sleep(state: RetryCallState) -> None:
        exc: Any = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if message is not None:
            log.warning("%s", message(exc, state.attempt_number, delay))
            return
        text = (str(exc).splitlines() or [""])[0][:200] if exc is not None else ""
        log.warning("%s failed (%s: %s); retry %d in %.1f s", what, type(exc).__name__, text, state.attempt_number,
                    delay)

    stop: stop_base = stop_after_attempt(attempts) if attempts is not None else stop_after_delay(deadline_s or 0.0)
    if attempts is not None and deadline_s is not None:
        stop = stop | stop_after_delay(deadline_s)
    retrying = Retrying(stop=stop, wait=wait_exponential(multiplier=first, min=first, max=cap),
                        retry=retry_if_exception(retry_on), before_sleep=before_sleep, reraise=True)
    return retrying(fn)
