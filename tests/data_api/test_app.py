"""The replica's HTTP contract: batches, portions, windows, restart, persistence, errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from covertype.parsing import parse_payload_rows
from data_api.state import StateStore, StateStoreError
from tests.data_api.replica import BATCH_SIZE, PORTION_SIZE, ROWS_IN_SHARED_CSV, FakeClock, read_rows

AppFactory = Callable[..., FastAPI]


def get_data(client: TestClient, group: int = 1) -> tuple[int, dict]:
    response = client.get("/data", params={"group_number": group})
    return response.status_code, response.json()


def test_batches_come_1_to_10_then_http_400(client: TestClient) -> None:
    served = [get_data(client) for _ in range(12)]
    assert [body["batch_number"] for status, body in served[:10] if status == 200] == list(range(1, 11))
    for status, body in served[10:]:
        assert status == 400
        assert body["detail"].startswith("collection complete")
        assert "group" not in body["detail"].lower()  # else clients would read it as a bad group


def test_every_row_of_a_portion_comes_from_the_current_batch_slice(client: TestClient, covertype_csv: Path) -> None:
    file_rows = read_rows(covertype_csv)
    for batch_number in range(1, 11):
        status, body = get_data(client)
        assert (status, body["batch_number"], body["group_number"]) == (200, batch_number, 1)
        batch_slice = set(file_rows[(batch_number - 1) * BATCH_SIZE : batch_number * BATCH_SIZE])
        portion = [tuple(row) for row in body["data"]]
        assert len(portion) == len(set(portion)) == PORTION_SIZE
        assert set(portion) <= batch_slice


def test_values_are_strings_that_parse_into_clean_rows(client: TestClient) -> None:
    _, body = get_data(client)
    assert all(len(row) == 13 and all(isinstance(value, str) for value in row) for row in body["data"])
    parsed = parse_payload_rows(body["data"])
    assert (len(parsed.rows), parsed.rejected) == (PORTION_SIZE, [])


@pytest.mark.parametrize(("fraction", "size"), [(0.25, 378), (1.0, BATCH_SIZE)])
def test_the_portion_fraction_sets_the_portion_size(build_app: AppFactory, fraction: float, size: int) -> None:
    client = TestClient(build_app(portion_fraction=fraction))
    _, body = get_data(client)
    assert len(body["data"]) == size
    assert len({tuple(row) for row in body["data"]}) == size


def test_groups_are_independent(client: TestClient) -> None:
    assert [get_data(client, 3)[1]["batch_number"] for _ in range(3)] == [1, 2, 3]
    assert get_data(client, 4)[1]["batch_number"] == 1
    assert get_data(client, 3)[1]["batch_number"] == 4


def test_inside_the_window_a_request_gets_another_portion_of_the_same_batch(
    build_app: AppFactory, clock: FakeClock
) -> None:
    client = TestClient(build_app(min_update_time=300))
    assert get_data(client)[1]["batch_number"] == 1
    clock.advance(299)
    first_again = get_data(client)[1]
    clock.advance(1)  # exactly 300 s after the batch started: not "more than" 300 s
    assert first_again["batch_number"] == get_data(client)[1]["batch_number"] == 1
    clock.advance(0.5)
    assert get_data(client)[1]["batch_number"] == 2
    clock.advance(200)
    assert get_data(client)[1]["batch_number"] == 2  # the window counts from when batch 2 started


def test_after_batch_10_the_window_still_serves_batch_10_then_400(build_app: AppFactory, clock: FakeClock) -> None:
    client = TestClient(build_app(min_update_time=60))
    for _ in range(10):
        get_data(client)
        clock.advance(61)
    clock.advance(-61)
    assert get_data(client)[1]["batch_number"] == 10
    clock.advance(59)
    assert get_data(client)[1]["batch_number"] == 10
    clock.advance(2)
    status, body = get_data(client)
    assert status == 400
    assert "collection complete" in body["detail"]
    clock.advance(3600)
    assert get_data(client)[0] == 400


def test_restart_sends_the_group_back_to_batch_1(client: TestClient) -> None:
    for _ in range(11):
        get_data(client, 2)
    assert get_data(client, 2)[0] == 400
    response = client.get("/restart_data_generation", params={"group_number": 2})
    assert response.status_code == 200
    assert response.json() == {"group_number": 2, "message": "group 2 restarted"}
    assert [get_data(client, 2)[1]["batch_number"] for _ in range(2)] == [1, 2]


def test_restarting_a_group_never_served_is_harmless(client: TestClient) -> None:
    response = client.get("/restart_data_generation", params={"group_number": 5})
    assert response.status_code == 200
    assert "not been served yet" in response.json()["message"]
    assert get_data(client, 5)[1]["batch_number"] == 1


def test_state_survives_a_restart_of_the_app(build_app: AppFactory, clock: FakeClock) -> None:
    before = TestClient(build_app(min_update_time=300))
    for _ in range(3):
        get_data(before)
        clock.advance(301)
    clock.advance(-301)
    del before

    after = TestClient(build_app(min_update_time=300))  # new instance, same state dir
    assert get_data(after)[1]["batch_number"] == 3  # still inside batch 3's window
    clock.advance(301)
    assert get_data(after)[1]["batch_number"] == 4
    assert get_data(after, 2)[1]["batch_number"] == 1


@pytest.mark.parametrize("group", [0, 11, -1, 999])
def test_a_bad_group_is_http_400_naming_the_group(client: TestClient, group: int) -> None:
    for path in ("/data", "/restart_data_generation"):
        response = client.get(path, params={"group_number": group})
        assert response.status_code == 400
        assert f"group_number {group} is not a valid group" in response.json()["detail"]


def test_a_non_integer_or_missing_group_is_a_validation_error(client: TestClient) -> None:
    assert client.get("/data", params={"group_number": "one"}).status_code == 422
    assert client.get("/data").status_code == 422


def test_status_shows_the_dataset_and_each_groups_batch(build_app: AppFactory, clock: FakeClock) -> None:
    client = TestClient(build_app(min_update_time=300))
    get_data(client, 1)
    get_data(client, 7)
    clock.advance(301)
    get_data(client, 7)
    status = client.get("/").json()
    assert status["status"] == "ok"
    assert status["dataset"] == {
        "source": str(status["dataset"]["source"]),
        "rows": ROWS_IN_SHARED_CSV,
        "batches": 10,
        "batch_size": BATCH_SIZE,
        "portion_size": PORTION_SIZE,
    }
    assert status["dataset"]["source"].endswith("covertype.csv")
    groups = {group["group_number"]: group for group in status["groups"]}
    assert set(groups) == {1, 7}
    assert (groups[1]["batch_number"], groups[1]["next_request_advances"]) == (1, True)
    assert (groups[7]["batch_number"], groups[7]["next_request_advances"]) == (2, False)
    assert groups[7]["requests_served"] == 2
    assert not groups[7]["complete"]

    # Group 7 through its tenth batch: complete once that batch's window has passed, not before.
    for _ in range(8):
        clock.advance(301)
        get_data(client, 7)
    tenth = {group["group_number"]: group for group in client.get("/").json()["groups"]}[7]
    assert (tenth["batch_number"], tenth["complete"]) == (10, False)
    clock.advance(301)
    assert {group["group_number"]: group for group in client.get("/").json()["groups"]}[7]["complete"] is True


def test_openapi_documents_the_three_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/", "/data", "/restart_data_generation"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_a_broken_state_store_is_503_not_a_silent_reset(build_app: AppFactory, tmp_path: Path) -> None:
    client = TestClient(build_app(), raise_server_exceptions=False)
    assert get_data(client)[1]["batch_number"] == 1
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"this is not an SQLite database" * 100)
    status, body = get_data(client)
    assert status == 503
    assert body["detail"].startswith("state store unavailable")


def test_a_corrupt_state_file_stops_the_start_up_naming_it_and_the_way_out(
    build_app: AppFactory, tmp_path: Path
) -> None:
    state_file = tmp_path / "state" / "state.sqlite3"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(
        StateStoreError, match=r"state\.sqlite3: corrupt \(file is not a database\); move the file aside"
    ):
        build_app()
    assert state_file.read_bytes().startswith(b"this is not"), "the file is left for the operator"


def test_a_state_file_held_by_another_process_is_not_called_corrupt(build_app: AppFactory, tmp_path: Path) -> None:
    """Only corruption gets the advice to move the file aside: a lock would pass, and the state is good."""
    build_app()
    state_file = tmp_path / "state" / "state.sqlite3"
    holder = sqlite3.connect(state_file, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StateStoreError) as caught:
            StateStore(state_file, n_batches=10, busy_timeout_s=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(caught.value) == f"state store {state_file}: cannot be opened for writing: database is locked"
