"""MLflow: log a training run (a parent run and one nested run per candidate) with its two models.

- The parent run holds the two fits of the chosen candidate (``mlflow.sklearn``,
  signature, input example, skops trusted types): ``model``, fitted on every
  observation and the one registered and served, and ``holdout_model``, fitted
  without the evaluation set; the hold-out model's evaluation metrics
  (``macro_f1``, ``accuracy``, ``recall_<k>``), ``rows_used``,
  ``batches_seen``, the confusion matrix image, the training and evaluation
  data (``log_input``) and the tags ``dag_run_id`` and ``batch_numbers``.
- Each candidate of the search is a nested run with its out-of-fold (cross-validation) metrics
  and confusion matrix.
- A training task (``pipeline.train_and_log``) first ends, as ``KILLED``, the pipeline's runs a killed
  attempt left ``RUNNING`` (a killed process cannot end its own run): its own DAG run's, and another DAG
  run's open for longer than that task may run (``TRAINING_TIME_LIMIT``), so a live training beside it
  is left alone (``end_abandoned_runs``).
- A finished run records what it handed on (tag ``trained_run``) and the digests of the rows it
  trained on and of its recipe: a retry of a task whose earlier attempt finished logging reuses
  that run (``find_finished_training``) instead of logging a second one.

Registration and the promotion decision are in ``covertype.promotion``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN
from covertype.training import (
    SKOPS_TRUSTED_TYPES,
    TrainingOutcome,
    confusion_figure,
    features_of,
    observations_digest,
    recipe_digest,
)

log = logging.getLogger(__name__)

# The DAG's ``execution_timeout`` of ``train_and_log`` (Airflow stops an attempt after that). A training run
# of another DAG run still open after this long belongs to no live attempt; a younger one may (a manual run
# beside the schedule).
TRAINING_TIME_LIMIT = timedelta(minutes=30)
# Tags of a training run: the digests of the observations it was fitted on and of its recipe, and (set last,
# once everything is logged) the ``TrainedRun`` it handed on, as JSON.
DATA_DIGEST_TAG = "training_data_sha256"
RECIPE_DIGEST_TAG = "training_recipe_sha256"
TRAINED_RUN_TAG = "trained_run"


@dataclass(frozen=True)
class TrainedRun:
    """What the training task hands to the registration task (JSON-able via ``as_dict``)."""

    run_id: str
    dag_run_id: str
    model_uri: str  # the served model (every observation)
    holdout_model_uri: str  # the same recipe without the evaluation set: what promotion scores
    best_candidate: str
    macro_f1: float
    accuracy: float
    rows_used: int  # every distinct observation: what the served model was fitted on
    rows_train: int  # the training part: what the hold-out model was fitted on
    rows_eval: int
    batches_seen: int
    batch_numbers: list[int]
    model_mb: float
    n_trees: int
    train_seconds: float
    rows_label_conflicts: int = 0  # rows whose features also came with another label (kept out of evaluation)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure(tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> None:
    """Point the MLflow client at the tracking server (or local store) and the experiment.

    ``artifact_location`` is used only when the experiment does not exist yet:
    with a local store it keeps artifacts beside the store instead of in the
    working directory (a tracking server decides that itself).
    """

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if artifact_location and mlflow.get_experiment_by_name(experiment_name) is None:
        mlflow.create_experiment(experiment_name, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_name)


def local_artifact_location(tracking_uri: str, data_dir: Path) -> str | None:
    """Where a local (SQLite or file) store keeps artifacts: under ``data_dir``; None for a server."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (data_dir / "mlartifacts").resolve().as_uri()


def _pip_requirements() -> list[str]:
    """Pinned requirements of the model, given explicitly (inferring them loads the model in a subprocess)."""
    packages = ("scikit-learn", "skops", "numpy", "pandas", "mlflow-skinny")
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={installed_version(package)}")
        except Exception:
            log.debug("package %s not installed: not pinned in the model's requirements", package)
    return pins


@contextmanager
def _integer_hint_silenced() -> Iterator[None]:
    """MLflow warns that integer columns cannot hold missing values; ours are integers by contract."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column", category=UserWarning)
        yield


def _dataset_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[:, [*FEATURE_COLUMNS, LABEL_COLUMN, "row_hash"]].reset_index(drop=True)


def _log_model(model: Any, name: str, example: pd.DataFrame) -> Any:
    """One fitted Pipeline as an ``mlflow.sklearn`` model of the active run (skops, signature, example)."""
    with _integer_hint_silenced():
        return mlflow.sklearn.log_model(
            model,
            name=name,
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=_pip_requirements(),
        )


def _log_run_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """Metrics of the run alone: the client's batch call attaches none to the run's logged models."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])


def find_finished_training(dag_run_id: str, data_digest: str, recipe_digest: str) -> TrainedRun | None:
    """The training run an earlier attempt of this DAG run finished on the same rows with the same recipe, if any.

    An attempt can fail after its run finished (the result's hand-off to the next
    task, during an api-server restart); its retry, or the task cleared to run again,
    would train the same rows again into the same model (fits are seeded) and leave a
    second finished run, and a second pair of models, for the same DAG run. The newest
    such run whose two models are still there is handed on instead. Rows stored since
    (another DAG run's) or an upgraded recipe (``training.recipe_digest``) change a
    digest: then it trains.
    """
    finished = mlflow.search_runs(
        filter_string=(
            f"attributes.status = 'FINISHED' and tags.{DATA_DIGEST_TAG} = '{data_digest}' "
            f"and tags.{RECIPE_DIGEST_TAG} = '{recipe_digest}'"
        ),
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    known = {field.name for field in fields(TrainedRun)}
    # Compared here, not in the filter: a run id may hold any quote.
    for run in (run for run in finished if run.data.tags.get("dag_run_id") == dag_run_id):
        recorded = run.data.tags.get(TRAINED_RUN_TAG)
        if recorded is None:  # its attempt stopped before the end of logging
            continue
        trained = TrainedRun(**{key: value for key, value in json.loads(recorded).items() if key in known})
        if _models_ready(trained):
            return trained
        log.warning("MLflow run %s trained on these rows, but its models are gone: training again", run.info.run_id)
    return None


def _models_ready(trained: TrainedRun) -> bool:
    """Whether both logged models of a run can still be registered (not deleted, finished uploading)."""
    client = MlflowClient()
    for uri in (trained.model_uri, trained.holdout_model_uri):
        try:
            model = client.get_logged_model(uri.removeprefix("models:/"))
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            return False
        if model.status != LoggedModelStatus.READY:
            return False
    return True


def end_abandoned_runs(dag_run_id: str) -> list[str]:
    """End as ``KILLED`` the pipeline's training runs left ``RUNNING`` by an attempt that was killed.

    A run whose ``trained_run`` tag was set (everything logged, only ending it failed) is ended as
    ``FINISHED`` instead.

    A task whose process died (out of memory, a missed heartbeat, the
    scheduler restarted) cannot end its own MLflow runs: they stay ``RUNNING``
    forever and look like a training still in progress. An attempt starts only
    when the earlier attempts of its DAG run have ended, so any open run of this
    DAG run (tag ``dag_run_id``) is abandoned. Another DAG run's open run is
    abandoned once it is older than ``TRAINING_TIME_LIMIT``, the longest an
    attempt may run: the last attempt of a DAG run killed with no retry left.
    A younger one may be live (``make dag-run`` beside the schedule) and is left
    alone. Runs without the tag (a notebook's) are never touched.
    """
    oldest_live_start_ms = int((time.time() - TRAINING_TIME_LIMIT.total_seconds()) * 1000)
    # Without experiment ids, search_runs looks in the active experiment (the one ``configure`` set).
    open_runs = mlflow.search_runs(filter_string="attributes.status = 'RUNNING'", output_format="list")
    pipeline_runs = [run for run in open_runs if "dag_run_id" in run.data.tags]
    abandoned = [
        run
        for run in pipeline_runs
        if run.data.tags["dag_run_id"] == dag_run_id or run.info.start_time < oldest_live_start_ms
    ]
    client = MlflowClient()
    for run in abandoned:
        # A run with its trained_run tag logged everything (the tag is set last): only ending it failed, a
        # tracking-server blip at that moment. Finished, it can be handed on (find_finished_training).
        if TRAINED_RUN_TAG in run.data.tags:
            status, cause = "FINISHED", "logged everything but could not end it, in an attempt of"
        else:
            status, cause = "KILLED", "left open by a killed attempt of"
        client.set_terminated(run.info.run_id, status=status)
        owner = run.data.tags["dag_run_id"]
        log.warning(
            "ended MLflow run %s (%s) as %s: %s %s",
            run.info.run_id,
            run.info.run_name,
            status,
            cause,
            "this DAG run" if owner == dag_run_id else f"DAG run {owner}",
        )
        _fail_pending_models(client, run)  # none normally after the tag: both models were READY before it
    for run in (run for run in pipeline_runs if run not in abandoned):
        log.info(
            "MLflow run %s (%s) of DAG run %s is open and younger than %s: left alone, it may still be training",
            run.info.run_id,
            run.info.run_name,
            run.data.tags["dag_run_id"],
            TRAINING_TIME_LIMIT,
        )
    return [run.info.run_id for run in abandoned]


def _fail_pending_models(client: MlflowClient, run: Any) -> None:
    """Mark ``FAILED`` the logged models a killed run was still uploading: else they stay ``PENDING`` for good."""
    # MLflow run ids are hex. (Filtering on ``status`` matches nothing in MLflow 3.17: checked here.)
    of_run = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    for model in (model for model in of_run if model.status == LoggedModelStatus.PENDING):
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        log.warning("marked logged model %s (%s) of run %s as FAILED", model.model_id, model.name, run.info.run_id)


def log_training(
    outcome: TrainingOutcome,
    *,
    dag_run_id: str,
    batch_numbers: list[int],
    extra_tags: dict[str, str] | None = None,
) -> TrainedRun:
    """Log the parent run, one nested run per candidate, and the chosen model; return the run's summary."""

    tags = {
        "dag_run_id": dag_run_id,
        "batch_numbers": ",".join(str(number) for number in sorted(batch_numbers)),
        "training_profile": outcome.config.profile,
        DATA_DIGEST_TAG: observations_digest(outcome.split.all_rows["row_hash"]),
        RECIPE_DIGEST_TAG: recipe_digest(outcome.config),
    }
    tags.update(extra_tags or {})
    with mlflow.start_run(run_name=f"train {dag_run_id}", tags=tags) as parent:
        try:
            trained = _log_run_contents(outcome, parent.info.run_id, tags, batch_numbers)
        except BaseException:
            # MLflow marks a model FAILED when its upload raises an Exception, not when a Ctrl-C or Airflow's
            # timeout (BaseExceptions) stops it: it would stay PENDING for good.
            _fail_pending_models_of_ending_run(parent)
            raise
        # Last: a run with this tag finished logging, and a retried attempt may hand it on (find_finished_training).
        mlflow.set_tag(TRAINED_RUN_TAG, json.dumps(trained.as_dict(), separators=(",", ":")))
    log.info("logged MLflow run %s (model %s): macro-F1 %.4f", trained.run_id, trained.model_uri, trained.macro_f1)
    return trained


def _fail_pending_models_of_ending_run(run: Any) -> None:
    """``_fail_pending_models`` for a run being stopped; the stopping error is what the caller re-raises."""
    try:
        _fail_pending_models(MlflowClient(), run)
    except Exception as error:  # the tracking server may be the reason the run is stopping
        log.warning("could not mark the pending models of run %s as FAILED: %s", run.info.run_id, error)


def _log_run_contents(
    outcome: TrainingOutcome,
    run_id: str,
    tags: dict[str, str],
    batch_numbers: list[int],
) -> TrainedRun:
    """Everything inside the active parent run: parameters, nested candidate runs, both models, inputs, metrics."""
    split = outcome.split
    common = {"rows_used": len(split.train) + len(split.evaluation), "batches_seen": len(batch_numbers)}
    mlflow.log_params(
        {
            "profile": outcome.config.profile,
            "eval_fraction": outcome.config.eval_fraction,
            "search_folds": outcome.config.search_folds,
            "search_max_rows": outcome.config.search_max_rows,
            "n_estimators": outcome.config.n_estimators,
            "max_model_mb": outcome.config.max_model_mb,
            "candidates": ",".join(c.name for c in outcome.config.candidates),
            "best_candidate": outcome.best.name,
            "best_family": outcome.best.family,
            **{f"best_{key}": value for key, value in outcome.best.params.items()},
        }
    )
    for result in outcome.candidates:
        with mlflow.start_run(run_name=result.candidate.name, nested=True, tags=tags):
            mlflow.log_params({"family": result.candidate.family, **result.candidate.params})
            mlflow.log_metrics(
                {
                    **result.scores.as_metrics(),
                    **common,
                    "rows_validation": result.scores.rows,  # out-of-fold: every training row searched on
                    "fit_seconds": result.fit_seconds,
                }
            )
            figure = confusion_figure(result.scores, f"{result.candidate.name} (out-of-fold)")
            mlflow.log_figure(figure, "confusion_matrix.png")
            plt.close(figure)
    # The models first: MLflow 3 copies the run's metrics logged so far onto each model it logs, and a
    # metric logged without a model id onto every model of the run. Then the evaluation scores go to the
    # hold-out model alone, linked to the evaluation set, and the other numbers to the run only: the
    # served model was never scored (it trained on the evaluation rows), so it shows no score.
    example = features_of(split.train.head(5)).reset_index(drop=True)
    model_info = _log_model(outcome.model, "model", example)
    holdout_info = _log_model(outcome.holdout_model, "holdout_model", example)
    with _integer_hint_silenced():
        train_set = mlflow.data.from_pandas(_dataset_frame(split.train), targets=LABEL_COLUMN, name="covertype-train")
        eval_set = mlflow.data.from_pandas(
            _dataset_frame(split.evaluation), targets=LABEL_COLUMN, name="covertype-eval"
        )
        mlflow.log_input(train_set, context="training")
        mlflow.log_input(eval_set, context="evaluation")
    mlflow.log_metrics(outcome.evaluation.as_metrics(), model_id=holdout_info.model_id, dataset=eval_set)
    _log_run_metrics(
        run_id,
        {
            **common,
            "rows_train": len(split.train),
            "rows_eval": len(split.evaluation),
            "rows_label_conflicts": split.label_conflicts,
            "model_mb": outcome.model_mb,
            "n_trees": outcome.n_trees,
            "holdout_model_mb": outcome.holdout_model_mb,
            "holdout_n_trees": outcome.holdout_n_trees,
            "train_seconds": outcome.train_seconds,
        },
    )
    figure = confusion_figure(outcome.evaluation, f"{outcome.best.name}, hold-out model (evaluation set)")
    mlflow.log_figure(figure, "confusion_matrix.png")
    plt.close(figure)
    return TrainedRun(
        run_id=run_id,
        dag_run_id=tags["dag_run_id"],
        model_uri=model_info.model_uri,
        holdout_model_uri=holdout_info.model_uri,
        best_candidate=outcome.best.name,
        macro_f1=outcome.evaluation.macro_f1,
        accuracy=outcome.evaluation.accuracy,
        rows_used=int(common["rows_used"]),
        rows_train=len(split.train),
        rows_eval=len(split.evaluation),
        batches_seen=len(batch_numbers),
        batch_numbers=sorted(batch_numbers),
        model_mb=outcome.model_mb,
        n_trees=outcome.n_trees,
        train_seconds=outcome.train_seconds,
        rows_label_conflicts=split.label_conflicts,
    )
