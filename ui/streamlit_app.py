"""The UI's entry point and router: ``streamlit run ui/streamlit_app.py``.

Pages live in ``app_pages/`` and only render; calls to services go through
``ui.services`` (cached) and ``ui.clients`` (plain HTTP / DB clients).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder on sys.path, not the repository root; the pages
# import `ui.*` (and the Docker image has `covertype` installed), so add the root once.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402

from covertype.redaction import public_url  # noqa: E402
from ui import services  # noqa: E402
from ui.clients.errors import ServiceError  # noqa: E402

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"

st.set_page_config(page_title="Forest Cover MLOps", page_icon=":material/forest:", layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES_DIR / "predict.py", title="Predict", icon=":material/forest:", default=True),
        st.Page(PAGES_DIR / "batch.py", title="Batch", icon=":material/table_view:"),
        st.Page(PAGES_DIR / "pipeline.py", title="Pipeline", icon=":material/schema:"),
        st.Page(PAGES_DIR / "models.py", title="Models", icon=":material/model_training:"),
        st.Page(PAGES_DIR / "data.py", title="Data", icon=":material/database:"),
    ]
)

try:
    config = services.settings()
except ServiceError as error:  # checked once here, so no page starts with settings it cannot use
    services.show_error(error)
    st.stop()

with st.sidebar:  # without user info: MLFLOW_TRACKING_URI may carry a password (so may the others)
    st.caption(
        "Services (from the environment):\n\n"
        f"- inference: `{public_url(services.url(config.inference_url))}`\n"
        f"- Airflow: `{public_url(services.url(config.airflow_api_url))}`\n"
        f"- MLflow: `{public_url(config.resolved_mlflow_tracking_uri)}`\n"
        f"- data API: `{public_url(services.url(config.data_api_url))}`"
    )

navigation.run()
