"""
### covertype_pipeline

Collects one portion of Forest Covertype data per run, stores it, retrains and
maybe promotes the served model.

`fetch` → `store` → `train_and_log` → `register_and_promote`

- **fetch**: exactly one `GET /data?group_number=N` to the data API (none if
  this run's fetch is already stored: a cleared run retrains on it; none if it
  fetched and has not stored yet: the payload kept in the data DB goes on). After the
  last batch the API answers 400 "collection complete": the run ends
  *skipped* (its later tasks too). A bad group number, or an answer outside
  the contract (not the documented JSON, another group, no rows), fails the
  run without retries. Network errors and 5xx are retried with exponential
  backoff.
- **store**: one transaction into the data DB, idempotent on the run id (a
  retried or re-run task writes nothing twice); duplicate observations are
  stored once with a repeat count, bad rows are kept with their reason. A
  payload whose rows were all rejected is stored, then fails the run without
  retries (nothing new to train on: has the API changed its format?).
- **train_and_log**: trains on every clean observation stored so far, logs an
  MLflow run (nested runs per candidate) with the model. A retry whose earlier
  attempt finished its MLflow run on the same observations and code hands that run on.
  Stopped after 30 minutes.
- **register_and_promote**: registers `covertype` and moves the alias
  `production` when the new version beats or ties the current one on the
  current evaluation set (or the current one's model can no longer be loaded,
  or cannot predict with this code).

Schedule: every `PIPELINE_SCHEDULE_SECONDS` (default 330 s: the course API
moves to the next batch only 300 s after the last move); 0 means manual runs
only. See docs/pipeline.md.
"""

# Task imports are inside the tasks on purpose: the DAG processor parses this
# file often, and training libraries must not slow it down (Airflow best practice).
# ruff: noqa: PLC0415

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covertype.settings import Settings

# Read once when the file is parsed; the tasks read the same environment.
SETTINGS = Settings()
SCHEDULE = timedelta(seconds=SETTINGS.pipeline_schedule_seconds) if SETTINGS.pipeline_schedule_seconds > 0 else None


@dag(
    dag_id="covertype_pipeline",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    doc_md=__doc__,
    tags=["covertype", "mlops"],
    default_args={
        "retries": SETTINGS.pipeline_retries,
        "retry_delay": timedelta(seconds=SETTINGS.pipeline_retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
    },
    params={
        "group_number": Param(
            SETTINGS.group_number,
            type="integer",
            minimum=1,
            maximum=10,
            title="Group number",
            description="The data API group to collect (1..10); default from GROUP_NUMBER.",
        ),
    },
)
def covertype_pipeline() -> None:
    @task
    def fetch() -> dict[str, Any]:
        """One data API request: skip when the collection is complete, fail on a bad group, retry on 5xx."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from covertype import pipeline
        from covertype.data_api_client import BadGroup, CollectionComplete, UnexpectedResponse

        context = get_current_context()
        group_number = int(context["params"]["group_number"])
        try:
            return pipeline.fetch_batch(Settings(), group_number, context["run_id"])
        except CollectionComplete as error:
            raise AirflowSkipException(f"collection complete, nothing to do: {error}") from error
        except BadGroup as error:
            raise AirflowFailException(f"bad group number {group_number}: {error}") from error
        except UnexpectedResponse as error:
            raise AirflowFailException(f"the data API broke its contract: {error}") from error

    @task
    def store(fetched: dict[str, Any]) -> dict[str, Any]:
        """Store the payload in the data DB (idempotent on the run id); fail if every row was rejected."""
        from airflow.sdk.exceptions import AirflowFailException

        from covertype import pipeline

        context = get_current_context()
        scheduled_run = pipeline.is_scheduled_run(context["dag_run"].run_type)
        try:
            return pipeline.store_batch(Settings(), context["run_id"], fetched, scheduled_run=scheduled_run)
        except pipeline.NoUsableRows as error:
            raise AirflowFailException(str(error)) from error

    # covertype.tracking.TRAINING_TIME_LIMIT (not imported here: it would load MLflow at every parse); a test
    # checks they agree. A later attempt ends as abandoned another DAG run's training run open that long.
    @task(execution_timeout=timedelta(minutes=30))
    def train_and_log(stored: dict[str, Any]) -> dict[str, Any]:
        """Train on all clean observations and log the MLflow run and model."""
        from airflow.sdk.exceptions import AirflowSkipException

        from covertype import pipeline
        from covertype.training import NotEnoughData

        try:
            return pipeline.train_and_log(Settings(), get_current_context()["run_id"])
        except NotEnoughData as error:
            raise AirflowSkipException(f"not enough data to train yet: {error}") from error

    @task
    def register_and_promote(trained: dict[str, Any]) -> dict[str, Any]:
        """Register the model; move the production alias if it beats or ties the current version."""
        from covertype import pipeline

        return pipeline.register_and_promote(Settings(), trained)

    register_and_promote(train_and_log(store(fetch())))


covertype_pipeline()
