"""The serving preparation changes how forests predict, never what they predict."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from covertype.estimators import AllCoverTypes, forest_proba
from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN
from inference.serving import prepare_for_serving
from tests.inference.model_factory import build_pipeline


@pytest.mark.parametrize("forest_class", [ExtraTreesClassifier, RandomForestClassifier])
def test_prepared_pipeline_gives_bit_identical_probabilities(shared_frame: pd.DataFrame, forest_class: type) -> None:
    pipeline = build_pipeline(n_estimators=9, random_state=3)
    pipeline.set_params(model=forest_class(n_estimators=9, random_state=3, n_jobs=2))
    train = shared_frame.sample(3000, random_state=3)
    pipeline.fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    prepared = copy.deepcopy(pipeline)
    changes = prepare_for_serving(prepared)
    assert any("sequential predict_proba" in change for change in changes)
    assert prepared.named_steps["model"].n_jobs == 1
    assert prepared.named_steps["model"].predict_proba.__func__ is forest_proba

    features = shared_frame[list(FEATURE_COLUMNS)]
    assert np.array_equal(prepared.predict_proba(features), pipeline.predict_proba(features))
    for position in (0, 5000, 15000):
        row = features.iloc[[position]]
        assert np.array_equal(prepared.predict_proba(row), pipeline.predict_proba(row))
    assert np.array_equal(prepared.predict(features), pipeline.predict(features))


def test_forests_inside_a_wrapper_are_found(shared_frame: pd.DataFrame) -> None:
    # Train on three classes only: the wrapper pads the other four with zeros.
    train = shared_frame[shared_frame[LABEL_COLUMN].isin([1, 2, 5])].sample(2000, random_state=4)
    encoder = build_pipeline().named_steps["encode"]
    wrapped = AllCoverTypes(ExtraTreesClassifier(n_estimators=5, random_state=4))
    pipeline = Pipeline([("encode", encoder), ("classifier", wrapped)])
    pipeline.fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    prepared = copy.deepcopy(pipeline)
    assert any("ExtraTreesClassifier" in change for change in prepare_for_serving(prepared))
    features = shared_frame[list(FEATURE_COLUMNS)].head(500)
    assert np.array_equal(prepared.predict_proba(features), pipeline.predict_proba(features))
    assert prepared.predict_proba(features).shape == (500, 7)


def test_models_without_forests_keep_their_predict_proba(shared_frame: pd.DataFrame) -> None:
    pipeline = build_pipeline()
    pipeline.set_params(model=LogisticRegression(max_iter=50))
    train = shared_frame.sample(1000, random_state=5)
    pipeline.fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    expected = pipeline.predict_proba(train[list(FEATURE_COLUMNS)])
    assert not any("sequential" in change for change in prepare_for_serving(pipeline))
    assert np.array_equal(pipeline.predict_proba(train[list(FEATURE_COLUMNS)]), expected)
