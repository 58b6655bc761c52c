"""The dataset the replica serves: load and validate a raw-format CSV, or build one from UCI.

Validation happens once at start-up and is strict: a replica that served a
malformed file would make every downstream failure look like a pipeline bug.
The rules are those of ``covertype.parsing`` (the consumer's), so a file the
replica accepts is a file the DAG accepts.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covertype.parsing import LabelScheme, RejectReason, RowError, label_scheme_of_counts, parse_row
from covertype.schema import (
    LABEL_COLUMN,
    NUMERIC_COLUMN_NAMES,
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    SOIL_CODES,
    SOIL_COLUMN,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
)
from data_api.batches import N_BATCHES
from data_api.settings import DataApiSettings

# A child of uvicorn's logger, so that start-up messages show with uvicorn's own configuration.
logger = logging.getLogger("uvicorn.error.data_api")

ZERO_BASED_LABELS = frozenset(range(7))
ONE_BASED_LABELS = frozenset(range(1, 8))


class DatasetError(RuntimeError):
    """The dataset cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class Dataset:
    """A validated raw-format table: integer numerics, category names, labels as in the file."""

    source: Path
    frame: pd.DataFrame

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def rows_as_strings(self, positions: Sequence[int] | np.ndarray) -> list[list[str]]:
        """The rows at ``positions`` as lists of 13 strings: the API sends every value as a string."""
        return self.frame.iloc[positions].astype(str).to_numpy().tolist()


# --- Loading a raw-format CSV -------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"dataset {path}: file not found (COVERTYPE_CSV must name a raw-format CSV)")
    if not path.is_file():
        raise DatasetError(f"dataset {path}: not a regular file")


def _check_header(path: Path, header: list[str]) -> None:
    names = [name.strip() for name in header]
    if names != list(RAW_COLUMNS):
        raise DatasetError(
            f"dataset {path}: the header must be the {len(RAW_COLUMNS)} raw-format columns "
            f"{','.join(RAW_COLUMNS)}; found {len(names)} columns: {','.join(names)}"
        )


def _check_layout(path: Path) -> None:
    """The header, then 13 fields on every line; a streaming pass, as pandas pads a short row silently."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            _check_header(path, next(reader, []))
            for fields in reader:
                if fields and len(fields) != len(RAW_COLUMNS):
                    raise DatasetError(
                        f"dataset {path}: line {reader.line_num} has {len(fields)} fields, "
                        f"expected {len(RAW_COLUMNS)} ({RejectReason.WRONG_FIELD_COUNT.value})"
                    )
    except (UnicodeDecodeError, csv.Error, OSError) as error:
        raise DatasetError(f"dataset {path}: cannot be read as CSV: {error}") from error


def _read_csv(path: Path) -> pd.DataFrame:
    _check_file(path)
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset {path}: the file is empty (expected a header and rows)")
    _check_layout(path)
    try:
        # pandas parses clean integer columns natively (fast); a column with a bad value stays text or float.
        return pd.read_csv(
            path,
            dtype={WILDERNESS_COLUMN: str, SOIL_COLUMN: str},
            keep_default_na=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise DatasetError(f"dataset {path}: not a well-formed CSV: {error}") from error


def _label_scheme(labels: pd.Series) -> LabelScheme:
    """The file's label numbering, decided once for the whole file by ``covertype.parsing``'s rule."""
    seen = labels.dropna()
    return label_scheme_of_counts(int((seen == 0).sum()), int((seen == 7).sum()), len(seen))


def _typed(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, LabelScheme]:
    """The table with integer columns, a mask of the rows that break a rule, and the label scheme."""
    typed = pd.DataFrame(index=frame.index)
    bad = pd.Series(False, index=frame.index)
    for column in (*NUMERIC_COLUMNS, LABEL_COLUMN):
        name = column if isinstance(column, str) else column.name
        values = frame[name]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            values = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
        integral = values.notna() & np.isfinite(values) & (values == values.round())
        bad |= ~integral
        if not isinstance(column, str):
            bad |= ~values.between(column.minimum, column.maximum)
        typed[name] = values.where(integral, 0).astype("int64")
    typed[WILDERNESS_COLUMN] = frame[WILDERNESS_COLUMN].str.strip()
    typed[SOIL_COLUMN] = frame[SOIL_COLUMN].str.strip()
    bad |= ~typed[WILDERNESS_COLUMN].isin(WILDERNESS_AREAS) | ~typed[SOIL_COLUMN].isin(SOIL_CODES)
    scheme = _label_scheme(typed[LABEL_COLUMN].where(~bad))
    allowed = ZERO_BASED_LABELS if scheme is LabelScheme.ZERO_BASED else ONE_BASED_LABELS
    bad |= ~typed[LABEL_COLUMN].isin(allowed)
    return typed[list(RAW_COLUMNS)], bad, scheme


def _data_row(path: Path, position: int) -> tuple[int, list[str]]:
    """The file line (1-based) and fields of data row ``position``: pandas skips blank lines, people count them."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        next(reader, None)  # the header
        data_rows = -1
        for fields in reader:
            if not fields:
                continue
            data_rows += 1
            if data_rows == position:
                return reader.line_num, fields
    raise DatasetError(f"dataset {path}: row {position} not found on a second read (was the file changed?)")


def _describe_bad_row(fields: list[str], scheme: LabelScheme) -> str:
    """The reason of ``covertype.parsing`` for one rejected row, so both sides word it the same."""
    try:
        parse_row(fields, scheme)
    except RowError as error:
        return f"{error.detail} ({error.reason.value})"
    return "the row breaks a rule of the raw format"


def load_raw_csv(path: Path) -> Dataset:
    """Read and validate a raw-format CSV; raise ``DatasetError`` naming the file and the problem."""
    frame = _read_csv(path)
    frame.columns = list(RAW_COLUMNS)
    if frame.empty:
        raise DatasetError(f"dataset {path}: the header is there but there are no rows")
    typed, bad, scheme = _typed(frame)
    if bad.any():
        positions = np.flatnonzero(bad.to_numpy())
        line, fields = _data_row(path, int(positions[0]))
        raise DatasetError(
            f"dataset {path}: {len(positions)} invalid row(s); first at line {line}: "
            f"{_describe_bad_row(fields, scheme)}"
        )
    if len(frame) < N_BATCHES:
        raise DatasetError(f"dataset {path}: {len(frame)} row(s); at least {N_BATCHES} are needed, one per batch")
    typed[WILDERNESS_COLUMN] = typed[WILDERNESS_COLUMN].astype("category")
    typed[SOIL_COLUMN] = typed[SOIL_COLUMN].astype("category")
    return Dataset(source=path, frame=typed.reset_index(drop=True))


# --- The UCI one-hot layout ---------------------------------------------------------------------


def _indexed_columns(frame: pd.DataFrame, prefix: str, expected: int) -> list[str]:
    """The one-hot columns of ``prefix`` in index order (UCI numbers them 1..n, sklearn 0..n-1)."""
    pattern = re.compile(rf"^{prefix}_?(\d+)$")
    found = sorted(
        ((int(match.group(1)), name) for name in frame.columns if (match := pattern.match(str(name)))),
    )
    if len(found) != expected:
        raise ValueError(f"expected {expected} one-hot columns {prefix}*, found {len(found)}")
    return [name for _, name in found]


def _one_hot_names(frame: pd.DataFrame, columns: list[str], names: tuple[str, ...], what: str) -> np.ndarray:
    block = frame[columns].to_numpy()
    if not np.isin(block, (0, 1)).all():
        raise ValueError(f"{what} one-hot columns hold values other than 0 and 1")
    hot = block.sum(axis=1)
    if (hot != 1).any():
        row = int(np.flatnonzero(hot != 1)[0])
        raise ValueError(f"row {row}: {hot[row]} {what} columns are set, expected exactly one")
    return np.asarray(names, dtype=object)[block.argmax(axis=1)]


def onehot_to_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert the UCI one-hot layout to the course's raw 13-column format, keeping row order.

    Accepts UCI/Kaggle column names (``Wilderness_Area1..4``, ``Soil_Type1..40``)
    and sklearn's (``Wilderness_Area_0..3``, ``Soil_Type_0..39``); an ``Id``
    column is dropped. Raises ``ValueError`` when the layout is not one-hot.
    """
    missing = [name for name in (*NUMERIC_COLUMN_NAMES, LABEL_COLUMN) if name not in frame.columns]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    raw = pd.DataFrame(index=frame.index)
    for name in (*NUMERIC_COLUMN_NAMES, LABEL_COLUMN):
        values = pd.to_numeric(frame[name])
        if not (values == values.round()).all():
            raise ValueError(f"column {name} holds non-integer values")
        raw[name] = values.astype("int64")
    wilderness = _indexed_columns(frame, "Wilderness_Area", len(WILDERNESS_AREAS))
    soil = _indexed_columns(frame, "Soil_Type", len(SOIL_CODES))
    raw[WILDERNESS_COLUMN] = _one_hot_names(frame, wilderness, WILDERNESS_AREAS, "wilderness")
    raw[SOIL_COLUMN] = _one_hot_names(frame, soil, SOIL_CODES, "soil")
    return raw[list(RAW_COLUMNS)].reset_index(drop=True)


def fetch_uci_onehot(data_home: Path) -> pd.DataFrame:
    """The full UCI Covertype table (581,012 rows, one-hot), downloaded by sklearn into ``data_home``."""
    from sklearn.datasets import fetch_covtype  # noqa: PLC0415 - heavy, and only needed without COVERTYPE_CSV

    return fetch_covtype(data_home=data_home, as_frame=True, download_if_missing=True).frame


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write then rename, so that a crash mid-write never leaves a truncated cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, path)


# --- Choosing the dataset -----------------------------------------------------------------------


# Named for both ways of running the replica: in the compose stack COVERTYPE_CSV comes from .env's
# DATA_API_COVERTYPE_CSV, and the file must be in the folder DATA_API_DATASET_DIR mounts.
_SERVE_A_LOCAL_CSV = (
    "serve a raw-format CSV: set COVERTYPE_CSV to its path (compose stack: DATA_API_DATASET_DIR=<its folder> and "
    "DATA_API_COVERTYPE_CSV=/data-in/<its name> in .env, then docker compose up -d)"
)


def _check_writable(directory: Path) -> None:
    """Fail before the download, naming the directory: sklearn's own error would pass for a failed download."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        raise DatasetError(
            f"state dir {directory}: the UCI download cannot be kept there ({error}); make DATA_API_STATE_DIR a "
            f"directory this user can write, or {_SERVE_A_LOCAL_CSV}"
        ) from error


def resolve_dataset(
    settings: DataApiSettings,
    fetch_onehot: Callable[[Path], pd.DataFrame] = fetch_uci_onehot,
) -> Dataset:
    """``COVERTYPE_CSV`` when set; otherwise the cached UCI conversion, downloading it the first time."""
    if settings.covertype_csv is not None:
        return load_raw_csv(settings.covertype_csv)
    cached = settings.cached_dataset_path
    if not cached.is_file():
        data_home = settings.data_api_state_dir / "sklearn"
        _check_writable(data_home)
        logger.info("COVERTYPE_CSV is not set: downloading the UCI Covertype dataset into %s", cached.parent)
        try:
            onehot = fetch_onehot(data_home)
        except OSError as error:  # URLError and HTTPError are OSErrors
            raise DatasetError(
                f"dataset {cached}: COVERTYPE_CSV is not set and the UCI download failed ({error}); "
                f"give the service internet access, or {_SERVE_A_LOCAL_CSV}"
            ) from error
        try:
            raw = onehot_to_raw(onehot)
        except ValueError as error:
            raise DatasetError(
                f"dataset {cached}: the downloaded UCI table is not one-hot as expected: {error}"
            ) from error
        try:
            write_csv_atomically(raw, cached)
        except OSError as error:
            raise DatasetError(f"dataset {cached}: the converted UCI table cannot be cached: {error}") from error
        logger.info("cached %d UCI rows in raw format at %s", len(raw), cached)
    return load_raw_csv(cached)
