"""End to end: the real stack, checked through its public interfaces only.

Order matters and is the story of a user's first hour: the stack comes up healthy; the DAG
runs (one triggered through the REST API, the rest by schedule) and each successful run's
batch is in the data DB; MLflow holds the training runs with metrics and a `production`
alias; the inference service answers with that version; the UI answers; then
`docker compose down` + `up` loses nothing.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from typing import Any

import jwt
import pytest

from covertype.schema import FEATURE_COLUMNS, NUMERIC_COLUMN_NAMES
from tests.e2e.conftest import AIRFLOW_LOGIN, ONE_SHOTS, REMOTE_ADDRESS, Stack
from tests.e2e.stack import HttpResult, NotReady, http, wait_for

# No per-test timeout (pytest-timeout's 900 s default): the stack's own waits bound every step here.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(0)]

DAG_ID = "covertype_pipeline"
MIN_RUNS = 3
RUNS_TIMEOUT_S = 1200
MODEL_NAME = "covertype"
ALIAS = "production"

# What one test learns and a later one checks again after the restart.
seen: dict[str, Any] = {}


# ---- helpers ---------------------------------------------------------------------------------


def _not_a_server_error(answer: HttpResult, what: str) -> None:
    """A 5xx (a proxy, a server starting, its database busy while training loads both cores) is "not
    yet" inside a wait; outside one, NotReady fails the test with the answer."""
    if answer.status >= 500:
        raise NotReady(f"{what}: {answer.status} {answer.body[:300]!r}")


def airflow_headers(stack: Stack) -> dict[str, str]:
    """A JWT from the simple auth manager, with the password the stack was given through the environment."""
    answer = http("POST", stack.url("AIRFLOW_HOST_PORT", "/auth/token"), AIRFLOW_LOGIN)
    _not_a_server_error(answer, "Airflow login")
    assert answer.status in (200, 201), f"Airflow login refused: {answer.status} {answer.body[:300]!r}"
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def dag_runs(stack: Stack) -> list[dict[str, Any]]:
    answer = http(
        "GET",
        stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100&order_by=-run_after"),
        headers=airflow_headers(stack),
    )
    _not_a_server_error(answer, "listing DAG runs")
    assert answer.status == 200, f"listing DAG runs: {answer.status} {answer.body[:300]!r}"
    return answer.json()["dag_runs"]


def trigger_run(stack: Stack, headers: dict[str, str]) -> str:
    """A manual run through the REST API (``logical_date`` null, as Airflow 3 requires); its run id."""
    triggered = http(
        "POST",
        stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}/dagRuns"),
        {"logical_date": None, "conf": {}},
        headers=headers,
    )
    assert triggered.status == 200, f"trigger refused: {triggered.status} {triggered.body[:300]!r}"
    return triggered.json()["dag_run_id"]


def set_paused(stack: Stack, headers: dict[str, str], *, paused: bool) -> None:
    answer = http(
        "PATCH", stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}"), {"is_paused": paused}, headers=headers
    )
    assert answer.status == 200, answer.body[:300]


def task_instances_url(stack: Stack, run_id: str) -> str:
    return stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")


def log_tail(stack: Stack, headers: dict[str, str], run_id: str, task_id: str, attempt: int) -> str:
    """The last 3,000 characters of one attempt's log of a task."""
    log = http("GET", f"{task_instances_url(stack, run_id)}/{task_id}/logs/{max(attempt, 1)}", headers=headers)
    return log.body[-3000:].decode(errors="replace")


def task_report(stack: Stack, run_id: str) -> str:
    """Task states and the tail of each failed task's log: what a failed run needs explained."""
    headers = airflow_headers(stack)
    answer = http("GET", task_instances_url(stack, run_id), headers=headers)
    lines = [f"run {run_id}:"]
    for ti in answer.json().get("task_instances", []) if answer.status == 200 else []:
        lines.append(f"  {ti['task_id']}: {ti['state']} (try {ti.get('try_number')})")
        if ti["state"] in ("failed", "upstream_failed", "up_for_retry"):
            lines.append(f"    log: {log_tail(stack, headers, run_id, ti['task_id'], ti.get('try_number') or 1)}")
    return "\n".join(lines)


def earlier_attempt_logs(stack: Stack, run_id: str, task_id: str) -> str:
    """The log tails of a task's attempts before its last one: why a retried task was retried."""
    headers = airflow_headers(stack)
    answer = http("GET", f"{task_instances_url(stack, run_id)}/{task_id}", headers=headers)
    tries = int(answer.json().get("try_number") or 1) if answer.status == 200 else 1
    lines = [f"[e2e] {run_id}/{task_id}: {tries} attempt(s)"]
    for attempt in range(1, tries):
        lines.append(f"  attempt {attempt} log: {log_tail(stack, headers, run_id, task_id, attempt)}")
    return "\n".join(lines)


def tasks_in_flight(stack: Stack) -> list[str]:
    """Task instances handed to the executor (queued) or running, across unfinished runs."""
    headers = airflow_headers(stack)
    busy = []
    for run in dag_runs(stack):
        if run["state"] not in ("queued", "running"):
            continue
        answer = http("GET", task_instances_url(stack, run["dag_run_id"]), headers=headers)
        _not_a_server_error(answer, "listing task instances")
        assert answer.status == 200, f"listing task instances: {answer.status} {answer.body[:300]!r}"
        busy += [
            f"{run['dag_run_id']}/{ti['task_id']}={ti['state']}"
            for ti in answer.json()["task_instances"]
            if ti["state"] in ("queued", "running", "restarting")
        ]
    print(f"[e2e] tasks in flight: {busy or 'none'}")
    return busy


def fetch_rows(stack: Stack) -> dict[str, tuple[int, int]]:
    """dag_run_id -> (batch number, rows received), read in the data DB itself."""
    rows = stack.compose.mysql("data-db", "SELECT dag_run_id, batch_number, rows_received FROM fetches")
    return {run_id: (int(batch), int(received)) for run_id, batch, received in rows}


def observation_count(stack: Stack) -> int:
    ((count,),) = stack.compose.mysql("data-db", "SELECT COUNT(*) FROM observations")
    return int(count)


def check_collection_complete(stack: Stack, run_id: str) -> None:
    """A successful run that stored no fetch must be one that found the collection complete.

    The replica serves 10 batches; once they are served, the fetch task skips (the DAG's only
    skip in `fetch` is "collection complete") and every later task is skipped with it, so the
    run succeeds with nothing stored. A slow machine gets there within the test's wait. Any
    other successful run without a fetch is a defect.
    """
    answer = http("GET", task_instances_url(stack, run_id), headers=airflow_headers(stack))
    _not_a_server_error(answer, "listing task instances")
    assert answer.status == 200, f"listing task instances: {answer.status} {answer.body[:300]!r}"
    states = {ti["task_id"]: ti["state"] for ti in answer.json()["task_instances"]}
    if not states or states.get("fetch") != "skipped" or set(states.values()) != {"skipped"}:
        pytest.fail(f"successful run {run_id} left no fetch in the data DB:\n{task_report(stack, run_id)}")
    print(f"[e2e] {run_id}: every task skipped (collection complete)")


def mlflow(stack: Stack, method: str, path: str, payload: object | None = None) -> dict[str, Any]:
    answer = http(method, stack.url("MLFLOW_HOST_PORT", f"/api/2.0/mlflow/{path}"), payload)
    _not_a_server_error(answer, f"MLflow {method} {path}")
    assert answer.status == 200, f"MLflow {method} {path}: {answer.status} {answer.body[:300]!r}"
    return answer.json()


def production_version(stack: Stack) -> dict[str, Any]:
    return mlflow(stack, "GET", f"registered-models/alias?name={MODEL_NAME}&alias={ALIAS}")["model_version"]


def example_record(stack: Stack) -> dict[str, int | str]:
    """The first row of the shared CSV in the inference API's format (numbers as numbers)."""
    with stack.csv.open(newline="") as fh:
        row = next(csv.DictReader(fh))
    return {col: int(row[col]) if col in NUMERIC_COLUMN_NAMES else row[col] for col in FEATURE_COLUMNS}


def predict_with(stack: Stack, since: str, timeout_s: float = 180) -> dict[str, Any]:
    """POST /predict until the answer comes from version ``since`` or one promoted after it.

    The DAG keeps promoting while the tests run: the alias can move on before the service has
    loaded ``since``, and the service then never answers with it. So the alias is read again
    after every answer, and any version from ``since`` up to the alias's holder at that moment
    is right (versions only grow, and the service only loads what the alias named).
    """
    reload = http("POST", stack.url("INFERENCE_HOST_PORT", "/model/reload"), {})
    assert reload.status == 200, f"/model/reload: {reload.status} {reload.body[:300]!r}"
    print(f"[e2e] /model/reload: {reload.json()}")

    def probe() -> dict[str, Any]:
        answer = http("POST", stack.url("INFERENCE_HOST_PORT", "/predict"), example_record(stack))
        if answer.status == 503:  # no model loaded yet: the service's own "not ready"
            raise NotReady(f"/predict: 503 {answer.body[:300]!r}")
        assert answer.status == 200, f"/predict: {answer.status} {answer.body[:300]!r}"
        body = answer.json()
        latest = production_version(stack)["version"]
        if not int(since) <= int(body["model_version"]) <= int(latest):
            raise NotReady(f"answered with version {body['model_version']}, want {since}..{latest}")
        return body

    return wait_for(f"/predict answering with model version {since} or a later production one", probe, timeout_s)


# ---- tests -----------------------------------------------------------------------------------


def test_every_service_is_up_and_healthy(stack: Stack) -> None:
    services = {svc["Service"]: svc for svc in stack.compose.services()}
    expected = {
        "data-db", "mlflow-db", "airflow-db", "minio", "minio-init", "mlflow", "airflow-init",
        "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
        "data-api", "inference", "ui",
    }  # fmt: skip
    assert set(services) == expected
    for name, svc in services.items():
        if name in ONE_SHOTS:
            assert (svc["State"], svc["ExitCode"]) == ("exited", 0), f"{name}: {svc}"
        else:
            assert (svc["State"], svc["Health"]) == ("running", "healthy"), f"{name}: {svc}"


def test_container_logs_are_rotated_and_mlflow_checked_its_schema(stack: Stack) -> None:
    """Docker keeps a container's log forever unless told; mlflow/serve.py runs `mlflow db upgrade` first."""
    names = [svc["Name"] for svc in stack.compose.services()]
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{.Name}} {{json .HostConfig.LogConfig}}", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(inspected) == len(names) == 14
    for line in inspected:
        name, config = line.split(" ", 1)
        log_config = json.loads(config)
        assert (log_config["Type"], log_config["Config"]) == ("json-file", {"max-file": "3", "max-size": "10m"}), name
    # The whole log: MLflow logs every request, so the line from its start is soon far from the tail.
    assert "bringing the MLflow database schema up to date" in stack.compose.logs(["mlflow"], tail=None)


def test_dag_runs_succeed_and_store_a_batch_each(stack: Stack) -> None:
    headers = airflow_headers(stack)

    def parsed() -> bool:
        answer = http("GET", stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}"), headers=headers)
        if answer.status == 404:  # the dag-processor has not written it yet
            return False
        _not_a_server_error(answer, "reading the DAG")
        assert answer.status == 200, f"reading the DAG: {answer.status} {answer.body[:300]!r}"
        return True

    wait_for(f"the DAG {DAG_ID} to be parsed", parsed, timeout_s=300)
    triggered_id = trigger_run(stack, headers)
    complete_runs: set[str] = set()  # finished runs do not change: each is looked at once

    def enough_runs() -> list[dict[str, Any]] | None:
        runs = dag_runs(stack)
        failed = [run for run in runs if run["state"] == "failed"]
        if failed:
            pytest.fail("a DAG run failed:\n" + "\n".join(task_report(stack, run["dag_run_id"]) for run in failed))
        succeeded = [run for run in runs if run["state"] == "success"]
        # Read after the runs: a run listed as successful has stored its fetch by then. The fetch
        # task creates the tables, so before the first success there is nothing to read.
        stored = fetch_rows(stack) if succeeded else {}
        for run in succeeded:
            run_id = run["dag_run_id"]
            if run_id not in stored and run_id not in complete_runs:
                check_collection_complete(stack, run_id)
                complete_runs.add(run_id)
        collected = [run for run in succeeded if run["dag_run_id"] not in complete_runs]
        ids = {run["dag_run_id"] for run in collected}
        batches = {stored[run_id][0] for run_id in ids}
        print(
            f"[e2e] runs: {len(collected)} collected and {len(complete_runs)} after the collection was complete, "
            f"of {len(runs)}; batches stored {sorted(batches)}"
        )
        done = len(collected) >= MIN_RUNS and len(batches) >= MIN_RUNS and triggered_id in ids
        return collected if done else None

    started = time.monotonic()
    succeeded = wait_for(f">= {MIN_RUNS} successful runs on distinct batches", enough_runs, RUNS_TIMEOUT_S, 10)
    print(f"[e2e] {len(succeeded)} successful runs after {time.monotonic() - started:.0f} s")

    stored = fetch_rows(stack)
    for run in succeeded:
        assert run["dag_run_id"] in stored, f"successful run {run['dag_run_id']} left no fetch in the data DB"
        batch, received = stored[run["dag_run_id"]]
        assert 1 <= batch <= 10
        assert received > 0
    assert observation_count(stack) > 0
    seen["runs"] = {run["dag_run_id"] for run in succeeded}
    seen["fetches"] = {run_id: stored[run_id] for run_id in seen["runs"]}


def training_runs(stack: Stack) -> list[dict[str, Any]]:
    """Every MLflow run of the ``covertype`` experiment (parents and nested candidates)."""
    experiment = mlflow(stack, "GET", "experiments/get-by-name?experiment_name=covertype")["experiment"]
    return mlflow(
        stack,
        "POST",
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 500},
    ).get("runs", [])


def run_tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def test_mlflow_has_the_training_runs_and_a_production_alias(stack: Stack) -> None:
    found = training_runs(stack)
    parents: dict[str, Any] = {}
    attempts: dict[str, list[str]] = {}
    for run in found:
        tags = run_tags(run)
        if "mlflow.parentRunId" in tags or tags.get("dag_run_id") not in seen["runs"]:
            continue
        metric_count = len(run["data"].get("metrics", []))
        attempts.setdefault(tags["dag_run_id"], []).append(f"{run['info']['status']} ({metric_count} metrics)")
        # A retried training task leaves its failed attempt's run beside the finished one.
        if run["info"]["status"] == "FINISHED":
            parents[tags["dag_run_id"]] = run
    print(f"[e2e] training runs per DAG run: {attempts}")
    for dag_run_id, statuses in attempts.items():
        if len(statuses) > 1 or not statuses[0].startswith("FINISHED"):
            print(earlier_attempt_logs(stack, dag_run_id, "train_and_log"))
    assert set(parents) == seen["runs"], f"every successful DAG run has a finished training run: {attempts}"
    for run in parents.values():
        metrics = {metric["key"] for metric in run["data"].get("metrics", [])}
        assert {"macro_f1", "accuracy", "rows_used", "batches_seen", "holdout_n_trees"} <= metrics, metrics

    version = production_version(stack)
    # The served version names the hold-out model its promotion was decided with.
    version_tags = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    assert version_tags.get("holdout_model_uri", "").startswith("models:/"), version_tags
    run_ids = {run["info"]["run_id"] for run in parents.values()}
    # The served version comes from a finished parent training run of one of the DAG's runs (read
    # again: a scheduled run may have registered a newer version since the runs were listed).
    source = {run["info"]["run_id"]: run for run in training_runs(stack)}.get(version["run_id"])
    assert source is not None, f"version {version['version']} names run {version['run_id']}, not in the experiment"
    source_tags = run_tags(source)
    assert source["info"]["status"] == "FINISHED", source["info"]
    assert "mlflow.parentRunId" not in source_tags, "the served version was registered from a candidate run"
    assert source_tags.get("dag_run_id") in {run["dag_run_id"] for run in dag_runs(stack)}, source_tags
    seen["mlflow_runs"] = run_ids
    seen["version"] = version["version"]


def test_predict_answers_with_the_production_version(stack: Stack) -> None:
    body = predict_with(stack, production_version(stack)["version"])
    (prediction,) = body["predictions"]
    assert 1 <= prediction["cover_type"] <= 7
    assert abs(sum(prediction["probabilities"].values()) - 1.0) < 1e-6
    assert body["model_name"] == MODEL_NAME


def test_mlflow_answers_a_browser_on_another_machine_when_configured(stack: Stack) -> None:
    """The .env settings for a stack on a VM: the UI's run search (a POST) from the VM's address."""
    port = stack.compose.overrides["MLFLOW_HOST_PORT"]
    search = stack.url("MLFLOW_HOST_PORT", "/ajax-api/2.0/mlflow/experiments/search")

    def search_from(address: str) -> int:
        headers = {"Host": f"{address}:{port}", "Origin": f"http://{address}:{port}"}
        return http("POST", search, {"max_results": 1}, headers=headers).status

    assert search_from(REMOTE_ADDRESS) == 200
    assert search_from("198.51.100.9") == 403  # an address not configured: MLflow's protection stays on


# The JWT secret .env used to commit (so it is public): a stack must never accept it.
PUBLISHED_JWT_SECRET = "Zxa56ESPsfp6IA1dfFoGZbcdBoBPNOcibBQRXjnq0YbQWCPijtHjKYYyNdqy1XeS"


def test_airflow_refuses_a_token_signed_with_a_known_secret(stack: Stack) -> None:
    """airflow-init generated this stack's own JWT secret: a token forged with a known one is refused."""
    token = airflow_headers(stack)["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    algorithm = jwt.get_unverified_header(token)["alg"]
    generated = stack.compose.run("exec", "-T", "airflow-apiserver", "cat", "/opt/airflow/auth/jwt_secret").stdout
    assert len(generated.strip()) >= 64
    assert generated.strip() != PUBLISHED_JWT_SECRET
    dags = stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}")

    def status_with(secret: str) -> int:
        forged = jwt.encode(claims, secret, algorithm=algorithm)
        return http("GET", dags, headers={"Authorization": f"Bearer {forged}"}).status

    assert status_with(generated.strip()) == 200  # the claims are what Airflow accepts...
    assert status_with(PUBLISHED_JWT_SECRET) == 403  # ...but not signed with a secret others know


def test_ui_answers(stack: Stack) -> None:
    health = http("GET", stack.url("UI_HOST_PORT", "/_stcore/health"))
    assert (health.status, health.body.strip()) == (200, b"ok")
    page = http("GET", stack.url("UI_HOST_PORT", "/"))
    assert page.status == 200
    assert b"<title>" in page.body


# Runs inside the UI container, with its own environment (the stack's service URLs and Airflow
# login): Streamlit's AppTest renders the Pipeline and Models pages against the real services
# and prints what a user would read there. A browser would show the same elements.
UI_PAGES_SCRIPT = """
import json
from streamlit.testing.v1 import AppTest

def page(name):
    app = AppTest.from_file("ui/streamlit_app.py", default_timeout=120).run()
    app.switch_page(f"app_pages/{name}.py").run()
    return app

def text(app):
    kinds = ("subheader", "markdown", "caption", "error", "warning", "info", "success")
    return "\\n".join(str(e.value) for kind in kinds for e in getattr(app, kind))

pipeline = page("pipeline")
runs = pipeline.dataframe[0].value if len(pipeline.dataframe) else None
models = page("models")
model_runs = models.dataframe[0].value if len(models.dataframe) else None
print(json.dumps({
    "pipeline_exceptions": [str(e.value) for e in pipeline.exception],
    "pipeline_errors": [str(e.value) for e in pipeline.error],
    "runs": None if runs is None else runs[["run", "state", "batch", "model version"]].astype(str).to_dict("records"),
    "models_exceptions": [str(e.value) for e in models.exception],
    "models_errors": [str(e.value) for e in models.error],
    "models_text": text(models),
    "models_run_links": [] if model_runs is None else model_runs["MLflow"].astype(str).tolist(),
}))
"""


def test_ui_pages_show_the_stacks_runs_and_production_model(stack: Stack) -> None:
    # The DAG may promote while the pages render: the page may name any holder of the alias
    # from before the rendering to after it.
    first = int(production_version(stack)["version"])
    out = stack.compose.run("exec", "-T", "ui", "python", "-c", UI_PAGES_SCRIPT, timeout_s=300).stdout
    last = int(production_version(stack)["version"])
    pages = json.loads(out.strip().splitlines()[-1])
    for problem in ("pipeline_exceptions", "pipeline_errors", "models_exceptions", "models_errors"):
        assert not pages[problem], pages
    shown = {row["run"]: row for row in pages["runs"]}
    # Every successful run the Airflow API reported is on the Pipeline page, with its state and batch.
    for run_id in seen["runs"]:
        assert run_id in shown, f"{run_id} not on the Pipeline page: {sorted(shown)}"
        assert shown[run_id]["state"] == "success"
        assert float(shown[run_id]["batch"]) == seen["fetches"][run_id][0]
    shown_as = re.escape(f"`models:/{MODEL_NAME}@{ALIAS}` is **version ") + r"(\d+)\*\*"
    named = [int(v) for v in re.findall(shown_as, pages["models_text"])]
    assert len(named) == 1, pages["models_text"][:2000]
    assert first <= named[0] <= last, (first, named, last)
    # The Models page lists every training run (read with a server-side filter on MySQL).
    listed = {link.rsplit("/", 1)[-1] for link in pages["models_run_links"]}
    assert seen["mlflow_runs"] <= listed, (sorted(seen["mlflow_runs"] - listed), pages["models_run_links"])


# Successful run ids, fetch rows, observation count, production version: what `down` must keep.
Snapshot = tuple[frozenset[str], dict[str, tuple[int, int]], int, str]


def snapshot(stack: Stack) -> Snapshot:
    return (
        frozenset(run["dag_run_id"] for run in dag_runs(stack) if run["state"] == "success"),
        fetch_rows(stack),
        observation_count(stack),
        production_version(stack)["version"],
    )


def test_nothing_is_lost_across_down_and_up(stack: Stack) -> None:
    headers = airflow_headers(stack)
    # Pause first, so no run is cut in half by `down` and the pause itself must survive.
    set_paused(stack, headers, paused=True)
    # A paused DAG's runs stay queued or running but start no further task; wait until no
    # task is in flight, so `down` cuts nothing in half. A scheduler loop that began before the
    # pause can still queue a task just after one quiet look: so the state is taken between two
    # quiet looks a poll apart (longer than the scheduler's 5 s heartbeat), and must not change.
    earlier: list[Snapshot] = []

    def settled() -> Snapshot | None:
        if tasks_in_flight(stack):
            earlier.clear()
            return None
        now = snapshot(stack)
        if earlier and earlier[-1] == now:
            return now
        earlier[:] = [now]
        return None

    before = wait_for("no task in flight on two looks, nothing changed between", settled, timeout_s=600, interval_s=10)
    before_runs, before_fetches, before_observations, version = before

    stack.compose.run("down", timeout_s=300)
    stack.compose.run("up", "-d", "--wait", "--wait-timeout", "900", timeout_s=960)

    # Airflow: run history and pause state.
    after_runs = {run["dag_run_id"]: run["state"] for run in dag_runs(stack)}
    assert all(after_runs.get(run_id) == "success" for run_id in before_runs)
    dag = http("GET", stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}"), headers=airflow_headers(stack))
    assert dag.json()["is_paused"] is True
    # Data DB: every fetch row, unchanged.
    after_fetches = fetch_rows(stack)
    assert {run_id: after_fetches.get(run_id) for run_id in before_fetches} == before_fetches
    assert observation_count(stack) == before_observations
    # MLflow: runs with their metrics, the registered version and its alias.
    for run_id in seen["mlflow_runs"]:
        run = mlflow(stack, "GET", f"runs/get?run_id={run_id}")["run"]
        assert any(metric["key"] == "macro_f1" for metric in run["data"]["metrics"])
    assert production_version(stack)["version"] == version
    # MinIO: the model's artifacts load again in a fresh inference process.
    body = predict_with(stack, version)
    assert body["predictions"][0]["cover_type"] in range(1, 8)


def test_a_new_collection_starts_from_an_empty_data_db(stack: Stack) -> None:
    """The reset docs/pipeline.md gives ("Starting a new collection"), to collect group 2 after group 1."""
    compose = stack.compose
    headers = airflow_headers(stack)
    # 1. The DAG is paused with no task in flight (the previous test); unfinished runs are marked failed.
    assert not tasks_in_flight(stack)
    for run in dag_runs(stack):
        if run["state"] in ("queued", "running"):
            url = stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}")
            marked = http("PATCH", url, {"state": "failed"}, headers=headers)
            assert marked.status == 200, marked.body[:300]
    old_runs = {run["dag_run_id"] for run in dag_runs(stack)}
    # 2. An empty data DB, and the new group in the settings.
    compose.run("rm", "-sf", "data-db", timeout_s=120)
    removed = subprocess.run(
        ["docker", "volume", "rm", f"{compose.project}_data-db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert removed.returncode == 0, removed.stderr
    compose.overrides["GROUP_NUMBER"] = "2"
    compose.run("up", "-d", "--wait", "--wait-timeout", "900", timeout_s=960)
    assert compose.mysql("data-db", "SHOW TABLES") == [], "the old collection's tables survived the reset"
    # 3. Once the dag-processor has re-read the DAG with the new default, unpaused, it collects group 2:
    #    a manual run with no conf.
    headers = airflow_headers(stack)

    def default_group() -> int | None:
        details = http("GET", stack.url("AIRFLOW_HOST_PORT", f"/api/v2/dags/{DAG_ID}/details"), headers=headers)
        _not_a_server_error(details, "reading the DAG's details")
        assert details.status == 200, f"reading the DAG's details: {details.status} {details.body[:300]!r}"
        value = details.json()["params"]["group_number"]["value"]
        return value if value == 2 else None

    wait_for("the DAG's group_number default to be 2", default_group, timeout_s=300)
    set_paused(stack, headers, paused=False)
    run_id = trigger_run(stack, headers)

    def finished() -> str | None:
        state = {run["dag_run_id"]: run["state"] for run in dag_runs(stack)}.get(run_id)
        return state if state in ("success", "failed") else None

    state = wait_for(f"run {run_id} of group 2", finished, timeout_s=900, interval_s=10)
    assert state == "success", task_report(stack, run_id)

    # Only the new collection is in the data DB (scheduled runs may have stored group 2 batches too)...
    fetches = compose.mysql("data-db", "SELECT dag_run_id, group_number, id FROM fetches")
    assert not {row[0] for row in fetches} & old_runs, "a run from before the reset stored into the new DB"
    assert {row[1] for row in fetches} == {"2"}, fetches
    ((fetch_id,),) = [row[2:] for row in fetches if row[0] == run_id]
    # ...and the run's model was trained on it alone: what the store held when its fetch was stored.
    ((held,),) = compose.mysql(
        "data-db",
        f"SELECT COUNT(*) FROM observations o JOIN fetches f ON o.first_fetch_id = f.id WHERE f.id <= {fetch_id}",
    )
    (parent,) = [
        run
        for run in training_runs(stack)
        if run_tags(run).get("dag_run_id") == run_id
        and "mlflow.parentRunId" not in run_tags(run)
        and run["info"]["status"] == "FINISHED"
    ]
    metrics = {metric["key"]: metric["value"] for metric in parent["data"]["metrics"]}
    assert metrics["rows_used"] == int(held)
