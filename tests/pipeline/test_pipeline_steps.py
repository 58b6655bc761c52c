"""The DAG's steps as functions: a malformed payload's bad rows are kept with reasons, its good rows trained on."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from airflow.sdk.api.datamodels._generated import DagRunType as SdkDagRunType
from airflow.utils.types import DagRunType as CoreDagRunType
from fastapi import FastAPI, Response

from covertype import pipeline, store, training
from covertype.data_api_client import ServiceUnavailable
from covertype.settings import Settings
from data_api.app import create_app
from tests.data_api.replica import make_settings, serve_in_thread

pytestmark = pytest.mark.slow


def _fetched(rows: list, batch: int) -> dict:
    return {"group_number": 2, "batch_number": batch, "fetched_at": "2026-03-01T10:00:00+00:00", "rows": rows}


def _training_settings(data_dir: Path) -> Settings:
    """The data DB and a local MLflow store in ``data_dir``, the fast training profile."""
    return Settings(
        data_dir=data_dir,
        data_db_url=f"sqlite:///{data_dir / 'covertype.db'}",
        mlflow_tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}",
        training_profile="fast",
    )


def test_malformed_payload_rejects_bad_rows_and_trains_on_the_good(
    data_dir: Path, shared_rows: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = _training_settings(data_dir)
    good = shared_rows[2000:2400]
    malformed = [
        *good[:200],
        ["2800", "x", "10", "100", "5", "900", "200", "220", "150", "1500", "Rawah", "C7745", "2"],
        ["2800", "45", "10", "100", "5", "900", "200", "220", "150", "1500", "Atlantis", "C7745", "2"],
        ["2800", "45", "10", "100", "5", "900", "200", "220", "150", "1500", "Rawah", "C7745", "9"],
        ["2800", "45"],
        *good[200:],
        None,
    ]
    with caplog.at_level(logging.INFO, logger="covertype"):
        stored = pipeline.store_batch(settings, "manual__malformed", _fetched(malformed, batch=2))
    assert (stored["rows_received"], stored["rows_stored"], stored["rows_rejected"]) == (405, 400, 5)
    assert stored["rejected_by_reason"] == {
        "non_numeric": 1,
        "unknown_category": 1,
        "unknown_label": 1,
        "wrong_field_count": 2,
    }
    engine = store.make_engine(settings.resolved_data_db_url)
    rejected = store.rejected_rows(engine).sort_values("position")
    assert rejected["position"].tolist() == [200, 201, 202, 203, 404]
    assert rejected.iloc[1]["detail"].startswith("Wilderness_Area: 'Atlantis'")
    assert rejected.iloc[4]["raw_row"] is None  # as sent

    with caplog.at_level(logging.INFO, logger="covertype"):
        trained = pipeline.train_and_log(settings, "manual__malformed")
    assert trained["rows_used"] == 400
    assert trained["rows_train"] + trained["rows_eval"] == 400
    assert trained["batch_numbers"] == [2]

    with caplog.at_level(logging.INFO, logger="covertype"):
        promoted = pipeline.register_and_promote(settings, trained)
    assert (promoted["version"], promoted["promoted"], promoted["production_version"]) == ("1", True, "1")

    # The run's log says what was stored, rejected, trained and promoted (fetching: the next tests).
    log = caplog.text
    assert "stored batch 2: 405 received, 400 new observations, 0 duplicates, 5 rejected" in log
    assert "rejected payload row 201 (unknown_category): Wilderness_Area: 'Atlantis'" in log
    assert f"trained {trained['best_candidate']}: hold-out model ({trained['rows_train']} rows)" in log
    assert "covertype version 1 PROMOTED (no_production_model)" in log

    # A retry of the store step of the same run writes nothing.
    counts = store.table_counts(engine)
    again = pipeline.store_batch(settings, "manual__malformed", _fetched(malformed, batch=2))
    assert again["already_stored"] is True
    assert store.table_counts(engine) == counts
    engine.dispose()


def test_measurements_sent_again_with_another_label_are_counted_and_kept_out_of_evaluation(
    data_dir: Path, shared_rows: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = _training_settings(data_dir)
    first = shared_rows[3000:3400]
    relabelled = [[*row[:-1], str(int(row[-1]) % 7 + 1)] for row in first[:30]]
    pipeline.store_batch(settings, "manual__1", _fetched(first, batch=1))
    stored = pipeline.store_batch(settings, "manual__2", _fetched(relabelled, batch=2))
    assert stored["rows_stored"] == 30, "new observations: the label is part of what was observed"

    with caplog.at_level(logging.WARNING, logger="covertype"):
        trained = pipeline.train_and_log(settings, "manual__2")

    assert trained["rows_label_conflicts"] == 60
    assert "60 observations share their 12 features with an observation of another label" in caplog.text
    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(trained["run_id"])
    assert run.data.metrics["rows_label_conflicts"] == 60

    # Kept out of the evaluation set, though their hashes would put some of them there.
    config = training.TrainingConfig.named(settings.training_profile)
    engine = store.make_engine(settings.resolved_data_db_url)
    observations = store.load_observations(engine)
    engine.dispose()
    twins = observations[training.label_conflicts(observations)]
    assert len(twins) == 60
    assert any(training.is_evaluation(row_hash, config.eval_fraction) for row_hash in twins["row_hash"])
    evaluation = training.evaluation_rows(observations, config)
    assert not set(evaluation["row_hash"]) & set(twins["row_hash"])
    assert run.data.metrics["rows_eval"] == len(evaluation)


def _store_settings(data_dir: Path) -> Settings:
    """The data DB in ``data_dir``; the data API on a closed loopback port, so any request would fail."""
    return Settings(
        data_dir=data_dir, data_db_url=f"sqlite:///{data_dir / 'covertype.db'}", data_api_url="http://127.0.0.1:9"
    )


def test_a_cleared_run_whose_fetch_is_stored_makes_no_second_request(
    data_dir: Path, shared_rows: list[list[str]]
) -> None:
    """A second request would move the data API on, and its payload could not be stored under the same run."""
    settings = _store_settings(data_dir)
    first = pipeline.store_batch(settings, "scheduled__1", _fetched(shared_rows[:150], batch=4))
    engine = store.make_engine(settings.resolved_data_db_url)
    counts = store.table_counts(engine)

    fetched = pipeline.fetch_batch(settings, 2, "scheduled__1")  # the API is unreachable: no request was made
    again = pipeline.store_batch(settings, "scheduled__1", fetched)

    assert (fetched["already_stored"], fetched["batch_number"], fetched["rows"]) == (True, 4, [])
    assert again["already_stored"] is True
    assert {key: again[key] for key in ("fetch_id", "rows_received", "rows_stored")} == {
        key: first[key] for key in ("fetch_id", "rows_received", "rows_stored")
    }
    assert store.table_counts(engine) == counts
    engine.dispose()
    with pytest.raises(ServiceUnavailable):
        pipeline.fetch_batch(settings, 2, "scheduled__2")  # a run with nothing stored does ask


def test_the_store_log_names_rejected_rows_and_a_payload_that_starts_another_collection(
    data_dir: Path, shared_rows: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = _store_settings(data_dir)
    bad = [["2800", "x", *shared_rows[0][2:]], *([["1"]] * 6)]
    with caplog.at_level(logging.INFO):
        pipeline.store_batch(settings, "run-1", _fetched([*shared_rows[:50], *bad], batch=3))
    assert "rejected payload row 50 (non_numeric): Aspect: 'x'" in caplog.text
    assert caplog.text.count("rejected payload row") == store.LOGGED_REJECTS
    assert "... and 2 more rejected rows" in caplog.text
    assert "collection" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipeline.store_batch(settings, "run-1b", _fetched(shared_rows[150:200], batch=4))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipeline.store_batch(settings, "run-1c", _fetched(shared_rows[200:250], batch=7))
    assert "batch 7 of group 2 after batch 4: the data API served batches 5, 6 to requests" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipeline.store_batch(settings, "run-2", _fetched(shared_rows[50:100], batch=1))
    assert "batch 1 of group 2 after batch 7: the group was restarted" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipeline.store_batch(settings, "run-3", {**_fetched(shared_rows[100:150], batch=2), "group_number": 5})
    assert "holds group 2's collection (last fetch: batch 1) and this payload is group 5's" in caplog.text

    # A retry of that step (its first attempt stored the payload, then failed) warns again: the warning
    # compares with the fetch stored before this run's, not with the newest one (this run's own).
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = pipeline.store_batch(settings, "run-3", {**_fetched(shared_rows[100:150], batch=2), "group_number": 5})
    assert again["already_stored"] is True
    assert "holds group 2's collection (last fetch: batch 1) and this payload is group 5's" in caplog.text


def test_a_batch_fetched_again_warns_only_when_a_scheduled_run_opened_its_window(
    data_dir: Path, shared_rows: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """The data API's window starts when a batch is first served: whoever opened it is who made the repeat."""
    settings = _store_settings(data_dir)

    def store_logging(run_id: str, rows: list[list[str]], batch: int) -> tuple[list[str], str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            pipeline.store_batch(
                settings, run_id, _fetched(rows, batch=batch), scheduled_run=run_id.startswith("scheduled__")
            )
        return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING], caplog.text

    # scheduled__a opens batch 4; a manual run inside its window gets another portion, on purpose.
    assert store_logging("scheduled__a", shared_rows[0:50], 4)[0] == []
    warnings, text = store_logging("manual__b", shared_rows[50:100], 4)
    assert (warnings, "another portion of batch 4 of group 2" in text) == ([], True)
    # A scheduled run still inside scheduled__a's window, manual run or not in between: the schedule is too short.
    [warning] = store_logging("scheduled__c", shared_rows[100:150], 4)[0]
    assert "batch 4 of group 2 again, as the previous run's fetch: this scheduled run" in warning
    assert "(PIPELINE_SCHEDULE_SECONDS=330, MIN_UPDATE_TIME=300)" in warning
    # A manual run opens batch 5; a scheduled run inside that window is the manual run's doing.
    assert store_logging("manual__d", shared_rows[150:200], 5)[0] == []
    warnings, text = store_logging("scheduled__e", shared_rows[200:250], 5)
    assert (warnings, "another portion of batch 5 of group 2" in text) == ([], True)


def test_a_payload_whose_rows_are_all_rejected_is_stored_and_fails_the_run(data_dir: Path, shared_rows) -> None:
    """A run that collected nothing usable must not retrain on old data and report success."""
    settings = _store_settings(data_dir)
    pipeline.store_batch(settings, "run-1", _fetched(shared_rows[:100], batch=1))
    changed_format = [[*row, "extra"] for row in shared_rows[100:130]]  # e.g. a column added upstream

    with pytest.raises(pipeline.NoUsableRows, match=r"every one of the 30 rows of batch 2 was rejected") as failed:
        pipeline.store_batch(settings, "run-2", _fetched(changed_format, batch=2))
    assert "{'wrong_field_count': 30}" in str(failed.value)
    engine = store.make_engine(settings.resolved_data_db_url)
    try:
        assert store.rejects_by_reason(engine).to_dict("records") == [{"reason": "wrong_field_count", "rows": 30}]
        assert store.count_observations(engine) == 100
    finally:
        engine.dispose()
    # A retry finds the fetch stored and fails the same way.
    with pytest.raises(pipeline.NoUsableRows):
        pipeline.store_batch(settings, "run-2", _fetched(changed_format, batch=2))
    # Good rows that were all seen before are usable (the course API re-serves rows): no failure.
    assert pipeline.store_batch(settings, "run-3", _fetched(shared_rows[:40], batch=3))["rows_duplicate"] == 40


def test_the_fetch_log_says_what_was_fetched_from_where(
    data_dir: Path, covertype_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(covertype_csv, tmp_path / "replica-state"))
    with serve_in_thread(app) as base_url:
        settings = Settings(
            data_dir=data_dir, data_db_url=f"sqlite:///{data_dir / 'covertype.db'}", data_api_url=base_url
        )
        with caplog.at_level(logging.INFO, logger="covertype.pipeline"):
            fetched = pipeline.fetch_batch(settings, 2, "run-1")
    rows = len(fetched["rows"])
    assert (fetched["group_number"], fetched["batch_number"], rows) == (2, 1, 151)
    assert f"fetched group 2 batch 1: 151 rows (payload sha256 {fetched['payload_sha256'][:12]}) from {base_url}" in (
        caplog.text
    )


def test_a_fetch_retried_after_the_answer_came_hands_on_the_same_payload_without_a_second_request(
    data_dir: Path, covertype_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attempt got its answer, then failed (Airflow could not save its result): asking again would
    move the data API on and lose that payload."""
    app = create_app(make_settings(covertype_csv, tmp_path / "replica-state"))
    with serve_in_thread(app) as base_url:
        settings = Settings(
            data_dir=data_dir, data_db_url=f"sqlite:///{data_dir / 'covertype.db'}", data_api_url=base_url
        )
        first = pipeline.fetch_batch(settings, 2, "run-1")
    retry_settings = _store_settings(data_dir)  # the data API on a closed port: a request would fail
    with caplog.at_level(logging.WARNING, logger="covertype.pipeline"):
        retried = pipeline.fetch_batch(retry_settings, 2, "run-1")
    assert retried == first
    assert "DAG run run-1 already fetched group 2 batch 1 (151 rows" in caplog.text

    stored = pipeline.store_batch(retry_settings, "run-1", retried)
    assert stored["rows_received"] == 151
    engine = store.make_engine(retry_settings.resolved_data_db_url)
    assert store.table_counts(engine)["pending_payloads"] == 0, "removed with the transaction that stored it"
    assert store.pending_payload(engine, "run-1") is None
    engine.dispose()


def test_a_data_db_that_cannot_keep_the_copy_does_not_fail_the_fetch(
    data_dir: Path, covertype_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing after the answer came would make the retry ask again: the payload still goes on as the result."""
    settings_db = f"sqlite:///{data_dir / 'covertype.db'}"
    engine = store.make_engine(settings_db)
    store.init_schema(engine)
    with engine.begin() as connection:  # a write that fails inside the database, as a full disk would
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON pending_payloads BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    engine.dispose()
    app = create_app(make_settings(covertype_csv, tmp_path / "replica-state"))
    with serve_in_thread(app) as base_url:
        settings = Settings(data_dir=data_dir, data_db_url=settings_db, data_api_url=base_url)
        with caplog.at_level(logging.WARNING, logger="covertype.pipeline"):
            fetched = pipeline.fetch_batch(settings, 2, "run-1")
    assert len(fetched["rows"]) == 151
    assert "could not keep a copy of the payload in the data DB (IntegrityError: " in caplog.text
    assert "disk full" in caplog.text


def test_nan_infinity_or_a_huge_number_in_a_payload_become_rejected_rows_not_a_failed_fetch(
    data_dir: Path, shared_rows: list[list[str]]
) -> None:
    """Python's JSON reader accepts them; Airflow's XCom encoder and MySQL's JSON type do not.

    Left as numbers, the fetch task's result could not be passed on: the task would fail after
    its request, and each retry would request again and fail the same way, losing the payload.
    """
    good = shared_rows[:20]
    bad = ['[NaN, "51", "3"]', '["2596", Infinity, "3"]', '["2596", "51", 1e400]', f'["{"9" * 30}", "51", "3"]']
    rows = ", ".join([*(json.dumps(row) for row in good), *bad])
    body = f'{{"group_number": 2, "batch_number": 1, "data": [{rows}]}}'
    stub = FastAPI()

    @stub.get("/data")
    def data() -> Response:
        return Response(body, media_type="application/json")

    with serve_in_thread(stub) as base_url:
        settings = Settings(
            data_dir=data_dir, data_db_url=f"sqlite:///{data_dir / 'covertype.db'}", data_api_url=base_url
        )
        fetched = pipeline.fetch_batch(settings, 2, "run-1")
    json.dumps(fetched, allow_nan=False)  # what Airflow does with a task's result: no ValueError
    assert fetched["rows"][20:] == [
        ["NaN", "51", "3"],
        ["2596", "Infinity", "3"],
        ["2596", "51", "Infinity"],
        ["9" * 30, "51", "3"],
    ]

    stored = pipeline.store_batch(settings, "run-1", fetched)
    assert (stored["rows_stored"], stored["rows_rejected"]) == (20, 4)


@pytest.mark.parametrize(
    ("run_type", "scheduled"),
    [
        (SdkDagRunType.SCHEDULED, True),
        (CoreDagRunType.SCHEDULED, True),
        ("scheduled", True),
        (SdkDagRunType.MANUAL, False),
        (CoreDagRunType.ASSET_TRIGGERED, False),
        ("manual", False),
    ],
)
def test_a_scheduled_run_is_told_by_the_run_type_airflow_gives_the_task(run_type: object, scheduled: bool) -> None:
    assert pipeline.is_scheduled_run(run_type) is scheduled


def test_the_scores_belong_to_the_hold_out_model_and_its_evaluation_set_not_to_the_served_model(
    data_dir: Path, shared_rows: list[list[str]]
) -> None:
    """MLflow 3 shows metrics per logged model: the served model was fitted on the evaluation rows and never
    scored, so a score beside it would be the twin's, passed off as its own."""
    settings = _training_settings(data_dir)
    pipeline.store_batch(settings, "manual__1", _fetched(shared_rows[::20], batch=1))
    trained = pipeline.train_and_log(settings, "manual__1")

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    served = client.get_logged_model(trained["model_uri"].removeprefix("models:/"))
    holdout = client.get_logged_model(trained["holdout_model_uri"].removeprefix("models:/"))
    assert served.metrics in (None, [])
    scores = {metric.key: metric for metric in holdout.metrics}
    assert {"macro_f1", "accuracy", "recall_1"} <= set(scores)
    assert scores["macro_f1"].value == pytest.approx(trained["macro_f1"])
    assert {metric.dataset_name for metric in holdout.metrics} == {"covertype-eval"}
    assert not {"model_mb", "rows_used", "n_trees", "train_seconds"} & set(scores)
    # The run keeps every number, as before: the UI, the inference service and promotion read them there.
    run_metrics = client.get_run(trained["run_id"]).data.metrics
    assert run_metrics["macro_f1"] == pytest.approx(trained["macro_f1"])
    assert {"model_mb", "n_trees", "holdout_model_mb", "rows_used", "rows_eval", "train_seconds"} <= set(run_metrics)


def test_a_retry_after_the_training_run_finished_hands_that_run_on_instead_of_training_again(
    data_dir: Path, shared_rows: list[list[str]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt finished its MLflow run, then failed handing the result on: no second run, no second model.

    With upgraded code, with the models gone, or with more rows stored (a manual run beside this one), the
    same DAG run's retry trains again.
    """
    settings = _training_settings(data_dir)
    pipeline.store_batch(settings, "manual__1", _fetched(shared_rows[::20], batch=1))
    first = pipeline.train_and_log(settings, "manual__1")

    with caplog.at_level(logging.WARNING, logger="covertype.pipeline"):
        retried = pipeline.train_and_log(settings, "manual__1")

    assert retried == first
    assert f"finished MLflow run {first['run_id']} on these same {first['rows_used']} observations" in caplog.text
    assert retried["n_trees"] != 9  # the upgrade below is told by the model it fits
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment_name)
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.mlflow.runName = 'train manual__1'")
    assert [run.info.run_id for run in parents] == [first["run_id"]]
    assert len(client.search_logged_models([experiment.experiment_id])) == 2  # the served model and its twin

    # The attempt logged everything, then could not end the run (a tracking-server blip): it is ended as
    # FINISHED and handed on, not ended as KILLED and redone.
    client.update_run(first["run_id"], status="RUNNING")
    assert pipeline.train_and_log(settings, "manual__1") == first
    assert client.get_run(first["run_id"]).info.status == "FINISHED"

    # Upgraded training code (here: another configuration; a changed source file or scikit-learn version
    # changes the same digest) fits another model: it trains.
    upgraded = training.TrainingConfig.fast()
    monkeypatch.setattr(training.TrainingConfig, "fast", classmethod(lambda cls: replace(upgraded, n_estimators=9)))
    after_upgrade = pipeline.train_and_log(settings, "manual__1")
    assert after_upgrade["run_id"] != first["run_id"]
    assert after_upgrade["n_trees"] == 9
    monkeypatch.undo()

    # Models deleted meanwhile (by hand, or a cleanup): the run cannot be registered, so it trains again.
    client.delete_logged_model(first["holdout_model_uri"].removeprefix("models:/"))
    assert pipeline.train_and_log(settings, "manual__1")["run_id"] not in {first["run_id"], after_upgrade["run_id"]}

    # Another run's rows are in the store now: the same DAG run trains on them.
    pipeline.store_batch(settings, "manual__2", _fetched(shared_rows[1::20], batch=2))
    after_more_rows = pipeline.train_and_log(settings, "manual__1")
    assert after_more_rows["run_id"] != first["run_id"]
    assert after_more_rows["rows_used"] > first["rows_used"]
    # Another DAG run never takes this one's run, even on the same rows.
    assert pipeline.train_and_log(settings, "manual__2")["run_id"] != after_more_rows["run_id"]
