"""Predict one observation: every field of the schema, prefilled with a real example."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from covertype.schema import (
    COVER_TYPE_NAMES,
    NUMERIC_COLUMNS,
    SOIL_CODES,
    SOIL_COLUMN,
    SOIL_DESCRIPTIONS,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
    WILDERNESS_DESCRIPTIONS,
)
from ui import services
from ui.clients.errors import NoModelYet, ServiceError
from ui.clients.inference import PredictionResult
from ui.examples import DEFAULT_EXAMPLE, EXAMPLES
from ui.presentation import probability_frame

KEY = "predict_"  # prefix of this page's session-state keys


def field_key(column: str) -> str:
    return f"{KEY}field_{column}"


def _load_example() -> None:
    """Callback of the example picker: copy the chosen real row into the form's fields."""
    example = EXAMPLES[st.session_state[f"{KEY}example"]]
    for column, value in example.items():
        st.session_state[field_key(column)] = value


def _init_fields() -> None:
    if f"{KEY}example" not in st.session_state:
        st.session_state[f"{KEY}example"] = DEFAULT_EXAMPLE
    if field_key(NUMERIC_COLUMNS[0].name) not in st.session_state:
        _load_example()


def _serving_model(base_url: str, slot: DeltaGenerator) -> bool:
    """Say in ``slot`` which model answers; False (and the service's message there) when none can.

    The message goes into a slot so that a failed prediction can take it back
    and show the newer one next to the form instead: the same text twice on one
    page reads as two problems.
    """
    try:
        info = services.model_info(base_url)
    except ServiceError as error:
        with slot:
            services.show_error(error)
        return False
    slot.caption(f"Serving **{info.name} version {info.version}** (alias `{info.alias}`, run `{info.run_id}`)")
    return True


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
        submitted = st.form_submit_button("Predict the cover type", type="primary")
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
    model_ok = _serving_model(base_url, model_slot)
    _init_fields()
    st.selectbox(
        "Prefill with a real observation whose cover type is",
        list(EXAMPLES),
        key=f"{KEY}example",
        format_func=lambda cover_type: COVER_TYPE_NAMES[cover_type],
        on_change=_load_example,
    )
    left, right = st.columns([3, 2], gap="large")
    with left:
        record = _form()
    with right:
        if record is not None:
            try:
                result = services.inference_client(base_url).predict([record])
            except ServiceError as error:
                st.session_state.pop(f"{KEY}answer", None)
                if not model_ok or isinstance(error, NoModelYet):
                    # This newer message replaces the one at the top (or a "Serving ..." read before the model went).
                    model_slot.empty()
                services.show_error(error)
            else:
                st.session_state[f"{KEY}answer"] = (record, result)
        answer = st.session_state.get(f"{KEY}answer")
        if answer is not None:
            _show_result(*answer)
        elif record is None:
            st.info("Fill in the observation (or pick a real one above) and press **Predict the cover type**.")


render()
