"""The HTTP routes: prediction, model information and reload, health, readiness and metrics.

No ``from __future__ import annotations`` here: the body type of /predict is built at run time
(it carries the configured limit) and FastAPI must see it as an object, not a string.
"""

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic_core import to_json

from inference.deps import HolderDep, MetricsDep, PredictorDep
from inference.model_holder import LoadedModel, ModelHolder, RefreshResult
from inference.predictor import ModelUnavailableError, Prediction, PredictionError
from inference.schemas import (
    PREDICT_EXAMPLES,
    BodyTooLargeResponse,
    HealthResponse,
    ModelInfo,
    PredictionFailedResponse,
    PredictResponse,
    ReloadResponse,
    UnavailableResponse,
    ValidationErrorResponse,
    build_predict_request,
    class_names,
    parse_json_body,
)

# Bodies up to this size (~250 records) are parsed on the event loop: a thread hand-off would cost more.
INLINE_PARSE_MAX_BYTES = 64 * 1024


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by ``parse_json_body`` instead of ``json.loads``.

    FastAPI calls ``json()`` for a body sent as JSON. This one refuses repeated keys,
    says where invalid JSON breaks, and answers a body that is not UTF-8 with a 422 in
    the API's format, where FastAPI's own parsing answers a 400 without a reason.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            # A large body (up to the 413 limit: millions of tiny objects) parses for a second or more:
            # in a thread, so the event loop keeps answering other requests (/health) meanwhile.
            if len(body) > INLINE_PARSE_MAX_BYTES:
                self._json = await run_in_threadpool(parse_json_body, body)
            else:
                self._json = parse_json_body(body)
        return self._json


class StrictJsonRoute(APIRoute):
    """FastAPI's custom route class (its documented way to change the Request): handlers get a StrictJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


UNAVAILABLE = {503: {"model": UnavailableResponse, "description": "No model is loaded (the message says why)"}}


def unavailable(holder: ModelHolder, reason: str | None = None) -> JSONResponse:
    """503 naming what is missing: no registered model, no alias, an unreachable registry or a failed load."""
    return JSONResponse(
        status_code=503,
        content={"detail": reason or holder.unavailable_reason(), "registry_state": str(holder.status.state)},
    )


async def checked_now(holder: ModelHolder) -> RefreshResult:
    """The result of a check of the alias that starts after this call, forced past a failed version's pause.

    The watcher thread runs it and this only awaits it: a burst of reloads holds no worker
    thread (those also parse large /predict bodies) and costs two checks, not one each.
    Without a watcher (an app whose lifespan did not run) the check runs in a worker thread.
    """
    if holder.watching:
        # Shielded: a client that hangs up would otherwise cancel the check the other reloads share.
        return await asyncio.shield(asyncio.wrap_future(holder.request_check(force=True)))
    return await run_in_threadpool(functools.partial(holder.refresh, force=True))


def render_predictions(prediction: Prediction) -> bytes:
    """The JSON answer, serialised directly (no per-record pydantic models on the hot path)."""
    model = prediction.model
    labels = model.class_labels
    names = class_names(labels)
    probabilities = prediction.probabilities
    winners = probabilities.argmax(axis=1).tolist()
    predictions = [
        {
            "cover_type": labels[winner],
            "cover_type_name": names[winner],
            "probabilities": dict(zip(names, row, strict=True)),
        }
        for winner, row in zip(winners, probabilities.tolist(), strict=True)
    ]
    return to_json(
        {
            "predictions": predictions,
            "model_name": model.name,
            "model_version": model.version,
            "model_alias": model.alias,
            "run_id": model.run_id,
        }
    )


def model_info(holder: ModelHolder, model: LoadedModel) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        alias=model.alias,
        version=model.version,
        run_id=model.run_id,
        loaded_at=model.loaded_at,
        load_seconds=round(model.load_seconds, 3),
        artifact_mb=round(model.artifact_bytes / 1_000_000, 3),
        classes=dict(zip(model.class_labels, class_names(model.class_labels), strict=True)),
        metrics=model.metrics,
        tags=model.run_tags,
        tracking_uri=holder.public_tracking_uri,
    )


def build_router(max_instances: int) -> APIRouter:
    """The routes; the request type carries the configured limit on ``instances``."""
    router = APIRouter(route_class=StrictJsonRoute)
    predict_request: Any = build_predict_request(max_instances)

    @router.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            413: {"model": BodyTooLargeResponse, "description": "Body over 1 KiB per allowed record (at least 1 MiB)"},
            422: {"model": ValidationErrorResponse, "description": "Invalid records: index, field and reason"},
            **UNAVAILABLE,
            500: {"model": PredictionFailedResponse, "description": "The model failed (the message names its version)"},
        },
        summary="Predict the cover type of one record or of {'instances': [...]}",
        tags=["prediction"],
    )
    async def predict(
        body: Annotated[predict_request, Body(openapi_examples=PREDICT_EXAMPLES)],
        holder: HolderDep,
        predictor: PredictorDep,
        metrics: MetricsDep,
    ) -> Response:
        """Records in the data API's raw format: numbers as numbers, `Wilderness_Area` by name, `Soil_Type` as
        its ELU code. Unknown fields are refused. The answer names the model version that computed it."""
        records = body  # the body type's validator made the records: list[Observation]
        try:
            prediction = await predictor.predict(records)
        except ModelUnavailableError as error:
            return unavailable(holder, str(error))
        except PredictionError as error:  # logged with its traceback by the predictor
            return JSONResponse(status_code=500, content={"detail": str(error)})
        metrics.records.inc(len(records))
        metrics.batch_records.observe(len(records))
        return Response(content=render_predictions(prediction), media_type="application/json")

    @router.get("/health", response_model=HealthResponse, tags=["operations"])
    async def health(holder: HolderDep) -> HealthResponse:
        """Liveness: 200 while the process serves, with the model and registry state (e.g. registry unreachable)."""
        model = holder.current
        status = holder.status
        return HealthResponse(
            status="ok",
            model_loaded=model is not None,
            model_version=model.version if model else None,
            registry_state=str(status.state),
            registry_message=status.message,
            registry_checked_at=status.checked_at,
            registry_last_success_at=status.last_success_at,
        )

    @router.get("/ready", responses=UNAVAILABLE, tags=["operations"])
    async def ready(holder: HolderDep) -> Response:
        """Readiness: 200 once a model is loaded, 503 (with the reason) before."""
        model = holder.current
        if model is None:
            return unavailable(holder)
        return JSONResponse({"ready": True, "model_version": model.version})

    @router.get("/model", response_model=ModelInfo, responses=UNAVAILABLE, tags=["model"])
    async def model(holder: HolderDep) -> Any:
        """The version served: name, alias, version, run id, when it was loaded and its run's metrics."""
        current = holder.current
        if current is None:
            return unavailable(holder)
        return model_info(holder, current)

    @router.post("/model/reload", response_model=ReloadResponse, tags=["model"])
    async def reload(holder: HolderDep) -> ReloadResponse:
        """Check the alias now (instead of waiting for the watcher) and swap if it names a new version.

        A version that failed to load is tried again at once, without the watcher's pause. Reloads that
        arrive while a check runs share the next check and answer its result.
        """
        result = await checked_now(holder)
        return ReloadResponse(
            swapped=result.swapped,
            model_version=result.current.version if result.current else None,
            registry_state=str(result.status.state),
            registry_message=result.status.message,
        )

    @router.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics(metrics: MetricsDep) -> Response:
        """Prometheus exposition: request counts and latency, records, batch sizes, model version."""
        return Response(content=metrics.render(), media_type=metrics.content_type)

    return router
