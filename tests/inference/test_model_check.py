"""A version must predict a valid record before it serves, and a model failing on a request is a JSON 500.

The models are real sklearn pipelines registered in a local MLflow store; only
the unit tests of ``check_predicts`` use stand-ins, for answers sklearn never gives.
"""

from __future__ import annotations

import asyncio
import logging
import re

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from covertype.schema import (
    EXAMPLE_OBSERVATION,
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    SOIL_COLUMN,
    WILDERNESS_COLUMN,
    Observation,
)
from inference.app import create_app
from inference.model_call import ModelCheckError, check_predicts
from inference.model_holder import ModelHolder
from inference.predictor import INLINE_MAX_RECORDS, BatchingPredictor, Prediction, PredictionError
from tests.inference.clients import checked_client
from tests.inference.model_factory import build_pipeline, register_pipeline
from tests.inference.stores import Store, record_of


def foreign_pipeline(frame: pd.DataFrame) -> tuple[Pipeline, pd.DataFrame]:
    """A model trained on other columns (the same data, lower-case names), and the frame it was trained on."""
    renamed = frame.rename(columns=str.lower)
    encoder = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), [WILDERNESS_COLUMN.lower(), SOIL_COLUMN.lower()])],
        remainder="passthrough",
    )
    pipeline = Pipeline([("encode", encoder), ("model", ExtraTreesClassifier(n_estimators=4, random_state=5))])
    columns = [column.lower() for column in FEATURE_COLUMNS]
    pipeline.fit(renamed[columns], renamed[LABEL_COLUMN.lower()])
    return pipeline, renamed


def test_a_version_that_cannot_predict_the_contract_is_never_served(
    store: Store, shared_frame: pd.DataFrame, model_a: Pipeline
) -> None:
    foreign, renamed = foreign_pipeline(shared_frame.sample(1000, random_state=5))
    columns = [column.lower() for column in FEATURE_COLUMNS]
    bad = register_pipeline(store.tracking_uri, foreign, renamed, artifact_root=store.artifact_root, columns=columns)
    record = record_of(shared_frame, 0)
    failed_load = f"version {bad.version} of registered model 'covertype' could not be loaded: ModelCheckError: "
    with checked_client(create_app(store.settings())) as client:
        # At start-up: not ready, and the reason names the version and the model's own error.
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["registry_state"] == "load_failed"
        assert failed_load + "predicting the example record failed: ValueError: " in ready.json()["detail"]
        assert client.post("/predict", json=record).status_code == 503

        good = register_pipeline(store.tracking_uri, model_a, shared_frame, artifact_root=store.artifact_root)
        assert client.post("/model/reload").json()["swapped"] is True

        # The alias moved back to the foreign version: the working one stays in service.
        MlflowClient(tracking_uri=store.tracking_uri).set_registered_model_alias("covertype", "production", bad.version)
        reload = client.post("/model/reload").json()
        assert (reload["swapped"], reload["model_version"], reload["registry_state"]) == (
            False,
            good.version,
            "load_failed",
        )
        assert failed_load in reload["registry_message"]
        assert f"still serving version {good.version}" in reload["registry_message"]
        response = client.post("/predict", json=record)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == good.version
        assert client.get("/ready").json() == {"ready": True, "model_version": good.version}
        health = client.get("/health").json()
        assert (health["model_version"], health["registry_state"]) == (good.version, "load_failed")


def strict_pipeline(frame: pd.DataFrame, unseen_soil: str) -> Pipeline:
    """A model that refuses categories it never saw, trained without ``unseen_soil``: valid records can break it."""
    pipeline = build_pipeline(n_estimators=4, random_state=6)
    pipeline.set_params(encode__categories__handle_unknown="error")
    train = frame[frame[SOIL_COLUMN] != unseen_soil].sample(2000, random_state=6)
    pipeline.fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    return pipeline


def test_a_model_failing_on_a_request_answers_a_json_500_naming_the_version(
    store: Store, shared_frame: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    soils = shared_frame[SOIL_COLUMN].value_counts().index
    unseen_soil = next(code for code in soils if code != EXAMPLE_OBSERVATION[SOIL_COLUMN])
    strict = strict_pipeline(shared_frame, unseen_soil)
    version = register_pipeline(store.tracking_uri, strict, shared_frame, artifact_root=store.artifact_root)
    positions = np.flatnonzero(shared_frame[SOIL_COLUMN].to_numpy() == unseen_soil)
    unseen = [record_of(shared_frame, int(position)) for position in positions[: INLINE_MAX_RECORDS + 1]]
    expected = f"prediction failed with model version {version.version}: ValueError: Found unknown categories"

    with (
        caplog.at_level(logging.ERROR, logger="inference.predictor"),
        checked_client(create_app(store.settings())) as client,
    ):
        # The example record passes the load check, so this version serves...
        assert client.get("/ready").status_code == 200
        # ...until a valid record it cannot handle: alone (on the event loop's thread), then in a batch (its thread).
        for body in (unseen[0], {"instances": unseen}):
            response = client.post("/predict", json=body)
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            assert list(response.json()) == ["detail"]
            assert response.json()["detail"].startswith(expected)
        assert client.post("/predict", json=EXAMPLE_OBSERVATION).status_code == 200
        assert 'status="500"} 2.0' in client.get("/metrics").text

    failures = [record for record in caplog.records if record.name == "inference.predictor"]
    assert len(failures) == 2
    assert all(f"model version {version.version} failed" in record.getMessage() for record in failures)
    assert all(record.exc_info is not None for record in failures)


class _StandIn:
    """A model whose ``predict_proba`` returns a fixed answer: shapes and values sklearn never returns."""

    def __init__(self, answer: np.ndarray) -> None:
        self.answer = answer

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        assert list(frame.columns) == list(FEATURE_COLUMNS)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (np.full((1, 6), 1 / 6), "returned shape (1, 6), expected (1, 7)"),
        (np.full((2, 7), 1 / 7), "returned shape (2, 7), expected (1, 7)"),
        (np.full(7, 1 / 7), "returned shape (7,), expected (1, 7)"),
        (np.array([[np.nan, 1, 0, 0, 0, 0, 0]]), "non-finite values"),
        (np.array([[np.inf, 1, 0, 0, 0, 0, 0]]), "non-finite values"),
    ],
)
def test_check_refuses_an_answer_of_the_wrong_shape_or_not_finite(answer: np.ndarray, reason: str) -> None:
    with pytest.raises(ModelCheckError, match=re.escape(reason)):
        check_predicts(_StandIn(answer), tuple(range(1, 8)))


def test_check_passes_a_model_that_honours_the_contract(model_a: Pipeline) -> None:
    check_predicts(model_a, tuple(int(label) for label in model_a.classes_))


def test_a_request_that_breaks_the_model_fails_alone_not_the_requests_batched_with_it(
    store: Store, shared_frame: pd.DataFrame
) -> None:
    soils = shared_frame[SOIL_COLUMN].value_counts().index
    unseen_soil = next(code for code in soils if code != EXAMPLE_OBSERVATION[SOIL_COLUMN])
    register_pipeline(
        store.tracking_uri, strict_pipeline(shared_frame, unseen_soil), shared_frame, artifact_root=store.artifact_root
    )
    holder = ModelHolder(store.tracking_uri, "covertype", "production", poll_interval_s=3600)
    assert holder.refresh().current is not None
    known = shared_frame[shared_frame[SOIL_COLUMN] != unseen_soil]
    good = [[Observation(**record_of(known, position))] for position in range(5)]
    position = int(np.flatnonzero(shared_frame[SOIL_COLUMN].to_numpy() == unseen_soil)[0])
    breaking = [Observation(**record_of(shared_frame, position))]
    predictor = BatchingPredictor(holder)

    async def scenario() -> list[object]:
        await predictor.start()
        try:
            requests = [*good[:2], breaking, *good[2:]]
            return await asyncio.gather(*(predictor.predict(records) for records in requests), return_exceptions=True)
        finally:
            await predictor.stop()

    answers = asyncio.run(scenario())

    assert predictor.inline_calls == 0  # they arrived together: one batch first
    assert isinstance(answers[2], PredictionError)
    for records, answer in zip([*good[:2], *good[2:]], [*answers[:2], *answers[3:]], strict=True):
        assert isinstance(answer, Prediction), answer
        frame = pd.DataFrame([record.model_dump() for record in records], columns=list(FEATURE_COLUMNS))
        np.testing.assert_array_equal(answer.probabilities, holder.current.model.predict_proba(frame))
