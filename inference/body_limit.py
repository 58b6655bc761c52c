"""A limit on the size of request bodies, enforced before anything buffers or parses a body.

FastAPI reads a whole body and parses it as JSON before the route's own limit
on records (``PREDICT_MAX_INSTANCES``) is checked, so without this a body of a
few hundred MB costs gigabytes of memory first. The limit is derived from that
setting, so that a request at the record limit always fits.

Pure ASGI on purpose (``BaseHTTPMiddleware`` costs a task and queues per
request): a declared ``Content-Length`` over the limit is answered before the
app runs, and a body without one (chunked) is counted as it arrives. Starlette's
own ``RequestBodyLimitMiddleware`` (1.10) answers in plain text without the
limit, and runs the routing before refusing a declared length; this one says
what the limit is, in the service's JSON error format.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# ~330 bytes of compact JSON per record measured, ~520 indented by 4: 1 KiB leaves room for any formatting.
BODY_BYTES_PER_RECORD = 1024
# Floor of the limit: a small PREDICT_MAX_INSTANCES must not refuse a record sent with generous whitespace.
MIN_BODY_LIMIT_BYTES = 1024 * 1024


def body_limit_bytes(max_instances: int) -> int:
    """The largest body accepted: 1 KiB per allowed record, at least 1 MiB."""
    return max(MIN_BODY_LIMIT_BYTES, max_instances * BODY_BYTES_PER_RECORD)


def body_limit_detail(max_bytes: int, max_instances: int) -> str:
    """The 413 message: the limit and the setting it comes from."""
    return f"request body larger than {max_bytes} bytes (PREDICT_MAX_INSTANCES={max_instances} records)"


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    A Starlette ``HTTPException``: FastAPI re-raises those from its body
    reading (any other error there becomes a 400) and its exception handler
    answers ``{"detail": ...}`` with our status and headers.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail, headers={"Connection": "close"})


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` header as a number, or None when absent or not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answers 413 to an HTTP request whose body is larger than ``max_bytes``, before the body is read.

    The answer closes the connection: the rest of a refused body is never read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail
        body = json.dumps({"detail": detail}).encode()
        self._refusal_start: Message = {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
        self._refusal_body: Message = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        response_started = False

        # Counted even under a declared length: the server frames the body by it, but counting is one addition.
        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.detail)
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            response_started = True
            await send(message)

        try:
            await self.app(scope, receive_counted, send_tracked)
        except BodyTooLargeError:
            # Reached here only if the app let it through (FastAPI's handler normally answers it).
            if response_started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send(self._refusal_start)
        await send(self._refusal_body)
