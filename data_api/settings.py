"""Settings of the data API replica, read from environment variables.

They live apart from ``covertype.settings`` because only the replica reads
them; ``MIN_UPDATE_TIME`` has the same name and meaning in both, so one value
in the compose ``.env`` drives the replica and the DAG's expectations alike.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".local/data-api")


class DataApiSettings(BaseSettings):
    """Every field is the lower-case name of its environment variable."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # The raw-format CSV to serve; unset: the UCI dataset, downloaded once and cached in the state dir.
    covertype_csv: Path | None = None
    # Where per-group state (SQLite) and the downloaded dataset are kept; a volume in Docker.
    data_api_state_dir: Path = DEFAULT_STATE_DIR
    # Seconds a batch stays current; 0 moves to the next batch on every request (tests).
    min_update_time: float = Field(300.0, ge=0)
    # Share of a batch served by one request (the course API serves a tenth).
    portion_fraction: float = Field(0.1, gt=0, le=1)
    # Seed of the portion sampler, for reproducible runs; unset: a fresh random seed.
    data_api_seed: int | None = None
    # Groups served are 1..data_api_groups (10 on the course API).
    data_api_groups: int = Field(10, ge=1)

    @field_validator("covertype_csv", "data_api_seed", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable in ``.env`` means "not set", not "the path ''"."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def state_db_path(self) -> Path:
        """The SQLite file holding every group's batch state."""
        return self.data_api_state_dir / "state.sqlite3"

    @property
    def cached_dataset_path(self) -> Path:
        """Where the converted UCI download is kept so that it happens once."""
        return self.data_api_state_dir / "covtype_raw.csv"
