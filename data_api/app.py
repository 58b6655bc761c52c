"""HTTP routes of the replica: the course data API's contract (``/``, ``/data``, ``/restart_data_generation``).

Run with ``uvicorn data_api.app:create_app --factory``. The factory loads and
validates the dataset before the server listens, so a bad ``COVERTYPE_CSV``
stops the start-up with a message naming the file and the problem.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from covertype.schema import RAW_COLUMNS
from data_api.data_source import fetch_uci_onehot, resolve_dataset
from data_api.service import BadGroupError, Clock, ReplicaService
from data_api.settings import DataApiSettings
from data_api.state import CollectionCompleteError

logger = logging.getLogger("uvicorn.error.data_api")


class DataResponse(BaseModel):
    group_number: int
    batch_number: int = Field(description="1..10: the batch this portion comes from")
    data: list[list[str]] = Field(description=f"rows of 13 strings: {', '.join(RAW_COLUMNS)}")


class RestartResponse(BaseModel):
    group_number: int
    message: str


def get_service(request: Request) -> ReplicaService:
    return request.app.state.service


Service = Annotated[ReplicaService, Depends(get_service)]
GroupNumber = Annotated[int, Query(description="The group, 1..10")]


def _bad_group(error: BadGroupError) -> HTTPException:
    # 400, the contract's error code; the detail says "group", which is how clients tell it from "complete"
    # (clients also read a 422 as a bad group: a course API validating the query answers that).
    return HTTPException(status_code=400, detail=str(error))


def create_app(
    settings: DataApiSettings | None = None,
    clock: Clock = time.time,
    fetch_onehot: Callable[[Path], pd.DataFrame] = fetch_uci_onehot,
) -> FastAPI:
    """Build the app; ``clock`` and ``fetch_onehot`` are injectable so tests need neither sleep nor internet."""
    settings = settings or DataApiSettings()
    dataset = resolve_dataset(settings, fetch_onehot)
    service = ReplicaService(settings, dataset, clock)
    logger.info(
        "serving %d rows of %s in %d batches of %d (portions of %d), MIN_UPDATE_TIME=%ss, state in %s",
        dataset.n_rows,
        dataset.source,
        service.layout.n_batches,
        service.layout.batch_size,
        service.sampler.portion_size,
        settings.min_update_time,
        settings.state_db_path,
    )

    app = FastAPI(
        title="Covertype data API (local replica)",
        description=(
            "Serves the Forest Covertype data in 10 batches per group, like the course data API. "
            "Each `GET /data` returns a random portion of the group's current batch; the batch advances "
            "when a request comes more than MIN_UPDATE_TIME seconds after it started; after the last "
            "batch the answer is HTTP 400."
        ),
        version="1.0.0",
    )
    app.state.service = service

    @app.exception_handler(sqlite3.Error)
    def _state_store_failed(request: Request, error: sqlite3.Error) -> JSONResponse:
        logger.exception("state store %s failed on %s", settings.state_db_path, request.url.path, exc_info=error)
        return JSONResponse(status_code=503, content={"detail": f"state store unavailable: {error}"})

    @app.get("/", summary="Status: the dataset and where each group stands")
    def root(service: Service) -> dict[str, Any]:
        return service.status()

    @app.get(
        "/data",
        response_model=DataResponse,
        summary="A random portion of the group's current batch",
        responses={400: {"description": "bad group number, or collection complete (every batch served)"}},
    )
    def data(service: Service, group_number: GroupNumber) -> DataResponse:
        try:
            portion = service.serve(group_number)
        except BadGroupError as error:
            raise _bad_group(error) from error
        except CollectionCompleteError as error:
            # The detail must not say "group": clients read a 400 that mentions the group as "bad group".
            raise HTTPException(
                status_code=400,
                detail=f"collection complete: all {service.layout.n_batches} batches have been served; "
                "call /restart_data_generation to start over",
            ) from error
        return DataResponse(group_number=portion.group_number, batch_number=portion.batch_number, data=portion.rows)

    @app.get(
        "/restart_data_generation",
        response_model=RestartResponse,
        summary="Start the group over: its next request gets batch 1",
        responses={400: {"description": "bad group number"}},
    )
    def restart_data_generation(service: Service, group_number: GroupNumber) -> RestartResponse:
        try:
            had_state = service.restart(group_number)
        except BadGroupError as error:
            raise _bad_group(error) from error
        was = "restarted" if had_state else "had not been served yet; nothing to restart"
        return RestartResponse(group_number=group_number, message=f"group {group_number} {was}")

    return app
