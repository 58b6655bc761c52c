"""The Models page against a local MLflow store (two training runs, a nested candidate) and a closed port."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from covertype.redaction import public_url, redact
from tests.ui import backends
from tests.ui.apptest import all_text, open_page, texts
from ui.clients.tracking import TrackingClient, browser_url


def test_production_version_runs_and_links(mlflow_store, ui_env) -> None:
    ui_env.setenv("MLFLOW_TRACKING_URI", mlflow_store.tracking_uri)
    ui_env.setenv("MLFLOW_UI_URL", "http://127.0.0.1:5000")
    app = open_page("models")
    assert not app.error, texts(app.error)
    text = all_text(app)
    assert f"**version {mlflow_store.production.version}**" in text
    assert mlflow_store.production.run_id in text
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["macro_f1"] == "0.780"
    assert metrics["rows_used"] == "3,024"
    [runs] = [frame.value for frame in app.dataframe]
    # Training runs only (the nested candidate is left out), newest first.
    assert len(runs) == 2
    assert runs["macro_f1"].tolist() == [0.78, 0.71]
    assert runs["rows_used"].tolist() == [3024, 1512]
    assert runs["model versions"].tolist() == ["2", "1"]
    experiment = mlflow_store.experiment_id
    assert runs["MLflow"].tolist() == [
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{version.run_id}"
        for version in reversed(mlflow_store.versions)
    ]
    assert len(app.get("vega_lite_chart")) == 2  # macro-F1 and rows used over time


def test_a_production_version_whose_run_was_deleted_for_good_still_shows_the_training_runs(ui_env, tmp_path) -> None:
    """``mlflow gc`` removes a deleted run but not the versions registered from it: one warning, not an error
    that hides the whole page."""
    tracking_uri, version = backends.build_registry_store(tmp_path, backends.training_metrics(0.8, 1000, 1))
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(version.run_id).info.experiment_id
    other = client.create_run(experiment_id, tags={"dag_run_id": "scheduled__run-2"})
    client.set_terminated(other.info.run_id)
    client.delete_run(version.run_id)
    subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", tracking_uri, "--run-ids", version.run_id],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        check=True,
        capture_output=True,
    )
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    app = open_page("models")
    assert not app.exception, [item.value for item in app.exception]
    assert not app.error, texts(app.error)
    assert f"**version {version.version}**" in all_text(app)
    [warning] = texts(app.warning)
    assert f"Run `{version.run_id}` no longer exists in MLflow" in warning
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["dag_run_id"].tolist() == ["scheduled__run-2"]


def test_a_run_that_finished_after_the_page_was_read_shows_on_refresh(mlflow_store, ui_env, tmp_path) -> None:
    # A copy of the session's store (its artifacts stay where they are): the new run goes here, not there.
    shutil.copy(mlflow_store.tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    app = open_page("models")
    [runs] = [frame.value for frame in app.dataframe]
    assert len(runs) == 2
    client = MlflowClient(tracking_uri=tracking_uri)
    finished = client.create_run(mlflow_store.experiment_id, tags={"dag_run_id": "manual__just-now"})
    client.log_metric(finished.info.run_id, "macro_f1", 0.8)
    client.set_terminated(finished.info.run_id)

    app.button(key="models_refresh").click().run()

    assert not app.error, texts(app.error)
    [runs] = [frame.value for frame in app.dataframe]
    assert runs["dag_run_id"].tolist()[0] == "manual__just-now"
    assert len(runs) == 3


def test_recall_is_shown_per_cover_type_by_name(mlflow_store, ui_env) -> None:
    ui_env.setenv("MLFLOW_TRACKING_URI", mlflow_store.tracking_uri)
    app = open_page("models")
    [recalls] = [caption for caption in texts(app.caption) if caption.startswith("Recall per cover type")]
    assert recalls.startswith("Recall per cover type: Spruce/Fir 0.770, Lodgepole Pine 0.780, ")
    assert recalls.endswith("Krummholz 0.830")  # every cover type has one: no note about missing ones


def test_recall_of_cover_types_absent_from_the_evaluation_set_is_left_out(ui_env, tmp_path) -> None:
    # Training logs recall_k only for the cover types its evaluation set holds.
    metrics = backends.training_metrics(0.8, 1000, 1, recall_labels=(1, 2, 5))
    tracking_uri, version = backends.build_registry_store(tmp_path, metrics)
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    app = open_page("models")
    assert not app.error, texts(app.error)
    assert f"**version {version.version}**" in all_text(app)
    [recalls] = [caption for caption in texts(app.caption) if caption.startswith("Recall per cover type")]
    assert recalls == (
        "Recall per cover type: Spruce/Fir 0.790, Lodgepole Pine 0.800, Aspen 0.830 "
        "(none logged for Ponderosa Pine, Cottonwood/Willow, Douglas-fir, Krummholz: not in the evaluation set)"
    )
    assert {metric.label: metric.value for metric in app.metric}["macro_f1"] == "0.800"


def test_a_nan_metric_is_shown_as_a_dash_not_nan(ui_env, tmp_path) -> None:
    metrics = {**backends.training_metrics(0.8, 1000, 1), "macro_f1": math.nan}
    tracking_uri, _ = backends.build_registry_store(tmp_path, metrics)
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    app = open_page("models")
    assert not app.error, texts(app.error)
    shown = {metric.label: metric.value for metric in app.metric}
    assert (shown["macro_f1"], shown["accuracy"]) == ("—", "0.810")
    assert all(str(metric.value).lower() != "nan" for metric in app.metric)


def test_empty_store_says_no_production_model_yet(ui_env, tmp_path) -> None:
    ui_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    app = open_page("models")
    assert not app.error, texts(app.error)
    text = all_text(app)
    assert "No version of `covertype` has the alias `production` yet" in text
    assert "has no training runs yet" in text


def test_an_alias_not_set_yet_is_named_as_configured(ui_env, tmp_path) -> None:
    tracking_uri, _ = backends.build_registry_store(tmp_path, backends.training_metrics(0.8, 1000, 1))
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ui_env.setenv("MODEL_ALIAS", "champion")
    app = open_page("models")
    assert not app.error, texts(app.error)
    [info] = [message for message in texts(app.info) if message.startswith("No version")]
    assert info.startswith("No version of `covertype` has the alias `champion` yet")
    assert "production" not in info


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [("MODEL_ALIAS", "prod/1", "Invalid alias name: 'prod/1'"), ("MODEL_NAME", "cover/type", "Invalid model name")],
    ids=["alias", "name"],
)
def test_a_name_or_alias_the_registry_refuses_is_an_error_naming_the_setting(
    ui_env, tmp_path, variable: str, value: str, reason: str
) -> None:
    """MLflow answers INVALID_PARAMETER_VALUE for an alias not set *and* for one it refuses: only "not found"
    may be read as "not promoted yet", which waiting would never change here."""
    tracking_uri, _ = backends.build_registry_store(tmp_path, backends.training_metrics(0.8, 1000, 1))
    ui_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ui_env.setenv(variable, value)
    app = open_page("models")
    assert not [message for message in texts(app.info) if message.startswith("No version")]
    [error] = texts(app.error)
    assert error.startswith("**MLflow**: the registry refuses MODEL_NAME=")
    assert f"{variable}={value!r}" in error
    assert reason in error
    assert "MODEL_NAME and MODEL_ALIAS in the UI's environment" in error
    # The training runs do not depend on the alias: still shown.
    assert [header.value for header in app.subheader] == ["Production model", "Training runs"]
    assert len(app.dataframe) == 1


@pytest.mark.parametrize(
    ("ui_url", "tracking_uri", "expected"),
    [
        (None, "http://alice:s3cret@mlflow:5000/", "http://mlflow:5000"),
        ("https://bob:pw@mlflow.example.org/", "http://mlflow:5000", "https://mlflow.example.org"),
        (None, "sqlite:///tmp/mlflow.db", None),
    ],
    ids=["tracking-uri", "ui-url", "local-store"],
)
def test_links_into_mlflow_carry_no_credentials(ui_url: str | None, tracking_uri: str, expected: str | None) -> None:
    """A link shows its target: the tracking URI's password would be on the page (and in the browser's history)."""
    assert browser_url(ui_url, tracking_uri) == expected


def test_credentials_are_removed_from_mlflow_errors_wherever_they_appear() -> None:
    uri = "http://alice:s3cr%40t@mlflow:5000"
    message = (
        "API request to http://alice:s3cr%40t@mlflow:5000/api/2.0/mlflow/runs/get failed; "
        "auth alice:s3cr@t refused; see https://carol:pw2@proxy.example/"
    )
    assert redact(message, uri) == (
        "API request to http://mlflow:5000/api/2.0/mlflow/runs/get failed; auth *** refused; see https://proxy.example/"
    )
    assert public_url(uri) == "http://mlflow:5000"
    assert public_url("http://user:p@ss@mlflow:5000/#/runs") == "http://mlflow:5000/#/runs"  # a raw '@' in it
    assert public_url("see http://mlflow:5000/a@b and x@y.org") == "see http://mlflow:5000/a@b and x@y.org"


def test_unreachable_mlflow_is_named_with_what_to_check() -> None:
    app = open_page("models")
    [error] = texts(app.error)
    assert "MLflow" in error
    assert "MLFLOW_TRACKING_URI" in error
    assert "cannot connect" in error


def test_the_run_limit_counts_training_runs_not_their_candidates(mlflow_store) -> None:
    client = TrackingClient(mlflow_store.tracking_uri, backends.EXPERIMENT, backends.MODEL_NAME, backends.ALIAS)
    newest_first = MlflowClient(mlflow_store.tracking_uri).search_runs(
        [mlflow_store.experiment_id], order_by=["attributes.start_time DESC"]
    )
    assert newest_first[0].info.run_id == mlflow_store.candidate_run_id, "the candidate is the newest run"
    overview = client.overview(max_runs=len(mlflow_store.versions))
    assert [run.run_id for run in overview.runs] == [version.run_id for version in mlflow_store.versions]


def test_a_server_without_run_tag_is_null_filters_still_lists_the_training_runs(
    mlflow_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow servers from before early 2026 refuse ``tags.x IS NULL``: the nested runs are dropped here instead."""
    search_runs = MlflowClient.search_runs

    def older_server(self: MlflowClient, experiment_ids: list[str], filter_string: str = "", **options: Any) -> Any:
        if "IS NULL" in filter_string:
            raise MlflowException("Invalid comparator 'IS NULL'", error_code=INVALID_PARAMETER_VALUE)
        return search_runs(self, experiment_ids, filter_string, **options)

    monkeypatch.setattr(MlflowClient, "search_runs", older_server)
    client = TrackingClient(mlflow_store.tracking_uri, backends.EXPERIMENT, backends.MODEL_NAME, backends.ALIAS)
    overview = client.overview()
    assert [run.run_id for run in overview.runs] == [version.run_id for version in mlflow_store.versions]
