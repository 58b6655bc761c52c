"""Real back ends for the UI tests and the screenshots: a local MLflow store, the inference app,
the data API replica and an SQLite data DB, each on loopback or in a temporary folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covertype import store
from covertype.data_api_client import DataApiClient
from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMN_NAMES, SOIL_COLUMN, WILDERNESS_COLUMN
from covertype.settings import Settings
from data_api.app import create_app as create_data_api
from data_api.settings import DataApiSettings
from inference.app import create_app
from inference.schemas import ErrorItem, InvalidRequestError
from tests.inference.clients import first_check_done
from tests.ui.servers import closed_url, serve, silent_port

EXPERIMENT = "covertype"
MODEL_NAME = "covertype"
ALIAS = "production"


def load_frame(csv_path: Path) -> pd.DataFrame:
    """The shared raw-format rows with int64 numerics (as the model takes them)."""
    frame = pd.read_csv(csv_path)
    frame[list(NUMERIC_COLUMN_NAMES)] = frame[list(NUMERIC_COLUMN_NAMES)].astype("int64")
    return frame


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and the training run that logged it."""

    version: str
    run_id: str


def train_pipeline(frame: pd.DataFrame) -> Pipeline:
    """A small model honouring the registry contract: raw-format DataFrame in, cover types 1..7 out."""
    encoder = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), [WILDERNESS_COLUMN, SOIL_COLUMN])],
        remainder="passthrough",
    )
    forest = RandomForestClassifier(n_estimators=10, max_depth=12, random_state=0, n_jobs=1)
    pipeline = Pipeline([("encode", encoder), ("model", forest)])
    return pipeline.fit(frame[list(FEATURE_COLUMNS)], frame[LABEL_COLUMN])


def log_model_version(tracking_uri: str, run_id: str, pipeline: Pipeline, sample: pd.DataFrame) -> RegisteredVersion:
    """Log ``pipeline`` into an existing run as the pipeline does (skops, signature, input example), and register it."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    features = sample[list(FEATURE_COLUMNS)].head(5)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features, pipeline.predict(features)),
            input_example=features,
            skops_trusted_types=["sklearn.tree._tree.Tree"],
            registered_model_name=MODEL_NAME,
        )
    return RegisteredVersion(version=str(info.registered_model_version), run_id=run_id)


@dataclass(frozen=True)
class MlflowFixture:
    """What ``build_mlflow_store`` made, for assertions."""

    tracking_uri: str
    experiment_id: str
    versions: list[RegisteredVersion]
    production: RegisteredVersion
    candidate_run_id: str
    pipeline: Pipeline
    metrics: list[dict[str, float]]


def training_metrics(
    macro_f1: float, rows: int, batches: int, recall_labels: tuple[int, ...] = tuple(range(1, 8))
) -> dict[str, float]:
    """Metrics shaped like the pipeline's parent-run metrics; ``recall_k`` only for the cover types
    ``recall_labels`` names (training logs none for a cover type absent from its evaluation set)."""
    metrics = {"macro_f1": macro_f1, "accuracy": macro_f1 + 0.01, "rows_used": rows, "batches_seen": batches}
    metrics.update({f"recall_{label}": round(macro_f1 - 0.02 + 0.01 * label, 3) for label in recall_labels})
    return metrics


def build_registry_store(folder: Path, metrics: dict[str, float]) -> tuple[str, RegisteredVersion]:
    """A local MLflow store with one training run logging ``metrics``, registered as version 1 under
    the production alias; returns the tracking URI and the version.

    No model is logged (the Models page reads only the registry and the run), so this is fast;
    the version's source is where the pipeline's would be.
    """
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    artifacts = (folder / "artifacts").as_uri()
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    run = client.create_run(experiment_id, tags={"dag_run_id": "scheduled__run-1"})
    for name, value in metrics.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, source=f"{artifacts}/{run.info.run_id}/artifacts/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(MODEL_NAME, ALIAS, version.version)
    return tracking_uri, RegisteredVersion(version=str(version.version), run_id=run.info.run_id)


RUN_SPACING_S = 330
DEFAULT_HISTORY: tuple[tuple[float, int], ...] = ((0.71, 1512), (0.78, 3024))


def build_mlflow_store(
    folder: Path, frame: pd.DataFrame, history: tuple[tuple[float, int], ...] = DEFAULT_HISTORY
) -> MlflowFixture:
    """One training run per ``(macro_f1, rows_used)`` of ``history``, each registered as the next version,
    ``production`` on the last one, plus a nested candidate run under the last (which the UI must not list).

    The model is logged once (logging is the slow part); later versions are registered from the same
    artifact under their own run, which is all the registry and the UI look at.
    """
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # An explicit artifact location keeps artifacts in the temporary folder, not in the working directory.
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    sample = frame.sample(n=3000, random_state=0)
    pipeline = train_pipeline(sample)
    metrics = [training_metrics(f1, rows, batch) for batch, (f1, rows) in enumerate(history, start=1)]
    # One run per DAG run, RUN_SPACING_S apart (as the schedule would space them), the last one just now.
    first_start_ms = int(time.time() * 1000) - RUN_SPACING_S * 1000 * len(history)
    versions: list[RegisteredVersion] = []
    source: str | None = None
    for index, values in enumerate(metrics):
        run = client.create_run(
            experiment_id,
            start_time=first_start_ms + RUN_SPACING_S * 1000 * index,
            tags={"dag_run_id": f"scheduled__run-{index + 1}", "batch_numbers": str(list(range(1, index + 2)))},
        )
        for name, value in values.items():
            client.log_metric(run.info.run_id, name, value)
        if source is None:
            versions.append(log_model_version(tracking_uri, run.info.run_id, pipeline, sample))
            source = client.get_model_version(MODEL_NAME, versions[0].version).source
        else:
            version = client.create_model_version(MODEL_NAME, source=source, run_id=run.info.run_id)
            versions.append(RegisteredVersion(version=str(version.version), run_id=run.info.run_id))
        client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(MODEL_NAME, ALIAS, versions[-1].version)
    candidate = client.create_run(experiment_id, tags={"mlflow.parentRunId": versions[-1].run_id})
    client.log_metric(candidate.info.run_id, "macro_f1", 0.5)
    client.set_terminated(candidate.info.run_id)
    return MlflowFixture(
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        versions=versions,
        production=versions[-1],
        candidate_run_id=candidate.info.run_id,
        pipeline=pipeline,
        metrics=metrics,
    )


def expected_cover_type(pipeline: Pipeline, record: dict[str, int | str]) -> int:
    """What the registered model itself predicts for one record (the truth the UI must show)."""
    row = pd.DataFrame([record], columns=list(FEATURE_COLUMNS))
    row[list(NUMERIC_COLUMN_NAMES)] = row[list(NUMERIC_COLUMN_NAMES)].astype("int64")
    return int(pipeline.predict(row)[0])


@contextmanager
def inference_server(
    tracking_uri: str, predict_bodies: list[Any] | None = None, *, checked: bool = True, **settings: object
) -> Iterator[str]:
    """The inference service's real app, reading ``tracking_uri``, on a loopback port (``settings`` override
    the model name and alias too).

    With ``predict_bodies``, the JSON body of every ``POST /predict`` it receives is appended there:
    what the UI actually sent, which a page's own display of the request cannot prove. With
    ``checked`` (the default) the URL is given once the service's first registry check has ended.
    """
    values: dict[str, Any] = {"model_name": MODEL_NAME, "model_alias": ALIAS, **settings}
    app = create_app(Settings(mlflow_tracking_uri=tracking_uri, **values))
    with serve(app if predict_bodies is None else recording_predict_bodies(app, predict_bodies)) as url:
        if checked:
            # The service checks the registry in the background once started: pages are tested on what it found.
            health = f"{url}/health"
            assert first_check_done(lambda: httpx.get(health, timeout=10, trust_env=False).json()), health
        yield url


def write_unreadable_model(tracking_uri: str, version: str) -> None:
    """Put an ``MLmodel`` that is not YAML where ``version``'s files should be: it downloads, and fails to load."""
    source = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version(MODEL_NAME, version)
    folder = Path(source.source.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text("flavors: [\n")


@contextmanager
def inference_without_model(registry_state: str, folder: Path) -> Iterator[str]:
    """The real inference app with no model loaded, its first registry check having ended in ``registry_state``
    (one of inference/model_holder.py's ``RegistryState`` values other than ``ok``); for ``pending`` it has not
    ended: the registry is a port that never answers, released before the service stops.

    Set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` first: MLflow's default retries an unreachable registry for minutes.
    """
    if registry_state == "pending":
        with silent_port() as registry, inference_server(registry.url, checked=False) as url:
            try:
                yield url
            finally:
                registry.release()  # the hung check fails at once, and the service stops without waiting for it
        return
    tracking_uri, settings = _registry_in_state(registry_state, folder)
    with inference_server(tracking_uri, **settings) as url:
        assert httpx.get(f"{url}/health", timeout=10).json()["registry_state"] == registry_state
        yield url


def _registry_in_state(registry_state: str, folder: Path) -> tuple[str, dict[str, str]]:
    """A tracking URI (and settings) on which the inference service's check ends in ``registry_state``."""
    empty = f"sqlite:///{folder / 'empty-mlflow.db'}"
    if registry_state == "no_registered_model":
        return empty, {}
    if registry_state == "alias_not_set":
        MlflowClient(tracking_uri=empty, registry_uri=empty).create_registered_model(MODEL_NAME)
        return empty, {}
    if registry_state == "configuration_error":
        return empty, {"model_alias": "prod/1"}  # MLflow refuses an alias with a slash
    if registry_state == "registry_unreachable":
        return closed_url(), {}
    # A version registered without files (the artifact store lost them), or with files that do not load.
    tracking_uri, version = build_registry_store(folder, training_metrics(0.8, 1000, 1))
    if registry_state == "load_failed":
        write_unreadable_model(tracking_uri, version.version)
    return tracking_uri, {}


def recording_predict_bodies(app: ASGIApp, bodies: list[Any]) -> ASGIApp:
    """``app`` unchanged, but the JSON body of each ``POST /predict`` is appended to ``bodies`` as it is read."""

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict":
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    bodies.append(json.loads(b"".join(chunks)))
            return message

        await app(scope, receive_and_keep, send)

    return recording


def inference_stub(model: object, predict: Callable[[list[Any]], tuple[int, object]]) -> FastAPI:
    """An "inference service" answering ``GET /model`` with ``model`` and ``POST /predict`` with
    ``predict(instances)`` (a status and a JSON body): for answers the real app never gives,
    such as a body of another shape or a 422 refusing valid records (a newer schema).
    """
    stub = FastAPI()

    @stub.get("/model")
    def model_info() -> object:
        return model

    @stub.post("/predict")
    async def predict_records(request: Request) -> JSONResponse:
        status, body = predict((await request.json())["instances"])
        return JSONResponse(body, status_code=status)

    return stub


def refusal_422(problems: list[tuple[int, str, str]]) -> dict[str, Any]:
    """The body of the real service's 422 for ``(index, field, reason)`` problems, built by its own code:
    at most 100 problems listed, ``errors_total`` counting them all when there are more."""
    items = [ErrorItem(index=index, field=field, reason=reason) for index, field, reason in problems]
    return InvalidRequestError(items, total=len(items)).response.model_dump()


@contextmanager
def data_api_server(csv_path: Path, state_dir: Path, *, portions: int = 0, group: int = 1) -> Iterator[str]:
    """The data API replica on a loopback port (no batch window), after ``portions`` requests of ``group``."""
    settings = DataApiSettings(covertype_csv=csv_path, data_api_state_dir=state_dir, min_update_time=0, data_api_seed=7)
    with serve(create_data_api(settings)) as url:
        with DataApiClient(url, timeout_s=10) as client:
            for _ in range(portions):
                client.fetch_batch(group)
        yield url


def fill_data_db(db_path: Path, csv_path: Path, batches: int = 3, rows_per_batch: int = 120) -> str:
    """An SQLite data DB holding ``batches`` fetches of real rows through ``covertype.store``.

    Each fetch also re-serves ten rows of the previous one (the course API does) and
    the second carries two malformed rows, so duplicates and rejects show up.
    Returns the SQLAlchemy URL.
    """
    url = f"sqlite:///{db_path}"
    engine = store.make_engine(url)
    store.init_schema(engine)
    lines = csv_path.read_text().splitlines()[1:]
    batch_size = len(lines) // 10
    previous: list[list[str]] = []
    for batch in range(1, batches + 1):
        start = (batch - 1) * batch_size
        rows = [line.split(",") for line in lines[start : start + rows_per_batch]]
        raw_rows: list[list[str]] = rows + previous[:10]
        if batch == 2:
            raw_rows += [rows[0][:12], [*rows[1][:11], "C9999", rows[1][12]]]
        store.append_fetch(
            engine, dag_run_id=f"scheduled__batch-{batch}", group_number=1, batch_number=batch, raw_rows=raw_rows
        )
        previous = rows
    engine.dispose()
    return url
