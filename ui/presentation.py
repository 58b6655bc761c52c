"""Small conversions from client results to the frames the pages chart or tabulate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from covertype.schema import COVER_TYPE_NAMES
from ui.clients.airflow import DagRun

# The DAG's task ids (airflow/dags/covertype_pipeline.py); each returns a small dict
# (covertype.pipeline): store -> FetchSummary, train_and_log -> TrainedRun, register_and_promote -> PromotionResult.
FETCH_TASK = "fetch"
STORE_TASK = "store"
TRAIN_TASK = "train_and_log"
PROMOTE_TASK = "register_and_promote"


def cover_type_name(key: str) -> str:
    """A probability's key as a cover type name: the service may key by class number or by name."""
    if key.isdigit() and int(key) in COVER_TYPE_NAMES:
        return COVER_TYPE_NAMES[int(key)]
    return key


def recall_by_cover_type(metrics: Mapping[str, float | None]) -> dict[int, float]:
    """The per-class recalls a run logged (``recall_<k>``), by cover type in class order.

    Training logs ``recall_k`` only for the cover types its evaluation set
    holds, so any of them may be missing; a missing (or NaN) one is left out,
    never shown as 0, which would read as "every such row was wrong".
    """
    recalls: dict[int, float] = {}
    for name, value in metrics.items():
        label = name.removeprefix("recall_")
        if name.startswith("recall_") and label.isdigit() and value is not None and math.isfinite(value):
            recalls[int(label)] = float(value)
    return dict(sorted(recalls.items()))


def recall_caption(metrics: Mapping[str, float | None]) -> str | None:
    """One line with each logged class recall by name, and which cover types have none; None without any."""
    recalls = recall_by_cover_type(metrics)
    if not recalls:
        return None
    shown = ", ".join(f"{cover_type_name(str(label))} {value:.3f}" for label, value in recalls.items())
    missing = [name for label, name in COVER_TYPE_NAMES.items() if label not in recalls]
    note = f" (none logged for {', '.join(missing)}: not in the evaluation set)" if missing else ""
    return f"Recall per cover type: {shown}{note}"


def probability_frame(probabilities: dict[str, float]) -> pd.DataFrame:
    """One row per cover type, in class order, with its probability."""
    frame = pd.DataFrame(
        {"cover type": [cover_type_name(key) for key in probabilities], "probability": list(probabilities.values())}
    )
    order = {name: index for index, name in enumerate(COVER_TYPE_NAMES.values())}
    return frame.sort_values("cover type", key=lambda names: names.map(order)).reset_index(drop=True)


def _result(run: DagRun, task: str, key: str) -> Any:
    value = run.task_results.get(task)
    return value.get(key) if isinstance(value, dict) else None


def _promotion(run: DagRun) -> str | None:
    """The decision with the two scores it compared, e.g. ``no: 0.781 < 0.790 (v7)`` or ``yes: first model``.

    The scores are the ones the decision used (the challenger's and the
    production version's, on the evaluation set as it was at that run), which
    can differ from each run's own ``macro-F1`` column: the evaluation set
    grows with every batch.
    """
    promoted = _result(run, PROMOTE_TASK, "promoted")
    if promoted is None:
        return None
    answer = "yes" if promoted else "no"
    reason = _result(run, PROMOTE_TASK, "reason")
    challenger = _result(run, PROMOTE_TASK, "challenger_macro_f1")
    champion = _result(run, PROMOTE_TASK, "champion_macro_f1")
    if reason == "no_production_model":
        return f"{answer}: first model"
    if challenger is None or champion is None:
        return f"{answer} ({reason})" if reason else answer
    relation = {"challenger_better": ">", "tie": "=", "champion_better": "<"}.get(reason, "vs")
    return f"{answer}: {challenger:.3f} {relation} {champion:.3f} (v{_result(run, PROMOTE_TASK, 'champion_version')})"


def short_time(value: str | None) -> str | None:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC), or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def _task_summary(states: dict[str, str | None]) -> str:
    """``all success`` / ``all skipped``, or each task whose state differs from success."""
    distinct = set(states.values())
    if distinct <= {None}:  # no task instance yet, or none with a state
        return "not started"
    if len(distinct) == 1:
        return f"all {next(iter(distinct))}"
    return ", ".join(f"{task}: {state}" for task, state in states.items() if state != "success")


def _started(run: DagRun) -> str | None:
    """When the run started; a queued run says it has not, with when it is due, rather than pass that off as a start."""
    if run.start_date:
        return short_time(run.start_date)
    due = short_time(run.run_after)
    return f"not yet (due {due})" if due else "not yet"


def runs_frame(runs: list[DagRun]) -> pd.DataFrame:
    """One row per DAG run: when, state, and what its tasks returned (batch, rows, score, promotion)."""
    rows = []
    for run in runs:
        batch = _result(run, STORE_TASK, "batch_number")
        rows.append(
            {
                "started (UTC)": _started(run),
                "state": run.state,
                "batch": batch if batch is not None else _result(run, FETCH_TASK, "batch_number"),
                "rows fetched": _result(run, STORE_TASK, "rows_received"),
                "new rows stored": _result(run, STORE_TASK, "rows_stored"),
                "duplicates": _result(run, STORE_TASK, "rows_duplicate"),
                "rejected": _result(run, STORE_TASK, "rows_rejected"),
                "macro-F1": _result(run, TRAIN_TASK, "macro_f1"),
                "model version": _result(run, PROMOTE_TASK, "version"),
                "promoted": _promotion(run),
                "tasks": _task_summary(run.task_states),
                "run": run.run_id,
            }
        )
    return pd.DataFrame(rows)
