"""Parsing of data API payloads: every reject reason, label normalisation, no good row lost."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from covertype import store
from covertype.parsing import LabelScheme, RejectReason, parse_payload_rows
from covertype.schema import EXAMPLE_OBSERVATION, FEATURE_COLUMNS, LABEL_COLUMN, RAW_COLUMNS

GOOD_ROW = ["2596", "51", "3", "258", "0", "510", "221", "232", "148", "6279", "Rawah", "C7745", "5"]


def with_field(column: str, value: str, row: list[str] = GOOD_ROW) -> list[str]:
    changed = list(row)
    changed[RAW_COLUMNS.index(column)] = value
    return changed


def test_good_row_is_typed() -> None:
    parsed = parse_payload_rows([GOOD_ROW])
    assert parsed.rejected == []
    assert parsed.rows == [{**EXAMPLE_OBSERVATION, "Cover_Type": 5}]


@pytest.mark.parametrize(
    ("bad_row", "reason", "detail_part"),
    [
        (GOOD_ROW[:-1], RejectReason.WRONG_FIELD_COUNT, "got 12"),
        (GOOD_ROW[:3], RejectReason.WRONG_FIELD_COUNT, "got 3"),
        ([*GOOD_ROW, "x"], RejectReason.WRONG_FIELD_COUNT, "got 14"),
        ("not a row", RejectReason.WRONG_FIELD_COUNT, "got 'not a row' (not a list)"),
        (None, RejectReason.WRONG_FIELD_COUNT, "got None (not a list)"),
        (with_field("Slope", "steep"), RejectReason.NON_NUMERIC, "Slope"),
        (with_field("Elevation", "2596.5"), RejectReason.NON_NUMERIC, "not an integer"),
        (with_field("Elevation", "nan"), RejectReason.NON_NUMERIC, "Elevation"),
        # float() reads these too; no data source means them as numbers.
        (with_field("Elevation", "2_596"), RejectReason.NON_NUMERIC, "Elevation: '2_596' is not a number"),
        (with_field("Elevation", "\uff12\uff15\uff19\uff16"), RejectReason.NON_NUMERIC, "is not a number"),
        (with_field("Elevation", "2.596e3"), RejectReason.NON_NUMERIC, "Elevation: '2.596e3' is not a number"),
        (with_field("Elevation", "infinity"), RejectReason.NON_NUMERIC, "is not a number"),
        (with_field("Cover_Type", "0_5"), RejectReason.NON_NUMERIC, "Cover_Type: '0_5' is not a number"),
        (with_field("Hillshade_9am", "256"), RejectReason.OUT_OF_RANGE, "Hillshade_9am: 256 is outside 0..255"),
        (with_field("Aspect", "-1"), RejectReason.OUT_OF_RANGE, "Aspect"),
        (with_field("Wilderness_Area", "Comanche"), RejectReason.UNKNOWN_CATEGORY, "Wilderness_Area"),
        (with_field("Soil_Type", "C9999"), RejectReason.UNKNOWN_CATEGORY, "Soil_Type: 'C9999'"),
        # Quoted as sent: a JSON null or a number must not read as the strings 'None' or '7745'.
        (with_field("Wilderness_Area", None), RejectReason.UNKNOWN_CATEGORY, "Wilderness_Area: None is not one of"),
        (with_field("Soil_Type", 7745), RejectReason.UNKNOWN_CATEGORY, "Soil_Type: 7745 is not a known ELU code"),
        (with_field("Cover_Type", "8"), RejectReason.UNKNOWN_LABEL, "Cover_Type: 8"),
        (with_field("Cover_Type", "abc"), RejectReason.NON_NUMERIC, "Cover_Type"),
    ],
)
def test_every_reject_reason_keeps_row_position_and_the_good_rows(
    bad_row: list[str], reason: RejectReason, detail_part: str
) -> None:
    parsed = parse_payload_rows([GOOD_ROW, bad_row, GOOD_ROW])
    assert len(parsed.rows) == 2
    [rejected] = parsed.rejected
    assert rejected.position == 1
    assert rejected.reason is reason
    assert detail_part in rejected.detail
    assert rejected.row == bad_row  # as sent, a row that is not a list too


@pytest.mark.parametrize("column", ["Elevation", "Wilderness_Area", "Soil_Type"])
def test_a_huge_bad_value_is_quoted_short_and_kept_whole_in_the_row(column: str) -> None:
    """A reason must fit its column (TEXT, 64 KB on MySQL) whatever was sent; the row keeps every byte."""
    huge = "x" * 70_000
    [rejected] = parse_payload_rows([with_field(column, huge)]).rejected
    assert len(rejected.detail) < 200
    assert "70002 characters" in rejected.detail  # the length of the quoted value
    assert rejected.row[RAW_COLUMNS.index(column)] == huge


def test_integral_float_strings_and_whitespace_are_accepted() -> None:
    row = with_field("Elevation", " 2596.0 ")
    assert parse_payload_rows([row]).rows[0]["Elevation"] == 2596
    assert parse_payload_rows([with_field("Elevation", "+2596.")]).rows[0]["Elevation"] == 2596


def test_json_numbers_are_accepted_and_a_huge_integer_is_out_of_range_not_a_crash() -> None:
    """A source may send JSON numbers: ints of any size, and integral floats. ``fetch`` passes integers
    beyond 64 bits on as digit strings (``store.strict_json``): those are out of range too, quoted short."""
    row: list[object] = [2596, 51.0, *GOOD_ROW[2:-1], 5]
    assert parse_payload_rows([row]).rows == [{**EXAMPLE_OBSERVATION, "Cover_Type": 5}]
    for huge in ([10**400, *GOOD_ROW[1:]], [1e300, *GOOD_ROW[1:]], *store.strict_json([[10**400, *GOOD_ROW[1:]]])):
        [rejected] = parse_payload_rows([huge]).rejected
        assert rejected.reason is RejectReason.OUT_OF_RANGE, rejected
        assert len(rejected.detail) < 150
    assert store.strict_json([[10**400]]) == [[str(10**400)]], "what fetch passes on"
    [label] = parse_payload_rows([with_field("Cover_Type", "9" * 5000)]).rejected
    assert label.reason is RejectReason.OUT_OF_RANGE


def test_leading_zeros_of_any_length_are_read() -> None:
    """Python's int() refuses strings of more than 4,300 digits: zeros included, one field would sink the payload."""
    zeros = "0" * 5000
    padded = parse_payload_rows([with_field("Elevation", zeros + "2596"), with_field("Cover_Type", f"+{zeros}9")])
    assert padded.rows[0]["Elevation"] == 2596
    [label] = padded.rejected
    assert label.reason is RejectReason.UNKNOWN_LABEL
    assert label.detail.startswith("Cover_Type: 9 is not a cover type")


def test_one_based_labels_stay() -> None:
    rows = [with_field("Cover_Type", str(label)) for label in range(1, 8)]
    parsed = parse_payload_rows(rows)
    assert parsed.label_scheme is LabelScheme.ONE_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == list(range(1, 8))


def test_zero_based_labels_are_shifted_once_per_payload() -> None:
    rows = [with_field("Cover_Type", str(label)) for label in range(7)]
    parsed = parse_payload_rows(rows)
    assert parsed.label_scheme is LabelScheme.ZERO_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == list(range(1, 8))
    assert parsed.rejected == []


def test_a_payload_with_both_0_and_7_is_one_based_and_rejects_the_0() -> None:
    rows = [with_field("Cover_Type", "0"), with_field("Cover_Type", "7")]
    parsed = parse_payload_rows(rows)
    assert parsed.label_scheme is LabelScheme.ONE_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == [7]
    assert [(r.position, r.reason) for r in parsed.rejected] == [(0, RejectReason.UNKNOWN_LABEL)]


def test_a_garbage_row_is_no_evidence_of_the_numbering() -> None:
    """A row of zeros is rejected anyway: its label 0 must not make the good 1..7 rows read as 0..6."""
    rows = [*labelled([1, 2, 5] * 50), ["0"] * len(RAW_COLUMNS)]
    parsed = parse_payload_rows(rows)
    assert parsed.label_scheme is LabelScheme.ONE_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == [1, 2, 5] * 50
    assert [(r.position, r.reason) for r in parsed.rejected] == [(150, RejectReason.UNKNOWN_CATEGORY)]


def test_a_stray_7_in_a_first_0_to_6_payload_is_rejected_not_a_reason_to_shift() -> None:
    """More 0s than 7s: the payload is 0..6 and the lone 7 is the odd one out."""
    labels = [0, 1, 4, 6] * 40 + [7]
    parsed = parse_payload_rows(labelled(labels))
    assert parsed.label_scheme is LabelScheme.ZERO_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == [label + 1 for label in labels[:-1]]
    assert [(r.position, r.reason) for r in parsed.rejected] == [(160, RejectReason.UNKNOWN_LABEL)]


def labelled(labels: list[int]) -> list[list[str]]:
    return [with_field("Cover_Type", str(label)) for label in labels]


@pytest.mark.parametrize(
    ("collection", "labels", "expected"),
    [
        # A slice without the telling label keeps the collection's numbering.
        (LabelScheme.ZERO_BASED, [1, 2, 3, 4, 5] * 30, LabelScheme.ZERO_BASED),
        (LabelScheme.ONE_BASED, [1, 2, 3, 4, 5] * 30, LabelScheme.ONE_BASED),
        # One stray label the collection's numbering forbids: that row is rejected, the rest is not shifted.
        (LabelScheme.ONE_BASED, [1, 2, 5] * 50 + [0], LabelScheme.ONE_BASED),
        (LabelScheme.ZERO_BASED, [0, 1, 4] * 50 + [7], LabelScheme.ZERO_BASED),
        # Common, with the other label absent: the source changed its numbering, the payload's own wins.
        (LabelScheme.ONE_BASED, [0, 1, 2, 5] * 40, LabelScheme.ZERO_BASED),
        (LabelScheme.ZERO_BASED, [1, 2, 7] * 40, LabelScheme.ONE_BASED),
        # Common but with the other label present too: the collection's numbering, the odd ones rejected.
        (LabelScheme.ONE_BASED, [0, 1, 7] * 40, LabelScheme.ONE_BASED),
    ],
)
def test_the_collections_numbering_decides_unless_the_payload_clearly_shows_another(
    collection: LabelScheme, labels: list[int], expected: LabelScheme
) -> None:
    parsed = parse_payload_rows(labelled(labels), collection)
    assert parsed.label_scheme is expected
    shift = 1 if expected is LabelScheme.ZERO_BASED else 0
    impossible = 7 if expected is LabelScheme.ZERO_BASED else 0
    assert [row[LABEL_COLUMN] for row in parsed.rows] == [label + shift for label in labels if label != impossible]
    assert {r.reason for r in parsed.rejected} <= {RejectReason.UNKNOWN_LABEL}
    assert len(parsed.rejected) == labels.count(impossible)


def test_zero_based_payload_rejects_label_7_instead_of_guessing() -> None:
    # 0 present, no 7: zero-based; a 6 maps to 7 and a stray -1 is refused, not shifted to 0.
    rows = [with_field("Cover_Type", "0"), with_field("Cover_Type", "6"), with_field("Cover_Type", "-1")]
    parsed = parse_payload_rows(rows)
    assert parsed.label_scheme is LabelScheme.ZERO_BASED
    assert [row[LABEL_COLUMN] for row in parsed.rows] == [1, 7]
    assert [r.reason for r in parsed.rejected] == [RejectReason.UNKNOWN_LABEL]


def test_the_whole_shared_dataset_parses_without_rejects(covertype_csv: Path) -> None:
    with covertype_csv.open(newline="") as handle:
        reader = csv.reader(handle)
        assert tuple(next(reader)) == RAW_COLUMNS
        raw_rows = list(reader)
    parsed = parse_payload_rows(raw_rows)
    assert parsed.rejected == []
    assert len(parsed.rows) == 15120
    assert set(parsed.rows[0]) == {*FEATURE_COLUMNS, LABEL_COLUMN}
    assert {row[LABEL_COLUMN] for row in parsed.rows} == set(range(1, 8))


def test_rows_with_a_field_too_many_are_no_evidence_of_the_numbering() -> None:
    rows = [*labelled([1, 2, 5] * 10), [*GOOD_ROW, "0"], [*GOOD_ROW, "0"]]
    assert parse_payload_rows(rows).label_scheme is LabelScheme.ONE_BASED
