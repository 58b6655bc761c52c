"""The DAG's steps as functions: a malformed payload's bad rows are kept with reasons, its good rows trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from covertype import pipeline, store
from covertype.settings import Settings

pytestmark = pytest.mark.slow


def _fetched(rows: list, batch: int) -> dict:
    return {"group_number": 2, "batch_number": batch, "fetched_at": "2026-03-01T10:00:00+00:00", "rows": rows}


def test_malformed_payload_rejects_bad_rows_and_trains_on_the_good(
    data_dir: Path, shared_rows: list[list[str]]
) -> None:
    settings = Settings(
        data_dir=data_dir,
        data_db_url=f"sqlite:///{data_dir / 'covertype.db'}",
        mlflow_tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}",
        training_profile="fast",
    )
    good = shared_rows[2000:2400]
    malformed = [
        *good[:200],
        ["2800", "x", "10", "100", "5", "900", "200", "220", "150", "1500", "Rawah", "C7745", "2"],
        ["2800", "45", "10", "100", "5", "900", "200", "220", "150", "1500", "Atlantis", "C7745", "2"],
        ["2800", "45", "10", "100", "5", "900", "200", "220", "150", "1500", "Rawah", "C7745", "9"],
        ["2800", "45"],
        *good[200:],
        None,
    ]
    stored = pipeline.store_batch(settings, "manual__malformed", _fetched(malformed, batch=2))
    assert (stored["rows_received"], stored["rows_stored"], stored["rows_rejected"]) == (405, 400, 5)
    assert stored["rejected_by_reason"] == {
        "non_numeric": 1,
        "unknown_category": 1,
        "unknown_label": 1,
        "wrong_field_count": 2,
    }
    engine = store.make_engine(settings.resolved_data_db_url)
    rejected = store.rejected_rows(engine).sort_values("position")
    assert rejected["position"].tolist() == [200, 201, 202, 203, 404]
    assert rejected.iloc[1]["detail"].startswith("Wilderness_Area: 'Atlantis'")
    assert rejected.iloc[4]["raw_row"] == [None]

    trained = pipeline.train_and_log(settings, "manual__malformed")
    assert trained["rows_used"] == 400
    assert trained["rows_train"] + trained["rows_eval"] == 400
    assert trained["batch_numbers"] == [2]

    promoted = pipeline.register_and_promote(settings, trained)
    assert (promoted["version"], promoted["promoted"], promoted["production_version"]) == ("1", True, "1")

    # A retry of the store step of the same run writes nothing.
    counts = store.table_counts(engine)
    again = pipeline.store_batch(settings, "manual__malformed", _fetched(malformed, batch=2))
    assert again["already_stored"] is True
    assert store.table_counts(engine) == counts
    engine.dispose()
