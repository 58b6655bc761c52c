"""The data API's status endpoint (``GET /``), through the shared ``covertype.data_api_client``.

Only the status is read: fetching a batch is the DAG's job (one request per
run), and a fetch from the UI would move the course API's batch window.
"""

from __future__ import annotations

from typing import Any

from covertype.data_api_client import DataApiClient, DataApiError, ServiceUnavailable
from covertype.redaction import public_url, redact
from ui.clients.errors import ServiceUnreachable, UnexpectedResponse

SERVICE = "Data API"
DEFAULT_TIMEOUT_S = 10.0


class DataApiStatusClient:
    """Reads ``GET /`` of the data API (the course API or the local replica)."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = DataApiClient(self.base_url, timeout_s=timeout_s)

    def status(self) -> dict[str, Any]:
        """The status document the API returns (a JSON object), as is."""
        try:
            body = self._client.status()
        except ServiceUnavailable as error:
            raise ServiceUnreachable(
                SERVICE, redact(str(error)), "that the data API is running and that DATA_API_URL points at it"
            ) from error
        except (DataApiError, ValueError) as error:
            raise UnexpectedResponse(
                SERVICE,
                f"GET / of {public_url(self.base_url)} failed: {redact(str(error))}",
                "that DATA_API_URL points at the data API",
            ) from error
        if not isinstance(body, dict):
            raise UnexpectedResponse(
                SERVICE,
                f"GET / of {public_url(self.base_url)} answered a JSON {type(body).__name__}, not the status object",
                "that DATA_API_URL points at the data API",
            )
        return body

    def close(self) -> None:
        self._client.close()
