"""POST /predict refuses bad bodies precisely and cheaply: the 422 names the record, the field and the reason.

Through the real app (TestClient): what a client sends byte for byte, and what it
gets back. The cost of a refusal is measured as Python memory (tracemalloc), not
time: the 422 lists at most 100 problems, so it must not build
the others first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from covertype.schema import FEATURE_COLUMNS, Observation
from inference.app import create_app
from inference.schemas import BODY_SHAPES
from tests.conftest import REPO_ROOT
from tests.inference.clients import checked_client
from tests.inference.stores import ServingStore, record_of

JSON = {"content-type": "application/json"}
# The most problems a 422 lists (documented in docs/inference.md and the OpenAPI schema).
MAX_REPORTED_ERRORS = 100
# Python memory a refusal may take: accepting a valid batch of 1,000 records takes ~3 MB.
REFUSAL_MEMORY_BYTES = 10_000_000


def _errors(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def _post_traced(client: TestClient, body: bytes) -> tuple[Any, int]:
    """The answer to ``body`` and the peak of Python memory allocated while it was computed."""
    client.post("/predict", content=body, headers=JSON)  # first request of this body shape: imports, caches
    tracemalloc.start()
    try:
        response = client.post("/predict", content=body, headers=JSON)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


@pytest.fixture
def client_10000(serving_store: ServingStore) -> Iterator[TestClient]:
    """The app with the default PREDICT_MAX_INSTANCES (10,000), to send the largest batches."""
    with checked_client(create_app(serving_store.store.settings(predict_max_instances=10_000))) as test_client:
        yield test_client


def test_a_batch_of_empty_records_is_refused_without_building_all_its_errors(client_10000: TestClient) -> None:
    # 40 KB of JSON, 12 missing fields per record: 120,000 problems, of which the 422 lists 100.
    body = json.dumps({"instances": [{}] * 10_000}).encode()
    response, peak = _post_traced(client_10000, body)
    answer = response.json()
    assert response.status_code == 422
    assert answer["errors_total"] == 120_000
    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert answer["detail"][0] == {"index": 0, "field": FEATURE_COLUMNS[0], "reason": "required field is missing"}
    # Records in order, fields in order: the 100th problem is the 5th field of the 9th record.
    assert answer["detail"][-1] == {"index": 8, "field": FEATURE_COLUMNS[3], "reason": "required field is missing"}
    # Building the 120,000 errors as Python objects took ~115 MB.
    assert peak < REFUSAL_MEMORY_BYTES, f"{peak / 1e6:.1f} MB"


def _count_record_validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on pydantic: each validation of a record on its own (``Observation.model_validate``) adds to the list."""
    calls: list[int] = []
    validate = Observation.model_validate

    def counted(cls: type[Observation], *args: Any, **kwargs: Any) -> Observation:
        calls.append(1)
        return validate.__func__(cls, *args, **kwargs)

    monkeypatch.setattr(Observation, "model_validate", classmethod(counted))
    return calls


def test_a_batch_of_bad_values_is_counted_by_its_one_validation_not_validated_again(
    client_10000: TestClient, shared_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 records of the 12 fields, each with a value out of range: pydantic's one call counts the problems."""
    body = {"instances": [{**record_of(shared_frame, 0), "Elevation": -1}] * 10_000}
    validations = _count_record_validations(monkeypatch)
    answer = client_10000.post("/predict", json=body).json()
    assert answer["errors_total"] == 10_000
    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert [(error["index"], error["field"]) for error in answer["detail"]] == [
        (index, "Elevation") for index in range(MAX_REPORTED_ERRORS)
    ]
    assert answer["detail"][0]["reason"].startswith("-1 is out of range: Elevation must be within 0..")
    # Only the records whose problems are listed are validated again, to describe them (each took ~15 µs).
    assert len(validations) <= MAX_REPORTED_ERRORS


def test_a_bad_record_at_the_end_of_a_batch_is_described_from_pydantics_own_errors(
    client_10000: TestClient, shared_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = record_of(shared_frame, 0)
    body = {"instances": [good] * 9_999 + [{**good, "Slope": 999, "Soil_Type": "C0000"}]}
    validations = _count_record_validations(monkeypatch)
    answer = client_10000.post("/predict", json=body).json()
    assert answer.keys() == {"detail"}  # every problem listed: no errors_total
    assert [(error["index"], error["field"]) for error in answer["detail"]] == [(9_999, "Slope"), (9_999, "Soil_Type")]
    assert answer["detail"][1]["reason"].startswith("unknown soil code 'C0000'")
    assert validations == [], "the 9,999 records before it are not validated again to find it"


def test_a_record_with_thousands_of_unknown_fields_is_refused_without_describing_them_all(
    client: TestClient, shared_frame: pd.DataFrame
) -> None:
    record = {**record_of(shared_frame, 0), **{f"extra_{number}": 0 for number in range(20_000)}}
    response, peak = _post_traced(client, json.dumps(record).encode())
    answer = response.json()
    assert response.status_code == 422
    assert answer["errors_total"] == 20_000
    assert [error["field"] for error in answer["detail"]] == [f"extra_{number}" for number in range(100)]
    assert all(error["index"] == 0 and "unknown field" in error["reason"] for error in answer["detail"])
    # Describing the 20,000 unknown fields took ~21 MB; parsing the 250 KB body ~3 MB.
    assert peak < REFUSAL_MEMORY_BYTES, f"{peak / 1e6:.1f} MB"


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        (b'{"Elevation": "\xff"}', "the body is not valid UTF-8: 'utf-8' codec can't decode byte 0xff"),
        ('{"Elevation": 2596}'.encode("utf-16"), "the body is not valid UTF-8: 'utf-8' codec can't decode byte 0xff"),
        (b'{"Elevation": ' + b"9" * 5000 + b"}", "the body cannot be read as JSON: Exceeds the limit (4300 digits)"),
        (b"[" * 100_000, "the body cannot be read as JSON: arrays or objects nested too deeply"),
    ],
    ids=["not utf-8", "utf-16", "5000-digit number", "nested 100,000 deep"],
)
def test_a_body_json_cannot_read_is_a_422_with_the_cause(client: TestClient, body: bytes, reason_start: str) -> None:
    [error] = _errors(client.post("/predict", content=body, headers=JSON))
    assert (error["index"], error["field"]) == (None, None)
    assert error["reason"].startswith(reason_start), error["reason"]
    assert "sys.set_int_max_str_digits" not in error["reason"], "advice for the server, not the client"
    # Other HTTP errors keep FastAPI's plain {"detail": "..."}.
    assert client.get("/predict").json() == {"detail": "Method Not Allowed"}
    assert client.post("/no-such-route", content=body, headers=JSON).json() == {"detail": "Not Found"}


@pytest.mark.parametrize("body", [b'"2596"', b'"{\\"Elevation\\": 2596}"'], ids=["string", "record as a string"])
def test_a_json_string_body_is_told_the_body_shapes_not_the_content_type(client: TestClient, body: bytes) -> None:
    assert _errors(client.post("/predict", content=body, headers=JSON)) == [
        {"index": 0, "field": None, "reason": f"the body must be {BODY_SHAPES}"}
    ]
    # The same bytes sent as text get the advice to set the header.
    [error] = _errors(client.post("/predict", content=body, headers={"content-type": "text/plain"}))
    assert error["reason"] == "the body arrived as text, not JSON: send it with Content-Type: application/json"


def test_invalid_json_says_where_it_breaks(client: TestClient) -> None:
    body = b'{\n  "Elevation": 2596,\n  "Aspect" 51\n}'
    [error] = _errors(client.post("/predict", content=body, headers=JSON))
    assert error == {
        "index": None,
        "field": None,
        "reason": "the body is not valid JSON: Expecting ':' delimiter at line 3, column 12 (character 34)",
    }


def test_a_utf8_byte_order_mark_is_allowed(client: TestClient, shared_frame: pd.DataFrame) -> None:
    body = b"\xef\xbb\xbf" + json.dumps(record_of(shared_frame, 0)).encode()
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 200, response.text


def test_the_cap_on_reported_errors_and_errors_total_are_documented_and_sent(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/predict"]["post"]
    # The body is still documented as a record or a batch, though the route validates it itself.
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["oneOf"] == [
        {"$ref": "#/components/schemas/Observation"},
        {"$ref": "#/components/schemas/PredictInstances"},
    ]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorResponse"
    }
    response_schema = schema["components"]["schemas"]["ValidationErrorResponse"]
    assert set(response_schema["properties"]) == {"detail", "errors_total"}
    assert response_schema["required"] == ["detail"]
    assert "100" in response_schema["properties"]["errors_total"]["description"]

    # 20 records of 12 missing fields and an unknown one: 260 problems, 100 listed.
    answer = client.post("/predict", json={"instances": [{"x": 1}] * 20}).json()
    assert (len(answer["detail"]), answer["errors_total"]) == (MAX_REPORTED_ERRORS, 260)
    # Under the cap every problem is listed, and errors_total is left out.
    assert client.post("/predict", json={"instances": [{"x": 1}]}).json().keys() == {"detail"}


def test_a_record_with_a_field_named_instances_is_a_record(client: TestClient, shared_frame: pd.DataFrame) -> None:
    record = record_of(shared_frame, 0)
    for value in (1, [record]):
        [error] = _errors(client.post("/predict", json={**record, "instances": value}))
        assert (error["index"], error["field"]) == (0, "instances")
        assert "unknown field (extra fields are rejected)" in error["reason"]
    # A body without any of the 12 features is still a batch with an unknown field.
    assert _errors(client.post("/predict", json={"instances": [record], "model": "x"})) == [
        {"index": None, "field": "model", "reason": 'unknown field: a batch body has only "instances"'}
    ]


def test_repeated_keys_are_refused_naming_the_record_and_the_field(
    client: TestClient, shared_frame: pd.DataFrame
) -> None:
    record = json.dumps(record_of(shared_frame, 0))
    repeated = '{"Elevation": 9999, ' + record[1:]  # the valid value comes last: json.loads would keep it
    assert json.loads(repeated) == json.loads(record)
    reason = "repeated field: given 2 times in this record; a JSON object must name each field once"
    assert _errors(client.post("/predict", content=repeated.encode(), headers=JSON)) == [
        {"index": 0, "field": "Elevation", "reason": reason}
    ]

    batch = '{"instances": [' + ", ".join([record, repeated, '{"Slope": 1, "Slope": 2}']) + "]}"
    errors = _errors(client.post("/predict", content=batch.encode(), headers=JSON))
    assert errors[0] == {"index": 1, "field": "Elevation", "reason": reason}
    assert errors[1] == {"index": 2, "field": "Slope", "reason": reason}
    assert {error["index"] for error in errors[2:]} == {2}  # record 2 lacks 11 fields: listed after

    twice = '{"instances": [' + record + '], "instances": [' + record + "]}"
    assert _errors(client.post("/predict", content=twice.encode(), headers=JSON)) == [
        {
            "index": None,
            "field": "instances",
            "reason": "repeated field: given 2 times in this body; a JSON object must name each field once",
        }
    ]
    assert client.post("/predict", content=record.encode(), headers=JSON).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"\\ud800": 1}', "\\ud800"),
        ('{"instances": [{"\\udc00": 1}]}', "\\udc00"),
        ('{"instances": [], "\\ud83d": 1}', "\\ud83d"),
    ],
    ids=["record", "batch record", "batch wrapper"],
)
def test_a_key_that_is_a_lone_surrogate_is_named_as_an_escape(client: TestClient, body: str, field: str) -> None:
    """Valid JSON, but no UTF-8 text: the 422 must still be encodable (it was a 500)."""
    errors = _errors(client.post("/predict", content=body.encode(), headers=JSON))
    assert field in [error["field"] for error in errors], errors


def test_a_deeply_nested_or_long_value_is_quoted_short_never_a_500(
    client: TestClient, shared_frame: pd.DataFrame
) -> None:
    """A ~2 KB value nested about as deep as ``repr`` can recurse, and a long one: quoted in a few characters.

    Around that depth the body is either refused whole (nested too deeply to parse) or its value is
    quoted; which depends on the stack the parse runs on, so the depths cross the border.
    """
    quoted = 0
    for depth in range(900, 1001, 5):
        record = {**record_of(shared_frame, 0), "Elevation": "NESTED", "Slope": "9" * 3000}
        body = json.dumps(record).replace('"NESTED"', "[" * depth + "]" * depth).encode()
        errors = _errors(client.post("/predict", content=body, headers=JSON))  # 422, not 500
        assert all(len(error["reason"]) < 200 for error in errors), errors
        quoted += any(error["field"] == "Elevation" and error["reason"].startswith("[[[...]]]") for error in errors)
    assert quoted, "no depth reached the quoting"


def test_problems_of_a_batch_wrapper_are_reported_with_those_of_its_records(
    client: TestClient, shared_frame: pd.DataFrame
) -> None:
    good = record_of(shared_frame, 0)
    body = json.dumps({"instances": [good, {**good, "Slope": 999}], "model": "x"}).encode()
    assert [
        (error["index"], error["field"]) for error in _errors(client.post("/predict", content=body, headers=JSON))
    ] == [
        (None, "model"),
        (1, "Slope"),
    ]
    repeated = (
        b'{"instances": ['
        + json.dumps(good).encode()
        + b'], "instances": ['
        + json.dumps({**good, "Aspect": 400}).encode()
        + b"]}"
    )
    assert [
        (error["index"], error["field"]) for error in _errors(client.post("/predict", content=repeated, headers=JSON))
    ] == [
        (None, "instances"),
        (0, "Aspect"),
    ]


# Runs in a fresh process: pydantic's own allocations (Rust) are invisible to tracemalloc, and the peak
# resident size of a process that already ran other tests says nothing about this body.
UNKNOWN_KEYS_BATCH_SCRIPT = """
import resource, sys
from inference.schemas import InvalidRequestError, parse_json_body, validate_predict_body
record = "{" + ",".join(f'"{number:x}":0' for number in range(120)) + "}"
body = parse_json_body(('{"instances":[' + ",".join([record] * 10_000) + "]}").encode())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    validate_predict_body(body, 10_000)
except InvalidRequestError as error:
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(error.response.errors_total, len(error.response.detail), grown_kb)
"""


def test_a_batch_of_records_of_unknown_keys_is_counted_not_built_as_errors() -> None:
    """8 MB, under the 413 limit: 1.32 million problems. pydantic building them all took ~350 MB."""
    done = subprocess.run(
        [sys.executable, "-c", UNKNOWN_KEYS_BATCH_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    total, listed, grown_kb = map(int, done.stdout.split())
    assert (total, listed) == (10_000 * (12 + 120), MAX_REPORTED_ERRORS)
    assert grown_kb < 50_000, f"peak resident size grew {grown_kb / 1000:.0f} MB"
