"""A version whose MLmodel asks for pickle or for extra skops trusted types is a failed load, never deserialized.

Whoever can write to the registry or the artifact store chooses what
``mlflow.sklearn.load_model`` deserializes; the service only loads what the
pipeline logs (skops, the project's trusted types) and keeps serving the model
it has otherwise. Real models in a local MLflow store.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from covertype.training import SKOPS_TRUSTED_TYPES
from inference.app import create_app
from tests.inference.clients import checked_client
from tests.inference.model_factory import register_pipeline
from tests.inference.stores import Store, record_of


class MakesDirectoryWhenUnpickled:
    """A pickle payload: unpickling it runs ``os.mkdir(path)``, standing for any code an attacker chooses."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def refused(client: TestClient, version: str, reason: str) -> None:
    """``/model/reload`` reports a failed load of ``version`` for ``reason``; the model served stays."""
    reload = client.post("/model/reload").json()
    assert (reload["swapped"], reload["registry_state"]) == (False, "load_failed"), reload
    message = reload["registry_message"]
    assert f"version {version} of registered model 'covertype' could not be loaded: UnsafeModelError: " in message
    assert reason in message


def test_pickled_versions_are_refused_and_never_unpickled(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline, tmp_path: Path
) -> None:
    # The payload does run code when unpickled: what loading the version below would do without the check.
    pickle.loads(pickle.dumps(MakesDirectoryWhenUnpickled(tmp_path / "proof")))
    assert (tmp_path / "proof").is_dir()
    canary = tmp_path / "canary"
    record = record_of(shared_frame, 0)

    first = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
    with checked_client(create_app(store.settings())) as client:
        assert client.get("/model").json()["version"] == first.version

        # A genuine model, saved with cloudpickle: refused all the same.
        pickled = register_pipeline(
            store.tracking_uri,
            model_b,
            shared_frame,
            artifact_root=store.artifact_root,
            serialization_format="cloudpickle",
        )
        refused(client, pickled.version, "the model is saved as 'cloudpickle', not 'skops'")

        # A pickle whose loading runs code: refused before the file is opened.
        before = set(store.artifact_root.rglob("model.pkl"))
        hostile = register_pipeline(
            store.tracking_uri, model_b, shared_frame, artifact_root=store.artifact_root, serialization_format="pickle"
        )
        (model_file,) = set(store.artifact_root.rglob("model.pkl")) - before
        model_file.write_bytes(pickle.dumps(MakesDirectoryWhenUnpickled(canary)))
        refused(client, hostile.version, "the model is saved as 'pickle', not 'skops'")
        assert not canary.exists()

        response = client.post("/predict", json=record)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == first.version

        # A version logged as the pipeline logs it is loaded.
        good = register_pipeline(
            store.tracking_uri,
            model_b,
            shared_frame,
            artifact_root=store.artifact_root,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.post("/predict", json=record).json()["model_version"] == good.version


def test_a_version_trusting_types_outside_the_projects_list_is_refused(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline, model_b: Pipeline
) -> None:
    widened = register_pipeline(
        store.tracking_uri,
        model_b,
        shared_frame,
        artifact_root=store.artifact_root,
        skops_trusted_types=[*SKOPS_TRUSTED_TYPES, "builtins.eval"],
    )
    with checked_client(create_app(store.settings())) as client:
        # At start-up: no model, and the reason says which type.
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["registry_state"] == "load_failed"
        assert "trusts types outside covertype.training.SKOPS_TRUSTED_TYPES: builtins.eval" in ready.json()["detail"]
        assert f"version {widened.version} " in ready.json()["detail"]

        good = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
        assert client.post("/model/reload").json()["swapped"] is True
        assert client.post("/predict", json=record_of(shared_frame, 0)).json()["model_version"] == good.version
