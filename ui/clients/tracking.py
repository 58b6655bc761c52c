"""Read the experiment's training runs and the version the configured alias names from MLflow.

Uses ``MlflowClient`` so the same code reads a tracking server (``http://...``)
in the stack and a local store (``sqlite:///...``) in tests and on a laptop.
MLflow retries HTTP calls for minutes by default; the UI wants a prompt answer,
so the retry count and timeout are lowered unless the environment sets them.
The tracking URI may carry a password: every message names it without (``redaction``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SERVICE = "MLflow"
PARENT_RUN_TAG = "mlflow.parentRunId"
DEFAULT_TIMEOUT_S = 10
DEFAULT_RETRIES = 0


def _limit_http_retries() -> None:
    """Make an unreachable tracking server fail within seconds instead of retrying with backoff."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(DEFAULT_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(DEFAULT_TIMEOUT_S))


_limit_http_retries()

from mlflow.exceptions import MlflowException  # noqa: E402  (after the retry settings, on purpose)
from mlflow.tracking import MlflowClient  # noqa: E402

from covertype.redaction import public_url, redact  # noqa: E402
from ui.clients.errors import ServiceError, ServiceUnreachable  # noqa: E402


@dataclass(frozen=True)
class TrainingRun:
    """A training (parent) run of the experiment with the metrics the pipeline logs."""

    run_id: str
    run_name: str
    status: str
    started_at: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProductionModel:
    """The version the alias points at, and the metrics of the run that produced it."""

    name: str
    alias: str
    version: str
    run_id: str | None
    created_at: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    run_missing: bool = False  # the version's run was deleted for good (``mlflow gc``): no metrics to show


@dataclass(frozen=True)
class ExperimentOverview:
    """What the Models page shows: the experiment's id, its training runs, the production version."""

    experiment_id: str | None
    runs: list[TrainingRun]
    production: ProductionModel | None
    # Why the production version could not be read when the registry refused the configured name or alias
    # (service, problem, hint of the ``ServiceError``; kept as text: the overview is cached, and pickled):
    # the runs do not depend on the alias and are still shown.
    production_refused: tuple[str, str, str] | None = None


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics with a number to show: a NaN (e.g. an unscored challenger) or infinity is left out, shown as "—"."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def _from_millis(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


def _alias_missing(error: MlflowException) -> bool:
    """Whether MLflow says the model or the alias does not exist (yet).

    A missing model is RESOURCE_DOES_NOT_EXIST, a missing alias INVALID_PARAMETER_VALUE
    "... not found". That code also refuses a name or alias MLflow does not accept
    (``prod/1``): a setting to correct, which waiting for a promotion would never cure.
    """
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return error.error_code == "INVALID_PARAMETER_VALUE" and "not found" in error.message.lower()


class RefusedSetting(ServiceError):
    """The registry refuses MODEL_NAME or MODEL_ALIAS itself (invalid, not missing): a setting to correct."""


class TrackingClient:
    """Reads MLflow; every failure becomes a ``ServiceError`` naming MLflow and what to check."""

    def __init__(self, tracking_uri: str, experiment_name: str, model_name: str, model_alias: str) -> None:
        self.tracking_uri = tracking_uri
        self.public_uri = public_url(tracking_uri)  # what messages name
        self.experiment_name = experiment_name
        self.model_name = model_name
        self.model_alias = model_alias
        try:
            self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except Exception as error:  # MLflow raises several types for a URI it cannot use; each is reported
            raise ServiceError(
                SERVICE,
                f"cannot use the tracking URI {self.public_uri!r}: {type(error).__name__}: {self._summary(error, 200)}",
                "MLFLOW_TRACKING_URI: the server's URL, e.g. http://mlflow:5000",
            ) from error

    def _summary(self, error: Exception, limit: int = 300) -> str:
        """MLflow's message without the credentials it quotes (it names the URL it failed on), then cut to its
        first line and ``limit``: cut first, a password split by the cut would no longer be recognised."""
        lines = redact(str(error), self.tracking_uri).splitlines()
        return lines[0][:limit] if lines else type(error).__name__

    def _fail(self, action: str, error: Exception) -> ServiceError:
        message = self._summary(error)
        status = re.search(r"error code (\d{3})", message)
        if status is not None:
            return ServiceError(
                SERVICE,
                f"cannot {action}: the server at {self.public_uri} answered HTTP {status.group(1)}",
                "the MLflow server's log (a 403 often means its --allowed-hosts does not list this host name)",
            )
        if isinstance(error, MlflowException) and "API request" in message:
            # MLflow's message embeds urllib3's whole retry story; keep what a person can act on.
            cause = "timed out" if "timed out" in message.lower() else "cannot connect"
            return ServiceUnreachable(
                SERVICE,
                f"cannot {action}: {cause} ({self.public_uri})",
                "that the MLflow server is running and that MLFLOW_TRACKING_URI points at it",
            )
        return ServiceError(
            SERVICE,
            f"cannot {action} at {self.public_uri}: {message}",
            "MLFLOW_TRACKING_URI and the MLflow server's log",
        )

    def overview(self, max_runs: int = 200) -> ExperimentOverview:
        """The experiment's training runs (oldest first) and the production version, in one read."""
        try:
            experiment = self._client.get_experiment_by_name(self.experiment_name)
        except Exception as error:  # MLflow raises many types (requests, SQLAlchemy, MlflowException)
            raise self._fail(f"read experiment {self.experiment_name!r}", error) from error
        if experiment is None:
            return ExperimentOverview(None, [], *self._production_unless_refused())
        try:
            found = self._training_runs(experiment.experiment_id, max_runs)
            versions = self._client.search_model_versions(f"name='{self.model_name}'")
        except Exception as error:
            raise self._fail(f"search the runs of {self.experiment_name!r}", error) from error
        versions_by_run: dict[str, list[str]] = {}
        for version in versions:
            versions_by_run.setdefault(version.run_id, []).append(str(version.version))
        runs = [
            TrainingRun(
                run_id=run.info.run_id,
                run_name=run.info.run_name or run.info.run_id[:8],
                status=run.info.status,
                started_at=_from_millis(run.info.start_time),
                metrics=_finite(run.data.metrics),
                tags={key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")},
                model_versions=tuple(sorted(versions_by_run.get(run.info.run_id, []), key=int)),
            )
            for run in found
        ]
        runs.sort(key=lambda run: run.started_at or datetime.min.replace(tzinfo=UTC))
        return ExperimentOverview(experiment.experiment_id, runs, *self._production_unless_refused())

    def _training_runs(self, experiment_id: str, max_runs: int) -> list[Any]:
        """The newest ``max_runs`` runs that are not nested (candidates are), newest first.

        Filtered by the server, so that ``max_runs`` counts training runs. MLflow servers before
        run-tag ``IS NULL`` filters (added in early 2026) refuse it: then the newest ``max_runs`` runs
        of any kind are read and the nested ones dropped here (about a quarter of them are training runs).
        """
        newest_first = ["attributes.start_time DESC"]
        try:
            return self._client.search_runs(
                [experiment_id], f"tags.`{PARENT_RUN_TAG}` IS NULL", max_results=max_runs, order_by=newest_first
            )
        except MlflowException as error:
            if error.error_code != "INVALID_PARAMETER_VALUE":
                raise
        found = self._client.search_runs([experiment_id], max_results=max_runs, order_by=newest_first)
        return [run for run in found if PARENT_RUN_TAG not in run.data.tags]

    def production(self) -> ProductionModel | None:
        """The version under the alias with its run's metrics, or None when no version has the alias yet.

        A name or alias the registry refuses is an error naming the setting, not "no version yet".
        """
        try:
            version = self._client.get_model_version_by_alias(self.model_name, self.model_alias)
        except MlflowException as error:
            if _alias_missing(error):
                return None
            if error.error_code == "INVALID_PARAMETER_VALUE":
                raise self._refused(error) from error
            raise self._fail(f"read {self.model_name}@{self.model_alias}", error) from error
        except Exception as error:
            raise self._fail(f"read {self.model_name}@{self.model_alias}", error) from error
        metrics: dict[str, float] = {}
        run_missing = False
        if version.run_id:
            try:
                metrics = _finite(self._client.get_run(version.run_id).data.metrics)
            except MlflowException as error:
                # A run deleted for good leaves its registered versions: the version is still served.
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise self._fail(f"read run {version.run_id}", error) from error
                run_missing = True
            except Exception as error:
                raise self._fail(f"read run {version.run_id}", error) from error
        return ProductionModel(
            name=self.model_name,
            alias=self.model_alias,
            version=str(version.version),
            run_id=version.run_id,
            created_at=_from_millis(version.creation_timestamp),
            metrics=metrics,
            run_missing=run_missing,
        )

    def _production_unless_refused(self) -> tuple[ProductionModel | None, tuple[str, str, str] | None]:
        """The production version, or why the registry refused the configured name or alias."""
        try:
            return self.production(), None
        except RefusedSetting as error:
            return None, (error.service, error.problem, error.hint)

    def _refused(self, error: MlflowException) -> ServiceError:
        return RefusedSetting(
            SERVICE,
            f"the registry refuses MODEL_NAME={self.model_name!r} / MODEL_ALIAS={self.model_alias!r}: "
            f"{self._summary(error).rstrip('.')}",
            "MODEL_NAME and MODEL_ALIAS in the UI's environment: the registered model's name and the alias "
            "the pipeline moves (the inference service's values)",
        )


def browser_url(ui_url: str | None, tracking_uri: str) -> str | None:
    """Where a browser reaches MLflow: MLFLOW_UI_URL, else the tracking URI when it is a web address.

    Without user info either way: a link shows its target, and a password in it would be on the page.
    """
    if ui_url:
        return public_url(ui_url).rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return public_url(tracking_uri).rstrip("/")
    return None


def run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The browser link to a run in the MLflow UI, or None when no browser-facing URL is known."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
