"""The Predict page against the real inference app (local model), an empty registry, and a closed port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from covertype.schema import (
    COVER_TYPE_NAMES,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    SOIL_CODES,
    SOIL_COLUMN,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
    WILDERNESS_DESCRIPTIONS,
)
from tests.ui import backends
from tests.ui.apptest import APP_PATH, RUN_TIMEOUT_S, open_page, texts
from tests.ui.backends import expected_cover_type
from tests.ui.servers import serve
from ui.clients.inference import PREDICT_TIMEOUT_S, STATUS_TIMEOUT_S, InferenceClient
from ui.examples import DEFAULT_EXAMPLE, EXAMPLES

SUBMIT = "FormSubmitter:predict_form-Predict the cover type"
MODEL = {"name": "covertype", "version": "3", "alias": "production", "run_id": "abc", "metrics": {"macro_f1": 0.79}}
PREDICTION = {"cover_type": 2, "cover_type_name": "Lodgepole Pine", "probabilities": {"Lodgepole Pine": 1.0}}
RUN_THE_DAG = "run the DAG on the Pipeline page"
# What each registry state of a 503 must lead to: a warning or an error, and words its hint must hold.
REGISTRY_STATES = {
    "pending": ("warning", ("has just started", "checking the MLflow registry", "a few seconds")),
    "no_registered_model": ("warning", (RUN_THE_DAG,)),
    "alias_not_set": ("warning", (RUN_THE_DAG,)),
    "configuration_error": ("error", ("MODEL_NAME and MODEL_ALIAS", "restart the inference service")),
    "registry_unreachable": ("error", ("MLflow", "artifact store (MinIO)")),
    "artifacts_unreachable": ("error", ("MLflow", "artifact store (MinIO)")),
    "load_failed": ("error", ("inference service's log", "POST /model/reload", "promote another version")),
}


def field_key(column: str) -> str:
    return f"predict_field_{column}"


def _form(app: AppTest) -> dict[str, int | str]:
    """The record the form shows, read from its widgets."""
    record: dict[str, int | str] = {
        column.name: app.number_input(key=field_key(column.name)).value for column in NUMERIC_COLUMNS
    }
    for column in (WILDERNESS_COLUMN, SOIL_COLUMN):
        record[column] = app.selectbox(key=field_key(column)).value
    return record


@contextmanager
def predict_page_on(service: FastAPI, ui_env: pytest.MonkeyPatch) -> Iterator[AppTest]:
    """The Predict page opened against ``service`` on a loopback port; the service stops when the block ends."""
    with serve(service) as url:
        ui_env.setenv("INFERENCE_URL", url)
        yield open_page("predict")


def test_form_has_every_field_with_its_range_and_a_real_example() -> None:
    app = open_page("predict")
    numbers = {widget.key: widget for widget in app.number_input}
    for column in NUMERIC_COLUMNS:
        widget = numbers[f"predict_field_{column.name}"]
        assert (widget.min, widget.max) == (column.minimum, column.maximum)
        assert widget.value == EXAMPLES[DEFAULT_EXAMPLE][column.name]
    wilderness = app.selectbox(key="predict_field_Wilderness_Area")
    soil = app.selectbox(key="predict_field_Soil_Type")
    assert list(wilderness.options) == [f"{WILDERNESS_DESCRIPTIONS[name]} ({name})" for name in WILDERNESS_AREAS]
    assert len(soil.options) == len(SOIL_CODES)
    assert "C7745: Como - Legault families complex, extremely stony." in soil.options
    assert soil.value == EXAMPLES[DEFAULT_EXAMPLE]["Soil_Type"]


def test_choosing_an_example_prefills_its_values() -> None:
    app = open_page("predict")
    app.selectbox(key="predict_example").set_value(7).run()
    for column in FEATURE_COLUMNS:
        assert app.session_state[f"predict_field_{column}"] == EXAMPLES[7][column]
    assert app.number_input(key="predict_field_Elevation").value == EXAMPLES[7]["Elevation"]


def test_prediction_names_the_cover_type_and_the_model_version(served_model, ui_env) -> None:
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    app = open_page("predict")
    production = served_model.store.production.version
    assert any(f"version {production}" in caption for caption in texts(app.caption))
    app.selectbox(key="predict_example").set_value(3).run()
    app.number_input(key="predict_field_Elevation").set_value(2600)
    app.button(key=SUBMIT).click().run()
    assert not app.error, texts(app.error)
    record = {**EXAMPLES[3], "Elevation": 2600}
    # What reached the service: the class alone cannot show the edit (the unedited example gets the same one).
    assert served_model.predict_bodies[-1] == {"instances": [record]}
    expected = COVER_TYPE_NAMES[expected_cover_type(served_model.store.pipeline, record)]
    [answer] = texts(app.success)
    assert f"**{expected}**" in answer
    assert f"version {production}" in answer
    assert len(app.get("vega_lite_chart")) == 1  # the probabilities chart


def test_no_model_yet_is_one_warning_with_the_service_reason(empty_registry_inference, ui_env) -> None:
    ui_env.setenv("INFERENCE_URL", empty_registry_inference)
    reason = httpx.get(f"{empty_registry_inference}/model", timeout=10).json()["detail"]
    assert reason.startswith("no model loaded")  # the service says it itself: the UI must not say it again
    app = open_page("predict")
    assert not app.error, texts(app.error)
    [warning] = texts(app.warning)
    assert warning.startswith(f"**Inference API**: {reason}.")
    assert "the alias the inference service serves (MODEL_ALIAS, `production` unless set otherwise" in warning
    app.button(key=SUBMIT).click().run()
    assert not app.success
    # Shown once after pressing Predict: the top message gives way to the answer's, not repeated as an error.
    [message] = texts(app.warning) + texts(app.error)
    assert message == warning
    assert message.count("no model loaded") == 1


@pytest.mark.usefixtures("ui_env")
def test_unreachable_inference_service_is_named_with_what_to_check() -> None:
    app = open_page("predict")
    [error] = texts(app.error)
    assert "Inference API" in error
    assert "cannot connect" in error
    assert "INFERENCE_URL" in error
    app.button(key=SUBMIT).click().run()
    assert not app.exception
    assert not app.success
    assert texts(app.error) == [error]  # the failed prediction's message replaces the first, once on the page


def test_the_form_and_its_answer_survive_a_visit_to_another_page(served_model, ui_env) -> None:
    """Streamlit deletes a widget's value while its page is not drawn: the form must come back as submitted,
    so that the answer still shown is for the record in the form."""
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    app = open_page("predict")
    app.selectbox(key="predict_example").set_value(7).run()
    app.number_input(key="predict_field_Elevation").set_value(3100)
    app.button(key=SUBMIT).click().run()
    record = {**EXAMPLES[7], "Elevation": 3100}
    assert served_model.predict_bodies[-1] == {"instances": [record]}
    [answer] = texts(app.success)

    app.switch_page("app_pages/batch.py").run()
    app.switch_page("app_pages/predict.py").run()
    assert not app.exception, [item.value for item in app.exception]
    assert app.selectbox(key="predict_example").value == 7
    assert _form(app) == record
    assert texts(app.success) == [answer]
    sent_before = len(served_model.predict_bodies)
    app.button(key=SUBMIT).click().run()
    assert served_model.predict_bodies[sent_before:] == [{"instances": [record]}]


def test_picking_another_example_drops_the_answer_for_the_record_sent(served_model, ui_env) -> None:
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    app = open_page("predict")
    app.button(key=SUBMIT).click().run()
    assert len(app.success) == 1
    app.selectbox(key="predict_example").set_value(1).run()
    assert _form(app) == EXAMPLES[1]
    assert not app.success
    assert any("press **Predict the cover type**" in message for message in texts(app.info))


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ([], "the body: Input should be a JSON object (got [])"),
        ({**MODEL, "metrics": {"macro_f1": "n/a"}}, "metrics.macro_f1: Input should be a valid number"),
        ({**MODEL, "metrics": ["macro_f1"]}, "metrics: Input should be a valid dictionary (got ['macro_f1'])"),
    ],
    ids=["list", "metric-text", "metrics-list"],
)
def test_a_model_answer_of_another_shape_is_one_error_naming_what_is_wrong(ui_env, model: object, problem: str) -> None:
    with serve(backends.inference_stub(model, lambda instances: (200, {}))) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT_S).run()
    assert not app.exception, [item.value for item in app.exception]
    [error] = texts(app.error)
    assert error.startswith(f"**Inference API**: GET /model answered a body the UI cannot read: {problem}")
    assert "INFERENCE_URL" in error


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            {"predictions": [{**PREDICTION, "probabilities": None}]},
            "a body the UI cannot read: predictions.0.probabilities: Input should be a valid dictionary (got None)",
        ),
        ({"predictions": [{**PREDICTION, "cover_type": 9}]}, "predictions.0.cover_type: Input should be less than"),
        ({"predictions": []}, "POST /predict answered 0 predictions for 1 record sent"),
        ({"predictions": [PREDICTION, PREDICTION]}, "POST /predict answered 2 predictions for 1 record sent"),
    ],
    ids=["probabilities-null", "class-9", "none", "two"],
)
def test_a_prediction_of_another_shape_is_one_error_and_no_answer(ui_env, answer: object, problem: str) -> None:
    with predict_page_on(backends.inference_stub(MODEL, lambda instances: (200, answer)), ui_env) as app:
        app.button(key=SUBMIT).click().run()
    assert not app.exception, [item.value for item in app.exception]
    assert not app.success
    [error] = texts(app.error)
    assert error.startswith("**Inference API**: POST /predict ")
    assert problem in error


@pytest.fixture
def fail_fast(ui_env) -> None:
    """One attempt per MLflow call in the inference service: an unreachable registry is reported at once."""
    ui_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ui_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # a hung registry stays "pending" while the page runs


@pytest.mark.usefixtures("fail_fast")
@pytest.mark.parametrize("registry_state", list(REGISTRY_STATES))
def test_a_503_is_shown_as_its_registry_state_calls_for(ui_env, tmp_path: Path, registry_state: str) -> None:
    """Only "just started" and "nothing promoted yet" pass by themselves: the other states are errors, each
    pointing at what to fix, and none of them advises running the DAG."""
    kind, hint_words = REGISTRY_STATES[registry_state]
    with backends.inference_without_model(registry_state, tmp_path) as url:
        ui_env.setenv("INFERENCE_URL", url)
        reason = httpx.get(f"{url}/model", timeout=10).json()["detail"]
        app = open_page("predict")
    [message] = texts(app.warning) + texts(app.error)
    assert texts(getattr(app, kind)) == [message]
    assert message.startswith(f"**Inference API**: {reason.rstrip('.')[:40]}")
    for words in hint_words:
        assert words in message
    if registry_state not in ("no_registered_model", "alias_not_set"):
        assert RUN_THE_DAG not in message


@pytest.mark.parametrize(
    "body",
    [{"detail": "no model loaded: warming up", "registry_state": "warming_up"}, {"detail": "no model loaded"}],
    ids=["unknown-state", "no-state"],
)
def test_a_503_without_a_known_registry_state_is_the_no_model_yet_warning(ui_env, body: dict[str, str]) -> None:
    """A service of another release (or a proxy) may send no state or another one: read as before, "no model yet"."""
    service = backends.inference_stub(JSONResponse(body, status_code=503), lambda instances: (200, {}))
    with predict_page_on(service, ui_env) as app:
        assert not app.error, texts(app.error)
        [warning] = texts(app.warning)
        assert warning.startswith(f"**Inference API**: {body['detail']}.")
        assert RUN_THE_DAG in warning


def test_a_newer_version_that_failed_to_load_is_a_warning_beside_the_version_served(
    mlflow_store, ui_env, tmp_path: Path
) -> None:
    """The service keeps answering with the version it has, and only /health says the promoted one did not load."""
    # A copy of the session's store (its artifacts stay where they are): the alias moves here, not there.
    shutil.copy(mlflow_store.tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    served = mlflow_store.production.version
    with backends.inference_server(tracking_uri) as url:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        broken = client.create_model_version(
            backends.MODEL_NAME, source=(tmp_path / "broken").as_uri(), run_id=mlflow_store.production.run_id
        )
        backends.write_unreadable_model(tracking_uri, broken.version)
        client.set_registered_model_alias(backends.MODEL_NAME, backends.ALIAS, broken.version)
        assert httpx.post(f"{url}/model/reload", timeout=60).json()["registry_state"] == "load_failed"
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("predict")
    assert not app.error, texts(app.error)
    assert any(f"version {served}**" in caption for caption in texts(app.caption))
    [warning] = texts(app.warning)
    assert warning.startswith(f"**Inference API**: version {broken.version} of registered model 'covertype' could not")
    assert f"still serving version {served}" in warning
    assert "POST /model/reload" in warning


def test_a_service_gone_after_the_top_was_read_leaves_only_the_cannot_connect_error(ui_env) -> None:
    """The top's "Serving version N" is cached for seconds: beside "cannot connect" it would say both."""
    service = backends.inference_stub(MODEL, lambda instances: (200, {"predictions": [PREDICTION]}))
    with predict_page_on(service, ui_env) as app:
        assert any("covertype version 3" in caption for caption in texts(app.caption))
    app.button(key=SUBMIT).click().run()
    [error] = texts(app.error)
    assert "cannot connect" in error
    assert not [caption for caption in texts(app.caption) if caption.startswith("Serving")]
    # The next rerun (e.g. another example picked) reads the service again, not the cached "Serving ...".
    app.run()
    assert not [caption for caption in texts(app.caption) if caption.startswith("Serving")]
    assert any("cannot connect" in message for message in texts(app.error))


def test_an_answer_from_a_newer_version_refreshes_the_top(ui_env) -> None:
    """A swap between the (cached) top and the prediction: the top must not say 3 beside an answer from 4."""
    model = dict(MODEL)

    def swapped_then_predicted(instances: list[object]) -> tuple[int, object]:
        model["version"] = "4"  # the service swapped to version 4 just before this request
        return 200, {"predictions": [PREDICTION], "model_name": "covertype", "model_version": "4", "run_id": "def"}

    with predict_page_on(backends.inference_stub(model, swapped_then_predicted), ui_env) as app:
        assert any("covertype version 3" in caption for caption in texts(app.caption))
        app.button(key=SUBMIT).click().run()
    [answer] = texts(app.success)
    assert "version 4" in answer
    serving = [caption for caption in texts(app.caption) if caption.startswith("Serving")]
    assert len(serving) == 1
    assert "covertype version 4" in serving[0]


def test_status_reads_have_a_short_timeout_and_predict_the_long_one() -> None:
    """GET /model and /health answer from memory: a host that accepts and never answers must hold the page for
    seconds, not for the timeout sized for a 1,000-row predict. Read from the requests as httpx sends them."""
    timeouts: dict[str, float] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        timeouts[f"{request.method} {request.url.path}"] = request.extensions["timeout"]["read"]
        bodies = {"/model": MODEL, "/health": {"registry_state": "ok"}, "/predict": {"predictions": [PREDICTION]}}
        return httpx.Response(200, json=bodies[request.url.path])

    client = InferenceClient("http://inference.test", transport=httpx.MockTransport(answer))
    client.model_info()
    client.health()
    client.predict([EXAMPLES[DEFAULT_EXAMPLE]])
    assert STATUS_TIMEOUT_S <= 5 < PREDICT_TIMEOUT_S
    assert timeouts == {
        "GET /model": STATUS_TIMEOUT_S,
        "GET /health": STATUS_TIMEOUT_S,
        "POST /predict": PREDICT_TIMEOUT_S,
    }


def test_a_health_document_that_cannot_be_read_is_asked_for_once_per_cache_period(ui_env) -> None:
    """Only a warning hangs on /health: a failure read again on every rerun would cost each one a request (or,
    on a hung host, the status timeout)."""
    service = backends.inference_stub(MODEL, lambda instances: (200, {"predictions": [PREDICTION]}))
    health_reads: list[int] = []

    @service.get("/health")
    def broken_health() -> JSONResponse:
        health_reads.append(1)
        return JSONResponse({"detail": "proxy error"}, status_code=502)

    with predict_page_on(service, ui_env) as app:
        app.run()
        app.run()
    assert any("covertype version 3" in caption for caption in texts(app.caption))
    assert not app.error
    assert len(health_reads) == 1


def test_a_long_registry_message_of_health_is_cut_and_says_where_the_whole_of_it_is(ui_env) -> None:
    """MLflow's errors can quote a whole HTML error page: the warning beside the served version stays readable."""
    service = backends.inference_stub(MODEL, lambda instances: (200, {"predictions": [PREDICTION]}))
    message = "version 4 of registered model 'covertype' could not be loaded: " + "<html>proxy page</html> " * 80

    @service.get("/health")
    def health() -> dict[str, object]:
        return {"model_loaded": True, "registry_state": "load_failed", "registry_message": message}

    with predict_page_on(service, ui_env) as app:
        [warning] = texts(app.warning)
        assert warning.startswith("**Inference API**: version 4 of registered model 'covertype' could not be loaded:")
        assert "… (cut: GET /health has it whole)" in warning
        assert 0 < warning.count("proxy page") < 20  # of the 80 sent
        assert "POST /model/reload" in warning  # the hint is still there, after the cut message
