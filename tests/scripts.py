"""Load a service's script (a healthcheck, a launcher) from its file: they live beside Dockerfiles, not in packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(path: Path, module_name: str) -> ModuleType:
    """Import ``path`` as ``module_name`` (the repo's ``mlflow/`` folder, for one, would shadow MLflow as a package)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
