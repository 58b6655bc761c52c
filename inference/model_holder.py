"""The model being served, resolved from the registry alias and swapped atomically when the alias moves.

Requests read ``holder.current`` once and use that immutable snapshot until
they answer, so a swap (a single reference assignment) never changes the model
under a request in flight. All registry traffic and model loading happen in
checks, one at a time, run by the watcher thread (which starts with one at
once, so the service never waits for the registry to open its port) or by the
caller of ``refresh``; never in a request. Calls that arrive while a check runs
share the next one instead of queueing a check each.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import mlflow
import skops.io  # noqa: F401 - imported at start-up (seconds on a busy machine), not inside the first model load
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from covertype.model_safety import load_checked_dir
from covertype.redaction import public_url, redact
from inference.model_call import check_predicts
from inference.serving import prepare_for_serving

logger = logging.getLogger(__name__)

# Longest pause before the watcher downloads a version that failed to load again (seconds).
MAX_FAILED_RETRY_S = 600.0
# Downloads in a row that found no files of one version before the status says they may be gone for good.
FILES_GONE_AFTER_ATTEMPTS = 3

# What a store answers when the files are not there: MLflow's error code (a local store; the tracking server's
# 404 quotes it too), an HTTP 404, S3's NoSuchKey, the file system's "No such file".
_NO_FILES = re.compile(r"RESOURCE_DOES_NOT_EXIST|\b404\b|NoSuchKey|No such (?:file|artifact)", re.IGNORECASE)


class RegistryState(StrEnum):
    """The outcome of the last registry check, as /health and the 503 message report it."""

    PENDING = "pending"
    OK = "ok"
    NO_REGISTERED_MODEL = "no_registered_model"
    ALIAS_NOT_SET = "alias_not_set"
    CONFIGURATION_ERROR = "configuration_error"
    UNREACHABLE = "registry_unreachable"
    ARTIFACTS_UNREACHABLE = "artifacts_unreachable"
    LOAD_FAILED = "load_failed"


class RegistryCallError(RuntimeError):
    """A registry call made while loading a version failed: the registry is unreachable, not the version broken."""


class ArtifactDownloadError(RuntimeError):
    """A version's files could not be downloaded: an outage of the artifact store, tried again at the next
    check, not a broken model that waits out the growing retry pause.

    ``no_files`` says the store answered that the files are not there: several of those in a row
    mean the files may have been deleted, which waiting does not cure.
    """

    def __init__(self, message: str, *, no_files: bool) -> None:
        super().__init__(message)
        self.no_files = no_files


def failed_retry_pause_s(poll_interval_s: float, failed_attempts: int) -> float:
    """The pause before a version that failed to load is downloaded again: the poll interval doubled per
    failure, at most ``MAX_FAILED_RETRY_S`` (the exponent is capped: ``2**1024`` is no float)."""
    return min(poll_interval_s * 2.0 ** min(failed_attempts, 64), MAX_FAILED_RETRY_S)


class CredentialRedactor(logging.Filter):
    """Removes credentials from status messages and, as a filter of this module's logger, from its log records.

    MLflow's errors quote the tracking URI in full, ``user:password@`` included, and
    those errors end up in /health, the 503s, /model/reload and the log. Both go
    through ``redact``: the user info of every tracking URI a holder was given,
    wherever it appears, and that of any URL in the text.
    """

    def __init__(self) -> None:
        super().__init__()
        self._uris: tuple[str, ...] = ()

    def add_uri(self, uri: str) -> None:
        """Redact the credentials of ``uri`` (as written and percent-decoded) from now on."""
        if uri not in self._uris:
            self._uris = (*self._uris, uri)

    def redact(self, text: str) -> str:
        """``text`` without user info in any URL, nor the password of a known URI anywhere
        (``covertype.redaction``, which the UI uses too)."""
        for uri in self._uris:
            text = redact(text, uri)
        return public_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message and traceback text before any handler formats them."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: logging reports it, this filter must not raise
            return True
        record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_REDACTOR = CredentialRedactor()
logger.addFilter(_REDACTOR)


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


def _directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _is_missing(error: MlflowException) -> bool:
    """Whether MLflow says the model or the alias does not exist.

    A missing model is RESOURCE_DOES_NOT_EXIST, a missing alias INVALID_PARAMETER_VALUE
    "... not found". That code also refuses a name or alias MLflow does not accept
    (``prod/1``): a configuration error (``_is_refused``), not an alias nobody set yet.
    """
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return error.error_code == "INVALID_PARAMETER_VALUE" and "not found" in error.message.lower()


def _is_refused(error: MlflowException) -> bool:
    """Whether the registry refused the configured name or alias itself (invalid, not missing)."""
    return error.error_code == "INVALID_PARAMETER_VALUE" and not _is_missing(error)


def _means_no_files(error: Exception) -> bool:
    """Whether a failed download says the files are not there (rather than the store being out of reach)."""
    return isinstance(error, FileNotFoundError) or bool(_NO_FILES.search(f"{getattr(error, 'error_code', '')} {error}"))


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
        _REDACTOR.add_uri(tracking_uri)
        self._client_instance: MlflowClient | None = None
        self._current: LoadedModel | None = None
        self._status = RegistryStatus(RegistryState.PENDING, "the registry has not been checked yet")
        # Held while a check runs: checks never overlap.
        self._refresh_lock = threading.Lock()
        # The check asked for and not started yet, which every caller until it starts shares.
        self._requests_lock = threading.Lock()
        self._next_check: Future[RefreshResult] | None = None
        self._next_check_forced = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._swap_listeners: list[Callable[[LoadedModel], None]] = []
        # The (version, run) that last failed to load, and when the watcher may try it again.
        self._failed: tuple[str, str | None] | None = None
        self._failed_attempts = 0
        self._failed_message = ""
        self._retry_failed_after = datetime.min.replace(tzinfo=UTC)
        # The (version, run) whose files the last downloads found missing, and how many did in a row.
        self._missing_files: tuple[str, str | None] | None = None
        self._missing_files_attempts = 0

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
        return public_url(self.tracking_uri)

    @property
    def watching(self) -> bool:
        """Whether the watcher thread runs, and so runs the checks ``request_check`` asks for."""
        return self._watcher is not None and self._watcher.is_alive()

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener`` with each newly served model (metrics use it)."""
        self._swap_listeners.append(listener)

    def unavailable_reason(self) -> str:
        """Why no model is being served, naming what is missing."""
        status = self._status
        if status.state is RegistryState.PENDING:
            return f"no model loaded yet: the first check of models:/{self.model_name}@{self.model_alias} is pending"
        return f"no model loaded: {status.message}"

    def request_check(self, *, force: bool = False) -> Future[RefreshResult]:
        """The result of the first check that starts after this call, run by the watcher thread.

        Calls made while a check runs share the next check, so a burst of
        ``POST /model/reload`` costs two checks, not one each (each one
        downloading a broken version again), and nobody waits in a thread.
        ``force`` (any caller's) lets that check try a failed version before its pause ends.
        """
        future = self._ask_for_check(force=force)
        self._wake.set()
        return future

    def _ask_for_check(self, *, force: bool) -> Future[RefreshResult]:
        """The check not started yet, created if there is none: everyone asking until it starts shares it."""
        with self._requests_lock:
            if self._next_check is None:
                self._next_check = Future()
            self._next_check_forced = self._next_check_forced or force
            return self._next_check

    def refresh(self, *, force: bool = False) -> RefreshResult:
        """Check the alias once (sharing a check asked for by others) and, if it names another version than the
        one served, load and swap to it; in this thread, or the watcher's if it starts the check first.

        Registry errors never propagate: they become the status (and are
        logged), and the model already loaded stays in service. A version that
        failed to load is tried again with a growing pause (poll interval
        doubled per failure, at most ``MAX_FAILED_RETRY_S``) rather than
        downloaded on every poll; ``force`` (``POST /model/reload``) tries now.
        """
        future = self.request_check(force=force)
        self._run_requested_check()
        return future.result()

    def _run_requested_check(self) -> None:
        """Run the check asked for, if another thread has not started it already."""
        with self._refresh_lock:
            with self._requests_lock:
                future, force = self._next_check, self._next_check_forced
                self._next_check, self._next_check_forced = None, False
            if future is None or not future.set_running_or_notify_cancel():
                return
            try:
                swapped = self._refresh_locked(force=force)
            except BaseException as error:  # a bug: every caller sharing the check sees it
                future.set_exception(error)
                raise
            future.set_result(RefreshResult(swapped=swapped, status=self._status, current=self._current))

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
        self._missing_files = None
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
            self._set_status((RegistryState.ARTIFACTS_UNREACHABLE, self._download_failed_message(target, error)), now)
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

    def _download_failed_message(self, target: tuple[str, str | None], error: ArtifactDownloadError) -> str:
        """What /health says about files that could not be downloaded; once several downloads in a row found
        none, that they may be gone for good and how to recover (the version is still tried at each check)."""
        if not error.no_files:
            self._missing_files = None
        elif target == self._missing_files:
            self._missing_files_attempts += 1
        else:
            self._missing_files, self._missing_files_attempts = target, 1
        if self._missing_files is not None and self._missing_files_attempts >= FILES_GONE_AFTER_ATTEMPTS:
            return (
                f"{error}; {FILES_GONE_AFTER_ATTEMPTS} or more downloads in a row found no files: they may have been "
                f"deleted for good. To recover, promote another version (move the alias '{self.model_alias}' of "
                f"'{self.model_name}' to a version whose files exist); this one is still tried at every check"
            )
        return (
            f"{error}; tried again at the next check (every {self.poll_interval_s:g} s), or now with POST /model/reload"
        )

    def _resolve_alias(self, now: datetime) -> ModelVersion | None:
        """The version the alias names, or None with the status saying why there is none."""
        try:
            return self._client.get_model_version_by_alias(self.model_name, self.model_alias)
        except MlflowException as error:
            if not _is_missing(error):
                self._set_refused_or_unreachable(error, now)
                return None
            try:
                missing = self._missing_state()
            except MlflowException as inner:
                self._set_refused_or_unreachable(inner, now)
                return None
            except Exception as inner:
                self._set_unreachable(inner, now)
                return None
            self._set_status(missing, now)
            return None
        except Exception as error:  # the registry's transport errors are not MlflowExceptions
            self._set_unreachable(error, now)
            return None

    def _set_refused_or_unreachable(self, error: MlflowException, now: datetime) -> None:
        """A registry error other than "not found": the configured name or alias refused, or an outage."""
        if not _is_refused(error):
            self._set_unreachable(error, now)
            return
        message = (
            f"the MLflow registry refuses MODEL_NAME={self.model_name!r} / MODEL_ALIAS={self.model_alias!r}: "
            f"{error.message} (a configuration error: correct the setting and restart the service)"
        )
        self._set_status((RegistryState.CONFIGURATION_ERROR, message), now)

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
        """The one place a status is set: credentials are removed here, and a status is logged only when it
        changes, so a registry that stays down is not warned about at every poll."""
        state, message = state_message
        if self._current is not None and state is not RegistryState.OK:
            message = f"{message}; still serving version {self._current.version}"
        message = _REDACTOR.redact(message)
        if (state, message) != (self._status.state, self._status.message):
            level = logging.INFO if state is RegistryState.OK else logging.WARNING
            logger.log(level, "registry status: %s: %s", state, message)
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
        self._set_status((RegistryState.UNREACHABLE, message), now, answered=False)

    def _lists_no_files(self, artifact_uri: str) -> bool:
        """Whether the store lists nothing where a version's files should be.

        Through the tracking server's artifact proxy (the compose stack: MLflow in front of MinIO) a
        deleted file comes back as a 500 after retries, not as a 404, so the failed download alone
        cannot tell "gone" from "out of reach"; an empty listing can. A listing that fails says nothing.
        """
        try:
            return not mlflow.artifacts.list_artifacts(artifact_uri=artifact_uri, tracking_uri=self.tracking_uri)
        except Exception:  # the store out of reach: not evidence that the files are gone
            return False

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
                # each check, and /health says they may be gone once several downloads in a row found none.
                raise ArtifactDownloadError(
                    f"the files of version {version} of registered model '{self.model_name}' could not be "
                    f"downloaded: {type(error).__name__}: {error}",
                    no_files=_means_no_files(error) or self._lists_no_files(artifact_uri),
                ) from error
            if not any(path.is_file() for path in local_path.rglob("*")):
                # A store that lists a deleted version's folder as empty (rather than failing the download).
                raise ArtifactDownloadError(
                    f"the files of version {version} of registered model '{self.model_name}' could not be "
                    f"downloaded: the store holds no files at {public_url(artifact_uri)}",
                    no_files=True,
                )
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
        """Check the alias at once, then every ``poll_interval_s`` seconds and whenever asked, in a daemon thread."""
        if self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop_watcher(self, timeout_s: float = 10.0) -> None:
        """Stop the watcher and wait for a check in progress to end; a check asked for and not started is not
        run (the service is stopping): its callers get the status as it stands."""
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout_s)
            self._watcher = None
        with self._requests_lock:
            future, self._next_check, self._next_check_forced = self._next_check, None, False
        if future is not None and future.set_running_or_notify_cancel():
            # Answered with the state as it is: a cancelled future would raise in whoever waits for it.
            future.set_result(RefreshResult(swapped=False, status=self._status, current=self._current))

    def _watch(self) -> None:
        """The first check at once (the app does not wait for it), then one per poll interval, and each check
        asked for (``request_check``) as soon as the one running ends."""
        while not self._stop.is_set():
            self._wake.clear()
            self._ask_for_check(force=False)  # or shares the one asked for meanwhile
            try:
                self._run_requested_check()
            except Exception:
                # Checks turn registry errors into the status; anything else is a bug to see in the log, but the
                # watcher must survive it to keep the service up to date.
                logger.exception("model watcher check failed")
            self._wake.wait(self.poll_interval_s)
