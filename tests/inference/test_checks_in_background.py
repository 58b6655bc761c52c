"""Registry checks never hold up the service: it starts at once, and reloads share checks instead of queueing.

The registry is real (a local MLflow store) or a loopback socket that accepts
and never answers; slowness is injected into MLflow's client, never into the
service's own code.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline
from starlette.types import ASGIApp, Receive, Scope, Send

from covertype.settings import Settings
from inference import MLFLOW_HTTP_DEFAULTS
from inference.app import create_app
from tests.inference.clients import checked_client, first_check_done
from tests.inference.model_factory import REPO_ROOT, register_pipeline
from tests.inference.stores import Store, record_of

RELOADS = 45


class SilentRegistry:
    """A loopback TCP server that accepts connections, reads what is sent and never answers, until released."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = threading.Event()
        self.client_hung_up = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-registry", daemon=True)

    def _serve(self) -> None:
        connections: list[socket.socket] = []
        while not self._release.is_set():
            try:
                connection, _ = self._listener.accept()
                connection.settimeout(0.1)
                connections.append(connection)
                self.accepted.set()
            except TimeoutError:
                pass
            for connection in connections:
                self._drain(connection)
        for connection in connections:
            connection.close()
        self._listener.close()

    def _drain(self, connection: socket.socket) -> None:
        """Read what the client sent; an empty read means it gave up waiting and closed the connection."""
        try:
            if connection.recv(65536) == b"":
                self.client_hung_up.set()
        except (TimeoutError, OSError):
            pass

    @contextmanager
    def running(self) -> Iterator[SilentRegistry]:
        self._thread.start()
        try:
            yield self
        finally:
            self._release.set()
            self._thread.join(10)

    def release(self) -> None:
        """Close every connection (the client's call fails at once) and stop accepting new ones."""
        self._release.set()
        self._thread.join(10)


def test_the_service_answers_while_its_first_registry_check_is_blocked(
    tmp_path: Path, shared_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One attempt that would wait 20 s: long enough that the check is still blocked while the test asks.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    with SilentRegistry().running() as registry:
        app = create_app(Settings(mlflow_tracking_uri=registry.url, data_dir=tmp_path))
        with TestClient(app) as client:
            assert registry.accepted.wait(60), "the first check never reached the registry"
            health = client.get("/health")
            assert health.status_code == 200
            assert (health.json()["registry_state"], health.json()["registry_checked_at"]) == ("pending", None)
            ready = client.get("/ready")
            assert (ready.status_code, ready.json()["registry_state"]) == (503, "pending")
            predict = client.post("/predict", json=record_of(shared_frame, 0))
            assert predict.status_code == 503
            assert predict.json() == {
                "detail": "no model loaded yet: the first check of models:/covertype@production is pending",
                "registry_state": "pending",
            }
            assert 'inference_registry_state{state="pending"} 1.0' in client.get("/metrics").text
            # All of that was answered while the check still waited for the registry's answer.
            assert not registry.client_hung_up.is_set()

            registry.release()
            assert first_check_done(lambda: client.get("/health").json())
            assert client.get("/health").json()["registry_state"] == "registry_unreachable"


class ArrivalCounter:
    """``app`` unchanged, but counts the requests to ``path`` that reach it; ``all_arrived`` is set at ``expected``."""

    def __init__(self, app: ASGIApp, path: str, expected: int) -> None:
        self.app = app
        self.path = path
        self.expected = expected
        self.arrived = 0
        self.all_arrived = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            self.arrived += 1  # on the event loop: no two requests count at once
            if self.arrived >= self.expected:
                self.all_arrived.set()
        await self.app(scope, receive, send)


def test_reloads_arriving_during_a_check_share_one_check_and_all_get_its_result(
    store: Store,
    shared_frame: pd.DataFrame,
    model_a: Pipeline,
    model_b: Pipeline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    app = ArrivalCounter(create_app(store.settings(model_poll_interval_s=3600)), "/model/reload", RELOADS)
    with checked_client(app) as client:
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        lookups: list[str] = []
        lookup = MlflowClient.get_model_version_by_alias

        def slow_lookup(self: MlflowClient, name: str, alias: str) -> ModelVersion:
            """A registry slow to answer: no check ends before every reload has reached the service."""
            lookups.append(alias)
            app.all_arrived.wait(60)
            return lookup(self, name, alias)

        monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", slow_lookup)
        with ThreadPoolExecutor(RELOADS) as pool:
            answers = list(pool.map(lambda _: client.post("/model/reload"), range(RELOADS)))

    assert app.arrived == RELOADS
    assert [answer.status_code for answer in answers] == [200] * RELOADS
    results = [answer.json() for answer in answers]
    assert {(result["model_version"], result["registry_state"]) for result in results} == {(second.version, "ok")}
    # The reloads that shared the check that swapped say so; those that shared the next one found nothing new.
    assert any(result["swapped"] for result in results)
    # The check running when they arrived, and the one they shared: not one each.
    assert len(lookups) <= 3, f"{len(lookups)} registry checks for {RELOADS} reloads"


def test_the_mlflow_http_defaults_are_those_of_the_image() -> None:
    """The service sets them when the environment does not; the image sets the same ones explicitly."""
    dockerfile = (REPO_ROOT / "inference" / "Dockerfile").read_text()
    image = dict(re.findall(r"\b(MLFLOW_HTTP_REQUEST_\w+)=(\S+)", dockerfile))
    assert image == MLFLOW_HTTP_DEFAULTS
