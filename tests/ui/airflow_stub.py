"""A minimal stand-in for the Airflow 3 REST API v2, for the Pipeline page's tests and screenshots.

Running a real ``airflow api-server`` (plus its metadata DB, scheduler and a
DAG run) inside unit tests is too heavy, so this module implements only the
endpoints the UI calls, with the same paths, methods, status codes and JSON
shapes as Airflow 3.3 (checked against ``airflow.api_fastapi``): JWT login at
``POST /auth/token`` (201), ``GET``/``PATCH /api/v2/dags/{id}``,
``GET``/``POST /api/v2/dags/{id}/dagRuns`` (``logical_date`` required in the
body, else 422), task instances (of one run, or of every run with ``~``; the
``task_id`` / ``state`` / ``run_after_gte`` / ``run_after_lte`` filters, ``order_by`` ``run_after`` or
``-run_after``, ``limit`` and ``offset``), XCom ``return_value``
entries and ``GET /api/v2/importErrors``. Until ``dag_known`` is set, the DAG's routes answer 404 as
Airflow does before its dag-processor has parsed the DAG file.
Like Airflow, a list answers at most ``MAXIMUM_PAGE_LIMIT`` items whatever ``limit`` asks.
Every request is recorded (``requests``), so a test can count the calls a page costs.
The real API is exercised by ``tests/pipeline/test_dag.py`` and the compose end-to-end test.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

DAG_ID = "covertype_pipeline"
MAXIMUM_PAGE_LIMIT = 100  # Airflow's default [api] maximum_page_limit


@dataclass
class StubRun:
    run_id: str
    state: str
    run_type: str
    run_after: datetime
    task_states: dict[str, str]
    task_results: dict[str, Any]


@dataclass
class AirflowStubState:
    """The stub's data; tests read it to check what the UI changed."""

    username: str = "admin"
    password: str = "admin-password"
    is_paused: bool = False
    next_run_after: str | None = None  # as Airflow sends it, e.g. "2026-11-27T10:28:57.813993Z"
    # Airflow returns an XCom value as stored: a JSON object, or (older serialisation) a JSON string of one.
    xcom_as_json_text: bool = False
    runs: list[StubRun] = field(default_factory=list)
    # False: the dag-processor has not parsed the DAG file yet (or could not import it), so Airflow answers 404.
    dag_known: bool = True
    import_errors: list[dict[str, Any]] = field(default_factory=list)  # items of GET /api/v2/importErrors
    list_runs_calls: int = 0  # how many pages of runs the UI asked for
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request, in order
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


TASKS = ("fetch", "store", "train_and_log", "register_and_promote")
PORTION = 151


def _pipeline_results(
    batch: int, macro_f1: float, promoted: bool, champion: tuple[str, float] | None
) -> dict[str, Any]:
    """What the pipeline's four tasks return for one run (``covertype.pipeline``), with a short payload.

    ``champion`` is the production version before this run and its score on this run's evaluation set.
    """
    rows_total = PORTION * batch
    champion_version, champion_f1 = champion or (None, None)
    reason = "no_production_model" if champion is None else ("challenger_better" if promoted else "champion_better")
    return {
        "fetch": {"group_number": 1, "batch_number": batch, "fetched_at": "2026-11-27T06:00:00+00:00",
                  "payload_sha256": "0" * 64, "rows": [["2596", "51"]] * 3},
        "store": {"fetch_id": batch, "dag_run_id": f"run-{batch}", "group_number": 1, "batch_number": batch,
                  "rows_received": PORTION, "rows_stored": PORTION - 9, "rows_duplicate": 9, "rows_rejected": 0,
                  "rejected_by_reason": {}, "label_scheme": "1..7", "payload_sha256": "0" * 64,
                  "already_stored": False, "observations_total": rows_total, "batches_seen": list(range(1, batch + 1))},
        "train_and_log": {"run_id": f"{batch:032x}", "macro_f1": macro_f1, "accuracy": macro_f1 + 0.01,
                          "rows_used": rows_total, "batches_seen": batch, "best_candidate": "extra_trees_0.3"},
        "register_and_promote": {"model_name": "covertype", "version": str(batch), "alias": "production",
                                 "promoted": promoted, "reason": reason, "challenger_macro_f1": macro_f1,
                                 "champion_macro_f1": champion_f1, "champion_version": champion_version,
                                 "production_version": str(batch) if promoted else champion_version},
    }  # fmt: skip


def sample_runs(count: int = 4, start: datetime | None = None, collection_complete: int = 1) -> list[StubRun]:
    """``count`` successful runs shaped like the pipeline's (oldest first; the third is not promoted),
    then ``collection_complete`` runs skipped because the collection was complete."""
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=6 * (count + collection_complete))
    runs = []
    production: str | None = None
    for index in range(count):
        batch = index + 1
        macro_f1 = round(0.70 + 0.03 * index, 4)
        promoted = index != 2
        # The champion's score on this run's evaluation set: below a promoted challenger, above a refused one.
        champion = None if production is None else (production, round(macro_f1 + (-0.02 if promoted else 0.01), 4))
        runs.append(
            StubRun(
                run_id=f"scheduled__{(start + timedelta(minutes=6 * index)).isoformat()}",
                state="success",
                run_type="scheduled",
                run_after=start + timedelta(minutes=6 * index),
                task_states=dict.fromkeys(TASKS, "success"),
                task_results=_pipeline_results(batch, macro_f1, promoted, champion),
            )
        )
        production = str(batch) if promoted else production
    for index in range(count, count + collection_complete):
        skipped_at = start + timedelta(minutes=6 * index)
        runs.append(
            StubRun(
                run_id=f"scheduled__{skipped_at.isoformat()}",
                state="success",
                run_type="scheduled",
                run_after=skipped_at,
                task_states=dict.fromkeys(TASKS, "skipped"),
                task_results={},
            )
        )
    return runs


def import_error(filename: str, stack_trace: str, error_id: int = 1) -> dict[str, Any]:
    """One item of ``GET /api/v2/importErrors`` (Airflow's ``ImportErrorResponse``)."""
    return {
        "import_error_id": error_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "filename": filename,
        "bundle_name": "dags-folder",
        "stack_trace": stack_trace,
    }


def run_body(run: StubRun) -> dict[str, Any]:
    """A run as Airflow's ``DAGRunResponse`` (the fields the UI reads)."""
    return {
        "dag_run_id": run.run_id,
        "dag_id": DAG_ID,
        "state": run.state,
        "run_type": run.run_type,
        "run_after": run.run_after.isoformat(),
        "logical_date": None,
        "start_date": None if run.state == "queued" else run.run_after.isoformat(),  # as Airflow: not started
        "end_date": (run.run_after + timedelta(seconds=40)).isoformat() if run.state == "success" else None,
    }


def require_token(state: AirflowStubState, authorization: str | None) -> None:
    """401 unless the bearer token is one the stub issued."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    if token not in state.tokens:
        raise HTTPException(401, "Not authenticated")


def require_dag(state: AirflowStubState, dag_id: str) -> None:
    """404 with Airflow's message for a DAG it does not know (another id, or not parsed yet)."""
    if dag_id != DAG_ID or not state.dag_known:
        raise HTTPException(404, f"The Dag with ID: `{dag_id}` was not found")


def dag_body(state: AirflowStubState) -> dict[str, Any]:
    """The DAG as Airflow's ``DAGResponse`` (the fields the UI reads)."""
    return {"dag_id": DAG_ID, "is_paused": state.is_paused, "next_dagrun_run_after": state.next_run_after}


def find_run(state: AirflowStubState, run_id: str) -> StubRun:
    """The run ``run_id``, or Airflow's 404."""
    for run in state.runs:
        if run.run_id == run_id:
            return run
    raise HTTPException(404, f"The DagRun with dag_id: `{DAG_ID}` and run_id: `{run_id}` was not found")


def create_stub(state: AirflowStubState) -> FastAPI:
    """The stub app serving ``state``."""
    app = FastAPI(title="Airflow REST API v2 stub")

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        with state.lock:
            state.requests.append((request.method, request.url.path))
        return await call_next(request)

    @app.post("/auth/token", status_code=201)
    def token(body: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
        if body.get("username") != state.username or body.get("password") != state.password:
            raise HTTPException(401, "Invalid credentials")
        issued = secrets.token_hex(16)
        state.tokens.add(issued)
        return {"access_token": issued}

    @app.get("/api/v2/dags/{dag_id}")
    def get_dag(dag_id: str, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        require_token(state, authorization)
        require_dag(state, dag_id)
        return dag_body(state)

    @app.patch("/api/v2/dags/{dag_id}")
    def patch_dag(
        dag_id: str, body: Annotated[dict[str, Any], Body()], authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        require_token(state, authorization)
        require_dag(state, dag_id)
        if "is_paused" not in body:
            return JSONResponse({"detail": "is_paused is required"}, status_code=422)
        state.is_paused = bool(body["is_paused"])
        return dag_body(state)

    @app.get("/api/v2/dags/{dag_id}/dagRuns")
    def list_runs(  # noqa: PLR0917 - FastAPI reads each query parameter from the signature
        dag_id: str,
        limit: Annotated[int, Query()] = 50,
        offset: Annotated[int, Query()] = 0,
        order_by: Annotated[str, Query()] = "id",
        run_state: Annotated[list[str] | None, Query(alias="state")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        require_token(state, authorization)
        require_dag(state, dag_id)
        state.list_runs_calls += 1
        runs = sorted(state.runs, key=lambda run: run.run_after, reverse=order_by.startswith("-"))
        if run_state:
            runs = [run for run in runs if run.state in run_state]
        page = runs[offset : offset + min(limit, MAXIMUM_PAGE_LIMIT)]
        return {"dag_runs": [run_body(run) for run in page], "total_entries": len(state.runs)}

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    def trigger(
        dag_id: str, body: Annotated[dict[str, Any], Body()], authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        require_token(state, authorization)
        require_dag(state, dag_id)
        if "logical_date" not in body:
            return JSONResponse(
                {"detail": [{"type": "missing", "loc": ["body", "logical_date"], "msg": "Field required"}]},
                status_code=422,
            )
        now = datetime.now(UTC)
        run = StubRun(f"manual__{now.isoformat()}", "queued", "manual", now, {}, {})
        with state.lock:
            state.runs.append(run)
        return run_body(run)

    @app.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    def task_instances(
        dag_id: str,
        run_id: str,
        *,
        task_id: Annotated[str | None, Query()] = None,
        task_state: Annotated[list[str] | None, Query(alias="state")] = None,
        run_after_gte: Annotated[datetime | None, Query()] = None,
        run_after_lte: Annotated[datetime | None, Query()] = None,
        order_by: Annotated[str, Query()] = "map_index",
        limit: Annotated[int, Query()] = 50,
        offset: Annotated[int, Query()] = 0,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """One run's task instances, or with ``~`` every run's, filtered like Airflow's.

        Ordered by their run's ``run_after`` (newest first with ``-run_after``), then in task order: a stable
        order, as Airflow's (it adds the primary key to any ``order_by``), so pages neither overlap nor skip.
        """
        require_token(state, authorization)
        runs = (
            sorted(state.runs, key=lambda run: run.run_after, reverse=order_by == "-run_after")
            if run_id == "~"
            else [find_run(state, run_id)]
        )
        items = [
            {"task_id": task, "dag_run_id": run.run_id, "state": task_state_of_run}
            for run in runs
            if (run_after_gte is None or run.run_after >= run_after_gte)
            and (run_after_lte is None or run.run_after <= run_after_lte)
            for task, task_state_of_run in run.task_states.items()
            if (task_id is None or task == task_id) and (not task_state or task_state_of_run in task_state)
        ]
        return {"task_instances": items[offset : offset + min(limit, MAXIMUM_PAGE_LIMIT)], "total_entries": len(items)}

    @app.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
    def xcom(
        dag_id: str, run_id: str, task_id: str, key: str, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        require_token(state, authorization)
        run = find_run(state, run_id)
        if key != "return_value" or task_id not in run.task_results:
            raise HTTPException(404, f"XCom entry with key: `{key}` not found")
        value = run.task_results[task_id]
        if state.xcom_as_json_text:
            value = json.dumps(value)
        return {"key": key, "task_id": task_id, "dag_id": DAG_ID, "run_id": run_id, "value": value}

    @app.get("/api/v2/importErrors")
    def import_errors(
        limit: Annotated[int, Query()] = 50, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        require_token(state, authorization)
        items = state.import_errors[: min(limit, MAXIMUM_PAGE_LIMIT)]
        return {"import_errors": items, "total_entries": len(state.import_errors)}

    return app
