"""The domain features: values, shape, and behaviour on one row and on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covertype.features import ENGINEERED_NAMES, OUTPUT_NAMES, DomainFeatures, domain_features
from covertype.schema import FEATURE_COLUMNS, SOIL_CODES, WILDERNESS_AREAS


def _row(**overrides: object) -> pd.DataFrame:
    values: dict[str, object] = {
        "Elevation": 3000,
        "Aspect": 90,
        "Slope": 10,
        "Horizontal_Distance_To_Hydrology": 300,
        "Vertical_Distance_To_Hydrology": 40,
        "Horizontal_Distance_To_Roadways": 1000,
        "Hillshade_9am": 220,
        "Hillshade_Noon": 230,
        "Hillshade_3pm": 140,
        "Horizontal_Distance_To_Fire_Points": 700,
        "Wilderness_Area": "Commanche",
        "Soil_Type": "C7745",
    }
    values.update(overrides)
    return pd.DataFrame([values], columns=list(FEATURE_COLUMNS))


def _feature(matrix: np.ndarray, name: str) -> float:
    return float(matrix[0, OUTPUT_NAMES.index(name)])


def test_engineered_values_on_one_row() -> None:
    """Every engineered column against a hand-computed value; the inputs make each value distinct from the
    others, so swapped or sign-flipped columns cannot pass."""
    row = _row(
        Aspect=30, Horizontal_Distance_To_Fire_Points=650, Horizontal_Distance_To_Roadways=1100, Soil_Type="C4703"
    )
    matrix = domain_features(row)
    assert matrix.shape == (1, len(OUTPUT_NAMES))
    hydro, fire, road = 300, 650, 1100
    expected = {
        "Elevation_Minus_Vertical_Hydrology": 3000 - 40,
        "Elevation_Minus_Horizontal_Hydrology": 3000 - 0.2 * hydro,
        "Hydrology_Euclidean_Distance": np.hypot(hydro, 40),
        "Hydrology_Plus_Fire": 950,
        "Hydrology_Minus_Fire": -350,
        "Hydrology_Minus_Fire_Abs": 350,
        "Hydrology_Plus_Road": 1400,
        "Hydrology_Minus_Road": -800,
        "Hydrology_Minus_Road_Abs": 800,
        "Fire_Plus_Road": 1750,
        "Fire_Minus_Road": -450,
        "Fire_Minus_Road_Abs": 450,
        "Fire_Plus_Road_Minus_Hydrology": fire + road - hydro,
        "Hydrology_Plus_Road_Minus_Fire": hydro + road - fire,
        "Hydrology_Plus_Fire_Minus_Road": hydro + fire - road,
        "Aspect_Sin": 0.5,
        "Aspect_Cos": np.sqrt(3) / 2,
        # C4703: climatic zone 4 (montane), geologic zone 7 (igneous and metamorphic); 10th of the 40 soils.
        "Soil_Index": 9,
        "Soil_Climatic_Zone": 4,
        "Soil_Geologic_Zone": 7,
    }
    assert set(expected) == set(ENGINEERED_NAMES)
    assert {name: _feature(matrix, name) for name in expected} == pytest.approx(expected)
    assert [_feature(matrix, name) for name in ("Elevation", "Aspect", "Slope")] == [3000, 30, 10]
    assert "Hillshade_9am" not in OUTPUT_NAMES
    assert _feature(matrix, "Wilderness_Commanche") == 1
    assert sum(_feature(matrix, f"Wilderness_{name}") for name in WILDERNESS_AREAS) == 1
    assert sum(_feature(matrix, f"Soil_{code}") for code in SOIL_CODES) == 1
    assert _feature(matrix, "Soil_C4703") == 1
    assert SOIL_CODES.index("C4703") == 9


def test_aspect_is_circular() -> None:
    north, also_north = domain_features(_row(Aspect=0)), domain_features(_row(Aspect=360))
    for name in ("Aspect_Sin", "Aspect_Cos"):
        assert _feature(north, name) == pytest.approx(_feature(also_north, name), abs=1e-12)


def test_batch_equals_row_by_row(shared_observations: pd.DataFrame) -> None:
    frame = shared_observations.loc[:, list(FEATURE_COLUMNS)].head(200)
    batch = domain_features(frame)
    rows = np.vstack([domain_features(frame.iloc[[i]]) for i in range(len(frame))])
    np.testing.assert_array_equal(batch, rows)
    assert np.isfinite(batch).all()


def test_unknown_category_or_missing_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Soil_Type: unknown value 'C0000'"):
        domain_features(_row(Soil_Type="C0000"))
    with pytest.raises(ValueError, match="Wilderness_Area: unknown value 'Comanche'"):
        domain_features(_row(Wilderness_Area="Comanche"))
    with pytest.raises(ValueError, match="missing raw-format columns: Slope"):
        domain_features(_row().drop(columns=["Slope"]))


def test_transformer_is_stateless_and_names_its_outputs() -> None:
    transformer = DomainFeatures().fit(_row())
    assert transformer.get_feature_names_out().tolist() == list(OUTPUT_NAMES)
    np.testing.assert_array_equal(transformer.transform(_row()), DomainFeatures().transform(_row()))
