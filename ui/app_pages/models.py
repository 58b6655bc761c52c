"""The MLflow experiment's training runs over time, and the version the configured alias (MODEL_ALIAS) points at."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covertype.redaction import public_url
from ui import services
from ui.clients.errors import ServiceError
from ui.clients.tracking import ExperimentOverview, ProductionModel, browser_url, run_url
from ui.presentation import recall_caption

HEADLINE_METRICS = ("macro_f1", "accuracy", "rows_used", "batches_seen")


def _ui_url() -> str | None:
    """Where a browser reaches MLflow (MLFLOW_UI_URL, else a web tracking URI), without credentials."""
    config = services.settings()
    ui_url = None if config.mlflow_ui_url is None else services.url(config.mlflow_ui_url)
    return browser_url(ui_url, config.resolved_mlflow_tracking_uri)


def _production(production: ProductionModel | None, overview: ExperimentOverview) -> None:
    st.subheader("Production model")
    if production is None:
        config = services.settings()
        st.info(
            f"No version of `{config.model_name}` has the alias `{config.model_alias}` yet: the pipeline promotes "
            "its first model after its first successful run (see the Pipeline page)."
        )
        return
    st.markdown(
        f"`models:/{production.name}@{production.alias}` is **version {production.version}**, "
        f"from run `{production.run_id}`"
        + (f", registered {production.created_at:%Y-%m-%d %H:%M} UTC" if production.created_at else "")
    )
    if production.run_missing:
        st.warning(
            f"Run `{production.run_id}` no longer exists in MLflow (deleted for good, e.g. by `mlflow gc`): the "
            "version is still registered and served, but its metrics are gone."
        )
        return
    columns = st.columns(len(HEADLINE_METRICS))
    for column, name in zip(columns, HEADLINE_METRICS, strict=True):
        value = production.metrics.get(name)
        shown = "—" if value is None else (f"{value:.3f}" if name in ("macro_f1", "accuracy") else f"{value:,.0f}")
        column.metric(name, shown)
    recalls = recall_caption(production.metrics)
    if recalls:
        st.caption(recalls)
    link = run_url(_ui_url(), overview.experiment_id or "0", production.run_id or "")
    if link and production.run_id:
        st.link_button("Open the production run in MLflow", link)


def _runs_table(overview: ExperimentOverview) -> pd.DataFrame:
    ui_url = _ui_url()
    rows = []
    for run in reversed(overview.runs):
        rows.append(
            {
                "started (UTC)": run.started_at.replace(tzinfo=None) if run.started_at else None,
                "run": run.run_name,
                "status": run.status,
                "macro_f1": run.metrics.get("macro_f1"),
                "accuracy": run.metrics.get("accuracy"),
                "rows_used": run.metrics.get("rows_used"),
                "batches_seen": run.metrics.get("batches_seen"),
                "model versions": ", ".join(run.model_versions),
                "dag_run_id": run.tags.get("dag_run_id"),
                "MLflow": run_url(ui_url, overview.experiment_id or "0", run.run_id) or run.run_id,
            }
        )
    return pd.DataFrame(rows)


def render() -> None:
    title, refresh = st.columns([5, 1], vertical_alignment="bottom")
    title.title("Models")
    config = services.settings()
    st.caption(
        f"MLflow at `{public_url(config.resolved_mlflow_tracking_uri)}`, experiment `{config.mlflow_experiment_name}`, "
        f"model `{config.model_name}@{config.model_alias}`"
    )
    # A run that just finished shows without waiting for the cache to expire.
    if refresh.button("Refresh", key="models_refresh"):
        services.experiment_overview.clear()
    try:
        overview = services.experiment_overview(
            config.resolved_mlflow_tracking_uri, config.mlflow_experiment_name, config.model_name, config.model_alias
        )
    except ServiceError as error:
        services.show_error(error)
        return
    if overview.production_refused is not None:
        st.subheader("Production model")
        services.show_error(ServiceError(*overview.production_refused))
    else:
        _production(overview.production, overview)
    st.subheader("Training runs")
    if overview.experiment_id is None or not overview.runs:
        st.info(f"The experiment `{config.mlflow_experiment_name}` has no training runs yet.")
        return
    history = pd.DataFrame(
        {
            # Naive UTC times: the chart's axis reads them as they are.
            "started": [run.started_at.replace(tzinfo=None) if run.started_at else None for run in overview.runs],
            "macro_f1": [run.metrics.get("macro_f1") for run in overview.runs],
            "rows_used": [run.metrics.get("rows_used") for run in overview.runs],
        }
    ).set_index("started")
    left, right = st.columns(2)
    left.markdown("**Macro-F1 on the evaluation rows**")
    left.line_chart(history[["macro_f1"]], y_label="macro-F1")
    right.markdown("**Rows used for training**")
    right.line_chart(history[["rows_used"]], y_label="rows")
    table = _runs_table(overview)
    has_links = _ui_url() is not None
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "MLflow": st.column_config.LinkColumn("MLflow", display_text="open run")
            if has_links
            else st.column_config.TextColumn("run id"),
            "macro_f1": st.column_config.NumberColumn(format="%.4f"),
            "accuracy": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    if not has_links:
        st.caption("Set MLFLOW_UI_URL to the browser address of MLflow to get a link per run.")


render()
