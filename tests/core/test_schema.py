"""The schema is the contract of the whole stack: its lists must agree with each other and with UCI."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from covertype.schema import (
    COVER_TYPE_NAMES,
    EXAMPLE_OBSERVATION,
    FEATURE_COLUMNS,
    RAW_COLUMNS,
    SOIL_CODES,
    WILDERNESS_AREAS,
    Observation,
    SoilCode,
    WildernessArea,
)

EXAMPLE = EXAMPLE_OBSERVATION


def test_columns_are_in_raw_order() -> None:
    assert len(RAW_COLUMNS) == 13
    assert RAW_COLUMNS[:12] == FEATURE_COLUMNS
    assert list(Observation.model_fields) == list(FEATURE_COLUMNS)


def test_category_literals_match_the_lists() -> None:
    assert typing.get_args(SoilCode) == SOIL_CODES
    assert typing.get_args(WildernessArea) == WILDERNESS_AREAS
    assert len(SOIL_CODES) == 40
    assert len(set(SOIL_CODES)) == 40
    assert list(COVER_TYPE_NAMES) == list(range(1, 8))


def test_soil_codes_match_the_uci_description(covertype_csv: Path) -> None:
    info = (covertype_csv.parent / "covtype.info").read_text(encoding="latin-1")
    for index, code in enumerate(SOIL_CODES, start=1):
        assert f"{index}\t   {code[1:]}" in info, code


def test_observation_accepts_a_real_row() -> None:
    assert Observation.model_validate(EXAMPLE).Soil_Type == "C7745"


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("Soil_Type", "C9999", "Input should be 'C2702'"),
        ("Wilderness_Area", "Comanche", "Input should be 'Rawah'"),
        ("Elevation", 9000, "less than or equal to 4500"),
        ("Slope", -1, "greater than or equal to 0"),
        ("Aspect", "north", "valid integer"),
        ("Hillshade_3pm", True, "got a boolean"),
    ],
)
def test_observation_names_field_and_reason(field: str, value: object, message_part: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Observation.model_validate({**EXAMPLE, field: value})
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert message_part in error["msg"]


def test_observation_refuses_missing_and_unknown_fields() -> None:
    missing = dict(EXAMPLE)
    del missing["Slope"]
    with pytest.raises(ValidationError, match="Slope"):
        Observation.model_validate(missing)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Observation.model_validate({**EXAMPLE, "Colour": "green"})
