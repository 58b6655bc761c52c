"""What the service says about the registry: no credentials, the right state, and a log line per change only.

Real local MLflow stores and closed loopback ports; no part of the service is replaced.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from covertype.loopback import free_port
from covertype.settings import Settings
from inference.app import create_app
from tests.inference.clients import checked_client, wait_for
from tests.inference.model_factory import register_pipeline
from tests.inference.stores import Store, record_of

HOLDER_LOGGER = "inference.model_holder"


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """One attempt per registry call: a closed port is reported at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.mark.usefixtures("fail_fast")
def test_credentials_of_the_tracking_uri_reach_no_answer_and_no_log_record(
    tmp_path: Path, shared_frame: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"127.0.0.1:{free_port()}"  # closed: MLflow's error quotes the URL it could not reach
    settings = Settings(mlflow_tracking_uri=f"http://alice:s3cret@{address}", data_dir=tmp_path)
    with caplog.at_level(logging.DEBUG), checked_client(create_app(settings)) as client:
        answers = [
            client.get("/health"),
            client.get("/ready"),
            client.get("/model"),
            client.post("/predict", json=record_of(shared_frame, 0)),
            client.post("/model/reload"),
            client.get("/metrics"),
        ]
        message = client.get("/health").json()["registry_message"]

    leaks = [answer.request.url.path for answer in answers if "s3cret" in answer.text]
    assert leaks == []
    assert [record.getMessage() for record in caplog.records if "s3cret" in record.getMessage()] == []
    assert "s3cret" not in caplog.text  # formatted records, tracebacks included
    # What the error says stays, without the user info.
    assert message.startswith(f"MLflow registry at http://{address} unreachable: MlflowException: ")
    assert f"API request to http://{address}/api/2.0/mlflow/registered-models/alias failed" in message


def test_credentials_in_mlflow_errors_are_removed_from_warnings_and_tracebacks(
    store: Store,
    shared_frame: pd.DataFrame,
    model_a: Pipeline,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Errors logged apart from the status (a failed load's traceback, an unreadable run) quote URLs too."""
    register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    secret_url = "http://alice:s3cret@registry.example:5000/api/2.0/mlflow"
    load_model = mlflow.sklearn.load_model

    def unreadable(path: str) -> object:
        raise MlflowException(f"API request to {secret_url}/artifacts failed: connection reset")

    def run_unreadable(self: MlflowClient, run_id: str) -> object:
        raise MlflowException(f"API request to {secret_url}/runs/get failed: connection reset")

    monkeypatch.setattr(mlflow.sklearn, "load_model", unreadable)
    monkeypatch.setattr(MlflowClient, "get_run", run_unreadable)
    with caplog.at_level(logging.INFO), checked_client(create_app(store.settings())) as client:
        assert client.get("/health").json()["registry_state"] == "load_failed"
        monkeypatch.setattr(mlflow.sklearn, "load_model", load_model)
        assert client.post("/model/reload").json()["swapped"] is True

    assert "Traceback" in caplog.text
    assert "could not be read (MlflowException: API request to http://registry.example:5000/api/" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.usefixtures("fail_fast")
def test_a_registry_that_stays_down_is_logged_once_not_at_every_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}", data_dir=tmp_path)
    checks: set[str] = set()

    def checked_again() -> bool:
        checks.add(client.get("/health").json()["registry_checked_at"])
        return len(checks) >= 5

    with (
        caplog.at_level(logging.INFO, logger=HOLDER_LOGGER),
        checked_client(create_app(settings.model_copy(update={"model_poll_interval_s": 0.05}))) as client,
    ):
        assert wait_for(checked_again)
        assert client.get("/health").json()["registry_state"] == "registry_unreachable"

    lines = [record.getMessage() for record in caplog.records if record.name == HOLDER_LOGGER]
    assert len(lines) == 1, lines
    assert "registry_unreachable" in lines[0]


def test_metrics_show_the_registry_state_beside_whether_it_answered(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline
) -> None:
    version = register_pipeline(
        store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root, alias=None
    )
    with checked_client(create_app(store.settings())) as client:
        text = client.get("/metrics").text
        # The registry answered ("no alias"): reachable, and the state says what it answered.
        assert "inference_registry_reachable 1.0" in text
        assert "inference_model_loaded 0.0" in text
        assert 'inference_registry_state{state="alias_not_set"} 1.0' in text
        assert 'inference_registry_state{state="ok"} 0.0' in text
        assert 'inference_registry_state{state="load_failed"} 0.0' in text

        MlflowClient(tracking_uri=store.tracking_uri).set_registered_model_alias(
            "covertype", "production", version.version
        )
        assert client.post("/model/reload").json()["swapped"] is True
        text = client.get("/metrics").text
        assert 'inference_registry_state{state="ok"} 1.0' in text
        assert 'inference_registry_state{state="alias_not_set"} 0.0' in text
        states = [line for line in text.splitlines() if line.startswith("inference_registry_state{")]
        assert len(states) == 8
        assert [line for line in states if line.endswith(" 1.0")] == ['inference_registry_state{state="ok"} 1.0']


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("model_alias", "prod/1", "Invalid alias name: 'prod/1'"),
        ("model_name", "cover/type", "Invalid model name 'cover/type'"),
    ],
    ids=["alias", "name"],
)
def test_a_name_or_alias_the_registry_refuses_is_a_configuration_error_not_a_missing_model(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, *, setting: str, value: str, reason: str
) -> None:
    register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings(**{setting: value}))) as client:
        health = client.get("/health").json()
        predict = client.post("/predict", json=record_of(shared_frame, 0))
        metrics = client.get("/metrics").text

    assert health["registry_state"] == "configuration_error"
    message = health["registry_message"]
    assert reason in message
    assert f"{setting.upper()}={value!r}" in message
    assert "promoted" not in message
    assert "no registered model" not in message
    assert (predict.status_code, predict.json()["registry_state"]) == (503, "configuration_error")
    assert reason in predict.json()["detail"]
    assert 'inference_registry_state{state="configuration_error"} 1.0' in metrics


def test_files_missing_at_several_checks_in_a_row_are_said_to_be_perhaps_deleted_and_still_tried(
    store: Store,
    shared_frame: pd.DataFrame,
    model_a: Pipeline,
    model_b: Pipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        before = set(store.artifact_root.rglob("model.skops"))
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        (model_file,) = set(store.artifact_root.rglob("model.skops")) - before
        files = model_file.parent
        kept = shutil.copytree(files, store.root / "backup")
        shutil.rmtree(files)  # deleted for good (for all the service can tell)

        caplog.clear()  # the records of the start-up check (INFO ones too, after a test that set the level)
        with caplog.at_level(logging.WARNING, logger=HOLDER_LOGGER):
            reloads = [client.post("/model/reload").json() for _ in range(5)]
        assert {(reload["swapped"], reload["registry_state"]) for reload in reloads} == {
            (False, "artifacts_unreachable")
        }
        messages = [reload["registry_message"] for reload in reloads]
        assert "tried again at the next check" in messages[0]
        assert "deleted" not in messages[0]
        last = messages[-1]
        assert f"the files of version {second.version} of registered model 'covertype' could not be downloaded" in last
        assert "may have been deleted for good" in last
        assert "promote another version" in last
        assert last.endswith(f"still serving version {first.version}")
        assert client.get("/health").json()["registry_message"] == last
        # One warning when the files went missing, one when they were taken to be gone: not one per check.
        warnings = [
            record.getMessage()
            for record in caplog.records
            if record.name == HOLDER_LOGGER and record.levelno >= logging.WARNING
        ]
        assert len(warnings) == 2, warnings
        assert "may have been deleted" in warnings[1]

        shutil.copytree(kept, files)  # restored from a backup: the next check serves the version
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.get("/model").json()["version"] == second.version


def test_a_version_whose_folder_the_store_lists_empty_is_said_to_be_perhaps_deleted_not_unloadable(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    """Some stores answer a deleted version's download with an empty folder instead of an error: that is the
    files gone (or not there yet), not a version that does not load."""
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        before = set(store.artifact_root.rglob("model.skops"))
        second = register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        (model_file,) = set(store.artifact_root.rglob("model.skops")) - before
        for path in sorted(model_file.parent.rglob("*"), reverse=True):  # the folder stays, empty
            path.unlink() if path.is_file() else path.rmdir()

        reloads = [client.post("/model/reload").json() for _ in range(3)]

    assert {(reload["swapped"], reload["registry_state"]) for reload in reloads} == {(False, "artifacts_unreachable")}
    last = reloads[-1]["registry_message"]
    assert f"the files of version {second.version} of registered model 'covertype' could not be downloaded" in last
    assert "the store holds no files at" in last
    assert "may have been deleted for good" in last
    assert last.endswith(f"still serving version {first.version}")


def test_files_a_proxying_server_answers_500_for_are_taken_as_gone_only_when_the_store_lists_none(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose stack's MLflow serves MinIO's files: a deleted file is a 500 there, the same as an outage.
    Only an empty listing of the version's files tells them apart."""
    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        before = set(store.artifact_root.rglob("model.skops"))
        register_pipeline(store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root)
        (model_file,) = set(store.artifact_root.rglob("model.skops")) - before

        def proxy_500(**_: object) -> str:
            raise MlflowException("API request to .../artifacts failed with exception: too many 500 error responses")

        monkeypatch.setattr(mlflow.artifacts, "download_artifacts", proxy_500)
        outage = [client.post("/model/reload").json()["registry_message"] for _ in range(4)]
        assert all("too many 500 error responses" in message for message in outage)
        assert not any("deleted" in message for message in outage), "the files are there: an outage"

        shutil.rmtree(model_file.parent)
        gone = [client.post("/model/reload").json()["registry_message"] for _ in range(3)]
        assert "deleted" not in gone[0]
        assert "may have been deleted for good" in gone[-1]
        assert gone[-1].endswith(f"still serving version {first.version}")


def test_a_user_name_without_a_password_is_left_in_messages_that_name_it_otherwise() -> None:
    """Only a password is masked wherever it appears; a user name alone is dropped from URLs only."""
    from inference.model_holder import CredentialRedactor  # noqa: PLC0415

    redactor = CredentialRedactor()
    redactor.add_uri("http://mlflow@mlflow:5000")
    redactor.add_uri("http://alice:s3cret@registry:5000")
    assert (
        redactor.redact("GET http://mlflow@mlflow:5000/api/2.0/mlflow/x") == "GET http://mlflow:5000/api/2.0/mlflow/x"
    )
    assert redactor.redact("login alice:s3cret refused") == "login *** refused"
    redactor.add_uri("http://bob:p@ss@registry:5000")  # a raw '@' in the password: stripped whole
    assert redactor.redact("GET http://bob:p@ss@registry:5000/x failed") == "GET http://registry:5000/x failed"
    # Any URL in the text, not only the known ones.
    assert redactor.redact("via http://carol:p@ss@proxy:3128/ refused") == "via http://proxy:3128/ refused"


def test_a_malformed_log_call_passes_the_redacting_filter_for_logging_to_report() -> None:
    """Raised in the filter, it would escape logging's own error handling and fail the registry check."""
    from inference.model_holder import CredentialRedactor  # noqa: PLC0415

    record = logging.LogRecord(HOLDER_LOGGER, logging.WARNING, __file__, 1, "%s and %s", ("one argument",), None)
    assert CredentialRedactor().filter(record) is True


def test_a_check_asked_for_when_the_service_stops_answers_with_the_status_as_it_stands(store: Store) -> None:
    """Cancelled, it would raise in whoever waits for it (a reload during shutdown)."""
    holder = create_app(store.settings()).state.holder
    asked = holder.request_check(force=True)
    holder.stop_watcher()
    result = asked.result(timeout=5)
    assert (result.swapped, result.status.state, result.current) == (False, "pending", None)
