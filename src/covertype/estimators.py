"""A classifier wrapper that always answers for all seven cover types.

Early DAG runs see only some classes (batch 1 of the shared data holds cover
types 1, 2 and 5). The serving contract is that ``predict_proba`` has one
column per cover type 1..7 and ``classes_ == [1..7]``, whatever the data held;
this wrapper pads the missing classes with probability 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from covertype.schema import COVER_TYPE_LABELS

ALL_CLASSES = np.asarray(COVER_TYPE_LABELS, dtype=np.int64)


class AllCoverTypes(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` and reports probabilities over every cover type 1..7."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> AllCoverTypes:  # noqa: N803 (sklearn's signature)
        """Fit a clone of the wrapped estimator; remember where its classes sit among 1..7."""
        labels = np.asarray(y)
        unknown = sorted(set(np.unique(labels).tolist()) - set(ALL_CLASSES.tolist()))
        if unknown:
            raise ValueError(f"labels {unknown} are not cover types {ALL_CLASSES.tolist()}")
        self.estimator_ = clone(self.estimator).fit(X, labels)
        self.classes_ = ALL_CLASSES.copy()
        self.column_index_ = np.searchsorted(ALL_CLASSES, np.asarray(self.estimator_.classes_, dtype=np.int64))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Probabilities with one column per cover type 1..7 (0 for a class never trained on)."""
        inner = self.estimator_.predict_proba(X)
        if inner.shape[1] == len(ALL_CLASSES):
            return inner
        proba = np.zeros((inner.shape[0], len(ALL_CLASSES)), dtype=inner.dtype)
        proba[:, self.column_index_] = inner
        return proba

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """The most probable cover type 1..7."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
