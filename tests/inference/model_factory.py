"""Train and register small real models for the inference tests.

The training pipeline (``covertype.training``) is the production path; these
tests only need *a* model that honours the same registry contract: an sklearn
``Pipeline`` taking a DataFrame of the 12 raw-format columns, logged with
``mlflow.sklearn.log_model`` (skops), registered as ``covertype`` with the
alias moved by ``set_registered_model_alias``. Small forests keep the tests fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMN_NAMES, SOIL_COLUMN, WILDERNESS_COLUMN

REPO_ROOT = Path(__file__).resolve().parents[2]
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
PIP_REQUIREMENTS = [
    f"{name}=={metadata.version(name)}" for name in ("scikit-learn", "skops", "pandas", "numpy", "mlflow-skinny")
]


def shared_csv_path() -> Path:
    """The shared raw-format CSV: ``COVERTYPE_CSV`` (the Makefile sets it) or ``../shared/data/covertype.csv``."""
    configured = os.environ.get("COVERTYPE_CSV")
    path = Path(configured) if configured else REPO_ROOT / "../shared/data/covertype.csv"
    if not path.is_file():
        raise FileNotFoundError(f"shared data not found at {path}; set COVERTYPE_CSV to the raw-format CSV")
    return path.resolve()


def load_shared_frame() -> pd.DataFrame:
    """All shared rows, typed as the model expects them (int64 numerics, string categories)."""
    frame = pd.read_csv(shared_csv_path())
    frame[list(NUMERIC_COLUMN_NAMES)] = frame[list(NUMERIC_COLUMN_NAMES)].astype("int64")
    return frame


def build_pipeline(n_estimators: int = 15, random_state: int = 0) -> Pipeline:
    """A small raw-format pipeline: one-hot the two categories, pass the numerics through, extra trees."""
    encoder = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), [WILDERNESS_COLUMN, SOIL_COLUMN])],
        remainder="passthrough",
    )
    forest = ExtraTreesClassifier(n_estimators=n_estimators, max_depth=14, random_state=random_state, n_jobs=1)
    return Pipeline([("encode", encoder), ("model", forest)])


def train_pipeline(frame: pd.DataFrame, n_estimators: int = 15, random_state: int = 0) -> Pipeline:
    """Fit ``build_pipeline`` on the given labelled rows."""
    pipeline = build_pipeline(n_estimators=n_estimators, random_state=random_state)
    pipeline.fit(frame[list(FEATURE_COLUMNS)], frame[LABEL_COLUMN])
    return pipeline


@dataclass(frozen=True)
class RegisteredVersion:
    """What a registration produced, for assertions."""

    version: str
    run_id: str


def register_pipeline(
    tracking_uri: str,
    pipeline: Pipeline,
    sample: pd.DataFrame,
    *,
    artifact_root: Path | None,
    model_name: str = "covertype",
    alias: str | None = "production",
    metrics: dict[str, float] | None = None,
    columns: Sequence[str] = FEATURE_COLUMNS,
    serialization_format: str = "skops",
    skops_trusted_types: Sequence[str] = SKOPS_TRUSTED_TYPES,
) -> RegisteredVersion:
    """Log ``pipeline`` in a run of experiment ``covertype``, register it and (optionally) point ``alias`` at it.

    Artifacts go under ``artifact_root`` (a tmp dir), never into the working directory; ``None`` leaves
    the location to a tracking server (which then serves the artifacts itself). ``columns`` are the
    model's input columns in ``sample`` (another list only for a model that breaks the contract);
    ``serialization_format`` and ``skops_trusted_types`` differ only for models the service must refuse.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name("covertype") is None:
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        client.create_experiment("covertype", artifact_location=location)
    mlflow.set_experiment("covertype")
    features = sample[list(columns)].head(5)
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics or {"macro_f1": 0.5, "accuracy": 0.5})
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features, pipeline.predict(features)),
            input_example=features,
            serialization_format=serialization_format,
            skops_trusted_types=list(skops_trusted_types),
            registered_model_name=model_name,
            # Explicit requirements: inferring them runs a subprocess that re-imports the model (~10 s).
            pip_requirements=PIP_REQUIREMENTS,
        )
    version = str(info.registered_model_version)
    if alias is not None:
        client.set_registered_model_alias(model_name, alias, version)
    return RegisteredVersion(version=version, run_id=run.info.run_id)
