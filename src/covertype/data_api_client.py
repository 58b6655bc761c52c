"""A small typed client for the data API (the course API or the local replica).

The API answers HTTP 400 both for "collection complete" and, on the course
API, for a bad group number. Callers must treat those very differently (the
first ends a DAG run as skipped, the second fails it), so the client tells
them apart and raises a distinct exception for each. Any other 400 (a proxy's
HTML page, a message neither API sends) is an unexpected answer: read as
"complete", it would end every later run as skipped without a word.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

MIN_GROUP, MAX_GROUP = 1, 10


class DataApiError(Exception):
    """Base class of every data API failure."""


class CollectionComplete(DataApiError):
    """The group has received its last batch (HTTP 400 after batch 10)."""


class BadGroup(DataApiError):
    """The group number is not one the API serves."""


class ServiceUnavailable(DataApiError):
    """The API could not be reached, timed out, or answered 5xx: worth a retry."""


class UnexpectedResponse(DataApiError):
    """The API answered something outside its contract: not worth a retry."""


class DataBatch(BaseModel):
    """One answer of ``GET /data``: a portion of the group's current batch."""

    group_number: int
    batch_number: int
    # Rows are not checked here: a row that is not a list is rejected with its reason by the parser,
    # and the payload's good rows are kept (a stricter type would fail the whole answer).
    data: list[Any]


def _error_detail(response: httpx.Response) -> str:
    """The ``detail`` of a FastAPI error body, or the raw text when it has none."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text


def _mentions_group(detail: str) -> bool:
    lowered = detail.lower()
    return "group" in lowered or "grupo" in lowered


def _says_complete(detail: str) -> bool:
    """The replica's "collection complete ..." or the course API's "Ya se recolectó toda la información ..."."""
    lowered = detail.lower()
    return "collection complete" in lowered or "recolect" in lowered


class DataApiClient:
    """Calls the data API with a timeout and typed errors; one instance per base URL."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)

    def __enter__(self) -> DataApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, group_number: int | None = None) -> httpx.Response:
        params = None
        if group_number is not None:
            if not MIN_GROUP <= group_number <= MAX_GROUP:
                raise BadGroup(f"group number {group_number} is outside {MIN_GROUP}..{MAX_GROUP}")
            params = {"group_number": group_number}
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as error:
            raise ServiceUnavailable(f"data API at {self._http.base_url} timed out on {path}: {error}") from error
        except httpx.TransportError as error:
            raise ServiceUnavailable(f"data API at {self._http.base_url} unreachable: {error}") from error
        except (httpx.DecodingError, httpx.TooManyRedirects) as error:
            # The answer arrived (the batch may have moved on): asking again would not be a retry of the same request.
            raise UnexpectedResponse(f"data API answer on {path} could not be read: {error}") from error
        if response.status_code >= 500:
            raise ServiceUnavailable(f"data API answered {response.status_code} on {path}: {_error_detail(response)}")
        if response.status_code == 422 or (response.status_code == 400 and _mentions_group(_error_detail(response))):
            raise BadGroup(f"data API refused group {group_number}: {_error_detail(response)}")
        if response.status_code == 400 and path == "/data" and _says_complete(_error_detail(response)):
            raise CollectionComplete(f"group {group_number} has received every batch: {_error_detail(response)}")
        if response.status_code != 200:
            raise UnexpectedResponse(f"data API answered {response.status_code} on {path}: {_error_detail(response)}")
        return response

    def fetch_batch(self, group_number: int) -> DataBatch:
        """One ``GET /data`` request: the only call a DAG run makes."""
        response = self._get("/data", group_number)
        try:
            # Python's reader, then the model: pydantic's own JSON reader refuses a whole answer for one lone
            # surrogate ("\ud800") in one field, and the batch would be lost; the store makes such a value storable.
            batch = DataBatch.model_validate(json.loads(response.content))
        except (ValueError, ValidationError, RecursionError) as error:  # not JSON, another shape, absurd nesting
            raise UnexpectedResponse(f"data API payload does not match the contract: {error}") from error
        # Stored as they are, either would pass for a real batch: another group's rows in this group's
        # collection, or a batch with nothing in it that the next run would then retrain on unchanged data.
        if batch.group_number != group_number:
            raise UnexpectedResponse(
                f"data API answered group {batch.group_number} (batch {batch.batch_number}) to a request for group "
                f"{group_number}"
            )
        if not batch.data:
            raise UnexpectedResponse(f"data API answered group {group_number} batch {batch.batch_number} with no rows")
        return batch

    def restart(self, group_number: int) -> dict[str, Any]:
        """Reset the group so that the next request gets batch 1 again."""
        return self._get("/restart_data_generation", group_number).json()

    def status(self) -> dict[str, Any]:
        """The API's root endpoint: a cheap liveness check."""
        return self._get("/").json()
