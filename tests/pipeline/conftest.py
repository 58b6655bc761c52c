"""Fixtures of the pipeline tests: SQLite data DBs, local MLflow stores, the replica, a migrated Airflow DB.

Airflow reads its configuration when first imported, so the variables that
point it at a temporary home and SQLite database are set when this file is
loaded (before any test imports airflow); ``airflow_db`` then migrates that
database once per session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from mlflow import MlflowClient

from covertype import store
from covertype.parsing import parse_payload_rows
from covertype.schema import RAW_COLUMNS
from tests.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "airflow" / "dags"
AIRFLOW_HEALTHCHECK = REPO_ROOT / "airflow" / "healthcheck.py"


def load_airflow_healthcheck() -> ModuleType:
    """The compose healthcheck script of the Airflow services (a file, not a package module)."""
    return load_script(AIRFLOW_HEALTHCHECK, "airflow_healthcheck")


_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="covertype-airflow-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}
os.environ.update(AIRFLOW_ENV)
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) in a temporary AIRFLOW_HOME (removed when the session ends)."""
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, **AIRFLOW_ENV, "PATH": f"{airflow.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if completed.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{completed.stdout}\n{completed.stderr}")
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def shared_rows(covertype_csv: Path) -> list[list[str]]:
    """The shared dataset as the data API sends it: rows of 13 strings."""
    frame = pd.read_csv(covertype_csv, dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == RAW_COLUMNS
    return frame.to_numpy().tolist()


@pytest.fixture(scope="session")
def shared_observations(shared_rows: list[list[str]]) -> pd.DataFrame:
    """The shared dataset as the store returns it (typed, with row hashes), without a database."""
    parsed = parse_payload_rows(shared_rows)
    frame = pd.DataFrame(parsed.rows)
    frame["row_hash"] = [store.row_hash(record) for record in parsed.rows]
    return frame


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[store.Engine]:
    """An empty data store: SQLite, or the server named by ``COVERTYPE_TEST_DATA_DB_URL``.

    Set e.g. ``COVERTYPE_TEST_DATA_DB_URL=mysql+pymysql://user:pw@127.0.0.1:3306/covertype`` to run the
    store tests against MySQL/MariaDB (its tables are dropped and recreated for each test).
    """
    server_url = os.environ.get("COVERTYPE_TEST_DATA_DB_URL")
    data_engine = store.make_engine(server_url or f"sqlite:///{tmp_path / 'data' / 'covertype.db'}")
    if server_url:
        store.Base.metadata.drop_all(data_engine)
    store.init_schema(data_engine)
    yield data_engine
    data_engine.dispose()


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created (the migrations take ~10 s; copies are instant)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def data_dir(tmp_path: Path, empty_mlflow_db: Path) -> Path:
    """A DATA_DIR holding a fresh MLflow store (``mlflow.db``); the data DB and artifacts go beside it."""
    directory = tmp_path / "local"
    directory.mkdir()
    shutil.copyfile(empty_mlflow_db, directory / "mlflow.db")
    return directory
