"""Fixtures of the data API replica's tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from data_api.app import create_app
from tests.data_api.replica import FakeClock, make_settings


@pytest.fixture(scope="session")
def onehot_csv(covertype_csv: Path) -> Path:
    """The same 15,120 rows as ``covertype.csv`` in UCI's one-hot layout."""
    path = covertype_csv.parent / "covtype_onehot_sample.csv"
    if not path.is_file():
        pytest.fail(f"shared one-hot sample not found at {path}")
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def build_app(covertype_csv: Path, tmp_path: Path, clock: FakeClock) -> Callable[..., FastAPI]:
    """A factory of replica apps on the shared CSV, all sharing one state dir and the fake clock."""

    def build(**overrides: object) -> FastAPI:
        return create_app(make_settings(covertype_csv, tmp_path / "state", **overrides), clock=clock)

    return build


@pytest.fixture
def client(build_app: Callable[..., FastAPI]) -> TestClient:
    """A replica where every request moves to the next batch (MIN_UPDATE_TIME=0)."""
    return TestClient(build_app())
