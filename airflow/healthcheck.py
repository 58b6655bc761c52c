"""Cheap container healthchecks of the Airflow services (``healthcheck.py <service>``).

Each check proves the service can do its job, at a cost low enough to run every few seconds
on a 2-core machine:

- ``api-server``: ``GET /api/v2/monitor/health`` (no login needed; it also reports the
  metadata database).
- ``scheduler``: its own health server on :8974 (``AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK``).
- ``dag-processor`` / ``triggerer``: a fresh heartbeat of *this* container's job row in the
  metadata database. ``airflow jobs check --local`` does the same but imports all of Airflow
  (~4.5 s of CPU per call); one SQL query costs ~0.1 s.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from datetime import UTC, datetime

TIMEOUT_S = 5.0
# Jobs heartbeat every 5 s by default; a minute of silence means the process is stuck or gone.
MAX_HEARTBEAT_AGE_S = 60.0
JOB_TYPES = {"dag-processor": "DagProcessorJob", "triggerer": "TriggererJob"}


def _http_ok(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
        return response.read()


def api_server_ok(url: str) -> None:
    """The api-server answers, and can reach its metadata database.

    The endpoint answers 200 even when the database is down (it says so in the body); the
    scheduler's status in the same body is not required: the scheduler starts after this check.
    """
    body = json.loads(_http_ok(url))
    status = (body.get("metadatabase") or {}).get("status")
    if status != "healthy":
        raise RuntimeError(f"{url}: metadatabase is {status!r}")


def _airflow_hostname() -> str:
    """The hostname Airflow records in ``job.hostname`` (``airflow.utils.net.getfqdn``, copied
    because importing Airflow is the cost this script avoids)."""
    name = socket.gethostname()
    try:
        addrs = socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME)
    except OSError:
        return name
    for addr in addrs:
        if addr[3]:
            return addr[3]
    return name


def _check_job_heartbeat(job_type: str) -> None:
    import sqlalchemy as sa  # noqa: PLC0415 - only the heartbeat checks need it

    engine = sa.create_engine(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            latest = conn.execute(
                sa.text(
                    "SELECT max(latest_heartbeat) FROM job "
                    "WHERE job_type = :job_type AND hostname = :hostname AND state = 'running'"
                ),
                {"job_type": job_type, "hostname": _airflow_hostname()},
            ).scalar()
    finally:
        engine.dispose()
    if latest is None:
        raise RuntimeError(f"no running {job_type} row for host {_airflow_hostname()}")
    if isinstance(latest, str):  # SQLite (airflow standalone, the tests) returns the column as text
        latest = datetime.fromisoformat(latest)
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=UTC)
    age = (datetime.now(UTC) - latest).total_seconds()
    if age > MAX_HEARTBEAT_AGE_S:
        raise RuntimeError(f"{job_type} heartbeat is {age:.0f} s old")


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else "api-server"
    try:
        if service == "api-server":
            api_server_ok("http://localhost:8080/api/v2/monitor/health")
        elif service == "scheduler":
            _http_ok("http://localhost:8974/health")
        elif service in JOB_TYPES:
            _check_job_heartbeat(JOB_TYPES[service])
        else:
            print(f"unknown service {service!r}; expected api-server, scheduler, {', '.join(JOB_TYPES)}")
            return 2
    except Exception as exc:  # any failure is "unhealthy"; the reason goes to the health log
        print(f"unhealthy: {service}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
