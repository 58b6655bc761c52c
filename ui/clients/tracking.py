"""Read the experiment's training runs and the registry's production version from MLflow.

Uses ``MlflowClient`` so the same code reads a tracking server (``http://...``)
in the stack and a local store (``sqlite:///...``) in tests and on a laptop.
MLflow retries HTTP calls for minutes by default; the UI wants a prompt answer,
so the retry count and timeout are lowered unless the environment sets them.
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

from ui.clients.errors import ServiceError, ServiceUnreachable, error_summary  # noqa: E402


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


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics with a number to show: a NaN (e.g. an unscored challenger) or infinity is left out, shown as "—"."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def _from_millis(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


class TrackingClient:
    """Reads MLflow; every failure becomes a ``ServiceError`` naming MLflow and what to check."""

    def __init__(self, tracking_uri: str, experiment_name: str, model_name: str, model_alias: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.model_name = model_name
        self.model_alias = model_alias
        try:
            self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except Exception as error:  # MLflow raises several types for a URI it cannot use; each is reported
            raise ServiceError(
                SERVICE,
                f"cannot use the tracking URI {tracking_uri!r}: {type(error).__name__}: {error_summary(error, 200)}",
                "MLFLOW_TRACKING_URI: the server's URL, e.g. http://mlflow:5000",
            ) from error

    def _fail(self, action: str, error: Exception) -> ServiceError:
        message = error_summary(error)
        status = re.search(r"error code (\d{3})", message)
        if status is not None:
            return ServiceError(
                SERVICE,
                f"cannot {action}: the server at {self.tracking_uri} answered HTTP {status.group(1)}",
                "the MLflow server's log (a 403 often means its --allowed-hosts does not list this host name)",
            )
        if isinstance(error, MlflowException) and "API request" in message:
            # MLflow's message embeds urllib3's whole retry story; keep what a person can act on.
            cause = "timed out" if "timed out" in message.lower() else "cannot connect"
            return ServiceUnreachable(
                SERVICE,
                f"cannot {action}: {cause} ({self.tracking_uri})",
                "that the MLflow server is running and that MLFLOW_TRACKING_URI points at it",
            )
        return ServiceError(
            SERVICE,
            f"cannot {action} at {self.tracking_uri}: {message}",
            "MLFLOW_TRACKING_URI and the MLflow server's log",
        )

    def overview(self, max_runs: int = 200) -> ExperimentOverview:
        """The experiment's training runs (oldest first) and the production version, in one read."""
        try:
            experiment = self._client.get_experiment_by_name(self.experiment_name)
        except Exception as error:  # MLflow raises many types (requests, SQLAlchemy, MlflowException)
            raise self._fail(f"read experiment {self.experiment_name!r}", error) from error
        if experiment is None:
            return ExperimentOverview(experiment_id=None, runs=[], production=self.production())
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
        return ExperimentOverview(experiment_id=experiment.experiment_id, runs=runs, production=self.production())

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
        """The version under the alias with its run's metrics, or None when no version has the alias yet."""
        try:
            version = self._client.get_model_version_by_alias(self.model_name, self.model_alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
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


def run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The browser link to a run in the MLflow UI, or None when no browser-facing URL is known."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
