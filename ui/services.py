"""Cached access to the clients, for the pages: one place decides what is cached and for how long.

Clients are ``st.cache_resource`` (one connection pool per URL, shared by
sessions); fetched data is ``st.cache_data`` with a short TTL so a page
refresh within seconds does not hit every service again. Failures are never
cached: a ``ServiceError`` propagates and the next run retries. Settings are
read on every script run (not the process-wide ``get_settings()``), so the
values in the environment at run time are the ones used.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import ValidationError

from covertype.redaction import public_url
from covertype.settings import Settings
from ui.clients.airflow import AirflowClient, DagStatus, RecentRuns
from ui.clients.data_api import DataApiStatusClient
from ui.clients.data_db import DataDbClient, DataOverview
from ui.clients.errors import NotReadyYet, ServiceError
from ui.clients.inference import Health, InferenceClient, ModelInfo
from ui.clients.tracking import ExperimentOverview, TrackingClient

SHORT_TTL_S = 10
PIPELINE_TTL_S = 15
DATA_TTL_S = 30


def settings() -> Settings:
    """The settings of this run, from the environment; an invalid value is a ``ServiceError`` naming it."""
    try:
        return Settings()
    except ValidationError as error:
        # The value as given, but without a URL's password (e.g. an invalid MLFLOW_UI_URL with user info).
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']).upper()}={public_url(repr(item.get('input')))}: "
            f"{item['msg']}"
            for item in error.errors()
        )
        raise ServiceError("UI settings", f"invalid environment: {problems}", "those variables in .env") from error


def url(value: object) -> str:
    """A configured URL as a string without the trailing slash pydantic adds."""
    return str(value).rstrip("/")


# Clients (one per configuration) ------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def inference_client(base_url: str) -> InferenceClient:
    return InferenceClient(base_url)


@st.cache_resource(show_spinner=False)
def airflow_client(base_url: str, username: str, password: str | None) -> AirflowClient:
    return AirflowClient(base_url, username, password)


@st.cache_resource(show_spinner=False)
def tracking_client(tracking_uri: str, experiment: str, model_name: str, alias: str) -> TrackingClient:
    return TrackingClient(tracking_uri, experiment, model_name, alias)


@st.cache_resource(show_spinner=False)
def data_db_client(db_url: str) -> DataDbClient:
    return DataDbClient(db_url)


@st.cache_resource(show_spinner=False)
def data_api_client(base_url: str) -> DataApiStatusClient:
    return DataApiStatusClient(base_url)


# Fetched data (short TTL; keyed by the configuration so two setups never share an entry) ----------


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def model_info(base_url: str) -> ModelInfo:
    return inference_client(base_url).model_info()


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def inference_health(base_url: str) -> Health | None:
    """/health, or None when it cannot be read: only a warning hangs on it, and an uncached failure would cost
    every rerun the status timeout (a hung host) or a request (a proxy that passes only /model and /predict)."""
    try:
        return inference_client(base_url).health()
    except ServiceError:
        return None


@st.cache_data(ttl=PIPELINE_TTL_S, show_spinner=False)
def dag_runs(
    base_url: str, username: str, password: str | None, limit: int, hide_collection_complete: bool
) -> RecentRuns:
    return airflow_client(base_url, username, password).recent_runs(
        limit, hide_collection_complete=hide_collection_complete
    )


@st.cache_data(ttl=PIPELINE_TTL_S, show_spinner=False)
def dag_status(base_url: str, username: str, password: str | None) -> DagStatus:
    return airflow_client(base_url, username, password).dag_status()


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def experiment_overview(tracking_uri: str, experiment: str, model_name: str, alias: str) -> ExperimentOverview:
    return tracking_client(tracking_uri, experiment, model_name, alias).overview()


@st.cache_data(ttl=DATA_TTL_S, show_spinner=False)
def data_overview(db_url: str) -> DataOverview:
    return data_db_client(db_url).overview()


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def data_api_status(base_url: str) -> Any:
    return data_api_client(base_url).status()


def show_error(error: ServiceError, *, warning: bool = False) -> None:
    """The one way a page reports a failed call: the service, the problem and what to check.

    ``NotReadyYet`` (no model yet, DAG not parsed yet) is a warning: it is the
    normal state right after start-up and passes by itself. So is a problem the
    page reports beside a working answer (``warning``), e.g. a promoted version
    that failed to load while the service still answers with the one before.
    """
    message = f"**{error.service}**: {error.problem}.\n\nCheck {error.hint}."
    if isinstance(error, NotReadyYet):
        st.warning(message, icon=":material/hourglass_empty:")
    elif warning:
        st.warning(message, icon=":material/warning:")
    else:
        st.error(message, icon=":material/error:")
