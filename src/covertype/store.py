"""The data store of collected observations (SQLAlchemy 2; MySQL 8.4 in the stack, SQLite in tests).

Tables:

- ``fetches``: one row per DAG run that fetched data (``dag_run_id`` is unique),
  with the group, the batch number, when it was fetched, the row counts and
  the SHA-256 of the payload;
- ``observations``: each distinct clean observation once (``row_hash`` over
  the 12 features and the label is unique), typed, with the fetch that first
  brought it and ``times_seen``, how often the API has served it;
- ``observation_sightings``: which fetch served which observation how many
  times (so "rows per batch" stays true even though an observation is stored once);
- ``rejected_rows``: the raw rows that could not be parsed, with position,
  reason and detail;
- ``pending_payloads``: a payload ``fetch`` got and ``store`` has not stored
  yet, kept so that a retried or cleared ``fetch`` hands it on instead of
  asking the data API again; removed in the transaction that stores it.

Appending a fetch is one transaction and idempotent on the DAG run id: a
retried task finds its fetch already there and writes nothing. Only plain
SQL (selects, inserts, updates) is used, so the same code runs on MySQL,
MariaDB and SQLite; "insert if new" is done by reading the known hashes
inside the transaction rather than with a dialect's INSERT IGNORE.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from covertype.parsing import OVERRIDE_SHARE, LabelScheme, ParsedPayload, parse_payload_rows
from covertype.schema import COVER_TYPE_NAMES, FEATURE_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMN_NAMES

log = logging.getLogger(__name__)

# Version prefix of the row hash: bump it only together with a data migration,
# since the evaluation split is derived from the hash.
ROW_HASH_VERSION = "v1"
_IN_CHUNK = 500


class Base(DeclarativeBase):
    """Declarative base of the data store's tables."""


def _dag_run_id_column() -> Mapped[str]:
    """A unique DAG run id; case-sensitive on MySQL too (its default collation ignores case): `Run-1` and
    `run-1` are two runs."""
    return mapped_column(
        String(250).with_variant(mysql.VARCHAR(250, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"),
        unique=True,
        nullable=False,
    )


class Fetch(Base):
    """One data API answer, stored by one DAG run."""

    __tablename__ = "fetches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_run_id: Mapped[str] = _dag_run_id_column()
    group_number: Mapped[int] = mapped_column(Integer, nullable=False)
    batch_number: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    label_scheme: Mapped[str] = mapped_column(String(8), nullable=False)
    rows_received: Mapped[int] = mapped_column(Integer, nullable=False)
    rows_stored: Mapped[int] = mapped_column(Integer, nullable=False, doc="new distinct observations")
    rows_duplicate: Mapped[int] = mapped_column(Integer, nullable=False, doc="clean rows already known")
    rows_rejected: Mapped[int] = mapped_column(Integer, nullable=False)
    payload_sha256: Mapped[str] = mapped_column(String(64), nullable=False)


class Observation(Base):
    """A distinct clean observation (12 typed features and the cover type 1..7)."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    row_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    Elevation: Mapped[int] = mapped_column(Integer, nullable=False)
    Aspect: Mapped[int] = mapped_column(Integer, nullable=False)
    Slope: Mapped[int] = mapped_column(Integer, nullable=False)
    Horizontal_Distance_To_Hydrology: Mapped[int] = mapped_column(Integer, nullable=False)
    Vertical_Distance_To_Hydrology: Mapped[int] = mapped_column(Integer, nullable=False)
    Horizontal_Distance_To_Roadways: Mapped[int] = mapped_column(Integer, nullable=False)
    Hillshade_9am: Mapped[int] = mapped_column(Integer, nullable=False)
    Hillshade_Noon: Mapped[int] = mapped_column(Integer, nullable=False)
    Hillshade_3pm: Mapped[int] = mapped_column(Integer, nullable=False)
    Horizontal_Distance_To_Fire_Points: Mapped[int] = mapped_column(Integer, nullable=False)
    Wilderness_Area: Mapped[str] = mapped_column(String(16), nullable=False)
    Soil_Type: Mapped[str] = mapped_column(String(8), nullable=False)
    Cover_Type: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    first_fetch_id: Mapped[int] = mapped_column(ForeignKey("fetches.id"), nullable=False, index=True)
    times_seen: Mapped[int] = mapped_column(Integer, nullable=False, doc="clean rows of all fetches equal to it")


class ObservationSighting(Base):
    """How many times one fetch's payload contained one observation."""

    __tablename__ = "observation_sightings"

    fetch_id: Mapped[int] = mapped_column(ForeignKey("fetches.id"), primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), primary_key=True, index=True)
    times: Mapped[int] = mapped_column(Integer, nullable=False)


class PendingPayload(Base):
    """A fetched payload not stored yet: what a retried ``fetch`` hands on rather than asking again."""

    __tablename__ = "pending_payloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_run_id: Mapped[str] = _dag_run_id_column()
    fetched: Mapped[Any] = mapped_column(JSON, nullable=False, doc="the fetch step's result, rows included")


class RejectedRowRecord(Base):
    """A raw row that was refused, kept as sent with where it was and why."""

    __tablename__ = "rejected_rows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fetch_id: Mapped[int] = mapped_column(ForeignKey("fetches.id"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    raw_row: Mapped[Any] = mapped_column(JSON, nullable=False)


# --------------------------------------------------------------------------- engine and schema


def make_engine(url: str) -> Engine:
    """An engine for the data DB; creates the directory of an SQLite file so a fresh machine just works."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True, future=True)


def init_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet (safe to call on every run)."""
    Base.metadata.create_all(engine, checkfirst=True)


# --------------------------------------------------------------------------- hashing


def row_hash(record: dict[str, Any]) -> str:
    """SHA-256 of one clean observation's 12 features and label, in raw-format order.

    The evaluation split is derived from this value, so it depends only on
    the observation itself, never on when or how often it was fetched.
    """
    values = [str(record[name]) for name in (*FEATURE_COLUMNS, LABEL_COLUMN)]
    return hashlib.sha256("|".join((ROW_HASH_VERSION, *values)).encode()).hexdigest()


def payload_sha256(raw_rows: Sequence[Any]) -> str:
    """SHA-256 of a payload's rows as canonical JSON (same rows, same hash)."""
    return hashlib.sha256(json.dumps(raw_rows, separators=(",", ":"), sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- appending a fetch


@dataclass(frozen=True)
class FetchSummary:
    """What one append did (or had done, when the DAG run's fetch was already stored)."""

    fetch_id: int
    dag_run_id: str
    group_number: int
    batch_number: int
    rows_received: int
    rows_stored: int
    rows_duplicate: int
    rows_rejected: int
    rejected_by_reason: dict[str, int]
    label_scheme: str
    payload_sha256: str
    already_stored: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for XCom and logs)."""
        return asdict(self)


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _known_hashes(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    """Observation id by row hash, for the hashes already stored (read inside the append's transaction)."""
    known: dict[str, int] = {}
    for chunk in _chunks(hashes):
        rows = session.execute(select(Observation.row_hash, Observation.id).where(Observation.row_hash.in_(chunk)))
        known.update({row[0]: row[1] for row in rows})
    return known


def _summary_of(session: Session, fetch: Fetch, already_stored: bool) -> FetchSummary:
    reasons = session.execute(
        select(RejectedRowRecord.reason, func.count())
        .where(RejectedRowRecord.fetch_id == fetch.id)
        .group_by(RejectedRowRecord.reason)
    )
    return FetchSummary(
        fetch_id=fetch.id,
        dag_run_id=fetch.dag_run_id,
        group_number=fetch.group_number,
        batch_number=fetch.batch_number,
        rows_received=fetch.rows_received,
        rows_stored=fetch.rows_stored,
        rows_duplicate=fetch.rows_duplicate,
        rows_rejected=fetch.rows_rejected,
        rejected_by_reason={row[0]: row[1] for row in reasons},
        label_scheme=fetch.label_scheme,
        payload_sha256=fetch.payload_sha256,
        already_stored=already_stored,
    )


def find_fetch(engine: Engine, dag_run_id: str) -> FetchSummary | None:
    """The stored fetch of a DAG run, or None."""
    with Session(engine) as session:
        fetch = session.scalars(select(Fetch).where(Fetch.dag_run_id == dag_run_id)).one_or_none()
        return None if fetch is None else _summary_of(session, fetch, already_stored=True)


def keep_pending_payload(engine: Engine, dag_run_id: str, fetched: dict[str, Any]) -> None:
    """Keep what a DAG run's ``fetch`` got until its ``store`` step stores it (see ``pending_payload``)."""
    with Session(engine) as session, session.begin():
        session.add(PendingPayload(dag_run_id=dag_run_id, fetched=fetched))


def pending_payload(engine: Engine, dag_run_id: str) -> dict[str, Any] | None:
    """The payload a DAG run fetched and has not stored yet, or None.

    The data API moves on with every request, so a ``fetch`` attempt that got
    an answer but failed before handing it on (Airflow could not save the
    task's result), or a run cleared after ``store`` failed for good, hands
    this on instead of asking again: one request per run, and no payload lost.
    """
    with Session(engine) as session:
        return session.scalars(
            select(PendingPayload.fetched).where(PendingPayload.dag_run_id == dag_run_id)
        ).one_or_none()


def latest_fetch(engine: Engine, *, before_fetch_id: int | None = None) -> FetchSummary | None:
    """The most recently stored fetch (stored before fetch ``before_fetch_id``, if given), or None."""
    query = select(Fetch).order_by(Fetch.id.desc()).limit(1)
    if before_fetch_id is not None:
        query = query.where(Fetch.id < before_fetch_id)
    with Session(engine) as session:
        fetch = session.scalars(query).one_or_none()
        return None if fetch is None else _summary_of(session, fetch, already_stored=True)


def batch_opener(engine: Engine, fetch_id: int) -> str:
    """The DAG run whose fetch first got the batch of fetch ``fetch_id``, in the unbroken row of fetches of it.

    The data API's window starts when a batch is first served, so that run is the one whose
    window later fetches of the same batch fell into.
    """
    with Session(engine) as session:
        fetch = session.get_one(Fetch, fetch_id)
        another_batch = or_(Fetch.group_number != fetch.group_number, Fetch.batch_number != fetch.batch_number)
        last_other = session.scalar(select(func.max(Fetch.id)).where(Fetch.id < fetch_id, another_batch)) or 0
        return session.scalars(
            select(Fetch.dag_run_id).where(Fetch.id > last_other, Fetch.id <= fetch_id).order_by(Fetch.id).limit(1)
        ).one()


def collection_label_scheme(engine: Engine) -> LabelScheme | None:
    """The label numbering the stored payloads showed last, or None before any payload showed one.

    A payload read as 0..6 showed it (it held more 0s than 7s, or inherited it);
    one read as 1..7 showed it only if it held a 7 (every stored 7 of a 1..7
    payload was a 7 as sent). The later of the two wins: a source that changed
    its numbering is followed.
    """
    with Session(engine) as session:
        last_zero_based = session.scalar(
            select(func.max(Fetch.id)).where(Fetch.label_scheme == LabelScheme.ZERO_BASED.value)
        )
        last_one_based = session.scalar(
            select(func.max(Fetch.id))
            .join(ObservationSighting, ObservationSighting.fetch_id == Fetch.id)
            .join(Observation, Observation.id == ObservationSighting.observation_id)
            .where(Fetch.label_scheme == LabelScheme.ONE_BASED.value, Observation.Cover_Type == 7)
        )
    if last_zero_based is None and last_one_based is None:
        return None
    if (last_zero_based or 0) > (last_one_based or 0):
        return LabelScheme.ZERO_BASED
    return LabelScheme.ONE_BASED


# Rejected rows named one by one in the task log (all of them are in the rejected_rows table).
LOGGED_REJECTS = 5


# A write that meets another DAG run's concurrent insert of the same observations is tried once more.
WRITE_ATTEMPTS = 2


# MySQL's "deadlock found" and "lock wait timeout": what two transactions inserting overlapping rows may get.
_MYSQL_LOCK_ERRORS = (1213, 1205)


def _met_a_concurrent_insert(error: IntegrityError | OperationalError) -> bool:
    """Whether a failed write collided with another transaction's observations (worth one more try).

    A duplicate row hash, or a MySQL deadlock or lock timeout; any other integrity error (a bug) or
    operational error (the server gone) is raised as it is.
    """
    if isinstance(error, IntegrityError):
        return "row_hash" in str(error.orig)
    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return code in _MYSQL_LOCK_ERRORS


def _in_utc(moment: datetime) -> datetime:
    """MySQL's DATETIME keeps no zone (PyMySQL drops it): every stored time is UTC, as the UI says. Naive is UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def append_fetch(
    engine: Engine,
    *,
    dag_run_id: str,
    group_number: int,
    batch_number: int,
    raw_rows: Sequence[Any],
    fetched_at: datetime | None = None,
) -> FetchSummary:
    """Store one payload in one transaction; a second call with the same ``dag_run_id`` writes nothing.

    Clean rows whose hash is already stored (or that repeat inside the
    payload) are not stored again: their observation's ``times_seen`` goes
    up and a sighting records the fetch. Rejected rows are stored with their
    reason. Returns the counts of what was (or had been) stored.
    """
    existing = find_fetch(engine, dag_run_id)
    if existing is not None:
        log.info("fetch of DAG run %s already stored (fetch id %s): nothing written", dag_run_id, existing.fetch_id)
        return existing
    now = datetime.now(UTC)

    def write() -> tuple[FetchSummary, ParsedPayload, LabelScheme | None]:
        # Read and parsed again on a second attempt: the concurrent fetch may have been the collection's first.
        collection_scheme = collection_label_scheme(engine)
        parsed = parse_payload_rows(raw_rows, collection_scheme)
        hashes = [row_hash(record) for record in parsed.rows]
        counts = Counter(hashes)
        records_by_hash = dict(zip(hashes, parsed.rows, strict=True))
        with Session(engine) as session, session.begin():
            known = _known_hashes(session, list(counts))
            new_hashes = [hash_ for hash_ in counts if hash_ not in known]
            fetch = Fetch(
                dag_run_id=dag_run_id,
                group_number=group_number,
                batch_number=batch_number,
                fetched_at=_in_utc(fetched_at) if fetched_at else now,
                stored_at=now,
                label_scheme=parsed.label_scheme.value,
                rows_received=len(raw_rows),
                rows_stored=len(new_hashes),
                rows_duplicate=len(hashes) - len(new_hashes),
                rows_rejected=len(parsed.rejected),
                payload_sha256=payload_sha256(raw_rows),
            )
            session.add(fetch)
            session.flush()
            session.add_all(
                Observation(
                    row_hash=hash_,
                    **records_by_hash[hash_],
                    first_fetch_id=fetch.id,
                    times_seen=counts[hash_],
                )
                for hash_ in new_hashes
            )
            session.flush()
            ids = {**known, **_known_hashes(session, new_hashes)}
            repeats = [{"obs_id": known[hash_], "n": counts[hash_]} for hash_ in counts if hash_ in known]
            if repeats:
                session.connection().execute(
                    update(Observation.__table__)
                    .where(Observation.__table__.c.id == bindparam("obs_id"))
                    .values(times_seen=Observation.__table__.c.times_seen + bindparam("n")),
                    repeats,
                )
            session.add_all(
                ObservationSighting(fetch_id=fetch.id, observation_id=ids[hash_], times=n)
                for hash_, n in counts.items()
            )
            session.add_all(
                RejectedRowRecord(
                    fetch_id=fetch.id,
                    position=rejected.position,
                    reason=rejected.reason.value,
                    detail=rejected.detail,
                    raw_row=strict_json(rejected.row),
                )
                for rejected in parsed.rejected
            )
            # Stored now: the copy its fetch step kept goes in the same transaction.
            session.execute(delete(PendingPayload).where(PendingPayload.dag_run_id == dag_run_id))
            session.flush()
            return _summary_of(session, fetch, already_stored=False), parsed, collection_scheme

    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            summary, parsed, collection_scheme = write()
            break
        except (IntegrityError, OperationalError) as error:
            concurrent = find_fetch(engine, dag_run_id) if isinstance(error, IntegrityError) else None
            if concurrent is not None:  # a concurrent attempt of the same DAG run committed first: its fetch
                return concurrent
            if attempt == WRITE_ATTEMPTS or not _met_a_concurrent_insert(error):
                raise
            # Another DAG run (``make dag-run`` beside the schedule) committed some of these observations
            # between the look-up and the insert: written again, they are repeats.
            log.warning(
                "another fetch stored some of the same observations at the same moment: storing DAG run %s's "
                "payload again",
                dag_run_id,
            )
    log.info(
        "stored fetch %s of DAG run %s: group %s batch %s, %s rows received, %s new, %s duplicate, %s rejected%s; "
        "labels read as %s",
        summary.fetch_id,
        dag_run_id,
        group_number,
        batch_number,
        summary.rows_received,
        summary.rows_stored,
        summary.rows_duplicate,
        summary.rows_rejected,
        f" {summary.rejected_by_reason}" if summary.rejected_by_reason else "",
        parsed.label_scheme.value,
    )
    if collection_scheme is not None and parsed.label_scheme is not collection_scheme:
        log.warning(
            "this payload's labels were read as %s, but earlier payloads of the collection showed %s: the "
            "payload's own labels decided (the label impossible under %s makes up at least %.0f %% of its "
            "rows and the other one is absent). If the source did not change its numbering, start a new "
            "collection (docs/pipeline.md)",
            parsed.label_scheme.value,
            collection_scheme.value,
            collection_scheme.value,
            100 * OVERRIDE_SHARE,
        )
    for rejected in parsed.rejected[:LOGGED_REJECTS]:
        log.info("rejected payload row %s (%s): %s", rejected.position, rejected.reason.value, rejected.detail)
    if len(parsed.rejected) > LOGGED_REJECTS:
        log.info("... and %s more rejected rows (table rejected_rows)", len(parsed.rejected) - LOGGED_REJECTS)
    return summary


# Integers MySQL's JSON type stores as numbers (BIGINT range); larger ones are kept as their digits.
_JSON_INT_RANGE = range(-(2**63), 2**64)


def _bounded_int(digits: str) -> int | str:
    number = int(digits)
    return number if number in _JSON_INT_RANGE else digits


# MariaDB's JSON columns refuse more than 32 levels of nesting (MySQL's, 100). A payload's fields sit at level 3,
# and the copy kept in ``pending_payloads`` adds two.
MAX_JSON_DEPTH = 16


def strict_json(value: Any) -> Any:
    """``value`` as strict JSON values: what a malformed payload holds, made storable and passable on.

    Python's JSON reader accepts NaN, Infinity, integers of any size, lone
    surrogates (``"\\ud800"``) and nesting a hundred levels deep; MySQL's JSON
    type refuses each of them (one such row would roll back the whole fetch, its
    good rows too) and so does the JSON encoder Airflow passes task results with
    for the first two. They become strings (``"NaN"``, ``"Infinity"``, the digits,
    ``"?"`` for the surrogate, a note for what lies deeper than ``MAX_JSON_DEPTH``);
    anything not JSON becomes its ``str``.
    """
    return json.loads(json.dumps(_bounded(value, 1), default=str), parse_constant=str, parse_int=_bounded_int)


def _bounded(value: Any, depth: int) -> Any:
    """``value`` with strings valid UTF-8 and containers no deeper than ``MAX_JSON_DEPTH``."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict | list | tuple) and depth >= MAX_JSON_DEPTH:
        return f"({type(value).__name__} nested deeper than {MAX_JSON_DEPTH} levels, not kept)"
    if isinstance(value, dict):
        return {_bounded(str(key), depth): _bounded(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(item, depth + 1) for item in value]
    return value


# --------------------------------------------------------------------------- queries (pipeline and UI)


def load_observations(engine: Engine) -> pd.DataFrame:
    """Every distinct clean observation, for training.

    Columns: the 12 raw-format features (``FEATURE_COLUMNS``, numbers as int64),
    ``Cover_Type`` (1..7), ``row_hash``, ``times_seen`` and ``first_batch_number``.
    Ordered by row hash, so the same data gives the same frame whatever the fetch order.
    """
    table = Observation.__table__
    query = (
        select(
            *(table.c[name] for name in FEATURE_COLUMNS),
            table.c.Cover_Type,
            table.c.row_hash,
            table.c.times_seen,
            Fetch.batch_number.label("first_batch_number"),
        )
        .join(Fetch, Fetch.id == table.c.first_fetch_id)
        .order_by(table.c.row_hash)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    columns = [*FEATURE_COLUMNS, LABEL_COLUMN, "row_hash", "times_seen", "first_batch_number"]
    frame = pd.DataFrame(rows, columns=columns)
    for name in (*NUMERIC_COLUMN_NAMES, LABEL_COLUMN, "times_seen", "first_batch_number"):
        frame[name] = frame[name].astype("int64")
    for name in (FEATURE_COLUMNS[-2], FEATURE_COLUMNS[-1], "row_hash"):
        frame[name] = frame[name].astype(str)
    return frame


def batches_seen(engine: Engine) -> list[int]:
    """Sorted distinct batch numbers of every stored fetch."""
    with engine.connect() as connection:
        return sorted(connection.execute(select(Fetch.batch_number).distinct()).scalars())


def count_observations(engine: Engine) -> int:
    """Number of distinct clean observations stored."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Observation)).scalar_one())


def fetches_summary(engine: Engine) -> pd.DataFrame:
    """One row per stored fetch (newest first): the DAG run, group, batch, when, and its row counts.

    Columns: ``fetch_id, dag_run_id, group_number, batch_number, fetched_at, rows_received,
    rows_stored, rows_duplicate, rows_rejected, label_scheme, payload_sha256``.
    """
    columns = [
        "id",
        "dag_run_id",
        "group_number",
        "batch_number",
        "fetched_at",
        "rows_received",
        "rows_stored",
        "rows_duplicate",
        "rows_rejected",
        "label_scheme",
        "payload_sha256",
    ]
    table = Fetch.__table__
    with engine.connect() as connection:
        rows = connection.execute(select(*(table.c[c] for c in columns)).order_by(table.c.id.desc())).all()
    return pd.DataFrame(rows, columns=["fetch_id", *columns[1:]])


def rows_per_batch(engine: Engine) -> pd.DataFrame:
    """Per batch number: fetches, rows received, new observations, duplicates and rejects.

    Columns: ``batch_number, fetches, rows_received, rows_stored, rows_duplicate, rows_rejected``.
    ``rows_stored`` counts observations first seen in that batch (each observation counts once overall).
    """
    query = (
        select(
            Fetch.batch_number,
            func.count(Fetch.id),
            func.sum(Fetch.rows_received),
            func.sum(Fetch.rows_stored),
            func.sum(Fetch.rows_duplicate),
            func.sum(Fetch.rows_rejected),
        )
        .group_by(Fetch.batch_number)
        .order_by(Fetch.batch_number)
    )
    columns = ["batch_number", "fetches", "rows_received", "rows_stored", "rows_duplicate", "rows_rejected"]
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).all(), columns=columns)
    return frame.astype("int64")


def class_distribution(engine: Engine) -> pd.DataFrame:
    """Distinct observations per cover type: columns ``Cover_Type, name, observations, times_seen``."""
    query = (
        select(Observation.Cover_Type, func.count(Observation.id), func.sum(Observation.times_seen))
        .group_by(Observation.Cover_Type)
        .order_by(Observation.Cover_Type)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=[LABEL_COLUMN, "observations", "times_seen"]).astype("int64")
    frame.insert(1, "name", frame[LABEL_COLUMN].map(COVER_TYPE_NAMES))
    return frame


def rejects_by_reason(engine: Engine) -> pd.DataFrame:
    """Rejected rows per reason: columns ``reason, rows``."""
    query = (
        select(RejectedRowRecord.reason, func.count(RejectedRowRecord.id))
        .group_by(RejectedRowRecord.reason)
        .order_by(RejectedRowRecord.reason)
    )
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).all(), columns=["reason", "rows"])


def rejected_rows(engine: Engine, limit: int = 100) -> pd.DataFrame:
    """The most recent rejected rows, newest first.

    Columns: ``dag_run_id, batch_number, position, reason, detail, raw_row``.
    """
    query = (
        select(
            Fetch.dag_run_id,
            Fetch.batch_number,
            RejectedRowRecord.position,
            RejectedRowRecord.reason,
            RejectedRowRecord.detail,
            RejectedRowRecord.raw_row,
        )
        .join(Fetch, Fetch.id == RejectedRowRecord.fetch_id)
        .order_by(RejectedRowRecord.id.desc())
        .limit(limit)
    )
    columns = ["dag_run_id", "batch_number", "position", "reason", "detail", "raw_row"]
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).all(), columns=columns)


def repeat_counts(engine: Engine) -> pd.DataFrame:
    """How often observations were served: columns ``times_seen, observations`` (1 = seen once)."""
    query = (
        select(Observation.times_seen, func.count(Observation.id))
        .group_by(Observation.times_seen)
        .order_by(Observation.times_seen)
    )
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).all(), columns=["times_seen", "observations"]).astype("int64")


# What a collection is made of: a data DB that has these has collected data (the other tables came later,
# and a DB created by an earlier release has them only after the pipeline's next run).
COLLECTION_TABLES = ("fetches", "observations", "observation_sightings", "rejected_rows")


def table_counts(engine: Engine) -> dict[str, int]:
    """Row count of every table of the store that exists (for tests, logs and the UI's overview)."""
    present = set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        return {
            table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in Base.metadata.sorted_tables
            if table.name in present
        }
