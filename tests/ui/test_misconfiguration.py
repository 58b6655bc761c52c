"""Settings the UI cannot use, and services that answer something else: a message naming what to fix on
the page, never a stack trace."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tests.ui.apptest import every_element_text, open_page, texts
from tests.ui.servers import closed_url, serve

PAGES = ("predict", "batch", "pipeline", "models", "data")


@pytest.mark.parametrize("page", PAGES)
def test_an_invalid_setting_is_named_before_any_page_runs(ui_env, page: str) -> None:
    ui_env.setenv("INFERENCE_URL", "localhost:8000")  # no scheme: not a URL
    app = open_page(page)  # fails on any exception
    [error] = texts(app.error)
    assert "UI settings" in error
    assert "INFERENCE_URL='localhost:8000'" in error
    assert not app.title  # the page itself did not start


@pytest.mark.parametrize("page", PAGES)
def test_a_password_in_the_tracking_uri_is_shown_on_no_page(ui_env, page: str) -> None:
    """The sidebar and the Models page name the tracking URI, and MLflow's errors quote it: without user info."""
    address = closed_url().removeprefix("http://")
    ui_env.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@{address}")
    app = open_page(page)
    shown = every_element_text(app)
    assert f"http://{address}" in shown  # named, as the service to check
    assert "s3cret" not in shown
    assert "alice" not in shown


@pytest.mark.parametrize(
    ("variable", "page"),
    [("INFERENCE_URL", "predict"), ("AIRFLOW_API_URL", "pipeline"), ("DATA_API_URL", "data")],
)
def test_a_password_in_another_services_url_is_not_in_its_cannot_connect_error(
    ui_env, variable: str, page: str
) -> None:
    address = closed_url().removeprefix("http://")
    ui_env.setenv(variable, f"http://bob:p@ss@{address}")  # a raw '@' in the password: HTTP clients accept it
    shown = every_element_text(open_page(page))
    assert f"http://{address}" in shown
    assert "p@ss" not in shown
    assert "ss@" not in shown


def test_an_invalid_url_setting_is_named_without_its_password(ui_env) -> None:
    ui_env.setenv("MLFLOW_UI_URL", "http://bob:s3cret@mlflow:99999/")
    [error] = texts(open_page("models").error)
    assert "MLFLOW_UI_URL='http://mlflow:99999/'" in error
    assert "s3cret" not in error


def test_a_data_db_url_whose_driver_is_not_installed_is_named(ui_env) -> None:
    ui_env.setenv("DATA_DB_URL", "mysql://covertype:secret-pw@data-db:3306/covertype")  # mysql:// means MySQLdb
    app = open_page("data")
    [error] = [message for message in texts(app.error) if "Data DB" in message]
    assert "cannot use DATA_DB_URL" in error
    assert "mysql+pymysql://" in error
    assert "secret-pw" not in error


def test_a_tracking_uri_mlflow_cannot_use_is_named(ui_env) -> None:
    ui_env.setenv("MLFLOW_TRACKING_URI", "mlflow:5000")  # no scheme
    app = open_page("models")
    [error] = texts(app.error)
    assert "MLflow" in error
    assert "'mlflow:5000'" in error
    assert "MLFLOW_TRACKING_URI" in error


def test_a_web_page_where_the_inference_api_should_be_is_reported(ui_env) -> None:
    web_page = FastAPI()

    @web_page.get("/{path:path}")
    def page(path: str) -> HTMLResponse:
        return HTMLResponse("<html><body>Some other app</body></html>")

    with serve(web_page) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("predict")
    [error] = texts(app.error)
    assert "GET /model answered 200 with a body that is not JSON (text/html" in error
    assert "INFERENCE_URL" in error


def test_a_metric_mlflow_reports_as_nan_does_not_break_the_page(ui_env) -> None:
    inference = FastAPI()

    @inference.get("/model")
    def model() -> dict[str, object]:  # NaN in MLflow arrives as null in JSON
        metrics = {"macro_f1": 0.79, "champion_macro_f1": None}
        return {"name": "covertype", "version": "3", "alias": "production", "run_id": "abc", "metrics": metrics}

    with serve(inference) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("predict")
    assert not app.error, texts(app.error)
    assert any("covertype version 3" in caption for caption in texts(app.caption))
