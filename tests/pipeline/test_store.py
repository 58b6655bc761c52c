"""The data store on SQLite: idempotent appends, duplicates kept once, rejected rows with reasons."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateTable

from covertype import store
from covertype.parsing import LabelScheme, RejectReason
from covertype.schema import FEATURE_COLUMNS, LABEL_COLUMN


def _append(engine: store.Engine, run_id: str, rows: list[list[str]], batch: int = 1) -> store.FetchSummary:
    return store.append_fetch(engine, dag_run_id=run_id, group_number=1, batch_number=batch, raw_rows=rows)


def test_append_stores_typed_observations_with_fetch_and_hash(engine, shared_rows) -> None:
    summary = _append(engine, "run-1", shared_rows[:50])
    assert (summary.rows_received, summary.rows_stored, summary.rows_duplicate, summary.rows_rejected) == (50, 50, 0, 0)
    frame = store.load_observations(engine)
    assert len(frame) == 50
    assert list(frame.columns[:13]) == [*FEATURE_COLUMNS, LABEL_COLUMN]
    assert frame["Elevation"].dtype == "int64"
    assert frame["row_hash"].str.len().eq(64).all()
    assert set(frame["first_batch_number"]) == {1}
    first = next(r for _, r in frame.iterrows() if r["row_hash"] == store.row_hash(frame.iloc[0].to_dict()))
    assert first["Soil_Type"].startswith("C")


def test_retried_append_with_same_run_id_writes_nothing(engine, shared_rows) -> None:
    first = _append(engine, "run-1", shared_rows[:40])
    counts = store.table_counts(engine)
    again = _append(engine, "run-1", shared_rows[100:140])  # whatever the payload: the run is already stored
    assert again.already_stored is True
    assert again.fetch_id == first.fetch_id
    assert store.table_counts(engine) == counts


def test_an_attempt_that_loses_the_race_to_a_concurrent_one_reports_its_fetch(
    engine, shared_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts of one DAG run both find nothing stored, then both write: the unique run id stops the second."""
    first = _append(engine, "run-1", shared_rows[:40])
    counts = store.table_counts(engine)
    real_find_fetch = store.find_fetch
    calls: list[str] = []

    def not_yet_committed_once(engine_: store.Engine, dag_run_id: str) -> store.FetchSummary | None:
        calls.append(dag_run_id)
        return None if len(calls) == 1 else real_find_fetch(engine_, dag_run_id)

    monkeypatch.setattr(store, "find_fetch", not_yet_committed_once)
    again = _append(engine, "run-1", shared_rows[100:140])
    assert calls == ["run-1", "run-1"]  # the early check, then the look-up after the refused insert
    assert (again.already_stored, again.fetch_id) == (True, first.fetch_id)
    assert store.table_counts(engine) == counts


def test_observations_another_run_stores_at_the_same_moment_become_repeats_not_a_failed_store(
    engine, shared_rows, caplog: pytest.LogCaptureFixture
) -> None:
    """Two DAG runs (``make dag-run`` beside the schedule) store overlapping payloads at once: between one's look-up
    of the known hashes and its insert, the other commits some of the same observations."""
    other_writer = store.make_engine(engine.url.render_as_string(hide_password=False))
    injected: list[str] = []

    def commit_the_other_run_first(conn, cursor, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO fetches") and not injected:
            injected.append(statement)
            _append(other_writer, "run-other", shared_rows[20:60])  # overlaps this run's on shared_rows[20:40]

    event.listen(engine, "before_cursor_execute", commit_the_other_run_first)
    try:
        with caplog.at_level(logging.WARNING, logger="covertype.store"):
            summary = _append(engine, "run-1", shared_rows[:40])
    finally:
        event.remove(engine, "before_cursor_execute", commit_the_other_run_first)
        other_writer.dispose()

    assert injected
    assert "another fetch stored some of the same observations at the same moment" in caplog.text
    assert (summary.rows_stored, summary.rows_duplicate) == (20, 20)
    assert store.count_observations(engine) == 60
    assert store.repeat_counts(engine).set_index("times_seen")["observations"].to_dict() == {1: 40, 2: 20}


def test_an_integrity_error_that_is_no_concurrent_insert_is_raised_at_once_not_written_again(
    engine, shared_rows, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a duplicate row hash means another run got there first; any other refusal (a bug) is raised as is."""
    attempts: list[str] = []

    def refuse_rejected_rows(conn, cursor, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO fetches"):
            attempts.append(statement)
        if statement.startswith("INSERT INTO rejected_rows"):
            raise engine.dialect.loaded_dbapi.IntegrityError(1048, "Column 'detail' cannot be null")

    event.listen(engine, "before_cursor_execute", refuse_rejected_rows)
    try:
        with caplog.at_level(logging.WARNING, logger="covertype.store"), pytest.raises(IntegrityError):
            _append(engine, "run-1", [*shared_rows[:10], ["not", "a", "row"]])
    finally:
        event.remove(engine, "before_cursor_execute", refuse_rejected_rows)

    assert len(attempts) == 1
    assert "another fetch stored some of the same observations" not in caplog.text
    assert store.count_observations(engine) == 0  # rolled back


def test_run_ids_that_differ_only_in_case_are_two_runs(engine, shared_rows) -> None:
    _append(engine, "run-1", shared_rows[:10])
    assert _append(engine, "Run-1", shared_rows[10:20]).already_stored is False
    # MySQL compares strings without case by default: the column is declared case-sensitive there.
    ddl = str(CreateTable(store.Fetch.__table__).compile(dialect=mysql.dialect()))
    assert "dag_run_id VARCHAR(250) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL" in ddl


def test_identical_observations_are_kept_once_and_counted(engine, shared_rows) -> None:
    _append(engine, "run-1", shared_rows[:30], batch=1)
    # Batch 2 re-serves 10 known rows and repeats one new row twice inside the payload.
    summary = _append(engine, "run-2", [*shared_rows[:10], *shared_rows[30:35], shared_rows[30]], batch=2)
    assert summary.rows_stored == 5
    assert summary.rows_duplicate == 11
    frame = store.load_observations(engine)
    assert len(frame) == 35
    assert frame["row_hash"].is_unique
    seen = dict(zip(frame["row_hash"], frame["times_seen"], strict=True))
    # rows 0-9 (served in both batches) and row 30 (twice in batch 2) were seen twice, the other 24 once
    assert sorted(seen.values()).count(2) == 11
    assert sorted(frame["times_seen"].value_counts().items()) == [(1, 24), (2, 11)]
    assert store.repeat_counts(engine).to_dict("list") == {"times_seen": [1, 2], "observations": [24, 11]}
    assert store.class_distribution(engine)["times_seen"].sum() == 30 + 16
    per_batch = store.rows_per_batch(engine).set_index("batch_number")
    assert per_batch.loc[2, "rows_stored"] == 5
    assert per_batch.loc[2, "rows_duplicate"] == 11
    assert store.batches_seen(engine) == [1, 2]


def test_rejected_rows_are_stored_with_reasons_and_good_rows_kept(engine, shared_rows) -> None:
    bad_number = [*shared_rows[0][:2], "steep", *shared_rows[0][3:]]
    out_of_range = ["9999", *shared_rows[1][1:]]
    unknown_soil = [*shared_rows[2][:11], "C0000", shared_rows[2][12]]
    short = shared_rows[3][:12]
    payload = [*shared_rows[10:20], bad_number, out_of_range, unknown_soil, short, "not a row"]
    summary = _append(engine, "run-1", payload)
    assert summary.rows_stored == 10
    assert summary.rows_rejected == 5
    assert summary.rejected_by_reason == {
        RejectReason.NON_NUMERIC.value: 1,
        RejectReason.OUT_OF_RANGE.value: 1,
        RejectReason.UNKNOWN_CATEGORY.value: 1,
        RejectReason.WRONG_FIELD_COUNT.value: 2,
    }
    rejected = store.rejected_rows(engine).sort_values("position")
    assert rejected["position"].tolist() == [10, 11, 12, 13, 14]
    assert rejected.iloc[0]["raw_row"] == bad_number
    assert "Slope" in rejected.iloc[0]["detail"]
    assert rejected.iloc[4]["raw_row"] == "not a row"  # as sent: ["not a row"] would be a one-field row
    assert store.rejects_by_reason(engine)["rows"].sum() == 5
    assert len(store.load_observations(engine)) == 10


def test_append_is_one_transaction(engine, shared_rows) -> None:
    """A failure half-way (here: the rejected rows' insert) leaves no fetch and no observation behind."""

    def fail_on_rejects(conn, cursor, statement, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REJECTED_ROWS"):
            raise RuntimeError("database went away")

    event.listen(engine, "before_cursor_execute", fail_on_rejects)
    try:
        with pytest.raises(RuntimeError, match="database went away"):
            _append(engine, "run-1", [*shared_rows[:20], ["bad"]])
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_rejects)
    assert store.table_counts(engine) == dict.fromkeys(store.table_counts(engine), 0)
    # The retried task then stores everything once.
    summary = _append(engine, "run-1", [*shared_rows[:20], ["bad"]])
    assert (summary.already_stored, summary.rows_stored, summary.rows_rejected) == (False, 20, 1)


def test_fetch_records_batch_time_counts_and_payload_hash(engine, shared_rows) -> None:
    fetched_at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    store.append_fetch(
        engine, dag_run_id="run-9", group_number=4, batch_number=7, raw_rows=shared_rows[:5], fetched_at=fetched_at
    )
    fetch = store.fetches_summary(engine).iloc[0]
    assert (fetch["dag_run_id"], fetch["group_number"], fetch["batch_number"]) == ("run-9", 4, 7)
    assert fetch["fetched_at"].replace(tzinfo=UTC) == fetched_at
    assert fetch["payload_sha256"] == store.payload_sha256(shared_rows[:5])
    assert store.payload_sha256(shared_rows[:5]) != store.payload_sha256(shared_rows[1:6])


def test_a_fetch_time_in_another_zone_is_stored_as_utc(engine, shared_rows) -> None:
    """MySQL's DATETIME (and SQLite's text) keep no zone: 12:00+02:00 stored as 12:00 would be shown as 12:00 UTC."""
    fetched_at = datetime.fromisoformat("2026-05-01T12:00:00+02:00")
    store.append_fetch(
        engine, dag_run_id="run-9", group_number=4, batch_number=7, raw_rows=shared_rows[:5], fetched_at=fetched_at
    )
    stored = store.fetches_summary(engine).iloc[0]["fetched_at"]
    assert stored.replace(tzinfo=UTC) == datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_class_distribution_and_hash_depends_on_label(engine, shared_rows) -> None:
    _append(engine, "run-1", shared_rows[::50])  # every cover type (the file is in blocks of them)
    _append(engine, "run-2", shared_rows[::100])  # seen again: times_seen counts it, observations do not
    distribution = store.class_distribution(engine)
    # UCI's names (covtype.info), written out here rather than read from the code under test.
    uci_names = {1: "Spruce/Fir", 2: "Lodgepole Pine", 3: "Ponderosa Pine", 4: "Cottonwood/Willow", 5: "Aspen",
                 6: "Douglas-fir", 7: "Krummholz"}  # fmt: skip
    labels = Counter(int(row[-1]) for row in shared_rows[::50])
    repeats = Counter(int(row[-1]) for row in shared_rows[::100])
    assert distribution.to_dict("records") == [
        {LABEL_COLUMN: label, "name": uci_names[label], "observations": labels[label],
         "times_seen": labels[label] + repeats[label]}
        for label in sorted(labels)
    ]  # fmt: skip
    assert len(labels) == 7, "the sample must hold every cover type to tell the names apart"
    record = store.load_observations(engine).iloc[0][[*FEATURE_COLUMNS, LABEL_COLUMN]].to_dict()
    relabelled = {**record, LABEL_COLUMN: record[LABEL_COLUMN] % 7 + 1}
    assert store.row_hash(record) != store.row_hash(relabelled)


def test_init_schema_is_safe_to_repeat(engine) -> None:
    store.init_schema(engine)
    store.init_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(select(store.Fetch.id)).all() == []


def _relabelled(rows: list[list[str]], shift: int) -> list[list[str]]:
    return [[*row[:-1], str(int(row[-1]) + shift)] for row in rows]


def test_a_payload_without_the_telling_label_keeps_the_collections_numbering(engine, shared_rows) -> None:
    # A 0..6 source: the first payload holds 0s; a later one has only cover types 2..6 (1..5 as sent).
    zero_based = _relabelled(shared_rows[:200], -1)
    assert store.collection_label_scheme(engine) is None
    assert _append(engine, "run-1", zero_based).label_scheme == "0..6"
    assert store.collection_label_scheme(engine) is LabelScheme.ZERO_BASED
    later = [row for row in _relabelled(shared_rows[200:800], -1) if row[-1] in {"1", "2", "3", "4", "5"}]
    assert _append(engine, "run-2", later, batch=2).label_scheme == "0..6"
    stored = store.load_observations(engine)
    assert len(stored) == 200 + len(later)  # every row stored, none rejected
    expected = sorted(int(row[-1]) + 1 for row in [*zero_based, *later])
    assert sorted(stored[LABEL_COLUMN].tolist()) == expected


def test_the_log_says_how_labels_were_read_and_warns_when_the_numbering_switches(
    engine, shared_rows, caplog: pytest.LogCaptureFixture
) -> None:
    with_sevens = [row for row in shared_rows[:3000] if row[-1] == "7"][:20] + shared_rows[:100]
    with caplog.at_level(logging.INFO, logger="covertype.store"):
        _append(engine, "run-1", with_sevens)
    assert "labels read as 1..7" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    caplog.clear()
    # The source starts numbering 0..6 (0s common, no 7): followed, and said loudly.
    zero_based = _relabelled(shared_rows[1::40], -1)  # every cover type, spruce/fir (0) about 1 in 7
    with caplog.at_level(logging.INFO, logger="covertype.store"):
        assert _append(engine, "run-2", zero_based, batch=2).label_scheme == "0..6"
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert "read as 0..6, but earlier payloads of the collection showed 1..7" in warning


def test_a_row_holding_nan_is_stored_as_strict_json(engine, shared_rows) -> None:
    """Python's JSON reader accepts NaN and Infinity; MySQL's JSON type does not, and would roll back the fetch."""
    bad = [float("nan"), float("inf"), *shared_rows[0][2:]]
    summary = _append(engine, "run-1", [*shared_rows[:20], bad])
    assert (summary.rows_stored, summary.rows_rejected) == (20, 1)
    with engine.connect() as connection:
        [stored] = connection.execute(text("SELECT raw_row FROM rejected_rows")).scalars().all()

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    assert json.loads(stored, parse_constant=refuse)[:2] == ["NaN", "Infinity"]


def _nesting(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_nesting(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_nesting(item) for item in value.values()), default=0)
    return 0


def test_a_row_nested_too_deep_for_mysql_or_holding_a_lone_surrogate_is_stored_beside_the_good_rows(
    engine, shared_rows
) -> None:
    """MariaDB's JSON columns refuse more than 32 levels, MySQL's more than 100, and neither stores a lone
    surrogate in utf8mb4: stored as sent, one such row would roll back the payload's good rows with it."""
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    too_deep = [*shared_rows[0][:12], deep]
    surrogate = ["2596\ud800", *shared_rows[1][1:]]  # a lone surrogate, as json.loads reads "\\ud800"

    summary = _append(engine, "run-1", [*shared_rows[10:20], too_deep, surrogate])

    assert (summary.rows_stored, summary.rows_rejected) == (10, 2)
    rejected = store.rejected_rows(engine).sort_values("position")
    assert _nesting(rejected.iloc[0]["raw_row"]) <= store.MAX_JSON_DEPTH
    # The copy of the payload kept in pending_payloads (one level more) is bounded the same way.
    assert _nesting(store.strict_json({"rows": [too_deep, surrogate]})) <= store.MAX_JSON_DEPTH
    innermost = rejected.iloc[0]["raw_row"]
    while isinstance(innermost, list):
        innermost = innermost[-1]
    assert innermost == f"(list nested deeper than {store.MAX_JSON_DEPTH} levels, not kept)"
    assert rejected.iloc[1]["raw_row"][0] == "2596?"
    rejected.iloc[1]["raw_row"][0].encode("utf-8")  # valid UTF-8: what a utf8mb4 column takes


def test_a_stray_0_in_a_one_based_collection_is_rejected_not_a_reason_to_shift(engine, shared_rows) -> None:
    with_sevens = [row for row in shared_rows[:2000] if row[-1] == "7"][:20] + shared_rows[:100]
    _append(engine, "run-1", with_sevens)
    assert store.collection_label_scheme(engine) is LabelScheme.ONE_BASED
    no_sevens = [row for row in shared_rows[2000:3000] if row[-1] != "7"][:150]
    summary = _append(engine, "run-2", [*no_sevens, [*no_sevens[0][:-1], "0"]], batch=2)
    assert (summary.label_scheme, summary.rows_rejected) == ("1..7", 1)
    assert summary.rejected_by_reason == {"unknown_label": 1}
