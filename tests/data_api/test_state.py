"""``data_api.state.StateStore`` when its file is removed, read-only or full: the operator learns what happened."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from data_api.state import StateStore, StateStoreError

REAL_CONNECT = sqlite3.connect


def test_a_state_file_removed_while_serving_starts_every_group_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Moving the file aside is how the operator starts over; it must not leave every request failing."""
    state_file = tmp_path / "state.sqlite3"
    with caplog.at_level(logging.WARNING, logger="data_api"):
        store = StateStore(state_file, n_batches=10)
    assert caplog.records == [], "the first start creates the file without a warning"
    assert [store.claim(1, now, 0).batch_number for now in (0.0, 1.0)] == [1, 2]

    state_file.rename(tmp_path / "state.sqlite3.old")
    with caplog.at_level(logging.WARNING, logger="data_api"):
        assert store.claim(1, 2.0, 0).batch_number == 1
    assert "was missing or empty: created again, every group starts over at batch 1" in caplog.text
    assert [group.batch_number for group in store.snapshot()] == [1]


def test_a_state_file_this_user_cannot_write_stops_the_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite opens such a file read-only without a word: reads (the healthcheck) work, every /data would not."""
    state_file = tmp_path / "state.sqlite3"
    StateStore(state_file, n_batches=10).claim(1, 0.0, 0)

    def read_only(path: Path, **options: object) -> sqlite3.Connection:
        return REAL_CONNECT(f"file:{path}?mode=ro", uri=True, **options)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with pytest.raises(StateStoreError, match=r"cannot be opened for writing: attempt to write a readonly database"):
        StateStore(state_file, n_batches=10)


def test_a_full_disk_is_reported_as_such_not_as_a_failed_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite rolls back by itself on a full disk; a second ROLLBACK would raise in place of the cause."""
    store = StateStore(tmp_path / "state.sqlite3", n_batches=10)

    def no_room_to_grow(path: Path, **options: object) -> sqlite3.Connection:
        connection = REAL_CONNECT(path, **options)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", no_room_to_grow)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        _claim_groups(store, range(1, 5_000))  # a few hundred rows fill the table's only page


def _claim_groups(store: StateStore, group_numbers: range) -> None:
    for group_number in group_numbers:
        store.claim(group_number, 0.0, 0)


def test_a_state_file_created_empty_by_another_process_gets_its_table(tmp_path: Path) -> None:
    """Two replicas share the file: one may have created it, and not its table yet, when the other asks."""
    state_file = tmp_path / "state.sqlite3"
    store = StateStore(state_file, n_batches=10)
    state_file.unlink()
    state_file.touch()  # what sqlite3.connect leaves behind before the first statement
    assert store.claim(1, 0.0, 0).batch_number == 1
