"""The Pipeline page against a stub of the Airflow REST API v2 (see ``airflow_stub``) and a closed port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.ui.airflow_stub import DAG_ID, TASKS, AirflowStubState, create_stub, import_error, sample_runs
from tests.ui.apptest import open_page, texts
from tests.ui.servers import serve
from ui.clients import airflow as airflow_client


@contextmanager
def airflow_serving(state: AirflowStubState, ui_env: pytest.MonkeyPatch) -> Iterator[AirflowStubState]:
    """The stub serving ``state``, with the UI's Airflow settings pointing at it."""
    with serve(create_stub(state)) as url:
        ui_env.setenv("AIRFLOW_API_URL", url)
        ui_env.setenv("AIRFLOW_USERNAME", state.username)
        ui_env.setenv("AIRFLOW_PASSWORD", state.password)
        yield state


@pytest.fixture
def airflow(ui_env) -> Iterator[AirflowStubState]:
    with airflow_serving(AirflowStubState(runs=sample_runs(4)), ui_env) as state:
        yield state


def test_recent_runs_show_state_batch_rows_and_promotion(airflow: AirflowStubState) -> None:
    app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [runs] = [frame.value for frame in app.dataframe]
    # The newest run found the collection complete: hidden by default, and said so.
    assert runs["run"].tolist() == [run.run_id for run in reversed(airflow.runs[:4])]
    [hidden] = texts(app.info)
    assert "1 recent run " in hidden
    assert airflow.runs[-1].run_id in hidden
    assert "Pause the DAG" in hidden
    assert (runs["state"] == "success").all()
    assert (runs["tasks"] == "all success").all()
    assert runs["batch"].tolist() == [4, 3, 2, 1]
    assert runs["rows fetched"].tolist() == [151] * 4
    assert runs["new rows stored"].tolist() == [142] * 4
    assert runs["macro-F1"].tolist() == [0.79, 0.76, 0.73, 0.70]
    assert runs["model version"].tolist() == ["4", "3", "2", "1"]
    # The decision, with the two scores it compared and the production version it was compared with.
    assert runs["promoted"].tolist() == [
        "yes: 0.790 > 0.770 (v2)",
        "no: 0.760 < 0.770 (v2)",
        "yes: 0.730 > 0.710 (v1)",
        "yes: first model",
    ]
    assert app.toggle(key="pipeline_paused").value is False


def test_runs_that_found_the_collection_complete_show_when_asked(airflow: AirflowStubState) -> None:
    app = open_page("pipeline")
    app.checkbox(key="pipeline_show_complete").check().run()
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["run"].tolist() == [run.run_id for run in reversed(airflow.runs)]
    skipped = runs.iloc[0]
    assert skipped["tasks"] == "all skipped"
    assert skipped[["batch", "rows fetched", "promoted"]].isna().all()
    assert not texts(app.info)


def test_runs_that_trained_stay_in_sight_after_many_collection_complete_runs(ui_env) -> None:
    # A day after the last batch: 250 skipped runs, more than two of Airflow's 100-run pages.
    state = AirflowStubState(runs=sample_runs(4, collection_complete=250), is_paused=True)
    with airflow_serving(state, ui_env):
        app = open_page("pipeline")
        assert not app.error, texts(app.error)
        [runs] = [frame.value for frame in app.dataframe]
        assert runs["batch"].tolist() == [4, 3, 2, 1]
        hidden = [message for message in texts(app.info) if "collection is complete" in message]
        assert len(hidden) == 1
        assert "250 recent runs" in hidden[0]
        assert "Pause the DAG" not in hidden[0]  # already paused
        assert "stopped" not in hidden[0]
        assert state.list_runs_calls == 3  # 254 runs: three pages, and no call past the last

        app.checkbox(key="pipeline_show_complete").check().run()
        [runs] = [frame.value for frame in app.dataframe]
        assert len(runs) == 15
        assert (runs["tasks"] == "all skipped").all()


def test_the_search_for_runs_that_trained_stops_and_says_where(ui_env, monkeypatch) -> None:
    monkeypatch.setattr(airflow_client, "MAX_SCANNED_RUNS", 200)
    with airflow_serving(AirflowStubState(runs=sample_runs(4, collection_complete=250)), ui_env) as state:
        app = open_page("pipeline")
        assert not app.error, texts(app.error)
        assert not app.dataframe
        [hidden] = [message for message in texts(app.info) if "collection is complete" in message]
        assert "200 recent runs" in hidden
        assert "stopped after the newest 200 runs" in hidden
        assert "Pause the DAG" in hidden
        assert state.list_runs_calls == 2


def test_next_scheduled_run_is_shown_in_utc(airflow: AirflowStubState) -> None:
    airflow.next_run_after = "2026-11-27T12:28:57.813993+02:00"  # an API on another time zone
    app = open_page("pipeline")
    assert "Next scheduled run after 2026-11-27 10:28:57 UTC" in texts(app.caption)


def test_a_tie_is_shown_as_one(airflow: AirflowStubState) -> None:
    """The rule promotes on a tie: the column must not read as if the challenger had scored higher."""
    airflow.runs[1].task_results["register_and_promote"].update(reason="tie", champion_macro_f1=0.73)
    app = open_page("pipeline")
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["batch"].tolist()[2] == 2
    assert runs["promoted"].tolist()[2] == "yes: 0.730 = 0.730 (v1)"


def test_results_stored_as_json_text_are_read_too(airflow: AirflowStubState) -> None:
    airflow.xcom_as_json_text = True
    app = open_page("pipeline")
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["batch"].tolist() == [4, 3, 2, 1]
    assert runs["promoted"].tolist()[1] == "no: 0.760 < 0.770 (v2)"


def test_trigger_button_queues_a_run(airflow: AirflowStubState) -> None:
    app = open_page("pipeline")
    app.button(key="pipeline_trigger").click().run()
    assert len(airflow.runs) == 6
    new_run = airflow.runs[-1]
    assert new_run.run_type == "manual"
    assert any(new_run.run_id in message for message in texts(app.success))
    assert app.dataframe[0].value["run"].iloc[0] == new_run.run_id
    assert app.dataframe[0].value["tasks"].iloc[0] == "not started"

    # A second click while that run is queued (a double click, or an impatient one) queues nothing.
    app.button(key="pipeline_trigger").click().run()
    assert len(airflow.runs) == 6
    [warning] = texts(app.warning)
    assert f"Run `{new_run.run_id}` is queued: no other run triggered" in warning


def test_a_collection_restarted_after_it_was_complete_is_not_called_complete(ui_env) -> None:
    """Runs that found it complete, then runs that fetched again: no advice to pause a collecting DAG."""
    runs = sample_runs(4, collection_complete=2)
    restarted_at = runs[-1].run_after + timedelta(minutes=6)
    runs.append(replace(runs[0], run_id=f"scheduled__{restarted_at.isoformat()}", run_after=restarted_at))
    with airflow_serving(AirflowStubState(runs=runs), ui_env):
        app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [hidden] = texts(app.info)
    assert f"2 earlier runs (the newest `{runs[5].run_id}`) found the collection complete before the runs below" in (
        hidden
    )
    assert "Pause the DAG" not in hidden
    assert app.dataframe[0].value["run"].iloc[0] == runs[-1].run_id


def test_a_run_triggered_after_the_collection_was_complete_is_no_proof_of_a_restart(ui_env) -> None:
    """Paused as the note advises, then a run triggered: it stays queued and fetches nothing."""
    state = AirflowStubState(runs=sample_runs(4, collection_complete=3), is_paused=True)
    with airflow_serving(state, ui_env):
        app = open_page("pipeline")
        app.button(key="pipeline_trigger").click().run()
    assert app.dataframe[0].value["state"].iloc[0] == "queued"
    assert app.dataframe[0].value["started (UTC)"].iloc[0].startswith("not yet (due 20")
    [hidden] = [message for message in texts(app.info) if "collection" in message]
    assert hidden.startswith(f"The collection is complete: 3 recent runs (the newest `{state.runs[6].run_id}`)")
    assert "restarted" not in hidden


@pytest.mark.parametrize(
    ("run_state", "fetch_state"), [("running", "running"), ("running", "up_for_retry"), ("failed", "failed")]
)
def test_a_later_run_whose_fetch_did_not_succeed_is_no_proof_of_a_restart(
    ui_env, run_state: str, fetch_state: str
) -> None:
    runs = sample_runs(4, collection_complete=2)
    later = runs[-1].run_after + timedelta(minutes=6)
    task_states = dict.fromkeys(runs[0].task_states) | {"fetch": fetch_state}
    runs.append(
        replace(
            runs[0],
            run_id=f"scheduled__{later.isoformat()}",
            run_after=later,
            state=run_state,
            task_states=task_states,
            task_results={},
        )
    )
    with airflow_serving(AirflowStubState(runs=runs), ui_env):
        app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [hidden] = texts(app.info)
    assert hidden.startswith("The collection is complete: 2 recent runs")
    assert "restarted" not in hidden
    assert "Pause the DAG" in hidden


def test_toggle_pauses_and_unpauses_the_dag(airflow: AirflowStubState) -> None:
    app = open_page("pipeline")
    app.toggle(key="pipeline_paused").set_value(True).run()
    assert airflow.is_paused is True
    assert any("paused" in message for message in texts(app.success))
    assert app.toggle(key="pipeline_paused").value is True
    app.toggle(key="pipeline_paused").set_value(False).run()
    assert airflow.is_paused is False
    assert app.toggle(key="pipeline_paused").value is False


def test_a_pause_made_elsewhere_shows_on_the_next_refresh(airflow: AirflowStubState) -> None:
    app = open_page("pipeline")
    airflow.is_paused = True
    app.button(key="pipeline_refresh").click().run()
    assert app.toggle(key="pipeline_paused").value is True
    assert any("paused" in message for message in texts(app.info))


def test_a_dag_not_parsed_yet_is_a_warning_to_wait_then_the_runs_show(airflow: AirflowStubState) -> None:
    # Right after `docker compose up`: Airflow answers 404 until its dag-processor has parsed the DAG file.
    airflow.dag_known = False
    app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [warning] = texts(app.warning)
    assert "Airflow API" in warning
    assert "not known to Airflow yet" in warning
    assert "30-60 s" in warning
    assert "refresh the page" in warning
    assert "docker compose logs airflow-dag-processor" in warning
    assert "import errors" in warning
    assert not app.dataframe
    airflow.dag_known = True  # parsed: the next run of the page shows the runs (a failure is not cached)
    app.run()
    assert not app.warning, texts(app.warning)
    assert len(app.dataframe[0].value) == 4


def test_a_dag_file_that_failed_to_import_is_an_error_naming_it(airflow: AirflowStubState) -> None:
    airflow.dag_known = False
    airflow.import_errors = [
        import_error("other_dag.py", "Traceback (most recent call last):\nSyntaxError: invalid syntax", 1),
        import_error(
            "covertype_pipeline.py",
            "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'covertype'\n",
            2,
        ),
    ]
    app = open_page("pipeline")
    assert not app.warning, texts(app.warning)
    [error] = texts(app.error)
    assert "import error in covertype_pipeline.py: ModuleNotFoundError: No module named 'covertype'" in error
    assert "docker compose logs airflow-dag-processor" in error
    assert "not known to Airflow yet" not in error


def test_another_files_import_error_is_not_blamed_for_a_dag_not_parsed_yet(airflow: AirflowStubState) -> None:
    airflow.dag_known = False
    airflow.import_errors = [
        import_error("other_dag.py", "Traceback (most recent call last):\nSyntaxError: invalid syntax", 1)
    ]
    app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [warning] = texts(app.warning)
    assert "not known to Airflow yet" in warning
    assert "other_dag.py" not in warning


def test_refused_credentials_are_reported_as_auth_refused(airflow: AirflowStubState, ui_env) -> None:
    ui_env.setenv("AIRFLOW_PASSWORD", "wrong")
    app = open_page("pipeline")
    [error] = texts(app.error)
    assert "Airflow API" in error
    assert "refused" in error
    assert "AIRFLOW_USERNAME and AIRFLOW_PASSWORD" in error
    assert not app.dataframe
    assert not app.toggle


def test_missing_password_is_reported_before_any_call(ui_env) -> None:
    ui_env.delenv("AIRFLOW_PASSWORD")
    app = open_page("pipeline")
    [error] = texts(app.error)
    assert "Airflow API" in error
    assert "AIRFLOW_PASSWORD" in error


def test_unreachable_airflow_is_named_with_what_to_check() -> None:
    app = open_page("pipeline")
    [error] = texts(app.error)
    assert "Airflow API" in error
    assert "cannot connect" in error
    assert "AIRFLOW_API_URL" in error


ALL_RUNS_TASKS = f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances"


def _task_instance_calls(state: AirflowStubState) -> list[str]:
    return [path for method, path in state.requests if method == "GET" and path.endswith("/taskInstances")]


def _xcom_calls(state: AirflowStubState) -> list[str]:
    return [path for _, path in state.requests if "/xcomEntries/" in path]


def test_the_task_states_of_the_runs_shown_are_read_in_one_call(ui_env) -> None:
    """One ``~/taskInstances`` call over the runs' time span, not one call per run (15 more requests)."""
    with airflow_serving(AirflowStubState(runs=sample_runs(16)), ui_env) as state:
        app = open_page("pipeline")
    assert not app.error, texts(app.error)
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["batch"].tolist() == list(range(16, 1, -1))
    assert (runs["tasks"] == "all success").all()
    assert runs["promoted"].tolist()[-2] == "no: 0.760 < 0.770 (v2)"  # batch 3's results, read for its own run
    # The runs that found the collection complete (the scan), then the task states of the 15 runs shown.
    assert _task_instance_calls(state) == [ALL_RUNS_TASKS, ALL_RUNS_TASKS]
    assert len(_xcom_calls(state)) == 15 * 3  # store, train_and_log, register_and_promote (fetch's repeats store's)


def test_runs_shown_apart_from_each_other_are_read_a_span_each(ui_env) -> None:
    """Runs that found the collection complete lie between the restarted run and the four before: a span over
    them all would read the hidden runs' task instances too (thousands, a week after the last batch)."""
    runs = sample_runs(4, collection_complete=2)
    restarted_at = runs[-1].run_after + timedelta(minutes=6)
    runs.append(replace(runs[0], run_id=f"scheduled__{restarted_at.isoformat()}", run_after=restarted_at))
    with airflow_serving(AirflowStubState(runs=runs), ui_env) as state:
        app = open_page("pipeline")
    [shown] = [frame.value for frame in app.dataframe]
    assert shown["run"].tolist() == [runs[-1].run_id, *(run.run_id for run in reversed(runs[:4]))]
    assert (shown["tasks"] == "all success").all()
    assert _task_instance_calls(state) == [ALL_RUNS_TASKS] * 3  # the scan, then the two spans


def test_task_states_beyond_one_page_of_task_instances_are_all_read() -> None:
    """30 runs of four tasks are 120 task instances: Airflow answers at most 100 a page, the rest on the next."""
    state = AirflowStubState(runs=sample_runs(30, collection_complete=0))
    with serve(create_stub(state)) as url:
        recent = airflow_client.AirflowClient(url, state.username, state.password).recent_runs(30)
    assert len(recent.runs) == 30
    assert all(run.task_states == dict.fromkeys(TASKS, "success") for run in recent.runs)
    assert _task_instance_calls(state) == [ALL_RUNS_TASKS] * 2
