"""Dependencies of the routes, as ``Annotated`` aliases: the objects ``create_app`` put in ``app.state``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, and three thread hops per request cost more than the model's
own single-row prediction (measured with py-spy under a stream of requests).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inference.metrics import ServiceMetrics
from inference.model_holder import ModelHolder
from inference.predictor import BatchingPredictor


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_predictor(request: Request) -> BatchingPredictor:
    return request.app.state.predictor


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


HolderDep = Annotated[ModelHolder, Depends(get_holder)]
PredictorDep = Annotated[BatchingPredictor, Depends(get_predictor)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
