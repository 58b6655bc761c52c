"""Local MLflow stores for the inference tests, and records as a client sends them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.pipeline import Pipeline

from covertype.schema import FEATURE_COLUMNS
from covertype.settings import Settings
from tests.inference.model_factory import RegisteredVersion


@dataclass(frozen=True)
class Store:
    """A local MLflow store: tracking/registry URI and where artifacts go."""

    root: Path
    tracking_uri: str
    artifact_root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {"mlflow_tracking_uri": self.tracking_uri, "data_dir": self.root}
        values.update(overrides)
        return Settings(**values)


def make_store(root: Path, template: Path) -> Store:
    """A fresh store: a copy of an already migrated empty database (creating one costs ~10 s of migrations)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, root / "mlflow.db")
    return Store(root=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "artifacts")


@dataclass(frozen=True)
class ServingStore:
    """A store whose ``covertype@production`` is ``model``."""

    store: Store
    version: RegisteredVersion
    model: Pipeline


def record_of(frame: pd.DataFrame, position: int) -> dict[str, int | str]:
    """One shared-data row as the JSON record a client would send (numbers as numbers)."""
    row = frame.iloc[position]
    return {column: (row[column] if isinstance(row[column], str) else int(row[column])) for column in FEATURE_COLUMNS}
