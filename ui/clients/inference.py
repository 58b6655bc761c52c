"""A client of the inference service: ``POST /predict``, ``GET /model``, ``GET /health``.

The service answers 503 while it has no production model and 422 with
per-record details for invalid input; both become distinct ``ServiceError``s
so a page can say "no model yet" or list the refused records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ui.clients.errors import (
    InvalidInput,
    NoModelYet,
    UnexpectedResponse,
    json_body,
    response_detail,
    transport_errors,
)

SERVICE = "Inference API"
DEFAULT_TIMEOUT_S = 30.0
NO_MODEL_HINT = (
    "that the pipeline has registered a model with the production alias "
    "(run the DAG on the Pipeline page), then wait for the inference service to load it"
)


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
class ModelInfo:
    """What ``GET /model`` reports about the loaded model."""

    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    loaded_at: str | None
    metrics: dict[str, float] = field(default_factory=dict)


class InferenceClient:
    """Calls the inference service with a timeout on every request."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with transport_errors(SERVICE, self.base_url, "INFERENCE_URL", self.timeout_s):
            response = self._http.request(method, path, **kwargs)
        if response.status_code == 503:
            raise NoModelYet(SERVICE, _no_model_problem(method, path, response), NO_MODEL_HINT)
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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json_body(self._call(method, path, **kwargs), SERVICE, "that INFERENCE_URL points at the service")

    def health(self) -> dict[str, Any]:
        """The liveness document (``GET /health``)."""
        return self._json("GET", "/health")

    def model_info(self) -> ModelInfo:
        """The loaded model (``GET /model``); raises ``NoModelYet`` before the first model."""
        body = self._json("GET", "/model")
        return ModelInfo(
            name=body.get("name") or body.get("model_name"),
            version=_text(body.get("version") or body.get("model_version")),
            alias=body.get("alias") or body.get("model_alias"),
            run_id=body.get("run_id"),
            loaded_at=_text(body.get("loaded_at")),
            # A metric that is NaN in MLflow arrives as null: left out rather than shown as a number.
            metrics={key: float(value) for key, value in (body.get("metrics") or {}).items() if value is not None},
        )

    def predict(self, records: Sequence[dict[str, int | str]]) -> PredictionResult:
        """Predict the records in one request (``{"instances": [...]}``)."""
        body = self._json("POST", "/predict", json={"instances": list(records)})
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


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _prediction_result(body: dict[str, Any]) -> PredictionResult:
    try:
        items = body["predictions"]
        predictions = [
            Prediction(
                cover_type=int(item["cover_type"]),
                cover_type_name=str(item.get("cover_type_name") or item.get("name") or item["cover_type"]),
                probabilities={str(key): float(value) for key, value in item.get("probabilities", {}).items()},
            )
            for item in items
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise UnexpectedResponse(
            SERVICE,
            f"POST /predict returned a body the UI cannot read ({type(error).__name__}: {error})",
            "that the inference service and the UI are the same release",
        ) from error
    model = body.get("model") if isinstance(body.get("model"), dict) else body
    return PredictionResult(
        predictions=predictions,
        model_name=model.get("model_name") or model.get("name"),
        model_version=_text(model.get("model_version") or model.get("version")),
        run_id=model.get("run_id"),
    )
