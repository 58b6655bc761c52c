"""Every setting of the stack, read from environment variables in one place.

Defaults work on a laptop without a ``.env``: embedded back ends (an SQLite
data DB and an SQLite MLflow store under ``DATA_DIR``) and the local data API
replica on loopback. The compose ``.env`` overrides them for the stack.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".local")


class Settings(BaseSettings):
    """Names follow docs/architecture.md (the design contract); all are upper-case env vars."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where embedded back ends keep their files")

    # Data API (the course API or the local replica).
    data_api_url: HttpUrl = HttpUrl("http://127.0.0.1:8090")
    data_api_timeout_s: float = Field(30.0, gt=0)
    group_number: int = Field(1, ge=1, le=10)
    min_update_time: float = Field(300.0, ge=0, description="Seconds before the API moves to the next batch")

    # Collected data.
    data_db_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under data_dir")

    # MLflow tracking and registry.
    mlflow_tracking_uri: str | None = Field(None, description="Default: SQLite store under data_dir")
    mlflow_experiment_name: str = "covertype"
    model_name: str = "covertype"
    model_alias: str = "production"

    # Inference service.
    model_poll_interval_s: float = Field(
        30.0, gt=0, description="Seconds between checks of the alias for a new version"
    )
    predict_max_instances: int = Field(10_000, ge=1, description="Most records one POST /predict may carry")

    # Other services, for the UI.
    inference_url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    airflow_api_url: HttpUrl = HttpUrl("http://127.0.0.1:8080")
    airflow_username: str = "admin"
    airflow_password: str | None = None
    mlflow_ui_url: HttpUrl | None = Field(None, description="Browser-facing MLflow URL for links")

    # The pipeline DAG (helper pipeline; docs/pipeline.md).
    # Seconds between scheduled runs; 330 = the course API's 300 s batch window plus a margin; 0: manual only.
    pipeline_schedule_seconds: float = Field(330.0, ge=0)
    # Retries of a task after a network error or a 5xx (exponential backoff from pipeline_retry_delay_s).
    pipeline_retries: int = Field(3, ge=0)
    pipeline_retry_delay_s: float = Field(15.0, gt=0)
    # "full" (the DAG and the benchmark) or "fast" (small forests: the test suite, same code path).
    training_profile: Literal["full", "fast"] = "full"

    @field_validator("data_db_url", "mlflow_tracking_uri", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable in ``.env`` means "use the default", not "an empty URL"."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def resolved_data_db_url(self) -> str:
        """The data DB URL, defaulting to an SQLite file under ``data_dir``."""
        return self.data_db_url or f"sqlite:///{(self.data_dir / 'covertype.db').resolve()}"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to an SQLite store under ``data_dir``."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def model_uri(self) -> str:
        """The registry URI the inference service serves, e.g. ``models:/covertype@production``."""
        return f"models:/{self.model_name}@{self.model_alias}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
