"""Only models logged as the pipeline logs them (skops, the project's trusted types) pass the check and load.

Models are real sklearn estimators saved with ``mlflow.sklearn.save_model``;
the hostile ones are made the way an attacker with write access would: by
saving with other options or by editing the MLmodel file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pytest
from mlflow.models import Model
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from covertype.model_safety import UnsafeModelError, check_safe_to_load, load_checked_dir, load_checked_model
from covertype.training import SKOPS_TRUSTED_TYPES

FEATURES = np.arange(40, dtype=np.float64).reshape(20, 2)
LABELS = np.array([1, 2] * 10)
TREE = DecisionTreeClassifier(max_depth=2, random_state=0).fit(FEATURES, LABELS)


def save(path: Path, estimator: Any = None, **options: Any) -> Path:
    """``estimator`` (``TREE`` by default) saved as an MLflow sklearn model at ``path``."""
    model = estimator if estimator is not None else TREE
    options.setdefault("skops_trusted_types", list(SKOPS_TRUSTED_TYPES))
    # Explicit requirements: inferring them runs a subprocess that re-imports the model (seconds per save).
    options.setdefault("pip_requirements", ["scikit-learn"])
    mlflow.sklearn.save_model(model, str(path), **options)
    return path


def edit_flavor(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Change the sklearn flavor of the MLmodel at ``path`` in place, as a write to the artifact store would."""
    model = Model.load(str(path))
    change(model.flavors["sklearn"])
    model.save(str(path / "MLmodel"))
    return path


def test_a_model_logged_like_the_pipelines_loads(tmp_path: Path) -> None:
    path = save(tmp_path / "model")
    check_safe_to_load(path)
    expected = TREE.predict_proba(FEATURES)
    np.testing.assert_array_equal(load_checked_model(str(path)).predict_proba(FEATURES), expected)
    # Through a URI MLflow downloads: the copy is checked and loaded.
    np.testing.assert_array_equal(load_checked_model(path.as_uri()).predict_proba(FEATURES), expected)


def test_a_skops_model_listing_no_trusted_types_passes(tmp_path: Path) -> None:
    path = save(tmp_path / "model", LogisticRegression().fit(FEATURES, LABELS), skops_trusted_types=None)
    check_safe_to_load(path)
    assert hasattr(load_checked_model(str(path)), "predict_proba")


@pytest.mark.parametrize("serialization_format", ["pickle", "cloudpickle"])
def test_pickle_formats_are_refused(tmp_path: Path, serialization_format: str) -> None:
    path = save(tmp_path / "model", serialization_format=serialization_format)
    with pytest.raises(UnsafeModelError, match=f"saved as '{serialization_format}', not 'skops'"):
        check_safe_to_load(path)


def test_a_hostile_pickle_is_never_opened(tmp_path: Path) -> None:
    class MakesDirectory:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.mkdir, (str(tmp_path / "canary"),)

    path = save(tmp_path / "model", serialization_format="pickle")
    (path / "model.pkl").write_bytes(pickle.dumps(MakesDirectory()))
    with pytest.raises(UnsafeModelError):
        load_checked_model(str(path))
    with pytest.raises(UnsafeModelError):
        load_checked_model(path.as_uri())
    assert not (tmp_path / "canary").exists()


def test_a_format_missing_from_the_mlmodel_counts_as_pickle(tmp_path: Path) -> None:
    path = edit_flavor(save(tmp_path / "model"), lambda flavor: flavor.pop("serialization_format"))
    with pytest.raises(UnsafeModelError, match="saved as 'pickle'"):
        check_safe_to_load(path)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda flavor: flavor.update(skops_trusted_types=[*SKOPS_TRUSTED_TYPES, "builtins.eval", "posix.system"]),
            "trusts types outside covertype.training.SKOPS_TRUSTED_TYPES: builtins.eval, posix.system",
        ),
        (lambda flavor: flavor.update(skops_trusted_types="builtins.eval"), "not a list of type names"),
        (lambda flavor: flavor.update(code="code"), "code directory"),
        (lambda flavor: flavor.update(pickled_model="../elsewhere/model.skops"), "outside the model directory"),
        (lambda flavor: flavor.update(pickled_model=None), "names no model file"),
    ],
    ids=["extra_trusted_types", "trusted_types_not_a_list", "code_directory", "file_outside", "no_model_file"],
)
def test_an_edited_mlmodel_is_refused(tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str) -> None:
    path = edit_flavor(save(tmp_path / "model"), change)
    with pytest.raises(UnsafeModelError, match=reason):
        check_safe_to_load(path)


def test_a_model_without_the_sklearn_flavor_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path / "model")
    model = Model.load(str(path))
    del model.flavors["sklearn"]
    model.save(str(path / "MLmodel"))
    with pytest.raises(UnsafeModelError, match="no 'sklearn' flavor"):
        check_safe_to_load(path)


def test_running_out_of_memory_while_loading_is_not_a_broken_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MemoryError says nothing about the model: it must not be wrapped (a broken production model is replaced)."""
    path = save(tmp_path / "model")

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(mlflow.sklearn, "load_model", out_of_memory)
    with pytest.raises(MemoryError):
        load_checked_dir(path)
