"""The MLflow server's launcher (mlflow/serve.py): the schema is brought up to date before the server starts.

``mlflow server`` refuses an out-of-date schema, which is what an upgrade of the
pinned MLflow meets on an existing ``mlflow-db`` volume. Here the same code runs
on SQLite: an empty database, one a migration behind, and the launcher as the
container runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from alembic import command
from mlflow.exceptions import MlflowException
from mlflow.store.db.utils import _get_alembic_config, _verify_schema, create_sqlalchemy_engine_with_retry

from tests.scripts import load_script

SERVE_SCRIPT = Path(__file__).resolve().parents[2] / "mlflow" / "serve.py"

pytestmark = pytest.mark.slow


def _launcher() -> ModuleType:
    return load_script(SERVE_SCRIPT, "mlflow_serve")


def _schema_is_current(uri: str) -> bool:
    """What ``mlflow server`` checks at start: False where it would refuse to start."""
    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        _verify_schema(engine)
    except MlflowException as error:
        if "out-of-date database schema" not in str(error):
            raise
        return False
    finally:
        engine.dispose()
    return True


def test_an_empty_database_gets_the_current_schema(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _launcher().upgrade_schema(uri)
    assert _schema_is_current(uri)


def test_a_schema_one_migration_behind_is_upgraded_not_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launcher = _launcher()
    launcher.upgrade_schema(uri)
    command.downgrade(_get_alembic_config(uri), "-1")  # as left by the previous MLflow release
    assert not _schema_is_current(uri), "the server would refuse to start on this database"

    launcher.upgrade_schema(uri)

    assert _schema_is_current(uri)


def test_the_launcher_upgrades_then_becomes_mlflow_server(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    # `mlflow server --help` stands for the server: it proves the exec and its arguments without serving.
    result = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT), "--help"],
        check=False,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Run the MLflow tracking server" in result.stdout
    assert _schema_is_current(uri)
    assert uri not in result.stdout + result.stderr


def test_the_launcher_refuses_to_start_without_a_backend_uri() -> None:
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_BACKEND_STORE_URI"}
    result = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT)], check=False, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "MLFLOW_BACKEND_STORE_URI is not set" in result.stderr
