"""The e2e fixture: one real stack per module, built and started with `docker compose`.

The stack is the committed docker-compose.yml and .env, changed only through environment
overrides (a short batch window and schedule, offline dataset, other host ports): no second
compose file that could drift. On any failure the logs of the failing services are printed.
Duration and peak memory are printed at the end (the figures CI reports).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.stack import REPO_ROOT, Compose, ComposeError, MemorySampler

PROJECT = os.environ.get("E2E_PROJECT", "forest-cover-e2e")


def users_projects() -> set[str]:
    """Project names a user's own stack runs under: docker-compose.yml's `name:`, and
    COMPOSE_PROJECT_NAME when set. The e2e starts and ends with `down -v`, which would delete
    that stack's volumes (the collected data, MLflow's runs, the models)."""
    compose_file = REPO_ROOT / "docker-compose.yml"
    match = re.search(r"^name:\s*['\"]?([\w.-]+)", compose_file.read_text(), flags=re.MULTILINE)
    if match is None:
        pytest.fail(f"{compose_file} has no top-level `name:`: cannot tell the user's project from the e2e's")
    names = {match.group(1)}
    if os.environ.get("COMPOSE_PROJECT_NAME"):
        names.add(os.environ["COMPOSE_PROJECT_NAME"])
    return names


def refuse_users_project(project: str) -> None:
    """Fail before any compose command when ``project`` could be a user's real stack."""
    if project in users_projects():
        pytest.fail(
            f"E2E_PROJECT={project!r} is the name a user's own stack runs under; the e2e runs `down -v` on "
            "its project and would delete that stack's volumes. Choose another name (default forest-cover-e2e)."
        )


# Host ports far from the defaults, so the e2e stack never collides with a stack (or a
# `make data-api`) a developer runs on the defaults.
PORTS = {
    "DATA_API_HOST_PORT": 28090,
    "MLFLOW_HOST_PORT": 25000,
    "AIRFLOW_HOST_PORT": 28080,
    "INFERENCE_HOST_PORT": 28000,
    "UI_HOST_PORT": 28503,
    "MINIO_HOST_PORT": 29000,
    "MINIO_CONSOLE_HOST_PORT": 29001,
}
BATCH_WINDOW_S = 20  # MIN_UPDATE_TIME of the replica
SCHEDULE_S = 30  # PIPELINE_SCHEDULE_SECONDS: one run per window plus a margin
UP_TIMEOUT_S = int(os.environ.get("E2E_UP_TIMEOUT_S", "2400"))  # cold builds of five images on 2 cores
ONE_SHOTS = {"minio-init", "airflow-init"}
# Not the .env default: proves the admin password really comes from the environment.
# The address a browser on another machine would use (TEST-NET-3: never routed; only sent as headers).
REMOTE_ADDRESS = "203.0.113.7"
AIRFLOW_LOGIN = {"username": "admin", "password": "e2e-admin-password"}


# Present only where official images cannot be pulled (this project's CI machine, ../shared beside
# the checkout): it installs and starts Docker if needed and builds stand-ins under the official
# names. Elsewhere Docker is expected to run and compose pulls the images.
OFFLINE_IMAGES = REPO_ROOT.parent / "shared" / "tools" / "offline-images"


def ensure_docker() -> None:
    """Run the offline image tool when it exists (about 2 s when everything is already there)."""
    if not OFFLINE_IMAGES.is_file():
        return
    for attempt in (1, 2):  # its builder has shown a transient SIGPIPE once: one retry, as .ci/run does
        result = subprocess.run([str(OFFLINE_IMAGES)], check=False, timeout=1800)
        if result.returncode == 0:
            return
        print(f"[e2e] {OFFLINE_IMAGES} exited {result.returncode} (attempt {attempt})")
    pytest.fail(f"{OFFLINE_IMAGES} failed twice: Docker or the image stand-ins are not ready")


def shared_csv() -> Path:
    """The shared raw-format CSV (COVERTYPE_CSV from the Makefile, else ../shared/data)."""
    configured = os.environ.get("COVERTYPE_CSV")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "covertype.csv"
    if not path.is_file():
        pytest.fail(f"the e2e test serves {path} through the replica, and it does not exist (set COVERTYPE_CSV)")
    return path.resolve()


@dataclass
class Stack:
    compose: Compose
    csv: Path

    def url(self, port_var: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.compose.overrides[port_var]}{path}"


def _overrides(csv: Path) -> dict[str, str]:
    return {
        **{key: str(value) for key, value in PORTS.items()},
        "MIN_UPDATE_TIME": str(BATCH_WINDOW_S),
        "PIPELINE_SCHEDULE_SECONDS": str(SCHEDULE_S),
        "MODEL_POLL_INTERVAL_S": "5",
        # Offline: the replica serves the shared CSV instead of downloading UCI.
        "DATA_API_DATASET_DIR": str(csv.parent),
        "DATA_API_COVERTYPE_CSV": f"/data-in/{csv.name}",
        "GROUP_NUMBER": "1",
        "AIRFLOW_USERNAME": AIRFLOW_LOGIN["username"],
        "AIRFLOW_PASSWORD": AIRFLOW_LOGIN["password"],
        # The documented settings for browsing MLflow from another machine, with a documentation address.
        "MLFLOW_ALLOWED_HOSTS": f"mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,{REMOTE_ADDRESS}:*",
        "MLFLOW_CORS_ALLOWED_ORIGINS": f"http://{REMOTE_ADDRESS}:{PORTS['MLFLOW_HOST_PORT']}",
        "MLFLOW_UI_URL": f"http://{REMOTE_ADDRESS}:{PORTS['MLFLOW_HOST_PORT']}",
    }


def print_failure_logs(compose: Compose) -> None:
    """Logs of every service that is not healthy (or, for one-shots, did not exit 0)."""
    try:
        services = compose.services()
    except ComposeError as exc:
        print(f"[e2e] cannot list services: {exc}")
        return
    failing = []
    for svc in services:
        name, state, health = svc.get("Service"), svc.get("State"), svc.get("Health", "")
        ok = (state == "exited" and svc.get("ExitCode") == 0) if name in ONE_SHOTS else health in ("healthy", "")
        ok = ok and (state in ("running", "exited"))
        print(f"[e2e] {name}: state={state} health={health or '-'} exit={svc.get('ExitCode')}")
        if not ok:
            failing.append(name)
    # Nothing visibly broken: the pipeline's and the model's services are where it went wrong.
    targets = failing or ["airflow-scheduler", "airflow-apiserver", "mlflow", "inference", "data-api"]
    print(f"[e2e] logs of {', '.join(targets)}:")
    print(compose.logs(targets))


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Remember failures so the module fixture knows to print logs."""
    if call.excinfo is not None and call.when in ("setup", "call"):
        item.session.stash.setdefault(_FAILED, []).append(item.nodeid)


_FAILED = pytest.StashKey[list[str]]()


def output_shown(request: pytest.FixtureRequest) -> contextlib.AbstractContextManager[None]:
    """Stdout goes to the terminal inside this block even when pytest captures it (no ``-s``).

    ``make e2e`` passes ``-s``; a bare ``pytest -m e2e`` does not, and a cold build's progress
    would then be held back until the end. The capture manager's switch is what ``capsys.disabled()``
    uses, and a module-scoped fixture cannot take the function-scoped ``capsys``.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    return capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()


def tear_down(compose: Compose, sampler: MemorySampler, *, print_logs: bool, started: float) -> None:
    """Failure logs, then the sampler, then `down -v`: each step runs even if one before it raised.

    `down -v` must run whatever happened (a `logs` call can time out), and its own failure must
    not pass silently: containers and volumes left behind break the next run's clean slate.
    """
    # The first error of a step (a Ctrl-C too) is remembered and raised at the end, after `down -v`;
    # a failing `down -v` is the error only when nothing failed before it, else it is printed beside.
    earlier: BaseException | None = None
    for step in (lambda: print_failure_logs(compose) if print_logs else None, sampler.stop):
        try:
            step()
        except BaseException as exc:
            earlier = earlier or exc
    left_behind = "containers or volumes may be left behind"
    message: str | None = None
    try:
        down = compose.run("down", "-v", "--remove-orphans", timeout_s=300, check=False)
        if down.returncode != 0:
            message = (
                f"teardown: `docker compose -p {compose.project} down -v` exited {down.returncode} ({left_behind})"
                f"\n--- stderr ---\n{down.stderr[-4000:]}"
            )
    except ComposeError as exc:  # it ran out of time
        message = f"teardown: {exc} ({left_behind})"
    print(f"\n[e2e] total duration {time.monotonic() - started:.0f} s; {sampler.report()}")
    if message is not None:
        if earlier is None:
            pytest.fail(message)
        print(f"[e2e] {message}")
    if earlier is not None:
        raise earlier


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    started = time.monotonic()
    refuse_users_project(PROJECT)
    ensure_docker()
    csv = shared_csv()
    compose = Compose(PROJECT, _overrides(csv))
    sampler = MemorySampler(PROJECT)
    # A clean slate: a previous run that died half-way must not leak state into this one.
    compose.run("down", "-v", "--remove-orphans", timeout_s=300)
    sampler.start()
    try:
        print(f"\n[e2e] building and starting {PROJECT} (bounded by {UP_TIMEOUT_S} s)", flush=True)
        t0 = time.monotonic()
        try:
            with output_shown(request):
                compose.stream(
                    "up", "-d", "--build", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout_s=UP_TIMEOUT_S + 60
                )
        except ComposeError:
            print_failure_logs(compose)
            raise
        print(f"[e2e] stack healthy after {time.monotonic() - t0:.0f} s")
        yield Stack(compose, csv)
    finally:
        tear_down(compose, sampler, print_logs=bool(request.session.stash.get(_FAILED, [])), started=started)
