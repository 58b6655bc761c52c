"""The Data page: an SQLite data DB filled through ``covertype.store`` and the real data API replica."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine
from streamlit.testing.v1 import AppTest

from covertype import store
from tests.ui.apptest import all_text, open_page, texts
from tests.ui.backends import data_api_server, fill_data_db
from tests.ui.servers import serve


@pytest.fixture
def data_db(ui_env, tmp_path: Path, covertype_csv: Path) -> str:
    url = fill_data_db(tmp_path / "covertype.db", covertype_csv, batches=3, rows_per_batch=120)
    ui_env.setenv("DATA_DB_URL", url)
    return url


def _frames(app) -> list:
    return [frame.value for frame in app.dataframe]


def test_a_data_db_of_an_earlier_release_shows_its_data(data_db, ui_env) -> None:
    """Its tables predate ``pending_payloads``, which only the pipeline's next run creates: the collected
    data is there all the same (a paused DAG would never create the table)."""
    engine = create_engine(data_db)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE pending_payloads")
    engine.dispose()
    app = open_page("data")  # no data API here: only its status is an error
    assert not [text for text in texts(app.error) if "Data DB" in text]
    assert not [text for text in texts(app.info) if "no tables yet" in text]
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["distinct observations"] == "360"


def test_a_payload_fetched_and_not_stored_is_mentioned(data_db, ui_env) -> None:
    engine = store.make_engine(data_db)
    store.keep_pending_payload(engine, "scheduled__4", {"group_number": 1, "batch_number": 4, "rows": []})
    engine.dispose()
    app = open_page("data")
    assert [text for text in texts(app.info) if text.startswith("1 payload(s) fetched and not stored yet")]


def test_a_payload_fetched_after_the_page_was_read_shows_on_refresh(data_db, ui_env) -> None:
    app = open_page("data")
    assert not [text for text in texts(app.info) if "fetched and not stored yet" in text]
    engine = store.make_engine(data_db)
    store.keep_pending_payload(engine, "scheduled__4", {"group_number": 1, "batch_number": 4, "rows": []})
    engine.dispose()

    app.button(key="data_refresh").click().run()

    assert [text for text in texts(app.info) if text.startswith("1 payload(s) fetched and not stored yet")]


def test_rows_per_batch_classes_and_rejects(data_db, ui_env, covertype_csv, tmp_path) -> None:
    with data_api_server(covertype_csv, tmp_path / "replica", portions=2) as url:
        ui_env.setenv("DATA_API_URL", url)
        app = open_page("data")
    assert not app.error, texts(app.error)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["fetches (DAG runs)"] == "3"
    assert metrics["batches seen"] == "3"
    assert metrics["rejected rows"] == "2"
    assert metrics["distinct observations"] == "360"
    assert metrics["rows in the dataset"] == "15,120"
    frames = _frames(app)
    [groups] = [frame for frame in frames if "requests_served" in frame.columns]
    assert groups["batch_number"].tolist() == [2]
    [per_batch] = [frame for frame in frames if "rows_duplicate" in frame.columns and "fetches" in frame.columns]
    assert per_batch["batch_number"].tolist() == [1, 2, 3]
    assert per_batch["rows_stored"].tolist() == [120, 120, 120]
    assert per_batch["rows_duplicate"].tolist() == [0, 10, 10]
    assert per_batch["rows_rejected"].tolist() == [0, 2, 0]
    [classes] = [frame for frame in frames if "observations" in frame.columns and "name" in frame.columns]
    assert classes["observations"].sum() == 360
    assert dict(zip(classes["Cover_Type"], classes["name"], strict=True)).items() <= {
        1: "Spruce/Fir", 2: "Lodgepole Pine", 3: "Ponderosa Pine", 4: "Cottonwood/Willow", 5: "Aspen",
        6: "Douglas-fir", 7: "Krummholz",
    }.items()  # fmt: skip
    [repeats] = [frame for frame in frames if "times served" in frame.columns]
    assert repeats["distinct observations"].sum() == 360
    assert (repeats["times served"] * repeats["distinct observations"]).sum() == 360 + 10 + 10  # batches 2, 3 re-serve
    [rejects] = [frame for frame in frames if "detail" in frame.columns]
    assert sorted(rejects["reason"]) == ["unknown_category", "wrong_field_count"]
    assert any("C9999" in detail for detail in rejects["detail"])
    assert len(app.get("vega_lite_chart")) == 2


def test_database_without_tables_is_reported_as_empty(ui_env, tmp_path) -> None:
    ui_env.setenv("DATA_DB_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    app = open_page("data")
    assert "no tables yet" in all_text(app)


def test_unreachable_data_api_and_data_db_are_named(ui_env) -> None:
    ui_env.setenv("DATA_DB_URL", "mysql+pymysql://covertype:secret-pw@127.0.0.1:1/covertype")
    app = open_page("data")
    errors = texts(app.error)
    assert len(errors) == 2
    api_error, db_error = errors
    assert "Data API" in api_error
    assert "DATA_API_URL" in api_error
    assert "Data DB" in db_error
    assert "DATA_DB_URL" in db_error
    assert "secret-pw" not in all_text(app)


def _data_page_with_status(ui_env, tmp_path: Path, answer: object) -> AppTest:
    """The Data page beside a data API whose ``GET /`` answers ``answer``, and a fresh data DB."""
    stub = FastAPI()

    @stub.get("/")
    def status() -> object:
        return answer

    ui_env.setenv("DATA_DB_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    with serve(stub) as url:
        ui_env.setenv("DATA_API_URL", url)
        return open_page("data")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (["ok"], "answered a JSON list, not the status object"),
        ("ok", "answered a JSON str, not the status object"),
        ({"dataset": {"rows": "15120", "batches": None}, "groups": "all"}, None),
    ],
    ids=["list", "string", "odd-fields"],
)
def test_a_status_document_of_another_shape_is_one_error_or_shown_as_sent(
    ui_env, tmp_path: Path, answer: object, expected: str | None
) -> None:
    """The course API's GET / is not ours: an unexpected shape must not break the page or hide the data DB."""
    app = _data_page_with_status(ui_env, tmp_path, answer)
    assert not app.exception, app.exception
    assert "no tables yet" in all_text(app), "the data DB section still renders"
    if expected is None:
        assert not app.error, texts(app.error)
        metrics = {metric.label: metric.value for metric in app.metric}
        assert (metrics["rows in the dataset"], metrics["batches"]) == ("15120", "—")
    else:
        [error] = texts(app.error)
        assert "Data API" in error
        assert expected in error


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        ({}, "info", "has no `status` field (nor `dataset` or `groups`)"),
        ({"dataset": {"rows": 15120}}, "info", "has no `status` field: see the full answer below"),
        ({"service": "course API", "status": "degraded"}, "warning", "course API says its status is **degraded**"),
    ],
    ids=["empty", "no-status", "degraded"],
)
def test_a_status_document_that_does_not_say_up_is_not_shown_as_up(
    ui_env, tmp_path: Path, answer: dict[str, object], kind: str, words: str
) -> None:
    """An answer is not a status: green "up" only when the document says so."""
    app = _data_page_with_status(ui_env, tmp_path, answer)
    assert not app.success, texts(app.success)
    [message] = [text for text in texts(getattr(app, kind)) if text.startswith("The data API answers")]
    assert words in message
