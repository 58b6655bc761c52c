"""The service's input frame gives the production pipeline exactly what a CSV-read DataFrame gives it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from covertype import training
from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN, Observation
from inference.model_call import records_frame


def test_records_frame_predicts_like_the_training_data_frame(shared_frame: pd.DataFrame) -> None:
    config = training.TrainingConfig.fast()
    train = shared_frame.sample(2000, random_state=11)
    model = training.build_model(config.candidates[0], config).fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    rows = shared_frame.sample(300, random_state=12)[list(FEATURE_COLUMNS)]
    observations = [Observation.model_validate(record) for record in rows.to_dict("records")]

    frame = records_frame(observations)

    assert list(frame.columns) == list(FEATURE_COLUMNS)
    np.testing.assert_array_equal(model.predict_proba(frame), model.predict_proba(rows))
    np.testing.assert_array_equal(model.predict_proba(records_frame(observations[:1])), model.predict_proba(rows[:1]))
