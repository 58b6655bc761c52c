"""Fixtures of the UI tests: real back ends on loopback, a local MLflow store, and closed ports.

Each page is driven with Streamlit's ``AppTest`` in this process; the page's
clients then call real servers (uvicorn threads on 127.0.0.1) or read real
stores (SQLite), configured through the same environment variables as in
the stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st

from tests.ui import backends
from tests.ui.servers import closed_url

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "ui" / "streamlit_app.py"
ENV_VARS = (
    "INFERENCE_URL",
    "AIRFLOW_API_URL",
    "AIRFLOW_USERNAME",
    "AIRFLOW_PASSWORD",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_UI_URL",
    "DATA_DB_URL",
    "DATA_API_URL",
    "DATA_DIR",
    "MLFLOW_EXPERIMENT_NAME",
    "MODEL_NAME",
    "MODEL_ALIAS",
)


@pytest.fixture(autouse=True)
def ui_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Every service the UI knows points at a closed loopback port unless the test says otherwise."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "ui-data"))
    monkeypatch.setenv("INFERENCE_URL", closed_url())
    monkeypatch.setenv("AIRFLOW_API_URL", closed_url())
    monkeypatch.setenv("AIRFLOW_PASSWORD", "not-used")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_url())
    monkeypatch.setenv("DATA_API_URL", closed_url())
    monkeypatch.setenv("DATA_DB_URL", f"sqlite:///{tmp_path / 'missing' / 'covertype.db'}")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield monkeypatch
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def shared_frame(covertype_csv: Path) -> pd.DataFrame:
    """The shared raw-format rows, typed as the model expects them."""
    return backends.load_frame(covertype_csv)


@dataclass(frozen=True)
class ServedModel:
    """A registered production model and the inference service serving it."""

    tracking_uri: str
    inference_url: str
    store: backends.MlflowFixture
    # The JSON bodies of the POST /predict requests the service received, oldest first (every test's).
    predict_bodies: list[Any]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory, shared_frame: pd.DataFrame) -> backends.MlflowFixture:
    """A local MLflow store with two training runs (one nested candidate) and ``production`` on version 2."""
    return backends.build_mlflow_store(tmp_path_factory.mktemp("mlflow"), shared_frame)


@pytest.fixture(scope="session")
def served_model(mlflow_store: backends.MlflowFixture) -> Iterator[ServedModel]:
    """The real inference app on a loopback port, serving the store's production version."""
    bodies: list[Any] = []
    with backends.inference_server(mlflow_store.tracking_uri, predict_bodies=bodies) as url:
        yield ServedModel(
            tracking_uri=mlflow_store.tracking_uri, inference_url=url, store=mlflow_store, predict_bodies=bodies
        )


@pytest.fixture
def empty_registry_inference(tmp_path: Path) -> Iterator[str]:
    """The real inference app over an MLflow store with no model: it answers 503."""
    tracking_uri = f"sqlite:///{tmp_path / 'empty-mlflow.db'}"
    with backends.inference_server(tracking_uri) as url:
        yield url
