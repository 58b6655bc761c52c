"""Settings: defaults that work without a .env, and env names from the design contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from covertype.settings import Settings


def test_defaults_use_embedded_back_ends_under_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for name in ("DATA_DB_URL", "MLFLOW_TRACKING_URI", "DATA_API_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.resolved_data_db_url == f"sqlite:///{tmp_path / 'covertype.db'}"
    assert settings.resolved_mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert str(settings.data_api_url).startswith("http://127.0.0.1:")
    assert settings.model_uri == "models:/covertype@production"


def test_environment_overrides_and_blank_means_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATA_DB_URL", "mysql+pymysql://u:p@data-db:3306/covertype")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")
    monkeypatch.setenv("GROUP_NUMBER", "7")
    monkeypatch.setenv("MODEL_ALIAS", "staging")
    settings = Settings()
    assert settings.resolved_data_db_url == "mysql+pymysql://u:p@data-db:3306/covertype"
    assert settings.resolved_mlflow_tracking_uri.startswith("sqlite:///")
    assert settings.group_number == 7
    assert settings.model_uri == "models:/covertype@staging"


def test_group_number_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUP_NUMBER", "11")
    with pytest.raises(ValueError, match="group_number"):
        Settings()
