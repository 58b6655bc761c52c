"""A small client of the Airflow 3 REST API v2, for watching and driving ``covertype_pipeline``.

Airflow 3 authenticates API calls with a JWT from ``POST /auth/token``; the
token is fetched on first use and fetched again once when a call answers 401
(the token expired or the api-server's secret changed).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from ui.clients.errors import (
    AuthRefused,
    NotReadyYet,
    ServiceError,
    UnexpectedResponse,
    json_body,
    response_detail,
    transport_errors,
)

SERVICE = "Airflow API"
API_SERVER_HINT = "that AIRFLOW_API_URL points at an Airflow 3 api-server"
DAG_ID = "covertype_pipeline"
DEFAULT_TIMEOUT_S = 10.0
PAYLOAD_TASK = "fetch"  # returns the raw rows: large, read only when needed
PAYLOAD_SUMMARY_TASK = "store"
# ``fetch`` ends skipped only when the data API answered "collection complete" (airflow/dags/covertype_pipeline.py).
COLLECTION_COMPLETE_TASK = "fetch"
# Runs that found the collection complete are left out page by page, newest first, until enough runs
# to show are found. A page is Airflow's default ``[api] maximum_page_limit`` (a larger limit is cut to
# it). The scan stops after MAX_SCANNED_RUNS, about a week of runs at the default schedule: after the
# last batch one such run comes every schedule interval for as long as the DAG stays unpaused.
SCAN_PAGE_RUNS = 100
MAX_SCANNED_RUNS = 2_000
# Where to look when the DAG stays unknown (the compose service that parses DAG files).
PARSING_HINT = "the dag-processor's log (`docker compose logs airflow-dag-processor`) and Airflow's DAG import errors"


@dataclass(frozen=True)
class DagRun:
    """One run of the DAG as the API reports it, plus what its tasks returned (XCom ``return_value``)."""

    run_id: str
    state: str
    run_type: str
    run_after: str | None
    start_date: str | None
    end_date: str | None
    task_states: dict[str, str | None] = field(default_factory=dict)
    task_results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecentRuns:
    """The runs to show (newest first) and the runs left out because they found the collection complete."""

    runs: list[DagRun]
    collection_complete: list[DagRun] = field(default_factory=list)  # newest first, without task results
    # False when the scan stopped at MAX_SCANNED_RUNS with older runs never looked at.
    scanned_all: bool = True


@dataclass(frozen=True)
class DagStatus:
    """Whether the DAG is known to Airflow and paused."""

    dag_id: str
    is_paused: bool
    next_run_after: str | None


class AirflowClient:
    """Calls the Airflow REST API v2 with the credentials given; every call has a timeout."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        dag_id: str = DAG_ID,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dag_id = dag_id
        self.timeout_s = timeout_s
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._token: str | None = None
        self._token_lock = threading.Lock()

    # Authentication -----------------------------------------------------------------------------

    def _fetch_token(self) -> str:
        if not self._password:
            raise AuthRefused(
                SERVICE,
                "no password configured",
                "AIRFLOW_PASSWORD (and AIRFLOW_USERNAME) in the UI's environment",
            )
        with transport_errors(SERVICE, self.base_url, "AIRFLOW_API_URL", self.timeout_s):
            response = self._http.post("/auth/token", json={"username": self._username, "password": self._password})
        if response.status_code in (401, 403):
            raise AuthRefused(
                SERVICE,
                f"login as {self._username!r} refused ({response.status_code})",
                "AIRFLOW_USERNAME and AIRFLOW_PASSWORD match the api-server's users",
            )
        if response.status_code not in (200, 201):
            raise UnexpectedResponse(
                SERVICE,
                f"POST /auth/token answered {response.status_code}: {response_detail(response)}",
                API_SERVER_HINT,
            )
        token = json_body(response, SERVICE, API_SERVER_HINT).get("access_token")
        if not token:
            raise UnexpectedResponse(SERVICE, "POST /auth/token returned no access_token", "the Airflow version (3.x)")
        return str(token)

    def _auth_header(self, *, refresh: bool = False) -> dict[str, str]:
        with self._token_lock:
            if refresh or self._token is None:
                self._token = self._fetch_token()
            return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, *, allow_404: bool = False, **kwargs: Any) -> httpx.Response:
        """One authenticated call; a 401 renews the token once before giving up."""
        for refresh in (False, True):
            headers = self._auth_header(refresh=refresh)
            with transport_errors(SERVICE, self.base_url, "AIRFLOW_API_URL", self.timeout_s):
                response = self._http.request(method, path, headers=headers, **kwargs)
            if response.status_code != 401:
                break
        if response.status_code in (401, 403):
            raise AuthRefused(
                SERVICE,
                f"{method} {path} refused ({response.status_code}): {response_detail(response)}",
                "that the Airflow user has access to the DAG",
            )
        if response.status_code == 404 and not allow_404:
            raise ServiceError(
                SERVICE,
                f"{method} {path} answered 404: {response_detail(response)}",
                f"that the DAG {self.dag_id!r} and its runs still exist in Airflow (refresh the page)",
            )
        if response.status_code >= 400 and response.status_code != 404:
            raise UnexpectedResponse(
                SERVICE,
                f"{method} {path} answered {response.status_code}: {response_detail(response)}",
                "the api-server's log",
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json_body(self._request(method, path, **kwargs), SERVICE, API_SERVER_HINT)

    def _dag_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call on the DAG or its run list: there a 404 means Airflow does not know the DAG (yet)."""
        response = self._request(method, path, allow_404=True, **kwargs)
        if response.status_code == 404:
            raise self._dag_not_known(method, path)
        return json_body(response, SERVICE, API_SERVER_HINT)

    def _dag_not_known(self, method: str, path: str) -> ServiceError:
        """Why Airflow answers 404 for the DAG: an import error it lists, else not parsed yet.

        Right after ``docker compose up`` the dag-processor has not parsed the
        file yet (it takes up to about a minute); that is a wait, not a fault,
        so it is ``NotReadyYet``. An import error is a fault and says so.
        """
        import_error = self._import_error()
        if import_error is not None:
            filename, reason = import_error
            return ServiceError(
                SERVICE,
                f"the DAG {self.dag_id!r} is not known to Airflow, which lists an import error in {filename}: {reason}",
                f"{PARSING_HINT}, then fix the DAG file",
            )
        return NotReadyYet(
            SERVICE,
            f"the DAG {self.dag_id!r} is not known to Airflow yet ({method} {path} answered 404)",
            "again in a minute (refresh the page): right after start-up the dag-processor needs up to 30-60 s to "
            f"parse the DAG. If it persists, {PARSING_HINT}",
        )

    def _import_error(self) -> tuple[str, str] | None:
        """The file and last line of the import error Airflow lists for the DAG's file, if any.

        The DAG file is named after the DAG (``GET /api/v2/importErrors``). Only a
        hint for the message: if the list cannot be read (no permission, older API), None.
        """
        try:
            body = self._json("GET", "/api/v2/importErrors", params={"limit": SCAN_PAGE_RUNS})
            errors = [item for item in body.get("import_errors", []) if isinstance(item, dict)]
        except (ServiceError, AttributeError):
            return None
        # Only this DAG's file: another file's error says nothing about why this DAG is unknown.
        errors = [item for item in errors if self.dag_id in str(item.get("filename", ""))]
        if not errors:
            return None
        first = errors[0]
        lines = [line.strip() for line in str(first.get("stack_trace") or "").splitlines() if line.strip()]
        return str(first.get("filename") or "a DAG file"), (lines[-1] if lines else "no stack trace")[:300]

    # The DAG -------------------------------------------------------------------------------------

    def dag_status(self) -> DagStatus:
        """Whether the DAG is paused (``GET /api/v2/dags/{dag_id}``)."""
        body = self._dag_json("GET", f"/api/v2/dags/{self.dag_id}")
        return DagStatus(
            dag_id=body.get("dag_id", self.dag_id),
            is_paused=bool(body.get("is_paused")),
            next_run_after=body.get("next_dagrun_run_after"),
        )

    def set_paused(self, paused: bool) -> DagStatus:
        """Pause or unpause the DAG; returns the state Airflow reports afterwards."""
        body = self._dag_json("PATCH", f"/api/v2/dags/{self.dag_id}", json={"is_paused": paused})
        return DagStatus(
            dag_id=body.get("dag_id", self.dag_id),
            is_paused=bool(body.get("is_paused")),
            next_run_after=body.get("next_dagrun_run_after"),
        )

    def unfinished_runs(self) -> list[DagRun]:
        """Runs queued or running, newest first (a few at most: the DAG runs one at a time)."""
        body = self._dag_json(
            "GET",
            f"/api/v2/dags/{self.dag_id}/dagRuns",
            params={"state": ["queued", "running"], "limit": 5, "order_by": "-run_after"},
        )
        return [_dag_run(item) for item in body.get("dag_runs", [])]

    def trigger_run(self) -> DagRun:
        """Queue a manual run now; ``logical_date`` must be sent (as null) or Airflow 3 answers 422."""
        body = self._dag_json("POST", f"/api/v2/dags/{self.dag_id}/dagRuns", json={"logical_date": None})
        return _dag_run(body)

    def recent_runs(self, limit: int = 10, *, hide_collection_complete: bool = False) -> RecentRuns:
        """The newest ``limit`` runs, each with its task states and the small dicts its tasks returned.

        With ``hide_collection_complete``, runs whose ``fetch`` was skipped (the
        data API answered "collection complete") are left out and counted
        instead: once the collection is complete they come every schedule
        interval and would push the runs that trained out of sight. Runs are
        looked through a page at a time (two calls per page) until ``limit``
        runs to show are found, so the runs that trained stay in sight however
        many came after them, up to ``MAX_SCANNED_RUNS``.
        """
        if not hide_collection_complete:
            runs, _ = self._dag_runs_page(limit, offset=0)
            return RecentRuns(self._with_task_results(runs, runs))
        scanned: list[DagRun] = []  # every run looked at, newest first
        shown: list[DagRun] = []
        complete: list[DagRun] = []
        offset = 0
        total = 0
        while len(shown) < limit and offset < MAX_SCANNED_RUNS:
            page, total = self._dag_runs_page(SCAN_PAGE_RUNS, offset=offset)
            if not page:
                break
            offset += len(page)
            # A run created while paging shifts the pages by one: a run can come twice.
            seen = {run.run_id for run in scanned}
            page = [run for run in page if run.run_id not in seen]
            scanned += page
            complete_ids = self._collection_complete_run_ids(page)
            shown += [run for run in page if run.run_id not in complete_ids]
            complete += [run for run in page if run.run_id in complete_ids]
            if offset >= total:
                break
        # Task results cost calls: only for the runs shown.
        shown = self._with_task_results(shown[:limit], scanned)
        return RecentRuns(shown, complete, scanned_all=len(shown) >= limit or offset >= total)

    def _dag_runs_page(self, limit: int, *, offset: int) -> tuple[list[DagRun], int]:
        """One page of runs, newest first, and how many runs the DAG has."""
        body = self._dag_json(
            "GET",
            f"/api/v2/dags/{self.dag_id}/dagRuns",
            params={"limit": limit, "offset": offset, "order_by": "-run_after"},
        )
        return [_dag_run(item) for item in body.get("dag_runs", [])], int(body.get("total_entries", 0))

    def _collection_complete_run_ids(self, runs: list[DagRun]) -> set[str]:
        """Which of ``runs`` (newest first) found the collection complete: one call over their time span."""
        if not runs:
            return set()
        params: dict[str, Any] = {
            "task_id": COLLECTION_COMPLETE_TASK,
            "state": "skipped",
            "order_by": "-run_after",
            "limit": SCAN_PAGE_RUNS,
        }
        newest, oldest = runs[0].run_after, runs[-1].run_after
        if newest:
            params["run_after_lte"] = newest
        if oldest:
            params["run_after_gte"] = oldest
        body = self._json("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/~/taskInstances", params=params)
        page_ids = {run.run_id for run in runs}
        return {str(instance.get("dag_run_id")) for instance in body.get("task_instances", [])} & page_ids

    def _with_task_results(self, runs: list[DagRun], scanned: list[DagRun]) -> list[DagRun]:
        """``runs`` with their task states and results; ``scanned`` is every run looked at, newest first.

        The task states of runs next to each other in ``scanned`` come from one
        ``~/taskInstances`` call over their time span rather than one call per run.
        """
        states: dict[str, dict[str, str | None]] = {}
        for block in _adjacent_blocks(runs, scanned):
            states |= self._task_states(block)
        return [self._with_results(run, states.get(run.run_id, {})) for run in runs]

    def _task_states(self, runs: list[DagRun]) -> dict[str, dict[str, str | None]]:
        """Run id -> task id -> state, for ``runs`` (newest first, no other run looked at between them).

        Read over their ``run_after`` span, a page of ``SCAN_PAGE_RUNS`` task
        instances at a time (one page for up to 25 runs of the DAG's four tasks);
        instances of runs not asked for (one created meanwhile, or with the same
        ``run_after``) are left out. A run without ``run_after`` has no span: read alone.
        """
        if not all(run.run_after for run in runs):
            return {run.run_id: self._run_task_states(run.run_id) for run in runs}
        states: dict[str, dict[str, str | None]] = {run.run_id: {} for run in runs}
        params: dict[str, Any] = {
            "run_after_gte": runs[-1].run_after,
            "run_after_lte": runs[0].run_after,
            "order_by": "-run_after",  # Airflow adds the primary key, so pages do not overlap
            "limit": SCAN_PAGE_RUNS,
        }
        offset = 0
        while True:
            body = self._json(
                "GET", f"/api/v2/dags/{self.dag_id}/dagRuns/~/taskInstances", params={**params, "offset": offset}
            )
            instances = body.get("task_instances", [])
            for instance in instances:
                run_states = states.get(str(instance.get("dag_run_id")))
                if run_states is not None:
                    run_states[instance["task_id"]] = instance.get("state")
            offset += len(instances)
            if not instances or offset >= int(body.get("total_entries", 0)):
                return states

    def _run_task_states(self, run_id: str) -> dict[str, str | None]:
        """One run's task states, from its own task-instance list."""
        body = self._json("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return {instance["task_id"]: instance.get("state") for instance in body.get("task_instances", [])}

    def _with_results(self, run: DagRun, states: dict[str, str | None]) -> DagRun:
        """``run`` with its task states and what its succeeded tasks returned (one XCom read each)."""
        results: dict[str, Any] = {}
        for task_id, state in states.items():
            # The fetch task returns the whole payload; the store task's summary repeats its batch number,
            # so the payload is read only when the store task has no result.
            if state != "success" or (task_id == PAYLOAD_TASK and states.get(PAYLOAD_SUMMARY_TASK) == "success"):
                continue
            value = self._return_value(run.run_id, task_id)
            if isinstance(value, dict):
                value = {key: item for key, item in value.items() if key != "rows"}
            if value is not None:
                results[task_id] = value
        return DagRun(**{**run.__dict__, "task_states": states, "task_results": results})

    def _return_value(self, run_id: str, task_id: str) -> Any:
        """What a task returned, or None when it returned nothing (no XCom entry: 404)."""
        path = f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        response = self._request("GET", path, allow_404=True)
        if response.status_code == 404:
            return None
        value = json_body(response, SERVICE, "the api-server's log").get("value")
        # The API returns the stored value; depending on how the task serialised it, that is
        # already a dict or a JSON string of one.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def close(self) -> None:
        self._http.close()


def _adjacent_blocks(runs: list[DagRun], scanned: list[DagRun]) -> list[list[DagRun]]:
    """``runs`` cut where ``scanned`` (every run looked at, newest first) has another run between two of them.

    A time span over runs with others between them (the runs that found the
    collection complete, hidden) would read those others' task instances too:
    up to thousands. Runs ``scanned`` does not hold make a block each.
    """
    wanted = {run.run_id for run in runs}
    blocks: list[list[DagRun]] = []
    current: list[DagRun] = []
    for run in scanned:
        if run.run_id in wanted:
            current.append(run)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    placed = {run.run_id for block in blocks for run in block}
    return blocks + [[run] for run in runs if run.run_id not in placed]


def _dag_run(body: dict[str, Any]) -> DagRun:
    return DagRun(
        run_id=str(body.get("dag_run_id") or body.get("run_id")),
        state=str(body.get("state")),
        run_type=str(body.get("run_type")),
        run_after=body.get("run_after"),
        start_date=body.get("start_date"),
        end_date=body.get("end_date"),
    )
