"""A classifier wrapper that always answers for all seven cover types.

Early DAG runs see only some classes (batch 1 of the shared data holds cover
types 1, 2 and 5). The serving contract is that ``predict_proba`` has one
column per cover type 1..7 and ``classes_ == [1..7]``, whatever the data held;
this wrapper pads the missing classes with probability 0.

It also answers a forest's ``predict_proba`` itself (``forest_proba``): for
one row, a scikit-learn forest spends most of its time in joblib dispatch and
in validating the input once per tree, not in the trees (62 extra-trees: 4.5 ms
through ``forest.predict_proba``, 0.8 ms with the loop below, same numbers),
and single-row latency is what the inference service is measured on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble._forest import ForestClassifier
from sklearn.utils.validation import check_is_fitted

from covertype.schema import COVER_TYPE_LABELS

ALL_CLASSES = np.asarray(COVER_TYPE_LABELS, dtype=np.int64)


def forest_proba(forest: ForestClassifier, X: Any) -> np.ndarray:  # noqa: N803 (sklearn's naming)
    """A single-output forest's ``predict_proba``, computed tree by tree on the calling thread.

    Same arithmetic as scikit-learn's (the mean of the trees' probabilities,
    summed in tree order into float64), with the input and the fitted state
    checked once instead of once per tree, and no joblib dispatch. Dense input
    gets a lean check of its own (shape, finiteness, float32 like the trees);
    sparse input goes through the forest's own validation (CSR float32), which
    is what its ``predict_proba`` would run. This is the one fast path: the model's
    ``AllCoverTypes`` calls it, and the inference service installs it on any
    forest it loads (``inference.serving.prepare_for_serving``).
    """
    check_is_fitted(forest)
    if sparse.issparse(X):
        features = forest._validate_X_predict(X)
    else:
        features = np.ascontiguousarray(X, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != forest.n_features_in_:
            raise ValueError(f"expected a 2-D array with {forest.n_features_in_} features, got shape {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("input contains NaN or infinity")
    n_classes = forest.n_classes_
    total = np.zeros((features.shape[0], n_classes), dtype=np.float64)
    for tree in forest.estimators_:
        # What ``tree.predict_proba(features, check_input=False)`` computes, without its per-tree
        # fitted check and feature-count check (done once above): two thirds of the forest's time on one row.
        total += tree.tree_.predict(features)[:, :n_classes]
    return total / len(forest.estimators_)


def is_single_output_forest(estimator: Any) -> bool:
    """A fitted single-output forest classifier (what ``forest_proba`` handles)."""
    return (
        isinstance(estimator, ForestClassifier)
        and getattr(estimator, "n_outputs_", None) == 1
        and isinstance(getattr(estimator, "n_classes_", None), int | np.integer)
    )


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
        if is_single_output_forest(self.estimator_):
            inner = forest_proba(self.estimator_, X)
        else:
            inner = self.estimator_.predict_proba(X)
        if inner.shape[1] == len(ALL_CLASSES):
            return inner
        proba = np.zeros((inner.shape[0], len(ALL_CLASSES)), dtype=inner.dtype)
        proba[:, self.column_index_] = inner
        return proba

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """The most probable cover type 1..7."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
