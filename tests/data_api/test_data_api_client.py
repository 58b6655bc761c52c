"""``covertype.data_api_client`` against the replica served by a real uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Response

from covertype.data_api_client import (
    BadGroup,
    CollectionComplete,
    DataApiClient,
    DataBatch,
    ServiceUnavailable,
    UnexpectedResponse,
)
from covertype.parsing import parse_payload_rows
from tests.data_api.replica import PORTION_SIZE, free_loopback_port, serve_in_thread

GOOD_ROW = ["2596", "51", "3", "258", "0", "510", "221", "232", "148", "6279", "Rawah", "C7745", "5"]


@pytest.fixture
def replica_url(build_app: Callable[..., FastAPI]) -> Iterator[str]:
    """The replica with groups 1..3 only, so that the client can send a group the server refuses."""
    with serve_in_thread(build_app(data_api_groups=3)) as base_url:
        yield base_url


def test_fetch_batch_returns_a_typed_portion_of_clean_rows(replica_url: str) -> None:
    with DataApiClient(replica_url, timeout_s=10) as client:
        batch = client.fetch_batch(2)
        assert isinstance(batch, DataBatch)
        assert (batch.group_number, batch.batch_number, len(batch.data)) == (2, 1, PORTION_SIZE)
        assert parse_payload_rows(batch.data).rejected == []
        assert client.fetch_batch(2).batch_number == 2
        assert client.status()["dataset"]["rows"] == 15_120


def test_after_the_last_batch_the_client_raises_collection_complete(replica_url: str) -> None:
    with DataApiClient(replica_url, timeout_s=10) as client:
        assert [client.fetch_batch(1).batch_number for _ in range(10)] == list(range(1, 11))
        with pytest.raises(CollectionComplete, match="group 1 has received every batch"):
            client.fetch_batch(1)
        client.restart(1)
        assert client.fetch_batch(1).batch_number == 1


def test_a_group_the_server_refuses_raises_bad_group(replica_url: str) -> None:
    with DataApiClient(replica_url, timeout_s=10) as client, pytest.raises(BadGroup, match="not a valid group"):
        client.fetch_batch(5)  # inside the client's 1..10, outside this replica's 1..3: the server says no


def test_a_group_outside_1_to_10_is_refused_before_any_request(replica_url: str) -> None:
    with DataApiClient(replica_url, timeout_s=10) as client:
        with pytest.raises(BadGroup, match=r"outside 1\.\.10"):
            client.fetch_batch(11)
        assert client.status()["groups"] == []


def test_a_closed_port_raises_service_unavailable() -> None:
    with (
        DataApiClient(f"http://127.0.0.1:{free_loopback_port()}", timeout_s=5) as client,
        pytest.raises(ServiceUnavailable, match="unreachable"),
    ):
        client.fetch_batch(1)


def test_a_5xx_answer_raises_service_unavailable(replica_url: str, tmp_path: Path) -> None:
    with DataApiClient(replica_url, timeout_s=10) as client:
        client.fetch_batch(1)
        (tmp_path / "state" / "state.sqlite3").write_bytes(b"not a database" * 100)
        with pytest.raises(ServiceUnavailable, match="answered 503"):
            client.fetch_batch(1)


def test_rows_that_are_not_lists_are_rejected_one_by_one_and_the_good_rows_kept() -> None:
    good = GOOD_ROW
    odd_api = FastAPI()

    @odd_api.get("/data")
    def data(group_number: int) -> dict[str, object]:
        return {"group_number": group_number, "batch_number": 1, "data": [good, None, "a row", 7, {"a": 1}, good]}

    with serve_in_thread(odd_api) as base_url, DataApiClient(base_url, timeout_s=10) as client:
        batch = client.fetch_batch(1)
    parsed = parse_payload_rows(batch.data)
    assert len(parsed.rows) == 2
    assert [(rejected.position, rejected.reason.value) for rejected in parsed.rejected] == [
        (position, "wrong_field_count") for position in (1, 2, 3, 4)
    ]
    assert all("not a list" in rejected.detail for rejected in parsed.rejected)


def test_a_lone_surrogate_in_one_field_loses_no_row_of_the_answer() -> None:
    """Pydantic's JSON reader refuses the whole answer for it; Python's reads it, and the store makes it storable."""
    odd_api = FastAPI()
    answer = json.dumps({"group_number": 1, "batch_number": 1, "data": [GOOD_ROW, GOOD_ROW]})
    body = answer.replace('"2596"', '"2596\\ud800"', 1)  # JSON's escape of a lone surrogate, in the first row

    @odd_api.get("/data")
    def data(group_number: int) -> Response:
        return Response(body.encode(), media_type="application/json")

    with serve_in_thread(odd_api) as base_url, DataApiClient(base_url, timeout_s=10) as client:
        batch = client.fetch_batch(1)
    parsed = parse_payload_rows(batch.data)
    assert len(parsed.rows) == 1
    [rejected] = parsed.rejected
    assert (rejected.position, rejected.reason.value) == (0, "non_numeric")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"group_number": 2, "batch_number": 1, "data": [GOOD_ROW]}, "answered group 2 .* request for group 1"),
        ({"group_number": 1, "batch_number": 3, "data": []}, "group 1 batch 3 with no rows"),
    ],
)
def test_an_answer_for_another_group_or_without_rows_breaks_the_contract(
    answer: dict[str, object], message: str
) -> None:
    odd_api = FastAPI()

    @odd_api.get("/data")
    def data(group_number: int) -> dict[str, object]:
        return answer

    with (
        serve_in_thread(odd_api) as base_url,
        DataApiClient(base_url, timeout_s=10) as client,
        pytest.raises(UnexpectedResponse, match=message),
    ):
        client.fetch_batch(1)


@pytest.mark.parametrize(
    ("status", "body", "media_type", "raised", "message"),
    [
        (
            400,
            '{"detail": "Ya se recolectó toda la información mínima necesaria"}',
            "application/json",
            CollectionComplete,
            "received every batch: Ya se recolectó",
        ),
        (400, '{"detail": "Número de grupo inválido"}', "application/json", BadGroup, "refused group 1"),
        (422, '{"detail": [{"loc": ["query", "group_number"]}]}', "application/json", BadGroup, "refused group 1"),
        (
            400,
            "<html><body>400 Bad Request: nginx</body></html>",
            "text/html",
            UnexpectedResponse,
            "answered 400 on /data: <html>",
        ),
        (
            400,
            '{"detail": "Invalid query parameter"}',
            "application/json",
            UnexpectedResponse,
            "Invalid query parameter",
        ),
    ],
)
def test_a_400_ends_the_collection_only_when_it_says_so(
    status: int, body: str, media_type: str, raised: type[Exception], message: str
) -> None:
    """Read as "complete", a proxy's 400 would end every later run as skipped (a success) without a word."""
    odd_api = FastAPI()

    @odd_api.get("/data")
    def data(group_number: int) -> Response:
        return Response(body, status_code=status, media_type=media_type)

    with (
        serve_in_thread(odd_api) as base_url,
        DataApiClient(base_url, timeout_s=10) as client,
        pytest.raises(raised, match=message),
    ):
        client.fetch_batch(1)


def test_an_answer_that_cannot_be_decoded_breaks_the_contract() -> None:
    """It was delivered (the batch may have moved on): not a network error to retry."""
    odd_api = FastAPI()

    @odd_api.get("/data")
    def data(group_number: int) -> Response:
        return Response(b"not gzip at all", headers={"content-encoding": "gzip"}, media_type="application/json")

    with (
        serve_in_thread(odd_api) as base_url,
        DataApiClient(base_url, timeout_s=10) as client,
        pytest.raises(UnexpectedResponse, match="could not be read"),
    ):
        client.fetch_batch(1)
