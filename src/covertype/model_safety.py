"""Refuse a model whose own MLmodel file would let loading it run code, before MLflow loads it.

``mlflow.sklearn.load_model`` takes the serialization format and the skops
trusted types from the model's MLmodel file, and MLflow allows pickle by
default (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``). Whoever can write to the
registry or the artifact store could therefore make every loader run code: a
pickle, a skops file whose MLmodel "trusts" ``builtins.eval``, or a ``code``
directory MLflow puts first on ``sys.path``. This project only ever logs skops
models trusting ``covertype.training.SKOPS_TRUSTED_TYPES``
(``covertype.tracking``), so anything else is refused here, before a byte of
the model file is deserialized.

``check_safe_to_load`` checks a downloaded model directory; ``load_checked_dir``
checks and loads one; ``load_checked_model`` downloads first, for callers that
do not download themselves.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
from mlflow.models import Model

from covertype.training import SKOPS_TRUSTED_TYPES

SKLEARN_FLAVOR = "sklearn"
SAFE_FORMAT = "skops"


class UnsafeModelError(ValueError):
    """A model whose MLmodel asks for a deserialization this project does not allow."""


class UnreadableModelError(ValueError):
    """A model whose downloaded files cannot be read or deserialized: the model itself is broken.

    Raised for any error after the download (a corrupted or truncated file, a
    missing member, a newer skops protocol, an import the model needs), so that
    callers can tell a broken model from an outage of the registry or the
    artifact store, which fails the download instead and may pass.
    """


def check_safe_to_load(local_model_dir: Path, trusted_types: Iterable[str] = SKOPS_TRUSTED_TYPES) -> None:
    """Raise ``UnsafeModelError`` unless the model in ``local_model_dir`` is one this project would have logged.

    The sklearn flavor of its MLmodel must say ``serialization_format: skops``,
    list as ``skops_trusted_types`` only types of ``trusted_types`` (or none),
    carry no ``code`` directory, and keep its model file inside the directory.
    Only the MLmodel (YAML, read safely) is opened; the model file is not.
    """
    flavors = Model.load(str(local_model_dir)).flavors
    flavor = flavors.get(SKLEARN_FLAVOR)
    if not isinstance(flavor, dict):
        raise UnsafeModelError(f"the model has no '{SKLEARN_FLAVOR}' flavor (flavors: {sorted(flavors)})")
    _check_format(flavor)
    _check_trusted_types(flavor, frozenset(trusted_types))
    _check_no_code(flavor)
    _check_model_file_inside(flavor, local_model_dir)


def load_checked_model(model_uri: str, *, tracking_uri: str | None = None) -> Any:
    """``mlflow.sklearn.load_model(model_uri)``, refusing (``UnsafeModelError``) what ``check_safe_to_load`` refuses.

    ``model_uri`` is any URI MLflow downloads (``models:/name/1``,
    ``runs:/id/model``, ``s3://...``) or a local directory, checked in place.
    ``models:/`` URIs resolve through MLflow's registry URI, as
    ``mlflow.sklearn.load_model`` does. The download is a temporary copy:
    what is checked is exactly what is loaded.
    """
    local = Path(model_uri)
    if local.is_dir():
        return load_checked_dir(local)
    with tempfile.TemporaryDirectory(prefix="covertype-model-") as download_dir:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=download_dir, tracking_uri=tracking_uri
            )
        )
        return load_checked_dir(local)


def load_checked_dir(local_model_dir: Path) -> Any:
    """``check_safe_to_load``, then ``mlflow.sklearn.load_model``: the one place a checked model is loaded.

    Everything here reads local files, so any failure but memory is the
    model's own: ``UnsafeModelError`` as it is, anything else as ``UnreadableModelError``.
    """
    try:
        check_safe_to_load(local_model_dir)
        return mlflow.sklearn.load_model(str(local_model_dir))
    except (UnsafeModelError, MemoryError):
        raise
    except Exception as error:
        raise UnreadableModelError(f"{type(error).__name__}: {error}") from error


def _check_format(flavor: dict[str, Any]) -> None:
    # MLflow reads a missing format as pickle.
    serialization_format = flavor.get("serialization_format", "pickle")
    if serialization_format != SAFE_FORMAT:
        raise UnsafeModelError(
            f"the model is saved as {serialization_format!r}, not {SAFE_FORMAT!r}: loading it could run any code"
            " in the file, so only skops models are loaded"
        )


def _check_trusted_types(flavor: dict[str, Any], trusted_types: frozenset[str]) -> None:
    listed = flavor.get("skops_trusted_types") or []
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise UnsafeModelError(f"the model's skops_trusted_types is not a list of type names: {listed!r}")
    extra = sorted(set(listed) - trusted_types)
    if extra:
        raise UnsafeModelError(
            f"the model's MLmodel trusts types outside covertype.training.SKOPS_TRUSTED_TYPES: {', '.join(extra)}"
        )


def _check_no_code(flavor: dict[str, Any]) -> None:
    # MLflow puts a flavor's code directory first on sys.path when it loads the model.
    if flavor.get("code"):
        raise UnsafeModelError(f"the model carries a code directory ({flavor['code']!r}) that loading would import")


def _check_model_file_inside(flavor: dict[str, Any], local_model_dir: Path) -> None:
    model_file = flavor.get("pickled_model")
    if not isinstance(model_file, str):
        raise UnsafeModelError(f"the model's sklearn flavor names no model file: {model_file!r}")
    root = local_model_dir.resolve()
    if not (root / model_file).resolve().is_relative_to(root):
        raise UnsafeModelError(f"the model file {model_file!r} is outside the model directory")
