"""The Predict form's prefilled examples are real rows of the shared data, with the cover type they claim."""

from __future__ import annotations

import pandas as pd

from covertype.parsing import parse_features
from covertype.schema import COVER_TYPE_LABELS, FEATURE_COLUMNS, LABEL_COLUMN
from ui.examples import DEFAULT_EXAMPLE, EXAMPLE_ROW_INDEX, EXAMPLES


def test_every_example_is_the_row_of_the_shared_csv_it_names(covertype_csv) -> None:
    frame = pd.read_csv(covertype_csv, dtype=str)
    assert set(EXAMPLES) == set(COVER_TYPE_LABELS)
    assert DEFAULT_EXAMPLE in EXAMPLES
    for cover_type, record in EXAMPLES.items():
        row = frame.iloc[EXAMPLE_ROW_INDEX[cover_type]]
        assert int(row[LABEL_COLUMN]) == cover_type
        assert parse_features([row[column] for column in FEATURE_COLUMNS]) == record
