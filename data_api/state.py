"""Per-group batch state, kept in SQLite so that it survives a restart of the service.

Every decision (serve the current batch, move to the next, or refuse because
the collection is complete) is one ``BEGIN IMMEDIATE`` transaction: it takes
SQLite's write lock before reading, so two requests — from two threads or two
worker processes — can never both see batch 3 expire and both move to 4, nor
skip one. The in-process lock only spares threads SQLite's busy-wait.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS group_state (
    group_number     INTEGER PRIMARY KEY,
    batch_number     INTEGER NOT NULL,
    batch_started_at REAL    NOT NULL,  -- Unix time the current batch was first served
    requests_served  INTEGER NOT NULL   -- portions served since the last restart of the group
)
"""
BUSY_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class StateStoreError(RuntimeError):
    """The state file cannot be opened at start-up; the message names it and the way out."""


class CollectionCompleteError(Exception):
    """The group has had its last batch and its window has passed."""


@dataclass(frozen=True)
class GroupState:
    group_number: int
    batch_number: int
    batch_started_at: float
    requests_served: int


@dataclass(frozen=True)
class Claim:
    """The outcome of one request: which batch to serve, and whether it just started."""

    batch_number: int
    advanced: bool


def is_due(elapsed_s: float, min_update_time: float) -> bool:
    """Whether a request ``elapsed_s`` after the batch started opens the next batch.

    "More than ``MIN_UPDATE_TIME`` seconds", as the course API; 0 means every
    request after the first, even two within the clock's resolution.
    """
    return min_update_time == 0 or elapsed_s > min_update_time


class StateStore:
    """Reads and changes group states; one short-lived connection per call, safe across threads."""

    def __init__(self, path: Path, n_batches: int, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.n_batches = n_batches
        # How long a call waits for another process's write lock before it fails.
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._opened = False  # until then, a missing file is the first start's, not worth a warning
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._transaction() as connection:
                connection.execute(SCHEMA)
                # A write, so that a file this user cannot write (SQLite then opens it read-only without a
                # word; e.g. root-owned from an earlier run) stops the start-up instead of passing the
                # healthcheck, which only reads, and answering 503 to every /data.
                connection.execute("PRAGMA user_version = 1")
        except (sqlite3.OperationalError, OSError) as error:  # locked, read-only, no directory, a full disk
            raise StateStoreError(f"state store {path}: cannot be opened for writing: {error}") from error
        except sqlite3.DatabaseError as error:  # "file is not a database", "database disk image is malformed"
            # Not repaired nor replaced here: the file holds where each group stands, and starting every
            # group over at batch 1 is a decision for the operator, not for a restart loop.
            raise StateStoreError(
                f"state store {path}: corrupt ({error}); move the file aside to start every group over at batch 1"
            ) from error
        self._opened = True

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if anything inside raises.

        A state file removed while the service runs (moved aside to start over, as the start-up error
        on a corrupt file advises) is created again, with a warning: every group starts over at batch
        1. Without that, SQLite would create an empty file and every request would fail on the
        missing table until a restart.
        """
        with (
            self._lock,
            closing(sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)) as conn,
        ):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Decided under the write lock: another process may have created the file a moment ago and not
                # its table yet.
                missing = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'group_state'").fetchone() is None
                if missing:
                    conn.execute(SCHEMA)
                yield conn
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): a ROLLBACK then
                # would raise in place of the error that says what happened.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if missing and self._opened:
                log.warning(
                    "state store %s was missing or empty: created again, every group starts over at batch 1", self.path
                )

    def claim(self, group_number: int, now: float, min_update_time: float) -> Claim:
        """Decide the batch for a request at ``now``; raise ``CollectionCompleteError`` after the last."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT batch_number, batch_started_at FROM group_state WHERE group_number = ?", (group_number,)
            ).fetchone()
            if row is None:
                conn.execute("INSERT INTO group_state VALUES (?, 1, ?, 1)", (group_number, now))
                return Claim(batch_number=1, advanced=True)
            batch_number, started_at = row
            if not is_due(now - started_at, min_update_time):
                conn.execute(
                    "UPDATE group_state SET requests_served = requests_served + 1 WHERE group_number = ?",
                    (group_number,),
                )
                return Claim(batch_number=batch_number, advanced=False)
            if batch_number >= self.n_batches:
                raise CollectionCompleteError(group_number)
            conn.execute(
                "UPDATE group_state SET batch_number = ?, batch_started_at = ?, requests_served = requests_served + 1 "
                "WHERE group_number = ?",
                (batch_number + 1, now, group_number),
            )
            return Claim(batch_number=batch_number + 1, advanced=True)

    def reset(self, group_number: int) -> bool:
        """Forget the group's state (its next request gets batch 1); whether there was any."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM group_state WHERE group_number = ?", (group_number,)).rowcount > 0

    def snapshot(self) -> list[GroupState]:
        """Every group that has been served since its last restart."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT * FROM group_state ORDER BY group_number").fetchall()
        return [GroupState(*row) for row in rows]
