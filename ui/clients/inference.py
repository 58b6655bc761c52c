"""A client of the inference service: ``POST /predict``, ``GET /model``, ``GET /health``.

The service answers 503 while it has no model loaded, with ``registry_state``
saying why, and 422 with per-record details for invalid input. A 503 becomes
``NoModelYet`` (a warning: just started, nothing promoted yet) or
``ModelUnavailable`` (an error: a fault to fix, named with what to check), a
422 ``InvalidInput``, so a page can say which it is or list the refused records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from covertype.schema import COVER_TYPE_NAMES
from ui.clients.errors import (
    InvalidInput,
    ModelUnavailable,
    NoModelYet,
    ServiceError,
    UnexpectedResponse,
    json_body,
    response_detail,
    transport_errors,
)

SERVICE = "Inference API"
# POST /predict: a chunk of 1,000 rows on a busy service.
PREDICT_TIMEOUT_S = 30.0
# GET /model and /health answer from memory: a host that accepts and never answers must not hold the
# Predict page (which asks on every rerun) for the predict timeout.
STATUS_TIMEOUT_S = 5.0
NO_MODEL_HINT = (
    "that the pipeline has registered a model and moved to it the alias the inference service serves "
    "(MODEL_ALIAS, `production` unless set otherwise; run the DAG on the Pipeline page), then wait for the "
    "inference service to load it"
)
PENDING_HINT = (
    "again in a few seconds (refresh the page): the inference service has just started and is still checking "
    "the MLflow registry for the model to serve"
)
CONFIGURATION_HINT = (
    "MODEL_NAME and MODEL_ALIAS in the inference service's environment (the registry refuses them), "
    "then restart the inference service"
)
STORES_HINT = (
    "that MLflow (the tracking server) and the artifact store (MinIO) are up and that the inference service "
    "reaches them (its MLFLOW_TRACKING_URI); the service tries again at every check"
)
LOAD_FAILED_HINT = (
    "the inference service's log for why the version did not load; then POST /model/reload to try it again, "
    "or promote another version (move the alias to a version that loads)"
)
# What each ``registry_state`` of a 503 (inference/model_holder.py ``RegistryState``) is shown as. A state
# not listed (a service of another release) or a 503 without one (a proxy) is read as "no model yet".
_UNAVAILABLE: dict[str, tuple[type[ServiceError], str]] = {
    "pending": (NoModelYet, PENDING_HINT),
    "no_registered_model": (NoModelYet, NO_MODEL_HINT),
    "alias_not_set": (NoModelYet, NO_MODEL_HINT),
    "configuration_error": (ModelUnavailable, CONFIGURATION_HINT),
    "registry_unreachable": (ModelUnavailable, STORES_HINT),
    "artifacts_unreachable": (ModelUnavailable, STORES_HINT),
    "load_failed": (ModelUnavailable, LOAD_FAILED_HINT),
}
SAME_RELEASE_HINT = "that INFERENCE_URL points at the inference service, and that it and the UI are the same release"
SHOWN_PROBLEMS = 3
# The registry message of /health is shown cut to this: MLflow's errors can quote a whole response body.
HEALTH_MESSAGE_LIMIT = 400


@dataclass(frozen=True)
class Prediction:
    """One record's answer: the cover type, its name and every class's probability."""

    cover_type: int
    cover_type_name: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class PredictionResult:
    """The answers to one request, and which model version gave them."""

    predictions: list[Prediction]
    model_name: str | None
    model_version: str | None
    run_id: str | None


@dataclass(frozen=True)
class Health:
    """What ``GET /health`` reports: whether a model is served, and how the last registry check ended."""

    model_loaded: bool | None
    registry_state: str | None
    registry_message: str | None

    @property
    def registry_problem(self) -> ServiceError | None:
        """The registry's message while a model is served and the last check did not end ok, else None.

        E.g. a newer promoted version that failed to load: the service keeps
        answering with the old one, and only /health says so.
        """
        if not self.model_loaded or self.registry_state in (None, "ok") or not self.registry_message:
            return None
        message = self.registry_message.strip().rstrip(".")
        if len(message) > HEALTH_MESSAGE_LIMIT:
            message = f"{message[:HEALTH_MESSAGE_LIMIT].rstrip()} … (cut: GET /health has it whole)"
        return ServiceError(SERVICE, message, registry_hint(self.registry_state))


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /model`` reports about the loaded model."""

    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    loaded_at: str | None
    metrics: dict[str, float] = field(default_factory=dict)


# The shapes the UI reads from the service's answers. Only the fields it uses are checked (others are
# ignored), but those strictly enough that a page never meets a value it cannot show: a body of another
# shape is an ``UnexpectedResponse`` here, not an exception in a page. Numbers are accepted where text is
# expected (a version sent as 3), because that is what the UI shows them as anyway.
class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class _ModelFields(_Answer):
    """Which model: the service's ``model_*`` fields, or the shorter names."""

    model_name: str | None = None
    name: str | None = None
    model_version: str | None = None
    version: str | None = None
    run_id: str | None = None


class _ModelBody(_ModelFields):
    """``GET /model``: which model is loaded (either naming), its alias, when it was loaded, its metrics."""

    alias: str | None = None
    model_alias: str | None = None
    loaded_at: str | None = None
    metrics: dict[str, float | None] | None = None


class _HealthBody(_Answer):
    """``GET /health``: the fields the UI reads (a service of an earlier release may lack the registry's)."""

    model_loaded: bool | None = None
    registry_state: str | None = None
    registry_message: str | None = None


class _PredictionItem(_Answer):
    """One record's answer in ``POST /predict``."""

    cover_type: int = Field(ge=min(COVER_TYPE_NAMES), le=max(COVER_TYPE_NAMES))
    cover_type_name: str | None = None
    name: str | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)


class _PredictBody(_ModelFields):
    """``POST /predict``: the predictions in request order; the model beside them or under ``model``."""

    predictions: list[_PredictionItem]
    model: _ModelFields | None = None


_Shape = TypeVar("_Shape", bound=_Answer)


def _read(shape: type[_Shape], body: object, call: str) -> _Shape:
    """``body`` read as ``shape``; any mismatch is an ``UnexpectedResponse`` saying where and what."""
    try:
        return shape.model_validate(body)
    except ValidationError as error:
        raise UnexpectedResponse(
            SERVICE, f"{call} answered a body the UI cannot read: {_mismatches(error)}", SAME_RELEASE_HINT
        ) from error


def _mismatches(error: ValidationError) -> str:
    """The first problems, e.g. ``predictions.0.probabilities: Input should be a valid dictionary (got None)``."""
    problems = error.errors(include_url=False)
    parts = []
    for problem in problems[:SHOWN_PROBLEMS]:
        where = ".".join(str(part) for part in problem["loc"]) or "the body"
        # pydantic's own words would name the UI's private class ("... or instance of _ModelBody").
        expected = "Input should be a JSON object" if problem["type"] == "model_type" else problem["msg"]
        parts.append(f"{where}: {expected} (got {_short(problem['input'])})")
    more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
    return "; ".join(parts) + more


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InferenceClient:
    """Calls the inference service with a timeout on every request: short for the status reads, long for predict.

    ``transport`` replaces httpx's network transport (tests pass an ``httpx.MockTransport`` to see the
    requests as sent, timeouts included).
    """

    def __init__(
        self,
        base_url: str,
        predict_timeout_s: float = PREDICT_TIMEOUT_S,
        status_timeout_s: float = STATUS_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.predict_timeout_s = predict_timeout_s
        self.status_timeout_s = status_timeout_s
        self._http = httpx.Client(base_url=self.base_url, timeout=status_timeout_s, transport=transport)

    def _call(self, method: str, path: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        with transport_errors(SERVICE, self.base_url, "INFERENCE_URL", timeout_s):
            response = self._http.request(method, path, timeout=timeout_s, **kwargs)
        if response.status_code == 503:
            raise _unavailable(method, path, response)
        if response.status_code == 422:
            body = _json_or_text(response)
            details = body.get("detail", body) if isinstance(body, dict) else body
            raise InvalidInput(
                SERVICE,
                f"the request was refused as invalid (422): {_refusal_summary(details)}",
                "the records and fields named",
                details,
            )
        if response.status_code != 200:
            raise UnexpectedResponse(
                SERVICE,
                f"{method} {path} answered {response.status_code}: {response_detail(response)}",
                "that INFERENCE_URL points at the inference service, and its log",
            )
        return response

    def _json(self, method: str, path: str, timeout_s: float, **kwargs: Any) -> Any:
        response = self._call(method, path, timeout_s, **kwargs)
        return json_body(response, SERVICE, "that INFERENCE_URL points at the service")

    def health(self) -> Health:
        """The liveness document (``GET /health``): the model served and the registry's state."""
        body = _read(_HealthBody, self._json("GET", "/health", self.status_timeout_s), "GET /health")
        return Health(
            model_loaded=body.model_loaded,
            registry_state=body.registry_state,
            registry_message=body.registry_message,
        )

    def model_info(self) -> ModelInfo:
        """The loaded model (``GET /model``); raises ``NoModelYet`` or ``ModelUnavailable`` while there is none."""
        body = _read(_ModelBody, self._json("GET", "/model", self.status_timeout_s), "GET /model")
        return ModelInfo(
            name=body.name or body.model_name,
            version=body.version or body.model_version,
            alias=body.alias or body.model_alias,
            run_id=body.run_id,
            loaded_at=body.loaded_at,
            # A metric that is NaN in MLflow arrives as null: left out rather than shown as a number.
            metrics={key: value for key, value in (body.metrics or {}).items() if value is not None},
        )

    def predict(self, records: Sequence[dict[str, int | str]]) -> PredictionResult:
        """Predict the records in one request (``{"instances": [...]}``).

        The answer must hold one prediction per record: pages pair them by
        position, so a shorter or longer list would put answers on the wrong records.
        """
        sent = self._json("POST", "/predict", self.predict_timeout_s, json={"instances": list(records)})
        body = _read(_PredictBody, sent, "POST /predict")
        if len(body.predictions) != len(records):
            raise UnexpectedResponse(
                SERVICE,
                f"POST /predict answered {_count(len(body.predictions), 'prediction')} "
                f"for {_count(len(records), 'record')} sent",
                SAME_RELEASE_HINT,
            )
        return _prediction_result(body)

    def close(self) -> None:
        self._http.close()


def _refusal_summary(details: Any, shown: int = 3) -> str:
    """The service's first reasons, e.g. ``record 2, Elevation: ...`` or ``instances: too many instances ...``."""
    items = details if isinstance(details, list) else [details]
    parts = []
    for item in items[:shown]:
        if not isinstance(item, dict):
            parts.append(str(item)[:200])
            continue
        where = ", ".join(
            part
            for part in (
                None if item.get("index") is None else f"record {item['index']}",
                item.get("field"),
            )
            if part
        )
        reason = str(item.get("reason") or item.get("msg") or item)
        parts.append(f"{where}: {reason}" if where else reason)
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return "; ".join(parts) + more


def _shown_as(registry_state: object) -> tuple[type[ServiceError], str]:
    """The error type and hint for a registry state; "no model yet" for a state not listed, or none."""
    if isinstance(registry_state, str) and registry_state in _UNAVAILABLE:
        return _UNAVAILABLE[registry_state]
    return NoModelYet, NO_MODEL_HINT


def registry_hint(registry_state: str | None) -> str:
    """What to check for a registry state the service reports."""
    return _shown_as(registry_state)[1]


def _unavailable(method: str, path: str, response: httpx.Response) -> ServiceError:
    """A 503 as the error its ``registry_state`` calls for: a warning to wait, or an error naming what to fix."""
    body = _json_or_text(response)
    error_type, hint = _shown_as(body.get("registry_state") if isinstance(body, dict) else None)
    return error_type(SERVICE, _no_model_problem(method, path, response), hint)


def _no_model_problem(method: str, path: str, response: httpx.Response) -> str:
    """The service's own reason for a 503, as it gives it: it already says "no model loaded ..." and why.

    Wrapping it in words of our own would say "no model loaded" twice; only a
    503 without that reason (e.g. from a proxy in front of the service) is described here.
    """
    body = _json_or_text(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return detail.strip().rstrip(".")[:300]
    return f"{method} {path} answered 503 ({response_detail(response)}): no model is loaded"


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _prediction_result(body: _PredictBody) -> PredictionResult:
    model = body.model or body
    return PredictionResult(
        predictions=[
            Prediction(
                cover_type=item.cover_type,
                cover_type_name=item.cover_type_name or item.name or str(item.cover_type),
                probabilities=item.probabilities,
            )
            for item in body.predictions
        ],
        model_name=model.model_name or model.name,
        model_version=model.model_version or model.version,
        run_id=model.run_id,
    )
