"""Fixtures every test area may use: where the shared reference data lives."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_csv() -> Path:
    """``COVERTYPE_CSV`` as given, or ``covertype.csv`` in ``../shared/data`` beside the checkout."""
    configured = os.environ.get("COVERTYPE_CSV")
    if configured:
        return Path(configured).resolve()
    return (REPO_ROOT.parent / "shared" / "data" / "covertype.csv").resolve()


@pytest.fixture(scope="session")
def covertype_csv() -> Path:
    """The shared raw-format dataset (15,120 rows); tests never copy it into the repo."""
    path = shared_csv()
    if not path.is_file():
        pytest.fail(f"shared dataset not found at {path}: set COVERTYPE_CSV or check out ../shared beside the repo")
    return path


@pytest.fixture(autouse=True)
def _isolate_mlflow_globals() -> Iterator[None]:
    """Forget the process-wide MLflow tracking/registry URIs and experiment a test set.

    ``mlflow.set_tracking_uri`` and ``set_registry_uri`` are global: without
    this, a test that pointed them at a server it has since stopped would
    send the next test's default client to that dead port.
    """
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
