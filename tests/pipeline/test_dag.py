"""The real DAG, run with ``dag.test()`` against the replica in-process, SQLite and a local MLflow store.

Ten runs collect the ten batches, the eleventh ends skipped; every run logs a
model version and ``production`` follows the promotion rule.
"""

# Airflow is imported inside the tests, after conftest.py has pointed it at a temporary home.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from covertype import pipeline, promotion, store, tracking, training
from covertype.settings import Settings
from data_api.app import create_app
from tests.data_api.replica import make_settings, serve_in_thread
from tests.pipeline.conftest import DAGS_FOLDER, load_airflow_healthcheck
from ui.clients.airflow import AirflowClient

# The thread method: Airflow's execution_timeout inside dag.test() takes over SIGALRM, which pytest-timeout's
# default method relies on (after the first training task the test would have no timeout left).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900, method="thread")]


def _load_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    return bag.get_dag("covertype_pipeline")


def test_dagbag_imports_without_errors(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PIPELINE_SCHEDULE_SECONDS", "PIPELINE_RETRIES", "PIPELINE_RETRY_DELAY_S"):
        monkeypatch.delenv(name, raising=False)  # the defaults, as in the stack's .env
    dag = _load_dag()
    assert dag is not None
    # One run per 5-minute window plus a margin; unpaused at creation; retries with backoff.
    assert dag.schedule == timedelta(seconds=330)
    assert dag.is_paused_upon_creation is False
    for task in dag.tasks:
        assert (task.retries, task.retry_delay, task.retry_exponential_backoff, task.max_retry_delay) == (
            3,
            timedelta(seconds=15),
            2.0,
            timedelta(minutes=5),
        ), task.task_id
    assert [task.task_id for task in dag.topological_sort()] == [
        "fetch",
        "store",
        "train_and_log",
        "register_and_promote",
    ]
    assert dag.max_active_runs == 1
    # Another DAG run's training run open longer than this is ended as abandoned: the two must agree.
    assert dag.get_task("train_and_log").execution_timeout == tracking.TRAINING_TIME_LIMIT
    assert dag.catchup is False
    assert dag.params["group_number"] is not None


def _task_states(dag_run: Any) -> dict[str, str | None]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}


@pytest.fixture
def pipeline_env(
    airflow_db: Path, data_dir: Path, covertype_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The replica on loopback (window 0 s) and the environment the DAG's tasks read."""
    app = create_app(make_settings(covertype_csv, tmp_path / "replica-state", min_update_time=0, data_api_groups=3))
    with serve_in_thread(app) as base_url:
        values = {
            "DATA_API_URL": base_url,
            "DATA_DIR": str(data_dir),
            "DATA_DB_URL": f"sqlite:///{data_dir / 'covertype.db'}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
            "GROUP_NUMBER": "3",
            "TRAINING_PROFILE": "fast",
            "PIPELINE_RETRIES": "0",
            "PIPELINE_SCHEDULE_SECONDS": "0",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        yield Settings()


@contextmanager
def airflow_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """Airflow's public REST API (``/api/v2``, ``/auth/token``) over the test's Airflow DB, on loopback.

    The api-server's own app, with the simple auth manager and one user as in the compose stack.
    """
    from airflow.api_fastapi.app import create_app as create_airflow_api
    from airflow.api_fastapi.app import purge_cached_app

    password = "test-password"
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": password}))
    settings = {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # 64 bytes, as Airflow asks
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    purge_cached_app()
    try:
        with serve_in_thread(create_airflow_api("core"), lifespan="on") as base_url:
            yield base_url, password
    finally:
        purge_cached_app()


def test_ten_runs_collect_ten_batches_then_skip(
    pipeline_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState
    from mlflow import MlflowClient

    dag = _load_dag()
    engine = store.make_engine(pipeline_env.resolved_data_db_url)
    uri = pipeline_env.resolved_mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    run_ids = []
    for expected_batch in range(1, 11):
        dag_run = dag.test()
        assert dag_run.state == DagRunState.SUCCESS, _task_states(dag_run)
        assert set(_task_states(dag_run).values()) == {TaskInstanceState.SUCCESS}
        run_ids.append(dag_run.run_id)
        assert store.batches_seen(engine) == list(range(1, expected_batch + 1))

    fetches = store.fetches_summary(engine)
    assert sorted(fetches["dag_run_id"]) == sorted(run_ids)
    assert sorted(fetches["batch_number"]) == list(range(1, 11))
    assert set(fetches["group_number"]) == {3}
    counts_after_ten = store.table_counts(engine)

    # The 11th run: the API says "collection complete"; the run is not failed, its tasks are skipped.
    eleventh = dag.test()
    assert eleventh.state == DagRunState.SUCCESS
    assert set(_task_states(eleventh).values()) == {TaskInstanceState.SKIPPED}
    assert store.table_counts(engine) == counts_after_ten

    # Each of the ten runs logged an MLflow run and registered one version.
    versions = sorted(client.search_model_versions(f"name='{pipeline_env.model_name}'"), key=lambda v: int(v.version))
    assert len(versions) == 10
    runs_by_dag_run = {client.get_run(v.run_id).data.tags["dag_run_id"]: v for v in versions}
    assert sorted(runs_by_dag_run) == sorted(run_ids)
    recalls_logged = []
    for version in versions:
        run = client.get_run(version.run_id)
        assert {"macro_f1", "accuracy", "rows_used", "batches_seen"} <= set(run.data.metrics)
        recalls_logged.append({name for name in run.data.metrics if name.startswith("recall_")})
        assert run.data.tags["promotion_decision"] in {"promoted", "kept_previous"}

    # production = the last version the rule promoted; the last decision holds when recomputed.
    promoted = [v for v in versions if v.tags["promotion_decision"] == "promoted"]
    production = client.get_model_version_by_alias(pipeline_env.model_name, pipeline_env.model_alias)
    assert production.version == promoted[-1].version
    for version in versions[1:]:
        champion = version.tags["champion_macro_f1"]
        challenger = float(version.tags["challenger_macro_f1"])
        assert (version.tags["promotion_decision"] == "promoted") == (challenger >= float(champion))
    evaluation = training.evaluation_rows(store.load_observations(engine), training.TrainingConfig.fast())
    # Recall is logged for each cover type the evaluation set holds, and only for those.
    assert recalls_logged[-1] == {f"recall_{label}" for label in set(evaluation["Cover_Type"])}
    assert all(logged and logged <= recalls_logged[-1] for logged in recalls_logged)
    _check_last_decision(pipeline_env, client, production, versions[-1], evaluation)

    engine.dispose()

    # The UI's Airflow client, against Airflow's own REST API over these runs: the ten that trained,
    # with their batches and versions; the eleventh left out as "collection complete".
    with airflow_api(tmp_path, monkeypatch) as (base_url, password):
        airflow = AirflowClient(base_url, "admin", password)
        recent = airflow.recent_runs(15, hide_collection_complete=True)
        # The trigger button's guard: Airflow filters by state (all eleven runs have ended).
        assert airflow.unfinished_runs() == []
    assert [run.run_id for run in recent.collection_complete] == [eleventh.run_id]
    assert [run.run_id for run in recent.runs] == run_ids[::-1]
    assert [run.task_results["store"]["batch_number"] for run in recent.runs] == list(range(10, 0, -1))
    assert [run.task_results["register_and_promote"]["version"] for run in recent.runs] == [
        str(number) for number in range(10, 0, -1)
    ]
    _check_a_rerun_adds_no_row(dag, run_ids[4], pipeline_env, counts_after_ten)


def _check_a_rerun_adds_no_row(dag: Any, run_id: str, settings: Settings, counts: dict[str, int]) -> None:
    """A run's store step run again, then all its tasks run again by Airflow: no request, no row added.

    The API is past its last batch: a request would answer "collection complete" and the tasks
    would end skipped, so "every task succeeded" also says no request was made.
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    engine = store.make_engine(settings.resolved_data_db_url)
    # Its store step alone, whatever the payload: the run's fetch is stored.
    rerun = pipeline.store_batch(
        settings,
        run_id,
        {"group_number": 3, "batch_number": 5, "fetched_at": "2026-01-01T00:00:00+00:00", "rows": [["1"] * 13]},
    )
    assert rerun["already_stored"] is True
    assert store.table_counts(engine) == counts

    with create_session() as session:
        [dag_run] = DagRun.find(dag_id="covertype_pipeline", run_id=run_id, session=session)
        logical_date, run_after = dag_run.logical_date, dag_run.run_after
    again = dag.test(logical_date=logical_date, run_after=run_after)
    assert (again.run_id, again.state) == (run_id, DagRunState.SUCCESS), _task_states(again)
    assert set(_task_states(again).values()) == {TaskInstanceState.SUCCESS}
    assert store.table_counts(engine) == counts
    engine.dispose()


def _check_last_decision(settings: Settings, client: Any, production: Any, last: Any, evaluation: Any) -> None:
    """The tenth run's decision, recomputed independently on the evaluation set it was taken on.

    Nothing was collected after the tenth run, so today's evaluation set is the one the decision used:
    scoring both sides' hold-out models again must give the recorded scores, and production must be
    at least as good as the last version on it (it either is that version or beat it).
    """
    import mlflow

    mlflow.set_tracking_uri(settings.resolved_mlflow_tracking_uri)

    def holdout_f1(version: Any) -> float:
        model = mlflow.sklearn.load_model(version.tags["holdout_model_uri"])
        return training.score(model, evaluation).macro_f1

    champion = client.get_model_version(settings.model_name, last.tags["champion_version"])
    assert holdout_f1(last) == pytest.approx(float(last.tags["challenger_macro_f1"]))
    assert holdout_f1(champion) == pytest.approx(float(last.tags["champion_macro_f1"]))
    assert holdout_f1(production) >= holdout_f1(last) - promotion.TIE_TOLERANCE


@pytest.mark.usefixtures("airflow_db")
def test_the_api_server_healthcheck_passes_on_airflows_own_health_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with airflow_api(tmp_path, monkeypatch) as (base_url, _):
        load_airflow_healthcheck().api_server_ok(f"{base_url}/api/v2/monitor/health")


def test_group_outside_the_param_range_is_refused_before_any_task(pipeline_env: Settings) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _load_dag().test(run_conf={"group_number": 99})


def test_group_the_api_refuses_fails_the_run(pipeline_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    # With retries allowed: a refused group must fail at once, not be retried.
    monkeypatch.setenv("PIPELINE_RETRIES", "2")
    monkeypatch.setenv("PIPELINE_RETRY_DELAY_S", "1")
    # The replica of this test serves groups 1..3 only (see ``pipeline_env``).
    dag_run = _load_dag().test(run_conf={"group_number": 7})
    assert dag_run.state == DagRunState.FAILED
    states = _task_states(dag_run)
    assert states["fetch"] == TaskInstanceState.FAILED
    assert states["store"] == TaskInstanceState.UPSTREAM_FAILED
    with create_session() as session:
        [fetch] = [ti for ti in dag_run.get_task_instances(session=session) if ti.task_id == "fetch"]
        assert (fetch.max_tries, fetch.try_number) == (2, 1)
