"""Real observations from the shared Covertype data (first row of each class), to prefill the Predict form.

Kept as constants because the UI image does not carry the dataset; the test
``tests/ui/test_examples.py`` checks each one against the shared CSV.
"""

from __future__ import annotations

from covertype.schema import FEATURE_COLUMNS

# (row index in covertype.csv, cover type, the 12 features in raw-format order)
_ROWS: tuple[tuple[int, int, tuple[int | str, ...]], ...] = (
    (40, 1, (2699, 347, 3, 0, 0, 2096, 213, 234, 159, 6853, "Rawah", "C7102")),
    (2, 2, (2804, 139, 9, 268, 65, 3180, 234, 238, 135, 6121, "Rawah", "C4744")),
    (1818, 3, (2553, 235, 17, 351, 95, 780, 188, 253, 199, 1410, "Commanche", "C4704")),
    (1988, 4, (2000, 318, 7, 30, 4, 108, 201, 234, 172, 268, "Cache", "C6102")),
    (0, 5, (2596, 51, 3, 258, 0, 510, 221, 232, 148, 6279, "Rawah", "C7745")),
    (1868, 6, (2446, 23, 8, 0, 0, 443, 216, 223, 144, 837, "Commanche", "C7102")),
    (1654, 7, (3273, 159, 12, 300, 55, 2863, 233, 242, 138, 2439, "Rawah", "C7745")),
)

# Cover type -> the example record (a dict of the 12 features).
EXAMPLES: dict[int, dict[str, int | str]] = {
    cover_type: dict(zip(FEATURE_COLUMNS, values, strict=True)) for _, cover_type, values in _ROWS
}
# Cover type -> its row index in the shared CSV (0-based, header excluded), for the test.
EXAMPLE_ROW_INDEX: dict[int, int] = {cover_type: index for index, cover_type, _ in _ROWS}
DEFAULT_EXAMPLE = 2  # Lodgepole Pine, the commonest cover type in the full UCI data
