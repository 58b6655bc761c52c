"""The api-server's compose healthcheck: an answer is not enough, the metadata database must be reachable."""

from __future__ import annotations

from urllib.error import HTTPError

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.data_api.replica import serve_in_thread
from tests.pipeline.conftest import load_airflow_healthcheck


def _health_app(status_code: int, metadatabase: str) -> FastAPI:
    """Answers like Airflow's ``/api/v2/monitor/health``, which says 200 even when its database is down."""
    app = FastAPI()

    @app.get("/api/v2/monitor/health")
    def health() -> JSONResponse:
        body = {"metadatabase": {"status": metadatabase}, "scheduler": {"status": "unhealthy"}}
        return JSONResponse(body, status_code=status_code)

    return app


def test_a_healthy_database_passes_even_before_the_scheduler_runs() -> None:
    with serve_in_thread(_health_app(200, "healthy")) as base_url:
        load_airflow_healthcheck().api_server_ok(f"{base_url}/api/v2/monitor/health")


@pytest.mark.parametrize(
    ("status_code", "metadatabase", "error", "message"),
    [(200, "unhealthy", RuntimeError, "metadatabase is 'unhealthy'"), (503, "healthy", HTTPError, "503")],
)
def test_an_unreachable_database_or_an_error_fails(
    status_code: int, metadatabase: str, error: type[Exception], message: str
) -> None:
    with serve_in_thread(_health_app(status_code, metadatabase)) as base_url, pytest.raises(error, match=message):
        load_airflow_healthcheck().api_server_ok(f"{base_url}/api/v2/monitor/health")
