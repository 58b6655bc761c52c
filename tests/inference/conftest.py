"""Fixtures of the inference tests: real models registered in a local MLflow store (SQLite + tmp artifacts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline

from inference.app import create_app
from tests.inference.clients import checked_client
from tests.inference.model_factory import load_shared_frame, register_pipeline, train_pipeline
from tests.inference.stores import ServingStore, Store, make_store


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created and nothing in it."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def shared_frame() -> pd.DataFrame:
    return load_shared_frame()


@pytest.fixture(scope="session")
def model_a(shared_frame: pd.DataFrame) -> Pipeline:
    return train_pipeline(shared_frame.sample(4000, random_state=1), n_estimators=12, random_state=1)


@pytest.fixture(scope="session")
def model_b(shared_frame: pd.DataFrame) -> Pipeline:
    return train_pipeline(shared_frame.sample(4000, random_state=2), n_estimators=8, random_state=2)


@pytest.fixture
def store(tmp_path: Path, empty_mlflow_db: Path) -> Store:
    """An empty store for tests that change the registry."""
    return make_store(tmp_path / "mlflow", empty_mlflow_db)


@pytest.fixture(scope="module")
def serving_store(
    tmp_path_factory: pytest.TempPathFactory, model_a: Pipeline, shared_frame: pd.DataFrame, empty_mlflow_db: Path
) -> ServingStore:
    """A store where ``covertype@production`` is ``model_a``, shared by the read-only tests of a module."""
    store = make_store(tmp_path_factory.mktemp("serving") / "mlflow", empty_mlflow_db)
    version = register_pipeline(
        store.tracking_uri,
        model_a,
        shared_frame,
        artifact_root=store.artifact_root,
        metrics={"macro_f1": 0.81, "accuracy": 0.82, "rows_used": 4000.0},
    )
    return ServingStore(store=store, version=version, model=model_a)


@pytest.fixture
def client(serving_store: ServingStore) -> Iterator[TestClient]:
    """The app serving ``serving_store``, started (lifespan run) and stopped around the test."""
    with checked_client(create_app(serving_store.store.settings(predict_max_instances=50))) as test_client:
        yield test_client
