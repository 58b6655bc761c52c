"""MLflow registry: register a training run's served model and decide whether it takes the alias.

``register_and_promote`` registers the served model as ``covertype`` and moves
the alias ``production`` to it only when it beats or ties the current
production version on the *current* evaluation set. Each version is scored
through its hold-out model (the version's tag ``holdout_model_uri``), the fit
that never saw those rows; a version without that tag (registered before
hold-out models existed) was itself fitted without them and is scored
directly. A production version whose hold-out or served model can no longer
be loaded (artifacts lost, a corrupted file, an incompatible class), or that
loads but cannot predict with this code, cannot be compared, or served: the
challenger, which just loaded from the same store and scored on the same rows,
replaces it (``champion_unloadable``, ``champion_unscorable``) rather than the
pipeline failing on every run. The
decision and both scores go to the training run (metrics and tags) and to the
new model version (tags). Aliases, not the deprecated stages.
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from skops.io.exceptions import UntrustedTypesFoundException

from covertype.model_safety import UnreadableModelError, UnsafeModelError, load_checked_model
from covertype.tracking import TrainedRun
from covertype.training import score

log = logging.getLogger(__name__)

# Equal scores on the same rows are a tie: the challenger wins ties (newer data).
TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger takes the alias, and why."""

    promote: bool
    reason: str
    challenger_macro_f1: float
    champion_macro_f1: float | None
    champion_version: str | None
    champion_error: str = ""  # why the alias holder could not be scored (``champion_unloadable``/``_unscorable``)


def decide_promotion(
    challenger_macro_f1: float, champion_macro_f1: float | None, champion_version: str | None = None
) -> PromotionDecision:
    """Promote when there is no champion, or the challenger beats or ties it on the same rows."""
    if champion_macro_f1 is None:
        return PromotionDecision(True, "no_production_model", challenger_macro_f1, None, champion_version)
    if math.isnan(challenger_macro_f1):
        return PromotionDecision(False, "challenger_unscored", challenger_macro_f1, champion_macro_f1, champion_version)
    if challenger_macro_f1 > champion_macro_f1 + TIE_TOLERANCE:
        reason = "challenger_better"
    elif challenger_macro_f1 >= champion_macro_f1 - TIE_TOLERANCE:
        reason = "tie"
    else:
        return PromotionDecision(False, "champion_better", challenger_macro_f1, champion_macro_f1, champion_version)
    return PromotionDecision(True, reason, challenger_macro_f1, champion_macro_f1, champion_version)


@dataclass(frozen=True)
class PromotionResult:
    """The registered version and what happened to the alias (JSON-able via ``as_dict``)."""

    model_name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    challenger_macro_f1: float
    champion_macro_f1: float | None
    champion_version: str | None
    production_version: str
    eval_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _current_alias_version(client: Any, model_name: str, alias: str) -> str | None:
    """The version holding the alias, or None when the model or the alias does not exist yet."""

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as error:
        missing = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
        if error.error_code in missing:
            return None
        raise


HOLDOUT_TAG = "holdout_model_uri"


def _holdout_uri_of_version(client: Any, model_name: str, version: str) -> str:
    """The model that speaks for a version on the evaluation set: its hold-out model, else the version itself."""
    tags = client.get_model_version(model_name, version).tags
    return tags.get(HOLDOUT_TAG) or f"models:/{model_name}/{version}"


def _macro_f1_of(model_uri: str, evaluation: pd.DataFrame) -> float:
    return score(load_checked_model(model_uri), evaluation).macro_f1


# Errors that say a model's files are gone or cannot be read by this code, whatever is retried:
# missing files or registry entries, any failure to read the downloaded files (load_checked_dir wraps
# those: a truncated or corrupted file, a missing member, an import a skops class needs), a model this
# project refuses to deserialize; the raw types too, for callers that load without covertype.model_safety.
_UNREADABLE_MODEL_ERRORS = (
    FileNotFoundError,
    UnreadableModelError,
    ImportError,
    AttributeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    UntrustedTypesFoundException,
    UnsafeModelError,  # a pickle, or types this project does not trust: never loaded, so never scored
)


# What a model that loads raises when it cannot run on today's rows: scikit-learn's checks (feature count,
# not fitted: ValueError, AttributeError), a missing column or class (KeyError, IndexError), a changed type.
_INCOMPATIBLE_MODEL_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def is_broken_model_error(error: BaseException) -> bool:
    """Whether loading a model failed because of the model itself, not because a service was unreachable."""
    if isinstance(error, MlflowException):
        return error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
    return isinstance(error, _UNREADABLE_MODEL_ERRORS)


def _champion_replaced(
    reason: str, challenger_f1: float, champion_version: str, error: BaseException
) -> PromotionDecision:
    """The challenger takes the alias from a version that cannot be compared, nor served."""
    return PromotionDecision(
        True, reason, challenger_f1, None, champion_version, champion_error=f"{type(error).__name__}: {error}"[:500]
    )


def _decide(
    client: Any, trained: TrainedRun, evaluation: pd.DataFrame, *, model_name: str, alias: str
) -> PromotionDecision:
    """Score the challenger and the alias holder through their hold-out models on the same rows.

    The alias holder's served model (what the inference service loads) must load and predict too: a
    version whose hold-out model scores well but whose served model is gone would otherwise keep the
    alias while the service cannot load it.
    """
    champion_version = _current_alias_version(client, model_name, alias)
    challenger_f1 = _macro_f1_of(trained.holdout_model_uri, evaluation)
    if champion_version is None:
        return decide_promotion(challenger_f1, None, None)
    scored_uri = _holdout_uri_of_version(client, model_name, champion_version)
    served_uri = f"models:/{model_name}/{champion_version}"
    champion_f1 = None
    for uri in dict.fromkeys((scored_uri, served_uri)):
        try:
            model = load_checked_model(uri)
        except Exception as error:
            if not is_broken_model_error(error):
                # A timeout, an outage or memory: say which model, and let the task's retries try again.
                raise RuntimeError(
                    f"{model_name} version {champion_version} (alias {alias}) could not be loaded from {uri}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            # The version itself is broken (its files deleted, or a model this code cannot read). Keeping it
            # would fail every later run the same way and leave the service on a model it cannot reload.
            log.exception(
                "%s version %s (alias %s) cannot be loaded from %s: the challenger replaces it",
                model_name,
                champion_version,
                alias,
                uri,
            )
            return _champion_replaced("champion_unloadable", challenger_f1, champion_version, error)
        try:
            scores = score(model, evaluation)
        except _INCOMPATIBLE_MODEL_ERRORS as error:
            # The challenger's hold-out model has just scored these rows with this code, so the fault is
            # the champion's: a model an earlier release saved (other features, another sklearn) that this
            # code cannot run. Keeping it would fail every later run here, and the service could not use it.
            # Other errors (memory, threads, the OS) say nothing about the model: the task fails, to be retried.
            log.exception(
                "%s version %s (alias %s) loaded from %s cannot predict with this code: the challenger replaces it",
                model_name,
                champion_version,
                alias,
                uri,
            )
            return _champion_replaced("champion_unscorable", challenger_f1, champion_version, error)
        finally:
            del model  # one champion model in memory at a time
        if uri == scored_uri:
            champion_f1 = scores.macro_f1
    return decide_promotion(challenger_f1, champion_f1, champion_version)


def _same_metric(logged: float | None, value: float) -> bool:
    """Whether ``value`` is already the metric's latest point (NaN counts as equal to NaN here)."""
    return logged is not None and (logged == value or (math.isnan(logged) and math.isnan(value)))


def _record_decision(
    client: Any, trained: TrainedRun, decision: PromotionDecision, *, model_name: str, version: str, eval_rows: int
) -> None:
    """The decision and both scores on the training run, then on the version: what a retry replays."""
    promoted = "promoted" if decision.promote else "kept_previous"
    client.set_tag(trained.run_id, "promotion_decision", promoted)
    client.set_tag(trained.run_id, "promotion_reason", decision.reason)
    client.set_tag(trained.run_id, "registered_version", version)
    client.set_tag(trained.run_id, "champion_version", decision.champion_version or "")
    client.set_tag(trained.run_id, "champion_error", decision.champion_error)
    decision_metrics = {
        "challenger_macro_f1": decision.challenger_macro_f1,
        "champion_macro_f1": decision.champion_macro_f1,
        "promoted": 1.0 if decision.promote else 0.0,
    }
    logged = client.get_run(trained.run_id).data.metrics
    for key, value in decision_metrics.items():
        if value is None:
            # A decision taken again without that score (no champion, or one that cannot be loaded): metrics
            # cannot be deleted, so a NaN point keeps the earlier decision's score from reading as this one's.
            if key in logged and not math.isnan(logged[key]):
                client.log_metric(trained.run_id, key, math.nan)
        elif not _same_metric(logged.get(key), value):
            # An earlier attempt may have logged some of them already: one history point per value, not per attempt.
            client.log_metric(trained.run_id, key, value)
    version_tags = {
        # Full precision (``str`` of a float reads back exactly): a replayed decision reports the same scores.
        "challenger_macro_f1": str(decision.challenger_macro_f1),
        "champion_macro_f1": "" if decision.champion_macro_f1 is None else str(decision.champion_macro_f1),
        "champion_version": decision.champion_version or "",
        "eval_rows": str(eval_rows),
        "run_id": trained.run_id,
        "batch_numbers": ",".join(str(n) for n in trained.batch_numbers),
        "promotion_reason": decision.reason,
        "champion_error": decision.champion_error,
        # Last: once it is there, a retried attempt knows the decision is recorded in full.
        "promotion_decision": promoted,
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def _version_registered_from(client: Any, model_name: str, trained: TrainedRun) -> Any | None:
    """The version an earlier attempt of the registration task made from this run's served model, if any."""
    versions = client.search_model_versions(f"run_id = '{trained.run_id}'")  # MLflow run ids are hex
    matches = [v for v in versions if v.name == model_name and v.source == trained.model_uri]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def _recorded_decision(version: Any) -> PromotionDecision | None:
    """The decision an earlier attempt recorded on ``version`` (its tags), or None if it recorded none."""
    tags = version.tags
    if "promotion_decision" not in tags:
        return None
    champion_f1 = tags.get("champion_macro_f1") or None
    return PromotionDecision(
        promote=tags["promotion_decision"] == "promoted",
        reason=tags["promotion_reason"],
        challenger_macro_f1=float(tags["challenger_macro_f1"]),
        champion_macro_f1=None if champion_f1 is None else float(champion_f1),
        champion_version=tags.get("champion_version") or None,
        champion_error=tags.get("champion_error", ""),
    )


def _replay_is_stale(decision: PromotionDecision, alias_version: str | None, version: str) -> bool:
    """A recorded promotion whose alias has since moved elsewhere: replaying it would move production back.

    The decision was made against ``decision.champion_version``. If the alias
    still names that version (or already names this one), moving it completes
    the decision; if a later run has moved it on, this version was never
    compared with the current holder.
    """
    return decision.promote and alias_version not in {decision.champion_version, version}


def register_and_promote(
    trained: TrainedRun,
    evaluation: pd.DataFrame,
    *,
    model_name: str,
    alias: str,
) -> PromotionResult:
    """Register the run's served model; move ``alias`` to it if it beats or ties the alias holder on ``evaluation``.

    Both sides are scored through their hold-out models, which never saw the
    evaluation rows (the served models did).

    A retried attempt writes nothing twice: it reuses the version an earlier
    attempt registered from the same model, and once the decision is recorded
    on that version (the step before the alias moves) it only replays it,
    unless the alias has moved to another version since (then it decides again).
    Otherwise a retry would register a second copy and, if the alias had
    already moved, compare the copy with itself and call it a tie.
    """

    client = MlflowClient()
    registered = _version_registered_from(client, model_name, trained)
    decision = None if registered is None else _recorded_decision(registered)
    if registered is None:
        registered = mlflow.register_model(
            trained.model_uri,
            model_name,
            tags={"dag_run_id": trained.dag_run_id, "run_id": trained.run_id, HOLDOUT_TAG: trained.holdout_model_uri},
        )
    else:
        log.warning(
            "%s version %s was registered from run %s by an earlier attempt: reused",
            model_name,
            registered.version,
            trained.run_id,
        )
    version = str(registered.version)

    def decided() -> PromotionDecision:
        fresh = _decide(client, trained, evaluation, model_name=model_name, alias=alias)
        _record_decision(client, trained, fresh, model_name=model_name, version=version, eval_rows=len(evaluation))
        return fresh

    if decision is None:
        decision = decided()
    # A promotion, replayed or just decided, moves the alias only if it still names the version compared with:
    # a later run may have moved it since a recorded decision, or another registration while this one was
    # scoring (a manual `airflow dags test` beside the schedule). Twice at most: a replay decided again can
    # meet the second case too.
    for _ in range(2):
        if not decision.promote:
            break
        moved_to = _current_alias_version(client, model_name, alias)
        if not _replay_is_stale(decision, moved_to, version):
            break
        log.warning(
            "%s version %s was compared with version %s, but alias %s has moved to version %s since: deciding again "
            "against it instead of replacing a version it was never compared with",
            model_name,
            version,
            decision.champion_version or "-",
            alias,
            moved_to,
        )
        # Until the new decision is recorded in full, a retry must not read the old one's tags.
        client.delete_model_version_tag(model_name, version, "promotion_decision")
        decision = decided()
    if decision.promote:
        client.set_registered_model_alias(model_name, alias, version)
    # Read back, not inferred: a replayed "kept" decision may date from before later runs moved the alias.
    production_version = _current_alias_version(client, model_name, alias) or str(decision.champion_version)
    champion_f1 = decision.champion_macro_f1
    log.info(
        "registered %s version %s: challenger macro-F1 %.4f vs production %s (version %s) on %s evaluation rows: %s",
        model_name,
        version,
        decision.challenger_macro_f1,
        ("unscorable" if decision.champion_error else "none") if champion_f1 is None else f"{champion_f1:.4f}",
        decision.champion_version or "-",
        len(evaluation),
        f"alias {alias} -> version {version}" if decision.promote else f"alias {alias} stays on {production_version}",
    )
    return PromotionResult(
        model_name=model_name,
        version=version,
        alias=alias,
        promoted=decision.promote,
        reason=decision.reason,
        challenger_macro_f1=decision.challenger_macro_f1,
        champion_macro_f1=champion_f1,
        champion_version=decision.champion_version,
        production_version=production_version,
        eval_rows=len(evaluation),
    )
