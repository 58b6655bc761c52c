"""The Batch page: upload a raw-format CSV, predictions from the real inference app, rejects with reasons."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from streamlit.testing.v1 import AppTest

from covertype.schema import COVER_TYPE_NAMES, FEATURE_COLUMNS, LABEL_COLUMN
from inference.schemas import MAX_REPORTED_ERRORS
from tests.ui import backends
from tests.ui.apptest import open_page, texts
from tests.ui.servers import serve
from ui.batch_predict import (
    CHUNK_SIZE,
    MAX_LINES,
    MAX_REFUSAL_ROUNDS,
    MAX_ROWS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_MB,
    PIECE_LINES,
    CsvFormatError,
    read_raw_csv,
    refused_indices,
    validate_rows,
)
from ui.clients.errors import InvalidInput
from ui.clients.inference import InferenceClient
from ui.examples import EXAMPLES

GOOD_ELEVATION = 3001


def _csv(frame: pd.DataFrame, *, header: bool = True) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=header)
    return buffer.getvalue().encode()


def _with_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Forty real rows, then one unknown soil code and one elevation out of range (file lines 42, 43)."""
    rows = frame.head(40).astype(dict.fromkeys(frame.columns, "object"))
    bad_soil = {**rows.iloc[0].to_dict(), "Soil_Type": "C9999"}
    too_high = {**rows.iloc[1].to_dict(), "Elevation": 99999}
    return pd.concat([rows, pd.DataFrame([bad_soil, too_high])], ignore_index=True)


def test_upload_predicts_good_rows_and_lists_rejects_with_reasons(served_model, ui_env, shared_frame) -> None:
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    upload = _with_bad_rows(shared_frame)
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("sample.csv", _csv(upload), "text/csv").run()
    assert not app.error, texts(app.error)
    [summary] = texts(app.warning)
    assert "**40** rows" in summary
    assert "**2** rejected" in summary
    assert f"version {served_model.store.production.version}" in summary
    predictions, rejects = (frame.value for frame in app.dataframe)
    assert len(predictions) == 40
    expected = served_model.store.pipeline.predict(shared_frame.head(40)[list(FEATURE_COLUMNS)])
    assert predictions["predicted_cover_type"].tolist() == [int(label) for label in expected]
    assert predictions["predicted_name"].tolist() == [COVER_TYPE_NAMES[int(label)] for label in expected]
    assert predictions[LABEL_COLUMN].astype(int).tolist() == shared_frame.head(40)[LABEL_COLUMN].tolist()
    share = (expected.astype(int) == shared_frame.head(40)[LABEL_COLUMN].to_numpy()).mean()
    assert 0 < share < 1, "a sample the model gets partly wrong, so that the figure means something"
    [agreement] = app.metric
    assert (agreement.label, agreement.value) == ("Predictions equal to the file's Cover_Type", f"{share:.1%}")
    assert rejects["line"].tolist() == [42, 43]
    assert rejects["reason"].tolist() == ["unknown_category", "out_of_range"]
    assert "C9999" in rejects["detail"].iloc[0]
    assert "Elevation" in rejects["detail"].iloc[1]
    assert len(app.get("download_button")) == 1


def test_a_refusal_of_the_whole_request_shows_the_services_reason(mlflow_store, ui_env, shared_frame) -> None:
    with backends.inference_server(mlflow_store.tracking_uri, predict_max_instances=30) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("batch")
        app.file_uploader(key="batch_file").upload("sample.csv", _csv(shared_frame.head(40)), "text/csv").run()
    [error] = texts(app.error)
    assert "instances: too many instances: 40 sent, at most 30 per request" in error


def test_the_last_results_stay_after_a_visit_to_another_page(served_model, ui_env, shared_frame) -> None:
    """The uploader forgets its file while another page is shown; the results kept must still be shown, named."""
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("sample.csv", _csv(_with_bad_rows(shared_frame)), "text/csv").run()
    summary = texts(app.warning)
    tables = [frame.value for frame in app.dataframe]
    app.switch_page("app_pages/data.py").run()
    app.switch_page("app_pages/batch.py").run()
    assert not app.exception, [item.value for item in app.exception]
    [note] = texts(app.info)
    assert "`sample.csv`, the last file predicted" in note
    assert texts(app.warning) == summary
    assert len(app.dataframe) == len(tables) == 2
    for shown, before in zip(app.dataframe, tables, strict=True):
        pd.testing.assert_frame_equal(shown.value, before)
    assert len(app.get("download_button")) == 1
    # Another file is predicted, not mistaken for the kept one.
    content = _csv(shared_frame.head(5)[list(FEATURE_COLUMNS)], header=False)
    app.file_uploader(key="batch_file").upload("features.csv", content, "text/csv").run()
    [summary] = texts(app.success)
    assert "**5** rows of `features.csv`" in summary
    assert not app.info


NEWER_SCHEMA_MAX_ELEVATION = 3000


def _newer_schema_service(requests: list[int]) -> FastAPI:
    """A service whose schema refuses valid rows (Elevation over 3000), with the real service's 422:
    at most 100 problems listed. ``requests`` gets the number of records of each request."""

    def predict(instances: list[dict[str, Any]]) -> tuple[int, object]:
        requests.append(len(instances))
        refused = [
            (index, "Elevation", "out of range in the newer schema")
            for index, record in enumerate(instances)
            if record["Elevation"] > NEWER_SCHEMA_MAX_ELEVATION
        ]
        if refused:
            return 422, backends.refusal_422(refused)
        predictions = [{"cover_type": 1, "cover_type_name": "Spruce/Fir", "probabilities": {"1": 1.0}}] * len(instances)
        return 200, {"predictions": predictions, "model_name": "covertype", "model_version": "9", "run_id": "r"}

    return backends.inference_stub({}, predict)


def _predicted_by(ui_env: pytest.MonkeyPatch, service: FastAPI, frame: pd.DataFrame) -> AppTest:
    """The Batch page after ``frame`` was uploaded as a CSV and predicted by ``service``; no exception on it."""
    with serve(service) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("batch")
        app.file_uploader(key="batch_file").upload("sample.csv", _csv(frame), "text/csv").run()
    assert not app.exception, [item.value for item in app.exception]
    return app


def test_records_refused_beyond_what_one_422_lists_are_all_listed_by_file_line(ui_env, shared_frame) -> None:
    frame = shared_frame.head(CHUNK_SIZE + 200)
    too_high = frame["Elevation"] > NEWER_SCHEMA_MAX_ELEVATION
    first_chunk_refused = int(too_high.head(CHUNK_SIZE).sum())
    assert first_chunk_refused > MAX_REPORTED_ERRORS  # more than one 422 lists
    requests: list[int] = []
    app = _predicted_by(ui_env, _newer_schema_service(requests), frame)
    assert not app.error, texts(app.error)
    [summary] = texts(app.warning)
    assert f"**{int((~too_high).sum())}** rows" in summary
    assert f"**{int(too_high.sum())}** rejected" in summary
    predictions, rejects = (table.value for table in app.dataframe)
    lines = frame.index + 2  # the header is line 1
    assert predictions["line"].tolist() == lines[~too_high].tolist()
    assert rejects["line"].tolist() == lines[too_high].tolist()
    assert set(rejects["reason"]) == {"refused_by_api"}
    assert set(rejects["detail"]) == {"Elevation: out of range in the newer schema"}
    # Each 422 of the first chunk took away the 100 records it listed; then the rest was accepted.
    rounds = -(-first_chunk_refused // MAX_REPORTED_ERRORS)
    assert requests[: rounds + 1] == [CHUNK_SIZE - MAX_REPORTED_ERRORS * n for n in range(rounds)] + [
        CHUNK_SIZE - first_chunk_refused
    ]


def test_a_422_naming_a_record_the_request_does_not_have_is_an_error_with_file_lines(ui_env, shared_frame) -> None:
    service = backends.inference_stub({}, lambda instances: (422, backends.refusal_422([(5, "Elevation", "bad")])))
    app = _predicted_by(ui_env, service, shared_frame.head(3))
    [error] = texts(app.error)
    assert "POST /predict refused record 5 of a request of 3 records (file lines 2..4): no such record" in error
    assert not app.dataframe


def test_an_answer_with_fewer_predictions_than_records_is_an_error(ui_env, shared_frame) -> None:
    one = {"predictions": [{"cover_type": 1, "probabilities": {"1": 1.0}}], "model_version": "9"}
    app = _predicted_by(ui_env, backends.inference_stub({}, lambda instances: (200, one)), shared_frame.head(3))
    [error] = texts(app.error)
    assert "**Inference API**: POST /predict answered 1 prediction for 3 records sent" in error
    assert not app.dataframe


def test_a_service_refusing_every_record_for_many_fields_is_given_up_on_after_a_bounded_number_of_requests(
    ui_env, shared_frame
) -> None:
    """A service of another release (fields renamed): each 422 lists 100 problems, 4 records' worth. Without
    a bound, 1,000 records would take 250 requests per chunk before the page said anything."""
    requests: list[int] = []

    def renamed_fields(instances: list[Any]) -> tuple[int, object]:
        requests.append(len(instances))
        problems = [(index, f"field_{k}", "unknown here") for index in range(len(instances)) for k in range(25)]
        return 422, backends.refusal_422(problems)

    app = _predicted_by(ui_env, backends.inference_stub({}, renamed_fields), shared_frame.head(CHUNK_SIZE))
    assert len(requests) == MAX_REFUSAL_ROUNDS + 1
    assert requests[:3] == [CHUNK_SIZE, CHUNK_SIZE - 4, CHUNK_SIZE - 8]
    [error] = texts(app.error)
    refused = 4 * MAX_REFUSAL_ROUNDS
    assert (
        f"POST /predict still refuses records of file lines {2 + refused}..{CHUNK_SIZE + 1} after "
        f"{MAX_REFUSAL_ROUNDS} rounds that each took refused records away ({refused} so far)"
    ) in error


def test_good_records_left_after_the_last_round_of_refusals_are_predicted(ui_env, shared_frame) -> None:
    """999 records refused for two fields each (50 per 422): the 20th round takes the last of them away,
    and the one good record left is still sent, not reported as refused."""
    requests: list[int] = []

    def refuse_all_but_the_last(instances: list[Any]) -> tuple[int, object]:
        requests.append(len(instances))
        refused = [index for index, record in enumerate(instances) if record["Elevation"] != GOOD_ELEVATION]
        if not refused:
            predictions = [{"cover_type": 2, "probabilities": {"2": 1.0}} for _ in instances]
            return 200, {"predictions": predictions, "model_version": "4"}
        return 422, backends.refusal_422([(index, field, "bad") for index in refused for field in ("Slope", "Aspect")])

    frame = shared_frame.head(CHUNK_SIZE).copy()
    frame["Elevation"] = GOOD_ELEVATION - 1
    frame.loc[frame.index[-1], "Elevation"] = GOOD_ELEVATION
    app = _predicted_by(ui_env, backends.inference_stub({}, refuse_all_but_the_last), frame)
    assert not app.error, texts(app.error)
    assert requests[-2:] == [50, 1]
    predictions, rejects = (table.value for table in app.dataframe)
    assert predictions["line"].tolist() == [CHUNK_SIZE + 1]
    assert len(rejects) == CHUNK_SIZE - 1


def test_a_service_failing_part_way_keeps_the_rows_already_predicted(ui_env, shared_frame) -> None:
    """A 5xx at the second chunk must not throw away the first chunk's predictions: they are shown, with
    where it stopped and how many rows were not predicted."""
    answered: list[int] = []

    def first_chunk_only(instances: list[Any]) -> tuple[int, object]:
        if answered:
            return 500, {"detail": "worker crashed"}
        answered.append(len(instances))
        predictions = [{"cover_type": 2, "probabilities": {"2": 1.0}} for _ in instances]
        return 200, {"predictions": predictions, "model_version": "4"}

    frame = shared_frame.head(CHUNK_SIZE + 30)
    app = _predicted_by(ui_env, backends.inference_stub({}, first_chunk_only), frame)
    assert answered == [CHUNK_SIZE]
    [error] = texts(app.error)
    assert "Inference API" in error
    assert "500" in error
    [summary] = texts(app.warning)
    assert f"Predicted **{CHUNK_SIZE}** rows" in summary
    assert f"**Stopped at line {CHUNK_SIZE + 2}**" in summary  # the header is line 1
    assert "the **30** valid rows from that line on were not predicted" in summary
    assert app.dataframe[0].value["line"].tolist() == list(range(2, CHUNK_SIZE + 2))
    # Kept in the session without the traceback whose frames would hold the whole parsed file.
    kept_error = app.session_state["batch_outcome"].outcome.stopped.error
    assert (kept_error.__traceback__, kept_error.__cause__, kept_error.__context__) == (None, None, None)


def test_headerless_feature_only_file_is_predicted(served_model, ui_env, shared_frame) -> None:
    ui_env.setenv("INFERENCE_URL", served_model.inference_url)
    app = open_page("batch")
    content = _csv(shared_frame.head(5)[list(FEATURE_COLUMNS)], header=False)
    app.file_uploader(key="batch_file").upload("features.csv", content, "text/csv").run()
    assert not app.error, texts(app.error)
    [summary] = texts(app.success)
    assert "**5** rows" in summary
    assert app.dataframe[0].value["line"].tolist() == [1, 2, 3, 4, 5]


def test_unreachable_inference_service_is_named(ui_env, shared_frame) -> None:
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("sample.csv", _csv(shared_frame.head(3)), "text/csv").run()
    [error] = texts(app.error)
    assert "Inference API" in error
    assert "INFERENCE_URL" in error
    assert not app.dataframe


def test_a_service_that_cannot_load_a_model_is_an_error_naming_what_to_fix(ui_env, tmp_path, shared_frame) -> None:
    """A 503 is not always "no model yet": the registry's state says when a setting must be corrected."""
    with backends.inference_without_model("configuration_error", tmp_path) as url:
        ui_env.setenv("INFERENCE_URL", url)
        app = open_page("batch")
        app.file_uploader(key="batch_file").upload("sample.csv", _csv(shared_frame.head(3)), "text/csv").run()
    assert not app.warning, texts(app.warning)
    [error] = texts(app.error)
    assert "MODEL_ALIAS='prod/1'" in error
    assert "MODEL_NAME and MODEL_ALIAS in the inference service's environment" in error
    assert "run the DAG" not in error
    assert not app.dataframe


@pytest.mark.parametrize("after_header", [b"\n", b"", b"\n\n  \n"], ids=["header-line", "unended", "blank-lines"])
def test_a_file_with_a_header_and_no_data_rows_is_refused(shared_frame, after_header: bytes) -> None:
    """Not "Predicted 0 rows" in green: there was nothing to predict."""
    content = ",".join(shared_frame.columns).encode() + after_header
    with pytest.raises(CsvFormatError, match="no data rows below the header"):
        read_raw_csv(content)
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("header.csv", content, "text/csv").run()
    assert not app.success
    assert texts(app.error) == ["`header.csv` cannot be read: no data rows below the header."]


def test_a_file_without_the_raw_columns_is_refused_with_the_expected_format() -> None:
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("other.csv", b"a,b,c\n1,2,3\n", "text/csv").run()
    [error] = texts(app.error)
    assert "other.csv" in error
    assert "Elevation" in error


def test_reader_accepts_any_column_order_and_keeps_labels(shared_frame) -> None:
    shuffled = shared_frame.head(3)[list(reversed(shared_frame.columns))]
    raw = read_raw_csv(_csv(shuffled))
    assert raw.has_label
    assert raw.has_header
    assert list(raw.frame.columns)[:2] == ["Elevation", "Aspect"]
    assert raw.frame["Soil_Type"].tolist() == shared_frame.head(3)["Soil_Type"].tolist()


@pytest.mark.parametrize("content", [b"", b"   \n"])
def test_reader_refuses_an_empty_file(content: bytes) -> None:
    with pytest.raises(CsvFormatError, match="empty"):
        read_raw_csv(content)


def test_records_the_service_refuses_are_read_from_its_422_details(served_model) -> None:
    """Should the service refuse records the UI let through, its 422 names them; the UI maps them back."""
    client = InferenceClient(served_model.inference_url)
    good = {**EXAMPLES[1]}
    bad = {**EXAMPLES[2], "Soil_Type": "C0000"}
    with pytest.raises(InvalidInput) as refused:
        client.predict([good, bad])
    reasons = refused_indices(refused.value.details)
    assert list(reasons) == [1]
    assert reasons[1].startswith("Soil_Type: ")
    assert "C0000" in reasons[1]


def test_every_reason_the_service_gives_for_a_record_is_kept(served_model) -> None:
    client = InferenceClient(served_model.inference_url)
    with pytest.raises(InvalidInput) as refused:
        client.predict([{**EXAMPLES[2], "Elevation": 99999, "Soil_Type": "C0000"}])
    [reason] = refused_indices(refused.value.details).values()
    assert reason.startswith("Elevation: ")
    assert "; Soil_Type: " in reason


def test_line_numbers_of_rejects_count_blank_lines_as_an_editor_does(shared_frame) -> None:
    rows = shared_frame.head(2)[list(FEATURE_COLUMNS)].astype(str)
    header, good, other = ",".join(FEATURE_COLUMNS), ",".join(rows.iloc[0]), ",".join(rows.iloc[1])
    bad = other.replace(rows.iloc[1]["Soil_Type"], "C9999")
    content = "\n".join([header, "", good, "", "   ", bad, other, ""]).encode()  # lines 1..7
    raw = read_raw_csv(content)
    good_rows, rejected = validate_rows(raw.frame, raw.first_line)
    assert [line for line, _ in good_rows] == [3, 7]
    assert [(item.line, item.reason) for item in rejected] == [(6, "unknown_category")]


def _rows(frame: pd.DataFrame, count: int) -> list[bytes]:
    """``count`` data lines of the raw format (the real rows repeated), without a header."""
    lines = _csv(frame, header=False).splitlines()
    return [lines[index % len(lines)] for index in range(count)]


def test_the_upload_is_capped_near_the_row_limit_not_at_streamlits_200_mb(shared_frame) -> None:
    """The widget's cap (enforced by the browser) is the page's, sized to hold MAX_ROWS real rows with room to spare."""
    app = open_page("batch")
    assert app.file_uploader(key="batch_file").proto.max_upload_size_mb == MAX_UPLOAD_MB
    longest = max(len(line) + 2 for line in _rows(shared_frame, len(shared_frame)))  # CRLF line ends
    assert 2 * longest * MAX_ROWS < MAX_UPLOAD_BYTES < 200 * 1024 * 1024


def test_a_file_over_the_size_cap_is_refused_before_it_is_parsed() -> None:
    """Streamlit's upload endpoint only holds a client to ``server.maxUploadSize``: the reader checks again."""
    content = ",".join(FEATURE_COLUMNS).encode() + b"\n" + b"garbage\n" * (MAX_UPLOAD_BYTES // 8 + 1)
    with pytest.raises(CsvFormatError, match=f"at most {MAX_UPLOAD_MB} MB"):
        read_raw_csv(content)


def test_a_file_over_the_row_limit_is_refused_on_the_page(shared_frame) -> None:
    header = ",".join(shared_frame.columns).encode()
    content = b"\n".join([header, *_rows(shared_frame, MAX_ROWS + 1), b""])
    app = open_page("batch")
    app.file_uploader(key="batch_file").upload("big.csv", content, "text/csv").run()
    [error] = texts(app.error)
    assert "big.csv" in error
    assert f"more than {MAX_ROWS:,} rows" in error
    assert not app.dataframe


@pytest.mark.parametrize("header", [True, False])
def test_the_reader_stops_one_piece_after_the_limit(shared_frame, header: bool) -> None:
    """Lines a piece past row MAX_ROWS + 1 are never parsed: garbage there (a parse error if read) goes unreported."""
    garbage = b",".join([b"1"] * 40)  # too many fields: pandas would refuse the whole file
    lines = [*_rows(shared_frame, MAX_ROWS + PIECE_LINES), garbage, garbage]
    if header:
        lines.insert(0, ",".join(shared_frame.columns).encode())
    with pytest.raises(CsvFormatError, match=f"more than {MAX_ROWS:,} rows"):
        read_raw_csv(b"\n".join(lines))
    # The same garbage within the limit is read, and refused as such.
    with pytest.raises(CsvFormatError, match="not a readable CSV"):
        read_raw_csv(b"\n".join([*lines[: 1 + int(header)], garbage]))


@pytest.mark.parametrize("line_end", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_a_file_of_blank_lines_is_refused_before_it_is_parsed(line_end: bytes) -> None:
    """Millions of empty lines fit in MAX_UPLOAD_MB; read a few at a time they would cost hours of CPU.

    pandas ends a line at a lone CR too, so those lines count as well.
    """
    # The message comes from counting the lines, before any parsing.
    row = b"2596,51,3,258,0,510,221,232,148,6279,Rawah,C7745,5"
    with pytest.raises(CsvFormatError, match=f"the UI reads files of at most {MAX_LINES:,} lines"):
        read_raw_csv(row + line_end * ((MAX_UPLOAD_BYTES - 100) // len(line_end)))


@pytest.mark.parametrize("header", [True, False])
def test_blank_lines_before_the_header_or_first_row_are_skipped_and_counted(shared_frame, header: bool) -> None:
    """pandas would take a blank first line for the header and refuse the file as missing every column."""
    rows = _rows(shared_frame, 2)
    bad = rows[1].replace(shared_frame.iloc[1]["Soil_Type"].encode(), b"C9999")
    lines = [b"", b"  \r", *([",".join(shared_frame.columns).encode()] if header else []), rows[0], bad, b""]
    raw = read_raw_csv(b"\n".join(lines))
    assert (raw.has_header, raw.has_label, len(raw.frame)) == (header, True, 2)
    good_rows, rejected = validate_rows(raw.frame, raw.first_line)
    first = 4 if header else 3  # the editor's line numbers: two blank lines, then the header, if any
    assert [line for line, _ in good_rows] == [first]
    assert [(item.line, item.reason) for item in rejected] == [(first + 1, "unknown_category")]


def test_blank_lines_after_the_last_row_are_read_in_pieces(shared_frame, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_ROWS rows then as many blank lines as allowed: accepted, in a bounded number of parser calls.

    (Pieces sized by the rows still allowed were one line each near the limit: a call per blank line.)
    """
    calls = []
    get_chunk = pd.io.parsers.TextFileReader.get_chunk

    def counted(reader: pd.io.parsers.TextFileReader, size: int | None = None) -> pd.DataFrame:
        calls.append(size)
        return get_chunk(reader, size)

    monkeypatch.setattr(pd.io.parsers.TextFileReader, "get_chunk", counted)
    content = b"\n".join([*_rows(shared_frame, MAX_ROWS), *([b""] * (MAX_LINES - MAX_ROWS))])
    raw = read_raw_csv(content)
    assert len(raw.frame) == MAX_ROWS
    assert len(calls) <= MAX_LINES // PIECE_LINES + 2 == 22, len(calls)


def test_blank_lines_do_not_count_towards_the_row_limit(shared_frame) -> None:
    """MAX_ROWS rows with blank lines among them are accepted; line numbers still count the blank lines."""
    rows = _rows(shared_frame, MAX_ROWS)
    content = b"\n".join([",".join(shared_frame.columns).encode(), b"", *rows[:10], b"", b"  ", *rows[10:], b""])
    raw = read_raw_csv(content)
    assert len(raw.frame) == MAX_ROWS
    assert raw.frame.index[0] + raw.first_line == 3
    assert raw.frame.index[-1] + raw.first_line == MAX_ROWS + 4


def test_a_row_with_a_field_too_many_or_a_file_of_only_a_bom_is_refused(shared_frame) -> None:
    """Not read with the first column as the index (shifting every column), nor an uncaught pandas error."""
    header = ",".join(shared_frame.columns).encode()
    rows = _rows(shared_frame, 3)
    with pytest.raises(CsvFormatError, match="not a readable CSV"):
        read_raw_csv(b"\n".join([header, rows[0] + b",7", *rows[1:]]))
    with pytest.raises(CsvFormatError):
        read_raw_csv(b"\xef\xbb\xbf\n")


@pytest.mark.parametrize("start", [b"\xef\xbb\xbf\n\n", b"\r\r"], ids=["BOM", "CR"])
def test_blank_lines_after_a_bom_or_ended_by_lone_crs_are_skipped_too(shared_frame, start: bytes) -> None:
    end = b"\r" if start == b"\r\r" else b"\n"
    content = start + end.join([",".join(shared_frame.columns).encode(), *_rows(shared_frame, 1), b""])
    raw = read_raw_csv(content)
    assert (raw.has_header, len(raw.frame), raw.first_line) == (True, 1, 4)


def test_the_line_limit_counts_blank_lines_exactly(shared_frame) -> None:
    """MAX_LINES + 1 lines (a header's worth over MAX_LINES) are read; one more is refused before parsing."""
    at_limit = b"\n".join([*_rows(shared_frame, 1), *([b""] * (MAX_LINES + 1))])  # MAX_LINES + 1 line ends
    assert len(read_raw_csv(at_limit).frame) == 1
    with pytest.raises(CsvFormatError, match=f"at most {MAX_LINES:,} lines"):
        read_raw_csv(at_limit + b"\n")
