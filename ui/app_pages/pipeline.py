"""Watch and drive the DAG ``covertype_pipeline`` through the Airflow REST API v2."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from covertype.redaction import public_url
from ui import services
from ui.clients.airflow import DagRun, RecentRuns
from ui.clients.errors import ServiceError
from ui.presentation import FETCH_TASK, runs_frame, short_time

KEY = "pipeline_"
RECENT_RUNS = 15


def _airflow_args() -> tuple[str, str, str | None]:
    config = services.settings()
    return services.url(config.airflow_api_url), config.airflow_username, config.airflow_password


def _set_paused() -> None:
    """Callback of the pause toggle: PATCH the DAG, and put the toggle back if Airflow refused."""
    wanted = bool(st.session_state[f"{KEY}paused"])
    try:
        status = services.airflow_client(*_airflow_args()).set_paused(wanted)
    except ServiceError as error:
        st.session_state[f"{KEY}paused"] = not wanted
        st.session_state[f"{KEY}flash"] = ("error", error)
        return
    services.dag_status.clear()
    word = "paused" if status.is_paused else "unpaused: runs follow the schedule"
    st.session_state[f"{KEY}flash"] = ("success", f"DAG `{status.dag_id}` {word}.")


def _trigger() -> None:
    """Callback of the trigger button: queue a manual run, unless one is already queued or running.

    A second click (or a click after a slow answer) would otherwise queue a second run, which fetches
    within the same batch window again once the first ends.
    """
    client = services.airflow_client(*_airflow_args())
    try:
        unfinished = client.unfinished_runs()
        if unfinished:
            newest = unfinished[0]
            st.session_state[f"{KEY}flash"] = (
                "warning",
                f"Run `{newest.run_id}` is {newest.state}: no other run triggered. Trigger again once it has ended.",
            )
            return
        run = client.trigger_run()
    except ServiceError as error:
        st.session_state[f"{KEY}flash"] = ("error", error)
        return
    services.dag_runs.clear()
    st.session_state[f"{KEY}flash"] = ("success", f"Triggered run `{run.run_id}` (state: {run.state}).")


def _show_flash() -> None:
    flash = st.session_state.pop(f"{KEY}flash", None)
    if flash is None:
        return
    kind, payload = flash
    if kind == "error":
        services.show_error(payload)
    elif kind == "warning":
        st.warning(payload)
    else:
        st.success(payload)


def _explain_hidden(recent: RecentRuns, is_paused: bool) -> None:
    """Say how many runs are hidden because the collection was complete, and how to stop them coming."""
    if not recent.collection_complete:
        return
    newest = recent.collection_complete[0]
    count = len(recent.collection_complete)
    plural = "s" if count != 1 else ""
    if _fetched_since(recent.runs, newest):
        # A run fetched a batch after them: the group was restarted, the collection goes on.
        st.info(
            f"{count} earlier run{plural} (the newest `{newest.run_id}`) found the collection complete before "
            "the runs below (the group was restarted since); hidden below."
        )
        return
    advice = "" if is_paused else " Pause the DAG to stop the scheduled runs."
    if not recent.scanned_all:
        scanned = count + len(recent.runs)
        advice = (
            f" The search stopped after the newest {scanned} runs: older ones, the runs that trained among "
            f"them, are listed in Airflow's own UI.{advice}"
        )
    st.info(
        f"The collection is complete: {count} recent run{plural} (the newest "
        f"`{newest.run_id}`) got 'collection complete' from the data API and skipped every task; "
        f"hidden below.{advice}"
    )


def _fetched_since(runs: list[DagRun], complete: DagRun) -> bool:
    """Whether one of ``runs`` fetched a batch after ``complete`` found the collection complete.

    Only a successful ``fetch`` shows the data API serves batches again: a run
    that is merely newer may be queued (triggered while the DAG is paused, as the
    note advises), running or failed, and has fetched nothing.
    """
    return any(run.task_states.get(FETCH_TASK) == "success" and _after(run, complete) for run in runs)


def _after(run: DagRun, other: DagRun) -> bool:
    """Whether ``run`` came after ``other`` (by ``run_after``; unknown times never count as later)."""
    if not run.run_after or not other.run_after:
        return False
    return datetime.fromisoformat(run.run_after) > datetime.fromisoformat(other.run_after)


def render() -> None:
    st.title("Pipeline: covertype_pipeline")
    args = _airflow_args()
    st.caption(f"Airflow REST API at {public_url(args[0])} as `{args[1]}`")
    _show_flash()
    try:
        status = services.dag_status(*args)
    except ServiceError as error:
        services.show_error(error)
        return
    left, right = st.columns([1, 1])
    # Mirror Airflow's state on every run, so a pause made elsewhere shows here too.
    st.session_state[f"{KEY}paused"] = status.is_paused
    left.toggle("DAG paused", key=f"{KEY}paused", on_change=_set_paused, help="PATCH /api/v2/dags/covertype_pipeline")
    right.button("Trigger a run now", key=f"{KEY}trigger", on_click=_trigger, type="primary")
    if status.is_paused:
        st.info("The DAG is paused: scheduled runs do not start, and a triggered run waits until it is unpaused.")
    elif status.next_run_after:
        st.caption(f"Next scheduled run after {short_time(status.next_run_after)} UTC")
    show_all = st.checkbox(
        "Show runs that found the collection complete",
        key=f"{KEY}show_complete",
        help="After the last batch the data API answers 'collection complete' and each scheduled run ends skipped.",
    )
    try:
        recent = services.dag_runs(*args, RECENT_RUNS, not show_all)
    except ServiceError as error:
        services.show_error(error)
        return
    _explain_hidden(recent, status.is_paused)
    runs = recent.runs
    if not runs:
        if not recent.collection_complete:
            st.info("No runs yet. Trigger one, or unpause the DAG and wait for the schedule.")
        return
    st.subheader(f"The {len(runs)} most recent runs")
    st.dataframe(
        runs_frame(runs),
        hide_index=True,
        width="stretch",
        column_config={
            "macro-F1": st.column_config.NumberColumn(format="%.4f"),
            "promoted": st.column_config.TextColumn(
                width="medium", help="challenger's macro-F1 vs the production version's, on that run's evaluation set"
            ),
        },
    )
    if st.button("Refresh", key=f"{KEY}refresh"):
        services.dag_runs.clear()
        services.dag_status.clear()
        st.rerun()


render()
