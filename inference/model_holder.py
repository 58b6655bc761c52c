"""The model being served, resolved from the registry alias and swapped atomically when the alias moves.

Requests read ``holder.current`` once and use that immutable snapshot until
they answer, so a swap (a single reference assignment) never changes the model
under a request in flight. All registry traffic and model loading happen in
the caller's thread (start-up, the watcher thread or ``/model/reload``), never
in a request.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import skops.io  # noqa: F401 - imported at start-up (seconds on a busy machine), not inside the first model load
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from covertype.model_safety import load_checked_dir
from inference.model_call import check_predicts
from inference.serving import prepare_for_serving

logger = logging.getLogger(__name__)

# Longest pause before the watcher downloads a version that failed to load again (seconds).
MAX_FAILED_RETRY_S = 600.0


class RegistryState(StrEnum):
    """The outcome of the last registry check, as /health and the 503 message report it."""

    PENDING = "pending"
    OK = "ok"
    NO_REGISTERED_MODEL = "no_registered_model"
    ALIAS_NOT_SET = "alias_not_set"
    UNREACHABLE = "registry_unreachable"
    ARTIFACTS_UNREACHABLE = "artifacts_unreachable"
    LOAD_FAILED = "load_failed"


class RegistryCallError(RuntimeError):
    """A registry call made while loading a version failed: the registry is unreachable, not the version broken."""


class ArtifactDownloadError(RuntimeError):
    """A version's files could not be downloaded: an outage of the artifact store, tried again at the next
    check, not a broken model that waits out the growing retry pause."""


def failed_retry_pause_s(poll_interval_s: float, failed_attempts: int) -> float:
    """The pause before a version that failed to load is downloaded again: the poll interval doubled per
    failure, at most ``MAX_FAILED_RETRY_S`` (the exponent is capped: ``2**1024`` is no float)."""
    return min(poll_interval_s * 2.0 ** min(failed_attempts, 64), MAX_FAILED_RETRY_S)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model version with what the API reports about it; never mutated after creation."""

    name: str
    alias: str
    version: str
    run_id: str | None
    model: Any
    class_labels: tuple[int, ...]
    loaded_at: datetime
    load_seconds: float
    artifact_bytes: int
    metrics: dict[str, float]
    run_tags: dict[str, str]
    # False while the run could not be read: the watcher reads it again on its next checks.
    run_read: bool = True


@dataclass(frozen=True)
class RegistryStatus:
    """What the last check of the alias found; ``message`` is written for a human."""

    state: RegistryState
    message: str
    checked_at: datetime | None = None
    # The last check the registry answered (whatever it said: no model and no alias are answers too).
    last_success_at: datetime | None = None


@dataclass(frozen=True)
class RefreshResult:
    """What a check did: whether it swapped the model, and the status after it."""

    swapped: bool
    status: RegistryStatus
    current: LoadedModel | None = field(default=None, repr=False)


def redact_uri(uri: str) -> str:
    """A tracking URI without user info, so status messages never leak credentials."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _is_missing(error: MlflowException) -> bool:
    """MLflow reports a missing model as RESOURCE_DOES_NOT_EXIST and a missing alias as INVALID_PARAMETER_VALUE."""
    return error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class ModelHolder:
    """Resolves ``models:/{name}@{alias}``, loads new versions and keeps the one being served."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        model_alias: str,
        poll_interval_s: float,
        prepare_model: Callable[[Any], list[str]] = prepare_for_serving,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.model_alias = model_alias
        self.poll_interval_s = poll_interval_s
        self._prepare_model = prepare_model
        self._client_instance: MlflowClient | None = None
        self._current: LoadedModel | None = None
        self._status = RegistryStatus(RegistryState.PENDING, "the registry has not been checked yet")
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._swap_listeners: list[Callable[[LoadedModel], None]] = []
        # The (version, run) that last failed to load, and when the watcher may try it again.
        self._failed: tuple[str, str | None] | None = None
        self._failed_attempts = 0
        self._failed_message = ""
        self._retry_failed_after = datetime.min.replace(tzinfo=UTC)
        # The (version, run) whose files could not be downloaded at the last check, if any.
        self._unreachable_files: tuple[str, str | None] | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The snapshot to answer with; read it once per request (or batch)."""
        return self._current

    @property
    def status(self) -> RegistryStatus:
        """The outcome of the last registry check."""
        return self._status

    @property
    def public_tracking_uri(self) -> str:
        """The tracking URI without credentials."""
        return redact_uri(self.tracking_uri)

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener`` with each newly served model (metrics use it)."""
        self._swap_listeners.append(listener)

    def unavailable_reason(self) -> str:
        """Why no model is being served, naming what is missing."""
        status = self._status
        if status.state is RegistryState.PENDING:
            return f"no model loaded yet: the first check of models:/{self.model_name}@{self.model_alias} is pending"
        return f"no model loaded: {status.message}"

    def refresh(self, *, force: bool = False) -> RefreshResult:
        """Check the alias once and, if it names another version than the one served, load and swap to it.

        Registry errors never propagate: they become the status (and are
        logged), and the model already loaded stays in service. A version that
        failed to load is tried again with a growing pause (poll interval
        doubled per failure, at most ``MAX_FAILED_RETRY_S``) rather than
        downloaded on every poll; ``force`` (``POST /model/reload``) tries now.
        """
        with self._refresh_lock:
            swapped = self._refresh_locked(force=force)
            return RefreshResult(swapped=swapped, status=self._status, current=self._current)

    @property
    def _client(self) -> MlflowClient:
        """Created on first use: for an SQLite URI the constructor already opens (and migrates) the store."""
        if self._client_instance is None:
            self._client_instance = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client_instance

    def _refresh_locked(self, *, force: bool) -> bool:
        now = datetime.now(UTC)
        version = self._resolve_alias(now)
        if version is None:
            return False
        served = self._current
        # The run too: a model deleted and registered again starts over at version 1 with another run.
        target = (str(version.version), version.run_id)
        if served is not None and (served.version, served.run_id) == target:
            if not served.run_read:
                self._read_run_again(served)
            self._set_status(self._serving_message(served), now)
            return False
        if target == self._failed and now < self._retry_failed_after and not force:
            # The registry answered: report the failed load again, not whatever a check in between found.
            self._set_status((RegistryState.LOAD_FAILED, self._failed_message), now)
            return False
        loaded = self._load_or_report(target, now)
        if loaded is None:
            return False
        self._failed = None
        self._current = loaded
        logger.info(
            "now serving %s version %s (run %s), loaded in %.2f s",
            self.model_name,
            loaded.version,
            loaded.run_id,
            loaded.load_seconds,
        )
        for listener in self._swap_listeners:
            listener(loaded)
        self._set_status(self._serving_message(loaded), now)
        return True

    def _load_or_report(self, target: tuple[str, str | None], now: datetime) -> LoadedModel | None:
        """Load ``target`` (version, run); if it fails, None, with the status saying why and when it is tried again."""
        version, run_id = target
        try:
            return self._load(version, run_id)
        except RegistryCallError as error:
            self._set_unreachable(error.__cause__ or error, now)
        except ArtifactDownloadError as error:
            message = (
                f"{error}; tried again at the next check (every {self.poll_interval_s:g} s), "
                "or now with POST /model/reload"
            )
            if (self._status.state, self._unreachable_files) != (RegistryState.ARTIFACTS_UNREACHABLE, target):
                logger.warning("%s", message)  # once per version, not at every poll
            self._unreachable_files = target
            self._set_status((RegistryState.ARTIFACTS_UNREACHABLE, message), now)
        except Exception as error:
            logger.exception("loading version %s of %s failed", version, self.model_name)
            self._failed_attempts = self._failed_attempts + 1 if target == self._failed else 1
            self._failed = target
            pause_s = failed_retry_pause_s(self.poll_interval_s, self._failed_attempts)
            self._retry_failed_after = now + timedelta(seconds=pause_s)
            message = (
                f"version {version} of registered model '{self.model_name}' could not be loaded: "
                f"{type(error).__name__}: {error} (attempt {self._failed_attempts}; next try in {pause_s:g} s, "
                "or now with POST /model/reload)"
            )
            self._failed_message = message
            self._set_status((RegistryState.LOAD_FAILED, message), now)
        return None

    def _resolve_alias(self, now: datetime) -> ModelVersion | None:
        """The version the alias names, or None with the status saying why there is none."""
        try:
            return self._client.get_model_version_by_alias(self.model_name, self.model_alias)
        except MlflowException as error:
            if not _is_missing(error):
                self._set_unreachable(error, now)
                return None
            try:
                missing = self._missing_state()
            except Exception as inner:
                self._set_unreachable(inner, now)
                return None
            self._set_status(missing, now)
            return None
        except Exception as error:  # the registry's transport errors are not MlflowExceptions
            self._set_unreachable(error, now)
            return None

    def _serving_message(self, model: LoadedModel) -> tuple[RegistryState, str]:
        return RegistryState.OK, f"serving version {model.version} of models:/{self.model_name}@{self.model_alias}"

    def _missing_state(self) -> tuple[RegistryState, str]:
        """Tell "no registered model" from "alias not set" (MLflow uses one error code family for both)."""
        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException as error:
            if _is_missing(error):
                return (
                    RegistryState.NO_REGISTERED_MODEL,
                    f"no registered model '{self.model_name}' in the MLflow registry at {self.public_tracking_uri}"
                    " (has the training pipeline registered one?)",
                )
            raise
        return (
            RegistryState.ALIAS_NOT_SET,
            f"registered model '{self.model_name}' exists but has no alias '{self.model_alias}'"
            " (no version has been promoted yet)",
        )

    def _set_status(self, state_message: tuple[RegistryState, str], now: datetime, answered: bool = True) -> None:
        state, message = state_message
        if self._current is not None and state is not RegistryState.OK:
            message = f"{message}; still serving version {self._current.version}"
        if state is not self._status.state:
            logger.info("registry status: %s: %s", state, message)
        self._status = RegistryStatus(
            state,
            message,
            checked_at=now,
            last_success_at=now if answered else self._status.last_success_at,
        )

    def _set_unreachable(self, error: Exception, now: datetime) -> None:
        message = f"MLflow registry at {self.public_tracking_uri} unreachable: {type(error).__name__}: {error}"
        if isinstance(error, ImportError):
            # e.g. an sqlite:// URI in the image, which has mlflow-skinny (no SQL store): a configuration error.
            message += " (this installation cannot open that kind of store: point MLFLOW_TRACKING_URI at a server)"
        logger.warning("%s", message)
        self._set_status((RegistryState.UNREACHABLE, message), now, answered=False)

    def _load(self, version: str, run_id: str | None) -> LoadedModel:
        started = time.perf_counter()
        # Load the version number, not the alias: the alias may move between
        # resolving it and downloading, and we must report what we serve.
        # Resolve the artifact location with our own client: a ``models:/`` URI would be resolved
        # through MLflow's *global* registry URI, not the one this holder was given.
        try:
            artifact_uri = self._client.get_model_version_download_uri(self.model_name, version)
        except Exception as error:
            raise RegistryCallError(f"resolving where version {version}'s files are: {error}") from error
        with tempfile.TemporaryDirectory(prefix="covertype-model-") as download_dir:
            try:
                local_path = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=artifact_uri, dst_path=download_dir, tracking_uri=self.tracking_uri
                    )
                )
            except Exception as error:  # MLflow's, the HTTP client's or the file system's: all mean "no files"
                # Files deleted for good land here too, on a store that answers "no such file": retried at
                # each check, with one warning (/health keeps saying it).
                raise ArtifactDownloadError(
                    f"the files of version {version} of registered model '{self.model_name}' could not be "
                    f"downloaded: {type(error).__name__}: {error}"
                ) from error
            artifact_bytes = _directory_bytes(local_path)
            # Checked before anything is deserialized: the model's own MLmodel must not choose pickle or extra
            # trusted types.
            model = load_checked_dir(local_path)
        changes = self._prepare_model(model)
        if changes:
            logger.info("version %s prepared for serving: %s", version, "; ".join(changes))
        classes = tuple(int(label) for label in getattr(model, "classes_", ()))
        if not hasattr(model, "predict_proba") or not classes:
            raise TypeError(f"version {version} is a {type(model).__name__} without predict_proba/classes_")
        # Before the swap, through the requests' own code path: a version that cannot predict is a failed load.
        check_predicts(model, classes)
        run_data = self._run_metrics_and_tags(version, run_id)
        metrics, tags = run_data or ({}, {})
        return LoadedModel(
            name=self.model_name,
            alias=self.model_alias,
            version=version,
            run_id=run_id,
            model=model,
            class_labels=classes,
            loaded_at=datetime.now(UTC),
            load_seconds=time.perf_counter() - started,
            artifact_bytes=artifact_bytes,
            metrics=metrics,
            run_tags=tags,
            run_read=run_data is not None,
        )

    def _run_metrics_and_tags(
        self, version: str, run_id: str | None, *, warn: bool = True
    ) -> tuple[dict[str, float], dict[str, str]] | None:
        """The run's metrics and its own (non-``mlflow.``) tags; None when the run cannot be read for now.

        They are only reported by ``/model``: a run garbage-collected after its
        model was registered, or a transient error, must not keep a model that
        loaded and predicts out of service. A run that no longer exists has
        nothing to report, ever: empty, and not read again.
        """
        if not run_id:
            return {}, {}
        try:
            run = self._client.get_run(run_id)
        except Exception as error:
            gone = isinstance(error, MlflowException) and error.error_code == "RESOURCE_DOES_NOT_EXIST"
            if warn:
                logger.warning(
                    "run %s of version %s could not be read (%s: %s); serving the version without run metrics "
                    "and tags%s",
                    run_id,
                    version,
                    type(error).__name__,
                    error,
                    "" if gone else " until a later check reads it",
                )
            return ({}, {}) if gone else None
        tags = {key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")}
        return dict(run.data.metrics), tags

    def _read_run_again(self, served: LoadedModel) -> None:
        """After a transient error, report the served version's metrics and tags once its run can be read.

        Only the reported fields change: the same model object keeps serving,
        so this is not a swap. Quietly: the first failure was logged.
        """
        run_data = self._run_metrics_and_tags(served.version, served.run_id, warn=False)
        if run_data is None:
            return
        metrics, tags = run_data
        self._current = replace(served, metrics=metrics, run_tags=tags, run_read=True)
        logger.info("run %s of version %s read: its metrics and tags are reported", served.run_id, served.version)

    def start_watcher(self) -> None:
        """Check the alias every ``poll_interval_s`` seconds in a daemon thread."""
        if self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop_watcher(self, timeout_s: float = 10.0) -> None:
        """Stop the watcher and wait for a check in progress to end."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout_s)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:
                # refresh() turns registry errors into the status; anything else is a bug to see in the
                # log, but the watcher must survive it to keep the service up to date.
                logger.exception("model watcher check failed")
