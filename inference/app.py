"""The FastAPI application: wiring of settings, model holder, predictor, metrics and routes.

Run with ``uvicorn --factory inference.app:create_app`` (one process: the
model lives in memory once and the micro-batcher needs all requests in one
event loop). Nothing here touches the registry at import or construction;
the first check starts with the app, in the background: it never fails nor delays the start.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from threadpoolctl import threadpool_limits

from covertype.settings import Settings, get_settings
from inference.body_limit import BodyLimitMiddleware, body_limit_bytes, body_limit_detail
from inference.metrics import MetricsMiddleware, ServiceMetrics
from inference.model_holder import ModelHolder
from inference.predictor import BatchingPredictor
from inference.routes import build_router
from inference.schemas import InvalidRequestError, describe_error

DESCRIPTION = """
Predicts the forest cover type (1..7) of observations in the raw format of the
data API, with the model version registered as `models:/{name}@{alias}` in MLflow.

* `POST /predict`: one record, or `{{"instances": [...]}}`; invalid records get a 422 naming
  the record index, the field and the reason (the first 100 problems; `errors_total` counts them all
  when there are more); 503 while no model is loaded (the message says why).
* A body larger than {max_body_bytes} bytes (1 KiB per allowed record, at least 1 MiB) gets a 413, unread.
* The alias is re-checked in the background; a new version is swapped in without failing a request.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the registry is first checked once the app has started (by the watcher), not here."""
    settings = settings or get_settings()
    holder = ModelHolder(
        tracking_uri=settings.resolved_mlflow_tracking_uri,
        model_name=settings.model_name,
        model_alias=settings.model_alias,
        poll_interval_s=settings.model_poll_interval_s,
    )
    metrics = ServiceMetrics(holder)
    predictor = BatchingPredictor(holder, on_batch=metrics.model_batch_records.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # Native pools limited to one thread; the predictor's single thread uses the second core.
        limiter = threadpool_limits(limits=1)
        # The libraries imported so far live as long as the process: keep them out of the garbage
        # collector's full passes, which otherwise stall requests for tens of milliseconds. Frozen
        # before the first model loads: a frozen model could never be freed after a swap (a served
        # forest refers to itself through its fast predict_proba).
        gc.freeze()
        # The first check runs in the watcher, not here: until this yields, uvicorn opens no port, and a registry
        # that is down or slow to answer would keep the service from starting. /predict answers 503 meanwhile.
        holder.start_watcher()
        await predictor.start()
        try:
            yield
        finally:
            await predictor.stop()
            holder.stop_watcher()
            # Undo the process-wide settings: matters when several apps share a process (tests).
            gc.unfreeze()
            limiter.restore_original_limits()

    max_body_bytes = body_limit_bytes(settings.predict_max_instances)
    app = FastAPI(
        title="Forest cover type inference",
        description=DESCRIPTION.format(
            name=settings.model_name, alias=settings.model_alias, max_body_bytes=max_body_bytes
        ),
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.predictor = predictor
    app.state.metrics = metrics
    app.include_router(build_router(settings.predict_max_instances))
    # Added first, so it runs inside the metrics middleware (the last added is the outermost): 413s are counted.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=max_body_bytes,
        detail=body_limit_detail(max_body_bytes, settings.predict_max_instances),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(InvalidRequestError)
    async def invalid_request(request: Request, error: InvalidRequestError) -> JSONResponse:
        """422 as a list of {index, field, reason} (the first of them), with ``errors_total`` if some are left out."""
        return JSONResponse(status_code=422, content=error.response.model_dump())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        """FastAPI's own validation (a missing body) answered in the same format."""
        errors = error.errors()
        return await invalid_request(request, InvalidRequestError(map(describe_error, errors), total=len(errors)))

    return app
