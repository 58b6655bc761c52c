"""Request bodies are limited before they are read: 1 KiB per allowed record, at least 1 MiB.

Without the limit FastAPI buffers and parses any body before the route counts
its records, so a few hundred MB cost gigabytes. The tests send bodies through
the app (TestClient) and through a real uvicorn server on loopback, with a
declared ``Content-Length`` and chunked.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from inference.app import create_app
from inference.body_limit import MIN_BODY_LIMIT_BYTES, BodyLimitMiddleware, body_limit_bytes
from tests.inference.clients import checked_client, first_check_done
from tests.inference.stores import ServingStore, record_of

# The client fixture configures PREDICT_MAX_INSTANCES=50: the limit is the 1 MiB floor.
LIMIT_AT_50 = MIN_BODY_LIMIT_BYTES
DETAIL_AT_50 = f"request body larger than {LIMIT_AT_50} bytes (PREDICT_MAX_INSTANCES=50 records)"


def oversized_body(record: dict[str, int | str], limit: int) -> bytes:
    """A valid JSON batch of ``record`` just over ``limit`` bytes."""
    count = limit // len(json.dumps(record)) + 10
    body = json.dumps({"instances": [record] * count}).encode()
    assert len(body) > limit
    return body


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_the_limit_is_one_kib_per_record_with_a_floor() -> None:
    assert body_limit_bytes(50) == 1024 * 1024
    assert body_limit_bytes(10_000) == 10_000 * 1024


def test_a_body_over_the_limit_is_a_json_413_counted_in_metrics(client: TestClient, shared_frame: pd.DataFrame) -> None:
    record = record_of(shared_frame, 0)
    body = oversized_body(record, LIMIT_AT_50)
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": DETAIL_AT_50}
    # A chunked body declares no length: it is counted as it arrives.
    response = client.post("/predict", content=chunks(body), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": DETAIL_AT_50}

    assert client.post("/predict", json=record).status_code == 200
    text = client.get("/metrics").text
    assert 'inference_requests_total{method="POST",path="/predict",status="413"} 2.0' in text


def test_a_body_at_the_record_limit_is_accepted_even_indented(
    serving_store: ServingStore, shared_frame: pd.DataFrame
) -> None:
    max_instances = 3000
    instances = [record_of(shared_frame, position) for position in range(max_instances)]
    body = json.dumps({"instances": instances}, indent=4).encode()
    assert len(body) > MIN_BODY_LIMIT_BYTES  # accepted because of the per-record allowance, not the floor
    settings = serving_store.store.settings(predict_max_instances=max_instances)
    with checked_client(create_app(settings)) as client:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text[:500]
        assert len(response.json()["predictions"]) == max_instances
        chunked = client.post("/predict", content=chunks(body), headers={"content-type": "application/json"})
        assert chunked.status_code == 200, chunked.text[:500]


@contextmanager
def running_server(app: FastAPI) -> Iterator[int]:
    """``app`` under a real uvicorn (httptools, as in the image) on a free loopback port; yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


def exchange(port: int, request: bytes) -> bytes:
    """Send raw HTTP bytes and read the answer until the server closes the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(request)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.timeout(120)
def test_a_real_server_refuses_large_bodies_unread_and_keeps_answering(
    serving_store: ServingStore, shared_frame: pd.DataFrame
) -> None:
    record = record_of(shared_frame, 0)
    with running_server(create_app(serving_store.store.settings(predict_max_instances=50))) as port:
        head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        # 500 MB announced, 64 KiB sent: the answer comes without waiting for (or reading) the rest (a server
        # that waited would leave the socket's read timeout to fail the exchange).
        answer = exchange(port, head + b"Content-Length: 500000000\r\n\r\n" + b" " * 65536)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"detail": DETAIL_AT_50}
        assert b"\r\nconnection: close\r\n" in answer.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n"

        body = oversized_body(record, LIMIT_AT_50)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in chunks(body)) + b"0\r\n\r\n"
        answer = exchange(port, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"detail": DETAIL_AT_50}
        assert b"\r\nconnection: close\r\n" in answer.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n"

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert first_check_done(lambda: http.get("/health").json())
            assert http.post("/predict", json=record).status_code == 200
            assert http.post("/predict", json={"instances": [record] * 50}).status_code == 200
            assert 'path="/predict",status="413"} 2.0' in http.get("/metrics").text


def test_an_app_that_reads_past_the_limit_without_answering_gets_the_413_from_the_middleware() -> None:
    """The fallback for an app that does not answer the error itself (FastAPI's handler normally does)."""

    async def reads_everything(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    app = BodyLimitMiddleware(reads_everything, max_bytes=10, detail="at most 10 bytes")
    bare = TestClient(app)  # not entered: the bare app has no lifespan
    # A generator body is sent chunked: no declared length, so only counting can stop it.
    refused = bare.post("/", content=(part for part in [b"12345", b"67890", b"X"]))
    accepted = bare.post("/", content=(part for part in [b"12345", b"67890"]))
    assert (refused.status_code, refused.json()) == (413, {"detail": "at most 10 bytes"})
    assert (accepted.status_code, accepted.text) == (200, "read it all")
