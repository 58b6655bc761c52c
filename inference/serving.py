"""Prepare a loaded model for serving: one thread, and forests without per-call joblib dispatch.

Measured on the production model (47 extra trees, one row): the trees
themselves take ~0.3 ms, but ``ForestClassifier.predict_proba`` takes ~11 ms,
almost all of it joblib's per-tree dispatch (config propagation, warning
filters) even with ``n_jobs=1``. The replacement, ``covertype.estimators.forest_proba``
(the same function the trained model's ``AllCoverTypes`` uses), does what sklearn
does, in the same order (validate once, sum each tree's probabilities into a
float64 array, divide by the number of trees), without the dispatch; its
output is bit-for-bit the same (tests check it). Only single-output forests
are changed; anything else keeps sklearn's method.
"""

from __future__ import annotations

import types
from typing import Any

from sklearn.ensemble._forest import ForestClassifier
from sklearn.pipeline import Pipeline

from covertype.estimators import forest_proba, is_single_output_forest

# Fitted attributes under which wrappers keep their inner estimator (e.g. covertype's AllCoverTypes).
_WRAPPED_ATTRIBUTES = ("estimator_", "base_estimator_", "final_estimator_", "classifier_")


def forests_in(model: Any) -> list[ForestClassifier]:
    """The forests inside ``model``: itself, steps of a Pipeline, estimators wrapped by a meta-estimator."""
    return _forests(model, set())


def _forests(model: Any, seen: set[int]) -> list[ForestClassifier]:
    if id(model) in seen:
        return []
    seen.add(id(model))
    if isinstance(model, ForestClassifier):
        return [model]
    found: list[ForestClassifier] = []
    if isinstance(model, Pipeline):
        for _, step in model.steps:
            found.extend(_forests(step, seen))
    for attribute in _WRAPPED_ATTRIBUTES:
        inner = getattr(model, attribute, None)
        if inner is not None:
            found.extend(_forests(inner, seen))
    return found


def prepare_for_serving(model: Any) -> list[str]:
    """Limit estimators to one thread and give single-output forests the sequential predict_proba.

    Returns what was changed (for the log). The instance attribute shadows the
    class method only on this loaded copy; nothing is saved back.
    """
    changes = []
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    jobs = {key: 1 for key in params if key == "n_jobs" or key.endswith("__n_jobs")}
    if jobs:
        model.set_params(**jobs)
        changes.append(f"n_jobs=1 on {len(jobs)} estimator(s)")
    for forest in forests_in(model):
        forest.n_jobs = 1
        if is_single_output_forest(forest):
            forest.predict_proba = types.MethodType(forest_proba, forest)
            changes.append(f"sequential predict_proba on {type(forest).__name__} ({len(forest.estimators_)} trees)")
    return changes
