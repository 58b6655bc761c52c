"""POST /predict against a real registered model: same answers as the model itself, and precise 422s."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from covertype.schema import COVER_TYPE_NAMES, FEATURE_COLUMNS, SOIL_CODES, WILDERNESS_AREAS
from tests.inference.stores import ServingStore, record_of


def expected_probabilities(serving_store: ServingStore, frame: pd.DataFrame) -> np.ndarray:
    return serving_store.model.predict_proba(frame[list(FEATURE_COLUMNS)])


def test_single_records_match_the_models_own_output(
    client: TestClient, serving_store: ServingStore, shared_frame: pd.DataFrame
) -> None:
    positions = list(range(0, len(shared_frame), len(shared_frame) // 25))
    rows = shared_frame.iloc[positions]
    expected = expected_probabilities(serving_store, rows)
    predicted = serving_store.model.predict(rows[list(FEATURE_COLUMNS)])
    names = [COVER_TYPE_NAMES[label] for label in serving_store.model.classes_]
    for number, position in enumerate(positions):
        response = client.post("/predict", json=record_of(shared_frame, position))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "covertype"
        assert body["model_version"] == serving_store.version.version
        assert body["run_id"] == serving_store.version.run_id
        [answer] = body["predictions"]
        assert answer["cover_type"] == predicted[number]
        assert answer["cover_type_name"] == COVER_TYPE_NAMES[int(predicted[number])]
        assert list(answer["probabilities"]) == names
        assert np.allclose(list(answer["probabilities"].values()), expected[number])


def test_a_batch_matches_the_models_own_output_in_order(
    client: TestClient, serving_store: ServingStore, shared_frame: pd.DataFrame
) -> None:
    rows = shared_frame.sample(50, random_state=7)
    positions = [shared_frame.index.get_loc(label) for label in rows.index]
    response = client.post("/predict", json={"instances": [record_of(shared_frame, p) for p in positions]})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == 50
    got = np.array([list(answer["probabilities"].values()) for answer in answers])
    assert np.allclose(got, expected_probabilities(serving_store, rows))
    assert [answer["cover_type"] for answer in answers] == serving_store.model.predict(
        rows[list(FEATURE_COLUMNS)]
    ).tolist()
    # Predictions of a trained model on its own training distribution are not all one class.
    assert len({answer["cover_type"] for answer in answers}) > 1


def test_the_openapi_example_bodies_are_accepted(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"one record", "instances"}
    for example in examples.values():
        response = client.post("/predict", json=example["value"])
        assert response.status_code == 200, response.text
    assert "422" in operation["responses"]
    assert "503" in operation["responses"]


def _errors(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field", "reason_parts"),
    [
        ({"Soil_Type": "C9999"}, "Soil_Type", ["unknown soil code 'C9999'", SOIL_CODES[0], SOIL_CODES[-1]]),
        ({"Wilderness_Area": "Comanche"}, "Wilderness_Area", ["unknown wilderness area 'Comanche'", *WILDERNESS_AREAS]),
        ({"Elevation": 9000}, "Elevation", ["9000", "out of range", "0..4500"]),
        ({"Vertical_Distance_To_Hydrology": -2001}, "Vertical_Distance_To_Hydrology", ["out of range", "-2000..2000"]),
        ({"Hillshade_9am": 256}, "Hillshade_9am", ["out of range", "0..255"]),
        ({"Slope": "steep"}, "Slope", ["'steep'", "not an integer"]),
        ({"Aspect": 12.5}, "Aspect", ["12.5", "not an integer"]),
        ({"Soil_Type": 7745}, "Soil_Type", ["unknown soil code 7745"]),
        ({"Elevation_m": 2596}, "Elevation_m", ["unknown field", "extra fields are rejected"]),
    ],
)
def test_an_invalid_single_record_names_index_field_and_reason(
    client: TestClient, shared_frame: pd.DataFrame, change: dict[str, Any], field: str, reason_parts: list[str]
) -> None:
    record = {**record_of(shared_frame, 0), **change}
    [error] = _errors(client.post("/predict", json=record))
    assert error["index"] == 0
    assert error["field"] == field
    for part in reason_parts:
        assert part in error["reason"]


def test_a_missing_field_is_named(client: TestClient, shared_frame: pd.DataFrame) -> None:
    record = record_of(shared_frame, 0)
    del record["Hillshade_3pm"]
    assert _errors(client.post("/predict", json=record)) == [
        {"index": 0, "field": "Hillshade_3pm", "reason": "required field is missing"}
    ]


def test_errors_in_a_batch_name_each_records_index(client: TestClient, shared_frame: pd.DataFrame) -> None:
    good = record_of(shared_frame, 0)
    instances = [good, {**good, "Soil_Type": "C0000"}, good, {**good, "Slope": 91, "extra": 1}]
    errors = _errors(client.post("/predict", json={"instances": instances}))
    assert {(error["index"], error["field"]) for error in errors} == {(1, "Soil_Type"), (3, "Slope"), (3, "extra")}


def test_too_many_instances_are_refused_with_the_limit(client: TestClient, shared_frame: pd.DataFrame) -> None:
    # The client fixture configures PREDICT_MAX_INSTANCES=50.
    instances = [record_of(shared_frame, 0)] * 51
    [error] = _errors(client.post("/predict", json={"instances": instances}))
    assert error["index"] is None
    assert error["field"] == "instances"
    assert "too many instances" in error["reason"]
    assert "at most 50" in error["reason"]
    assert client.post("/predict", json={"instances": instances[:50]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        ({"instances": []}, "instances", "at least one record"),
        ({"instances": "all of them"}, "instances", "JSON array"),
        ({"instances": [1]}, None, "JSON object"),
        ({"instances": [], "model": "x"}, "model", 'only "instances"'),
        ([1, 2], None, "one record"),
    ],
)
def test_malformed_bodies_are_explained(client: TestClient, body: Any, field: str | None, reason_part: str) -> None:
    errors = _errors(client.post("/predict", json=body))
    assert any(error["field"] == field and reason_part in error["reason"] for error in errors), errors


def test_a_body_that_is_not_json_is_a_422(client: TestClient) -> None:
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    [error] = _errors(response)
    assert error["field"] is None
    assert "not valid JSON" in error["reason"]


@pytest.mark.parametrize(
    ("send", "reason_part"),
    [
        ({}, "the body is empty: send one record"),
        ({"content": b"null", "headers": {"content-type": "application/json"}}, "the body is empty"),
        # curl -d '{...}' without -H: the record arrives form-encoded.
        ({"data": {"Elevation": "2596"}}, "send it with Content-Type: application/json"),
    ],
)
def test_an_empty_body_or_one_sent_as_text_says_so(client: TestClient, send: dict[str, Any], reason_part: str) -> None:
    [error] = _errors(client.post("/predict", **send))
    assert reason_part in error["reason"]


def test_integers_sent_as_strings_like_the_data_api_sends_them_are_accepted(
    client: TestClient, shared_frame: pd.DataFrame
) -> None:
    record = record_of(shared_frame, 0)
    as_numbers = client.post("/predict", json=record).json()["predictions"]
    as_strings = client.post("/predict", json={key: str(value) for key, value in record.items()}).json()
    assert as_strings["predictions"] == as_numbers
    [error] = _errors(client.post("/predict", json={**record, "Elevation": "2596.5"}))
    assert (error["field"], error["reason"]) == ("Elevation", "'2596.5' is not an integer")
