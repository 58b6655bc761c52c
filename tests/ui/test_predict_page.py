"""The Predict page against the real inference app (local model), an empty registry, and a closed port."""

from __future__ import annotations

import httpx
import pytest

from covertype.schema import (
    COVER_TYPE_NAMES,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    SOIL_CODES,
    WILDERNESS_AREAS,
    WILDERNESS_DESCRIPTIONS,
)
from tests.ui.apptest import open_page, texts
from tests.ui.backends import expected_cover_type
from ui.examples import DEFAULT_EXAMPLE, EXAMPLES


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
    app.button(key="FormSubmitter:predict_form-Predict the cover type").click().run()
    assert not app.error, texts(app.error)
    record = {**EXAMPLES[3], "Elevation": 2600}
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
    app.button(key="FormSubmitter:predict_form-Predict the cover type").click().run()
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
    app.button(key="FormSubmitter:predict_form-Predict the cover type").click().run()
    assert not app.exception
    assert not app.success
    assert texts(app.error) == [error]  # the failed prediction's message replaces the first, once on the page
