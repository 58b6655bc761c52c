"""Drive the UI with Streamlit's ``AppTest``: open a page, read its messages."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP_PATH = Path(__file__).resolve().parents[2] / "ui" / "streamlit_app.py"
RUN_TIMEOUT_S = 60


def open_page(page: str) -> AppTest:
    """Run the router, then the page ``page`` (predict, batch, pipeline, models or data)."""
    app = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT_S).run()
    if page != "predict":
        app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [item.value for item in app.exception]
    return app


def texts(elements: object) -> list[str]:
    """The text values of an element list (errors, warnings, successes...)."""
    return [str(element.value) for element in elements]  # type: ignore[attr-defined]


def all_text(app: AppTest) -> str:
    """Every markdown, caption, message and title of the page, joined, for containment checks."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
        parts.extend(texts(getattr(app, kind)))
    return "\n".join(parts)


def every_element_text(app: AppTest) -> str:
    """Every element of the page and of the sidebar as sent to the browser (links, tables and widgets too)."""
    return "\n".join(str(node.proto) for block in (app.sidebar, app.main) for node in block)
