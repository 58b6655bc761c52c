"""Loading and validating the served dataset; the UCI one-hot conversion; start-up errors."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.responses import FileResponse
from sklearn.datasets import _covtype as sklearn_covtype
from sklearn.datasets._base import RemoteFileMetadata

from covertype.schema import RAW_COLUMNS
from data_api.app import create_app
from data_api.data_source import DatasetError, load_raw_csv, onehot_to_raw, resolve_dataset
from data_api.settings import DataApiSettings
from tests.data_api.replica import ROWS_IN_SHARED_CSV, make_settings, read_rows, serve_in_thread

HEADER = ",".join(RAW_COLUMNS)
GOOD_ROW = "2596,51,3,258,0,510,221,232,148,6279,Rawah,C7745,5"


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def good_lines(count: int = 20) -> list[str]:
    return [HEADER] + [GOOD_ROW] * count


# --- The shared raw-format file ---------------------------------------------------------------------


def test_the_shared_csv_loads_with_its_values_unchanged(covertype_csv: Path) -> None:
    dataset = load_raw_csv(covertype_csv)
    assert dataset.n_rows == ROWS_IN_SHARED_CSV
    expected = read_rows(covertype_csv)
    for position in (0, 1, 7_000, ROWS_IN_SHARED_CSV - 1):
        assert dataset.rows_as_strings([position]) == [list(expected[position])]


def test_a_zero_based_label_file_is_accepted_as_it_is(tmp_path: Path) -> None:
    lines = [HEADER] + [GOOD_ROW[:-1] + str(label) for label in (0, 1, 2, 3, 4, 5, 6)] * 2
    dataset = load_raw_csv(write_csv(tmp_path / "zero.csv", lines))
    assert sorted({row[-1] for row in dataset.rows_as_strings(list(range(dataset.n_rows)))}) == list("0123456")


# --- Start-up errors: they name the file and the problem -----------------------------------------------


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "the file is empty"),
        ([HEADER], "no rows"),
        ([HEADER.replace(",Cover_Type", "")] + [GOOD_ROW[:-2]] * 20, "the header must be the 13 raw-format columns"),
        ([HEADER.replace("Slope", "slope")] + [GOOD_ROW] * 20, "found 13 columns: Elevation,Aspect,slope"),
        ([*good_lines(), GOOD_ROW + ",9"], "line 22 has 14 fields, expected 13 (wrong_field_count)"),
        ([*good_lines(), GOOD_ROW.rsplit(",", 1)[0]], "line 22 has 12 fields, expected 13 (wrong_field_count)"),
        ([*good_lines(), GOOD_ROW[:-1]], "line 22: Cover_Type: '' is not a number (non_numeric)"),
        ([*good_lines(), GOOD_ROW.replace("2596", "high")], "line 22: Elevation: 'high' is not a number"),
        ([*good_lines(), GOOD_ROW.replace("2596", "25.5")], "line 22: Elevation: '25.5' is not an integer"),
        ([*good_lines(), GOOD_ROW.replace(",51,", ",400,")], "line 22: Aspect: 400 is outside 0..360 (out_of_range)"),
        ([*good_lines(), GOOD_ROW.replace("Rawah", "Comanche")], "line 22: Wilderness_Area: 'Comanche'"),
        ([*good_lines(), GOOD_ROW.replace("C7745", "C9999")], "line 22: Soil_Type: 'C9999' is not a known ELU code"),
        ([*good_lines(), GOOD_ROW[:-1] + "8"], "line 22: Cover_Type: 8 is not a cover type"),
        ([*good_lines(5), GOOD_ROW[:-1] + "x", GOOD_ROW[:-1] + "9"], "2 invalid row(s); first at line 7"),
        # Blank lines are skipped, but counted in the line number people look for.
        ([HEADER, "", GOOD_ROW, "", "", GOOD_ROW.replace("2596", "high")], "line 6: Elevation: 'high'"),
    ],
)
def test_a_malformed_dataset_stops_the_start_up_naming_file_and_problem(
    tmp_path: Path, lines: list[str], problem: str
) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(DatasetError) as caught:
        create_app(make_settings(path, tmp_path / "state"))
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_a_missing_dataset_stops_the_start_up_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "covertype.csv"
    with pytest.raises(DatasetError, match=r"nowhere/covertype\.csv: file not found \(COVERTYPE_CSV"):
        create_app(make_settings(missing, tmp_path / "state"))


def test_a_directory_instead_of_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a regular file"):
        create_app(make_settings(tmp_path, tmp_path / "state"))


def test_fewer_than_ten_rows_stops_the_start_up_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"small\.csv: 9 row\(s\); at least 10 are needed, one per batch"):
        create_app(make_settings(write_csv(tmp_path / "small.csv", good_lines(9)), tmp_path / "state"))


# --- UCI one-hot layout -> raw format --------------------------------------------------------------------


def test_onehot_sample_converts_to_exactly_the_raw_file(onehot_csv: Path, covertype_csv: Path) -> None:
    raw = onehot_to_raw(pd.read_csv(onehot_csv))
    assert list(raw.columns) == list(RAW_COLUMNS)
    assert [tuple(str(value) for value in row) for row in raw.itertuples(index=False)] == read_rows(covertype_csv)


def sklearn_layout(onehot: pd.DataFrame) -> pd.DataFrame:
    """The sample as ``fetch_covtype(as_frame=True).frame`` has it: 0-based names, float features."""
    renamed = onehot.drop(columns="Id").rename(
        columns=lambda name: (
            f"Wilderness_Area_{int(name.removeprefix('Wilderness_Area')) - 1}"
            if name.startswith("Wilderness_Area")
            else f"Soil_Type_{int(name.removeprefix('Soil_Type')) - 1}"
            if name.startswith("Soil_Type")
            else name
        )
    )
    features = renamed.columns.drop("Cover_Type")
    renamed[features] = renamed[features].astype("float64")
    return renamed


def test_sklearn_column_names_and_float_features_convert_the_same(onehot_csv: Path) -> None:
    onehot = pd.read_csv(onehot_csv)
    assert onehot_to_raw(sklearn_layout(onehot)).equals(onehot_to_raw(onehot))


def test_a_row_with_two_soil_types_set_is_not_one_hot(onehot_csv: Path) -> None:
    onehot = pd.read_csv(onehot_csv, nrows=50)
    onehot.loc[17, "Soil_Type3"] = 1 - onehot.loc[17, "Soil_Type3"]
    with pytest.raises(ValueError, match=r"row 17: (2|0) soil columns are set, expected exactly one"):
        onehot_to_raw(onehot)


def test_a_missing_one_hot_column_is_refused(onehot_csv: Path) -> None:
    onehot = pd.read_csv(onehot_csv, nrows=5).drop(columns="Wilderness_Area4")
    with pytest.raises(ValueError, match="expected 4 one-hot columns Wilderness_Area"):
        onehot_to_raw(onehot)


# --- No COVERTYPE_CSV: the UCI download, cached in the state dir ---------------------------------------


def test_without_covertype_csv_the_uci_table_is_downloaded_once_and_cached(tmp_path: Path, onehot_csv: Path) -> None:
    settings = make_settings(None, tmp_path / "state")
    downloads: list[Path] = []

    def fetch(data_home: Path) -> pd.DataFrame:  # stands in for the network only
        downloads.append(data_home)
        return sklearn_layout(pd.read_csv(onehot_csv))

    first = resolve_dataset(settings, fetch)
    second = resolve_dataset(settings, fetch)
    assert downloads == [tmp_path / "state" / "sklearn"]
    assert first.source == second.source == tmp_path / "state" / "covtype_raw.csv"
    assert second.n_rows == ROWS_IN_SHARED_CSV
    assert first.frame.equals(second.frame)


def uci_archive(onehot_csv: Path, path: Path) -> Path:
    """The sample as UCI publishes ``covtype.data.gz``: no header, no Id, 54 features then the label."""
    onehot = pd.read_csv(onehot_csv).drop(columns="Id")
    with gzip.open(path, "wt") as archive:
        onehot.to_csv(archive, header=False, index=False)
    return path


def test_without_covertype_csv_sklearn_downloads_and_the_rows_convert_exactly(
    tmp_path: Path, onehot_csv: Path, covertype_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path of the compose stack, end to end but for the address: sklearn's ``fetch_covtype``
    downloads the archive (served here on loopback), checks its SHA-256, parses and caches it; the replica
    converts it and caches the raw-format CSV."""
    archive = uci_archive(onehot_csv, tmp_path / "covtype.data.gz")
    requests: list[str] = []
    mirror = FastAPI()

    @mirror.get("/files/covtype")
    def download() -> FileResponse:
        requests.append("covtype")
        return FileResponse(archive)

    with serve_in_thread(mirror) as base_url:
        sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(
            sklearn_covtype, "ARCHIVE", RemoteFileMetadata("covtype.data.gz", f"{base_url}/files/covtype", sha256)
        )
        settings = make_settings(None, tmp_path / "state")
        first = resolve_dataset(settings)
        second = resolve_dataset(settings)
    assert requests == ["covtype"]
    assert first.source == second.source == settings.cached_dataset_path
    assert [tuple(str(value) for value in row) for row in second.frame.itertuples(index=False)] == read_rows(
        covertype_csv
    )


def test_a_failed_download_is_a_clear_start_up_error(tmp_path: Path) -> None:
    def offline(data_home: Path) -> pd.DataFrame:
        raise ConnectionRefusedError("no route to the UCI mirror")

    with pytest.raises(DatasetError, match="COVERTYPE_CSV is not set and the UCI download failed"):
        create_app(make_settings(None, tmp_path / "state"), fetch_onehot=offline)
    assert not (tmp_path / "state" / "covtype_raw.csv").exists()


def test_a_state_dir_that_cannot_be_written_is_named_not_blamed_on_the_download(tmp_path: Path) -> None:
    def never_called(data_home: Path) -> pd.DataFrame:
        raise AssertionError("no download into a directory that cannot keep it")

    (tmp_path / "state").write_text("a file where the state dir should be")
    with pytest.raises(DatasetError, match=r"state dir .*state/sklearn: the UCI download cannot be kept there"):
        resolve_dataset(make_settings(None, tmp_path / "state"), never_called)


def test_a_blank_covertype_csv_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVERTYPE_CSV", "  ")
    monkeypatch.setenv("DATA_API_STATE_DIR", str(tmp_path))
    settings = DataApiSettings()
    assert settings.covertype_csv is None
    assert settings.cached_dataset_path == tmp_path / "covtype_raw.csv"
