"""The model's life in the service: 503 before there is one, swaps under load, /model, /metrics, /health."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import weakref
from collections import Counter

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow import cli as mlflow_cli
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from covertype.schema import COVER_TYPE_NAMES
from covertype.settings import Settings
from inference.app import create_app
from inference.model_holder import failed_retry_pause_s
from inference.serving import forests_in
from tests.inference.clients import checked_client, wait_for
from tests.inference.model_factory import register_pipeline
from tests.inference.stores import ServingStore, Store, record_of


def test_before_any_model_predict_is_503_naming_the_missing_model(store: Store, shared_frame: pd.DataFrame) -> None:
    with checked_client(create_app(store.settings())) as client:
        response = client.post("/predict", json=record_of(shared_frame, 0))
        assert response.status_code == 503
        body = response.json()
        assert body["registry_state"] == "no_registered_model"
        assert "no registered model 'covertype'" in body["detail"]
        assert client.get("/ready").status_code == 503
        assert client.get("/model").status_code == 503
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["model_loaded"] is False
        assert health.json()["registry_state"] == "no_registered_model"
        assert "inference_model_loaded 0.0" in client.get("/metrics").text


def test_a_model_without_the_alias_is_a_different_503_until_promoted(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline
) -> None:
    version = register_pipeline(
        store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root, alias=None
    )
    with checked_client(create_app(store.settings())) as client:
        response = client.post("/predict", json=record_of(shared_frame, 0))
        assert response.status_code == 503
        assert response.json()["registry_state"] == "alias_not_set"
        assert "has no alias 'production'" in response.json()["detail"]

        MlflowClient(tracking_uri=store.tracking_uri).set_registered_model_alias(
            "covertype", "production", version.version
        )
        reload = client.post("/model/reload").json()
        assert reload["swapped"] is True
        assert reload["model_version"] == version.version
        answer = client.post("/predict", json=record_of(shared_frame, 0))
        assert answer.status_code == 200
        assert answer.json()["model_version"] == version.version
        assert client.get("/ready").json() == {"ready": True, "model_version": version.version}
        # Nothing new: a second reload swaps nothing.
        assert client.post("/model/reload").json()["swapped"] is False


def test_an_unreachable_registry_at_start_is_a_503_saying_so(tmp_path, shared_frame: pd.DataFrame, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = Settings(mlflow_tracking_uri="http://127.0.0.1:9", data_dir=tmp_path)  # discard port: refused
    with checked_client(create_app(settings)) as client:
        response = client.post("/predict", json=record_of(shared_frame, 0))
        assert response.status_code == 503
        assert response.json()["registry_state"] == "registry_unreachable"
        assert "http://127.0.0.1:9 unreachable" in response.json()["detail"]
        assert client.get("/health").json()["registry_state"] == "registry_unreachable"


def test_model_reports_the_served_version_and_its_run_metrics(client: TestClient, serving_store: ServingStore) -> None:
    info = client.get("/model").json()
    assert info["name"] == "covertype"
    assert info["alias"] == "production"
    assert info["version"] == serving_store.version.version
    assert info["run_id"] == serving_store.version.run_id
    assert info["metrics"] == {"macro_f1": 0.81, "accuracy": 0.82, "rows_used": 4000.0}
    assert info["classes"] == {str(label): name for label, name in COVER_TYPE_NAMES.items()}
    assert info["artifact_mb"] > 0
    assert info["loaded_at"].startswith("20")


def test_metrics_count_requests_and_show_the_model_version(
    client: TestClient, serving_store: ServingStore, shared_frame: pd.DataFrame
) -> None:
    for position in range(3):
        assert client.post("/predict", json=record_of(shared_frame, position)).status_code == 200
    assert client.post("/predict", json={"instances": [record_of(shared_frame, 0)] * 4}).status_code == 200
    assert client.post("/predict", json={"Soil_Type": "C7745"}).status_code == 422
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'inference_requests_total{method="POST",path="/predict",status="200"} 4.0' in text
    assert 'inference_requests_total{method="POST",path="/predict",status="422"} 1.0' in text
    assert 'inference_request_duration_seconds_count{path="/predict"} 5.0' in text
    assert "inference_predicted_records_total 7.0" in text
    version = serving_store.version.version
    assert f'inference_model_version{{alias="production",model_name="covertype"}} {float(version)}' in text
    assert "inference_model_loaded 1.0" in text
    assert "inference_registry_reachable 1.0" in text


def test_swap_under_a_stream_of_requests_fails_none_and_serves_both_versions(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    records = [record_of(shared_frame, position) for position in range(0, 1500, 100)]
    versions: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    with checked_client(create_app(store.settings(model_poll_interval_s=3600))) as client:

        def stream(offset: int) -> None:
            # A server error re-raised by TestClient would only end this thread (pytest merely warns):
            # every exception is recorded as a failure, and a thread that ends early is one too.
            try:
                for count in range(5000):  # bounded; stopped by the event long before
                    if stop.is_set():
                        return
                    body = records[(offset + count) % len(records)]
                    if count % 3 == 0:
                        body = {"instances": records}
                    response = client.post("/predict", json=body)
                    with lock:
                        if response.status_code == 200:
                            versions[response.json()["model_version"]] += 1
                        else:
                            failures.append(f"{response.status_code}: {response.text}")
                with lock:
                    failures.append(f"stream {offset} ran out of requests before the test ended")
            except BaseException as error:  # recorded, and asserted on below
                with lock:
                    failures.append(f"stream {offset}: {type(error).__name__}: {error}")

        threads = [threading.Thread(target=stream, args=(offset,)) for offset in range(4)]
        for thread in threads:
            thread.start()
        try:
            assert wait_for(lambda: versions[first.version] >= 20)
            second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
            assert client.post("/model/reload").json()["swapped"] is True
            assert wait_for(lambda: versions[second.version] >= 20)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert client.get("/model").json()["version"] == second.version

    assert failures == []
    assert versions[first.version] >= 20
    assert versions[second.version] >= 20


def test_the_watcher_swaps_without_being_asked(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings(model_poll_interval_s=0.2))) as client:
        assert client.get("/model").json()["version"] == first.version
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        assert wait_for(lambda: client.get("/model").json()["version"] == second.version)
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == second.version
        metrics = client.get("/metrics").text
        assert "inference_model_swaps_total 2.0" in metrics
        assert second.version != first.version
        version_gauge = 'inference_model_version{alias="production",model_name="covertype"}'
        assert f"{version_gauge} {float(second.version)}" in metrics


def test_removing_the_alias_keeps_the_loaded_model_and_says_so(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        MlflowClient(tracking_uri=store.tracking_uri).delete_registered_model_alias("covertype", "production")
        reload = client.post("/model/reload").json()
        assert reload["swapped"] is False
        assert reload["registry_state"] == "alias_not_set"
        assert f"still serving version {first.version}" in reload["registry_message"]
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == first.version


def test_the_service_uses_its_own_tracking_uri_not_mlflows_global_one(
    serving_store: ServingStore, store: Store, shared_frame: pd.DataFrame
) -> None:
    # Another (empty) store as MLflow's process-wide default must not matter to the service.
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    with checked_client(create_app(serving_store.store.settings())) as client:
        response = client.post("/predict", json=record_of(shared_frame, 0))
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == serving_store.version.version


def test_a_version_that_fails_to_load_keeps_the_old_one_serving_and_says_why(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        assert client.get("/model").json()["version"] == first.version
        before = set(store.artifact_root.rglob("model.skops"))
        broken = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        (broken_file,) = set(store.artifact_root.rglob("model.skops")) - before
        broken_file.write_bytes(b"not a skops archive")  # e.g. a half-written or corrupted artifact

        reload = client.post("/model/reload").json()
        assert reload["swapped"] is False
        assert reload["registry_state"] == "load_failed"
        assert (
            f"version {broken.version} of registered model 'covertype' could not be loaded"
            in (reload["registry_message"])
        )
        # Requests keep being answered by the version that was loaded.
        response = client.post("/predict", json=record_of(shared_frame, 0))
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == first.version
        health = client.get("/health").json()
        assert (health["model_loaded"], health["registry_state"]) == (True, "load_failed")
        assert "attempt 1; next try in" in health["registry_message"]

        # The watcher does not download the broken version on every poll: it waits (here 2 x 30 s)...
        client.app.state.holder.refresh()
        assert "attempt 1;" in client.get("/health").json()["registry_message"]
        # ...and a registry outage seen in between is not what /health keeps saying once it answers again.
        database = store.root / "mlflow.db"
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE registered_model_aliases RENAME TO aliases_unreachable")
        client.app.state.holder.refresh()
        assert client.get("/health").json()["registry_state"] == "registry_unreachable"
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE aliases_unreachable RENAME TO registered_model_aliases")
        client.app.state.holder.refresh()
        health = client.get("/health").json()
        assert (health["registry_state"], "attempt 1;" in health["registry_message"]) == ("load_failed", True)
        # ...while a reload asked for tries at once.
        assert "attempt 2;" in client.post("/model/reload").json()["registry_message"]

        # Once the alias points at a version that loads, the service moves on.
        third = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == third.version


def test_a_replaced_model_is_freed(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    """A swap must not keep the old model in memory: the service runs for days and swaps every promotion."""
    register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        assert client.post("/predict", json=record_of(shared_frame, 0)).status_code == 200
        model = client.app.state.holder.current.model
        # The forests too: the service gives each a fast predict_proba that refers back to the forest.
        first_model = [weakref.ref(model), *(weakref.ref(forest) for forest in forests_in(model))]
        assert len(first_model) == 2
        del model
        register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.post("/predict", json=record_of(shared_frame, 0)).status_code == 200
        gc.collect()
        assert [ref() for ref in first_model] == [None, None]


def test_a_model_registered_again_under_the_same_version_number_is_loaded(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        assert client.get("/model").json()["run_id"] == first.run_id
        # The registered model deleted and created again: its numbering starts over.
        MlflowClient(tracking_uri=store.tracking_uri).delete_registered_model("covertype")
        again = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        assert (again.version, again.run_id != first.run_id) == (first.version, True)
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.get("/model").json()["run_id"] == again.run_id


def test_a_version_whose_run_was_garbage_collected_is_served_without_run_metrics(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    version = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    # Deleted, then purged by `mlflow gc`: the registered model (its artifacts live apart from the run's) remains.
    tracking = MlflowClient(tracking_uri=store.tracking_uri)
    tracking.delete_run(version.run_id)
    purge = ["--backend-store-uri", store.tracking_uri, "--tracking-uri", store.tracking_uri]
    result = CliRunner().invoke(mlflow_cli.gc, [*purge, "--run-ids", version.run_id])
    assert result.exit_code == 0, result.output
    with pytest.raises(MlflowException, match="not found"):
        tracking.get_run(version.run_id)

    with (
        caplog.at_level(logging.WARNING, logger="inference.model_holder"),
        checked_client(create_app(store.settings())) as client,
    ):
        info = client.get("/model")
        assert info.status_code == 200, info.text
        assert (info.json()["version"], info.json()["run_id"]) == (version.version, version.run_id)
        assert (info.json()["metrics"], info.json()["tags"]) == ({}, {})
        assert client.app.state.holder.current.run_read is True, "a purged run has nothing to read again"
        assert client.get("/health").json()["registry_state"] == "ok"
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == version.version

    [warning] = [record.getMessage() for record in caplog.records if record.name == "inference.model_holder"]
    assert f"run {version.run_id} of version {version.version} could not be read (MlflowException: " in warning


def test_run_metrics_that_could_not_be_read_at_load_are_reported_once_the_run_is_readable(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    version = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    tracking = MlflowClient(tracking_uri=store.tracking_uri)
    tracking.set_tag(version.run_id, "dag_run_id", "manual__1")
    run_metrics = tracking.get_run(version.run_id).data.metrics
    assert run_metrics, "the registered run should have metrics to report"
    database = store.root / "mlflow.db"
    # The run table out of reach while the model loads: the registry (aliases, versions) still answers.
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE runs RENAME TO runs_unreachable")
    with (
        caplog.at_level(logging.INFO, logger="inference.model_holder"),
        checked_client(create_app(store.settings())) as client,
    ):
        info = client.get("/model").json()
        assert (info["version"], info["metrics"], info["tags"]) == (version.version, {}, {})
        assert client.post("/model/reload").json()["swapped"] is False
        assert client.get("/model").json()["metrics"] == {}, "still unreadable: nothing to report yet"

        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE runs_unreachable RENAME TO runs")
        served_model = client.app.state.holder.current.model
        assert client.post("/model/reload").json()["swapped"] is False
        info = client.get("/model").json()
        assert info["metrics"] == run_metrics
        assert info["tags"] == {"dag_run_id": "manual__1"}
        assert client.app.state.holder.current.model is served_model, "the same model object keeps serving"
        assert client.app.state.holder.current.run_read is True
        client.post("/model/reload")

    messages = [record.getMessage() for record in caplog.records if record.name == "inference.model_holder"]
    assert sum("could not be read" in message for message in messages) == 1, messages
    assert sum("read: its metrics and tags are reported" in m for m in messages) == 1, messages


def test_health_says_when_the_registry_last_answered_even_without_a_model(store: Store) -> None:
    with checked_client(create_app(store.settings())) as client:
        health = client.get("/health").json()
        assert health["registry_state"] == "no_registered_model"
        assert health["registry_last_success_at"] == health["registry_checked_at"] is not None


def test_files_that_cannot_be_downloaded_are_an_outage_retried_at_the_next_check(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        before = set(store.artifact_root.rglob("model.skops"))
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        (model_file,) = set(store.artifact_root.rglob("model.skops")) - before
        files = model_file.parent
        away = files.rename(files.with_name(files.name + "-store-down"))  # the artifact store is down

        with caplog.at_level(logging.WARNING, logger="inference.model_holder"):
            reload = client.post("/model/reload").json()
            assert client.post("/model/reload").json()["registry_state"] == "artifacts_unreachable"
        assert (reload["swapped"], reload["registry_state"]) == (False, "artifacts_unreachable")
        assert caplog.text.count("could not be downloaded") == 1, "one warning, not one per check"
        assert (
            f"the files of version {second.version} of registered model 'covertype' could not be downloaded"
            in (reload["registry_message"])
        )
        assert reload["registry_message"].endswith(f"still serving version {first.version}")
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == first.version

        # The alias moves on to a version whose files are missing too: that one is warned about as well.
        before = set(store.artifact_root.rglob("model.skops"))
        third = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
        (third_file,) = set(store.artifact_root.rglob("model.skops")) - before
        third_away = third_file.parent.rename(third_file.parent.with_name(third_file.parent.name + "-store-down"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="inference.model_holder"):
            assert client.post("/model/reload").json()["registry_state"] == "artifacts_unreachable"
        assert f"the files of version {third.version} of registered model" in caplog.text

        away.rename(files)  # the store is back: the watcher's next check loads the version, no pause to wait out
        third_away.rename(third_file.parent)
        assert client.app.state.holder.refresh().swapped is True
        assert client.get("/model").json()["version"] == third.version


def test_a_registry_outage_while_resolving_the_files_is_the_registry_unreachable(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        download_uri = MlflowClient.get_model_version_download_uri

        def registry_gone(self: MlflowClient, name: str, version: str) -> str:
            raise MlflowException("API request to /model-versions/get-download-uri failed: connection refused")

        monkeypatch.setattr(MlflowClient, "get_model_version_download_uri", registry_gone)
        answered_before = client.get("/health").json()["registry_last_success_at"]
        reload = client.post("/model/reload").json()
        assert (reload["swapped"], reload["registry_state"]) == (False, "registry_unreachable")
        assert "get-download-uri failed" in reload["registry_message"]
        assert client.get("/health").json()["registry_last_success_at"] == answered_before

        monkeypatch.setattr(MlflowClient, "get_model_version_download_uri", download_uri)
        assert client.app.state.holder.refresh().swapped is True  # no pause to wait out
        assert client.get("/model").json()["version"] == second.version != first.version


@pytest.mark.parametrize(("attempts", "pause_s"), [(1, 60.0), (3, 240.0), (5, 600.0), (1024, 600.0), (10**6, 600.0)])
def test_the_pause_after_failed_loads_doubles_up_to_ten_minutes_however_many_failed(
    attempts: int, pause_s: float
) -> None:
    assert failed_retry_pause_s(30.0, attempts) == pause_s
