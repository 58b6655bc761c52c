"""The Predict page against the real inference app (local model), an empty registry, and a closed port."""

from __future__ import annotations

import httpx
import pytest
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
from ui.examples import DEFAULT_EXAMPLE, EXAMPLES

SUBMIT = "FormSubmitter:predict_form-Predict the cover type"
MODEL = {"name": "covertype", "version": "3", "alias": "production", "run_id": "abc", "metrics": {"macro_f1": 0.79}}
PREDICTION = {"cover_type": 2, "cover_type_name": "Lodgepole Pine", "probabilities": {"Lodgepole Pine": 1.0}}


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
    assert "production alias" in warning
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
    with serve(backends.inference_stub(MODEL, lambda instances: (200, answer))) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("predict")
        app.button(key=SUBMIT).click().run()
    assert not app.exception, [item.value for item in app.exception]
    assert not app.success
    [error] = texts(app.error)
    assert error.startswith("**Inference API**: POST /predict ")
    assert problem in error
