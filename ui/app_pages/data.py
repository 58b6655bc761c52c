"""What the data DB holds (read-only), and the data API's status endpoint."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from covertype.redaction import public_url
from ui import services
from ui.clients.data_db import DataOverview
from ui.clients.errors import ServiceError


def _shown(value: Any) -> str:
    """A status figure for a metric: a thousands separator for a count, as sent otherwise, "—" if absent."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# What a data API's status says when it is up (the replica's "ok"; "up" and "healthy" are common too).
UP_STATES = ("ok", "up", "healthy")


def _status_line(status: dict[str, Any]) -> None:
    """Green only when the document says the API is up: that it answered is not enough.

    The course API's status document is not ours: without a ``status`` field
    the page says so, and the full answer below shows what came instead.
    """
    name = status.get("service") or "the data API"
    state = status.get("status")
    if state is None:
        st.info(
            "The data API answers, but its status document has no `status` field"
            + ("" if {"dataset", "groups"} & status.keys() else " (nor `dataset` or `groups`)")
            + ": see the full answer below."
        )
    elif str(state).strip().lower() in UP_STATES:
        st.success(f"The data API answers: {name} is **{state}**.")
    else:
        st.warning(f"The data API answers, but {name} says its status is **{state}**: see the full answer below.")


def _data_api(base_url: str) -> None:
    st.subheader("Data API")
    st.caption(f"`GET {public_url(base_url)}/` (status only: fetching batches is the DAG's job, one request per run)")
    try:
        status = services.data_api_status(base_url)
    except ServiceError as error:
        services.show_error(error)
        return
    _status_line(status)
    # Read defensively: the course API's status document is not ours, and may differ from the replica's.
    dataset = status.get("dataset")
    if isinstance(dataset, dict) and dataset:
        columns = st.columns(4)
        columns[0].metric("rows in the dataset", _shown(dataset.get("rows")))
        columns[1].metric("batches", _shown(dataset.get("batches")))
        columns[2].metric("rows per portion", _shown(dataset.get("portion_size")))
        columns[3].metric("batch window (s)", _shown(status.get("min_update_time")))
    groups = status.get("groups")
    if isinstance(groups, list) and groups and all(isinstance(group, dict) for group in groups):
        st.dataframe(pd.DataFrame(groups), hide_index=True, width="stretch")
    with st.expander("Full answer"):
        st.json(status)


def _data_db(overview: DataOverview) -> None:
    if not overview.initialised:
        st.info("The data DB has no tables yet: the pipeline creates them in its first run.")
        return
    counts = overview.table_counts
    columns = st.columns(4)
    columns[0].metric("distinct observations", f"{counts.get('observations', 0):,}")
    columns[1].metric("fetches (DAG runs)", f"{counts.get('fetches', 0):,}")
    columns[2].metric("batches seen", len(overview.rows_per_batch))
    columns[3].metric("rejected rows", f"{counts.get('rejected_rows', 0):,}")
    pending = counts.get("pending_payloads", 0)
    if pending:
        st.info(
            f"{pending} payload(s) fetched and not stored yet: a run between its fetch and store steps, or one "
            "whose store step failed (clear that run in Airflow: its fetch hands the payload on, no new request)."
        )
    if overview.rows_per_batch.empty:
        st.info("No batch stored yet.")
        return
    left, right = st.columns(2)
    with left:
        st.markdown("**Rows per batch**")
        per_batch = overview.rows_per_batch.assign(batch=overview.rows_per_batch["batch_number"].astype(str))
        st.bar_chart(per_batch, x="batch", y=["rows_stored", "rows_duplicate", "rows_rejected"], sort=False)
        st.dataframe(overview.rows_per_batch, hide_index=True, width="stretch")
    with right:
        st.markdown("**Class distribution (distinct observations)**")
        st.bar_chart(overview.class_distribution, x="name", y="observations", horizontal=True, sort=False)
        st.dataframe(overview.class_distribution, hide_index=True, width="stretch")
    st.markdown("**Rejected rows**")
    if overview.rejected_rows.empty:
        st.caption("No row has been rejected.")
    else:
        st.dataframe(overview.rejects_by_reason, hide_index=True)
        st.dataframe(overview.rejected_rows, hide_index=True, width="stretch")
    st.markdown("**Repeats** (the API re-serves rows: each is stored once and trained on once)")
    st.dataframe(
        overview.repeat_counts.rename(columns={"times_seen": "times served", "observations": "distinct observations"}),
        hide_index=True,
    )
    with st.expander("Fetches (one per DAG run), newest first; times in UTC"):
        st.dataframe(overview.fetches, hide_index=True, width="stretch")


def render() -> None:
    title, refresh = st.columns([5, 1], vertical_alignment="bottom")
    title.title("Data")
    config = services.settings()
    # A batch that was just stored shows without waiting for the cache to expire.
    if refresh.button("Refresh", key="data_refresh"):
        services.data_overview.clear()
        services.data_api_status.clear()
    _data_api(services.url(config.data_api_url))
    st.subheader("Data DB")
    try:
        client = services.data_db_client(config.resolved_data_db_url)
        st.caption(f"`{client.display_url}`, read-only")
        overview = services.data_overview(config.resolved_data_db_url)
    except ServiceError as error:
        services.show_error(error)
        return
    _data_db(overview)


render()
