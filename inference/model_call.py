"""How the service calls a model, and the check a newly loaded version passes before it serves.

Both the request path (``inference.predictor``) and the loader
(``inference.model_holder``) use these functions, so the check runs exactly the
code requests run. This module imports neither of them, which keeps the two
free of an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from covertype.schema import EXAMPLE_OBSERVATION, FEATURE_COLUMNS, Observation

# The record a new version must predict before it serves: a real row of the data, valid by the contract.
CHECK_RECORDS: tuple[Observation, ...] = (Observation.model_validate(EXAMPLE_OBSERVATION),)


class ModelCheckError(ValueError):
    """A loaded model cannot answer a valid record the way the service calls it."""


def records_frame(records: Sequence[Observation]) -> pd.DataFrame:
    """The model's input: the 12 raw columns in schema order, as one object block.

    One object array is ~6x cheaper to wrap than per-column arrays that pandas
    then converts (its string dtype goes through Arrow): 0.06 ms instead of
    0.35 ms for one record, a large share of a single-row request. The model's
    first step reads each column with ``to_numpy(dtype=float64)`` or as strings,
    so its output is the same bit for bit (tests check it against the model
    on a DataFrame read from CSV).
    """
    rows = [[getattr(record, column) for column in FEATURE_COLUMNS] for record in records]
    return pd.DataFrame(np.array(rows, dtype=object), columns=list(FEATURE_COLUMNS), dtype=object, copy=False)


def predict_validated(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """``model.predict_proba`` with sklearn's input re-validation skipped: the API already validated every value."""
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return model.predict_proba(frame)


def check_predicts(model: Any, class_labels: Sequence[int]) -> None:
    """Predict ``CHECK_RECORDS`` as requests are predicted; raise ``ModelCheckError`` if the answer is unusable.

    A version can load and have ``predict_proba`` and ``classes_`` yet fail on
    the contract's input (a model trained on other columns, an old version this
    code no longer fits). Found here, once per load, it is a failed load and the
    served model stays; found by requests, every ``/predict`` would be a 500.
    The answer must have one row per record and one column per class (the
    response pairs them by position) and be finite.
    """
    try:
        probabilities = predict_validated(model, records_frame(CHECK_RECORDS))
        shape = getattr(probabilities, "shape", None)
        finite = shape is not None and bool(np.isfinite(np.asarray(probabilities, dtype=np.float64)).all())
    except Exception as error:
        raise ModelCheckError(f"predicting the example record failed: {type(error).__name__}: {error}") from error
    expected = (len(CHECK_RECORDS), len(class_labels))
    if shape != expected:
        raise ModelCheckError(
            f"predict_proba on the example record returned shape {shape}, expected {expected}"
            f" ({len(CHECK_RECORDS)} row x {len(class_labels)} classes_)"
        )
    if not finite:
        raise ModelCheckError(f"predict_proba on the example record returned non-finite values: {probabilities}")
