"""Registration and promotion against a real local MLflow store: better, worse and tied challengers."""

from __future__ import annotations

import logging
import math
import shutil
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest
import skops.io
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.models import Model, infer_signature
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.pipeline import Pipeline

from covertype import promotion, tracking, training
from covertype.estimators import AllCoverTypes
from covertype.features import DomainFeatures
from covertype.loopback import free_port
from covertype.model_safety import UnreadableModelError, load_checked_model
from covertype.promotion import decide_promotion
from covertype.schema import FEATURE_COLUMNS

FAST = training.TrainingConfig.fast()


@pytest.mark.parametrize(
    ("challenger", "champion", "promote", "reason"),
    [
        (0.80, None, True, "no_production_model"),
        (0.81, 0.80, True, "challenger_better"),
        (0.80, 0.80, True, "tie"),
        (0.79, 0.80, False, "champion_better"),
        (math.nan, 0.80, False, "challenger_unscored"),
    ],
)
def test_decision_rule(challenger: float, champion: float | None, promote: bool, reason: str) -> None:
    decision = decide_promotion(challenger, champion, None if champion is None else "3")
    assert (decision.promote, decision.reason) == (promote, reason)


@pytest.fixture
def mlflow_store(data_dir: Path) -> str:
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    tracking.configure(uri, "covertype", tracking.local_artifact_location(uri, data_dir))
    return uri


def _trained_sample(
    observations: pd.DataFrame, *, rows: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, training.TrainingOutcome]:
    """A sample of the shared rows, its evaluation set, and the fast profile trained on the sample."""
    frame = observations.sample(rows, random_state=seed)
    return frame, training.evaluation_rows(frame, FAST), training.train(frame, FAST)


def _log(outcome: training.TrainingOutcome, dag_run_id: str) -> tracking.TrainedRun:
    return tracking.log_training(outcome, dag_run_id=dag_run_id, batch_numbers=[1, 2])


def test_register_and_promote_follows_the_rule(mlflow_store: str, shared_observations: pd.DataFrame) -> None:
    client = MlflowClient(tracking_uri=mlflow_store)
    frame = shared_observations.sample(3000, random_state=4)
    evaluation = training.evaluation_rows(frame, FAST)
    strong = training.train(frame, FAST)
    weak = training.train(frame[frame["Cover_Type"].isin([1, 2])].head(60), FAST)

    def promote(run: tracking.TrainedRun) -> promotion.PromotionResult:
        return promotion.register_and_promote(run, evaluation, model_name="covertype", alias="production")

    first = promote(_log(weak, "run-1"))
    assert (first.version, first.promoted, first.reason) == ("1", True, "no_production_model")
    first_run = client.get_run(client.get_model_version("covertype", "1").run_id)
    assert "champion_macro_f1" not in first_run.data.metrics

    better = promote(_log(strong, "run-2"))
    assert (better.version, better.promoted, better.reason) == ("2", True, "challenger_better")
    assert better.champion_version == "1"
    assert better.challenger_macro_f1 > better.champion_macro_f1

    worse = promote(_log(weak, "run-3"))
    assert (worse.version, worse.promoted, worse.reason) == ("3", False, "champion_better")
    # Each side is scored through its hold-out model (which never saw these rows), not through the
    # served model, whose score on rows it was fitted on would be inflated.
    assert worse.champion_macro_f1 == pytest.approx(strong.evaluation.macro_f1)
    assert training.score(strong.model, evaluation).macro_f1 > worse.champion_macro_f1
    assert worse.production_version == "2"
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "2"

    tie = promote(_log(strong, "run-4"))  # the same fitted model again: equal scores on the same rows
    assert (tie.version, tie.promoted, tie.reason) == ("4", True, "tie")
    assert tie.challenger_macro_f1 == tie.champion_macro_f1
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "4"

    # The decision and both scores are on the version (tags) and on the training run (metrics and tags).
    version = client.get_model_version("covertype", "3")
    assert version.tags["promotion_decision"] == "kept_previous"
    assert version.tags["champion_version"] == "2"
    assert float(version.tags["challenger_macro_f1"]) == pytest.approx(worse.challenger_macro_f1, abs=1e-6)
    assert float(version.tags["champion_macro_f1"]) == pytest.approx(worse.champion_macro_f1, abs=1e-6)
    run = client.get_run(version.run_id)
    assert run.data.tags["promotion_decision"] == "kept_previous"
    assert run.data.metrics["promoted"] == 0.0
    assert run.data.metrics["champion_macro_f1"] == pytest.approx(worse.champion_macro_f1)
    assert run.data.metrics["challenger_macro_f1"] == pytest.approx(worse.challenger_macro_f1)


def test_a_version_without_a_holdout_model_is_scored_itself(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    """Versions registered before hold-out models existed were fitted without the evaluation set."""
    client = MlflowClient(tracking_uri=mlflow_store)
    _, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=6)
    legacy_run = _log(outcome, "run-legacy")
    legacy = mlflow.register_model(legacy_run.holdout_model_uri, "covertype")  # no holdout_model_uri tag
    client.set_registered_model_alias("covertype", "production", legacy.version)

    new_run = _log(outcome, "run-new")
    result = promotion.register_and_promote(new_run, evaluation, model_name="covertype", alias="production")
    assert result.champion_version == str(legacy.version)
    assert result.champion_macro_f1 == pytest.approx(training.score(outcome.holdout_model, evaluation).macro_f1)
    assert (result.promoted, result.reason) == (True, "tie")
    version = client.get_model_version("covertype", result.version)
    assert version.tags["holdout_model_uri"] == new_run.holdout_model_uri


def test_training_run_logs_metrics_nested_candidates_inputs_and_model(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    outcome = training.train(shared_observations.sample(2000, random_state=5), FAST)
    trained = _log(outcome, "manual__2026-01-01")
    client = MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(trained.run_id)
    assert run.data.tags["dag_run_id"] == "manual__2026-01-01"
    assert run.data.tags["batch_numbers"] == "1,2"
    expected = {"macro_f1", "accuracy", "rows_used", "batches_seen", *(f"recall_{k}" for k in range(1, 8))}
    assert expected <= set(run.data.metrics)
    assert run.data.metrics["rows_used"] == 2000
    assert run.data.metrics["rows_label_conflicts"] == 0
    assert run.data.metrics["macro_f1"] == pytest.approx(outcome.evaluation.macro_f1)
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"covertype-train", "covertype-eval"}
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(trained.run_id)}

    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{trained.run_id}'"
    )
    assert sorted(child.data.tags["mlflow.runName"] for child in children) == sorted(c.name for c in FAST.candidates)
    for child in children:
        assert expected <= set(child.data.metrics)
        assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(child.info.run_id)}

    # The logged model loads with nothing but the package installed, and takes raw-format records.
    model = mlflow.sklearn.load_model(trained.model_uri)
    sample = training.features_of(shared_observations.head(20))
    assert model.predict(sample).tolist() == outcome.model.predict(sample).tolist()
    info = mlflow.models.get_model_info(trained.model_uri)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(sample.columns)
    local_model = mlflow.artifacts.download_artifacts(trained.model_uri)
    example = Model.load(local_model).load_input_example(local_model)
    assert list(example.columns) == list(FEATURE_COLUMNS)
    assert model.predict(example).shape == (len(example),)
    # The hold-out model (no evaluation rows) is logged beside it, and its size and tree count too.
    holdout = mlflow.sklearn.load_model(trained.holdout_model_uri)
    assert holdout.predict(sample).tolist() == outcome.holdout_model.predict(sample).tolist()
    assert trained.holdout_model_uri != trained.model_uri
    assert {"model_mb", "n_trees", "holdout_model_mb", "holdout_n_trees"} <= set(run.data.metrics)


@pytest.mark.parametrize("dag_run_id", ["scheduled__2026-11-27T10:00:00+00:00", "manual__it's"])
def test_a_retried_training_ends_the_runs_a_killed_attempt_left_open(
    mlflow_store: str, shared_observations: pd.DataFrame, dag_run_id: str
) -> None:
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment_id = mlflow.get_experiment_by_name("covertype").experiment_id
    # What a killed attempt leaves: a parent run and a nested candidate run, never ended.
    killed_parent = client.create_run(experiment_id, tags={"dag_run_id": dag_run_id}, run_name=f"train {dag_run_id}")
    killed_child = client.create_run(
        experiment_id, tags={"dag_run_id": dag_run_id, "mlflow.parentRunId": killed_parent.info.run_id}
    )
    # The last attempt of an earlier DAG run, killed with no retry left (open for longer than an attempt may
    # run): nothing else would ever end it.
    too_long_ago = datetime.now(UTC) - tracking.TRAINING_TIME_LIMIT - timedelta(minutes=1)
    earlier_dag_run = client.create_run(
        experiment_id, tags={"dag_run_id": "scheduled__earlier"}, start_time=int(too_long_ago.timestamp() * 1000)
    )
    # Another DAG run's training started a moment ago (`make dag-run` beside the schedule): it may be live.
    concurrent_dag_run = client.create_run(experiment_id, tags={"dag_run_id": "manual__beside"})
    notebook_run = client.create_run(experiment_id, run_name="someone's notebook")  # not the pipeline's
    # A model the killed attempt was still uploading; one of the notebook's.
    uploading = client.create_logged_model(experiment_id, name="model", source_run_id=killed_parent.info.run_id)
    notebook_model = client.create_logged_model(experiment_id, name="model", source_run_id=notebook_run.info.run_id)

    # What the training task does first (pipeline.train_and_log), then its own run.
    tracking.end_abandoned_runs(dag_run_id)
    trained = _log(training.train(shared_observations.sample(600, random_state=6), FAST), dag_run_id)

    assert client.get_run(killed_parent.info.run_id).info.status == "KILLED"
    assert client.get_run(killed_child.info.run_id).info.status == "KILLED"
    assert client.get_run(trained.run_id).info.status == "FINISHED"
    assert client.get_run(earlier_dag_run.info.run_id).info.status == "KILLED"
    assert client.get_run(concurrent_dag_run.info.run_id).info.status == "RUNNING"
    assert client.get_run(notebook_run.info.run_id).info.status == "RUNNING"
    assert client.get_logged_model(uploading.model_id).status == LoggedModelStatus.FAILED
    assert client.get_logged_model(notebook_model.model_id).status == LoggedModelStatus.PENDING
    assert client.get_logged_model(trained.model_uri.removeprefix("models:/")).status == LoggedModelStatus.READY
    runs_of_dag_run = client.search_runs([experiment_id], filter_string=f'tags.dag_run_id = "{dag_run_id}"')
    assert (
        sorted(run.info.status for run in runs_of_dag_run) == ["FINISHED"] * (1 + len(FAST.candidates)) + ["KILLED"] * 2
    )


def test_a_training_stopped_by_ctrl_c_or_a_timeout_while_uploading_leaves_no_pending_model(
    mlflow_store: str, shared_observations: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow marks a model FAILED when its upload raises an Exception; KeyboardInterrupt and Airflow's timeout are
    BaseExceptions, which it lets through with the model left PENDING."""
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment_id = mlflow.get_experiment_by_name("covertype").experiment_id
    outcome = training.train(shared_observations.sample(600, random_state=8), FAST)

    def interrupted(self: MlflowClient, model_id: str, local_dir: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _log(outcome, "manual__interrupted")

    [model] = client.search_logged_models([experiment_id])
    assert model.status == LoggedModelStatus.FAILED
    [parent] = client.search_runs([experiment_id], filter_string="tags.mlflow.runName = 'train manual__interrupted'")
    assert parent.info.status == "FAILED"
    # Nothing a retry could take for a finished run.
    assert tracking.TRAINED_RUN_TAG not in parent.data.tags
    assert parent.data.tags[tracking.RECIPE_DIGEST_TAG] == training.recipe_digest(FAST)


def test_a_retried_registration_writes_nothing_twice_and_keeps_the_real_comparison(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    """Three states an attempt can die in: after registering, after recording the decision, after it all."""
    client = MlflowClient(tracking_uri=mlflow_store)
    frame = shared_observations.sample(3000, random_state=4)
    evaluation = training.evaluation_rows(frame, FAST)
    weak = _log(training.train(frame[frame["Cover_Type"].isin([1, 2])].head(60), FAST), "run-1")
    strong = _log(training.train(frame, FAST), "run-2")

    def promote(run: tracking.TrainedRun) -> promotion.PromotionResult:
        return promotion.register_and_promote(run, evaluation, model_name="covertype", alias="production")

    def versions() -> list[str]:
        return sorted(str(v.version) for v in client.search_model_versions("name = 'covertype'"))

    assert promote(weak).version == "1"

    # Died after registering, before deciding: the version is reused and the decision made once.
    # (As register_and_promote registers: the tags come with the version, in the same request.)
    mlflow.register_model(
        strong.model_uri,
        "covertype",
        tags={"dag_run_id": "run-2", "run_id": strong.run_id, promotion.HOLDOUT_TAG: strong.holdout_model_uri},
    )
    first = promote(strong)
    assert (first.version, first.promoted, first.reason) == ("2", True, "challenger_better")
    assert first.champion_version == "1"

    # Died after recording the decision, before moving the alias: the retry replays it, with the
    # comparison against version 1 (not against itself, which would be a tie).
    client.set_registered_model_alias("covertype", "production", "1")
    replayed = promote(strong)
    assert replayed == first
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "2"

    # A third attempt after everything succeeded changes nothing either.
    assert promote(strong) == first
    assert versions() == ["1", "2"]
    history = client.get_metric_history(strong.run_id, "promoted")
    assert [point.value for point in history] == [1.0]


def _delete_logged_model_files(model_uri: str) -> None:
    """What a cleaned bucket or lost volume leaves: the registry entry without the model's files."""
    model = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
    location = Path(urlparse(model.artifact_location).path)
    assert (location / "MLmodel").is_file()
    shutil.rmtree(location)


def test_a_production_version_that_cannot_be_loaded_is_replaced(
    mlflow_store: str, shared_observations: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    """Else every later run would fail comparing against it, and the alias could never move again."""
    client = MlflowClient(tracking_uri=mlflow_store)
    _, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=8)
    broken = _log(outcome, "run-1")
    first = promotion.register_and_promote(broken, evaluation, model_name="covertype", alias="production")
    assert (first.version, first.promoted) == ("1", True)
    _delete_logged_model_files(broken.holdout_model_uri)

    challenger = _log(outcome, "run-2")
    with caplog.at_level(logging.WARNING, logger="covertype.promotion"):
        result = promotion.register_and_promote(challenger, evaluation, model_name="covertype", alias="production")

    assert (result.version, result.promoted, result.reason) == ("2", True, "champion_unloadable")
    assert (result.champion_version, result.champion_macro_f1) == ("1", None)
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "2"
    assert broken.holdout_model_uri in caplog.text
    version = client.get_model_version("covertype", "2")
    assert version.tags["promotion_reason"] == "champion_unloadable"
    assert version.tags["champion_error"].startswith(("MlflowException", "OSError", "UnreadableModelError"))
    assert client.get_run(challenger.run_id).data.tags["champion_error"] == version.tags["champion_error"]
    # A version that cannot be scored is never the reason to skip a healthy challenger: the next run
    # compares against version 2 as usual.
    again = promotion.register_and_promote(
        _log(outcome, "run-3"), evaluation, model_name="covertype", alias="production"
    )
    assert (again.reason, again.champion_version) == ("tie", "2")


def test_a_production_version_whose_served_model_is_gone_is_replaced(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    """Its hold-out model still scores, but the inference service cannot load what the alias names."""
    client = MlflowClient(tracking_uri=mlflow_store)
    frame = shared_observations.sample(2000, random_state=8)
    evaluation = training.evaluation_rows(frame, FAST)
    strong = _log(training.train(frame, FAST), "run-1")
    promotion.register_and_promote(strong, evaluation, model_name="covertype", alias="production")
    _delete_logged_model_files(strong.model_uri)  # the served model only; its hold-out twin is intact

    weak = _log(training.train(frame[frame["Cover_Type"].isin([1, 2])].head(60), FAST), "run-2")
    result = promotion.register_and_promote(weak, evaluation, model_name="covertype", alias="production")

    assert (result.version, result.promoted, result.reason) == ("2", True, "champion_unloadable")
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "2"


def _rewrite_skops_members(model_uri: str, change: Callable[[dict[str, bytes]], None]) -> None:
    """Damage the logged model's skops zip in place (its members edited), as a bad copy or disk would."""
    model = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
    [archive] = Path(urlparse(model.artifact_location).path).glob("*.skops")
    with zipfile.ZipFile(archive) as source:
        members = {name: source.read(name) for name in source.namelist()}
    change(members)
    with zipfile.ZipFile(archive, "w") as target:
        for name, content in members.items():
            target.writestr(name, content)


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda members: members.update({"schema.json": b"{not json"}), "JSONDecodeError"),
        (lambda members: members.pop("schema.json"), "KeyError"),
    ],
    ids=["schema-not-json", "schema-missing"],
)
def test_a_production_version_whose_file_is_corrupted_is_replaced(
    mlflow_store: str, shared_observations: pd.DataFrame, damage: Callable[[dict[str, bytes]], None], cause: str
) -> None:
    """Not only truncation: any model file that cannot be read after the download is the model's own fault."""
    client = MlflowClient(tracking_uri=mlflow_store)
    _, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=8)
    corrupted = _log(outcome, "run-1")
    promotion.register_and_promote(corrupted, evaluation, model_name="covertype", alias="production")
    _rewrite_skops_members(corrupted.holdout_model_uri, damage)

    error = _error_of(lambda: load_checked_model(corrupted.holdout_model_uri))
    assert isinstance(error, UnreadableModelError), repr(error)
    assert promotion.is_broken_model_error(error)
    result = promotion.register_and_promote(
        _log(outcome, "run-2"), evaluation, model_name="covertype", alias="production"
    )
    assert (result.version, result.promoted, result.reason) == ("2", True, "champion_unloadable")
    assert (
        client.get_model_version("covertype", "2").tags["champion_error"].startswith(f"UnreadableModelError: {cause}")
    )


class ThreeRuns(NamedTuple):
    """Three logged training runs of rising quality, and how to register and promote one on the same rows."""

    weak: tracking.TrainedRun
    medium: tracking.TrainedRun
    strong: tracking.TrainedRun
    promote: Callable[[tracking.TrainedRun], promotion.PromotionResult]


@pytest.fixture
def three_runs(mlflow_store: str, shared_observations: pd.DataFrame) -> ThreeRuns:
    frame = shared_observations.sample(3000, random_state=4)
    evaluation = training.evaluation_rows(frame, FAST)

    def promote(run: tracking.TrainedRun) -> promotion.PromotionResult:
        return promotion.register_and_promote(run, evaluation, model_name="covertype", alias="production")

    return ThreeRuns(
        weak=_log(training.train(frame[frame["Cover_Type"].isin([1, 2])].head(60), FAST), "run-1"),
        medium=_log(training.train(frame.head(400), FAST), "run-2"),
        strong=_log(training.train(frame, FAST), "run-3"),
        promote=promote,
    )


def test_a_replayed_promotion_never_moves_the_alias_back(mlflow_store: str, three_runs: ThreeRuns) -> None:
    """A run cleared after later runs promoted newer versions is compared with the current holder again."""
    client = MlflowClient(tracking_uri=mlflow_store)
    weak, medium, strong, promote = three_runs

    assert promote(weak).promoted
    # Run 2 recorded "promoted over version 1" and died before moving the alias; run 3 then won.
    recorded = promote(medium)
    assert (recorded.version, recorded.promoted, recorded.champion_version) == ("2", True, "1")
    client.set_registered_model_alias("covertype", "production", "1")
    newest = promote(strong)
    assert (newest.version, newest.reason) == ("3", "challenger_better")

    retried = promote(medium)  # the operator clears run 2's failed task

    assert str(client.get_model_version_by_alias("covertype", "production").version) == "3"
    assert (retried.version, retried.promoted, retried.reason) == ("2", False, "champion_better")
    assert (retried.champion_version, retried.production_version) == ("3", "3")
    version = client.get_model_version("covertype", "2")
    assert (version.tags["promotion_decision"], version.tags["champion_version"]) == ("kept_previous", "3")
    history = client.get_metric_history(medium.run_id, "promoted")
    assert [point.value for point in history] == [1.0, 0.0]

    # Replaying that "kept" decision after the alias moved again reports where the alias is now.
    client.set_registered_model_alias("covertype", "production", "1")
    replayed = promote(medium)
    assert (replayed.promoted, replayed.champion_version, replayed.production_version) == (False, "3", "1")
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'covertype'")) == ["1", "2", "3"]


def test_a_redecision_cut_short_is_decided_again_not_replayed(
    mlflow_store: str, three_runs: ThreeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry after a crash while the new decision was being recorded must not read the old "promoted" tag."""
    client = MlflowClient(tracking_uri=mlflow_store)
    weak, medium, strong, promote = three_runs
    assert promote(weak).promoted
    assert promote(medium).promoted  # recorded as promoted over version 1 ...
    client.set_registered_model_alias("covertype", "production", "1")  # ... but the alias never moved
    assert promote(strong).version == "3"

    set_version_tag = MlflowClient.set_model_version_tag

    def crash_before_the_decision_tag(self: MlflowClient, name: str, version: str, key: str, value: str) -> None:
        if key == "promotion_decision":
            raise ConnectionError("worker killed")
        set_version_tag(self, name, version, key, value)

    # Run 2 cleared: it decides again against version 3 and dies with every tag but the decision written.
    monkeypatch.setattr(MlflowClient, "set_model_version_tag", crash_before_the_decision_tag)
    with pytest.raises(ConnectionError):
        promote(medium)
    monkeypatch.setattr(MlflowClient, "set_model_version_tag", set_version_tag)
    assert client.get_model_version("covertype", "2").tags["champion_version"] == "3"

    retried = promote(medium)

    assert (retried.promoted, retried.reason, retried.champion_version) == (False, "champion_better", "3")
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "3"


def test_a_registration_that_moved_the_alias_meanwhile_is_compared_with_before_promoting(
    mlflow_store: str, three_runs: ThreeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registrations at once (a manual run beside the schedule): both compared with the same old
    version; the one that moves the alias last must not replace a version it was never compared with."""
    client = MlflowClient(tracking_uri=mlflow_store)
    weak, medium, strong, promote = three_runs
    assert promote(weak).promoted
    set_version_tag = MlflowClient.set_model_version_tag
    concurrent: list[promotion.PromotionResult] = []

    def strong_registered_meanwhile(self: MlflowClient, name: str, version: str, key: str, value: str) -> None:
        set_version_tag(self, name, version, key, value)
        if key == "promotion_decision" and version == "2" and not concurrent:
            concurrent.append(promote(strong))  # decided against version 1 too, and moved the alias first

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", strong_registered_meanwhile)
    result = promote(medium)

    [other] = concurrent
    assert (other.version, other.promoted, other.champion_version) == ("3", True, "1")
    assert (result.version, result.promoted, result.champion_version) == ("2", False, "3")
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "3"
    assert client.get_model_version("covertype", "2").tags["promotion_decision"] == "kept_previous"


def _error_of(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is what the test inspects
        call()
    return caught.value


def test_only_errors_of_the_model_itself_count_as_a_broken_version(
    mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage must be retried, not taken as a reason to replace the production version untested."""
    missing = _error_of(lambda: mlflow.sklearn.load_model("models:/m-0123456789abcdef0123456789abcdef"))
    corrupt = tmp_path / "model.skops"
    corrupt.write_bytes(b"not a zip file")
    unreadable = _error_of(lambda: skops.io.load(corrupt))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # nothing listens there: an outage
    try:
        outage = _error_of(lambda: mlflow.sklearn.load_model("models:/m-0123456789abcdef0123456789abcdef"))
    finally:
        mlflow.set_tracking_uri(mlflow_store)

    assert promotion.is_broken_model_error(missing), missing
    assert promotion.is_broken_model_error(unreadable), unreadable
    assert promotion.is_broken_model_error(ModuleNotFoundError("No module named 'covertype.features'"))
    assert not promotion.is_broken_model_error(outage), outage
    assert not promotion.is_broken_model_error(MemoryError())
    assert not promotion.is_broken_model_error(TimeoutError("read timed out"))


def test_a_production_version_saved_as_pickle_is_never_loaded_and_is_replaced(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    """Loading a pickle can run any code: the pipeline refuses it (covertype.model_safety) like a broken model."""
    client = MlflowClient(tracking_uri=mlflow_store)
    _, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=9)
    with mlflow.start_run():
        pickled = mlflow.sklearn.log_model(outcome.holdout_model, name="model", serialization_format="cloudpickle")
    version = mlflow.register_model(pickled.model_uri, "covertype")  # no hold-out tag: scored itself
    client.set_registered_model_alias("covertype", "production", version.version)

    result = promotion.register_and_promote(
        _log(outcome, "run-2"), evaluation, model_name="covertype", alias="production"
    )

    assert (result.promoted, result.reason, result.champion_version) == (True, "champion_unloadable", "1")
    tags = client.get_model_version("covertype", result.version).tags
    assert tags["champion_error"].startswith("UnsafeModelError: the model is saved as 'cloudpickle'")


def _earlier_release_model(frame: pd.DataFrame) -> Pipeline:
    """A model as a release with one domain feature fewer saved it: it loads, but cannot run today's features."""
    fewer_features = DomainFeatures().transform(training.features_of(frame))[:, :-1]
    forest = AllCoverTypes(ExtraTreesClassifier(n_estimators=4, random_state=0))
    return Pipeline(
        [("features", DomainFeatures()), ("classifier", forest.fit(fewer_features, training.labels_of(frame)))]
    )


@pytest.mark.parametrize("incompatible", ["holdout_model", "served_model"])
def test_a_production_version_that_loads_but_cannot_predict_is_replaced(
    mlflow_store: str, shared_observations: pd.DataFrame, incompatible: str
) -> None:
    """Else a release that changes the features would fail every later run, with the alias stuck on that version."""
    client = MlflowClient(tracking_uri=mlflow_store)
    frame, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=10)
    earlier = _log(outcome, "run-1")
    example = training.features_of(frame.head(5))
    with mlflow.start_run():
        old_model = mlflow.sklearn.log_model(
            _earlier_release_model(frame),
            name="model",
            signature=infer_signature(example, outcome.model.predict(example)),
            skops_trusted_types=list(training.SKOPS_TRUSTED_TYPES),
        )
    # The version as the earlier release registered it: one of its two models is the incompatible one.
    served, holdout = (
        (earlier.model_uri, old_model.model_uri)
        if incompatible == "holdout_model"
        else (old_model.model_uri, earlier.holdout_model_uri)
    )
    version = mlflow.register_model(served, "covertype", tags={promotion.HOLDOUT_TAG: holdout})
    client.set_registered_model_alias("covertype", "production", version.version)
    assert load_checked_model(old_model.model_uri) is not None, "it loads: only predicting fails"

    result = promotion.register_and_promote(
        _log(outcome, "run-2"), evaluation, model_name="covertype", alias="production"
    )

    assert (result.promoted, result.reason, result.champion_version) == (True, "champion_unscorable", "1")
    assert str(client.get_model_version_by_alias("covertype", "production").version) == result.version
    assert client.get_model_version("covertype", result.version).tags["champion_error"].startswith("ValueError: ")
    # The next run compares with the version that replaced it, as usual.
    again = promotion.register_and_promote(
        _log(outcome, "run-3"), evaluation, model_name="covertype", alias="production"
    )
    assert (again.reason, again.champion_version) == ("tie", result.version)


def test_an_error_of_the_machine_while_scoring_the_champion_fails_the_task_and_keeps_it(
    mlflow_store: str, shared_observations: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk or a failed thread says nothing about the model: the task is retried, the alias stays."""
    client = MlflowClient(tracking_uri=mlflow_store)
    _, evaluation, outcome = _trained_sample(shared_observations, rows=2000, seed=11)
    promotion.register_and_promote(_log(outcome, "run-1"), evaluation, model_name="covertype", alias="production")
    challenger = _log(outcome, "run-2")
    predictions: list[int] = []
    sklearn_predict = Pipeline.predict

    def predict_then_fail(self: Pipeline, X: pd.DataFrame, **params: object) -> object:  # noqa: N803
        predictions.append(len(X))
        if len(predictions) == 2:  # the champion's hold-out model, scored after the challenger's
            raise OSError(28, "No space left on device")
        return sklearn_predict(self, X, **params)

    monkeypatch.setattr(Pipeline, "predict", predict_then_fail)
    with pytest.raises(OSError, match="No space left"):
        promotion.register_and_promote(challenger, evaluation, model_name="covertype", alias="production")
    assert str(client.get_model_version_by_alias("covertype", "production").version) == "1"
    assert "promotion_decision" not in client.get_model_version("covertype", "2").tags


def test_a_decision_taken_again_without_a_champion_score_does_not_keep_the_old_one(
    mlflow_store: str, three_runs: ThreeRuns
) -> None:
    """MLflow metrics cannot be deleted: a NaN point says the new decision had no champion score."""
    client = MlflowClient(tracking_uri=mlflow_store)
    weak, medium, strong, promote = three_runs

    promote(weak)
    recorded = promote(medium)  # scored against version 1
    assert recorded.champion_macro_f1 is not None
    client.set_registered_model_alias("covertype", "production", "1")
    promote(strong)
    _delete_logged_model_files(strong.holdout_model_uri)  # version 3, now the alias holder, is broken

    retried = promote(medium)  # decided again: version 3 cannot be scored

    assert (retried.reason, retried.champion_version, retried.champion_macro_f1) == ("champion_unloadable", "3", None)
    history = client.get_metric_history(medium.run_id, "champion_macro_f1")
    assert history[0].value == recorded.champion_macro_f1
    assert math.isnan(history[-1].value)
    assert math.isnan(client.get_run(medium.run_id).data.metrics["champion_macro_f1"])


def test_recording_an_unscored_decision_again_adds_no_metric_point(
    mlflow_store: str, shared_observations: pd.DataFrame
) -> None:
    """A retry records the same decision again: NaN equals NaN here, so the history gets one point per value."""
    client = MlflowClient(tracking_uri=mlflow_store)
    trained = _log(training.train(shared_observations.sample(600, random_state=3), FAST), "run-1")
    version = str(mlflow.register_model(trained.model_uri, "covertype").version)
    unscored = promotion.PromotionDecision(False, "challenger_unscored", math.nan, 0.8, "1")

    for _attempt in range(2):
        promotion._record_decision(client, trained, unscored, model_name="covertype", version=version, eval_rows=0)

    history = client.get_metric_history(trained.run_id, "challenger_macro_f1")
    assert len(history) == 1
    assert math.isnan(history[0].value)
    assert [point.value for point in client.get_metric_history(trained.run_id, "champion_macro_f1")] == [0.8]
