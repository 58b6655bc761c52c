"""The api-server's compose healthcheck: an answer is not enough, the metadata database must be reachable."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from urllib.error import HTTPError

import pytest
from airflow.utils.net import getfqdn
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


@pytest.mark.parametrize("canonical_name", ["", "vm", "vm.example.internal"])
def test_the_heartbeat_check_names_the_host_as_airflow_does(
    canonical_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A different name would find no job row: the dag-processor and triggerer would stay unhealthy."""
    monkeypatch.setattr(socket, "gethostname", lambda: "a1b2c3d4e5f6")
    answer = [(socket.AF_INET, socket.SOCK_DGRAM, 17, canonical_name, ("172.18.0.5", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answer)
    airflow_name = getfqdn.__wrapped__()  # past its cache
    assert load_airflow_healthcheck()._airflow_hostname() == airflow_name == (canonical_name or "a1b2c3d4e5f6")


def _job_row(job_type: str, hostname: str, heartbeat_age_s: float, state: str = "running") -> int:
    """A row of Airflow's own ``job`` table, written with its ORM as a running job would."""
    from airflow.jobs.job import Job  # noqa: PLC0415 - needs the migrated DB's configuration
    from airflow.utils.session import create_session  # noqa: PLC0415

    job = Job()
    job.job_type, job.hostname, job.state = job_type, hostname, state
    job.latest_heartbeat = datetime.now(UTC) - timedelta(seconds=heartbeat_age_s)
    with create_session() as session:
        session.add(job)
        session.flush()
        return job.id


def _clear_jobs() -> None:
    from airflow.jobs.job import Job  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415

    with create_session() as session:
        session.query(Job).delete()


@pytest.mark.usefixtures("airflow_db")
def test_the_heartbeat_check_reads_airflows_job_table() -> None:
    """The dag-processor's and triggerer's healthcheck: a fresh heartbeat of this host's running job."""
    check = load_airflow_healthcheck()
    host = check._airflow_hostname()
    _clear_jobs()
    try:
        with pytest.raises(RuntimeError, match=f"no running TriggererJob row for host {host}"):
            check._check_job_heartbeat("TriggererJob")
        _job_row("TriggererJob", "another-container", 1)
        _job_row("TriggererJob", host, 1, state="success")  # a job of this host that has ended
        _job_row("DagProcessorJob", host, 1)
        with pytest.raises(RuntimeError, match="no running TriggererJob row"):
            check._check_job_heartbeat("TriggererJob")

        _job_row("TriggererJob", host, check.MAX_HEARTBEAT_AGE_S * 2)
        with pytest.raises(RuntimeError, match=r"TriggererJob heartbeat is \d+ s old"):
            check._check_job_heartbeat("TriggererJob")
        _job_row("TriggererJob", host, 1)
        check._check_job_heartbeat("TriggererJob")
        assert check.main(["healthcheck.py", "triggerer"]) == 0
        assert check.main(["healthcheck.py", "dag-processor"]) == 0
    finally:
        _clear_jobs()
