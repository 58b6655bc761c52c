"""Read-only summaries of the data DB (``DATA_DB_URL``), through ``covertype.store``'s query functions.

The UI never writes here and never creates the schema: a DB the pipeline has
not initialised yet is reported as empty, not "fixed". Connection failures
become a ``ServiceError`` naming the data DB with the password masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from covertype import store
from ui.clients.errors import ServiceError, error_summary

SERVICE = "Data DB"
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30
REJECTED_ROWS_SHOWN = 100
FETCHES_SHOWN = 50


@dataclass(frozen=True)
class DataOverview:
    """What the Data page shows; ``initialised`` is False before the pipeline's first run."""

    initialised: bool
    table_counts: dict[str, int] = field(default_factory=dict)
    rows_per_batch: pd.DataFrame = field(default_factory=pd.DataFrame)
    class_distribution: pd.DataFrame = field(default_factory=pd.DataFrame)
    rejects_by_reason: pd.DataFrame = field(default_factory=pd.DataFrame)
    rejected_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    fetches: pd.DataFrame = field(default_factory=pd.DataFrame)
    repeat_counts: pd.DataFrame = field(default_factory=pd.DataFrame)


def _engine(db_url: str) -> Engine:
    """An engine with connect/read timeouts where the driver has them (PyMySQL); SQLite is a local file."""
    url = make_url(db_url)
    connect_args: dict[str, int] = {}
    if url.get_backend_name() in ("mysql", "mariadb"):
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


class DataDbClient:
    """Reads the collected data; one engine (connection pool) per URL."""

    def __init__(self, db_url: str) -> None:
        try:
            self.display_url = make_url(db_url).render_as_string(hide_password=True)
            self._engine = _engine(db_url)
        except (SQLAlchemyError, ValueError, ImportError) as error:
            # A malformed URL, or a driver that is not installed (``mysql://`` means MySQLdb).
            raise ServiceError(
                SERVICE,
                f"cannot use DATA_DB_URL: {type(error).__name__}: {error_summary(error, 200)}",
                "DATA_DB_URL: an SQLAlchemy URL such as mysql+pymysql://user:password@host:3306/db",
            ) from error

    def overview(self) -> DataOverview:
        """Every summary the Data page shows, read in one go."""
        try:
            present = set(inspect(self._engine).get_table_names())
            if not set(store.COLLECTION_TABLES) <= present:
                return DataOverview(initialised=False)
            return DataOverview(
                initialised=True,
                table_counts=store.table_counts(self._engine),
                rows_per_batch=store.rows_per_batch(self._engine),
                class_distribution=store.class_distribution(self._engine),
                rejects_by_reason=store.rejects_by_reason(self._engine),
                rejected_rows=store.rejected_rows(self._engine, limit=REJECTED_ROWS_SHOWN),
                fetches=store.fetches_summary(self._engine).head(FETCHES_SHOWN),
                repeat_counts=store.repeat_counts(self._engine),
            )
        except SQLAlchemyError as error:
            cause = error_summary(getattr(error, "orig", None) or error)
            raise ServiceError(
                SERVICE,
                f"cannot read {self.display_url}: {cause}",
                "that the data DB is running and that DATA_DB_URL (host, user, password, database) is right",
            ) from error

    def close(self) -> None:
        self._engine.dispose()
