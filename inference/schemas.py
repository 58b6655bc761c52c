"""Request and response shapes of the API, and 422 errors a person can act on.

A request is one record or ``{"instances": [...]}``; both are built on the
shared ``covertype.schema.Observation``, so the service accepts exactly what
the data API's raw format defines (numbers as numbers, the wilderness area by
name, the soil by its ELU code) and refuses unknown fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from covertype.schema import (
    COVER_TYPE_NAMES,
    EXAMPLE_OBSERVATION,
    FEATURE_COLUMNS,
    NUMERIC_BY_NAME,
    SOIL_CODES,
    SOIL_COLUMN,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
    Observation,
)

RECORD_TAG = "record"
INSTANCES_TAG = "instances"

# Another real row (Cover_Type 2, Lodgepole Pine).
EXAMPLE_RECORD_2: dict[str, int | str] = {
    "Elevation": 2785,
    "Aspect": 155,
    "Slope": 18,
    "Horizontal_Distance_To_Hydrology": 242,
    "Vertical_Distance_To_Hydrology": 118,
    "Horizontal_Distance_To_Roadways": 3090,
    "Hillshade_9am": 238,
    "Hillshade_Noon": 238,
    "Hillshade_3pm": 122,
    "Horizontal_Distance_To_Fire_Points": 6211,
    "Wilderness_Area": "Rawah",
    "Soil_Type": "C7746",
}
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "one record": {"summary": "One record (a real row of the data)", "value": EXAMPLE_OBSERVATION},
    "instances": {
        "summary": "Several records",
        "value": {"instances": [EXAMPLE_OBSERVATION, EXAMPLE_RECORD_2]},
    },
}


def _request_kind(value: Any) -> str:
    """``{"instances": ...}`` is a batch; anything else is validated as one record."""
    return INSTANCES_TAG if isinstance(value, dict) and INSTANCES_TAG in value else RECORD_TAG


def build_predict_request(max_instances: int) -> Any:
    """The request body type, with the configured limit on ``instances`` (checked before records are validated)."""
    instances_model = create_model(
        "PredictInstances",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Several records, answered in order.",
        instances=(
            list[Observation],
            Field(min_length=1, max_length=max_instances, description=f"1..{max_instances} records"),
        ),
    )
    return Annotated[
        Annotated[Observation, Tag(RECORD_TAG)] | Annotated[instances_model, Tag(INSTANCES_TAG)],
        Discriminator(_request_kind),
    ]


def request_records(body: Any) -> Sequence[Observation]:
    """The validated records of a request body, in order."""
    return [body] if isinstance(body, Observation) else body.instances


class RecordPrediction(BaseModel):
    """The answer for one record."""

    cover_type: int = Field(ge=1, le=7, description="Predicted cover type 1..7")
    cover_type_name: str = Field(description="Name of the predicted cover type")
    probabilities: dict[str, float] = Field(description="Probability of each cover type, keyed by its name")


class PredictResponse(BaseModel):
    """Predictions in request order, and which model version made them."""

    predictions: list[RecordPrediction]
    model_name: str
    model_version: str
    model_alias: str
    run_id: str | None


class ErrorItem(BaseModel):
    """One reason a request was refused."""

    index: int | None = Field(description="Position of the record in the request (0 for a single record)")
    field: str | None = Field(description="The field at fault, or null when the whole body is")
    reason: str


class ValidationErrorResponse(BaseModel):
    """HTTP 422: every problem found, each naming the record and field."""

    detail: list[ErrorItem]


class UnavailableResponse(BaseModel):
    """HTTP 503: no model is loaded, and what is missing in the registry."""

    detail: str
    registry_state: str


class BodyTooLargeResponse(BaseModel):
    """HTTP 413: the body is larger than the limit derived from PREDICT_MAX_INSTANCES; it was not read."""

    detail: str


class PredictionFailedResponse(BaseModel):
    """HTTP 500: the model failed on valid records; ``detail`` names its version and the error."""

    detail: str


class HealthResponse(BaseModel):
    """Liveness, with the state of the model and of the registry."""

    status: str = Field(description="'ok' while the process serves requests")
    model_loaded: bool
    model_version: str | None
    registry_state: str
    registry_message: str
    registry_checked_at: datetime | None
    registry_last_success_at: datetime | None


class ModelInfo(BaseModel):
    """The model version being served."""

    name: str
    alias: str
    version: str
    run_id: str | None
    loaded_at: datetime
    load_seconds: float
    artifact_mb: float
    classes: dict[int, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    tracking_uri: str


class ReloadResponse(BaseModel):
    """The outcome of a forced check of the alias."""

    swapped: bool
    model_version: str | None
    registry_state: str
    registry_message: str


_FEATURES = ", ".join(FEATURE_COLUMNS)


def _field_reason(field: str | None, error: dict[str, Any]) -> str:  # noqa: PLR0911 - one return per error kind
    """A reason in the API's words for one pydantic error of a record field."""
    kind = error.get("type", "")
    value = error.get("input")
    column = NUMERIC_BY_NAME.get(field or "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field (extra fields are rejected); a record has exactly these fields: {_FEATURES}"
    if field == SOIL_COLUMN and kind in {"literal_error", "string_type"}:
        return f"unknown soil code {value!r}; expected one of {', '.join(SOIL_CODES)}"
    if field == WILDERNESS_COLUMN and kind in {"literal_error", "string_type"}:
        return f"unknown wilderness area {value!r}; expected one of {', '.join(WILDERNESS_AREAS)}"
    if column is not None and kind in {"greater_than_equal", "less_than_equal"}:
        return f"{value!r} is out of range: {field} must be within {column.minimum}..{column.maximum} {column.unit}"
    if kind.startswith("int_"):
        return f"{value!r} is not an integer"
    return str(error.get("msg", kind))


BODY_SHAPES = 'one record (a JSON object of the 12 features) or {"instances": [...]}'


def describe_error(error: dict[str, Any], max_instances: int | None = None) -> ErrorItem:  # noqa: PLR0911
    """Turn one FastAPI/pydantic error into (record index, field, reason).

    Locations look like ``("body", "record", field)`` for one record and
    ``("body", "instances", "instances", index, field)`` for a batch (the
    first "record"/"instances" is the union's tag).
    """
    location = list(error.get("loc", ()))
    if location and location[0] in {"body", "query", "path", "header"}:
        location = location[1:]
    kind = error.get("type", "")
    if kind == "json_invalid":  # located at ("body", character position)
        detail = (error.get("ctx") or {}).get("error", "")
        return ErrorItem(index=None, field=None, reason=f"the body is not valid JSON: {detail}")
    if not location:
        return ErrorItem(index=None, field=None, reason=_body_reason(error, str(error.get("msg", kind))))
    if location[0] == RECORD_TAG:
        rest = location[1:]
        if not rest:
            return ErrorItem(index=0, field=None, reason=_body_reason(error, f"the body must be {BODY_SHAPES}"))
        return ErrorItem(index=0, field=str(rest[0]), reason=_field_reason(str(rest[0]), error))
    if location[0] == INSTANCES_TAG:
        rest = location[1:]
        if rest and rest[0] == INSTANCES_TAG:
            rest = rest[1:]
            if not rest:
                return ErrorItem(index=None, field=INSTANCES_TAG, reason=_instances_reason(error, max_instances))
            index = int(rest[0])
            if len(rest) == 1:
                return ErrorItem(index=index, field=None, reason="a record must be a JSON object of the 12 features")
            return ErrorItem(index=index, field=str(rest[1]), reason=_field_reason(str(rest[1]), error))
        field = str(rest[0]) if rest else None
        if kind == "extra_forbidden":
            return ErrorItem(index=None, field=field, reason='unknown field: a batch body has only "instances"')
        return ErrorItem(index=None, field=field, reason=str(error.get("msg", kind)))
    field = ".".join(str(part) for part in location)
    return ErrorItem(index=None, field=field, reason=str(error.get("msg", kind)))


def _body_reason(error: dict[str, Any], otherwise: str) -> str:
    """Why the body as a whole is not a record or a batch; ``otherwise`` when neither case below applies."""
    if error.get("type") == "missing":  # no body, or JSON null
        return f"the body is empty: send {BODY_SHAPES}"
    if isinstance(error.get("input"), str | bytes):  # e.g. curl -d without a JSON content type
        return "the body arrived as text, not JSON: send it with Content-Type: application/json"
    return otherwise


def _instances_reason(error: dict[str, Any], max_instances: int | None) -> str:
    kind = error.get("type", "")
    context = error.get("ctx") or {}
    if kind == "too_long":
        limit = context.get("max_length", max_instances)
        return f"too many instances: {context.get('actual_length', 'more')} sent, at most {limit} per request"
    if kind == "too_short":
        return "instances is empty: send at least one record"
    if kind == "list_type":
        return "instances must be a JSON array of records"
    return str(error.get("msg", kind))


def class_names(labels: Sequence[int]) -> list[str]:
    """Names of the model's classes, in ``classes_`` order."""
    return [COVER_TYPE_NAMES.get(label, str(label)) for label in labels]
