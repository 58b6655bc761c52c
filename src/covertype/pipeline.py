"""The steps of the ``covertype_pipeline`` DAG, as plain functions (the DAG only calls them).

fetch -> store -> train and log -> register and promote. Each step takes the
settings and ids it needs and returns a small JSON-able dict (it becomes the
task's XCom), and logs one line that says what it did. The only network call
to the data API is in ``fetch_batch``: at most one request per DAG run (none
when the run's fetch is already stored, or kept in the data DB until stored).

Idempotency: ``store_batch`` writes nothing if the DAG run's fetch is already
stored (a retried or re-run task). Training hands on the run an earlier
attempt of the DAG run finished on the same observations; otherwise it creates
a new MLflow run, and runs a killed attempt left open are ended as KILLED.
Registration reuses the version an earlier attempt registered from the same
model and replays a decision already recorded (or decides again when the alias
has moved since). Neither writes to the data DB.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from covertype import promotion, store, tracking, training
from covertype.data_api_client import DataApiClient
from covertype.settings import Settings

log = logging.getLogger(__name__)


def _configure_mlflow(settings: Settings) -> None:
    uri = settings.resolved_mlflow_tracking_uri
    tracking.configure(uri, settings.mlflow_experiment_name, tracking.local_artifact_location(uri, settings.data_dir))


def fetch_batch(settings: Settings, group_number: int, dag_run_id: str) -> dict[str, Any]:
    """One ``GET /data`` request; returns the payload with its group, batch number and fetch time.

    A DAG run whose fetch is already stored (the whole run cleared and run
    again) makes no request: a second one would move the data API on and its
    payload could not be stored under the same run. Its ``store`` step then
    reports what was stored, and the run retrains on it. A run that fetched
    but has not stored (this task failed after the answer came, or ``store``
    failed for good and the run was cleared) hands on the payload it kept.

    Raises the client's typed errors (``CollectionComplete``, ``BadGroup``,
    ``ServiceUnavailable``, ``UnexpectedResponse``) for the DAG to map to
    skip / fail / retry.
    """
    engine = store.make_engine(settings.resolved_data_db_url)
    try:
        store.init_schema(engine)
        stored = store.find_fetch(engine, dag_run_id)
        if stored is not None:
            log.warning(
                "DAG run %s already stored its fetch (group %s batch %s, %s rows; fetch id %s): no new request to "
                "the data API",
                dag_run_id,
                stored.group_number,
                stored.batch_number,
                stored.rows_received,
                stored.fetch_id,
            )
            return {
                "group_number": stored.group_number,
                "batch_number": stored.batch_number,
                "fetched_at": datetime.now(UTC).isoformat(),
                "payload_sha256": stored.payload_sha256,
                "rows": [],
                "already_stored": True,
            }
        kept = store.pending_payload(engine, dag_run_id)
        if kept is not None:
            log.warning(
                "DAG run %s already fetched group %s batch %s (%s rows at %s) and has not stored it yet: that payload "
                "goes on to store, no new request to the data API",
                dag_run_id,
                kept["group_number"],
                kept["batch_number"],
                len(kept["rows"]),
                kept["fetched_at"],
            )
            return kept
        fetched = _request_batch(settings, group_number)
        _keep_until_stored(engine, dag_run_id, fetched)
    finally:
        engine.dispose()
    return fetched


def _request_batch(settings: Settings, group_number: int) -> dict[str, Any]:
    """The one request of the run, and its answer as the fetch step's result."""
    with DataApiClient(str(settings.data_api_url), timeout_s=settings.data_api_timeout_s) as client:
        batch = client.fetch_batch(group_number)
    # Strict JSON: the result is the task's XCom, and Airflow refuses NaN or a huge number in it, which
    # would fail the task after the request and lose the payload; as strings they are rejected rows.
    rows = store.strict_json(batch.data)
    fetched = {
        "group_number": batch.group_number,
        "batch_number": batch.batch_number,
        "fetched_at": datetime.now(UTC).isoformat(),
        "payload_sha256": store.payload_sha256(rows),
        "rows": rows,
    }
    log.info(
        "fetched group %s batch %s: %s rows (payload sha256 %s) from %s",
        batch.group_number,
        batch.batch_number,
        len(batch.data),
        fetched["payload_sha256"][:12],
        settings.data_api_url,
    )
    return fetched


def _keep_until_stored(engine: store.Engine, dag_run_id: str, fetched: dict[str, Any]) -> None:
    """Keep a copy of the payload in the data DB, for a retried fetch to hand on (``store.pending_payload``).

    Only a safety net: the payload also goes to ``store`` as this task's result. Failing the task
    here, after the data API has answered, would make its retry ask again and lose this payload,
    so a data DB that cannot take the copy is a warning, and ``store`` retries until it is back.
    """
    try:
        store.keep_pending_payload(engine, dag_run_id, fetched)
    except SQLAlchemyError as error:
        log.warning(
            "could not keep a copy of the payload in the data DB (%s: %s): it goes on to store as the task's "
            "result; if this task fails now, its retry asks the data API again",
            type(error).__name__,
            error,
        )


def _warn_if_another_collection(
    previous: store.FetchSummary | None,
    group_number: int,
    batch_number: int,
    settings: Settings,
    scheduled_after_scheduled: bool,
) -> None:
    """Say so when a payload does not continue the stored collection: training mixes them from now on.

    A payload of the batch the previous run fetched is no error: a manual run inside the window gets
    another portion of it, on purpose. A scheduled run inside the window a scheduled run opened
    (``scheduled_after_scheduled``) should have got the next batch: the schedule is shorter than the
    data API's window, and the collection takes more runs than it should. A window a manual run
    opened is the manual run's doing.
    """
    if previous is None:
        return
    if previous.group_number != group_number:
        log.warning(
            "the data DB holds group %s's collection (last fetch: batch %s) and this payload is group %s's: both are "
            "trained on together from now on. To collect another group or data source, reset the data DB first "
            "(docs/pipeline.md, 'Starting a new collection')",
            previous.group_number,
            previous.batch_number,
            group_number,
        )
    elif batch_number < previous.batch_number:
        log.warning(
            "batch %s of group %s after batch %s: the group was restarted, and the new collection is added to the "
            "old one (rows already stored count as repeats)",
            batch_number,
            group_number,
            previous.batch_number,
        )
    elif batch_number > previous.batch_number + 1:
        log.warning(
            "batch %s of group %s after batch %s: the data API served batch%s %s to requests whose answer this "
            "collection never stored (a retried fetch whose first request timed out or got a 5xx after the API had "
            "moved on, or another client of group %s); those rows are not in the collection",
            batch_number,
            group_number,
            previous.batch_number,
            "es" if batch_number - previous.batch_number > 2 else "",
            ", ".join(str(missed) for missed in range(previous.batch_number + 1, batch_number)),
            group_number,
        )
    elif batch_number == previous.batch_number:
        if scheduled_after_scheduled:
            log.warning(
                "batch %s of group %s again, as the previous run's fetch: this scheduled run came within the data "
                "API's batch window and got another portion of the same batch. Scheduled runs must be further apart "
                "than that window (PIPELINE_SCHEDULE_SECONDS=%g, MIN_UPDATE_TIME=%g)",
                batch_number,
                group_number,
                settings.pipeline_schedule_seconds,
                settings.min_update_time,
            )
        else:
            log.info(
                "another portion of batch %s of group %s: this run came within the data API's window",
                batch_number,
                group_number,
            )


class NoUsableRows(ValueError):
    """Every row of a payload was rejected: stored with its reasons, but nothing new to train on.

    Not retried: the same stored payload would be rejected again. Usually the
    data API changed its format; the ``rejected_rows`` table says how.
    """


def is_scheduled_run(run_type: object) -> bool:
    """Whether an Airflow run type (``context["dag_run"].run_type``) is the schedule's.

    Compared by value: Airflow's run types are str enums whose ``str()`` is ``DagRunType.SCHEDULED``.
    """
    return run_type == "scheduled"


def store_batch(
    settings: Settings, dag_run_id: str, fetched: dict[str, Any], *, scheduled_run: bool = False
) -> dict[str, Any]:
    """Store a fetched payload (one transaction, idempotent on ``dag_run_id``); returns the row counts.

    ``scheduled_run``: the run came from the schedule. Such a run that gets a batch a scheduled run
    opened means the schedule is too short (a warning); any other repeat of a batch is a manual run's
    doing (an info line).

    Raises ``NoUsableRows`` after storing a payload whose rows were all
    rejected: retraining on the data already stored would report success for
    a run that collected nothing.
    """
    engine = store.make_engine(settings.resolved_data_db_url)
    try:
        store.init_schema(engine)
        summary = store.append_fetch(
            engine,
            dag_run_id=dag_run_id,
            group_number=int(fetched["group_number"]),
            batch_number=int(fetched["batch_number"]),
            raw_rows=fetched["rows"],
            fetched_at=datetime.fromisoformat(fetched["fetched_at"]),
        )
        # The fetch stored just before this one: a retry whose first attempt stored the payload warns too.
        previous = store.latest_fetch(engine, before_fetch_id=summary.fetch_id)
        same_batch = previous is not None and (previous.group_number, previous.batch_number) == (
            summary.group_number,
            summary.batch_number,
        )
        # Airflow names a scheduled run ``scheduled__<logical date>``; the stored fetches keep only the run id.
        scheduled_after_scheduled = (
            scheduled_run and same_batch and store.batch_opener(engine, summary.fetch_id).startswith("scheduled__")
        )
        total = store.count_observations(engine)
        batches = store.batches_seen(engine)
    finally:
        engine.dispose()
    _warn_if_another_collection(
        previous, summary.group_number, summary.batch_number, settings, scheduled_after_scheduled
    )
    result = {**summary.as_dict(), "observations_total": total, "batches_seen": batches}
    log.info(
        "%s batch %s: %s received, %s new observations, %s duplicates, %s rejected%s; store now holds %s "
        "observations from batches %s",
        "already stored" if summary.already_stored else "stored",
        summary.batch_number,
        summary.rows_received,
        summary.rows_stored,
        summary.rows_duplicate,
        summary.rows_rejected,
        f" {summary.rejected_by_reason}" if summary.rejected_by_reason else "",
        total,
        batches,
    )
    if summary.rows_received and not summary.rows_stored + summary.rows_duplicate:
        raise NoUsableRows(
            f"every one of the {summary.rows_received} rows of batch {summary.batch_number} was rejected "
            f"{summary.rejected_by_reason}; they are kept with their reasons in the data DB's rejected_rows table "
            f"(fetch {summary.fetch_id}). Nothing new to train on: has the data API changed its format?"
        )
    return result


def train_and_log(settings: Settings, dag_run_id: str) -> dict[str, Any]:
    """Train on every clean observation stored so far and log the MLflow run; returns its summary."""
    engine = store.make_engine(settings.resolved_data_db_url)
    try:
        store.init_schema(engine)
        frame = store.load_observations(engine)
        batches = store.batches_seen(engine)
    finally:
        engine.dispose()
    config = training.TrainingConfig.named(settings.training_profile)
    _configure_mlflow(settings)
    # First: a run that logged everything but was left open is ended FINISHED, and may be handed on below.
    tracking.end_abandoned_runs(dag_run_id)
    finished = tracking.find_finished_training(
        dag_run_id, training.observations_digest(frame["row_hash"]), training.recipe_digest(config)
    )
    if finished is not None:
        log.warning(
            "an earlier attempt of DAG run %s finished MLflow run %s on these same %s observations with this same "
            "code and %s profile: handed on as it is, no second training (it would fit the same model)",
            dag_run_id,
            finished.run_id,
            finished.rows_used,
            config.profile,
        )
        return finished.as_dict()
    log.info("training (%s profile) on %s observations from batches %s", config.profile, len(frame), batches)
    outcome = training.train(frame, config)
    trained = tracking.log_training(outcome, dag_run_id=dag_run_id, batch_numbers=batches)
    log.info(
        "trained %s: hold-out model (%s rows) scores macro-F1 %.4f, accuracy %.4f on %s evaluation rows; "
        "served model fitted on all %s rows: %.1f MB, %s trees; %.1f s; MLflow run %s",
        trained.best_candidate,
        trained.rows_train,
        trained.macro_f1,
        trained.accuracy,
        trained.rows_eval,
        trained.rows_used,
        trained.model_mb,
        trained.n_trees,
        trained.train_seconds,
        trained.run_id,
    )
    if trained.rows_label_conflicts:
        log.warning(
            "%s observations share their 12 features with an observation of another label (the data API sent "
            "the same measurements with different cover types): all trained on, none in the evaluation set",
            trained.rows_label_conflicts,
        )
    return trained.as_dict()


def _champion_text(result: promotion.PromotionResult) -> str:
    if result.champion_version is None:
        return "none"
    if result.champion_macro_f1 is None:
        cause = "cannot predict with this code" if result.reason == "champion_unscorable" else "could not be loaded"
        return f"version {result.champion_version} {cause}"
    return f"{result.champion_macro_f1:.4f} (v{result.champion_version})"


def register_and_promote(settings: Settings, trained: dict[str, Any]) -> dict[str, Any]:
    """Register the served model and move the production alias if it beats or ties the current one.

    Champion and challenger are compared through their hold-out models on the
    evaluation set recomputed from the data DB (``promotion.register_and_promote``).
    """
    engine = store.make_engine(settings.resolved_data_db_url)
    try:
        frame = store.load_observations(engine)
    finally:
        engine.dispose()
    config = training.TrainingConfig.named(settings.training_profile)
    evaluation = training.evaluation_rows(frame, config)
    _configure_mlflow(settings)
    result = promotion.register_and_promote(
        tracking.TrainedRun(**trained),
        evaluation,
        model_name=settings.model_name,
        alias=settings.model_alias,
    )
    log.info(
        "%s version %s %s (%s): challenger macro-F1 %.4f, production before %s; %s now serves version %s",
        result.model_name,
        result.version,
        "PROMOTED" if result.promoted else "not promoted",
        result.reason,
        result.challenger_macro_f1,
        _champion_text(result),
        result.alias,
        result.production_version,
    )
    return result.as_dict()
