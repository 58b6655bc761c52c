"""The raw-format schema of the Forest Covertype data, in one place.

Every part of the stack (the data API replica, the DAG, the inference service
and the UI) validates against these definitions, so a change here is a change
of the whole system's contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


@dataclass(frozen=True)
class NumericColumn:
    """A quantitative column with the physical range a real value can take."""

    name: str
    minimum: int
    maximum: int
    unit: str
    description: str


# Ranges are physical limits, wider than the observed UCI data, so that a
# plausible new observation is never refused but a unit or sign error is.
NUMERIC_COLUMNS: tuple[NumericColumn, ...] = (
    NumericColumn("Elevation", 0, 4500, "m", "Elevation"),
    NumericColumn("Aspect", 0, 360, "° azimuth", "Aspect"),
    NumericColumn("Slope", 0, 90, "°", "Slope"),
    NumericColumn("Horizontal_Distance_To_Hydrology", 0, 20000, "m", "Horizontal distance to nearest surface water"),
    NumericColumn("Vertical_Distance_To_Hydrology", -2000, 2000, "m", "Vertical distance to nearest surface water"),
    NumericColumn("Horizontal_Distance_To_Roadways", 0, 20000, "m", "Horizontal distance to nearest roadway"),
    NumericColumn("Hillshade_9am", 0, 255, "index", "Hillshade index at 9am, summer solstice"),
    NumericColumn("Hillshade_Noon", 0, 255, "index", "Hillshade index at noon, summer solstice"),
    NumericColumn("Hillshade_3pm", 0, 255, "index", "Hillshade index at 3pm, summer solstice"),
    NumericColumn(
        "Horizontal_Distance_To_Fire_Points",
        0,
        20000,
        "m",
        "Horizontal distance to nearest wildfire ignition point",
    ),
)
NUMERIC_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in NUMERIC_COLUMNS)
NUMERIC_BY_NAME: dict[str, NumericColumn] = {column.name: column for column in NUMERIC_COLUMNS}

WILDERNESS_COLUMN = "Wilderness_Area"
SOIL_COLUMN = "Soil_Type"
LABEL_COLUMN = "Cover_Type"

# The 12 features in raw-format order, then all 13 raw columns.
FEATURE_COLUMNS: tuple[str, ...] = (*NUMERIC_COLUMN_NAMES, WILDERNESS_COLUMN, SOIL_COLUMN)
RAW_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, LABEL_COLUMN)

# One-hot index 1..4 maps to these names, in this order. "Commanche" is the
# course data's spelling (UCI writes "Comanche"); we keep the data's spelling.
WILDERNESS_AREAS: tuple[str, ...] = ("Rawah", "Neota", "Commanche", "Cache")
WILDERNESS_DESCRIPTIONS: dict[str, str] = {
    "Rawah": "Rawah Wilderness Area",
    "Neota": "Neota Wilderness Area",
    "Commanche": "Comanche Peak Wilderness Area",
    "Cache": "Cache la Poudre Wilderness Area",
}

# USFS ELU code and UCI description of soil index 1..40, in index order.
SOIL_TYPES: tuple[tuple[str, str], ...] = (
    ("C2702", "Cathedral family - Rock outcrop complex, extremely stony."),
    ("C2703", "Vanet - Ratake families complex, very stony."),
    ("C2704", "Haploborolis - Rock outcrop complex, rubbly."),
    ("C2705", "Ratake family - Rock outcrop complex, rubbly."),
    ("C2706", "Vanet family - Rock outcrop complex complex, rubbly."),
    ("C2717", "Vanet - Wetmore families - Rock outcrop complex, stony."),
    ("C3501", "Gothic family."),
    ("C3502", "Supervisor - Limber families complex."),
    ("C4201", "Troutville family, very stony."),
    ("C4703", "Bullwark - Catamount families - Rock outcrop complex, rubbly."),
    ("C4704", "Bullwark - Catamount families - Rock land complex, rubbly."),
    ("C4744", "Legault family - Rock land complex, stony."),
    ("C4758", "Catamount family - Rock land - Bullwark family complex, rubbly."),
    ("C5101", "Pachic Argiborolis - Aquolis complex."),
    ("C5151", "unspecified in the USFS Soil and ELU Survey."),
    ("C6101", "Cryaquolis - Cryoborolis complex."),
    ("C6102", "Gateview family - Cryaquolis complex."),
    ("C6731", "Rogert family, very stony."),
    ("C7101", "Typic Cryaquolis - Borohemists complex."),
    ("C7102", "Typic Cryaquepts - Typic Cryaquolls complex."),
    ("C7103", "Typic Cryaquolls - Leighcan family, till substratum complex."),
    ("C7201", "Leighcan family, till substratum, extremely bouldery."),
    ("C7202", "Leighcan family, till substratum - Typic Cryaquolls complex."),
    ("C7700", "Leighcan family, extremely stony."),
    ("C7701", "Leighcan family, warm, extremely stony."),
    ("C7702", "Granile - Catamount families complex, very stony."),
    ("C7709", "Leighcan family, warm - Rock outcrop complex, extremely stony."),
    ("C7710", "Leighcan family - Rock outcrop complex, extremely stony."),
    ("C7745", "Como - Legault families complex, extremely stony."),
    ("C7746", "Como family - Rock land - Legault family complex, extremely stony."),
    ("C7755", "Leighcan - Catamount families complex, extremely stony."),
    ("C7756", "Catamount family - Rock outcrop - Leighcan family complex, extremely stony."),
    ("C7757", "Leighcan - Catamount families - Rock outcrop complex, extremely stony."),
    ("C7790", "Cryorthents - Rock land complex, extremely stony."),
    ("C8703", "Cryumbrepts - Rock outcrop - Cryaquepts complex."),
    ("C8707", "Bross family - Rock land - Cryumbrepts complex, extremely stony."),
    ("C8708", "Rock outcrop - Cryumbrepts - Cryorthents complex, extremely stony."),
    ("C8771", "Leighcan - Moran families - Cryaquolls complex, extremely stony."),
    ("C8772", "Moran family - Cryorthents - Leighcan family complex, extremely stony."),
    ("C8776", "Moran family - Cryorthents - Rock land complex, extremely stony."),
)
SOIL_CODES: tuple[str, ...] = tuple(code for code, _ in SOIL_TYPES)
SOIL_DESCRIPTIONS: dict[str, str] = dict(SOIL_TYPES)

# Cover type 1..7 in order.
COVER_TYPES: tuple[str, ...] = (
    "Spruce/Fir",
    "Lodgepole Pine",
    "Ponderosa Pine",
    "Cottonwood/Willow",
    "Aspen",
    "Douglas-fir",
    "Krummholz",
)
COVER_TYPE_LABELS: tuple[int, ...] = tuple(range(1, len(COVER_TYPES) + 1))
COVER_TYPE_NAMES: dict[int, str] = dict(zip(COVER_TYPE_LABELS, COVER_TYPES, strict=True))

# A real observation: the first row of the course's covertype.csv (cover type 5, Aspen). The
# example of the inference API's docs and of the tests.
EXAMPLE_OBSERVATION: dict[str, int | str] = {
    "Elevation": 2596,
    "Aspect": 51,
    "Slope": 3,
    "Horizontal_Distance_To_Hydrology": 258,
    "Vertical_Distance_To_Hydrology": 0,
    "Horizontal_Distance_To_Roadways": 510,
    "Hillshade_9am": 221,
    "Hillshade_Noon": 232,
    "Hillshade_3pm": 148,
    "Horizontal_Distance_To_Fire_Points": 6279,
    "Wilderness_Area": "Rawah",
    "Soil_Type": "C7745",
}

WildernessArea = Literal["Rawah", "Neota", "Commanche", "Cache"]
SoilCode = Literal[
    "C2702", "C2703", "C2704", "C2705", "C2706", "C2717", "C3501", "C3502", "C4201", "C4703",
    "C4704", "C4744", "C4758", "C5101", "C5151", "C6101", "C6102", "C6731", "C7101", "C7102",
    "C7103", "C7201", "C7202", "C7700", "C7701", "C7702", "C7709", "C7710", "C7745", "C7746",
    "C7755", "C7756", "C7757", "C7790", "C8703", "C8707", "C8708", "C8771", "C8772", "C8776",
]  # fmt: skip


def _refuse_booleans(value: object) -> object:
    """JSON ``true`` is not a measurement; pydantic would otherwise read it as 1."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _bounded(column_name: str) -> object:
    column = NUMERIC_BY_NAME[column_name]
    return Annotated[
        int,
        BeforeValidator(_refuse_booleans),
        Field(
            ge=column.minimum,
            le=column.maximum,
            description=f"{column.description} ({column.unit}), {column.minimum}..{column.maximum}",
            strict=False,
        ),
    ]


class Observation(BaseModel):
    """One observation: the 12 raw-format features, as the inference API takes them.

    Unknown fields are refused rather than ignored: a misspelt column would
    otherwise silently fall back to nothing and the prediction would be wrong.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    Elevation: _bounded("Elevation")  # type: ignore[valid-type]
    Aspect: _bounded("Aspect")  # type: ignore[valid-type]
    Slope: _bounded("Slope")  # type: ignore[valid-type]
    Horizontal_Distance_To_Hydrology: _bounded("Horizontal_Distance_To_Hydrology")  # type: ignore[valid-type]
    Vertical_Distance_To_Hydrology: _bounded("Vertical_Distance_To_Hydrology")  # type: ignore[valid-type]
    Horizontal_Distance_To_Roadways: _bounded("Horizontal_Distance_To_Roadways")  # type: ignore[valid-type]
    Hillshade_9am: _bounded("Hillshade_9am")  # type: ignore[valid-type]
    Hillshade_Noon: _bounded("Hillshade_Noon")  # type: ignore[valid-type]
    Hillshade_3pm: _bounded("Hillshade_3pm")  # type: ignore[valid-type]
    Horizontal_Distance_To_Fire_Points: _bounded("Horizontal_Distance_To_Fire_Points")  # type: ignore[valid-type]
    Wilderness_Area: WildernessArea = Field(description="Wilderness area name: " + ", ".join(WILDERNESS_AREAS))
    Soil_Type: SoilCode = Field(description="USFS ELU soil code, e.g. C7745")


class LabelledObservation(Observation):
    """An observation with its cover type, normalised to 1..7."""

    Cover_Type: int = Field(ge=1, le=7, description="Cover type 1..7")
