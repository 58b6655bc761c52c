"""Model quality of the pipeline on the shared data, collected through the data API replica.

Runs the replica in-process (a real uvicorn server on loopback, a 1 s batch
window on a hand-moved clock, so that no waiting is needed), collects

- one portion per batch (10 requests), and separately
- three portions per batch (30 requests),

stores each collection with the DAG's store step, trains and logs with the
DAG's training step (the ``full`` profile, a local MLflow store), and scores
the served model on the rows of the 15,120 that were never collected (the
served model is fitted on every collected row; its hold-out twin's score on
the evaluation set is printed beside it). Then it trains
once more as if the store held all 15,120 rows and promotes that model: the
size of the production model artifact and the time of the whole training step
(``train_and_log``: search, both fits, MLflow logging) reported are that worst
case's. Finally it
measures one-row ``predict_proba`` latency of that model in-process.

Last line: ``macro_f1 one_portion=0.xxx three_portions=0.xxx model_mb=N train_s=N``.

Usage: ``make bench-quality`` (``COVERTYPE_CSV`` points at ../shared/data/covertype.csv).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

import mlflow
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "src")]

from covertype import pipeline, store, training  # noqa: E402
from covertype.data_api_client import DataApiClient  # noqa: E402
from covertype.loopback import serve_in_thread  # noqa: E402
from covertype.parsing import parse_payload_rows  # noqa: E402
from covertype.schema import RAW_COLUMNS  # noqa: E402
from covertype.settings import Settings  # noqa: E402
from data_api.app import create_app  # noqa: E402
from data_api.settings import DataApiSettings  # noqa: E402

SEED = int(os.environ.get("BENCH_SEED", "20261127"))
# The replica's batch window on the manual clock: requests at the same clock
# time share a batch, a move of more than WINDOW_S opens the next one.
# (A window of 0 would open a new batch on every request.)
WINDOW_S = 1.0


class ManualClock:
    """The replica's clock, moved by the benchmark: a new batch without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def replica(csv_path: Path, state_dir: Path, clock: ManualClock) -> AbstractContextManager[str]:
    """The data API replica under uvicorn on a free loopback port; yields its base URL."""
    settings = DataApiSettings(
        covertype_csv=csv_path, data_api_state_dir=state_dir, min_update_time=WINDOW_S, data_api_seed=SEED
    )
    return serve_in_thread(create_app(settings, clock=clock))


def settings_for(work_dir: Path, base_url: str = "http://127.0.0.1:9") -> Settings:
    """The DAG's settings with every back end in ``work_dir`` (SQLite data DB, local MLflow store)."""
    return Settings(
        data_dir=work_dir,
        data_api_url=base_url,
        data_db_url=f"sqlite:///{work_dir / 'covertype.db'}",
        mlflow_tracking_uri=f"sqlite:///{work_dir / 'mlflow.db'}",
        training_profile="full",
        group_number=1,
    )


def collect(settings: Settings, clock: ManualClock, portions_per_batch: int) -> None:
    """Request ``portions_per_batch`` portions of each of the 10 batches and store each like a DAG run."""
    with DataApiClient(str(settings.data_api_url)) as client:
        client.restart(settings.group_number)
    for batch in range(1, 11):
        clock.now += 2 * WINDOW_S  # past the window: the next request starts the next batch
        for portion in range(portions_per_batch):
            run_id = f"bench_b{batch}_p{portion}"
            fetched = pipeline.fetch_batch(settings, settings.group_number, run_id)
            assert fetched["batch_number"] == batch, fetched["batch_number"]
            pipeline.store_batch(settings, run_id, fetched)


def unseen_rows(all_rows: pd.DataFrame, trained_hashes: set[str]) -> pd.DataFrame:
    return all_rows[~all_rows["row_hash"].isin(trained_hashes)]


def train_and_score(settings: Settings, all_rows: pd.DataFrame, label: str) -> tuple[float, dict]:
    """The DAG's train step on what the store holds; macro-F1 of the served model on every shared row it never saw.

    The served model is fitted on every stored observation (its hold-out twin,
    which promotion uses, on the training part only), so the rows scored here
    are the shared rows that were never collected.
    """
    trained = pipeline.train_and_log(settings, f"bench_{label}")
    engine = store.make_engine(settings.resolved_data_db_url)
    stored = store.load_observations(engine)
    engine.dispose()
    mlflow.set_tracking_uri(settings.resolved_mlflow_tracking_uri)
    model = mlflow.sklearn.load_model(trained["model_uri"])
    rest = unseen_rows(all_rows, set(stored["row_hash"]))
    scores = training.score(model, rest)
    print(
        f"{label}: {trained['rows_used']} distinct rows collected, best {trained['best_candidate']}; "
        f"hold-out model ({trained['rows_train']} rows) macro-F1 {trained['macro_f1']:.4f} on "
        f"{trained['rows_eval']} evaluation rows; served model (all {trained['rows_used']} rows) macro-F1 "
        f"{scores.macro_f1:.4f} (accuracy {scores.accuracy:.4f}) on {len(rest)} rows never collected; "
        f"train {trained['train_seconds']:.1f} s, model {trained['model_mb']:.1f} MB, {trained['n_trees']} trees",
        flush=True,
    )
    return scores.macro_f1, trained


def production_artifact_mb(settings: Settings) -> float:
    """Size of the production model as the registry serves it (``models:/covertype@production``, every file)."""
    mlflow.set_tracking_uri(settings.resolved_mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_mlflow_tracking_uri)
    with tempfile.TemporaryDirectory(prefix="bench-production-") as download_dir:
        local = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{settings.model_name}@{settings.model_alias}", dst_path=download_dir
            )
        )
        return sum(path.stat().st_size for path in local.rglob("*") if path.is_file()) / 1e6


def single_row_latency_ms(model: object, rows: pd.DataFrame, repeats: int = 300) -> tuple[float, float]:
    """p50 and p99 of one-row ``predict_proba`` in-process (the floor any service adds to)."""
    samples = []
    records = [rows.iloc[[i % len(rows)]] for i in range(repeats)]
    for record in records:
        started = time.perf_counter()
        model.predict_proba(record)  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    csv_path = Path(os.environ.get("COVERTYPE_CSV", REPO_ROOT.parent / "shared" / "data" / "covertype.csv"))
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert tuple(raw.columns) == RAW_COLUMNS, f"{csv_path} is not in the raw format"
    raw_rows = raw.to_numpy().tolist()
    parsed = parse_payload_rows(raw_rows)
    all_rows = pd.DataFrame(parsed.rows)
    all_rows["row_hash"] = [store.row_hash(record) for record in parsed.rows]
    print(f"dataset {csv_path}: {len(all_rows)} rows; replica seed {SEED}", flush=True)

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        tmp_dir = Path(tmp)
        clock = ManualClock()
        with replica(csv_path, tmp_dir / "replica", clock) as base_url:
            for portions, label in ((1, "one_portion"), (3, "three_portions")):
                work_dir = tmp_dir / label
                settings = settings_for(work_dir, base_url)
                collect(settings, clock, portions)
                results[label], _ = train_and_score(settings, all_rows, label)

        # Worst case for time and size: the store holds all 15,120 rows.
        work_dir = tmp_dir / "all_rows"
        settings = settings_for(work_dir)
        pipeline.store_batch(
            settings,
            "bench_all_rows",
            {"group_number": 1, "batch_number": 1, "fetched_at": "2026-01-01T00:00:00+00:00", "rows": raw_rows},
        )
        # The DAG's whole train_and_log task: the search, both fits and the MLflow logging of both models.
        started = time.perf_counter()
        trained = pipeline.train_and_log(settings, "bench_all_rows")
        step_s = time.perf_counter() - started
        promotion = pipeline.register_and_promote(settings, trained)
        assert promotion["promoted"], promotion  # the only version: it becomes production
        size_mb = production_artifact_mb(settings)
        mlflow.set_tracking_uri(settings.resolved_mlflow_tracking_uri)
        model = mlflow.sklearn.load_model(trained["model_uri"])
        p50, p99 = single_row_latency_ms(model, training.features_of(all_rows.head(300)))
        print(
            f"all {len(all_rows)} rows: best {trained['best_candidate']}, {trained['n_trees']} trees, "
            f"evaluation macro-F1 {trained['macro_f1']:.4f}; training step {step_s:.1f} s (of which search and "
            f"both fits {trained['train_seconds']:.1f} s, the rest MLflow logging); production model artifact "
            f"{size_mb:.1f} MB; one-row predict_proba p50 {p50:.2f} ms p99 {p99:.2f} ms",
            flush=True,
        )
    print(
        f"macro_f1 one_portion={results['one_portion']:.3f} three_portions={results['three_portions']:.3f} "
        f"model_mb={size_mb:.0f} train_s={step_s:.0f}"
    )


if __name__ == "__main__":
    main()
