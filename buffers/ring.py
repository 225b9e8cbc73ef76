"""A fixed-capacity FIFO over one numpy array: the newest ``capacity`` rows, oldest overwritten.

Pure and bounded; used for windowed metrics and the drift monitors' recent history.
"""

from __future__ import annotations

import numpy as np


class Ring:
    """The last ``capacity`` values (shape [capacity] or [capacity, width]); ``values()`` is oldest first."""

    def __init__(self, capacity: int, width: int | None = None, dtype: type = np.float64) -> None:
        shape = (capacity,) if width is None else (capacity, width)
        self.data: np.ndarray = np.zeros(shape, dtype=dtype)
        self.pos = 0
        self.filled = 0

    def push(self, rows: np.ndarray) -> None:
        w = self.data.shape[0]
        rows = rows[-w:]
        end = self.pos + rows.shape[0]
        if end <= w:
            self.data[self.pos:end] = rows
        else:
            cut = w - self.pos
            self.data[self.pos:] = rows[:cut]
            self.data[: end - w] = rows[cut:]
        self.pos = end % w
        self.filled = min(w, self.filled + rows.shape[0])

    def values(self) -> np.ndarray:
        if self.filled < self.data.shape[0]:
            return self.data[: self.filled].copy()
        return np.concatenate((self.data[self.pos:], self.data[: self.pos]))
