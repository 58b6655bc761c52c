"""One error type for every failed call, so each page shows the same kind of message.

A page never sees an ``httpx`` or MLflow exception: clients turn each failure
into a ``ServiceError`` that names the service, says what went wrong and what
to check. The UI shows ``str(error)`` and nothing else (no stack trace).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from covertype.redaction import public_url


class ServiceError(Exception):
    """A call to one of the stack's services failed; ``hint`` says what to check."""

    def __init__(self, service: str, problem: str, hint: str) -> None:
        super().__init__(f"{service}: {problem}. Check: {hint}")
        self.service = service
        self.problem = problem
        self.hint = hint


class ServiceUnreachable(ServiceError):
    """Nothing answered (connection refused, DNS failure, timeout)."""


class AuthRefused(ServiceError):
    """The service answered but refused the credentials."""


class NotReadyYet(ServiceError):
    """The service runs, but what the page needs is not there yet; pages show it as a warning, not an error.

    Right after the stack starts this is the normal state (no model trained
    yet, the DAG not parsed yet), so it must not read like a failure.
    """


class NoModelYet(NotReadyYet):
    """The inference service runs but has no model loaded yet (HTTP 503): its first registry check is still
    running, or no version has been registered or promoted. Either passes by itself (or by running the DAG)."""


class ModelUnavailable(ServiceError):
    """The inference service runs but has no model loaded (HTTP 503) because of a fault that waiting does not
    cure: a setting the registry refuses, MLflow or the artifact store out of reach, a version that fails to load.

    Shown as an error, not as ``NoModelYet``'s warning: someone has to act.
    """


class InvalidInput(ServiceError):
    """The service refused the request's content (HTTP 422); ``details`` holds its explanation."""

    def __init__(self, service: str, problem: str, hint: str, details: object) -> None:
        super().__init__(service, problem, hint)
        self.details = details


class UnexpectedResponse(ServiceError):
    """The service answered with a status or body the UI does not know how to read."""


def response_detail(response: httpx.Response) -> str:
    """The service's own explanation of a failed response, short enough for one message."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]


def error_summary(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, cut to ``limit``; its type's name when it has none."""
    lines = str(error).splitlines()
    return lines[0][:limit] if lines else type(error).__name__


def json_body(response: httpx.Response, service: str, hint: str) -> Any:
    """The response's JSON; a body that is not JSON (e.g. the URL points at a web page) is ``UnexpectedResponse``."""
    try:
        return response.json()
    except ValueError as error:
        raise UnexpectedResponse(
            service,
            f"{response.request.method} {response.request.url.path} answered {response.status_code} "
            f"with a body that is not JSON ({response.headers.get('content-type', 'no content type')})",
            hint,
        ) from error


@contextmanager
def transport_errors(service: str, url: str, env_var: str, timeout_s: float) -> Iterator[None]:
    """Turn a transport failure of a call to ``service`` into ``ServiceUnreachable`` naming what to check."""
    url = public_url(url)  # the message is shown on the page: no password of a URL's user info
    try:
        yield
    except httpx.TimeoutException as error:
        raise ServiceUnreachable(
            service,
            f"no answer from {url} within {timeout_s:g} s",
            f"that the service is up and not overloaded, and that {env_var} points at it",
        ) from error
    except httpx.TransportError as error:
        raise ServiceUnreachable(
            service,
            f"cannot connect to {url} ({type(error).__name__})",
            f"that the service is running and that {env_var} points at it",
        ) from error
