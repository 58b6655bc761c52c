"""Registry down after the model loaded: the service keeps serving it and says so in /health.

A real ``mlflow server`` (loopback, SQLite store, served artifacts) is
started, the model is loaded through it, then the server is stopped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from covertype.loopback import stop_process_group
from covertype.settings import Settings
from inference.app import create_app
from tests.inference.clients import checked_client
from tests.inference.model_factory import register_pipeline
from tests.inference.stores import Store, record_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def mlflow_server(tmp_path: Path, empty_mlflow_db: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    database = tmp_path / "server.db"
    database.write_bytes(empty_mlflow_db.read_bytes())
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{database}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        for _ in range(240):  # bounded: ~30 s on two busy cores
            if healthy(url) or process.poll() is not None:
                break
            time.sleep(0.5)
        if not healthy(url):
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield url, process
    finally:
        stop_process_group(process)
        log.close()


def test_registry_down_keeps_serving_and_health_reports_it(
    mlflow_server: tuple[str, subprocess.Popen[bytes]],
    shared_frame: pd.DataFrame,
    model_a: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fail fast instead of MLflow's default seven retries with back-off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url, process = mlflow_server
    version = register_pipeline(url, model_a, shared_frame, artifact_root=None)
    record = record_of(shared_frame, 0)

    with checked_client(create_app(Settings(mlflow_tracking_uri=url, data_dir=tmp_path))) as client:
        before = client.post("/predict", json=record)
        assert before.status_code == 200
        assert before.json()["model_version"] == version.version
        assert client.get("/health").json()["registry_state"] == "ok"

        stop_process_group(process)
        assert not healthy(url)

        reload = client.post("/model/reload").json()
        assert reload["swapped"] is False
        assert reload["registry_state"] == "registry_unreachable"

        after = client.post("/predict", json=record)
        assert after.status_code == 200
        assert after.json() == before.json()
        health = client.get("/health")
        assert health.status_code == 200
        report = health.json()
        assert report["model_loaded"] is True
        assert report["model_version"] == version.version
        assert report["registry_state"] == "registry_unreachable"
        assert f"{url} unreachable" in report["registry_message"]
        assert f"still serving version {version.version}" in report["registry_message"]
        assert client.get("/ready").status_code == 200
        assert "inference_registry_reachable 0.0" in client.get("/metrics").text


def test_a_model_whose_files_the_server_serves_is_downloaded_from_the_services_own_tracking_uri(
    mlflow_server: tuple[str, subprocess.Popen[bytes]],
    store: Store,
    shared_frame: pd.DataFrame,
    model_a: Pipeline,
    tmp_path: Path,
) -> None:
    """``mlflow-artifacts:/`` addresses resolve against a tracking URI: MLflow's process-wide one (another,
    local store here) would send the download elsewhere, and the version could never load."""
    url, _ = mlflow_server
    version = register_pipeline(url, model_a, shared_frame, artifact_root=None)
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)

    with checked_client(create_app(Settings(mlflow_tracking_uri=url, data_dir=tmp_path))) as client:
        health = client.get("/health").json()
        assert (health["registry_state"], health["model_version"]) == ("ok", version.version), health
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == version.version
