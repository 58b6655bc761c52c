"""Predict a raw-format CSV: a table of predictions, a download, and the rejected rows with reasons."""

from __future__ import annotations

import streamlit as st

from covertype.schema import FEATURE_COLUMNS, RAW_COLUMNS
from ui import services
from ui.batch_predict import (
    MAX_ROWS,
    MAX_UPLOAD_MB,
    BatchOutcome,
    CsvFormatError,
    PredictedFile,
    agreement,
    predict_csv,
    read_raw_csv,
)
from ui.clients.errors import ServiceError

KEY = "batch_"
OUTCOME_KEY = f"{KEY}outcome"  # the last file's PredictedFile: not a widget key, so it outlives a visit elsewhere


def _version_order(version: str) -> tuple[int, str]:
    """Registry versions are numbers sent as text: "9" before "10"."""
    return (int(version), version) if version.isdigit() else (0, version)


def _show(outcome: BatchOutcome, file_name: str) -> None:
    predicted = len(outcome.predictions)
    rejected = len(outcome.rejected)
    versions = ", ".join(sorted(outcome.model_versions, key=_version_order)) or "none"
    message = f"Predicted **{predicted}** rows of `{file_name}` with model version {versions}; **{rejected}** rejected."
    stopped = outcome.stopped
    if stopped is not None:
        services.show_error(stopped.error)
        message += (
            f" **Stopped at line {stopped.first_line}**: the service failed there, and the **{stopped.rows_left}** "
            "valid rows from that line on were not predicted (the table holds the rows before it). "
            "Upload the file again to predict it all."
        )
    (st.warning if rejected or stopped is not None else st.success)(message)
    if predicted:
        share = agreement(outcome.predictions)
        if share is not None:
            st.metric("Predictions equal to the file's Cover_Type", f"{share:.1%}")
        st.dataframe(outcome.predictions, hide_index=True, width="stretch")
        st.download_button(
            "Download the predictions (CSV)",
            outcome.predictions.to_csv(index=False).encode(),
            file_name=file_name.rsplit(".", 1)[0] + "_predictions.csv",
            mime="text/csv",
            key=f"{KEY}download",
        )
    if rejected:
        st.subheader("Rejected rows")
        st.dataframe(outcome.rejected_frame(), hide_index=True, width="stretch")


def _show_last(last: PredictedFile | None) -> None:
    """With the uploader empty (after a visit to another page, or the file removed): the last results, if any."""
    if last is None:
        st.info("No file uploaded yet.")
        return
    st.info(f"No file in the uploader: these are the results of `{last.file_name}`, the last file predicted.")
    _show(last.outcome, last.file_name)


def render() -> None:
    st.title("Predict a CSV file")
    st.markdown(
        "Upload a raw-format CSV: the 13 columns of the data API with a header "
        f"(`{','.join(RAW_COLUMNS)}`), or the {len(FEATURE_COLUMNS)} feature columns only. "
        "Rows are checked here first; only valid rows go to the inference service, the others are listed "
        f"with the reason. At most {MAX_ROWS:,} rows ({MAX_UPLOAD_MB} MB) per file."
    )
    # The cap is sized to the row limit, so that a far larger file is stopped in the browser (Streamlit's
    # default is 200 MB); ``read_raw_csv`` checks the size again for clients that bypass the browser.
    upload = st.file_uploader("Raw-format CSV", type=["csv"], max_upload_size=MAX_UPLOAD_MB, key=f"{KEY}file")
    last: PredictedFile | None = st.session_state.get(OUTCOME_KEY)
    if upload is None:
        _show_last(last)
        return
    # A rerun (e.g. the download click) must not predict the same file again.
    if last is not None and last.file_id == upload.file_id:
        _show(last.outcome, upload.name)
        return
    # From here on the results kept are not those of the file in the uploader.
    st.session_state.pop(OUTCOME_KEY, None)
    try:
        raw = read_raw_csv(upload.getvalue())
    except CsvFormatError as error:
        st.error(f"`{upload.name}` cannot be read: {error}.")
        return
    base_url = services.url(services.settings().inference_url)
    with st.spinner(f"Predicting {len(raw.frame)} rows..."):
        try:
            outcome = predict_csv(services.inference_client(base_url), raw)
        except ServiceError as error:
            services.show_error(error)
            return
    st.session_state[OUTCOME_KEY] = PredictedFile(upload.file_id, upload.name, outcome)
    _show(outcome, upload.name)


render()
