"""How the file is cut into batches and how a request's portion is drawn from the current batch.

The course API cuts its file into 10 consecutive slices of ``len // 10``
rows (a remainder of at most 9 rows is never served); the replica does the
same, so a batch's rows are the same on every run, in file order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

N_BATCHES = 10


@dataclass(frozen=True)
class BatchLayout:
    """Batch ``b`` (1..n_batches) is rows ``[(b-1)*size, b*size)`` of the file."""

    n_rows: int
    n_batches: int = N_BATCHES

    def __post_init__(self) -> None:
        # The layout's own invariant; a dataset file is checked earlier, by ``load_raw_csv``, naming the file.
        if self.n_rows < self.n_batches:
            raise ValueError(f"{self.n_rows} rows cannot be cut into {self.n_batches} non-empty batches")

    @property
    def batch_size(self) -> int:
        return self.n_rows // self.n_batches

    def bounds(self, batch_number: int) -> range:
        """The row positions of one batch."""
        if not 1 <= batch_number <= self.n_batches:
            raise ValueError(f"batch {batch_number} is outside 1..{self.n_batches}")
        start = (batch_number - 1) * self.batch_size
        return range(start, start + self.batch_size)


class PortionSampler:
    """Draws a random portion of a batch, without repeats inside one portion.

    One generator for the process, guarded by a lock (numpy generators are not
    thread-safe and FastAPI runs sync endpoints in a thread pool); with a seed,
    a sequence of requests is reproducible.
    """

    def __init__(self, layout: BatchLayout, fraction: float, seed: int | None = None) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"portion fraction {fraction} is outside (0, 1]")
        self.layout = layout
        self.portion_size = max(1, round(layout.batch_size * fraction))
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def sample(self, batch_number: int) -> np.ndarray:
        """Sorted row positions of a fresh random portion of ``batch_number``."""
        rows = self.layout.bounds(batch_number)
        with self._lock:
            offsets = self._rng.choice(len(rows), size=self.portion_size, replace=False)
        return np.sort(offsets) + rows.start
