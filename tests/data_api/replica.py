"""Helpers for the replica's tests: settings, a hand-driven clock, and a real server on loopback."""

from __future__ import annotations

import csv
from pathlib import Path

from covertype.loopback import free_port as free_loopback_port
from covertype.loopback import serve_in_thread
from data_api.settings import DataApiSettings

ROWS_IN_SHARED_CSV = 15_120
BATCH_SIZE = ROWS_IN_SHARED_CSV // 10
PORTION_SIZE = round(BATCH_SIZE * 0.1)


def make_settings(csv_path: Path | None, state_dir: Path, **overrides: object) -> DataApiSettings:
    """Settings given in full, so that no variable of the test runner's environment leaks in."""
    values: dict[str, object] = {
        "covertype_csv": csv_path,
        "data_api_state_dir": state_dir,
        "min_update_time": 0,
        "portion_fraction": 0.1,
        "data_api_seed": 7,
        "data_api_groups": 10,
    }
    values.update(overrides)
    return DataApiSettings(**values)


class FakeClock:
    """A clock the test moves by hand: window behaviour without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_rows(csv_path: Path) -> list[tuple[str, ...]]:
    """The file's data rows as tuples of strings, read independently of the replica's loader."""
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [tuple(row) for row in reader]


__all__ = ["free_loopback_port", "serve_in_thread"]
