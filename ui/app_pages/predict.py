"""Predict one observation: every field of the schema, prefilled with a real example."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from covertype.schema import (
    COVER_TYPE_NAMES,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    SOIL_CODES,
    SOIL_COLUMN,
    SOIL_DESCRIPTIONS,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
    WILDERNESS_DESCRIPTIONS,
)
from ui import services
from ui.clients.errors import ModelUnavailable, NoModelYet, ServiceError, ServiceUnreachable
from ui.clients.inference import ModelInfo, PredictionResult
from ui.examples import DEFAULT_EXAMPLE, EXAMPLES
from ui.presentation import probability_frame

KEY = "predict_"  # prefix of this page's session-state keys
EXAMPLE_KEY = f"{KEY}example"  # the picker (a widget)
CHOICE_KEY = f"{KEY}example_choice"  # the picker's value, kept
ANSWER_KEY = f"{KEY}answer"  # (record sent, result) of the last prediction
# Failures of a prediction that make the top of the page stale: the service has no model, or is out of reach.
STALE_TOP = (NoModelYet, ModelUnavailable, ServiceUnreachable)


def field_key(column: str) -> str:
    """A form field's widget key: Streamlit deletes its value whenever the page is not drawn."""
    return f"{KEY}field_{column}"


def value_key(column: str) -> str:
    """Where a field's value is kept: not a widget key, so it outlives a visit to another page."""
    return f"{KEY}value_{column}"


def _keep_values(values: Mapping[str, int | str]) -> None:
    for column, value in values.items():
        st.session_state[value_key(column)] = value


def _pick_example() -> None:
    """Callback of the example picker: keep the choice and its real row as the form's values.

    The last answer is dropped: it was for another record, and the form no longer shows that one.
    """
    choice = st.session_state[EXAMPLE_KEY]
    st.session_state[CHOICE_KEY] = choice
    _keep_values(EXAMPLES[choice])
    st.session_state.pop(ANSWER_KEY, None)


def _keep_form() -> None:
    """Callback of the submit button: keep the values submitted, which the answer will be for."""
    _keep_values({column: st.session_state[field_key(column)] for column in FEATURE_COLUMNS})


def _restore_widgets() -> None:
    """Give the picker and the fields their kept values (the default example on a first visit).

    Streamlit's pattern for widgets in a multipage app: widget keys are deleted
    while another page is shown, so without this a return to the page would show
    the default example beside the answer for the record last sent.
    """
    if CHOICE_KEY not in st.session_state:
        st.session_state[CHOICE_KEY] = DEFAULT_EXAMPLE
        _keep_values(EXAMPLES[DEFAULT_EXAMPLE])
    st.session_state[EXAMPLE_KEY] = st.session_state[CHOICE_KEY]
    for column in FEATURE_COLUMNS:
        st.session_state[field_key(column)] = st.session_state[value_key(column)]


def _serving_model(base_url: str, slot: DeltaGenerator) -> ModelInfo | None:
    """Say in ``slot`` which model answers, and what /health says is wrong meanwhile; None (and the
    service's message there) when no model can answer.

    The message goes into a slot so that a failed prediction can take it back
    and show the newer one next to the form instead: the same text twice on one
    page reads as two problems.
    """
    try:
        info = services.model_info(base_url)
    except ServiceError as error:
        with slot:
            services.show_error(error)
        return None
    with slot.container():
        st.caption(f"Serving **{info.name} version {info.version}** (alias `{info.alias}`, run `{info.run_id}`)")
        _registry_problem(base_url)
    return info


def _registry_problem(base_url: str) -> None:
    """A warning when /health says the registry's last check did not end ok while a model is served.

    A promoted version that failed to load leaves the service answering with
    the one before, and only /health says so. Read for this warning alone: when
    it cannot be read (e.g. a proxy that only passes /model and /predict), GET
    /model has already shown that the service answers, and nothing is added.
    """
    health = services.inference_health(base_url)
    problem = health.registry_problem if health is not None else None
    if problem is not None:
        services.show_error(problem, warning=True)


def _refresh_if_swapped(base_url: str, slot: DeltaGenerator, shown: ModelInfo | None, result: PredictionResult) -> None:
    """Read the model again when the answer came from another version than the one shown at the top.

    The top is cached for seconds: after a swap it would say version N beside an
    answer from N+1, which reads as if the answer were wrong.
    """
    if result.model_version is None or (shown is not None and shown.version == result.model_version):
        return  # the same version, or an answer that does not say (nothing to compare)
    services.model_info.clear(base_url)
    services.inference_health.clear(base_url)
    _serving_model(base_url, slot)


def _form() -> dict[str, int | str] | None:
    """Render the form; the record when it was submitted, else None."""
    with st.form(f"{KEY}form"):
        columns = st.columns(2)
        for index, column in enumerate(NUMERIC_COLUMNS):
            columns[index % 2].number_input(
                f"{column.description} ({column.unit})",
                min_value=column.minimum,
                max_value=column.maximum,
                step=1,
                key=field_key(column.name),
                help=f"{column.name}: an integer in {column.minimum}..{column.maximum}",
            )
        st.selectbox(
            "Wilderness area",
            WILDERNESS_AREAS,
            key=field_key(WILDERNESS_COLUMN),
            format_func=lambda name: f"{WILDERNESS_DESCRIPTIONS[name]} ({name})",
        )
        st.selectbox(
            "Soil type (USFS ELU code)",
            SOIL_CODES,
            key=field_key(SOIL_COLUMN),
            format_func=lambda code: f"{code}: {SOIL_DESCRIPTIONS[code]}",
        )
        submitted = st.form_submit_button("Predict the cover type", type="primary", on_click=_keep_form)
    if not submitted:
        return None
    record: dict[str, int | str] = {
        column.name: int(st.session_state[field_key(column.name)]) for column in NUMERIC_COLUMNS
    }
    record[WILDERNESS_COLUMN] = st.session_state[field_key(WILDERNESS_COLUMN)]
    record[SOIL_COLUMN] = st.session_state[field_key(SOIL_COLUMN)]
    return record


def _show_result(record: dict[str, int | str], result: PredictionResult) -> None:
    prediction = result.predictions[0]
    st.success(
        f"Predicted cover type: **{prediction.cover_type_name}** (class {prediction.cover_type}), "
        f"answered by model **{result.model_name} version {result.model_version}**"
    )
    st.markdown("**Probability of each cover type**")
    frame = probability_frame(prediction.probabilities)
    st.bar_chart(frame, x="cover type", y="probability", horizontal=True, sort=False)
    with st.expander("Request sent to POST /predict"):
        st.json({"instances": [record]})


def render() -> None:
    st.title("Predict one observation")
    base_url = services.url(services.settings().inference_url)
    model_slot = st.empty()
    shown = _serving_model(base_url, model_slot)
    _restore_widgets()
    st.selectbox(
        "Prefill with a real observation whose cover type is",
        list(EXAMPLES),
        key=EXAMPLE_KEY,
        format_func=lambda cover_type: COVER_TYPE_NAMES[cover_type],
        on_change=_pick_example,
    )
    left, right = st.columns([3, 2], gap="large")
    with left:
        record = _form()
    with right:
        if record is not None:
            try:
                result = services.inference_client(base_url).predict([record])
            except ServiceError as error:
                st.session_state.pop(ANSWER_KEY, None)
                if shown is None or isinstance(error, STALE_TOP):
                    # This newer message replaces the one at the top (or a "Serving ..." read before the model
                    # went, or before the service went out of reach), and the next rerun reads the service again
                    # instead of showing the cached "Serving ..." with no error.
                    model_slot.empty()
                    services.model_info.clear(base_url)
                    services.inference_health.clear(base_url)
                services.show_error(error)
            else:
                st.session_state[ANSWER_KEY] = (record, result)
                _refresh_if_swapped(base_url, model_slot, shown, result)
        answer = st.session_state.get(ANSWER_KEY)
        if answer is not None:
            _show_result(*answer)
        elif record is None:
            st.info("Fill in the observation (or pick a real one above) and press **Predict the cover type**.")


render()
