"""Turn a data API payload (rows of 13 strings) into typed rows and rejected rows.

A bad row never sinks its payload: it becomes a ``RejectedRow`` with its
position and the reason, and the good rows of the same payload go on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from covertype.schema import (
    COVER_TYPE_LABELS,
    LABEL_COLUMN,
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    SOIL_CODES,
    SOIL_COLUMN,
    WILDERNESS_AREAS,
    WILDERNESS_COLUMN,
)


class RejectReason(StrEnum):
    """Why a raw row was not accepted; stored with the row."""

    WRONG_FIELD_COUNT = "wrong_field_count"
    NON_NUMERIC = "non_numeric"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    UNKNOWN_LABEL = "unknown_label"


class LabelScheme(StrEnum):
    """How a payload numbers its cover types; decided once per payload."""

    ONE_BASED = "1..7"
    ZERO_BASED = "0..6"


@dataclass(frozen=True)
class RejectedRow:
    """A raw row that could not be used, kept with where it was and why."""

    position: int
    row: Any  # the row's fields, or what was sent in its place (not a list) as it was
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class ParsedPayload:
    """The outcome of parsing one payload: typed rows, rejects and the label scheme seen."""

    rows: list[dict[str, int | str]] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    label_scheme: LabelScheme = LabelScheme.ONE_BASED


class RowError(ValueError):
    """One field of one row is invalid; carries the reject reason."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# How much of a bad value a reject reason quotes; the whole row is kept as sent in ``raw_row``.
SHOWN_VALUE_CHARS = 60


def _shown(value: Any) -> str:
    """``repr(value)``, cut short: a reason stays readable, and fits its column, whatever was sent."""
    text = repr(value)
    if len(text) <= SHOWN_VALUE_CHARS:
        return text
    return f"{text[:SHOWN_VALUE_CHARS]}... ({len(text)} characters)"


# A number as the data API writes one: ASCII digits, an optional sign and decimals. Python's float()
# also reads "2_596", full-width digits, "2.596e3", "inf" and "nan": not what a source means to send.
_DECIMAL = re.compile(r"(?P<integer>[+-]?[0-9]+)(?:\.(?P<fraction>[0-9]*))?", re.ASCII)
# No field's range comes near this: a larger number is refused before it is converted or quoted whole.
_LARGEST = 10**18


def parse_integer(column_name: str, raw_value: Any) -> int:
    """Parse an integer field that may arrive as a string ("12"), an int or an integral float ("12.0").

    Integers beyond 64 bits arrive as digit strings (``store.strict_json``, as Airflow and MySQL need),
    so strings are read as integers, not through ``float``: a huge one is out of range, not "no integer".
    """
    if isinstance(raw_value, bool):
        raise RowError(RejectReason.NON_NUMERIC, f"{column_name}: {_shown(raw_value)} is not a number")
    if isinstance(raw_value, float):
        if not math.isfinite(raw_value) or not raw_value.is_integer():
            raise RowError(RejectReason.NON_NUMERIC, f"{column_name}: {_shown(raw_value)} is not an integer")
        number = int(raw_value)
    elif isinstance(raw_value, int):
        number = raw_value
    else:
        match = _DECIMAL.fullmatch(raw_value.strip()) if isinstance(raw_value, str) else None
        if match is None:
            raise RowError(RejectReason.NON_NUMERIC, f"{column_name}: {_shown(raw_value)} is not a number")
        if (match["fraction"] or "").strip("0"):
            raise RowError(RejectReason.NON_NUMERIC, f"{column_name}: {_shown(raw_value)} is not an integer")
        sign, digits = ("-" if match["integer"].startswith("-") else ""), match["integer"].lstrip("+-").lstrip("0")
        if len(digits) > len(str(_LARGEST)):
            raise RowError(RejectReason.OUT_OF_RANGE, f"{column_name}: {_shown(raw_value)} is out of range")
        number = int(sign + (digits or "0"))  # zeros dropped: int() refuses strings of more than 4,300 digits
    if abs(number) >= _LARGEST:
        raise RowError(RejectReason.OUT_OF_RANGE, f"{column_name}: {_shown(raw_value)} is out of range")
    return number


def parse_features(raw_row: Sequence[Any]) -> dict[str, int | str]:
    """Parse the 12 feature fields of a raw row (the label, if present, is ignored here)."""
    features: dict[str, int | str] = {}
    for index, column in enumerate(NUMERIC_COLUMNS):
        value = parse_integer(column.name, raw_row[index])
        if not column.minimum <= value <= column.maximum:
            raise RowError(
                RejectReason.OUT_OF_RANGE,
                f"{column.name}: {value} is outside {column.minimum}..{column.maximum}",
            )
        features[column.name] = value
    # The value as sent in the reason: a JSON null or a number must not read as the string "None" or "1".
    raw_wilderness, raw_soil = raw_row[len(NUMERIC_COLUMNS)], raw_row[len(NUMERIC_COLUMNS) + 1]
    wilderness = str(raw_wilderness).strip()
    if wilderness not in WILDERNESS_AREAS:
        raise RowError(
            RejectReason.UNKNOWN_CATEGORY,
            f"{WILDERNESS_COLUMN}: {_shown(raw_wilderness)} is not one of {', '.join(WILDERNESS_AREAS)}",
        )
    features[WILDERNESS_COLUMN] = wilderness
    soil = str(raw_soil).strip()
    if soil not in SOIL_CODES:
        raise RowError(RejectReason.UNKNOWN_CATEGORY, f"{SOIL_COLUMN}: {_shown(raw_soil)} is not a known ELU code")
    features[SOIL_COLUMN] = soil
    return features


# A payload's own numbering overrides the collection's only when the label that is impossible under
# the collection's numbering is common in it (the source changed), not a stray bad label.
OVERRIDE_SHARE = 0.05


def detect_label_scheme(labels: Sequence[int], collection_scheme: LabelScheme | None = None) -> LabelScheme:
    """Decide once for the whole payload, from its rows' integer labels, whether they are 1..7 or 0..6.

    Only the labels of rows whose features are valid count: a garbage row
    (say, all zeros) is rejected anyway and must not decide how the good rows
    are read. Alone (the first payload), a payload is 0-based only if it
    contains more 0s than 7s (one stray 7 among a 0..6 payload's rows is
    rejected, not taken for a reason to shift every row); otherwise it is
    taken as the course's 1..7. Once earlier payloads
    have shown the collection's numbering (``collection_scheme``), it is kept
    for a payload that shows neither 0 nor 7 (a slice without that cover
    type would otherwise be read wrongly), and for one where the label it
    makes impossible is rare (those rows are rejected, not the whole payload
    shifted). Only a payload where that label is common (at least
    ``OVERRIDE_SHARE`` of its rows) and the other one absent uses its own
    numbering. Deciding per payload, never per row, keeps a lone bad label from
    being silently shifted into a valid class.
    """
    return label_scheme_of_counts(labels.count(0), labels.count(7), len(labels), collection_scheme)


def label_scheme_of_counts(
    zeros: int, sevens: int, labelled: int, collection_scheme: LabelScheme | None = None
) -> LabelScheme:
    """The rule of ``detect_label_scheme`` on label counts: how many 0s, how many 7s, out of how many labels.

    The data API replica decides its whole dataset file with it, from a pandas column.
    """
    if collection_scheme is None:
        return LabelScheme.ZERO_BASED if zeros > sevens else LabelScheme.ONE_BASED
    impossible, telling = (zeros, sevens) if collection_scheme is LabelScheme.ONE_BASED else (sevens, zeros)
    if impossible >= max(1.0, OVERRIDE_SHARE * labelled) and not telling:
        return LabelScheme.ZERO_BASED if collection_scheme is LabelScheme.ONE_BASED else LabelScheme.ONE_BASED
    return collection_scheme


def normalise_label(label: int, scheme: LabelScheme) -> int:
    """Map a label of the payload's scheme to 1..7, or raise ``RowError``."""
    normalised = label + 1 if scheme is LabelScheme.ZERO_BASED else label
    if normalised not in COVER_TYPE_LABELS:
        raise RowError(
            RejectReason.UNKNOWN_LABEL,
            f"{LABEL_COLUMN}: {label} is not a cover type of the payload's {scheme.value} labels",
        )
    return normalised


def _as_fields(raw_row: Any) -> list[Any] | None:
    """The row as a list of fields, or None when the payload sent something that is not a row."""
    if isinstance(raw_row, Sequence) and not isinstance(raw_row, str):
        return list(raw_row)
    return None


def _row_features(raw_row: Any) -> tuple[list[Any], dict[str, int | str]]:
    """The row's fields and its typed features, or ``RowError`` (the label is not read here)."""
    fields = _as_fields(raw_row)
    if fields is None:
        raise RowError(
            RejectReason.WRONG_FIELD_COUNT, f"expected {len(RAW_COLUMNS)} fields, got {_shown(raw_row)} (not a list)"
        )
    if len(fields) != len(RAW_COLUMNS):
        raise RowError(RejectReason.WRONG_FIELD_COUNT, f"expected {len(RAW_COLUMNS)} fields, got {len(fields)}")
    return fields, parse_features(fields)


def parse_row(raw_row: Any, scheme: LabelScheme) -> dict[str, int | str]:
    """Parse one labelled raw row into a typed record, or raise ``RowError``."""
    fields, record = _row_features(raw_row)
    record[LABEL_COLUMN] = normalise_label(parse_integer(LABEL_COLUMN, fields[-1]), scheme)
    return record


def parse_payload_rows(raw_rows: Sequence[Any], collection_scheme: LabelScheme | None = None) -> ParsedPayload:
    """Parse every row of a payload; never raises for a bad row.

    Each row's features and integer label are read once; the labels of the rows
    whose features are valid then decide the numbering (``detect_label_scheme``),
    and each of those labels is normalised under it. ``collection_scheme`` is the
    label numbering earlier payloads showed.
    """
    rejected: list[RejectedRow] = []
    labelled: list[tuple[int, list[Any], dict[str, int | str], int]] = []
    for position, raw_row in enumerate(raw_rows):
        try:
            fields, features = _row_features(raw_row)
            label = parse_integer(LABEL_COLUMN, fields[-1])
        except RowError as error:
            kept = _as_fields(raw_row)
            rejected.append(RejectedRow(position, kept if kept is not None else raw_row, error.reason, error.detail))
            continue
        labelled.append((position, fields, features, label))
    scheme = detect_label_scheme([label for *_, label in labelled], collection_scheme)
    rows: list[dict[str, int | str]] = []
    for position, fields, record, label in labelled:
        try:
            record[LABEL_COLUMN] = normalise_label(label, scheme)
        except RowError as error:
            rejected.append(RejectedRow(position, fields, error.reason, error.detail))
            continue
        rows.append(record)
    rejected.sort(key=lambda row: row.position)
    return ParsedPayload(rows=rows, rejected=rejected, label_scheme=scheme)
