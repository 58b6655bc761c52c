"""Request and response shapes of the API, and 422 errors a person can act on.

A request is one record or ``{"instances": [...]}``; both are built on the
shared ``covertype.schema.Observation``, so the service accepts exactly what
the data API's raw format defines (numbers as numbers, the wilderness area by
name, the soil by its ELU code) and refuses unknown fields.

The body is read in three steps, each with its own errors: ``parse_json_body``
(JSON that is valid UTF-8, with no repeated keys), the shape (a record, or a
batch of at most ``PREDICT_MAX_INSTANCES`` records), then the records. A refusal
lists at most ``MAX_REPORTED_ERRORS`` problems and counts the others without
describing them, so that a small body with many problems costs little to refuse.
"""

from __future__ import annotations

import json
import reprlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import chain, islice
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException

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
# The most problems one 422 describes; the others are only counted (``errors_total``).
MAX_REPORTED_ERRORS = 100

_FEATURE_SET = frozenset(FEATURE_COLUMNS)
_FEATURES = ", ".join(FEATURE_COLUMNS)
BODY_SHAPES = 'one record (a JSON object of the 12 features) or {"instances": [...]}'

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


class ErrorItem(BaseModel):
    """One reason a request was refused."""

    index: int | None = Field(description="Position of the record in the request (0 for a single record)")
    field: str | None = Field(description="The field at fault, or null when the whole body is")
    reason: str

    @field_validator("field", "reason")
    @classmethod
    def _encodable(cls, text: str | None) -> str | None:
        """A key sent as a lone surrogate escape (``"\\ud800"``) is valid JSON but no UTF-8: quoted as an escape."""
        return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


class ValidationErrorResponse(BaseModel):
    """HTTP 422: the problems found, each naming the record and field; at most 100 of them are listed."""

    detail: list[ErrorItem] = Field(
        description=f"The first {MAX_REPORTED_ERRORS} problems: a batch's wrapper first, then the records in order"
    )
    errors_total: int | None = Field(
        default=None,
        exclude_if=lambda total: total is None,
        description=f"How many problems were found in all; present only when there are more than the "
        f"{MAX_REPORTED_ERRORS} listed in detail",
    )


class InvalidRequestError(HTTPException):
    """A refused request: HTTP 422 with the first ``MAX_REPORTED_ERRORS`` problems and how many there are.

    An ``HTTPException`` because it is also raised while FastAPI reads the body
    (``parse_json_body``): FastAPI passes those on unchanged, and turns any other
    error there into a 400 whose detail names neither the field nor the reason.
    """

    def __init__(self, problems: Iterable[ErrorItem], total: int | None = None) -> None:
        # Only the reported problems are built: ``problems`` may be a lazy iterator over a whole batch.
        errors = list(islice(problems, MAX_REPORTED_ERRORS))
        self.response = ValidationErrorResponse(
            detail=errors, errors_total=total if total is not None and total > len(errors) else None
        )
        super().__init__(status_code=422, detail=self.response.model_dump()["detail"])


def _body_problem(reason: str) -> InvalidRequestError:
    """A refusal of the body as a whole (no record, no field)."""
    return InvalidRequestError([ErrorItem(index=None, field=None, reason=reason)])


class RepeatedKeys(dict[str, Any]):
    """A JSON object that names a key more than once; the validation of its record refuses it.

    Kept as an object (the last value of each key, as ``json.loads`` would) rather than
    refused while parsing, so that the refusal can name the record's index and the rest
    of the request's problems with it. The keys are counted only when asked: a body of
    a million such objects is refused (too many instances) without counting any.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    @property
    def repeated(self) -> dict[str, int]:
        """Each repeated key and how many times it was given."""
        return {key: count for key, count in Counter(key for key, _ in self._pairs).items() if count > 1}


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of ``json.loads``: a dict, or ``RepeatedKeys`` when a key appears twice."""
    result = dict(pairs)
    return result if len(result) == len(pairs) else RepeatedKeys(pairs)


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a body sent as JSON; ``InvalidRequestError`` (422) saying why and where it is not JSON.

    Replaces FastAPI's ``json.loads``, which takes the last of repeated keys silently,
    reports no line or column, and leaves a body that is not UTF-8 (or a number of more
    than 4,300 digits, Python's limit) to a 400 that does not say what is wrong.
    An object with a repeated key costs a second dict; its keys are counted only once the body is refused.
    """
    try:
        # Decoded first: ``json.loads`` would also take UTF-16 and UTF-32 bytes. A UTF-8 BOM is allowed.
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_object_from_pairs)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno} (character {error.pos})"
        raise _body_problem(f"the body is not valid JSON: {error.msg} at {where}") from error
    except UnicodeDecodeError as error:
        raise _body_problem(f"the body is not valid UTF-8: {error}") from error
    except ValueError as error:  # int() refusing a number of more than 4,300 digits
        # Python's message ends in advice for the server ("use sys.set_int_max_str_digits()"): left out.
        raise _body_problem(f"the body cannot be read as JSON: {str(error).split(';')[0]}") from error
    except RecursionError as error:  # json.loads recurses once per nested array or object
        raise _body_problem("the body cannot be read as JSON: arrays or objects nested too deeply") from error


def is_batch(body: dict[str, Any]) -> bool:
    """Whether a JSON object is ``{"instances": [...]}`` rather than one record.

    ``instances`` next to any of the 12 features is a record with an unknown field: it
    would otherwise be read as a batch whose 12 real features are all unknown fields.
    """
    return INSTANCES_TAG in body and (len(body) == 1 or _FEATURE_SET.isdisjoint(body))


def _request_kind(value: Any) -> str:
    """The tag of the documented union (OpenAPI): a batch, or anything else as one record."""
    return INSTANCES_TAG if isinstance(value, dict) and is_batch(value) else RECORD_TAG


def build_predict_request(max_instances: int) -> Any:
    """The request body type: validated by ``validate_predict_body``, documented as a record or a batch.

    FastAPI does not validate the body against the union itself: pydantic would build
    every error of an invalid body (12 per empty record, 120,000 for a 40 KB batch)
    before the 422 reports the first hundred. The union is kept for the OpenAPI schema.
    The validator's ``InvalidRequestError`` is not a ``ValueError``, so pydantic and
    FastAPI pass it on as it is to the app's handler.
    """
    instances_model = create_model(
        "PredictInstances",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Several records, answered in order.",
        instances=(
            list[Observation],
            Field(min_length=1, max_length=max_instances, description=f"1..{max_instances} records"),
        ),
    )
    documented = Annotated[
        Annotated[Observation, Tag(RECORD_TAG)] | Annotated[instances_model, Tag(INSTANCES_TAG)],
        Discriminator(_request_kind),
    ]

    def validate(body: Any) -> list[Observation]:
        return validate_predict_body(body, max_instances)

    return Annotated[Any, PlainValidator(validate, json_schema_input_type=documented)]


def validate_predict_body(body: Any, max_instances: int) -> list[Observation]:
    """The records of a parsed body, in order; ``InvalidRequestError`` naming each problem otherwise.

    ``bytes`` is a body FastAPI did not parse because it was not sent as JSON; ``None``
    (no body, JSON ``null``) never gets here: FastAPI reports the required body missing.
    """
    if isinstance(body, bytes):  # e.g. curl -d without a JSON content type
        reason = "the body arrived as text, not JSON: send it with Content-Type: application/json"
        raise InvalidRequestError([ErrorItem(index=0, field=None, reason=reason)])
    if not isinstance(body, dict):  # a JSON list, string, number or boolean
        raise InvalidRequestError([ErrorItem(index=0, field=None, reason=f"the body must be {BODY_SHAPES}")])
    if not is_batch(body):
        return _validate_records([body], _NO_PROBLEMS)
    return _validate_records(*_batch_records(body, max_instances))


class _Problems(NamedTuple):
    """Problems found before the records are looked at: how many, and (lazily) what they are."""

    count: int
    items: Iterable[ErrorItem]


_NO_PROBLEMS = _Problems(0, ())
_UNKNOWN_BATCH_KEY = 'unknown field: a batch body has only "instances"'


def _batch_records(body: dict[str, Any], max_instances: int) -> tuple[list[Any], _Problems]:
    """The unvalidated records of ``{"instances": [...]}`` and the problems of the wrapper around them.

    Raises when the records cannot be gone through (``instances`` is no list, is empty or too
    long); other problems of the wrapper (repeated or unknown keys) are reported before theirs.
    """
    instances = body[INSTANCES_TAG]
    problem = _instances_problem(instances, max_instances)
    repeated = body.repeated if isinstance(body, RepeatedKeys) else {}
    unknown = [key for key in body if key != INSTANCES_TAG]
    items = chain(
        [ErrorItem(index=None, field=INSTANCES_TAG, reason=problem)] if problem else [],
        (ErrorItem(index=None, field=key, reason=_repeated_reason(count, "body")) for key, count in repeated.items()),
        (ErrorItem(index=None, field=key, reason=_UNKNOWN_BATCH_KEY) for key in unknown),
    )
    wrapper = _Problems((problem is not None) + len(repeated) + len(unknown), items)
    if problem is not None:
        raise InvalidRequestError(wrapper.items, total=wrapper.count)
    return instances, wrapper


def _instances_problem(instances: Any, max_instances: int) -> str | None:
    """What is wrong with the value of ``instances`` as a whole, if anything (its records are not looked at)."""
    if not isinstance(instances, list):
        return "instances must be a JSON array of records"
    if not instances:
        return "instances is empty: send at least one record"
    if len(instances) > max_instances:
        return f"too many instances: {len(instances)} sent, at most {max_instances} per request"
    return None


_RECORDS: TypeAdapter[list[Observation]] = TypeAdapter(list[Observation])


def _validate_records(records: list[Any], wrapper: _Problems) -> list[Observation]:
    """The records validated; if any is invalid (or the batch's wrapper is), a refusal describing the first
    problems, the wrapper's first.

    Records that are plain objects of exactly the 12 features (the usual body) are validated in one
    pydantic call, with at most 12 errors each; pydantic's errors are then exactly the problems, so it
    counts them, and no record is validated a second time to count them (that cost ~0.2 s for 10,000
    records). Any other body is counted record by record (``_problem_count``), so that unknown or repeated
    keys are counted, never built as errors: pydantic builds one per unknown key, 1.2 million for 10,000
    records of 120 unknown keys (~350 MB). Only the reported problems are described.
    """
    if not wrapper.count and all(type(record) is dict and record.keys() == _FEATURE_SET for record in records):
        try:
            return _RECORDS.validate_python(records)
        except ValidationError as error:
            raise InvalidRequestError(_listed_problems(records, error), total=error.error_count()) from None
    problems = chain(wrapper.items, _described_problems(records))
    raise InvalidRequestError(problems, total=wrapper.count + sum(map(_problem_count, records)))


# Up to this many errors, pydantic's own list of them (~4 µs each) is what the 422 describes: the records need
# not be validated again one by one (~15 µs each) to find the first problems, however late in the batch they are.
ERRORS_LISTED_FROM_PYDANTIC_MAX = 12 * MAX_REPORTED_ERRORS


def _listed_problems(records: list[Any], error: ValidationError) -> Iterator[ErrorItem]:
    """The problems of records that each hold exactly the 12 features, in order, from the error of their validation.

    A few errors are described from pydantic's list; many (up to 120,000: building them all took ~0.4 s)
    from the first records again, which hold the first problems: only as many as the 422 lists.
    """
    if error.error_count() > ERRORS_LISTED_FROM_PYDANTIC_MAX:
        return _described_problems(records)
    return map(_listed_problem, error.errors(include_url=False))


def _listed_problem(error: ErrorDetails) -> ErrorItem:
    """One error of the validation of a list of records: its location is (record index, field)."""
    index, *where = error["loc"]
    field = str(where[0]) if where else None
    return ErrorItem(index=int(index), field=field, reason=_field_reason(field, dict(error)))


def _described_problems(records: list[Any]) -> Iterator[ErrorItem]:
    """Every record's problems, in order, described lazily: the caller takes the first few."""
    return chain.from_iterable(_record_problems(index, record) for index, record in enumerate(records))


def _problem_count(record: Any) -> int:
    """How many problems ``_record_problems`` would describe for ``record``, without describing them."""
    if not isinstance(record, dict):
        return 1
    repeated = len(record.repeated) if isinstance(record, RepeatedKeys) else 0
    error = _feature_errors(record)
    invalid = 0 if error is None else error.error_count()  # at most 12: one per feature, missing or refused
    unknown = len(record) - sum(name in record for name in FEATURE_COLUMNS)
    return repeated + invalid + unknown


def _feature_errors(record: dict[str, Any]) -> ValidationError | None:
    """The record's 12 features validated without its other keys (only counted: pydantic would build an error
    for each), or None when they are valid."""
    try:
        Observation.model_validate({name: record[name] for name in FEATURE_COLUMNS if name in record})
    except ValidationError as error:
        return error
    return None


def _record_problems(index: int, record: Any) -> Iterator[ErrorItem]:
    """The problems of one record: repeated keys, the 12 features in raw-format order, then unknown fields as sent.

    Lazy, and the unknown fields are found here rather than by pydantic: a record with
    thousands of unknown fields costs only the ones reported.
    """
    if not isinstance(record, dict):
        yield ErrorItem(index=index, field=None, reason="a record must be a JSON object of the 12 features")
        return
    if isinstance(record, RepeatedKeys):
        for field, count in record.repeated.items():
            yield ErrorItem(index=index, field=field, reason=_repeated_reason(count, "record"))
    error = _feature_errors(record)
    for item in () if error is None else error.errors(include_url=False):
        field = str(item["loc"][0])
        yield ErrorItem(index=index, field=field, reason=_field_reason(field, item))
    for field in record:
        if field not in _FEATURE_SET:
            yield ErrorItem(index=index, field=field, reason=_field_reason(field, {"type": "extra_forbidden"}))


def _repeated_reason(count: int, where: str) -> str:
    return f"repeated field: given {count} times in this {where}; a JSON object must name each field once"


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


# How a refused value is quoted back: bounded in length and depth (a 2 KB body can nest a value ~1,000 deep,
# deeper than ``repr`` can recurse, and a 10 MB one can hold a 10 MB string).
def _value_repr() -> reprlib.Repr:
    quoting = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
    quoting.maxlevel, quoting.maxstring, quoting.maxother, quoting.maxlong = 2, 60, 60, 40
    quoting.maxlist = quoting.maxdict = 4
    return quoting


_VALUE_REPR = _value_repr()


def _field_reason(field: str | None, error: dict[str, Any]) -> str:  # noqa: PLR0911 - one return per error kind
    """A reason in the API's words for one pydantic error of a record field."""
    kind = error.get("type", "")
    quoted = _VALUE_REPR.repr(error.get("input"))
    column = NUMERIC_BY_NAME.get(field or "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field (extra fields are rejected); a record has exactly these fields: {_FEATURES}"
    if field == SOIL_COLUMN and kind in {"literal_error", "string_type"}:
        return f"unknown soil code {quoted}; expected one of {', '.join(SOIL_CODES)}"
    if field == WILDERNESS_COLUMN and kind in {"literal_error", "string_type"}:
        return f"unknown wilderness area {quoted}; expected one of {', '.join(WILDERNESS_AREAS)}"
    if column is not None and kind in {"greater_than_equal", "less_than_equal"}:
        return f"{quoted} is out of range: {field} must be within {column.minimum}..{column.maximum} {column.unit}"
    if kind.startswith("int_"):
        return f"{quoted} is not an integer"
    return str(error.get("msg", kind))


def describe_error(error: dict[str, Any]) -> ErrorItem:
    """Turn one error of FastAPI's own request validation into (index, field, reason).

    For /predict that is only the missing body (none, or JSON ``null``): the body
    itself is validated by ``validate_predict_body``.
    """
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in {"body", "query", "path", "header"}:
        location = location[1:]
    if error.get("type") == "missing" and not location:
        return ErrorItem(index=None, field=None, reason=f"the body is empty: send {BODY_SHAPES}")
    return ErrorItem(index=None, field=".".join(location) or None, reason=str(error.get("msg", error.get("type"))))


def class_names(labels: Sequence[int]) -> list[str]:
    """Names of the model's classes, in ``classes_`` order."""
    return [COVER_TYPE_NAMES.get(label, str(label)) for label in labels]
