"""The replica's behaviour, apart from HTTP: which rows a group gets, and when.

The routes in ``data_api.app`` only translate between this and the HTTP
contract, so the rules can be read (and tested) in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from data_api.batches import BatchLayout, PortionSampler
from data_api.data_source import Dataset
from data_api.settings import DataApiSettings
from data_api.state import StateStore, is_due

Clock = Callable[[], float]


class BadGroupError(ValueError):
    """A group number the replica does not serve."""


@dataclass(frozen=True)
class Portion:
    group_number: int
    batch_number: int
    rows: list[list[str]]


class ReplicaService:
    """Serves portions of each group's current batch and keeps the groups' state."""

    def __init__(self, settings: DataApiSettings, dataset: Dataset, clock: Clock = time.time) -> None:
        self.settings = settings
        self.dataset = dataset
        self.layout = BatchLayout(dataset.n_rows)
        self.sampler = PortionSampler(self.layout, settings.portion_fraction, settings.data_api_seed)
        self.store = StateStore(settings.state_db_path, self.layout.n_batches)
        self.clock = clock

    def check_group(self, group_number: int) -> None:
        if not 1 <= group_number <= self.settings.data_api_groups:
            raise BadGroupError(
                f"group_number {group_number} is not a valid group: use 1..{self.settings.data_api_groups}"
            )

    def serve(self, group_number: int) -> Portion:
        """A random portion of the group's current batch; may start the next batch.

        Raises ``CollectionCompleteError`` once the last batch's window has passed.
        """
        self.check_group(group_number)
        claim = self.store.claim(group_number, self.clock(), self.settings.min_update_time)
        positions = self.sampler.sample(claim.batch_number)
        return Portion(group_number, claim.batch_number, self.dataset.rows_as_strings(positions))

    def restart(self, group_number: int) -> bool:
        """Start the group over at batch 1; whether it had been served before."""
        self.check_group(group_number)
        return self.store.reset(group_number)

    def status(self) -> dict[str, Any]:
        """What an operator wants at a glance: the dataset and where each group stands."""
        now = self.clock()
        min_update_time = self.settings.min_update_time
        groups = []
        for state in self.store.snapshot():
            elapsed = now - state.batch_started_at
            groups.append(
                {
                    "group_number": state.group_number,
                    "batch_number": state.batch_number,
                    "batch_started_at": datetime.fromtimestamp(state.batch_started_at, UTC).isoformat(),
                    "requests_served": state.requests_served,
                    "next_request_advances": is_due(elapsed, min_update_time),
                    "complete": state.batch_number >= self.layout.n_batches and is_due(elapsed, min_update_time),
                }
            )
        return {
            "service": "covertype data API (local replica)",
            "status": "ok",
            "dataset": {
                "source": str(self.dataset.source),
                "rows": self.dataset.n_rows,
                "batches": self.layout.n_batches,
                "batch_size": self.layout.batch_size,
                "portion_size": self.sampler.portion_size,
            },
            "min_update_time": min_update_time,
            "groups_served": f"1..{self.settings.data_api_groups}",
            "groups": groups,
        }
